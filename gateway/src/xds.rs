//! The gateway fed by the controller's ADS (`causeway gateway --xds URL`) instead of a file.
//!
//! The same runtime [`Config`] as `--config FILE`, filled from xDS: the [`XdsHandler`] keeps the
//! last accepted resources of each type (CDS, EDS, LDS, SRDS, RDS, SDS); on every response it
//! assembles all six into [`EnvoyResources`], turns them into a document with [`from_envoy`],
//! compiles it with [`compile`] and swaps it into the running gateway with [`Gateway::reload`]
//! (the same atomic swap a file reload uses), then ACKs.
//!
//! - A set that still lacks what it references (LDS naming an RDS not received yet, a scoped
//!   listener without its routing scopes, a scope naming an RDS not received yet, a cluster
//!   without its endpoints, a listener without its secret, a route to a cluster not received) is
//!   *not complete yet*: ACKed, and the previous configuration keeps serving, as Envoy warms.
//! - Anything else that fails is NACKed with the reason; the last good configuration stays.
//! - Until the first complete configuration the gateway serves only its admin port, whose
//!   `/ready` answers 503.
//! - The [`AdsClient`] reconnects with backoff by itself; the configuration in force stays while
//!   the controller is away.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use causeway_crds::validation::Severity;
use causeway_proxy_config::ProxyConfig;
use causeway_proxy_config::envoy::{EnvoyResources, TranslateError, from_envoy};
use causeway_xds::cache::Locality;
use causeway_xds::{AdsClient, Any, ClientOptions, ClientStatus, Handler, Node, NodeInfo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::admin::{self, LogControl};
use crate::config::file::compile;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::{ApplyError, Gateway, Limits};

/// The six types a gateway configuration is assembled from, in push order.
pub const TYPES: [&str; 6] = causeway_xds::type_url::PUSH_ORDER;

/// How `causeway gateway --xds` runs.
#[derive(Clone)]
pub struct XdsOptions {
    /// The controller's ADS, e.g. `http://127.0.0.1:15010`.
    pub endpoint: String,
    /// The node sent to the controller (see [`gateway_node`]).
    pub node: Node,
    /// Admin server address; `None` disables it.
    pub admin: Option<SocketAddr>,
    /// Data-path limits.
    pub limits: Limits,
    /// Run-time log filter control for `/logging`.
    pub log: Option<LogControl>,
}

/// Why the xDS gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// `--locality` is not `region[/zone[/subzone]]`.
    #[error(
        "invalid locality {0:?}: expected region, region/zone or region/zone/subzone \
         (e.g. us-west/us-west-a)"
    )]
    Locality(String),
    /// The empty initial configuration could not be put into service (should not happen).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The admin address could not be bound.
    #[error("cannot listen on admin address {0}: {1} (choose another with --admin)")]
    Admin(SocketAddr, std::io::Error),
    /// The xDS client thread could not start.
    #[error("cannot start the xDS client thread: {0}")]
    Thread(std::io::Error),
}

/// Parses `region[/zone[/subzone]]`.
pub fn parse_locality(text: &str) -> Result<Locality, XdsError> {
    let parts: Vec<&str> = text.split('/').collect();
    if parts.len() > 3 || parts[0].is_empty() || parts.iter().any(|p| p.trim() != *p) {
        return Err(XdsError::Locality(text.to_owned()));
    }
    let part = |i: usize| parts.get(i).map(|s| (*s).to_owned()).unwrap_or_default();
    Ok(Locality {
        region: part(0),
        zone: part(1),
        subzone: part(2),
    })
}

