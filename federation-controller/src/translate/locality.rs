//! Locality load balancing as Istio computes it, for one caller locality: which priority each
//! endpoint locality gets (failover) and which weight (distribute).
//!
//! The controller does this, not the proxies: every proxy of a cluster shares the cluster's
//! locality, so one computation per (cluster, service) serves them all, and Envoy sidecars and
//! our gateways receive ready-made priorities and weights (Envoy's `LocalityLbEndpoints`).
//!
//! - **Failover** (the default): priority 0 for the caller's own region/zone/subzone, 1 for its
//!   region and zone, 2 for its region, then the regions its `failover` rules name (in rule
//!   order), then everything else. Priorities are compacted (no gaps), as Envoy expects.
//! - **Distribute**: the first rule whose `from` matches the caller gives percentages per target
//!   pattern; a pattern's percentage is split over the localities it matches in proportion to
//!   their endpoints (Istio's rule). Localities no pattern matches get no traffic. All at
//!   priority 0.
//! - `enabled: false`: one priority, no weights.

use std::collections::BTreeMap;

use causeway_crds::v1alpha1::{Locality, LocalityPolicy};

/// How a caller treats one endpoint locality.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// 0 is used first; higher priorities take traffic as lower ones become unhealthy.
    pub priority: u32,
    /// Locality load-balancing weight (distribute), relative within the priority.
    pub weight: Option<u32>,
}

/// Whether `pattern` (`us-west`, `us-west/*`, `us-west/us-west-a/*`, `*`) matches `l`.
pub fn pattern_matches(pattern: &str, l: &Locality) -> bool {
    let parts = [
        l.region.as_str(),
        l.zone.as_deref().unwrap_or_default(),
        l.subzone.as_deref().unwrap_or_default(),
    ];
    for (i, p) in pattern.split('/').enumerate() {
        if p == "*" {
            return true;
        }
        match parts.get(i) {
            Some(part) if *part == p => {}
            _ => return false,
        }
    }
    true
}

/// The assignment of each endpoint locality (given with its endpoint count) for a caller at
/// `from`; `None` means the locality gets no traffic from this caller.
pub fn assign(
    from: &Locality,
    targets: &[(Locality, usize)],
    policy: Option<&LocalityPolicy>,
) -> Vec<Option<Assignment>> {
    if policy.and_then(|p| p.enabled) == Some(false) {
        return targets
            .iter()
            .map(|_| {
                Some(Assignment {
                    priority: 0,
                    weight: None,
                })
            })
            .collect();
    }
    if let Some(rule) =
        policy.and_then(|p| p.distribute.iter().find(|d| pattern_matches(&d.from, from)))
    {
        return distribute(targets, &rule.to);
    }
    failover(from, targets, policy)
}

fn distribute(
    targets: &[(Locality, usize)],
    to: &BTreeMap<String, u32>,
) -> Vec<Option<Assignment>> {
    // The most specific pattern that matches a locality claims it, so "us-west/us-west-a" beats
    // "us-west/*" whatever the map order.
    let claim = |l: &Locality| {
        to.keys()
            .filter(|p| pattern_matches(p, l))
            .max_by_key(|p| (p.split('/').filter(|x| *x != "*").count(), p.len()))
            .cloned()
    };
    let claims: Vec<Option<String>> = targets.iter().map(|(l, _)| claim(l)).collect();
    let mut endpoints_per_pattern: BTreeMap<&str, usize> = BTreeMap::new();
    for (c, (_, n)) in claims.iter().zip(targets) {
        if let Some(p) = c {
            *endpoints_per_pattern.entry(p.as_str()).or_default() += n;
        }
    }
    claims
        .iter()
        .zip(targets)
        .map(|(c, (_, n))| {
            let p = c.as_deref()?;
            let percent = u64::from(*to.get(p)?);
            let total = *endpoints_per_pattern.get(p)? as u64;
            if percent == 0 || total == 0 || *n == 0 {
                return None;
            }
            // Scaled by 1000 so a 1% share split over several localities stays above zero.
            let w = (percent * 1000 * *n as u64 / total).max(1);
            Some(Assignment {
                priority: 0,
                weight: Some(u32::try_from(w).unwrap_or(u32::MAX)),
            })
        })
        .collect()
}

