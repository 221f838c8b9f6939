//! Outlier detection: hosts that keep failing are ejected for a while.
//!
//! Per host, two consecutive-error counters live in atomics and are touched by every response
//! ([`Counters::record`]); reaching a threshold is the only time the cluster's [`Ejections`]
//! (behind a mutex, off the hot path) is consulted. As in Envoy:
//!
//! - `consecutive5xxErrors`: 5xx answers and local failures (connect failure, reset, timeout)
//!   in a row eject; `consecutiveGatewayErrors`: the same for 502/503/504 and local failures;
//!   any other answer resets the counters;
//! - an ejection lasts `baseEjectionTime × n`, `n` being how often the host was ejected; hosts
//!   return at the first `interval` tick after that, and `n` shrinks by one at every tick the
//!   host spends in service;
//! - at most `maxEjectionPercent` of the hosts are ejected at once, but one host always may be
//!   (so a one-host cluster can be ejected, and answers `503 no healthy upstream`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::config::Outlier;

/// What an upstream attempt came to, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer with this status.
    Status(u16),
    /// Connect failure, reset before the answer, or timeout.
    LocalFailure,
}

/// Consecutive-error counters of one host.
#[derive(Debug, Default)]
pub struct Counters {
    five_xx: AtomicU32,
    gateway: AtomicU32,
}

impl Counters {
    /// Counts an outcome; true when it makes the host reach a threshold (eject it).
    pub fn record(&self, outcome: Outcome, cfg: &Outlier) -> bool {
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504)),
            Outcome::LocalFailure => (true, true),
        };
        let bump = |c: &AtomicU32, hit: bool, limit: u32| -> bool {
            if hit {
                limit > 0 && c.fetch_add(1, Ordering::Relaxed) + 1 == limit
            } else {
                // A plain load first: a healthy host's counter stays in shared cache state.
                if c.load(Ordering::Relaxed) != 0 {
                    c.store(0, Ordering::Relaxed);
                }
                false
            }
        };
        let a = bump(&self.five_xx, is_5xx, cfg.consecutive_5xx);
        let b = bump(&self.gateway, is_gateway, cfg.consecutive_gateway);
        a || b
    }

    /// Starts counting afresh (after an ejection, or when one was refused).
    pub fn reset(&self) {
        self.five_xx.store(0, Ordering::Relaxed);
        self.gateway.store(0, Ordering::Relaxed);
    }
}

/// Ejection state of one host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostEjection {
    /// When it was ejected, while it is.
    pub since: Option<Instant>,
    /// How often it was ejected (decays while in service).
    pub count: u32,
}

/// Ejection state of a cluster's hosts.
#[derive(Debug, Clone, Default)]
pub struct Ejections {
    /// By host index.
    pub hosts: Vec<HostEjection>,
}

impl Ejections {
    /// State for `n` hosts, none ejected.
    pub fn new(n: usize) -> Ejections {
        Ejections {
            hosts: vec![HostEjection::default(); n],
        }
    }

    /// Hosts ejected now.
    pub fn ejected(&self) -> usize {
        self.hosts.iter().filter(|h| h.since.is_some()).count()
    }

    /// Whether host `i` is ejected.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.hosts.get(i).is_some_and(|h| h.since.is_some())
    }

    /// Ejects host `i` unless it already is or the percentage cap forbids it; true when it
    /// was ejected.
    pub fn eject(&mut self, i: usize, now: Instant, cfg: &Outlier) -> bool {
        let n = self.hosts.len();
        let ejected = self.ejected();
        let Some(h) = self.hosts.get_mut(i) else {
            return false;
        };
        if h.since.is_some() {
            return false;
        }
        let allowed = ejected == 0 || (ejected + 1) * 100 <= cfg.max_ejection_percent as usize * n;
        if !allowed {
            return false;
        }
        h.since = Some(now);
        h.count = h.count.saturating_add(1);
        true
    }

    /// The interval tick: returns hosts whose ejection time has passed and decays the counts
    /// of hosts in service. True when some host returned.
    pub fn tick(&mut self, now: Instant, cfg: &Outlier) -> bool {
        let mut changed = false;
        for h in &mut self.hosts {
            match h.since {
                Some(since) => {
                    let period = ejection_time(cfg.base_ejection_time, h.count);
                    if now.saturating_duration_since(since) >= period {
                        h.since = None;
                        changed = true;
                    }
                }
                None => h.count = h.count.saturating_sub(1),
            }
        }
        changed
    }
}

