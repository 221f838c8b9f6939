//! The controller's loop: reflect every kind into typed indexes, and on each change (debounced)
//! translate, allocate VIPs, publish the desired state and write statuses.
//!
//! Every controller translates and publishes (so each can serve xDS); only the leader allocates
//! VIPs and writes status, through a store fenced with its term so a deposed leader's late write
//! is refused. Status-only changes to stored objects (our own writes coming back) update the
//! indexes without a new translation, so a steady federation is quiet.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_crds::istio::{IstioObject, WorkloadEntry};
use causeway_crds::v1alpha1::{AccessPoint, Cluster, ExternalService, NameService};
use futures::StreamExt;
use futures::stream::SelectAll;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use crate::ipam::{Ipam, Owner};
use crate::placement::ObjectKey as NsName;
use crate::status::ProxyReport;
use crate::store::reflector::{Cache, Reflected, reflect};
use crate::store::{Expect, ObjectKey, ResourceType, Store, StoreError};
use crate::translate::incremental::Translator;
use crate::translate::{self, AccessPointVerdict, Snapshot, object_key};

mod writes;
pub use writes::StatusWriter;

/// The kinds the controller reads, in the order of [`Kind`].
const KINDS: [(&str, &str); 6] = [
    ("causeway.io", "Cluster"),
    ("causeway.io", "AccessPoint"),
    ("causeway.io", "NameService"),
    ("causeway.io", "ExternalService"),
    ("networking.istio.io", "WorkloadEntry"),
    ("", "Secret"),
];

/// How long the loop waits for more changes before translating, and the longest it lets a burst
/// delay a translation.
pub const DEBOUNCE: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(250));

/// What the federation should look like now: the translator's output for one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// Increases with every translation; proxies' configuration versions derive from it.
    pub revision: u64,
    /// The resources it was computed from.
    pub snapshot: Arc<Snapshot>,
    /// Placement and conflicts of every AccessPoint.
    pub verdicts: BTreeMap<NsName, AccessPointVerdict>,
    /// The VIP of every AccessPoint, or why it has none.
    pub vips: BTreeMap<NsName, Result<IpAddr, String>>,
    /// The Istio objects every member cluster gets (Kubernetes mode), in chunks of one
    /// AccessPoint or NameService shared between revisions (see [`Desired::istio_objects`]).
    pub istio: Vec<Arc<Vec<IstioObject>>>,
    /// The configuration of every gateway (per cluster and gateway address); unchanged
    /// gateways share the previous revision's `Arc`.
    pub gateways: Vec<Arc<translate::proxy::GatewayConfig>>,
}

impl Desired {
    /// The Istio objects every member cluster gets, in order.
    pub fn istio_objects(&self) -> impl Iterator<Item = &IstioObject> {
        self.istio.iter().flat_map(|chunk| chunk.iter())
    }

    /// What member cluster `cluster` gets, as one readable document; `None` for an unknown
    /// cluster.
    pub fn rendered(&self, cluster: &str) -> Option<Value> {
        self.snapshot.cluster(cluster)?;
        // Keys never leave the controller in a view a person reads.
        let gateways: Vec<Value> = self
            .gateways
            .iter()
            .filter(|g| g.cluster == cluster)
            .map(|g| serde_json::json!({"address": g.address, "config": g.config.redacted()}))
            .collect();
        let sidecars: serde_json::Map<String, Value> = translate::proxy::namespaces(&self.snapshot)
            .into_iter()
            .filter_map(|ns| {
                let doc =
                    translate::proxy::sidecar_config(&self.snapshot, &self.verdicts, cluster, &ns)?;
                (!doc.virtual_hosts.is_empty()).then(|| (ns, json(&doc.redacted())))
            })
            .collect();
        Some(serde_json::json!({
            "cluster": cluster,
            "revision": self.revision,
            "gateways": gateways,
            "sidecars": sidecars,
            "istio": self.istio_objects().collect::<Vec<_>>(),
        }))
    }
}

/// The loop's inputs and outputs.
pub struct Reconciler {
    /// Where the resources are read from.
    pub store: Arc<dyn Store>,
    /// Leadership: whether to allocate and write status, and through which (fenced) store.
    pub leader: watch::Receiver<Option<Arc<dyn Store>>>,
    /// VIP pools by name (CIDRs).
    pub pools: BTreeMap<String, crate::ipam::Pool>,
    /// What the proxies report, by cluster (from the xDS server).
    pub proxies: watch::Receiver<ProxyReport>,
    /// Where the desired state is published.
    pub desired: watch::Sender<Arc<Desired>>,
}

#[derive(Default)]
struct Indexes {
    caches: [Cache; 6],
    /// Kinds whose first full list arrived; nothing is translated before all have (a partial
    /// view would release the VIPs of AccessPoints not yet read).
    synced: [bool; 6],
    /// Decoded objects, kept between translations so only changed ones are decoded again.
    typed: TypedCaches,
}

