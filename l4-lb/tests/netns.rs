#![allow(clippy::unwrap_used, clippy::expect_used)]
//! End to end through network namespaces (root): a client, a router, two balancers and three
//! gateway hosts on one bridge, each data path (userspace; XDP native; XDP generic next to a
//! userspace balancer), the decap agent (userspace or XDP), health checks, and BGP with bird2
//! in the router namespace.
//!
//! Everything runs in this process: each balancer, decap agent and HTTP server runs on a
//! thread that entered its namespace (sockets and devices belong to the namespace of the
//! thread that creates them). Namespace names carry the pid and a counter, and a drop guard
//! deletes them on every exit path.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use causeway_l4lb::app::{Balancer, BalancerOptions, Decap, DecapOptions};
use causeway_l4lb::balancer::Tables;
use causeway_l4lb::config::{self, Config};
use causeway_l4lb::metrics::{BackendLabels, Metrics};
use causeway_l4lb::sys;
use causeway_l4lb::xdp::{self, Mode, XdpOptions, XdpPass};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run("ip", args);
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `limit` with `what`.
fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The namespaces of one test, deleted on drop.
struct Topology {
    names: BTreeMap<&'static str, String>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.names.values() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

impl Topology {
    /// client —— router(br0) —— {lb1, lb2, gw1, gw2, gw3}
    ///   10.2.0.2   10.2.0.1 / 10.1.0.1     .11  .12  .21  .22  .23
    fn new(balancers: usize) -> Topology {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let mut roles = vec!["client", "router", "gw1", "gw2", "gw3"];
        roles.extend(["lb1", "lb2"].into_iter().take(balancers));
        let t = Topology {
            names: roles
                .iter()
                .map(|r| (*r, format!("cw-l4-{pid}-{n}-{r}")))
                .collect(),
        };
        for name in t.names.values() {
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        let r = t.ns("router");
        ip(&["-n", r, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", r, "addr", "add", "10.1.0.1/24", "dev", "br0"]);
        ip(&["-n", r, "link", "set", "br0", "up"]);
        ip(&[
            "-n",
            r,
            "link",
            "add",
            "pc",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            t.ns("client"),
        ]);
        ip(&["-n", r, "addr", "add", "10.2.0.1/24", "dev", "pc"]);
        ip(&["-n", r, "link", "set", "pc", "up"]);
        let c = t.ns("client");
        ip(&["-n", c, "addr", "add", "10.2.0.2/24", "dev", "eth0"]);
        ip(&["-n", c, "link", "set", "eth0", "up"]);
        ip(&["-n", c, "route", "add", "default", "via", "10.2.0.1"]);
        // Full checksums from the client: a veth hands CHECKSUM_PARTIAL packets on, and an XDP
        // program that re-wraps them cannot complete them (a real NIC delivers full ones).
        run(
            "ip",
            &[
                "netns", "exec", c, "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso",
                "off",
            ],
        );
        for (role, addr) in [
            ("lb1", 11),
            ("lb2", 12),
            ("gw1", 21),
            ("gw2", 22),
            ("gw3", 23),
        ] {
            let Some(ns) = t.names.get(role) else {
                continue;
            };
            let port = format!("p{role}");
            ip(&[
                "-n", r, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]);
            ip(&["-n", r, "link", "set", &port, "master", "br0", "up"]);
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.1.0.{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            ip(&["-n", ns, "route", "add", "default", "via", "10.1.0.1"]);
        }
        run(
            "ip",
            &[
                "netns",
                "exec",
                r,
                "sh",
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv4/fib_multipath_hash_policy",
            ],
        );
        t
    }

    fn ns(&self, role: &str) -> &str {
        &self.names[role]
    }
}

/// Runs `f` on a thread inside namespace `ns` and returns its result.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        sys::enter_netns(&ns).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Something running on a namespace thread with a tokio runtime; stopped on drop.
struct Service {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct RunningBalancer {
    metrics: Arc<Metrics>,
    tables: Arc<ArcSwap<Tables>>,
    _service: Service,
}

/// Which data path a balancer or decap agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Userspace,
    Xdp(Mode),
}

impl Path {
    fn xdp(self) -> Option<XdpOptions> {
        match self {
            Path::Userspace => None,
            Path::Xdp(mode) => Some(XdpOptions {
                interface: "eth0".into(),
                mode,
            }),
        }
    }
}

fn start_balancer(ns: &str, config: Config, path: Path) -> RunningBalancer {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ns = ns.to_owned();
    let thread = std::thread::spawn(move || {
        sys::enter_netns(&ns).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let opts = BalancerOptions {
                tun: "cwlb0".into(),
                mtu: 1500,
                admin: Some("127.0.0.1:0".parse().unwrap()),
                manage_routes: true,
                xdp: path.xdp(),
            };
            let b = Balancer::start(config, opts).await.unwrap();
            tx.send((b.metrics.clone(), b.tables.clone())).unwrap();
            let _ = stop_rx.await;
            b.stop().await;
        });
    });
    let (metrics, tables) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    RunningBalancer {
        metrics,
        tables,
        _service: Service {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
    }
}

fn start_decap(ns: &str, path: Path) -> (Arc<Metrics>, Service) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ns = ns.to_owned();
    let thread = std::thread::spawn(move || {
        sys::enter_netns(&ns).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let d = Decap::start(DecapOptions {
                tun: "cwdecap0".into(),
                mtu: 1500,
                vips: vec![VIP],
                admin: None,
                rcvbuf: 32 << 20,
                xdp: path.xdp(),
            })
            .await
            .unwrap();
            tx.send(d.metrics.clone()).unwrap();
            let _ = stop_rx.await;
            d.stop().await;
        });
    });
    let m = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (
        m,
        Service {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
    )
}

/// A tiny HTTP/1.1 server on port 80 of a gateway host: `/big` answers 1 MB, anything else
/// `gw=NAME peer=IP:PORT`. Killing it closes the listener and every open connection.
struct HttpServer {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    fn start(ns: &str, name: &'static str) -> HttpServer {
        let ns_owned = ns.to_owned();
        let listener = in_ns(ns, move || {
            let _ = ns_owned;
            TcpListener::bind("0.0.0.0:80").unwrap()
        });
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        stream.set_nonblocking(false).unwrap();
                        c.lock().unwrap().push(stream.try_clone().unwrap());
                        std::thread::spawn(move || serve(stream, peer, name));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        HttpServer {
            stop,
            conns,
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(mut s: TcpStream, peer: SocketAddr, name: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        buf.drain(..end + 4);
        let upload: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < upload {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let received: Vec<u8> = buf.drain(..upload).collect();
        let body = if head.starts_with("post /upload ") {
            let ok = received.iter().all(|b| *b == b'u');
            format!("received={} intact={ok}\n", received.len()).into_bytes()
        } else if head.starts_with("get /big ") {
            vec![b'x'; 1_000_000]
        } else {
            format!("gw={name} peer={peer}\n").into_bytes()
        };
        let h = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        if s.write_all(h.as_bytes())
            .and_then(|_| s.write_all(&body))
            .is_err()
        {
            return;
        }
    }
}

/// Connects to the VIP from the client namespace.
fn connect(client_ns: &str) -> std::io::Result<TcpStream> {
    in_ns(client_ns, || {
        loop {
            // Interrupted by a signal (see `read_some`): not a verdict on the balancer, retry.
            match TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), Duration::from_secs(3)) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    return Ok(s);
                }
            }
        }
    })
}

/// One request on `s`; returns the body.
fn get(s: &mut TcpStream, path: &str) -> std::io::Result<Vec<u8>> {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: vip\r\n\r\n").as_bytes())?;
    read_response(s)
}

/// One `read`, retried when a signal interrupts it: a socket with a read timeout is not
/// restarted after a signal handler ran (signal(7)), and child processes of this test (iperf3)
/// exiting send SIGCHLD to a process where the runtime handles it.
fn read_some(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Reads one response; returns the body.
fn read_response(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let (end, len) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            break (end + 4, len);
        }
        let n = read_some(s, &mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    while buf.len() < end + len {
        let n = read_some(s, &mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf[end..end + len].to_vec())
}

/// (gateway name, peer address the gateway saw).
fn whoami(s: &mut TcpStream) -> std::io::Result<(String, String)> {
    let body = String::from_utf8_lossy(&get(s, "/")?).into_owned();
    let mut gw = String::new();
    let mut peer = String::new();
    for part in body.split_whitespace() {
        if let Some(v) = part.strip_prefix("gw=") {
            gw = v.to_owned();
        } else if let Some(v) = part.strip_prefix("peer=") {
            peer = v.to_owned();
        }
    }
    Ok((gw, peer))
}

fn config(bgp: Option<&str>) -> Config {
    let mut text = String::from(
        r#"
vips:
  - name: web
    address: 10.9.0.10
    ports: [80]
    backends:
      - address: 10.1.0.21
      - address: 10.1.0.22
      - address: 10.1.0.23
    healthCheck:
      type: HTTP
      port: 80
      path: /ready
      interval: 300ms
      timeout: 300ms
      healthyThreshold: 2
      unhealthyThreshold: 2
  # iperf3's control and data connections must reach the same gateway: one backend.
  - name: perf
    address: 10.9.0.10
    ports: [5201]
    backends:
      - address: 10.1.0.21
    healthCheck:
      type: HTTP
      port: 80
      path: /ready
      interval: 300ms
      timeout: 300ms
"#,
    );
    if let Some(b) = bgp {
        text.push_str(b);
    }
    config::file::parse(&text).unwrap()
}

fn healthy(b: &RunningBalancer) -> BTreeSet<Ipv4Addr> {
    b.tables.load().vips[0].healthy.clone()
}

fn forwarded_bytes(b: &RunningBalancer) -> u64 {
    (21..=23)
        .map(|i| {
            b.metrics
                .bytes
                .get_or_create(&BackendLabels {
                    vip: "web".into(),
                    backend: format!("10.1.0.{i}"),
                })
                .get()
        })
        .sum()
}

fn link_tx_bytes(ns: &str, dev: &str) -> u64 {
    // `ip netns exec` mounts the namespace's own sysfs (a thread's setns does not).
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{dev}/statistics/tx_bytes"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn slow_path_packets(b: &RunningBalancer) -> u64 {
    ["mtu", "neighbour"]
        .iter()
        .map(|r| {
            b.metrics
                .xdp_slow_path
                .get_or_create(&causeway_l4lb::metrics::ReasonLabels {
                    reason: (*r).into(),
                })
                .get()
        })
        .sum()
}

/// Oversized DF packets the XDP program answered with ICMP fragmentation-needed.
fn frag_needed_answers(b: &RunningBalancer) -> u64 {
    b.metrics
        .dropped
        .get_or_create(&causeway_l4lb::metrics::ReasonLabels {
            reason: "frag_needed".into(),
        })
        .get()
}

/// Bytes the balancer encapsulated for the `perf` VIP (iperf3, gw1 only).
fn perf_bytes(b: &RunningBalancer) -> u64 {
    b.metrics
        .bytes
        .get_or_create(&BackendLabels {
            vip: "perf".into(),
            backend: "10.1.0.21".into(),
        })
        .get()
}

/// An iperf3 server, killed on drop.
struct Iperf3Server(Child);

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs iperf3 for 2 s from the client to the VIP's port 5201 (the `perf` VIP: gw1; one TCP
/// stream, client → gateway) and returns the bytes the server received.
fn iperf3(topo: &Topology, client: &str) -> u64 {
    let gw1 = topo.ns("gw1");
    let server = Iperf3Server(
        Command::new("ip")
            .args(["netns", "exec", gw1, "iperf3", "-s", "-1", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 (scripts/install-deps installs it)"),
    );
    // Wait for the listening socket (a test connection would use up `-1`).
    eventually(Duration::from_secs(10), "iperf3 listening", || {
        let out = Command::new("ip")
            .args(["netns", "exec", gw1, "ss", "-Hltn", "sport = :5201"])
            .output()
            .unwrap();
        (!out.stdout.is_empty()).then_some(())
    });
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            client,
            "iperf3",
            "-c",
            "10.9.0.10",
            "-p",
            "5201",
            "-t",
            "2",
            "-J",
        ])
        .output()
        .unwrap();
    drop(server);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "iperf3 through the VIP failed: {text}"
    );
    // "sum_received": {..., "bytes": N, ...}
    let at = text
        .find("\"sum_received\"")
        .unwrap_or_else(|| panic!("no sum_received in {text}"));
    let rest = &text[at..];
    let b = rest.find("\"bytes\":").unwrap() + "\"bytes\":".len();
    let n: u64 = rest[b..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 1_000_000, "iperf3 moved only {n} bytes in 2 s");
    n
}

fn forwarded_packets(b: &RunningBalancer) -> u64 {
    (21..=23)
        .map(|i| {
            b.metrics
                .packets
                .get_or_create(&BackendLabels {
                    vip: "web".into(),
                    backend: format!("10.1.0.{i}"),
                })
                .get()
        })
        .sum()
}

fn link_rx_bytes(ns: &str, dev: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{dev}/statistics/rx_bytes"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn userspace_path_end_to_end() {
    end_to_end([Path::Userspace, Path::Userspace], Path::Userspace);
}

#[test]
fn xdp_native_path_end_to_end() {
    if require_xdp() {
        let native = Path::Xdp(Mode::Native);
        end_to_end([native, native], native);
    }
}

/// Generic mode, next to a userspace balancer: the two data paths must agree on every flow.
#[test]
fn xdp_generic_next_to_userspace_end_to_end() {
    if require_xdp() {
        let generic = Path::Xdp(Mode::Generic);
        end_to_end([generic, Path::Userspace], generic);
    }
}

/// Native XDP balancers, gateways decapsulating in tc (`l4lb decap --datapath tc`).
#[test]
fn xdp_native_path_tc_decap_end_to_end() {
    if require_xdp() {
        end_to_end([Path::Xdp(Mode::Native); 2], Path::Xdp(Mode::Tc));
    }
}

/// XDP tests need the programs, which the build compiles when clang is installed. CI installs
/// it (scripts/install-deps), so there a build without them is a failure; elsewhere it is
/// reported and the test passes vacuously.
fn require_xdp() -> bool {
    if xdp::available() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "built without the XDP programs (clang missing): scripts/install-deps installs it"
    );
    eprintln!("SKIPPED: this build has no XDP programs (clang was missing)");
    false
}

fn end_to_end(lb_paths: [Path; 2], gw_path: Path) {
    println!("balancers {lb_paths:?}, gateways {gw_path:?}");
    let topo = Topology::new(2);
    // A veth accepts native XDP_TX frames only while its peer runs an XDP program.
    let mut _pass = Vec::new();
    for (i, p) in lb_paths.iter().enumerate() {
        if *p == Path::Xdp(Mode::Native) {
            let port = format!("plb{}", i + 1);
            _pass.push(in_ns(topo.ns("router"), move || {
                XdpPass::attach(&XdpOptions {
                    interface: port,
                    mode: Mode::Native,
                })
                .unwrap()
            }));
        }
    }
    // Both balancers behind ECMP (L4 hash) in the router.
    ip(&[
        "-n",
        topo.ns("router"),
        "route",
        "add",
        "10.9.0.10/32",
        "nexthop",
        "via",
        "10.1.0.11",
        "nexthop",
        "via",
        "10.1.0.12",
    ]);
    let mut servers: BTreeMap<&str, HttpServer> = BTreeMap::new();
    let mut agents = Vec::new();
    for gw in ["gw1", "gw2", "gw3"] {
        agents.push(start_decap(topo.ns(gw), gw_path));
        servers.insert(gw, HttpServer::start(topo.ns(gw), gw));
    }
    let lb1 = start_balancer(topo.ns("lb1"), config(None), lb_paths[0]);
    let lb2 = start_balancer(topo.ns("lb2"), config(None), lb_paths[1]);
    let all: BTreeSet<Ipv4Addr> = (21..=23).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
    for b in [&lb1, &lb2] {
        eventually(Duration::from_secs(20), "all gateways healthy", || {
            (healthy(b) == all).then_some(())
        });
    }
    let client = topo.ns("client").to_owned();

    // TCP + HTTP through the VIP: the gateway sees the real client address.
    let mut s = connect(&client).unwrap();
    let (gw, peer) = whoami(&mut s).unwrap();
    assert!(gw.starts_with("gw"), "{gw}");
    assert!(
        peer.starts_with(&format!("{CLIENT}:")),
        "the gateway saw {peer}"
    );

    // Replies bypass the balancers: 5 MB down, a few KB of requests and ACKs up.
    let before = forwarded_bytes(&lb1) + forwarded_bytes(&lb2);
    let gw_tx_before: u64 = ["gw1", "gw2", "gw3"]
        .iter()
        .map(|g| link_tx_bytes(topo.ns(g), "eth0"))
        .sum();
    let lb_rx = || link_rx_bytes(topo.ns("lb1"), "eth0") + link_rx_bytes(topo.ns("lb2"), "eth0");
    let lb_rx_before = lb_rx();
    for _ in 0..5 {
        assert_eq!(get(&mut s, "/big").unwrap().len(), 1_000_000);
    }
    let lb_rx_bytes = lb_rx() - lb_rx_before;
    // The XDP counters reach the metrics once a second: wait until the 5 requests are in.
    let through_lbs = eventually(Duration::from_secs(5), "the requests counted", || {
        let n = forwarded_bytes(&lb1) + forwarded_bytes(&lb2) - before;
        (n >= 5 * 40).then_some(n)
    });
    assert!(
        lb_rx_bytes < 1_000_000,
        "the balancers received {lb_rx_bytes} bytes during a 5 MB download"
    );
    let gw_tx: u64 = ["gw1", "gw2", "gw3"]
        .iter()
        .map(|g| link_tx_bytes(topo.ns(g), "eth0"))
        .sum::<u64>()
        - gw_tx_before;
    assert!(gw_tx >= 5_000_000, "gateways sent {gw_tx} bytes directly");
    assert!(
        through_lbs < 500_000,
        "{through_lbs} bytes went through the balancers for 5 MB of responses"
    );
    println!(
        "5 MB download: {through_lbs} bytes through the balancers ({lb_rx_bytes} received on their links), {gw_tx} bytes sent by the gateways directly"
    );

    // Full-size packets towards the gateway over 1500-byte links everywhere (1500-byte inner
    // packets would be 1520 with IPIP): a 2 MB upload arrives intact. The userspace path lets
    // the kernel fragment the outer packet; XDP answers the first oversized (DF) packets with
    // ICMP fragmentation-needed (MTU 1480), the client's path MTU discovery shrinks its
    // segments, and the rest of the upload stays on the fast path.
    let before = forwarded_bytes(&lb1) + forwarded_bytes(&lb2);
    let per_lb_before = [forwarded_bytes(&lb1), forwarded_bytes(&lb2)];
    let slow_before = [slow_path_packets(&lb1), slow_path_packets(&lb2)];
    let mut up = connect(&client).unwrap();
    let body = vec![b'u'; 2_000_000];
    up.write_all(b"POST /upload HTTP/1.1\r\nHost: vip\r\nContent-Length: 2000000\r\n\r\n")
        .unwrap();
    up.write_all(&body).unwrap();
    let answer = String::from_utf8_lossy(&read_response(&mut up).unwrap()).into_owned();
    assert_eq!(answer.trim(), "received=2000000 intact=true");
    let uploaded = eventually(Duration::from_secs(5), "the upload counted", || {
        let n = forwarded_bytes(&lb1) + forwarded_bytes(&lb2) - before;
        (n > 2_000_000).then_some(n)
    });
    for (((b, p), before), slow_before) in [(&lb1, lb_paths[0]), (&lb2, lb_paths[1])]
        .into_iter()
        .zip(per_lb_before)
        .zip(slow_before)
    {
        if p != Path::Userspace && forwarded_bytes(b) - before > 1_000_000 {
            let icmp = eventually(Duration::from_secs(5), "the ICMP answers counted", || {
                let n = frag_needed_answers(b);
                (n >= 1).then_some(n)
            });
            let slow = slow_path_packets(b) - slow_before;
            println!(
                "2 MB upload through XDP: {icmp} ICMP fragmentation-needed answers, {slow} packets through the slow path"
            );
            assert_eq!(slow, 0, "DF packets never need the slow path");
        }
    }
    let full_size = (21..=23u8)
        .map(|i| {
            let l = BackendLabels {
                vip: "web".into(),
                backend: format!("10.1.0.{i}"),
            };
            [&lb1, &lb2]
                .iter()
                .map(|b| {
                    let p = b.metrics.packets.get_or_create(&l).get();
                    let by = b.metrics.bytes.get_or_create(&l).get();
                    (p, by)
                })
                .fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1))
        })
        .fold((0u64, 0u64), |a, x| (a.0 + x.0, a.1 + x.1));
    println!(
        "2 MB upload through the VIP: {uploaded} bytes encapsulated, mean packet {} bytes",
        full_size.1 / full_size.0.max(1)
    );

    // iperf3 (full-size segments, client → gateway) through the VIP, 2 s: it completes and,
    // through XDP, stays on the fast path.
    let slow_before = slow_path_packets(&lb1) + slow_path_packets(&lb2);
    let bytes_before = perf_bytes(&lb1) + perf_bytes(&lb2);
    let received = iperf3(&topo, &client);
    let through = eventually(Duration::from_secs(5), "the iperf3 bytes counted", || {
        let n = perf_bytes(&lb1) + perf_bytes(&lb2) - bytes_before;
        (n >= received).then_some(n)
    });
    let slow = slow_path_packets(&lb1) + slow_path_packets(&lb2) - slow_before;
    println!(
        "iperf3 through the VIP: {received} bytes received, {through} encapsulated, {slow} packets through the slow path"
    );
    if lb_paths.iter().all(|p| *p != Path::Userspace) {
        assert_eq!(slow, 0, "iperf3 took the slow path");
    }

    // 1,000 connections spread across the gateways (and across both balancers).
    let slow_before = slow_path_packets(&lb1) + slow_path_packets(&lb2);
    let packets_before = forwarded_packets(&lb1) + forwarded_packets(&lb2);
    let mut per_gw: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..1000 {
        let mut c = connect(&client).unwrap();
        let (gw, peer) = whoami(&mut c).unwrap();
        assert!(peer.starts_with(&format!("{CLIENT}:")));
        *per_gw.entry(gw).or_default() += 1;
    }
    println!("1000 connections: {per_gw:?}");
    assert_eq!(per_gw.len(), 3, "{per_gw:?}");
    for n in per_gw.values() {
        // Binomial(1000, 1/3): σ ≈ 15; allow 5σ.
        assert!((258..=408).contains(n), "{per_gw:?}");
    }
    for b in [&lb1, &lb2] {
        eventually(Duration::from_secs(5), "ECMP used both balancers", || {
            (forwarded_bytes(b) > 0).then_some(())
        });
    }
    // Through XDP, small packets never need the slow path.
    if lb_paths.iter().any(|p| *p != Path::Userspace) {
        let packets = eventually(Duration::from_secs(5), "the packets counted", || {
            let n = forwarded_packets(&lb1) + forwarded_packets(&lb2) - packets_before;
            (n >= 4000).then_some(n)
        });
        let slow = slow_path_packets(&lb1) + slow_path_packets(&lb2) - slow_before;
        println!("1000 connections: {packets} packets forwarded, {slow} through the slow path");
        assert!(
            slow * 100 <= packets,
            "{slow} of {packets} took the slow path"
        );
        for (b, p) in [(&lb1, lb_paths[0]), (&lb2, lb_paths[1])] {
            if p != Path::Userspace {
                // Swept every 10 s.
                eventually(
                    Duration::from_secs(12),
                    "flows in the XDP conntrack",
                    || (b.metrics.xdp_conntrack_entries.get() > 0).then_some(()),
                );
            }
        }
    }

    // Two balancers agree: move live connections from one balancer to the other; each keeps
    // reaching the same gateway although the new balancer has no state for it.
    let mut conns: Vec<(TcpStream, String)> = (0..30)
        .map(|_| {
            let mut c = connect(&client).unwrap();
            let (gw, _) = whoami(&mut c).unwrap();
            (c, gw)
        })
        .collect();
    for via in ["10.1.0.11", "10.1.0.12"] {
        ip(&[
            "-n",
            topo.ns("router"),
            "route",
            "replace",
            "10.9.0.10/32",
            "via",
            via,
        ]);
        for (c, gw) in &mut conns {
            let (now, _) = whoami(c).unwrap();
            assert_eq!(&now, gw, "after moving every flow to {via}");
        }
    }
    ip(&[
        "-n",
        topo.ns("router"),
        "route",
        "replace",
        "10.9.0.10/32",
        "nexthop",
        "via",
        "10.1.0.11",
        "nexthop",
        "via",
        "10.1.0.12",
    ]);

    // Kill gw1: within 3 s both balancers drop it and new connections avoid it; flows to the
    // other gateways keep working.
    let table_before = lb1.tables.load().vips[0].table.addresses();
    let killed_at = Instant::now();
    servers.get_mut("gw1").unwrap().kill();
    let gw1 = Ipv4Addr::new(10, 1, 0, 21);
    for b in [&lb1, &lb2] {
        eventually(
            Duration::from_secs(3),
            "gw1 out of the table within 3 s",
            || (!healthy(b).contains(&gw1)).then_some(()),
        );
    }
    println!(
        "gw1 left both tables {:?} after it died",
        killed_at.elapsed()
    );
    // New connections avoid it within 3 s of its death (the XDP maps follow the tables).
    let deadline = killed_at + Duration::from_secs(3);
    eventually(
        deadline.saturating_duration_since(Instant::now()),
        "30 new connections in a row avoid gw1 within 3 s",
        || {
            for _ in 0..30 {
                let mut c = connect(&client).ok()?;
                if whoami(&mut c).ok()?.0 == "gw1" {
                    return None;
                }
            }
            Some(())
        },
    );
    println!(
        "new connections avoid gw1 {:?} after it died",
        killed_at.elapsed()
    );
    // Removing one of three backends: Maglev moves its third of the slots and (almost) nothing
    // else.
    let table_after = lb1.tables.load().vips[0].table.addresses();
    let total = table_before.len() as f64;
    let moved = table_before
        .iter()
        .zip(&table_after)
        .filter(|(a, b)| a != b)
        .count() as f64;
    let others_moved = table_before
        .iter()
        .zip(&table_after)
        .filter(|(a, b)| **a != gw1 && a != b)
        .count() as f64;
    let owned = table_before.iter().filter(|a| **a == gw1).count() as f64;
    println!(
        "removing gw1 remapped {:.2}% of the flow space (gw1 owned {:.2}%; {:.3}% belonged to others)",
        100.0 * moved / total,
        100.0 * owned / total,
        100.0 * others_moved / total
    );
    assert!(table_after.iter().all(|a| *a != gw1));
    assert!(
        others_moved / total < 0.03,
        "{others_moved} other slots moved"
    );
    for _ in 0..100 {
        let mut c = connect(&client).unwrap();
        let (gw, _) = whoami(&mut c).unwrap();
        assert_ne!(gw, "gw1");
    }
    let mut moved = 0;
    for (c, gw) in &mut conns {
        if gw == "gw1" {
            moved += 1;
            continue;
        }
        let (now, _) = whoami(c).unwrap();
        assert_eq!(&now, gw, "a flow to a healthy gateway moved");
    }
    println!("{moved} of {} open flows were on gw1", conns.len());

    // gw1 comes back and gets new connections again.
    servers.insert("gw1", HttpServer::start(topo.ns("gw1"), "gw1"));
    for b in [&lb1, &lb2] {
        eventually(Duration::from_secs(10), "gw1 back in the table", || {
            healthy(b).contains(&gw1).then_some(())
        });
    }
    eventually(
        Duration::from_secs(10),
        "a new connection reaches gw1",
        || {
            let mut c = connect(&client).ok()?;
            (whoami(&mut c).ok()?.0 == "gw1").then_some(())
        },
    );
    eventually(Duration::from_secs(5), "packets decapsulated", || {
        let decapped: u64 = agents.iter().map(|(m, _)| m.decap_packets.get()).sum();
        (decapped > 0).then_some(())
    });
    drop(conns);
    drop(servers);
    drop(lb1);
    drop(lb2);
    drop(agents);
}

