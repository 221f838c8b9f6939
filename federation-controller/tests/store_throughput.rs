//! Rough write/list/watch numbers of each backend, printed (run with `--nocapture`) for
//! docs/store.md. The assertions are only sanity floors: these machines are shared and noisy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "store_support/etcd.rs"]
mod etcd_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_controller::store::memory::{MemoryOptions, MemoryStore};
use causeway_controller::store::{Expect, ResourceType, Selector, Store};
use futures::StreamExt;
use serde_json::{Value, json};

const SEQUENTIAL: usize = 300;
const TASKS: usize = 20;
const PER_TASK: usize = 30;

fn ap(name: &str, i: usize) -> Value {
    json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
           "metadata": {"name": name, "namespace": "bench", "labels": {"app": name}},
           "spec": {"hosts": [format!("{name}.example.com")], "i": i,
                    "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}})
}

fn rate(n: usize, d: Duration) -> String {
    format!("{n} in {d:.2?} = {:.0}/s", n as f64 / d.as_secs_f64())
}

async fn measure(store: Arc<dyn Store>, label: &str) {
    let ty = ResourceType::new("causeway.io", "AccessPoint");
    let from = store.revision().await.unwrap();
    let mut watch = store.watch(&ty, None, from).await.unwrap();

    let t = Instant::now();
    for i in 0..SEQUENTIAL {
        store
            .put(ap(&format!("seq-{i}"), i), Expect::Any)
            .await
            .unwrap();
    }
    let sequential = t.elapsed();

    let t = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..PER_TASK {
                store
                    .put(ap(&format!("par-{k}-{i}"), i), Expect::Any)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let concurrent = t.elapsed();

    let total = SEQUENTIAL + TASKS * PER_TASK;
    let t = Instant::now();
    let mut seen = 0;
    while seen < total {
        tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen += 1;
    }
    let drain = t.elapsed();

    let t = Instant::now();
    let list = store
        .list(&ty, None, &Selector::everything())
        .await
        .unwrap();
    let listed = t.elapsed();
    assert_eq!(list.items.len(), total);

    // One write to its watch event.
    let t = Instant::now();
    store.put(ap("latency", 0), Expect::Any).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let latency = t.elapsed();

    println!(
        "{label}: sequential puts {}; {TASKS} concurrent writers {}; watch backlog {}; list of \
         {total} in {listed:.2?}; put-to-event {latency:.2?}",
        rate(SEQUENTIAL, sequential),
        rate(TASKS * PER_TASK, concurrent),
        rate(total, drain),
    );
    assert!(
        sequential < Duration::from_secs(60),
        "{label} is far too slow"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory() {
    measure(Arc::new(MemoryStore::new()), "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_persistent() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(MemoryOptions::persistent(dir.path())).unwrap();
    measure(Arc::new(store), "memory + data dir (group commit)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd() {
    let etcd = etcd_support::Etcd::start().await;
    measure(Arc::new(etcd.store().await), "etcd").await;
}

/// A federation-sized store (10,000 AccessPoints): how long writing it with 50 concurrent
/// writers and recovering it at start take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_persistent_10k_objects_recover() {
    const OBJECTS: usize = 10_000;
    const WRITERS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(MemoryOptions::persistent(dir.path())).unwrap();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..OBJECTS).step_by(WRITERS) {
                store
                    .put(ap(&format!("ap-{i}"), i), Expect::Any)
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let written = t.elapsed();
    drop(store);
    let bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();

    let t = Instant::now();
    let store = MemoryStore::open(MemoryOptions::persistent(dir.path())).unwrap();
    let recovered = t.elapsed();
    let ty = ResourceType::new("causeway.io", "AccessPoint");
    let list = store
        .list(&ty, None, &Selector::everything())
        .await
        .unwrap();
    assert_eq!(list.items.len(), OBJECTS);
    println!(
        "memory + data dir: {OBJECTS} AccessPoints by {WRITERS} writers {}; {:.1} MB on disk; \
         recovery at start {recovered:.2?}",
        rate(OBJECTS, written),
        bytes as f64 / 1e6
    );
    assert!(recovered < Duration::from_secs(30));
}
