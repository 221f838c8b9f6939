//! Types shared by several kinds: references, destinations, locality, matches, conditions.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// A reference to a Secret (or another namespaced object). The namespace defaults to the
/// referring object's own.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Name of the referenced object.
    pub name: String,
    /// Namespace of the referenced object; the referrer's namespace when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Validate for ObjectRef {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        checks::object_name(&path.field("name"), &self.name, report);
        if let Some(ns) = &self.namespace {
            checks::dns_label(&path.field("namespace"), ns, report);
        }
    }
}

/// Where a cluster (or an endpoint) sits: region, zone, subzone (Istio/Envoy locality).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Locality {
    /// Region, e.g. `us-west`. Required.
    pub region: String,
    /// Zone within the region, e.g. `us-west-a`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Subzone within the zone (rack, cell); rarely used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subzone: Option<String>,
}

impl fmt::Display for Locality {
    /// `region/zone/subzone`, trailing empty parts left out: the form `distribute` rules match.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.region)?;
        let zone = self.zone.as_deref().unwrap_or_default();
        let subzone = self.subzone.as_deref().unwrap_or_default();
        if !zone.is_empty() || !subzone.is_empty() {
            write!(f, "/{zone}")?;
        }
        if !subzone.is_empty() {
            write!(f, "/{subzone}")?;
        }
        Ok(())
    }
}

fn locality_part(path: &FieldPath, part: &str, report: &mut Report) {
    if part.is_empty()
        || part.contains('/')
        || part.contains('*')
        || part.contains(char::is_whitespace)
    {
        report.error(
            path,
            format!("{part:?} is not a valid locality name: use letters, digits and '-', without '/' or '*'"),
        );
    }
}

impl Validate for Locality {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if self.region.is_empty() {
            report.error(&path.field("region"), "region is required (e.g. us-west)");
        } else {
            locality_part(&path.field("region"), &self.region, report);
        }
        if let Some(z) = self.zone.as_deref().filter(|z| !z.is_empty()) {
            locality_part(&path.field("zone"), z, report);
        }
        if let Some(s) = self.subzone.as_deref().filter(|s| !s.is_empty()) {
            locality_part(&path.field("subzone"), s, report);
            if self.zone.as_deref().unwrap_or_default().is_empty() {
                report.error(&path.field("zone"), "a subzone needs a zone: set zone too");
            }
        }
    }
}

/// A backend service: per cluster, the Kubernetes Service `service.namespace` (Kubernetes mode)
/// or the WorkloadEntries labelled `app: service` in `namespace` (standalone mode).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Service name.
    pub service: String,
    /// Service namespace; the referring object's namespace when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Service port; may be left out when the service has exactly one port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// A subset declared in the referring object's `spec.subsets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
}

impl Destination {
    /// Checks the destination; `subsets` are the names declared by the referring object.
    pub fn validate_with_subsets(&self, path: &FieldPath, subsets: &[&str], report: &mut Report) {
        checks::dns_label(&path.field("service"), &self.service, report);
        if let Some(ns) = &self.namespace {
            checks::dns_label(&path.field("namespace"), ns, report);
        }
        if let Some(p) = self.port {
            checks::port(&path.field("port"), p, report);
        }
        if let Some(s) = &self.subset
            && !subsets.contains(&s.as_str())
        {
            let known = if subsets.is_empty() {
                "none are declared: add it to spec.subsets".to_owned()
            } else {
                format!("declared: {}", subsets.join(", "))
            };
            report.error(
                &path.field("subset"),
                format!("unknown subset {s:?} ({known})"),
            );
        }
    }
}

/// A weighted destination of a route.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WeightedDestination {
    /// Where the traffic goes.
    pub destination: Destination,
    /// Share of the traffic in percent. With several destinations every one needs a weight and
    /// they must sum to 100; a single destination takes everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Header edits for requests sent to this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderOperations>,
}

/// Checks the weights of a route's destinations (Istio's rule).
pub fn validate_weights(path: &FieldPath, dests: &[WeightedDestination], report: &mut Report) {
    match dests {
        [] => {}
        [only] => {
            if let Some(w) = only.weight
                && w != 100
            {
                report.error(
                    &path.index(0).field("weight"),
                    format!(
                        "a single destination takes all traffic: weight {w} must be 100 or left out"
                    ),
                );
            }
        }
        many => {
            let missing: Vec<usize> = many
                .iter()
                .enumerate()
                .filter(|(_, d)| d.weight.is_none())
                .map(|(i, _)| i)
                .collect();
            if !missing.is_empty() {
                for i in missing {
                    report.error(
                        &path.index(i).field("weight"),
                        "with several destinations each needs a weight; the weights must sum to 100",
                    );
                }
                return;
            }
            let sum: u64 = many.iter().map(|d| u64::from(d.weight.unwrap_or(0))).sum();
            if sum != 100 {
                let parts: Vec<String> = many
                    .iter()
                    .map(|d| d.weight.unwrap_or(0).to_string())
                    .collect();
                report.error(
                    path,
                    format!(
                        "route weights sum to {sum} ({}); they must sum to 100",
                        parts.join(" + ")
                    ),
                );
            }
        }
    }
}

