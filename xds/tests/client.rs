//! Causeway's own ADS client against Causeway's ADS server: ACK, NACK with the handler's reason,
//! last good config kept, reconnect after a controller restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "envoy/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use causeway_xds::cache::Locality;
use causeway_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use causeway_xds::{
    AdsClient, AdsServer, Any, ClientOptions, ClientStatus, NodeInfo, Snapshot, SnapshotCache,
    SyncState, pack, resource_name, type_url,
};
use support::{Xds, eventually};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);
const GROUP: &str = "gateway/c1/";

fn clusters(names: &[&str]) -> Snapshot {
    Snapshot::from_resources(names.iter().map(|n| {
        pack(&Cluster {
            name: (*n).into(),
            ..Default::default()
        })
    }))
    .unwrap()
}

/// What the "gateway" runs: type URL -> (version, resource names).
type Applied = Arc<Mutex<BTreeMap<String, (String, Vec<String>)>>>;

/// A handler that refuses clusters whose name starts with `bad`, as a gateway refuses config it
/// cannot compile, and otherwise swaps the new set in.
fn handler(applied: Applied) -> impl FnMut(&str, &str, &[Any]) -> Result<(), String> + Send {
    move |t: &str, version: &str, resources: &[Any]| {
        let names: Vec<String> = resources.iter().filter_map(resource_name).collect();
        if let Some(bad) = names.iter().find(|n| n.starts_with("bad")) {
            return Err(format!("cluster {bad:?}: refused by the test gateway"));
        }
        applied
            .lock()
            .unwrap()
            .insert(t.to_owned(), (version.to_owned(), names));
        Ok(())
    }
}

