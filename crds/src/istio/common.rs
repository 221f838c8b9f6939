//! Pieces shared by several Istio kinds: string matches, ports, percentages, destinations,
//! header operations, and the checks every kind runs (metadata, hosts, `exportTo`, gateways).

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Istio's `StringMatch`: a oneof of `exact`, `prefix` and `regex` (RE2 syntax).
///
/// Kept as a struct of options rather than a Rust enum so the schema stays structural; the
/// validators check how many are set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// Matches the whole value exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Matches values starting with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Matches values against this RE2 regular expression (the whole value must match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    /// A match of the exact value `v`.
    pub fn exact(v: impl Into<String>) -> Self {
        StringMatch {
            exact: Some(v.into()),
            ..Default::default()
        }
    }

    /// A match of values starting with `v`.
    pub fn prefix(v: impl Into<String>) -> Self {
        StringMatch {
            prefix: Some(v.into()),
            ..Default::default()
        }
    }

    fn set_fields(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.exact.is_some() {
            set.push("exact");
        }
        if self.prefix.is_some() {
            set.push("prefix");
        }
        if self.regex.is_some() {
            set.push("regex");
        }
        set
    }

    /// Checks that exactly one of `exact`, `prefix`, `regex` is set (uri, scheme, method,
    /// authority, CORS origins).
    pub fn validate_one(&self, path: &FieldPath, report: &mut Report) {
        let set = self.set_fields();
        if set.is_empty() {
            report.error(
                path,
                "set one of exact, prefix or regex (e.g. {prefix: /api}); an empty match is not \
                 allowed here",
            );
        }
        self.validate_at_most_one(path, &set, report);
    }

    /// Checks that at most one of `exact`, `prefix`, `regex` is set: header and query matches
    /// may be empty, which tests only that the header is present.
    pub fn validate_presence_or_one(&self, path: &FieldPath, report: &mut Report) {
        let set = self.set_fields();
        self.validate_at_most_one(path, &set, report);
    }

    fn validate_at_most_one(&self, path: &FieldPath, set: &[&str], report: &mut Report) {
        if set.len() > 1 {
            report.error(
                path,
                format!(
                    "set exactly one of exact, prefix or regex, not {}: keep the one you mean",
                    set.join(" and ")
                ),
            );
        }
        if let Some(re) = &self.regex {
            checks::regex(&path.field("regex"), re, report);
        }
    }
}

/// A port protocol, spelled as Istio spells it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Protocol {
    /// HTTP/1.1 (and HTTP/2 with prior knowledge, which Envoy detects).
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP over TLS: the gateway terminates (or passes through) TLS, then routes HTTP.
    #[serde(rename = "HTTPS")]
    Https,
    /// HTTP/2.
    #[serde(rename = "HTTP2")]
    Http2,
    /// gRPC (HTTP/2).
    #[serde(rename = "GRPC")]
    Grpc,
    /// gRPC-Web.
    #[serde(rename = "GRPC-WEB")]
    GrpcWeb,
    /// Opaque TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// TLS, routed by SNI.
    #[serde(rename = "TLS")]
    Tls,
    /// MongoDB (treated as TCP).
    #[serde(rename = "MONGO")]
    Mongo,
    /// Redis (treated as TCP).
    #[serde(rename = "REDIS")]
    Redis,
    /// MySQL (treated as TCP).
    #[serde(rename = "MYSQL")]
    Mysql,
    /// UDP (not proxied; declared for completeness).
    #[serde(rename = "UDP")]
    Udp,
}

impl Protocol {
    /// Whether requests on this port are HTTP once any TLS is terminated by the listener's own
    /// settings (HTTP routes apply).
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// Whether the port carries TLS (HTTPS or TLS).
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    /// The protocol as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-WEB",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Mongo => "MONGO",
            Protocol::Redis => "REDIS",
            Protocol::Mysql => "MYSQL",
            Protocol::Udp => "UDP",
        }
    }
}

/// Istio's `PortSelector`: a port of the destination service, by number.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    /// The port number.
    pub number: u32,
}

impl Validate for PortSelector {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        checks::port(&path.field("number"), self.number, report);
    }
}

