//! `causeway`: one binary for every Causeway component and the user CLI.
//!
//! The binary only parses arguments and wires libraries together; each subcommand's logic lives
//! in its crate (`causeway-crds`, `causeway-controller`, `causeway-gateway`, `causeway-l4lb`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bootstrap;
mod client;
mod controller;
mod crds;
mod demo_app;
mod down;
mod gateway;
mod l4lb;
mod objects;
mod status;
mod up;
mod validate;

/// Causeway: a multi-cluster federation gateway.
#[derive(Debug, Parser)]
#[command(name = "causeway", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check resource files (multi-document YAML) without applying them.
    ///
    /// Prints one line per problem, `FILE: KIND/NAME: FIELD-PATH: message`, and exits 1 when any
    /// object has an error (warnings alone exit 0). Directories are read like `kubectl apply -f`:
    /// their *.yaml, *.yml and *.json files, not subdirectories unless --recursive.
    Validate {
        /// Files or directories to check; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Descend into subdirectories of the directories given.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Do not print warnings.
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// Print the CRD manifests of the causeway.io kinds, or write them to a directory.
    Crds {
        /// Write one file per CRD (`causeway.io_PLURAL.yaml`) into this directory instead of
        /// printing them.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
        /// Print the Markdown API reference generated from the same schemas instead.
        #[arg(long, conflicts_with = "out_dir")]
        reference: bool,
    },
    /// Run the federation controller: store, API (docs/controller.md).
    Controller(controller::Args),
    /// Create or update resources from files (validated first; nothing is sent if any is
    /// invalid). Prints `KIND.GROUP/NAME created|configured|unchanged` per object.
    Apply {
        /// Files or directories; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Descend into subdirectories of the directories given.
        #[arg(short = 'R', long)]
        recursive: bool,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Show resources: `causeway get accesspoints -n retail`, `causeway get ap shop -o yaml`;
    /// `causeway get rendered --cluster c1` shows what cluster c1 gets from the controller.
    Get {
        /// Cluster whose configuration `get rendered` shows.
        #[arg(long)]
        cluster: Option<String>,
        /// Kind: name, plural or short name (cl, ap, nsvc, xsvc, we, se, secret).
        kind: String,
        /// One object's name; every object when left out.
        name: Option<String>,
        /// Namespace of namespaced kinds.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Label selector (`app=shop,env in (prod)`).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: objects::Output,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Delete resources by kind and name.
    Delete {
        /// Kind: name, plural or short name.
        kind: String,
        /// Names of the objects.
        #[arg(required = true, num_args = 1..)]
        names: Vec<String>,
        /// Namespace of namespaced kinds.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Show the federation: clusters (locality, phase, proxies), AccessPoints (VIP, hosts,
    /// phase), NameServices. With --wait, exit 0 as soon as everything is Ready, or 1 with what
    /// is not when the time is up. With --proxies, the sync status of every connected proxy
    /// per xDS type instead (SYNCED / STALE / NACKED with versions, last NACK reason).
    Status {
        /// Wait up to this long (`60s`, `2m`) for everything to be Ready (with --proxies: for
        /// every connected proxy to be SYNCED on every type).
        #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
        wait: Option<std::time::Duration>,
        /// Show the connected proxies (gateways, sidecars) and their xDS sync status.
        #[arg(long)]
        proxies: bool,
        /// With --proxies: print the API's JSON instead of the table.
        #[arg(
            short = 'o',
            long,
            value_enum,
            default_value = "table",
            requires = "proxies"
        )]
        output: status::ProxiesOutput,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Print an Envoy bootstrap for a sidecar or gateway of a cluster, pointing at the
    /// controller's ADS: `envoy -c <(causeway bootstrap --cluster c1 --node-id app-1)`.
    Bootstrap(bootstrap::Args),
    /// Run the L7 gateway from a static configuration file (see docs/gateway.md).
    Gateway(gateway::Args),
    /// Run the L4 balancer from a VIP file, or (`l4lb decap`) its agent on gateway hosts
    /// (see docs/l4lb.md).
    L4lb(l4lb::Args),
    /// Run the demo backend (the seeds' multiroute app) for tests and the quickstart.
    DemoApp(demo_app::Args),
    /// Run the whole local federation on loopback (ARCHITECTURE.md §9, docs/up.md): the
    /// controller, three clusters with a gateway, demo backends and an Envoy sidecar each, the
    /// quickstart resources; prints what runs where once everything is Ready.
    Up(up::Args),
    /// Stop what `causeway up --detach` started and check nothing is left listening.
    Down(down::Args),
    /// Internal: how `causeway up` starts its children (parent-death signal, then exec).
    #[command(name = "__exec-child", hide = true)]
    ExecChild {
        /// The supervisor's pid.
        #[arg(long)]
        parent: u32,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<std::ffi::OsString>,
    },
    /// Print the version.
    Version,
}

fn parse_wait(text: &str) -> Result<std::time::Duration, String> {
    causeway_crds::duration::parse_duration(text).map_err(|e| e.to_string())
}

/// Runs an async command on a runtime of its own.
fn block_on<F: std::future::Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?
        .block_on(f)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate {
            files,
            recursive,
            quiet,
        } => validate::run(&files, recursive, quiet),
        Command::Crds { out_dir, reference } => crds::run(out_dir.as_deref(), reference),
        Command::Gateway(args) => gateway::run(args),
        Command::L4lb(args) => l4lb::run(args),
        Command::DemoApp(args) => demo_app::run(args),
        Command::Controller(args) => block_on(controller::run(args)),
        Command::Apply {
            files,
            recursive,
            server,
        } => block_on(async move {
            let c = client::ApiClient::new(&server)?;
            objects::apply(&c, &files, recursive).await
        }),
        Command::Get {
            kind,
            cluster,
            name,
            namespace,
            all_namespaces,
            selector,
            output,
            server,
        } => block_on(async move {
            let c = client::ApiClient::new(&server)?;
            if kind == "rendered" {
                return objects::rendered(&c, cluster.as_deref(), output).await;
            }
            objects::get(
                &c,
                &kind,
                name.as_deref(),
                &namespace,
                all_namespaces,
                selector.as_deref(),
                output,
            )
            .await
        }),
        Command::Delete {
            kind,
            names,
            namespace,
            server,
        } => block_on(async move {
            let c = client::ApiClient::new(&server)?;
            objects::delete(&c, &kind, &names, &namespace).await
        }),
        Command::Status {
            wait,
            proxies,
            output,
            server,
        } => block_on(async move {
            let c = client::ApiClient::new(&server)?;
            if proxies {
                return status::run_proxies(&c, wait, output).await;
            }
            status::run(&c, wait).await
        }),
        Command::Bootstrap(args) => bootstrap::run(args),
        Command::Up(args) => up::run(args),
        Command::Down(args) => down::run(args),
        Command::ExecChild { parent, argv } => up::exec_child(parent, argv),
        Command::Version => {
            println!("causeway {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
