//! Upstream clusters: endpoint choice, pooled keep-alive connections and TLS origination.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use bytes::Bytes;
use hickory_resolver::TokioResolver;
use http::Uri;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{Cluster, Endpoint, LbPolicy, UpstreamProtocol};
use crate::lb::breaker::Breaker;
use crate::lb::health::{HostHealth, Probe, classify};
use crate::lb::maglev;
use crate::lb::outlier::{Counters, Ejections, Outcome};
use crate::lb::table::{GroupSpec, HostSpec, Policy, Table};
use crate::tls::{self, TlsError};

/// The request body type sent upstream.
pub type UpstreamBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster ready to take requests.
///
/// Host choice reads a [`Table`] swapped whole (`ArcSwap`) whenever host health changes, so a
/// request takes no lock; outlier counters are per-host atomics, and only an ejection, the
/// outlier interval and health-check transitions take the `health` mutex.
pub struct UpstreamCluster {
    /// Its configuration.
    pub config: Cluster,
    client: Client<Connector, UpstreamBody>,
    client_connector: Connector,
    active: Vec<AtomicUsize>,
    specs: Vec<HostSpec>,
    groups: Vec<GroupSpec>,
    policy: Policy,
    table: ArcSwap<Table>,
    counters: Vec<Counters>,
    health: Mutex<HealthState>,
    /// Circuit-breaker counters (requests, pending, retries).
    pub breaker: Arc<Breaker>,
}

/// Slow-path health state: ejections and active health-check results.
#[derive(Debug)]
struct HealthState {
    ejections: Ejections,
    checks: Vec<HostHealth>,
}

/// Why connecting upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Connect (or handshake) took longer than the cluster's connect timeout.
    #[error("connect to {0} timed out after {1:?}")]
    Timeout(String, Duration),
    /// DNS found nothing.
    #[error("DNS lookup of {0} failed: {1}")]
    Resolve(String, io::Error),
    /// TCP connect failed.
    #[error("connect to {0} failed: {1}")]
    Connect(String, io::Error),
    /// The TLS handshake failed (certificate verification included).
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, io::Error),
    /// The URI carried no authority (an internal error).
    #[error("upstream URI {0} has no authority")]
    NoAuthority(String),
}

/// Connects to the endpoint named in the URI's authority, with TLS when the cluster originates
/// it.
///
/// The pooled client clones its connector for every request, so the state sits behind one
/// `Arc` (the resolver's cache alone was ~1% of a profile when cloned each time).
#[derive(Clone)]
pub struct Connector(Arc<ConnectorInner>);

/// What a [`Connector`] shares between its clones.
pub struct ConnectorInner {
    timeout: Duration,
    pool: PoolMetrics,
    resolver: Option<TokioResolver>,
    tls: Option<(Arc<ClientConfig>, Option<String>)>,
}

impl std::ops::Deref for Connector {
    type Target = ConnectorInner;

    fn deref(&self) -> &ConnectorInner {
        &self.0
    }
}

/// An upstream connection, counted in the cluster's connection metrics while it is open.
#[derive(Debug)]
pub struct UpstreamStream {
    io: UpstreamIo,
    _open: OpenConnection,
}

/// Decrements the open-connections gauge when the connection is dropped.
#[derive(Debug)]
struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Metric handles of one cluster, looked up once when the cluster is built rather than per
/// request.
#[derive(Debug, Clone, Default)]
pub struct PoolMetrics {
    /// Connections opened.
    pub opened: Counter,
    /// Connections open now (pooled idle ones included).
    pub open: Gauge,
    /// Requests in flight.
    pub in_flight: Gauge,
    /// Connect, TLS or protocol failures.
    pub failures: Counter,
    /// Outlier ejections.
    pub ejections: Counter,
    /// Hosts ejected now.
    pub ejected: Gauge,
    /// Hosts taking traffic now.
    pub healthy: Gauge,
    /// Failed health checks.
    pub health_check_failures: Counter,
    /// Retries made.
    pub retries: Counter,
    /// Retries refused by the budget.
    pub retries_overflow: Counter,
    /// Requests refused by the circuit breaker.
    pub overflow: Counter,
}

/// A plain or TLS upstream connection.
#[derive(Debug)]
pub enum UpstreamIo {
    /// Clear text.
    Plain(TcpStream),
    /// TLS originated by the gateway.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match &self.io {
            UpstreamIo::Plain(_) => Connected::new(),
            UpstreamIo::Tls(t) => {
                if t.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The gateway's DNS resolver: hickory with the system's resolv.conf and hosts file, caching
/// answers for their TTL, so names are re-resolved when their records expire. `None` when the
/// system configuration cannot be read; the OS resolver is used then.
pub fn system_resolver() -> Option<TokioResolver> {
    match TokioResolver::builder_tokio().and_then(|b| b.build()) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the system DNS configuration; using the OS resolver");
            None
        }
    }
}

