//! `causeway bootstrap`: an Envoy bootstrap for a sidecar (or gateway) of a federation cluster,
//! pointing at the controller's ADS. `envoy -c <(causeway bootstrap ...)` is a working proxy.

use std::net::SocketAddr;
use std::process::ExitCode;

use causeway_xds::{ApiType, BootstrapOptions, bootstrap};

/// Flags of `causeway bootstrap`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The federation cluster the proxy runs in (a registered Cluster's name).
    #[arg(long)]
    pub cluster: String,
    /// `sidecar` (outbound to NameServices and ExternalServices) or `gateway`.
    #[arg(long, default_value = "sidecar")]
    pub role: String,
    /// Unique id of this proxy (shown in `causeway status` and in NACK messages).
    #[arg(long)]
    pub node_id: String,
    /// Namespace of the workload (decides which services it sees, by their exportTo).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Where the sidecar's outbound listener binds (e.g. 127.0.1.10:15001); the controller's
    /// default 0.0.0.0:15001 when left out.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// For a gateway: the gateway address it serves (Cluster.spec.gateways[].address).
    #[arg(long)]
    pub address: Option<String>,
    /// Locality `region/zone/subzone` (reported to the controller; the controller uses the
    /// Cluster's own locality for load balancing).
    #[arg(long)]
    pub locality: Option<String>,
    /// The controller's ADS address.
    #[arg(long, default_value = causeway_xds::DEFAULT_ADDR)]
    pub xds: SocketAddr,
    /// Envoy's admin address (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:15900")]
    pub admin: SocketAddr,
    /// Use incremental (delta) xDS instead of state of the world.
    #[arg(long)]
    pub delta: bool,
}

/// Prints the bootstrap (JSON, also valid YAML).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut o = BootstrapOptions::new(&args.node_id, &args.cluster, &args.role);
    o.namespace = args.namespace;
    o.admin = args.admin;
    o.xds_host = args.xds.ip().to_string();
    o.xds_port = args.xds.port();
    if args.delta {
        o.api_type = ApiType::Delta;
    }
    if let Some(l) = &args.locality {
        let mut p = l.split('/');
        o.region = p.next().unwrap_or_default().to_owned();
        o.zone = p.next().unwrap_or_default().to_owned();
        o.subzone = p.next().unwrap_or_default().to_owned();
    }
    if let Some(listen) = args.listen {
        o.extra_metadata.insert(
            causeway_controller::push::META_LISTEN.to_owned(),
            listen.to_string(),
        );
    }
    if let Some(a) = args.address {
        o.extra_metadata
            .insert(causeway_controller::push::META_ADDRESS.to_owned(), a);
    }
    println!("{}", bootstrap(&o));
    Ok(ExitCode::SUCCESS)
}
