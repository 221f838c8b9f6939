//! A synthetic federation for the controller's benchmarks (`translate_bench`,
//! `sidecar_scope`): clusters in 4 regions, AccessPoints placed on 3 clusters each with two
//! routes and a locality policy, a NameService per AccessPoint, 3 WorkloadEntries per service.
//! Every object carries a uid, a generation and a resourceVersion, as stored objects do.
#![allow(clippy::unwrap_used, dead_code)]

use causeway_crds::istio::WorkloadEntry;
use causeway_crds::v1alpha1::{AccessPoint, Cluster, NameService};
use serde_json::json;

/// Member cluster `c{i}`: 4 regions, 3 zones each, one gateway.
pub fn cluster(i: usize) -> Cluster {
    let region = ["us-west", "us-east", "eu-west", "ap-south"][i % 4];
    let zone = format!("{region}-{}", (b'a' + (i / 4 % 3) as u8) as char);
    serde_json::from_value(json!({
        "apiVersion": "causeway.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": format!("c{i}"), "labels": {"region": region, "tier": if i.is_multiple_of(2) { "edge" } else { "core" }},
                     "uid": format!("cluster-{i}"), "resourceVersion": "1",
                     "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"locality": {"region": region, "zone": zone}, "network": format!("net-{region}"),
                 "environment": "prod", "role": "Gateway",
                 "gateways": [{"address": format!("10.{}.{}.1", i / 250, i % 250)}]}
    }))
    .unwrap()
}

/// AccessPoint `svc{i}` in namespace `team{i % namespaces}`; `variant` is its generation and
/// its default route's timeout in seconds, so a new variant is a spec change.
pub fn access_point(i: usize, clusters: usize, namespaces: usize, variant: u32) -> AccessPoint {
    // Each AccessPoint is placed on 3 clusters (a zone per region) — eBay publishes a service
    // in a handful of gateway clusters, not everywhere.
    let placed: Vec<String> = (0..3)
        .map(|k| format!("c{}", (i * 7 + k * 13) % clusters))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
        "metadata": {"name": format!("svc{i}"), "namespace": format!("team{}", i % namespaces),
                     "uid": format!("ap-{i}"), "resourceVersion": variant.to_string(),
                     "generation": variant, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "hosts": [format!("svc{i}.example.com")],
            "vip": {"pool": "default"},
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
            "http": [
                {"name": "canary", "match": [{"headers": {"x-canary": {"exact": "1"}}}],
                 "route": [{"destination": {"service": format!("svc{i}"), "port": 8080, "subset": "v2"}}]},
                {"name": "default", "match": [{"uri": {"prefix": "/"}}], "timeout": format!("{variant}s"),
                 "route": [{"destination": {"service": format!("svc{i}"), "port": 8080, "subset": "v1"}, "weight": 90},
                           {"destination": {"service": format!("svc{i}"), "port": 8080, "subset": "v2"}, "weight": 10}]}
            ],
            "placement": {"clusters": placed},
            "trafficPolicy": {
                "locality": {"distribute": [{"from": "us-west/*", "to": {"us-west/*": 99, "us-east/*": 1}}]},
                "outlierDetection": {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "10s"}
            }
        }
    }))
    .unwrap()
}

/// NameService `svc{i}-global` (`svc{i}.global`) targeting AccessPoint `svc{i}`; with
/// `private`, exported to its own namespace only.
pub fn name_service(i: usize, namespaces: usize, private: bool) -> NameService {
    let export: Vec<String> = if private {
        vec![format!("team{}", i % namespaces)]
    } else {
        Vec::new()
    };
    serde_json::from_value(json!({
        "apiVersion": "causeway.io/v1alpha1", "kind": "NameService",
        "metadata": {"name": format!("svc{i}-global"), "namespace": format!("team{}", i % namespaces),
                     "uid": format!("ns-{i}"), "resourceVersion": "1", "generation": 1},
        "spec": {"fqdn": format!("svc{i}.global"), "ports": [{"number": 80, "protocol": "HTTP"}],
                 "targets": [{"accessPoint": format!("svc{i}")}],
                 "exportTo": export}
    }))
    .unwrap()
}

/// The three WorkloadEntries of service `svc{i}` (one v2, two v1) in three clusters.
pub fn workload(i: usize, clusters: usize, namespaces: usize) -> Vec<WorkloadEntry> {
    (0..3)
        .map(|k| {
            serde_json::from_value(json!({
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": format!("svc{i}-{k}"), "namespace": format!("team{}", i % namespaces),
                             "uid": format!("we-{i}-{k}"), "resourceVersion": "1", "generation": 1},
                "spec": {"address": format!("10.200.{}.{}", i / 250 % 250, i % 250),
                         "labels": {"app": format!("svc{i}"), "version": if k == 0 { "v2" } else { "v1" },
                                    "topology.istio.io/cluster": format!("c{}", (i * 7 + k * 13) % clusters)}}
            }))
            .unwrap()
        })
        .collect()
}
