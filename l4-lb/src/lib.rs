//! The Causeway L4 balancer: owns the VIPs, picks a gateway per flow with Maglev, encapsulates in
//! IPIP for direct server return, and announces VIPs over BGP.
//!
//! Pure decision logic ([`config`], [`maglev`], [`conntrack`], [`health`], [`packet`],
//! [`balancer`]) is separate from the I/O at the edges (the userspace data path, the decap agent,
//! probes, BGP sessions, the admin server). See `docs/l4lb.md`.

pub mod admin;
pub mod app;
pub mod assign;
pub mod balancer;
pub mod bgp;
pub mod config;
pub mod conntrack;
pub mod datapath;
pub mod flow;
pub mod hash;
pub mod health;
pub mod maglev;
pub mod metrics;
pub mod packet;
pub mod sys;
pub mod xdp;
