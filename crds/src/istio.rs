//! Istio `networking.istio.io/v1` types Causeway reads (backends outside Kubernetes, users'
//! existing routing) and writes (generated objects for Istio-managed member clusters):
//! [`VirtualService`], [`DestinationRule`], [`Gateway`], [`ServiceEntry`], [`WorkloadEntry`].
//!
//! The types follow Istio's API field for field (camelCase, enums spelled as Istio spells them,
//! oneofs as structs of options checked by validation), so any Istio YAML round-trips. Objects
//! written as `v1alpha3` or `v1beta1` have the same schema and are read as `v1`. Istio ships the
//! CRD manifests; the types still derive `JsonSchema` because kube's derive needs it.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::strict::{self, DecodeError};
use crate::validation::{FieldError, FieldPath, Report, Validate};

mod common;
mod destination_rule;
mod gateway;
mod service_entry;
mod virtual_service;
mod workload_entry;

pub use common::*;
pub use destination_rule::*;
pub use gateway::*;
pub use service_entry::*;
pub use virtual_service::*;
pub use workload_entry::*;

/// The API group of the Istio networking kinds.
pub const GROUP: &str = "networking.istio.io";
/// The version the types serialize as.
pub const VERSION: &str = "v1";
/// `apiVersion` as written on output.
pub const API_VERSION: &str = "networking.istio.io/v1";
/// `apiVersion`s accepted on input: Istio serves the same schema under all three.
pub const ACCEPTED_API_VERSIONS: [&str; 3] = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
];
/// The kinds [`decode_value`] understands.
pub const KINDS: [&str; 5] = [
    "VirtualService",
    "DestinationRule",
    "Gateway",
    "ServiceEntry",
    "WorkloadEntry",
];

/// One decoded Istio object of any supported kind (boxed: the kinds differ a lot in size).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum IstioObject {
    /// A `VirtualService`.
    VirtualService(Box<VirtualService>),
    /// A `DestinationRule`.
    DestinationRule(Box<DestinationRule>),
    /// A `Gateway`.
    Gateway(Box<Gateway>),
    /// A `ServiceEntry`.
    ServiceEntry(Box<ServiceEntry>),
    /// A `WorkloadEntry`.
    WorkloadEntry(Box<WorkloadEntry>),
}

impl IstioObject {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            IstioObject::VirtualService(_) => "VirtualService",
            IstioObject::DestinationRule(_) => "DestinationRule",
            IstioObject::Gateway(_) => "Gateway",
            IstioObject::ServiceEntry(_) => "ServiceEntry",
            IstioObject::WorkloadEntry(_) => "WorkloadEntry",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            IstioObject::VirtualService(o) => &o.metadata,
            IstioObject::DestinationRule(o) => &o.metadata,
            IstioObject::Gateway(o) => &o.metadata,
            IstioObject::ServiceEntry(o) => &o.metadata,
            IstioObject::WorkloadEntry(o) => &o.metadata,
        }
    }

    /// Validates the object on its own (see [`validate_together`] for checks across objects).
    pub fn validate(&self) -> Report {
        match self {
            IstioObject::VirtualService(o) => o.validate(),
            IstioObject::DestinationRule(o) => o.validate(),
            IstioObject::Gateway(o) => o.validate(),
            IstioObject::ServiceEntry(o) => o.validate(),
            IstioObject::WorkloadEntry(o) => o.validate(),
        }
    }
}

/// Why a document could not be decoded as an Istio object.
#[derive(Debug, thiserror::Error)]
pub enum IstioDecodeError {
    /// The document has no `apiVersion`.
    #[error("apiVersion is missing: add apiVersion: networking.istio.io/v1 above kind")]
    MissingApiVersion,
    /// The `apiVersion` is not one Istio serves these kinds under.
    #[error(
        "apiVersion {0:?} is not supported: use networking.istio.io/v1 (v1beta1 and v1alpha3 \
         are read as v1)"
    )]
    UnsupportedApiVersion(String),
    /// The document has no `kind`.
    #[error(
        "kind is missing: add kind (one of VirtualService, DestinationRule, Gateway, \
         ServiceEntry, WorkloadEntry)"
    )]
    MissingKind,
    /// The kind is not one Causeway reads.
    #[error(
        "kind {0:?} is not an Istio kind Causeway reads: supported kinds are VirtualService, \
         DestinationRule, Gateway, ServiceEntry and WorkloadEntry"
    )]
    UnknownKind(String),
    /// A field has the wrong type or an unknown enum value.
    #[error("{kind}: {error}")]
    Invalid {
        /// The kind being decoded.
        kind: &'static str,
        /// The failing field and serde's description of the problem (shown in this error's
        /// message, so not chained as a source).
        error: DecodeError,
    },
}

