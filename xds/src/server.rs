//! The ADS gRPC service (state of the world and delta) and the function that serves it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::cache::{GroupKey, NodeInfo, SnapshotCache};
use crate::delta::{self, DeltaStreamState};
use crate::metrics::XdsMetrics;
use crate::sotw::{self, RequestKind, StreamState};
use crate::status::{Protocol, StatusRegistry};
use crate::type_url;

/// Where the controller serves ADS unless told otherwise (`ARCHITECTURE.md` §9).
pub const DEFAULT_ADDR: &str = "127.0.0.1:15010";

/// Maps a proxy's node to the group whose snapshot it receives.
pub type GroupFn = Arc<dyn Fn(&NodeInfo) -> GroupKey + Send + Sync>;

/// Responses queued per stream before the stream task waits for the proxy to read.
const STREAM_BUFFER: usize = 16;

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);
static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);

/// Nonces are unique across streams so that a request carrying a nonce from an earlier stream
/// can never be mistaken for an answer on this one.
fn next_nonce() -> String {
    format!("{:x}", NEXT_NONCE.fetch_add(1, Ordering::Relaxed))
}

/// Transport settings of [`serve`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Largest request accepted. Requests are small (names, versions, an error message); 4 MiB
    /// is gRPC's default.
    pub max_decoding_message_size: usize,
    /// Largest response sent. A gateway of a big federation can receive many megabytes of
    /// state of the world; a response over the limit fails the stream with RESOURCE_EXHAUSTED
    /// rather than silently truncating.
    pub max_encoding_message_size: usize,
    /// HTTP/2 PING interval, so half-open connections (a proxy host that vanished) are noticed
    /// and their streams freed.
    pub keepalive_interval: Duration,
    /// How long to wait for the PING answer before closing the connection.
    pub keepalive_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_decoding_message_size: 4 * 1024 * 1024,
            max_encoding_message_size: 64 * 1024 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the ADS server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error(
        "cannot listen for xDS on {addr}: {source} (is another controller running there? choose \
         another ADS address)"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("xDS server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The ADS service: serves each proxy the snapshot of its group and records sync status.
/// Cloning shares everything.
#[derive(Clone)]
pub struct AdsServer {
    cache: SnapshotCache,
    status: StatusRegistry,
    metrics: XdsMetrics,
    group_fn: GroupFn,
    /// Set by [`serve_listener`] so that its shutdown also ends the long-lived ADS streams
    /// (graceful shutdown would otherwise wait for them forever).
    closing: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer")
            .field("cache", &self.cache)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl AdsServer {
    /// A server over `cache`, grouping proxies by [`NodeInfo::default_group_key`].
    pub fn new(cache: SnapshotCache) -> Self {
        AdsServer {
            cache,
            status: StatusRegistry::new(),
            metrics: XdsMetrics::new(),
            group_fn: Arc::new(NodeInfo::default_group_key),
            closing: None,
        }
    }

    /// Groups proxies with `f` instead.
    #[must_use]
    pub fn with_group_fn(
        mut self,
        f: impl Fn(&NodeInfo) -> GroupKey + Send + Sync + 'static,
    ) -> Self {
        self.group_fn = Arc::new(f);
        self
    }

    /// Uses these metrics (for example ones already registered with the process registry).
    #[must_use]
    pub fn with_metrics(mut self, metrics: XdsMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The cache it serves.
    pub fn cache(&self) -> &SnapshotCache {
        &self.cache
    }

    /// Sync status of connected proxies.
    pub fn status(&self) -> &StatusRegistry {
        &self.status
    }

    /// Its metrics.
    pub fn metrics(&self) -> &XdsMetrics {
        &self.metrics
    }

    /// The tonic service, with the message size limits of `opts`, to mount on a router of the
    /// caller's own.
    pub fn into_service(self, opts: &ServerOptions) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(opts.max_decoding_message_size)
            .max_encoding_message_size(opts.max_encoding_message_size)
    }

    fn open(&self, node: &NodeInfo) -> (u64, GroupKey) {
        let id = NEXT_STREAM.fetch_add(1, Ordering::Relaxed);
        let group = (self.group_fn)(node);
        (id, group)
    }

    async fn run_sotw(
        mut self,
        mut inbound: Streaming<DiscoveryRequest>,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) {
        let first = match inbound.message().await {
            Ok(Some(r)) => r,
            _ => return,
        };
        let Some(node) = first.node.as_ref() else {
            let _ = tx.send(Err(missing_node())).await;
            return;
        };
        let info = NodeInfo::from_node(node);
        let (id, group) = self.open(&info);
        info!(stream = id, node = %info.id, %group, "ADS stream opened (state of the world)");
        let _guard = self
            .status
            .register(id, info.clone(), group.clone(), Protocol::Sotw);
        let _connected = ConnectedGauge::new(&self.metrics);
        let mut snapshots = self.cache.watch(&group);
        let mut states = StreamState::new();
        let mut next = Some(first);
        loop {
            if let Some(req) = next.take() {
                let kind = sotw::on_request(&mut states, &req);
                self.note_request(id, &info, &req.type_url, &kind);
                if let Some(s) = states.get(&req.type_url) {
                    self.status.update_type(id, s.status(&req.type_url));
                }
            }
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                for t in sotw::pending_sends(&states, &snapshot) {
                    let Some(resp) = sotw::build_response(&mut states, &t, &snapshot, next_nonce())
                    else {
                        continue;
                    };
                    debug!(stream = id, r#type = type_url::short(&t), version = %resp.version_info,
                        resources = resp.resources.len(), "push");
                    self.metrics.push(&t);
                    if let Some(s) = states.get(&t) {
                        self.status.update_type(id, s.status(&t));
                    }
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
            }
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(r)) => next = Some(r),
                    Ok(None) => break,
                    Err(e) => { debug!(stream = id, error = %e, "ADS stream error"); break }
                },
                changed = snapshots.changed() => if changed.is_err() { break },
                () = tx.closed() => break,
                () = closing(&mut self.closing) => break,
            }
        }
        info!(stream = id, node = %info.id, "ADS stream closed");
    }

    async fn run_delta(
        mut self,
        mut inbound: Streaming<DeltaDiscoveryRequest>,
        tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) {
        let first = match inbound.message().await {
            Ok(Some(r)) => r,
            _ => return,
        };
        let Some(node) = first.node.as_ref() else {
            let _ = tx.send(Err(missing_node())).await;
            return;
        };
        let info = NodeInfo::from_node(node);
        let (id, group) = self.open(&info);
        info!(stream = id, node = %info.id, %group, "ADS stream opened (delta)");
        let _guard = self
            .status
            .register(id, info.clone(), group.clone(), Protocol::Delta);
        let _connected = ConnectedGauge::new(&self.metrics);
        let mut snapshots = self.cache.watch(&group);
        let mut states = DeltaStreamState::new();
        let mut next = Some(first);
        loop {
            if let Some(req) = next.take() {
                let kind = delta::on_delta_request(&mut states, &req);
                self.note_request(id, &info, &req.type_url, &kind);
                if let Some(s) = states.get(&req.type_url) {
                    self.status.update_type(id, s.status(&req.type_url));
                }
            }
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                // Only types whose state moved are reported: this runs on every ACK of every
                // stream, and the registry is one lock for all of them.
                for t in delta::settle_nacks(&mut states, &snapshot) {
                    if let Some(s) = states.get(&t) {
                        self.status.update_type(id, s.status(&t));
                    }
                }
                for t in delta::pending_delta_sends(&states, &snapshot) {
                    let Some(resp) =
                        delta::build_delta_response(&mut states, &t, &snapshot, next_nonce())
                    else {
                        continue;
                    };
                    debug!(stream = id, r#type = type_url::short(&t), version = %resp.system_version_info,
                        resources = resp.resources.len(), removed = resp.removed_resources.len(), "push");
                    self.metrics.push(&t);
                    if let Some(s) = states.get(&t) {
                        self.status.update_type(id, s.status(&t));
                    }
                    if tx.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
            }
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(r)) => next = Some(r),
                    Ok(None) => break,
                    Err(e) => { debug!(stream = id, error = %e, "ADS stream error"); break }
                },
                changed = snapshots.changed() => if changed.is_err() { break },
                () = tx.closed() => break,
                () = closing(&mut self.closing) => break,
            }
        }
        info!(stream = id, node = %info.id, "ADS stream closed");
    }

    fn note_request(&self, id: u64, info: &NodeInfo, t: &str, kind: &RequestKind) {
        match kind {
            RequestKind::Nack(nack) => {
                warn!(stream = id, node = %info.id, r#type = type_url::short(t),
                    version = %nack.version, error = %nack.message, "proxy rejected config (NACK)");
                self.metrics.nack(t);
                self.status.nack(id, t, nack);
            }
            RequestKind::Stale => {
                self.metrics.stale_nonces.inc();
            }
            RequestKind::Initial | RequestKind::Ack => {}
        }
    }
}

