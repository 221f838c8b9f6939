//! Where each VIP lives in the XDP program's maps, and in which order a change is written so
//! that the running program never sees a half-made VIP (docs/l4lb.md, "Applying a change").
//!
//! Pure: [`Layout::plan`] turns the VIPs the balancer wants ([`Want`], built from a
//! configuration and its tables) into the ordered map operations ([`Op`]) and the layout they
//! leave; the XDP side executes them and keeps the layout. A change of the VIP set is applied in
//! place, with the program attached and its conntrack kept; only when a map's capacity is
//! exceeded does the plan fail with [`PlanError::Exceeded`], and the caller reloads the program
//! with [`Capacity::grown`] maps.
//!
//! The layout:
//! - every VIP has an **id** (a slot of the `new_flows` array; the VIP half of the `healthy` and
//!   `stats` keys), stable while the VIP (by name) stays, reused after it leaves;
//! - every VIP with a healthy backend has a **region** of the `maglev` array (its table size in
//!   slots) whose offset its `vips` entries carry;
//! - a changed table is written into a **fresh region** and the `vips` entries then flip to it
//!   (one map update each), so a packet reads either the old table or the new one, never a
//!   half-written one; the old region is freed;
//! - freed regions and ids are reused only after [`GRACE`], so a packet that read the old
//!   `vips` entry just before the flip has finished with the old region long before another VIP
//!   overwrites it.
//!
//! Order of one plan: (1) ids for new VIPs, newly healthy `(id, backend)` pairs, tables in fresh
//! regions; (2) `vips` entries no longer wanted deleted, then new ones inserted and changed ones
//! flipped (one update each, never a delete and an insert); (3) pairs no
//! longer healthy, counters of backends and VIPs that left, regions and ids freed. A new VIP's
//! table is therefore complete before its first key exists, and a removed VIP's keys are gone
//! before its region can be reused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::balancer::Tables;
use crate::config::Config;

/// How long a freed region or id stays unused. An XDP program runs for microseconds inside
/// an RCU read-side section (softirq or the generic receive path), so any packet that read a
/// `vips` entry before it changed has finished long before this.
pub const GRACE: Duration = Duration::from_millis(100);

/// The smallest `maglev` array a program is loaded with: room for two default-size tables and
/// a spare one being written, so a balancer started with no VIPs (`--xds`) takes its first ones
/// in place.
pub const MIN_SLOTS: u32 = 4 * 65537;

/// Sizes of the program's maps that VIPs use (`max_entries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// VIP ids: the `new_flows` array.
    pub ids: u32,
    /// Entries of the `vips` hash.
    pub keys: u32,
    /// Slots of the `maglev` array.
    pub slots: u32,
    /// `(VIP, backend)` pairs: the `healthy` and `stats` hashes.
    pub backends: u32,
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} VIP ids, {} VIP keys, {} Maglev slots, {} backend pairs",
            self.ids, self.keys, self.slots, self.backends
        )
    }
}

/// Twice `n` (at least `min`), within a `u32`.
fn headroom(n: u64, min: u32) -> u32 {
    u32::try_from(n.saturating_mul(2))
        .unwrap_or(u32::MAX)
        .max(min)
}

impl Capacity {
    /// What `want` uses at least: its ids, keys and backend pairs, and the slots of every
    /// table plus one spare of the largest size (a changed table is written next to the old).
    /// Counted in `u64`: a sum that does not fit a `u32` cannot be loaded.
    pub fn needed(want: &Want) -> [u64; 4] {
        let sizes = want.vips.iter().map(|v| u64::from(v.size));
        [
            want.vips.len() as u64,
            want.keys.len() as u64,
            sizes.clone().sum::<u64>() + sizes.max().unwrap_or(0),
            want.vips.iter().map(|v| v.backends.len() as u64).sum(),
        ]
    }

    /// The capacity a program is loaded with for `want`: twice what it needs (so VIPs can be
    /// added and every table changed at once in place), and at least a floor per map.
    pub fn for_want(want: &Want) -> Capacity {
        let [ids, keys, slots, backends] = Capacity::needed(want);
        Capacity {
            ids: headroom(ids, 64),
            keys: headroom(keys, 256),
            slots: headroom(slots, MIN_SLOTS),
            backends: headroom(backends, 1024),
        }
    }

