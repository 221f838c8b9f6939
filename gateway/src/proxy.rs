//! Listeners and the proxy data path.
//!
//! The configuration lives in an [`ArcSwap`]: every connection and request reads the current
//! [`State`] without locks, and a reload swaps it in one store. Accept loops are keyed by the
//! configured address, so a reload that keeps a listener's address keeps its socket and every
//! open connection; connections look their listener up by that address when they arrive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ListenerKind};
use crate::metrics::{ListenerLabels, Metrics};
use crate::route::Router;
use crate::tls::{self, TlsError};

pub mod http;
pub mod stream;
pub mod upstream;

use upstream::UpstreamCluster;

/// Whether `name` (lower case) is a hop-by-hop header: meaningful for one connection only, so
/// never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Resource limits and timeouts of the data path.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body forwarded (413 beyond, when declared up front).
    pub max_request_body: u64,
    /// Largest request head (HTTP/1 read buffer and HTTP/2 header list); 431 beyond.
    pub max_header_bytes: usize,
    /// Time allowed to send a request head (slowloris), also the keep-alive idle limit.
    pub header_read_timeout: Duration,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long SIGTERM waits for open connections to finish.
    pub drain_timeout: Duration,
    /// TCP and TLS passthrough connections with no bytes either way for this long are closed.
    pub stream_idle_timeout: Duration,
    /// HTTP/2 connections are pinged this often and closed when a ping goes unanswered as long.
    pub http2_keepalive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body: 16 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(15),
            stream_idle_timeout: Duration::from_secs(3600),
            http2_keepalive: Duration::from_secs(30),
        }
    }
}

/// Why a configuration could not be put into service.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// TLS material was refused.
    #[error("listener or cluster TLS: {0}")]
    Tls(#[from] TlsError),
    /// A listener address could not be bound.
    #[error("cannot listen on {address} (listener {listener:?}): {source}")]
    Bind {
        /// Listener name.
        listener: String,
        /// Address.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Routing data of an HTTP listener.
#[derive(Debug)]
pub struct HttpListener {
    /// Virtual hosts and routes.
    pub router: Router,
    /// Redirect everything to https.
    pub https_redirect: bool,
}

/// Everything the data path needs from one configuration, prepared once.
#[derive(Debug)]
pub struct State {
    /// The configuration.
    pub config: Arc<Config>,
    /// By listener name.
    pub routers: HashMap<String, HttpListener>,
    /// By cluster name.
    pub clusters: HashMap<String, Arc<UpstreamCluster>>,
    /// TLS acceptors of HTTPS listeners, by name.
    pub acceptors: HashMap<String, Arc<rustls::ServerConfig>>,
    /// Listener name by configured address.
    pub by_address: HashMap<SocketAddr, String>,
}

impl State {
    /// Prepares routers, pools and TLS for `config`. Clusters identical to one of `previous`
    /// keep its pool, so a reload does not cost every upstream connection.
    pub fn build(
        config: Config,
        previous: Option<&State>,
        resolver: Option<&hickory_resolver::TokioResolver>,
        metrics: &Metrics,
    ) -> Result<State, TlsError> {
        let config = Arc::new(config);
        let mut routers = HashMap::new();
        let mut acceptors = HashMap::new();
        let mut by_address = HashMap::new();
        for l in &config.listeners {
            by_address.insert(l.address, l.name.clone());
            match &l.kind {
                ListenerKind::Http { https_redirect, .. } => {
                    routers.insert(
                        l.name.clone(),
                        HttpListener {
                            router: Router::new(config.clone(), &l.name),
                            https_redirect: *https_redirect,
                        },
                    );
                }
                ListenerKind::Https { tls: t, .. } => {
                    routers.insert(
                        l.name.clone(),
                        HttpListener {
                            router: Router::new(config.clone(), &l.name),
                            https_redirect: false,
                        },
                    );
                    acceptors.insert(l.name.clone(), tls::server_config(t)?);
                }
                _ => {}
            }
        }
        let mut clusters = HashMap::new();
        for (name, c) in &config.clusters {
            let reuse = previous
                .and_then(|p| p.clusters.get(name))
                .filter(|old| same_cluster(&old.config, c))
                .cloned();
            let cluster = match reuse {
                Some(old) => old,
                None => {
                    let fresh = Arc::new(UpstreamCluster::new(
                        c,
                        resolver.cloned(),
                        metrics.pool(name),
                    )?);
                    fresh.start_background();
                    fresh
                }
            };
            clusters.insert(name.clone(), cluster);
        }
        Ok(State {
            config,
            routers,
            clusters,
            acceptors,
            by_address,
        })
    }
}

/// Whether two cluster definitions are the same, PEM contents included (the serialized form
/// leaves them out).
fn same_cluster(a: &crate::config::Cluster, b: &crate::config::Cluster) -> bool {
    let pems = |c: &crate::config::Cluster| {
        c.tls.as_ref().map(|t| {
            (
                t.ca.pem.clone(),
                t.client_cert.as_ref().map(|p| p.pem.clone()),
                t.client_key.as_ref().map(|k| k.0.pem.clone()),
            )
        })
    };
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(x), Ok(y)) => x == y && pems(a) == pems(b),
        _ => false,
    }
}

