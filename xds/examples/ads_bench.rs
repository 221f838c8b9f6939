//! ADS push benchmark (`bench/xds.sh`): N simulated proxies (in-process tonic clients on a few
//! HTTP/2 connections) subscribe to one group holding a gateway-like configuration of A
//! AccessPoints, rendered by the product's translation (`to_envoy`): one listener routed by
//! scopes (two routing scopes and one route configuration per AccessPoint), A clusters, A load
//! assignments. One AccessPoint changes (its route and its endpoints); we measure, per client,
//! the time from `set_snapshot` until it has ACKed every changed type, and the bytes it received
//! for the change — state of the world against delta.
//!
//! `cargo run --release -p causeway-xds --example ads_bench -- [CLIENTS] [ACCESSPOINTS] [sotw|delta]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_proxy_config::envoy::{EnvoyOptions, to_envoy};
use causeway_proxy_config::{Cluster, Endpoint, Listener, Protocol, ProxyConfig, Route, RouteAction, RouteMatch, PathMatch, VirtualHost};
use causeway_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use causeway_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use causeway_xds::{AdsServer, NodeInfo, ServerOptions, Snapshot, SnapshotCache, type_url};
use prost::Message;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Every type a gateway reads except SDS (this configuration has no secrets).
const TYPES: [&str; 5] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::SCOPED_ROUTE,
    type_url::ROUTE,
];