    /// Whether `needed` (from [`Capacity::needed`]) fits.
    pub fn fits(&self, needed: [u64; 4]) -> bool {
        self.as_array()
            .iter()
            .zip(needed)
            .all(|(have, need)| u64::from(*have) >= need)
    }

    /// `[ids, keys, slots, backends]`.
    pub fn as_array(&self) -> [u32; 4] {
        [self.ids, self.keys, self.slots, self.backends]
    }

    /// The capacity to reload with after [`PlanError::Exceeded`]: every map that is too small
    /// grows geometrically (doubles, or to twice the need if that is more). When none is too
    /// small the `maglev` array was too fragmented for a table, and it doubles (a reload also
    /// lays the tables out afresh, without gaps). Never smaller than `self`.
    pub fn grown(&self, needed: [u64; 4]) -> Capacity {
        let have = self.as_array();
        let mut out = have;
        let mut any = false;
        for i in 0..4 {
            if needed[i] > u64::from(have[i]) {
                out[i] = headroom(needed[i], 0).max(headroom(u64::from(have[i]), 0));
                any = true;
            }
        }
        if !any {
            out[2] = headroom(u64::from(have[2]), 0);
        }
        Capacity {
            ids: out[0],
            keys: out[1],
            slots: out[2],
            backends: out[3],
        }
    }

    /// Each field the larger of the two.
    pub fn max(&self, other: &Capacity) -> Capacity {
        Capacity {
            ids: self.ids.max(other.ids),
            keys: self.keys.max(other.keys),
            slots: self.slots.max(other.slots),
            backends: self.backends.max(other.backends),
        }
    }
}

/// A run of slots `[offset, offset + len)` (a `maglev` region, or one VIP id with `len` 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extent {
    /// The first slot.
    pub offset: u32,
    /// How many.
    pub len: u32,
}

/// Why an allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortage {
    /// Space that was freed moments ago would fit once its grace period is over.
    Wait(Duration),
    /// Nothing fits: the map must grow.
    Full,
}

/// A first-fit allocator of extents in `[0, capacity)` with a grace period before freed space
/// is reused.
#[derive(Debug, Clone)]
pub struct Extents {
    /// Free runs by offset, adjacent runs merged.
    free: BTreeMap<u32, u32>,
    /// Freed, not reusable yet: stamped when the plan that freed them has been executed.
    pending: Vec<(Extent, Option<Instant>)>,
}

impl Extents {
    /// All of `[0, capacity)` free.
    pub fn new(capacity: u32) -> Extents {
        let mut free = BTreeMap::new();
        if capacity > 0 {
            free.insert(0, capacity);
        }
        Extents {
            free,
            pending: Vec::new(),
        }
    }

    fn insert_free(&mut self, e: Extent) {
        let (mut offset, mut len) = (e.offset, e.len);
        if let Some((&o, &l)) = self.free.range(..offset).next_back()
            && o + l == offset
        {
            self.free.remove(&o);
            offset = o;
            len += l;
        }
        if let Some(&l) = self.free.get(&(offset + len)) {
            self.free.remove(&(offset + len));
            len += l;
        }
        self.free.insert(offset, len);
    }

    /// Makes the extents whose grace period is over at `now` reusable.
    pub fn settle(&mut self, now: Instant) {
        let (ready, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, at)| at.is_some_and(|t| now.saturating_duration_since(t) >= GRACE));
        self.pending = wait;
        for (e, _) in ready {
            self.insert_free(e);
        }
    }

    /// The lowest free extent of `len` slots.
    pub fn alloc(&mut self, len: u32, now: Instant) -> Result<Extent, Shortage> {
        self.settle(now);
        if let Some(e) = self.first_fit(len) {
            return Ok(e);
        }
        // Would the stamped pending space fit it once settled?
        let mut later = self.clone();
        let mut soonest: Option<Instant> = None;
        for (e, at) in &self.pending {
            if let Some(t) = at {
                later.insert_free(*e);
                soonest = Some(soonest.map_or(*t, |s| s.min(*t)));
            }
        }
        match (later.first_fit(len), soonest) {
            (Some(_), Some(t)) => Err(Shortage::Wait(
                GRACE.saturating_sub(now.saturating_duration_since(t)),
            )),
            _ => Err(Shortage::Full),
        }
    }

    fn first_fit(&mut self, len: u32) -> Option<Extent> {
        let (&offset, &have) = self.free.iter().find(|(_, l)| **l >= len)?;
        self.free.remove(&offset);
        if have > len {
            self.free.insert(offset + len, have - len);
        }
        Some(Extent { offset, len })
    }

    /// Frees `e`: reusable [`GRACE`] after [`Extents::stamp`].
    pub fn free(&mut self, e: Extent) {
        self.pending.push((e, None));
    }

    /// Starts the grace period of everything freed since the last stamp (the plan that freed
    /// it has been executed at `now`).
    pub fn stamp(&mut self, now: Instant) {
        for (_, at) in &mut self.pending {
            at.get_or_insert(now);
        }
    }

    /// Free slots (reusable now or after their grace period).
    pub fn available(&self) -> u64 {
        self.free.values().map(|l| u64::from(*l)).sum::<u64>()
            + self
                .pending
                .iter()
                .map(|(e, _)| u64::from(e.len))
                .sum::<u64>()
    }
}

