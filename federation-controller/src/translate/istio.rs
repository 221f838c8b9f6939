//! The Istio objects of a member cluster (Kubernetes mode; `causeway get rendered`).
//!
//! Per published AccessPoint and per NameService, every member cluster gets:
//! - a `ServiceEntry` for the global host(s), resolution STATIC, selecting
//! - one generated `WorkloadEntry` per gateway of each cluster that serves it, carrying that
//!   cluster's locality and network — so every sidecar reaches the service through the nearest
//!   gateways, with Istio's locality load balancing doing the 99/1 split and the failover;
//! - a `DestinationRule` carrying the locality policy, outlier detection and connection pool.
//!
//! Everything is the same in every cluster (export rules are in the objects), so one list is
//! produced and shipped to each.

use std::collections::BTreeMap;

use causeway_crds::istio::{
    self, ConnectionPoolSettings, DestinationRule, DestinationRuleSpec, HttpSettings, IstioObject,
    LoadBalancerSettings, LocalityLbSetting, Location, Resolution, ServiceEntry, ServiceEntrySpec,
    TcpSettings, WorkloadEntry, WorkloadEntrySpec, WorkloadSelector,
};
use causeway_crds::v1alpha1::{
    AccessPoint, Cluster, NameService, Protocol, ServicePort, TrafficPolicy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{AccessPointVerdict, Snapshot, judge_access_points, name_service_clusters, object_key};
use crate::placement::ObjectKey;

/// Label on every generated object.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "causeway");
/// Label tying generated WorkloadEntries to the AccessPoint they serve.
pub const ACCESS_POINT_LABEL: &str = "causeway.io/accesspoint";
/// Label tying generated WorkloadEntries to the NameService they serve.
pub const NAME_SERVICE_LABEL: &str = "causeway.io/nameservice";

/// One service to publish into the mesh: hosts, ports, the clusters behind it and its policy.
struct Published<'a> {
    namespace: &'a str,
    base_name: String,
    selector: (&'static str, &'a str),
    hosts: Vec<String>,
    ports: Vec<ServicePort>,
    export_to: Vec<String>,
    clusters: Vec<&'a Cluster>,
    policy: Option<&'a TrafficPolicy>,
}

fn meta(name: &str, namespace: &str, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut labels: BTreeMap<String, String> =
        [(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into();
    labels.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels),
        ..Default::default()
    }
}

fn istio_protocol(p: Protocol) -> istio::Protocol {
    match p {
        Protocol::Http => istio::Protocol::Http,
        Protocol::Https => istio::Protocol::Https,
        Protocol::Tls => istio::Protocol::Tls,
        Protocol::Tcp => istio::Protocol::Tcp,
    }
}

fn port_name(p: &ServicePort) -> String {
    p.name.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            p.protocol.to_string().to_ascii_lowercase(),
            p.number
        )
    })
}

/// The gateway port a service port arrives on: Host/SNI tell services apart on the shared
/// HTTP and HTTPS ports; TCP keeps its number.
fn gateway_port(c: &Cluster, gw: usize, p: &ServicePort) -> u32 {
    let ports = c.spec.gateways.get(gw).map(|g| g.ports).unwrap_or_default();
    match p.protocol {
        Protocol::Http => ports.http,
        Protocol::Https | Protocol::Tls => ports.https,
        Protocol::Tcp => p.number,
    }
}

