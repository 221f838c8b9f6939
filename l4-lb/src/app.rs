//! Wiring: the balancer (control loop, probers, userspace data path, BGP, admin) and the decap
//! agent, each started by one call and stopped gracefully by another.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::admin::{self, StateFn};
use crate::assign;
use crate::balancer::{self, Tables};
use crate::config::{Config, ProbeKind};
use crate::conntrack::Conntrack;
use crate::datapath;
use crate::health::{self, Target};
use crate::metrics::{BackendLabels, Metrics, VipLabels};
use crate::sys::{self, RawIpip, SysError, Tun};
use crate::xdp::{self, XdpBalancer, XdpDecap, XdpError, XdpOptions};

/// Why the balancer or the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A system call or `ip` command failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The data-path thread could not be started.
    #[error("starting the data-path thread: {0}")]
    Thread(std::io::Error),
    /// The XDP data path could not start.
    #[error(transparent)]
    Xdp(#[from] XdpError),
    /// The admin address could not be bound.
    #[error("binding the admin server to {addr}: {source} (choose another --admin address)")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// How the balancer runs (command-line settings, not the VIP file).
#[derive(Debug, Clone)]
pub struct BalancerOptions {
    /// The TUN device VIP traffic is routed into.
    pub tun: String,
    /// Its MTU.
    pub mtu: u16,
    /// Admin server address; `None` for none.
    pub admin: Option<SocketAddr>,
    /// Route each VIP /32 into the TUN device and enable IPv4 forwarding.
    pub manage_routes: bool,
    /// Run the XDP program on this interface in front of the userspace path (which then only
    /// sees the packets XDP leaves to it); `None`: userspace only.
    pub xdp: Option<XdpOptions>,
}

/// The configuration in force and its generation (the control loop counts changes; tables
/// built from it carry the same number in [`Tables::generation`]).
#[derive(Debug, Clone)]
pub struct Applied {
    /// Counts configuration changes, from 0 at start.
    pub generation: u64,
    /// The VIPs (static file plus controller), conntrack and BGP settings.
    pub config: Arc<Config>,
}

/// Replaces the controller's VIPs, or the static file's, in a running balancer; clone it
/// freely. Both kinds of change go through the same path: combined with the other source's
/// VIPs, validated, and handed to the control loop.
#[derive(Clone)]
pub struct VipUpdater {
    sources: Arc<Mutex<Sources>>,
    tx: Arc<watch::Sender<Arc<Config>>>,
    xds_state: Arc<Mutex<Option<String>>>,
}

/// The two sources of VIPs, combined into the configuration in force.
struct Sources {
    /// The static file's part (its VIPs, conntrack and BGP settings).
    file: Arc<Config>,
    /// The controller's last accepted VIPs.
    controller: Vec<crate::config::Vip>,
}

impl VipUpdater {
    /// Decodes a complete set of VIP assignments (CDS resources, see [`assign`]), adds them to
    /// the static file's VIPs and hands the result to the control loop, which rebuilds the
    /// tables within milliseconds. `Err` (nothing changed) says every reason the set cannot be
    /// applied. Returns the number of VIP entries from the controller.
    pub fn apply(&self, resources: &[causeway_xds::Any]) -> Result<usize, String> {
        let vips = assign::decode(resources).inspect_err(|e| {
            tracing::warn!(error = %e, "VIP assignments refused; keeping the last good ones");
        })?;
        let n = vips.len();
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let config = match assign::combine(&sources.file, vips.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "VIP assignments refused; keeping the last good ones");
                return Err(e);
            }
        };
        sources.controller = vips;
        tracing::info!(vips = n, "VIP assignments from the controller accepted");
        self.tx.send_replace(Arc::new(config));
        Ok(n)
    }

    /// Replaces the static file's VIPs with those of `file` (read again on SIGHUP), keeping the
    /// controller's: the same path as a controller change (in place under XDP). The file's
    /// `conntrack` and `bgp` sections apply only at start; a change to them is logged and
    /// waits for a restart. `Err` (nothing changed): the file's VIPs clash with the
    /// controller's. Returns the number of VIP entries from the file.
    pub fn reload_file(&self, file: Config) -> Result<usize, String> {
        let mut sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
        let (file, notes) = assign::reloaded_file(&sources.file, file);
        for note in notes {
            tracing::warn!(note = %note, "static file reloaded: setting not applied");
        }
        let config = match assign::combine(&file, sources.controller.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "static file reload refused; keeping the VIPs in force");
                return Err(e);
            }
        };
        let n = file.vips.len();
        sources.file = Arc::new(file);
        tracing::info!(vips = n, "static file reloaded");
        self.tx.send_replace(Arc::new(config));
        Ok(n)
    }

    /// Reads the static file at `path` again and applies it with [`VipUpdater::reload_file`]
    /// (SIGHUP). A file that does not validate changes nothing; every problem is logged and
    /// returned. `None` (the balancer runs without `--config`) only logs that there is nothing to
    /// reload.
    pub fn reload_file_at(&self, path: Option<&std::path::Path>) -> Result<usize, String> {
        let Some(path) = path else {
            tracing::warn!("SIGHUP: no --config file to reload");
            return Err("no --config file".into());
        };
        match Config::load(path) {
            Ok(c) => self.reload_file(c),
            Err(e) => {
                tracing::error!(
                    file = %path.display(),
                    error = %e,
                    "static file reload refused; keeping the VIPs in force"
                );
                Err(e.to_string())
            }
        }
    }

    /// Sets the `xds` member of the admin `/state` document (a JSON value).
    pub fn set_state(&self, json: String) {
        *self
            .xds_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(json);
    }
}

