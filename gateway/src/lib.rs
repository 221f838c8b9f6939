//! The Causeway L7 gateway: ingress, egress and east-west proxy for the federation.
//!
//! - [`config`]: the configuration model and its static YAML file format;
//! - [`route`]: HTTP routing as a pure function of configuration and request head;
//! - [`sni`]: ClientHello SNI peeking for TLS passthrough;
//! - [`tls`]: per-SNI server certificates and upstream TLS origination (rustls, ring);
//! - [`proxy`]: listeners, the HTTP proxy, passthrough and TCP forwarding, upstream pools;
//! - [`lb`]: load-balancing decisions — priorities, localities, outlier detection, health
//!   checks, retries, circuit breaking, consistent hashing;
//! - [`admin`]: `/ready`, `/config_dump`, `/stats/prometheus`, `/logging`;
//! - [`metrics`]: the Prometheus metrics;
//! - [`app`]: the process around them — file watching, SIGHUP reload, SIGTERM drain;
//! - [`xds`]: the gateway fed by the controller's ADS (`--xds`) instead of a file;
//! - [`demo`]: the demo backend (`causeway demo-app`), the seeds' multiroute app.

pub mod admin;
pub mod app;
pub mod config;
pub mod demo;
pub mod lb;
pub mod metrics;
pub mod proxy;
pub mod route;
pub mod sni;
pub mod tls;
pub mod xds;

pub use app::{Options, RunError, Running, run, start};
pub use config::{Config, ConfigError};
pub use proxy::{Gateway, Limits};
