//! VIP assignments for the L4 balancers (`causeway l4lb --xds`), as pure functions.
//!
//! A balancer in zone Z gets, for every accepted and placed AccessPoint with a VIP, the VIP's
//! ports and the gateways of the placed clusters in zone Z ([`assignments`]). Each assignment is
//! sent as one Envoy `Cluster` (CDS) resource ([`to_cluster`]): `lb_policy: MAGLEV` with its
//! table size, the gateways as `load_assignment` endpoints with weights, the health check, and
//! the frontend (VIP, protocol, ports) in the cluster's filter metadata under
//! [`METADATA_KEY`]. `docs/l4lb.md` ("VIPs from the controller") says why this encoding.
//!
//! Shared VIPs (`spec.vip.shareWith`): the AccessPoints on one address are merged; a port
//! served by several of them goes to the union of their gateways (SNI/Host tell them apart
//! only at L7), and ports with the same gateways form one entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use causeway_crds::v1alpha1::{AccessPoint, Cluster};
use causeway_xds::envoy_types::pb::envoy::config::cluster::v3::{
    Cluster as EnvoyCluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy, MaglevLbConfig},
};
use causeway_xds::envoy_types::pb::envoy::config::core::v3::{
    self as core, Metadata, SocketAddress, address, health_check, socket_address,
};
use causeway_xds::envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, endpoint, lb_endpoint,
};
use causeway_xds::envoy_types::pb::google::protobuf::{
    Duration as PbDuration, ListValue, Struct, UInt32Value, UInt64Value, Value, value::Kind,
};
use causeway_xds::{Any, NodeInfo, Snapshot, pack, type_url};

use crate::placement::ObjectKey;
use crate::translate::{self, AccessPointVerdict};

/// Filter-metadata key of the frontend (VIP, protocol, ports) in an assignment's `Cluster`.
pub const METADATA_KEY: &str = "causeway.l4lb";
/// Default Maglev table size; larger (the next prime above 100 × gateways) for big VIPs.
pub const DEFAULT_TABLE_SIZE: u64 = 65_537;
/// Path of the gateways' readiness endpoint on their admin port, probed by the balancers.
pub const READY_PATH: &str = "/ready";

/// Where a balancer runs: its assignments come from the gateways of this zone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Region; empty matches any region.
    pub region: String,
    /// Zone; empty (no zone and no cluster given) takes every placed cluster.
    pub zone: String,
}

impl Scope {
    /// Whether a cluster at `locality` serves this balancer.
    fn matches(&self, c: &Cluster) -> bool {
        let l = &c.spec.locality;
        (self.region.is_empty() || l.region == self.region)
            && (self.zone.is_empty() || l.zone.as_deref().unwrap_or_default() == self.zone)
    }
}

/// The group of an l4lb proxy: `l4lb|CLUSTER|REGION|ZONE` (node metadata `cluster` and
/// `node.locality`).
pub fn group_of(n: &NodeInfo) -> String {
    let cluster = if n.cluster.is_empty() {
        &n.node_cluster
    } else {
        &n.cluster
    };
    format!("l4lb|{cluster}|{}|{}", n.locality.region, n.locality.zone)
}

/// The scope of group `group` under `snapshot`: the zone given by the balancer, or else the
/// zone of the cluster it names. `None` for a group that is not an l4lb group, or names a
/// cluster that is not registered (the balancer then gets nothing and keeps what it has).
pub fn scope_of(group: &str, snapshot: &translate::Snapshot) -> Option<Scope> {
    let parts: Vec<&str> = group.split('|').collect();
    let ["l4lb", cluster, region, zone] = parts.as_slice() else {
        return None;
    };
    if !zone.is_empty() || cluster.is_empty() {
        return Some(Scope {
            region: (*region).to_owned(),
            zone: (*zone).to_owned(),
        });
    }
    let c = snapshot.cluster(cluster)?;
    Some(Scope {
        region: c.spec.locality.region.clone(),
        zone: c.spec.locality.zone.clone().unwrap_or_default(),
    })
}

