//! One suite for every store backend: each test below runs against the in-memory store, the
//! in-memory store persisted to a data directory, and a real etcd (started per test on free
//! loopback ports; the test fails if etcd is not installed — run `scripts/install-deps`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "store_support/etcd.rs"]
mod etcd_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_controller::store::memory::{MemoryOptions, MemoryStore};
use causeway_controller::store::{
    EventType, Expect, ObjectKey, Outcome, ResourceType, Selector, Store, StoreError, WatchEvent,
    WatchStream, Write, generation, resource_version,
};
use futures::StreamExt;
use serde_json::{Value, json};

use etcd_support::Etcd;

/// Longest wait for one watch event before the test fails.
const EVENT_DEADLINE: Duration = Duration::from_secs(10);

enum Backend {
    Memory,
    Persistent(tempfile::TempDir),
    Etcd(Etcd),
}

struct Harness {
    backend: Backend,
    store: Option<Arc<dyn Store>>,
}

fn persistent_options(dir: &std::path::Path) -> MemoryOptions {
    MemoryOptions {
        // Small, so the tests cross several snapshots and replay log records on top of them.
        snapshot_every: 7,
        ..MemoryOptions::persistent(dir.join("store"))
    }
}

impl Harness {
    async fn memory() -> Harness {
        Harness {
            backend: Backend::Memory,
            store: Some(Arc::new(MemoryStore::new())),
        }
    }

    async fn persistent() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store = MemoryStore::open(persistent_options(dir.path())).unwrap();
        Harness {
            backend: Backend::Persistent(dir),
            store: Some(Arc::new(store)),
        }
    }

    async fn etcd() -> Harness {
        let etcd = Etcd::start().await;
        let store = etcd.store().await;
        Harness {
            backend: Backend::Etcd(etcd),
            store: Some(Arc::new(store)),
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone().unwrap()
    }

    /// Another client of the same data: for etcd a separate connection.
    async fn second_client(&self) -> Arc<dyn Store> {
        match &self.backend {
            Backend::Etcd(etcd) => Arc::new(etcd.store().await),
            _ => self.store(),
        }
    }

    /// Closes the store and opens it again from what it persisted: for the memory store its
    /// data directory, for etcd a killed and restarted etcd and a new client.
    async fn restart(&mut self) {
        self.store = None;
        match &mut self.backend {
            Backend::Memory => panic!("the non-persistent memory store cannot restart"),
            Backend::Persistent(dir) => {
                let store = MemoryStore::open(persistent_options(dir.path())).unwrap();
                self.store = Some(Arc::new(store));
            }
            Backend::Etcd(etcd) => {
                etcd.restart().await;
                self.store = Some(Arc::new(etcd.store().await));
            }
        }
    }
}

fn ap_type() -> ResourceType {
    ResourceType::new("causeway.io", "AccessPoint")
}

fn ap(ns: &str, name: &str, labels: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "causeway.io/v1alpha1",
        "kind": "AccessPoint",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
    })
}

fn ap_key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::namespaced(ap_type(), ns, name)
}

fn rv(object: &Value) -> u64 {
    resource_version(object).expect("object has a resourceVersion")
}

fn names(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn next_event(stream: &mut WatchStream) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(EVENT_DEADLINE, stream.next())
        .await
        .expect("no watch event within the deadline")
        .expect("the watch stream ended")
}

async fn events(stream: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_event(stream).await.unwrap());
    }
    out
}

/// Generates one module of tests per backend: the shared tests, plus `$extra` ones.
macro_rules! suite {
    ($backend:ident, $make:expr $(, $extra:ident)*) => {
        suite!(@tests $backend, $make, [
            crud, preconditions, generation_rules, label_selectors, watch_order_and_resume,
            watch_scopes, watch_gone_after_compaction, delete_events, concurrent_writers,
            transactions, watch_with_selector, list_then_watch_misses_nothing, size_limits
            $(, $extra)*
        ]);
    };
    (@tests $backend:ident, $make:expr, [$($test:ident),*]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let mut harness = $make.await;
                    super::$test(&mut harness).await;
                }
            )*
        }
    };
}

suite!(memory, super::Harness::memory());
suite!(
    memory_persistent,
    super::Harness::persistent(),
    restart_loses_nothing
);
suite!(
    etcd,
    super::Harness::etcd(),
    restart_loses_nothing,
    watch_ends_with_an_error_when_etcd_dies
);

