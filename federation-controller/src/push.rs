//! Pushing the desired state to the proxies: the controller's side of xDS.
//!
//! Proxies are grouped by what they should receive (the group key of [`group_of`]): gateways
//! by cluster and gateway address, sidecars by cluster, namespace and listen address. For every
//! group with a connected proxy, each new desired state is rendered ([`config_for`]), turned
//! into Envoy resources and set in the snapshot cache; the ADS server sends only what changed.
//! The other way round, the server's sync status becomes the [`ProxyReport`] the status writer
//! reads (connected and acknowledging proxies per cluster, NACK messages).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use causeway_proxy_config::ProxyConfig;
use causeway_proxy_config::envoy::{EnvoyOptions, to_envoy};
use causeway_xds::{AdsServer, GroupKey, NodeInfo, Snapshot, SyncState};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::reconcile::Desired;
use crate::status::{ClusterProxies, ProxyReport};
use crate::translate::proxy::{SIDECAR_LISTENER, sidecar_config};

/// Node metadata key: the gateway address a gateway serves (`Cluster.spec.gateways[].address`).
pub const META_ADDRESS: &str = "address";
/// Node metadata key: where a sidecar's outbound listener binds (`IP:PORT`).
pub const META_LISTEN: &str = "listen";

/// The group of a proxy: `gateway|CLUSTER|ADDRESS`, `sidecar|CLUSTER|NAMESPACE|LISTEN`, or
/// `ROLE|CLUSTER` for anything else (which gets nothing yet).
pub fn group_of(n: &NodeInfo) -> GroupKey {
    let cluster = if n.cluster.is_empty() {
        &n.node_cluster
    } else {
        &n.cluster
    };
    let meta = |k: &str| n.metadata.get(k).map(String::as_str).unwrap_or_default();
    match n.role.as_str() {
        "gateway" => format!("gateway|{cluster}|{}", meta(META_ADDRESS)),
        "sidecar" => {
            let ns = if n.namespace.is_empty() {
                "default"
            } else {
                &n.namespace
            };
            format!("sidecar|{cluster}|{ns}|{}", meta(META_LISTEN))
        }
        role => format!("{role}|{cluster}"),
    }
}

/// What the proxies of `group` should serve under `d`; `None` when the group names an unknown
/// cluster or gateway (the proxies then get nothing and stay as they are).
pub fn config_for(group: &str, d: &Desired) -> Option<ProxyConfig> {
    let parts: Vec<&str> = group.split('|').collect();
    match parts.as_slice() {
        ["gateway", cluster, address] => d
            .gateways
            .iter()
            .filter(|g| g.cluster == *cluster)
            // A gateway that does not say which address it is gets the cluster's first.
            .find(|g| address.is_empty() || g.address == *address)
            .map(|g| g.config.clone()),
        ["sidecar", cluster, namespace, listen] => {
            let mut doc = sidecar_config(&d.snapshot, &d.verdicts, cluster, namespace)?;
            for l in &mut doc.listeners {
                if l.address == SIDECAR_LISTENER && !listen.is_empty() {
                    l.address = (*listen).to_owned();
                }
            }
            Some(doc)
        }
        _ => None,
    }
}

/// The Envoy snapshot of a configuration; `None` (logged) when it cannot be translated.
fn snapshot_of(group: &str, doc: &ProxyConfig) -> Option<Snapshot> {
    let resources = match to_envoy(doc, &EnvoyOptions::default()) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(group, error = %e, "cannot translate a proxy configuration to Envoy resources");
            return None;
        }
    };
    let all = resources
        .to_any()
        .into_values()
        .flat_map(BTreeMap::into_values);
    match Snapshot::from_resources(all) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(group, error = %e, "cannot build an xDS snapshot");
            None
        }
    }
}

/// Per cluster: connected gateways and sidecars, those in sync, and NACK messages.
pub fn proxy_report(server: &AdsServer, now: Timestamp) -> ProxyReport {
    let mut out = ProxyReport::new();
    for p in server.status().proxies() {
        let cluster = if p.node.cluster.is_empty() {
            p.node.node_cluster.clone()
        } else {
            p.node.cluster.clone()
        };
        let e: &mut ClusterProxies = out.entry(cluster).or_default();
        let synced = p.synced();
        match p.node.role.as_str() {
            "gateway" => {
                e.gateways += 1;
                e.gateways_acked += u32::from(synced);
            }
            _ => {
                e.sidecars += 1;
                e.sidecars_acked += u32::from(synced);
            }
        }
        for t in p.types.values() {
            if t.state == SyncState::Nacked {
                e.nacks.push(format!(
                    "{}: {}",
                    p.node.id,
                    t.error.as_deref().unwrap_or("rejected")
                ));
            }
        }
        e.last_seen = Some(now);
    }
    out
}

/// Keeps the snapshot cache in line with the desired state and the connected proxies, and the
/// proxy report in line with the server's sync status. Runs until both inputs close.
pub async fn run(
    server: AdsServer,
    mut desired: watch::Receiver<Arc<Desired>>,
    report: watch::Sender<ProxyReport>,
) {
    let mut status = server.status().changes();
    let mut rendered: BTreeSet<GroupKey> = BTreeSet::new();
    let mut rendered_revision = u64::MAX;
    loop {
        let d = desired.borrow_and_update().clone();
        // Groups with a connected proxy: they need a snapshot.
        let groups: BTreeSet<GroupKey> = server
            .status()
            .proxies()
            .into_iter()
            .map(|p| p.group)
            .collect();
        let fresh = d.revision != rendered_revision;
        for g in &groups {
            if !fresh && rendered.contains(g) {
                continue;
            }
            if let Some(snapshot) = config_for(g, &d).and_then(|doc| snapshot_of(g, &doc)) {
                server.cache().set_snapshot(g.clone(), snapshot);
            }
            rendered.insert(g.clone());
        }
        if fresh {
            // Groups nobody is connected to any more are rendered again when one comes back.
            rendered.retain(|g| groups.contains(g));
            rendered_revision = d.revision;
        }
        let r = proxy_report(&server, Timestamp::now());
        report.send_if_modified(|old| {
            // lastSeen moves every time: compare without it, or every status change would
            // rewrite every Cluster.
            let strip = |p: &ProxyReport| -> Vec<(String, u32, u32, u32, u32, Vec<String>)> {
                p.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.gateways,
                            v.gateways_acked,
                            v.sidecars,
                            v.sidecars_acked,
                            v.nacks.clone(),
                        )
                    })
                    .collect()
            };
            if strip(old) == strip(&r) {
                false
            } else {
                *old = r;
                true
            }
        });
        tokio::select! {
            c = desired.changed() => if c.is_err() { return },
            c = status.changed() => if c.is_err() { return },
        }
    }
}