/// The default node id: `gateway-<cluster>-<address or hostname>-<pid>`.
pub fn default_node_id(cluster: &str, address: Option<IpAddr>) -> String {
    let host = match address {
        Some(a) => a.to_string(),
        None => hostname(),
    };
    format!("gateway-{cluster}-{host}-{}", std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The node a gateway sends: `id`, `cluster`, locality, and metadata `cluster`, `role: gateway`,
/// `namespace` (empty), `locality` (`region/zone/subzone`) and, when given, `address` (the
/// gateway address this process serves: the controller groups gateways by cluster + address).
pub fn gateway_node(
    id: &str,
    cluster: &str,
    address: Option<IpAddr>,
    locality: Option<Locality>,
) -> Node {
    let mut metadata = BTreeMap::new();
    if let Some(a) = address {
        metadata.insert("address".to_owned(), a.to_string());
    }
    NodeInfo {
        id: id.to_owned(),
        node_cluster: cluster.to_owned(),
        cluster: cluster.to_owned(),
        role: "gateway".to_owned(),
        namespace: String::new(),
        locality: locality.unwrap_or_default(),
        metadata,
    }
    .to_node()
}

/// What the resources held so far amount to.
#[derive(Debug)]
pub enum Assembled {
    /// Something referenced has not arrived yet (or a type was never received): ACK, keep the
    /// configuration in force. The text says what is missing.
    Incomplete(String),
    /// A complete, compiled configuration and the document it came from.
    Complete(Box<(ProxyConfig, Config)>),
}

/// Assembles resources by type URL into a configuration. `Err` is a reason to NACK.
pub fn assemble(resources: &BTreeMap<String, Vec<Any>>) -> Result<Assembled, String> {
    if let Some(missing) = TYPES.iter().find(|t| !resources.contains_key(**t)) {
        return Ok(Assembled::Incomplete(format!(
            "no {} response received yet",
            causeway_xds::type_url::short(missing)
        )));
    }
    let envoy =
        EnvoyResources::from_any(resources.values().flatten()).map_err(|e| e.to_string())?;
    let doc = match from_envoy(&envoy) {
        Ok(doc) => doc,
        Err(e) if is_missing_resource(&e) => return Ok(Assembled::Incomplete(e.to_string())),
        Err(e) => return Err(e.to_string()),
    };
    match compile(&doc, Path::new(".")) {
        Ok(config) => Ok(Assembled::Complete(Box::new((doc, config)))),
        Err(e) if is_missing_reference(&e) => Ok(Assembled::Incomplete(e.to_string())),
        Err(e) => Err(e.to_string()),
    }
}

/// `from_envoy`'s "a listener's routing scopes / RDS, or a cluster's EDS resource was not
/// received".
fn is_missing_resource(e: &TranslateError) -> bool {
    match e {
        TranslateError::Resource { reason, .. } => {
            (reason.starts_with("no RouteConfiguration named ")
                || reason.starts_with("no ScopedRouteConfiguration for listener ")
                || reason.starts_with("no ClusterLoadAssignment for "))
                && reason.ends_with(" was received")
        }
        TranslateError::Document { .. } => false,
    }
}

/// `compile`'s findings are all "no cluster / secret named X": a route or listener refers to a
/// CDS or SDS resource that has not arrived yet.
fn is_missing_reference(e: &ConfigError) -> bool {
    let errors: Vec<_> = e
        .findings()
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    !errors.is_empty()
        && errors.iter().all(|f| {
            let m = f.message.as_str();
            (m.starts_with("no cluster named ") && m.ends_with(" in clusters"))
                || (m.starts_with("no secret named ") && m.ends_with(" in secrets"))
        })
}

/// A configuration to put into service, with where to report the outcome.
type ApplyRequest = (Config, std::sync::mpsc::Sender<Result<(), String>>);

/// The [`Handler`] of the gateway's [`AdsClient`]: keeps the last accepted resources per type
/// and swaps each complete configuration into the gateway.
pub struct XdsHandler {
    resources: BTreeMap<String, Vec<Any>>,
    applied: Option<ProxyConfig>,
    apply: mpsc::UnboundedSender<ApplyRequest>,
}

impl XdsHandler {
    fn swap(&self, config: Config) -> Result<(), String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.apply
            .send((config, tx))
            .map_err(|_| "the gateway is shutting down".to_owned())?;
        // The handler runs on the xDS client's own thread; the swap runs on the gateway's
        // runtime (its listeners' accept loops belong there), so waiting here blocks nothing
        // of the data path.
        rx.recv()
            .map_err(|_| "the gateway is shutting down".to_owned())?
    }
}

impl Handler for XdsHandler {
    fn apply(&mut self, type_url: &str, version: &str, resources: &[Any]) -> Result<(), String> {
        let kind = causeway_xds::type_url::short(type_url).to_owned();
        let previous = self
            .resources
            .insert(type_url.to_owned(), resources.to_vec());
        let restore = |this: &mut Self| match previous {
            Some(p) => {
                this.resources.insert(type_url.to_owned(), p);
            }
            None => {
                this.resources.remove(type_url);
            }
        };
        match assemble(&self.resources) {
            Ok(Assembled::Incomplete(why)) => {
                tracing::info!(r#type = %kind, version, waiting_for = %why, "xDS configuration not complete yet; the one in force keeps serving");
                Ok(())
            }
            Ok(Assembled::Complete(built)) => {
                let (doc, config) = *built;
                if self.applied.as_ref() == Some(&doc) {
                    return Ok(());
                }
                match self.swap(config) {
                    Ok(()) => {
                        tracing::info!(r#type = %kind, version, "xDS configuration applied");
                        self.applied = Some(doc);
                        Ok(())
                    }
                    Err(e) => {
                        restore(self);
                        tracing::error!(r#type = %kind, version, error = %e, "xDS configuration refused (NACK); the previous one keeps serving");
                        Err(e)
                    }
                }
            }
            Err(e) => {
                restore(self);
                tracing::error!(r#type = %kind, version, error = %e, "xDS configuration refused (NACK); the previous one keeps serving");
                Err(e)
            }
        }
    }
}

/// A started xDS gateway.
pub struct XdsRunning {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Where the admin server listens.
    pub admin_address: Option<SocketAddr>,
    /// Set once the first complete configuration is in service.
    pub ready: Arc<AtomicBool>,
    /// The xDS client's status (connected, accepted and rejected versions).
    pub status: watch::Receiver<ClientStatus>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl XdsRunning {
    /// Waits for SIGTERM or SIGINT, stops the xDS client, then drains.
    pub async fn wait_for_shutdown(mut self) {
        crate::app::wait_for_signal().await;
        tracing::info!("shutting down: draining open connections");
        self.stop_client();
        self.gateway.shutdown().await;
    }

    fn stop_client(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The client thread ends on its own; joining could wait on a swap that needs this
        // runtime, so it is left to finish.
        self.thread.take();
    }
}

/// Starts the gateway with no listeners, its admin server (`/ready` 503 until the first
/// configuration) and the xDS client on its own thread.
pub async fn start(opts: XdsOptions) -> Result<XdsRunning, XdsError> {
    let metrics = Arc::new(Metrics::new());
    let empty = Config {
        listeners: vec![],
        virtual_hosts: vec![],
        clusters: BTreeMap::new(),
    };
    let gateway = Gateway::start(empty, metrics, opts.limits.clone()).await?;
    let ready = Arc::new(AtomicBool::new(false));

    let admin_address = match opts.admin {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| XdsError::Admin(addr, e))?;
            let bound = l.local_addr().unwrap_or(addr);
            tokio::spawn(admin::serve_with_readiness(
                l,
                gateway.clone(),
                opts.log.clone(),
                Some(ready.clone()),
            ));
            Some(bound)
        }
        None => None,
    };

    let (apply_tx, mut apply_rx) = mpsc::unbounded_channel::<ApplyRequest>();
    let gw = gateway.clone();
    let ready_flag = ready.clone();
    tokio::spawn(async move {
        while let Some((config, reply)) = apply_rx.recv().await {
            let result = gw.reload(config).await.map_err(|e| e.to_string());
            if result.is_ok() && !ready_flag.swap(true, Ordering::SeqCst) {
                tracing::info!(
                    listeners = gw.config().listeners.len(),
                    clusters = gw.config().clusters.len(),
                    "first xDS configuration in service: ready"
                );
            }
            let _ = reply.send(result);
        }
    });

    let client = AdsClient::new(ClientOptions::new(opts.endpoint.clone(), opts.node.clone()));
    let status = client.status();
    let handler = XdsHandler {
        resources: BTreeMap::new(),
        applied: None,
        apply: apply_tx,
    };
    let (stop, stop_rx) = oneshot::channel::<()>();
    tracing::info!(endpoint = %opts.endpoint, node = %opts.node.id, "gateway waiting for its configuration from xDS");
    let thread = std::thread::Builder::new()
        .name("causeway-xds".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the xDS client runtime");
                    return;
                }
            };
            rt.block_on(client.run(handler, async {
                let _ = stop_rx.await;
            }));
        })
        .map_err(XdsError::Thread)?;

    Ok(XdsRunning {
        gateway,
        admin_address,
        ready,
        status,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Runs until SIGTERM/SIGINT, then drains.
pub async fn run(opts: XdsOptions) -> Result<(), XdsError> {
    start(opts).await?.wait_for_shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use causeway_proxy_config::envoy::{EnvoyOptions, to_envoy};

    fn by_type(doc: &ProxyConfig) -> BTreeMap<String, Vec<Any>> {
        let mut out: BTreeMap<String, Vec<Any>> =
            TYPES.iter().map(|t| ((*t).to_owned(), vec![])).collect();
        for (t, m) in to_envoy(doc, &EnvoyOptions::default()).unwrap().to_any() {
            out.insert(t, m.into_values().collect());
        }
        out
    }

    fn doc(yaml: &str) -> ProxyConfig {
        ProxyConfig::from_yaml(yaml).unwrap()
    }

    const GOOD: &str = "listeners:\n- {name: http, address: \"127.0.0.1:0\", protocol: HTTP}\n\
        virtualHosts:\n- {name: all, domains: [\"*\"], routes: [{name: r, route: {cluster: app}}]}\n\
        clusters:\n- {name: app, endpoints: [{address: \"127.0.0.1:9\"}]}\n";

    #[test]
    fn complete_set_compiles() {
        let r = by_type(&doc(GOOD));
        assert!(matches!(assemble(&r), Ok(Assembled::Complete(_))));
    }

    #[test]
    fn missing_types_and_references_are_incomplete_not_errors() {
        let full = by_type(&doc(GOOD));
        let mut r = full.clone();
        r.remove(causeway_xds::type_url::SECRET);
        assert!(matches!(assemble(&r), Ok(Assembled::Incomplete(_))));
        // LDS before its RDS.
        let mut r = full.clone();
        r.insert(causeway_xds::type_url::ROUTE.into(), vec![]);
        match assemble(&r) {
            Ok(Assembled::Incomplete(why)) => assert!(why.contains("RouteConfiguration"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A route to a cluster not received.
        let mut r = full.clone();
        r.insert(causeway_xds::type_url::CLUSTER.into(), vec![]);
        r.insert(causeway_xds::type_url::ENDPOINT.into(), vec![]);
        match assemble(&r) {
            Ok(Assembled::Incomplete(why)) => assert!(why.contains("no cluster named"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// A scoped listener (every domain exact) before its routing scopes, and a scope before
    /// its route configuration: not complete yet, not an error.
    #[test]
    fn scoped_listener_waits_for_its_scopes_and_their_routes() {
        let scoped = GOOD.replace("domains: [\"*\"]", "domains: [app.example.com]");
        let full = by_type(&doc(&scoped));
        assert!(!full[causeway_xds::type_url::SCOPED_ROUTE].is_empty());
        assert!(matches!(assemble(&full), Ok(Assembled::Complete(_))));
        let mut r = full.clone();
        r.insert(causeway_xds::type_url::SCOPED_ROUTE.into(), vec![]);
        match assemble(&r) {
            Ok(Assembled::Incomplete(why)) => {
                assert!(why.contains("no ScopedRouteConfiguration"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let mut r = full.clone();
        r.insert(causeway_xds::type_url::ROUTE.into(), vec![]);
        match assemble(&r) {
            Ok(Assembled::Incomplete(why)) => assert!(why.contains("RouteConfiguration"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_configuration_is_an_error() {
        let tls = GOOD.replace(
            "protocol: HTTP}",
            "protocol: HTTPS, tls: {certificates: [{default: true, certPem: nope, keyPem: nope}]}}",
        );
        match assemble(&by_type(&doc(&tls))) {
            Err(e) => assert!(e.contains("certificates[0]"), "{e}"),
            Ok(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn locality_and_node() {
        let l = parse_locality("us-west/us-west-a").unwrap();
        assert_eq!(
            (l.region.as_str(), l.zone.as_str()),
            ("us-west", "us-west-a")
        );
        assert!(parse_locality("").is_err());
        assert!(parse_locality("a/b/c/d").is_err());
        let n = gateway_node("g1", "c1", Some("10.0.0.1".parse().unwrap()), Some(l));
        let info = NodeInfo::from_node(&n);
        assert_eq!(info.role, "gateway");
        assert_eq!(info.cluster, "c1");
        assert_eq!(info.metadata["address"], "10.0.0.1");
        assert_eq!(info.locality.zone, "us-west-a");
        assert!(default_node_id("c1", None).starts_with("gateway-c1-"));
    }
}