/// Istio's `Percent`: a percentage as a double, 0-100.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Percent {
    /// The percentage, 0.0-100.0.
    pub value: f64,
}

impl Validate for Percent {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        checks::percent(&path.field("value"), self.value, report);
    }
}

/// Istio's networking `WorkloadSelector` (ServiceEntry, Sidecar): pods or VMs by labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels the selected workloads carry (all must match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Validate for WorkloadSelector {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        checks::labels(&path.field("labels"), &self.labels, report);
    }
}

/// Istio's `Destination`: a service (by its host name), optionally a subset and a port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// The service's name in the registry: a Kubernetes short name (`reviews`), its FQDN
    /// (`reviews.prod.svc.cluster.local`) or a ServiceEntry host.
    pub host: String,
    /// A subset declared by the host's DestinationRule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The service port; may be left out when the service has exactly one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

impl Validate for Destination {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        service_host(&path.field("host"), &self.host, report);
        if let Some(s) = &self.subset {
            checks::dns_label(&path.field("subset"), s, report);
        }
        if let Some(p) = &self.port {
            p.validate_at(&path.field("port"), report);
        }
    }
}

/// Istio's `Headers`: header changes applied to the request and to the response.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    /// Changes to the request before it is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Changes to the response before it is returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

impl Validate for Headers {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(r) = &self.request {
            r.validate_at(&path.field("request"), report);
        }
        if let Some(r) = &self.response {
            r.validate_at(&path.field("response"), report);
        }
    }
}

/// Istio's `HeaderOperations`: set (overwrite), add (append) and remove headers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    /// Headers to set, replacing any existing value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers to append to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Names of headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl Validate for HeaderOperations {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        for (op, map) in [("set", &self.set), ("add", &self.add)] {
            for name in map.keys() {
                header_name(&path.field(op).key(name), name, report);
            }
        }
        let rp = path.field("remove");
        for (i, name) in self.remove.iter().enumerate() {
            header_name(&rp.index(i), name, report);
        }
    }
}

/// Checks an HTTP header name (an RFC 7230 token).
pub(crate) fn header_name(path: &FieldPath, name: &str, report: &mut Report) {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() {
        report.error(
            path,
            "header name is empty: write a name such as x-request-id",
        );
    } else if !name.bytes().all(token) {
        report.error(
            path,
            format!(
                "{name:?} is not a valid header name: use letters, digits and '-' (e.g. \
                 x-version); pseudo-headers such as :authority cannot be named here"
            ),
        );
    }
}

/// Checks `metadata`: a valid name (or generateName), namespace and labels.
pub(crate) fn validate_metadata(meta: &ObjectMeta, path: &FieldPath, report: &mut Report) {
    match (&meta.name, &meta.generate_name) {
        (Some(name), _) => {
            checks::object_name(&path.field("name"), name, report);
        }
        (None, Some(_)) => {}
        (None, None) => report.error(
            &path.field("name"),
            "metadata.name is required: give the object a name such as reviews",
        ),
    }
    if let Some(ns) = &meta.namespace {
        checks::dns_label(&path.field("namespace"), ns, report);
    }
    if let Some(labels) = &meta.labels {
        checks::labels(&path.field("labels"), labels, report);
    }
}

/// Checks the name of a service a route sends traffic to; warns about partial Kubernetes names
/// (`name.namespace.svc`), which Istio does not expand the way cluster DNS does.
pub(crate) fn service_host(path: &FieldPath, host: &str, report: &mut Report) {
    if host.is_empty() {
        report.error(
            path,
            "host is required: name the service, e.g. reviews or reviews.prod.svc.cluster.local",
        );
        return;
    }
    if host == "*" {
        report.error(
            path,
            "\"*\" is not a destination: name one service, e.g. reviews.prod.svc.cluster.local",
        );
        return;
    }
    if host.parse::<IpAddr>().is_ok() {
        return;
    }
    if checks::hostname(path, host, Wildcard::Allowed { bare: false }, report) {
        partial_service_name(path, host, report);
    }
}