/// Matches a string: exactly one of `exact`, `prefix`, `regex` (RE2 syntax).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// The whole value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The whole value matches this RE2 regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

impl StringMatch {
    fn check(&self, path: &FieldPath, extra_set: usize, what: &str, report: &mut Report) {
        let set = usize::from(self.exact.is_some())
            + usize::from(self.prefix.is_some())
            + usize::from(self.regex.is_some())
            + extra_set;
        if set != 1 {
            report.error(path, format!("set exactly one of {what} (found {set})"));
        }
        if let Some(r) = &self.regex {
            checks::regex(&path.field("regex"), r, report);
        }
    }
}

impl Validate for StringMatch {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        self.check(path, 0, "exact, prefix, regex", report);
    }
}

/// Matches a request header: a [`StringMatch`] or `present`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderMatch {
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The value matches this RE2 regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: the header is present with any value; `false`: it is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

impl Validate for HeaderMatch {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let as_string = StringMatch {
            exact: self.exact.clone(),
            prefix: self.prefix.clone(),
            regex: self.regex.clone(),
        };
        as_string.check(
            path,
            usize::from(self.present.is_some()),
            "exact, prefix, regex, present",
            report,
        );
    }
}

/// Header edits: set (replace), add (append), remove.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOps {
    /// Headers to set, replacing existing values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers to append.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Header names to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Header edits on the request and on the response.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    /// Edits to the request before it is sent upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOps>,
    /// Edits to the response before it is returned downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOps>,
}

fn header_name(path: &FieldPath, name: &str, report: &mut Report) {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        report.error(
            path,
            format!("{name:?} is not a valid HTTP header name: use letters, digits and '-'"),
        );
    } else if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        report.error(
            path,
            format!("{name:?} cannot be edited here: use rewrite.authority"),
        );
    }
}

impl Validate for HeaderOps {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        for k in self.set.keys() {
            header_name(&path.field("set").key(k), k, report);
        }
        for k in self.add.keys() {
            header_name(&path.field("add").key(k), k, report);
        }
        for (i, k) in self.remove.iter().enumerate() {
            header_name(&path.field("remove").index(i), k, report);
        }
    }
}

impl Validate for HeaderOperations {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(r) = &self.request {
            r.validate_at(&path.field("request"), report);
        }
        if let Some(r) = &self.response {
            r.validate_at(&path.field("response"), report);
        }
    }
}

/// Status of a condition, as in Kubernetes.
pub mod condition {
    /// `Accepted`: the object is valid and its references resolved far enough to act on.
    pub const ACCEPTED: &str = "Accepted";
    /// `Programmed`: the data plane of every placed cluster has the configuration.
    pub const PROGRAMMED: &str = "Programmed";
    /// `ResolvedRefs`: every referenced Secret, service and AccessPoint exists.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// `RolledOut`: the latest revision reached every placed cluster.
    pub const ROLLED_OUT: &str = "RolledOut";
}

/// Conditions in the Kubernetes shape (`type`, `status`, `reason`, `message`,
/// `observedGeneration`, `lastTransitionTime`).
pub type Conditions = Vec<Condition>;

/// Checks what every object's metadata must satisfy; `namespaced` says whether the kind lives in
/// a namespace (a missing namespace means `default`, as with kubectl).
pub fn validate_metadata(meta: &ObjectMeta, namespaced: bool, report: &mut Report) {
    let path = FieldPath::root("metadata");
    match &meta.name {
        Some(n) => {
            checks::object_name(&path.field("name"), n, report);
        }
        None => report.error(&path.field("name"), "metadata.name is required"),
    }
    match (&meta.namespace, namespaced) {
        (Some(ns), true) => {
            checks::dns_label(&path.field("namespace"), ns, report);
        }
        (Some(_), false) => report.error(
            &path.field("namespace"),
            "this kind is cluster-scoped: remove metadata.namespace",
        ),
        (None, _) => {}
    }
    if let Some(labels) = &meta.labels {
        checks::labels(&path.field("labels"), labels, report);
    }
}

