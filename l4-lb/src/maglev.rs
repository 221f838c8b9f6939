//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
//!
//! Every balancer builds the same lookup table from the same backends, whatever order they were
//! listed in: backends are sorted by address first, and the hashes are fixed functions of the
//! address bytes (no per-process seed). So routers may spread a flow's packets over any number
//! of balancers (ECMP) and they all pick the same gateway without sharing state.
//!
//! Weights follow the weighted-Maglev population of Katran: in each round, every backend earns
//! its weight in credit and claims one preferred slot per `max_weight` of credit, so slot shares
//! are proportional to the weights.

use std::net::Ipv4Addr;

use crate::config::Backend;
use crate::hash;

/// A built Maglev lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The backends, sorted by address; table entries index into this.
    backends: Vec<Backend>,
    /// `size` entries, each an index into `backends`; empty when there are no backends.
    entries: Vec<u32>,
}

impl Table {
    /// Builds the table of `size` entries (a prime; see [`crate::config::is_prime`]) for
    /// `backends`. Backends with weight 0 get no entries.
    pub fn build(backends: &[Backend], size: u32) -> Table {
        let mut sorted: Vec<Backend> = backends.iter().copied().filter(|b| b.weight > 0).collect();
        sorted.sort_by_key(|b| b.address);
        sorted.dedup_by_key(|b| b.address);
        let m = size as usize;
        if sorted.is_empty() || m == 0 {
            return Table {
                backends: sorted,
                entries: Vec::new(),
            };
        }
        let n = sorted.len();
        // Permutation of backend i: offset + j * skip (mod m), with skip in 1..m so that every
        // slot is visited (m prime).
        let perm: Vec<(u64, u64)> = sorted
            .iter()
            .map(|b| {
                let bytes = b.address.octets();
                let offset = hash::hash64(&bytes, hash::SEED_OFFSET) % size as u64;
                let skip = hash::hash64(&bytes, hash::SEED_SKIP) % (size as u64 - 1).max(1) + 1;
                (offset, skip)
            })
            .collect();
        let max_weight = sorted
            .iter()
            .map(|b| u64::from(b.weight))
            .max()
            .unwrap_or(1);
        let mut next = vec![0u64; n];
        let mut credit = vec![0u64; n];
        let mut entries = vec![u32::MAX; m];
        let mut filled = 0usize;
        'fill: loop {
            for i in 0..n {
                credit[i] += u64::from(sorted[i].weight);
                while credit[i] >= max_weight {
                    credit[i] -= max_weight;
                    let (offset, skip) = perm[i];
                    // Next preferred slot that is still free.
                    let mut c = ((offset + next[i] * skip) % size as u64) as usize;
                    while entries[c] != u32::MAX {
                        next[i] += 1;
                        c = ((offset + next[i] * skip) % size as u64) as usize;
                    }
                    entries[c] = i as u32;
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'fill;
                    }
                }
            }
        }
        Table {
            backends: sorted,
            entries,
        }
    }

    /// The backend for a flow hash, or `None` when the table has no backends.
    pub fn lookup(&self, flow_hash: u64) -> Option<Backend> {
        if self.entries.is_empty() {
            return None;
        }
        let slot = (flow_hash % self.entries.len() as u64) as usize;
        self.entries
            .get(slot)
            .and_then(|&i| self.backends.get(i as usize))
            .copied()
    }

    /// The backends in the table, sorted by address.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The raw entries (indexes into [`Table::backends`]), e.g. for a BPF map.
    pub fn entries(&self) -> &[u32] {
        &self.entries
    }

    /// How many entries each backend owns, in [`Table::backends`] order.
    pub fn shares(&self) -> Vec<usize> {
        let mut out = vec![0; self.backends.len()];
        for &e in &self.entries {
            if let Some(s) = out.get_mut(e as usize) {
                *s += 1;
            }
        }
        out
    }

    /// The address at each slot (for comparing two tables).
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.entries
            .iter()
            .filter_map(|&i| self.backends.get(i as usize).map(|b| b.address))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowKey;

    fn backends(n: u8) -> Vec<Backend> {
        (1..=n)
            .map(|i| Backend {
                address: Ipv4Addr::new(10, 1, 0, i),
                weight: 1,
            })
            .collect()
    }

    fn flows(n: u32) -> Vec<FlowKey> {
        (0..n)
            .map(|i| FlowKey {
                src: Ipv4Addr::from(0x0a02_0000 + i / 50_000),
                dst: Ipv4Addr::new(10, 9, 0, 10),
                src_port: (1024 + i % 50_000) as u16,
                dst_port: 80,
                protocol: 6,
            })
            .collect()
    }

    #[test]
    fn every_slot_is_filled_and_shares_are_even() {
        let t = Table::build(&backends(5), 65_537);
        assert_eq!(t.entries().len(), 65_537);
        assert!(t.entries().iter().all(|&e| e < 5));
        for s in t.shares() {
            let ideal = 65_537.0 / 5.0;
            assert!((s as f64 - ideal).abs() / ideal < 0.02, "{:?}", t.shares());
        }
    }

    #[test]
    fn weights_give_proportional_shares() {
        let mut b = backends(3);
        b[0].weight = 1;
        b[1].weight = 2;
        b[2].weight = 5;
        let t = Table::build(&b, 65_537);
        let shares = t.shares();
        let total: usize = shares.iter().sum();
        for (s, w) in shares.iter().zip([1.0, 2.0, 5.0]) {
            let ideal = total as f64 * w / 8.0;
            assert!((*s as f64 - ideal).abs() / ideal < 0.02, "{shares:?}");
        }
    }

    #[test]
    fn order_does_not_matter_and_builds_are_identical() {
        let mut b = backends(7);
        let t1 = Table::build(&b, 65_537);
        b.reverse();
        let t2 = Table::build(&b, 65_537);
        assert_eq!(t1, t2);
        // And a fixed point, so a change of hash function (which would break mixed-version
        // fleets behind ECMP) cannot go unnoticed.
        let first: Vec<u32> = t1.entries()[..8].to_vec();
        assert_eq!(first, FIRST_ENTRIES, "the Maglev table changed: {first:?}");
    }

    /// The first slots of the 7-backend table above.
    const FIRST_ENTRIES: [u32; 8] = [4, 4, 1, 6, 4, 4, 4, 4];

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [3u8, 5, 10] {
            let all = backends(n);
            let before = Table::build(&all, 65_537);
            let removed = all[1].address;
            let rest: Vec<Backend> = all
                .iter()
                .copied()
                .filter(|b| b.address != removed)
                .collect();
            let after = Table::build(&rest, 65_537);
            let fl = flows(100_000);
            let mut moved = 0usize;
            let mut moved_from_others = 0usize;
            for f in &fl {
                let h = f.hash();
                let (Some(a), Some(b)) = (before.lookup(h), after.lookup(h)) else {
                    panic!("empty table")
                };
                assert_ne!(b.address, removed);
                if a.address != b.address {
                    moved += 1;
                    if a.address != removed {
                        moved_from_others += 1;
                    }
                }
            }
            let share = moved as f64 / fl.len() as f64;
            let ideal = 1.0 / f64::from(n);
            // Maglev's promise: about 1/N moves (the removed backend's flows), plus a little
            // churn among the others.
            assert!(
                (share - ideal).abs() < ideal * 0.15 + 0.01,
                "n={n}: moved {share:.4}, ideal {ideal:.4}"
            );
            assert!(
                (moved_from_others as f64 / fl.len() as f64) < 0.03,
                "n={n}: {moved_from_others} flows of healthy backends moved"
            );
        }
    }

    #[test]
    fn adding_back_restores_the_table() {
        let all = backends(4);
        let t1 = Table::build(&all, 251);
        let _ = Table::build(&all[1..], 251);
        assert_eq!(Table::build(&all, 251), t1);
    }

    #[test]
    fn flows_spread_within_expected_balance() {
        let t = Table::build(&backends(3), 65_537);
        let mut counts = [0usize; 3];
        for f in flows(1000) {
            let b = t.lookup(f.hash()).unwrap();
            counts[usize::from(b.address.octets()[3] - 1)] += 1;
        }
        // 1000 flows over 3 backends: a binomial with σ ≈ 15; allow 5σ.
        for c in counts {
            assert!((c as i64 - 333).abs() < 75, "{counts:?}");
        }
    }

    #[test]
    fn empty_and_zero_weight() {
        let t = Table::build(&[], 251);
        assert_eq!(t.lookup(1), None);
        let mut b = backends(2);
        b[0].weight = 0;
        let t = Table::build(&b, 251);
        assert_eq!(t.backends().len(), 1);
        assert!(t.addresses().iter().all(|a| *a == b[1].address));
    }

    #[test]
    fn single_backend_owns_everything() {
        let t = Table::build(&backends(1), 7);
        assert_eq!(t.entries(), [0; 7]);
    }
}
