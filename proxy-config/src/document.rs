//! The document types and their strict YAML decoding.
//!
//! Field names are the file format's contract (camelCase, as in `docs/gateway.md`). Decoding is
//! deliberately lenient about enum-like strings (`protocol: HTTPX` decodes to
//! [`Protocol::Unknown`]) so that validation can report every such problem in one run, and strict
//! about unknown keys (a misspelt `virtualHost:` would otherwise vanish). Serialization leaves out
//! empty and unset fields so that rendered documents stay short.

use std::collections::BTreeMap;
use std::fmt;

use causeway_crds::strict;
use causeway_crds::validation::{FieldError, Report};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// Why a document could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The text is not YAML (or JSON).
    #[error("proxy config is not valid YAML: {0}")]
    Syntax(String),
    /// The text is YAML, but fields have the wrong type or are unknown; every problem found is
    /// listed with its field path.
    #[error("proxy config has {} problem(s):\n  {}", .0.len(), render(.0))]
    Invalid(Vec<FieldError>),
}

fn render(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// A whole proxy configuration: what one proxy (or every proxy of a group) serves.
///
/// Listeners name virtual hosts, routes and listeners name clusters, and certificates may name
/// secrets; all references are by name inside the one document.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// Sockets the proxy accepts connections on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    /// HTTP virtual hosts with their routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// Upstream clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Cluster>,
    /// Named certificates, keys and CA bundles that listeners and clusters refer to (Envoy's SDS
    /// secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<Secret>,
}

impl ProxyConfig {
    /// Decodes YAML (or JSON) text. An empty text is an empty document. Unknown fields are
    /// errors, all of them reported at once.
    pub fn from_yaml(text: &str) -> Result<ProxyConfig, DecodeError> {
        let value: Value =
            serde_yaml::from_str(text).map_err(|e| DecodeError::Syntax(e.to_string()))?;
        ProxyConfig::from_value(value)
    }

    /// Decodes an already parsed JSON value; see [`ProxyConfig::from_yaml`].
    pub fn from_value(value: Value) -> Result<ProxyConfig, DecodeError> {
        let mut value = match value {
            Value::Null => Value::Object(Default::default()),
            v => v,
        };
        strip_defaults(&mut value);
        let (doc, dropped) = strict::decode_with_path::<ProxyConfig>(value).map_err(|e| {
            let mut r = Report::new();
            r.error(&e.path, e.message);
            DecodeError::Invalid(r.into_findings())
        })?;
        if dropped.is_empty() {
            return Ok(doc);
        }
        let mut report = Report::new();
        for path in dropped {
            report.error(
                &path,
                "unknown field: check its spelling against docs/gateway.md",
            );
        }
        Err(DecodeError::Invalid(report.into_findings()))
    }

    /// The document as YAML, empty and unset fields left out. Private keys are included: use
    /// [`ProxyConfig::redacted`] first for anything a person reads.
    pub fn to_yaml(&self) -> String {
        // Every type here serializes to plain maps, lists and strings: this cannot fail.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// A copy with every inline private key replaced by `[redacted]`, for dumps and
    /// `causeway get rendered`.
    pub fn redacted(&self) -> ProxyConfig {
        let mut doc = self.clone();
        let redact = |k: &mut Option<PrivateKeyPem>| {
            if let Some(k) = k {
                *k = PrivateKeyPem(REDACTED.to_owned());
            }
        };
        for l in &mut doc.listeners {
            if let Some(tls) = &mut l.tls {
                for c in &mut tls.certificates {
                    redact(&mut c.key_pem);
                }
            }
        }
        for c in &mut doc.clusters {
            if let Some(tls) = &mut c.tls {
                redact(&mut tls.client_key_pem);
            }
        }
        for s in &mut doc.secrets {
            redact(&mut s.key_pem);
        }
        doc
    }

    /// The secret called `name`.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.iter().find(|s| s.name == name)
    }

