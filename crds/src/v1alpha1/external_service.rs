//! `ExternalService`: an external host reached through an egress gateway, optionally with TLS
//! originated at the gateway.

// kube's `printcolumn(...)` repeats keys such as `type_` per column, which clippy's
// duplicated_attributes lint mistakes for repeated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    ObjectRef, Protocol, ProxyRejections, ServicePort, validate_export_to, validate_hosts,
    validate_metadata,
};
use super::policy::{Rollout, TrafficPolicy};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Desired state of an ExternalService.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "causeway.io",
    version = "v1alpha1",
    kind = "ExternalService",
    namespaced,
    status = "ExternalServiceStatus",
    shortname = "xsvc",
    category = "causeway",
    derive = "PartialEq",
    derive = "Default",
    doc = "An external host reached through an egress gateway, with optional TLS origination.",
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.hosts"),
    printcolumn(name = "Resolution", type_ = "string", json_path = ".spec.resolution"),
    printcolumn(name = "Via", type_ = "string", json_path = ".spec.egress.via"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalServiceSpec {
    /// External hostnames; a `*.` wildcard only with resolution STATIC.
    pub hosts: Vec<String>,
    /// Ports the external service listens on.
    pub ports: Vec<ServicePort>,
    /// `DNS` (default): the egress gateway resolves the host; `STATIC`: use `endpoints`.
    #[serde(default)]
    pub resolution: Resolution,
    /// Fixed addresses, for resolution STATIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<ExternalEndpoint>,
    /// Which egress gateway carries the traffic and what it does to it.
    #[serde(default)]
    pub egress: Egress,
    /// Namespaces whose sidecars may reach the host: `*` (default), `.` or names.
    #[serde(default = "default_export_to")]
    pub export_to: Vec<String>,
    /// Outlier detection, pools and load balancing towards the external endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// How changes reach the clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

fn default_export_to() -> Vec<String> {
    vec!["*".to_owned()]
}

/// How the external host's addresses are found.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Resolution {
    /// Resolve the host with DNS at the egress gateway, re-resolving by TTL.
    #[default]
    Dns,
    /// Use the listed endpoints.
    Static,
}

/// A fixed address of an external service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalEndpoint {
    /// IP address.
    pub address: String,
    /// Port overrides by port name (`https: 8443`); the service port otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
}

/// Egress routing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Egress {
    /// `SameCluster` (default): the caller's cluster's gateway; `SameZone`: a gateway cluster
    /// of the caller's zone; `Cluster`: the one named in `cluster`.
    #[serde(default)]
    pub via: EgressVia,
    /// The egress cluster, for via `Cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// TLS originated by the egress gateway: sidecars send plain HTTP, the gateway speaks TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_origination: Option<TlsOrigination>,
}

/// Egress gateway selection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EgressVia {
    /// The egress gateway of the caller's cluster.
    #[default]
    SameCluster,
    /// A gateway cluster in the caller's zone.
    SameZone,
    /// The cluster named in `egress.cluster`.
    Cluster,
}

/// TLS origination settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsOrigination {
    /// `SIMPLE` (verify the server) or `MUTUAL` (also present a client certificate).
    pub mode: OriginationMode,
    /// SNI to send; the request's host when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// A Secret whose `ca.crt` verifies the server; the system roots when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<ObjectRef>,
    /// A `kubernetes.io/tls` Secret with the client certificate (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_ref: Option<ObjectRef>,
    /// Names accepted in the server certificate besides the SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// TLS origination modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum OriginationMode {
    /// Verify the server's certificate.
    #[default]
    Simple,
    /// Verify the server and present a client certificate.
    Mutual,
}

/// Observed state of an ExternalService.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalServiceStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The egress gateways carrying the traffic, by cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_clusters: Vec<String>,
    /// Proxies that rejected configuration made from this object (NACKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_rejections: Option<ProxyRejections>,
    /// `Accepted`, `Programmed`, `ResolvedRefs`, `RolledOut`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Validate for ExternalService {
    fn validate_at(&self, _path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, true, report);
        self.spec.validate_at(&FieldPath::root("spec"), report);
    }
}