/// The typed objects of each kind (see [`Typed`]).
#[derive(Default)]
struct TypedCaches {
    clusters: Typed<Cluster>,
    access_points: Typed<AccessPoint>,
    name_services: Typed<NameService>,
    external_services: Typed<ExternalService>,
    workload_entries: Typed<WorkloadEntry>,
    secrets: Typed<Secret>,
}

/// Decoded objects of one kind by `namespace/name`, with the resource version they were
/// decoded from: a snapshot of 25,000 objects decodes only the few that changed, and shares
/// the rest (`Arc`) with the previous snapshot.
struct Typed<T> {
    by_key: HashMap<String, (String, u64, Arc<T>)>,
    round: u64,
}

impl<T> Default for Typed<T> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            round: 0,
        }
    }
}

impl<T: DeserializeOwned> Typed<T> {
    /// The objects of `cache`, in its order, decoding only new versions.
    fn sync(&mut self, kind: usize, cache: &Cache) -> Vec<Arc<T>> {
        self.round += 1;
        let round = self.round;
        let mut key = String::new();
        let mut out = Vec::new();
        for v in cache.objects() {
            let md = &v["metadata"];
            key.clear();
            key.push_str(md["namespace"].as_str().unwrap_or_default());
            key.push('/');
            key.push_str(md["name"].as_str().unwrap_or_default());
            let rv = md["resourceVersion"].as_str();
            if let (Some(rv), Some(e)) = (rv, self.by_key.get_mut(key.as_str()))
                && e.0 == rv
            {
                e.1 = round;
                out.push(e.2.clone());
                continue;
            }
            match serde_json::from_value::<T>(v.clone()) {
                Ok(t) => {
                    let t = Arc::new(t);
                    out.push(t.clone());
                    if let Some(rv) = rv {
                        self.by_key.insert(key.clone(), (rv.to_owned(), round, t));
                    }
                }
                Err(e) => {
                    // Only valid objects are stored; this is a newer or older schema.
                    tracing::warn!(kind = KINDS[kind].1, error = %e, "skipping an object that does not decode");
                }
            }
        }
        self.by_key.retain(|_, e| e.1 == round);
        out
    }
}

/// Whether two versions of an object differ in more than `status` and the resource version.
fn only_status_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("status");
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
            }
        }
        v
    };
    strip(old) == strip(new)
}

impl Indexes {
    /// Applies a reflected change; returns whether it needs a new translation.
    fn apply(&mut self, kind: usize, r: Reflected) -> bool {
        let Some(cache) = self.caches.get_mut(kind) else {
            return false;
        };
        let relevant = match &r {
            Reflected::Restarted(_) => true,
            Reflected::Event(e) => {
                !(e.event_type == crate::store::EventType::Modified
                    && e.previous
                        .as_ref()
                        .is_some_and(|old| only_status_changed(old, &e.object)))
            }
        };
        if matches!(r, Reflected::Restarted(_))
            && let Some(s) = self.synced.get_mut(kind)
        {
            *s = true;
        }
        cache.apply(r);
        relevant
    }

    fn synced(&self) -> bool {
        self.synced.iter().all(|s| *s)
    }

    fn snapshot(&mut self) -> Snapshot {
        let [c0, c1, c2, c3, c4, c5] = &self.caches;
        let t = &mut self.typed;
        Snapshot {
            clusters: t.clusters.sync(0, c0),
            access_points: t.access_points.sync(1, c1),
            name_services: t.name_services.sync(2, c2),
            external_services: t.external_services.sync(3, c3),
            workload_entries: t.workload_entries.sync(4, c4),
            secrets: t.secrets.sync(5, c5),
        }
    }
}

/// Translates a snapshot in full: a pure function of the resources and the VIPs.
pub fn translate(
    revision: u64,
    snapshot: Arc<Snapshot>,
    vips: BTreeMap<NsName, Result<IpAddr, String>>,
) -> Desired {
    translate_with(&mut Translator::new(), revision, snapshot, vips)
}

/// Translates a snapshot with `translator`, which reuses what it computed for the previous
/// snapshot wherever the inputs are unchanged; the result equals [`translate`]'s.
pub fn translate_with(
    translator: &mut Translator,
    revision: u64,
    snapshot: Arc<Snapshot>,
    vips: BTreeMap<NsName, Result<IpAddr, String>>,
) -> Desired {
    let t = translator.translate(&snapshot);
    Desired {
        revision,
        snapshot,
        verdicts: t.verdicts,
        vips,
        istio: t.istio,
        gateways: t.gateways,
    }
}

/// The VIPs AccessPoints already have in their status (what a follower serves with).
fn vips_from_status(s: &Snapshot) -> BTreeMap<NsName, Result<IpAddr, String>> {
    s.access_points
        .iter()
        .filter_map(|ap| {
            let vip = ap.status.as_ref()?.vip.as_ref()?.parse::<IpAddr>().ok()?;
            Some((object_key(&ap.metadata), Ok(vip)))
        })
        .collect()
}

