//! End-to-end: `causeway gateway --xds` against an in-process ADS server — serves what the
//! controller sends, follows a new snapshot, NACKs what it cannot compile and keeps serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use causeway_proxy_config::ProxyConfig;
use causeway_proxy_config::envoy::{EnvoyOptions, to_envoy};
use causeway_xds::{AdsServer, ServerOptions, Snapshot, SnapshotCache, SyncState};

use support::{Guard as Kill, free_port};

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

/// A backend answering every request with `backend-v1`.
fn backend() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nbackend-v1",
                );
            });
        }
    });
    port
}

fn snapshot(yaml: &str) -> Snapshot {
    let doc = ProxyConfig::from_yaml(yaml).unwrap();
    let res = to_envoy(&doc, &EnvoyOptions::default()).unwrap().to_any();
    Snapshot::from_resources(res.into_values().flat_map(|m| m.into_values())).unwrap()
}

#[test]
fn gateway_follows_xds_nacks_what_it_cannot_compile_and_keeps_serving() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cache = SnapshotCache::new();
    let server = AdsServer::new(cache.clone()).with_group_fn(|n| {
        format!(
            "{}/{}/{}",
            n.role,
            n.cluster,
            n.metadata.get("address").cloned().unwrap_or_default()
        )
    });
    let status = server.status().clone();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let xds_port = listener.local_addr().unwrap().port();
    rt.spawn(async move {
        let _ = causeway_xds::serve_listener(
            listener,
            server,
            &ServerOptions::default(),
            std::future::pending::<()>(),
        )
        .await;
    });

    let backend = backend();
    let port = free_port();
    let admin = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["gateway", "--concurrency", "1", "--xds"])
        .arg(format!("http://127.0.0.1:{xds_port}"))
        .args(["--cluster", "c1", "--address", "127.0.0.1"])
        .args(["--locality", "us-west/us-west-a", "--node-id", "gw-test"])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _kill = Kill(child);
    let ready = format!("http://127.0.0.1:{admin}/ready");
    let url = format!("http://127.0.0.1:{port}/x");

    // No snapshot yet: admin only, not ready.
    eventually("the admin server", || curl(&ready).0 == 503);

    let group = "gateway/c1/127.0.0.1";
    let routed = format!(
        "listeners:\n- {{name: http, address: \"127.0.0.1:{port}\", protocol: HTTP}}\n\
         virtualHosts:\n- {{name: all, domains: [\"*\"], routes: [{{name: app, route: {{cluster: app}}}}]}}\n\
         clusters:\n- {{name: app, endpoints: [{{address: \"127.0.0.1:{backend}\"}}]}}\n"
    );
    cache.set_snapshot(group, snapshot(&routed));
    eventually("the first config", || {
        curl(&url) == (200, "backend-v1".into())
    });
    assert_eq!(curl(&ready).0, 200);

    let direct = format!(
        "listeners:\n- {{name: http, address: \"127.0.0.1:{port}\", protocol: HTTP}}\n\
         virtualHosts:\n- {{name: all, domains: [\"*\"], routes: [{{name: hello, \
         directResponse: {{status: 200, body: \"two\"}}}}]}}\n"
    );
    cache.set_snapshot(group, snapshot(&direct));
    eventually("the pushed config", || curl(&url) == (200, "two".into()));

    // An HTTPS listener whose certificate does not parse: NACKed, the old config keeps serving.
    let https_port = free_port();
    let bad = format!(
        "listeners:\n- {{name: http, address: \"127.0.0.1:{port}\", protocol: HTTP}}\n\
         - {{name: https, address: \"127.0.0.1:{https_port}\", protocol: HTTPS, tls: {{certificates: \
         [{{default: true, certPem: not-a-certificate, keyPem: not-a-key}}]}}}}\n\
         virtualHosts:\n- {{name: all, domains: [\"*\"], routes: [{{name: hello, \
         directResponse: {{status: 200, body: \"three\"}}}}]}}\n"
    );
    cache.set_snapshot(group, snapshot(&bad));
    let mut message = String::new();
    eventually("the NACK in the server's status", || {
        status.proxies().iter().any(|p| {
            p.node.id == "gw-test"
                && p.types.values().any(|t| {
                    if t.state == SyncState::Nacked {
                        message = t.error.clone().unwrap_or_default();
                        true
                    } else {
                        false
                    }
                })
        })
    });
    assert!(
        message.contains("listeners[1].tls.certificates[0]"),
        "{message}"
    );
    assert_eq!(curl(&url), (200, "two".into()));
    assert_eq!(curl(&ready).0, 200);
}