/// Completes when the server is shutting down (or its `serve` future was dropped).
async fn closing(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            let _ = rx.wait_for(|c| *c).await;
        }
        None => std::future::pending().await,
    }
}

fn missing_node() -> Status {
    Status::invalid_argument(
        "the first discovery request must carry a node (id and metadata cluster/role/namespace); \
         see docs/xds.md",
    )
}

/// Counts an open stream for as long as it lives.
struct ConnectedGauge(XdsMetrics);

impl ConnectedGauge {
    fn new(m: &XdsMetrics) -> Self {
        m.connected.inc();
        ConnectedGauge(m.clone())
    }
}

impl Drop for ConnectedGauge {
    fn drop(&mut self) {
        self.0.connected.dec();
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.clone().run_sotw(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(self.clone().run_delta(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Binds `addr` and serves ADS until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    server: AdsServer,
    opts: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    serve_listener(listener, server, opts, shutdown).await
}

/// Serves ADS on an already bound listener (tests bind port 0 and read the port back) until
/// `shutdown` completes.
pub async fn serve_listener(
    listener: TcpListener,
    server: AdsServer,
    opts: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving ADS");
    }
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut server = server;
    server.closing = Some(closing_rx);
    let shutdown = async move {
        shutdown.await;
        closing_tx.send_replace(true);
    };
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(opts.keepalive_interval))
        .http2_keepalive_timeout(Some(opts.keepalive_timeout))
        .tcp_keepalive(Some(opts.keepalive_interval))
        .tcp_nodelay(true)
        .add_service(server.into_service(opts))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
