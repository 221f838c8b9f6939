//! Loading resources from multi-document YAML.
//!
//! Every document is decoded on its own: a broken document is reported and the others still
//! load, so `causeway validate` and `causeway apply` show every problem in one run. Unknown
//! fields are errors (a misspelt field would otherwise vanish silently), and every object is
//! validated.

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::Value;

use crate::istio::{self, IstioObject};
use crate::strict::{self, DecodeError};
use crate::v1alpha1::{self, AccessPoint, Cluster, ExternalService, NameService};
use crate::validation::{FieldPath, Report, Validate};

/// A decoded object of any kind the project reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `causeway.io/v1alpha1` Cluster.
    Cluster(Box<Cluster>),
    /// `causeway.io/v1alpha1` AccessPoint.
    AccessPoint(Box<AccessPoint>),
    /// `causeway.io/v1alpha1` NameService.
    NameService(Box<NameService>),
    /// `causeway.io/v1alpha1` ExternalService.
    ExternalService(Box<ExternalService>),
    /// Core `v1` Secret (certificates, CA bundles, kubeconfigs).
    Secret(Box<Secret>),
    /// An Istio `networking.istio.io` object.
    Istio(Box<IstioObject>),
}

impl Resource {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Cluster(_) => "Cluster",
            Resource::AccessPoint(_) => "AccessPoint",
            Resource::NameService(_) => "NameService",
            Resource::ExternalService(_) => "ExternalService",
            Resource::Secret(_) => "Secret",
            Resource::Istio(o) => o.kind(),
        }
    }

    /// Validates the object.
    pub fn validate(&self) -> Report {
        match self {
            Resource::Cluster(o) => o.validate(),
            Resource::AccessPoint(o) => o.validate(),
            Resource::NameService(o) => o.validate(),
            Resource::ExternalService(o) => o.validate(),
            Resource::Secret(o) => validate_secret(o),
            Resource::Istio(o) => o.validate(),
        }
    }
}

/// Checks what a Secret must hold to be usable by the kinds that refer to it. Values are never
/// echoed: messages name keys only.
fn validate_secret(secret: &Secret) -> Report {
    let mut report = Report::new();
    crate::v1alpha1::validate_metadata(&secret.metadata, true, &mut report);
    let has = |key: &str| {
        secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key))
    };
    match secret.type_.as_deref() {
        Some("kubernetes.io/tls") => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    report.error(
                        &FieldPath::root("data").key(key),
                        format!("a kubernetes.io/tls Secret needs {key} (PEM)"),
                    );
                }
            }
        }
        Some("Opaque") | None => {}
        Some(_) => {}
    }
    report
}

/// Why a document could not be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not YAML (or not the YAML subset JSON can represent).
    #[error("YAML syntax error: {0}")]
    Syntax(String),
    /// The document is not a mapping.
    #[error("a resource must be a mapping with apiVersion, kind, metadata and spec")]
    NotAnObject,
    /// `apiVersion` or `kind` is missing.
    #[error("{0} is missing: every resource needs apiVersion and kind")]
    MissingField(&'static str),
    /// A kind this project does not read.
    #[error(
        "unknown kind {kind:?} in {api_version:?}: Causeway reads causeway.io/v1alpha1 Cluster, \
         AccessPoint, NameService, ExternalService; v1 Secret; networking.istio.io \
         WorkloadEntry, ServiceEntry, DestinationRule, VirtualService, Gateway"
    )]
    UnknownKind {
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
    /// A causeway.io version this build does not serve.
    #[error("apiVersion {0:?} is not served: use causeway.io/v1alpha1")]
    UnsupportedVersion(String),
    /// A field has the wrong type or an unknown value.
    #[error("{0}")]
    Decode(DecodeError),
}

/// One document of a YAML stream, decoded and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// Position of the document in its stream (0-based), counting empty documents.
    pub index: usize,
    /// `kind` as written (available even when decoding failed).
    pub kind: Option<String>,
    /// `metadata.name` as written.
    pub name: Option<String>,
    /// `metadata.namespace` as written.
    pub namespace: Option<String>,
    /// The object, or why it could not be decoded.
    pub resource: Result<Resource, LoadError>,
    /// Unknown fields and validation findings (empty when decoding failed).
    pub report: Report,
    /// The document as written (what `causeway apply` sends).
    pub source: Option<Value>,
}

