//! The pick table of one cluster: built from the cluster's hosts and their health whenever the
//! health changes, then read by every request without locks.
//!
//! A pick is: a priority level by the levels' loads ([`super::priority`]); inside it a locality
//! by effective locality weight when the level has locality weights; inside that a host by the
//! cluster's policy among the healthy ones. The common case — one level, no locality weights —
//! costs one atomic increment (round robin) or one random number.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::maglev;
use super::priority::{FULL, effective_locality_weight, priority_loads};

/// A host as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSpec {
    /// Index of its locality group.
    pub group: usize,
    /// Weight within the group (at least 1).
    pub weight: u32,
    /// Identity hash for consistent hashing (the address's).
    pub key: u64,
}

/// A locality group as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSpec {
    /// Priority (0 first).
    pub priority: u32,
    /// Locality weight, when set.
    pub weight: Option<u32>,
}

/// How a host is chosen inside a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// In turn (weighted: at random in proportion to weights).
    RoundRobin,
    /// Uniformly (weighted) at random.
    Random,
    /// The less loaded of two random hosts.
    LeastRequest,
}

/// Healthy hosts of one locality (or one level), with what picking among them needs.
#[derive(Debug)]
struct Pool {
    hosts: Vec<u32>,
    /// Cumulative weights when the hosts' weights differ.
    cumulative: Option<Vec<u64>>,
    next: AtomicUsize,
}

impl Pool {
    fn new(hosts: Vec<u32>, specs: &[HostSpec]) -> Pool {
        let weight = |h: &u32| {
            specs
                .get(*h as usize)
                .map_or(1, |s| u64::from(s.weight.max(1)))
        };
        let uniform = hosts.windows(2).all(|w| weight(&w[0]) == weight(&w[1]));
        let cumulative = (!uniform).then(|| {
            let mut acc = 0;
            hosts
                .iter()
                .map(|h| {
                    acc += weight(h);
                    acc
                })
                .collect()
        });
        Pool {
            hosts,
            cumulative,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self, policy: Policy, roll: u64, load: &dyn Fn(usize) -> usize) -> Option<usize> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        let i = match (&self.cumulative, policy) {
            (Some(c), Policy::RoundRobin | Policy::Random) => {
                let total = c.last().copied().unwrap_or(1);
                let r = roll % total;
                c.partition_point(|x| *x <= r)
            }
            (_, Policy::RoundRobin) => self.next.fetch_add(1, Ordering::Relaxed) % n,
            (_, Policy::Random) => (roll % n as u64) as usize,
            (_, Policy::LeastRequest) => {
                // Power of two choices: nearly as good as a full scan, O(1), no herding.
                let a = (roll % n as u64) as usize;
                let b = ((roll >> 32) % n as u64) as usize;
                let host = |i: usize| self.hosts.get(i).map_or(0, |h| *h as usize);
                if load(host(b)) < load(host(a)) { b } else { a }
            }
        };
        self.hosts.get(i).map(|h| *h as usize)
    }
}

#[derive(Debug)]
struct Level {
    /// Every healthy host of the level (used without locality weights).
    all: Pool,
    /// Locality pools and cumulative effective weights, when locality-weighted.
    localities: Vec<Pool>,
    locality_cumulative: Vec<u64>,
    /// Maglev table over `all`, for consistent hashing.
    maglev: Vec<u32>,
}

/// The pick table of one cluster at one health state.
#[derive(Debug)]
pub struct Table {
    levels: Vec<Level>,
    /// Cumulative priority loads (millionths).
    level_cumulative: Vec<u64>,
    healthy: usize,
}

