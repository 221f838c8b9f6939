//! Placement and host ownership, as pure functions of the resources.
//!
//! - [`resolve_placement`]: which clusters' gateways serve an AccessPoint (named clusters, a
//!   label selector over Cluster labels, or "follow the workload": the clusters where a backend
//!   has endpoints).
//! - [`host_owners`]: when two AccessPoints claim the same host on the same gateway port, the
//!   older one keeps it and the newer one is refused (`Accepted=False`, reason `HostConflict`),
//!   so a new object can never take traffic away from one that is serving.

use std::collections::{BTreeMap, BTreeSet};

use causeway_crds::v1alpha1::{AccessPoint, Cluster, Protocol};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// The label naming the cluster a WorkloadEntry belongs to (Istio's convention).
pub const CLUSTER_LABEL: &str = "topology.istio.io/cluster";

/// What placement needs to know about one backend endpoint (a WorkloadEntry or a Kubernetes
/// endpoint): its namespace and labels, `app` and [`CLUSTER_LABEL`] among them.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// Namespace of the endpoint.
    pub namespace: &'a str,
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// A reason placement could not be fully resolved; reported in the `ResolvedRefs` condition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PlacementIssue {
    /// `placement.clusters` names a cluster that is not registered.
    UnknownCluster(String),
    /// The selector matched no registered cluster.
    NoMatchingCluster,
    /// `followWorkload` found no cluster with endpoints of the backend services.
    NoWorkload(Vec<String>),
    /// The label selector itself is malformed.
    BadSelector(String),
}

impl std::fmt::Display for PlacementIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlacementIssue::UnknownCluster(c) => write!(
                f,
                "cluster {c:?} in spec.placement.clusters is not registered: apply a Cluster named {c:?} or remove it"
            ),
            PlacementIssue::NoMatchingCluster => {
                f.write_str("spec.placement.clusterSelector matches no registered cluster")
            }
            PlacementIssue::NoWorkload(services) => write!(
                f,
                "followWorkload: no cluster has endpoints of {}",
                services.join(", ")
            ),
            PlacementIssue::BadSelector(e) => write!(f, "spec.placement.clusterSelector: {e}"),
        }
    }
}

/// The clusters an AccessPoint is placed on (sorted, unique) and what could not be resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Placed {
    /// Names of the registered clusters the AccessPoint is served from.
    pub clusters: Vec<String>,
    /// Problems, each reported in status.
    pub issues: Vec<PlacementIssue>,
}

