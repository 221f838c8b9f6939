//! The federation controller: it reconciles `Cluster`, `AccessPoint`, `NameService` and
//! `ExternalService` resources (see the `causeway-crds` crate) into the desired state of every
//! member cluster's gateways, sidecars and L4 balancers.
//!
//! The store, API, translator, IPAM and rollout engine land here; the contracts they read are
//! fixed by `causeway-crds`.

pub mod api;
pub mod ipam;
pub mod l4lb;
pub mod placement;
pub mod proxies;
pub mod push;
pub mod reconcile;
pub mod run;
pub mod status;
pub mod store;
pub mod translate;
