//! What only the memory store has: its data directory (torn log tails, the directory lock,
//! corruption reports, snapshots) and its bounded watch buffers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use causeway_controller::store::memory::{MemoryOptions, MemoryStore};
use causeway_controller::store::{
    Expect, ObjectKey, ResourceType, Selector, Store, StoreError, resource_version,
};
use futures::StreamExt;
use serde_json::{Value, json};

fn ap(name: &str, n: u64) -> Value {
    json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
           "metadata": {"name": name, "namespace": "retail"}, "spec": {"n": n}})
}

fn ap_type() -> ResourceType {
    ResourceType::new("causeway.io", "AccessPoint")
}

fn options(dir: &Path, snapshot_every: usize) -> MemoryOptions {
    MemoryOptions {
        snapshot_every,
        ..MemoryOptions::persistent(dir)
    }
}

async fn all(store: &MemoryStore) -> Vec<Value> {
    store
        .list(&ap_type(), None, &Selector::everything())
        .await
        .unwrap()
        .items
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[tokio::test]
async fn a_torn_last_record_is_dropped_and_the_store_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(options(dir.path(), 1000)).unwrap();
    for i in 0..3 {
        store
            .put(ap(&format!("a{i}"), i), Expect::Any)
            .await
            .unwrap();
    }
    let before = all(&store).await;
    drop(store);

    // A crash in the middle of an append leaves part of a line.
    let wal = dir.path().join("wal.jsonl");
    let good_len = std::fs::metadata(&wal).unwrap().len();
    append(
        &wal,
        br#"{"txns":[{"rev":4,"ops":[{"op":"put","key":"causeway.io/AccessPoint/ret"#,
    );

    let store = MemoryStore::open(options(dir.path(), 1000)).unwrap();
    assert_eq!(all(&store).await, before);
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        good_len,
        "truncated"
    );
    assert_eq!(store.revision().await.unwrap(), 3);
    let next = store.put(ap("a9", 9), Expect::Any).await.unwrap();
    assert_eq!(next.resource_version(), 4);
    drop(store);

    let store = MemoryStore::open(options(dir.path(), 1000)).unwrap();
    assert_eq!(all(&store).await.len(), 4);
}

#[tokio::test]
async fn a_damaged_record_before_the_end_stops_recovery_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(options(dir.path(), 1000)).unwrap();
    for i in 0..3 {
        store
            .put(ap(&format!("a{i}"), i), Expect::Any)
            .await
            .unwrap();
    }
    drop(store);
    let wal = dir.path().join("wal.jsonl");
    let text = std::fs::read_to_string(&wal).unwrap();
    let damaged = text.replacen("\"rev\":2", "\"rev\":2,,", 1);
    std::fs::write(&wal, damaged).unwrap();

    let e = MemoryStore::open(options(dir.path(), 1000)).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let message = e.to_string();
    assert!(message.contains("wal.jsonl line 2"), "{message}");
    assert!(message.contains("backup"), "{message}");
}

#[tokio::test]
async fn one_store_per_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = MemoryStore::open(options(dir.path(), 1000)).unwrap();
    let e = MemoryStore::open(options(dir.path(), 1000)).unwrap_err();
    assert!(e.to_string().contains("another controller"), "{e}");
    drop(first);
    MemoryStore::open(options(dir.path(), 1000)).unwrap();
}

#[tokio::test]
async fn snapshots_fold_the_log_and_leftovers_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(options(dir.path(), 10)).unwrap();
    for i in 0..25 {
        store
            .put(ap(&format!("a{}", i % 7), i), Expect::Any)
            .await
            .unwrap();
    }
    store
        .delete(
            &ObjectKey::namespaced(ap_type(), "retail", "a0"),
            Expect::Any,
        )
        .await
        .unwrap();
    let before = all(&store).await;
    drop(store);

    let snapshot = std::fs::read_to_string(dir.path().join("snapshot.jsonl")).unwrap();
    let header: Value = serde_json::from_str(snapshot.lines().next().unwrap()).unwrap();
    assert_eq!(header["format"], "causeway-store-snapshot");
    assert_eq!(header["revision"], 20);
    let wal = std::fs::read_to_string(dir.path().join("wal.jsonl")).unwrap();
    assert_eq!(
        wal.lines().count(),
        6,
        "only the records since the snapshot"
    );

    // A snapshot that was being written when the process died is not used.
    std::fs::write(dir.path().join("snapshot.jsonl.tmp"), "{\"half").unwrap();
    let store = MemoryStore::open(options(dir.path(), 10)).unwrap();
    assert_eq!(all(&store).await, before);
    assert_eq!(store.revision().await.unwrap(), 26);
    assert!(!dir.path().join("snapshot.jsonl.tmp").exists());

    // Watches resume from any version since the snapshot, not before.
    let mut watch = store.watch(&ap_type(), None, 23).await.unwrap();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(first.resource_version, 24);
    let mut old = store.watch(&ap_type(), None, 5).await.unwrap();
    assert!(matches!(
        old.next().await,
        Some(Err(StoreError::Gone { oldest: 20, .. }))
    ));
}

