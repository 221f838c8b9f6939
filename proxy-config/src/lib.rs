//! The proxy configuration document: one declarative description of what a proxy serves.
//!
//! The document is exactly the gateway's YAML file format (`docs/gateway.md`), extended with
//! what the controller needs to describe for Envoy sidecars too: weighted endpoints with labels,
//! locality-grouped endpoints with priorities, outlier detection, health checks, retries and
//! named secrets. The controller's translator renders one [`ProxyConfig`] per proxy group; the
//! same type is what `causeway gateway --config FILE` reads, so there is one validation path
//! whatever the source.
//!
//! This crate only describes and (de)serializes the document; checking it and turning it into a
//! runtime configuration is the gateway's job (`causeway_gateway::config::file::compile`).

mod document;
pub mod envoy;

pub use document::*;
