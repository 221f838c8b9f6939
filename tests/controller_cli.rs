//! `causeway controller` with `apply`, `get` and `delete` against it, as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../federation-controller/tests/store_support/etcd.rs"]
mod etcd_support;

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Controller, Guard, free_port, repo};

/// What these tests add to the shared controller handle.
trait ControllerExt {
    fn token(&self) -> String;
    fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String);
}

impl ControllerExt for Controller {
    fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A raw HTTP/1.1 request; returns status and body.
    fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let addr = self.url.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let body = body.unwrap_or("");
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = resp
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_owned())
            .unwrap_or_default();
        (code, body)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn apply_get_delete_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), 0);

    let out = c.causeway(&["apply", "-f", "deploy/examples/"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    for want in [
        "cluster.causeway.io/c1 created",
        "cluster.causeway.io/c3 created",
        "accesspoint.causeway.io/shop created",
        "nameservice.causeway.io/shop-global created",
        "externalservice.causeway.io/payments created",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "{want} missing in {lines:?}"
        );
    }
    // Idempotent: a second apply changes nothing.
    let out = c.causeway(&["apply", "-f", "deploy/examples/"]);
    assert!(
        stdout(&out).lines().all(|l| l.ends_with(" unchanged")),
        "{}",
        stdout(&out)
    );

    let out = c.causeway(&["get", "clusters"]);
    let table = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "REGION", "ZONE", "ROLE", "PHASE", "PROXIES", "AGE"]
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("c3") && l.contains("us-east") && l.contains("Gateway")),
        "{table}"
    );

    let out = c.causeway(&["get", "ap", "shop", "-n", "retail", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spec"]["hosts"][0], "shop.example.com");
    assert_eq!(v["metadata"]["generation"], 1);

    // An invalid change is refused with its field path and nothing is stored.
    let bad = dir.path().join("bad.yaml");
    let mut text =
        std::fs::read_to_string(repo().join("deploy/examples/02-accesspoint-shop.yaml")).unwrap();
    text = text.replace(
        "- {name: http, port: 80, protocol: HTTP}",
        "- {name: http, port: 443, protocol: HTTP}",
    );
    std::fs::write(&bad, text).unwrap();
    let out = c.causeway(&["apply", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("AccessPoint/shop: spec.listeners[1].port: port 443 is already used"),
        "{}",
        stdout(&out)
    );
    let out = c.causeway(&["get", "ap", "shop", "-n", "retail", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["spec"]["listeners"][0]["port"], 80,
        "the invalid object must not be stored"
    );

    let out = c.causeway(&["delete", "accesspoint", "vault", "-n", "security"]);
    assert_eq!(
        stdout(&out).trim(),
        "accesspoints.causeway.io \"vault\" deleted"
    );
    let out = c.causeway(&["get", "ap", "vault", "-n", "security"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));

    // A restart with the same data directory loses nothing.
    drop(c);
    let c = Controller::start(dir.path(), 0);
    let out = c.causeway(&["get", "ap", "-A", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop"]);
}

#[test]
fn api_refuses_bad_tokens_invalid_objects_and_stale_writes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), 0);
    let token = c.token();
    assert_eq!(token.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "token must be private");
    }
    let path = "/apis/causeway.io/v1alpha1/clusters/c1";
    let (code, body) = c.http("GET", path, None, None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = c.http("GET", path, Some("wrong"), None);
    assert_eq!(code, 401);

    let cluster = r#"{"apiVersion":"causeway.io/v1alpha1","kind":"Cluster","metadata":{"name":"c1"},
        "spec":{"locality":{"region":"us-west"},"gateways":[{"address":"127.0.1.1","ports":{"http":70000}}]}}"#;
    let (code, body) = c.http("PUT", path, Some(&token), Some(cluster));
    assert_eq!(code, 422, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.gateways[0].ports.http"
    );
    let (code, _) = c.http("GET", path, Some(&token), None);
    assert_eq!(code, 404, "an invalid object is never stored");

    let good = cluster.replace("70000", "8080");
    let (code, body) = c.http("PUT", path, Some(&token), Some(&good));
    assert_eq!(code, 201, "{body}");
    let stored: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rv = stored["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    // A write based on an old version conflicts.
    let newer = good.replace("us-west", "us-east");
    let (code, _) = c.http("PUT", path, Some(&token), Some(&newer));
    assert_eq!(code, 200);
    let stale = newer.replace(
        r#""name":"c1"}"#,
        &format!(r#""name":"c1","resourceVersion":"{rv}"}}"#),
    );
    let (code, body) = c.http("PUT", path, Some(&token), Some(&stale));
    assert_eq!(code, 409, "{body}");

    // The body may not name another object than the URL.
    let (code, body) = c.http(
        "PUT",
        "/apis/causeway.io/v1alpha1/clusters/c2",
        Some(&token),
        Some(&good),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("metadata.name"), "{body}");

    // Unknown kinds are 404 with the list of served ones.
    let (code, body) = c.http("GET", "/apis/causeway.io/v1alpha1/pods", Some(&token), None);
    assert_eq!(code, 404);
    assert!(body.contains("accesspoints"), "{body}");

    // Label selectors filter lists.
    let (code, body) = c.http(
        "GET",
        "/apis/causeway.io/v1alpha1/clusters?labelSelector=env%3Dprod",
        Some(&token),
        None,
    );
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    // A wrong token on the CLI says what to do.
    let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["get", "clusters", "--server", &c.url, "--token", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("refused the token"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn watch_streams_changes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), 0);
    let token = c.token();
    let addr = c.url.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "GET /apis/causeway.io/v1alpha1/clusters?watch=true HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Read until the response head arrives, so the watch is registered before the write.
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !seen.contains("\r\n\r\n") && Instant::now() < deadline {
        if let Ok(n) = s.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    let out = c.causeway(&["apply", "-f", "deploy/examples/01-clusters.yaml"]);
    assert!(out.status.success());
    while !(seen.contains(r#""type":"ADDED""#) && seen.contains(r#""name":"c3""#))
        && Instant::now() < deadline
    {
        if let Ok(n) = s.read(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(
        seen.contains(r#""name":"c3""#),
        "no ADDED event for c3 within 10s:\n{seen}"
    );
}

#[test]
fn status_and_rendered_show_what_the_controller_made_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), 0);
    let out = c.causeway(&[
        "apply",
        "-f",
        "deploy/examples/01-clusters.yaml",
        "-f",
        "deploy/examples/02-accesspoint-shop.yaml",
        "-f",
        "deploy/examples/03-nameservice-shop-global.yaml",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The loop allocates a VIP and writes status; `status` shows it (poll: it is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let out = c.causeway(&["status"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        if text.contains("10.240.") {
            break text;
        }
        assert!(Instant::now() < deadline, "no VIP in status:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for want in [
        "CLUSTERS",
        "us-west/us-west-a",
        "Unreachable",
        "ACCESSPOINTS",
        "shop.example.com,www.shop.example.com",
        "NAMESERVICES",
        "shop.global",
    ] {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }

    // No proxy is connected: --wait gives up and says why.
    let out = c.causeway(&["status", "--wait", "1s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("not ready after"), "{err}");
    assert!(err.contains("cluster c1: Unreachable"), "{err}");
    assert!(
        err.contains("Secret retail/shop-cert does not exist"),
        "the reason is shown: {err}"
    );

    // get with the status columns.
    let out = c.causeway(&["get", "ap", "-n", "retail"]);
    assert!(stdout(&out).contains("10.240."), "{}", stdout(&out));

    let out = c.causeway(&["get", "rendered", "--cluster", "c1", "-o", "yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("cluster: c1"), "{text}");
    assert!(text.contains("kind: WorkloadEntry"), "{text}");
    let out = c.causeway(&["get", "rendered", "--cluster", "c9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("\"c9\" is not registered"),
        "{}",
        stderr(&out)
    );
    let out = c.causeway(&["get", "rendered"]);
    assert!(stderr(&out).contains("--cluster"), "{}", stderr(&out));
}

/// Two controllers on one etcd: only the leader writes status; killed, the other takes over
/// within the lease TTL + 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_on_etcd() {
    let etcd = etcd_support::Etcd::start().await;
    let endpoint = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let start = |id: &str| {
        let d = dir.path().join(id);
        std::fs::create_dir_all(&d).unwrap();
        // Both controllers must accept the same token: the first one's.
        if id == "b" {
            std::fs::copy(dir.path().join("a/token"), d.join("token")).unwrap();
        }
        Controller::start_with(
            &d,
            &[
                "--store",
                "etcd",
                "--etcd-endpoints",
                &endpoint,
                "--identity",
                id,
                "--leader-ttl",
                "2s",
            ],
        )
    };
    let a = start("a");
    let b = start("b");
    let out = a.causeway(&["apply", "-f", "deploy/examples/01-clusters.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let store = etcd.store().await;
    let leader = || async {
        let resp = store
            .client()
            .clone()
            .get("/causeway/leader/controller", None)
            .await
            .unwrap();
        resp.kvs()
            .first()
            .map(|kv| kv.value_str().unwrap().to_owned())
    };
    let phase_of = |c: &Controller, name: &str| {
        let out = c.causeway(&["get", "cluster", name, "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["status"]["phase"].as_str().map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while phase_of(&b, "c1").is_none() {
        assert!(Instant::now() < deadline, "no status written");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = leader().await.expect("someone leads");
    let (mut dead, survivor) = if first == "a" { (a, b) } else { (b, a) };

    // Kill the leader (no resignation: its lease must expire), then register a new cluster
    // through the survivor. Its status appears once the survivor leads.
    dead.child.0.kill().unwrap();
    dead.child.0.wait().unwrap();
    let killed = Instant::now();
    let c4 = "apiVersion: causeway.io/v1alpha1\nkind: Cluster\nmetadata: {name: c4}\nspec:\n  locality: {region: eu-west}\n  network: n\n  environment: prod\n  role: Workload\n";
    let file = dir.path().join("c4.yaml");
    std::fs::write(&file, c4).unwrap();
    let out = survivor.causeway(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bound = Duration::from_secs(2 + 2);
    loop {
        if phase_of(&survivor, "c4").is_some() {
            break;
        }
        assert!(
            killed.elapsed() < bound + Duration::from_secs(1),
            "the survivor did not take over within TTL + 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = killed.elapsed();
    eprintln!("failover: status written by the new leader {took:?} after the kill");
    assert_ne!(leader().await, Some(first));
}

/// A one-line HTTP server standing in for cluster c1's gateway: answers every request with
/// `gateway-c1 HOST` so the test sees where the sidecar sent it and with which Host.
fn fake_gateway() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut host = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(h) = line.to_ascii_lowercase().strip_prefix("host:") {
                        host = h.trim().to_owned();
                    }
                }
                let body = format!("gateway-c1 {host}");
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// The controller's ADS feeds a real Envoy sidecar: bootstrapped with `causeway bootstrap`, it
/// routes the NameService host to the gateway of the cluster that serves it, and the controller
/// counts it as a connected proxy of its cluster.
#[test]
fn envoy_sidecar_gets_its_config_from_the_controller() {
    let xds = free_port();
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start_with(dir.path(), &["--xds-listen", &format!("127.0.0.1:{xds}")]);
    let gw = fake_gateway();
    let resources = format!(
        "apiVersion: causeway.io/v1alpha1
kind: Cluster
metadata: {{name: c1}}
spec:
  locality: {{region: us-west, zone: us-west-a}}
  network: net-west
  environment: prod
  role: Gateway
  gateways: [{{address: 127.0.0.1, ports: {{http: {gw}}}}}]
---
apiVersion: causeway.io/v1alpha1
kind: AccessPoint
metadata: {{name: shop, namespace: retail}}
spec:
  hosts: [shop.example.com]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
  http: [{{route: [{{destination: {{service: shop, port: 3000}}}}]}}]
  placement: {{clusters: [c1]}}
---
apiVersion: causeway.io/v1alpha1
kind: NameService
metadata: {{name: shop-global, namespace: retail}}
spec:
  fqdn: shop.global
  targets: [{{accessPoint: shop}}]
"
    );
    let file = dir.path().join("federation.yaml");
    std::fs::write(&file, resources).unwrap();
    let out = c.causeway(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let listen = free_port();
    let out = c.causeway(&[
        "bootstrap",
        "--cluster",
        "c1",
        "--node-id",
        "sidecar-1",
        "--namespace",
        "retail",
        "--locality",
        "us-west/us-west-a",
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--xds",
        &format!("127.0.0.1:{xds}"),
        "--admin",
        "127.0.0.1:0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let boot = dir.path().join("bootstrap.json");
    std::fs::write(&boot, &out.stdout).unwrap();
    let envoy = std::env::var("CAUSEWAY_ENVOY").unwrap_or_else(|_| "envoy".into());
    let base_id = (std::process::id() % 100_000) * 20 + 7;
    let _envoy = Guard(
        Command::new(&envoy)
            .arg("-c")
            .arg(&boot)
            .args(["--disable-hot-restart", "-l", "warning", "--base-id"])
            .arg(base_id.to_string())
            .arg("--log-path")
            .arg(dir.path().join("envoy.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run Envoy ({envoy}): {e}; run scripts/install-deps")
            }),
    );

    // Poll through the sidecar until the pushed listener and route answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let got = TcpStream::connect(("127.0.0.1", listen))
            .ok()
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                write!(
                    s,
                    "GET / HTTP/1.1\r\nHost: shop.global\r\nConnection: close\r\n\r\n"
                )
                .ok()?;
                let mut resp = String::new();
                s.read_to_string(&mut resp).ok()?;
                Some(resp)
            });
        if let Some(r) = got.filter(|r| r.starts_with("HTTP/1.1 200")) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar never routed shop.global; envoy log:\n{}",
            std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(answer.ends_with("gateway-c1 shop.global"), "{answer}");

    // `status --proxies` lists the sidecar with every type it reads SYNCED (poll: the ACKs
    // of the last responses may still be on their way).
    let out = c.causeway(&["status", "--proxies", "--wait", "10s"]);
    let table = stdout(&out);
    assert!(out.status.success(), "{table}{}", stderr(&out));
    let row = table
        .lines()
        .find(|l| l.starts_with("sidecar-1 "))
        .unwrap_or_else(|| panic!("no row for sidecar-1:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[1..4],
        ["c1", "sidecar", "us-west/us-west-a"],
        "{table}"
    );
    for t in ["CDS", "EDS", "LDS", "SRDS", "RDS"] {
        // The column whose header is exactly `t` ("RDS" is also the end of "SRDS").
        let col = table
            .lines()
            .nth(1)
            .unwrap()
            .find(&format!(" {t} "))
            .unwrap()
            + 1;
        assert!(
            row[col..].starts_with("SYNCED "),
            "{t} not SYNCED:\n{table}"
        );
    }
    // The API behind it: same token as every other path.
    let (code, _) = c.http("GET", "/apis/causeway.io/v1alpha1/proxies", None, None);
    assert_eq!(code, 401);
    let (code, body) = c.http(
        "GET",
        "/apis/causeway.io/v1alpha1/proxies",
        Some(&c.token()),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let p = &v["items"][0];
    assert_eq!(p["id"], "sidecar-1", "{v:#}");
    assert_eq!(p["group"], format!("sidecar|c1|retail|127.0.0.1:{listen}"));
    assert_eq!(p["types"]["LDS"]["state"], "SYNCED", "{v:#}");
    assert_eq!(p["nacks"], 0);

    // The controller sees the sidecar as a connected proxy of c1.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.causeway(&["get", "cluster", "c1", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["status"]["proxies"] == 1 {
            // Sidecars but no gateway: the cluster is not fully served.
            assert_eq!(v["status"]["phase"], "Degraded", "{v:#}");
            break;
        }
        assert!(Instant::now() < deadline, "proxy not counted: {v:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