impl Table {
    /// Builds the table; `healthy(i)` says whether host `i` may take traffic. `maglev` builds
    /// the consistent-hash tables too.
    pub fn build(
        hosts: &[HostSpec],
        groups: &[GroupSpec],
        healthy: &dyn Fn(usize) -> bool,
        maglev: bool,
    ) -> Table {
        let mut priorities: Vec<u32> = groups.iter().map(|g| g.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let mut levels = Vec::new();
        let mut counts = Vec::new();
        let mut healthy_total = 0;
        for p in &priorities {
            let in_level = |h: &HostSpec| groups.get(h.group).is_some_and(|g| g.priority == *p);
            let total = hosts.iter().filter(|h| in_level(h)).count() as u64;
            let ok: Vec<u32> = (0..hosts.len())
                .filter(|i| in_level(&hosts[*i]) && healthy(*i))
                .map(|i| i as u32)
                .collect();
            healthy_total += ok.len();
            counts.push((ok.len() as u64, total));
            let weighted = groups
                .iter()
                .any(|g| g.priority == *p && g.weight.is_some());
            let mut localities = Vec::new();
            let mut locality_cumulative = Vec::new();
            if weighted {
                let mut acc = 0;
                for (gi, g) in groups.iter().enumerate() {
                    if g.priority != *p {
                        continue;
                    }
                    let members = || hosts.iter().filter(|h| h.group == gi);
                    let g_total = members().count() as u64;
                    let g_ok: Vec<u32> = ok
                        .iter()
                        .copied()
                        .filter(|i| hosts[*i as usize].group == gi)
                        .collect();
                    acc += effective_locality_weight(
                        g.weight.unwrap_or(0),
                        g_ok.len() as u64,
                        g_total,
                    );
                    locality_cumulative.push(acc);
                    localities.push(Pool::new(g_ok, hosts));
                }
            }
            let maglev_table = if maglev {
                let keys: Vec<u64> = ok.iter().map(|i| hosts[*i as usize].key).collect();
                maglev::build(&keys)
            } else {
                Vec::new()
            };
            levels.push(Level {
                all: Pool::new(ok, hosts),
                localities,
                locality_cumulative,
                maglev: maglev_table,
            });
        }
        let mut acc = 0;
        let level_cumulative = priority_loads(&counts)
            .into_iter()
            .map(|l| {
                acc += l;
                acc
            })
            .collect();
        Table {
            levels,
            level_cumulative,
            healthy: healthy_total,
        }
    }

    /// Healthy hosts in the table.
    pub fn healthy(&self) -> usize {
        self.healthy
    }

    fn level(&self, roll: u64) -> Option<&Level> {
        if self.healthy == 0 {
            return None;
        }
        if self.levels.len() == 1 {
            return self.levels.first();
        }
        let r = roll % FULL;
        let i = self.level_cumulative.partition_point(|c| *c <= r);
        self.levels.get(i)
    }

    /// Picks a host; `rng` gives random numbers, `load(i)` the requests in flight on host `i`
    /// (least request). `None` when no host is healthy.
    pub fn pick(
        &self,
        policy: Policy,
        rng: &mut dyn FnMut() -> u64,
        load: &dyn Fn(usize) -> usize,
    ) -> Option<usize> {
        let level = self.level(if self.levels.len() > 1 { rng() } else { 0 })?;
        if level.localities.is_empty() {
            let roll = if policy == Policy::RoundRobin && level.all.cumulative.is_none() {
                0
            } else {
                rng()
            };
            return level.all.pick(policy, roll, load);
        }
        let total = level.locality_cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            // Weighted localities but every weighted one is down: any healthy host of the level.
            return level.all.pick(policy, rng(), load);
        }
        let r = rng() % total;
        let i = level.locality_cumulative.partition_point(|c| *c <= r);
        level.localities.get(i)?.pick(policy, rng(), load)
    }

