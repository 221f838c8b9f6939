//! Connection tracking: a bounded LRU of flow → backend with an idle timeout.
//!
//! A tracked flow keeps its backend while that backend is healthy, even when the Maglev table
//! changes under it (a backend added, weights changed); only a flow whose backend left the table
//! is re-hashed. Time is passed in, so the table is a pure data structure.
//!
//! Entries live in a slab threaded on a doubly linked recency list (most recent at the head), so
//! lookup, insert, touch and eviction are O(1).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::flow::FlowKey;

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    key: FlowKey,
    backend: Ipv4Addr,
    last_seen: Instant,
    prev: u32,
    next: u32,
}

/// The flow table.
#[derive(Debug)]
pub struct Conntrack {
    capacity: usize,
    idle_timeout: Duration,
    index: HashMap<FlowKey, u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
}

impl Conntrack {
    /// An empty table holding at most `capacity` flows (at least 1), each forgotten after
    /// `idle_timeout` without packets.
    pub fn new(capacity: usize, idle_timeout: Duration) -> Conntrack {
        Conntrack {
            capacity: capacity.max(1),
            idle_timeout,
            index: HashMap::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NONE,
            tail: NONE,
        }
    }

    /// Flows tracked (including idle ones not yet swept).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The backend of a live flow, refreshing its recency. An idle-expired entry is removed and
    /// reported as absent.
    pub fn get(&mut self, key: &FlowKey, now: Instant) -> Option<Ipv4Addr> {
        let i = *self.index.get(key)?;
        let node = &self.nodes[i as usize];
        if now.saturating_duration_since(node.last_seen) > self.idle_timeout {
            self.remove_at(i);
            return None;
        }
        let backend = node.backend;
        self.nodes[i as usize].last_seen = now;
        self.move_to_front(i);
        Some(backend)
    }

