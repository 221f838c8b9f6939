//! Load-balancing decisions, as pure data structures and functions; the proxy (I/O) calls them.
//!
//! - [`priority`]: Envoy's priority levels and locality weights with the overprovisioning
//!   factor 1.4 — how much traffic each priority and locality takes given its health;
//! - [`table`]: the per-cluster pick table built from those loads (rebuilt when health changes,
//!   read lock-free per request);
//! - [`outlier`]: outlier detection — consecutive-error counters and the ejection state machine;
//! - [`health`]: active health-check thresholds;
//! - [`retry`]: retry conditions, the retry budget and the `x-envoy-*` override headers;
//! - [`breaker`]: circuit-breaker counters (requests, pending requests, retries);
//! - [`maglev`]: the Maglev consistent-hash table and the hash function.

pub mod breaker;
pub mod health;
pub mod maglev;
pub mod outlier;
pub mod priority;
pub mod retry;
pub mod table;
