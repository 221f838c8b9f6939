//! Active health checking: the threshold logic of one host.
//!
//! A healthy host turns unhealthy after `unhealthyThreshold` failed checks in a row, or at once
//! when an HTTP check answers 503 (the host says it is draining, as Envoy treats it); an
//! unhealthy host turns healthy after `healthyThreshold` passes in a row. Hosts start healthy,
//! and the first round of checks runs as soon as the cluster is in service.

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Expected status (HTTP) or connected (TCP).
    Pass,
    /// Anything else: unexpected status, refused, timed out.
    Fail,
    /// A 503: unhealthy at once.
    FailNow,
}

/// What an HTTP check's status means.
pub fn classify(status: u16, expected: &[u16]) -> Probe {
    if expected.contains(&status) {
        Probe::Pass
    } else if status == 503 {
        Probe::FailNow
    } else {
        Probe::Fail
    }
}

/// Health of one host under active checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostHealth {
    /// Whether it takes traffic.
    pub healthy: bool,
    /// Results in a row against the current state.
    streak: u32,
}

impl Default for HostHealth {
    fn default() -> Self {
        HostHealth {
            healthy: true,
            streak: 0,
        }
    }
}

impl HostHealth {
    /// Takes one check result; true when the host changed state.
    pub fn observe(
        &mut self,
        probe: Probe,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> bool {
        let agrees = matches!(
            (self.healthy, probe),
            (true, Probe::Pass) | (false, Probe::Fail | Probe::FailNow)
        );
        if agrees {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let flip = match probe {
            Probe::FailNow => true,
            Probe::Fail => self.streak >= unhealthy_threshold.max(1),
            Probe::Pass => self.streak >= healthy_threshold.max(1),
        };
        if flip {
            self.healthy = !self.healthy;
            self.streak = 0;
        }
        flip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_immediate_503() {
        let mut h = HostHealth::default();
        assert!(!h.observe(Probe::Fail, 2, 3));
        assert!(!h.observe(Probe::Fail, 2, 3));
        assert!(
            !h.observe(Probe::Pass, 2, 3),
            "a pass resets the failure streak"
        );
        assert!(!h.observe(Probe::Fail, 2, 3));
        assert!(!h.observe(Probe::Fail, 2, 3));
        assert!(h.observe(Probe::Fail, 2, 3));
        assert!(!h.healthy);
        assert!(!h.observe(Probe::Pass, 2, 3));
        assert!(h.observe(Probe::Pass, 2, 3));
        assert!(h.healthy);
        assert!(h.observe(Probe::FailNow, 2, 3), "503 is unhealthy at once");
        assert!(!h.healthy);
    }

    #[test]
    fn statuses() {
        assert_eq!(classify(200, &[200]), Probe::Pass);
        assert_eq!(classify(204, &[200, 204]), Probe::Pass);
        assert_eq!(classify(500, &[200]), Probe::Fail);
        assert_eq!(classify(503, &[200]), Probe::FailNow);
    }
}
