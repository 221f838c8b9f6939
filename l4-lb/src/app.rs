//! Wiring: the balancer (control loop, probers, userspace data path, BGP, admin) and the decap
//! agent, each started by one call and stopped gracefully by another.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::admin::{self, StateFn};
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

/// A running balancer.
pub struct Balancer {
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// The registry the admin server encodes.
    pub registry: Arc<Registry>,
    /// The data path's current tables.
    pub tables: Arc<ArcSwap<Tables>>,
    /// The VIP addresses currently announced.
    pub announced: watch::Receiver<BTreeSet<Ipv4Addr>>,
    /// The admin server's bound address.
    pub admin: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    bgp: JoinSet<()>,
    routes: Vec<(Ipv4Addr, String)>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    xdp_thread: Option<std::thread::JoinHandle<()>>,
}

impl Balancer {
    /// Starts everything. Needs root (TUN, raw socket, routes) and a tokio runtime.
    pub async fn start(config: Config, opts: BalancerOptions) -> Result<Balancer, StartError> {
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let registry = Arc::new(registry);
        let (shutdown, shutdown_rx) = watch::channel(false);

        let tun = Tun::create(&opts.tun, opts.mtu)?;
        let raw = RawIpip::open(0)?;
        let mut routes = Vec::new();
        if opts.manage_routes {
            sys::sysctl("net.ipv4.ip_forward", "1")?;
            for vip in config.vip_addresses() {
                sys::ip(&["route", "replace", &format!("{vip}/32"), "dev", &opts.tun])?;
                routes.push((vip, opts.tun.clone()));
            }
        }

        // Health: backends whose check is NONE are healthy from the start.
        let mut health: BTreeMap<Target, bool> = balancer::targets(&config.vips)
            .into_iter()
            .map(|t| {
                let up = t.check.kind == ProbeKind::None;
                (t, up)
            })
            .collect();
        let tables = Arc::new(ArcSwap::from_pointee(build(&config, &health)));
        let (announce_tx, announced) = watch::channel(announce_set(&config, &tables.load()));
        publish(&config, &tables.load(), &announced.borrow(), &metrics);

        let mut tasks = JoinSet::new();
        let (events_tx, mut events) = mpsc::channel(64);
        let mut probers = JoinSet::new();
        for t in health.keys() {
            if t.check.kind != ProbeKind::None {
                probers.spawn(health::run_prober(t.clone(), events_tx.clone()));
            }
        }
        drop(events_tx);

        let mut conntrack =
            Conntrack::new(config.conntrack.capacity, config.conntrack.idle_timeout);
        let stop = Arc::new(AtomicBool::new(false));
        let xdp_thread = match &opts.xdp {
            Some(x) => {
                let mut prog = XdpBalancer::load(&config, x)?;
                // The thread starts from exactly what was written here: the control loop may
                // swap in new tables before it runs, and those must still be written.
                let synced = tables.load_full();
                prog.sync(&synced)?;
                tracing::info!(interface = %x.interface, mode = %x.mode, "XDP data path attached");
                let (tables, metrics, stop) = (tables.clone(), metrics.clone(), stop.clone());
                Some(
                    std::thread::Builder::new()
                        .name("l4lb-xdp".into())
                        .spawn(move || xdp_loop(prog, synced, &tables, &metrics, &stop))
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

        // The control loop: every health transition rebuilds the tables and the announcements.
        {
            let config = config.clone();
            let tables = tables.clone();
            let metrics = metrics.clone();
            let mut stop = shutdown_rx.clone();
            tasks.spawn(async move {
                let _probers = probers; // aborted when the loop ends
                loop {
                    let t = tokio::select! {
                        _ = stop.changed() => return,
                        t = events.recv() => match t {
                            Some(t) => t,
                            None => return,
                        },
                    };
                    tracing::info!(
                        backend = %t.target.address,
                        healthy = t.healthy,
                        detail = %t.detail,
                        "backend health changed"
                    );
                    health.insert(t.target, t.healthy);
                    let new = build(&config, &health);
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
                    config.clone(),
                    tables.clone(),
                    announced.clone(),
                    metrics.clone(),
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
            announced,
            admin,
            shutdown,
            tasks,
            bgp,
            routes,
            stop,
            thread: Some(thread),
            xdp_thread,
        })
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
        for (vip, dev) in &self.routes {
            let _ = sys::ip(&["route", "del", &format!("{vip}/32"), "dev", dev]);
        }
        tracing::info!("l4lb stopped");
    }
}

/// The XDP thread: writes every new table snapshot into the program's maps (within
/// [`xdp::SYNC_INTERVAL`] of the control loop swapping it in) and turns the program's counters
/// into metrics every second. Dropping the program at the end detaches it.
fn xdp_loop(
    mut prog: XdpBalancer,
    mut synced: Arc<Tables>,
    tables: &ArcSwap<Tables>,
    metrics: &Metrics,
    stop: &AtomicBool,
) {
    let mut next_collect = std::time::Instant::now();
    // The first sweep soon after start, so the gauge is not empty for long.
    let mut next_sweep = next_collect + Duration::from_secs(2);
    while !stop.load(Ordering::Relaxed) {
        let cur = tables.load_full();
        if !Arc::ptr_eq(&cur, &synced) {
            match prog.sync(&cur) {
                Ok(()) => synced = cur,
                // Retried on the next round; meanwhile the old tables stay in force.
                Err(e) => tracing::warn!(error = %e, "updating the XDP maps"),
            }
        }
        let now = std::time::Instant::now();
        if now >= next_collect {
            prog.collect(metrics);
            next_collect = now + Duration::from_secs(1);
        }
        if now >= next_sweep {
            prog.sweep(metrics);
            next_sweep = now + xdp::SWEEP_INTERVAL;
        }
        std::thread::sleep(xdp::SYNC_INTERVAL);
    }
    prog.collect(metrics);
}

fn build(config: &Config, health: &BTreeMap<Target, bool>) -> Tables {
    Tables::build(&config.vips, |v, b| {
        health
            .get(&Target {
                address: b.address,
                check: v.health_check.clone(),
            })
            .copied()
            .unwrap_or(false)
    })
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

fn state_fn(
    config: Config,
    tables: Arc<ArcSwap<Tables>>,
    announced: watch::Receiver<BTreeSet<Ipv4Addr>>,
    metrics: Arc<Metrics>,
) -> StateFn {
    Arc::new(move || {
        let t = tables.load();
        let ann = announced.borrow().clone();
        let vips: Vec<String> = config
            .vips
            .iter()
            .zip(&t.vips)
            .map(|(v, vt)| {
                let healthy: Vec<String> =
                    vt.healthy.iter().map(|a| json_str(&a.to_string())).collect();
                format!(
                    "{{\"name\":{},\"address\":{},\"protocol\":{},\"backends\":{},\"healthy\":[{}],\"announced\":{}}}",
                    json_str(&v.name),
                    json_str(&v.address.to_string()),
                    json_str(&v.protocol.to_string()),
                    v.backends.len(),
                    healthy.join(","),
                    ann.contains(&v.address)
                )
            })
            .collect();
        format!(
            "{{\"vips\":[{}],\"conntrackEntries\":{}}}\n",
            vips.join(","),
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