/// One VIP as the maps should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantVip {
    /// Its name: the identity kept across changes.
    pub name: String,
    /// Maglev table size.
    pub size: u32,
    /// The table (backend per slot); empty when no backend is healthy.
    pub slots: Arc<Vec<Ipv4Addr>>,
    /// Backends in the table.
    pub healthy: BTreeSet<Ipv4Addr>,
    /// Every configured backend (whose counters are kept).
    pub backends: BTreeSet<Ipv4Addr>,
}

/// The VIPs the maps should hold.
#[derive(Debug, Clone, Default)]
pub struct Want {
    /// In configuration order.
    pub vips: Vec<WantVip>,
    /// Every `vips` map key with the position in `vips` it selects and whether it only matches
    /// fragments ([`super::vip_keys`]).
    pub keys: Vec<([u8; 8], usize, bool)>,
}

impl Want {
    /// The VIPs of `config` with the tables of `tables` (built from that configuration).
    pub fn new(config: &Config, tables: &Tables) -> Want {
        Want {
            vips: config
                .vips
                .iter()
                .enumerate()
                .map(|(i, v)| WantVip {
                    name: v.name.clone(),
                    size: v.table_size,
                    slots: Arc::new(super::slots(tables, i)),
                    healthy: tables
                        .vips
                        .get(i)
                        .map(|t| t.healthy.clone())
                        .unwrap_or_default(),
                    backends: v.backends.iter().map(|b| b.address).collect(),
                })
                .collect(),
            keys: super::vip_keys(config),
        }
    }
}

/// The value of a `vips` entry ([`super::vip_meta`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The VIP's id.
    pub id: u32,
    /// First slot of its table.
    pub offset: u32,
    /// Table size; 0: no healthy backend (dropped as `no_backend`).
    pub size: u32,
    /// Matches only port-less later fragments.
    pub fragments_only: bool,
}

/// One map operation, in the order [`Layout::plan`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Id `id` now belongs to VIP `name`: counters left by an earlier owner are forgotten.
    ClaimId {
        /// The id.
        id: u32,
        /// The VIP.
        name: String,
    },
    /// Insert `(id, backend)` into `healthy`.
    Healthy {
        /// The VIP.
        id: u32,
        /// The backend.
        backend: Ipv4Addr,
    },
    /// Write a table into `maglev` from `offset` (a region no `vips` entry points to yet).
    WriteTable {
        /// First slot.
        offset: u32,
        /// Backend per slot.
        slots: Arc<Vec<Ipv4Addr>>,
    },
    /// Insert or replace a `vips` entry.
    SetKey {
        /// The key ([`super::vip_key`]).
        key: [u8; 8],
        /// Its value.
        meta: Meta,
    },
    /// Delete a `vips` entry.
    RemoveKey {
        /// The key.
        key: [u8; 8],
    },
    /// Delete `(id, backend)` from `healthy` (tracked flows to it re-hash).
    Unhealthy {
        /// The VIP.
        id: u32,
        /// The backend.
        backend: Ipv4Addr,
    },
    /// Delete `stats` entries of VIP `id`: of `backend`, or all of them (the VIP left).
    ForgetStats {
        /// The VIP.
        id: u32,
        /// One backend, or `None` for all.
        backend: Option<Ipv4Addr>,
    },
}