/// A running balancer.
pub struct Balancer {
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// The registry the admin server encodes.
    pub registry: Arc<Registry>,
    /// The data path's current tables.
    pub tables: Arc<ArcSwap<Tables>>,
    /// The configuration in force.
    pub applied: Arc<ArcSwap<Applied>>,
    /// The VIP addresses currently announced.
    pub announced: watch::Receiver<BTreeSet<Ipv4Addr>>,
    /// The admin server's bound address.
    pub admin: Option<SocketAddr>,
    updater: VipUpdater,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    bgp: JoinSet<()>,
    routes: Arc<Mutex<BTreeSet<Ipv4Addr>>>,
    tun: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    xdp_thread: Option<std::thread::JoinHandle<()>>,
}

/// The probers of the current targets; aborted when dropped.
#[derive(Default)]
struct Probers(BTreeMap<Target, tokio::task::JoinHandle<()>>);

impl Drop for Probers {
    fn drop(&mut self) {
        for h in self.0.values() {
            h.abort();
        }
    }
}

impl Probers {
    /// Makes the probed targets those of `config`, keeping the health of targets that stay
    /// (so their tracked flows stay with them) and starting new ones unhealthy (healthy for
    /// checks of type NONE) until their first probe.
    fn reconcile(
        &mut self,
        config: &Config,
        health: &mut BTreeMap<Target, bool>,
        events: &mpsc::Sender<health::Transition>,
    ) {
        let want = balancer::targets(&config.vips);
        health.retain(|t, _| want.contains(t));
        self.0.retain(|t, h| {
            let keep = want.contains(t);
            if !keep {
                h.abort();
            }
            keep
        });
        for t in want {
            if health.contains_key(&t) {
                continue;
            }
            let none = t.check.kind == ProbeKind::None;
            health.insert(t.clone(), none);
            if !none {
                let h = tokio::spawn(health::run_prober(t.clone(), events.clone()));
                self.0.insert(t, h);
            }
        }
    }
}

/// Adds and removes `VIP/32 dev TUN` routes so that they are the addresses of `config`.
fn sync_routes(config: &Config, tun: &str, routes: &Mutex<BTreeSet<Ipv4Addr>>) {
    let want: BTreeSet<Ipv4Addr> = config.vip_addresses().into_iter().collect();
    let mut have = routes.lock().unwrap_or_else(PoisonError::into_inner);
    for vip in want.difference(&have.clone()) {
        match sys::ip(&["route", "replace", &format!("{vip}/32"), "dev", tun]) {
            Ok(()) => {
                have.insert(*vip);
            }
            Err(e) => tracing::error!(%vip, error = %e, "adding the VIP route"),
        }
    }
    for vip in have.clone().difference(&want) {
        let _ = sys::ip(&["route", "del", &format!("{vip}/32"), "dev", tun]);
        have.remove(vip);
    }
}

