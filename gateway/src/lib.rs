//! The Causeway L7 gateway: ingress, egress and east-west proxy for the federation.
//!
//! Listeners, TLS, routing and upstream clusters land here; its configuration comes from a static
//! file or from the controller over xDS.
