//! The flow identity the balancer hashes and tracks: the IPv4 5-tuple.

use std::net::Ipv4Addr;

use crate::hash;

/// An IPv4 5-tuple. For packets without ports (ICMP, non-first fragments) both ports are 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Client address (inner source).
    pub src: Ipv4Addr,
    /// VIP (inner destination).
    pub dst: Ipv4Addr,
    /// Client port.
    pub src_port: u16,
    /// VIP port.
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
}

impl FlowKey {
    /// The 13 bytes hashed, in network order: src, dst, src port, dst port, protocol.
    pub fn bytes(&self) -> [u8; 13] {
        let mut b = [0u8; 13];
        b[0..4].copy_from_slice(&self.src.octets());
        b[4..8].copy_from_slice(&self.dst.octets());
        b[8..10].copy_from_slice(&self.src_port.to_be_bytes());
        b[10..12].copy_from_slice(&self.dst_port.to_be_bytes());
        b[12] = self.protocol;
        b
    }

    /// The flow hash every balancer computes the same way.
    pub fn hash(&self) -> u64 {
        hash::hash64(&self.bytes(), hash::SEED_FLOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_every_field() {
        let k = FlowKey {
            src: Ipv4Addr::new(10, 2, 0, 2),
            dst: Ipv4Addr::new(10, 9, 0, 10),
            src_port: 40000,
            dst_port: 80,
            protocol: 6,
        };
        let variants = [
            FlowKey {
                src: Ipv4Addr::new(10, 2, 0, 3),
                ..k
            },
            FlowKey {
                dst: Ipv4Addr::new(10, 9, 0, 11),
                ..k
            },
            FlowKey {
                src_port: 40001,
                ..k
            },
            FlowKey { dst_port: 81, ..k },
            FlowKey { protocol: 17, ..k },
        ];
        for v in variants {
            assert_ne!(v.hash(), k.hash(), "{v:?}");
        }
        assert_eq!(k.hash(), k.hash());
    }
}
