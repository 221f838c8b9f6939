//! Running the controller: open the store, make sure the API token exists, serve the API until
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{self, ApiState};
use crate::reconcile::{Desired, Reconciler};
use crate::status::ProxyReport;
use crate::store::Store;
use crate::store::etcd::{EtcdOptions, EtcdStore};
use crate::store::leader::{ElectionOptions, Leadership};
use crate::store::memory::{MemoryOptions, MemoryStore};

/// Default address of the controller API (loopback only unless configured).
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:15080";
/// Name of the token file in the data directory.
pub const TOKEN_FILE: &str = "token";

/// Which store backs the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// In-process, persisted in the data directory.
    Memory,
    /// etcd at these endpoints.
    Etcd(Vec<String>),
}

/// Everything `causeway controller` is told.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// API listen address.
    pub listen: SocketAddr,
    /// State directory: the token, and the memory store's files.
    pub data_dir: PathBuf,
    /// The store backend.
    pub store: StoreChoice,
    /// VIP pools: name → CIDRs. AccessPoints pick one with `spec.vip.pool` (default `default`).
    pub vip_pools: BTreeMap<String, Vec<String>>,
    /// Who this controller is in a leader election (etcd only); the host name by default.
    pub identity: String,
    /// Lease time to live of the leader election (etcd only).
    pub leader_ttl: Duration,
    /// Where the ADS (xDS) server listens; `None` turns it off.
    pub xds_listen: Option<SocketAddr>,
}

/// The default VIP pool: `10.240.0.0/16`, as in the examples.
pub fn default_vip_pools() -> BTreeMap<String, Vec<String>> {
    [("default".to_owned(), vec!["10.240.0.0/16".to_owned()])].into()
}

impl ControllerConfig {
    /// A configuration with the defaults: memory store in `data_dir`, API on
    /// [`DEFAULT_API_ADDR`], the default VIP pool.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ControllerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 15080)),
            data_dir: data_dir.into(),
            store: StoreChoice::Memory,
            vip_pools: default_vip_pools(),
            identity: "controller".to_owned(),
            leader_ttl: Duration::from_secs(10),
            xds_listen: Some(SocketAddr::from(([127, 0, 0, 1], 15010))),
        }
    }
}

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The data directory or token file is unusable.
    #[error("data directory {path}: {source} (pass --data-dir with a writable directory)")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The API address is taken or not ours.
    #[error(
        "cannot listen on {addr}: {source} (another controller running? pick another address with --listen)"
    )]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("API server: {0}")]
    Serve(std::io::Error),
    /// The ADS address is taken.
    #[error(
        "cannot listen for xDS on {addr}: {source} (another controller running? pick another address with --xds-listen)"
    )]
    XdsListen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The VIP pools are misconfigured.
    #[error("VIP pools: {0}")]
    Pools(#[from] crate::ipam::IpamError),
}

/// Reads the API token from the data directory, creating a random one (readable by the owner
/// only) on first start.
pub fn ensure_token(data_dir: &Path) -> Result<String, RunError> {
    let path = data_dir.join(TOKEN_FILE);
    let err = |source| RunError::DataDir {
        path: path.clone(),
        source,
    };
    // A directory we create holds the token and stored Secrets: owner only. One the operator
    // made keeps the mode they chose (the token file itself is 0600 either way).
    if !data_dir.exists() {
        std::fs::create_dir_all(data_dir).map_err(err)?;
        restrict_dir(data_dir).map_err(err)?;
    }
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &token).map_err(err)?;
    Ok(token)
}

/// Makes `dir` accessible to its owner only.
#[cfg(unix)]
fn restrict_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{text}\n"))
}

/// The opened store, and for etcd the concrete handle that leader election needs.
struct Opened {
    store: Arc<dyn Store>,
    etcd: Option<EtcdStore>,
}

async fn open(cfg: &ControllerConfig) -> Result<Opened, RunError> {
    Ok(match &cfg.store {
        StoreChoice::Memory => Opened {
            store: Arc::new(MemoryStore::open(MemoryOptions::persistent(
                cfg.data_dir.join("store"),
            ))?),
            etcd: None,
        },
        StoreChoice::Etcd(endpoints) => {
            let etcd = EtcdStore::connect(EtcdOptions::new(endpoints.clone())).await?;
            Opened {
                store: Arc::new(etcd.clone()),
                etcd: Some(etcd),
            }
        }
    })
}

