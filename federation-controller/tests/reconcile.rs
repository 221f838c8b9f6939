//! The reconcile loop against a real (in-memory) store: what a user sees in the status of the
//! objects they applied — VIPs, conditions with reasons, per-cluster phases — as resources and
//! proxies come and go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use causeway_controller::reconcile::{Desired, Reconciler};
use causeway_controller::run::default_vip_pools;
use causeway_controller::status::{ClusterProxies, ProxyReport};
use causeway_controller::store::memory::MemoryStore;
use causeway_controller::store::{Expect, ObjectKey, ResourceType, Store};
use serde_json::{Value, json};
use tokio::sync::watch;

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    std::fs::read_to_string(root.join(path)).unwrap()
}

fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn ap_key(name: &str) -> ObjectKey {
    ObjectKey::namespaced(
        ResourceType::new("causeway.io", "AccessPoint"),
        "retail",
        name,
    )
}

fn cluster_key(name: &str) -> ObjectKey {
    ObjectKey::cluster_scoped(ResourceType::new("causeway.io", "Cluster"), name)
}

struct Harness {
    store: Arc<dyn Store>,
    proxies: watch::Sender<ProxyReport>,
    desired: watch::Receiver<Arc<Desired>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(store: Arc<dyn Store>) -> Harness {
    let (_leader_tx, leader) = watch::channel(Some(store.clone()));
    let (proxies, proxies_rx) = watch::channel(ProxyReport::default());
    let (desired_tx, desired) = watch::channel(Arc::new(Desired::default()));
    let r = Reconciler {
        store: store.clone(),
        leader,
        pools: causeway_controller::ipam::pools(&default_vip_pools()).unwrap(),
        proxies: proxies_rx,
        desired: desired_tx,
    };
    // Keep the leader sender alive with the task.
    let task = tokio::spawn(async move {
        let _keep = _leader_tx;
        r.run().await;
    });
    Harness {
        store,
        proxies,
        desired,
        task,
    }
}

impl Harness {
    async fn put(&self, v: Value) {
        self.store.put(v, Expect::Any).await.unwrap();
    }