#[tokio::test]
async fn a_watcher_too_slow_for_its_buffer_gets_gone() {
    let store = MemoryStore::open(MemoryOptions {
        watch_buffer: 8,
        ..MemoryOptions::default()
    })
    .unwrap();
    let mut watch = store.watch(&ap_type(), None, 0).await.unwrap();
    for i in 0..20 {
        store.put(ap("a", i), Expect::Any).await.unwrap();
    }
    let mut delivered = 0;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .unwrap()
        {
            Some(Ok(_)) => delivered += 1,
            Some(Err(e)) => break e,
            None => panic!("the stream ended without an error"),
        }
    };
    assert!(matches!(end, StoreError::Gone { .. }), "{end}");
    assert!(delivered < 20);
    assert!(watch.next().await.is_none());
}

#[tokio::test]
async fn history_is_bounded() {
    let store = MemoryStore::open(MemoryOptions {
        history: 5,
        ..MemoryOptions::default()
    })
    .unwrap();
    for i in 0..10 {
        store.put(ap("a", i), Expect::Any).await.unwrap();
    }
    let mut ok = store.watch(&ap_type(), None, 5).await.unwrap();
    assert_eq!(
        resource_version(&ok.next().await.unwrap().unwrap().object),
        Some(6)
    );
    let mut gone = store.watch(&ap_type(), None, 4).await.unwrap();
    assert!(matches!(
        gone.next().await,
        Some(Err(StoreError::Gone {
            requested: 4,
            oldest: 5
        }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(options(dir.path(), 100_000)).unwrap();
    let mut tasks = Vec::new();
    for t in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for i in 0..10 {
                let applied = store
                    .put(ap(&format!("t{t}-{i}"), i), Expect::Absent)
                    .await
                    .unwrap();
                versions.push(applied.resource_version());
            }
            versions
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        versions.extend(task.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(
        versions,
        (1..=500).collect::<Vec<u64>>(),
        "one version each, no gaps"
    );
    let before = all(&store).await;
    drop(store);

    let lines = std::fs::read_to_string(dir.path().join("wal.jsonl"))
        .unwrap()
        .lines()
        .count();
    println!("500 transactions from 50 writers in {lines} log lines (fsyncs)");
    assert!(lines <= 500);
    let store = MemoryStore::open(options(dir.path(), 100_000)).unwrap();
    assert_eq!(all(&store).await, before);
    assert_eq!(before.len(), 500);
}

/// The files look as docs/store.md says (a reader of the data directory relies on it).
#[tokio::test]
async fn the_log_format_is_the_documented_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::open(options(dir.path(), 1000)).unwrap();
    store.put(ap("shop", 1), Expect::Any).await.unwrap();
    store
        .delete(
            &ObjectKey::namespaced(ap_type(), "retail", "shop"),
            Expect::Any,
        )
        .await
        .unwrap();
    drop(store);
    let text = std::fs::read_to_string(dir.path().join("wal.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let put = &lines[0]["txns"][0];
    assert_eq!(put["rev"], 1);
    assert_eq!(put["ops"][0]["op"], "put");
    assert_eq!(put["ops"][0]["key"], "causeway.io/AccessPoint/retail/shop");
    assert_eq!(put["ops"][0]["object"]["metadata"]["resourceVersion"], "1");
    let delete = &lines[1]["txns"][0];
    assert_eq!(delete["rev"], 2);
    assert_eq!(delete["ops"][0]["op"], "delete");
    assert!(delete["ops"][0].get("object").is_none());

    let store = MemoryStore::open(options(dir.path(), 1)).unwrap();
    store.put(ap("cart", 1), Expect::Any).await.unwrap();
    drop(store);
    let snapshot = std::fs::read_to_string(dir.path().join("snapshot.jsonl")).unwrap();
    let lines: Vec<Value> = snapshot
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"format": "causeway-store-snapshot", "version": 1, "revision": 3, "objects": 1})
    );
    assert_eq!(lines[1]["key"], "causeway.io/AccessPoint/retail/cart");
    assert_eq!(lines[1]["object"]["spec"]["n"], 1);
}
