//! The Causeway L7 gateway: ingress, egress and east-west proxy for the federation.
//!
//! - [`config`]: the configuration model and its static YAML file format;
//! - [`route`]: HTTP routing as a pure function of configuration and request head;
//! - [`sni`]: ClientHello SNI peeking for TLS passthrough;
//! - [`tls`]: per-SNI server certificates and upstream TLS origination (rustls, ring);
//! - [`proxy`]: listeners, the HTTP proxy, passthrough and TCP forwarding.

pub mod config;
pub mod proxy;
pub mod route;
pub mod sni;
pub mod tls;

pub use config::{Config, ConfigError};
