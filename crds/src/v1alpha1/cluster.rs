//! `Cluster`: a member of the federation — its locality, network, role and gateways.

// kube's `printcolumn(...)` repeats keys such as `type_` per column, which clippy's
// duplicated_attributes lint mistakes for repeated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Locality, ObjectRef, validate_metadata};
use crate::validation::checks;
use crate::validation::{FieldPath, Report, Validate};

/// Desired state of a member cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "causeway.io",
    version = "v1alpha1",
    kind = "Cluster",
    status = "ClusterStatus",
    shortname = "cl",
    category = "causeway",
    derive = "PartialEq",
    derive = "Default",
    doc = "A member cluster of the federation: locality, network, role and gateway addresses.",
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.locality.region"),
    printcolumn(name = "Zone", type_ = "string", json_path = ".spec.locality.zone"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Proxies", type_ = "integer", json_path = ".status.proxies"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// Where the cluster runs.
    pub locality: Locality,
    /// Network name; endpoints on other networks are reached through east-west gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Environment label (prod, staging, ...) used by placement selectors and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// `Gateway` clusters host ingress/egress gateways for their zone; `Workload` (default)
    /// clusters run applications.
    #[serde(default)]
    pub role: ClusterRole,
    /// Where this cluster's gateways listen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayEndpoint>,
    /// Kubernetes mode: a Secret with the member's kubeconfig (key `kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<ObjectRef>,
}

/// Cluster roles.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ClusterRole {
    /// Hosts the gateways of its zone (eBay: one gateway cluster per zone).
    Gateway,
    /// Runs workloads.
    #[default]
    Workload,
}

/// One gateway instance of a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayEndpoint {
    /// IP address the gateway listens on.
    pub address: String,
    /// Its ports.
    #[serde(default)]
    pub ports: GatewayPorts,
}

/// Gateway ports; every field has a default.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayPorts {
    /// Plain HTTP. Default 8080.
    #[serde(default = "default_http")]
    pub http: u32,
    /// HTTPS and TLS (SNI tells AccessPoints apart). Default 8443.
    #[serde(default = "default_https")]
    pub https: u32,
    /// East-west mTLS (routed by SNI, Istio AUTO_PASSTHROUGH). Default 15443.
    #[serde(default = "default_east_west")]
    pub east_west: u32,
    /// Admin: ready, stats, config dump. Default 15000.
    #[serde(default = "default_admin")]
    pub admin: u32,
}

fn default_http() -> u32 {
    8080
}
fn default_https() -> u32 {
    8443
}
fn default_east_west() -> u32 {
    15443
}
fn default_admin() -> u32 {
    15000
}

impl Default for GatewayPorts {
    fn default() -> Self {
        GatewayPorts {
            http: default_http(),
            https: default_https(),
            east_west: default_east_west(),
            admin: default_admin(),
        }
    }
}

/// Observed state of a member cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Degraded` or `Unreachable`, from its connected proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Connected proxies (gateways and sidecars).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<u32>,
    /// When a proxy of this cluster was last heard from (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// `Accepted`, `Programmed`, `ResolvedRefs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Cluster health phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterPhase {
    /// Every expected gateway is connected and acknowledges its configuration.
    Ready,
    /// Some gateways are connected, or some NACK their configuration.
    Degraded,
    /// No proxy of the cluster is connected.
    Unreachable,
}

impl Validate for Cluster {
    fn validate_at(&self, _path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, false, report);
        if let Some(name) = &self.metadata.name {
            // Cluster names become labels (topology.istio.io/cluster) and DNS labels.
            if name.len() > 63 || name.contains('.') {
                report.error(
                    &FieldPath::root("metadata").field("name"),
                    format!("cluster name {name:?} must be a DNS label (no dots, at most 63 characters): it is used as a label value"),
                );
            }
        }
        self.spec.validate_at(&FieldPath::root("spec"), report);
    }
}

impl Validate for ClusterSpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        self.locality.validate_at(&path.field("locality"), report);
        if let Some(n) = &self.network {
            checks::dns_label(&path.field("network"), n, report);
        }
        if let Some(e) = &self.environment {
            checks::dns_label(&path.field("environment"), e, report);
        }
        let gp = path.field("gateways");
        if self.role == ClusterRole::Gateway && self.gateways.is_empty() {
            report.error(
                &gp,
                "a Gateway cluster needs at least one gateway address, e.g. [{address: 10.0.0.1}]",
            );
        }
        checks::unique(
            &gp,
            self.gateways.iter().map(|g| g.address.as_str()).enumerate(),
            "gateway address",
            report,
        );
        for (i, g) in self.gateways.iter().enumerate() {
            let p = gp.index(i);
            checks::ip_address(&p.field("address"), &g.address, report);
            let pp = p.field("ports");
            let ports = [
                ("http", g.ports.http),
                ("https", g.ports.https),
                ("eastWest", g.ports.east_west),
                ("admin", g.ports.admin),
            ];
            for (field, port) in ports {
                checks::port(&pp.field(field), port, report);
            }
            for (a, (fa, pa)) in ports.iter().enumerate() {
                if let Some((fb, _)) = ports[..a].iter().find(|(_, pb)| pb == pa) {
                    report.error(
                        &pp.field(fa),
                        format!(
                            "port {pa} is already the {fb} port: each gateway port must differ"
                        ),
                    );
                }
            }
        }
        if let Some(k) = &self.kubeconfig_secret_ref {
            k.validate_at(&path.field("kubeconfigSecretRef"), report);
        }
    }
}
