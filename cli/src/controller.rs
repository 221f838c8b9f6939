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
    /// A VIP pool, `NAME=CIDR[,CIDR...]`; repeat for more pools. Default: `default=10.240.0.0/16`.
    #[arg(long = "vip-pool", value_name = "NAME=CIDRS", value_parser = parse_pool)]
    pub vip_pools: Vec<(String, Vec<String>)>,
    /// This controller's name in the leader election (etcd): the host name by default.
    #[arg(long, env = "HOSTNAME", default_value = "controller")]
    pub identity: String,
    /// Leader lease time to live (etcd): how long a dead leader keeps the role, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = parse_ttl)]
    pub leader_ttl: std::time::Duration,
    /// ADS (xDS) listen address for gateways and Envoy sidecars; `off` disables it.
    #[arg(long, default_value = "127.0.0.1:15010", value_parser = parse_xds)]
    pub xds_listen: XdsListen,
    /// Log filter, `RUST_LOG` syntax (`info`, `causeway_controller=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_level: String,
}

/// `--xds-listen`: an address, or off.
#[derive(Debug, Clone, Copy)]
pub struct XdsListen(Option<SocketAddr>);

fn parse_xds(text: &str) -> Result<XdsListen, String> {
    if text == "off" {
        return Ok(XdsListen(None));
    }
    text.parse()
        .map(|a| XdsListen(Some(a)))
        .map_err(|_| format!("{text:?}: write IP:PORT (e.g. 127.0.0.1:15010) or off"))
}

fn parse_pool(text: &str) -> Result<(String, Vec<String>), String> {
    let (name, cidrs) = text.split_once('=').ok_or_else(|| {
        format!("{text:?}: write NAME=CIDR[,CIDR...], e.g. default=10.240.0.0/16")
    })?;
    let cidrs: Vec<String> = cidrs
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    if name.is_empty() || cidrs.is_empty() {
        return Err(format!(
            "{text:?}: write NAME=CIDR[,CIDR...], e.g. default=10.240.0.0/16"
        ));
    }
    Ok((name.to_owned(), cidrs))
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let d = causeway_crds::duration::parse_duration(text).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_secs(2) {
        return Err("the leader lease must be at least 2s".to_owned());
    }
    Ok(d)
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
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?}", args.log_level))?;
    // Logs go to stderr, so `causeway controller 2>log` keeps them apart from nothing else.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let cfg = ControllerConfig {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        store: match args.store {
            StoreKind::Memory => StoreChoice::Memory,
            StoreKind::Etcd => StoreChoice::Etcd(args.etcd_endpoints.clone()),
        },
        vip_pools: if args.vip_pools.is_empty() {
            run::default_vip_pools()
        } else {
            args.vip_pools.iter().cloned().collect()
        },
        identity: args.identity.clone(),
        leader_ttl: args.leader_ttl,
        xds_listen: args.xds_listen.0,
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
