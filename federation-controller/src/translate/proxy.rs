//! The proxy configuration of every gateway and sidecar, as [`ProxyConfig`] documents (the
//! gateway's file format): pure functions of the snapshot and the AccessPoint verdicts. The xDS
//! server turns them into Envoy resources; `causeway get rendered` prints them.
//!
//! **Gateways** (one document per gateway address of a cluster): an HTTP listener on the
//! gateway's `http` port and an HTTPS listener on its `https` port, shared by every AccessPoint
//! placed on the cluster (Host and SNI tell them apart); a virtual host per AccessPoint with its
//! routes (per-cluster overrides applied), whose domains also carry the FQDNs of the
//! NameServices that target it; clusters of the *local* backend endpoints (WorkloadEntries
//! labelled with this cluster); and egress virtual hosts for ExternalServices, originating TLS.
//!
//! **Sidecars** (one document per cluster and namespace): one outbound HTTP listener with a
//! virtual host per NameService and ExternalService the namespace may see (`exportTo`: empty or
//! `*` is every namespace, otherwise the namespaces listed, and always the object's own).
//! NameServices resolve to the gateways of the clusters that serve them, grouped by locality with
//! the priorities and weights of [`super::locality`] for this cluster's locality; ExternalServices
//! go to the egress gateway.
//!
//! Nothing of an AccessPoint is rendered unless it is accepted, every reference resolves and it
//! is placed on the cluster: never half an AccessPoint.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use causeway_crds::v1alpha1::{
    AccessPoint, Cluster, Destination, EgressVia, ExternalService, HeaderOps, HttpMatch, HttpRoute,
    OriginationMode, Protocol, StringMatch, TlsMode, TrafficPolicy,
};
use causeway_proxy_config as pc;

use super::locality::{Assignment, assign};
use super::{AccessPointVerdict, Snapshot, name_service_clusters, object_key};
use crate::placement::{CLUSTER_LABEL, ObjectKey};
use crate::status::{secret_text, unresolved_refs};

/// Where sidecars listen for outbound traffic unless their node says otherwise (the xDS server
/// substitutes the address a sidecar announces).
pub const SIDECAR_LISTENER: &str = "0.0.0.0:15001";

/// The gateway configuration of one gateway address of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// The cluster.
    pub cluster: String,
    /// The gateway address (from `Cluster.spec.gateways[].address`).
    pub address: String,
    /// What that gateway serves.
    pub config: pc::ProxyConfig,
}

