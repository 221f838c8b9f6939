//! The XDP data path: the BPF programs of `l4-lb/bpf/` (compiled by `build.rs` with clang),
//! loaded and attached with aya, and the userspace side that keeps their maps equal to the
//! balancer's [`Tables`] (VIPs, the same Maglev tables as the userspace path, healthy
//! backends) and turns their per-CPU counters into metrics.
//!
//! The map layouts are mirrored from `bpf/balancer.bpf.c` and `bpf/decap.bpf.c` as plain byte
//! arrays (so this crate needs no `unsafe` `Pod` impls); the encoders are pure functions with
//! unit tests. Addresses and ports are in network order, indexes and counters in host order.

pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::balancer::Tables;
use crate::config::Config;
use crate::metrics::{BackendLabels, Metrics, ReasonLabels, VipLabels};
pub use plan::Capacity;
use plan::{Layout, Op, PlanError, Want};

/// The balancer program (empty when clang was missing at build time).
static BALANCER_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer.o"));
/// The decap program (empty when clang was missing at build time).
static DECAP_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap.o"));

/// Whether this build carries the XDP programs (clang was available at build time).
pub fn available() -> bool {
    !BALANCER_OBJ.is_empty() && !DECAP_OBJ.is_empty()
}

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): the fast one; needs driver support (veth has it).
    #[default]
    Native,
    /// In the kernel's generic receive path (`XDP_FLAGS_SKB_MODE`): works on any device.
    Generic,
    /// Decap only: the decap program as a tc classifier on the interface's ingress (tcx),
    /// after GRO and without XDP's copy of every packet on veth (docs/l4lb.md, "Decap program").
    Tc,
}

impl Mode {
    /// The XDP attach mode; `None` for [`Mode::Tc`], which is not XDP.
    fn aya(self) -> Option<XdpMode> {
        match self {
            Mode::Native => Some(XdpMode::Driver),
            Mode::Generic => Some(XdpMode::Skb),
            Mode::Tc => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Native => "native",
            Mode::Generic => "generic",
            Mode::Tc => "tc",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "native" => Ok(Mode::Native),
            "generic" => Ok(Mode::Generic),
            "tc" => Ok(Mode::Tc),
            _ => Err(format!(
                "unknown XDP mode {s:?} (native, generic, or tc for the decap)"
            )),
        }
    }
}

/// Where and how to attach an XDP program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpOptions {
    /// The interface VIP traffic arrives on (balancer) or IPIP arrives on (gateway host).
    pub interface: String,
    /// Native or generic.
    pub mode: Mode,
}

/// Why the XDP data path could not start or be updated.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The binary was built without clang.
    #[error(
        "this causeway was built without the XDP programs (clang was missing when it was \
         compiled): install clang and libbpf-dev (scripts/install-deps) and rebuild, or run \
         with --datapath userspace"
    )]
    NotBuilt,
    /// The object could not be loaded (parse, map creation, verifier).
    #[error("loading the XDP program {program}: {detail} (needs root and a kernel with BPF)")]
    Load {
        /// Which program.
        program: &'static str,
        /// What failed.
        detail: String,
    },
    /// The program could not be attached.
    #[error(
        "attaching XDP to {interface} in {mode} mode: {detail} (check the interface name; \
         native mode needs driver support, generic works everywhere)"
    )]
    Attach {
        /// The interface.
        interface: String,
        /// The mode.
        mode: Mode,
        /// What failed.
        detail: String,
    },
    /// A map was missing or could not be read or written.
    #[error("BPF map {map}: {detail}")]
    Map {
        /// The map.
        map: &'static str,
        /// What failed.
        detail: String,
    },
    /// The configuration does not fit the maps.
    #[error("the VIPs need {needed} Maglev slots, more than a BPF array can hold")]
    TooLarge {
        /// Slots needed.
        needed: u64,
    },
    /// The VIPs need bigger maps than the program was loaded with: reload it with
    /// [`Capacity::grown`] (the maps are unchanged).
    #[error(
        "the XDP maps are too small ({detail}): need {needed:?} (ids, keys, slots, backend pairs), have {have}"
    )]
    Capacity {
        /// What the VIPs need: ids, keys, Maglev slots, backend pairs.
        needed: [u64; 4],
        /// What the maps hold.
        have: Capacity,
        /// Which limit.
        detail: String,
    },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> XdpError {
    move |e| XdpError::Map {
        map,
        detail: e.to_string(),
    }
}

