//! Running the controller: open the store, make sure the API token exists, serve the API until
//! shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::api::{self, ApiState};
use crate::store::Store;
use crate::store::etcd::{EtcdOptions, EtcdStore};
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
}

/// Reads the API token from the data directory, creating a random one (readable by the owner
/// only) on first start.
pub fn ensure_token(data_dir: &Path) -> Result<String, RunError> {
    let path = data_dir.join(TOKEN_FILE);
    let err = |source| RunError::DataDir {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(err)?;
    restrict_dir(data_dir).map_err(err)?;
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

/// The data directory holds the token and stored Secrets: owner only.
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

/// Opens the configured store.
pub async fn open_store(cfg: &ControllerConfig) -> Result<Arc<dyn Store>, RunError> {
    Ok(match &cfg.store {
        StoreChoice::Memory => Arc::new(MemoryStore::open(MemoryOptions::persistent(
            cfg.data_dir.join("store"),
        ))?),
        StoreChoice::Etcd(endpoints) => {
            Arc::new(EtcdStore::connect(EtcdOptions::new(endpoints.clone())).await?)
        }
    })
}

/// Runs the controller until `shutdown` completes. `on_listening` is told the bound address
/// (useful with port 0).
pub async fn run(
    cfg: ControllerConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let token = ensure_token(&cfg.data_dir)?;
    let store = open_store(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(RunError::Serve)?;
    let app = api::router(ApiState {
        store,
        token: Some(token.into()),
    });
    on_listening(addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(RunError::Serve)
}