async fn crud(h: &mut Harness) {
    let store = h.store();
    let before = store.revision().await.unwrap();

    let created = store
        .put(
            ap(
                "retail",
                "shop",
                json!({"app": "shop"}),
                json!({"hosts": ["shop.example.com"]}),
            ),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(created.outcome, Outcome::Created);
    let obj = &created.object;
    assert!(rv(obj) > before);
    assert_eq!(created.resource_version(), rv(obj));
    assert_eq!(generation(obj), Some(1));
    assert_eq!(obj["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(
        obj["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(obj["spec"]["hosts"][0], "shop.example.com");
    assert_eq!(store.revision().await.unwrap(), rv(obj));

    let got = store.get(&ap_key("retail", "shop")).await.unwrap().unwrap();
    assert_eq!(&got, obj);
    assert_eq!(store.get(&ap_key("retail", "nope")).await.unwrap(), None);
    assert_eq!(store.get(&ap_key("other", "shop")).await.unwrap(), None);

    // Applying the same object again writes nothing.
    let again = store
        .put(
            ap(
                "retail",
                "shop",
                json!({"app": "shop"}),
                json!({"hosts": ["shop.example.com"]}),
            ),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::Unchanged);
    assert_eq!(rv(&again.object), rv(obj));
    assert_eq!(store.revision().await.unwrap(), rv(obj));

    let updated = store
        .put(
            ap(
                "retail",
                "shop",
                json!({"app": "shop"}),
                json!({"hosts": ["b.example.com"]}),
            ),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(updated.outcome, Outcome::Updated);
    assert!(rv(&updated.object) > rv(obj));
    assert_eq!(updated.object["metadata"]["uid"], obj["metadata"]["uid"]);
    assert_eq!(
        updated.object["metadata"]["creationTimestamp"],
        obj["metadata"]["creationTimestamp"]
    );

    // A cluster-scoped kind lives beside the namespaced ones.
    let cluster = json!({"apiVersion": "causeway.io/v1alpha1", "kind": "Cluster",
                         "metadata": {"name": "c1"}, "spec": {"network": "n"}});
    let c1 = store.put(cluster, Expect::Absent).await.unwrap();
    assert_eq!(c1.outcome, Outcome::Created);
    let key = ObjectKey::cluster_scoped(ResourceType::new("causeway.io", "Cluster"), "c1");
    assert_eq!(store.get(&key).await.unwrap().unwrap(), c1.object);
    let all = store
        .list(
            &ResourceType::new("causeway.io", "Cluster"),
            None,
            &Selector::everything(),
        )
        .await
        .unwrap();
    assert_eq!(names(&all.items), ["c1"]);

    // Core group objects (Secrets) work the same way.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                        "metadata": {"name": "ca", "namespace": "retail"}, "data": {"ca.crt": "eA=="}});
    store.put(secret, Expect::Any).await.unwrap();
    let secret_key = ObjectKey::namespaced(ResourceType::new("", "Secret"), "retail", "ca");
    assert_eq!(
        store.get(&secret_key).await.unwrap().unwrap()["data"]["ca.crt"],
        "eA=="
    );

    let deleted = store
        .delete(&ap_key("retail", "shop"), Expect::Any)
        .await
        .unwrap();
    assert!(rv(&deleted) > rv(&updated.object));
    assert_eq!(deleted["spec"]["hosts"][0], "b.example.com");
    assert_eq!(store.get(&ap_key("retail", "shop")).await.unwrap(), None);
    let e = store
        .delete(&ap_key("retail", "shop"), Expect::Any)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    assert_eq!(e.http_status(), 404);
    let e = store
        .put_status(
            &ap_key("retail", "shop"),
            json!({"vip": "10.0.0.1"}),
            Expect::Any,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");

    // Malformed objects are refused with the field that is wrong.
    for (bad, field) in [
        (
            json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint", "metadata": {}}),
            "metadata.name",
        ),
        (
            json!({"kind": "AccessPoint", "metadata": {"name": "x"}}),
            "apiVersion",
        ),
        (
            json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
                "metadata": {"name": "a/b", "namespace": "retail"}}),
            "metadata.name",
        ),
        (
            json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
                "metadata": {"name": "x", "namespace": "../etc"}}),
            "metadata.namespace",
        ),
        (json!(["not", "an", "object"]), ""),
    ] {
        match store.put(bad.clone(), Expect::Any).await {
            Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field, "{bad}"),
            other => panic!("{bad}: expected Invalid, got {other:?}"),
        }
    }
}

async fn preconditions(h: &mut Harness) {
    let store = h.store();
    let key = ap_key("retail", "shop");
    let first = store
        .put(
            ap("retail", "shop", json!({}), json!({"n": 1})),
            Expect::Absent,
        )
        .await
        .unwrap();
    let v1 = rv(&first.object);

    let e = store
        .put(
            ap("retail", "shop", json!({}), json!({"n": 2})),
            Expect::Absent,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    assert_eq!(e.http_status(), 409);

    let second = store
        .put(
            ap("retail", "shop", json!({}), json!({"n": 2})),
            Expect::ResourceVersion(v1),
        )
        .await
        .unwrap();
    let v2 = rv(&second.object);
    assert!(v2 > v1);

    // A writer that read v1 loses.
    let e = store
        .put(
            ap("retail", "shop", json!({}), json!({"n": 3})),
            Expect::ResourceVersion(v1),
        )
        .await
        .unwrap_err();
    match &e {
        StoreError::Conflict {
            expected, actual, ..
        } => assert_eq!((*expected, *actual), (v1, v2)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(e.http_status(), 409);
    assert!(e.to_string().contains("read the object again"), "{e}");
    assert_eq!(store.get(&key).await.unwrap().unwrap()["spec"]["n"], 2);

    let e = store
        .put_status(
            &key,
            json!({"vip": "10.0.0.1"}),
            Expect::ResourceVersion(v1),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    let status = store
        .put_status(
            &key,
            json!({"vip": "10.0.0.1"}),
            Expect::ResourceVersion(v2),
        )
        .await
        .unwrap();
    let v3 = rv(&status.object);

    let e = store
        .put(
            ap("retail", "other", json!({}), json!({})),
            Expect::ResourceVersion(5),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");

    let e = store
        .delete(&key, Expect::ResourceVersion(v2))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert!(store.get(&key).await.unwrap().is_some());
    store
        .delete(&key, Expect::ResourceVersion(v3))
        .await
        .unwrap();
    assert!(store.get(&key).await.unwrap().is_none());

    // Create-only succeeds again once the object is gone.
    let again = store
        .put(
            ap("retail", "shop", json!({}), json!({"n": 9})),
            Expect::Absent,
        )
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::Created);
    assert_eq!(generation(&again.object), Some(1));
    assert_ne!(
        again.object["metadata"]["uid"],
        first.object["metadata"]["uid"]
    );
}

async fn generation_rules(h: &mut Harness) {
    let store = h.store();
    let key = ap_key("retail", "shop");
    let created = store
        .put(
            ap("retail", "shop", json!({"a": "1"}), json!({"hosts": ["x"]})),
            Expect::Any,
        )
        .await
        .unwrap()
        .object;
    assert_eq!(generation(&created), Some(1));

    // Metadata changes: new resource version, same generation.
    let relabelled = store
        .put(
            ap("retail", "shop", json!({"a": "2"}), json!({"hosts": ["x"]})),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(relabelled.outcome, Outcome::Updated);
    assert_eq!(generation(&relabelled.object), Some(1));
    assert!(rv(&relabelled.object) > rv(&created));

    // Status: new resource version, same generation and spec.
    let status = json!({"observedGeneration": 1, "vip": "10.240.0.1"});
    let with_status = store
        .put_status(&key, status.clone(), Expect::Any)
        .await
        .unwrap();
    assert_eq!(with_status.outcome, Outcome::Updated);
    assert_eq!(generation(&with_status.object), Some(1));
    assert_eq!(with_status.object["spec"], json!({"hosts": ["x"]}));
    assert_eq!(with_status.object["status"], status);
    assert_eq!(with_status.object["metadata"]["labels"]["a"], "2");
    let same = store
        .put_status(&key, status.clone(), Expect::Any)
        .await
        .unwrap();
    assert_eq!(same.outcome, Outcome::Unchanged);
    assert_eq!(rv(&same.object), rv(&with_status.object));

    // Spec change: generation + 1; the status written separately survives, and a status in
    // the applied object is ignored, as are the store-owned metadata fields.
    let mut body = ap("retail", "shop", json!({"a": "2"}), json!({"hosts": ["y"]}));
    body["status"] = json!({"vip": "forged"});
    body["metadata"]["generation"] = json!(99);
    body["metadata"]["uid"] = json!("forged");
    body["metadata"]["resourceVersion"] = json!("1");
    body["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    let changed = store.put(body, Expect::Any).await.unwrap().object;
    assert_eq!(generation(&changed), Some(2));
    assert_eq!(changed["status"], status);
    assert_eq!(changed["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        changed["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
    assert!(rv(&changed) > rv(&with_status.object));

    // Only a status: unchanged.
    let mut body = ap("retail", "shop", json!({"a": "2"}), json!({"hosts": ["y"]}));
    body["status"] = json!({"vip": "another"});
    assert_eq!(
        store.put(body, Expect::Any).await.unwrap().outcome,
        Outcome::Unchanged
    );

    // Any top-level field but metadata and status counts as spec (Secrets keep `data`).
    let secret = |v: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                  "metadata": {"name": "s", "namespace": "retail"}, "data": {"k": v}})
    };
    store.put(secret("YQ=="), Expect::Any).await.unwrap();
    let s2 = store.put(secret("Yg=="), Expect::Any).await.unwrap().object;
    assert_eq!(generation(&s2), Some(2));

    // Clearing the status.
    let cleared = store
        .put_status(&key, Value::Null, Expect::Any)
        .await
        .unwrap()
        .object;
    assert!(cleared.get("status").is_none());
    assert_eq!(generation(&cleared), Some(2));
}

async fn label_selectors(h: &mut Harness) {
    let store = h.store();
    let objects = [
        ("retail", "shop", json!({"app": "shop", "env": "prod"})),
        (
            "retail",
            "shop-canary",
            json!({"app": "shop", "env": "prod", "canary": "true"}),
        ),
        (
            "retail",
            "shop-staging",
            json!({"app": "shop", "env": "staging"}),
        ),
        ("retail", "shop-dev", json!({"app": "shop", "env": "dev"})),
        ("retail", "cart", json!({"app": "cart", "env": "prod"})),
        ("payments", "shop", json!({"app": "shop", "env": "prod"})),
        ("payments", "bare", json!({})),
    ];
    for (ns, name, labels) in objects {
        store
            .put(ap(ns, name, labels, json!({})), Expect::Any)
            .await
            .unwrap();
    }
    // Kinds whose names share a prefix must not leak into each other's lists.
    store
        .put(
            json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPointX",
                   "metadata": {"name": "shop", "namespace": "retail", "labels": {"app": "shop"}}}),
            Expect::Any,
        )
        .await
        .unwrap();

    let list = |ns: Option<&'static str>, sel: &'static str| {
        let store = store.clone();
        async move {
            let selector = Selector::parse(sel).unwrap();
            names(&store.list(&ap_type(), ns, &selector).await.unwrap().items)
        }
    };
    assert_eq!(
        list(None, "app=shop,env in (prod,staging),!canary").await,
        ["shop", "shop", "shop-staging"]
    );
    assert_eq!(
        list(Some("retail"), "app=shop,env in (prod,staging),!canary").await,
        ["shop", "shop-staging"]
    );
    assert_eq!(
        list(Some("retail"), "").await,
        ["cart", "shop", "shop-canary", "shop-dev", "shop-staging"]
    );
    assert_eq!(list(Some("payments"), "env!=prod").await, ["bare"]);
    assert_eq!(
        list(None, "env notin (prod, dev),app").await,
        ["shop-staging"]
    );
    assert_eq!(list(None, "canary").await, ["shop-canary"]);
    assert_eq!(list(Some("retail"), "app==cart").await, ["cart"]);
    assert_eq!(list(Some("nowhere"), "").await, Vec::<String>::new());

    let listed = store
        .list(&ap_type(), None, &Selector::everything())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 7);
    assert_eq!(listed.resource_version, store.revision().await.unwrap());

    let e = Selector::parse("app=shop,env in prod").unwrap_err();
    assert_eq!(e.path.as_str(), "labelSelector[1]");
    assert_eq!(StoreError::from(e).http_status(), 400);
}

async fn watch_order_and_resume(h: &mut Harness) {
    let store = h.store();
    let writer = h.second_client().await;
    let start = store
        .list(&ap_type(), None, &Selector::everything())
        .await
        .unwrap();
    let mut watch = store
        .watch(&ap_type(), None, start.resource_version)
        .await
        .unwrap();

    let key = ap_key("retail", "shop");
    let a1 = writer
        .put(
            ap("retail", "shop", json!({}), json!({"n": 1})),
            Expect::Any,
        )
        .await
        .unwrap();
    let a2 = writer
        .put(
            ap("retail", "shop", json!({}), json!({"n": 2})),
            Expect::Any,
        )
        .await
        .unwrap();
    let b1 = writer
        .put(ap("payments", "pay", json!({}), json!({})), Expect::Any)
        .await
        .unwrap();
    let a3 = writer
        .put_status(&key, json!({"vip": "10.0.0.1"}), Expect::Any)
        .await
        .unwrap();
    let a4 = writer.delete(&key, Expect::Any).await.unwrap();

    let seen = events(&mut watch, 5).await;
    let kinds: Vec<EventType> = seen.iter().map(|e| e.event_type).collect();
    assert_eq!(
        kinds,
        [
            EventType::Added,
            EventType::Modified,
            EventType::Added,
            EventType::Modified,
            EventType::Deleted
        ]
    );
    let versions: Vec<u64> = seen.iter().map(|e| e.resource_version).collect();
    assert_eq!(
        versions,
        [
            rv(&a1.object),
            rv(&a2.object),
            rv(&b1.object),
            rv(&a3.object),
            rv(&a4)
        ]
    );
    assert!(versions.windows(2).all(|w| w[0] < w[1]));
    for event in &seen {
        assert_eq!(rv(&event.object), event.resource_version);
    }
    assert_eq!(seen[1].object, a2.object);
    assert_eq!(seen[3].object["status"]["vip"], "10.0.0.1");
    assert_eq!(seen[4].object["metadata"]["name"], "shop");

    // Resuming from any version replays exactly what came after it.
    let mut resumed = store.watch(&ap_type(), None, versions[1]).await.unwrap();
    let again = events(&mut resumed, 3).await;
    assert_eq!(again, seen[2..].to_vec());

    // Nothing is repeated: the next event is the next write.
    let a5 = writer
        .put(ap("retail", "later", json!({}), json!({})), Expect::Any)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut resumed).await.unwrap().resource_version,
        rv(&a5.object)
    );
    assert_eq!(
        next_event(&mut watch).await.unwrap().resource_version,
        rv(&a5.object)
    );

    // An unchanged apply produces no event.
    writer
        .put(ap("retail", "later", json!({}), json!({})), Expect::Any)
        .await
        .unwrap();
    let a6 = writer
        .put(
            ap("retail", "later", json!({}), json!({"n": 6})),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut watch).await.unwrap().resource_version,
        rv(&a6.object)
    );
}