/// Reasons counted by the balancer program, by index (`enum reason` in balancer.bpf.c):
/// `(label, slow path)`. Slow-path packets are not dropped: the kernel routes them into the
/// userspace data path. `frag_needed` packets are dropped and answered with an ICMP
/// fragmentation-needed to the client (path MTU discovery; docs/l4lb.md, MTU).
pub const REASONS: [(&str, bool); 8] = [
    ("no_backend", false),
    ("malformed", false),
    ("mtu", true),
    ("neighbour", true),
    ("no_route", false),
    ("encap_error", false),
    ("forwarding_disabled", false),
    ("frag_needed", false),
];

/// Key of the `vips` map: address and port in network order, protocol, padding.
pub fn vip_key(addr: Ipv4Addr, port: u16, protocol: u8) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&addr.octets());
    k[4..6].copy_from_slice(&port.to_be_bytes());
    k[6] = protocol;
    k
}

/// Value of the `vips` map: configuration index, first slot of the active table, its size, and
/// whether the entry only matches port-less later fragments.
pub fn vip_meta(index: u32, offset: u32, size: u32, fragments_only: bool) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[0..4].copy_from_slice(&index.to_ne_bytes());
    v[4..8].copy_from_slice(&offset.to_ne_bytes());
    v[8..12].copy_from_slice(&size.to_ne_bytes());
    v[12..16].copy_from_slice(&u32::from(fragments_only).to_ne_bytes());
    v
}

/// Key of the `healthy` and `stats` maps: VIP index (host order), backend (network order).
pub fn backend_key(vip: u32, backend: Ipv4Addr) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[0..4].copy_from_slice(&vip.to_ne_bytes());
    k[4..8].copy_from_slice(&backend.octets());
    k
}

/// Decodes a `backend_key`.
pub fn parse_backend_key(k: &[u8; 8]) -> (u32, Ipv4Addr) {
    let vip = u32::from_ne_bytes([k[0], k[1], k[2], k[3]]);
    (vip, Ipv4Addr::new(k[4], k[5], k[6], k[7]))
}

/// A `maglev` map entry: the backend address as the packet carries it (0: none).
pub fn slot_value(backend: Option<Ipv4Addr>) -> [u8; 4] {
    backend.map(|a| a.octets()).unwrap_or([0; 4])
}

/// Every `vips` map key of the configuration, with the VIP index it selects and whether it only
/// matches fragments: one per port (or port 0 for an any-port VIP), plus port 0 for the
/// port-less later fragments of a VIP with ports, on the first such VIP of an address and
/// protocol unless an any-port VIP claims it — the userspace [`Tables::lookup`] rule.
pub fn vip_keys(config: &Config) -> Vec<([u8; 8], usize, bool)> {
    let mut out: BTreeMap<[u8; 8], (usize, bool)> = BTreeMap::new();
    for (i, v) in config.vips.iter().enumerate() {
        let proto = v.protocol.number();
        if v.ports.is_empty() {
            out.insert(vip_key(v.address, 0, proto), (i, false));
        } else {
            for p in &v.ports {
                out.insert(vip_key(v.address, *p, proto), (i, false));
            }
        }
    }
    for (i, v) in config.vips.iter().enumerate() {
        if !v.ports.is_empty() {
            out.entry(vip_key(v.address, 0, v.protocol.number()))
                .or_insert((i, true));
        }
    }
    out.into_iter().map(|(k, (i, f))| (k, i, f)).collect()
}