    /// Polls the object until `check` passes on it, or fails with its last state.
    async fn until(&self, key: &ObjectKey, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let obj = self.store.get(key).await.unwrap().unwrap_or(Value::Null);
            if check(&obj) {
                return obj;
            }
            assert!(
                Instant::now() < deadline,
                "{key}: {what} not seen within 10 s; last state:\n{}",
                serde_yaml::to_string(&obj["status"]).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

fn tls_secret(name: &str) -> Value {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["shop.example.com".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "retail"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_tell_the_truth_as_resources_and_proxies_change() {
    let h = start(Arc::new(MemoryStore::new()));
    for d in docs(&repo_file("deploy/examples/01-clusters.yaml")) {
        h.put(d).await;
    }
    for d in docs(&repo_file("deploy/examples/02-accesspoint-shop.yaml")) {
        h.put(d).await;
    }

    // A VIP from the default pool; the certificate Secret is missing, so nothing is programmed.
    let ap = h
        .until(&ap_key("shop"), "ResolvedRefs=False", |o| {
            condition(o, "ResolvedRefs")["status"] == "False"
        })
        .await;
    let vip: IpAddr = ap["status"]["vip"].as_str().unwrap().parse().unwrap();
    assert!(vip.to_string().starts_with("10.240."), "{vip}");
    assert_eq!(condition(&ap, "Accepted")["status"], "True");
    assert_eq!(
        condition(&ap, "ResolvedRefs")["reason"],
        "InvalidCertificateRef"
    );
    assert!(
        condition(&ap, "ResolvedRefs")["message"]
            .as_str()
            .unwrap()
            .contains("Secret retail/shop-cert does not exist"),
        "{ap:#}"
    );
    assert_eq!(condition(&ap, "Programmed")["reason"], "RefNotResolved");
    assert_eq!(ap["status"]["routingConfigured"], false);
    assert_eq!(ap["status"]["certificate"]["state"], "Missing");
    assert_eq!(ap["status"]["fqdn"], "shop.example.com");
    assert_eq!(ap["status"]["observedGeneration"], 1);

    // No proxy is connected anywhere.
    let c1 = h
        .until(&cluster_key("c1"), "a phase", |o| {
            !o["status"]["phase"].is_null()
        })
        .await;
    assert_eq!(c1["status"]["phase"], "Unreachable");

    // The Secret arrives: programmed, waiting for gateways.
    h.put(tls_secret("shop-cert")).await;
    let ap = h
        .until(&ap_key("shop"), "Programmed=True", |o| {
            condition(o, "Programmed")["status"] == "True"
        })
        .await;
    assert_eq!(ap["status"]["certificate"]["state"], "Installed");
    assert!(ap["status"]["certificate"]["notAfter"].is_string());
    assert_eq!(ap["status"]["vip"], vip.to_string(), "the VIP is stable");
    let phases: Vec<&str> = ap["status"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["Pending", "Pending", "Pending"]);

    // Gateways of every cluster connect and acknowledge.
    let all_acked: ProxyReport = ["c1", "c2", "c3"]
        .into_iter()
        .map(|c| {
            (
                c.to_owned(),
                ClusterProxies {
                    gateways: 1,
                    gateways_acked: 1,
                    ..Default::default()
                },
            )
        })
        .collect();
    h.proxies.send_replace(all_acked.clone());
    let ap = h
        .until(&ap_key("shop"), "routingConfigured", |o| {
            o["status"]["routingConfigured"] == true
        })
        .await;
    assert_eq!(ap["status"]["phase"], "Ready");
    assert_eq!(condition(&ap, "RolledOut")["status"], "True");
    let c1 = h
        .until(&cluster_key("c1"), "Ready", |o| {
            o["status"]["phase"] == "Ready"
        })
        .await;
    assert_eq!(c1["status"]["proxies"], 1);

    // One gateway of c3 rejects its configuration.
    let mut report = all_acked.clone();
    {
        // As the push loop reports it: the NACK message, and the NACK attributed to shop.
        let c3 = report.get_mut("c3").unwrap();
        c3.nacks = vec!["gw-c3-0: unknown cluster".to_owned()];
        c3.gateways_acked = 0;
        c3.gateways_nacked = 1;
        c3.rejections.insert(
            causeway_controller::status::ObjectId {
                kind: "AccessPoint",
                namespace: "retail".to_owned(),
                name: "shop".to_owned(),
            },
            causeway_controller::status::ObjectRejections {
                rejected_by: vec!["gw-c3-0 (c3, RDS): unknown cluster".to_owned()],
                events: Vec::new(),
            },
        );
    }
    h.proxies.send_replace(report);
    let ap = h
        .until(&ap_key("shop"), "Degraded", |o| {
            o["status"]["phase"] == "Degraded"
        })
        .await;
    let c3 = ap["status"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "c3")
        .unwrap();
    assert_eq!(c3["phase"], "Failed");
    assert!(c3["message"].as_str().unwrap().contains("unknown cluster"));
    h.until(&cluster_key("c3"), "Degraded", |o| {
        o["status"]["phase"] == "Degraded"
    })
    .await;
    h.proxies.send_replace(all_acked);

    // A newer AccessPoint claiming the same host is refused; the older one keeps serving.
    let mut thief = docs(&repo_file("deploy/examples/02-accesspoint-shop.yaml"))
        .into_iter()
        .next()
        .unwrap();
    thief["metadata"]["name"] = json!("shop-copy");
    thief["spec"]["vip"] = json!({"pool": "default"});
    h.put(thief).await;
    let copy = h
        .until(&ap_key("shop-copy"), "Accepted=False", |o| {
            condition(o, "Accepted")["status"] == "False"
        })
        .await;
    assert_eq!(condition(&copy, "Accepted")["reason"], "HostConflict");
    assert!(
        condition(&copy, "Accepted")["message"]
            .as_str()
            .unwrap()
            .contains("already belongs to AccessPoint retail/shop"),
        "{copy:#}"
    );
    assert_eq!(copy["status"]["phase"], "Invalid");
    let shop = h.store.get(&ap_key("shop")).await.unwrap().unwrap();
    assert_eq!(condition(&shop, "Accepted")["status"], "True");
    assert_eq!(shop["status"]["phase"], "Ready");
    let copy_vip = copy["status"]["vip"].as_str().unwrap().to_owned();
    assert_ne!(copy_vip, vip.to_string(), "no VIP is given twice");

    // Deleting the original releases its VIP and hands the host to the copy.
    h.store.delete(&ap_key("shop"), Expect::Any).await.unwrap();
    h.until(&ap_key("shop-copy"), "Accepted=True", |o| {
        condition(o, "Accepted")["status"] == "True"
    })
    .await;
    let claims = ResourceType::new("ipam.causeway.io", "VipClaim");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = h
            .store
            .list(&claims, Some("retail"), &Default::default())
            .await
            .unwrap();
        let names: Vec<&str> = list
            .items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        if names == ["shop-copy"] {
            break;
        }
        assert!(Instant::now() < deadline, "claims left: {names:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What each cluster gets is rendered from the latest translation.
    let d = h.desired.borrow().clone();
    assert!(d.revision > 0);
    assert!(d.rendered("c1").is_some());
    assert!(d.rendered("nope").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_federation_writes_nothing() {
    let h = start(Arc::new(MemoryStore::new()));
    for d in docs(&repo_file("deploy/examples/01-clusters.yaml")) {
        h.put(d).await;
    }
    let c1 = h
        .until(&cluster_key("c1"), "a phase", |o| {
            !o["status"]["phase"].is_null()
        })
        .await;
    // Wait until the loop has settled: every cluster has its status.
    for c in ["c2", "c3"] {
        h.until(&cluster_key(c), "a phase", |o| {
            !o["status"]["phase"].is_null()
        })
        .await;
    }
    let before = h.store.revision().await.unwrap();
    // Nudge the loop with a proxy report that changes nothing anyone can see.
    h.proxies.send_replace(ProxyReport::default());
    // Marker writes after the nudge: the loop handles changes in order, so once it has
    // translated the second marker, any status write caused by the nudge or the first marker
    // has happened.
    for marker in ["marker-1", "marker-2"] {
        h.put(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": marker, "namespace": "retail"},
            "stringData": {"x": "y"},
        }))
        .await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while h
            .desired
            .borrow()
            .snapshot
            .secret("retail", marker)
            .is_none()
        {
            assert!(Instant::now() < deadline, "the loop never saw {marker}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let after = h.store.revision().await.unwrap();
    assert_eq!(after, before + 2, "only the markers were written");
    let c1_again = h.store.get(&cluster_key("c1")).await.unwrap().unwrap();
    assert_eq!(c1["status"], c1_again["status"]);
}