async fn watch_scopes(h: &mut Harness) {
    let store = h.store();
    let from = store.revision().await.unwrap();
    let mut retail = store.watch(&ap_type(), Some("retail"), from).await.unwrap();
    let clusters = ResourceType::new("causeway.io", "Cluster");
    let mut cluster_watch = store.watch(&clusters, None, from).await.unwrap();

    store
        .put(ap("payments", "x", json!({}), json!({})), Expect::Any)
        .await
        .unwrap();
    store
        .put(
            json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPointX",
                   "metadata": {"name": "y", "namespace": "retail"}}),
            Expect::Any,
        )
        .await
        .unwrap();
    store
        .put(json!({"apiVersion": "causeway.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "c1"}}), Expect::Any)
        .await
        .unwrap();
    let mine = store
        .put(ap("retail", "mine", json!({}), json!({})), Expect::Any)
        .await
        .unwrap();

    let first = next_event(&mut retail).await.unwrap();
    assert_eq!(first.resource_version, rv(&mine.object));
    assert_eq!(first.object["metadata"]["name"], "mine");
    let c = next_event(&mut cluster_watch).await.unwrap();
    assert_eq!(c.object["metadata"]["name"], "c1");
    assert_eq!(c.event_type, EventType::Added);
}

async fn watch_gone_after_compaction(h: &mut Harness) {
    let store = h.store();
    let start = store.revision().await.unwrap();
    for n in 0..5 {
        store
            .put(
                ap("retail", "shop", json!({}), json!({"n": n})),
                Expect::Any,
            )
            .await
            .unwrap();
    }
    let now = store.revision().await.unwrap();
    store.compact(now).await.unwrap();
    store.compact(now).await.unwrap(); // again: a no-op

    let mut old = store.watch(&ap_type(), None, start).await.unwrap();
    match next_event(&mut old).await {
        Err(e @ StoreError::Gone { .. }) => {
            assert_eq!(e.http_status(), 410);
            assert!(e.to_string().contains("list again"), "{e}");
        }
        other => panic!("expected Gone, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(EVENT_DEADLINE, old.next())
            .await
            .unwrap()
            .is_none(),
        "the stream ends after Gone"
    );

    // From the compaction point on, watching works.
    let mut fresh = store.watch(&ap_type(), None, now).await.unwrap();
    let next = store
        .put(
            ap("retail", "shop", json!({}), json!({"n": 99})),
            Expect::Any,
        )
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut fresh).await.unwrap().resource_version,
        rv(&next.object)
    );

    let future = store.revision().await.unwrap() + 1000;
    assert!(matches!(
        store.compact(future).await,
        Err(StoreError::Invalid { .. })
    ));
}

async fn delete_events(h: &mut Harness) {
    let store = h.store();
    let key = ap_key("retail", "shop");
    store
        .put(
            ap("retail", "shop", json!({"app": "shop"}), json!({"n": 1})),
            Expect::Any,
        )
        .await
        .unwrap();
    let last = store
        .put_status(&key, json!({"vip": "10.0.0.9"}), Expect::Any)
        .await
        .unwrap();
    let mut watch = store
        .watch(&ap_type(), Some("retail"), rv(&last.object))
        .await
        .unwrap();
    let deleted = store.delete(&key, Expect::Any).await.unwrap();

    let event = next_event(&mut watch).await.unwrap();
    assert_eq!(event.event_type, EventType::Deleted);
    assert_eq!(event.resource_version, rv(&deleted));
    assert_eq!(event.object, deleted);
    // The last state, status included, with the deletion's version.
    assert_eq!(event.object["status"]["vip"], "10.0.0.9");
    assert_eq!(event.object["metadata"]["labels"]["app"], "shop");
    assert_eq!(
        event.object["metadata"]["uid"],
        last.object["metadata"]["uid"]
    );

    // Re-creating is an Added event of a new object.
    let again = store
        .put(
            ap("retail", "shop", json!({}), json!({"n": 2})),
            Expect::Any,
        )
        .await
        .unwrap();
    let event = next_event(&mut watch).await.unwrap();
    assert_eq!(event.event_type, EventType::Added);
    assert_eq!(event.object, again.object);
    assert!(event.object.get("status").is_none());
}

async fn restart_loses_nothing(h: &mut Harness) {
    let store = h.store();
    for i in 0..20 {
        store
            .put(
                ap(
                    "retail",
                    &format!("ap-{i:02}"),
                    json!({"i": i.to_string()}),
                    json!({"i": i}),
                ),
                Expect::Any,
            )
            .await
            .unwrap();
    }
    store
        .put_status(
            &ap_key("retail", "ap-03"),
            json!({"vip": "10.0.0.3"}),
            Expect::Any,
        )
        .await
        .unwrap();
    store
        .put(
            ap("retail", "ap-04", json!({}), json!({"i": 400})),
            Expect::Any,
        )
        .await
        .unwrap();
    let mid = store.revision().await.unwrap();
    store
        .delete(&ap_key("retail", "ap-05"), Expect::Any)
        .await
        .unwrap();
    store
        .put(
            ap("retail", "ap-06", json!({}), json!({"i": 600})),
            Expect::Any,
        )
        .await
        .unwrap();
    let before = store
        .list(&ap_type(), None, &Selector::everything())
        .await
        .unwrap();
    drop(store);

    h.restart().await;
    let store = h.store();
    let after = store
        .list(&ap_type(), None, &Selector::everything())
        .await
        .unwrap();
    assert_eq!(
        after.items, before.items,
        "objects, versions, uids and status survive"
    );
    assert_eq!(after.resource_version, before.resource_version);
    assert_eq!(after.items.len(), 19);

    // Watches resume across the restart.
    let mut watch = store.watch(&ap_type(), None, mid).await.unwrap();
    let replayed = events(&mut watch, 2).await;
    assert_eq!(replayed[0].event_type, EventType::Deleted);
    assert_eq!(replayed[0].object["metadata"]["name"], "ap-05");
    assert_eq!(replayed[1].object["spec"]["i"], 600);

    // Versions keep growing; preconditions hold across the restart.
    let stale = rv(&before.items[0]);
    let next = store
        .put(
            ap("retail", "ap-00", json!({}), json!({"i": -1})),
            Expect::ResourceVersion(stale),
        )
        .await
        .unwrap();
    assert!(rv(&next.object) > before.resource_version);
    assert_eq!(generation(&next.object), Some(2));
    assert_eq!(
        next_event(&mut watch).await.unwrap().resource_version,
        rv(&next.object)
    );

    // And a second restart right after the first keeps the new write.
    drop(store);
    h.restart().await;
    let got = h
        .store()
        .get(&ap_key("retail", "ap-00"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, next.object);
}

async fn concurrent_writers(h: &mut Harness) {
    const TASKS: usize = 20;
    const INCREMENTS: usize = 10;
    let clients = [h.store(), h.second_client().await];
    let key = ap_key("retail", "counter");
    clients[0]
        .put(
            ap("retail", "counter", json!({}), json!({"count": 0})),
            Expect::Absent,
        )
        .await
        .unwrap();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = clients[t % 2].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0usize;
            for _ in 0..INCREMENTS {
                loop {
                    let current = store.get(&key).await.unwrap().unwrap();
                    let count = current["spec"]["count"].as_u64().unwrap();
                    let mut next = current.clone();
                    next["spec"]["count"] = json!(count + 1);
                    match store.put(next, Expect::ResourceVersion(rv(&current))).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let last = clients[1].get(&key).await.unwrap().unwrap();
    assert_eq!(
        last["spec"]["count"],
        (TASKS * INCREMENTS) as u64,
        "no lost update"
    );
    assert_eq!(generation(&last), Some(1 + (TASKS * INCREMENTS) as u64));
    println!(
        "{} increments by {TASKS} tasks in {elapsed:?}, {conflicts} conflicts retried",
        TASKS * INCREMENTS
    );

    // Unconditional applies from many tasks at once all land, each exactly once.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = clients[t % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .put(
                    ap("retail", &format!("p-{t}"), json!({}), json!({"t": t})),
                    Expect::Any,
                )
                .await
                .unwrap()
                .resource_version()
        }));
    }
    let mut versions = BTreeSet::new();
    for task in tasks {
        assert!(
            versions.insert(task.await.unwrap()),
            "resource versions are unique"
        );
    }
    let listed = clients[0]
        .list(&ap_type(), Some("retail"), &Selector::parse("").unwrap())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), TASKS + 1);
}