impl IstioDecodeError {
    /// The field the error is about, when known (`apiVersion`, `kind`, or the bad field).
    pub fn path(&self) -> Option<FieldPath> {
        match self {
            IstioDecodeError::MissingApiVersion | IstioDecodeError::UnsupportedApiVersion(_) => {
                Some(FieldPath::root("apiVersion"))
            }
            IstioDecodeError::MissingKind | IstioDecodeError::UnknownKind(_) => {
                Some(FieldPath::root("kind"))
            }
            IstioDecodeError::Invalid { error, .. } => {
                Some(error.path.clone()).filter(|p| !p.as_str().is_empty())
            }
        }
    }
}

/// Decodes one document (already parsed from YAML) into the Istio kind its `kind` names.
///
/// Returns the object and the paths of fields the types do not know (misspellings, removed
/// fields such as `circuitBreaker`), which a strict caller reports as errors.
pub fn decode_value(value: Value) -> Result<(IstioObject, Vec<FieldPath>), IstioDecodeError> {
    match value.get("apiVersion").and_then(Value::as_str) {
        None => return Err(IstioDecodeError::MissingApiVersion),
        Some(v) if !ACCEPTED_API_VERSIONS.contains(&v) => {
            return Err(IstioDecodeError::UnsupportedApiVersion(v.to_owned()));
        }
        Some(_) => {}
    }
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(IstioDecodeError::MissingKind)?
        .to_owned();
    match kind.as_str() {
        "VirtualService" => decode_as(value, "VirtualService", |o| {
            IstioObject::VirtualService(Box::new(o))
        }),
        "DestinationRule" => decode_as(value, "DestinationRule", |o| {
            IstioObject::DestinationRule(Box::new(o))
        }),
        "Gateway" => decode_as(value, "Gateway", |o| IstioObject::Gateway(Box::new(o))),
        "ServiceEntry" => decode_as(value, "ServiceEntry", |o| {
            IstioObject::ServiceEntry(Box::new(o))
        }),
        "WorkloadEntry" => decode_as(value, "WorkloadEntry", |o| {
            IstioObject::WorkloadEntry(Box::new(o))
        }),
        _ => Err(IstioDecodeError::UnknownKind(kind)),
    }
}

fn decode_as<T: DeserializeOwned + Serialize>(
    value: Value,
    kind: &'static str,
    wrap: fn(T) -> IstioObject,
) -> Result<(IstioObject, Vec<FieldPath>), IstioDecodeError> {
    let (obj, dropped) = strict::decode_with_path::<T>(value)
        .map_err(|error| IstioDecodeError::Invalid { kind, error })?;
    Ok((wrap(obj), dropped))
}

/// Checks that need several objects at once (a file, or everything in a namespace); each
/// finding carries the index of the object it is about.
///
/// - an `http` route to a ServiceEntry host whose ports are all HTTPS/TLS, with no
///   DestinationRule originating TLS: plain HTTP is sent to a TLS port (warning);
/// - a VirtualService that is another's delegate but has `hosts`: Istio only takes
///   VirtualServices without hosts as delegates, so the delegation finds nothing (warning).
pub fn validate_together(objects: &[IstioObject]) -> Vec<(usize, FieldError)> {
    let mut report: Vec<(usize, FieldError)> = Vec::new();
    let mut warn = |i: usize, path: FieldPath, message: String| {
        let mut r = Report::new();
        r.warning(&path, message);
        report.extend(r.into_findings().into_iter().map(|f| (i, f)));
    };
    for (i, obj) in objects.iter().enumerate() {
        let IstioObject::VirtualService(vs) = obj else {
            continue;
        };
        let http_path = FieldPath::root("spec").field("http");
        for (r, rule) in vs.spec.http.iter().enumerate() {
            for (d, dest) in rule.route.iter().enumerate() {
                let host = &dest.destination.host;
                let port = dest.destination.port.as_ref().map(|p| p.number);
                if let Some(msg) = http_to_tls_entry(objects, host, port) {
                    let p = http_path
                        .index(r)
                        .field("route")
                        .index(d)
                        .field("destination")
                        .field("host");
                    warn(i, p, msg);
                }
            }
            if let Some(delegate) = &rule.delegate {
                let ns = delegate
                    .namespace
                    .as_ref()
                    .or(vs.metadata.namespace.as_ref());
                for (j, other) in objects.iter().enumerate() {
                    let IstioObject::VirtualService(child) = other else {
                        continue;
                    };
                    if child.metadata.name.as_deref() == Some(delegate.name.as_str())
                        && child.metadata.namespace.as_ref() == ns
                        && !child.spec.hosts.is_empty()
                    {
                        warn(
                            j,
                            FieldPath::root("spec").field("hosts"),
                            format!(
                                "this VirtualService is the delegate of {:?} (http[{r}]) but \
                                 sets hosts: Istio only takes VirtualServices without hosts as \
                                 delegates, so the delegated requests find no rules; remove \
                                 hosts",
                                vs.metadata.name.as_deref().unwrap_or_default()
                            ),
                        );
                    }
                }
            }
        }
    }
    report
}

