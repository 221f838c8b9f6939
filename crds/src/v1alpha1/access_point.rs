//! `AccessPoint`: one object per published service — hosts, listeners, routes, placement — from
//! which the controller allocates a VIP and programs balancers, gateways and sidecars.

// kube's `printcolumn(...)` repeats keys such as `type_` per column, which clippy's
// duplicated_attributes lint mistakes for repeated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{ObjectRef, Protocol, ProxyRejections, validate_hosts, validate_metadata};
use super::policy::{Rollout, TrafficPolicy};
use super::route::{HttpRoute, RouteContext, TcpRoute, TlsRoute};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Desired state of an AccessPoint.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "causeway.io",
    version = "v1alpha1",
    kind = "AccessPoint",
    namespaced,
    status = "AccessPointStatus",
    shortname = "ap",
    category = "causeway",
    derive = "PartialEq",
    derive = "Default",
    doc = "A service published through the federation's gateways: hosts, listeners, routes and placement.",
    printcolumn(name = "VIP", type_ = "string", json_path = ".status.vip"),
    printcolumn(name = "Hosts", type_ = "string", json_path = ".spec.hosts"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPointSpec {
    /// Hostnames served (exact or `*.` wildcard); the first is the FQDN reported in status.
    pub hosts: Vec<String>,
    /// VIP allocation: one VIP per AccessPoint from `pool` unless `shareWith` names another.
    #[serde(default)]
    pub vip: VipSpec,
    /// Ports and protocols exposed on the VIP.
    pub listeners: Vec<Listener>,
    /// Named groups of backend endpoints, selected by labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// HTTP routes, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// SNI routes for PASSTHROUGH listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Routes for TCP listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// Which clusters' gateways serve this AccessPoint. Default: follow the workload.
    #[serde(default)]
    pub placement: Placement,
    /// Per-cluster replacements of top-level fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<ClusterOverride>,
    /// Locality, outlier detection, load balancing and limits for the backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// How changes reach the placed clusters; without it every cluster gets a change at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// VIP allocation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VipSpec {
    /// The IPAM pool to allocate from. Default `default`.
    #[serde(default = "default_pool")]
    pub pool: String,
    /// A specific address to claim from the pool instead of the next free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Share the VIP of this AccessPoint (same namespace) instead of allocating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_with: Option<String>,
}

fn default_pool() -> String {
    "default".to_owned()
}

impl Default for VipSpec {
    fn default() -> Self {
        VipSpec {
            pool: default_pool(),
            address: None,
            share_with: None,
        }
    }
}

/// A port on the VIP.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Listener name (DNS label), unique within the AccessPoint.
    pub name: String,
    /// Port on the VIP.
    pub port: u32,
    /// `HTTP`, `HTTPS`, `TLS` or `TCP`.
    pub protocol: Protocol,
    /// TLS settings; required for HTTPS and TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// On an HTTP listener: answer every request with a 301 to `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
}

/// TLS on a listener.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// `SIMPLE` (terminate), `MUTUAL` (terminate and require client certificates) or
    /// `PASSTHROUGH` (route by SNI, never decrypt).
    pub mode: TlsMode,
    /// A `kubernetes.io/tls` Secret with the server certificate and key (SIMPLE, MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_ref: Option<ObjectRef>,
    /// For MUTUAL: a Secret whose `ca.crt` verifies client certificates. Default: the `ca.crt`
    /// key of the credential Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_ref: Option<ObjectRef>,
    /// Lowest TLS version accepted: `TLSV1_2` (default) or `TLSV1_3`. Older versions are never
    /// offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsVersion>,
}

/// Listener TLS modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TlsMode {
    /// Terminate TLS with the listener's certificate.
    #[default]
    Simple,
    /// Terminate TLS and require a client certificate signed by the configured CA.
    Mutual,
    /// Do not terminate; route the connection by the SNI of its ClientHello.
    Passthrough,
}

/// TLS protocol versions a listener may require.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    Tls13,
}

/// A named group of backend endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// Subset name, referred to by `destination.subset`.
    pub name: String,
    /// Endpoint labels that select the subset's members.
    pub labels: BTreeMap<String, String>,
}

/// Where an AccessPoint is served: exactly one of the three forms.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// These clusters, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Clusters whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    /// The clusters where the backend service has endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_workload: Option<bool>,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            clusters: Vec::new(),
            cluster_selector: None,
            follow_workload: Some(true),
        }
    }
}