/// The table one VIP should have: backend address per slot (empty: no healthy backend).
pub fn slots(tables: &Tables, vip: usize) -> Vec<Ipv4Addr> {
    let Some(t) = tables.vips.get(vip) else {
        return Vec::new();
    };
    let backends = t.table.backends();
    t.table
        .entries()
        .iter()
        .filter_map(|&i| backends.get(i as usize).map(|b| b.address))
        .collect()
}

/// The source address the kernel picks towards `dst` (a UDP connect sends nothing).
fn source_towards(dst: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((dst, 9)).ok()?;
    match s.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(_) => None,
    }
}

/// Monotonic time in ns, the clock of `bpf_ktime_get_ns()`.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// Adds `now - last` to `counter` and remembers `now` (counters only grow; a reset map entry
/// counts from zero again).
fn delta(last: &mut HashMap<[u8; 8], [u64; 2]>, key: [u8; 8], now: [u64; 2]) -> [u64; 2] {
    let prev = last.insert(key, now).unwrap_or([0, 0]);
    [
        now[0].checked_sub(prev[0]).unwrap_or(now[0]),
        now[1].checked_sub(prev[1]).unwrap_or(now[1]),
    ]
}

/// Program `program` of the object, as its kind (XDP, tc classifier).
fn program_of<'a, P>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut P, XdpError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or(XdpError::Load {
            program,
            detail: "not in the object".into(),
        })?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| XdpError::Load {
            program,
            detail: e.to_string(),
        })
}

/// A failed load, with the verifier's reasoning when it refused the program.
fn load_error(program: &'static str, e: &aya::programs::ProgramError) -> XdpError {
    XdpError::Load {
        program,
        detail: verifier_detail(e),
    }
}

fn attach(ebpf: &mut Ebpf, program: &'static str, opts: &XdpOptions) -> Result<(), XdpError> {
    let prog: &mut Xdp = program_of(ebpf, program)?;
    prog.load().map_err(|e| load_error(program, &e))?;
    let Some(mode) = opts.mode.aya() else {
        return Err(XdpError::Attach {
            interface: opts.interface.clone(),
            mode: opts.mode,
            detail: "tc mode is for the decap program only; the balancer runs in XDP (native \
                     or generic)"
                .into(),
        });
    };
    prog.attach(&opts.interface, mode)
        .map_err(|e| XdpError::Attach {
            interface: opts.interface.clone(),
            mode: opts.mode,
            detail: verifier_detail(&e),
        })?;
    Ok(())
}

/// Loads `program` and attaches it to the ingress of `interface` as a tc classifier: tcx links
/// on Linux 6.6+ (owned by the process, gone with it); older kernels need the clsact qdisc,
/// added when the first attempt fails.
fn attach_tc(ebpf: &mut Ebpf, program: &'static str, interface: &str) -> Result<(), XdpError> {
    use aya::programs::tc::{self, SchedClassifier, TcAttachType};
    let prog: &mut SchedClassifier = program_of(ebpf, program)?;
    prog.load().map_err(|e| load_error(program, &e))?;
    let attach_err = |e: &aya::programs::ProgramError| XdpError::Attach {
        interface: interface.to_owned(),
        mode: Mode::Tc,
        detail: verifier_detail(e),
    };
    if prog.attach(interface, TcAttachType::Ingress).is_err() {
        // Already there is fine; any other problem shows in the second attempt's error.
        let _ = tc::qdisc_add_clsact(interface);
        prog.attach(interface, TcAttachType::Ingress)
            .map_err(|e| attach_err(&e))?;
    }
    Ok(())
}

fn verifier_detail(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => format!("{io_error}; verifier: {verifier_log}"),
        e => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, XdpError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf.take_map(name).ok_or(XdpError::Map {
        map: name,
        detail: "not in the object".into(),
    })?;
    T::try_from(m).map_err(map_err(name))
}

