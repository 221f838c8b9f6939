//! `causeway gateway`: run the L7 gateway from a static configuration file (`--config`) or from
//! the controller's ADS (`--xds`).

use std::net::{IpAddr, SocketAddr};
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
#[command(group = clap::ArgGroup::new("source").required(true).args(["config", "xds"]))]
pub struct Args {
    /// The gateway configuration (YAML, see docs/gateway.md). Watched: a change, or SIGHUP,
    /// reloads it; an invalid file is refused and the running configuration stays.
    #[arg(long, value_name = "FILE", conflicts_with = "xds")]
    config: Option<PathBuf>,
    /// Take the configuration from the controller's ADS instead of a file, e.g.
    /// http://127.0.0.1:15010 (see docs/xds.md). Requires --cluster.
    #[arg(long, value_name = "URL", requires = "cluster")]
    xds: Option<String>,
    /// With --xds: the federation member cluster this gateway runs in (node metadata `cluster`).
    #[arg(long, value_name = "NAME", requires = "xds")]
    cluster: Option<String>,
    /// With --xds: the gateway address this process serves (node metadata `address`; the
    /// controller groups gateways by cluster + address).
    #[arg(long, value_name = "IP", requires = "xds")]
    address: Option<IpAddr>,
    /// With --xds: the locality as region/zone/subzone, e.g. us-west/us-west-a.
    #[arg(long, value_name = "REGION/ZONE/SUBZONE", requires = "xds")]
    locality: Option<String>,
    /// With --xds: the node id (default gateway-<cluster>-<address or hostname>-<pid>).
    #[arg(long, value_name = "ID", requires = "xds")]
    node_id: Option<String>,
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
    #[arg(long, requires = "config")]
    check: bool,
}

/// Runs the gateway until SIGTERM/SIGINT.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.check
        && let Some(path) = &args.config
    {
        return Ok(match causeway_gateway::Config::load(path) {
            Ok(_) => {
                println!("{}: valid", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::from(1)
            }
        });
    }
    // Validate the xDS flags before anything starts.
    let xds = match (&args.xds, &args.cluster) {
        (Some(endpoint), Some(cluster)) => {
            let locality = args
                .locality
                .as_deref()
                .map(causeway_gateway::xds::parse_locality)
                .transpose()?;
            let id = args
                .node_id
                .clone()
                .unwrap_or_else(|| causeway_gateway::xds::default_node_id(cluster, args.address));
            let node = causeway_gateway::xds::gateway_node(&id, cluster, args.address, locality);
            Some((endpoint.clone(), node))
        }
        _ => None,
    };
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
    match (xds, args.config) {
        (Some((endpoint, node)), _) => {
            let opts = causeway_gateway::xds::XdsOptions {
                endpoint,
                node,
                admin: Some(args.admin),
                limits: causeway_gateway::Limits::default(),
                log: Some(log),
            };
            runtime.block_on(causeway_gateway::xds::run(opts))?;
        }
        (None, Some(config_path)) => {
            let opts = causeway_gateway::Options {
                config_path,
                admin: Some(args.admin),
                limits: causeway_gateway::Limits::default(),
                log: Some(log),
            };
            runtime.block_on(causeway_gateway::run(opts))?;
        }
        (None, None) => anyhow::bail!("give --config FILE or --xds URL --cluster NAME"),
    }
    Ok(ExitCode::SUCCESS)
}