impl Placement {
    /// Checks that exactly one form is used and that names are valid.
    pub fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let forms = usize::from(!self.clusters.is_empty())
            + usize::from(self.cluster_selector.is_some())
            + usize::from(self.follow_workload == Some(true));
        if forms != 1 {
            report.error(
                path,
                format!(
                    "set exactly one of clusters, clusterSelector, followWorkload: true (found {forms})"
                ),
            );
        }
        let cp = path.field("clusters");
        for (i, c) in self.clusters.iter().enumerate() {
            checks::dns_label(&cp.index(i), c, report);
        }
        checks::unique(
            &cp,
            self.clusters.iter().map(String::as_str).enumerate(),
            "cluster",
            report,
        );
        if let Some(sel) = &self.cluster_selector {
            if let Some(labels) = &sel.match_labels {
                checks::labels(
                    &path.field("clusterSelector").field("matchLabels"),
                    labels,
                    report,
                );
            }
            for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
                let p = path
                    .field("clusterSelector")
                    .field("matchExpressions")
                    .index(i);
                match e.operator.as_str() {
                    "In" | "NotIn" => {
                        if e.values.as_ref().is_none_or(Vec::is_empty) {
                            report
                                .error(&p.field("values"), "In and NotIn need at least one value");
                        }
                    }
                    "Exists" | "DoesNotExist" => {
                        if e.values.as_ref().is_some_and(|v| !v.is_empty()) {
                            report.error(
                                &p.field("values"),
                                "Exists and DoesNotExist take no values",
                            );
                        }
                    }
                    other => report.error(
                        &p.field("operator"),
                        format!(
                            "unknown operator {other:?}: use In, NotIn, Exists or DoesNotExist"
                        ),
                    ),
                }
            }
        }
    }
}

/// Replaces top-level fields for one cluster; a field left out keeps the top-level value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOverride {
    /// The cluster this override applies to; must be one of the placement's clusters.
    pub cluster: String,
    /// Replacement HTTP routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<HttpRoute>>,
    /// Replacement TLS routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Vec<TlsRoute>>,
    /// Replacement TCP routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<Vec<TcpRoute>>,
    /// Replacement traffic policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Observed state of an AccessPoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPointStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AccessPointPhase>,
    /// The allocated VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// The published name (the first host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fqdn: Option<String>,
    /// The serving certificate's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateStatus>,
    /// Whether routes are configured on the gateways of every placed cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_configured: Option<bool>,
    /// Per-cluster rollout state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterRolloutStatus>,
    /// The rollout in progress or last finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Proxies that rejected configuration made from this object (NACKs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_rejections: Option<ProxyRejections>,
    /// `Accepted`, `Programmed`, `ResolvedRefs`, `RolledOut`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// AccessPoint summary phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AccessPointPhase {
    /// Accepted, not yet programmed anywhere.
    Pending,
    /// A rollout is moving through the clusters.
    RollingOut,
    /// A rollout waits for approval.
    Paused,
    /// Every placed cluster serves the latest revision.
    Ready,
    /// Some placed clusters fail to serve it.
    Degraded,
    /// Refused (see the Accepted condition).
    Invalid,
}

/// State of the serving certificate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    /// `Installed`, `Missing`, `Invalid`, `Expiring` or `Expired`.
    pub state: String,
    /// Version of the Secret in use (its resource version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Expiry of the certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

/// Rollout state of one cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRolloutStatus {
    /// Cluster name.
    pub name: String,
    /// The object generation this cluster serves.
    pub revision: i64,
    /// Where the cluster is in the rollout.
    pub phase: ClusterRolloutPhase,
    /// Proxies of the cluster that acknowledged the configuration.
    pub proxies_acked: u32,
    /// Proxies of the cluster.
    pub proxies_total: u32,
    /// Why the phase is what it is, when it is not obvious.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Per-cluster rollout phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClusterRolloutPhase {
    /// Not yet reached by the rollout.
    Pending,
    /// Configuration pushed, waiting for acknowledgements.
    Applying,
    /// Every proxy acknowledged.
    Applied,
    /// The verification probe passed.
    Verified,
    /// Waiting for approval.
    Paused,
    /// Verification failed.
    Failed,
    /// Returned to the previous revision by an abort.
    RolledBack,
}