/// Warns when `host` looks like `name.namespace.svc`: Istio matches such names literally and
/// finds no service (the seeds show a 503), unlike cluster DNS, which expands search domains.
pub(crate) fn partial_service_name(path: &FieldPath, host: &str, report: &mut Report) {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    if let Some(rest) = trimmed.strip_suffix(".svc")
        && rest.split('.').count() == 2
    {
        report.warning(
            path,
            format!(
                "{host:?} looks like a partial Kubernetes service name: Istio does not expand \
                 it, so it matches no service; write the full name {trimmed}.cluster.local (or \
                 the short name in the same namespace)"
            ),
        );
    }
}

/// Checks an `exportTo` list: `.` (this namespace), `*` (every namespace) or namespace names.
pub(crate) fn export_to(path: &FieldPath, values: &[String], report: &mut Report) {
    for (i, v) in values.iter().enumerate() {
        let p = path.index(i);
        match v.as_str() {
            "." | "*" => {}
            ns => {
                checks::dns_label(&p, ns, report);
            }
        }
    }
    if values.len() > 1 && values.iter().any(|v| v == "*") {
        report.error(
            path,
            "\"*\" already exports to every namespace: use it alone, or list the namespaces \
             without it",
        );
    }
    checks::unique(
        path,
        values.iter().map(String::as_str).enumerate(),
        "exportTo entry",
        report,
    );
}

/// Checks a reference to a Gateway: `mesh`, `name` or `namespace/name`.
pub(crate) fn gateway_ref(path: &FieldPath, value: &str, report: &mut Report) {
    if value == "mesh" {
        return;
    }
    let (ns, name) = match value.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, value),
    };
    if let Some(ns) = ns
        && !checks::dns_label(path, ns, report)
    {
        return;
    }
    if name.is_empty() || name.contains('/') || !is_dns_subdomain(name) {
        report.error(
            path,
            format!(
                "{value:?} is not a gateway reference: write mesh, a Gateway name such as \
                 ingress, or namespace/name such as istio-system/ingress"
            ),
        );
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    let mut scratch = Report::new();
    checks::object_name(&FieldPath::default(), s, &mut scratch)
}

/// Checks a list of hosts or gateways for repeats.
pub(crate) fn unique_strings(path: &FieldPath, values: &[String], what: &str, report: &mut Report) {
    checks::unique(
        path,
        values.iter().map(String::as_str).enumerate(),
        what,
        report,
    );
}

/// Checks an IP address or CIDR block (`10.0.0.0/8`, `fd00::/64`, `1.2.3.4`).
pub(crate) fn ip_or_cidr(path: &FieldPath, value: &str, report: &mut Report) {
    let ok = match value.split_once('/') {
        None => value.parse::<IpAddr>().is_ok(),
        Some((ip, bits)) => match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        },
    };
    if !ok {
        report.error(
            path,
            format!(
                "{value:?} is not an IP address or CIDR block: write e.g. 10.0.0.1, \
                 10.0.0.0/16 or fd00::/64"
            ),
        );
    }
}

/// Checks label selectors written as maps (`sourceLabels`, `selector`).
pub(crate) fn label_map(path: &FieldPath, labels: &BTreeMap<String, String>, report: &mut Report) {
    checks::labels(path, labels, report);
}

/// Checks the weights of a route's destinations: when there is more than one destination they
/// must add up to 100 (a single destination takes everything whatever its weight says).
pub(crate) fn route_weights(
    path: &FieldPath,
    weights: &[Option<u32>],
    weight_path: impl Fn(usize) -> FieldPath,
    report: &mut Report,
) {
    let mut in_range = true;
    for (i, w) in weights.iter().enumerate() {
        if let Some(w) = *w
            && w > 100
        {
            report.error(
                &weight_path(i),
                format!("weight {w} is over 100: weights are percentages of the traffic"),
            );
            in_range = false;
        }
    }
    if weights.len() > 1 && in_range {
        let sum: u32 = weights.iter().map(|w| w.unwrap_or(0)).sum();
        if sum != 100 {
            report.error(
                path,
                format!(
                    "the destination weights add up to {sum}: with more than one destination \
                     they must add up to 100 (e.g. 90 and 10); a missing weight counts as 0"
                ),
            );
        }
    }
}

