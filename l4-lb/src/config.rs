//! The balancer's configuration model: VIPs (address, protocol, ports), their backends (gateway
//! addresses with weights) and health checks, connection tracking limits and BGP peers.
//!
//! The model is what both the static file ([`file`]) and, later, the controller's ADS feed
//! produce; everything downstream (Maglev tables, the data paths, BGP) reads only this.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod file;

/// Default Maglev table size: a prime well above 100 × the largest expected backend count.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// The whole balancer configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The VIPs this balancer serves.
    pub vips: Vec<Vip>,
    /// Connection tracking limits.
    pub conntrack: ConntrackSettings,
    /// BGP announcement of the VIPs; `None` announces nothing.
    pub bgp: Option<BgpConfig>,
}

impl Config {
    /// Reads and validates a static configuration file (YAML, see `docs/l4lb.md`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        file::parse(&text)
    }

    /// Every distinct VIP address, sorted (one BGP /32 each).
    pub fn vip_addresses(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = self.vips.iter().map(|v| v.address).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The IP protocol a VIP balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp,
    /// UDP (IP protocol 17).
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol of an IP protocol number, if a VIP can balance it.
    pub fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        })
    }
}

/// One virtual IP service: traffic to `address` (protocol, one of `ports`) is spread over the
/// backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// A name for metrics and logs (unique in the file).
    pub name: String,
    /// The virtual address, announced as a /32.
    pub address: Ipv4Addr,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Destination ports served; empty means every port.
    pub ports: Vec<u16>,
    /// The gateways behind the VIP.
    pub backends: Vec<Backend>,
    /// How backends are checked.
    pub health_check: HealthCheck,
    /// Maglev table size (a prime).
    pub table_size: u32,
}

impl Vip {
    /// Whether this VIP serves destination `port`.
    pub fn serves_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }
}

/// One backend (a gateway host) of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// The gateway host's address: the outer destination of the IPIP packets.
    pub address: Ipv4Addr,
    /// Relative share of new flows (1..=65535).
    pub weight: u32,
}

/// How a backend's health is probed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HealthCheck {
    /// What a probe does.
    pub kind: ProbeKind,
    /// Time between the starts of two probes.
    pub interval: Duration,
    /// How long one probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy backend healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy backend unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    /// TCP connect to the first VIP port every 500 ms, 500 ms timeout, 2 to fall, 2 to rise: an
    /// unreachable backend is out of the table 1–1.5 s after it stops answering.
    fn default() -> Self {
        HealthCheck {
            kind: ProbeKind::None,
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(500),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        }
    }
}

/// The probe a health check runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// No probing: every backend is always healthy.
    None,
    /// A TCP connection to the backend's `port` must be accepted.
    Tcp {
        /// The port probed on the backend address.
        port: u16,
    },
    /// `GET path` on the backend's `port` must answer 2xx.
    Http {
        /// The port probed on the backend address.
        port: u16,
        /// The request path (`/ready`).
        path: String,
        /// The Host header sent.
        host: String,
    },
}

/// Connection tracking limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// Flows remembered at most; the least recently used are forgotten first.
    pub capacity: usize,
    /// A flow idle this long is forgotten.
    pub idle_timeout: Duration,
}

impl Default for ConntrackSettings {
    fn default() -> Self {
        ConntrackSettings {
            capacity: 1 << 20,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// BGP announcement settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// This balancer's AS number.
    pub local_as: u32,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Proposed hold time (0 or 3..=65535 s).
    pub hold_time: u16,
    /// Next hop announced; default: the local address of each session.
    pub next_hop: Option<Ipv4Addr>,
    /// The routers to announce to.
    pub peers: Vec<BgpPeer>,
}

/// One BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    /// The neighbour's address.
    pub address: Ipv4Addr,
    /// The neighbour's TCP port (179).
    pub port: u16,
    /// The neighbour's AS number.
    pub remote_as: u32,
}

/// One problem found in a configuration, with the path of the field in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where: `vips[0].backends[2].weight`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read l4lb config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not YAML, or a field has the wrong type or an unknown name.
    #[error("l4lb config: {0} (see docs/l4lb.md for the format)")]
    Syntax(FieldError),
    /// The file decoded, but some values are wrong; every problem is listed.
    #[error("l4lb config has {} problem(s):\n  {}", .0.len(), render(.0))]
    Invalid(Vec<FieldError>),
}

fn render(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

impl ConfigError {
    /// The field-level findings (one for a syntax error).
    pub fn findings(&self) -> Vec<FieldError> {
        match self {
            ConfigError::Read { .. } => Vec::new(),
            ConfigError::Syntax(e) => vec![e.clone()],
            ConfigError::Invalid(v) => v.clone(),
        }
    }
}

/// Whether `n` is prime (table sizes must be).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|n| is_prime(*n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(is_prime(251));
        assert!(!is_prime(65_535));
        assert!(!is_prime(65_536));
    }

    #[test]
    fn port_matching() {
        let mut v = Vip {
            name: "a".into(),
            address: Ipv4Addr::new(10, 9, 0, 1),
            protocol: Protocol::Tcp,
            ports: vec![],
            backends: vec![],
            health_check: HealthCheck::default(),
            table_size: 251,
        };
        assert!(v.serves_port(1));
        v.ports = vec![80, 443];
        assert!(v.serves_port(443));
        assert!(!v.serves_port(8080));
    }

    #[test]
    fn protocol_numbers_round_trip() {
        for p in [Protocol::Tcp, Protocol::Udp] {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert_eq!(Protocol::from_number(1), None);
    }
}
