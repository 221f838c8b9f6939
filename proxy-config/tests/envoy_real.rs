//! The translation checked by real Envoy 1.40: `envoy --mode validate` accepts the resources of
//! representative documents (as a static bootstrap in binary proto), and a running Envoy
//! proxies a request to a local backend with a translated document.
//!
//! Needs Envoy: `scripts/install-deps`, then `source ~/.cache/causeway/tools/env` (sets
//! `CAUSEWAY_ENVOY`; otherwise `envoy` on the PATH is used).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use causeway_proxy_config::ProxyConfig;
use causeway_proxy_config::envoy::{EnvoyOptions, static_resources, to_envoy};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::Node;
use prost::Message;
use support::*;

fn envoy_bin() -> String {
    std::env::var("CAUSEWAY_ENVOY").unwrap_or_else(|_| "envoy".into())
}

/// Writes the document's resources as a static bootstrap in binary proto (`.pb`, which Envoy
/// reads as such) and returns its path.
fn write_bootstrap(doc: &ProxyConfig, dir: &Path, name: &str) -> std::path::PathBuf {
    let res = to_envoy(doc, &EnvoyOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let bootstrap = Bootstrap {
        node: Some(Node {
            id: format!("proxy-config-test-{name}"),
            cluster: "proxy-config-test".into(),
            ..Default::default()
        }),
        static_resources: Some(static_resources(&res).unwrap_or_else(|e| panic!("{name}: {e}"))),
        ..Default::default()
    };
    let path = dir.join(format!("{name}.pb"));
    std::fs::write(&path, bootstrap.encode_to_vec()).unwrap();
    path
}

#[test]
fn envoy_validates_the_translated_documents() {
    let dir = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let docs = [
        ("complete-example", parse(&doc_example(0))),
        ("extensions-example", parse(&doc_example(1))),
        ("locality", parse(LOCALITY)),
        (
            "golden-gateway",
            parse(&std::fs::read_to_string(golden.join("gateway.yaml")).unwrap()),
        ),
        (
            "golden-locality",
            parse(&std::fs::read_to_string(golden.join("locality.yaml")).unwrap()),
        ),
    ];
    for (name, doc) in docs {
        // Files named by the document (relative or absolute) are written under the temp dir.
        let doc = with_real_certs(&doc, dir.path());
        let path = write_bootstrap(&doc, dir.path(), name);
        let out = Command::new(envoy_bin())
            .args(["--mode", "validate", "-l", "error", "-c"])
            .arg(&path)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run Envoy {:?}: {e}; run scripts/install-deps and source ~/.cache/causeway/tools/env", envoy_bin())
            });
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Envoy refused {name}:\n{text}");
        assert!(text.contains(" OK"), "{name}: {text}");
    }

    // The check has teeth: a CA bundle that is no PEM is refused.
    let mut doc = parse(LOCALITY);
    doc.clusters[1].tls = Some(causeway_proxy_config::UpstreamTls {
        mode: causeway_proxy_config::TlsMode::Simple,
        ca_pem: Some("not a certificate".into()),
        ..Default::default()
    });
    let path = write_bootstrap(&doc, dir.path(), "broken");
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "-l", "error", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "Envoy accepted a broken CA");
}

/// A one-thread HTTP/1.1 backend answering every request with a fixed body; stops when
/// dropped.
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(body: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let _ = write!(
                            s,
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend { addr, stop }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A running Envoy, killed and reaped when dropped, also when the test panics.
struct Envoy(Child);

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One GET; (status, body).
fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn envoy_proxies_with_a_translated_document() {
    let backend = Backend::start("hello from the backend v1");
    let port = free_port();
    let doc = parse(&format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:{port}", protocol: HTTP}}
virtualHosts:
- name: shop
  domains: [shop.example.com]
  routes:
  - name: health
    match: {{path: {{exact: /healthz}}}}
    directResponse: {{status: 200, body: ok}}
  - route: {{cluster: shop, timeout: 5s}}
    responseHeaders: {{set: {{x-served-by: envoy}}}}
clusters:
- name: shop
  connectTimeout: 1s
  localityEndpoints:
  - locality: {{region: us-west, zone: us-west-a}}
    weight: 1
    endpoints: [{{address: "{}", labels: {{cluster: c1}}}}]
"#,
        backend.addr
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = write_bootstrap(&doc, dir.path(), "live");
    let log = dir.path().join("envoy.log");
    let base_id = std::process::id() % 100_000 * 20 + 19;
    let envoy = Envoy(
        Command::new(envoy_bin())
            .arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "-l", "warning", "--base-id"])
            .arg(base_id.to_string())
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run Envoy {:?}: {e}", envoy_bin())),
    );
    let listener: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut envoy = envoy;
    let answer = loop {
        if let Some(status) = envoy.0.try_wait().unwrap() {
            panic!(
                "Envoy exited ({status}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        match get(listener, "shop.example.com", "/items") {
            Ok(a) if a.0 == 200 => break a,
            other if Instant::now() > deadline => panic!(
                "no 200 through Envoy within 30 s: {other:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
            // Envoy is still starting (connection refused): poll again shortly.
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(answer.1, "hello from the backend v1");
    assert_eq!(
        get(listener, "shop.example.com:80", "/healthz").unwrap(),
        (200, "ok".into())
    );
    assert_eq!(get(listener, "other.example.com", "/items").unwrap().0, 404);
}