/// The balancer's XDP program, attached, and its maps. Dropping it detaches the program.
pub struct XdpBalancer {
    _ebpf: Ebpf,
    settings: Array<MapData, u64>,
    vips: BpfHashMap<MapData, [u8; 8], [u8; 16]>,
    maglev: Array<MapData, [u8; 4]>,
    healthy: BpfHashMap<MapData, [u8; 8], u32>,
    conntrack: BpfHashMap<MapData, [u8; 16], [u8; 16]>,
    stats: PerCpuHashMap<MapData, [u8; 8], [u64; 2]>,
    new_flows: PerCpuArray<MapData, u64>,
    reasons: PerCpuArray<MapData, u64>,
    /// Where every VIP is in the maps (ids, table regions, `vips` entries).
    layout: Layout,
    /// Metric label per VIP id; kept after a VIP leaves (its last counts) until the id is
    /// claimed again.
    names: HashMap<u32, String>,
    /// The conntrack map's size: a change needs a reload.
    conntrack_capacity: u32,
    /// Whether the fallback source address is written (needs a backend to pick it).
    source_set: bool,
    idle_ns: u64,
    last_stats: HashMap<[u8; 8], [u64; 2]>,
    last_new: HashMap<u32, u64>,
    last_reasons: Vec<u64>,
}

/// The conntrack map size for `config`.
fn conntrack_capacity(config: &Config) -> u32 {
    u32::try_from(config.conntrack.capacity)
        .unwrap_or(u32::MAX)
        .max(1)
}

impl XdpBalancer {
    /// Loads the program with maps sized for `config` with headroom
    /// ([`Capacity::for_want`]), writes the settings and attaches it. The VIPs get no table
    /// until [`XdpBalancer::sync`]: until then their packets pass to the userspace path.
    pub fn load(config: &Config, opts: &XdpOptions) -> Result<XdpBalancer, XdpError> {
        XdpBalancer::load_with(
            config,
            opts,
            Capacity::for_want(&Want::new(config, &Tables::default())),
        )
    }

