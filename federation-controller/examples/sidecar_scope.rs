//! What one sidecar receives in a big federation (`bench/xds.sh`): 100 clusters, SERVICES
//! AccessPoints with a NameService each, spread over NAMESPACES namespaces, every NameService
//! exported to its own namespace only, so a sidecar of namespace team0 may see SERVICES /
//! NAMESPACES of them. The full translation runs, then the sidecar group's configuration is
//! rendered and translated to Envoy resources exactly as the push loop does; the table shows
//! what that sidecar receives (resources and protobuf bytes) — the scoping target is < 100 KB.
//!
//! `cargo run --release -p causeway-controller --example sidecar_scope -- [SERVICES] [NAMESPACES]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// `.into()` builds the snapshot's object lists whether they hold the objects or `Arc`s of them
// (the translator is moving to shared objects).
#![allow(clippy::useless_conversion)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use causeway_controller::reconcile;
use causeway_controller::translate::Snapshot;
use causeway_crds::istio::WorkloadEntry;
use causeway_crds::v1alpha1::{AccessPoint, Cluster, NameService};
use causeway_proxy_config::envoy::{EnvoyOptions, to_envoy};
use serde_json::json;

thread_local! {
    static NS: std::cell::Cell<usize> = const { std::cell::Cell::new(1000) };
}

fn namespaces() -> usize {
    NS.with(std::cell::Cell::get)
}

fn cluster(i: usize) -> Cluster {
    let region = ["us-west", "us-east", "eu-west", "ap-south"][i % 4];
    let zone = format!("{region}-{}", (b'a' + (i / 4 % 3) as u8) as char);
    serde_json::from_value(json!({
        "apiVersion": "causeway.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": format!("c{i}"), "labels": {"region": region, "tier": if i.is_multiple_of(2) { "edge" } else { "core" }},
                     "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"locality": {"region": region, "zone": zone}, "network": format!("net-{region}"),
                 "environment": "prod", "role": "Gateway",
                 "gateways": [{"address": format!("10.{}.{}.1", i / 250, i % 250)}]}
    }))
    .unwrap()
}

fn access_point(i: usize, clusters: usize, variant: u32) -> AccessPoint {
    // Each AccessPoint is placed on 3 clusters (a zone per region) — eBay publishes a service
    // in a handful of gateway clusters, not everywhere.
    let placed: Vec<String> = (0..3)
        .map(|k| format!("c{}", (i * 7 + k * 13) % clusters))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
        "metadata": {"name": format!("svc{i}"), "namespace": format!("team{}", i % namespaces()),
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

fn name_service(i: usize) -> NameService {
    serde_json::from_value(json!({
        "apiVersion": "causeway.io/v1alpha1", "kind": "NameService",
        "metadata": {"name": format!("svc{i}-global"), "namespace": format!("team{}", i % namespaces()), "generation": 1},
        "spec": {"fqdn": format!("svc{i}.global"), "ports": [{"number": 80, "protocol": "HTTP"}],
                 "targets": [{"accessPoint": format!("svc{i}")}],
                 "exportTo": [format!("team{}", i % namespaces())]}
    }))
    .unwrap()
}

fn workload(i: usize, clusters: usize) -> Vec<WorkloadEntry> {
    (0..3)
        .map(|k| {
            serde_json::from_value(json!({
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": format!("svc{i}-{k}"), "namespace": format!("team{}", i % namespaces()), "generation": 1},
                "spec": {"address": format!("10.200.{}.{}", i / 250 % 250, i % 250),
                         "labels": {"app": format!("svc{i}"), "version": if k == 0 { "v2" } else { "v1" },
                                    "topology.istio.io/cluster": format!("c{}", (i * 7 + k * 13) % clusters)}}
            }))
            .unwrap()
        })
        .collect()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(10_000);
    NS.with(|n| n.set(args.get(1).copied().unwrap_or(1000)));
    let clusters = 100;
    let snapshot = Snapshot {
        clusters: (0..clusters).map(|i| cluster(i).into()).collect(),
        access_points: (0..services)
            .map(|i| access_point(i, clusters, 1).into())
            .collect(),
        name_services: (0..services).map(|i| name_service(i).into()).collect(),
        workload_entries: (0..services)
            .flat_map(|i| workload(i, clusters))
            .map(Into::into)
            .collect(),
        ..Default::default()
    };
    let t = Instant::now();
    let d = reconcile::translate(1, Arc::new(snapshot), BTreeMap::new());
    let translated = t.elapsed();
    let group = "sidecar|c0|team0|";
    let t = Instant::now();
    let doc = causeway_controller::push::config_for(group, &d).expect("c0 exists");
    let res = to_envoy(&doc, &EnvoyOptions::sidecar()).expect("translates");
    let rendered = t.elapsed();
    let sizes = [
        (
            "LDS",
            res.listeners
                .iter()
                .map(|r| causeway_xds::pack(r).value.len())
                .sum::<usize>(),
            res.listeners.len(),
        ),
        (
            "RDS",
            res.route_configs
                .iter()
                .map(|r| causeway_xds::pack(r).value.len())
                .sum(),
            res.route_configs.len(),
        ),
        (
            "CDS",
            res.clusters
                .iter()
                .map(|r| causeway_xds::pack(r).value.len())
                .sum(),
            res.clusters.len(),
        ),
        (
            "EDS",
            res.load_assignments
                .iter()
                .map(|r| causeway_xds::pack(r).value.len())
                .sum(),
            res.load_assignments.len(),
        ),
        (
            "SDS",
            res.secrets
                .iter()
                .map(|r| causeway_xds::pack(r).value.len())
                .sum(),
            res.secrets.len(),
        ),
    ];
    let total: usize = sizes.iter().map(|s| s.1).sum();
    println!(
        "federation: {clusters} clusters, {services} AccessPoints + {services} NameServices in {} namespaces (full translation {translated:.1?})",
        namespaces()
    );
    println!(
        "sidecar of c0/team0 sees {} NameServices (rendered in {rendered:.1?})",
        doc.virtual_hosts.len()
    );
    println!("{:<5} {:>10} {:>10}", "type", "resources", "bytes");
    for (t, bytes, n) in sizes {
        println!("{t:<5} {n:>10} {bytes:>10}");
    }
    println!(
        "total {:>10} {total:>10}  ({:.1} KB; target < 100 KB)",
        sizes.iter().map(|s| s.2).sum::<usize>(),
        total as f64 / 1000.0
    );
}