/// Drops the metric series of VIP entries and backends that left the configuration.
fn forget_metrics(old: &Config, new: &Config, m: &Metrics) {
    let series = |c: &Config| -> BTreeSet<(String, String)> {
        c.vips
            .iter()
            .flat_map(|v| {
                v.backends
                    .iter()
                    .map(|b| (v.name.clone(), b.address.to_string()))
            })
            .collect()
    };
    for (vip, backend) in series(old).difference(&series(new)) {
        let l = BackendLabels {
            vip: vip.clone(),
            backend: backend.clone(),
        };
        m.backend_healthy.remove(&l);
    }
    let names =
        |c: &Config| -> BTreeSet<String> { c.vips.iter().map(|v| v.name.clone()).collect() };
    for vip in names(old).difference(&names(new)) {
        m.vip_announced.remove(&VipLabels { vip: vip.clone() });
    }
}

impl Balancer {
    /// Starts everything. Needs root (TUN, raw socket, routes) and a tokio runtime.
    /// `config` is the static file's (empty when there is none); [`Balancer::updater`] adds
    /// the controller's VIPs to it while running.
    pub async fn start(config: Config, opts: BalancerOptions) -> Result<Balancer, StartError> {
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let registry = Arc::new(registry);
        let (shutdown, shutdown_rx) = watch::channel(false);

        let tun = Tun::create(&opts.tun, opts.mtu)?;
        let raw = RawIpip::open(0)?;
        let routes = Arc::new(Mutex::new(BTreeSet::new()));
        if opts.manage_routes {
            sys::sysctl("net.ipv4.ip_forward", "1")?;
            for vip in config.vip_addresses() {
                sys::ip(&["route", "replace", &format!("{vip}/32"), "dev", &opts.tun])?;
                routes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(vip);
            }
        }

        let base = Arc::new(config.clone());
        let config = base.clone();
        let applied = Arc::new(ArcSwap::from_pointee(Applied {
            generation: 0,
            config: config.clone(),
        }));
        let (events_tx, mut events) = mpsc::channel(64);
        // Health: backends whose check is NONE are healthy from the start.
        let mut health: BTreeMap<Target, bool> = BTreeMap::new();
        let mut probers = Probers::default();
        probers.reconcile(&config, &mut health, &events_tx);
        let tables = Arc::new(ArcSwap::from_pointee(build(&config, &health, 0)));
        let (announce_tx, announced) = watch::channel(announce_set(&config, &tables.load()));
        publish(&config, &tables.load(), &announced.borrow(), &metrics);
        let (config_tx, mut config_rx) = watch::channel(config.clone());
        let updater = VipUpdater {
            sources: Arc::new(Mutex::new(Sources {
                file: base,
                controller: Vec::new(),
            })),
            tx: Arc::new(config_tx),
            xds_state: Arc::new(Mutex::new(None)),
        };

        let mut tasks = JoinSet::new();
        let mut conntrack =
            Conntrack::new(config.conntrack.capacity, config.conntrack.idle_timeout);
        let stop = Arc::new(AtomicBool::new(false));
        let xdp_thread = match &opts.xdp {
            Some(x) => {
                let mut prog = XdpBalancer::load(&config, x)?;
                metrics.xdp_program_loads.inc();
                // The thread starts from exactly what was written here: the control loop may
                // swap in new tables before it runs, and those must still be written.
                let synced = tables.load_full();
                prog.sync(&config, &synced)?;
                metrics.set_xdp_maps(prog.capacity().as_array(), prog.used());
                tracing::info!(
                    interface = %x.interface,
                    mode = %x.mode,
                    capacity = %prog.capacity(),
                    "XDP data path attached"
                );
                let state = XdpState {
                    capacity: prog.capacity(),
                    prog: Some(prog),
                    opts: x.clone(),
                    retry_at: std::time::Instant::now(),
                };
                let (tables, applied, metrics, stop) = (
                    tables.clone(),
                    applied.clone(),
                    metrics.clone(),
                    stop.clone(),
                );
                Some(
                    std::thread::Builder::new()
                        .name("l4lb-xdp".into())
                        .spawn(move || xdp_loop(state, synced, &tables, &applied, &metrics, &stop))
                        .map_err(StartError::Thread)?,
                )
            }
            None => None,
        };
        let thread = {
            let (tables, metrics, stop) = (tables.clone(), metrics.clone(), stop.clone());
            std::thread::Builder::new()
                .name("l4lb-datapath".into())
                .spawn(move || {
                    datapath::balance(&tun, &raw, &tables, &mut conntrack, &metrics, &stop)
                })
                .map_err(StartError::Thread)?
        };

        // The control loop: every health transition and every configuration change rebuilds
        // the tables and the announcements.
        {
            let tables = tables.clone();
            let applied = applied.clone();
            let metrics = metrics.clone();
            let routes = routes.clone();
            let (tun, manage_routes) = (opts.tun.clone(), opts.manage_routes);
            let mut stop = shutdown_rx.clone();
            let mut config = config.clone();
            tasks.spawn(async move {
                let mut probers = probers; // aborted when the loop ends
                let mut generation = 0u64;
                loop {
                    tokio::select! {
                        _ = stop.changed() => return,
                        t = events.recv() => {
                            let Some(t) = t else { return };
                            // A prober of a target that just left may still report.
                            if !health.contains_key(&t.target) {
                                continue;
                            }
                            tracing::info!(
                                backend = %t.target.address,
                                healthy = t.healthy,
                                detail = %t.detail,
                                "backend health changed"
                            );
                            health.insert(t.target, t.healthy);
                        }
                        r = config_rx.changed() => {
                            if r.is_err() {
                                return;
                            }
                            let new = config_rx.borrow_and_update().clone();
                            if new == config {
                                continue;
                            }
                            probers.reconcile(&new, &mut health, &events_tx);
                            if manage_routes {
                                sync_routes(&new, &tun, &routes);
                            }
                            forget_metrics(&config, &new, &metrics);
                            generation += 1;
                            tracing::info!(
                                generation,
                                vips = new.vips.len(),
                                "VIP configuration changed"
                            );
                            applied.store(Arc::new(Applied {
                                generation,
                                config: new.clone(),
                            }));
                            config = new;
                        }
                    }
                    let new = build(&config, &health, generation);
                    let ann = announce_set(&config, &new);
                    publish(&config, &new, &ann, &metrics);
                    tables.store(Arc::new(new));
                    announce_tx.send_if_modified(|cur| {
                        if *cur == ann {
                            false
                        } else {
                            *cur = ann;
                            true
                        }
                    });
                }
            });
        }

        let mut bgp = JoinSet::new();
        if let Some(b) = &config.bgp {
            for p in &b.peers {
                bgp.spawn(crate::bgp::run_peer(
                    b.clone(),
                    p.clone(),
                    announced.clone(),
                    metrics.clone(),
                    shutdown_rx.clone(),
                ));
            }
        }

        let admin = match opts.admin {
            Some(addr) => {
                let state = state_fn(
                    applied.clone(),
                    tables.clone(),
                    announced.clone(),
                    metrics.clone(),
                    updater.xds_state.clone(),
                );
                Some(
                    admin::serve(addr, registry.clone(), state, shutdown_rx.clone())
                        .await
                        .map_err(|source| StartError::Admin { addr, source })?,
                )
            }
            None => None,
        };
        tracing::info!(vips = config.vips.len(), tun = %opts.tun, admin = ?admin, "l4lb started");
        Ok(Balancer {
            metrics,
            registry,
            tables,
            applied,
            announced,
            admin,
            updater,
            shutdown,
            tasks,
            bgp,
            routes,
            tun: opts.tun,
            stop,
            thread: Some(thread),
            xdp_thread,
        })
    }

