//! `causeway demo-app`: the seeds' multiroute test backend.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use causeway_gateway::demo::{DemoApp, DemoConfig};

/// Arguments of `causeway demo-app`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to serve on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Route file (`routes: {/route1: {response: TEXT, duration: SECONDS}}`); default: the
    /// seed's /route1, /route2, /test_timeout (3 s) and /test_limiter (1 s).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The version shown as `[VERSION]` in answers.
    #[arg(long, env = "VERSION", default_value = "v1")]
    app_version: String,
    /// The address `/get_ip` reports (default: the listen address's IP).
    #[arg(long, env = "POD_IP")]
    pod_ip: Option<String>,
}

/// Serves until interrupted.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(p) => DemoConfig::load(p)?,
        None => DemoConfig::default(),
    };
    let app = DemoApp {
        config,
        version: args.app_version,
        pod_ip: args.pod_ip.unwrap_or_else(|| args.listen.ip().to_string()),
        db_pass: std::env::var("DB_PASS").ok(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime
        .block_on(causeway_gateway::demo::run(args.listen, app))
        .with_context(|| format!("serving on {}", args.listen))?;
    Ok(ExitCode::SUCCESS)
}