fn failover(
    from: &Locality,
    targets: &[(Locality, usize)],
    policy: Option<&LocalityPolicy>,
) -> Vec<Option<Assignment>> {
    let failover_regions: Vec<&str> = policy
        .map(|p| {
            p.failover
                .iter()
                .filter(|f| f.from == from.region)
                .map(|f| f.to.as_str())
                .collect()
        })
        .unwrap_or_default();
    let same = |a: &Option<String>, b: &Option<String>| {
        a.as_deref().unwrap_or_default() == b.as_deref().unwrap_or_default()
    };
    let raw: Vec<u32> = targets
        .iter()
        .map(|(l, _)| {
            if l.region == from.region {
                if same(&l.zone, &from.zone) {
                    if same(&l.subzone, &from.subzone) {
                        0
                    } else {
                        1
                    }
                } else {
                    2
                }
            } else if let Some(i) = failover_regions.iter().position(|r| *r == l.region) {
                3 + u32::try_from(i).unwrap_or(0)
            } else {
                3 + u32::try_from(failover_regions.len()).unwrap_or(0)
            }
        })
        .collect();
    // Compact: Envoy wants priorities 0..N without gaps.
    let mut levels: Vec<u32> = raw.clone();
    levels.sort_unstable();
    levels.dedup();
    raw.iter()
        .map(|r| {
            Some(Assignment {
                priority: u32::try_from(levels.iter().position(|l| l == r).unwrap_or(0))
                    .unwrap_or(0),
                weight: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use causeway_crds::v1alpha1::{LocalityDistribute, LocalityFailover};

    fn loc(s: &str) -> Locality {
        let mut p = s.split('/');
        Locality {
            region: p.next().unwrap().to_owned(),
            zone: p.next().map(str::to_owned),
            subzone: p.next().map(str::to_owned),
        }
    }

    fn prio(a: &[Option<Assignment>]) -> Vec<Option<u32>> {
        a.iter().map(|x| x.map(|x| x.priority)).collect()
    }

    fn weights(a: &[Option<Assignment>]) -> Vec<Option<u32>> {
        a.iter().map(|x| x.and_then(|x| x.weight)).collect()
    }

    #[test]
    fn patterns() {
        let l = loc("us-west/us-west-a");
        for (p, want) in [
            ("*", true),
            ("us-west", true),
            ("us-west/*", true),
            ("us-west/us-west-a", true),
            ("us-west/us-west-a/*", true),
            ("us-west/us-west-b", false),
            ("us-east/*", false),
        ] {
            assert_eq!(pattern_matches(p, &l), want, "{p}");
        }
    }

    #[test]
    fn default_failover_prefers_zone_then_region_then_the_rest() {
        let targets = [
            (loc("us-east/us-east-a"), 1),
            (loc("us-west/us-west-b"), 1),
            (loc("us-west/us-west-a"), 2),
        ];
        let a = assign(&loc("us-west/us-west-a"), &targets, None);
        assert_eq!(prio(&a), [Some(2), Some(1), Some(0)]);
        assert_eq!(weights(&a), [None, None, None]);
    }

    #[test]
    fn failover_rules_order_the_other_regions() {
        let policy = LocalityPolicy {
            failover: vec![LocalityFailover {
                from: "us-west".into(),
                to: "eu-west".into(),
            }],
            ..Default::default()
        };
        let targets = [
            (loc("us-east/a"), 1),
            (loc("eu-west/a"), 1),
            (loc("us-west/b"), 1),
        ];
        let a = assign(&loc("us-west/a"), &targets, Some(&policy));
        // us-west/b: region match (after zone levels that are absent, compacted to 0).
        assert_eq!(prio(&a), [Some(2), Some(1), Some(0)]);
    }

    #[test]
    fn distribute_99_1_splits_by_endpoints_within_a_pattern() {
        let policy = LocalityPolicy {
            distribute: vec![LocalityDistribute {
                from: "us-west/*".into(),
                to: [("us-west/*".to_owned(), 99), ("us-east/*".to_owned(), 1)].into(),
            }],
            ..Default::default()
        };
        let targets = [
            (loc("us-west/us-west-a"), 1),
            (loc("us-west/us-west-b"), 1),
            (loc("us-east/us-east-a"), 1),
            (loc("eu-west/eu-west-a"), 1),
        ];
        let a = assign(&loc("us-west/us-west-a"), &targets, Some(&policy));
        assert_eq!(weights(&a), [Some(49_500), Some(49_500), Some(1_000), None]);
        assert_eq!(prio(&a), [Some(0), Some(0), Some(0), None]);
        // A caller no rule matches gets failover.
        let a = assign(&loc("us-east/us-east-a"), &targets, Some(&policy));
        assert_eq!(prio(&a), [Some(1), Some(1), Some(0), Some(1)]);
    }

    #[test]
    fn disabled_is_one_flat_priority() {
        let policy = LocalityPolicy {
            enabled: Some(false),
            ..Default::default()
        };
        let targets = [(loc("us-east/a"), 1), (loc("us-west/a"), 1)];
        let a = assign(&loc("us-west/a"), &targets, Some(&policy));
        assert_eq!(prio(&a), [Some(0), Some(0)]);
    }
}