    /// Records (or replaces) the backend of a flow, evicting the least recently used flow when
    /// full.
    pub fn insert(&mut self, key: FlowKey, backend: Ipv4Addr, now: Instant) {
        if let Some(&i) = self.index.get(&key) {
            let n = &mut self.nodes[i as usize];
            n.backend = backend;
            n.last_seen = now;
            self.move_to_front(i);
            return;
        }
        if self.index.len() >= self.capacity && self.tail != NONE {
            self.remove_at(self.tail);
        }
        let node = Node {
            key,
            backend,
            last_seen: now,
            prev: NONE,
            next: NONE,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
        self.link_front(i);
    }

    /// Forgets a flow.
    pub fn remove(&mut self, key: &FlowKey) -> Option<Ipv4Addr> {
        let i = *self.index.get(key)?;
        let b = self.nodes[i as usize].backend;
        self.remove_at(i);
        Some(b)
    }

    /// Removes flows idle for longer than the timeout, oldest first, stopping at the first live
    /// one (the list is in recency order). Returns how many were removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while self.tail != NONE {
            let t = self.tail;
            if now.saturating_duration_since(self.nodes[t as usize].last_seen) <= self.idle_timeout
            {
                break;
            }
            self.remove_at(t);
            removed += 1;
        }
        removed
    }

    /// Forgets every flow to `backend` (e.g. when it is removed from the configuration).
    pub fn remove_backend(&mut self, backend: Ipv4Addr) -> usize {
        let keys: Vec<FlowKey> = self
            .index
            .iter()
            .filter(|(_, i)| self.nodes[**i as usize].backend == backend)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.remove(k);
        }
        keys.len()
    }

    fn remove_at(&mut self, i: u32) {
        self.unlink(i);
        let key = self.nodes[i as usize].key;
        self.index.remove(&key);
        self.free.push(i);
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let n = &self.nodes[i as usize];
            (n.prev, n.next)
        };
        if prev == NONE {
            self.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NONE {
            self.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        let n = &mut self.nodes[i as usize];
        n.prev = NONE;
        n.next = NONE;
    }

    fn link_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NONE;
            n.next = old;
        }
        if old == NONE {
            self.tail = i;
        } else {
            self.nodes[old as usize].prev = i;
        }
        self.head = i;
    }

    fn move_to_front(&mut self, i: u32) {
        if self.head == i {
            return;
        }
        self.unlink(i);
        self.link_front(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: Ipv4Addr::new(10, 2, 0, 2),
            dst: Ipv4Addr::new(10, 9, 0, 10),
            src_port: port,
            dst_port: 80,
            protocol: 6,
        }
    }

    fn gw(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, n)
    }

    #[test]
    fn insert_get_replace_remove() {
        let t0 = Instant::now();
        let mut ct = Conntrack::new(10, Duration::from_secs(60));
        assert!(ct.is_empty());
        ct.insert(key(1), gw(1), t0);
        ct.insert(key(2), gw(2), t0);
        assert_eq!(ct.get(&key(1), t0), Some(gw(1)));
        ct.insert(key(1), gw(3), t0);
        assert_eq!(ct.get(&key(1), t0), Some(gw(3)));
        assert_eq!(ct.len(), 2);
        assert_eq!(ct.remove(&key(1)), Some(gw(3)));
        assert_eq!(ct.get(&key(1), t0), None);
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn bounded_evicts_least_recently_used() {
        let t0 = Instant::now();
        let mut ct = Conntrack::new(3, Duration::from_secs(60));
        for p in 1..=3 {
            ct.insert(key(p), gw(p as u8), t0);
        }
        // Touch 1, so 2 is now the least recently used.
        assert!(ct.get(&key(1), t0).is_some());
        ct.insert(key(4), gw(4), t0);
        assert_eq!(ct.len(), 3);
        assert_eq!(ct.get(&key(2), t0), None);
        for p in [1, 3, 4] {
            assert!(ct.get(&key(p), t0).is_some(), "{p}");
        }
        // Slots are reused: many inserts keep the slab at capacity.
        for p in 100..1000 {
            ct.insert(key(p), gw(1), t0);
        }
        assert_eq!(ct.len(), 3);
        assert!(ct.nodes.len() <= 4);
    }

    #[test]
    fn idle_entries_expire() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        let mut ct = Conntrack::new(100, idle);
        ct.insert(key(1), gw(1), t0);
        ct.insert(key(2), gw(2), t0 + Duration::from_secs(5));
        // Traffic keeps flow 1 alive.
        assert!(ct.get(&key(1), t0 + Duration::from_secs(9)).is_some());
        assert_eq!(ct.expire(t0 + Duration::from_secs(16)), 1);
        assert_eq!(ct.get(&key(2), t0 + Duration::from_secs(16)), None);
        assert_eq!(ct.get(&key(1), t0 + Duration::from_secs(16)), Some(gw(1)));
        // A lookup past the timeout forgets it too.
        assert_eq!(ct.get(&key(1), t0 + Duration::from_secs(27)), None);
        assert!(ct.is_empty());
    }

    #[test]
    fn remove_backend() {
        let t0 = Instant::now();
        let mut ct = Conntrack::new(100, Duration::from_secs(10));
        for p in 0..30 {
            ct.insert(key(p), gw((p % 3) as u8), t0);
        }
        assert_eq!(ct.remove_backend(gw(1)), 10);
        assert_eq!(ct.len(), 20);
        assert_eq!(ct.expire(t0 + Duration::from_secs(11)), 20);
        assert!(ct.is_empty());
        assert_eq!(ct.head, NONE);
        assert_eq!(ct.tail, NONE);
    }

    #[test]
    fn list_stays_consistent_under_random_operations() {
        let t0 = Instant::now();
        let mut ct = Conntrack::new(50, Duration::from_secs(100));
        let mut x: u32 = 12345;
        for step in 0..20_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let p = ((x >> 16) % 120) as u16;
            let now = t0 + Duration::from_millis(step);
            match x % 4 {
                0 | 1 => ct.insert(key(p), gw(1), now),
                2 => {
                    ct.get(&key(p), now);
                }
                _ => {
                    ct.remove(&key(p));
                }
            }
            assert!(ct.len() <= 50);
        }
        // Walk the list both ways.
        let mut n = 0;
        let mut i = ct.head;
        let mut prev = NONE;
        while i != NONE {
            assert_eq!(ct.nodes[i as usize].prev, prev);
            prev = i;
            i = ct.nodes[i as usize].next;
            n += 1;
        }
        assert_eq!(prev, ct.tail);
        assert_eq!(n, ct.len());
    }
}
