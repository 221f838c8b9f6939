//! The ADS server against a real Envoy 1.40: initial config, pushes, NACKs, delta.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "envoy/support.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use causeway_xds::{
    ApiType, BootstrapOptions, Snapshot, SnapshotCache, SyncState, bootstrap, type_url,
};
use support::{
    Backend, Envoy, Xds, eds_cluster, endpoints, eventually, free_port, http_get, listener,
    route_config,
};

const GROUP: &str = "sidecar/c1/retail";
const WAIT: Duration = Duration::from_secs(30);

struct Fixture {
    xds: Xds,
    envoy: Envoy,
    listen: SocketAddr,
    v1: Backend,
    v2: Backend,
}

fn snapshot(
    listen: SocketAddr,
    route: causeway_xds::Any,
    clusters: &[(&str, SocketAddr)],
) -> Snapshot {
    let mut resources = vec![listener("http", listen, "routes"), route];
    for (name, addr) in clusters {
        resources.push(eds_cluster(name));
        resources.push(endpoints(name, &[*addr]));
    }
    Snapshot::from_resources(resources).unwrap()
}

async fn start(api_type: ApiType, node_id: &str) -> Fixture {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let v1 = Backend::start("v1").await;
    let v2 = Backend::start("v2").await;
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cache = SnapshotCache::new();
    cache.set_snapshot(
        GROUP,
        snapshot(
            listen,
            route_config("routes", "shop", None),
            &[("shop", v1.addr)],
        ),
    );
    let xds = Xds::start(cache).await;
    let mut opts = BootstrapOptions::new(node_id, "c1", "sidecar");
    opts.namespace = "retail".into();
    opts.region = "us-west".into();
    opts.zone = "us-west-a".into();
    opts.admin = "127.0.0.1:0".parse().unwrap();
    opts.xds_host = "127.0.0.1".into();
    opts.xds_port = xds.addr.port();
    opts.api_type = api_type;
    let envoy = Envoy::start(&bootstrap(&opts)).await;
    let f = Fixture {
        xds,
        envoy,
        listen,
        v1,
        v2,
    };
    f.expect_body("v1").await;
    f.expect_synced().await;
    f
}

impl Fixture {
    /// Polls through Envoy until the body is `want`; the time it took. Prints what was served
    /// in between, which says whether a change ever produced errors (it must not).
    async fn expect_body(&self, want: &str) -> Duration {
        self.expect_body_seen(want).await.0
    }

    /// As [`Fixture::expect_body`], also returning the distinct other answers seen meanwhile.
    async fn expect_body_seen(&self, want: &str) -> (Duration, Vec<String>) {
        let start = Instant::now();
        let listen = self.listen;
        let seen = std::sync::Mutex::new(Vec::<String>::new());
        eventually(&format!("body {want:?} through Envoy"), WAIT, || async {
            match http_get(listen, "shop.example.com", "/").await {
                Ok((200, body)) if body == want => Ok(()),
                other => {
                    let other = format!("{other:?}");
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&other) {
                        seen.push(other.clone());
                    }
                    Err(other)
                }
            }
        })
        .await;
        let elapsed = start.elapsed();
        let seen = seen.into_inner().unwrap();
        println!("{want:?} after {elapsed:?}; served before: {seen:?}");
        (elapsed, seen)
    }

    async fn expect_synced(&self) {
        let status = self.xds.server.status().clone();
        eventually("every type SYNCED", WAIT, || {
            let proxies = status.proxies();
            async move {
                match proxies.as_slice() {
                    [p] if p.synced() && p.types.len() == 4 => Ok(()),
                    _ => Err(format!("{proxies:#?}")),
                }
            }
        })
        .await;
    }

    fn set(&self, snapshot: Snapshot) {
        self.xds.server.cache().set_snapshot(GROUP, snapshot);
    }
}

