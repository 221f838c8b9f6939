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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Controller, Guard, bin, free_port, text};

/// What these tests add to the shared controller handle.
trait ControllerExt {
    fn apply_yaml(&self, yaml: &str);
    fn vip_of(&self, name: &str) -> Option<String>;
}

impl ControllerExt for Controller {
    fn apply_yaml(&self, yaml: &str) {
        self.apply(&self.data_dir, "apply.yaml", yaml);
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
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
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
    c.apply_yaml(&format!(
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
    c.apply_yaml(&access_point("shop", "c1, c2, c3", ""));
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
    c.apply_yaml(&access_point("clash", "c1", ", address: 10.240.99.1"));
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
    c.apply_yaml(&access_point("shop", "c2", ""));
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

/// SIGHUP makes the balancer read its static file again and apply its VIPs through the same
/// path as the controller's changes: file VIPs added and removed, the controller's kept; a file
/// that does not validate, or whose VIPs clash with the controller's, is logged and changes
/// nothing.
#[test]
fn l4lb_reloads_its_static_file_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let xds = free_port();
    let c = Controller::start(dir.path(), xds);
    c.apply_yaml(&format!(
        "{}{}",
        cluster("c1", "us-west-a", "127.77.1.21"),
        access_point("shop", "c1", ""),
    ));
    let vip_line = |name: &str, address: &str| {
        format!(
            "- {{name: {name}, address: {address}, ports: [80], backends: [{{address: 127.77.9.9}}], \
             healthCheck: {{type: NONE}}}}\n"
        )
    };
    let file = dir.path().join("vips.yaml");
    std::fs::write(&file, format!("vips:\n{}", vip_line("a", "10.240.99.1"))).unwrap();
    let admin = free_port();
    let tun = format!("cwlbh{}", std::process::id() % 100_000);
    let mut child = Command::new(bin())
        .args(["l4lb", "--config"])
        .arg(&file)
        .args(["--xds", &format!("http://127.0.0.1:{xds}")])
        .args(["--zone", "us-west-a", "--node-id", "lb-hup"])
        .args(["--no-routes", "--tun", &tun])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lb = Guard(child);
    let (tx, logs) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let hangup = || {
        let pid = lb.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    // The next log line containing `what`.
    let log_line = |what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("timed out waiting for a log line with {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    };
    let names = |s: &Value| -> Vec<String> {
        let mut n: Vec<String> = s["vips"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|v| v["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    };
    let vip = eventually("the shop VIP allocated", || c.vip_of("shop"));
    eventually("the file's and the controller's VIP", || {
        let s = admin_json(admin, "/state")?;
        (names(&s) == ["a", "retail/shop"]).then_some(())
    });

    // A second file VIP: added next to the first and the controller's.
    std::fs::write(
        &file,
        format!(
            "vips:\n{}{}",
            vip_line("a", "10.240.99.1"),
            vip_line("b", "10.240.99.2")
        ),
    )
    .unwrap();
    hangup();
    let state = eventually("b added on SIGHUP", || {
        let s = admin_json(admin, "/state")?;
        (names(&s) == ["a", "b", "retail/shop"]).then_some(s)
    });
    let generation = state["generation"].clone();
    log_line("static file reloaded");

    // A file that does not validate, then one whose VIP takes the controller's address and
    // port: both refused with the reason in the log, nothing changes.
    std::fs::write(&file, "vips:\n- {name: a, adress: 10.240.99.1}\n").unwrap();
    hangup();
    let line = log_line("static file reload refused");
    assert!(line.contains("adress"), "{line}");
    std::fs::write(&file, format!("vips:\n{}", vip_line("c", &vip))).unwrap();
    hangup();
    let line = log_line("static file reload refused");
    assert!(line.contains("already served"), "{line}");
    let s = admin_json(admin, "/state").unwrap();
    assert_eq!(names(&s), ["a", "b", "retail/shop"], "{s:#}");
    assert_eq!(s["generation"], generation, "{s:#}");

    // a removed from the file: gone, b and the controller's VIP stay.
    std::fs::write(&file, format!("vips:\n{}", vip_line("b", "10.240.99.2"))).unwrap();
    hangup();
    eventually("a removed on SIGHUP", || {
        let s = admin_json(admin, "/state")?;
        (names(&s) == ["b", "retail/shop"]).then_some(())
    });
    drop(lb);
}

/// Runs `ip ARGS`, panicking with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        text(&out.stderr)
    );
}

/// The namespaces of the end-to-end test, deleted on drop (after the processes in them, which
/// are declared later and so dropped first).
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        causeway_l4lb::sys::enter_netns(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// One HTTP/1.1 GET to `addr` from inside `ns`: the body, or `None`.
fn http_get_in(ns: &str, addr: &str, path: &str) -> Option<String> {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    in_ns(ns, move || {
        let a: std::net::SocketAddr = addr.parse().ok()?;
        let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        // One write: a request split over segments could be answered (and the socket closed
        // with unread bytes, so reset) before its end arrives.
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
    })
}

/// A gateway stand-in inside `ns`: port 80 answers with the client address it sees, port 15000
/// answers `GET /ready` with 200 (the balancer's health check), port 8080 echoes lines back for
/// as long as the connection lasts (a long-lived flow).
fn gateway_in(ns: &str) {
    let (listeners, echo) = in_ns(ns, || {
        (
            (
                std::net::TcpListener::bind("0.0.0.0:80").unwrap(),
                std::net::TcpListener::bind("0.0.0.0:15000").unwrap(),
            ),
            std::net::TcpListener::bind("0.0.0.0:8080").unwrap(),
        )
    });
    std::thread::spawn(move || {
        for s in echo.incoming() {
            let Ok(s) = s else { continue };
            std::thread::spawn(move || {
                let Ok(mut w) = s.try_clone() else { return };
                for line in BufReader::new(s).lines().map_while(Result::ok) {
                    if writeln!(w, "{line}").is_err() {
                        return;
                    }
                }
            });
        }
    });
    for (l, admin) in [(listeners.0, false), (listeners.1, true)] {
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                // Read the whole request head: closing with unread bytes would reset the
                // connection before the client reads the answer.
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = if admin {
                    "LIVE".to_owned()
                } else {
                    s.peer_addr()
                        .map(|a| a.ip().to_string())
                        .unwrap_or_default()
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }
}

/// Root, network namespaces: client —— balancer (also the router) —— gateway host, with the
/// controller next to the balancer. The controller's VIP assignment alone makes the VIP work:
/// a TCP connection from the client to the AccessPoint's VIP reaches the gateway through the
/// balancer (userspace data path, IPIP) and the decap agent, and the gateway sees the client's
/// address; deleting the AccessPoint takes the VIP away; with the controller stopped, traffic
/// keeps flowing.
#[test]
fn traffic_through_a_vip_the_controller_assigned() {
    through_vip(false);
}

/// The same with the balancer's XDP program (generic mode) in front of the userspace path:
/// changes of the VIP set are written into the program's maps in place (one program load in
/// the whole test), and the packets must not fall back to the userspace path (its TUN device
/// sees none), not even while a VIP is added next to a long-lived flow.
#[test]
fn traffic_through_a_vip_the_controller_assigned_xdp() {
    if !causeway_l4lb::xdp::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "built without the XDP programs (clang missing)"
        );
        println!("SKIPPED: built without the XDP programs (clang missing)");
        return;
    }
    through_vip(true);
}

fn through_vip(xdp: bool) {
    let pid = std::process::id();
    let tag = if xdp { "x" } else { "u" };
    let names: Vec<String> = ["c", "lb", "gw"]
        .iter()
        .map(|r| format!("cw-l4x-{pid}-{tag}-{r}"))
        .collect();
    let (c, lb, gw) = (names[0].clone(), names[1].clone(), names[2].clone());
    let _ns = Namespaces(names.clone());
    for n in &names {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    ip(&[
        "-n", &lb, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &c,
    ]);
    ip(&[
        "-n", &lb, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &gw,
    ]);
    for (ns, dev, addr) in [
        (&c, "eth0", "10.78.1.2/24"),
        (&lb, "eth0", "10.78.1.1/24"),
        (&lb, "eth1", "10.78.2.1/24"),
        (&gw, "eth0", "10.78.2.2/24"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    ip(&["-n", &c, "route", "add", "default", "via", "10.78.1.1"]);
    if xdp {
        // Full checksums from the client: a veth hands on partial ones, which an XDP program
        // that re-wraps the packet cannot complete (a real NIC delivers full ones).
        let out = Command::new("ip")
            .args(["netns", "exec", &c, "ethtool", "-K", "eth0", "tx", "off"])
            .args(["tso", "off", "gso", "off"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    ip(&["-n", &gw, "route", "add", "default", "via", "10.78.2.1"]);
    // The gateway's replies come from the VIP, which the balancer host routes into its TUN
    // device: reverse-path filtering there would drop them on their way to the client.
    for key in ["all", "eth1"] {
        let out = Command::new("ip")
            .args(["netns", "exec", &lb, "sysctl", "-qw"])
            .arg(format!("net.ipv4.conf.{key}.rp_filter=0"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    let dir = tempfile::tempdir().unwrap();
    let netns_exec = |ns: &str| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, bin()]);
        cmd
    };
    // The controller, inside the balancer's namespace.
    let mut child = netns_exec(&lb)
        .args(["controller", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--xds-listen", "127.0.0.1:15010"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("http://") {
                let _ = tx.send(line[i..].split_whitespace().next().unwrap().to_owned());
            }
        }
    });
    let controller = Guard(child);
    let api = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("controller did not report its address");
    let causeway = |args: &[&str]| {
        let out = netns_exec(&lb)
            .args(args)
            .env("CAUSEWAY_SERVER", &api)
            .env("CAUSEWAY_DATA_DIR", dir.path())
            .env_remove("CAUSEWAY_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };
    let api_file = dir.path().join("api.yaml");
    std::fs::write(
        &api_file,
        access_point("api", "c1", ", address: 10.240.0.11"),
    )
    .unwrap();
    let file = dir.path().join("federation.yaml");
    std::fs::write(
        &file,
        format!(
            "{}{}",
            cluster("c1", "z1", "10.78.2.2"),
            access_point("shop", "c1", ", address: 10.240.0.10")
        ),
    )
    .unwrap();
    causeway(&["apply", "-f", file.to_str().unwrap()]);

    gateway_in(&gw);
    let _decap = Guard(
        netns_exec(&gw)
            .args([
                "l4lb",
                "decap",
                "--vip",
                "10.240.0.10",
                "--vip",
                "10.240.0.11",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut balancer = netns_exec(&lb);
    balancer.args(["l4lb", "--xds", "http://127.0.0.1:15010", "--zone", "z1"]);
    if xdp {
        balancer.args([
            "--datapath",
            "xdp",
            "--interface",
            "eth0",
            "--xdp-mode",
            "generic",
        ]);
    }
    let _balancer = Guard(
        balancer
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let started = Instant::now();
    let seen = eventually("a connection through the VIP", || {
        http_get_in(&c, "10.240.0.10:80", "/").filter(|b| !b.is_empty())
    });
    println!(
        "VIP answering {:?} after the balancer started",
        started.elapsed()
    );
    assert_eq!(
        seen, "10.78.1.2",
        "the gateway must see the client's address"
    );
    let state: Value = serde_json::from_str(
        &http_get_in(&lb, "127.0.0.1:15110", "/state").expect("the balancer's /state"),
    )
    .unwrap();
    let shop = entry(&state, "retail/shop").expect("shop in /state");
    assert_eq!(
        shop,
        (
            "10.240.0.10".to_owned(),
            vec![80, 8080],
            vec![("10.78.2.2".to_owned(), 1)]
        )
    );
    // XDP counters are read once a second.
    eventually("the balancer's packet counter", || {
        let metrics = http_get_in(&lb, "127.0.0.1:15110", "/metrics")?;
        metrics
            .lines()
            .any(|l| {
                l.starts_with(
                    "causeway_l4lb_packets_total{vip=\"retail/shop\",backend=\"10.78.2.2\"}",
                )
            })
            .then_some(())
    });
    let tun_packets = || -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lb,
                "cat",
                "/sys/class/net/cwlb0/statistics/tx_packets",
            ])
            .output()
            .unwrap();
        text(&out.stdout).trim().parse().unwrap_or(u64::MAX)
    };
    if xdp {
        // The balancer started without VIPs; the controller's is written into the XDP maps
        // in place within 50 ms of its tables (a connection in that moment may still take the
        // userspace path), and from then on XDP carries it.
        let started = Instant::now();
        eventually("the XDP program carrying the VIP", || {
            let before = tun_packets();
            let ok = http_get_in(&c, "10.240.0.10:80", "/").as_deref() == Some("10.78.1.2");
            (ok && tun_packets() == before).then_some(())
        });
        println!("XDP carrying the VIP after {:?}", started.elapsed());
        let before = tun_packets();
        for _ in 0..5 {
            assert_eq!(
                http_get_in(&c, "10.240.0.10:80", "/").as_deref(),
                Some("10.78.1.2")
            );
        }
        assert_eq!(tun_packets(), before, "packets took the userspace path");
    }

    let metrics = || http_get_in(&lb, "127.0.0.1:15110", "/metrics").unwrap_or_default();

    // A second AccessPoint while a long-lived TCP flow runs through the first VIP: the flow goes
    // on undisturbed (every line echoed; through XDP, not one packet into the TUN device), the
    // new VIP is added to the XDP maps in place (no program reload) and XDP carries it.
    let flow = LongFlow::start(&c, "10.240.0.10:8080");
    eventually("the long-lived flow running", || {
        (flow.echoed() >= 5).then_some(())
    });
    let tun_before = tun_packets();
    let keys_before = metric(&metrics(), "causeway_l4lb_xdp_map_used{map=\"vip_keys\"}");
    causeway(&["apply", "-f", api_file.to_str().unwrap()]);
    if xdp {
        // Connect only once the XDP maps have the new VIP's keys: before that its packets would
        // reach the kernel and so the userspace path (the control loop adds the VIP route a few
        // milliseconds before the XDP thread writes the maps).
        eventually("the new VIP's keys in the XDP maps", || {
            let now = metric(&metrics(), "causeway_l4lb_xdp_map_used{map=\"vip_keys\"}");
            (now > keys_before).then_some(())
        });
    }
    let started = Instant::now();
    eventually("the second VIP answering", || {
        http_get_in(&c, "10.240.0.11:80", "/").filter(|b| b == "10.78.1.2")
    });
    println!(
        "second VIP answering {:?} after its keys were written",
        started.elapsed()
    );
    for _ in 0..5 {
        assert_eq!(
            http_get_in(&c, "10.240.0.11:80", "/").as_deref(),
            Some("10.78.1.2")
        );
    }
    let before_echoed = flow.echoed();
    eventually("the long-lived flow still running", || {
        (flow.echoed() >= before_echoed + 5).then_some(())
    });
    let (echoed, errors) = flow.stop();
    assert!(errors.is_empty(), "the long-lived flow broke: {errors:?}");
    println!("long-lived flow: {echoed} lines echoed across the VIP addition");
    if xdp {
        let m = eventually("the second VIP's XDP packet counter", || {
            let m = metrics();
            (metric(
                &m,
                "causeway_l4lb_packets_total{vip=\"retail/api\",backend=\"10.78.2.2\"}",
            ) >= 5.0)
                .then_some(m)
        });
        assert_eq!(
            tun_packets(),
            tun_before,
            "packets took the userspace path during the VIP addition"
        );
        assert_eq!(
            metric(&m, "causeway_l4lb_xdp_program_loads_total"),
            1.0,
            "the XDP program was reloaded for a VIP addition"
        );
    }

    // Deleted: the VIP leaves the balancer and stops answering.
    causeway(&["delete", "accesspoint", "shop", "-n", "retail"]);
    eventually("the VIP gone", || {
        let s: Value =
            serde_json::from_str(&http_get_in(&lb, "127.0.0.1:15110", "/state")?).ok()?;
        entry(&s, "retail/shop").is_none().then_some(())
    });
    eventually("the VIP to stop answering", || {
        http_get_in(&c, "10.240.0.10:80", "/")
            .is_none()
            .then_some(())
    });
    // The other VIP is untouched, still through XDP, and the removal reloaded nothing.
    let tun_before = tun_packets();
    assert_eq!(
        http_get_in(&c, "10.240.0.11:80", "/").as_deref(),
        Some("10.78.1.2")
    );
    if xdp {
        assert_eq!(tun_packets(), tun_before, "the remaining VIP left XDP");
        assert_eq!(
            metric(&metrics(), "causeway_l4lb_xdp_program_loads_total"),
            1.0
        );
    }

    // Back, then the controller stops: traffic keeps flowing through failed reconnects.
    causeway(&["apply", "-f", file.to_str().unwrap()]);
    eventually("the VIP back", || {
        http_get_in(&c, "10.240.0.10:80", "/").filter(|b| b == "10.78.1.2")
    });
    drop(controller);
    eventually("a failed reconnect to the stopped controller", || {
        let s: Value =
            serde_json::from_str(&http_get_in(&lb, "127.0.0.1:15110", "/state")?).ok()?;
        s["xds"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect"))
            .then_some(())
    });
    let after = http_get_in(&c, "10.240.0.10:80", "/");
    assert_eq!(
        after.as_deref(),
        Some("10.78.1.2"),
        "{:?}\n{:?}",
        http_get_in(&lb, "127.0.0.1:15110", "/state"),
        http_get_in(&lb, "127.0.0.1:15110", "/metrics")
    );
    if xdp {
        // Three VIP additions and a removal: the program was loaded once, at start.
        assert_eq!(
            metric(&metrics(), "causeway_l4lb_xdp_program_loads_total"),
            1.0
        );
    }
}

/// The value of the metric line starting with `series` (0 when absent).
fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A TCP connection from inside a namespace that sends a numbered line every 20 ms and checks
/// its echo, until stopped.
struct LongFlow {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    echoed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl LongFlow {
    fn start(ns: &str, addr: &str) -> LongFlow {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let echoed = std::sync::Arc::new(AtomicU64::new(0));
        let (ns, addr) = (ns.to_owned(), addr.to_owned());
        let (st, ec) = (stop.clone(), echoed.clone());
        let thread = std::thread::spawn(move || {
            causeway_l4lb::sys::enter_netns(&ns).unwrap();
            let a: std::net::SocketAddr = addr.parse().unwrap();
            // The VIP may still be settling right after the previous steps: retry the connect
            // (a timeout panics this thread; `stop` re-raises it in the test).
            let s = eventually("the long-lived flow's connection", || {
                TcpStream::connect_timeout(&a, Duration::from_secs(1)).ok()
            });
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut errors = Vec::new();
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) && errors.is_empty() {
                n += 1;
                let mut line = String::new();
                match writeln!(w, "{n}").and_then(|()| r.read_line(&mut line)) {
                    Ok(_) if line.trim() == n.to_string() => {
                        ec.store(n, Ordering::Relaxed);
                    }
                    Ok(_) => errors.push(format!("line {n}: echoed {line:?}")),
                    Err(e) => errors.push(format!("line {n}: {e}")),
                }
                // Pacing, not synchronisation: a line every 20 ms keeps the flow alive.
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        LongFlow {
            stop,
            echoed,
            thread: Some(thread),
        }
    }

    fn echoed(&self) -> u64 {
        self.echoed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the flow: lines echoed and the errors seen.
    fn stop(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let errors = self
            .thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default();
        (self.echoed(), errors)
    }
}

impl Drop for LongFlow {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `--xds` without a zone, locality or cluster is refused before anything starts (no root
/// needed: the flags are checked first).
#[test]
fn xds_needs_a_zone_or_cluster() {
    let out = Command::new(bin())
        .args(["l4lb", "--xds", "http://127.0.0.1:1", "--tun", "cwlbnever"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--xds needs --zone, --locality REGION/ZONE or --cluster NAME"),
        "{err}"
    );
    let out = Command::new(bin())
        .args(["l4lb", "--zone", "z1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--zone without --xds");
}