    /// [`XdpBalancer::load`] with maps of at least `capacity` (a reload after a capacity was
    /// exceeded passes [`Capacity::grown`]).
    pub fn load_with(
        config: &Config,
        opts: &XdpOptions,
        capacity: Capacity,
    ) -> Result<XdpBalancer, XdpError> {
        if !available() {
            return Err(XdpError::NotBuilt);
        }
        let want = Want::new(config, &Tables::default());
        let capacity = capacity.max(&Capacity::for_want(&want));
        let needed = Capacity::needed(&want);
        if !capacity.fits(needed) {
            return Err(XdpError::TooLarge { needed: needed[2] });
        }
        let conntrack_capacity = conntrack_capacity(config);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("maglev", capacity.slots)
            .map_max_entries("vips", capacity.keys)
            .map_max_entries("new_flows", capacity.ids)
            .map_max_entries("healthy", capacity.backends)
            .map_max_entries("stats", capacity.backends)
            .map_max_entries("conntrack", conntrack_capacity)
            .load(BALANCER_OBJ)
            .map_err(|e| XdpError::Load {
                program: "causeway_balancer",
                detail: e.to_string(),
            })?;
        // Attach first: the program holds its maps from then on; until the first sync its
        // `vips` map is empty and every packet passes to the kernel (the userspace path).
        attach(&mut ebpf, "causeway_balancer", opts)?;
        let idle_ns = u64::try_from(config.conntrack.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        let mut settings: Array<MapData, u64> = take(&mut ebpf, "settings")?;
        settings.set(1, idle_ns, 0).map_err(map_err("settings"))?;
        let vips = take(&mut ebpf, "vips")?;
        let maglev = take(&mut ebpf, "maglev")?;
        let healthy = take(&mut ebpf, "healthy")?;
        let conntrack = take(&mut ebpf, "conntrack")?;
        let stats = take(&mut ebpf, "stats")?;
        let new_flows = take(&mut ebpf, "new_flows")?;
        let reasons = take(&mut ebpf, "reasons")?;
        let mut prog = XdpBalancer {
            _ebpf: ebpf,
            settings,
            vips,
            maglev,
            healthy,
            conntrack,
            stats,
            new_flows,
            reasons,
            layout: Layout::new(capacity),
            names: HashMap::new(),
            conntrack_capacity,
            source_set: false,
            idle_ns,
            last_stats: HashMap::new(),
            last_new: HashMap::new(),
            last_reasons: vec![0; REASONS.len()],
        };
        prog.set_source(config)?;
        Ok(prog)
    }

    /// Kernels before 6.7 cannot tell the program its source address: give it the one the
    /// kernel would use towards the first backend (once there is one).
    fn set_source(&mut self, config: &Config) -> Result<(), XdpError> {
        if self.source_set {
            return Ok(());
        }
        if let Some(src) = config
            .vips
            .iter()
            .flat_map(|v| v.backends.first())
            .next()
            .and_then(|b| source_towards(b.address))
        {
            self.settings
                .set(0, u64::from(u32::from_ne_bytes(src.octets())), 0)
                .map_err(map_err("settings"))?;
            self.source_set = true;
        }
        Ok(())
    }

    /// The sizes of the maps VIPs use.
    pub fn capacity(&self) -> Capacity {
        self.layout.capacity()
    }

    /// What is in use of [`XdpBalancer::capacity`]: `[ids, keys, slots, backend pairs]`.
    pub fn used(&self) -> [u64; 4] {
        self.layout.used()
    }

    /// Makes the maps equal to `tables` (built from `config`), in place and in the order of
    /// [`Layout::plan`]: VIPs added, removed or changed (ports, table sizes, backends) with the
    /// program attached and its conntrack kept; a changed table is written into a fresh region
    /// and its `vips` entries flipped to it, so the program never reads a half-written table.
    ///
    /// [`XdpError::Capacity`]: a map is too small (or the conntrack size changed): reload with
    /// [`Capacity::grown`]. Any other error may leave the maps half-updated: reload too.
    pub fn sync(&mut self, config: &Config, tables: &Tables) -> Result<(), XdpError> {
        if conntrack_capacity(config) != self.conntrack_capacity {
            return Err(XdpError::Capacity {
                needed: Capacity::needed(&Want::new(config, tables)),
                have: self.layout.capacity(),
                detail: "the conntrack capacity changed".into(),
            });
        }
        let idle_ns = u64::try_from(config.conntrack.idle_timeout.as_nanos()).unwrap_or(u64::MAX);
        if idle_ns != self.idle_ns {
            self.settings
                .set(1, idle_ns, 0)
                .map_err(map_err("settings"))?;
            self.idle_ns = idle_ns;
        }
        self.set_source(config)?;
        let want = Want::new(config, tables);
        let (next, ops) = loop {
            match self.layout.plan(&want, std::time::Instant::now()) {
                Ok(p) => break p,
                // Freed space is reusable within GRACE: wait for it rather than reload.
                Err(PlanError::Wait(d)) => std::thread::sleep(d),
                Err(PlanError::Exceeded { needed }) => {
                    return Err(XdpError::Capacity {
                        needed,
                        have: self.layout.capacity(),
                        detail: "more than the maps hold".into(),
                    });
                }
            }
        };
        for op in ops {
            self.execute(op)?;
        }
        self.layout = next;
        self.layout.stamp(std::time::Instant::now());
        Ok(())
    }

    fn execute(&mut self, op: Op) -> Result<(), XdpError> {
        match op {
            Op::ClaimId { id, name } => {
                // Counters an earlier owner of the id left: stats entries go, new_flows counts
                // from its current value.
                self.forget_stats(id, None);
                let now = self
                    .new_flows
                    .get(&id, 0)
                    .map(|v| v.iter().sum())
                    .unwrap_or(0);
                self.last_new.insert(id, now);
                self.names.insert(id, name);
            }
            Op::Healthy { id, backend } => {
                self.healthy
                    .insert(backend_key(id, backend), 1, 0)
                    .map_err(map_err("healthy"))?;
            }
            Op::WriteTable { offset, slots } => {
                for (s, a) in slots.iter().enumerate() {
                    self.maglev
                        .set(offset + s as u32, slot_value(Some(*a)), 0)
                        .map_err(map_err("maglev"))?;
                }
            }
            Op::SetKey { key, meta } => {
                self.vips
                    .insert(
                        key,
                        vip_meta(meta.id, meta.offset, meta.size, meta.fragments_only),
                        0,
                    )
                    .map_err(map_err("vips"))?;
            }
            // Already gone is fine: the goal is its absence.
            Op::RemoveKey { key } => {
                let _ = self.vips.remove(&key);
            }
            Op::Unhealthy { id, backend } => {
                let _ = self.healthy.remove(&backend_key(id, backend));
            }
            Op::ForgetStats { id, backend } => self.forget_stats(id, backend),
        }
        Ok(())
    }

    /// Deletes the `stats` entries of VIP `id` (of one backend, or all).
    fn forget_stats(&mut self, id: u32, backend: Option<Ipv4Addr>) {
        let keys: Vec<[u8; 8]> = match backend {
            Some(b) => vec![backend_key(id, b)],
            None => self
                .stats
                .keys()
                .filter_map(Result::ok)
                .filter(|k| parse_backend_key(k).0 == id)
                .collect(),
        };
        for k in keys {
            let _ = self.stats.remove(&k);
            self.last_stats.remove(&k);
        }
    }

    /// Adds the program's per-CPU counters since the last call to `metrics`.
    pub fn collect(&mut self, metrics: &Metrics) {
        let entries: Vec<([u8; 8], [u64; 2])> = self
            .stats
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                let sum = v
                    .iter()
                    .fold([0u64, 0u64], |a, c| [a[0] + c[0], a[1] + c[1]]);
                (k, sum)
            })
            .collect();
        for (k, now) in entries {
            let d = delta(&mut self.last_stats, k, now);
            let (vip, backend) = parse_backend_key(&k);
            let Some(name) = self.names.get(&vip) else {
                continue;
            };
            let l = BackendLabels {
                vip: name.clone(),
                backend: backend.to_string(),
            };
            metrics.packets.get_or_create(&l).inc_by(d[0]);
            metrics.bytes.get_or_create(&l).inc_by(d[1]);
        }
        for (id, name) in &self.names {
            if let Ok(v) = self.new_flows.get(id, 0) {
                let now: u64 = v.iter().sum();
                let last = self.last_new.entry(*id).or_default();
                let d = now.saturating_sub(*last);
                *last = now;
                metrics
                    .new_flows
                    .get_or_create(&VipLabels { vip: name.clone() })
                    .inc_by(d);
            }
        }
        for (i, (label, slow)) in REASONS.iter().enumerate() {
            if let Ok(v) = self.reasons.get(&(i as u32), 0) {
                let now: u64 = v.iter().sum();
                let d = now.saturating_sub(self.last_reasons[i]);
                self.last_reasons[i] = now;
                let family = if *slow {
                    &metrics.xdp_slow_path
                } else {
                    &metrics.dropped
                };
                family
                    .get_or_create(&ReasonLabels {
                        reason: (*label).to_owned(),
                    })
                    .inc_by(d);
            }
        }
    }

    /// Removes idle conntrack entries and sets `xdp_conntrack_entries`. Two system calls per
    /// tracked flow, so it runs far less often than [`XdpBalancer::collect`]
    /// ([`SWEEP_INTERVAL`]); the program itself ignores idle entries and the LRU evicts the
    /// oldest when full, so sweeping is only housekeeping and a gauge.
    pub fn sweep(&mut self, metrics: &Metrics) {
        let now = monotonic_ns();
        let mut live = 0i64;
        let mut expired = Vec::new();
        for (k, v) in self.conntrack.iter().filter_map(Result::ok) {
            let last = u64::from_ne_bytes([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]);
            if now.saturating_sub(last) > self.idle_ns {
                expired.push(k);
            } else {
                live += 1;
            }
        }
        for k in expired {
            let _ = self.conntrack.remove(&k);
        }
        metrics.xdp_conntrack_entries.set(live);
    }
}

