//! Test helpers: certificates, in-process backends, starting the gateway, real clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use causeway_gateway::{Limits, Options, Running};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate.
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf certificate and key (PEM) for `names`.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Indents PEM for a YAML block scalar.
pub fn indent(pem: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    pem.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A body that sends one chunk and then never finishes.
struct Stall(bool);

impl hyper::body::Body for Stall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.0 {
            return std::task::Poll::Pending;
        }
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"partial",
        )))))
    }
}

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The answer of the echo backends: name, request line, then every request header.
/// `/delay/MS` waits before answering; `/stall-body` sends its head and part of a body, then
/// stalls.
async fn echo(name: Arc<str>, req: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    if path == "/stall-body" {
        return Ok(Response::new(Stall(false).boxed()));
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut body = format!("{name} {} {path} {:?}\n", req.method(), req.version());
    for (k, v) in req.headers() {
        body.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    let received = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    body.push_str(&format!("body-bytes: {received}\n"));
    let mut res = Response::new(Full::new(Bytes::from(body)).boxed());
    res.headers_mut().insert("x-backend", name.parse().unwrap());
    res.headers_mut()
        .insert("connection", "keep-alive".parse().unwrap());
    res.headers_mut()
        .insert("keep-alive", "timeout=30".parse().unwrap());
    Ok(res)
}

/// An HTTP/1.1 + h2c echo backend on a fresh loopback port.
pub async fn backend(name: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name: Arc<str> = Arc::from(name);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| echo(name.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TLS echo backend with its own certificate; when `client_ca` is set it requires a client
/// certificate from that CA.
pub async fn tls_backend(name: &str, cert: &str, key: &str, client_ca: Option<&str>) -> SocketAddr {
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(chain, key).unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name: Arc<str> = Arc::from(name);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let name = name.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(move |req| echo(name.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

/// A TCP backend that answers every line with `name: line`.
pub async fn tcp_echo(name: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let reply = format!("{name}: {}", String::from_utf8_lossy(&buf[..n]));
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A started gateway and the directory holding its config file.
pub struct Gw {
    pub running: Running,
    pub dir: tempfile::TempDir,
}

impl Gw {
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.running
            .gateway
            .bound_address(listener)
            .unwrap_or_else(|| panic!("no listener {listener}"))
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    pub fn admin(&self) -> SocketAddr {
        self.running.admin_address.unwrap()
    }
}

/// Writes `yaml` to a temp dir and starts the gateway on it (admin on an ephemeral port).
pub async fn start(yaml: &str) -> Gw {
    start_with(yaml, Limits::default()).await
}

pub async fn start_with(yaml: &str, limits: Limits) -> Gw {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let running = causeway_gateway::start(Options {
        config_path: path,
        admin: Some("127.0.0.1:0".parse().unwrap()),
        limits,
        log: None,
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    Gw { running, dir }
}

/// The outcome of one curl run.
#[derive(Debug)]
pub struct Curl {
    pub status: u16,
    pub body: String,
    pub headers: String,
    pub http_version: String,
    pub exit: i32,
    pub stderr: String,
}

/// Runs the real curl; `-s`, headers to a separate section, status and version appended.
pub async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-D",
            "-",
            "-w",
            "\n@@%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .await
        .expect("curl is installed");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (main, meta) = stdout.rsplit_once("\n@@").unwrap_or((&stdout, "0 0"));
    let (status, version) = meta.split_once(' ').unwrap_or(("0", "0"));
    let (headers, body) = main.split_once("\r\n\r\n").unwrap_or(("", main));
    Curl {
        status: status.trim().parse().unwrap_or(0),
        body: body.to_owned(),
        headers: headers.to_ascii_lowercase(),
        http_version: version.trim().to_owned(),
        exit: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A pooled HTTP/1.1 client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// GET through the gateway with a Host header; returns status, headers and body.
pub async fn get(
    c: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    let mut b = Request::get(format!("http://{addr}{path}")).header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let res = c
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `f` until it returns true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything the gateway logs in this test binary, for assertions on log lines.
pub fn captured_logs() -> String {
    use std::sync::{Mutex, OnceLock};
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buf = BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("info")
            .with_writer(move || LogWriter(w.clone()))
            .try_init();
        buf
    });
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One HTTP/1.1 connection, kept for a whole test (a pooled client may open more).
pub struct Conn(tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>);

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Conn(tokio::sync::Mutex::new(send))
    }

    /// GET / and return the x-backend header of the answer.
    pub async fn backend(&self) -> String {
        let mut send = self.0.lock().await;
        send.ready().await.unwrap();
        let req = Request::get("/")
            .header("host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        let backend = res.headers()["x-backend"].to_str().unwrap().to_owned();
        res.into_body().collect().await.unwrap();
        backend
    }
}

/// The demo app (the seeds' multiroute backend) with version `version`.
pub async fn demo_backend(version: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let app = causeway_gateway::demo::DemoApp {
        config: causeway_gateway::demo::DemoConfig::default(),
        version: version.to_owned(),
        pod_ip: addr.ip().to_string(),
        db_pass: None,
    };
    tokio::spawn(causeway_gateway::demo::serve(l, app));
    addr
}