/// How long the `count`th ejection lasts: base × count, at most 300 × base (Envoy caps the
/// multiplier through `maxEjectionTime`, 300 s by default for a 1 s base).
pub fn ejection_time(base: Duration, count: u32) -> Duration {
    base.saturating_mul(count.clamp(1, 300))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(c5xx: u32, gw: u32, max: u32) -> Outlier {
        Outlier {
            consecutive_5xx: c5xx,
            consecutive_gateway: gw,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: max,
        }
    }

    #[test]
    fn three_consecutive_5xx_eject_and_a_success_resets() {
        let c = Counters::default();
        let cfg = cfg(3, 0, 100);
        assert!(!c.record(Outcome::Status(500), &cfg));
        assert!(!c.record(Outcome::Status(500), &cfg));
        assert!(!c.record(Outcome::Status(200), &cfg));
        assert!(!c.record(Outcome::Status(500), &cfg));
        assert!(!c.record(Outcome::LocalFailure, &cfg));
        assert!(c.record(Outcome::Status(503), &cfg));
        // Only the error that reaches the threshold reports it.
        assert!(!c.record(Outcome::Status(503), &cfg));
    }

    #[test]
    fn gateway_errors_count_separately() {
        let c = Counters::default();
        let cfg = cfg(0, 2, 100);
        assert!(!c.record(Outcome::Status(500), &cfg));
        assert!(!c.record(Outcome::Status(502), &cfg));
        assert!(
            !c.record(Outcome::Status(500), &cfg),
            "500 is not a gateway error"
        );
        assert!(!c.record(Outcome::LocalFailure, &cfg));
        assert!(c.record(Outcome::Status(504), &cfg));
    }

    #[test]
    fn ejection_lasts_base_times_count_and_returns_at_a_tick() {
        let cfg = cfg(3, 0, 100);
        let mut e = Ejections::new(1);
        let t0 = Instant::now();
        assert!(e.eject(0, t0, &cfg));
        assert!(!e.eject(0, t0, &cfg), "already ejected");
        assert!(!e.tick(t0 + Duration::from_secs(9), &cfg));
        assert!(e.is_ejected(0));
        assert!(e.tick(t0 + Duration::from_secs(10), &cfg));
        assert!(!e.is_ejected(0));
        // Second ejection right away: twice as long.
        let t1 = t0 + Duration::from_secs(11);
        assert!(e.eject(0, t1, &cfg));
        assert!(!e.tick(t1 + Duration::from_secs(19), &cfg));
        assert!(e.tick(t1 + Duration::from_secs(20), &cfg));
        // Ticks in service decay the multiplier.
        e.tick(t1 + Duration::from_secs(21), &cfg);
        e.tick(t1 + Duration::from_secs(22), &cfg);
        assert_eq!(e.hosts[0].count, 0);
    }

    #[test]
    fn max_ejection_percent_caps_but_one_host_always_may_go() {
        let cfg10 = cfg(3, 0, 10);
        let now = Instant::now();
        let mut e = Ejections::new(3);
        assert!(e.eject(0, now, &cfg10));
        assert!(!e.eject(1, now, &cfg10));
        let cfg67 = cfg(3, 0, 67);
        let mut e = Ejections::new(3);
        assert!(e.eject(0, now, &cfg67));
        assert!(e.eject(1, now, &cfg67));
        assert!(!e.eject(2, now, &cfg67));
        assert_eq!(e.ejected(), 2);
    }

    #[test]
    fn ejection_time_is_capped() {
        let b = Duration::from_secs(1);
        assert_eq!(ejection_time(b, 0), b);
        assert_eq!(ejection_time(b, 3), Duration::from_secs(3));
        assert_eq!(ejection_time(b, 10_000), Duration::from_secs(300));
    }
}
