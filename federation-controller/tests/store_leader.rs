//! Leader election on a real etcd: one leader among candidates; a killed leader is replaced
//! within its lease TTL + 2 s; a resigning one at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "store_support/etcd.rs"]
mod etcd_support;

use std::time::{Duration, Instant};

use causeway_controller::store::leader::{ElectionOptions, Leadership};

const TTL: Duration = Duration::from_secs(2);

fn options(identity: &str) -> ElectionOptions {
    ElectionOptions {
        ttl: TTL,
        ..ElectionOptions::new("controller", identity)
    }
}

async fn holder(etcd: &etcd_support::Etcd) -> Option<String> {
    let store = etcd.store().await;
    let resp = store
        .client()
        .clone()
        .get("/causeway/leader/controller", None)
        .await
        .unwrap();
    resp.kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_owned())
}

async fn within(limit: Duration, leadership: &mut Leadership) -> Duration {
    let started = Instant::now();
    tokio::time::timeout(limit, leadership.wait_for(true))
        .await
        .unwrap_or_else(|_| panic!("no leadership within {limit:?}"));
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_failover_within_ttl_and_quick_handover() {
    let etcd = etcd_support::Etcd::start().await;
    // Two controllers, each with its own etcd client.
    let a_store = etcd.store().await;
    let b_store = etcd.store().await;

    let mut a = Leadership::campaign(&a_store, options("a"));
    within(Duration::from_secs(10), &mut a).await;
    let mut b = Leadership::campaign(&b_store, options("b"));
    let mut b_changes = b.changes();
    assert_eq!(holder(&etcd).await.as_deref(), Some("a"));
    assert!(a.is_leader());
    assert!(!b.is_leader());

    // Kill a: no resignation, its lease has to expire.
    drop(a);
    let failover = within(TTL + Duration::from_secs(2), &mut b).await;
    assert_eq!(holder(&etcd).await.as_deref(), Some("b"));
    assert!(*b_changes.borrow_and_update());
    println!("failover after the leader was killed: {failover:?} (lease TTL {TTL:?})");

    // A resigning leader hands over at once.
    let mut c = Leadership::campaign(&a_store, options("c"));
    assert!(!c.is_leader());
    let started = Instant::now();
    b.resign().await;
    within(Duration::from_secs(2), &mut c).await;
    let handover = started.elapsed();
    assert_eq!(holder(&etcd).await.as_deref(), Some("c"));
    println!("handover after resign: {handover:?}");
    assert!(
        handover < TTL,
        "resign must not wait for the lease to expire"
    );
    c.resign().await;
    assert_eq!(holder(&etcd).await, None);
}

#[tokio::test]
async fn the_memory_store_controller_always_leads() {
    let mut l = Leadership::always();
    assert!(l.is_leader());
    l.wait_for(true).await;
    l.resign().await;
}

/// A deposed leader's fenced writes fail, even before it notices it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_a_deposed_leader_are_fenced_off() {
    use causeway_controller::store::{Expect, Store, StoreError};
    use serde_json::json;

    let etcd = etcd_support::Etcd::start().await;
    let a_store = etcd.store().await;
    let b_store = etcd.store().await;
    let ap = |n: u64| {
        json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
               "metadata": {"name": "shop", "namespace": "retail"}, "status": {}, "spec": {"n": n}})
    };

    let mut a = Leadership::campaign(&a_store, options("a"));
    within(Duration::from_secs(10), &mut a).await;
    let fence = a.fence().expect("a leader has a fence");
    let a_writes = a_store.fenced(fence);
    a_writes.put(ap(1), Expect::Any).await.unwrap();

    // a is killed; b takes over. a's store (as a stalled leader would) still tries to write.
    drop(a);
    let mut b = Leadership::campaign(&b_store, options("b"));
    within(TTL + Duration::from_secs(2), &mut b).await;
    let e = a_writes.put(ap(2), Expect::Any).await.unwrap_err();
    assert!(matches!(e, StoreError::NotLeader { .. }), "{e}");
    assert_eq!(e.http_status(), 503);
    let b_writes = b_store.fenced(b.fence().unwrap());
    let applied = b_writes.put(ap(3), Expect::Any).await.unwrap();
    assert_eq!(applied.object["spec"]["n"], 3);
    // Unfenced clients are not affected.
    a_store.put(ap(4), Expect::Any).await.unwrap();
    b.resign().await;
}