fn destination_rule_policy(p: &TrafficPolicy) -> Option<istio::TrafficPolicy> {
    let locality = p.locality.as_ref().map(|l| LocalityLbSetting {
        distribute: l
            .distribute
            .iter()
            .map(|d| istio::LocalityDistribute {
                from: d.from.clone(),
                to: d.to.clone(),
            })
            .collect(),
        failover: l
            .failover
            .iter()
            .map(|f| istio::LocalityFailover {
                from: f.from.clone(),
                to: f.to.clone(),
            })
            .collect(),
        failover_priority: l.failover_priority.clone(),
        enabled: l.enabled,
    });
    let outlier = p
        .outlier_detection
        .as_ref()
        .map(|o| istio::OutlierDetection {
            consecutive_5xx_errors: o.consecutive_5xx_errors,
            consecutive_gateway_errors: o.consecutive_gateway_errors,
            interval: o.interval.clone(),
            base_ejection_time: o.base_ejection_time.clone(),
            max_ejection_percent: o.max_ejection_percent,
            min_health_percent: o.min_health_percent,
            ..Default::default()
        });
    let pool = p.connection_pool.as_ref().map(|c| ConnectionPoolSettings {
        tcp: c.tcp.as_ref().map(|t| TcpSettings {
            max_connections: t.max_connections,
            connect_timeout: t.connect_timeout.clone(),
            ..Default::default()
        }),
        http: c.http.as_ref().map(|h| HttpSettings {
            http1_max_pending_requests: h.http1_max_pending_requests,
            http2_max_requests: h.http2_max_requests,
            max_requests_per_connection: h.max_requests_per_connection,
            max_retries: h.max_retries,
            idle_timeout: h.idle_timeout.clone(),
            ..Default::default()
        }),
    });
    if locality.is_none() && outlier.is_none() && pool.is_none() {
        return None;
    }
    Some(istio::TrafficPolicy {
        load_balancer: locality.map(|l| LoadBalancerSettings {
            locality_lb_setting: Some(l),
            ..Default::default()
        }),
        connection_pool: pool,
        outlier_detection: outlier,
        ..Default::default()
    })
}

fn publish(p: &Published<'_>, out: &mut Vec<IstioObject>) {
    let (sel_key, sel_value) = p.selector;
    out.push(IstioObject::ServiceEntry(Box::new(ServiceEntry {
        metadata: meta(&p.base_name, p.namespace, &[(sel_key, sel_value)]),
        spec: ServiceEntrySpec {
            hosts: p.hosts.clone(),
            ports: p
                .ports
                .iter()
                .map(|sp| istio::ServicePort {
                    number: sp.number,
                    protocol: istio_protocol(sp.protocol),
                    name: port_name(sp),
                    target_port: None,
                })
                .collect(),
            location: Some(Location::MeshInternal),
            resolution: Some(Resolution::Static),
            workload_selector: Some(WorkloadSelector {
                labels: [(sel_key.to_owned(), sel_value.to_owned())].into(),
            }),
            export_to: p.export_to.clone(),
            ..Default::default()
        },
    })));
    for c in &p.clusters {
        let cname = c.metadata.name.as_deref().unwrap_or_default();
        for (i, gw) in c.spec.gateways.iter().enumerate() {
            let name = format!("{}-{cname}-{i}", p.base_name);
            out.push(IstioObject::WorkloadEntry(Box::new(WorkloadEntry {
                metadata: meta(
                    &name,
                    p.namespace,
                    &[
                        (sel_key, sel_value),
                        (crate::placement::CLUSTER_LABEL, cname),
                    ],
                ),
                spec: WorkloadEntrySpec {
                    address: Some(gw.address.clone()),
                    ports: p
                        .ports
                        .iter()
                        .map(|sp| (port_name(sp), gateway_port(c, i, sp)))
                        .collect(),
                    labels: [
                        (sel_key.to_owned(), sel_value.to_owned()),
                        (crate::placement::CLUSTER_LABEL.to_owned(), cname.to_owned()),
                    ]
                    .into(),
                    network: c.spec.network.clone(),
                    locality: Some(c.spec.locality.to_string()),
                    weight: None,
                    service_account: None,
                },
            })));
        }
    }
    if let Some(policy) = p.policy.and_then(destination_rule_policy) {
        for host in &p.hosts {
            let name = if p.hosts.len() == 1 {
                p.base_name.clone()
            } else {
                format!("{}-{}", p.base_name, host.replace(['.', '*'], "-"))
            };
            out.push(IstioObject::DestinationRule(Box::new(DestinationRule {
                metadata: meta(&name, p.namespace, &[(sel_key, sel_value)]),
                spec: DestinationRuleSpec {
                    host: host.clone(),
                    traffic_policy: Some(policy.clone()),
                    export_to: p.export_to.clone(),
                    ..Default::default()
                },
            })));
        }
    }
}