/// Why a plan could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    /// Freed space becomes reusable after this long: plan again then.
    Wait(Duration),
    /// A map is too small: reload with [`Capacity::grown`] (`needed` from
    /// [`Capacity::needed`]).
    Exceeded {
        /// What the VIPs need.
        needed: [u64; 4],
    },
}

/// One VIP as the maps hold it.
#[derive(Debug, Clone)]
struct Placed {
    id: Extent,
    /// The region of the live table, `None` while no backend is healthy.
    region: Option<Extent>,
    slots: Arc<Vec<Ipv4Addr>>,
    healthy: BTreeSet<Ipv4Addr>,
    backends: BTreeSet<Ipv4Addr>,
}

/// What the maps hold: ids, regions and `vips` entries. Cheap to clone (tables are shared).
#[derive(Debug, Clone)]
pub struct Layout {
    capacity: Capacity,
    ids: Extents,
    regions: Extents,
    vips: BTreeMap<String, Placed>,
    keys: BTreeMap<[u8; 8], Meta>,
}

impl Layout {
    /// Empty maps of `capacity`.
    pub fn new(capacity: Capacity) -> Layout {
        Layout {
            capacity,
            ids: Extents::new(capacity.ids),
            regions: Extents::new(capacity.slots),
            vips: BTreeMap::new(),
            keys: BTreeMap::new(),
        }
    }

    /// The map sizes.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// What is in use: `[ids, keys, slots, backend pairs]` (slots of live tables).
    pub fn used(&self) -> [u64; 4] {
        [
            self.vips.len() as u64,
            self.keys.len() as u64,
            u64::from(self.capacity.slots).saturating_sub(self.regions.available()),
            self.vips.values().map(|p| p.healthy.len() as u64).sum(),
        ]
    }

    /// The VIP ids by name.
    pub fn ids(&self) -> BTreeMap<String, u32> {
        self.vips
            .iter()
            .map(|(n, p)| (n.clone(), p.id.offset))
            .collect()
    }

    /// The `vips` entries.
    pub fn keys(&self) -> &BTreeMap<[u8; 8], Meta> {
        &self.keys
    }

    /// The operations that turn the maps from this layout into `want`, in a safe order (module
    /// docs), and the layout they leave. Call [`Layout::stamp`] on it once they are executed.
    pub fn plan(&self, want: &Want, now: Instant) -> Result<(Layout, Vec<Op>), PlanError> {
        let needed = Capacity::needed(want);
        if !self.capacity.fits(needed) {
            return Err(PlanError::Exceeded { needed });
        }
        let shortage = |s: Shortage| match s {
            Shortage::Wait(d) => PlanError::Wait(d),
            Shortage::Full => PlanError::Exceeded { needed },
        };
        let mut next = self.clone();
        let mut ops = Vec::new();
        let mut retired: Vec<Extent> = Vec::new();
        let names: BTreeSet<&str> = want.vips.iter().map(|v| v.name.as_str()).collect();
        let removed: Vec<Placed> = self
            .vips
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .filter_map(|n| next.vips.remove(n))
            .collect();

        // (1) Prepare: nothing here is reachable from a `vips` entry yet.
        for w in &want.vips {
            let p = match next.vips.get_mut(&w.name) {
                Some(p) => p,
                None => {
                    let id = next.ids.alloc(1, now).map_err(shortage)?;
                    ops.push(Op::ClaimId {
                        id: id.offset,
                        name: w.name.clone(),
                    });
                    next.vips.entry(w.name.clone()).or_insert(Placed {
                        id,
                        region: None,
                        slots: Arc::new(Vec::new()),
                        healthy: BTreeSet::new(),
                        backends: BTreeSet::new(),
                    })
                }
            };
            for b in w.healthy.difference(&p.healthy) {
                ops.push(Op::Healthy {
                    id: p.id.offset,
                    backend: *b,
                });
            }
            let stale = match p.region {
                None => true,
                Some(r) => r.len != w.size || p.slots != w.slots,
            };
            if w.slots.is_empty() {
                retired.extend(p.region.take());
            } else if stale {
                let r = next.regions.alloc(w.size, now).map_err(shortage)?;
                ops.push(Op::WriteTable {
                    offset: r.offset,
                    slots: w.slots.clone(),
                });
                retired.extend(p.region.replace(r));
            }
            p.slots = w.slots.clone();
        }

        // (2) Publish: entries flip to the new tables, new VIPs appear, removed ones vanish.
        let mut keys = BTreeMap::new();
        for (key, i, fragments_only) in &want.keys {
            let Some(w) = want.vips.get(*i) else { continue };
            let Some(p) = next.vips.get(&w.name) else {
                continue;
            };
            keys.insert(
                *key,
                Meta {
                    id: p.id.offset,
                    offset: p.region.map_or(0, |r| r.offset),
                    size: if p.region.is_some() { w.size } else { 0 },
                    fragments_only: *fragments_only,
                },
            );
        }
        // Deletions first: they need no order against the rest, and the map then never holds
        // the old and the new set of keys at once.
        for key in next.keys.keys().filter(|k| !keys.contains_key(*k)) {
            ops.push(Op::RemoveKey { key: *key });
        }
        for (key, meta) in &keys {
            if next.keys.get(key) != Some(meta) {
                ops.push(Op::SetKey {
                    key: *key,
                    meta: *meta,
                });
            }
        }
        next.keys = keys;

        // (3) Retire what no entry reaches any more.
        for w in &want.vips {
            let Some(p) = next.vips.get_mut(&w.name) else {
                continue;
            };
            for b in p.healthy.difference(&w.healthy) {
                ops.push(Op::Unhealthy {
                    id: p.id.offset,
                    backend: *b,
                });
            }
            for b in p.backends.difference(&w.backends) {
                ops.push(Op::ForgetStats {
                    id: p.id.offset,
                    backend: Some(*b),
                });
            }
            p.healthy = w.healthy.clone();
            p.backends = w.backends.clone();
        }
        for p in removed {
            for b in &p.healthy {
                ops.push(Op::Unhealthy {
                    id: p.id.offset,
                    backend: *b,
                });
            }
            ops.push(Op::ForgetStats {
                id: p.id.offset,
                backend: None,
            });
            retired.extend(p.region);
            next.ids.free(p.id);
        }
        for r in retired {
            next.regions.free(r);
        }
        Ok((next, ops))
    }

