//! `causeway gateway`: run the L7 gateway from a static configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use causeway_gateway::admin::LogControl;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

// For the whole binary, but chosen for the gateway's data path, which allocates per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Arguments of `causeway gateway`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway configuration (YAML, see docs/gateway.md). Watched: a change, or SIGHUP,
    /// reloads it; an invalid file is refused and the running configuration stays.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Worker threads of the data path (default: the number of cores).
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Admin server address (/ready, /config_dump, /stats/prometheus, /logging).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Initial log filter (RUST_LOG syntax); access log lines use target causeway::access.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log_level: String,
    /// Only validate the configuration file and exit (0 when valid).
    #[arg(long)]
    check: bool,
}

/// Runs the gateway until SIGTERM/SIGINT.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.check {
        return Ok(match causeway_gateway::Config::load(&args.config) {
            Ok(_) => {
                println!("{}: valid", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", args.config.display());
                ExitCode::from(1)
            }
        });
    }
    let filter = EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level {:?}", args.log_level))?;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_writer(std::io::stdout),
        )
        .try_init()
        .context("installing the log subscriber")?;
    let log: LogControl = Arc::new(move |level: &str| {
        let f = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(f).map_err(|e| e.to_string())
    });

    let workers = args
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    // One worker: a current-thread runtime skips the work-stealing scheduler's cross-thread
    // wake-ups, which is measurably faster (Pingora found the same).
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("causeway-gw")
            .enable_all()
            .build()
    }
    .context("starting the tokio runtime")?;
    let opts = causeway_gateway::Options {
        config_path: args.config,
        admin: Some(args.admin),
        limits: causeway_gateway::Limits::default(),
        log: Some(log),
    };
    runtime.block_on(causeway_gateway::run(opts))?;
    Ok(ExitCode::SUCCESS)
}