    /// The cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    /// The virtual host called `name`.
    pub fn virtual_host(&self, name: &str) -> Option<&VirtualHost> {
        self.virtual_hosts.iter().find(|v| v.name == name)
    }
}

const REDACTED: &str = "[redacted]";

/// Keys whose value equals the default are removed before the strict decode: serialization
/// leaves defaults out (tidy output), and the strict decode would otherwise call an explicit
/// `httpsRedirect: false` an unknown field. Maps with user-chosen keys are not touched.
fn strip_defaults(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, v| !is_default(k, v));
            for (k, v) in m.iter_mut() {
                if !matches!(k.as_str(), "labels" | "set" | "add") {
                    strip_defaults(v);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_defaults),
        _ => {}
    }
}

fn is_default(key: &str, v: &Value) -> bool {
    match (key, v) {
        ("httpsRedirect" | "default" | "invert" | "useSourceIp", Value::Bool(false)) => true,
        ("priority", Value::Number(n)) => n.as_u64() == Some(0),
        ("region" | "zone" | "subzone" | "body", Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An enum written as a string, decoded leniently: an unknown string becomes `Unknown` so that
/// validation can report it with the others instead of failing the decode.
macro_rules! lenient_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
            /// A value this version does not know (kept so that validation can name it).
            Unknown(String),
        }

        impl $name {
            /// The value as written in the document.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)+
                    other => $name::Unknown(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::from(s.as_str()))
            }
        }
    };
}

lenient_enum! {
    /// What a listener speaks.
    Protocol {
        /// Plain-text HTTP/1.1 and HTTP/2 (prior knowledge).
        Http = "HTTP",
        /// TLS-terminated HTTP/1.1 and HTTP/2 (ALPN).
        Https = "HTTPS",
        /// TLS forwarded untouched to a cluster chosen by the ClientHello's SNI.
        TlsPassthrough = "TLS_PASSTHROUGH",
        /// Raw TCP forwarded to one cluster.
        Tcp = "TCP",
    }
}

impl Default for Protocol {
    /// No protocol written: validation asks for one.
    fn default() -> Self {
        Protocol::Unknown(String::new())
    }
}

lenient_enum! {
    /// How a cluster member is picked.
    LbPolicy {
        /// In turn (the default).
        RoundRobin = "round_robin",
        /// The less busy of two random members.
        LeastRequest = "least_request",
        /// Uniformly at random.
        Random = "random",
    }
}

lenient_enum! {
    /// The HTTP version spoken to a cluster.
    UpstreamProtocol {
        /// HTTP/1.1 with keep-alive (the default).
        Http1 = "HTTP1",
        /// HTTP/2: prior knowledge in clear text, ALPN `h2` over TLS.
        Http2 = "HTTP2",
    }
}

lenient_enum! {
    /// TLS origination mode.
    TlsMode {
        /// Verify the server.
        Simple = "SIMPLE",
        /// Verify the server and present a client certificate.
        Mutual = "MUTUAL",
    }
}

impl Default for TlsMode {
    /// No mode written: validation asks for one.
    fn default() -> Self {
        TlsMode::Unknown(String::new())
    }
}

/// PEM text of a private key. It serializes as written (the document must carry it to the
/// proxy), but never appears in `Debug` output; see also [`ProxyConfig::redacted`].
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct PrivateKeyPem(pub String);

impl fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKeyPem([redacted])")
    }
}

impl From<&str> for PrivateKeyPem {
    fn from(s: &str) -> Self {
        PrivateKeyPem(s.to_owned())
    }
}

