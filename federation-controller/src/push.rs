//! Pushing the desired state to the proxies: the controller's side of xDS.
//!
//! Proxies are grouped by what they should receive (the group key of [`group_of`]): gateways
//! by cluster and gateway address, sidecars by cluster, namespace and listen address. For every
//! group with a connected proxy, each new desired state is rendered ([`config_for`]), turned
//! into Envoy resources and set in the snapshot cache; the ADS server sends only what changed.
//! The other way round, the server's sync status becomes the [`ProxyReport`] the status writer
//! reads (connected and acknowledging proxies per cluster, NACK messages), and every NACK is
//! attributed to the objects concerned ([`fingerprints`], [`suspects`]): the objects whose part
//! of the rejected configuration differs from what that proxy last accepted in full. Resources
//! are named after objects (virtual host `NS/NAME` is the AccessPoint in a gateway's
//! configuration and the NameService in a sidecar's, `egress/NS/NAME/...` an ExternalService),
//! so each object's part is its virtual hosts plus the clusters, certificates and secrets they
//! use. A virtual host routed by scopes has a route configuration of its own (`vhost/NAME`): a
//! delta NACK names the route configurations it rejected, which pins it on their objects
//! ([`narrow`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use causeway_proxy_config::ProxyConfig;
use causeway_proxy_config::envoy::{EnvoyOptions, to_envoy, vhost_of_route_name};
use causeway_xds::{AdsServer, GroupKey, NackEvent, NodeInfo, Snapshot, SyncState, type_url};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::reconcile::Desired;
use crate::status::{ClusterProxies, NackRecord, ObjectId, ProxyReport};
use crate::translate::proxy::{GatewayConfig, SIDECAR_LISTENER, sidecar_config};

/// Node metadata key: the gateway address a gateway serves (`Cluster.spec.gateways[].address`).
pub const META_ADDRESS: &str = "address";
/// Node metadata key: where a sidecar's outbound listener binds (`IP:PORT`).
pub const META_LISTEN: &str = "listen";

/// The group of a proxy: `gateway|CLUSTER|ADDRESS`, `sidecar|CLUSTER|NAMESPACE|LISTEN`,
/// `l4lb|CLUSTER|REGION|ZONE`, or `ROLE|CLUSTER` for anything else (which gets nothing).
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
        "l4lb" => crate::l4lb::group_of(n),
        role => format!("{role}|{cluster}"),
    }
}

/// The gateway configuration of a `gateway|CLUSTER|ADDRESS` group under `d`.
fn gateway_for(group: &str, d: &Desired) -> Option<Arc<GatewayConfig>> {
    let parts: Vec<&str> = group.split('|').collect();
    let ["gateway", cluster, address] = parts.as_slice() else {
        return None;
    };
    d.gateways
        .iter()
        .filter(|g| g.cluster == *cluster)
        // A gateway that does not say which address it is gets the cluster's first.
        .find(|g| address.is_empty() || g.address == *address)
        .cloned()
}