async fn serves_and_follows_pushes(api_type: ApiType, label: &str) {
    let f = start(api_type, &format!("sidecar-{label}")).await;
    let p = &f.xds.server.status().proxies()[0];
    assert_eq!(p.node.cluster, "c1");
    assert_eq!(p.node.role, "sidecar");
    assert_eq!(p.node.locality.zone, "us-west-a");
    assert_eq!(p.group, GROUP);

    // An endpoint change (EDS only).
    f.set(snapshot(
        f.listen,
        route_config("routes", "shop", None),
        &[("shop", f.v2.addr)],
    ));
    let (eds, seen) = f.expect_body_seen("v2").await;
    assert!(seen.iter().all(|s| s.starts_with("Ok((200")), "{seen:?}");
    // A route change to a new cluster (CDS + EDS + RDS; the cluster must warm before the route
    // that uses it is applied, or requests would fail in between).
    f.set(snapshot(
        f.listen,
        route_config("routes", "shop-v1", None),
        &[("shop", f.v2.addr), ("shop-v1", f.v1.addr)],
    ));
    let (rds, seen) = f.expect_body_seen("v1").await;
    // Make before break: no request fails while the new cluster warms.
    assert!(seen.iter().all(|s| s.starts_with("Ok((200")), "{seen:?}");
    println!("{label}: push latency endpoint change {eds:?}, route+cluster change {rds:?}");
    f.expect_synced().await;
    let p = &f.xds.server.status().proxies()[0];
    let snap = f.xds.server.cache().snapshot(GROUP).unwrap();
    for t in [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::ROUTE,
    ] {
        assert_eq!(
            p.types[t].acked_version.as_deref(),
            Some(snap.version(t).as_str())
        );
    }
    assert_eq!(f.envoy.stat("control_plane.connected_state").await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_envoy_serves_snapshot_and_follows_pushes() {
    serves_and_follows_pushes(ApiType::StateOfTheWorld, "sotw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_envoy_serves_snapshot_and_follows_pushes() {
    serves_and_follows_pushes(ApiType::Delta, "delta").await;
}

async fn nack_keeps_old_config(api_type: ApiType, label: &str) {
    let f = start(api_type, &format!("nacker-{label}")).await;
    let mut nacks = f.xds.server.status().nacks();
    let good = f.xds.server.cache().snapshot(GROUP).unwrap();
    // RE2 rejects an unbalanced bracket, so Envoy rejects the whole route configuration.
    f.set(snapshot(
        f.listen,
        route_config("routes", "shop", Some("([")),
        &[("shop", f.v1.addr)],
    ));
    let event = tokio::time::timeout(WAIT, nacks.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.type_url, type_url::ROUTE);
    assert_eq!(event.node_id, format!("nacker-{label}"));
    assert_eq!(event.cluster, "c1");
    assert!(!event.message.is_empty());
    println!("{label}: Envoy's NACK: {}", event.message);
    let status = f.xds.server.status().clone();
    let rds = eventually("RDS NACKED in status", WAIT, || {
        let proxies = status.proxies();
        async move {
            let t = proxies
                .first()
                .and_then(|p| p.types.get(type_url::ROUTE))
                .cloned();
            match t {
                Some(t) if t.state == SyncState::Nacked => Ok(t),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(rds.error.as_deref(), Some(event.message.as_str()));
    let bad = f.xds.server.cache().snapshot(GROUP).unwrap();
    assert_eq!(rds.nacked_version, Some(bad.version(type_url::ROUTE)));
    if api_type == ApiType::StateOfTheWorld {
        // Envoy reports the version it still runs.
        assert_eq!(rds.acked_version, Some(good.version(type_url::ROUTE)));
    }
    assert!(f.xds.server.status().nacks_total() >= 1);
    assert_eq!(
        f.xds
            .server
            .metrics()
            .nacks
            .get_or_create(&causeway_xds::metrics::TypeLabels {
                r#type: "RDS".into()
            })
            .get(),
        1
    );
    // The old route keeps serving.
    for _ in 0..5 {
        assert_eq!(
            http_get(f.listen, "shop.example.com", "/").await,
            Ok((200, "v1".to_string()))
        );
    }
    assert!(
        f.envoy
            .stat("http.http.rds.routes.update_rejected")
            .await
            .unwrap_or(1)
            >= 1
    );
    // A fixed config is accepted again.
    f.set(snapshot(
        f.listen,
        route_config("routes", "shop", None),
        &[("shop", f.v2.addr)],
    ));
    f.expect_body("v2").await;
    f.expect_synced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_envoy_nack_is_reported_and_old_config_kept() {
    nack_keeps_old_config(ApiType::StateOfTheWorld, "sotw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_envoy_nack_is_reported_and_old_config_kept() {
    nack_keeps_old_config(ApiType::Delta, "delta").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_keeps_serving_without_controller_and_resyncs() {
    let f = start(ApiType::StateOfTheWorld, "restart").await;
    let addr = f.xds.addr;
    let server = f.xds.server.clone();
    let Fixture {
        xds,
        envoy,
        listen,
        v1,
        v2,
    } = f;
    xds.stop().await;
    // Static stability: the controller is gone, traffic still flows.
    eventually("Envoy to notice the controller is gone", WAIT, || {
        let envoy = &envoy;
        async move {
            match envoy.stat("control_plane.connected_state").await {
                Ok(0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert_eq!(
        http_get(listen, "shop.example.com", "/").await,
        Ok((200, "v1".to_string()))
    );
    // A new controller on the same address with a new snapshot: Envoy reconnects and takes it.
    server.cache().set_snapshot(
        GROUP,
        snapshot(
            listen,
            route_config("routes", "shop", None),
            &[("shop", v2.addr)],
        ),
    );
    let xds = Xds::start_on(server, addr).await;
    let f = Fixture {
        xds,
        envoy,
        listen,
        v1,
        v2,
    };
    f.expect_body("v2").await;
    f.expect_synced().await;
}