/// A socket a proxy serves, and what it does with connections to it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Unique name, used in stats and logs.
    #[serde(default)]
    pub name: String,
    /// `IP:port` to listen on.
    #[serde(default)]
    pub address: String,
    /// What the listener speaks; the fields below apply to some protocols only.
    #[serde(default)]
    pub protocol: Protocol,
    /// HTTP only: answer every request with a 301 to its `https` URL instead of routing it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub https_redirect: bool,
    /// HTTPS only (required there): the certificates presented, by SNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// HTTP and HTTPS: the virtual hosts routed with, in order; `None` means all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_hosts: Option<Vec<String>>,
    /// TLS_PASSTHROUGH only (required there): SNI routes, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_routes: Vec<SniRoute>,
    /// TCP only (required there): the cluster connections go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// HTTP and HTTPS: client networks (CIDR, e.g. `10.0.0.0/8`, `127.0.0.1/32`) whose
    /// `x-envoy-max-retries` and `x-envoy-upstream-rq-timeout-ms` headers are honoured. From any
    /// other client those headers are removed and ignored; unset = no client is trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_sources: Vec<String>,
}

/// The certificates a terminating listener presents.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTls {
    /// Certificates, each for some SNI names; at most one is the default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<ServerCertificate>,
}

/// One certificate chain and key, and the SNI names it is selected for.
///
/// The chain and key come from exactly one source: files (`certFile` + `keyFile`), inline PEM
/// (`certPem` + `keyPem`), or a named [`Secret`] (`certSecret`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerCertificate {
    /// Exact names and one-label `*.` wildcards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// Used when the client sent no SNI or no name matched.
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    /// PEM chain file, leaf first; relative paths resolve against the document's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Inline PEM chain, leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// PEM private key file (PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Inline PEM private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<PrivateKeyPem>,
    /// The name of a [`Secret`] holding both the chain and the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret: Option<String>,
}

/// A passthrough route: connections whose SNI matches go to `cluster`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SniRoute {
    /// Exact names or `*.` wildcards; `*` matches any SNI and none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_names: Vec<String>,
    /// Destination cluster.
    #[serde(default)]
    pub cluster: String,
}

/// A set of domains and the routes for requests addressed to them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    /// Unique name.
    #[serde(default)]
    pub name: String,
    /// Exact names, `*.` suffix wildcards, or `*`; matched against Host/:authority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// First match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

/// One route: conditions, and exactly one of `route`, `redirect` or `directResponse`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Name for stats and logs; the gateway defaults it to `VHOST/INDEX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, all of which must hold; absent = match everything.
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matcher: Option<RouteMatch>,
    /// Proxy to clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteAction>,
    /// Answer with a redirect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Answer with a fixed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    /// Edits to the request before it is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderEdits>,
    /// Edits to the response before it is returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderEdits>,
}

/// Request conditions of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Path condition (the query string is not part of the path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// The request method, upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Query parameter conditions (`invert` is refused there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<HeaderMatch>,
}

/// How the path is compared; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathMatch {
    /// The whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// A leading part of the path, compared byte by byte (`/api` matches `/apis`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// An RE2 regex matching the whole path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// A condition on one header or query parameter; exactly one of `exact`, `prefix`, `regex` or
/// `present: true` is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// Header name (case-insensitive) or query parameter name (exact).
    #[serde(default)]
    pub name: String,
    /// Equal to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Whole-value RE2 regex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: present with any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Headers only: the route matches when the condition does *not* hold.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert: bool,
}

/// Proxying to one cluster (`cluster`) or weighted clusters (`clusters`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteAction {
    /// The one destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<WeightedCluster>,
    /// Replaces the matched prefix (or exact path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_rewrite: Option<String>,
    /// Replaces the Host/:authority sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_rewrite: Option<String>,
    /// Whole-exchange deadline (Go duration); unset = 15s, `0s` = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Fault injection (Istio's `fault`): aborts and delays for a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Traffic mirroring (Istio's `mirror`): copies of a share of requests to another cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
}

/// Fault injection of a route: `abort`, `delay`, or both (a delayed request may also be
/// aborted, after its delay).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Answer a share of requests with a status instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
    /// Hold a share of requests before forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
}

/// An injected abort.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// The status answered (200-599).
    #[serde(default)]
    pub http_status: u16,
    /// Share of requests aborted, in percent (0-100, fractions allowed); unset = 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

/// An injected delay.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// How long (Go duration).
    #[serde(default)]
    pub fixed_delay: String,
    /// Share of requests delayed, in percent (0-100, fractions allowed); unset = 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