    /// Picks a host for a consistent-hash key: the level by the key too, so a key stays on
    /// its host while health is unchanged.
    pub fn pick_hash(&self, key_hash: u64) -> Option<usize> {
        let level = self.level(maglev::mix(key_hash))?;
        let slot = maglev::lookup(&level.maglev, key_hash)?;
        level.all.hosts.get(slot).map(|h| *h as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(groups: &[usize]) -> Vec<HostSpec> {
        groups
            .iter()
            .enumerate()
            .map(|(i, g)| HostSpec {
                group: *g,
                weight: 1,
                key: maglev::hash(&i.to_le_bytes()),
            })
            .collect()
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = maglev::mix(self.0.wrapping_add(0x9e37_79b9_7f4a_7c15));
            self.0
        }
    }

    fn spread(t: &Table, n: usize, hosts: usize, policy: Policy) -> Vec<usize> {
        let mut rng = Rng(1);
        let mut counts = vec![0; hosts];
        for _ in 0..n {
            if let Some(h) = t.pick(policy, &mut || rng.next(), &|_| 0) {
                counts[h] += 1;
            }
        }
        counts
    }

    #[test]
    fn round_robin_alternates_over_healthy_hosts() {
        let h = hosts(&[0, 0, 0]);
        let g = [GroupSpec {
            priority: 0,
            weight: None,
        }];
        let t = Table::build(&h, &g, &|i| i != 1, false);
        assert_eq!(spread(&t, 10, 3, Policy::RoundRobin), [5, 0, 5]);
        let none = Table::build(&h, &g, &|_| false, false);
        assert_eq!(none.pick(Policy::RoundRobin, &mut || 0, &|_| 0), None);
    }

    #[test]
    fn distribute_99_1_and_failover_when_a_locality_dies() {
        // us-west-a, us-west-b, us-east-a with Istio's distribute weights (×1000).
        let h = hosts(&[0, 1, 2]);
        let g = [
            GroupSpec {
                priority: 0,
                weight: Some(49_500),
            },
            GroupSpec {
                priority: 0,
                weight: Some(49_500),
            },
            GroupSpec {
                priority: 0,
                weight: Some(1_000),
            },
        ];
        let t = Table::build(&h, &g, &|_| true, false);
        let c = spread(&t, 100_000, 3, Policy::RoundRobin);
        assert!((800..1200).contains(&c[2]), "{c:?}");
        let west_down = Table::build(&h, &g, &|i| i == 2, false);
        assert_eq!(
            spread(&west_down, 1000, 3, Policy::RoundRobin),
            [0, 0, 1000]
        );
    }

    #[test]
    fn priorities_spill_by_health() {
        // Priority 0: four hosts, two healthy → 70%; priority 1 takes 30%.
        let h = hosts(&[0, 0, 0, 0, 1, 1]);
        let g = [
            GroupSpec {
                priority: 0,
                weight: None,
            },
            GroupSpec {
                priority: 1,
                weight: None,
            },
        ];
        let t = Table::build(&h, &g, &|i| i != 0 && i != 1, false);
        let c = spread(&t, 100_000, 6, Policy::Random);
        let p1 = c[4] + c[5];
        assert!((28_500..31_500).contains(&p1), "{c:?}");
        assert_eq!(c[0] + c[1], 0);
    }

    #[test]
    fn weights_inside_a_pool() {
        let mut h = hosts(&[0, 0]);
        h[0].weight = 3;
        let g = [GroupSpec {
            priority: 0,
            weight: None,
        }];
        let t = Table::build(&h, &g, &|_| true, false);
        let c = spread(&t, 40_000, 2, Policy::RoundRobin);
        assert!((29_000..31_000).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn least_request_prefers_the_idle_host() {
        let h = hosts(&[0, 0]);
        let g = [GroupSpec {
            priority: 0,
            weight: None,
        }];
        let t = Table::build(&h, &g, &|_| true, false);
        let mut rng = Rng(7);
        let mut zero = 0;
        for _ in 0..1000 {
            let p = t.pick(Policy::LeastRequest, &mut || rng.next(), &|i| {
                if i == 0 { 10 } else { 0 }
            });
            zero += usize::from(p == Some(0));
        }
        // Host 0 only wins when both choices land on it (~25%).
        assert!(zero < 350, "{zero}");
    }

    #[test]
    fn hashing_is_sticky_and_follows_health() {
        let h = hosts(&[0, 0, 0, 0]);
        let g = [GroupSpec {
            priority: 0,
            weight: None,
        }];
        let t = Table::build(&h, &g, &|_| true, true);
        let key = maglev::hash(b"session-42");
        let first = t.pick_hash(key);
        assert!(first.is_some());
        for _ in 0..100 {
            assert_eq!(t.pick_hash(key), first);
        }
        let Some(f) = first else { return };
        let without = Table::build(&h, &g, &|i| i != f, true);
        let moved = without.pick_hash(key);
        assert!(moved.is_some() && moved != first);
    }
}
