//! `causeway l4lb --xds` against a real `causeway controller`: the balancer's admin `/state`
//! follows the AccessPoints (VIP, ports, the gateways of the placed clusters in its zone),
//! NACKs what it cannot apply and keeps the last good table, and keeps it while the controller
//! is gone.
//!
//! Root (the balancer creates a TUN device; CI runs as root). The balancer runs with
//! `--no-routes`, a unique TUN name and admin on a free loopback port, so it touches nothing
//! else on the host; the gateway addresses are never sent a packet (only health probes to
//! 127.77.x.y, which nobody answers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Guard, free_port};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_causeway")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A running controller, killed on drop.
struct Controller {
    child: Guard,
    url: String,
    data_dir: PathBuf,
}

impl Controller {
    fn start(data_dir: &Path, xds: u16) -> Controller {
        let mut child = Command::new(bin())
            .args(["controller", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--xds-listen", &format!("127.0.0.1:{xds}")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("http://") {
                    let url: String = line[i..].split_whitespace().next().unwrap().to_owned();
                    let _ = tx.send(url);
                }
            }
        });
        let child = Guard(child);
        let url = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("controller did not report its address");
        Controller {
            child,
            url,
            data_dir: data_dir.to_owned(),
        }
    }

    fn causeway(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("CAUSEWAY_SERVER", &self.url)
            .env("CAUSEWAY_DATA_DIR", &self.data_dir)
            .env_remove("CAUSEWAY_TOKEN")
            .output()
            .unwrap()
    }

    fn apply(&self, yaml: &str) {
        let file = self.data_dir.join("apply.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = self.causeway(&["apply", "-f", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    fn proxies(&self) -> Value {
        let out = self.causeway(&["status", "--proxies", "-o", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    fn vip_of(&self, name: &str) -> Option<String> {
        let out = self.causeway(&["get", "accesspoint", name, "-n", "retail", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["status"]["vip"].as_str().map(str::to_owned)
    }
}

/// `GET path` on the balancer's admin server, as JSON.
fn admin_json(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// The VIP entry `name` in the balancer's `/state`, as `(address, ports, [(backend, weight)])`.
type Entry = (String, Vec<u64>, Vec<(String, u64)>);

fn entry(state: &Value, name: &str) -> Option<Entry> {
    let v = state["vips"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?;
    let ports = v["ports"]
        .as_array()?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let backends = v["backendList"]
        .as_array()?
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap_or_default().to_owned(),
                b["weight"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    Some((v["address"].as_str()?.to_owned(), ports, backends))
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cluster(name: &str, zone: &str, gateway: &str) -> String {
    format!(
        "apiVersion: causeway.io/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  locality: {{region: us-west, zone: {zone}}}
  role: Gateway
  gateways: [{{address: {gateway}}}]
---
"
    )
}

fn access_point(name: &str, placement: &str, vip: &str) -> String {
    format!(
        "apiVersion: causeway.io/v1alpha1
kind: AccessPoint
metadata: {{name: {name}, namespace: retail}}
spec:
  hosts: [{name}.example.com]
  vip: {{pool: default{vip}}}
  listeners: [{{name: http, port: 80, protocol: HTTP}}, {{name: alt, port: 8080, protocol: HTTP}}]
  http: [{{directResponse: {{status: 200, body: {name}}}}}]
  placement: {{clusters: [{placement}]}}
"
    )
}

#[test]
fn l4lb_follows_the_controllers_vip_assignments_and_keeps_them_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let xds = free_port();
    let c = Controller::start(dir.path(), xds);
    c.apply(&format!(
        "{}{}{}{}",
        cluster("c1", "us-west-a", "127.77.1.21"),
        cluster("c2", "us-west-a", "127.77.2.21"),
        cluster("c3", "us-west-b", "127.77.3.21"),
        access_point("shop", "c1", ""),
    ));

    // A static VIP the controller will later try to take: the balancer must refuse that.
    let file = dir.path().join("vips.yaml");
    std::fs::write(
        &file,
        "vips:\n- {name: static, address: 10.240.99.1, ports: [80], backends: [{address: 127.77.9.9}], \
         healthCheck: {type: NONE}}\n",
    )
    .unwrap();
    let admin = free_port();
    let tun = format!("cwlbx{}", std::process::id() % 100_000);
    let lb = Guard(
        Command::new(bin())
            .args(["l4lb", "--config"])
            .arg(&file)
            .args(["--xds", &format!("http://127.0.0.1:{xds}")])
            .args(["--zone", "us-west-a", "--node-id", "lb-test"])
            .args(["--no-routes", "--tun", &tun])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The AccessPoint's VIP with its ports and c1's gateway, next to the static VIP.
    let vip = eventually("the shop VIP allocated", || c.vip_of("shop"));
    let started = Instant::now();
    let state = eventually("shop in the balancer", || {
        let s = admin_json(admin, "/state")?;
        let e = entry(&s, "retail/shop")?;
        (e == (vip.clone(), vec![80, 8080], vec![("127.77.1.21".into(), 1)])).then_some(s)
    });
    println!(
        "first assignment in the balancer after {:?}",
        started.elapsed()
    );
    assert!(entry(&state, "static").is_some(), "{state:#}");

    // status --proxies lists the balancer as an l4lb proxy, SYNCED on CDS.
    eventually("the balancer SYNCED in status --proxies", || {
        let p = c.proxies();
        p["items"].as_array()?.iter().find(|p| {
            p["id"] == "lb-test" && p["role"] == "l4lb" && p["types"]["CDS"]["state"] == "SYNCED"
        })?;
        Some(())
    });
    let table = text(&c.causeway(&["status", "--proxies"]).stdout);
    assert!(
        table
            .lines()
            .any(|l| l.contains("lb-test") && l.contains("l4lb")),
        "{table}"
    );

    // Placement on all three clusters: the two gateways of zone us-west-a, not c3's.
    c.apply(&access_point("shop", "c1, c2, c3", ""));
    let started = Instant::now();
    eventually("the placement change", || {
        let e = entry(&admin_json(admin, "/state")?, "retail/shop")?;
        (e.2 == [("127.77.1.21".to_owned(), 1), ("127.77.2.21".to_owned(), 1)]).then_some(())
    });
    println!(
        "placement change in the balancer after {:?}",
        started.elapsed()
    );

    // An AccessPoint on the static VIP's address: refused as a whole (NACK with the reason),
    // the last good table stays.
    c.apply(&access_point("clash", "c1", ", address: 10.240.99.1"));
    let message = eventually("the NACK in status --proxies", || {
        let p = c.proxies();
        let lb = p["items"]
            .as_array()?
            .iter()
            .find(|p| p["id"] == "lb-test")?
            .clone();
        (lb["types"]["CDS"]["state"] == "NACKED").then(|| {
            lb["types"]["CDS"]["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
    });
    assert!(
        message
            .contains("retail/clash: TCP 10.240.99.1:80 (from the controller) is already served"),
        "{message}"
    );
    let s = admin_json(admin, "/state").unwrap();
    assert!(entry(&s, "retail/clash").is_none(), "{s:#}");
    assert_eq!(entry(&s, "retail/shop").unwrap().2.len(), 2, "{s:#}");
    assert!(
        s["xds"]["rejected"].to_string().contains("already served"),
        "{s:#}"
    );

    // Deleting the clashing AccessPoint is accepted again; deleting shop removes its VIP.
    for name in ["clash", "shop"] {
        let out = c.causeway(&["delete", "accesspoint", name, "-n", "retail"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    eventually("shop gone from the balancer", || {
        let s = admin_json(admin, "/state")?;
        (entry(&s, "retail/shop").is_none() && entry(&s, "static").is_some()).then_some(())
    });

    // Back again, then the controller stops: the balancer keeps its table.
    c.apply(&access_point("shop", "c2", ""));
    eventually("shop back in the balancer", || {
        let e = entry(&admin_json(admin, "/state")?, "retail/shop")?;
        (e.2 == [("127.77.2.21".to_owned(), 1)]).then_some(())
    });
    let Controller { child, .. } = c;
    drop(child);
    // Wait for a failed reconnect, so the table has outlived a retry, not just the stream.
    let s = eventually("a failed reconnect to the stopped controller", || {
        let s = admin_json(admin, "/state")?;
        let retried = s["xds"]["connected"] == false
            && s["xds"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cannot connect"));
        retried.then_some(s)
    });
    assert_eq!(
        entry(&s, "retail/shop").map(|e| e.2),
        Some(vec![("127.77.2.21".to_owned(), 1)]),
        "{s:#}"
    );
    assert!(entry(&s, "static").is_some(), "{s:#}");
    drop(lb);
}
