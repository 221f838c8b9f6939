//! Address pools: named sets of CIDRs, their usable addresses numbered `0..size`, and the
//! order in which an owner probes them. Pure: no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use super::IpamError;

/// One CIDR of a pool, as a range of address numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    cidr: String,
    /// First usable address as a number (IPv4 in the low 32 bits).
    first: u128,
    /// Usable addresses.
    count: u128,
    v6: bool,
}

/// A named pool of VIPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    name: String,
    ranges: Vec<Range>,
}

fn to_number(addr: IpAddr) -> (u128, bool) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), false),
        IpAddr::V6(a) => (u128::from(a), true),
    }
}

fn from_number(n: u128, v6: bool) -> Option<IpAddr> {
    if v6 {
        Some(IpAddr::V6(n.into()))
    } else {
        u32::try_from(n).ok().map(|n| IpAddr::V4(n.into()))
    }
}

impl Range {
    fn parse(pool: &str, cidr: &str) -> Result<Range, IpamError> {
        let bad = |message: String| IpamError::InvalidCidr {
            pool: pool.to_owned(),
            cidr: cidr.to_owned(),
            message,
        };
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| bad("write it as ADDRESS/PREFIX, e.g. 10.240.0.0/24".to_owned()))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad(format!("{addr:?} is not an IP address")))?;
        let (base, v6) = to_number(addr);
        let bits: u32 = if v6 { 128 } else { 32 };
        let len: u32 = len
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| bad(format!("the prefix length must be 0 to {bits}")))?;
        let host_bits = bits - len;
        let size: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            1u128 << host_bits
        };
        if host_bits < 128 && base & (size - 1) != 0 {
            let network =
                from_number(base & !(size - 1), v6).map_or_else(String::new, |a| a.to_string());
            return Err(bad(format!(
                "host bits are set; did you mean {network}/{len}?"
            )));
        }
        // Like a LAN, leave out the network and broadcast addresses of IPv4 subnets (and the
        // subnet-router anycast address of IPv6 ones): some equipment treats them specially.
        let (first, count) = match (v6, host_bits) {
            (false, 0..=1) => (base, size),
            (false, _) => (base + 1, size - 2),
            (true, 0..=1) => (base, size),
            (true, _) => (base + 1, size - 1),
        };
        Ok(Range {
            cidr: cidr.to_owned(),
            first,
            count,
            v6,
        })
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.v6 == other.v6
            && self.first <= other.first.saturating_add(other.count - 1)
            && other.first <= self.first.saturating_add(self.count - 1)
    }
}