async fn resolve(
    authority: &str,
    resolver: Option<&TokioResolver>,
) -> Result<Vec<std::net::SocketAddr>, ConnectError> {
    if let Ok(a) = authority.parse() {
        return Ok(vec![a]);
    }
    let fail = |e: io::Error| ConnectError::Resolve(authority.to_owned(), e);
    match (resolver, authority.rsplit_once(':')) {
        (Some(r), Some((host, port))) => {
            let port: u16 = port
                .parse()
                .map_err(|_| fail(io::Error::new(io::ErrorKind::InvalidInput, "bad port")))?;
            let ips = r
                .lookup_ip(host)
                .await
                .map_err(|e| fail(io::Error::other(e.to_string())))?;
            Ok(ips
                .iter()
                .map(|ip| std::net::SocketAddr::new(ip, port))
                .collect())
        }
        _ => Ok(tokio::net::lookup_host(authority)
            .await
            .map_err(fail)?
            .collect()),
    }
}

/// Resolves `host:port` (an IP literal needs no lookup) and connects with a deadline.
pub async fn connect_tcp(
    authority: &str,
    timeout: Duration,
    resolver: Option<&TokioResolver>,
) -> Result<TcpStream, ConnectError> {
    let attempt = async {
        let addrs = resolve(authority, resolver).await?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    // Small requests and responses must not wait for Nagle.
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(ConnectError::Connect(authority.to_owned(), last))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout(authority.to_owned(), timeout))?
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<UpstreamStream, ConnectError> {
        let io = self.connect_io(uri).await?;
        self.pool.opened.inc();
        self.pool.open.inc();
        Ok(UpstreamStream {
            io,
            _open: OpenConnection(self.pool.open.clone()),
        })
    }

    async fn connect_io(&self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .ok_or_else(|| ConnectError::NoAuthority(uri.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let tcp = connect_tcp(&authority, self.timeout, self.resolver.as_ref()).await?;
        let Some((cfg, sni)) = self.tls.clone() else {
            return Ok(UpstreamIo::Plain(tcp));
        };
        let host = match sni {
            Some(s) => s,
            None => crate::route::split_host_port(&authority)
                .0
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|e| {
            ConnectError::Tls(
                authority.clone(),
                io::Error::new(io::ErrorKind::InvalidInput, e),
            )
        })?;
        let tls = tokio::time::timeout_at(deadline, TlsConnector::from(cfg).connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout(authority.clone(), self.timeout))?
            .map_err(|e| ConnectError::Tls(format!("{authority} (SNI {host})"), e))?;
        Ok(UpstreamIo::Tls(Box::new(tls)))
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = ConnectError;
    type Future =
        Pin<Box<dyn Future<Output = Result<TokioIo<UpstreamStream>, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await.map(TokioIo::new) })
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for UpstreamCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCluster")
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl UpstreamCluster {
    /// Builds the cluster's connection pool; DNS names resolve through `resolver`.
    pub fn new(
        config: &Cluster,
        resolver: Option<TokioResolver>,
        pool: PoolMetrics,
    ) -> Result<UpstreamCluster, TlsError> {
        let h2 = config.protocol == UpstreamProtocol::Http2;
        let tls = match &config.tls {
            Some(t) => Some((tls::client_config(t, h2)?, t.sni.clone())),
            None => None,
        };
        let connector = Connector(Arc::new(ConnectorInner {
            timeout: config.connect_timeout,
            pool,
            resolver,
            tls,
        }));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(h2)
            .set_host(false);
        if config.limits.max_requests_per_connection == 1 {
            // One request per connection: nothing goes back to the pool.
            builder.pool_max_idle_per_host(0);
        }
        let client = builder.build(connector.clone());
        let specs: Vec<HostSpec> = config
            .endpoints
            .iter()
            .zip(&config.members)
            .map(|(e, m)| HostSpec {
                group: m.group,
                weight: m.weight.max(1),
                key: maglev::hash(e.to_string().as_bytes()),
            })
            .collect();
        let groups: Vec<GroupSpec> = config
            .localities
            .iter()
            .map(|g| GroupSpec {
                priority: g.priority,
                weight: g.weight,
            })
            .collect();
        let policy = match config.lb {
            LbPolicy::RoundRobin | LbPolicy::Maglev => Policy::RoundRobin,
            LbPolicy::Random => Policy::Random,
            LbPolicy::LeastRequest => Policy::LeastRequest,
        };
        let maglev = config.lb == LbPolicy::Maglev;
        let table = Table::build(&specs, &groups, &|_| true, maglev);
        connector.pool.healthy.set(table.healthy() as i64);
        connector.pool.ejected.set(0);
        let n = config.endpoints.len();
        let limits = &config.limits;
        let max_requests = if h2 {
            limits.max_requests
        } else {
            limits.max_connections
        };
        Ok(UpstreamCluster {
            config: config.clone(),
            client,
            client_connector: connector,
            active: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            specs,
            groups,
            policy,
            table: ArcSwap::from_pointee(table),
            counters: (0..n).map(|_| Counters::default()).collect(),
            health: Mutex::new(HealthState {
                ejections: Ejections::new(n),
                checks: vec![HostHealth::default(); n],
            }),
            breaker: Arc::new(Breaker::new(max_requests, limits.max_pending)),
        })
    }

    /// Starts the cluster's background work — the outlier-detection interval and active
    /// health checks — for as long as the cluster is in service (the tasks hold a weak
    /// reference and end when the cluster is dropped). Needs a tokio runtime; without one
    /// (configuration checks) nothing starts.
    pub fn start_background(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(o) = &self.config.outlier {
            let weak = Arc::downgrade(self);
            let interval = o.interval;
            rt.spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(c) = weak.upgrade() else { return };
                    c.outlier_tick();
                }
            });
        }
        if let Some(hc) = &self.config.health_check {
            for i in 0..self.config.endpoints.len() {
                let weak = Arc::downgrade(self);
                let interval = hc.interval;
                rt.spawn(async move {
                    let mut tick = tokio::time::interval(interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let Some(c) = weak.upgrade() else { return };
                        let probe = c.health_check(i).await;
                        c.health_result(i, probe);
                    }
                });
            }
        }
    }

    /// Rebuilds the pick table from the health state; called with the state locked.
    fn rebuild(&self, h: &HealthState) {
        let healthy =
            |i: usize| !h.ejections.is_ejected(i) && h.checks.get(i).is_none_or(|c| c.healthy);
        let table = Table::build(
            &self.specs,
            &self.groups,
            &healthy,
            self.config.lb == LbPolicy::Maglev,
        );
        let m = &self.client_connector.pool;
        m.healthy.set(table.healthy() as i64);
        m.ejected.set(h.ejections.ejected() as i64);
        self.table.store(Arc::new(table));
    }

    /// Records the outcome of a request to host `i` for outlier detection.
    pub fn record(&self, i: usize, outcome: Outcome) {
        let Some(cfg) = &self.config.outlier else {
            return;
        };
        let Some(c) = self.counters.get(i) else {
            return;
        };
        if !c.record(outcome, cfg) {
            return;
        }
        c.reset();
        let Ok(mut h) = self.health.lock() else {
            return;
        };
        if h.ejections.eject(i, Instant::now(), cfg) {
            self.client_connector.pool.ejections.inc();
            tracing::warn!(
                cluster = %self.config.name,
                upstream_host = %self.config.endpoints.get(i).map(ToString::to_string).unwrap_or_default(),
                "outlier detection ejected the host"
            );
            self.rebuild(&h);
        }
    }

    /// The outlier interval: ejected hosts whose time is up return.
    fn outlier_tick(&self) {
        let Some(cfg) = &self.config.outlier else {
            return;
        };
        let Ok(mut h) = self.health.lock() else {
            return;
        };
        if h.ejections.tick(Instant::now(), cfg) {
            tracing::info!(cluster = %self.config.name, "ejected hosts returned to service");
            self.rebuild(&h);
        }
    }

    /// One active health check of host `i`.
    async fn health_check(&self, i: usize) -> Probe {
        let (Some(hc), Some(endpoint)) = (&self.config.health_check, self.config.endpoints.get(i))
        else {
            return Probe::Pass;
        };
        let authority = endpoint.to_string();
        let Some(path) = &hc.path else {
            let c = &self.client_connector;
            return match connect_tcp(&authority, hc.timeout, c.resolver.as_ref()).await {
                Ok(_) => Probe::Pass,
                Err(_) => Probe::Fail,
            };
        };
        let Ok(uri) = format!("http://{authority}{path}").parse::<Uri>() else {
            return Probe::Fail;
        };
        let mut req = http::Request::new(UpstreamBody::default());
        *req.uri_mut() = uri;
        if let Ok(v) = http::HeaderValue::from_str(&self.config.name) {
            req.headers_mut().insert(http::header::HOST, v);
        }
        req.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("causeway-health-check"),
        );
        match tokio::time::timeout(hc.timeout, self.client.request(req)).await {
            Ok(Ok(res)) => classify(res.status().as_u16(), &hc.expected_statuses),
            _ => Probe::Fail,
        }
    }

    fn health_result(&self, i: usize, probe: Probe) {
        let Some(hc) = &self.config.health_check else {
            return;
        };
        if probe != Probe::Pass {
            self.client_connector.pool.health_check_failures.inc();
        }
        let Ok(mut h) = self.health.lock() else {
            return;
        };
        let Some(state) = h.checks.get_mut(i) else {
            return;
        };
        if state.observe(probe, hc.healthy_threshold, hc.unhealthy_threshold) {
            tracing::warn!(
                cluster = %self.config.name,
                upstream_host = %self.config.endpoints.get(i).map(ToString::to_string).unwrap_or_default(),
                healthy = state.healthy,
                "active health check changed the host's state"
            );
            self.rebuild(&h);
        }
    }

    /// Hosts taking traffic now.
    pub fn healthy_hosts(&self) -> usize {
        self.table.load().healthy()
    }

    /// Opens a plain TCP connection to `authority` (TCP and passthrough listeners).
    pub async fn connect_tcp(&self, authority: &str) -> Result<TcpStream, ConnectError> {
        let c = &self.client_connector;
        connect_tcp(authority, c.timeout, c.resolver.as_ref()).await
    }

    /// The cluster's metric handles.
    pub fn metrics(&self) -> &PoolMetrics {
        &self.client_connector.pool
    }

    /// The pooled client.
    pub fn client(&self) -> &Client<Connector, UpstreamBody> {
        &self.client
    }

    /// Picks a healthy endpoint by priority, locality weight and the cluster's policy; `roll`
    /// is a random number. `None` when no host is healthy.
    pub fn pick(&self, roll: u64) -> Option<(usize, &Endpoint)> {
        let load = |i: usize| self.active.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        let mut first = Some(roll);
        let mut rng = || first.take().unwrap_or_else(random);
        let i = self.table.load().pick(self.policy, &mut rng, &load)?;
        self.config.endpoints.get(i).map(|e| (i, e))
    }

    /// Picks the endpoint for a consistent-hash key.
    pub fn pick_hash(&self, key_hash: u64) -> Option<(usize, &Endpoint)> {
        let i = self.table.load().pick_hash(key_hash)?;
        self.config.endpoints.get(i).map(|e| (i, e))
    }

    /// Picks for a retry: hosts in `tried` count as unhealthy for this choice, so the retry
    /// goes to another host when one exists (priorities and locality weights shift as they
    /// would if those hosts were down). Falls back to any healthy host.
    pub fn pick_other(&self, tried: &[usize]) -> Option<(usize, &Endpoint)> {
        let alternative = match self.health.lock() {
            Ok(h) => {
                let ok = |i: usize| {
                    !tried.contains(&i)
                        && !h.ejections.is_ejected(i)
                        && h.checks.get(i).is_none_or(|c| c.healthy)
                };
                Table::build(&self.specs, &self.groups, &ok, false)
            }
            Err(_) => return self.pick(random()),
        };
        let load = |i: usize| self.active.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
        let policy = match self.policy {
            // A fresh table's round-robin counters start at 0: pick at random instead.
            Policy::RoundRobin => Policy::Random,
            p => p,
        };
        match alternative.pick(policy, &mut random, &load) {
            Some(i) => self.config.endpoints.get(i).map(|e| (i, e)),
            None => self.pick(random()),
        }
    }

    /// Counts a request in flight on endpoint `i` until the guard drops.
    pub fn track(self: &Arc<Self>, i: usize) -> ActiveGuard {
        if let Some(c) = self.active.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        ActiveGuard {
            cluster: self.clone(),
            index: i,
        }
    }
}

/// Decrements an endpoint's in-flight count when dropped.
#[derive(Debug)]
pub struct ActiveGuard {
    cluster: Arc<UpstreamCluster>,
    index: usize,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if let Some(c) = self.cluster.active.get(self.index) {
            c.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A fast, non-cryptographic random number (load balancing and weights only).
pub fn random() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A random request id in UUID v4 form.
pub fn request_id() -> String {
    let a = random();
    let b = random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | (b >> 48) & 0x3fff,
        b & 0xffff_ffff_ffff
    )
}
