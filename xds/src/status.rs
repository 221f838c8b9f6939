//! Sync status of every connected proxy, per resource type (`istioctl proxy-status` is the model).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::cache::{GroupKey, NodeInfo};

/// Where one resource type of one proxy stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// The proxy ACKed the last response sent.
    Synced,
    /// A response was sent and is not answered yet.
    Stale,
    /// The proxy rejected the last response; it keeps serving the version it had.
    Nacked,
    /// Subscribed, nothing sent yet (no snapshot for the proxy's group).
    NotSent,
}

/// Status of one type on one proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TypeStatus {
    /// The type URL.
    pub type_url: String,
    /// SYNCED / STALE / NACKED / NOT_SENT.
    pub state: SyncState,
    /// Version of the last response sent (delta: the type's snapshot version).
    pub sent_version: Option<String>,
    /// The version the proxy reports as applied (SotW `version_info`; delta: the last version
    /// sent that was ACKed).
    pub acked_version: Option<String>,
    /// Nonce of the last response sent.
    pub nonce: Option<String>,
    /// The proxy's message when NACKED.
    pub error: Option<String>,
    /// The version the proxy rejected when NACKED.
    pub nacked_version: Option<String>,
    /// When NACKED over delta xDS: the resources of the rejected response (what it changed or
    /// removed), so the rejection can be pinned on them; empty otherwise.
    pub nacked_resources: Vec<String>,
    /// Resources in the last response.
    pub resources_sent: usize,
}

/// Which variant of ADS a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// StreamAggregatedResources.
    Sotw,
    /// DeltaAggregatedResources.
    Delta,
}

/// One connected ADS stream (normally one per proxy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    /// Server-assigned stream id; a reconnecting proxy briefly has two.
    pub stream_id: u64,
    /// The node the proxy announced.
    pub node: NodeInfo,
    /// The group whose snapshot it receives.
    pub group: GroupKey,
    /// SotW or delta.
    pub protocol: Protocol,
    /// When the stream opened, milliseconds since the Unix epoch.
    pub connected_since_unix_ms: u64,
    /// Status by type URL.
    pub types: BTreeMap<String, TypeStatus>,
    /// NACKs this stream sent since it opened.
    pub nacks: u64,
    /// The last NACK on this stream, kept after the proxy ACKs again (the "last NACK reason"
    /// of `causeway status --proxies`).
    pub last_nack: Option<LastNack>,
}

/// The last rejection of one stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LastNack {
    /// The rejected type.
    pub type_url: String,
    /// The rejected version.
    pub version: String,
    /// The proxy's message.
    pub message: String,
    /// When it arrived, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

impl ProxyStatus {
    /// Whether every subscribed type is SYNCED.
    pub fn synced(&self) -> bool {
        self.types.values().all(|t| t.state == SyncState::Synced)
    }
}

/// A proxy rejected a response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NackEvent {
    /// The proxy.
    pub node_id: String,
    /// Its federation cluster (metadata `cluster`).
    pub cluster: String,
    /// Its group.
    pub group: GroupKey,
    /// The rejected type.
    pub type_url: String,
    /// The rejected version.
    pub version: String,
    /// The proxy's message.
    pub message: String,
    /// The resources of the rejected response over delta xDS (what it changed or removed);
    /// empty for state of the world, whose response held every resource of the type.
    pub resources: Vec<String>,
}

#[derive(Default)]
struct Inner {
    proxies: BTreeMap<u64, ProxyStatus>,
    nacks_total: u64,
}

/// The sync status of every connected stream. Cloning shares it.
#[derive(Clone)]
pub struct StatusRegistry {
    inner: Arc<Mutex<Inner>>,
    changes: watch::Sender<u64>,
    nacks: broadcast::Sender<NackEvent>,
}

impl Default for StatusRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StatusRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusRegistry")
            .field("proxies", &self.proxies().len())
            .finish()
    }
}

impl StatusRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        StatusRegistry {
            inner: Arc::default(),
            changes: watch::Sender::new(0),
            // NACKs are rare; a slow reader that lags loses events but can still read
            // `nacks_total` and `proxies()`.
            nacks: broadcast::channel(256).0,
        }
    }

    /// Every connected stream, ordered by stream id.
    pub fn proxies(&self) -> Vec<ProxyStatus> {
        self.lock().proxies.values().cloned().collect()
    }

    /// Connected streams per federation cluster (metadata `cluster`).
    pub fn connected_per_cluster(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for p in self.lock().proxies.values() {
            *out.entry(p.node.cluster.clone()).or_insert(0) += 1;
        }
        out
    }

    /// NACKs received since the start.
    pub fn nacks_total(&self) -> u64 {
        self.lock().nacks_total
    }

    /// A counter that increases whenever any status changes; wait on it, then read
    /// [`StatusRegistry::proxies`].
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every NACK from now on, as it arrives.
    pub fn nacks(&self) -> broadcast::Receiver<NackEvent> {
        self.nacks.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Records a new stream; it is removed when the guard drops.
    pub(crate) fn register(
        &self,
        stream_id: u64,
        node: NodeInfo,
        group: GroupKey,
        protocol: Protocol,
    ) -> StreamGuard {
        let connected_since_unix_ms = now_unix_ms();
        self.lock().proxies.insert(
            stream_id,
            ProxyStatus {
                stream_id,
                node,
                group,
                protocol,
                connected_since_unix_ms,
                types: BTreeMap::new(),
                nacks: 0,
                last_nack: None,
            },
        );
        self.bump();
        StreamGuard {
            registry: self.clone(),
            stream_id,
        }
    }

    pub(crate) fn update_type(&self, stream_id: u64, status: TypeStatus) {
        let changed = {
            let mut inner = self.lock();
            match inner.proxies.get_mut(&stream_id) {
                Some(p) if p.types.get(&status.type_url) != Some(&status) => {
                    p.types.insert(status.type_url.clone(), status);
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.bump();
        }
    }

    pub(crate) fn nack(&self, stream_id: u64, type_url: &str, nack: &crate::sotw::Nack) {
        let (version, message) = (nack.version.as_str(), nack.message.as_str());
        let event = {
            let mut inner = self.lock();
            inner.nacks_total += 1;
            inner.proxies.get_mut(&stream_id).map(|p| {
                p.nacks += 1;
                p.last_nack = Some(LastNack {
                    type_url: type_url.to_owned(),
                    version: version.to_owned(),
                    message: message.to_owned(),
                    at_unix_ms: now_unix_ms(),
                });
                NackEvent {
                    node_id: p.node.id.clone(),
                    cluster: p.node.cluster.clone(),
                    group: p.group.clone(),
                    type_url: type_url.to_owned(),
                    version: version.to_owned(),
                    message: message.to_owned(),
                    resources: nack.resources.clone(),
                }
            })
        };
        if let Some(event) = event {
            // No receiver is not an error: nobody watches NACKs yet.
            let _ = self.nacks.send(event);
        }
        self.bump();
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Removes a stream from the registry when it ends, however it ends.
pub(crate) struct StreamGuard {
    registry: StatusRegistry,
    stream_id: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry.lock().proxies.remove(&self.stream_id);
        self.registry.bump();
    }
}
