//! The fixed hash functions shared by Maglev, the flow hash and (later) the BPF programs.
//!
//! They must never change without a plan: balancers behind the same ECMP group must agree on
//! every flow, so all of them must hash the same way. FNV-1a (64-bit) over the bytes, started
//! from a seed, then the murmur3 64-bit finaliser for avalanche — a few lines in C as well.

/// Seed of the Maglev permutation offset.
pub const SEED_OFFSET: u64 = 0x9e37_79b9_7f4a_7c15;
/// Seed of the Maglev permutation skip.
pub const SEED_SKIP: u64 = 0xc2b2_ae3d_27d4_eb4f;
/// Seed of the flow (5-tuple) hash.
pub const SEED_FLOW: u64 = 0x1656_67b1_9e37_79f9;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes` from `FNV_OFFSET ^ seed`, finalised with murmur3's fmix64.
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = FNV_OFFSET ^ seed;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// murmur3's 64-bit finaliser.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values() {
        // Pinned: a change here breaks agreement between balancer versions behind one ECMP group.
        assert_eq!(hash64(&[], 0), fmix64(FNV_OFFSET));
        assert_eq!(hash64(&[10, 1, 0, 1], SEED_OFFSET), PINNED);
        assert_ne!(
            hash64(&[10, 1, 0, 1], SEED_OFFSET),
            hash64(&[10, 1, 0, 1], SEED_SKIP)
        );
        assert_ne!(hash64(&[10, 1, 0, 1], 0), hash64(&[10, 1, 0, 2], 0));
    }

    const PINNED: u64 = 15_184_219_805_097_285_193;
}
