//! The translator at eBay's scale: a synthetic federation (clusters in regions and zones,
//! AccessPoints with routes and backends, NameServices over them), translated in full, then
//! again after one AccessPoint changed. Prints one table row per measurement; run through
//! `bench/controller.sh`.
//!
//! `cargo run --release -p causeway-controller --example translate_bench -- CLUSTERS OBJECTS`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

// The allocator of the `causeway` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_controller::reconcile::{self, Desired};
use causeway_controller::status::{ClusterProxies, ProxyReport};
use causeway_controller::translate::Snapshot;
use causeway_controller::translate::incremental::Translator;
use causeway_crds::istio::WorkloadEntry;
use causeway_crds::v1alpha1::{AccessPoint, Cluster, NameService};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

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
        "metadata": {"name": format!("svc{i}"), "namespace": format!("team{}", i % 50),
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
        "metadata": {"name": format!("svc{i}-global"), "namespace": format!("team{}", i % 50), "generation": 1},
        "spec": {"fqdn": format!("svc{i}.global"), "ports": [{"number": 80, "protocol": "HTTP"}],
                 "targets": [{"accessPoint": format!("svc{i}")}]}
    }))
    .unwrap()
}

fn workload(i: usize, clusters: usize) -> Vec<WorkloadEntry> {
    (0..3)
        .map(|k| {
            serde_json::from_value(json!({
                "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                "metadata": {"name": format!("svc{i}-{k}"), "namespace": format!("team{}", i % 50), "generation": 1},
                "spec": {"address": format!("10.200.{}.{}", i / 250 % 250, i % 250),
                         "labels": {"app": format!("svc{i}"), "version": if k == 0 { "v2" } else { "v1" },
                                    "topology.istio.io/cluster": format!("c{}", (i * 7 + k * 13) % clusters)}}
            }))
            .unwrap()
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time of this thread: what the work cost, without the time spent waiting for a core on
/// a busy machine.
fn cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("CLUSTERS OBJECTS as numbers"))
        .collect();
    let (clusters, objects) = (
        args.first().copied().unwrap_or(100),
        args.get(1).copied().unwrap_or(10_000),
    );
    // Half AccessPoints, half NameServices: OBJECTS in all.
    let aps = objects / 2;
    let mut snapshot = Snapshot {
        clusters: (0..clusters).map(cluster).map(Arc::new).collect(),
        access_points: (0..aps)
            .map(|i| Arc::new(access_point(i, clusters, 1)))
            .collect(),
        name_services: (0..objects - aps).map(name_service).map(Arc::new).collect(),
        workload_entries: (0..aps)
            .flat_map(|i| workload(i, clusters))
            .map(Arc::new)
            .collect(),
        ..Default::default()
    };
    let proxies: ProxyReport = (0..clusters)
        .map(|i| {
            (
                format!("c{i}"),
                ClusterProxies {
                    gateways: 2,
                    gateways_acked: 2,
                    ..Default::default()
                },
            )
        })
        .collect();
    let vips = BTreeMap::new();
    let built_rss = peak_rss_mib();

    let t = Instant::now();
    let mut translator = Translator::new();
    let full: Desired =
        reconcile::translate_with(&mut translator, 1, Arc::new(snapshot.clone()), vips.clone());
    let full_time = t.elapsed();
    let t = Instant::now();
    let statuses = reconcile::status_writes(&full, &proxies, Timestamp::now());
    let status_time = t.elapsed();
    let full_rss = peak_rss_mib();

    // One AccessPoint changes (its default route's timeout), ten times over different ones;
    // the median is reported.
    let mut inc_times = Vec::new();
    let mut inc_status_times = Vec::new();
    let mut inc_cpu = Vec::new();
    let mut inc = full;
    for round in 0..10 {
        let i = (aps / 2 + round * 97) % aps;
        snapshot.access_points[i] = Arc::new(access_point(i, clusters, 2 + round as u32));
        let snap = Arc::new(snapshot.clone());
        let (t, c) = (Instant::now(), cpu());
        inc = reconcile::translate_with(&mut translator, 2 + round as u64, snap, vips.clone());
        inc_times.push(t.elapsed());
        inc_cpu.push(cpu() - c);
        let t = Instant::now();
        let _ = reconcile::status_writes(&inc, &proxies, Timestamp::now());
        inc_status_times.push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let inc_time = median(&mut inc_times);
    let inc_cpu = median(&mut inc_cpu);
    let inc_status_time = median(&mut inc_status_times);
    let full = inc;

    println!(
        "| {clusters} | {aps} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} |",
        objects - aps,
        full.istio_objects().count(),
        ms(full_time),
        ms(status_time),
        ms(inc_time),
        ms(inc_cpu),
        ms(inc_status_time),
        built_rss,
        full_rss,
    );
    eprintln!("({} status writes on the first pass)", statuses.len());
}