    /// A handle that replaces the controller's VIPs or the static file's.
    pub fn updater(&self) -> VipUpdater {
        self.updater.clone()
    }

    /// Stops gracefully: BGP withdraws every VIP and closes with Cease (bounded by 5 s), then the
    /// data path stops and the routes it added are removed.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.bgp.join_next().await.is_some() {}
        })
        .await;
        self.bgp.abort_all();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
        self.stop.store(true, Ordering::Relaxed);
        for t in [self.thread.take(), self.xdp_thread.take()]
            .into_iter()
            .flatten()
        {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let routes =
            std::mem::take(&mut *self.routes.lock().unwrap_or_else(PoisonError::into_inner));
        for vip in routes {
            let _ = sys::ip(&["route", "del", &format!("{vip}/32"), "dev", &self.tun]);
        }
        tracing::info!("l4lb stopped");
    }
}

/// The XDP thread's program and the map sizes it is (re)loaded with.
struct XdpState {
    /// `None` while a reload failed (packets then reach the userspace path).
    prog: Option<XdpBalancer>,
    /// The map sizes of the last load; grown when a change does not fit.
    capacity: xdp::Capacity,
    opts: XdpOptions,
    /// After a failed reload, the next attempt waits until then.
    retry_at: std::time::Instant,
}