/// bird2 in the router: the VIP route appears while a backend is healthy, disappears when none
/// is and when the balancer stops.
#[test]
fn bgp_announce_and_withdraw_with_bird() {
    bgp_with_bird(Path::Userspace);
}

#[test]
fn bgp_announce_and_withdraw_with_bird_xdp() {
    if require_xdp() {
        bgp_with_bird(Path::Xdp(Mode::Native));
    }
}

fn bgp_with_bird(path: Path) {
    let topo = Topology::new(1);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bird.conf");
    std::fs::write(
        &conf,
        r#"
router id 10.1.0.1;
protocol device { }
protocol kernel {
  ipv4 { import none; export all; };
  merge paths on;
}
protocol bgp lb1 {
  local 10.1.0.1 as 65000;
  neighbor 10.1.0.11 as 65001;
  passive on;
  ipv4 { import all; export none; };
}
"#,
    )
    .unwrap();
    let sock = dir.path().join("bird.ctl");
    let bird = Command::new("ip")
        .args(["netns", "exec", topo.ns("router"), "bird", "-f", "-c"])
        .arg(&conf)
        .arg("-s")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bird (Debian bird2) not found: run scripts/install-deps");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _bird = Kill(bird);
    let router = topo.ns("router").to_owned();
    let route = move || -> String {
        let out = Command::new("ip")
            .args(["-n", &router, "route", "show", "10.9.0.10/32"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let mut gw = HttpServer::start(topo.ns("gw1"), "gw1");
    let lb = start_balancer(
        topo.ns("lb1"),
        config(Some(
            r#"
bgp:
  localAs: 65001
  routerId: 10.1.0.11
  holdTime: 9s
  peers:
    - address: 10.1.0.1
      remoteAs: 65000
"#,
        )),
        path,
    );
    eventually(
        Duration::from_secs(20),
        "bird installs the VIP route",
        || {
            let r = route();
            r.contains("via 10.1.0.11").then_some(())
        },
    );
    // No healthy backend: withdrawn.
    gw.kill();
    eventually(Duration::from_secs(10), "the route is withdrawn", || {
        route().trim().is_empty().then_some(())
    });
    let _gw = HttpServer::start(topo.ns("gw1"), "gw1");
    eventually(Duration::from_secs(10), "announced again", || {
        route().contains("via 10.1.0.11").then_some(())
    });
    assert_eq!(
        lb.metrics
            .bgp_state
            .get_or_create(&causeway_l4lb::metrics::PeerLabels {
                peer: "10.1.0.1".into()
            })
            .get(),
        6
    );
    // Shutdown withdraws.
    drop(lb);
    eventually(Duration::from_secs(10), "withdrawn on shutdown", || {
        route().trim().is_empty().then_some(())
    });
}
