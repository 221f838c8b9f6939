//! xDS end to end with real processes: `causeway controller`, `causeway gateway --xds`,
//! `causeway demo-app` backends and a real Envoy sidecar bootstrapped by `causeway bootstrap`.
//!
//! Every process listens on 127.0.0.1 with a free port (tests run in parallel with other
//! people's federations on the fixed 127.0.N.1 addresses) and is killed on every exit path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Controller, Guard, bin, free_port, text};

/// `causeway demo-app` answering `[VERSION] ...`.
fn demo_app(port: u16, version: &str) -> Guard {
    Guard(
        Command::new(bin())
            .args(["demo-app", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--app-version", version])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `causeway gateway --xds` for cluster `cluster` at 127.0.0.1, admin on `admin`.
fn gateway(
    c: &Controller,
    cluster: &str,
    locality: &str,
    id: &str,
    dir: &Path,
    admin: u16,
) -> Guard {
    let log = std::fs::File::create(dir.join(format!("{id}.log"))).unwrap();
    Guard(
        Command::new(bin())
            .args(["gateway", "--concurrency", "1", "--xds"])
            .arg(format!("http://127.0.0.1:{}", c.xds))
            .args(["--cluster", cluster, "--address", "127.0.0.1"])
            .args(["--locality", locality, "--node-id", id])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// A real Envoy sidecar of `cluster` in namespace retail, outbound listener on `listen`.
fn envoy_sidecar(c: &Controller, cluster: &str, locality: &str, listen: u16, dir: &Path) -> Guard {
    let out = c.causeway(&[
        "bootstrap",
        "--cluster",
        cluster,
        "--node-id",
        "sidecar-1",
        "--namespace",
        "retail",
        "--locality",
        locality,
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "--xds",
        &format!("127.0.0.1:{}", c.xds),
        "--admin",
        "127.0.0.1:0",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let boot = dir.join("bootstrap.json");
    std::fs::write(&boot, &out.stdout).unwrap();
    let envoy = std::env::var("CAUSEWAY_ENVOY").unwrap_or_else(|_| "envoy".into());
    let base_id = (std::process::id() % 100_000) * 20 + 11;
    Guard(
        Command::new(&envoy)
            .arg("-c")
            .arg(&boot)
            .args(["--disable-hot-restart", "-l", "warning", "--base-id"])
            .arg(base_id.to_string())
            .arg("--log-path")
            .arg(dir.join("envoy.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run Envoy ({envoy}): {e}; run scripts/install-deps")
            }),
    )
}

/// One HTTP/1.1 request with `Connection: close`; `(status, body)`, or `None` when the
/// connection fails.
fn get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map(|x| x.1.to_owned())?;
    Some((code, body))
}

/// Requests our gateway has answered so far (from its admin `/stats/prometheus`).
fn requests_served(admin: u16) -> u64 {
    get(admin, "127.0.0.1", "/stats/prometheus")
        .map(|(_, body)| {
            body.lines()
                .filter(|l| l.starts_with("causeway_gateway_requests_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        })
        .unwrap_or(0)
}

fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster_yaml(name: &str, region: &str, zone: &str, http: u16, https: u16) -> String {
    format!(
        "apiVersion: causeway.io/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  locality: {{region: {region}, zone: {zone}}}
  network: net-{region}
  environment: prod
  role: Gateway
  gateways: [{{address: 127.0.0.1, ports: {{http: {http}, https: {https}}}}}]
"
    )
}

fn backend_yaml(name: &str, cluster: &str, port: u16, version: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: retail}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: shop, version: {version}, topology.istio.io/cluster: {cluster}}}
"
    )
}

/// A configuration one proxy rejects: an AccessPoint whose certificate Secret holds no parsable
/// certificate. The controller accepts it (the Secret has the keys it needs), c1's gateway
/// cannot load it and NACKs; the NACK is counted in the AccessPoint's status, the gateway keeps
/// serving its previous configuration, and the other proxies (an Envoy sidecar of the same
/// cluster) are unaffected.
#[test]
fn a_rejected_config_is_counted_on_its_object_and_changes_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), free_port());
    let (http, https, app) = (free_port(), free_port(), free_port());
    let _app = demo_app(app, "c1-v1");
    c.apply(
        dir.path(),
        "federation.yaml",
        &format!(
            "{}---\n{}---
apiVersion: causeway.io/v1alpha1
kind: AccessPoint
metadata: {{name: shop, namespace: retail}}
spec:
  hosts: [shop.example.com]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
  http: [{{route: [{{destination: {{service: shop, port: {app}}}}}]}}]
  placement: {{clusters: [c1]}}
---
apiVersion: causeway.io/v1alpha1
kind: NameService
metadata: {{name: shop-global, namespace: retail}}
spec:
  fqdn: shop.global
  targets: [{{accessPoint: shop}}]
",
            cluster_yaml("c1", "us-west", "us-west-a", http, https),
            backend_yaml("shop-c1", "c1", app, "v1"),
        ),
    );
    let _gw = gateway(
        &c,
        "c1",
        "us-west/us-west-a",
        "gw-c1",
        dir.path(),
        free_port(),
    );
    let listen = free_port();
    let _envoy = envoy_sidecar(&c, "c1", "us-west/us-west-a", listen, dir.path());
    eventually("shop through the gateway", Duration::from_secs(20), || {
        get(http, "shop.example.com", "/route1").filter(|(code, _)| *code == 200)
    });
    eventually("shop through the sidecar", Duration::from_secs(20), || {
        get(listen, "shop.global", "/route1").filter(|(code, _)| *code == 200)
    });
    let out = c.causeway(&["status", "--proxies", "--wait", "20s"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    // The rejected change: a new AccessPoint on c1 whose certificate does not parse.
    c.apply(
        dir.path(),
        "vault.yaml",
        &format!(
            "apiVersion: v1
kind: Secret
metadata: {{name: vault-cert, namespace: retail}}
type: kubernetes.io/tls
stringData: {{tls.crt: not-a-certificate, tls.key: not-a-key}}
---
apiVersion: causeway.io/v1alpha1
kind: AccessPoint
metadata: {{name: vault, namespace: retail}}
spec:
  hosts: [vault.example.com]
  listeners: [{{name: https, port: 443, protocol: HTTPS, tls: {{mode: SIMPLE, credentialRef: {{name: vault-cert}}}}}}]
  http: [{{route: [{{destination: {{service: shop, port: {app}}}}}]}}]
  placement: {{clusters: [c1]}}
"
        ),
    );
    let vault = eventually(
        "the NACK in the AccessPoint's status",
        Duration::from_secs(20),
        || {
            let v = c.get_json(&["ap", "vault", "-n", "retail"]);
            (v["status"]["proxyRejections"]["count"].as_u64() >= Some(1)
                && v["status"]["proxyRejections"]["rejectedBy"][0].is_string())
            .then_some(v)
        },
    );
    let out = c.causeway(&["get", "ap", "vault", "-n", "retail", "-o", "yaml"]);
    eprintln!("{}", text(&out.stdout));
    let rejections = &vault["status"]["proxyRejections"];
    let by = rejections["rejectedBy"][0].as_str().unwrap();
    assert!(by.starts_with("gw-c1 (c1, "), "{rejections:#}");
    assert!(by.contains("certificates[0]"), "the gateway's reason: {by}");
    assert_eq!(
        vault["status"]["clusters"][0]["phase"], "Failed",
        "{vault:#}"
    );

    // The gateway keeps its old configuration: shop still answers, vault's port is not open.
    assert_eq!(
        get(http, "shop.example.com", "/route1").map(|r| r.0),
        Some(200)
    );
    assert!(TcpStream::connect(("127.0.0.1", https)).is_err());
    // The NACK is not counted against shop, which keeps its rollout Applied.
    let shop = eventually("shop Applied", Duration::from_secs(10), || {
        let v = c.get_json(&["ap", "shop", "-n", "retail"]);
        (v["status"]["clusters"][0]["phase"] == "Applied").then_some(v)
    });
    assert!(shop["status"]["proxyRejections"].is_null(), "{shop:#}");

    // status --proxies: the gateway NACKED with its reason, the sidecar SYNCED everywhere.
    let list = c.proxies();
    let items = list["items"].as_array().unwrap();
    let gw = items.iter().find(|p| p["id"] == "gw-c1").unwrap();
    assert_eq!(gw["nacks"].as_u64().map(|n| n >= 1), Some(true), "{gw:#}");
    assert!(
        gw["types"]
            .as_object()
            .unwrap()
            .values()
            .any(|t| t["state"] == "NACKED"),
        "{gw:#}"
    );
    assert!(
        gw["lastNack"]["message"]
            .as_str()
            .unwrap()
            .contains("certificates[0]")
    );
    let sidecar = items.iter().find(|p| p["id"] == "sidecar-1").unwrap();
    assert_eq!(sidecar["synced"], true, "{sidecar:#}");
    assert_eq!(sidecar["nacks"], 0);
    let table = text(&c.causeway(&["status", "--proxies"]).stdout);
    eprintln!("{table}");
    let row = table.lines().find(|l| l.starts_with("gw-c1 ")).unwrap();
    assert!(
        row.contains("NACKED") && row.contains("certificates[0]"),
        "{table}"
    );
    assert_eq!(
        get(listen, "shop.global", "/route1").map(|r| r.0),
        Some(200),
        "the sidecar still routes"
    );

    // Fixing the Secret is accepted: the rejection is over, the count stays.
    c.apply(
        dir.path(),
        "vault-fixed.yaml",
        "apiVersion: causeway.io/v1alpha1
kind: AccessPoint
metadata: {name: vault, namespace: retail}
spec:
  hosts: [vault.example.com]
  listeners: [{name: http, port: 80, protocol: HTTP}]
  http: [{directResponse: {status: 200, body: vault}}]
  placement: {clusters: [c1]}
",
    );
    let fixed = eventually("vault Applied", Duration::from_secs(20), || {
        let v = c.get_json(&["ap", "vault", "-n", "retail"]);
        (v["status"]["clusters"][0]["phase"] == "Applied").then_some(v)
    });
    let r = &fixed["status"]["proxyRejections"];
    assert!(r["count"].as_u64() >= Some(1), "{fixed:#}");
    assert!(r["rejectedBy"].is_null(), "{fixed:#}");
}

/// A keep-alive HTTP/1.1 connection for many requests.
struct KeepAlive {
    r: BufReader<TcpStream>,
    port: u16,
}

impl KeepAlive {
    fn open(port: u16) -> KeepAlive {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        KeepAlive {
            r: BufReader::new(s),
            port,
        }
    }

    /// `(status, body)`; reconnects once when the proxy closed the connection.
    fn get(&mut self, host: &str, path: &str) -> (u16, String) {
        match self.try_get(host, path) {
            Some(r) => r,
            None => {
                *self = KeepAlive::open(self.port);
                self.try_get(host, path).expect("request failed twice")
            }
        }
    }

    fn try_get(&mut self, host: &str, path: &str) -> Option<(u16, String)> {
        // One write: several small ones meet Nagle and delayed ACKs (40 ms per request).
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        self.r.get_mut().write_all(req.as_bytes()).ok()?;
        let mut status = String::new();
        if self.r.read_line(&mut status).ok()? == 0 {
            return None;
        }
        let code: u16 = status.split_whitespace().nth(1)?.parse().ok()?;
        let mut len = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).ok()?;
            let l = line.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().ok()?;
            }
            if l.starts_with("connection:") && l.contains("close") {
                close = true;
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body).ok()?;
        if close {
            *self = KeepAlive::open(self.port);
        }
        Some((code, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The cluster a demo-app answer came from (`[c1] ...` → `c1`).
fn origin(body: &str) -> &str {
    body.strip_prefix('[')
        .and_then(|b| b.split_once(']'))
        .map_or("?", |(v, _)| v)
}

/// A loopback address other than 127.0.0.1 where `port` is free, for backends that must share a
/// port number (an AccessPoint route names one port for every cluster).
fn backend_ip(third: u8, port: u16) -> String {
    let ip = format!("127.77.{third}.21");
    std::net::TcpListener::bind((ip.as_str(), port)).expect("loopback alias free");
    ip
}

/// Through a real Envoy sidecar of c1 (us-west), a NameService host splits 99/1 between the
/// us-west (c1) and us-east (c3) gateways — our `causeway gateway --xds` processes with demo-app
/// backends; an AccessPoint change reaches both paths within 1 s of apply; stopping c1's gateway
/// moves all traffic to c3 within the outlier detection interval + 1 s.
///
/// Tolerance of the split: c3's share over n = 10,000 requests is binomial with p = 0.01 if
/// Envoy picked localities at random: mean 100, σ = √(n·p·(1−p)) ≈ 9.95. We accept 50..=150
/// (±5σ: a correct proxy fails this less than once in a million runs) and print the count.
/// Envoy's locality-weighted picking is in fact a deterministic weighted round robin, so the
/// count lands within a few requests of 100.
#[test]
fn envoy_splits_99_to_1_by_locality_follows_changes_and_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let c = Controller::start(dir.path(), free_port());
    let (http1, https1, http3, https3) = (free_port(), free_port(), free_port(), free_port());
    let app = free_port();
    let (ip1, ip3) = (backend_ip(1, app), backend_ip(3, app));
    let demo = |ip: &str, v: &str| {
        Guard(
            Command::new(bin())
                .args(["demo-app", "--listen", &format!("{ip}:{app}")])
                .args(["--app-version", v])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let (_a1, _a3) = (demo(&ip1, "c1"), demo(&ip3, "c3"));
    let ap = |extra: &str| {
        format!(
            "apiVersion: causeway.io/v1alpha1
kind: AccessPoint
metadata: {{name: shop, namespace: retail}}
spec:
  hosts: [shop.example.com]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
  http: [{{route: [{{destination: {{service: shop, port: {app}}}}}]{extra}}}]
  placement: {{clusters: [c1, c3]}}
"
        )
    };
    let we = |name: &str, cluster: &str, ip: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: retail}}
spec:
  address: {ip}
  ports: {{http: {app}}}
  labels: {{app: shop, topology.istio.io/cluster: {cluster}}}
"
        )
    };
    c.apply(
        dir.path(),
        "federation.yaml",
        &format!(
            "{}---\n{}---\n{}---\n{}---\n{}---
apiVersion: causeway.io/v1alpha1
kind: NameService
metadata: {{name: shop-global, namespace: retail}}
spec:
  fqdn: shop.global
  ports: [{{number: 80, protocol: HTTP, name: http}}]
  targets: [{{accessPoint: shop}}]
  trafficPolicy:
    locality:
      distribute:
      - {{from: \"us-west/*\", to: {{\"us-west/*\": 99, \"us-east/*\": 1}}}}
    outlierDetection: {{consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}
",
            cluster_yaml("c1", "us-west", "us-west-a", http1, https1),
            cluster_yaml("c3", "us-east", "us-east-a", http3, https3),
            we("shop-c1", "c1", &ip1),
            we("shop-c3", "c3", &ip3),
            ap(""),
        ),
    );
    let mut gw1 = gateway(
        &c,
        "c1",
        "us-west/us-west-a",
        "gw-c1",
        dir.path(),
        free_port(),
    );
    let _gw3 = gateway(
        &c,
        "c3",
        "us-east/us-east-a",
        "gw-c3",
        dir.path(),
        free_port(),
    );
    let listen = free_port();
    let _envoy = envoy_sidecar(&c, "c1", "us-west/us-west-a", listen, dir.path());
    for port in [http1, http3] {
        eventually("both gateways", Duration::from_secs(20), || {
            get(port, "shop.example.com", "/route1").filter(|(code, _)| *code == 200)
        });
    }
    let out = c.causeway(&["status", "--proxies", "--wait", "20s"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    eprintln!("{}", text(&out.stdout));
    eventually("the sidecar's listener", Duration::from_secs(20), || {
        get(listen, "shop.global", "/route1").filter(|(code, _)| *code == 200)
    });
    let out = c.causeway(&["status", "--proxies", "--wait", "20s"]);
    eprintln!("{}", text(&out.stdout));
    // Both localities' endpoints reached Envoy: wait until c3 has answered once.
    let mut conn = KeepAlive::open(listen);
    eventually(
        "an answer from c3 through Envoy",
        Duration::from_secs(20),
        || {
            let (code, body) = conn.get("shop.global", "/route1");
            (code == 200 && origin(&body) == "c3").then_some(())
        },
    );

    // 10,000 requests: 99/1.
    let n = 10_000;
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    let started = Instant::now();
    for _ in 0..n {
        let (code, body) = conn.get("shop.global", "/route1");
        assert_eq!(code, 200, "{body}");
        *counts.entry(origin(&body).to_owned()).or_default() += 1;
    }
    let c3 = counts.get("c3").copied().unwrap_or(0);
    eprintln!(
        "locality split over {n} requests through Envoy: {counts:?} ({:.2}% to us-east; in {:?})",
        f64::from(c3) * 100.0 / f64::from(n),
        started.elapsed()
    );
    assert_eq!(counts.values().sum::<u32>(), n, "{counts:?}");
    assert!((50..=150).contains(&c3), "c3 got {c3} of {n}: {counts:?}");

    // An AccessPoint change (/route1 rewritten to /route2) through our gateway and through
    // Envoy, measured from the start of the apply.
    let applied = Instant::now();
    c.apply(
        dir.path(),
        "ap-change.yaml",
        &ap(", match: [{uri: {prefix: /route1}}], rewrite: {uri: /route2}"),
    );
    let mut gw_seen = None;
    let mut envoy_seen = None;
    let deadline = applied + Duration::from_secs(1);
    while gw_seen.is_none() || envoy_seen.is_none() {
        if gw_seen.is_none()
            && get(http1, "shop.example.com", "/route1").is_some_and(|(_, b)| b.contains("route2"))
        {
            gw_seen = Some(applied.elapsed());
        }
        if envoy_seen.is_none() && conn.get("shop.global", "/route1").1.contains("route2") {
            envoy_seen = Some(applied.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "the AccessPoint change was not served within 1 s of apply (gateway: {gw_seen:?}, \
             Envoy: {envoy_seen:?})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "AccessPoint change served {gw_seen:?} (our gateway) and {envoy_seen:?} (through Envoy) \
         after the start of `causeway apply`"
    );

    // Stop c1's gateway: Envoy ejects it (3 consecutive failures) and sends everything to c3.
    let interval = Duration::from_secs(1);
    let _ = gw1.0.kill();
    let _ = gw1.0.wait();
    let stopped = Instant::now();
    let mut failed = 0;
    let mut streak = 0;
    let mut first_of_streak = None;
    while streak < 50 {
        let (code, body) = conn.get("shop.global", "/route1");
        if code == 200 && origin(&body) == "c3" {
            if streak == 0 {
                first_of_streak = Some(stopped.elapsed());
            }
            streak += 1;
        } else {
            failed += usize::from(code != 200);
            streak = 0;
        }
        assert!(
            stopped.elapsed() < interval + Duration::from_secs(1) || streak > 0,
            "no failover within the outlier interval + 1 s ({failed} failed requests)"
        );
    }
    let took = first_of_streak.unwrap();
    eprintln!(
        "failover to us-east: {took:?} after stopping c1's gateway ({failed} requests failed \
         before the ejection; bound {:?})",
        interval + Duration::from_secs(1)
    );
    assert!(took < interval + Duration::from_secs(1));
}

/// A controller restart under load (memory store in the same `--data-dir`, same xDS address):
/// wrk through the Envoy sidecar and through our gateway sees no failed request, and every proxy
/// reconnects and is SYNCED again.
#[test]
fn controller_restart_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let xds = free_port();
    let mut c = Controller::start(dir.path(), xds);
    let (http, https, app) = (free_port(), free_port(), free_port());
    let _app = demo_app(app, "c1");
    c.apply(
        dir.path(),
        "federation.yaml",
        &format!(
            "{}---\n{}---
apiVersion: causeway.io/v1alpha1
kind: AccessPoint
metadata: {{name: shop, namespace: retail}}
spec:
  hosts: [shop.example.com]
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
  http: [{{route: [{{destination: {{service: shop, port: {app}}}}}]}}]
  placement: {{clusters: [c1]}}
---
apiVersion: causeway.io/v1alpha1
kind: NameService
metadata: {{name: shop-global, namespace: retail}}
spec:
  fqdn: shop.global
  targets: [{{accessPoint: shop}}]
",
            cluster_yaml("c1", "us-west", "us-west-a", http, https),
            backend_yaml("shop-c1", "c1", app, "v1"),
        ),
    );
    let admin = free_port();
    let _gw = gateway(&c, "c1", "us-west/us-west-a", "gw-c1", dir.path(), admin);
    let listen = free_port();
    let _envoy = envoy_sidecar(&c, "c1", "us-west/us-west-a", listen, dir.path());
    for (port, host) in [(http, "shop.example.com"), (listen, "shop.global")] {
        eventually("traffic", Duration::from_secs(20), || {
            get(port, host, "/route1").filter(|(code, _)| *code == 200)
        });
    }
    let out = c.causeway(&["status", "--proxies", "--wait", "20s"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let wrk = |port: u16, host: &str| {
        Command::new("wrk")
            .args(["-t1", "-c4", "-d6s", "-H", &format!("Host: {host}")])
            .arg(format!("http://127.0.0.1:{port}/route1"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk is installed (scripts/install-deps)")
    };
    let through_envoy = Guard(wrk(listen, "shop.global"));
    let through_gateway = Guard(wrk(http, "shop.example.com"));
    // The restart happens under load: wait until both wrk runs are flowing through the
    // gateway (every request, direct or through Envoy, ends there).
    let before = requests_served(admin);
    eventually(
        "wrk load through the gateway",
        Duration::from_secs(10),
        || (requests_served(admin) >= before + 200).then_some(()),
    );
    let restart = Instant::now();
    drop(c);
    c = Controller::start(dir.path(), xds);
    eprintln!("controller restarted in {:?}", restart.elapsed());
    // Both proxies reconnect (each with its own backoff) and are SYNCED again.
    eventually("both proxies SYNCED again", Duration::from_secs(30), || {
        let list = c.proxies();
        let items = list["items"].as_array()?.clone();
        ["gw-c1", "sidecar-1"]
            .iter()
            .all(|id| items.iter().any(|p| p["id"] == *id && p["synced"] == true))
            .then_some(())
    });
    let table = text(&c.causeway(&["status", "--proxies"]).stdout);
    eprintln!(
        "resynced {:?} after the restart began:\n{table}",
        restart.elapsed()
    );
    for (name, g) in [("Envoy", through_envoy), ("gateway", through_gateway)] {
        let mut g = g;
        let mut report = String::new();
        g.0.stdout
            .take()
            .unwrap()
            .read_to_string(&mut report)
            .unwrap();
        let _ = g.0.wait();
        eprintln!("wrk through {name}:\n{report}");
        assert!(report.contains("requests in"), "{report}");
        assert!(
            !report.contains("Non-2xx"),
            "failed requests through {name}:\n{report}"
        );
        assert!(
            !report.contains("Socket errors"),
            "socket errors through {name}:\n{report}"
        );
    }
}