impl XdpBalancer {
    /// Runs the loaded program once on `frame` (`BPF_PROG_TEST_RUN`) as if it had arrived on
    /// interface `ifindex` of the calling thread's network namespace, with the live maps.
    /// Returns the XDP action (1 drop, 2 pass, 3 tx, 4 redirect) and the frame as the program
    /// left it: the kernel's own execution of exactly the bytes the program writes, for tests.
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> Result<(u32, Vec<u8>), XdpError> {
        use aya::programs::{TestRun, TestRunOptions};
        let err = |detail: String| XdpError::Load {
            program: "causeway_balancer",
            detail,
        };
        let prog: &Xdp = self
            ._ebpf
            .program("causeway_balancer")
            .ok_or_else(|| err("not in the object".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| err(e.to_string()))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })
            .map_err(|e| err(verifier_detail(&e)))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }
}

/// The gateway host's XDP decap program, attached. Dropping it detaches the program.
pub struct XdpDecap {
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    last: [u64; 2],
}

impl XdpDecap {
    /// Loads and attaches the decap program accepting inner packets to `vips` (empty: any).
    pub fn load(vips: &[Ipv4Addr], opts: &XdpOptions) -> Result<XdpDecap, XdpError> {
        if !available() {
            return Err(XdpError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(DECAP_OBJ).map_err(|e| XdpError::Load {
            program: "causeway_decap",
            detail: e.to_string(),
        })?;
        // Attach first: the program holds its maps from then on. Until the VIPs are written it
        // passes IPIP to the kernel, i.e. to the userspace agent.
        if opts.mode == Mode::Tc {
            attach_tc(&mut ebpf, "causeway_decap_tc", &opts.interface)?;
        } else {
            attach(&mut ebpf, "causeway_decap", opts)?;
        }
        {
            let mut m: BpfHashMap<MapData, [u8; 4], u32> = take(&mut ebpf, "decap_vips")?;
            for v in vips {
                m.insert(v.octets(), 1, 0).map_err(map_err("decap_vips"))?;
            }
            let mut any: Array<MapData, u32> = take(&mut ebpf, "decap_any")?;
            any.set(0, u32::from(vips.is_empty()), 0)
                .map_err(map_err("decap_any"))?;
        }
        let counters = take(&mut ebpf, "decap_counters")?;
        Ok(XdpDecap {
            _ebpf: ebpf,
            counters,
            last: [0; 2],
        })
    }

    /// Adds the packets and bytes decapsulated since the last call to `metrics`.
    pub fn collect(&mut self, metrics: &Metrics) {
        for (i, c) in [&metrics.decap_packets, &metrics.decap_bytes]
            .into_iter()
            .enumerate()
        {
            if let Ok(v) = self.counters.get(&(i as u32), 0) {
                let now: u64 = v.iter().sum();
                c.inc_by(now.saturating_sub(self.last[i]));
                self.last[i] = now;
            }
        }
    }
}

/// A program that passes everything, attached to an interface; detached on drop.
///
/// A veth accepts frames sent with native `XDP_TX`/`XDP_REDIRECT` from its peer only while it
/// runs an XDP program itself, so tests and benchmarks attach this to the peer of a balancer's
/// veth. Real NICs need nothing of the kind.
pub struct XdpPass {
    _ebpf: Ebpf,
}

impl XdpPass {
    /// Attaches the pass program to `opts.interface`.
    pub fn attach(opts: &XdpOptions) -> Result<XdpPass, XdpError> {
        if !available() {
            return Err(XdpError::NotBuilt);
        }
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("maglev", 1)
            .map_max_entries("conntrack", 1)
            .load(BALANCER_OBJ)
            .map_err(|e| XdpError::Load {
                program: "causeway_pass",
                detail: e.to_string(),
            })?;
        attach(&mut ebpf, "causeway_pass", opts)?;
        Ok(XdpPass { _ebpf: ebpf })
    }
}

/// How often the XDP thread looks for new tables.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(50);
/// How often the XDP thread sweeps the conntrack map.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config;

    fn cfg(text: &str) -> Config {
        config::file::parse(text).unwrap()
    }

    #[test]
    fn key_layouts_match_the_c_structs() {
        assert_eq!(
            vip_key(Ipv4Addr::new(10, 9, 0, 10), 80, 6),
            [10, 9, 0, 10, 0, 80, 6, 0]
        );
        let m = vip_meta(1, 2, 65537, true);
        assert_eq!(u32::from_ne_bytes([m[8], m[9], m[10], m[11]]), 65537);
        assert_eq!(u32::from_ne_bytes([m[12], m[13], m[14], m[15]]), 1);
        let k = backend_key(3, Ipv4Addr::new(10, 1, 0, 21));
        assert_eq!(&k[4..], &[10, 1, 0, 21]);
        assert_eq!(parse_backend_key(&k), (3, Ipv4Addr::new(10, 1, 0, 21)));
        assert_eq!(slot_value(None), [0; 4]);
    }

    #[test]
    fn vip_keys_follow_the_userspace_lookup() {
        let c = cfg(r#"
vips:
  - name: a
    address: 10.9.0.10
    ports: [80, 443]
    backends: [{address: 10.1.0.21}]
    healthCheck: {type: NONE}
  - name: b
    address: 10.9.0.10
    protocol: UDP
    backends: [{address: 10.1.0.21}]
    healthCheck: {type: NONE, port: 53}
  - name: c
    address: 10.9.0.10
    ports: [8080]
    backends: [{address: 10.1.0.21}]
    healthCheck: {type: NONE}
"#);
        let keys: BTreeMap<[u8; 8], (usize, bool)> = vip_keys(&c)
            .into_iter()
            .map(|(k, i, f)| (k, (i, f)))
            .collect();
        let vip = Ipv4Addr::new(10, 9, 0, 10);
        assert_eq!(keys[&vip_key(vip, 80, 6)], (0, false));
        assert_eq!(keys[&vip_key(vip, 443, 6)], (0, false));
        assert_eq!(keys[&vip_key(vip, 8080, 6)], (2, false));
        // Port-less fragments of TCP: the first VIP with ports (and only fragments); UDP: the
        // any-port VIP.
        assert_eq!(keys[&vip_key(vip, 0, 6)], (0, true));
        assert_eq!(keys[&vip_key(vip, 0, 17)], (1, false));
        assert_eq!(keys.len(), 5);
    }

    #[test]
    fn slots_are_the_maglev_table() {
        let c = cfg(r#"
vips:
  - name: a
    address: 10.9.0.10
    tableSize: 101
    backends: [{address: 10.1.0.22}, {address: 10.1.0.21}]
    healthCheck: {type: NONE, port: 80}
"#);
        let t = Tables::build(&c.vips, |_, _| true);
        let s = slots(&t, 0);
        assert_eq!(s.len(), 101);
        assert_eq!(s, t.vips[0].table.addresses());
        let none = Tables::build(&c.vips, |_, _| false);
        assert!(slots(&none, 0).is_empty());
    }

    #[test]
    fn deltas_survive_resets() {
        let mut last = HashMap::new();
        assert_eq!(delta(&mut last, [0; 8], [5, 500]), [5, 500]);
        assert_eq!(delta(&mut last, [0; 8], [7, 700]), [2, 200]);
        assert_eq!(delta(&mut last, [0; 8], [1, 100]), [1, 100]);
    }

    #[test]
    fn modes_parse() {
        assert_eq!("native".parse::<Mode>().unwrap(), Mode::Native);
        assert_eq!("generic".parse::<Mode>().unwrap(), Mode::Generic);
        assert_eq!("tc".parse::<Mode>().unwrap(), Mode::Tc);
        assert_eq!(Mode::Tc.to_string(), "tc");
        assert!("skb".parse::<Mode>().is_err());
    }
}