/// Checks an Istio locality (`region/zone/subzone`); `wildcard` allows a trailing `*` segment,
/// as `distribute` does (`us-west/*`).
pub(crate) fn locality(path: &FieldPath, value: &str, wildcard: bool, report: &mut Report) -> bool {
    let parts: Vec<&str> = value.split('/').collect();
    let last = parts.len().saturating_sub(1);
    let bad_part = parts.iter().enumerate().any(|(i, p)| {
        p.is_empty()
            || (p.contains('*') && !(wildcard && i == last && *p == "*"))
            || p.contains(char::is_whitespace)
    });
    if value.is_empty() || parts.len() > 3 || bad_part {
        let hint = if wildcard {
            "region, region/zone or region/zone/subzone, optionally ending in /* (e.g. us-west/*)"
        } else {
            "region, region/zone or region/zone/subzone (e.g. us-west/us-west-a), without '*'"
        };
        report.error(path, format!("{value:?} is not a locality: write {hint}"));
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(r: &Report) -> Vec<String> {
        r.findings().iter().map(|f| f.path.to_string()).collect()
    }

    #[test]
    fn string_match_counts() {
        let p = FieldPath::root("spec").field("uri");
        let mut r = Report::new();
        StringMatch::default().validate_one(&p, &mut r);
        assert_eq!(paths(&r), ["spec.uri"]);
        let mut r = Report::new();
        StringMatch::default().validate_presence_or_one(&p, &mut r);
        assert!(r.findings().is_empty());
        let mut r = Report::new();
        let both = StringMatch {
            exact: Some("a".into()),
            prefix: Some("b".into()),
            regex: None,
        };
        both.validate_one(&p, &mut r);
        assert!(r.findings()[0].message.contains("exact and prefix"));
        let mut r = Report::new();
        let bad = StringMatch {
            regex: Some("(x".into()),
            ..Default::default()
        };
        bad.validate_one(&p, &mut r);
        assert_eq!(paths(&r), ["spec.uri.regex"]);
    }

    #[test]
    fn hosts_and_refs() {
        let p = FieldPath::root("h");
        let mut r = Report::new();
        service_host(&p, "httpserver.securesvc.svc", &mut r);
        assert_eq!(r.findings().len(), 1);
        assert!(
            r.findings()[0]
                .message
                .contains("httpserver.securesvc.svc.cluster.local")
        );
        assert!(r.is_ok());
        let mut r = Report::new();
        for good in ["mesh", "gw", "default/ingress-go-multiroute"] {
            gateway_ref(&p, good, &mut r);
        }
        assert!(r.findings().is_empty(), "{:?}", r.findings());
        gateway_ref(&p, "a/b/c", &mut r);
        assert_eq!(r.findings().len(), 1);
    }

    #[test]
    fn export_to_and_cidr() {
        let p = FieldPath::root("exportTo");
        let mut r = Report::new();
        export_to(&p, &[".".into(), "*".into()], &mut r);
        assert_eq!(paths(&r), ["exportTo"]);
        let mut r = Report::new();
        for good in ["10.0.0.0/8", "1.2.3.4", "fd00::/64"] {
            ip_or_cidr(&p, good, &mut r);
        }
        assert!(r.findings().is_empty());
        ip_or_cidr(&p, "10.0.0.0/33", &mut r);
        assert_eq!(r.findings().len(), 1);
    }

    #[test]
    fn weights_and_localities() {
        let p = FieldPath::root("route");
        let mut r = Report::new();
        route_weights(&p, &[Some(90), Some(10)], |i| p.index(i), &mut r);
        route_weights(&p, &[None], |i| p.index(i), &mut r);
        assert!(r.findings().is_empty());
        route_weights(&p, &[Some(90), None], |i| p.index(i), &mut r);
        assert_eq!(paths(&r), ["route"]);
        let mut r = Report::new();
        assert!(locality(&p, "us-west/*", true, &mut r));
        assert!(locality(&p, "us-west/zone-a/rack1", false, &mut r));
        assert!(!locality(&p, "us-west/*", false, &mut r));
        assert!(!locality(&p, "a/b/c/d", true, &mut r));
        assert!(!locality(&p, "us-*", true, &mut r));
    }
}