/// What the proxies of `group` should serve under `d`; `None` when the group names an unknown
/// cluster or gateway (the proxies then get nothing and stay as they are).
pub fn config_for(group: &str, d: &Desired) -> Option<ProxyConfig> {
    let parts: Vec<&str> = group.split('|').collect();
    match parts.as_slice() {
        ["gateway", ..] => gateway_for(group, d).map(|g| g.config.clone()),
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
    // Gateways are edge proxies; a sidecar's outbound listener must not treat its own
    // application as the client (x-forwarded-for passes unchanged to the gateway).
    let opts = if group.starts_with("sidecar|") {
        EnvoyOptions::sidecar()
    } else {
        EnvoyOptions::default()
    };
    let resources = match to_envoy(doc, &opts) {
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

/// The object a virtual host of group `group`'s configuration is made from.
fn owner(gateway: bool, vhost: &str) -> Option<ObjectId> {
    let (kind, rest) = match vhost.strip_prefix("egress/") {
        Some(rest) => ("ExternalService", rest),
        None if gateway => ("AccessPoint", vhost),
        None => ("NameService", vhost),
    };
    let mut parts = rest.splitn(3, '/');
    let (namespace, name) = (parts.next()?, parts.next()?);
    Some(ObjectId {
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

fn hash_json<T: serde::Serialize>(v: &T, h: &mut DefaultHasher) {
    serde_json::to_string(v).unwrap_or_default().hash(h);
}

/// A fingerprint of each object's part of `doc` (the configuration of `group`): its virtual
/// hosts, the clusters their routes use (with their client-certificate secrets), and the server
/// certificates (with their secrets) for its domains. Two documents give an object the same
/// fingerprint exactly when its part is the same.
pub fn fingerprints(group: &str, doc: &ProxyConfig) -> BTreeMap<ObjectId, u64> {
    let gateway = group.starts_with("gateway|");
    let clusters: BTreeMap<&str, &causeway_proxy_config::Cluster> =
        doc.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let secrets: BTreeMap<&str, &causeway_proxy_config::Secret> =
        doc.secrets.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut out: BTreeMap<ObjectId, u64> = BTreeMap::new();
    for v in &doc.virtual_hosts {
        let Some(id) = owner(gateway, &v.name) else {
            continue;
        };
        let mut h = DefaultHasher::new();
        hash_json(v, &mut h);
        let secret = |name: Option<&String>, h: &mut DefaultHasher| {
            if let Some(s) = name.and_then(|n| secrets.get(n.as_str())) {
                hash_json(s, h);
            }
        };
        for a in v.routes.iter().filter_map(|r| r.route.as_ref()) {
            let names = a.cluster.iter().chain(a.clusters.iter().map(|w| &w.name));
            for c in names.filter_map(|n| clusters.get(n.as_str())) {
                hash_json(c, &mut h);
                secret(
                    c.tls.as_ref().and_then(|t| t.client_cert_secret.as_ref()),
                    &mut h,
                );
            }
        }
        for l in &doc.listeners {
            for cert in l.tls.iter().flat_map(|t| &t.certificates) {
                if cert.server_names.iter().any(|n| v.domains.contains(n)) {
                    hash_json(cert, &mut h);
                    secret(cert.cert_secret.as_ref(), &mut h);
                }
            }
        }
        // An ExternalService has one virtual host per host: combine them, in any order.
        let e = out.entry(id).or_insert(0);
        *e = e.wrapping_add(h.finish());
    }
    out
}

/// The objects a proxy's NACK is attributed to: those whose fingerprint in the configuration
/// its group has now (`current`) differs from the one it last accepted in full (`good`);
/// every object of `current` when it never accepted one.
pub fn suspects(
    current: &BTreeMap<ObjectId, u64>,
    good: Option<&BTreeMap<ObjectId, u64>>,
) -> Vec<ObjectId> {
    current
        .iter()
        .filter(|(k, v)| good.is_none_or(|g| g.get(*k) != Some(*v)))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The objects whose resources a NACK names (delta xDS lists the resources of the rejected
/// response): a per-virtual-host route configuration (`vhost/NAME`) belongs to the object of
/// that virtual host. Other resources name no object by themselves.
pub fn rejected_owners(group: &str, type_url: &str, resources: &[String]) -> BTreeSet<ObjectId> {
    let gateway = group.starts_with("gateway|");
    if type_url != type_url::ROUTE {
        return BTreeSet::new();
    }
    resources
        .iter()
        .filter_map(|r| vhost_of_route_name(r))
        .filter_map(|v| owner(gateway, v))
        .collect()
}

/// The suspects of a NACK narrowed to the objects its rejected resources belong to, when it
/// names any of them (a proxy that never accepted a configuration suspects everything it was
/// sent; the route configuration it refused says which AccessPoint it was).
pub fn narrow(suspects: Vec<ObjectId>, owners: &BTreeSet<ObjectId>) -> Vec<ObjectId> {
    let named: Vec<ObjectId> = suspects
        .iter()
        .filter(|o| owners.contains(*o))
        .cloned()
        .collect();
    if named.is_empty() { suspects } else { named }
}

/// NACK events kept per cluster and object (the count in status only needs those newer than
/// its last status write).
const EVENTS_KEPT: usize = 64;

/// What the push loop remembers to attribute NACKs.
#[derive(Default)]
struct Attribution {
    /// Fingerprints of the configuration each group has now.
    current: BTreeMap<GroupKey, Arc<BTreeMap<ObjectId, u64>>>,
    /// Per (group, proxy id): the fingerprints of the last configuration it ACKed in full.
    good: BTreeMap<(GroupKey, String), Arc<BTreeMap<ObjectId, u64>>>,
    /// Recent NACK events by (cluster, object).
    events: BTreeMap<(String, ObjectId), Vec<NackRecord>>,
    /// The time of the last event, so that event times strictly increase.
    last_event: Option<Timestamp>,
}

impl Attribution {
    fn suspects(&self, group: &str, node: &str) -> Vec<ObjectId> {
        let Some(current) = self.current.get(group) else {
            return Vec::new();
        };
        let good = self.good.get(&(group.to_owned(), node.to_owned()));
        suspects(current, good.map(|g| &**g))
    }

    /// Remembers what each connected proxy runs, when that is all of its group's snapshot.
    fn observe(&mut self, server: &AdsServer) {
        let mut connected = BTreeSet::new();
        for p in server.status().proxies() {
            let key = (p.group.clone(), p.node.id.clone());
            connected.insert(key.clone());
            let (Some(snap), Some(current)) = (
                server.cache().snapshot(&p.group),
                self.current.get(&p.group),
            ) else {
                continue;
            };
            let runs_snapshot = !p.types.is_empty()
                && p.types.values().all(|t| {
                    t.state == SyncState::Synced
                        && t.acked_version.as_deref() == Some(snap.version(&t.type_url).as_str())
                });
            if runs_snapshot {
                self.good.insert(key, current.clone());
            }
        }
        self.good.retain(|k, _| connected.contains(k));
    }

    /// Counts a NACK against the objects concerned.
    fn count(&mut self, e: &NackEvent) {
        let mut at = Timestamp::now();
        if let Some(last) = self.last_event
            && at <= last
        {
            at = last
                .checked_add(k8s_openapi::jiff::SignedDuration::from_micros(1))
                .unwrap_or(last);
        }
        self.last_event = Some(at);
        let message = format!(
            "{} ({}, {}): {}",
            e.node_id,
            e.cluster,
            type_url::short(&e.type_url),
            e.message
        );
        let owners = rejected_owners(&e.group, &e.type_url, &e.resources);
        for o in narrow(self.suspects(&e.group, &e.node_id), &owners) {
            let list = self.events.entry((e.cluster.clone(), o)).or_default();
            list.push(NackRecord {
                at,
                message: message.clone(),
            });
            if list.len() > EVENTS_KEPT {
                list.remove(0);
            }
        }
    }

    /// Adds the attributed NACKs to a report.
    fn annotate(&self, server: &AdsServer, report: &mut ProxyReport) {
        for p in server.status().proxies() {
            let cluster = if p.node.cluster.is_empty() {
                p.node.node_cluster.clone()
            } else {
                p.node.cluster.clone()
            };
            for t in p.types.values().filter(|t| t.state == SyncState::Nacked) {
                let line = format!(
                    "{} ({cluster}, {}): {}",
                    p.node.id,
                    type_url::short(&t.type_url),
                    t.error.as_deref().unwrap_or("rejected")
                );
                let owners = rejected_owners(&p.group, &t.type_url, &t.nacked_resources);
                for o in narrow(self.suspects(&p.group, &p.node.id), &owners) {
                    report
                        .entry(cluster.clone())
                        .or_default()
                        .rejections
                        .entry(o)
                        .or_default()
                        .rejected_by
                        .push(line.clone());
                }
            }
        }
        for ((cluster, o), events) in &self.events {
            report
                .entry(cluster.clone())
                .or_default()
                .rejections
                .entry(o.clone())
                .or_default()
                .events = events.clone();
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
        let nacked = p.types.values().any(|t| t.state == SyncState::Nacked);
        match p.node.role.as_str() {
            "gateway" => {
                e.gateways += 1;
                e.gateways_acked += u32::from(synced);
                e.gateways_nacked += u32::from(nacked);
            }
            // Balancers are listed by `status --proxies`; they are not a cluster's proxies.
            "l4lb" => {}
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
    let mut nacks = server.status().nacks();
    let mut attribution = Attribution::default();
    let mut rendered: BTreeSet<GroupKey> = BTreeSet::new();
    let mut rendered_revision = u64::MAX;
    let mut gateways_sent: BTreeMap<GroupKey, Arc<GatewayConfig>> = BTreeMap::new();
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
            // L4 balancers get their VIP assignments (crate::l4lb), nothing else.
            if g.starts_with("l4lb|") {
                if let Some(s) = crate::l4lb::snapshot_for(g, &d.snapshot, &d.verdicts, &d.vips) {
                    server.cache().set_snapshot(g.clone(), s);
                }
                rendered.insert(g.clone());
                continue;
            }
            // The translator hands unchanged gateway configurations over as the same `Arc`:
            // nothing to render again for them (at 300 gateways, one changed AccessPoint
            // touches three).
            let gateway = gateway_for(g, &d);
            if rendered.contains(g)
                && let (Some(new), Some(old)) = (&gateway, gateways_sent.get(g))
                && Arc::ptr_eq(new, old)
            {
                continue;
            }
            match &gateway {
                Some(gw) => gateways_sent.insert(g.clone(), gw.clone()),
                None => gateways_sent.remove(g),
            };
            if let Some(doc) = config_for(g, &d)
                && let Some(snapshot) = snapshot_of(g, &doc)
            {
                attribution
                    .current
                    .insert(g.clone(), Arc::new(fingerprints(g, &doc)));
                server.cache().set_snapshot(g.clone(), snapshot);
            }
            rendered.insert(g.clone());
        }
        if fresh {
            // Groups nobody is connected to any more are rendered again when one comes back.
            rendered.retain(|g| groups.contains(g));
            gateways_sent.retain(|g, _| groups.contains(g));
            attribution.current.retain(|g, _| groups.contains(g));
            rendered_revision = d.revision;
        }
        attribution.observe(&server);
        let mut r = proxy_report(&server, Timestamp::now());
        attribution.annotate(&server, &mut r);
        report.send_if_modified(|old| {
            // lastSeen moves every time: compare without it, or every status change would
            // rewrite every Cluster.
            let strip = |p: &ProxyReport| -> ProxyReport {
                p.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            ClusterProxies {
                                last_seen: None,
                                ..v.clone()
                            },
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
            e = nacks.recv() => match e {
                Ok(e) => attribution.count(&e),
                // Lagged: some NACKs are not counted against objects (they still show in
                // the proxies' status and the xds_nacks_total metric).
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "NACK events missed; not counted against objects");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn doc(shop_body: &str, with_vault_cert: bool) -> ProxyConfig {
        let cert = if with_vault_cert {
            "- {name: https, address: \"127.0.0.1:8443\", protocol: HTTPS, tls: {certificates: \
             [{serverNames: [vault.example.com], certSecret: security/vault-cert}]}, \
             virtualHosts: [security/vault]}\n"
        } else {
            ""
        };
        ProxyConfig::from_yaml(&format!(
            "listeners:\n- {{name: http, address: \"127.0.0.1:8080\", protocol: HTTP}}\n{cert}\
             virtualHosts:\n\
             - {{name: retail/shop, domains: [shop.example.com], routes: [{{name: a, directResponse: {{status: 200, body: {shop_body}}}}}]}}\n\
             - {{name: security/vault, domains: [vault.example.com], routes: [{{name: b, route: {{cluster: vault}}}}]}}\n\
             - {{name: egress/retail/payments/api.payments.example, domains: [api.payments.example], routes: [{{name: c, route: {{cluster: pay}}}}]}}\n\
             clusters:\n- {{name: vault, endpoints: [{{address: \"127.0.0.1:1\"}}]}}\n\
             - {{name: pay, endpoints: [{{address: \"127.0.0.1:2\"}}]}}\n\
             secrets:\n- {{name: security/vault-cert, certPem: x}}\n"
        ))
        .unwrap()
    }

    fn id(kind: &'static str, ns: &str, name: &str) -> ObjectId {
        ObjectId {
            kind,
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn nacks_are_attributed_to_the_objects_whose_part_changed() {
        let g = "gateway|c1|127.0.0.1";
        let before = fingerprints(g, &doc("one", false));
        assert_eq!(
            before.keys().cloned().collect::<Vec<_>>(),
            [
                id("AccessPoint", "retail", "shop"),
                id("AccessPoint", "security", "vault"),
                id("ExternalService", "retail", "payments"),
            ]
        );
        // The vault gets a certificate: only the vault is suspect.
        let after = fingerprints(g, &doc("one", true));
        assert_eq!(
            suspects(&after, Some(&before)),
            [id("AccessPoint", "security", "vault")]
        );
        // Shop's route changes too: both.
        let both = fingerprints(g, &doc("two", true));
        assert_eq!(
            suspects(&both, Some(&before)),
            [
                id("AccessPoint", "retail", "shop"),
                id("AccessPoint", "security", "vault")
            ]
        );
        // Never accepted anything: everything it was sent.
        assert_eq!(suspects(&both, None).len(), 3);
        // Each virtual host has its own route configuration in the snapshot (routed by scopes):
        // that is what a delta NACK names.
        // (The test's secret has no key, which Envoy cannot express: leave it out.)
        let mut translatable = doc("two", false);
        translatable.secrets.clear();
        let snap = snapshot_of(g, &translatable).unwrap();
        let routes: Vec<&str> = snap
            .get(type_url::ROUTE)
            .unwrap()
            .iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            routes,
            [
                "vhost/egress/retail/payments/api.payments.example",
                "vhost/retail/shop",
                "vhost/security/vault"
            ]
        );
        assert_eq!(
            rejected_owners(g, type_url::ROUTE, &[routes[0].to_owned()]),
            BTreeSet::from([id("ExternalService", "retail", "payments")])
        );
        // A delta NACK of vault's own route configuration is vault's, even from a proxy that
        // never accepted anything (which suspects all three).
        let owners = rejected_owners(
            g,
            type_url::ROUTE,
            &["vhost/security/vault".to_owned(), "http".to_owned()],
        );
        assert_eq!(
            narrow(suspects(&both, None), &owners),
            [id("AccessPoint", "security", "vault")]
        );
        // Nothing named (state of the world, or another type): the fingerprints decide.
        assert_eq!(narrow(suspects(&both, None), &BTreeSet::new()).len(), 3);
        assert!(
            rejected_owners(g, type_url::CLUSTER, &["vhost/security/vault".to_owned()]).is_empty()
        );
        // In a sidecar's configuration the same names are NameServices.
        let sidecar = fingerprints("sidecar|c1|retail|", &doc("one", false));
        assert!(sidecar.contains_key(&id("NameService", "retail", "shop")));
    }
}