async fn wait_client(
    rx: &watch::Receiver<ClientStatus>,
    what: &str,
    f: impl Fn(&ClientStatus) -> bool,
) -> ClientStatus {
    eventually(what, WAIT, || {
        let s = rx.borrow().clone();
        let ok = f(&s);
        async move { if ok { Ok(s) } else { Err(format!("{s:#?}")) } }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_acks_nacks_keeps_last_good_and_reconnects() {
    let cache = SnapshotCache::new();
    cache.set_snapshot(GROUP, clusters(&["a", "b"]));
    let xds = Xds::start(cache.clone()).await;
    let addr = xds.addr;
    let node = NodeInfo {
        id: "gw-1".into(),
        cluster: "c1".into(),
        role: "gateway".into(),
        locality: Locality {
            region: "us-west".into(),
            zone: "us-west-a".into(),
            subzone: String::new(),
        },
        ..Default::default()
    }
    .to_node();
    let mut opts = ClientOptions::new(format!("http://{addr}"), node);
    opts.max_backoff = Duration::from_millis(500);
    let client = Arc::new(AdsClient::new(opts));
    let status = client.status();
    let applied: Applied = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let client = client.clone();
        let h = handler(applied.clone());
        tokio::spawn(async move {
            client
                .run(h, async {
                    let _ = stopped.await;
                })
                .await;
        })
    };

    // ACK: every subscribed type is applied and the server sees SYNCED.
    let v1 = cache.snapshot(GROUP).unwrap();
    wait_client(&status, "CDS accepted", |s| {
        s.accepted.get(type_url::CLUSTER) == Some(&v1.version(type_url::CLUSTER))
            && s.accepted.len() == type_url::PUSH_ORDER.len()
    })
    .await;
    let server = xds.server.clone();
    eventually("server sees the client SYNCED", WAIT, || {
        let p = server.status().proxies();
        async move {
            match p.as_slice() {
                [p] if p.synced() && p.types.len() == type_url::PUSH_ORDER.len() => Ok(()),
                _ => Err(format!("{p:#?}")),
            }
        }
    })
    .await;
    let p = &server.status().proxies()[0];
    assert_eq!(p.group, GROUP);
    assert_eq!(p.node.locality.zone, "us-west-a");
    assert_eq!(
        server.status().connected_per_cluster(),
        BTreeMap::from([("c1".to_string(), 1)])
    );
    assert_eq!(applied.lock().unwrap()[type_url::CLUSTER].1, ["a", "b"]);

    // NACK: the handler refuses; the client reports it, the server shows it, the last good stays.
    cache.set_snapshot(GROUP, clusters(&["a", "bad-1"]));
    let bad_version = cache.snapshot(GROUP).unwrap().version(type_url::CLUSTER);
    let s = wait_client(&status, "CDS rejected", |s| {
        s.rejected.contains_key(type_url::CLUSTER)
    })
    .await;
    assert_eq!(s.rejected[type_url::CLUSTER].version, bad_version);
    assert!(s.rejected[type_url::CLUSTER].message.contains("bad-1"));
    assert_eq!(s.accepted[type_url::CLUSTER], v1.version(type_url::CLUSTER));
    let cds = eventually("server sees the NACK", WAIT, || {
        let p = server.status().proxies();
        async move {
            let t = p.first().map(|p| p.types[type_url::CLUSTER].clone());
            match t {
                Some(t) if t.state == SyncState::Nacked => Ok(t),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(cds.error.unwrap().contains("refused by the test gateway"));
    assert_eq!(cds.acked_version, Some(v1.version(type_url::CLUSTER)));
    assert_eq!(cds.nacked_version, Some(bad_version));
    assert_eq!(applied.lock().unwrap()[type_url::CLUSTER].1, ["a", "b"]);

    // Controller goes away: the client notices, the applied config stays.
    xds.stop().await;
    wait_client(&status, "client disconnected", |s| !s.connected).await;
    assert_eq!(applied.lock().unwrap()[type_url::CLUSTER].1, ["a", "b"]);

    // A controller comes back on the same address with a fixed config: the client reconnects
    // with backoff and takes it.
    cache.set_snapshot(GROUP, clusters(&["a", "c"]));
    let v3 = cache.snapshot(GROUP).unwrap();
    let _xds = Xds::start_on(AdsServer::new(cache.clone()), addr).await;
    let s = wait_client(&status, "reconnected and took the new config", |s| {
        s.connected && s.accepted.get(type_url::CLUSTER) == Some(&v3.version(type_url::CLUSTER))
    })
    .await;
    assert!(s.connects >= 2, "{s:?}");
    assert!(s.rejected.is_empty(), "{s:?}");
    assert_eq!(applied.lock().unwrap()[type_url::CLUSTER].1, ["a", "c"]);

    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retries_while_no_controller_listens() {
    let port = support::free_port();
    let node = NodeInfo {
        id: "gw-2".into(),
        cluster: "c1".into(),
        role: "gateway".into(),
        ..Default::default()
    }
    .to_node();
    let mut opts = ClientOptions::new(format!("http://127.0.0.1:{port}"), node);
    opts.initial_backoff = Duration::from_millis(20);
    opts.max_backoff = Duration::from_millis(200);
    let client = Arc::new(AdsClient::new(opts));
    let status = client.status();
    let applied: Applied = Arc::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let client = client.clone();
        let h = handler(applied.clone());
        tokio::spawn(async move {
            client
                .run(h, async {
                    let _ = stopped.await;
                })
                .await;
        })
    };
    let s = wait_client(&status, "a connect error", |s| s.last_error.is_some()).await;
    assert!(
        s.last_error.as_deref().unwrap().contains("cannot connect"),
        "{s:?}"
    );
    // The controller starts late; the client gets there on its own.
    let cache = SnapshotCache::new();
    cache.set_snapshot(GROUP, clusters(&["a"]));
    let _xds = Xds::start_on(
        AdsServer::new(cache),
        format!("127.0.0.1:{port}").parse().unwrap(),
    )
    .await;
    wait_client(&status, "connected and applied", |s| {
        s.connected && s.accepted.contains_key(type_url::CLUSTER)
    })
    .await;
    let _ = stop.send(());
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