/// Whether `labels` satisfy a Kubernetes label selector (`matchLabels` and `matchExpressions`,
/// all of which must hold). An empty selector matches everything, as in Kubernetes.
pub fn selector_matches(
    sel: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    if let Some(ml) = &sel.match_labels {
        for (k, v) in ml {
            if labels.get(k) != Some(v) {
                return Ok(false);
            }
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => return Err(format!("unknown operator {other:?}")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The backend services an AccessPoint routes to, as `namespace/service`, from every route and
/// override.
pub fn backend_services(ap: &AccessPoint) -> BTreeSet<(String, String)> {
    backend_refs(ap)
        .map(|(ns, svc)| (ns.to_owned(), svc.to_owned()))
        .collect()
}

/// [`backend_services`] without allocating: every destination's `(namespace, service)` in
/// spec order, repeats included.
pub fn backend_refs(ap: &AccessPoint) -> impl Iterator<Item = (&str, &str)> {
    let own_ns = ap.metadata.namespace.as_deref().unwrap_or("default");
    let spec = &ap.spec;
    let http = spec
        .http
        .iter()
        .chain(spec.overrides.iter().flat_map(|o| o.http.iter().flatten()))
        .flat_map(|r| {
            r.route
                .iter()
                .map(|d| &d.destination)
                .chain(r.mirror.as_ref())
        });
    let tls = spec
        .tls
        .iter()
        .chain(spec.overrides.iter().flat_map(|o| o.tls.iter().flatten()))
        .flat_map(|r| r.route.iter().map(|d| &d.destination));
    let tcp = spec
        .tcp
        .iter()
        .chain(spec.overrides.iter().flat_map(|o| o.tcp.iter().flatten()))
        .flat_map(|r| r.route.iter().map(|d| &d.destination));
    http.chain(tls)
        .chain(tcp)
        .map(move |d| (d.namespace.as_deref().unwrap_or(own_ns), d.service.as_str()))
}

/// Resolves where an AccessPoint is served.
pub fn resolve_placement<C: std::borrow::Borrow<Cluster>>(
    ap: &AccessPoint,
    clusters: &[C],
    workloads: &[Workload<'_>],
) -> Placed {
    let known: BTreeMap<&str, &Cluster> = clusters
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter_map(|c| c.metadata.name.as_deref().map(|n| (n, c)))
        .collect();
    let p = &ap.spec.placement;
    let mut placed = Placed::default();
    if !p.clusters.is_empty() {
        for c in &p.clusters {
            if known.contains_key(c.as_str()) {
                placed.clusters.push(c.clone());
            } else {
                placed
                    .issues
                    .push(PlacementIssue::UnknownCluster(c.clone()));
            }
        }
    } else if let Some(sel) = &p.cluster_selector {
        let empty = BTreeMap::new();
        for (name, c) in &known {
            match selector_matches(sel, c.metadata.labels.as_ref().unwrap_or(&empty)) {
                Ok(true) => placed.clusters.push((*name).to_owned()),
                Ok(false) => {}
                Err(e) => {
                    placed.issues.push(PlacementIssue::BadSelector(e));
                    return placed;
                }
            }
        }
        if placed.clusters.is_empty() {
            placed.issues.push(PlacementIssue::NoMatchingCluster);
        }
    } else if p.follow_workload == Some(true) {
        let services = backend_services(ap);
        let mut found = BTreeSet::new();
        for w in workloads {
            let (Some(app), Some(cluster)) = (w.labels.get("app"), w.labels.get(CLUSTER_LABEL))
            else {
                continue;
            };
            if known.contains_key(cluster.as_str())
                && services.contains(&(w.namespace.to_owned(), app.clone()))
            {
                found.insert(cluster.clone());
            }
        }
        placed.clusters.extend(found);
        if placed.clusters.is_empty() {
            placed.issues.push(PlacementIssue::NoWorkload(
                services.iter().map(|(ns, s)| format!("{s}.{ns}")).collect(),
            ));
        }
    }
    placed.clusters.sort();
    placed.clusters.dedup();
    placed
}

/// Which gateway port a listener lands on: Host/SNI tell AccessPoints apart on the shared HTTP
/// and HTTPS ports; TCP listeners own their port outright.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GatewayPort {
    /// The gateway's plain HTTP port (Host header).
    Http,
    /// The gateway's HTTPS/TLS port (SNI).
    Https,
    /// A TCP port, used as it is.
    Tcp(u32),
}

impl std::fmt::Display for GatewayPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GatewayPort::Http => f.write_str("http"),
            GatewayPort::Https => f.write_str("https"),
            GatewayPort::Tcp(p) => write!(f, "tcp/{p}"),
        }
    }
}

/// `namespace/name` of an object.
pub type ObjectKey = (String, String);

/// One lost claim: `host` on `port` belongs to `owner`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostConflict {
    /// The contested host (`*` for a TCP port).
    pub host: String,
    /// The gateway port.
    pub port: GatewayPort,
    /// The AccessPoint that keeps it.
    pub owner: ObjectKey,
}

impl std::fmt::Display for HostConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host {:?} on the gateways' {} port already belongs to AccessPoint {}/{} (older); \
             change the host or delete the other AccessPoint",
            self.host, self.port, self.owner.0, self.owner.1
        )
    }
}

fn key_of(ap: &AccessPoint) -> ObjectKey {
    (
        ap.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        ap.metadata.name.clone().unwrap_or_default(),
    )
}

/// The (host, gateway port) pairs an AccessPoint claims; two AccessPoints claiming the same
/// pair conflict.
pub(crate) fn claims(ap: &AccessPoint) -> BTreeSet<(String, GatewayPort)> {
    let mut out = BTreeSet::new();
    for l in &ap.spec.listeners {
        match l.protocol {
            Protocol::Http => {
                out.extend(ap.spec.hosts.iter().map(|h| (h.clone(), GatewayPort::Http)))
            }
            Protocol::Https | Protocol::Tls => out.extend(
                ap.spec
                    .hosts
                    .iter()
                    .map(|h| (h.clone(), GatewayPort::Https)),
            ),
            Protocol::Tcp => {
                out.insert(("*".to_owned(), GatewayPort::Tcp(l.port)));
            }
        }
    }
    out
}

