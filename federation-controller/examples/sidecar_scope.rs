//! What one sidecar receives in a big federation (`bench/xds.sh`): 100 clusters, SERVICES
//! AccessPoints with a NameService each, spread over NAMESPACES namespaces, every NameService
//! exported to its own namespace only, so a sidecar of namespace team0 may see SERVICES /
//! NAMESPACES of them. The full translation runs, then the sidecar group's configuration is
//! rendered and translated to Envoy resources exactly as the push loop does; the table shows
//! what that sidecar receives (resources and protobuf bytes) — the scoping target is < 100 KB.
//!
//! `cargo run --release -p causeway-controller --example sidecar_scope -- [SERVICES] [NAMESPACES]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use causeway_controller::reconcile;
use causeway_controller::translate::Snapshot;
use causeway_proxy_config::envoy::{EnvoyOptions, to_envoy};

#[path = "support/synthetic.rs"]
mod synthetic;
use synthetic::{access_point, cluster, name_service, workload};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let services = args.first().copied().unwrap_or(10_000);
    let namespaces = args.get(1).copied().unwrap_or(1000);
    let clusters = 100;
    let snapshot = Snapshot {
        clusters: (0..clusters).map(|i| Arc::new(cluster(i))).collect(),
        access_points: (0..services)
            .map(|i| Arc::new(access_point(i, clusters, namespaces, 1)))
            .collect(),
        name_services: (0..services)
            .map(|i| Arc::new(name_service(i, namespaces, true)))
            .collect(),
        workload_entries: (0..services)
            .flat_map(|i| workload(i, clusters, namespaces))
            .map(Arc::new)
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
            "SRDS",
            res.scoped_routes
                .iter()
                .map(|r| causeway_xds::pack(r).value.len())
                .sum(),
            res.scoped_routes.len(),
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
        "federation: {clusters} clusters, {services} AccessPoints + {services} NameServices in {namespaces} namespaces (full translation {translated:.1?})"
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