async fn transactions(h: &mut Harness) {
    let store = h.store();
    let from = store.revision().await.unwrap();
    let mut watch = store.watch(&ap_type(), Some("retail"), from).await.unwrap();

    // Two creates commit together, at one version.
    let both = store
        .transaction(vec![
            Write::Put(
                ap("retail", "a", json!({}), json!({"n": 1})),
                Expect::Absent,
            ),
            Write::Put(
                ap("retail", "b", json!({}), json!({"n": 1})),
                Expect::Absent,
            ),
        ])
        .await
        .unwrap();
    assert_eq!(both.len(), 2);
    assert!(both.iter().all(|a| a.outcome == Outcome::Created));
    let v1 = both[0].resource_version();
    assert_eq!(both[1].resource_version(), v1);
    let seen = events(&mut watch, 2).await;
    assert_eq!(
        seen.iter().map(|e| e.resource_version).collect::<Vec<_>>(),
        [v1, v1]
    );
    let mut seen_names: Vec<_> = seen
        .iter()
        .map(|e| e.object["metadata"]["name"].clone())
        .collect();
    seen_names.sort_by_key(ToString::to_string);
    assert_eq!(seen_names, [json!("a"), json!("b")]);

    // One failing precondition: nothing is written.
    let e = store
        .transaction(vec![
            Write::Put(ap("retail", "c", json!({}), json!({})), Expect::Absent),
            Write::Put(
                ap("retail", "a", json!({}), json!({"n": 2})),
                Expect::Absent,
            ),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    assert!(store.get(&ap_key("retail", "c")).await.unwrap().is_none());
    assert_eq!(store.revision().await.unwrap(), v1);

    let e = store
        .transaction(vec![
            Write::Delete(ap_key("retail", "a"), Expect::Any),
            Write::Status(
                ap_key("retail", "b"),
                json!({"x": 1}),
                Expect::ResourceVersion(v1 - 1),
            ),
        ])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert!(store.get(&ap_key("retail", "a")).await.unwrap().is_some());

    // Delete, status, unchanged put and create together.
    let mixed = store
        .transaction(vec![
            Write::Delete(ap_key("retail", "a"), Expect::ResourceVersion(v1)),
            Write::Status(
                ap_key("retail", "b"),
                json!({"x": 1}),
                Expect::ResourceVersion(v1),
            ),
            Write::Put(ap("retail", "b", json!({}), json!({"n": 1})), Expect::Any),
            Write::Put(ap("retail", "c", json!({}), json!({})), Expect::Absent),
        ])
        .await;
    // `b` twice is refused before anything is read.
    assert!(
        matches!(mixed, Err(StoreError::Invalid { .. })),
        "{mixed:?}"
    );
    let mixed = store
        .transaction(vec![
            Write::Delete(ap_key("retail", "a"), Expect::ResourceVersion(v1)),
            Write::Status(ap_key("retail", "b"), json!({"x": 1}), Expect::ResourceVersion(v1)),
            Write::Put(ap("retail", "c", json!({}), json!({})), Expect::Absent),
            Write::Put(
                json!({"apiVersion": "causeway.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "c1"}}),
                Expect::Any,
            ),
        ])
        .await
        .unwrap();
    let outcomes: Vec<Outcome> = mixed.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Deleted,
            Outcome::Updated,
            Outcome::Created,
            Outcome::Created
        ]
    );
    let v2 = mixed[0].resource_version();
    assert!(v2 > v1);
    assert!(mixed.iter().all(|a| a.resource_version() == v2));
    assert_eq!(mixed[1].object["status"]["x"], 1);
    let seen = events(&mut watch, 3).await;
    assert!(seen.iter().all(|e| e.resource_version == v2));
    let mut kinds: Vec<String> = seen.iter().map(|e| e.event_type.to_string()).collect();
    kinds.sort();
    assert_eq!(kinds, ["ADDED", "DELETED", "MODIFIED"]);

    // A transaction of unchanged writes writes nothing.
    let same = store
        .transaction(vec![Write::Put(
            ap("retail", "c", json!({}), json!({})),
            Expect::Any,
        )])
        .await
        .unwrap();
    assert_eq!(same[0].outcome, Outcome::Unchanged);
    assert_eq!(store.revision().await.unwrap(), v2);
    assert!(matches!(
        store.transaction(vec![]).await,
        Err(StoreError::Invalid { .. })
    ));
}

async fn watch_with_selector(h: &mut Harness) {
    let store = h.store();
    let selector = Selector::parse("app=shop").unwrap();
    let from = store.revision().await.unwrap();
    let mut watch = store.watch(&ap_type(), None, from).await.unwrap();
    let x = |app: &str, n: u64| ap("retail", "x", json!({ "app": app }), json!({ "n": n }));
    let v1 = store
        .put(x("shop", 1), Expect::Any)
        .await
        .unwrap()
        .resource_version();
    let v2 = store
        .put(x("cart", 1), Expect::Any)
        .await
        .unwrap()
        .resource_version();
    store
        .put(
            ap("retail", "y", json!({"app": "cart"}), json!({})),
            Expect::Any,
        )
        .await
        .unwrap();
    let v4 = store
        .put(x("shop", 2), Expect::Any)
        .await
        .unwrap()
        .resource_version();
    let v5 = store
        .put(x("shop", 3), Expect::Any)
        .await
        .unwrap()
        .resource_version();
    let key = ap_key("retail", "x");
    let v6 = store
        .put_status(&key, json!({"vip": "10.0.0.1"}), Expect::Any)
        .await
        .unwrap()
        .resource_version();
    let v7 = rv(&store.delete(&key, Expect::Any).await.unwrap());
    store
        .delete(&ap_key("retail", "y"), Expect::Any)
        .await
        .unwrap();

    let raw = events(&mut watch, 8).await;
    assert_eq!(raw[1].event_type, EventType::Modified);
    assert_eq!(
        raw[1].previous.as_ref().unwrap()["metadata"]["labels"]["app"],
        "shop"
    );
    let selected: Vec<(EventType, u64)> = raw
        .into_iter()
        .filter_map(|e| e.select(&selector))
        .map(|e| {
            assert_eq!(rv(&e.object), e.resource_version);
            assert_eq!(e.object["metadata"]["labels"]["app"], "shop", "{e:?}");
            (e.event_type, e.resource_version)
        })
        .collect();
    assert_eq!(
        selected,
        [
            (EventType::Added, v1),
            (EventType::Deleted, v2),
            (EventType::Added, v4),
            (EventType::Modified, v5),
            (EventType::Modified, v6),
            (EventType::Deleted, v7),
        ]
    );
}

/// The reflector pattern under load: a list taken while a writer runs, plus the watch from the
/// list's version, rebuild exactly the final state.
async fn list_then_watch_misses_nothing(h: &mut Harness) {
    let store = h.store();
    let writer = h.second_client().await;
    let task = tokio::spawn(async move {
        let mut last = 0;
        for i in 0..300u64 {
            let name = format!("o{}", i % 17);
            if i % 5 == 4 {
                match writer.delete(&ap_key("retail", &name), Expect::Any).await {
                    Ok(deleted) => last = rv(&deleted),
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            } else {
                let applied = writer
                    .put(ap("retail", &name, json!({}), json!({"i": i})), Expect::Any)
                    .await
                    .unwrap();
                last = applied.resource_version();
            }
        }
        last
    });
    // Let the writer get going, without sleeping: wait for its first object.
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        let now = store
            .list(&ap_type(), None, &Selector::everything())
            .await
            .unwrap();
        if !now.items.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the writer wrote nothing");
        tokio::task::yield_now().await;
    }
    let list = store
        .list(&ap_type(), None, &Selector::everything())
        .await
        .unwrap();
    let mut mirror: std::collections::BTreeMap<String, Value> = list
        .items
        .into_iter()
        .map(|o| (o["metadata"]["name"].as_str().unwrap().to_owned(), o))
        .collect();
    let mut watch = store
        .watch(&ap_type(), None, list.resource_version)
        .await
        .unwrap();
    let last = task.await.unwrap();
    let mut at = list.resource_version;
    while at < last {
        let event = next_event(&mut watch).await.unwrap();
        assert!(event.resource_version > at, "in order, no repeats");
        at = event.resource_version;
        let name = event.object["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        match event.event_type {
            EventType::Deleted => {
                assert!(
                    mirror.remove(&name).is_some(),
                    "deleted {name} was never seen"
                );
            }
            EventType::Added => {
                assert!(
                    mirror.insert(name.clone(), event.object).is_none(),
                    "{name} added twice"
                );
            }
            EventType::Modified => {
                assert!(
                    mirror.insert(name.clone(), event.object).is_some(),
                    "{name} unseen"
                );
            }
        }
    }
    let fin = store
        .list(&ap_type(), None, &Selector::everything())
        .await
        .unwrap();
    assert_eq!(fin.resource_version, last);
    assert_eq!(mirror.into_values().collect::<Vec<_>>(), fin.items);
}

/// A watch whose etcd goes away ends with an error (it does not hang), and watching again
/// from the last version seen, once etcd is back, misses nothing.
async fn watch_ends_with_an_error_when_etcd_dies(h: &mut Harness) {
    let store = h.store();
    let first = store
        .put(ap("retail", "a", json!({}), json!({"n": 1})), Expect::Any)
        .await
        .unwrap();
    let mut watch = store
        .watch(&ap_type(), None, first.resource_version() - 1)
        .await
        .unwrap();
    let seen = next_event(&mut watch).await.unwrap();
    assert_eq!(seen.resource_version, first.resource_version());
    drop(store);

    h.restart().await;
    match next_event(&mut watch).await {
        Err(e @ StoreError::Unavailable { .. }) => {
            assert!(e.to_string().contains("etcd"), "{e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let store = h.store();
    let second = store
        .put(ap("retail", "a", json!({}), json!({"n": 2})), Expect::Any)
        .await
        .unwrap();
    let mut again = store
        .watch(&ap_type(), None, seen.resource_version)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut again).await.unwrap().resource_version,
        second.resource_version()
    );
}

/// Objects over 1 MB are refused by every backend, with the reason; a transaction of large
/// objects that etcd would refuse is refused as invalid too.
async fn size_limits(h: &mut Harness) {
    let store = h.store();
    let big = "x".repeat(1_100_000);
    let e = store
        .put(
            ap("retail", "big", json!({}), json!({ "blob": big })),
            Expect::Any,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("1000000 bytes"), "{e}");
    assert!(store.get(&ap_key("retail", "big")).await.unwrap().is_none());
    let small = store
        .put(ap("retail", "small", json!({}), json!({})), Expect::Any)
        .await
        .unwrap();
    let e = store
        .put_status(
            &ap_key("retail", "small"),
            json!({ "blob": big }),
            Expect::Any,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }), "{e}");

    // Two 900 kB objects: each fits, together they are more than etcd takes in one request.
    let chunk = "y".repeat(900_000);
    let writes = vec![
        Write::Put(
            ap("retail", "c1", json!({}), json!({ "blob": chunk })),
            Expect::Any,
        ),
        Write::Put(
            ap("retail", "c2", json!({}), json!({ "blob": chunk })),
            Expect::Any,
        ),
    ];
    let result = store.transaction(writes).await;
    if matches!(h.backend, Backend::Etcd(_)) {
        let e = result.unwrap_err();
        assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("max-request-bytes"), "{e}");
        assert!(store.get(&ap_key("retail", "c1")).await.unwrap().is_none());
    } else {
        // The memory store has no request limit.
        assert_eq!(result.unwrap().len(), 2);
    }
    assert_eq!(
        store
            .get(&ap_key("retail", "small"))
            .await
            .unwrap()
            .unwrap(),
        small.object
    );
}