/// `(namespace, name)` of an object, borrowed: what [`object_key`] returns, without
/// allocating (namespace `default` when unset).
pub(crate) fn key_ref(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (&str, &str) {
    (ns_of(meta), meta.name.as_deref().unwrap_or_default())
}

fn ns_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

fn cluster_name(c: &Cluster) -> &str {
    c.metadata.name.as_deref().unwrap_or_default()
}

/// Name of the upstream cluster of a backend destination (Istio's naming, readable in stats).
fn backend_cluster(d: &Destination, ns: &str) -> String {
    format!(
        "outbound|{}|{}|{}.{}",
        d.port.unwrap_or(80),
        d.subset.as_deref().unwrap_or_default(),
        d.service,
        d.namespace.as_deref().unwrap_or(ns)
    )
}

fn string_path(m: &StringMatch) -> pc::PathMatch {
    pc::PathMatch {
        exact: m.exact.clone(),
        prefix: m.prefix.clone(),
        regex: m.regex.clone(),
    }
}

fn header_match(
    name: &str,
    h: &causeway_crds::v1alpha1::HeaderMatch,
    invert: bool,
) -> pc::HeaderMatch {
    pc::HeaderMatch {
        name: name.to_owned(),
        exact: h.exact.clone(),
        prefix: h.prefix.clone(),
        regex: h.regex.clone(),
        present: h.present,
        invert,
    }
}

fn route_match(m: &HttpMatch) -> pc::RouteMatch {
    let mut headers: Vec<pc::HeaderMatch> = m
        .headers
        .iter()
        .map(|(n, h)| header_match(n, h, false))
        .collect();
    headers.extend(
        m.without_headers
            .iter()
            .map(|(n, h)| header_match(n, h, true)),
    );
    if let Some(a) = &m.authority {
        headers.push(pc::HeaderMatch {
            name: ":authority".to_owned(),
            exact: a.exact.clone(),
            prefix: a.prefix.clone(),
            regex: a.regex.clone(),
            ..Default::default()
        });
    }
    pc::RouteMatch {
        path: m.uri.as_ref().map(string_path),
        headers,
        method: m.method.as_ref().and_then(|s| s.exact.clone()),
        query: m
            .query_params
            .iter()
            .map(|(n, q)| pc::HeaderMatch {
                name: n.clone(),
                exact: q.exact.clone(),
                prefix: q.prefix.clone(),
                regex: q.regex.clone(),
                ..Default::default()
            })
            .collect(),
    }
}

fn header_edits(h: Option<&HeaderOps>) -> Option<pc::HeaderEdits> {
    let h = h?;
    Some(pc::HeaderEdits {
        set: h.set.clone(),
        add: h.add.clone(),
        remove: h.remove.clone(),
    })
}

/// The routes of one Istio-style HTTP route: one per match (matches are ORed), same action.
fn routes(r: &HttpRoute, index: usize, vhost: &str, ns: &str) -> Vec<pc::Route> {
    let name = r.name.clone().unwrap_or_else(|| format!("{vhost}/{index}"));
    let action = if !r.route.is_empty() {
        let action = pc::RouteAction {
            cluster: None,
            clusters: r
                .route
                .iter()
                .map(|w| pc::WeightedCluster {
                    name: backend_cluster(&w.destination, ns),
                    weight: Some(w.weight.unwrap_or(if r.route.len() == 1 { 100 } else { 0 })),
                })
                .collect(),
            prefix_rewrite: r.rewrite.as_ref().and_then(|w| w.uri.clone()),
            host_rewrite: r.rewrite.as_ref().and_then(|w| w.authority.clone()),
            timeout: r.timeout.clone(),
            retries: r.retries.as_ref().map(|x| pc::Retries {
                attempts: Some(x.attempts),
                per_try_timeout: x.per_try_timeout.clone(),
                retry_on: x.retry_on.clone(),
            }),
            ..Default::default()
        };
        // A single destination is a plain cluster reference: simpler to read and to route.
        if action.clusters.len() == 1 {
            let only = action.clusters.first().map(|c| c.name.clone());
            Some(pc::RouteAction {
                cluster: only,
                clusters: Vec::new(),
                ..action
            })
        } else {
            Some(action)
        }
    } else {
        None
    };
    let redirect = r.redirect.as_ref().map(|d| pc::Redirect {
        scheme: d.scheme.clone(),
        host: d.authority.clone(),
        port: d.port,
        path: d.uri.clone(),
        response_code: d.redirect_code.and_then(|c| u16::try_from(c).ok()),
    });
    let direct = r.direct_response.as_ref().map(|d| pc::DirectResponse {
        status: u16::try_from(d.status).unwrap_or(500),
        body: d.body.clone().unwrap_or_default(),
    });
    let base = pc::Route {
        name: Some(name.clone()),
        matcher: None,
        route: action,
        redirect,
        direct_response: direct,
        request_headers: header_edits(r.headers.as_ref().and_then(|h| h.request.as_ref())),
        response_headers: header_edits(r.headers.as_ref().and_then(|h| h.response.as_ref())),
    };
    if r.matches.is_empty() {
        return vec![base];
    }
    r.matches
        .iter()
        .enumerate()
        .map(|(i, m)| pc::Route {
            name: Some(if r.matches.len() == 1 {
                name.clone()
            } else {
                format!("{name}/{}", m.name.clone().unwrap_or_else(|| i.to_string()))
            }),
            matcher: Some(route_match(m)),
            ..base.clone()
        })
        .collect()
}

/// The HTTP routes an AccessPoint has in `cluster` (an override replaces the top-level list).
fn effective_http<'a>(ap: &'a AccessPoint, cluster: &str) -> &'a [HttpRoute] {
    ap.spec
        .overrides
        .iter()
        .find(|o| o.cluster == cluster)
        .and_then(|o| o.http.as_deref())
        .unwrap_or(&ap.spec.http)
}

fn effective_policy<'a>(ap: &'a AccessPoint, cluster: &str) -> Option<&'a TrafficPolicy> {
    ap.spec
        .overrides
        .iter()
        .find(|o| o.cluster == cluster)
        .and_then(|o| o.traffic_policy.as_ref())
        .or(ap.spec.traffic_policy.as_ref())
}

