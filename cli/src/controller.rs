//! `causeway controller`: the federation controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use causeway_controller::run::{self, ControllerConfig, StoreChoice};

/// Flags of `causeway controller`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// API listen address (HTTP; keep it on loopback unless you put TLS in front).
    #[arg(long, default_value = run::DEFAULT_API_ADDR)]
    pub listen: SocketAddr,
    /// State directory: the API token (`token`, created on first start) and the memory store.
    #[arg(long, env = "CAUSEWAY_DATA_DIR", default_value = ".causeway")]
    pub data_dir: PathBuf,
    /// Store backend.
    #[arg(long, value_enum, default_value = "memory")]
    pub store: StoreKind,
    /// etcd endpoints for --store etcd, comma-separated (`http://127.0.0.1:2379`).
    #[arg(long, value_delimiter = ',', required_if_eq("store", "etcd"))]
    pub etcd_endpoints: Vec<String>,
}

/// Store backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// In-process, persisted under --data-dir/store.
    Memory,
    /// etcd v3.
    Etcd,
}

/// Runs the controller until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cfg = ControllerConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        store: match args.store {
            StoreKind::Memory => StoreChoice::Memory,
            StoreKind::Etcd => StoreChoice::Etcd(args.etcd_endpoints.clone()),
        },
    };
    let data_dir = args.data_dir.display().to_string();
    run::run(
        cfg,
        move |addr| {
            eprintln!(
                "causeway controller: API listening on http://{addr} (token in {data_dir}/token)"
            );
        },
        shutdown_signal(),
    )
    .await
    .context("controller")?;
    eprintln!("causeway controller: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
