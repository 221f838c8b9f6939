//! The forwarding decision: which backend a packet to a VIP goes to.
//!
//! [`Tables`] is the read-only snapshot the data path uses (VIP lookup, one Maglev table per VIP
//! built from its healthy backends); the control loop builds a new one on every configuration
//! or health change and swaps it in. [`pick`] combines it with the connection tracking table.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::time::Instant;

use crate::config::{Backend, Vip};
use crate::conntrack::Conntrack;
use crate::flow::FlowKey;
use crate::health::Target;
use crate::maglev;

/// One VIP's forwarding state.
#[derive(Debug, Clone)]
pub struct VipTable {
    /// The VIP's name (metrics).
    pub name: String,
    /// Its index in the configuration (metrics and counters).
    pub index: usize,
    /// Maglev over the healthy backends.
    pub table: maglev::Table,
    /// The healthy backends (those in the table).
    pub healthy: BTreeSet<Ipv4Addr>,
    /// All configured backends.
    pub backends: Vec<Backend>,
}

/// The data path's view: VIP lookup and Maglev tables.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    by_port: HashMap<(Ipv4Addr, u8, u16), usize>,
    any_port: HashMap<(Ipv4Addr, u8), usize>,
    /// Per VIP, in configuration order.
    pub vips: Vec<VipTable>,
    /// Which configuration the tables were built from (the balancer counts its configuration
    /// changes; 0 for tables built outside it), so a reader can pair them with that
    /// configuration.
    pub generation: u64,
}

impl Tables {
    /// Builds the tables for `vips`, putting into each Maglev table only the backends for which
    /// `healthy(vip, backend)` holds.
    pub fn build(vips: &[Vip], healthy: impl Fn(&Vip, &Backend) -> bool) -> Tables {
        let mut t = Tables::default();
        for (i, v) in vips.iter().enumerate() {
            let up: Vec<Backend> = v
                .backends
                .iter()
                .copied()
                .filter(|b| healthy(v, b))
                .collect();
            t.vips.push(VipTable {
                name: v.name.clone(),
                index: i,
                table: maglev::Table::build(&up, v.table_size),
                healthy: up.iter().map(|b| b.address).collect(),
                backends: v.backends.clone(),
            });
            let proto = v.protocol.number();
            if v.ports.is_empty() {
                t.any_port.insert((v.address, proto), i);
            } else {
                for p in &v.ports {
                    t.by_port.insert((v.address, proto, *p), i);
                }
            }
        }
        t
    }

    /// The VIP a flow is addressed to. Packets without ports (fragments after the first) match
    /// any VIP on their address and protocol.
    pub fn lookup(&self, key: &FlowKey) -> Option<&VipTable> {
        let i = self
            .by_port
            .get(&(key.dst, key.protocol, key.dst_port))
            .or_else(|| self.any_port.get(&(key.dst, key.protocol)))
            .copied()
            .or_else(|| {
                if key.dst_port == 0 {
                    self.by_port
                        .iter()
                        .find(|((a, p, _), _)| *a == key.dst && *p == key.protocol)
                        .map(|(_, i)| *i)
                } else {
                    None
                }
            })?;
        self.vips.get(i)
    }

    /// Per VIP address: whether any VIP on it has a healthy backend (what BGP announces).
    pub fn announce(&self, vips: &[Vip]) -> BTreeMap<Ipv4Addr, bool> {
        let mut out = BTreeMap::new();
        for (v, t) in vips.iter().zip(&self.vips) {
            *out.entry(v.address).or_insert(false) |= !t.healthy.is_empty();
        }
        out
    }
}

/// The health targets a configuration needs probed (one per backend address and check).
pub fn targets(vips: &[Vip]) -> BTreeSet<Target> {
    vips.iter()
        .flat_map(|v| {
            v.backends.iter().map(|b| Target {
                address: b.address,
                check: v.health_check.clone(),
            })
        })
        .collect()
}

/// The outcome for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Encapsulate to this backend.
    Forward {
        /// Index of the VIP in the configuration.
        vip: usize,
        /// The chosen backend.
        backend: Ipv4Addr,
        /// Whether the flow was new (or re-hashed) rather than found in conntrack.
        new_flow: bool,
    },
    /// Addressed to a VIP with no healthy backend: drop.
    NoBackend {
        /// Index of the VIP.
        vip: usize,
    },
    /// Not addressed to any VIP.
    NotVip,
}