/// One gateway behind a VIP.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayBackend {
    /// `Cluster.spec.gateways[].address`: the outer IPIP destination.
    pub address: Ipv4Addr,
    /// Relative share of new flows: 1 per listing of the address.
    pub weight: u32,
    /// Its admin port (`Cluster.spec.gateways[].ports.admin`), probed with `GET /ready`.
    pub admin_port: u16,
    /// The member cluster that lists it.
    pub cluster: String,
    /// That cluster's locality (`region/zone/subzone`).
    pub locality: String,
}

/// One VIP entry a balancer serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// `NS/NAME` of the AccessPoint (several joined by `,` for a shared VIP; `:PORTS` added
    /// when a shared VIP's ports go to different gateways).
    pub name: String,
    /// The VIP.
    pub vip: Ipv4Addr,
    /// Destination ports (the AccessPoints' listener ports), sorted.
    pub ports: Vec<u16>,
    /// The gateways, by address.
    pub backends: Vec<GatewayBackend>,
    /// Maglev table size (prime).
    pub table_size: u64,
    /// Admin port probed on every gateway (`GET /ready`, 2xx healthy).
    pub health_port: u16,
}

/// The gateways of `cluster` as backends (IPv4 addresses only: the balancer is IPv4).
fn gateways_of(c: &Cluster) -> Vec<GatewayBackend> {
    let name = c.metadata.name.clone().unwrap_or_default();
    c.spec
        .gateways
        .iter()
        .filter_map(|g| {
            Some(GatewayBackend {
                address: g.address.parse().ok()?,
                weight: 1,
                admin_port: u16::try_from(g.ports.admin).ok()?,
                cluster: name.clone(),
                locality: c.spec.locality.to_string(),
            })
        })
        .collect()
}

/// Merges listings of one address (a gateway listed twice counts twice).
fn merge(backends: impl IntoIterator<Item = GatewayBackend>) -> Vec<GatewayBackend> {
    let mut by_addr: BTreeMap<Ipv4Addr, GatewayBackend> = BTreeMap::new();
    for b in backends {
        by_addr
            .entry(b.address)
            .and_modify(|e| e.weight = e.weight.saturating_add(b.weight))
            .or_insert(b);
    }
    by_addr.into_values().collect()
}