/// Mirroring: a copy of each selected request goes to `cluster`, fire and forget, with the
/// Host suffixed `-shadow`; its answer is discarded.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// The cluster receiving the copies.
    #[serde(default)]
    pub cluster: String,
    /// Share of requests copied, in percent (0-100, fractions allowed); unset = 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<f64>,
}

/// A destination and its share of traffic.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedCluster {
    /// Cluster name.
    #[serde(default)]
    pub name: String,
    /// Relative weight; unset = 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Retry policy of a route (Istio's `retries`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Deadline of each attempt (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Conditions, Envoy's names: `5xx`, `gateway-error`, `connect-failure`, `reset`,
    /// `retriable-status-codes`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
}

/// A redirect answer; unset parts keep the request's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// New host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// New port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// New path (the query string is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
}

/// A fixed answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

/// Header edits, applied remove → set → add.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderEdits {
    /// Headers replaced (or created).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers appended.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// An upstream cluster.
///
/// Members are listed either flat (`endpoints`) or grouped by locality with priorities
/// (`localityEndpoints`, Envoy's ClusterLoadAssignment shape), not both.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Unique name.
    #[serde(default)]
    pub name: String,
    /// Members, all in one locality group of priority 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// Members grouped by locality, with priorities and locality weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locality_endpoints: Vec<LocalityEndpoints>,
    /// How a member is picked; unset = round robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<LbPolicy>,
    /// TCP connect (and TLS handshake) deadline (Go duration); unset = 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// HTTP version spoken upstream; unset = HTTP1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<UpstreamProtocol>,
    /// TLS origination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Passive health checking: eject members that keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Active health checking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Circuit breaking (Istio's `connectionPool`) and the retry budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Consistent-hash balancing (Maglev) on a header, a cookie or the client address; `lb`
    /// must be unset then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
}

/// Circuit-breaker limits of a cluster (Istio's `connectionPool`, flattened); unset = no limit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    /// HTTP1 clusters: most upstream connections, hence requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// HTTP1 clusters: requests waiting for a connection beyond `maxConnections`; more are
    /// refused with 503 (`UO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// HTTP2 clusters: most requests in flight; more are refused with 503 (`UO`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    /// Requests per upstream connection; only 1 (no keep-alive) is enforced today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Most retries in flight to the cluster at once (on top of the retry budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Retries in flight allowed as a share of requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// Envoy's retry budget: retries in flight may be at most `percent` of the requests in flight,
/// or `minRetryConcurrency`, whichever is more.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Percent of active requests; unset = 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Retries always allowed in flight; unset = 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retry_concurrency: Option<u32>,
}

/// What consistent hashing hashes; exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    /// The value of this request header (a request without it gets a random host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// A cookie, issued by the gateway when the request has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HashCookie>,
    /// The client's IP address.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_source_ip: bool,
}

/// The cookie of cookie-based consistent hashing.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HashCookie {
    /// Cookie name.
    #[serde(default)]
    pub name: String,
    /// Lifetime of an issued cookie (Go duration, `Max-Age`); required, as the gateway only
    /// issues cookies with a lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// `Path` of an issued cookie; unset = `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Cluster {
    /// Every member, flat or grouped, with the priority of its group (0 for flat ones).
    pub fn all_endpoints(&self) -> impl Iterator<Item = (u32, &Endpoint)> {
        self.endpoints.iter().map(|e| (0, e)).chain(
            self.locality_endpoints
                .iter()
                .flat_map(|g| g.endpoints.iter().map(move |e| (g.priority, e))),
        )
    }
}

/// A cluster member: `IP:port` or `hostname:port`, with an optional weight and labels.
///
/// Written either as the bare address string (`"127.0.0.1:3000"`) or as a map
/// (`{address: 127.0.1.1:8080, weight: 1, labels: {cluster: c1}}`); the short form is rendered
/// whenever there is neither weight nor labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// `IP:port` or `hostname:port`.
    pub address: String,
    /// Load-balancing weight within its group; unset = 1.
    pub weight: Option<u32>,
    /// Metadata (for example `cluster`, `network`), carried to Envoy as endpoint metadata.
    pub labels: BTreeMap<String, String>,
}

