//! Test peers: a real Envoy (killed on drop), a tiny HTTP backend, a raw HTTP/1.1 client, the
//! ADS server on a free port, polling with a deadline, and Envoy resource builders.
// Each test binary that includes this uses a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use causeway_xds::envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use causeway_xds::envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiVersion, ConfigSource, SocketAddress, address,
    config_source, socket_address,
};
use causeway_xds::envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use causeway_xds::envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use causeway_xds::envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use causeway_xds::envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use causeway_xds::envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use causeway_xds::envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;
use causeway_xds::envoy_types::pb::google::protobuf::Duration as PbDuration;
use causeway_xds::{AdsServer, Any, ServerOptions, SnapshotCache, pack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit` with `what` and the
/// last value seen.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {limit:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The ADS server on a free loopback port, stopped when dropped.
pub struct Xds {
    pub addr: SocketAddr,
    pub server: AdsServer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Xds {
    pub async fn start(cache: SnapshotCache) -> Xds {
        Self::start_on(AdsServer::new(cache), "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(server: AdsServer, addr: SocketAddr) -> Xds {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let s = server.clone();
        let task = tokio::spawn(async move {
            causeway_xds::serve_listener(listener, s, &ServerOptions::default(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Xds {
            addr,
            server,
            stop: Some(stop),
            task,
        }
    }

    /// Stops serving and closes every stream, as a controller that goes away does.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the ADS server stops within 10 s of its shutdown signal")
            .unwrap();
    }
}

impl Drop for Xds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

static NEXT_BASE_ID: AtomicU32 = AtomicU32::new(0);

/// A running Envoy, killed and reaped when dropped (also when the test panics).
pub struct Envoy {
    child: Child,
    pub admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Starts Envoy with this bootstrap (JSON) and waits until its admin port is known.
    pub async fn start(bootstrap: &str) -> Envoy {
        let bin = std::env::var("CAUSEWAY_ENVOY").unwrap_or_else(|_| "envoy".into());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bootstrap.json");
        let admin_path = dir.path().join("admin-address");
        let log = dir.path().join("envoy.log");
        std::fs::write(&config, bootstrap).unwrap();
        // Unique per process and Envoy so parallel tests never share shared-memory regions.
        let base_id =
            (std::process::id() % 100_000) * 20 + NEXT_BASE_ID.fetch_add(1, Ordering::Relaxed) % 20;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .args(["--disable-hot-restart", "-l", "warning", "--base-id"])
            .arg(base_id.to_string())
            .arg("--admin-address-path")
            .arg(&admin_path)
            .arg("--log-path")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run Envoy {bin:?}: {e}; run scripts/install-deps and source ~/.cache/causeway/tools/env")
            });
        let mut envoy = Envoy {
            child,
            admin: "127.0.0.1:1".parse().unwrap(),
            log,
            _dir: dir,
        };
        let admin = {
            let envoy = &mut envoy;
            eventually("Envoy admin address", Duration::from_secs(30), || {
                let exited = envoy.child.try_wait().ok().flatten();
                let text = std::fs::read_to_string(&admin_path).unwrap_or_default();
                let log = envoy.log_text();
                async move {
                    if let Some(status) = exited {
                        panic!("Envoy exited early ({status}); log:\n{log}");
                    }
                    text.trim()
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("{text:?}: {e}"))
                }
            })
            .await
        };
        envoy.admin = admin;
        envoy
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the admin port; the body.
    pub async fn admin_get(&self, path: &str) -> Result<String, String> {
        let (status, body) = http_get(self.admin, "admin", path).await?;
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("admin {path}: {status} {body}"))
        }
    }

    /// The value of one stat (`/stats?filter=`), if present.
    pub async fn stat(&self, name: &str) -> Result<u64, String> {
        let body = self
            .admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")))
            .await?;
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no stat {name} in {body:?}"))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A backend that answers every request with 200 and `body`, until dropped.
pub struct Backend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(body: &'static str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    // One request per connection: read the head, answer, close.
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Backend { addr, task }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A one-shot HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no response head in {text:?}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok((status, body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// A free loopback port (bound, read back, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ads() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// An HTTP listener on `addr` whose routes come from RDS `route_name`.
pub fn listener(name: &str, addr: SocketAddr, route_name: &str) -> Any {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    pack(&Listener {
        name: name.into(),
        address: Some(socket(addr)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// A route configuration sending `/` (or paths matching `regex`) to `cluster`.
pub fn route_config(name: &str, cluster: &str, regex: Option<&str>) -> Any {
    let path_specifier = match regex {
        Some(r) => route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: r.into(),
            ..Default::default()
        }),
        None => route_match::PathSpecifier::Prefix("/".into()),
    };
    pack(&RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(path_specifier),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// An EDS cluster whose endpoints come from ADS.
pub fn eds_cluster(name: &str) -> Any {
    pack(&Cluster {
        name: name.into(),
        connect_timeout: Some(PbDuration {
            seconds: 1,
            nanos: 0,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        ..Default::default()
    })
}

/// Endpoints of `cluster`.
pub fn endpoints(cluster: &str, addrs: &[SocketAddr]) -> Any {
    pack(&ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addrs
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(*a)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    })
}