/// Statuses that differ from the stored ones, as (key, status) writes: every status computed
/// afresh (the loop uses a [`StatusWriter`], which skips what cannot have changed).
pub fn status_writes(
    d: &Desired,
    proxies: &ProxyReport,
    now: Timestamp,
) -> Vec<(ObjectKey, Value)> {
    StatusWriter::default().writes(&d.snapshot, &d.verdicts, &d.vips, proxies, now)
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Completes when the value changes; never, once the sender is gone.
async fn changed<T>(rx: &mut watch::Receiver<T>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Reconciler {
    /// Runs until the store's reflectors end (never, in practice) or the task is dropped.
    pub async fn run(mut self) {
        let mut streams = SelectAll::new();
        for (i, (group, kind)) in KINDS.iter().enumerate() {
            let s = reflect(self.store.clone(), ResourceType::new(*group, *kind), None);
            streams.push(s.map(move |r| (i, r)).boxed());
        }
        let mut idx = Indexes::default();
        let mut revision = 0u64;
        let mut dirty = false;
        let mut status_dirty = false;
        let mut ipam: Option<(Arc<dyn Store>, Ipam)> = None;
        let mut translator = Translator::new();
        let mut statuses = StatusWriter::default();
        loop {
            // Gather a burst of changes.
            // Work pending and nothing missing: go do it. Otherwise wait for news (before the
            // first full list of every kind, pending work must wait too, or this loop spins).
            let first = if (dirty || status_dirty) && idx.synced() {
                None
            } else {
                tokio::select! {
                    next = streams.next() => match next {
                        Some(x) => Some(x),
                        None => return,
                    },
                    () = changed(&mut self.proxies) => {
                        status_dirty = true;
                        None
                    }
                    () = changed(&mut self.leader) => {
                        dirty = true;
                        None
                    }
                }
            };
            if let Some((kind, r)) = first {
                dirty |= idx.apply(kind, r);
                status_dirty = true;
                let start = Instant::now();
                loop {
                    let quiet = tokio::time::sleep(DEBOUNCE.0);
                    tokio::select! {
                        next = streams.next() => match next {
                            Some((kind, r)) => dirty |= idx.apply(kind, r),
                            None => return,
                        },
                        () = quiet => break,
                    }
                    if start.elapsed() >= DEBOUNCE.1 {
                        break;
                    }
                }
            }
            if !idx.synced() {
                continue;
            }
            let writer = self.leader.borrow().clone();
            if !dirty && !status_dirty {
                continue;
            }
            let snapshot = Arc::new(idx.snapshot());
            if dirty {
                dirty = false;
                revision += 1;
                let vips = match &writer {
                    Some(w) => self.allocate(&mut ipam, w, &snapshot).await,
                    None => vips_from_status(&snapshot),
                };
                let started = Instant::now();
                let desired = translate_with(&mut translator, revision, snapshot.clone(), vips);
                tracing::debug!(revision, took = ?started.elapsed(), "translated");
                self.desired.send_replace(Arc::new(desired));
            }
            status_dirty = false;
            if let Some(w) = &writer {
                // The verdicts of the latest translation, the statuses now in the indexes.
                let current = self.desired.borrow().clone();
                let proxies = self.proxies.borrow().clone();
                let writes = statuses.writes(
                    &snapshot,
                    &current.verdicts,
                    &current.vips,
                    &proxies,
                    Timestamp::now(),
                );
                for (key, status) in writes {
                    match w.put_status(&key, status, Expect::Any).await {
                        Ok(_) | Err(StoreError::NotFound { .. }) => {}
                        Err(e) => tracing::warn!(
                            object = %key, error = %e,
                            "status write failed; retrying with the next change"
                        ),
                    }
                }
            }
        }
    }

    /// Allocates VIPs through the leader's store; errors become per-AccessPoint reasons.
    async fn allocate(
        &self,
        ipam: &mut Option<(Arc<dyn Store>, Ipam)>,
        writer: &Arc<dyn Store>,
        s: &Snapshot,
    ) -> BTreeMap<NsName, Result<IpAddr, String>> {
        let fresh = !matches!(ipam, Some((w, _)) if Arc::ptr_eq(w, writer));
        if fresh {
            let i = Ipam::new(writer.clone(), self.pools.clone());
            if let Err(e) = i.load().await {
                tracing::warn!(error = %e, "loading VIP allocations failed");
            }
            *ipam = Some((writer.clone(), i));
        }
        let Some((_, ipam)) = ipam.as_ref() else {
            return BTreeMap::new();
        };
        match ipam.reconcile(&s.access_points).await {
            Ok(map) => map
                .into_iter()
                .map(|(Owner { namespace, name }, r)| {
                    ((namespace, name), r.map_err(|e| e.to_string()))
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "VIP reconcile failed; keeping the VIPs in status");
                vips_from_status(s)
            }
        }
    }
}