/// Decides host ownership across AccessPoints. Older objects (by `creationTimestamp`, then
/// namespace/name, so the answer is stable) win; the result maps each loser to its lost claims.
/// Only identical hosts conflict: an exact host and a wildcard covering it coexist, and the
/// exact one is preferred by the gateway, as in Envoy.
pub fn host_owners<A: std::borrow::Borrow<AccessPoint>>(
    aps: &[A],
) -> BTreeMap<ObjectKey, Vec<HostConflict>> {
    let mut order: Vec<&AccessPoint> = aps.iter().map(std::borrow::Borrow::borrow).collect();
    order.sort_by_cached_key(|a| {
        let t = a.metadata.creation_timestamp.as_ref().map(|t| t.0);
        // Objects without a timestamp (not yet stored) sort last.
        (t.is_none(), t, key_of(a))
    });
    let mut owner: BTreeMap<(String, GatewayPort), ObjectKey> = BTreeMap::new();
    let mut lost: BTreeMap<ObjectKey, Vec<HostConflict>> = BTreeMap::new();
    for ap in order {
        let me = key_of(ap);
        let mine = claims(ap);
        let conflicts: Vec<HostConflict> = mine
            .iter()
            .filter_map(|c| {
                owner.get(c).filter(|o| **o != me).map(|o| HostConflict {
                    host: c.0.clone(),
                    port: c.1.clone(),
                    owner: o.clone(),
                })
            })
            .collect();
        if conflicts.is_empty() {
            // A refused AccessPoint claims nothing, so it cannot block a third one.
            for c in mine {
                owner.insert(c, me.clone());
            }
        } else {
            lost.insert(me, conflicts);
        }
    }
    lost
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_crds::v1alpha1::{
        AccessPointSpec, ClusterSpec, Destination, HttpRoute, Listener, Locality, Placement,
        WeightedDestination,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
    use k8s_openapi::jiff::Timestamp;

    fn cluster(name: &str, labels: &[(&str, &str)]) -> Cluster {
        let mut c = Cluster::new(
            name,
            ClusterSpec {
                locality: Locality {
                    region: "us-west".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
        );
        c.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        c
    }

    fn ap(
        name: &str,
        hosts: &[&str],
        placement: Placement,
        created_secs: Option<i64>,
    ) -> AccessPoint {
        let mut a = AccessPoint::new(
            name,
            AccessPointSpec {
                hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
                listeners: vec![Listener {
                    name: "http".into(),
                    port: 80,
                    protocol: Protocol::Http,
                    ..Default::default()
                }],
                http: vec![HttpRoute {
                    route: vec![WeightedDestination {
                        destination: Destination {
                            service: "shop".into(),
                            ..Default::default()
                        },
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                placement,
                ..Default::default()
            },
        );
        a.metadata.namespace = Some("retail".into());
        a.metadata.creation_timestamp =
            created_secs.map(|s| Time(Timestamp::from_second(s).unwrap()));
        a
    }

    fn named(clusters: &[&str]) -> Placement {
        Placement {
            clusters: clusters.iter().map(|c| (*c).to_owned()).collect(),
            cluster_selector: None,
            follow_workload: None,
        }
    }

    #[test]
    fn named_placement_reports_unknown_clusters() {
        let cs = [cluster("c1", &[]), cluster("c2", &[])];
        let p = resolve_placement(
            &ap("shop", &["a.example"], named(&["c2", "c1", "c9"]), None),
            &cs,
            &[],
        );
        assert_eq!(p.clusters, ["c1", "c2"]);
        assert_eq!(p.issues, [PlacementIssue::UnknownCluster("c9".into())]);
        assert!(
            p.issues[0]
                .to_string()
                .contains("apply a Cluster named \"c9\"")
        );
    }

    #[test]
    fn selector_placement() {
        let cs = [
            cluster("c1", &[("env", "prod"), ("region", "us-west")]),
            cluster("c2", &[("env", "staging")]),
            cluster("c3", &[("env", "prod"), ("region", "us-east")]),
        ];
        let sel = |ml: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>| Placement {
            clusters: vec![],
            cluster_selector: Some(LabelSelector {
                match_labels: Some(ml.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()),
                match_expressions: Some(exprs),
            }),
            follow_workload: None,
        };
        let p = resolve_placement(
            &ap("s", &["a.example"], sel(&[("env", "prod")], vec![]), None),
            &cs,
            &[],
        );
        assert_eq!(p.clusters, ["c1", "c3"]);
        let not_east = LabelSelectorRequirement {
            key: "region".into(),
            operator: "NotIn".into(),
            values: Some(vec!["us-east".into()]),
        };
        let p = resolve_placement(
            &ap(
                "s",
                &["a.example"],
                sel(&[("env", "prod")], vec![not_east]),
                None,
            ),
            &cs,
            &[],
        );
        assert_eq!(p.clusters, ["c1"]);
        let p = resolve_placement(
            &ap("s", &["a.example"], sel(&[("env", "dev")], vec![]), None),
            &cs,
            &[],
        );
        assert_eq!(p.issues, [PlacementIssue::NoMatchingCluster]);
    }

    #[test]
    fn follow_workload_uses_endpoints_of_the_backend() {
        let cs = [cluster("c1", &[]), cluster("c2", &[]), cluster("c3", &[])];
        let l = |app: &str, c: &str| -> BTreeMap<String, String> {
            [
                ("app".to_owned(), app.to_owned()),
                (CLUSTER_LABEL.to_owned(), c.to_owned()),
            ]
            .into()
        };
        let (a, b, c, d) = (
            l("shop", "c1"),
            l("shop", "c3"),
            l("cart", "c2"),
            l("shop", "c9"),
        );
        let ws = [
            Workload {
                namespace: "retail",
                labels: &a,
            },
            Workload {
                namespace: "retail",
                labels: &b,
            },
            Workload {
                namespace: "retail",
                labels: &c,
            },
            Workload {
                namespace: "retail",
                labels: &d,
            },
            Workload {
                namespace: "other",
                labels: &c,
            },
        ];
        let p = resolve_placement(
            &ap("shop", &["a.example"], Placement::default(), None),
            &cs,
            &ws,
        );
        assert_eq!(p.clusters, ["c1", "c3"]);
        assert!(p.issues.is_empty());
        let p = resolve_placement(
            &ap("shop", &["a.example"], Placement::default(), None),
            &cs,
            &[],
        );
        assert_eq!(
            p.issues,
            [PlacementIssue::NoWorkload(vec!["shop.retail".into()])]
        );
    }

    #[test]
    fn the_older_access_point_keeps_a_contested_host() {
        let older = ap("old", &["shop.example.com"], named(&["c1"]), Some(100));
        let newer = ap(
            "new",
            &["shop.example.com", "x.example.com"],
            named(&["c1"]),
            Some(200),
        );
        let third = ap("third", &["x.example.com"], named(&["c1"]), Some(300));
        let wildcard = ap("wild", &["*.example.com"], named(&["c1"]), Some(50));
        // Input order must not matter.
        let lost = host_owners(&[
            third.clone(),
            newer.clone(),
            wildcard.clone(),
            older.clone(),
        ]);
        let keys: Vec<_> = lost.keys().map(|k| k.1.as_str()).collect();
        assert_eq!(
            keys,
            ["new"],
            "the refused one claims nothing, so 'third' keeps x.example.com"
        );
        let c = &lost[&("retail".to_owned(), "new".to_owned())];
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].host, "shop.example.com");
        assert_eq!(c[0].owner.1, "old");
        assert!(
            c[0].to_string()
                .contains("already belongs to AccessPoint retail/old")
        );
    }

    #[test]
    fn http_and_https_claims_are_separate_ports() {
        let mut https = ap("tls", &["shop.example.com"], named(&["c1"]), Some(200));
        https.spec.listeners[0].protocol = Protocol::Https;
        let http = ap("plain", &["shop.example.com"], named(&["c1"]), Some(100));
        assert!(host_owners(&[http, https]).is_empty());
    }
}
