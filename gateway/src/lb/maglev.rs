//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), as Envoy's `MAGLEV` balancer.
//!
//! Each host fills table slots in the order of its own permutation until the table is full, so
//! every host owns nearly the same number of slots and removing a host moves only the keys it
//! owned (plus a few). Lookups are one hash and one array read.

/// Table sizes (primes); the smallest with at least 100 slots per host is used, so the
/// imbalance between hosts stays around 1%.
const SIZES: [usize; 9] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521];

/// The table size for `hosts` hosts.
pub fn table_size(hosts: usize) -> usize {
    SIZES
        .iter()
        .copied()
        .find(|s| *s >= hosts.saturating_mul(100))
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// A 64-bit hash (FNV-1a with a final avalanche) of `bytes`: stable across runs and
/// machines, so every gateway maps a key to the same host.
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// MurmurHash3's 64-bit finaliser: spreads every input bit over the output.
pub fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Builds the lookup table for hosts identified by `keys` (e.g. a hash of each address):
/// slot → index into `keys`. Empty when there are no hosts.
pub fn build(keys: &[u64]) -> Vec<u32> {
    if keys.is_empty() {
        return Vec::new();
    }
    let m = table_size(keys.len());
    let m64 = m as u64;
    let perms: Vec<(u64, u64)> = keys
        .iter()
        .map(|k| {
            let offset = mix(*k ^ 0x9e37_79b9_7f4a_7c15) % m64;
            let skip = mix(*k ^ 0x7f4a_7c15_9e37_79b9) % (m64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; keys.len()];
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    'fill: loop {
        for (i, (offset, skip)) in perms.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m64;
            while table[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m64;
            }
            table[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    table
}

/// The host index for `key_hash`, or `None` for an empty table.
pub fn lookup(table: &[u32], key_hash: u64) -> Option<usize> {
    if table.is_empty() {
        return None;
    }
    table
        .get((key_hash % table.len() as u64) as usize)
        .map(|i| *i as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u64) -> Vec<u64> {
        (0..n)
            .map(|i| hash(format!("10.0.0.{i}:80").as_bytes()))
            .collect()
    }

    #[test]
    fn every_host_gets_a_near_equal_share() {
        let t = build(&keys(5));
        assert_eq!(t.len(), 509);
        let mut counts = [0usize; 5];
        for i in &t {
            counts[*i as usize] += 1;
        }
        for c in counts {
            assert!((100..=103).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn removing_a_host_moves_few_other_keys() {
        let all = keys(10);
        let before = build(&all);
        let after = build(&all[..9]);
        let mut moved = 0;
        for k in 0..10_000u64 {
            let h = mix(k);
            let a = lookup(&before, h);
            let b = lookup(&after, h);
            if a != Some(9) && a != b {
                moved += 1;
            }
        }
        // Keys of the removed host move; others mostly stay (Maglev's disruption is small).
        assert!(moved < 10_000 / 10, "{moved} keys of surviving hosts moved");
    }

    #[test]
    fn lookups_are_stable_and_empty_tables_answer_none() {
        let t = build(&keys(3));
        assert_eq!(
            lookup(&t, hash(b"user-1")),
            lookup(&build(&keys(3)), hash(b"user-1"))
        );
        assert_eq!(lookup(&[], 7), None);
        assert!(build(&[]).is_empty());
        assert_eq!(hash(b"a"), hash(b"a"));
        assert_ne!(hash(b"a"), hash(b"b"));
    }
}