fn outlier(p: Option<&TrafficPolicy>) -> Option<pc::OutlierDetection> {
    let o = p?.outlier_detection.as_ref()?;
    Some(pc::OutlierDetection {
        consecutive_5xx_errors: o.consecutive_5xx_errors,
        consecutive_gateway_errors: o.consecutive_gateway_errors,
        interval: o.interval.clone(),
        base_ejection_time: o.base_ejection_time.clone(),
        max_ejection_percent: o.max_ejection_percent,
    })
}

/// The local endpoints of a backend destination in `cluster`: standalone-mode WorkloadEntries
/// in the service's namespace labelled `app: SERVICE`, this cluster, and the subset's labels.
fn local_endpoints<'a>(
    idx: &Index<'a>,
    ap: &'a AccessPoint,
    d: &'a Destination,
    cluster: &'a str,
) -> Vec<pc::Endpoint> {
    let ns = d.namespace.as_deref().unwrap_or(ns_of(&ap.metadata));
    let subset_labels = d
        .subset
        .as_ref()
        .and_then(|name| ap.spec.subsets.iter().find(|s| &s.name == name))
        .map(|s| &s.labels);
    let mut out: Vec<pc::Endpoint> = idx
        .workloads()
        .get(&workload_key(ns, &d.service, cluster))
        .into_iter()
        .flatten()
        .filter(|w| {
            let l = &w.spec.labels;
            subset_labels.is_none_or(|want| want.iter().all(|(k, v)| l.get(k) == Some(v)))
        })
        .filter_map(|w| {
            let address = w.spec.address.as_deref()?;
            let port = d
                .port
                .or_else(|| w.spec.ports.values().next().copied())
                .unwrap_or(80);
            Some(pc::Endpoint {
                address: join_host_port(address, port),
                weight: w.spec.weight,
                labels: BTreeMap::new(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

fn join_host_port(host: &str, port: u32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Lookups the gateway translation needs once per AccessPoint, built once per translation so
/// the whole is O(n log n) rather than AccessPoints × WorkloadEntries. Each is built on first
/// use (an incremental translation that recomputes no gateway needs neither) unless given: an
/// incremental translation keeps them while their inputs do not change.
pub(crate) struct Index<'a> {
    snapshot: &'a Snapshot,
    /// WorkloadEntries by [`workload_key`].
    workloads: std::cell::OnceCell<Arc<WorkloadIndex>>,
    /// FQDNs of the NameServices targeting each AccessPoint (same namespace), sorted.
    fqdns: std::cell::OnceCell<Arc<FqdnIndex>>,
}

/// WorkloadEntries by [`workload_key`]. It owns its keys and shares the entries, so it can
/// outlive the snapshot it was built from.
pub(crate) type WorkloadIndex = std::collections::HashMap<
    String,
    Vec<Arc<causeway_crds::istio::WorkloadEntry>>,
    foldhash::fast::RandomState,
>;

/// The FQDNs of the NameServices naming each AccessPoint, by `namespace/name`, sorted.
pub(crate) type FqdnIndex =
    std::collections::HashMap<String, Vec<String>, foldhash::fast::RandomState>;

/// The [`WorkloadIndex`] key of a service's WorkloadEntries in one cluster (`\0` appears in
/// no name or label value).
fn workload_key(namespace: &str, app: &str, cluster: &str) -> String {
    let mut k = String::with_capacity(namespace.len() + app.len() + cluster.len() + 2);
    k.push_str(namespace);
    k.push('\0');
    k.push_str(app);
    k.push('\0');
    k.push_str(cluster);
    k
}

impl<'a> Index<'a> {
    /// The index of `s`, built as needed.
    pub(crate) fn new(s: &'a Snapshot) -> Self {
        Self::with(s, None, None)
    }

    /// The index of `s` with the parts at hand (they must have been built from the same
    /// WorkloadEntries and NameServices).
    pub(crate) fn with(
        s: &'a Snapshot,
        workloads: Option<Arc<WorkloadIndex>>,
        fqdns: Option<Arc<FqdnIndex>>,
    ) -> Self {
        Index {
            snapshot: s,
            workloads: workloads.map(Into::into).unwrap_or_default(),
            fqdns: fqdns.map(Into::into).unwrap_or_default(),
        }
    }

    /// The WorkloadEntry index, if it was built or given.
    pub(crate) fn workload_index(&self) -> Option<Arc<WorkloadIndex>> {
        self.workloads.get().cloned()
    }

    /// The FQDN index, if it was built or given.
    pub(crate) fn fqdn_index(&self) -> Option<Arc<FqdnIndex>> {
        self.fqdns.get().cloned()
    }

    fn workloads(&self) -> &WorkloadIndex {
        self.workloads.get_or_init(|| {
            let mut workloads = WorkloadIndex::default();
            for w in &self.snapshot.workload_entries {
                let l = &w.spec.labels;
                if let (Some(app), Some(cluster)) = (l.get("app"), l.get(CLUSTER_LABEL)) {
                    workloads
                        .entry(workload_key(ns_of(&w.metadata), app, cluster))
                        .or_default()
                        .push(Arc::clone(w));
                }
            }
            Arc::new(workloads)
        })
    }

    /// The FQDNs of the NameServices naming AccessPoint `name` in `namespace`, sorted.
    pub(crate) fn fqdns(&self, namespace: &str, name: &str) -> &[String] {
        let index = self.fqdns.get_or_init(|| {
            let mut fqdns = FqdnIndex::default();
            for n in &self.snapshot.name_services {
                for t in &n.spec.targets {
                    if let Some(ap) = t.access_point.as_deref() {
                        fqdns
                            .entry(format!("{}/{ap}", ns_of(&n.metadata)))
                            .or_default()
                            .push(n.spec.fqdn.clone());
                    }
                }
            }
            for v in fqdns.values_mut() {
                v.sort_unstable();
                v.dedup();
            }
            Arc::new(fqdns)
        });
        index
            .get(&format!("{namespace}/{name}"))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

fn tls_port(x: &ExternalService) -> u32 {
    x.spec
        .ports
        .iter()
        .find(|p| p.protocol == Protocol::Https || p.protocol == Protocol::Tls)
        .map_or(443, |p| p.number)
}

fn http_ports(x: &ExternalService) -> Vec<u32> {
    x.spec
        .ports
        .iter()
        .filter(|p| p.protocol == Protocol::Http)
        .map(|p| p.number)
        .collect()
}

/// Whether `x` leaves through the gateways of `gateway_cluster` for callers in `caller`.
fn egress_cluster_for<'a>(
    x: &ExternalService,
    caller: &'a Cluster,
    s: &'a Snapshot,
) -> Option<&'a Cluster> {
    match x.spec.egress.via {
        EgressVia::Cluster => x.spec.egress.cluster.as_deref().and_then(|n| s.cluster(n)),
        EgressVia::SameZone => s
            .clusters
            .iter()
            .filter(|c| !c.spec.gateways.is_empty())
            .filter(|c| {
                c.spec.locality.region == caller.spec.locality.region
                    && c.spec.locality.zone == caller.spec.locality.zone
            })
            .min_by_key(|c| {
                (
                    cluster_name(c) != cluster_name(caller),
                    cluster_name(c).to_owned(),
                )
            })
            .map(|c| &**c),
        EgressVia::SameCluster => Some(caller).filter(|c| !c.spec.gateways.is_empty()),
    }
}

/// Secrets referenced by name in the document, added once.
#[derive(Default)]
struct Secrets(BTreeMap<String, pc::Secret>);

impl Secrets {
    fn tls(&mut self, s: &Snapshot, ns: &str, name: &str) -> Option<String> {
        let secret = s.secret(ns, name)?;
        let id = format!("{ns}/{name}");
        self.0.entry(id.clone()).or_insert_with(|| pc::Secret {
            name: id.clone(),
            cert_pem: secret_text(secret, "tls.crt"),
            key_pem: secret_text(secret, "tls.key").map(pc::PrivateKeyPem),
            ca_pem: secret_text(secret, "ca.crt"),
            ..Default::default()
        });
        Some(id)
    }
}

/// The configuration of every gateway of every cluster.
pub fn gateway_configs(
    s: &Snapshot,
    verdicts: &BTreeMap<ObjectKey, AccessPointVerdict>,
) -> Vec<GatewayConfig> {
    let by_cluster = served_by_cluster(s, verdicts);
    let idx = Index::new(s);
    let mut out = Vec::new();
    for c in &s.clusters {
        let name = cluster_name(c);
        let served: &[&AccessPoint] = by_cluster.get(name).map(Vec::as_slice).unwrap_or_default();
        if c.spec.gateways.is_empty() {
            continue;
        }
        let body = gateway_body(s, &idx, c, served);
        for g in &c.spec.gateways {
            out.push(GatewayConfig {
                cluster: name.to_owned(),
                address: g.address.clone(),
                config: body.config(g),
            });
        }
    }
    out
}

/// The AccessPoints each cluster's gateways serve (accepted, references resolved), by cluster
/// name, each list sorted by key. Placement and references are the same in every cluster, so
/// this is done once per translation.
pub(crate) fn served_by_cluster<'a>(
    s: &'a Snapshot,
    verdicts: &'a BTreeMap<ObjectKey, AccessPointVerdict>,
) -> BTreeMap<&'a str, Vec<&'a AccessPoint>> {
    let aps: std::collections::HashMap<(&str, &str), &AccessPoint> = s
        .access_points
        .iter()
        .map(|ap| (key_ref(&ap.metadata), &**ap))
        .collect();
    let mut by_cluster: BTreeMap<&str, Vec<&AccessPoint>> = BTreeMap::new();
    // In key order (the verdicts' order), without allocating a key per AccessPoint.
    for ((ns, name), v) in verdicts {
        let Some(ap) = aps.get(&(ns.as_str(), name.as_str())).copied() else {
            continue;
        };
        if !v.accepted() || !unresolved_refs(ap, s).is_empty() {
            continue;
        }
        for c in &v.placed.clusters {
            by_cluster.entry(c.as_str()).or_default().push(ap);
        }
    }
    by_cluster
}

/// What every gateway of a cluster serves, before it is bound to one gateway's address: the
/// gateways of a cluster differ only in their listeners' addresses and ports, so the expensive
/// part is computed once per cluster.
#[derive(Debug, Clone, Default)]
pub(crate) struct GatewayBody {
    /// Virtual hosts, clusters and secrets; no listeners yet.
    doc: pc::ProxyConfig,
    /// Virtual hosts on the HTTP listener.
    http_vhosts: Vec<String>,
    /// Virtual hosts on the HTTPS listener.
    https_vhosts: Vec<String>,
    /// Certificates of the HTTPS listener (none: no HTTPS listener).
    certificates: Vec<pc::ServerCertificate>,
    /// TCP listeners as (port, backend cluster).
    tcp: Vec<(u32, String)>,
}

impl GatewayBody {
    /// The configuration of gateway `g`: the body with its listeners on `g`'s address.
    pub(crate) fn config(&self, g: &causeway_crds::v1alpha1::GatewayEndpoint) -> pc::ProxyConfig {
        let mut doc = self.doc.clone();
        let ports = g.ports;
        doc.listeners.push(pc::Listener {
            name: "http".to_owned(),
            address: join_host_port(&g.address, ports.http),
            protocol: pc::Protocol::Http,
            virtual_hosts: Some(self.http_vhosts.clone()),
            ..Default::default()
        });
        if !self.certificates.is_empty() {
            doc.listeners.push(pc::Listener {
                name: "https".to_owned(),
                address: join_host_port(&g.address, ports.https),
                protocol: pc::Protocol::Https,
                tls: Some(pc::ServerTls {
                    certificates: self.certificates.clone(),
                }),
                virtual_hosts: Some(self.https_vhosts.clone()),
                ..Default::default()
            });
        }
        doc.listeners
            .extend(self.tcp.iter().map(|(port, cluster)| pc::Listener {
                name: format!("tcp-{port}"),
                address: join_host_port(&g.address, *port),
                protocol: pc::Protocol::Tcp,
                cluster: Some(cluster.clone()),
                ..Default::default()
            }));
        doc
    }
}

/// What the gateways of cluster `c` serve: the AccessPoints `served` there and the
/// ExternalServices leaving through it.
pub(crate) fn gateway_body<'a>(
    s: &'a Snapshot,
    idx: &Index<'a>,
    c: &'a Cluster,
    served: &[&'a AccessPoint],
) -> GatewayBody {
    let cname = cluster_name(c);
    let mut doc = pc::ProxyConfig::default();
    let mut secrets = Secrets::default();
    let mut clusters: BTreeMap<String, pc::Cluster> = BTreeMap::new();
    let mut http_vhosts = Vec::new();
    let mut https_vhosts = Vec::new();
    let mut certificates = Vec::new();
    let mut tcp = Vec::new();
    for ap in served {
        let key = object_key(&ap.metadata);
        let ns = key.0.as_str();
        let vname = format!("{}/{}", key.0, key.1);
        let mut domains = ap.spec.hosts.clone();
        let (kns, kname) = key_ref(&ap.metadata);
        domains.extend_from_slice(idx.fqdns(kns, kname));
        let http = effective_http(ap, cname);
        let policy = effective_policy(ap, cname);
        let mut routes_out = Vec::new();
        for (i, r) in http.iter().enumerate() {
            routes_out.extend(routes(r, i, &vname, ns));
            for w in &r.route {
                let cl = backend_cluster(&w.destination, ns);
                clusters.entry(cl.clone()).or_insert_with(|| pc::Cluster {
                    name: cl,
                    endpoints: local_endpoints(idx, ap, &w.destination, cname),
                    outlier_detection: outlier(policy),
                    ..Default::default()
                });
            }
        }
        let mut on_http = false;
        let mut on_https = false;
        for l in &ap.spec.listeners {
            match (l.protocol, l.tls.as_ref().map(|t| t.mode)) {
                (Protocol::Http, _) => on_http = true,
                (Protocol::Https, _) | (Protocol::Tls, Some(TlsMode::Simple | TlsMode::Mutual)) => {
                    on_https = true;
                    if let Some(r) = l.tls.as_ref().and_then(|t| t.credential_ref.as_ref()) {
                        let rns = r.namespace.as_deref().unwrap_or(ns);
                        if let Some(id) = secrets.tls(s, rns, &r.name) {
                            certificates.push(pc::ServerCertificate {
                                server_names: ap.spec.hosts.clone(),
                                cert_secret: Some(id),
                                ..Default::default()
                            });
                        }
                    }
                }
                (Protocol::Tcp, _) => {
                    if let Some(route) = ap.spec.tcp.first().and_then(|t| t.route.first()) {
                        let cl = backend_cluster(&route.destination, ns);
                        clusters.entry(cl.clone()).or_insert_with(|| pc::Cluster {
                            name: cl.clone(),
                            endpoints: local_endpoints(idx, ap, &route.destination, cname),
                            ..Default::default()
                        });
                        tcp.push((l.port, cl));
                    }
                }
                // Passthrough shares the HTTPS port by SNI in Envoy; our gateway serves it on
                // a listener of its own once mixed termination/passthrough ports exist.
                (Protocol::Tls, _) => {}
            }
        }
        if routes_out.is_empty() {
            continue;
        }
        doc.virtual_hosts.push(pc::VirtualHost {
            name: vname.clone(),
            domains,
            routes: routes_out,
        });
        if on_http {
            http_vhosts.push(vname.clone());
        }
        if on_https {
            https_vhosts.push(vname);
        }
    }
    // Egress: ExternalServices that leave through this cluster's gateways.
    let mut xs: Vec<&ExternalService> = s.external_services.iter().map(|x| &**x).collect();
    xs.sort_by_cached_key(|x| object_key(&x.metadata));
    for x in xs {
        let carried = s.clusters.iter().any(|caller| {
            egress_cluster_for(x, caller, s).is_some_and(|e| cluster_name(e) == cname)
        });
        if !carried || !crate::status::external_unresolved(x, s).is_empty() {
            continue;
        }
        let key = object_key(&x.metadata);
        let origination = x.spec.egress.tls_origination.as_ref();
        for host in &x.spec.hosts {
            let cl = format!(
                "egress|{}|{host}",
                if origination.is_some() {
                    tls_port(x)
                } else {
                    80
                }
            );
            let port = if origination.is_some() {
                tls_port(x)
            } else {
                http_ports(x).first().copied().unwrap_or(80)
            };
            let tls = origination.map(|o| {
                let ns = key.0.as_str();
                let ca = o.ca_ref.as_ref().and_then(|r| {
                    let rns = r.namespace.as_deref().unwrap_or(ns);
                    s.secret(rns, &r.name).and_then(|sec| {
                        secret_text(sec, "ca.crt").or_else(|| secret_text(sec, "tls.crt"))
                    })
                });
                let client = o
                    .client_certificate_ref
                    .as_ref()
                    .and_then(|r| secrets.tls(s, r.namespace.as_deref().unwrap_or(ns), &r.name));
                pc::UpstreamTls {
                    mode: match o.mode {
                        OriginationMode::Simple => pc::TlsMode::Simple,
                        OriginationMode::Mutual => pc::TlsMode::Mutual,
                    },
                    sni: Some(o.sni.clone().unwrap_or_else(|| host.clone())),
                    ca_pem: ca,
                    client_cert_secret: client,
                    ..Default::default()
                }
            });
            // STATIC: the listed addresses (their named port, else the service's); DNS: the
            // host itself, resolved by the gateway.
            let endpoints = if x.spec.endpoints.is_empty() {
                vec![pc::Endpoint::new(join_host_port(host, port))]
            } else {
                x.spec
                    .endpoints
                    .iter()
                    .map(|e| {
                        let p = e.ports.get(if origination.is_some() {
                            "https"
                        } else {
                            "http"
                        });
                        pc::Endpoint::new(join_host_port(&e.address, p.copied().unwrap_or(port)))
                    })
                    .collect()
            };
            clusters.entry(cl.clone()).or_insert_with(|| pc::Cluster {
                name: cl.clone(),
                endpoints,
                tls,
                outlier_detection: outlier(x.spec.traffic_policy.as_ref()),
                ..Default::default()
            });
            let vname = format!("egress/{}/{}/{host}", key.0, key.1);
            // Hosts without ports: the gateway ignores the port of Host, and so does the Envoy
            // translation (it adds the `:port` forms Envoy needs).
            let domains = vec![host.clone()];
            doc.virtual_hosts.push(pc::VirtualHost {
                name: vname.clone(),
                domains,
                routes: vec![pc::Route {
                    name: Some(vname.clone()),
                    matcher: Some(pc::RouteMatch {
                        path: Some(pc::PathMatch {
                            prefix: Some("/".to_owned()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    route: Some(pc::RouteAction {
                        cluster: Some(cl),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            });
            http_vhosts.push(vname);
        }
    }
    doc.clusters = clusters.into_values().collect();
    doc.secrets = secrets.0.into_values().collect();
    GatewayBody {
        doc,
        http_vhosts,
        https_vhosts,
        certificates,
        tcp,
    }
}

/// Whether an object with `export_to` in namespace `own` is visible to sidecars of `ns`.
pub fn visible(export_to: &[String], own: &str, ns: &str) -> bool {
    export_to.is_empty()
        || own == ns
        || export_to
            .iter()
            .any(|e| e == "*" || e == ns || (e == "." && own == ns))
}

/// The configuration of the sidecars of namespace `namespace` in cluster `cluster`; `None`
/// for an unknown cluster.
pub fn sidecar_config(
    s: &Snapshot,
    verdicts: &BTreeMap<ObjectKey, AccessPointVerdict>,
    cluster: &str,
    namespace: &str,
) -> Option<pc::ProxyConfig> {
    let me = s.cluster(cluster)?;
    let mut doc = pc::ProxyConfig::default();
    let mut vhosts = Vec::new();
    let mut nss: Vec<_> = s.name_services.iter().collect();
    nss.sort_by_cached_key(|n| object_key(&n.metadata));
    for n in nss {
        let key = object_key(&n.metadata);
        if !visible(&n.spec.export_to, &key.0, namespace) {
            continue;
        }
        let (serving, _) = name_service_clusters(n, s, verdicts);
        let gateways: Vec<(&Cluster, &causeway_crds::v1alpha1::GatewayEndpoint)> = serving
            .iter()
            .filter_map(|c| s.cluster(c))
            .flat_map(|c| c.spec.gateways.iter().map(move |g| (c, g)))
            .collect();
        if gateways.is_empty() {
            continue;
        }
        let policy = n.spec.traffic_policy.as_ref();
        let ports: Vec<u32> = if n.spec.ports.is_empty() {
            vec![80]
        } else {
            n.spec.ports.iter().map(|p| p.number).collect()
        };
        let cl = format!(
            "outbound|{}||{}",
            ports.first().copied().unwrap_or(80),
            n.spec.fqdn
        );
        // Endpoints grouped by locality, in a stable order.
        let mut by_locality: BTreeMap<pc::Locality, Vec<pc::Endpoint>> = BTreeMap::new();
        let mut crd_locality: BTreeMap<pc::Locality, causeway_crds::v1alpha1::Locality> =
            BTreeMap::new();
        for (c, g) in &gateways {
            let l = &c.spec.locality;
            let key = pc::Locality {
                region: l.region.clone(),
                zone: l.zone.clone().unwrap_or_default(),
                subzone: l.subzone.clone().unwrap_or_default(),
            };
            crd_locality.insert(key.clone(), l.clone());
            by_locality.entry(key).or_default().push(pc::Endpoint {
                address: join_host_port(&g.address, g.ports.http),
                weight: None,
                labels: [("cluster".to_owned(), cluster_name(c).to_owned())].into(),
            });
        }
        let targets: Vec<(causeway_crds::v1alpha1::Locality, usize)> = by_locality
            .iter()
            .map(|(k, e)| (crd_locality.get(k).cloned().unwrap_or_default(), e.len()))
            .collect();
        let assignments = assign(
            &me.spec.locality,
            &targets,
            policy.and_then(|p| p.locality.as_ref()),
        );
        let locality_endpoints = by_locality
            .into_iter()
            .zip(assignments)
            .filter_map(|((locality, endpoints), a)| {
                let Assignment { priority, weight } = a?;
                Some(pc::LocalityEndpoints {
                    locality,
                    priority,
                    weight,
                    endpoints,
                })
            })
            .collect();
        doc.clusters.push(pc::Cluster {
            name: cl.clone(),
            locality_endpoints,
            outlier_detection: outlier(policy),
            ..Default::default()
        });
        let vname = format!("{}/{}", key.0, key.1);
        let domains = vec![n.spec.fqdn.clone()];
        doc.virtual_hosts.push(pc::VirtualHost {
            name: vname.clone(),
            domains,
            routes: vec![prefix_route(&vname, &cl)],
        });
        vhosts.push(vname);
    }
    let mut xs: Vec<_> = s.external_services.iter().collect();
    xs.sort_by_cached_key(|x| object_key(&x.metadata));
    for x in xs {
        let key = object_key(&x.metadata);
        if !visible(&x.spec.export_to, &key.0, namespace) {
            continue;
        }
        let Some(egress) = egress_cluster_for(x, me, s) else {
            continue;
        };
        let cl = format!("egress-gateway|{}", cluster_name(egress));
        if !doc.clusters.iter().any(|c| c.name == cl) {
            doc.clusters.push(pc::Cluster {
                name: cl.clone(),
                endpoints: egress
                    .spec
                    .gateways
                    .iter()
                    .map(|g| pc::Endpoint::new(join_host_port(&g.address, g.ports.http)))
                    .collect(),
                ..Default::default()
            });
        }
        let vname = format!("egress/{}/{}", key.0, key.1);
        let domains = x.spec.hosts.clone();
        doc.virtual_hosts.push(pc::VirtualHost {
            name: vname.clone(),
            domains,
            routes: vec![prefix_route(&vname, &cl)],
        });
        vhosts.push(vname);
    }
    doc.listeners.push(pc::Listener {
        name: "outbound".to_owned(),
        address: SIDECAR_LISTENER.to_owned(),
        protocol: pc::Protocol::Http,
        virtual_hosts: Some(vhosts),
        ..Default::default()
    });
    Some(doc)
}

fn prefix_route(name: &str, cluster: &str) -> pc::Route {
    pc::Route {
        name: Some(name.to_owned()),
        matcher: Some(pc::RouteMatch {
            path: Some(pc::PathMatch {
                prefix: Some("/".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        route: Some(pc::RouteAction {
            cluster: Some(cluster.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The namespaces whose sidecars see something (for rendering every sidecar view).
pub fn namespaces(s: &Snapshot) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = s
        .name_services
        .iter()
        .map(|n| ns_of(&n.metadata).to_owned())
        .chain(
            s.external_services
                .iter()
                .map(|x| ns_of(&x.metadata).to_owned()),
        )
        .collect();
    out.insert("default".to_owned());
    out
}