impl Endpoint {
    /// An endpoint with only an address.
    pub fn new(address: impl Into<String>) -> Endpoint {
        Endpoint {
            address: address.into(),
            ..Endpoint::default()
        }
    }
}

impl From<&str> for Endpoint {
    fn from(s: &str) -> Self {
        Endpoint::new(s)
    }
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EndpointLong {
    #[serde(default)]
    address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.weight.is_none() && self.labels.is_empty() {
            s.serialize_str(&self.address)
        } else {
            EndpointLong {
                address: self.address.clone(),
                weight: self.weight,
                labels: self.labels.clone(),
            }
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than `#[serde(untagged)]`: untagged would answer every mistake with
        // "data did not match any variant"; this names the unknown field or the wrong type.
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Endpoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address string (IP:port or hostname:port) or a map with address, weight, labels")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Endpoint, E> {
                Ok(Endpoint::new(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Endpoint, A::Error> {
                let l = EndpointLong::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Endpoint {
                    address: l.address,
                    weight: l.weight,
                    labels: l.labels,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Where an endpoint runs; empty parts are unknown (and match anything).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Locality {
    /// Region, e.g. `us-west`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
    /// Zone, e.g. `us-west-a`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub zone: String,
    /// Sub-zone (rack, node group).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subzone: String,
}

/// The members of a cluster in one locality, at one priority.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalityEndpoints {
    /// Where these members run.
    #[serde(default)]
    pub locality: Locality,
    /// 0 is the most preferred (same locality as the proxy); traffic fails over to 1, 2, … as
    /// members of lower numbers become unhealthy.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
    /// Share of traffic of this locality among those of the same priority (Istio's
    /// `distribute`); when any group has one, locality-weighted balancing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// The members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
}

/// TLS origination to a cluster.
///
/// The CA bundle comes from `caFile`, `caPem` or `caSecret`; in MUTUAL mode the client chain and
/// key from files, inline PEM, or `clientCertSecret`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTls {
    /// SIMPLE or MUTUAL.
    #[serde(default)]
    pub mode: TlsMode,
    /// Server name sent and verified; defaults to the endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// CA bundle file: the only trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Inline CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// The name of a [`Secret`] holding the CA bundle (`caPem`/`caFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
    /// MUTUAL: client chain file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    /// MUTUAL: inline client chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    /// MUTUAL: client key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
    /// MUTUAL: inline client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<PrivateKeyPem>,
    /// MUTUAL: the name of a [`Secret`] holding the client chain and key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_secret: Option<String>,
}

/// Passive health checking (Envoy's outlier detection, Istio's `outlierDetection`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx answers that eject a member; 0 disables the check.
    #[serde(
        rename = "consecutive5xxErrors",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive 502/503/504 and connect failures that eject a member; 0 disables the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often ejections are evaluated (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Ejection time, multiplied by the number of times a member was ejected (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Most members that may be ejected at once, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
}

/// Active health checking: HTTP when `path` is set, else a TCP connect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// HTTP check: the path requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP check: statuses that count as healthy; unset = 200.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<u16>,
    /// Time between checks (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Deadline of one check (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Successes that make an unhealthy member healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Failures that make a healthy member unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
}

/// A named certificate with its key, or a CA bundle (Envoy's SDS secret).
///
/// A certificate secret has `certPem`/`certFile` and `keyPem`/`keyFile`; a CA secret has
/// `caPem`/`caFile`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// Unique name, referred to by `certSecret`, `caSecret` and `clientCertSecret`.
    #[serde(default)]
    pub name: String,
    /// Inline PEM chain, leaf first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// PEM chain file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Inline PEM private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<PrivateKeyPem>,
    /// PEM private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Inline CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// CA bundle file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

#[cfg(test)]
mod tests;
