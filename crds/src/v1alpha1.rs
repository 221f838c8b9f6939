//! API group `causeway.io`, version `v1alpha1`: the four user-facing kinds.
//!
//! Field names follow the API sketch in ARCHITECTURE.md §2 and are a contract: fields may be
//! added, never renamed. Every kind has a `status` with `observedGeneration` and Gateway-API-style
//! conditions (`Accepted`, `Programmed`, `ResolvedRefs`, `RolledOut`).

mod access_point;
mod cluster;
mod common;
mod external_service;
mod name_service;
mod policy;
mod route;

pub use access_point::*;
pub use cluster::*;
pub use common::*;
pub use external_service::*;
pub use name_service::*;
pub use policy::*;
pub use route::*;

/// The API group of every Causeway kind.
pub const GROUP: &str = "causeway.io";
/// The API version of this module's kinds.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in YAML.
pub const API_VERSION: &str = "causeway.io/v1alpha1";