    /// Starts the grace period of the regions and ids the executed plan freed.
    pub fn stamp(&mut self, now: Instant) {
        self.ids.stamp(now);
        self.regions.stamp(now);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn a(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, last)
    }

    fn key(port: u16) -> [u8; 8] {
        super::super::vip_key(Ipv4Addr::new(10, 9, 0, 10), port, 6)
    }

    /// A VIP on port `port` of size `size` whose table is `backends` repeated.
    fn vip(name: &str, size: u32, backends: &[u8]) -> WantVip {
        let slots: Vec<Ipv4Addr> = if backends.is_empty() {
            Vec::new()
        } else {
            (0..size as usize)
                .map(|i| a(backends[i % backends.len()]))
                .collect()
        };
        WantVip {
            name: name.into(),
            size,
            slots: Arc::new(slots),
            healthy: backends.iter().map(|b| a(*b)).collect(),
            backends: backends.iter().map(|b| a(*b)).collect(),
        }
    }

    fn want(vips: Vec<(WantVip, u16)>) -> Want {
        let keys = vips
            .iter()
            .enumerate()
            .map(|(i, (_, port))| (key(*port), i, false))
            .collect();
        Want {
            vips: vips.into_iter().map(|(v, _)| v).collect(),
            keys,
        }
    }

    fn cap(slots: u32) -> Capacity {
        Capacity {
            ids: 4,
            keys: 16,
            slots,
            backends: 64,
        }
    }

    /// Position of the first op matching `f`.
    fn pos(ops: &[Op], f: impl Fn(&Op) -> bool) -> usize {
        ops.iter().position(f).unwrap()
    }

    #[test]
    fn extents_first_fit_coalesce_and_wait_out_the_grace_period() {
        let t0 = Instant::now();
        let mut e = Extents::new(30);
        let x = e.alloc(10, t0).unwrap();
        let y = e.alloc(10, t0).unwrap();
        let z = e.alloc(10, t0).unwrap();
        assert_eq!((x.offset, y.offset, z.offset), (0, 10, 20));
        assert_eq!(e.alloc(1, t0), Err(Shortage::Full));
        e.free(x);
        e.free(y);
        // Freed by a plan not executed yet: waiting does not help.
        assert_eq!(e.alloc(20, t0), Err(Shortage::Full));
        e.stamp(t0);
        let t1 = t0 + Duration::from_millis(30);
        assert_eq!(
            e.alloc(20, t1),
            Err(Shortage::Wait(GRACE - Duration::from_millis(30)))
        );
        // Larger than anything that will be free: full, not wait.
        assert_eq!(e.alloc(21, t1), Err(Shortage::Full));
        // After the grace period the two neighbours merged into one run of 20.
        let w = e.alloc(20, t0 + GRACE).unwrap();
        assert_eq!(w, Extent { offset: 0, len: 20 });
        assert_eq!(e.available(), 0);
    }