/// Picks the backend of a packet with flow `key`: the tracked backend while it is healthy,
/// otherwise Maglev's choice (recorded in conntrack).
pub fn pick(tables: &Tables, ct: &mut Conntrack, key: &FlowKey, now: Instant) -> Decision {
    let Some(v) = tables.lookup(key) else {
        return Decision::NotVip;
    };
    if let Some(b) = ct.get(key, now)
        && v.healthy.contains(&b)
    {
        return Decision::Forward {
            vip: v.index,
            backend: b,
            new_flow: false,
        };
    }
    match v.table.lookup(key.hash()) {
        Some(b) => {
            ct.insert(*key, b.address, now);
            Decision::Forward {
                vip: v.index,
                backend: b.address,
                new_flow: true,
            }
        }
        None => {
            ct.remove(key);
            Decision::NoBackend { vip: v.index }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthCheck, Protocol};
    use std::time::Duration;

    fn vip(name: &str, last: u8, ports: Vec<u16>, n: u8) -> Vip {
        Vip {
            name: name.into(),
            address: Ipv4Addr::new(10, 9, 0, last),
            protocol: Protocol::Tcp,
            ports,
            backends: (1..=n)
                .map(|i| Backend {
                    address: Ipv4Addr::new(10, 1, 0, 20 + i),
                    weight: 1,
                })
                .collect(),
            health_check: HealthCheck::default(),
            table_size: 65_537,
        }
    }

    fn key(vip: u8, sport: u16, dport: u16) -> FlowKey {
        FlowKey {
            src: Ipv4Addr::new(10, 2, 0, 2),
            dst: Ipv4Addr::new(10, 9, 0, vip),
            src_port: sport,
            dst_port: dport,
            protocol: 6,
        }
    }

    fn ct() -> Conntrack {
        Conntrack::new(100_000, Duration::from_secs(60))
    }

    #[test]
    fn vip_lookup() {
        let vips = vec![vip("web", 10, vec![80, 443], 3), vip("all", 11, vec![], 2)];
        let t = Tables::build(&vips, |_, _| true);
        assert_eq!(t.lookup(&key(10, 1, 80)).unwrap().name, "web");
        assert_eq!(t.lookup(&key(10, 1, 443)).unwrap().name, "web");
        assert!(t.lookup(&key(10, 1, 8080)).is_none());
        assert_eq!(t.lookup(&key(11, 1, 9999)).unwrap().name, "all");
        assert!(t.lookup(&key(12, 1, 80)).is_none());
        let mut udp = key(10, 1, 80);
        udp.protocol = 17;
        assert!(t.lookup(&udp).is_none());
        // A later fragment (no ports) still finds the VIP.
        assert_eq!(t.lookup(&key(10, 0, 0)).unwrap().name, "web");
    }

    #[test]
    fn flows_stick_while_healthy_and_move_when_not() {
        let vips = vec![vip("web", 10, vec![80], 3)];
        let all = Tables::build(&vips, |_, _| true);
        let mut c = ct();
        let now = Instant::now();
        let mut chosen = Vec::new();
        for sport in 0..3000 {
            let Decision::Forward {
                backend, new_flow, ..
            } = pick(&all, &mut c, &key(10, sport, 80), now)
            else {
                panic!()
            };
            assert!(new_flow);
            chosen.push(backend);
        }
        // Same answers from conntrack.
        for sport in 0..3000u16 {
            let d = pick(&all, &mut c, &key(10, sport, 80), now);
            assert_eq!(
                d,
                Decision::Forward {
                    vip: 0,
                    backend: chosen[usize::from(sport)],
                    new_flow: false
                }
            );
        }
        // gw 10.1.0.22 goes down: its flows move, the others stay.
        let down = Ipv4Addr::new(10, 1, 0, 22);
        let less = Tables::build(&vips, |_, b| b.address != down);
        for sport in 0..3000u16 {
            let Decision::Forward {
                backend, new_flow, ..
            } = pick(&less, &mut c, &key(10, sport, 80), now)
            else {
                panic!()
            };
            assert_ne!(backend, down);
            let before = chosen[usize::from(sport)];
            if before == down {
                assert!(new_flow);
            } else {
                assert_eq!(backend, before);
                assert!(!new_flow);
            }
        }
        // It comes back: tracked flows stay where they are now (no second move).
        let mut c2 = ct();
        let first: Vec<Decision> = (0..3000u16)
            .map(|s| pick(&less, &mut c2, &key(10, s, 80), now))
            .collect();
        for s in 0..3000u16 {
            let d = pick(&all, &mut c2, &key(10, s, 80), now);
            let (Decision::Forward { backend: a, .. }, Decision::Forward { backend: b, .. }) =
                (first[usize::from(s)], d)
            else {
                panic!()
            };
            assert_eq!(a, b);
        }
    }

    #[test]
    fn two_balancers_agree_without_sharing_state() {
        let vips = vec![vip("web", 10, vec![80], 5)];
        let mut reordered = vips.clone();
        reordered[0].backends.reverse();
        let t1 = Tables::build(&vips, |_, _| true);
        let t2 = Tables::build(&reordered, |_, _| true);
        let (mut c1, mut c2) = (ct(), ct());
        let now = Instant::now();
        for s in 0..5000 {
            let k = key(10, s, 80);
            assert_eq!(pick(&t1, &mut c1, &k, now), pick(&t2, &mut c2, &k, now));
        }
    }

    #[test]
    fn no_healthy_backend() {
        let vips = vec![vip("web", 10, vec![80], 2)];
        let none = Tables::build(&vips, |_, _| false);
        let mut c = ct();
        assert_eq!(
            pick(&none, &mut c, &key(10, 1, 80), Instant::now()),
            Decision::NoBackend { vip: 0 }
        );
        assert_eq!(
            pick(&none, &mut c, &key(99, 1, 80), Instant::now()),
            Decision::NotVip
        );
        assert!(c.is_empty());
    }

    #[test]
    fn announcements_follow_health() {
        let vips = vec![
            vip("a", 10, vec![80], 2),
            vip("b", 10, vec![443], 2),
            vip("c", 11, vec![80], 1),
        ];
        let t = Tables::build(&vips, |v, _| v.name == "b");
        let a = t.announce(&vips);
        assert!(a[&Ipv4Addr::new(10, 9, 0, 10)]);
        assert!(!a[&Ipv4Addr::new(10, 9, 0, 11)]);
    }

    #[test]
    fn targets_are_deduplicated() {
        let vips = vec![vip("a", 10, vec![80], 3), vip("b", 11, vec![80], 3)];
        // Same backends, same check: one prober each.
        assert_eq!(targets(&vips).len(), 3);
    }
}
