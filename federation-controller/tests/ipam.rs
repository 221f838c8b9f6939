//! VIP allocation through the store: the rules on the memory store, and two controllers
//! allocating for 500 AccessPoints at once on one real etcd (and on one memory store).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "store_support/etcd.rs"]
mod etcd_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use causeway_controller::ipam::{self, Allocation, Ipam, IpamError, Owner, Request};
use causeway_controller::store::memory::{MemoryOptions, MemoryStore};
use causeway_controller::store::{ObjectKey, ResourceType, Selector, Store};
use causeway_crds::v1alpha1::AccessPoint;
use serde_json::json;

fn pools(config: &[(&str, &[&str])]) -> BTreeMap<String, ipam::Pool> {
    let config: BTreeMap<String, Vec<String>> = config
        .iter()
        .map(|(name, cidrs)| {
            (
                (*name).to_owned(),
                cidrs.iter().map(|c| (*c).to_owned()).collect(),
            )
        })
        .collect();
    ipam::pools(&config).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn default_pools() -> BTreeMap<String, ipam::Pool> {
    pools(&[
        ("default", &["10.240.0.0/24"]),
        ("small", &["10.250.0.0/30"]),
        ("other", &["10.241.0.0/24"]),
    ])
}

async fn allocation_objects(store: &dyn Store) -> Vec<String> {
    let mut names: Vec<String> = store
        .list(
            &ResourceType::new(ipam::GROUP, "VipAllocation"),
            None,
            &Selector::everything(),
        )
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o["spec"]["address"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn allocation_rules() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ipam = Ipam::new(store.clone(), default_pools());
    let shop = Owner::new("retail", "shop");
    let cart = Owner::new("retail", "cart");

    let a = ipam
        .allocate(&shop, &Request::pool("default"))
        .await
        .unwrap();
    assert_eq!(a.pool, "default");
    assert!(ipam.pools()["default"].index_of(a.address).is_some());
    // Stable: the same owner gets the same answer, also from another allocator (a restarted
    // controller) that has never seen it.
    assert_eq!(
        ipam.allocate(&shop, &Request::pool("default"))
            .await
            .unwrap(),
        a
    );
    let other = Ipam::new(store.clone(), default_pools());
    assert_eq!(
        other
            .allocate(&shop, &Request::pool("default"))
            .await
            .unwrap(),
        a
    );
    assert_eq!(other.get(&shop).await.unwrap(), Some(a.clone()));

    let b = ipam
        .allocate(&cart, &Request::pool("default"))
        .await
        .unwrap();
    assert_ne!(a.address, b.address);

    // A specific address.
    let fixed = Owner::new("payments", "api");
    let want = Request {
        pool: "default".to_owned(),
        address: Some(ip("10.240.0.50")),
    };
    let c = ipam.allocate(&fixed, &want).await.unwrap();
    assert_eq!(c.address, ip("10.240.0.50"));
    match ipam.allocate(&Owner::new("payments", "thief"), &want).await {
        Err(IpamError::AddressTaken { owner, .. }) => assert_eq!(owner, "payments/api"),
        other => panic!("expected AddressTaken, got {other:?}"),
    }
    let outside = Request {
        pool: "default".to_owned(),
        address: Some(ip("10.241.0.5")),
    };
    assert!(matches!(
        ipam.allocate(&fixed, &outside).await,
        Err(IpamError::NotInPool { .. })
    ));
    let e = ipam
        .allocate(&fixed, &Request::pool("nope"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("default, other, small"), "{e}");

    // Changing the pool moves the owner, releasing its old address in the same step.
    let moved = ipam
        .allocate(&fixed, &Request::pool("other"))
        .await
        .unwrap();
    assert_eq!(moved.pool, "other");
    let held = allocation_objects(store.as_ref()).await;
    assert!(!held.contains(&"10.240.0.50".to_owned()), "{held:?}");
    assert_eq!(held.len(), 3);

    // Release frees the address; releasing twice is fine.
    assert_eq!(ipam.release(&cart).await.unwrap(), Some(b.address));
    assert_eq!(ipam.release(&cart).await.unwrap(), None);
    assert_eq!(ipam.get(&cart).await.unwrap(), None);
    assert_eq!(allocation_objects(store.as_ref()).await.len(), 2);

    // A pool runs out, and an address comes back only after its release.
    let small: Vec<Owner> = (0..3).map(|i| Owner::new("s", format!("o{i}"))).collect();
    let x = ipam
        .allocate(&small[0], &Request::pool("small"))
        .await
        .unwrap();
    let y = ipam
        .allocate(&small[1], &Request::pool("small"))
        .await
        .unwrap();
    assert_ne!(x.address, y.address);
    let e = ipam
        .allocate(&small[2], &Request::pool("small"))
        .await
        .unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { size: 2, .. }), "{e}");
    assert!(e.to_string().contains("10.250.0.0/30"), "{e}");
    // Another controller releases; this one sees it when the pool looks full.
    other.release(&small[0]).await.unwrap();
    let z = ipam
        .allocate(&small[2], &Request::pool("small"))
        .await
        .unwrap();
    assert_eq!(z.address, x.address);

    // Owners deleted while no controller watched are found and released.
    let live: BTreeSet<Owner> = [shop.clone(), small[1].clone()].into();
    let released = ipam.release_orphans(&live).await.unwrap();
    let mut released: Vec<String> = released.iter().map(|a| a.owner.to_string()).collect();
    released.sort();
    assert_eq!(released, ["payments/api", "s/o2"]);
    let mut left: Vec<Owner> = ipam
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.owner)
        .collect();
    left.sort();
    assert_eq!(left, live.into_iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn allocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let owners: Vec<Owner> = (0..20)
        .map(|i| Owner::new("retail", format!("ap-{i}")))
        .collect();
    let mut before = Vec::new();
    {
        let store = MemoryStore::open(MemoryOptions::persistent(dir.path())).unwrap();
        let ipam = Ipam::new(Arc::new(store), default_pools());
        for o in &owners {
            before.push(ipam.allocate(o, &Request::pool("default")).await.unwrap());
        }
        ipam.release(&owners[3]).await.unwrap();
    }
    let store = MemoryStore::open(MemoryOptions::persistent(dir.path())).unwrap();
    let ipam = Ipam::new(Arc::new(store), default_pools());
    ipam.load().await.unwrap();
    for (i, o) in owners.iter().enumerate() {
        if i == 3 {
            assert_eq!(ipam.get(o).await.unwrap(), None);
        } else {
            assert_eq!(ipam.get(o).await.unwrap().as_ref(), Some(&before[i]));
        }
    }
}

/// Two controllers, each with its own store client, both allocate for every one of 500
/// AccessPoints at the same time, from a pool of 510 addresses. Then 100 are deleted and 100
/// new ones allocated, and the pool is filled to the last address.
async fn two_controllers(first: Arc<dyn Store>, second: Arc<dyn Store>, label: &str) {
    const OWNERS: usize = 500;
    let pools = pools(&[("default", &["10.240.0.0/23"])]);
    let size = pools["default"].size();
    assert_eq!(size, 510);
    let controllers = [
        Arc::new(Ipam::new(first.clone(), pools.clone())),
        Arc::new(Ipam::new(second, pools)),
    ];
    let owners: Vec<Owner> = (0..OWNERS)
        .map(|i| Owner::new(format!("ns-{}", i % 7), format!("ap-{i}")))
        .collect();

    let allocate_all = |owners: Vec<Owner>| {
        let controllers = controllers.clone();
        async move {
            let mut tasks = Vec::new();
            for owner in &owners {
                for c in &controllers {
                    let (c, owner) = (c.clone(), owner.clone());
                    tasks.push(tokio::spawn(async move {
                        c.allocate(&owner, &Request::pool("default")).await
                    }));
                }
            }
            let mut got: BTreeMap<Owner, Vec<Allocation>> = BTreeMap::new();
            for task in tasks {
                let a = task.await.unwrap().unwrap();
                got.entry(a.owner.clone()).or_default().push(a);
            }
            got
        }
    };

    let started = Instant::now();
    let got = allocate_all(owners.clone()).await;
    let elapsed = started.elapsed();
    assert_eq!(got.len(), OWNERS);
    let mut addresses = BTreeSet::new();
    for (owner, answers) in &got {
        assert_eq!(answers.len(), 2);
        assert_eq!(
            answers[0], answers[1],
            "both controllers agree on the VIP of {owner}"
        );
        assert!(
            addresses.insert(answers[0].address),
            "{} given twice",
            answers[0].address
        );
    }
    let stored = allocation_objects(first.as_ref()).await;
    assert_eq!(stored.len(), OWNERS, "one allocation object per VIP");
    println!(
        "{label}: {} concurrent allocations (2 controllers x {OWNERS} AccessPoints, pool of \
         {size}) in {elapsed:?}",
        2 * OWNERS
    );

    // Delete 100 (half through each controller) and create 100 new ones.
    let mut released = BTreeSet::new();
    for (i, owner) in owners.iter().take(100).enumerate() {
        let address = controllers[i % 2].release(owner).await.unwrap().unwrap();
        assert_eq!(address, got[owner][0].address);
        released.insert(address);
    }
    let held: BTreeSet<IpAddr> = addresses.difference(&released).copied().collect();
    let fresh: Vec<Owner> = (0..100)
        .map(|i| Owner::new("fresh", format!("ap-{i}")))
        .collect();
    let again = allocate_all(fresh).await;
    for answers in again.values() {
        assert_eq!(answers[0], answers[1]);
        assert!(
            !held.contains(&answers[0].address),
            "{} was still held",
            answers[0].address
        );
    }
    let live = allocation_objects(first.as_ref()).await;
    assert_eq!(live.len(), OWNERS);
    assert_eq!(live.iter().collect::<BTreeSet<_>>().len(), OWNERS);

    // Fill the pool to the last address, then it is full.
    let last: Vec<Owner> = (0..10)
        .map(|i| Owner::new("last", format!("ap-{i}")))
        .collect();
    let filled = allocate_all(last).await;
    assert_eq!(filled.len(), 10);
    assert_eq!(allocation_objects(first.as_ref()).await.len(), 510);
    let e = controllers[1]
        .allocate(
            &Owner::new("last", "one-too-many"),
            &Request::pool("default"),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { .. }), "{e}");

    // The claims and the allocations agree.
    for a in controllers[0].list().await.unwrap() {
        let key = ObjectKey::cluster_scoped(
            ResourceType::new(ipam::GROUP, "VipAllocation"),
            a.address.to_string().replace('.', "-"),
        );
        let object = first.get(&key).await.unwrap().unwrap();
        assert_eq!(object["spec"]["owner"]["name"], a.owner.name.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_on_one_etcd_never_give_a_vip_twice() {
    let etcd = etcd_support::Etcd::start().await;
    let first: Arc<dyn Store> = Arc::new(etcd.store().await);
    let second: Arc<dyn Store> = Arc::new(etcd.store().await);
    two_controllers(first, second, "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_on_one_memory_store_never_give_a_vip_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(MemoryStore::open(MemoryOptions::persistent(dir.path())).unwrap());
    two_controllers(store.clone(), store, "memory with data dir").await;
}

fn access_point(ns: &str, name: &str, vip: serde_json::Value) -> AccessPoint {
    serde_json::from_value(json!({
        "apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [format!("{name}.example.com")], "vip": vip,
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn reconcile_access_points() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ipam = Ipam::new(store.clone(), default_pools());
    let owner = |name: &str| Owner::new("retail", name);
    let aps = vec![
        access_point("retail", "shop", json!({})),
        access_point("retail", "shop-alias", json!({"shareWith": "shop"})),
        access_point("retail", "fixed", json!({"address": "10.240.0.77"})),
        access_point("retail", "dangling", json!({"shareWith": "nope"})),
        access_point("retail", "chained", json!({"shareWith": "shop-alias"})),
        access_point("retail", "lost", json!({"pool": "nowhere"})),
        access_point("retail", "bad", json!({"address": "ten.dot"})),
    ];
    let got = ipam.reconcile(&aps).await.unwrap();
    assert_eq!(got.len(), 7);
    let shop = *got[&owner("shop")].as_ref().unwrap();
    assert_eq!(*got[&owner("shop-alias")].as_ref().unwrap(), shop);
    assert_eq!(*got[&owner("fixed")].as_ref().unwrap(), ip("10.240.0.77"));
    let e = got[&owner("dangling")].as_ref().unwrap_err().to_string();
    assert!(e.contains("no such AccessPoint"), "{e}");
    let e = got[&owner("chained")].as_ref().unwrap_err().to_string();
    assert!(e.contains("shares another"), "{e}");
    assert!(matches!(
        got[&owner("lost")],
        Err(IpamError::UnknownPool { .. })
    ));
    assert!(matches!(
        got[&owner("bad")],
        Err(IpamError::InvalidAddress { .. })
    ));
    // Only the two owners hold addresses.
    assert_eq!(allocation_objects(store.as_ref()).await.len(), 2);

    // shop is deleted and its alias gets a VIP of its own; fixed keeps its address.
    let aps = vec![
        access_point("retail", "shop-alias", json!({})),
        access_point("retail", "fixed", json!({"address": "10.240.0.77"})),
    ];
    let again = ipam.reconcile(&aps).await.unwrap();
    assert_eq!(*again[&owner("fixed")].as_ref().unwrap(), ip("10.240.0.77"));
    let alias = *again[&owner("shop-alias")].as_ref().unwrap();
    let held = allocation_objects(store.as_ref()).await;
    assert_eq!(held.len(), 2);
    assert!(held.contains(&alias.to_string()));
    assert_eq!(ipam.get(&owner("shop")).await.unwrap(), None);
}
