//! Istio `networking.istio.io/v1` types (being written; temporary interface stub).

use crate::validation::{FieldPath, Report};

/// Any Istio object.
#[derive(Debug, Clone, PartialEq)]
pub enum IstioObject {}

impl IstioObject {
    /// Kind.
    pub fn kind(&self) -> &'static str {
        match *self {}
    }
    /// Validate.
    pub fn validate(&self) -> Report {
        match *self {}
    }
}

/// Decode error.
#[derive(Debug, thiserror::Error)]
#[error("istio types not yet available")]
pub struct IstioDecodeError;

/// Decodes.
pub fn decode_value(
    _v: serde_json::Value,
) -> Result<(IstioObject, Vec<FieldPath>), IstioDecodeError> {
    Err(IstioDecodeError)
}
