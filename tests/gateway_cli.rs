//! End-to-end: the `causeway gateway` binary — JSON access log on stdout, reload on SIGHUP,
//! refusal of a broken file, clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A port free on `ip` right now (the gateway binds it a moment later; the address is ours).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config(port: u16, body: &str) -> String {
    format!(
        "listeners:\n- {{name: http, address: \"127.0.0.12:{port}\", protocol: HTTP}}\n\
         virtualHosts:\n- {{name: all, domains: [\"*\"], routes: [{{name: hello, \
         directResponse: {{status: 200, body: \"{body}\"}}}}]}}\n"
    )
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[test]
fn gateway_binary_serves_logs_reloads_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let port = free_port("127.0.0.12");
    let admin_port = free_port("127.0.0.12");
    std::fs::write(&path, config(port, "one")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["gateway", "--concurrency", "1", "--config"])
        .arg(&path)
        .args(["--admin", &format!("127.0.0.12:{admin_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let url = format!("http://127.0.0.12:{port}/x");
    let ready = format!("http://127.0.0.12:{admin_port}/ready");
    eventually("the admin server", || curl(&ready).0 == 200);
    assert_eq!(curl(&url), (200, "one".to_owned()));

    // A broken file is refused; the running configuration stays.
    std::fs::write(&path, "listeners: [{name: http, protocol: HTTPX}]").unwrap();
    signal(pid, "-HUP");
    let metrics = format!("http://127.0.0.12:{admin_port}/stats/prometheus");
    eventually("the refused reload", || {
        curl(&metrics)
            .1
            .contains("causeway_gateway_config_reload_failures_total 1")
    });
    assert_eq!(curl(&url), (200, "one".to_owned()));

    std::fs::write(&path, config(port, "two")).unwrap();
    signal(pid, "-HUP");
    eventually("the reload", || curl(&url).1 == "two");

    signal(pid, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let access: Vec<serde_json::Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "causeway::access")
        .collect();
    assert!(access.len() >= 3, "{out}");
    let first = &access[0];
    assert_eq!(first["response_code"], 200, "{first}");
    assert_eq!(first["route_name"], "hello", "{first}");
    assert_eq!(first["path"], "/x", "{first}");
    assert_eq!(first["listener"], "http", "{first}");
    assert!(
        first["start_time"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );
    assert!(
        out.contains("configuration refused; the previous one keeps serving"),
        "{out}"
    );
    assert!(out.contains("listeners[0].address"), "{out}");
}
