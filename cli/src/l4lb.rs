//! `causeway l4lb`: the L4 balancer (VIPs from a static file and/or the controller's ADS,
//! Maglev, IPIP to gateways, BGP),
//! and `causeway l4lb decap`, the agent on gateway hosts. See docs/l4lb.md.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use causeway_l4lb::app::{Balancer, BalancerOptions, Decap, DecapOptions};
use causeway_l4lb::config::Config;
use causeway_l4lb::xdp::{self, Mode, XdpOptions};
use causeway_xds::{AdsClient, Any, ClientOptions, NodeInfo};
use tracing_subscriber::EnvFilter;

/// Arguments of `causeway l4lb`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Sub>,
    /// The VIP file (YAML, see docs/l4lb.md). With --xds optional: it then gives the local
    /// settings (BGP, conntrack) and any static VIPs next to the controller's.
    #[arg(long, value_name = "FILE", required_unless_present = "xds")]
    config: Option<PathBuf>,
    /// Take VIP assignments from the controller's ADS, e.g. http://127.0.0.1:15010 (see
    /// docs/l4lb.md, "VIPs from the controller"). Needs --zone, --locality or --cluster.
    #[arg(long, value_name = "URL")]
    xds: Option<String>,
    /// With --xds: the federation member cluster the balancer belongs to (node metadata
    /// `cluster`); without --zone/--locality the balancer serves that cluster's zone.
    #[arg(long, value_name = "NAME", requires = "xds")]
    cluster: Option<String>,
    /// With --xds: the balancer's locality as region/zone/subzone; it gets the gateways of the
    /// placed clusters in this zone.
    #[arg(
        long,
        value_name = "REGION/ZONE/SUBZONE",
        requires = "xds",
        conflicts_with = "zone"
    )]
    locality: Option<String>,
    /// With --xds: the balancer's zone (shorthand for --locality with any region).
    #[arg(long, value_name = "ZONE", requires = "xds")]
    zone: Option<String>,
    /// With --xds: the node id (default l4lb-<zone or cluster>-<hostname>-<pid>).
    #[arg(long, value_name = "ID", requires = "xds")]
    node_id: Option<String>,
    /// TUN device the VIP routes point into.
    #[arg(long, value_name = "NAME", default_value = "cwlb0")]
    tun: String,
    /// MTU of the TUN device.
    #[arg(long, default_value_t = 1500)]
    mtu: u16,
    /// Admin server address (/metrics, /ready, /state); keep it on loopback.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15110")]
    admin: SocketAddr,
    /// Data path: `userspace` (TUN + raw IPIP socket), or `xdp` (the XDP program on
    /// --interface, with the userspace path behind it for what XDP cannot send).
    #[arg(long, value_enum, default_value_t = Datapath::Userspace)]
    datapath: Datapath,
    /// The interface the XDP program is attached to (required with --datapath xdp).
    #[arg(long, value_name = "NAME")]
    interface: Option<String>,
    /// XDP attach mode: native (in the driver) or generic (any device, slower).
    #[arg(long, value_name = "MODE", default_value = "native", value_parser = parse_mode)]
    xdp_mode: Mode,
    /// Do not add the VIP routes into the TUN device nor enable IPv4 forwarding (set them up
    /// yourself).
    #[arg(long)]
    no_routes: bool,
    /// Only validate the file and exit (0 when valid).
    #[arg(long)]
    check: bool,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log_level: String,
}

/// Which data path forwards packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Datapath {
    /// TUN device and raw sockets: portable, slower.
    Userspace,
    /// XDP program (needs a build with clang), userspace behind it.
    Xdp,
    /// `l4lb decap` only: the decap program as a tc classifier (cheaper than XDP on veth).
    Tc,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
}