    #[test]
    fn adding_a_vip_writes_its_table_before_its_key_and_keeps_the_first() {
        let t = Instant::now();
        let l = Layout::new(cap(1000));
        let one = want(vec![(vip("a", 101, &[21, 22]), 80)]);
        let (mut l, ops) = l.plan(&one, t).unwrap();
        assert_eq!(
            ops[0],
            Op::ClaimId {
                id: 0,
                name: "a".into()
            }
        );
        let write = pos(&ops, |o| matches!(o, Op::WriteTable { .. }));
        let healthy = pos(&ops, |o| matches!(o, Op::Healthy { .. }));
        let set = pos(&ops, |o| matches!(o, Op::SetKey { .. }));
        assert!(healthy < set && write < set, "{ops:?}");
        l.stamp(t);
        let a_meta = l.keys()[&key(80)];
        assert_eq!(
            a_meta,
            Meta {
                id: 0,
                offset: 0,
                size: 101,
                fragments_only: false
            }
        );

        // A second VIP: only its own operations; a's entry, table and id are untouched.
        let two = want(vec![
            (vip("a", 101, &[21, 22]), 80),
            (vip("b", 103, &[23]), 443),
        ]);
        let (l, ops) = l.plan(&two, t).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::ClaimId {
                    id: 1,
                    name: "b".into()
                },
                Op::Healthy {
                    id: 1,
                    backend: a(23)
                },
                Op::WriteTable {
                    offset: 101,
                    slots: two.vips[1].slots.clone()
                },
                Op::SetKey {
                    key: key(443),
                    meta: Meta {
                        id: 1,
                        offset: 101,
                        size: 103,
                        fragments_only: false
                    }
                },
            ]
        );
        assert_eq!(l.keys()[&key(80)], a_meta);
        assert_eq!(l.ids()["b"], 1);
        assert_eq!(l.used(), [2, 2, 204, 3]);
    }

    #[test]
    fn a_changed_table_goes_to_a_fresh_region_and_the_old_one_is_reused_after_grace() {
        let t = Instant::now();
        let (mut l, _) = Layout::new(cap(400))
            .plan(&want(vec![(vip("a", 101, &[21, 22]), 80)]), t)
            .unwrap();
        l.stamp(t);
        // gw 22 leaves the table: new table at 101, entry flipped, then 22 unmarked.
        let w = want(vec![(vip("a", 101, &[21]), 80)]);
        let (mut l, ops) = l.plan(&w, t).unwrap();
        let write = pos(&ops, |o| matches!(o, Op::WriteTable { offset: 101, .. }));
        let flip = pos(&ops, |o| {
            matches!(
                o,
                Op::SetKey {
                    meta: Meta { offset: 101, .. },
                    ..
                }
            )
        });
        let unmark = pos(&ops, |o| {
            *o == Op::Unhealthy {
                id: 0,
                backend: a(22),
            }
        });
        assert!(write < flip && flip < unmark, "{ops:?}");
        // 22 also left the configuration: its counters go.
        assert!(ops.contains(&Op::ForgetStats {
            id: 0,
            backend: Some(a(22))
        }));
        l.stamp(t);
        // Back at once: region 0 is still in its grace period, so the table goes to 202.
        let back = want(vec![(vip("a", 101, &[21, 22]), 80)]);
        let (mut l2, ops) = l.plan(&back, t + Duration::from_millis(10)).unwrap();
        assert!(ops.contains(&Op::WriteTable {
            offset: 202,
            slots: back.vips[0].slots.clone()
        }));
        l2.stamp(t + Duration::from_millis(10));
        // Later the freed region 0 is reused (first fit).
        let again = want(vec![(vip("a", 101, &[22]), 80)]);
        let (_, ops) = l2
            .plan(&again, t + GRACE + Duration::from_millis(20))
            .unwrap();
        assert!(ops.contains(&Op::WriteTable {
            offset: 0,
            slots: again.vips[0].slots.clone()
        }));
        // An unchanged table writes nothing.
        let (_, ops) = l2.plan(&back, t + GRACE * 3).unwrap();
        assert!(ops.is_empty(), "{ops:?}");
    }

    #[test]
    fn removing_a_vip_deletes_its_keys_before_freeing_and_reuses_its_id_and_region() {
        let t = Instant::now();
        let w2 = want(vec![
            (vip("a", 101, &[21]), 80),
            (vip("b", 101, &[22]), 443),
        ]);
        let (mut l, _) = Layout::new(cap(303)).plan(&w2, t).unwrap();
        l.stamp(t);
        let w1 = want(vec![(vip("a", 101, &[21]), 80)]);
        let (mut l, ops) = l.plan(&w1, t).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::RemoveKey { key: key(443) },
                Op::Unhealthy {
                    id: 1,
                    backend: a(22)
                },
                Op::ForgetStats {
                    id: 1,
                    backend: None
                },
            ]
        );
        assert_eq!(l.ids().len(), 1);
        l.stamp(t);
        // A new VIP within b's grace period does not get b's id nor b's region.
        let wc = want(vec![
            (vip("a", 101, &[21]), 80),
            (vip("c", 101, &[23]), 8080),
        ]);
        let (_, ops) = l.plan(&wc, t + Duration::from_millis(1)).unwrap();
        assert_eq!(
            ops[0],
            Op::ClaimId {
                id: 2,
                name: "c".into()
            }
        );
        assert!(ops.contains(&Op::WriteTable {
            offset: 202,
            slots: wc.vips[1].slots.clone()
        }));
        // After the grace period: b's id and region are reused.
        let (_, ops) = l.plan(&wc, t + GRACE).unwrap();
        assert_eq!(
            ops[0],
            Op::ClaimId {
                id: 1,
                name: "c".into()
            }
        );
        assert!(ops.contains(&Op::WriteTable {
            offset: 101,
            slots: wc.vips[1].slots.clone()
        }));
    }

    #[test]
    fn a_resized_table_moves_to_a_region_of_the_new_size() {
        let t = Instant::now();
        let (mut l, _) = Layout::new(cap(1000))
            .plan(&want(vec![(vip("a", 101, &[21]), 80)]), t)
            .unwrap();
        l.stamp(t);
        let w = want(vec![(vip("a", 211, &[21]), 80)]);
        let (l, ops) = l.plan(&w, t).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::WriteTable {
                    offset: 101,
                    slots: w.vips[0].slots.clone()
                },
                Op::SetKey {
                    key: key(80),
                    meta: Meta {
                        id: 0,
                        offset: 101,
                        size: 211,
                        fragments_only: false
                    }
                },
            ]
        );
        assert_eq!(l.used()[2], 211);
    }

    #[test]
    fn no_healthy_backend_points_the_key_at_nothing_and_frees_the_region() {
        let t = Instant::now();
        let (mut l, _) = Layout::new(cap(1000))
            .plan(&want(vec![(vip("a", 101, &[21]), 80)]), t)
            .unwrap();
        l.stamp(t);
        let mut down = vip("a", 101, &[]);
        down.backends.insert(a(21));
        let (l, ops) = l.plan(&want(vec![(down, 80)]), t).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::SetKey {
                    key: key(80),
                    meta: Meta {
                        id: 0,
                        offset: 0,
                        size: 0,
                        fragments_only: false
                    }
                },
                Op::Unhealthy {
                    id: 0,
                    backend: a(21)
                },
            ]
        );
        assert_eq!(l.used()[2], 0);
    }

    #[test]
    fn replaced_keys_are_deleted_before_the_new_ones_are_inserted() {
        let t = Instant::now();
        let (mut l, _) = Layout::new(cap(1000))
            .plan(&want(vec![(vip("a", 101, &[21]), 80)]), t)
            .unwrap();
        l.stamp(t);
        let (_, ops) = l.plan(&want(vec![(vip("b", 101, &[21]), 443)]), t).unwrap();
        let remove = pos(&ops, |o| *o == Op::RemoveKey { key: key(80) });
        let insert = pos(&ops, |o| matches!(o, Op::SetKey { .. }));
        let write = pos(&ops, |o| matches!(o, Op::WriteTable { .. }));
        assert!(write < remove && remove < insert, "{ops:?}");
    }

    #[test]
    fn a_port_moving_between_vips_is_flipped_not_removed() {
        let t = Instant::now();
        let w = want(vec![
            (vip("a", 101, &[21]), 80),
            (vip("b", 101, &[22]), 443),
        ]);
        let (mut l, _) = Layout::new(cap(1000)).plan(&w, t).unwrap();
        l.stamp(t);
        let moved = want(vec![
            (vip("a", 101, &[21]), 443),
            (vip("b", 101, &[22]), 80),
        ]);
        let (_, ops) = l.plan(&moved, t).unwrap();
        assert!(
            ops.iter().all(|o| matches!(o, Op::SetKey { .. })),
            "{ops:?}"
        );
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn exceeding_a_capacity_asks_for_a_reload_with_geometric_growth() {
        let t = Instant::now();
        let c = cap(250);
        let one = want(vec![(vip("a", 101, &[21]), 80)]);
        let (mut l, _) = Layout::new(c).plan(&one, t).unwrap();
        l.stamp(t);
        // Two tables of 101 plus a spare need 303 slots.
        let two = want(vec![
            (vip("a", 101, &[21]), 80),
            (vip("b", 101, &[22]), 443),
        ]);
        let err = l.plan(&two, t).unwrap_err();
        assert_eq!(
            err,
            PlanError::Exceeded {
                needed: [2, 2, 303, 2]
            }
        );
        let PlanError::Exceeded { needed } = err else {
            unreachable!()
        };
        let g = c.grown(needed);
        assert_eq!(
            g,
            Capacity {
                ids: 4,
                keys: 16,
                slots: 606,
                backends: 64
            }
        );
        assert!(g.fits(needed));
        // Reloaded with the grown capacity, the same VIPs plan from scratch.
        assert!(Layout::new(g).plan(&two, t).is_ok());
        // Too many VIP ids: ids double.
        let five: Vec<_> = (0..5u16)
            .map(|i| (vip(&format!("v{i}"), 11, &[21]), 80 + i))
            .collect();
        let PlanError::Exceeded { needed } = Layout::new(c).plan(&want(five), t).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(c.grown(needed).ids, 10);
        // Fragmentation (enough slots in total, no run long enough): the array doubles.
        assert_eq!(c.grown([1, 1, 10, 1]).slots, 500);
    }

    #[test]
    fn waiting_for_freed_space_is_not_a_capacity_problem() {
        let t = Instant::now();
        // Room for one table and a spare: a change every round reuses the region freed by the
        // round before once its grace period is over.
        let w = |b: u8| want(vec![(vip("a", 101, &[b]), 80)]);
        let (mut l, _) = Layout::new(cap(202)).plan(&w(21), t).unwrap();
        l.stamp(t);
        let (mut l, _) = l.plan(&w(22), t).unwrap();
        l.stamp(t);
        let soon = t + Duration::from_millis(40);
        assert_eq!(
            l.plan(&w(23), soon).unwrap_err(),
            PlanError::Wait(GRACE - Duration::from_millis(40))
        );
        let (_, ops) = l.plan(&w(23), t + GRACE).unwrap();
        assert!(ops.contains(&Op::WriteTable {
            offset: 0,
            slots: w(23).vips[0].slots.clone()
        }));
    }

    #[test]
    fn capacity_for_a_configuration_has_headroom_and_floors() {
        let w = want(vec![(vip("a", 65537, &[21, 22]), 80)]);
        let c = Capacity::for_want(&w);
        assert_eq!(
            c,
            Capacity {
                ids: 64,
                keys: 256,
                slots: MIN_SLOTS,
                backends: 1024
            }
        );
        assert_eq!(Capacity::needed(&w), [1, 1, 2 * 65537, 2]);
        let empty = Capacity::for_want(&Want::default());
        assert_eq!(empty.slots, MIN_SLOTS);
        // Room for a second default-size VIP without a reload.
        let two = want(vec![
            (vip("a", 65537, &[21]), 80),
            (vip("b", 65537, &[22]), 81),
        ]);
        assert!(c.fits(Capacity::needed(&two)));
    }
}