/// Opens the configured store.
pub async fn open_store(cfg: &ControllerConfig) -> Result<Arc<dyn Store>, RunError> {
    Ok(open(cfg).await?.store)
}

/// Turns leadership into "the store to write through while leading": the store itself with
/// the memory backend (always the leader), a store fenced with the current term with etcd.
fn leader_writer(
    opened: &Opened,
    cfg: &ControllerConfig,
) -> (watch::Receiver<Option<Arc<dyn Store>>>, Campaign) {
    match &opened.etcd {
        None => {
            let (tx, rx) = watch::channel(Some(opened.store.clone()));
            (rx, Campaign::Always { _keep: tx })
        }
        Some(etcd) => {
            let mut options = ElectionOptions::new("controller", cfg.identity.clone());
            options.ttl = cfg.leader_ttl;
            let leadership = Leadership::campaign(etcd, options);
            let (tx, rx) = watch::channel(None);
            let mut changes = leadership.changes();
            let fences = leadership.fence_changes();
            let etcd = etcd.clone();
            tokio::spawn(async move {
                let mut fences = fences;
                loop {
                    let leading = *changes.borrow_and_update();
                    let fence = fences.borrow_and_update().clone();
                    let writer: Option<Arc<dyn Store>> = match (leading, fence) {
                        (true, Some(f)) => {
                            tracing::info!("leading: allocating VIPs and writing status");
                            Some(Arc::new(etcd.fenced(f)))
                        }
                        _ => None,
                    };
                    tx.send_replace(writer);
                    let closed = tokio::select! {
                        r = changes.changed() => r.is_err(),
                        r = fences.changed() => r.is_err(),
                    };
                    if closed {
                        // The campaign is over: this controller no longer leads.
                        tx.send_replace(None);
                        return;
                    }
                }
            });
            (rx, Campaign::Etcd(leadership))
        }
    }
}

/// What keeps the leadership signal alive.
enum Campaign {
    /// The memory store: this controller always leads.
    Always {
        /// Held so the signal never closes; never read.
        _keep: watch::Sender<Option<Arc<dyn Store>>>,
    },
    /// An etcd election.
    Etcd(Leadership),
}

/// Runs the controller until `shutdown` completes. `on_listening` is told the bound address
/// (useful with port 0).
pub async fn run(
    cfg: ControllerConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let token = ensure_token(&cfg.data_dir)?;
    let pools = crate::ipam::pools(&cfg.vip_pools)?;
    let opened = open(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    let (leader, leadership) = leader_writer(&opened, &cfg);
    let (desired_tx, desired) = watch::channel(Arc::new(Desired::default()));
    let (proxies_tx, proxies) = watch::channel(ProxyReport::default());
    let reconciler = Reconciler {
        store: opened.store.clone(),
        leader,
        pools,
        proxies,
        desired: desired_tx,
    };
    let loop_task = tokio::spawn(reconciler.run());
    // xDS: the ADS server and the task that keeps its snapshots and the proxy report current.
    let mut xds_tasks = Vec::new();
    let mut registry = None;
    if let Some(xds_addr) = cfg.xds_listen {
        let xds_listener = tokio::net::TcpListener::bind(xds_addr)
            .await
            .map_err(|source| RunError::XdsListen {
                addr: xds_addr,
                source,
            })?;
        let server = causeway_xds::AdsServer::new(causeway_xds::SnapshotCache::new())
            .with_group_fn(crate::push::group_of);
        registry = Some(server.status().clone());
        xds_tasks.push(tokio::spawn(crate::push::run(
            server.clone(),
            desired.clone(),
            proxies_tx,
        )));
        xds_tasks.push(tokio::spawn(async move {
            let opts = causeway_xds::ServerOptions::default();
            if let Err(e) =
                causeway_xds::serve_listener(xds_listener, server, &opts, std::future::pending())
                    .await
            {
                tracing::error!(error = %e, "the ADS server stopped");
            }
        }));
    } else {
        // No proxies can connect: the report stays empty for good.
        xds_tasks.push(tokio::spawn(async move {
            proxies_tx.closed().await;
        }));
    }
    let app = api::router(ApiState {
        store: opened.store,
        token: Some(token.into()),
        desired: Some(desired),
        proxies: registry,
    });
    on_listening(addr);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(RunError::Serve);
    loop_task.abort();
    for t in xds_tasks {
        t.abort();
    }
    if let Campaign::Etcd(l) = leadership {
        // Hand over at once instead of making the next leader wait for the lease.
        l.resign().await;
    }
    served
}