/// The Istio objects every member cluster gets, in a stable order (AccessPoints, then
/// NameServices, by namespace and name). Refused AccessPoints and unresolvable targets produce
/// nothing; their status says why.
pub fn istio_objects(s: &Snapshot) -> Vec<IstioObject> {
    istio_objects_judged(s, &judge_access_points(s))
}

/// [`istio_objects`] with the AccessPoints already judged (the controller judges once per
/// translation).
pub fn istio_objects_judged(
    s: &Snapshot,
    verdicts: &BTreeMap<ObjectKey, AccessPointVerdict>,
) -> Vec<IstioObject> {
    let by_name = clusters_by_name(s);
    let mut aps: Vec<_> = s.access_points.iter().collect();
    aps.sort_by_cached_key(|a| object_key(&a.metadata));
    let mut out = Vec::new();
    for ap in aps {
        let key = object_key(&ap.metadata);
        if let Some(v) = verdicts.get(&key) {
            out.extend(access_point_objects(ap, &key, v, &by_name));
        }
    }
    let mut nss: Vec<_> = s.name_services.iter().collect();
    nss.sort_by_cached_key(|n| object_key(&n.metadata));
    for ns in nss {
        out.extend(name_service_objects(ns, s, verdicts, &by_name));
    }
    out
}

/// The clusters of a snapshot by name.
pub(crate) fn clusters_by_name(s: &Snapshot) -> BTreeMap<&str, &Cluster> {
    s.clusters
        .iter()
        .filter_map(|c| c.metadata.name.as_deref().map(|n| (n, &**c)))
        .collect()
}

/// The Istio objects of one AccessPoint: nothing when it is refused or placed nowhere.
pub(crate) fn access_point_objects(
    ap: &AccessPoint,
    key: &ObjectKey,
    v: &AccessPointVerdict,
    by_name: &BTreeMap<&str, &Cluster>,
) -> Vec<IstioObject> {
    let mut out = Vec::new();
    if !v.accepted() {
        return out;
    }
    let clusters: Vec<&Cluster> = v
        .placed
        .clusters
        .iter()
        .filter_map(|c| by_name.get(c.as_str()).copied())
        .collect();
    if clusters.is_empty() {
        return out;
    }
    let ports = ap
        .spec
        .listeners
        .iter()
        .map(|l| ServicePort {
            number: l.port,
            protocol: l.protocol,
            name: Some(l.name.clone()),
        })
        .collect();
    publish(
        &Published {
            namespace: &key.0,
            base_name: format!("causeway-ap-{}", key.1),
            selector: (ACCESS_POINT_LABEL, &key.1),
            hosts: ap.spec.hosts.clone(),
            ports,
            export_to: Vec::new(),
            clusters,
            policy: ap.spec.traffic_policy.as_ref(),
        },
        &mut out,
    );
    out
}

/// The Istio objects of one NameService: nothing when no target serves anywhere.
pub(crate) fn name_service_objects(
    ns: &NameService,
    s: &Snapshot,
    verdicts: &BTreeMap<ObjectKey, AccessPointVerdict>,
    by_name: &BTreeMap<&str, &Cluster>,
) -> Vec<IstioObject> {
    let mut out = Vec::new();
    let key = object_key(&ns.metadata);
    let (names, _issues) = name_service_clusters(ns, s, verdicts);
    let clusters: Vec<&Cluster> = names
        .iter()
        .filter_map(|c| by_name.get(c.as_str()).copied())
        .collect();
    if clusters.is_empty() {
        return out;
    }
    let ports = if ns.spec.ports.is_empty() {
        vec![ServicePort {
            number: 80,
            protocol: Protocol::Http,
            name: Some("http".to_owned()),
        }]
    } else {
        ns.spec.ports.clone()
    };
    let export_to = if ns.spec.export_to == ["*"] {
        Vec::new()
    } else {
        ns.spec.export_to.clone()
    };
    publish(
        &Published {
            namespace: &key.0,
            base_name: format!("causeway-ns-{}", key.1),
            selector: (NAME_SERVICE_LABEL, &key.1),
            hosts: vec![ns.spec.fqdn.clone()],
            ports,
            export_to,
            clusters,
            policy: ns.spec.traffic_policy.as_ref(),
        },
        &mut out,
    );
    out
}