impl Pool {
    /// A pool from its CIDRs (`10.240.0.0/24`, `fd00:240::/120`). CIDRs may not overlap.
    pub fn new<S: AsRef<str>>(name: &str, cidrs: &[S]) -> Result<Pool, IpamError> {
        if cidrs.is_empty() {
            return Err(IpamError::InvalidCidr {
                pool: name.to_owned(),
                cidr: String::new(),
                message: "the pool has no CIDR; give it at least one, e.g. 10.240.0.0/24"
                    .to_owned(),
            });
        }
        let mut ranges: Vec<Range> = Vec::new();
        for cidr in cidrs {
            let range = Range::parse(name, cidr.as_ref())?;
            if let Some(other) = ranges.iter().find(|r| r.overlaps(&range)) {
                return Err(IpamError::Overlap {
                    first: format!("{name}: {}", other.cidr),
                    second: format!("{name}: {}", range.cidr),
                });
            }
            ranges.push(range);
        }
        Ok(Pool {
            name: name.to_owned(),
            ranges,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many addresses it has.
    pub fn size(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |n, r| n.saturating_add(r.count))
    }

    /// Address number `index` (`0..size`), ranges in the order given.
    pub fn address(&self, mut index: u128) -> Option<IpAddr> {
        for r in &self.ranges {
            if index < r.count {
                return from_number(r.first + index, r.v6);
            }
            index -= r.count;
        }
        None
    }

    /// The number of an address of this pool.
    pub fn index_of(&self, addr: IpAddr) -> Option<u128> {
        let (n, v6) = to_number(addr);
        let mut offset = 0u128;
        for r in &self.ranges {
            if r.v6 == v6 && n >= r.first && n - r.first < r.count {
                return Some(offset + (n - r.first));
            }
            offset = offset.saturating_add(r.count);
        }
        None
    }

    /// Where `owner` starts probing: spread by a stable hash, so that owners (and controllers
    /// allocating for different owners at once) rarely want the same address, and an owner
    /// released and re-created usually gets its old address back if it is still free.
    pub fn start_for(&self, owner: &str) -> u128 {
        // FNV-1a: stable across processes and Rust versions, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in owner.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        match self.size() {
            0 => 0,
            size => u128::from(h) % size,
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cidrs: Vec<&str> = self.ranges.iter().map(|r| r.cidr.as_str()).collect();
        write!(f, "{} ({})", self.name, cidrs.join(", "))
    }
}

/// Builds the pools of a controller configuration (pool name → CIDRs), refusing CIDRs that
/// overlap, within a pool or across pools.
pub fn pools(config: &BTreeMap<String, Vec<String>>) -> Result<BTreeMap<String, Pool>, IpamError> {
    let mut out: BTreeMap<String, Pool> = BTreeMap::new();
    for (name, cidrs) in config {
        let pool = Pool::new(name, cidrs)?;
        for other in out.values() {
            for a in &other.ranges {
                if let Some(b) = pool.ranges.iter().find(|b| a.overlaps(b)) {
                    return Err(IpamError::Overlap {
                        first: format!("{}: {}", other.name, a.cidr),
                        second: format!("{name}: {}", b.cidr),
                    });
                }
            }
        }
        out.insert(name.clone(), pool);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_subnets_skip_network_and_broadcast() {
        let p = Pool::new("default", &["10.240.0.0/24"]).unwrap();
        assert_eq!(p.size(), 254);
        assert_eq!(p.address(0), Some(ip("10.240.0.1")));
        assert_eq!(p.address(253), Some(ip("10.240.0.254")));
        assert_eq!(p.address(254), None);
        assert_eq!(p.index_of(ip("10.240.0.254")), Some(253));
        assert_eq!(p.index_of(ip("10.240.0.0")), None);
        assert_eq!(p.index_of(ip("10.240.1.1")), None);

        let p = Pool::new("p", &["10.0.0.7/32", "10.0.1.0/31", "10.0.2.0/30"]).unwrap();
        let all: Vec<IpAddr> = (0..p.size()).filter_map(|i| p.address(i)).collect();
        assert_eq!(
            all,
            ["10.0.0.7", "10.0.1.0", "10.0.1.1", "10.0.2.1", "10.0.2.2"].map(ip)
        );
        for (i, a) in all.iter().enumerate() {
            assert_eq!(p.index_of(*a), Some(i as u128));
        }
    }

    #[test]
    fn ipv6_pools() {
        let p = Pool::new("v6", &["fd00:240::/120"]).unwrap();
        assert_eq!(p.size(), 255);
        assert_eq!(p.address(0), Some(ip("fd00:240::1")));
        assert_eq!(p.index_of(ip("fd00:240::ff")), Some(254));
        let big = Pool::new("v6", &["fd00::/64"]).unwrap();
        assert_eq!(big.size(), (1u128 << 64) - 1);
        assert!(big.start_for("retail/shop") < big.size());
    }

    #[test]
    fn bad_configurations_say_what_to_write() {
        let e = Pool::new("default", &["10.240.0.1/24"]).unwrap_err();
        assert!(e.to_string().contains("did you mean 10.240.0.0/24"), "{e}");
        for bad in ["10.240.0.0", "10.240.0.0/33", "shop/24", ""] {
            assert!(Pool::new("default", &[bad]).is_err(), "{bad}");
        }
        assert!(Pool::new::<&str>("default", &[]).is_err());
        let e = Pool::new("default", &["10.0.0.0/24", "10.0.0.128/25"]).unwrap_err();
        assert!(matches!(e, IpamError::Overlap { .. }), "{e}");
        let config = BTreeMap::from([
            ("a".to_owned(), vec!["10.0.0.0/24".to_owned()]),
            ("b".to_owned(), vec!["10.0.0.0/16".to_owned()]),
        ]);
        assert!(matches!(pools(&config), Err(IpamError::Overlap { .. })));
    }

    #[test]
    fn probe_start_is_stable_and_spread() {
        let p = Pool::new("default", &["10.240.0.0/16"]).unwrap();
        assert_eq!(p.start_for("retail/shop"), p.start_for("retail/shop"));
        let starts: std::collections::BTreeSet<u128> = (0..1000)
            .map(|i| p.start_for(&format!("ns/ap-{i}")))
            .collect();
        assert!(starts.len() > 980, "{}", starts.len());
    }
}