impl Validate for ExternalServiceSpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let hp = path.field("hosts");
        if self.hosts.is_empty() {
            report.error(
                &hp,
                "list at least one external hostname, e.g. api.payments.example",
            );
        }
        validate_hosts(&hp, &self.hosts, Wildcard::Allowed { bare: false }, report);
        let pp = path.field("ports");
        if self.ports.is_empty() {
            report.error(
                &pp,
                "list at least one port, e.g. {number: 443, name: https, protocol: HTTPS}",
            );
        }
        for (i, p) in self.ports.iter().enumerate() {
            p.validate_at(&pp.index(i), report);
        }
        let mut seen = BTreeMap::new();
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(first) = seen.insert(p.number, i) {
                report.error(
                    &pp.index(i).field("number"),
                    format!("port {} is listed twice (also index {first})", p.number),
                );
            }
        }
        let ep = path.field("endpoints");
        match self.resolution {
            Resolution::Static if self.endpoints.is_empty() => report.error(
                &ep,
                "resolution STATIC needs endpoints: add [{address: 203.0.113.10}], or use resolution DNS",
            ),
            Resolution::Dns if !self.endpoints.is_empty() => report.error(
                &ep,
                "endpoints are used only with resolution STATIC: remove them or set resolution: STATIC",
            ),
            _ => {}
        }
        if self.resolution == Resolution::Dns {
            for (i, h) in self.hosts.iter().enumerate() {
                if h.starts_with("*.") {
                    report.error(&hp.index(i), format!("{h:?}: a wildcard cannot be resolved with DNS; use resolution STATIC with endpoints"));
                }
            }
        }
        let port_names: Vec<&str> = self
            .ports
            .iter()
            .filter_map(|p| p.name.as_deref())
            .collect();
        for (i, e) in self.endpoints.iter().enumerate() {
            let p = ep.index(i);
            checks::ip_address(&p.field("address"), &e.address, report);
            for (name, port) in &e.ports {
                let kp = p.field("ports").key(name);
                checks::port(&kp, *port, report);
                if !port_names.contains(&name.as_str()) {
                    report.error(&kp, format!("no port named {name:?} in spec.ports"));
                }
            }
        }
        let gp = path.field("egress");
        match (self.egress.via, &self.egress.cluster) {
            (EgressVia::Cluster, None) => {
                report.error(&gp.field("cluster"), "via Cluster needs cluster: NAME")
            }
            (EgressVia::Cluster, Some(c)) => {
                checks::dns_label(&gp.field("cluster"), c, report);
            }
            (_, Some(_)) => report.error(
                &gp.field("cluster"),
                "cluster is used only with via: Cluster",
            ),
            _ => {}
        }
        if let Some(t) = &self.egress.tls_origination {
            let tp = gp.field("tlsOrigination");
            if let Some(sni) = &t.sni {
                checks::hostname(&tp.field("sni"), sni, Wildcard::Forbidden, report);
            }
            if let Some(ca) = &t.ca_ref {
                ca.validate_at(&tp.field("caRef"), report);
            }
            match (t.mode, &t.client_certificate_ref) {
                (OriginationMode::Mutual, None) => report.error(
                    &tp.field("clientCertificateRef"),
                    "mode MUTUAL presents a client certificate: set clientCertificateRef to a kubernetes.io/tls Secret",
                ),
                (OriginationMode::Simple, Some(_)) => report.error(
                    &tp.field("clientCertificateRef"),
                    "a client certificate is sent only in mode MUTUAL: set mode: MUTUAL or remove it",
                ),
                (_, Some(r)) => r.validate_at(&tp.field("clientCertificateRef"), report),
                _ => {}
            }
            for (i, san) in t.subject_alt_names.iter().enumerate() {
                if san.is_empty() {
                    report.error(&tp.field("subjectAltNames").index(i), "empty name");
                }
            }
            // Origination turns plain HTTP from the sidecar into TLS; a port that already
            // carries TLS would be encrypted twice.
            if self.ports.iter().all(|p| p.protocol != Protocol::Http) {
                report.error(
                    &tp,
                    "TLS origination upgrades plain HTTP from sidecars: add an HTTP port (e.g. \
                     {number: 80, name: http, protocol: HTTP}) that callers use",
                );
            }
        }
        validate_export_to(&path.field("exportTo"), &self.export_to, report);
        if let Some(tp) = &self.traffic_policy {
            tp.validate_at(&path.field("trafficPolicy"), report);
        }
        if let Some(r) = &self.rollout {
            r.validate_at(&path.field("rollout"), report);
        }
    }
}
