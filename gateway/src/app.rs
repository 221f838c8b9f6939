//! The gateway process: config file, listeners, admin server, hot reload and graceful drain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::admin::{self, LogControl};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::{ApplyError, Gateway, Limits};

/// How `causeway gateway` runs.
#[derive(Clone)]
pub struct Options {
    /// The YAML configuration file, watched for changes.
    pub config_path: PathBuf,
    /// Admin server address; `None` disables it.
    pub admin: Option<SocketAddr>,
    /// Data-path limits.
    pub limits: Limits,
    /// Run-time log filter control for `/logging`.
    pub log: Option<LogControl>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The configuration could not be put into service.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The admin address could not be bound.
    #[error("cannot listen on admin address {0}: {1}")]
    Admin(SocketAddr, std::io::Error),
    /// The file watcher could not start.
    #[error("cannot watch {0} for changes: {1}")]
    Watch(PathBuf, notify::Error),
}

/// A started gateway with its admin server and reload triggers.
pub struct Running {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Where the admin server listens.
    pub admin_address: Option<SocketAddr>,
    reloads: mpsc::UnboundedSender<()>,
    _watcher: notify::RecommendedWatcher,
}

impl Running {
    /// Asks for a reload, as SIGHUP does.
    pub fn trigger_reload(&self) {
        let _ = self.reloads.send(());
    }

    /// Waits for SIGTERM or SIGINT, then drains.
    pub async fn wait_for_shutdown(self) {
        wait_for_signal().await;
        tracing::info!("shutting down: draining open connections");
        self.gateway.shutdown().await;
    }
}

/// Completes on SIGTERM or SIGINT.
#[cfg(unix)]
pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Completes on Ctrl-C.
#[cfg(not(unix))]
pub(crate) async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Loads the file and applies it, logging the outcome; the old configuration stays on failure.
pub async fn reload(gateway: &Gateway, path: &Path) -> bool {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            gateway.metrics().reload_failures.inc();
            tracing::error!(path = %path.display(), error = %e, "configuration refused; the previous one keeps serving");
            return false;
        }
    };
    match gateway.reload(config).await {
        Ok(()) => {
            tracing::info!(path = %path.display(), "configuration reloaded");
            true
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "configuration refused; the previous one keeps serving");
            false
        }
    }
}

/// Starts the gateway: loads the configuration, binds listeners and the admin server, and
/// reloads on file changes and SIGHUP.
pub async fn start(opts: Options) -> Result<Running, RunError> {
    let config = Config::load(&opts.config_path)?;
    let metrics = Arc::new(Metrics::new());
    let gateway = Gateway::start(config, metrics, opts.limits.clone()).await?;
    tracing::info!(
        listeners = gateway.config().listeners.len(),
        clusters = gateway.config().clusters.len(),
        "gateway started"
    );

    let admin_address = match opts.admin {
        Some(addr) => {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Admin(addr, e))?;
            let bound = l.local_addr().unwrap_or(addr);
            tokio::spawn(admin::serve(l, gateway.clone(), opts.log.clone()));
            Some(bound)
        }
        None => None,
    };

    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // Editors and config management replace files by renaming, which a watch on the file
    // itself would miss: watch the directory and filter by name.
    let file_name = opts.config_path.file_name().map(|n| n.to_owned());
    let watch_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !matches!(ev.kind, notify::EventKind::Access(_))
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_owned()) == file_name)
        {
            let _ = watch_tx.send(());
        }
    })
    .map_err(|e| RunError::Watch(opts.config_path.clone(), e))?;
    let dir = match opts.config_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| RunError::Watch(dir.clone(), e))?;

    #[cfg(unix)]
    {
        let hup_tx = tx.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = hup_tx.send(());
                }
            });
        }
    }

    let gw = gateway.clone();
    let path = opts.config_path.clone();
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // A write often arrives as several events; let the burst settle, then load once.
            tokio::time::sleep(Duration::from_millis(50)).await;
            while rx.try_recv().is_ok() {}
            reload(&gw, &path).await;
        }
    });

    Ok(Running {
        gateway,
        admin_address,
        reloads: tx,
        _watcher: watcher,
    })
}

/// Runs until SIGTERM/SIGINT, then drains.
pub async fn run(opts: Options) -> Result<(), RunError> {
    start(opts).await?.wait_for_shutdown().await;
    Ok(())
}
