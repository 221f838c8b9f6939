//! Circuit breaking: per-cluster limits on requests in flight, requests waiting, and retries.
//!
//! Counters are atomics; a request takes a [`RequestPermit`] with one compare-and-swap when
//! under the limit. Over the limit, an HTTP1 cluster lets the request wait for a slot if fewer
//! than `http1MaxPendingRequests` already wait (the wait is bounded by the route timeout);
//! otherwise — and always for HTTP2 — the request overflows: `503` with response flag `UO`
//! and `x-envoy-overloaded: true`, as Envoy answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// The counters of one cluster.
#[derive(Debug)]
pub struct Breaker {
    max_requests: u64,
    max_pending: u64,
    requests: AtomicU64,
    pending: AtomicU64,
    retries: AtomicU64,
    freed: Notify,
}

/// A request slot, released when dropped.
#[derive(Debug)]
pub struct RequestPermit(Arc<Breaker>);

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

/// A retry in flight, released when dropped.
#[derive(Debug)]
pub struct RetryPermit(Arc<Breaker>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

struct PendingGuard<'a>(&'a AtomicU64);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Breaker {
    /// A breaker allowing `max_requests` in flight and `max_pending` waiting.
    pub fn new(max_requests: u32, max_pending: u32) -> Breaker {
        Breaker {
            max_requests: u64::from(max_requests),
            max_pending: u64::from(max_pending),
            requests: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    /// A request slot if one is free now.
    pub fn try_request(self: &Arc<Self>) -> Option<RequestPermit> {
        let mut cur = self.requests.load(Ordering::Relaxed);
        loop {
            if cur >= self.max_requests {
                return None;
            }
            match self.requests.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(RequestPermit(self.clone())),
                Err(now) => cur = now,
            }
        }
    }

    /// A request slot, waiting for one when `may_wait` and the pending queue has room; `None`
    /// is an overflow. Cancel-safe: dropping the future leaves the counters right.
    pub async fn request(self: &Arc<Self>, may_wait: bool) -> Option<RequestPermit> {
        if let Some(p) = self.try_request() {
            return Some(p);
        }
        if !may_wait {
            return None;
        }
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let _pending = PendingGuard(&self.pending);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(p) = self.try_request() {
                return Some(p);
            }
            freed.await;
        }
    }

    /// Requests in flight.
    pub fn active(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests waiting.
    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Retries in flight.
    pub fn active_retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Counts a retry in flight if `allowed(active retries)` says it fits.
    pub fn try_retry(self: &Arc<Self>, allowed: impl Fn(u64) -> bool) -> Option<RetryPermit> {
        let mut cur = self.retries.load(Ordering::Relaxed);
        loop {
            if !allowed(cur) {
                return None;
            }
            match self.retries.compare_exchange_weak(
                cur,
                cur + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(RetryPermit(self.clone())),
                Err(now) => cur = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_and_returned() {
        let b = Arc::new(Breaker::new(2, 0));
        let p1 = b.try_request();
        let p2 = b.try_request();
        assert!(p1.is_some() && p2.is_some());
        assert!(b.try_request().is_none());
        drop(p1);
        assert!(b.try_request().is_some());
        assert_eq!(b.active(), 1);
    }

    #[tokio::test]
    async fn pending_requests_wait_for_a_slot_or_overflow() {
        let b = Arc::new(Breaker::new(1, 1));
        let first = b.try_request();
        assert!(first.is_some());
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move { b.request(true).await.is_some() })
        };
        // Wait until the waiter is queued, then a third request overflows the queue.
        while b.pending() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(b.request(true).await.is_none(), "pending queue full");
        assert!(b.request(false).await.is_none(), "HTTP2: no waiting");
        drop(first);
        assert!(waiter.await.unwrap());
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn retries_are_counted_against_the_budget() {
        let b = Arc::new(Breaker::new(u32::MAX, u32::MAX));
        let r1 = b.try_retry(|n| n < 2);
        let r2 = b.try_retry(|n| n < 2);
        assert!(r1.is_some() && r2.is_some());
        assert!(b.try_retry(|n| n < 2).is_none());
        drop(r1);
        assert_eq!(b.active_retries(), 1);
    }
}