/// Rollout summary.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// `Progressing`, `Paused`, `Completed`, `Failed` or `RolledBack`.
    pub phase: RolloutPhase,
    /// The generation being rolled out.
    pub revision: i64,
    /// The cluster the next batch starts with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cluster: Option<String>,
}

/// Rollout phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// Batches are being applied and verified.
    Progressing,
    /// Waiting for `causeway rollout approve`.
    Paused,
    /// Every cluster serves the revision.
    Completed,
    /// A batch failed verification; the rollout stopped.
    Failed,
    /// Aborted and returned to the previous revision.
    RolledBack,
}

fn serves_http(l: &Listener) -> bool {
    match l.protocol {
        Protocol::Http => true,
        Protocol::Https => l
            .tls
            .as_ref()
            .is_none_or(|t| t.mode != TlsMode::Passthrough),
        Protocol::Tls | Protocol::Tcp => false,
    }
}

fn is_passthrough(l: &Listener) -> bool {
    l.tls
        .as_ref()
        .is_some_and(|t| t.mode == TlsMode::Passthrough)
}

/// Whether `host` (exact or wildcard) covers `name`.
pub fn host_covers(host: &str, name: &str) -> bool {
    if host == "*" || host == name {
        return true;
    }
    match (host.strip_prefix("*."), name.strip_prefix("*.")) {
        (Some(suffix), None) => name
            .strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        (Some(suffix), Some(inner)) => inner == suffix || inner.ends_with(&format!(".{suffix}")),
        _ => false,
    }
}

impl Listener {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        checks::dns_label(&path.field("name"), &self.name, report);
        checks::port(&path.field("port"), self.port, report);
        let tls_path = path.field("tls");
        match (self.protocol, &self.tls) {
            (Protocol::Http | Protocol::Tcp, Some(_)) => report.error(
                &tls_path,
                format!(
                    "{} listeners carry no TLS: remove tls, or use protocol HTTPS (terminate) or \
                     TLS (passthrough)",
                    self.protocol
                ),
            ),
            (Protocol::Https | Protocol::Tls, None) => report.error(
                &tls_path,
                format!(
                    "{} listeners need tls: add tls: {{mode: SIMPLE, credentialRef: {{name: \
                     SECRET}}}} or tls: {{mode: PASSTHROUGH}}",
                    self.protocol
                ),
            ),
            _ => {}
        }
        if let Some(tls) = &self.tls {
            match tls.mode {
                TlsMode::Simple | TlsMode::Mutual => match &tls.credential_ref {
                    None => report.error(
                        &tls_path.field("credentialRef"),
                        format!(
                            "TLS mode {} terminates TLS and needs a certificate: set \
                             credentialRef to a kubernetes.io/tls Secret, or use mode PASSTHROUGH",
                            if tls.mode == TlsMode::Simple {
                                "SIMPLE"
                            } else {
                                "MUTUAL"
                            }
                        ),
                    ),
                    Some(r) => r.validate_at(&tls_path.field("credentialRef"), report),
                },
                TlsMode::Passthrough => {
                    if tls.credential_ref.is_some() {
                        report.warning(
                            &tls_path.field("credentialRef"),
                            "PASSTHROUGH never decrypts, so the credential is not used",
                        );
                    }
                }
            }
            if let Some(ca) = &tls.ca_ref {
                if tls.mode != TlsMode::Mutual {
                    report.error(
                        &tls_path.field("caRef"),
                        "caRef verifies client certificates: only for mode MUTUAL",
                    );
                }
                ca.validate_at(&tls_path.field("caRef"), report);
            }
        }
        if self.https_redirect == Some(true) && self.protocol != Protocol::Http {
            report.error(
                &path.field("httpsRedirect"),
                "httpsRedirect belongs on a plain HTTP listener",
            );
        }
    }
}

impl Validate for AccessPoint {
    fn validate_at(&self, _path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, true, report);
        self.spec.validate_at(&FieldPath::root("spec"), report);
    }
}

