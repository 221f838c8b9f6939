//! The reflector keeps a cache equal to the store through a watcher falling behind (Gone →
//! list again) and through an etcd restart (error → watch again from the last version).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "store_support/etcd.rs"]
mod etcd_support;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use causeway_controller::store::memory::{MemoryOptions, MemoryStore};
use causeway_controller::store::reflector::{Cache, Reflected, reflect};
use causeway_controller::store::{Expect, ResourceType, Selector, Store};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

fn ap(name: &str, n: u64) -> Value {
    json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
           "metadata": {"name": name, "namespace": "retail"}, "spec": {"n": n}})
}

fn ap_type() -> ResourceType {
    ResourceType::new("causeway.io", "AccessPoint")
}

/// Feeds the cache until it equals the store's current state; returns how many restarts
/// (lists) it saw.
async fn catch_up(
    reflector: &mut (impl Stream<Item = Reflected> + Unpin),
    cache: &mut Cache,
    store: &dyn Store,
) -> usize {
    let want = store
        .list(&ap_type(), None, &Selector::everything())
        .await
        .unwrap();
    let mut restarts = 0;
    while cache.resource_version() < want.resource_version {
        let item = tokio::time::timeout(Duration::from_secs(20), reflector.next())
            .await
            .expect("the reflector fell silent")
            .expect("the reflector never ends");
        if matches!(item, Reflected::Restarted(_)) {
            restarts += 1;
        }
        cache.apply(item);
    }
    assert_eq!(cache.resource_version(), want.resource_version);
    assert_eq!(cache.objects().cloned().collect::<Vec<_>>(), want.items);
    restarts
}

#[tokio::test]
async fn a_watcher_that_fell_behind_lists_again() {
    let store = Arc::new(
        MemoryStore::open(MemoryOptions {
            watch_buffer: 4,
            ..MemoryOptions::default()
        })
        .unwrap(),
    );
    let mut reflector = pin!(reflect(store.clone(), ap_type(), None));
    let mut cache = Cache::new();

    // Start: one list. Then the watch runs; write far more than its buffer while nobody reads.
    store.put(ap("first", 0), Expect::Any).await.unwrap();
    assert_eq!(
        catch_up(&mut reflector, &mut cache, store.as_ref()).await,
        1
    );
    store.put(ap("second", 0), Expect::Any).await.unwrap();
    assert_eq!(
        catch_up(&mut reflector, &mut cache, store.as_ref()).await,
        0
    );
    for i in 0..30 {
        store
            .put(ap(&format!("a{i}"), i), Expect::Any)
            .await
            .unwrap();
    }
    store
        .delete(
            &causeway_controller::store::ObjectKey::namespaced(ap_type(), "retail", "first"),
            Expect::Any,
        )
        .await
        .unwrap();
    let restarts = catch_up(&mut reflector, &mut cache, store.as_ref()).await;
    assert_eq!(restarts, 1, "Gone made it list again");
    assert_eq!(cache.len(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restarts_do_not_lose_or_repeat_events() {
    let mut etcd = etcd_support::Etcd::start().await;
    let store: Arc<dyn Store> = Arc::new(etcd.store().await);
    let mut reflector = pin!(reflect(store.clone(), ap_type(), None));
    let mut cache = Cache::new();
    for i in 0..10 {
        store
            .put(ap(&format!("a{i}"), i), Expect::Any)
            .await
            .unwrap();
    }
    catch_up(&mut reflector, &mut cache, store.as_ref()).await;

    etcd.restart().await;
    let writer = etcd.store().await;
    for i in 5..15 {
        writer
            .put(ap(&format!("a{i}"), 100 + i), Expect::Any)
            .await
            .unwrap();
    }
    let restarts = catch_up(&mut reflector, &mut cache, &writer).await;
    assert_eq!(restarts, 0, "resumed from its last version, no new list");
    assert_eq!(cache.len(), 15);
}