/// Checks a list of hosts (AccessPoint hosts, ExternalService hosts, SNI hosts).
pub fn validate_hosts(path: &FieldPath, hosts: &[String], wildcard: Wildcard, report: &mut Report) {
    for (i, h) in hosts.iter().enumerate() {
        checks::hostname(&path.index(i), h, wildcard, report);
    }
    checks::unique(
        path,
        hosts.iter().map(String::as_str).enumerate(),
        "host",
        report,
    );
}

/// Checks `exportTo` entries: `*` (every namespace), `.` (own namespace) or a namespace name.
pub fn validate_export_to(path: &FieldPath, export_to: &[String], report: &mut Report) {
    for (i, e) in export_to.iter().enumerate() {
        if e != "*" && e != "." {
            checks::dns_label(&path.index(i), e, report);
        }
    }
    if export_to.len() > 1 && export_to.iter().any(|e| e == "*") {
        report.warning(
            path,
            "\"*\" already exports to every namespace; the other entries change nothing",
        );
    }
}

/// A service port: number, protocol, optional name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port number.
    pub number: u32,
    /// Protocol spoken on the port.
    #[serde(default)]
    pub protocol: Protocol,
    /// Port name (DNS label), used to refer to the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Validate for ServicePort {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        checks::port(&path.field("number"), self.number, report);
        if let Some(n) = &self.name {
            checks::dns_label(&path.field("name"), n, report);
        }
    }
}

/// Application protocol of a listener or port.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// HTTP/1.1 or HTTP/2 in clear text.
    #[default]
    Http,
    /// HTTP over TLS; the gateway terminates TLS (or passes it through with mode PASSTHROUGH).
    Https,
    /// Opaque TLS routed by SNI.
    Tls,
    /// Opaque TCP routed by port.
    Tcp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locality_display() {
        let l = |r: &str, z: &str, s: &str| Locality {
            region: r.into(),
            zone: Some(z.into()),
            subzone: Some(s.into()),
        };
        assert_eq!(
            l("us-west", "us-west-a", "").to_string(),
            "us-west/us-west-a"
        );
        assert_eq!(l("us-west", "", "").to_string(), "us-west");
        assert_eq!(l("us-west", "a", "r1").to_string(), "us-west/a/r1");
    }

    #[test]
    fn weights() {
        let d = |w: Option<u32>| WeightedDestination {
            destination: Destination {
                service: "shop".into(),
                ..Default::default()
            },
            weight: w,
            headers: None,
        };
        let run = |ds: &[WeightedDestination]| {
            let mut r = Report::new();
            validate_weights(&FieldPath::root("route"), ds, &mut r);
            r.findings()
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
        };
        assert!(run(&[d(None)]).is_empty());
        assert!(run(&[d(Some(80)), d(Some(20))]).is_empty());
        assert_eq!(
            run(&[d(Some(80)), d(Some(30))]),
            ["route: route weights sum to 110 (80 + 30); they must sum to 100"]
        );
        assert_eq!(run(&[d(Some(80)), d(None)]).len(), 1);
        assert_eq!(run(&[d(Some(50))]).len(), 1);
    }

    #[test]
    fn header_match_exactly_one() {
        let mut r = Report::new();
        HeaderMatch {
            exact: Some("a".into()),
            present: Some(true),
            ..Default::default()
        }
        .validate_at(&FieldPath::root("h"), &mut r);
        assert_eq!(r.findings().len(), 1);
        let mut r = Report::new();
        HeaderMatch::default().validate_at(&FieldPath::root("h"), &mut r);
        assert_eq!(r.findings().len(), 1);
    }

    #[test]
    fn unknown_subset() {
        let d = Destination {
            service: "shop".into(),
            subset: Some("v3".into()),
            ..Default::default()
        };
        let mut r = Report::new();
        d.validate_with_subsets(&FieldPath::root("d"), &["v1", "v2"], &mut r);
        assert_eq!(
            r.findings()[0].to_string(),
            "d.subset: unknown subset \"v3\" (declared: v1, v2)"
        );
    }
}

/// Proxies that rejected (NACKed) configuration made from an object: every NACK is counted, and
/// the proxies rejecting it now are listed. The controller attributes a NACK to the objects whose
/// part of the rejected configuration differs from what the proxy last accepted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRejections {
    /// NACKs counted against this object, ever (kept across controller restarts).
    pub count: u64,
    /// When the last counted NACK arrived (RFC 3339, microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<String>,
    /// The last NACK: `PROXY (CLUSTER, TYPE): the proxy's message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message: Option<String>,
    /// Proxies that reject it now (they keep serving the configuration they accepted before),
    /// each as `PROXY (CLUSTER, TYPE): message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_by: Vec<String>,
}