impl XdpState {
    /// Writes `tables` (built from `config`) into the program's maps in place: VIPs added,
    /// removed or changed with the program attached and its conntrack kept. The program is
    /// reloaded only when it is gone (a failed reload, retried every second), when a map's
    /// capacity is exceeded (maps grown geometrically; logged), or when an update failed and
    /// left the maps half-written. Returns whether `tables` are in force.
    fn apply(&mut self, config: &Config, tables: &Tables, metrics: &Metrics) -> bool {
        // Bounded: a reload with grown maps fits the VIPs it was grown for.
        for _ in 0..3 {
            if self.prog.is_none() {
                if std::time::Instant::now() < self.retry_at {
                    return false;
                }
                match XdpBalancer::load_with(config, &self.opts, self.capacity) {
                    Ok(p) => {
                        metrics.xdp_program_loads.inc();
                        tracing::info!(
                            vips = config.vips.len(),
                            capacity = %p.capacity(),
                            "XDP program reloaded"
                        );
                        self.capacity = p.capacity();
                        self.prog = Some(p);
                    }
                    Err(e) => {
                        self.retry_at = std::time::Instant::now() + Duration::from_secs(1);
                        tracing::error!(error = %e, "reloading the XDP program (retrying every second); the userspace path forwards meanwhile");
                        return false;
                    }
                }
            }
            let Some(prog) = &mut self.prog else {
                return false;
            };
            match prog.sync(config, tables) {
                Ok(()) => {
                    metrics.set_xdp_maps(prog.capacity().as_array(), prog.used());
                    return true;
                }
                Err(XdpError::Capacity {
                    needed,
                    have,
                    detail,
                }) => {
                    self.capacity = have.grown(needed);
                    tracing::warn!(
                        %detail,
                        %have,
                        grown = %self.capacity,
                        "XDP maps too small for the VIP set: reloading the program with larger maps (its conntrack starts empty; the userspace path forwards until it is attached)"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "updating the XDP maps failed: reloading the program");
                }
            }
            // Detach first: an interface runs one program.
            self.prog = None;
        }
        false
    }
}

/// The XDP thread: writes every new table snapshot into the program's maps (within
/// [`xdp::SYNC_INTERVAL`] of the control loop swapping it in), in place ([`XdpState::apply`]),
/// and turns the program's counters into metrics every second. Dropping the program at the
/// end detaches it.
fn xdp_loop(
    mut state: XdpState,
    mut synced: Arc<Tables>,
    tables: &ArcSwap<Tables>,
    applied: &ArcSwap<Applied>,
    metrics: &Metrics,
    stop: &AtomicBool,
) {
    let mut next_collect = std::time::Instant::now();
    // The first sweep soon after start, so the gauge is not empty for long.
    let mut next_sweep = next_collect + Duration::from_secs(2);
    while !stop.load(Ordering::Relaxed) {
        let cur = tables.load_full();
        let missing = state.prog.is_none();
        if !Arc::ptr_eq(&cur, &synced) || missing {
            let a = applied.load_full();
            // The configuration is stored before its tables: a newer one means newer tables
            // are on their way.
            if a.generation == cur.generation && state.apply(&a.config, &cur, metrics) {
                synced = cur;
            }
        }
        let now = std::time::Instant::now();
        if let Some(prog) = &mut state.prog {
            if now >= next_collect {
                prog.collect(metrics);
                next_collect = now + Duration::from_secs(1);
            }
            if now >= next_sweep {
                prog.sweep(metrics);
                next_sweep = now + xdp::SWEEP_INTERVAL;
            }
        }
        std::thread::sleep(xdp::SYNC_INTERVAL);
    }
    if let Some(prog) = &mut state.prog {
        prog.collect(metrics);
    }
}