impl Validate for AccessPointSpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let hosts_path = path.field("hosts");
        if self.hosts.is_empty() {
            report.error(
                &hosts_path,
                "list at least one hostname, e.g. shop.example.com",
            );
        }
        validate_hosts(
            &hosts_path,
            &self.hosts,
            Wildcard::Allowed { bare: false },
            report,
        );

        let vp = path.field("vip");
        checks::dns_label(&vp.field("pool"), &self.vip.pool, report);
        if let Some(a) = &self.vip.address {
            checks::ip_address(&vp.field("address"), a, report);
        }
        if let Some(s) = &self.vip.share_with {
            checks::object_name(&vp.field("shareWith"), s, report);
            if self.vip.address.is_some() {
                report.error(&vp, "set either address or shareWith, not both");
            }
        }

        let lp = path.field("listeners");
        if self.listeners.is_empty() {
            report.error(
                &lp,
                "add at least one listener, e.g. {name: http, port: 80, protocol: HTTP}",
            );
        }
        for (i, l) in self.listeners.iter().enumerate() {
            l.validate_at(&lp.index(i), report);
        }
        checks::unique(
            &lp,
            self.listeners.iter().map(|l| l.name.as_str()).enumerate(),
            "listener name",
            report,
        );
        let mut ports: BTreeMap<u32, usize> = BTreeMap::new();
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(first) = ports.get(&l.port) {
                report.error(
                    &lp.index(i).field("port"),
                    format!(
                        "port {} is already used by listener {:?} (index {first}): each listener \
                         needs its own port",
                        l.port, self.listeners[*first].name
                    ),
                );
            } else {
                ports.insert(l.port, i);
            }
        }

        let sp = path.field("subsets");
        for (i, s) in self.subsets.iter().enumerate() {
            checks::dns_label(&sp.index(i).field("name"), &s.name, report);
            if s.labels.is_empty() {
                report.error(
                    &sp.index(i).field("labels"),
                    "a subset selects endpoints by labels: add at least one",
                );
            }
            checks::labels(&sp.index(i).field("labels"), &s.labels, report);
        }
        checks::unique(
            &sp,
            self.subsets.iter().map(|s| s.name.as_str()).enumerate(),
            "subset name",
            report,
        );
        let subset_names: Vec<&str> = self.subsets.iter().map(|s| s.name.as_str()).collect();
        let ctx = RouteContext {
            subsets: &subset_names,
        };

        self.validate_routes(path, &self.http, &self.tls, &self.tcp, &ctx, report);

        self.placement.validate_at(&path.field("placement"), report);
        let op = path.field("overrides");
        checks::unique(
            &op,
            self.overrides
                .iter()
                .map(|o| o.cluster.as_str())
                .enumerate(),
            "override cluster",
            report,
        );
        for (i, o) in self.overrides.iter().enumerate() {
            let p = op.index(i);
            if checks::dns_label(&p.field("cluster"), &o.cluster, report)
                && !self.placement.clusters.is_empty()
                && !self.placement.clusters.contains(&o.cluster)
            {
                report.error(
                    &p.field("cluster"),
                    format!(
                        "cluster {:?} is not in spec.placement.clusters ({}): add it to the \
                         placement or remove this override",
                        o.cluster,
                        self.placement.clusters.join(", ")
                    ),
                );
            }
            self.validate_routes(
                &p,
                o.http.as_deref().unwrap_or(&self.http),
                o.tls.as_deref().unwrap_or(&self.tls),
                o.tcp.as_deref().unwrap_or(&self.tcp),
                &ctx,
                report,
            );
            if let Some(tp) = &o.traffic_policy {
                tp.validate_at(&p.field("trafficPolicy"), report);
            }
        }
        if let Some(tp) = &self.traffic_policy {
            tp.validate_at(&path.field("trafficPolicy"), report);
        }
        if let Some(r) = &self.rollout {
            r.validate_at(&path.field("rollout"), report);
        }
    }
}

