//! Causeway's resource types: the contract every other component reads.
//!
//! - [`v1alpha1`]: the user-facing kinds of API group `causeway.io` (`Cluster`, `AccessPoint`,
//!   `NameService`, `ExternalService`) with their status types;
//! - [`istio`]: the `networking.istio.io/v1` kinds Causeway reads (backends outside Kubernetes)
//!   and writes (generated objects for Istio-managed member clusters);
//! - [`validation`]: field-path validation of every kind, returning every problem at once;
//! - [`document`]: multi-document YAML loading into typed resources, refusing unknown fields;
//! - [`manifests`]: the CRD manifests generated from the types.

pub mod document;
pub mod duration;
pub mod istio;

pub mod manifests;
pub mod strict;
pub mod v1alpha1;
pub mod validation;

pub use validation::{FieldError, FieldPath, Report, Severity, Validate};
