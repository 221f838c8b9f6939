//! Priority and locality loads with Envoy's semantics.
//!
//! A priority level is *available* in proportion to its healthy hosts, scaled by the
//! overprovisioning factor 1.4 and capped at 100%: a level with 80% of its hosts healthy still
//! takes all of the traffic (80% × 1.4 ≥ 100%), one with 50% healthy takes 70% and the next
//! level takes the rest. When the levels together are less than 100% available the loads are
//! scaled up so they add up to 100% (Envoy's normalisation), so traffic is never dropped while
//! any host is healthy. There is no panic mode (Istio turns it off when outlier detection is
//! on): with no healthy host at all a request gets `503 no healthy upstream`.
//!
//! Inside a level with locality weights, a locality's effective weight is its weight times its
//! own availability (healthy share × 1.4, capped at 1), so a locality losing hosts sheds
//! traffic to its peers before the level as a whole spills over.

/// Envoy's overprovisioning factor, in percent.
pub const OVERPROVISIONING_PERCENT: u64 = 140;

/// 100% in the fixed-point unit used for loads.
pub const FULL: u64 = 1_000_000;

/// Availability of a group with `healthy` of `total` hosts, in millionths, capped at [`FULL`].
pub fn availability(healthy: u64, total: u64) -> u64 {
    if total == 0 {
        return 0;
    }
    (healthy * FULL * OVERPROVISIONING_PERCENT / 100 / total).min(FULL)
}

/// The share of traffic (millionths, summing to [`FULL`] unless nothing is healthy) each
/// priority level takes, given each level's (healthy, total) host counts in priority order.
pub fn priority_loads(levels: &[(u64, u64)]) -> Vec<u64> {
    let health: Vec<u64> = levels.iter().map(|(h, t)| availability(*h, *t)).collect();
    let total_health = health.iter().sum::<u64>().min(FULL);
    let mut loads = vec![0; levels.len()];
    if total_health == 0 {
        return loads;
    }
    let mut remaining = FULL;
    for (i, h) in health.iter().enumerate() {
        let load = (h * FULL / total_health).min(remaining);
        loads[i] = load;
        remaining -= load;
    }
    // Rounding leftovers go to the first available level.
    if remaining > 0
        && let Some(i) = health.iter().position(|h| *h > 0)
    {
        loads[i] += remaining;
    }
    loads
}

/// A locality's effective weight: its configured weight scaled by its availability.
pub fn effective_locality_weight(weight: u32, healthy: u64, total: u64) -> u64 {
    u64::from(weight) * availability(healthy, total) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn percents(levels: &[(u64, u64)]) -> Vec<u64> {
        priority_loads(levels)
            .iter()
            .map(|l| (l + 5_000) / 10_000)
            .collect()
    }

    #[test]
    fn healthy_first_level_takes_everything() {
        assert_eq!(percents(&[(4, 4), (4, 4)]), [100, 0]);
        // 80% healthy × 1.4 = 112% → still all traffic.
        assert_eq!(percents(&[(4, 5), (5, 5)]), [100, 0]);
    }

    #[test]
    fn overprovisioning_spills_the_unhealthy_share() {
        // 50% healthy × 1.4 = 70%.
        assert_eq!(percents(&[(2, 4), (4, 4)]), [70, 30]);
        // 25% × 1.4 = 35%, then the second level (also half healthy: 70%) takes 65%.
        assert_eq!(percents(&[(1, 4), (2, 4), (4, 4)]), [35, 65, 0]);
    }

    #[test]
    fn low_total_health_is_normalised() {
        // 1/4 and 1/4 healthy: 35% + 35% = 70% < 100%, scaled to 50/50.
        assert_eq!(percents(&[(1, 4), (1, 4)]), [50, 50]);
        // Only the last level has any health: it takes everything.
        assert_eq!(percents(&[(0, 3), (0, 3), (1, 10)]), [0, 0, 100]);
    }

    #[test]
    fn nothing_healthy_means_no_load() {
        assert_eq!(priority_loads(&[(0, 3), (0, 1)]), [0, 0]);
        assert_eq!(priority_loads(&[]), Vec::<u64>::new());
        assert_eq!(priority_loads(&[(0, 0)]), [0]);
    }

    #[test]
    fn loads_always_sum_to_full() {
        for a in 0..=7 {
            for b in 0..=5 {
                let l = priority_loads(&[(a, 7), (b, 5), (1, 3)]);
                assert_eq!(l.iter().sum::<u64>(), FULL, "{a} {b}");
            }
        }
    }

    #[test]
    fn locality_weight_follows_locality_health() {
        assert_eq!(effective_locality_weight(99, 2, 2), 99_000);
        assert_eq!(effective_locality_weight(99, 0, 2), 0);
        // Half healthy: 70% of its weight.
        assert_eq!(effective_locality_weight(10, 1, 2), 7_000);
    }
}