/// A gateway document as the controller renders one: one HTTP listener, per AccessPoint a
/// virtual host (two exact domains, one route) and a cluster of two local endpoints; AccessPoint
/// `changed` has another route and another endpoint. Translated by the product's `to_envoy`.
fn snapshot(aps: usize, changed: Option<usize>) -> Snapshot {
    let mut doc = ProxyConfig::default();
    for i in 0..aps {
        let bump = changed == Some(i);
        let cluster = format!("outbound|3000||shop{i}.retail");
        doc.clusters.push(Cluster {
            name: cluster.clone(),
            connect_timeout: Some("1s".to_owned()),
            endpoints: vec![
                Endpoint::new(format!("10.{}.{}.21:3000", i / 250, i % 250)),
                Endpoint::new(format!(
                    "10.{}.{}.{}:3000",
                    i / 250,
                    i % 250,
                    if bump { 99 } else { 22 }
                )),
            ],
            ..Default::default()
        });
        doc.virtual_hosts.push(VirtualHost {
            name: format!("retail/shop{i}"),
            domains: vec![format!("shop{i}.example.com"), format!("shop{i}.global")],
            routes: vec![Route {
                name: Some(format!("retail/shop{i}/0")),
                matcher: Some(RouteMatch {
                    path: Some(PathMatch {
                        prefix: Some(if bump { "/v2" } else { "/" }.to_owned()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                route: Some(RouteAction {
                    cluster: Some(cluster),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        });
    }
    doc.listeners.push(Listener {
        name: "http".to_owned(),
        address: "0.0.0.0:8080".to_owned(),
        protocol: Protocol::Http,
        ..Default::default()
    });
    let res = to_envoy(&doc, &EnvoyOptions::default()).unwrap();
    Snapshot::from_resources(res.to_any().into_values().flat_map(|m| m.into_values())).unwrap()
}

/// What one client saw of the change.
#[derive(Default, Clone, Copy)]
struct Seen {
    /// When it had ACKed every changed type (None: not yet).
    done: Option<Instant>,
    /// Bytes of responses received since the change.
    bytes: usize,
}

/// The changed types and their new versions, by type URL.
type Wanted = Vec<(String, String)>;

struct Shared {
    /// Per client.
    seen: Vec<Mutex<Seen>>,
    /// Set when the change is pushed.
    change: std::sync::Mutex<Option<(Instant, Wanted)>>,
}

impl Shared {
    /// Records a response of `type_url` at version `version` (`bytes` long); returns nothing.
    async fn record(
        &self,
        client: usize,
        type_url: &str,
        version: &str,
        bytes: usize,
        acked: &mut Vec<String>,
    ) {
        let change = self.change.lock().unwrap().clone();
        let Some((_, wanted)) = change else { return };
        let mut s = self.seen[client].lock().await;
        s.bytes += bytes;
        if wanted.iter().any(|(t, v)| t == type_url && v == version)
            && !acked.iter().any(|t| t == type_url)
        {
            acked.push(type_url.to_owned());
        }
        if s.done.is_none() && wanted.iter().all(|(t, _)| acked.contains(t)) {
            s.done = Some(Instant::now());
        }
    }
}

fn node(i: usize) -> causeway_xds::Node {
    NodeInfo {
        id: format!("sim-{i}"),
        cluster: "c1".to_owned(),
        role: "gateway".to_owned(),
        ..Default::default()
    }
    .to_node()
}

async fn sotw_client(
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    i: usize,
    shared: Arc<Shared>,
) {
    let (tx, rx) = mpsc::channel(16);
    for (k, t) in TYPES.iter().enumerate() {
        tx.send(DiscoveryRequest {
            node: (k == 0).then(|| node(i)),
            type_url: (*t).to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut acked = Vec::new();
    while let Ok(Some(r)) = stream.message().await {
        let bytes = r.encoded_len();
        let ack = DiscoveryRequest {
            type_url: r.type_url.clone(),
            version_info: r.version_info.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            return;
        }
        shared
            .record(i, &r.type_url, &r.version_info, bytes, &mut acked)
            .await;
    }
}

async fn delta_client(
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    i: usize,
    shared: Arc<Shared>,
    versions: Arc<std::sync::Mutex<Vec<(String, String)>>>,
) {
    let (tx, rx) = mpsc::channel(16);
    for (k, t) in TYPES.iter().enumerate() {
        tx.send(DeltaDiscoveryRequest {
            node: (k == 0).then(|| node(i)),
            type_url: (*t).to_owned(),
            resource_names_subscribe: vec!["*".to_owned()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut acked = Vec::new();
    while let Ok(Some(r)) = stream.message().await {
        let bytes = r.encoded_len();
        let ack = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            return;
        }
        // Delta responses carry no type version: a response after the change is the change.
        let version = versions
            .lock()
            .unwrap()
            .iter()
            .find(|(t, _)| *t == r.type_url)
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        shared
            .record(i, &r.type_url, &version, bytes, &mut acked)
            .await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run(
    delta: bool,
    clients: usize,
    aps: usize,
) -> (Duration, Duration, Duration, f64, usize) {
    let cache = SnapshotCache::new();
    let server = AdsServer::new(cache.clone()).with_group_fn(|_| "all".to_owned());
    let status = server.status().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Everything of this run ends with it, so that the next mode runs on a quiet runtime (the
    // 1,000 idle state-of-the-world streams made the delta run after it slower).
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_task = tokio::spawn(async move {
        let _ = causeway_xds::serve_listener(listener, server, &ServerOptions::default(), async {
            let _ = stopped.await;
        })
        .await;
    });
    let before = snapshot(aps, None);
    cache.set_snapshot("all", before.clone());
    let shared = Arc::new(Shared {
        seen: (0..clients).map(|_| Mutex::new(Seen::default())).collect(),
        change: std::sync::Mutex::new(None),
    });
    let versions = Arc::new(std::sync::Mutex::new(Vec::new()));
    // 100 streams per HTTP/2 connection, as proxies behind a few hosts would be spread.
    let per_conn = 100;
    let mut channels = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..clients.div_ceil(per_conn) {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    for i in 0..clients {
        let c = AggregatedDiscoveryServiceClient::new(channels[i / per_conn].clone())
            .max_decoding_message_size(64 << 20);
        let s = shared.clone();
        if delta {
            tasks.push(tokio::spawn(delta_client(c, i, s, versions.clone())));
        } else {
            tasks.push(tokio::spawn(sotw_client(c, i, s)));
        }
    }
    // Everyone subscribed and synced on the initial snapshot.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = status.proxies();
        if p.len() == clients && p.iter().all(|p| p.types.len() == TYPES.len() && p.synced()) {
            break;
        }
        assert!(Instant::now() < deadline, "clients did not sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Change one AccessPoint.
    let after = snapshot(aps, Some(aps / 2));
    let wanted: Vec<(String, String)> = TYPES
        .iter()
        .filter(|t| before.version(t) != after.version(t))
        .map(|t| ((*t).to_owned(), after.version(t)))
        .collect();
    *versions.lock().unwrap() = wanted.clone();
    let t0 = Instant::now();
    *shared.change.lock().unwrap() = Some((t0, wanted));
    cache.set_snapshot("all", after);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for s in &shared.seen {
            done += usize::from(s.lock().await.done.is_some());
        }
        if done == clients {
            break;
        }
        assert!(Instant::now() < deadline, "only {done}/{clients} ACKed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut times = Vec::new();
    let mut bytes = 0;
    for s in &shared.seen {
        let s = s.lock().await;
        times.push(s.done.unwrap() - t0);
        bytes += s.bytes;
    }
    times.sort();
    let full: usize = TYPES
        .iter()
        .filter_map(|t| before.get(t))
        .flat_map(|r| r.iter().map(|(_, v)| v.resource.encoded_len()))
        .sum();
    for t in &tasks {
        t.abort();
    }
    drop(channels);
    let _ = stop.send(());
    let _ = server_task.await;
    (
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        *times.last().unwrap(),
        bytes as f64 / clients as f64,
        full,
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(1000);
    let aps = args.get(1).copied().unwrap_or(100);
    // `sotw` or `delta` runs one mode alone (for profiling).
    let only = std::env::args()
        .skip(1)
        .find(|a| a == "sotw" || a == "delta");
    println!("{clients} ADS clients, one group of {aps} AccessPoints; one AccessPoint changes");
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>16} {:>16}",
        "mode", "p50", "p99", "all", "bytes/client", "config bytes"
    );
    let mut sotw_bytes = 0.0;
    for delta in [false, true] {
        if only.as_deref().is_some_and(|m| (m == "delta") != delta) {
            continue;
        }
        let (p50, p99, max, bytes, full) = run(delta, clients, aps).await;
        println!(
            "{:<6} {:>10.1?} {:>10.1?} {:>10.1?} {:>16.0} {:>16}",
            if delta { "delta" } else { "sotw" },
            p50,
            p99,
            max,
            bytes,
            full
        );
        if delta {
            println!(
                "delta bytes per change = {:.2}% of SotW (target < 5%); all ACKed in {max:.1?} (target < 500 ms)",
                bytes * 100.0 / sotw_bytes
            );
        } else {
            sotw_bytes = bytes;
        }
    }
}
