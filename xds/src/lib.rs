//! Envoy v3 xDS (ADS) machinery shared by the controller (server) and the gateway and balancer
//! (clients).