impl Loaded {
    /// `KIND/NAME` as printed by `causeway validate`.
    pub fn display_name(&self) -> String {
        format!(
            "{}/{}",
            self.kind.as_deref().unwrap_or("<no kind>"),
            self.name.as_deref().unwrap_or("<no name>")
        )
    }

    /// Whether the document decoded and validated without errors.
    pub fn is_ok(&self) -> bool {
        self.resource.is_ok() && self.report.is_ok()
    }
}

/// Decodes and validates every document of a YAML stream. Empty documents (only comments or
/// `---`) are skipped; a syntax error ends the stream, since the parser cannot resynchronise.
pub fn load_yaml(text: &str) -> Vec<Loaded> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(value) => out.push(load_value(index, value)),
            Err(e) => {
                out.push(Loaded {
                    index,
                    kind: None,
                    name: None,
                    namespace: None,
                    resource: Err(LoadError::Syntax(e.to_string())),
                    report: Report::new(),
                    source: None,
                });
                break;
            }
        }
    }
    out
}

/// Decodes and validates one JSON/YAML value.
pub fn load_value(index: usize, value: Value) -> Loaded {
    let str_at = |ptr: &str| {
        value
            .pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let kind = str_at("/kind");
    let name = str_at("/metadata/name");
    let namespace = str_at("/metadata/namespace");
    let source = Some(value.clone());
    let (resource, report) = match decode(value) {
        Ok((resource, dropped)) => {
            let mut report = Report::new();
            for path in dropped {
                report.error(
                    &path,
                    "unknown field: not part of this kind's schema (check spelling and indentation)",
                );
            }
            for f in resource.validate().into_findings() {
                match f.severity {
                    crate::Severity::Error => report.error(&f.path, f.message),
                    crate::Severity::Warning => report.warning(&f.path, f.message),
                }
            }
            (Ok(resource), report)
        }
        Err(e) => (Err(e), Report::new()),
    };
    Loaded {
        index,
        kind,
        name,
        namespace,
        resource,
        report,
        source,
    }
}

fn decode(value: Value) -> Result<(Resource, Vec<FieldPath>), LoadError> {
    let Value::Object(map) = &value else {
        return Err(LoadError::NotAnObject);
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(LoadError::MissingField("apiVersion"))?
        .to_owned();
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(LoadError::MissingField("kind"))?
        .to_owned();
    let (group, _version) = api_version.split_once('/').unwrap_or(("", &api_version));
    fn typed<T, F>(value: Value, wrap: F) -> Result<(Resource, Vec<FieldPath>), LoadError>
    where
        T: serde::de::DeserializeOwned + serde::Serialize,
        F: FnOnce(T) -> Resource,
    {
        let (t, dropped) = strict::decode_with_path::<T>(value).map_err(LoadError::Decode)?;
        Ok((wrap(t), dropped))
    }
    match (group, kind.as_str()) {
        (v1alpha1::GROUP, _) if api_version != v1alpha1::API_VERSION => {
            Err(LoadError::UnsupportedVersion(api_version))
        }
        (v1alpha1::GROUP, "Cluster") => typed(value, |o| Resource::Cluster(Box::new(o))),
        (v1alpha1::GROUP, "AccessPoint") => typed(value, |o| Resource::AccessPoint(Box::new(o))),
        (v1alpha1::GROUP, "NameService") => typed(value, |o| Resource::NameService(Box::new(o))),
        (v1alpha1::GROUP, "ExternalService") => {
            typed(value, |o| Resource::ExternalService(Box::new(o)))
        }
        ("", "Secret") if api_version == "v1" => typed(value, |o| Resource::Secret(Box::new(o))),
        ("networking.istio.io", _) => {
            let (o, dropped) = istio::decode_value(value).map_err(|e| {
                LoadError::Decode(DecodeError {
                    path: FieldPath::default(),
                    message: e.to_string(),
                })
            })?;
            Ok((Resource::Istio(Box::new(o)), dropped))
        }
        _ => Err(LoadError::UnknownKind { api_version, kind }),
    }
}