/// State shared by every connection.
pub struct Shared {
    /// The configuration in service.
    pub state: ArcSwap<State>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Limits.
    pub limits: Limits,
    server: auto::Builder<TokioExecutor>,
    open: AtomicUsize,
    drain: watch::Sender<bool>,
}

struct Running {
    bound: SocketAddr,
    stop: watch::Sender<bool>,
}

/// A running gateway: its listeners and the configuration they serve.
pub struct Gateway {
    shared: Arc<Shared>,
    listeners: Mutex<HashMap<SocketAddr, Running>>,
    /// One reload at a time: two interleaved binds of the same new address would fail.
    reloading: tokio::sync::Mutex<()>,
    resolver: Option<hickory_resolver::TokioResolver>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// Binds every listener of `config` and starts serving. Must run inside a tokio runtime.
    pub async fn start(
        config: Config,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Result<Arc<Gateway>, ApplyError> {
        let resolver = upstream::system_resolver();
        let state = State::build(config, None, resolver.as_ref(), &metrics)?;
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192));
        server
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(1024)
            .keep_alive_interval(limits.http2_keepalive)
            .keep_alive_timeout(limits.http2_keepalive);
        let (drain, _) = watch::channel(false);
        let gw = Arc::new(Gateway {
            shared: Arc::new(Shared {
                state: ArcSwap::from_pointee(State {
                    config: Arc::new(Config {
                        listeners: vec![],
                        virtual_hosts: vec![],
                        clusters: Default::default(),
                    }),
                    routers: HashMap::new(),
                    clusters: HashMap::new(),
                    acceptors: HashMap::new(),
                    by_address: HashMap::new(),
                }),
                metrics,
                limits,
                server,
                open: AtomicUsize::new(0),
                drain,
            }),
            listeners: Mutex::new(HashMap::new()),
            reloading: tokio::sync::Mutex::new(()),
            resolver,
        });
        gw.apply(state).await?;
        Ok(gw)
    }

    /// The configuration in service.
    pub fn config(&self) -> Arc<Config> {
        self.shared.state.load().config.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The address a listener is actually bound to (differs from the configured one for port 0).
    pub fn bound_address(&self, listener: &str) -> Option<SocketAddr> {
        let cfg = self.config();
        let configured = cfg.listener(listener)?.address;
        let map = self.listeners.lock().ok()?;
        map.get(&configured).map(|r| r.bound)
    }

    /// Whether a shutdown has begun (listeners closed, connections draining).
    pub fn draining(&self) -> bool {
        *self.shared.drain.borrow()
    }

    /// Open downstream connections.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Replaces the configuration. Nothing changes if it cannot be applied (a TLS error or an
    /// address that cannot be bound): the old configuration keeps serving.
    pub async fn reload(&self, config: Config) -> Result<(), ApplyError> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.shared.state.load_full();
        let result = match State::build(
            config,
            Some(&previous),
            self.resolver.as_ref(),
            &self.shared.metrics,
        ) {
            Ok(state) => self.apply(state).await,
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(()) => self.shared.metrics.reloads.inc(),
            Err(_) => self.shared.metrics.reload_failures.inc(),
        };
        result
    }

    async fn apply(&self, state: State) -> Result<(), ApplyError> {
        // Bind the new addresses first: if one fails, nothing has changed yet.
        let mut fresh = Vec::new();
        for l in &state.config.listeners {
            let known = self
                .listeners
                .lock()
                .map(|m| m.contains_key(&l.address))
                .unwrap_or(false);
            if known {
                continue;
            }
            let tcp = bind(l.address).map_err(|source| ApplyError::Bind {
                listener: l.name.clone(),
                address: l.address,
                source,
            })?;
            fresh.push((l.address, tcp));
        }
        let wanted: Vec<SocketAddr> = state.config.listeners.iter().map(|l| l.address).collect();
        self.shared.state.store(Arc::new(state));
        let Ok(mut map) = self.listeners.lock() else {
            return Ok(());
        };
        map.retain(|addr, running| {
            let keep = wanted.contains(addr);
            if !keep {
                // Stops accepting; connections already open finish on their own.
                let _ = running.stop.send(true);
            }
            keep
        });
        for (addr, tcp) in fresh {
            let bound = tcp.local_addr().unwrap_or(addr);
            let (stop, stop_rx) = watch::channel(false);
            tokio::spawn(accept_loop(self.shared.clone(), addr, tcp, stop_rx));
            map.insert(addr, Running { bound, stop });
        }
        Ok(())
    }

    /// Stops accepting, asks open connections to finish (HTTP/1 closes after the response in
    /// flight, HTTP/2 sends GOAWAY) and waits for them, at most the drain timeout.
    pub async fn shutdown(&self) {
        if let Ok(mut map) = self.listeners.lock() {
            for (_, r) in map.drain() {
                let _ = r.stop.send(true);
            }
        }
        let _ = self.shared.drain.send(true);
        let deadline = tokio::time::Instant::now() + self.shared.limits.drain_timeout;
        while self.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    shared: Arc<Shared>,
    addr: SocketAddr,
    tcp: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = tcp.accept() => match r {
                Ok((stream, peer)) => {
                    tokio::spawn(connection(shared.clone(), addr, stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(address = %addr, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

struct OpenGuard {
    shared: Arc<Shared>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(shared: Arc<Shared>, addr: SocketAddr, stream: TcpStream, peer: SocketAddr) {
    let state = shared.state.load_full();
    let Some(name) = state.by_address.get(&addr).cloned() else {
        return;
    };
    let labels = ListenerLabels {
        listener: name.clone(),
    };
    shared.metrics.connections.get_or_create(&labels).inc();
    let gauge = shared
        .metrics
        .active_connections
        .get_or_create(&labels)
        .clone();
    gauge.inc();
    shared.open.fetch_add(1, Ordering::Relaxed);
    let duration = shared
        .metrics
        .request_duration
        .get_or_create(&labels)
        .clone();
    let _guard = OpenGuard {
        shared: shared.clone(),
        gauge,
    };
    let _ = stream.set_nodelay(true);
    let listener: Arc<str> = Arc::from(name.as_str());
    let Some(l) = state.config.listener(&name) else {
        return;
    };
    let trusted = l.trusted_sources.iter().any(|c| c.contains(peer.ip()));
    match &l.kind {
        ListenerKind::Http { .. } => {
            let info = http::ConnInfo {
                listener,
                scheme: "http",
                peer,
                sni: None,
                duration: duration.clone(),
                trusted,
            };
            drop(state);
            serve_http(shared, info, stream).await;
        }
        ListenerKind::Https { .. } => {
            let Some(acceptor) = state.acceptors.get(&name).cloned().map(TlsAcceptor::from) else {
                return;
            };
            drop(state);
            let hs =
                tokio::time::timeout(shared.limits.tls_handshake_timeout, acceptor.accept(stream))
                    .await;
            let tls = match hs {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(listener = %listener, peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = %listener, peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let sni = tls.get_ref().1.server_name().map(Arc::from);
            let info = http::ConnInfo {
                listener,
                scheme: "https",
                peer,
                sni,
                duration: duration.clone(),
                trusted,
            };
            serve_http(shared, info, tls).await;
        }
        ListenerKind::TlsPassthrough { .. } | ListenerKind::Tcp { .. } => {
            if let Err(e) = stream::serve(shared.clone(), state, listener.clone(), stream).await {
                tracing::warn!(listener = %listener, peer = %peer, error = %e, "stream connection closed");
            }
        }
    }
}

async fn serve_http<I>(shared: Arc<Shared>, info: http::ConnInfo, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let mut drain = shared.drain.subscribe();
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| http::serve(svc_shared.clone(), info.clone(), req));
    let conn = shared.server.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = drain.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