/// The XDP options for the chosen data path, or why they cannot be had.
fn xdp_options(
    datapath: Datapath,
    interface: Option<String>,
    mode: Mode,
) -> anyhow::Result<Option<XdpOptions>> {
    let mode = match datapath {
        Datapath::Userspace => return Ok(None),
        Datapath::Xdp => mode,
        Datapath::Tc => Mode::Tc,
    };
    if !xdp::available() {
        anyhow::bail!("--datapath xdp/tc: {}", xdp::XdpError::NotBuilt);
    }
    let Some(interface) = interface else {
        anyhow::bail!(
            "--datapath xdp/tc needs --interface NAME (the interface VIP or IPIP traffic arrives on)"
        );
    };
    Ok(Some(XdpOptions { interface, mode }))
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Run the decap agent on a gateway host: IPIP from the balancers is unwrapped into a TUN
    /// device, the VIPs are bound to `lo`, and the gateway answers clients directly.
    Decap(DecapArgs),
}

/// Arguments of `causeway l4lb decap`.
#[derive(Debug, clap::Args)]
struct DecapArgs {
    /// A VIP this host serves (bound to lo; inner packets to other addresses are dropped).
    /// Repeatable; none accepts any inner destination and binds nothing.
    #[arg(long = "vip", value_name = "ADDR")]
    vips: Vec<Ipv4Addr>,
    /// TUN device inner packets are written into.
    #[arg(long, value_name = "NAME", default_value = "cwdecap0")]
    tun: String,
    /// MTU of the TUN device (the largest inner packet).
    #[arg(long, default_value_t = 1500)]
    mtu: u16,
    /// Data path: `userspace` (TUN + raw IPIP socket), `xdp` (the XDP decap program on
    /// --interface, with the raw socket behind it for fragmented IPIP), or `tc` (the same decap
    /// as a tc classifier on --interface's ingress: no per-packet copy on veth).
    #[arg(long, value_enum, default_value_t = Datapath::Userspace)]
    datapath: Datapath,
    /// The interface the XDP program is attached to (required with --datapath xdp).
    #[arg(long, value_name = "NAME")]
    interface: Option<String>,
    /// XDP attach mode: native (in the driver) or generic (any device, slower).
    #[arg(long, value_name = "MODE", default_value = "native", value_parser = parse_mode)]
    xdp_mode: Mode,
    /// Receive buffer of the raw IPIP socket in bytes (SO_RCVBUFFORCE).
    #[arg(long, default_value_t = 32 << 20)]
    rcvbuf: usize,
    /// Admin server address (/metrics, /ready, /state).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15111")]
    admin: SocketAddr,
    /// Log filter (RUST_LOG syntax).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    log_level: String,
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(level).with_context(|| format!("invalid --log-level {level:?}"))?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

async fn signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("causeway-l4lb")
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

/// Runs `causeway l4lb` until SIGTERM/SIGINT (then withdraws the VIPs and exits 0).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(Sub::Decap(d)) = args.command {
        return decap(d);
    }
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return Ok(ExitCode::from(1));
            }
        },
        None if args.xds.is_some() => Config {
            vips: Vec::new(),
            conntrack: Default::default(),
            bgp: None,
        },
        None => anyhow::bail!("give --config FILE, --xds URL, or both"),
    };
    if args.check {
        if let Some(path) = &args.config {
            println!("{}: valid", path.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let xds = match &args.xds {
        Some(endpoint) => Some(xds_client(
            endpoint,
            args.cluster.as_deref(),
            args.locality.as_deref(),
            args.zone.as_deref(),
            args.node_id.as_deref(),
        )?),
        None => None,
    };
    if args.datapath == Datapath::Tc {
        anyhow::bail!("--datapath tc is for `l4lb decap` only; the balancer runs userspace or xdp");
    }
    let xdp = xdp_options(args.datapath, args.interface, args.xdp_mode)?;
    init_logging(&args.log_level)?;
    let opts = BalancerOptions {
        xdp,
        tun: args.tun,
        mtu: args.mtu,
        admin: Some(args.admin),
        manage_routes: !args.no_routes,
    };
    let config_path = args.config.clone();
    runtime()?.block_on(async move {
        // Installed before anything starts: SIGHUP's default action would end the process.
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        let b = Balancer::start(config, opts).await?;
        tokio::spawn(reload_on_hangup(hangup, config_path, b.updater()));
        let (stop_xds, mut stopped) = tokio::sync::watch::channel(false);
        let client = xds.map(|client| {
            let updater = b.updater();
            let mut status = client.status();
            let state = updater.clone();
            // The client's status in the admin /state document.
            tokio::spawn(async move {
                loop {
                    let json = serde_json::to_string(&*status.borrow_and_update())
                        .unwrap_or_else(|_| "null".into());
                    state.set_state(json);
                    if status.changed().await.is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                // The client logs NACKs; the updater logs what it applied.
                let handler = move |type_url: &str, _version: &str, resources: &[Any]| {
                    if type_url != causeway_xds::type_url::CLUSTER {
                        return Err(format!(
                            "unexpected type {type_url}: the balancer takes CDS only"
                        ));
                    }
                    updater.apply(resources).map(|_| ())
                };
                client
                    .run(handler, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            })
        });
        signal().await;
        let _ = stop_xds.send(true);
        if let Some(c) = client {
            let _ = c.await;
        }
        b.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Reads the static file again on every SIGHUP and applies its VIPs like a controller change
/// (`VipUpdater::reload_file`); a file that does not validate, or whose VIPs clash with the
/// controller's, is logged and changes nothing.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    path: Option<PathBuf>,
    updater: causeway_l4lb::app::VipUpdater,
) {
    while hangup.recv().await.is_some() {
        // It logs what it applied or refused.
        let _ = updater.reload_file_at(path.as_deref());
    }
}

/// The ADS client of `causeway l4lb --xds`: node role `l4lb`, subscribed to CDS only (one
/// Cluster per VIP entry).
fn xds_client(
    endpoint: &str,
    cluster: Option<&str>,
    locality: Option<&str>,
    zone: Option<&str>,
    node_id: Option<&str>,
) -> anyhow::Result<AdsClient> {
    let mut l = match locality {
        Some(text) => causeway_gateway::xds::parse_locality(text)?,
        None => Default::default(),
    };
    if let Some(z) = zone {
        anyhow::ensure!(
            !z.is_empty() && !z.contains('/') && z.trim() == z,
            "--zone {z:?}: a zone name, like us-west-a"
        );
        l.zone = z.to_owned();
    }
    let cluster = cluster.unwrap_or_default();
    anyhow::ensure!(
        !l.zone.is_empty() || !cluster.is_empty(),
        "--xds needs --zone, --locality REGION/ZONE or --cluster NAME: the balancer serves the \
         gateways of one zone"
    );
    let id = match node_id {
        Some(id) => id.to_owned(),
        None => {
            let scope = if l.zone.is_empty() { cluster } else { &l.zone };
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("l4lb-{scope}-{host}-{}", std::process::id())
        }
    };
    let node = NodeInfo {
        id,
        node_cluster: cluster.to_owned(),
        cluster: cluster.to_owned(),
        role: "l4lb".to_owned(),
        namespace: String::new(),
        locality: l,
        metadata: Default::default(),
    }
    .to_node();
    let mut opts = ClientOptions::new(endpoint, node);
    opts.type_urls = vec![causeway_xds::type_url::CLUSTER.to_owned()];
    Ok(AdsClient::new(opts))
}

fn decap(args: DecapArgs) -> anyhow::Result<ExitCode> {
    let xdp = xdp_options(args.datapath, args.interface, args.xdp_mode)?;
    init_logging(&args.log_level)?;
    let opts = DecapOptions {
        xdp,
        tun: args.tun,
        mtu: args.mtu,
        vips: args.vips,
        admin: Some(args.admin),
        rcvbuf: args.rcvbuf,
    };
    runtime()?.block_on(async move {
        let d = Decap::start(opts).await?;
        signal().await;
        d.stop().await;
        Ok(ExitCode::SUCCESS)
    })
}
