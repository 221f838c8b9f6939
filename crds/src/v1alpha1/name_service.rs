//! `NameService`: a global name (`shop.global`) that every sidecar resolves, served by the
//! gateways of the clusters its targets are placed in, with locality-aware weights.

// kube's `printcolumn(...)` repeats keys such as `type_` per column, which clippy's
// duplicated_attributes lint mistakes for repeated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ProxyRejections, ServicePort, validate_export_to, validate_metadata};
use super::policy::{Rollout, TrafficPolicy};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Desired state of a NameService.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "causeway.io",
    version = "v1alpha1",
    kind = "NameService",
    namespaced,
    status = "NameServiceStatus",
    shortname = "nsvc",
    category = "causeway",
    derive = "PartialEq",
    derive = "Default",
    doc = "A global service name resolved by sidecars and DNS, with locality-aware endpoints.",
    printcolumn(name = "FQDN", type_ = "string", json_path = ".spec.fqdn"),
    printcolumn(name = "TTL", type_ = "string", json_path = ".spec.ttl"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NameServiceSpec {
    /// The global name, e.g. `shop.global`.
    pub fqdn: String,
    /// DNS record TTL. Default 30s.
    #[serde(default = "default_ttl")]
    pub ttl: String,
    /// Ports the name serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// What stands behind the name.
    pub targets: Vec<NameServiceTarget>,
    /// Locality weights, failover and outlier detection for the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Namespaces whose sidecars see the name: `*` (default, all), `.` (own), or names.
    #[serde(default = "default_export_to")]
    pub export_to: Vec<String>,
    /// DNS publication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSpec>,
    /// How changes reach the clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

fn default_ttl() -> String {
    "30s".to_owned()
}

fn default_export_to() -> Vec<String> {
    vec!["*".to_owned()]
}

/// One target: an AccessPoint in the same namespace, or a service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameServiceTarget {
    /// An AccessPoint (same namespace) whose placed gateways serve the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_point: Option<String>,
    /// A backend service (reached through the gateways of the clusters where it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The service's namespace; the NameService's own when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

/// DNS publication settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsSpec {
    /// Where records are published; the built-in server when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<DnsProvider>,
}

/// A DNS provider: exactly one kind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsProvider {
    /// The controller's built-in DNS server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinDns>,
    /// RFC 2136 dynamic updates to an authoritative server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rfc2136: Option<Rfc2136Dns>,
}

/// The built-in DNS server (no settings yet).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct BuiltinDns {}

/// RFC 2136 dynamic DNS updates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rfc2136Dns {
    /// Server address, `host:port`.
    pub server: String,
    /// The zone to update.
    pub zone: String,
    /// An Opaque Secret with the TSIG key (`name`, `algorithm`, `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_secret_ref: Option<super::common::ObjectRef>,
}

/// Observed state of a NameService.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameServiceStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The gateway endpoints behind the name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<NameServiceEndpoint>,
    /// Proxies that rejected configuration made from this object (NACKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_rejections: Option<ProxyRejections>,
    /// `Accepted`, `Programmed`, `ResolvedRefs`, `RolledOut`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One endpoint of a NameService.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameServiceEndpoint {
    /// The cluster whose gateway this is.
    pub cluster: String,
    /// Gateway address.
    pub address: String,
    /// `region/zone/subzone` of the cluster.
    pub locality: String,
}

impl Validate for NameService {
    fn validate_at(&self, _path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, true, report);
        self.spec.validate_at(&FieldPath::root("spec"), report);
    }
}

impl Validate for NameServiceSpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        checks::hostname(&path.field("fqdn"), &self.fqdn, Wildcard::Forbidden, report);
        checks::duration(&path.field("ttl"), &self.ttl, false, report);
        let pp = path.field("ports");
        for (i, p) in self.ports.iter().enumerate() {
            p.validate_at(&pp.index(i), report);
        }
        let tp = path.field("targets");
        if self.targets.is_empty() {
            report.error(
                &tp,
                "add at least one target: {accessPoint: NAME} or {service: NAME, port: N}",
            );
        }
        for (i, t) in self.targets.iter().enumerate() {
            let p = tp.index(i);
            match (&t.access_point, &t.service) {
                (Some(ap), None) => {
                    checks::object_name(&p.field("accessPoint"), ap, report);
                    if t.namespace.is_some() || t.port.is_some() {
                        report.error(&p, "namespace and port belong to service targets; an accessPoint target takes neither");
                    }
                }
                (None, Some(svc)) => {
                    checks::dns_label(&p.field("service"), svc, report);
                    if let Some(ns) = &t.namespace {
                        checks::dns_label(&p.field("namespace"), ns, report);
                    }
                    if let Some(port) = t.port {
                        checks::port(&p.field("port"), port, report);
                    }
                }
                _ => report.error(&p, "set exactly one of accessPoint, service"),
            }
        }
        if let Some(tp) = &self.traffic_policy {
            tp.validate_at(&path.field("trafficPolicy"), report);
        }
        validate_export_to(&path.field("exportTo"), &self.export_to, report);
        if let Some(dns) = &self.dns {
            for (i, p) in dns.providers.iter().enumerate() {
                let pp = path.field("dns").field("providers").index(i);
                if usize::from(p.builtin.is_some()) + usize::from(p.rfc2136.is_some()) != 1 {
                    report.error(&pp, "set exactly one of builtin, rfc2136");
                }
                if let Some(r) = &p.rfc2136 {
                    let ok = r
                        .server
                        .rsplit_once(':')
                        .is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0));
                    if !ok {
                        report.error(
                            &pp.field("rfc2136").field("server"),
                            format!("{:?}: write host:port, e.g. 10.0.0.53:53", r.server),
                        );
                    }
                    checks::hostname(
                        &pp.field("rfc2136").field("zone"),
                        &r.zone,
                        Wildcard::Forbidden,
                        report,
                    );
                }
            }
        }
        if let Some(r) = &self.rollout {
            r.validate_at(&path.field("rollout"), report);
        }
    }
}