/// The warning for an HTTP route to `host[:port]`, if a ServiceEntry declares that host with only
/// TLS ports and no DestinationRule originates TLS to it.
fn http_to_tls_entry(objects: &[IstioObject], host: &str, port: Option<u32>) -> Option<String> {
    for obj in objects {
        let IstioObject::ServiceEntry(se) = obj else {
            continue;
        };
        if !se.spec.hosts.iter().any(|h| h == host) {
            continue;
        }
        let ports: Vec<&ServicePort> = se
            .spec
            .ports
            .iter()
            .filter(|p| port.is_none_or(|n| p.number == n))
            .collect();
        if ports.is_empty() || !ports.iter().all(|p| p.protocol.is_tls()) {
            continue;
        }
        if ports
            .iter()
            .all(|p| originates_tls(objects, host, p.number))
        {
            continue;
        }
        let listed: Vec<String> = ports
            .iter()
            .map(|p| format!("{} {}", p.number, p.protocol.as_str()))
            .collect();
        return Some(format!(
            "{host} is declared by ServiceEntry {:?} with TLS ports only ({}): an http route \
             sends plain HTTP there; use a tls route with sniHosts to pass TLS through, or add a \
             DestinationRule with tls.mode SIMPLE to originate TLS",
            se.metadata.name.as_deref().unwrap_or_default(),
            listed.join(", ")
        ));
    }
    None
}

fn originates_tls(objects: &[IstioObject], host: &str, port: u32) -> bool {
    let originating = |t: Option<&ClientTlsSettings>| {
        matches!(
            t.and_then(|t| t.mode),
            Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
        )
    };
    objects.iter().any(|o| match o {
        IstioObject::DestinationRule(dr) if dr.spec.host == host => {
            dr.spec.traffic_policy.as_ref().is_some_and(|tp| {
                originating(tp.tls.as_ref())
                    || tp
                        .port_level_settings
                        .iter()
                        .any(|p| p.port.number == port && originating(p.tls.as_ref()))
            })
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dispatches_on_kind_and_reads_old_versions() {
        let v = json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "DestinationRule",
            "metadata": {"name": "reviews"}, "spec": {"host": "reviews", "bogus": 1}});
        let (obj, dropped) = decode_value(v).unwrap();
        assert_eq!(obj.kind(), "DestinationRule");
        assert_eq!(dropped, [FieldPath::root("spec").field("bogus")]);
        let out = serde_json::to_value(&obj).unwrap();
        assert_eq!(out["apiVersion"], API_VERSION);
    }

    #[test]
    fn refuses_unknown_kinds_and_versions() {
        let e = decode_value(json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar"}))
            .unwrap_err();
        assert!(
            e.to_string().contains("VirtualService, DestinationRule"),
            "{e}"
        );
        assert_eq!(e.path(), Some(FieldPath::root("kind")));
        let e = decode_value(json!({"kind": "Gateway"})).unwrap_err();
        assert!(matches!(e, IstioDecodeError::MissingApiVersion));
        let e = decode_value(json!({"apiVersion": "networking.istio.io/v2", "kind": "Gateway"}))
            .unwrap_err();
        assert!(matches!(e, IstioDecodeError::UnsupportedApiVersion(_)));
    }

    #[test]
    fn locates_serde_errors() {
        let v = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "r"},
            "spec": {"host": "r", "trafficPolicy": {"loadBalancer": {"simple": "LAST_REQUSULT"}}}});
        let e = decode_value(v).unwrap_err();
        assert_eq!(
            e.path().unwrap().as_str(),
            "spec.trafficPolicy.loadBalancer.simple"
        );
        assert!(
            e.to_string().contains("unknown variant `LAST_REQUSULT`"),
            "{e}"
        );
        let v = json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "g"},
            "spec": {"servers": [{"hosts": ["*"], "port": {"number": 80, "name": "http",
                "protocol": "HTTP3"}}]}});
        let e = decode_value(v).unwrap_err();
        assert_eq!(e.path().unwrap().as_str(), "spec.servers[0].port.protocol");
    }

    #[test]
    fn cross_checks() {
        let docs = [
            json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                "metadata": {"name": "mysw"},
                "spec": {"hosts": ["www.example.com"], "resolution": "DNS",
                    "ports": [{"number": 443, "name": "https", "protocol": "HTTPS"}]}}),
            json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
                "metadata": {"name": "vs"},
                "spec": {"hosts": ["www.example.com"],
                    "http": [{"route": [{"destination": {"host": "www.example.com"}}]}]}}),
        ];
        let objs: Vec<IstioObject> = docs
            .iter()
            .map(|d| decode_value(d.clone()).unwrap().0)
            .collect();
        let found = validate_together(&objs);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 1);
        assert_eq!(
            found[0].1.path.as_str(),
            "spec.http[0].route[0].destination.host"
        );
        let dr = json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "tls"},
            "spec": {"host": "www.example.com", "trafficPolicy": {"portLevelSettings": [
                {"port": {"number": 443}, "tls": {"mode": "SIMPLE"}}]}}});
        let mut objs = objs;
        objs.push(decode_value(dr).unwrap().0);
        assert!(validate_together(&objs).is_empty());
    }
}