/// The smallest prime table size at least [`DEFAULT_TABLE_SIZE`] and above 100 × `backends`.
pub fn table_size(backends: usize) -> u64 {
    let mut n = DEFAULT_TABLE_SIZE.max(100 * backends as u64 + 1);
    while !is_prime(n) {
        n += 1;
    }
    n
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// The port probed on the gateways of one entry: their admin port, the most common one when
/// clusters disagree (ties: the lowest).
fn health_port(backends: &[GatewayBackend]) -> u16 {
    let mut count: BTreeMap<u16, usize> = BTreeMap::new();
    for b in backends {
        *count.entry(b.admin_port).or_default() += 1;
    }
    count
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map_or(15000, |(p, _)| p)
}

/// Every VIP entry a balancer with `scope` serves: AccessPoints that are accepted, placed on
/// at least one cluster in the scope (with an IPv4 gateway) and have an IPv4 VIP, merged per
/// VIP address. Sorted by VIP, then ports.
pub fn assignments(
    snapshot: &translate::Snapshot,
    verdicts: &BTreeMap<ObjectKey, AccessPointVerdict>,
    vips: &BTreeMap<ObjectKey, Result<IpAddr, String>>,
    scope: &Scope,
) -> Vec<Assignment> {
    // VIP -> port -> (owners, gateways).
    type Ports = BTreeMap<u16, (BTreeSet<String>, Vec<GatewayBackend>)>;
    let mut by_vip: BTreeMap<Ipv4Addr, Ports> = BTreeMap::new();
    for ap in &snapshot.access_points {
        let key = translate::object_key(&ap.metadata);
        let (Some(verdict), Some(Ok(IpAddr::V4(vip)))) = (verdicts.get(&key), vips.get(&key))
        else {
            continue;
        };
        if !verdict.accepted() {
            continue;
        }
        let gateways: Vec<GatewayBackend> = verdict
            .placed
            .clusters
            .iter()
            .filter_map(|name| snapshot.cluster(name))
            .filter(|c| scope.matches(c))
            .flat_map(gateways_of)
            .collect();
        if gateways.is_empty() {
            continue;
        }
        let owner = format!("{}/{}", key.0, key.1);
        for port in listener_ports(ap) {
            let e = by_vip.entry(*vip).or_default().entry(port).or_default();
            e.0.insert(owner.clone());
            e.1.extend(gateways.iter().cloned());
        }
    }
    let mut out = Vec::new();
    for (vip, ports) in by_vip {
        // Ports with the same owners have the same gateways: one entry each.
        let mut groups: BTreeMap<BTreeSet<String>, (Vec<u16>, Vec<GatewayBackend>)> =
            BTreeMap::new();
        for (port, (owners, gws)) in ports {
            let g = groups.entry(owners).or_default();
            g.0.push(port);
            if g.1.is_empty() {
                g.1 = gws;
            }
        }
        let split = groups.len() > 1;
        for (owners, (ports, gws)) in groups {
            // One owner's ports all share its gateways; merging per port counted each
            // gateway once per AccessPoint on that port, which is what we want.
            let backends = merge(dedupe_per_owner(&gws, owners.len()));
            let mut name = owners.into_iter().collect::<Vec<_>>().join(",");
            if split {
                let list: Vec<String> = ports.iter().map(u16::to_string).collect();
                name = format!("{name}:{}", list.join(","));
            }
            out.push(Assignment {
                name,
                vip,
                table_size: table_size(backends.len()),
                health_port: health_port(&backends),
                ports,
                backends,
            });
        }
    }
    out
}

/// The gateways of one port were collected once per owning AccessPoint: an address listed
/// by one cluster should weigh 1, not 1 per AccessPoint sharing the port.
fn dedupe_per_owner(gws: &[GatewayBackend], owners: usize) -> Vec<GatewayBackend> {
    if owners <= 1 {
        return gws.to_vec();
    }
    let unique: BTreeSet<GatewayBackend> = gws.iter().cloned().collect();
    unique.into_iter().collect()
}

/// The VIP ports of an AccessPoint's listeners (sorted, unique, valid).
fn listener_ports(ap: &AccessPoint) -> BTreeSet<u16> {
    ap.spec
        .listeners
        .iter()
        .filter_map(|l| u16::try_from(l.port).ok().filter(|p| *p != 0))
        .collect()
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// The Envoy `Cluster` resource of one assignment (see the module docs).
pub fn to_cluster(a: &Assignment) -> EnvoyCluster {
    let frontend = Struct {
        fields: [
            ("vip".to_owned(), string(&a.vip.to_string())),
            ("protocol".to_owned(), string("TCP")),
            (
                "ports".to_owned(),
                Value {
                    kind: Some(Kind::ListValue(ListValue {
                        values: a
                            .ports
                            .iter()
                            .map(|p| Value {
                                kind: Some(Kind::NumberValue(f64::from(*p))),
                            })
                            .collect(),
                    })),
                },
            ),
        ]
        .into_iter()
        .collect(),
    };
    // One LocalityLbEndpoints per cluster locality, so config dumps show where gateways are.
    let mut localities: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for b in &a.backends {
        localities
            .entry(b.locality.as_str())
            .or_default()
            .push(LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(core::Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: b.address.to_string(),
                            // IPIP carries no port: the inner packet keeps the VIP's.
                            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                            ..Default::default()
                        })),
                    }),
                    health_check_config: Some(endpoint::HealthCheckConfig {
                        port_value: u32::from(b.admin_port),
                        ..Default::default()
                    }),
                    hostname: b.cluster.clone(),
                    ..Default::default()
                })),
                load_balancing_weight: Some(UInt32Value { value: b.weight }),
                ..Default::default()
            });
    }
    let endpoints = localities
        .into_iter()
        .map(|(locality, lb_endpoints)| {
            let mut parts = locality.splitn(3, '/');
            LocalityLbEndpoints {
                locality: Some(core::Locality {
                    region: parts.next().unwrap_or_default().to_owned(),
                    zone: parts.next().unwrap_or_default().to_owned(),
                    sub_zone: parts.next().unwrap_or_default().to_owned(),
                }),
                lb_endpoints,
                ..Default::default()
            }
        })
        .collect();
    let ms = |ms: i32| PbDuration {
        seconds: 0,
        nanos: ms * 1_000_000,
    };
    EnvoyCluster {
        name: a.name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        lb_policy: LbPolicy::Maglev as i32,
        lb_config: Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
            table_size: Some(UInt64Value {
                value: a.table_size,
            }),
        })),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: a.name.clone(),
            endpoints,
            ..Default::default()
        }),
        health_checks: vec![core::HealthCheck {
            timeout: Some(ms(500)),
            interval: Some(ms(500)),
            healthy_threshold: Some(UInt32Value { value: 2 }),
            unhealthy_threshold: Some(UInt32Value { value: 2 }),
            health_checker: Some(health_check::HealthChecker::HttpHealthCheck(
                health_check::HttpHealthCheck {
                    path: READY_PATH.to_owned(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }],
        metadata: Some(Metadata {
            filter_metadata: [(METADATA_KEY.to_owned(), frontend)].into_iter().collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The resources of a set of assignments.
pub fn to_resources(assignments: &[Assignment]) -> Vec<Any> {
    assignments.iter().map(|a| pack(&to_cluster(a))).collect()
}

/// The xDS snapshot of l4lb group `group` under the desired state's parts; `None` when the
/// group is not an l4lb group or names an unknown cluster.
pub fn snapshot_for(
    group: &str,
    snapshot: &translate::Snapshot,
    verdicts: &BTreeMap<ObjectKey, AccessPointVerdict>,
    vips: &BTreeMap<ObjectKey, Result<IpAddr, String>>,
) -> Option<Snapshot> {
    let scope = scope_of(group, snapshot)?;
    let list = assignments(snapshot, verdicts, vips, &scope);
    let named = list.iter().map(|a| (a.name.clone(), pack(&to_cluster(a))));
    Some(Snapshot::new().with_type(type_url::CLUSTER, named))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;

    fn cluster(name: &str, zone: &str, gateways: &[(&str, u32)]) -> Arc<Cluster> {
        let gws: Vec<String> = gateways
            .iter()
            .map(|(a, admin)| format!("{{address: \"{a}\", ports: {{admin: {admin}}}}}"))
            .collect();
        Arc::new(
            serde_yaml::from_str(&format!(
                "apiVersion: causeway.io/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\n\
                 spec: {{locality: {{region: us-west, zone: {zone}}}, role: Gateway, \
                 gateways: [{}]}}\n",
                gws.join(", ")
            ))
            .unwrap(),
        )
    }

    fn ap(name: &str, ports: &[u16]) -> Arc<AccessPoint> {
        let ls: Vec<String> = ports
            .iter()
            .map(|p| format!("{{name: l{p}, port: {p}, protocol: HTTP}}"))
            .collect();
        Arc::new(
            serde_yaml::from_str(&format!(
                "apiVersion: causeway.io/v1alpha1\nkind: AccessPoint\n\
                 metadata: {{name: {name}, namespace: retail}}\n\
                 spec: {{hosts: [{name}.example.com], listeners: [{}]}}\n",
                ls.join(", ")
            ))
            .unwrap(),
        )
    }

    struct World {
        snapshot: translate::Snapshot,
        verdicts: BTreeMap<ObjectKey, AccessPointVerdict>,
        vips: BTreeMap<ObjectKey, Result<IpAddr, String>>,
    }

    impl World {
        fn new() -> World {
            World {
                snapshot: translate::Snapshot {
                    clusters: vec![
                        cluster(
                            "c1",
                            "us-west-a",
                            &[("10.1.0.21", 15000), ("10.1.0.22", 15000)],
                        ),
                        cluster("c2", "us-west-a", &[("10.1.0.31", 15000)]),
                        cluster("c3", "us-west-b", &[("10.2.0.21", 15000)]),
                    ],
                    ..Default::default()
                },
                verdicts: BTreeMap::new(),
                vips: BTreeMap::new(),
            }
        }

        fn add(&mut self, name: &str, ports: &[u16], vip: &str, placed: &[&str]) {
            self.snapshot.access_points.push(ap(name, ports));
            let key = ("retail".to_owned(), name.to_owned());
            self.verdicts.insert(
                key.clone(),
                AccessPointVerdict {
                    placed: crate::placement::Placed {
                        clusters: placed.iter().map(|s| (*s).to_owned()).collect(),
                        issues: vec![],
                    },
                    conflicts: vec![],
                },
            );
            self.vips.insert(key, Ok(vip.parse().unwrap()));
        }

        fn for_zone(&self, zone: &str) -> Vec<Assignment> {
            let scope = Scope {
                region: String::new(),
                zone: zone.to_owned(),
            };
            assignments(&self.snapshot, &self.verdicts, &self.vips, &scope)
        }
    }

    fn addrs(a: &Assignment) -> Vec<(String, u32)> {
        a.backends
            .iter()
            .map(|b| (b.address.to_string(), b.weight))
            .collect()
    }

    #[test]
    fn a_vip_goes_to_the_gateways_of_the_placed_clusters_in_the_zone() {
        let mut w = World::new();
        w.add("shop", &[443, 80], "10.240.0.1", &["c1", "c3"]);
        let a = w.for_zone("us-west-a");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].name, "retail/shop");
        assert_eq!(a[0].vip, Ipv4Addr::new(10, 240, 0, 1));
        assert_eq!(a[0].ports, [80, 443]);
        assert_eq!(
            addrs(&a[0]),
            [("10.1.0.21".into(), 1), ("10.1.0.22".into(), 1)]
        );
        assert_eq!((a[0].table_size, a[0].health_port), (65_537, 15000));
        // Zone b sees c3 only; a zone without placed clusters gets nothing.
        assert_eq!(
            addrs(&w.for_zone("us-west-b")[0]),
            [("10.2.0.21".into(), 1)]
        );
        assert!(w.for_zone("us-east-a").is_empty());
        // No zone: every placed cluster.
        assert_eq!(w.for_zone("")[0].backends.len(), 3);
    }

    #[test]
    fn placement_changes_and_deletes_follow() {
        let mut w = World::new();
        w.add("shop", &[80], "10.240.0.1", &["c1"]);
        let key = ("retail".to_owned(), "shop".to_owned());
        w.verdicts.get_mut(&key).unwrap().placed.clusters = vec!["c1".into(), "c2".into()];
        assert_eq!(w.for_zone("us-west-a")[0].backends.len(), 3);
        // Not accepted (host conflict), no VIP, or an IPv6 VIP: not served.
        w.verdicts.get_mut(&key).unwrap().conflicts = vec![crate::placement::HostConflict {
            host: "shop.example.com".into(),
            port: crate::placement::GatewayPort::Http,
            owner: ("retail".into(), "older".into()),
        }];
        assert!(w.for_zone("us-west-a").is_empty());
        w.verdicts.get_mut(&key).unwrap().conflicts.clear();
        w.vips.insert(key.clone(), Err("pool exhausted".into()));
        assert!(w.for_zone("us-west-a").is_empty());
        w.vips.insert(key.clone(), Ok("fd00::1".parse().unwrap()));
        assert!(w.for_zone("us-west-a").is_empty());
        // Deleted.
        w.vips.insert(key, Ok("10.240.0.1".parse().unwrap()));
        w.snapshot.access_points.clear();
        assert!(w.for_zone("us-west-a").is_empty());
    }

    #[test]
    fn shared_vips_merge_and_split_ports_by_gateways() {
        let mut w = World::new();
        w.add("shop", &[80, 443], "10.240.0.1", &["c1"]);
        w.add("cart", &[443], "10.240.0.1", &["c2"]);
        let a = w.for_zone("us-west-a");
        assert_eq!(a.len(), 2, "{a:#?}");
        let names: Vec<&str> = a.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["retail/cart,retail/shop:443", "retail/shop:80"]);
        assert_eq!(a[0].ports, [443]);
        assert_eq!(a[0].backends.len(), 3);
        assert!(a[0].backends.iter().all(|b| b.weight == 1));
        assert_eq!(a[1].ports, [80]);
        assert_eq!(a[1].backends.len(), 2);
    }

    #[test]
    fn weights_count_listings_and_table_sizes_grow() {
        let mut w = World::new();
        w.snapshot.clusters[1] = cluster("c2", "us-west-a", &[("10.1.0.21", 15001)]);
        w.add("shop", &[80], "10.240.0.1", &["c1", "c2"]);
        let a = &w.for_zone("us-west-a")[0];
        assert_eq!(addrs(a), [("10.1.0.21".into(), 2), ("10.1.0.22".into(), 1)]);
        assert_eq!(table_size(3), 65_537);
        assert_eq!(table_size(1000), 100_003);
        assert!(is_prime(table_size(700)) && table_size(700) > 70_000);
        assert_eq!(
            health_port(&[
                a.backends[0].clone(),
                GatewayBackend {
                    admin_port: 9,
                    ..a.backends[1].clone()
                }
            ]),
            9
        );
    }

    #[test]
    fn groups_and_scopes() {
        let w = World::new();
        let node = NodeInfo {
            id: "lb1".into(),
            cluster: "c1".into(),
            role: "l4lb".into(),
            ..Default::default()
        };
        let g = group_of(&node);
        assert_eq!(g, "l4lb|c1||");
        // The zone of the named cluster.
        assert_eq!(
            scope_of(&g, &w.snapshot),
            Some(Scope {
                region: "us-west".into(),
                zone: "us-west-a".into()
            })
        );
        // An explicit zone wins; an unknown cluster gets nothing.
        assert_eq!(
            scope_of("l4lb|c1|us-west|us-west-b", &w.snapshot)
                .unwrap()
                .zone,
            "us-west-b"
        );
        assert_eq!(scope_of("l4lb|nope||", &w.snapshot), None);
        assert_eq!(scope_of("l4lb|||", &w.snapshot), Some(Scope::default()));
        assert_eq!(scope_of("gateway|c1|x", &w.snapshot), None);
    }

    #[test]
    fn the_cluster_resource_carries_frontend_backends_and_health_check() {
        use causeway_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster as C;
        use prost::Message;
        let mut w = World::new();
        w.add("shop", &[80], "10.240.0.1", &["c1"]);
        let a = w.for_zone("us-west-a");
        let any = &to_resources(&a)[0];
        assert_eq!(any.type_url, type_url::CLUSTER);
        let c = C::decode(any.value.as_slice()).unwrap();
        assert_eq!(c.name, "retail/shop");
        assert_eq!(c.lb_policy, LbPolicy::Maglev as i32);
        let meta = &c.metadata.unwrap().filter_metadata[METADATA_KEY];
        assert_eq!(
            meta.fields["vip"].kind,
            Some(Kind::StringValue("10.240.0.1".into()))
        );
        let eps = &c.load_assignment.unwrap().endpoints;
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].lb_endpoints.len(), 2);
        assert_eq!(eps[0].locality.as_ref().unwrap().zone, "us-west-a");
        let snap = snapshot_for("l4lb|c1||", &w.snapshot, &w.verdicts, &w.vips).unwrap();
        assert_eq!(snap.get(type_url::CLUSTER).unwrap().len(), 1);
    }
}