fn build(config: &Config, health: &BTreeMap<Target, bool>, generation: u64) -> Tables {
    let mut t = Tables::build(&config.vips, |v, b| {
        health
            .get(&Target {
                address: b.address,
                check: v.health_check.clone(),
            })
            .copied()
            .unwrap_or(false)
    });
    t.generation = generation;
    t
}

fn announce_set(config: &Config, tables: &Tables) -> BTreeSet<Ipv4Addr> {
    tables
        .announce(&config.vips)
        .into_iter()
        .filter(|(_, up)| *up)
        .map(|(a, _)| a)
        .collect()
}

fn publish(config: &Config, tables: &Tables, announced: &BTreeSet<Ipv4Addr>, m: &Metrics) {
    for (v, t) in config.vips.iter().zip(&tables.vips) {
        for b in &v.backends {
            m.backend_healthy
                .get_or_create(&BackendLabels {
                    vip: v.name.clone(),
                    backend: b.address.to_string(),
                })
                .set(i64::from(t.healthy.contains(&b.address)));
        }
        m.vip_announced
            .get_or_create(&VipLabels {
                vip: v.name.clone(),
            })
            .set(i64::from(announced.contains(&v.address)));
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `/state` document: per VIP entry of the tables in force its address, protocol, ports,
/// backends with weights, the healthy ones and whether it is announced; the conntrack size;
/// and with `--xds` the client's status.
fn state_fn(
    applied: Arc<ArcSwap<Applied>>,
    tables: Arc<ArcSwap<Tables>>,
    announced: watch::Receiver<BTreeSet<Ipv4Addr>>,
    metrics: Arc<Metrics>,
    xds: Arc<Mutex<Option<String>>>,
) -> StateFn {
    Arc::new(move || {
        let t = tables.load();
        let a = applied.load();
        let ann = announced.borrow().clone();
        let vips: Vec<String> = t
            .vips
            .iter()
            .filter_map(|vt| {
                // Names are unique; a configuration newer than the tables may lack one.
                let v = a.config.vips.iter().find(|v| v.name == vt.name)?;
                let healthy: Vec<String> =
                    vt.healthy.iter().map(|a| json_str(&a.to_string())).collect();
                let ports: Vec<String> = v.ports.iter().map(u16::to_string).collect();
                let backends: Vec<String> = vt
                    .backends
                    .iter()
                    .map(|b| {
                        format!(
                            "{{\"address\":{},\"weight\":{}}}",
                            json_str(&b.address.to_string()),
                            b.weight
                        )
                    })
                    .collect();
                Some(format!(
                    "{{\"name\":{},\"address\":{},\"protocol\":{},\"ports\":[{}],\"backends\":{},\"backendList\":[{}],\"healthy\":[{}],\"announced\":{}}}",
                    json_str(&v.name),
                    json_str(&v.address.to_string()),
                    json_str(&v.protocol.to_string()),
                    ports.join(","),
                    v.backends.len(),
                    backends.join(","),
                    healthy.join(","),
                    ann.contains(&v.address)
                ))
            })
            .collect();
        let xds = xds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|s| format!(",\"xds\":{s}"))
            .unwrap_or_default();
        format!(
            "{{\"vips\":[{}],\"generation\":{},\"conntrackEntries\":{}{xds}}}\n",
            vips.join(","),
            t.generation,
            metrics.conntrack_entries.get()
        )
    })
}

/// How the decap agent runs.
#[derive(Debug, Clone)]
pub struct DecapOptions {
    /// The TUN device inner packets are written into.
    pub tun: String,
    /// Its MTU (the largest inner packet).
    pub mtu: u16,
    /// VIPs to bind to `lo` and accept; empty accepts any inner destination and binds nothing.
    pub vips: Vec<Ipv4Addr>,
    /// Admin server address; `None` for none.
    pub admin: Option<SocketAddr>,
    /// Raw socket receive buffer (SO_RCVBUFFORCE).
    pub rcvbuf: usize,
    /// Decapsulate in XDP on this interface; the raw socket and TUN stay for what XDP leaves
    /// to them (fragmented IPIP). `None`: userspace only.
    pub xdp: Option<XdpOptions>,
}

/// A running decap agent.
pub struct Decap {
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// The admin server's bound address.
    pub admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    added: Vec<Ipv4Addr>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    xdp_thread: Option<std::thread::JoinHandle<()>>,
}

impl Decap {
    /// Starts the agent: TUN device up with reverse-path filtering off, the VIPs on `lo`, the
    /// raw protocol-4 socket. Needs root and a tokio runtime.
    pub async fn start(opts: DecapOptions) -> Result<Decap, StartError> {
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let registry = Arc::new(registry);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tun = Tun::create(&opts.tun, opts.mtu)?;
        // The inner packets arrive on the TUN device from client addresses routed elsewhere:
        // strict reverse-path filtering would drop them (the effective value is the maximum of
        // `all` and the device's).
        sys::sysctl("net.ipv4.conf.all.rp_filter", "0")?;
        sys::sysctl(&format!("net.ipv4.conf.{}.rp_filter", opts.tun), "0")?;
        let mut added = Vec::new();
        for vip in &opts.vips {
            sys::ip(&["addr", "replace", &format!("{vip}/32"), "dev", "lo"])?;
            added.push(*vip);
        }
        let raw = RawIpip::open(opts.rcvbuf)?;
        let stop = Arc::new(AtomicBool::new(false));
        let xdp_thread = match &opts.xdp {
            Some(x) => {
                let mut prog = XdpDecap::load(&opts.vips, x)?;
                tracing::info!(interface = %x.interface, mode = %x.mode, "XDP decap attached");
                let (metrics, stop) = (metrics.clone(), stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("l4lb-xdp-decap".into())
                        .spawn(move || {
                            while !stop.load(Ordering::Relaxed) {
                                prog.collect(&metrics);
                                std::thread::sleep(Duration::from_millis(200));
                            }
                            prog.collect(&metrics);
                        })
                        .map_err(StartError::Thread)?,
                )
            }
            None => None,
        };
        let thread = {
            let (metrics, stop) = (metrics.clone(), stop.clone());
            let vips: BTreeSet<Ipv4Addr> = opts.vips.iter().copied().collect();
            std::thread::Builder::new()
                .name("l4lb-decap".into())
                .spawn(move || datapath::decap(&raw, &tun, &vips, &metrics, &stop))
                .map_err(StartError::Thread)?
        };
        let admin = match opts.admin {
            Some(addr) => {
                let m = metrics.clone();
                let state: StateFn = Arc::new(move || {
                    format!(
                        "{{\"decapPackets\":{},\"decapBytes\":{}}}\n",
                        m.decap_packets.get(),
                        m.decap_bytes.get()
                    )
                });
                Some(
                    admin::serve(addr, registry, state, shutdown_rx)
                        .await
                        .map_err(|source| StartError::Admin { addr, source })?,
                )
            }
            None => None,
        };
        tracing::info!(tun = %opts.tun, vips = ?opts.vips, "decap agent started");
        Ok(Decap {
            metrics,
            admin,
            shutdown,
            added,
            stop,
            thread: Some(thread),
            xdp_thread,
        })
    }

    /// Stops the agent and removes the VIP addresses it added to `lo`.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        self.stop.store(true, Ordering::Relaxed);
        for t in [self.thread.take(), self.xdp_thread.take()]
            .into_iter()
            .flatten()
        {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        for vip in &self.added {
            let _ = sys::ip(&["addr", "del", &format!("{vip}/32"), "dev", "lo"]);
        }
    }
}