impl AccessPointSpec {
    /// Checks routes against the listeners. `path` is `spec` for the top level or
    /// `spec.overrides[i]`; only fields that exist there are reported under it.
    fn validate_routes(
        &self,
        path: &FieldPath,
        http: &[HttpRoute],
        tls: &[TlsRoute],
        tcp: &[TcpRoute],
        ctx: &RouteContext<'_>,
        report: &mut Report,
    ) {
        let is_override = path.as_str() != "spec";
        let hp = path.field("http");
        let tp = path.field("tls");
        let cp = path.field("tcp");
        let by_port: BTreeMap<u32, &Listener> =
            self.listeners.iter().map(|l| (l.port, l)).collect();
        let http_capable = self.listeners.iter().any(serves_http);
        if !http.is_empty() && !http_capable && !self.listeners.is_empty() {
            let passthrough = self.listeners.iter().any(is_passthrough);
            let msg = if passthrough {
                "HTTP routes cannot apply to PASSTHROUGH listeners (the gateway never decrypts \
                 them): route by SNI with spec.tls, or terminate TLS with tls.mode SIMPLE"
            } else {
                "no listener serves HTTP: add an HTTP listener or an HTTPS listener with tls.mode SIMPLE"
            };
            report.error(&hp, msg);
        }
        for (i, r) in http.iter().enumerate() {
            let p = hp.index(i);
            r.validate_with(&p, ctx, report);
            for (j, m) in r.matches.iter().enumerate() {
                let Some(port) = m.port else { continue };
                let mp = p.field("match").index(j).field("port");
                match by_port.get(&port) {
                    None => report.error(&mp, format!("no listener has port {port}")),
                    Some(l) if is_passthrough(l) => report.error(
                        &mp,
                        format!(
                            "listener {:?} (port {port}) is PASSTHROUGH: HTTP routes cannot apply \
                             to it; use spec.tls with sniHosts",
                            l.name
                        ),
                    ),
                    Some(l) if !serves_http(l) => report.error(
                        &mp,
                        format!(
                            "listener {:?} (port {port}) is {}, not HTTP",
                            l.name, l.protocol
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
        let has_passthrough = self.listeners.iter().any(is_passthrough);
        if !tls.is_empty() && !has_passthrough && !self.listeners.is_empty() {
            report.error(&tp, "TLS routes need a listener with tls.mode PASSTHROUGH");
        }
        for (i, r) in tls.iter().enumerate() {
            let p = tp.index(i);
            r.validate_with(&p, ctx, report);
            for (j, sni) in r.sni_hosts.iter().enumerate() {
                if !self.hosts.iter().any(|h| host_covers(h, sni)) {
                    report.error(
                        &p.field("sniHosts").index(j),
                        format!(
                            "{sni:?} is not covered by spec.hosts: add it there, or fix the name"
                        ),
                    );
                }
            }
            if let Some(port) = r.port
                && by_port.get(&port).is_none_or(|l| !is_passthrough(l))
            {
                report.error(
                    &p.field("port"),
                    format!("no PASSTHROUGH listener has port {port}"),
                );
            }
        }
        let has_tcp = self.listeners.iter().any(|l| l.protocol == Protocol::Tcp);
        if !tcp.is_empty() && !has_tcp && !self.listeners.is_empty() {
            report.error(&cp, "TCP routes need a listener with protocol TCP");
        }
        for (i, r) in tcp.iter().enumerate() {
            let p = cp.index(i);
            r.validate_with(&p, ctx, report);
            if let Some(port) = r.port
                && by_port
                    .get(&port)
                    .is_none_or(|l| l.protocol != Protocol::Tcp)
            {
                report.error(&p.field("port"), format!("no TCP listener has port {port}"));
            }
        }
        if is_override {
            return;
        }
        // Listeners no route can serve would accept connections only to drop them.
        let lp = path.field("listeners");
        for (i, l) in self.listeners.iter().enumerate() {
            if is_passthrough(l) && !tls.iter().any(|r| r.port.is_none_or(|p| p == l.port)) {
                report.error(
                    &lp.index(i),
                    format!("PASSTHROUGH listener {:?} has no route: add a spec.tls route with sniHosts", l.name),
                );
            } else if l.protocol == Protocol::Tcp
                && !tcp.iter().any(|r| r.port.is_none_or(|p| p == l.port))
            {
                report.error(
                    &lp.index(i),
                    format!(
                        "TCP listener {:?} has no route: add a spec.tcp route for port {}",
                        l.name, l.port
                    ),
                );
            } else if serves_http(l) && http.is_empty() && l.https_redirect != Some(true) {
                report.warning(
                    &lp.index(i),
                    format!(
                        "listener {:?} has no HTTP route: every request will get 404",
                        l.name
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_cover() {
        assert!(host_covers("*.example.com", "shop.example.com"));
        assert!(host_covers("*.example.com", "a.b.example.com"));
        assert!(!host_covers("*.example.com", "example.com"));
        assert!(!host_covers("*.example.com", "badexample.com"));
        assert!(host_covers("*.example.com", "*.a.example.com"));
        assert!(host_covers("shop.example.com", "shop.example.com"));
        assert!(!host_covers("shop.example.com", "*.example.com"));
    }
}
