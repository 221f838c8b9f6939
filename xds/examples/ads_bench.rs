//! ADS push benchmark (`bench/xds.sh`): N simulated proxies (in-process tonic clients on a few
//! HTTP/2 connections) subscribe to one group holding a gateway-like configuration of A
//! AccessPoints (one listener, one route configuration with A virtual hosts, A clusters, A load
//! assignments). One AccessPoint changes (its route and its endpoints); we measure, per client,
//! the time from `set_snapshot` until it has ACKed every changed type, and the bytes it received
//! for the change — state of the world against delta.
//!
//! `cargo run --release -p causeway-xds --example ads_bench -- [CLIENTS] [ACCESSPOINTS]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_xds::envoy_types::pb::envoy::config::cluster::v3 as cds;
use causeway_xds::envoy_types::pb::envoy::config::core::v3 as core;
use causeway_xds::envoy_types::pb::envoy::config::endpoint::v3 as eds;
use causeway_xds::envoy_types::pb::envoy::config::listener::v3 as lds;
use causeway_xds::envoy_types::pb::envoy::config::route::v3 as rds;
use causeway_xds::envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use causeway_xds::envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest,
};
use causeway_xds::{
    AdsServer, NodeInfo, ServerOptions, Snapshot, SnapshotCache, pack, type_url,
};
use prost::Message;
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;

const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

fn snapshot(aps: usize, changed: Option<usize>) -> Snapshot {
    let mut res = Vec::new();
    let mut vhosts = Vec::new();
    for i in 0..aps {
        let bump = changed == Some(i);
        let name = format!("outbound|3000||shop{i}.retail");
        res.push(pack(&cds::Cluster {
            name: name.clone(),
            connect_timeout: Some(causeway_xds::envoy_types::pb::google::protobuf::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        }));
        let ep = |host: String| eds::LbEndpoint {
            host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
                address: Some(core::Address {
                    address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                        address: host,
                        port_specifier: Some(core::socket_address::PortSpecifier::PortValue(3000)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        res.push(pack(&eds::ClusterLoadAssignment {
            cluster_name: name.clone(),
            endpoints: vec![eds::LocalityLbEndpoints {
                lb_endpoints: vec![
                    ep(format!("10.{}.{}.21", i / 250, i % 250)),
                    ep(format!(
                        "10.{}.{}.{}",
                        i / 250,
                        i % 250,
                        if bump { 99 } else { 22 }
                    )),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }));
        vhosts.push(rds::VirtualHost {
            name: format!("retail/shop{i}"),
            domains: vec![format!("shop{i}.example.com"), format!("shop{i}.global")],
            routes: vec![rds::Route {
                name: format!("retail/shop{i}/0"),
                r#match: Some(rds::RouteMatch {
                    path_specifier: Some(rds::route_match::PathSpecifier::Prefix(
                        if bump { "/v2" } else { "/" }.to_owned(),
                    )),
                    ..Default::default()
                }),
                action: Some(rds::route::Action::Route(rds::RouteAction {
                    cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(name)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    res.push(pack(&rds::RouteConfiguration {
        name: "http".to_owned(),
        virtual_hosts: vhosts,
        ..Default::default()
    }));
    res.push(pack(&lds::Listener {
        name: "http".to_owned(),
        address: Some(core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: "0.0.0.0".to_owned(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(8080)),
                ..Default::default()
            })),
        }),
        ..Default::default()
    }));
    Snapshot::from_resources(res).unwrap()
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
    tokio::spawn(async move {
        let _ = causeway_xds::serve_listener(
            listener,
            server,
            &ServerOptions::default(),
            std::future::pending::<()>(),
        )
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
            tokio::spawn(delta_client(c, i, s, versions.clone()));
        } else {
            tokio::spawn(sotw_client(c, i, s));
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
    println!("{clients} ADS clients, one group of {aps} AccessPoints; one AccessPoint changes");
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>16} {:>16}",
        "mode", "p50", "p99", "all", "bytes/client", "config bytes"
    );
    let mut sotw_bytes = 0.0;
    for delta in [false, true] {
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
