//! The translator at eBay's scale: a synthetic federation (clusters in regions and zones,
//! AccessPoints with routes and backends, NameServices over them), translated in full, then
//! again after one AccessPoint changed. Prints one table row per measurement; run through
//! `bench/controller.sh`.
//!
//! `cargo run --release -p causeway-controller --example translate_bench -- CLUSTERS OBJECTS`
//!
//! `CAUSEWAY_BENCH_ROUNDS=N` makes N changes instead of ten (to profile the incremental path).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

// The allocator of the `causeway` binary, so the numbers are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_controller::reconcile::{self, Desired, StatusWriter};
use causeway_controller::status::{ClusterProxies, ProxyReport};
use causeway_controller::store::ObjectKey;
use causeway_controller::translate::Snapshot;
use causeway_controller::translate::incremental::Translator;
use k8s_openapi::jiff::Timestamp;

#[path = "support/synthetic.rs"]
mod synthetic;
use synthetic::{access_point, cluster, name_service, workload};

/// Namespaces the services are spread over.
const NAMESPACES: usize = 50;

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

/// Stores status writes into the snapshot as the store would: the status, a new
/// resourceVersion.
struct Store {
    /// Positions by (kind, namespace, name); the benchmark adds and deletes nothing.
    positions: std::collections::HashMap<(String, String, String), usize>,
    version: u64,
}

impl Store {
    fn new(s: &Snapshot) -> Self {
        let mut positions = std::collections::HashMap::new();
        let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        for (i, c) in s.clusters.iter().enumerate() {
            let (ns, n) = key(&c.metadata);
            positions.insert(("Cluster".to_owned(), ns, n), i);
        }
        for (i, a) in s.access_points.iter().enumerate() {
            let (ns, n) = key(&a.metadata);
            positions.insert(("AccessPoint".to_owned(), ns, n), i);
        }
        for (i, x) in s.name_services.iter().enumerate() {
            let (ns, n) = key(&x.metadata);
            positions.insert(("NameService".to_owned(), ns, n), i);
        }
        Store {
            positions,
            version: 1_000,
        }
    }

    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    fn apply(&mut self, s: &mut Snapshot, writes: Vec<(ObjectKey, serde_json::Value)>) {
        for (key, status) in writes {
            let kind = key.resource.kind.clone();
            let pos = self.positions[&(kind.clone(), key.namespace.unwrap_or_default(), key.name)];
            let version = Some(self.next_version());
            match kind.as_str() {
                "Cluster" => {
                    let o = Arc::make_mut(&mut s.clusters[pos]);
                    o.status = serde_json::from_value(status).unwrap();
                    o.metadata.resource_version = version;
                }
                "AccessPoint" => {
                    let o = Arc::make_mut(&mut s.access_points[pos]);
                    o.status = serde_json::from_value(status).unwrap();
                    o.metadata.resource_version = version;
                }
                "NameService" => {
                    let o = Arc::make_mut(&mut s.name_services[pos]);
                    o.status = serde_json::from_value(status).unwrap();
                    o.metadata.resource_version = version;
                }
                other => panic!("status write for {other}"),
            }
        }
    }
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
            .map(|i| Arc::new(access_point(i, clusters, NAMESPACES, 1)))
            .collect(),
        name_services: (0..objects - aps)
            .map(|i| name_service(i, NAMESPACES, false))
            .map(Arc::new)
            .collect(),
        workload_entries: (0..aps)
            .flat_map(|i| workload(i, clusters, NAMESPACES))
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
    let mut writer = StatusWriter::default();
    let statuses = writer.writes(
        &snapshot,
        &full.verdicts,
        &full.vips,
        &proxies,
        Timestamp::now(),
    );
    let status_time = t.elapsed();
    let full_rss = peak_rss_mib();
    let first_writes = statuses.len();
    // The writes come back from the store (new resourceVersions), and the controller's next
    // pass finds nothing to write: the steady state every change starts from.
    let mut store = Store::new(&snapshot);
    store.apply(&mut snapshot, statuses);
    let echo = writer.writes(
        &snapshot,
        &full.verdicts,
        &full.vips,
        &proxies,
        Timestamp::now(),
    );
    store.apply(&mut snapshot, echo);

    // One AccessPoint changes (its default route's timeout), ten times over different ones;
    // the median is reported.
    let mut inc_times = Vec::new();
    let mut inc_status_times = Vec::new();
    let mut inc_cpu = Vec::new();
    let mut inc = full;
    // CAUSEWAY_BENCH_ROUNDS: more changes, for profiling the incremental path.
    let rounds: usize = std::env::var("CAUSEWAY_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    for round in 0..rounds {
        let i = (aps / 2 + round * 97) % aps;
        // A spec change keeps the stored status, as the store does.
        let mut changed = access_point(i, clusters, NAMESPACES, 2 + round as u32);
        changed.status = snapshot.access_points[i].status.clone();
        changed.metadata.resource_version = Some(store.next_version());
        snapshot.access_points[i] = Arc::new(changed);
        let snap = Arc::new(snapshot.clone());
        let (t, c) = (Instant::now(), cpu());
        inc = reconcile::translate_with(&mut translator, 2 + round as u64, snap, vips.clone());
        inc_times.push(t.elapsed());
        inc_cpu.push(cpu() - c);
        let t = Instant::now();
        let writes = writer.writes(
            &snapshot,
            &inc.verdicts,
            &inc.vips,
            &proxies,
            Timestamp::now(),
        );
        inc_status_times.push(t.elapsed());
        store.apply(&mut snapshot, writes);
        let echo = writer.writes(
            &snapshot,
            &inc.verdicts,
            &inc.vips,
            &proxies,
            Timestamp::now(),
        );
        store.apply(&mut snapshot, echo);
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
    eprintln!("({first_writes} status writes on the first pass)");
}
