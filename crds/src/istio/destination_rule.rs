//! `DestinationRule`: what happens to traffic after routing chose a service: subsets, load
//! balancing (including locality), connection pools, outlier detection and client TLS.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    PortSelector, export_to, header_name, label_map, locality, partial_service_name,
    validate_metadata,
};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Spec of an Istio `DestinationRule`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "DestinationRule",
    namespaced,
    derive = "PartialEq",
    doc = "Istio DestinationRule: policies for traffic to one service, and its subsets."
)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// The service the rule applies to (short name, FQDN, wildcard or ServiceEntry host).
    pub host: String,
    /// Default policy for every port and subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of the service's endpoints, selected by labels (versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
    /// Namespaces the rule is visible to (`.`, `*` or names); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Restricts the rule to the workloads (clients) with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<MatchLabelsSelector>,
}

/// Istio's `type.v1beta1.WorkloadSelector`: workloads by `matchLabels`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchLabelsSelector {
    /// Labels the selected workloads carry (all must match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// A named subset of a service's endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// Name used by `destination.subset` (a DNS label such as `v1`).
    pub name: String,
    /// Endpoint labels selecting the subset's members (on top of the service's selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Policy overriding the rule's default for this subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Policies applied to traffic for a service (or one subset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Load-balancing algorithm and locality settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS used towards the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_level_settings: Vec<PortTrafficPolicy>,
}

/// Policies for one port of the service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// The port these settings apply to.
    pub port: PortSelector,
    /// Load-balancing algorithm and locality settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection and request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS used towards the endpoints on this port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// A load-balancing algorithm without session affinity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Istio picks (currently LEAST_REQUEST).
    Unspecified,
    /// Deprecated alias of LEAST_REQUEST.
    LeastConn,
    /// A random healthy endpoint.
    Random,
    /// The caller's original destination address, without load balancing.
    Passthrough,
    /// Each endpoint in turn.
    RoundRobin,
    /// The endpoint with the fewest outstanding requests (of two picked at random).
    LeastRequest,
}

/// Load-balancer settings: `simple` or `consistentHash` (a oneof), plus locality.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// A simple algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Session affinity by hashing a request property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality-aware distribution and failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Slow-start window for new endpoints (Go duration; the field keeps Istio's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<String>,
}

/// Consistent hashing: one hash key (a oneof) and one hashing algorithm (a oneof).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHashLb {
    /// Hash on this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie (generated when absent and a ttl is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the client's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ring-hash algorithm settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Maglev algorithm settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<Maglev>,
    /// Deprecated: write `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// The cookie a consistent hash uses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie path, when the proxy generates the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of a generated cookie (Go duration; `0s` makes a session cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// Ring-hash settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RingHash {
    /// Minimum number of virtual nodes on the ring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// Maglev settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Maglev {
    /// Lookup table size; must be prime (Envoy's default is 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// Locality-aware load balancing: weighted `distribute` or ordered `failover` (not both).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityLbSetting {
    /// Fixed traffic shares per source locality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Which region takes over when a region's endpoints are all unhealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Endpoint labels (e.g. `topology.istio.io/network`) ranking failover priority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Turns locality load balancing on or off for this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Traffic from `from` is spread over the localities in `to` by weight.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityDistribute {
    /// Source locality (`region/zone/subzone`, may end in `*`).
    pub from: String,
    /// Destination localities and their weights (1-100, adding up to 100).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// When region `from` has no healthy endpoints, use region `to`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityFailover {
    /// The failing region.
    pub from: String,
    /// The region that takes over.
    pub to: String,
}

/// Connection-pool (circuit-breaker) limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPoolSettings {
    /// Limits common to TCP and HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpSettings>,
    /// HTTP request limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// TCP connection limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    /// Maximum connections to the destination (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// TCP connect timeout (Go duration, default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// TCP keepalive probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum lifetime of a connection (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_duration: Option<String>,
    /// Idle timeout of TCP connections (Go duration, default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

/// TCP keepalive settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u32>,
    /// Idle time before the first probe (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Time between probes (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// Whether HTTP/1.1 connections to the destination are upgraded to HTTP/2.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// The mesh-wide default.
    Default,
    /// Never upgrade.
    DoNotUpgrade,
    /// Upgrade.
    Upgrade,
}

/// HTTP request limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    /// Maximum requests queued waiting for a connection (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// Maximum active requests to the destination (default 2^32-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    /// Requests per connection before it is closed (0 = unlimited, 1 = no keep-alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Maximum outstanding retries across the destination's endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Idle timeout of upstream connections (Go duration, default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// HTTP/2 upgrade policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Forward with the protocol the client used (HTTP/1.1 or HTTP/2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_client_protocol: Option<bool>,
    /// Maximum concurrent streams per HTTP/2 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
}

/// Outlier detection: ejecting endpoints that keep failing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Deprecated: counts only 502/503/504; write `consecutiveGatewayErrors` or
    /// `consecutive5xxErrors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_errors: Option<u32>,
    /// Consecutive locally originated failures (connect errors) before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_local_origin_failures: Option<u32>,
    /// Consecutive 502/503/504 (and connect errors) before ejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive 5xx (and connect errors) before ejection (default 5; 0 disables).
    #[serde(
        rename = "consecutive5xxErrors",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    /// Time between ejection sweeps (Go duration, default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Minimum ejection time, multiplied by the number of ejections (Go duration, default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Most endpoints that may be ejected, in percent (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Outlier detection stops when fewer endpoints than this percentage are healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<u32>,
    /// Count locally originated failures separately from upstream errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_external_local_origin_errors: Option<bool>,
}

/// TLS mode towards a destination.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain TCP (the default).
    Disable,
    /// TLS, verifying the server when a CA is given.
    Simple,
    /// Mutual TLS with the client certificate given here.
    Mutual,
    /// Mutual TLS with Istio's workload certificates.
    IstioMutual,
}

/// TLS settings towards a destination (origination).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSettings {
    /// The TLS mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientTlsMode>,
    /// Client certificate file (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// Client private key file (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle file verifying the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Secret holding the client certificate/key and/or CA (instead of files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Names accepted in the server certificate's SAN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// SNI sent in the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Skip verifying the server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
}

impl Validate for DestinationRule {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, &path.field("metadata"), report);
        self.spec.validate_at(&path.field("spec"), report);
    }
}

impl Validate for DestinationRuleSpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let hp = path.field("host");
        if self.host.is_empty() {
            report.error(
                &hp,
                "host is required: name the service, e.g. reviews.prod.svc.cluster.local",
            );
        } else if self.host.parse::<std::net::IpAddr>().is_err()
            && checks::hostname(&hp, &self.host, Wildcard::Allowed { bare: true }, report)
        {
            partial_service_name(&hp, &self.host, report);
        }
        let top_outlier = self
            .traffic_policy
            .as_ref()
            .is_some_and(|t| t.outlier_detection.is_some());
        if let Some(tp) = &self.traffic_policy {
            tp.validate(&path.field("trafficPolicy"), false, report);
        }
        let sp = path.field("subsets");
        for (i, s) in self.subsets.iter().enumerate() {
            let p = sp.index(i);
            checks::dns_label(&p.field("name"), &s.name, report);
            label_map(&p.field("labels"), &s.labels, report);
            if let Some(tp) = &s.traffic_policy {
                tp.validate(&p.field("trafficPolicy"), top_outlier, report);
            }
        }
        checks::unique(
            &sp,
            self.subsets.iter().map(|s| s.name.as_str()).enumerate(),
            "subset name",
            report,
        );
        export_to(&path.field("exportTo"), &self.export_to, report);
        if let Some(ws) = &self.workload_selector {
            label_map(
                &path.field("workloadSelector").field("matchLabels"),
                &ws.match_labels,
                report,
            );
        }
    }
}

impl TrafficPolicy {
    /// `inherited_outlier`: whether an enclosing policy (the rule's default, for a subset)
    /// already configures outlier detection, which Istio merges into this one.
    fn validate(&self, path: &FieldPath, inherited_outlier: bool, report: &mut Report) {
        if self.load_balancer.is_none()
            && self.connection_pool.is_none()
            && self.outlier_detection.is_none()
            && self.tls.is_none()
            && self.port_level_settings.is_empty()
        {
            report.error(
                path,
                "trafficPolicy is empty: set loadBalancer, connectionPool, outlierDetection, tls \
                 or portLevelSettings, or remove it",
            );
        }
        let outlier = inherited_outlier || self.outlier_detection.is_some();
        policy_parts(
            path,
            self.load_balancer.as_ref(),
            self.connection_pool.as_ref(),
            self.outlier_detection.as_ref(),
            self.tls.as_ref(),
            outlier,
            report,
        );
        let pp = path.field("portLevelSettings");
        for (i, p) in self.port_level_settings.iter().enumerate() {
            let ip = pp.index(i);
            p.port.validate_at(&ip.field("port"), report);
            policy_parts(
                &ip,
                p.load_balancer.as_ref(),
                p.connection_pool.as_ref(),
                p.outlier_detection.as_ref(),
                p.tls.as_ref(),
                outlier || p.outlier_detection.is_some(),
                report,
            );
        }
        let numbers: Vec<String> = self
            .port_level_settings
            .iter()
            .map(|p| p.port.number.to_string())
            .collect();
        checks::unique(
            &pp,
            numbers.iter().map(String::as_str).enumerate(),
            "port",
            report,
        );
    }
}

fn policy_parts(
    path: &FieldPath,
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    has_outlier: bool,
    report: &mut Report,
) {
    if let Some(lb) = lb {
        lb.validate(&path.field("loadBalancer"), has_outlier, report);
    }
    if let Some(pool) = pool {
        pool.validate_at(&path.field("connectionPool"), report);
    }
    if let Some(o) = outlier {
        o.validate_at(&path.field("outlierDetection"), report);
    }
    if let Some(t) = tls {
        t.validate_at(&path.field("tls"), report);
    }
}

impl LoadBalancerSettings {
    fn validate(&self, path: &FieldPath, has_outlier: bool, report: &mut Report) {
        if self.simple.is_some() && self.consistent_hash.is_some() {
            report.error(
                path,
                "simple and consistentHash cannot both be set: use consistentHash for session \
                 affinity, simple otherwise",
            );
        }
        if self.simple == Some(SimpleLb::LeastConn) {
            report.warning(
                &path.field("simple"),
                "LEAST_CONN is deprecated and means LEAST_REQUEST: write LEAST_REQUEST",
            );
        }
        if let Some(ch) = &self.consistent_hash {
            ch.validate_at(&path.field("consistentHash"), report);
        }
        if let Some(l) = &self.locality_lb_setting {
            l.validate(&path.field("localityLbSetting"), has_outlier, report);
        }
        if let Some(w) = &self.warmup_duration_secs {
            checks::duration(&path.field("warmupDurationSecs"), w, true, report);
        }
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

impl Validate for ConsistentHashLb {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let keys = [
            ("httpHeaderName", self.http_header_name.is_some()),
            ("httpCookie", self.http_cookie.is_some()),
            ("useSourceIp", self.use_source_ip.is_some()),
            (
                "httpQueryParameterName",
                self.http_query_parameter_name.is_some(),
            ),
        ];
        let set: Vec<&str> = keys.iter().filter(|k| k.1).map(|k| k.0).collect();
        match set.len() {
            0 => report.error(
                path,
                "consistentHash needs a hash key: set one of httpHeaderName, httpCookie, \
                 useSourceIp or httpQueryParameterName",
            ),
            1 => {}
            _ => report.error(
                path,
                format!(
                    "consistentHash takes exactly one hash key, not {}: keep one",
                    set.join(" and ")
                ),
            ),
        }
        if let Some(h) = &self.http_header_name {
            header_name(&path.field("httpHeaderName"), h, report);
        }
        if let Some(c) = &self.http_cookie {
            let cp = path.field("httpCookie");
            if c.name.is_empty() {
                report.error(&cp.field("name"), "cookie name is required, e.g. user");
            }
            if let Some(ttl) = &c.ttl {
                checks::duration(&cp.field("ttl"), ttl, false, report);
            }
        }
        if let Some(q) = &self.http_query_parameter_name
            && q.is_empty()
        {
            report.error(
                &path.field("httpQueryParameterName"),
                "query parameter name is empty: name the parameter",
            );
        }
        let algorithms = usize::from(self.ring_hash.is_some())
            + usize::from(self.maglev.is_some())
            + usize::from(self.minimum_ring_size.is_some());
        if algorithms > 1 {
            report.error(
                path,
                "set at most one of ringHash, maglev and (deprecated) minimumRingSize",
            );
        }
        if self.minimum_ring_size.is_some() {
            report.warning(
                &path.field("minimumRingSize"),
                "minimumRingSize is deprecated: write ringHash: {minimumRingSize: ...}",
            );
        }
        if let Some(size) = self.maglev.as_ref().and_then(|m| m.table_size)
            && !is_prime(size)
        {
            report.error(
                &path.field("maglev").field("tableSize"),
                format!("{size} is not prime: Maglev needs a prime table size such as 65537"),
            );
        }
    }
}

impl LocalityLbSetting {
    fn validate(&self, path: &FieldPath, has_outlier: bool, report: &mut Report) {
        if self.enabled == Some(false) {
            return;
        }
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            report.error(
                path,
                "distribute and failover cannot both be set (Istio refuses it): use distribute \
                 for fixed weights per locality, or failover for an ordered fallback",
            );
        }
        if !has_outlier && (!self.failover.is_empty() || !self.failover_priority.is_empty()) {
            let field = if self.failover.is_empty() {
                "failoverPriority"
            } else {
                "failover"
            };
            report.warning(
                &path.field(field),
                "failover without outlierDetection does nothing: Istio accepts it but silently \
                 ignores failover, because no endpoint is ever marked unhealthy; add \
                 outlierDetection (e.g. {consecutive5xxErrors: 3, interval: 1s, \
                 baseEjectionTime: 30s})",
            );
        }
        let dp = path.field("distribute");
        for (i, d) in self.distribute.iter().enumerate() {
            let p = dp.index(i);
            locality(&p.field("from"), &d.from, true, report);
            let tp = p.field("to");
            if d.to.is_empty() {
                report.error(
                    &tp,
                    "to is required: give destination localities and weights, e.g. \
                     {\"us-west/*\": 80, \"us-east/*\": 20}",
                );
                continue;
            }
            let mut in_range = true;
            for (loc, w) in &d.to {
                let lp = tp.key(loc);
                locality(&lp, loc, true, report);
                if *w == 0 || *w > 100 {
                    report.error(&lp, format!("weight {w} is out of range: use 1-100"));
                    in_range = false;
                }
            }
            let sum: u32 = d.to.values().sum();
            if in_range && sum != 100 {
                report.error(
                    &tp,
                    format!(
                        "the locality weights add up to {sum}: they must add up to 100; adjust \
                         the weights"
                    ),
                );
            }
        }
        let fp = path.field("failover");
        for (i, f) in self.failover.iter().enumerate() {
            let p = fp.index(i);
            for (field, value) in [("from", &f.from), ("to", &f.to)] {
                if value.is_empty() || value.contains('/') || value.contains('*') {
                    report.error(
                        &p.field(field),
                        format!(
                            "{value:?} is not a region: failover works between regions, so \
                             write a region name such as us-east (no '/' or '*')"
                        ),
                    );
                }
            }
            if f.from == f.to {
                report.error(
                    &p,
                    format!(
                        "failover from {:?} to itself: name a different region",
                        f.from
                    ),
                );
            }
        }
        let pp = path.field("failoverPriority");
        for (i, label) in self.failover_priority.iter().enumerate() {
            let key = label.split_once('=').map_or(label.as_str(), |(k, _)| k);
            if key.is_empty() {
                report.error(
                    &pp.index(i),
                    "empty label: write a label key such as topology.istio.io/network",
                );
            } else if !self.failover.is_empty()
                && matches!(
                    key,
                    "topology.kubernetes.io/region"
                        | "topology.kubernetes.io/zone"
                        | "topology.istio.io/subzone"
                )
            {
                report.error(
                    &pp.index(i),
                    format!(
                        "{key} cannot be used together with failover: remove the topology \
                         label (failover already orders regions) or remove failover"
                    ),
                );
            }
        }
    }
}

impl Validate for ConnectionPoolSettings {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if self.tcp.is_none() && self.http.is_none() {
            report.error(path, "connectionPool is empty: set tcp and/or http limits");
        }
        if let Some(t) = &self.tcp {
            let tp = path.field("tcp");
            for (field, value) in [
                ("connectTimeout", &t.connect_timeout),
                ("maxConnectionDuration", &t.max_connection_duration),
                ("idleTimeout", &t.idle_timeout),
            ] {
                if let Some(v) = value {
                    checks::duration(&tp.field(field), v, true, report);
                }
            }
            if let Some(k) = &t.tcp_keepalive {
                let kp = tp.field("tcpKeepalive");
                for (field, value) in [("time", &k.time), ("interval", &k.interval)] {
                    if let Some(v) = value {
                        checks::duration(&kp.field(field), v, true, report);
                    }
                }
            }
        }
        if let Some(h) = &self.http
            && let Some(v) = &h.idle_timeout
        {
            checks::duration(&path.field("http").field("idleTimeout"), v, true, report);
        }
    }
}

impl Validate for OutlierDetection {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(n) = self.consecutive_errors {
            report.warning(
                &path.field("consecutiveErrors"),
                format!(
                    "consecutiveErrors is deprecated and counts only 502/503/504: write \
                     consecutiveGatewayErrors: {n} (same meaning) or consecutive5xxErrors: {n} \
                     (every 5xx)"
                ),
            );
        }
        for (field, value) in [
            ("interval", &self.interval),
            ("baseEjectionTime", &self.base_ejection_time),
        ] {
            if let Some(v) = value {
                checks::duration(&path.field(field), v, true, report);
            }
        }
        for (field, value) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            if let Some(v) = value
                && v > 100
            {
                report.error(
                    &path.field(field),
                    format!("{v} is not a percentage: use 0-100"),
                );
            }
        }
        if self.consecutive_local_origin_failures.is_some()
            && self.split_external_local_origin_errors != Some(true)
        {
            report.warning(
                &path.field("consecutiveLocalOriginFailures"),
                "ignored unless splitExternalLocalOriginErrors is true: set it, or remove this \
                 field",
            );
        }
    }
}

impl Validate for ClientTlsSettings {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let files = [
            ("clientCertificate", &self.client_certificate),
            ("privateKey", &self.private_key),
            ("caCertificates", &self.ca_certificates),
            ("caCrl", &self.ca_crl),
        ];
        match self.mode {
            None | Some(ClientTlsMode::Disable) => {
                let mut ignored: Vec<&str> = files
                    .iter()
                    .filter(|f| f.1.is_some())
                    .map(|f| f.0)
                    .collect();
                if self.credential_name.is_some() {
                    ignored.push("credentialName");
                }
                if self.sni.is_some() {
                    ignored.push("sni");
                }
                if !ignored.is_empty() {
                    report.warning(
                        &path.field("mode"),
                        format!(
                            "mode is {} so {} is ignored: set mode SIMPLE or MUTUAL to use it",
                            if self.mode.is_none() {
                                "not set (DISABLE)"
                            } else {
                                "DISABLE"
                            },
                            ignored.join(", ")
                        ),
                    );
                }
            }
            Some(ClientTlsMode::IstioMutual) => {
                for (field, value) in files
                    .iter()
                    .copied()
                    .chain([("credentialName", &self.credential_name)])
                {
                    if value.is_some() {
                        report.warning(
                            &path.field(field),
                            format!(
                                "ignored with mode ISTIO_MUTUAL, which always uses Istio's \
                                 workload certificates: remove {field}, or use mode MUTUAL to \
                                 present your own certificate"
                            ),
                        );
                    }
                }
            }
            Some(mode @ (ClientTlsMode::Simple | ClientTlsMode::Mutual)) => {
                if self.credential_name.is_some() {
                    for (field, value) in files {
                        if value.is_some() {
                            report.error(
                                &path.field(field),
                                format!(
                                    "{field} cannot be set together with credentialName: the \
                                     Secret supplies the certificates; remove one of them"
                                ),
                            );
                        }
                    }
                } else if mode == ClientTlsMode::Mutual {
                    for (field, value) in [
                        ("clientCertificate", &self.client_certificate),
                        ("privateKey", &self.private_key),
                    ] {
                        if value.is_none() {
                            report.error(
                                &path.field(field),
                                format!(
                                    "mode MUTUAL needs {field}: set clientCertificate and \
                                     privateKey, or credentialName (a Secret holding them)"
                                ),
                            );
                        }
                    }
                }
                if self.insecure_skip_verify == Some(true) {
                    let mut conflicting = Vec::new();
                    if self.ca_certificates.is_some() {
                        conflicting.push("caCertificates");
                    }
                    if !self.subject_alt_names.is_empty() {
                        conflicting.push("subjectAltNames");
                    }
                    if mode == ClientTlsMode::Simple && self.credential_name.is_some() {
                        conflicting.push("credentialName");
                    }
                    if !conflicting.is_empty() {
                        report.error(
                            &path.field("insecureSkipVerify"),
                            format!(
                                "insecureSkipVerify turns off the verification that {} \
                                 configures: remove one or the other",
                                conflicting.join(" and ")
                            ),
                        );
                    }
                }
            }
        }
        if let Some(sni) = &self.sni {
            checks::hostname(&path.field("sni"), sni, Wildcard::Forbidden, report);
        }
        let sp = path.field("subjectAltNames");
        for (i, san) in self.subject_alt_names.iter().enumerate() {
            if san.is_empty() {
                report.error(&sp.index(i), "empty subject alternative name: remove it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dr(tp: TrafficPolicy) -> DestinationRule {
        DestinationRule::new(
            "reviews",
            DestinationRuleSpec {
                host: "reviews.prod.svc.cluster.local".into(),
                traffic_policy: Some(tp),
                ..Default::default()
            },
        )
    }

    fn has(d: &DestinationRule, path: &str, needle: &str) -> bool {
        d.validate()
            .findings()
            .iter()
            .any(|f| f.path.as_str() == path && f.message.contains(needle))
    }

    fn all(d: &DestinationRule) -> Vec<String> {
        d.validate()
            .findings()
            .iter()
            .map(|f| f.to_string())
            .collect()
    }

    fn locality_lb(l: LocalityLbSetting, outlier: bool) -> DestinationRule {
        dr(TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                locality_lb_setting: Some(l),
                ..Default::default()
            }),
            outlier_detection: outlier.then(|| OutlierDetection {
                consecutive_5xx_errors: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    const LB: &str = "spec.trafficPolicy.loadBalancer.localityLbSetting";

    #[test]
    fn distribute_weights_must_add_to_100() {
        let d = locality_lb(
            LocalityLbSetting {
                distribute: vec![LocalityDistribute {
                    from: "us-west/*".into(),
                    to: [("us-west/*".to_owned(), 80), ("us-east/*".to_owned(), 10)].into(),
                }],
                ..Default::default()
            },
            false,
        );
        assert!(
            has(&d, &format!("{LB}.distribute[0].to"), "add up to 90"),
            "{:?}",
            all(&d)
        );
        let d = locality_lb(
            LocalityLbSetting {
                distribute: vec![LocalityDistribute {
                    from: "us-west/*".into(),
                    to: [("us-west/*".to_owned(), 99), ("us-east/*".to_owned(), 1)].into(),
                }],
                ..Default::default()
            },
            false,
        );
        assert!(all(&d).is_empty(), "{:?}", all(&d));
    }

    #[test]
    fn distribute_and_failover_conflict() {
        let d = locality_lb(
            LocalityLbSetting {
                distribute: vec![LocalityDistribute {
                    from: "us-west/*".into(),
                    to: [("us-west/*".to_owned(), 100)].into(),
                }],
                failover: vec![LocalityFailover {
                    from: "us-west".into(),
                    to: "us-east".into(),
                }],
                ..Default::default()
            },
            true,
        );
        assert!(has(&d, LB, "cannot both be set"));
    }

    #[test]
    fn failover_without_outlier_detection_warns() {
        let l = LocalityLbSetting {
            failover: vec![LocalityFailover {
                from: "us-west".into(),
                to: "us-east".into(),
            }],
            ..Default::default()
        };
        let d = locality_lb(l.clone(), false);
        let r = d.validate();
        assert!(r.is_ok());
        assert_eq!(r.findings().len(), 1);
        assert_eq!(r.findings()[0].path.as_str(), format!("{LB}.failover"));
        assert!(
            r.findings()[0]
                .message
                .contains("silently ignores failover")
        );
        assert!(locality_lb(l, true).validate().findings().is_empty());
    }

    #[test]
    fn subset_inherits_outlier_detection() {
        let mut d = dr(TrafficPolicy {
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx_errors: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        });
        d.spec.subsets = vec![Subset {
            name: "v1".into(),
            labels: [("version".to_owned(), "v1".to_owned())].into(),
            traffic_policy: Some(TrafficPolicy {
                load_balancer: Some(LoadBalancerSettings {
                    locality_lb_setting: Some(LocalityLbSetting {
                        failover: vec![LocalityFailover {
                            from: "us-west".into(),
                            to: "us-east".into(),
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }];
        assert!(all(&d).is_empty(), "{:?}", all(&d));
    }

    #[test]
    fn failover_must_name_regions() {
        let d = locality_lb(
            LocalityLbSetting {
                failover: vec![LocalityFailover {
                    from: "us-west/zone-a".into(),
                    to: "us-west/zone-a".into(),
                }],
                ..Default::default()
            },
            true,
        );
        assert!(has(&d, &format!("{LB}.failover[0].from"), "not a region"));
        assert!(has(&d, &format!("{LB}.failover[0]"), "to itself"));
    }

    #[test]
    fn simple_and_hash_conflict_and_hash_keys() {
        let d = dr(TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                simple: Some(SimpleLb::RoundRobin),
                consistent_hash: Some(ConsistentHashLb {
                    http_header_name: Some("x-user".into()),
                    use_source_ip: Some(true),
                    maglev: Some(Maglev {
                        table_size: Some(1000),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        let lb = "spec.trafficPolicy.loadBalancer";
        assert!(has(&d, lb, "cannot both be set"));
        assert!(has(
            &d,
            &format!("{lb}.consistentHash"),
            "exactly one hash key"
        ));
        assert!(has(
            &d,
            &format!("{lb}.consistentHash.maglev.tableSize"),
            "not prime"
        ));
    }

    #[test]
    fn least_conn_is_deprecated() {
        let d = dr(TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                simple: Some(SimpleLb::LeastConn),
                ..Default::default()
            }),
            ..Default::default()
        });
        let r = d.validate();
        assert!(r.is_ok());
        assert!(has(
            &d,
            "spec.trafficPolicy.loadBalancer.simple",
            "LEAST_REQUEST"
        ));
    }

    #[test]
    fn pool_and_outlier_durations() {
        let d = dr(TrafficPolicy {
            connection_pool: Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    connect_timeout: Some("30".into()),
                    ..Default::default()
                }),
                http: None,
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_errors: Some(5),
                interval: Some("0s".into()),
                max_ejection_percent: Some(110),
                ..Default::default()
            }),
            ..Default::default()
        });
        let tp = "spec.trafficPolicy";
        assert!(has(
            &d,
            &format!("{tp}.connectionPool.tcp.connectTimeout"),
            "missing unit"
        ));
        assert!(has(
            &d,
            &format!("{tp}.outlierDetection.interval"),
            "greater than zero"
        ));
        assert!(has(
            &d,
            &format!("{tp}.outlierDetection.maxEjectionPercent"),
            "0-100"
        ));
        assert!(has(
            &d,
            &format!("{tp}.outlierDetection.consecutiveErrors"),
            "deprecated"
        ));
    }

    #[test]
    fn empty_policies_are_refused() {
        let d = dr(TrafficPolicy {
            connection_pool: Some(ConnectionPoolSettings::default()),
            ..Default::default()
        });
        assert!(has(&d, "spec.trafficPolicy.connectionPool", "is empty"));
        let d = dr(TrafficPolicy::default());
        assert!(has(&d, "spec.trafficPolicy", "trafficPolicy is empty"));
    }

    #[test]
    fn tls_rules() {
        let tls = |t: ClientTlsSettings| {
            dr(TrafficPolicy {
                tls: Some(t),
                ..Default::default()
            })
        };
        let d = tls(ClientTlsSettings {
            mode: Some(ClientTlsMode::IstioMutual),
            client_certificate: Some("/etc/certs/myclientcert.pem".into()),
            ..Default::default()
        });
        assert!(d.validate().is_ok());
        assert!(has(
            &d,
            "spec.trafficPolicy.tls.clientCertificate",
            "ISTIO_MUTUAL"
        ));
        let d = tls(ClientTlsSettings {
            mode: Some(ClientTlsMode::Mutual),
            ..Default::default()
        });
        assert!(has(
            &d,
            "spec.trafficPolicy.tls.clientCertificate",
            "MUTUAL needs"
        ));
        let d = tls(ClientTlsSettings {
            mode: Some(ClientTlsMode::Simple),
            credential_name: Some("cred".into()),
            ca_certificates: Some("/ca.pem".into()),
            ..Default::default()
        });
        assert!(has(
            &d,
            "spec.trafficPolicy.tls.caCertificates",
            "credentialName"
        ));
        let d = tls(ClientTlsSettings {
            mode: Some(ClientTlsMode::Simple),
            insecure_skip_verify: Some(true),
            subject_alt_names: vec!["a".into()],
            ..Default::default()
        });
        assert!(has(
            &d,
            "spec.trafficPolicy.tls.insecureSkipVerify",
            "subjectAltNames"
        ));
        let d = tls(ClientTlsSettings {
            sni: Some("istio.io".into()),
            ..Default::default()
        });
        assert!(has(&d, "spec.trafficPolicy.tls.mode", "ignored"));
    }

    #[test]
    fn subsets_and_ports() {
        let mut d = dr(TrafficPolicy {
            port_level_settings: vec![
                PortTrafficPolicy {
                    port: PortSelector { number: 80 },
                    ..Default::default()
                },
                PortTrafficPolicy {
                    port: PortSelector { number: 80 },
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        d.spec.subsets = vec![
            Subset {
                name: "V1".into(),
                ..Default::default()
            },
            Subset {
                name: "V1".into(),
                ..Default::default()
            },
        ];
        assert!(has(
            &d,
            "spec.trafficPolicy.portLevelSettings[1]",
            "duplicate port"
        ));
        assert!(has(&d, "spec.subsets[0].name", "not a valid name"));
        assert!(has(&d, "spec.subsets[1]", "duplicate subset name"));
    }

    #[test]
    fn partial_host_warns() {
        let mut d = dr(TrafficPolicy {
            tls: Some(ClientTlsSettings {
                mode: Some(ClientTlsMode::IstioMutual),
                ..Default::default()
            }),
            ..Default::default()
        });
        d.spec.host = "reviews.prod.svc".into();
        assert!(has(&d, "spec.host", "partial"));
        assert!(d.validate().is_ok());
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
        assert!(!is_prime(1));
    }

    #[test]
    fn consistent_hash_needs_a_key_and_warns_on_deprecated_ring_size() {
        let d = dr(TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                consistent_hash: Some(ConsistentHashLb {
                    minimum_ring_size: Some(1024),
                    ring_hash: Some(RingHash {
                        minimum_ring_size: Some(1024),
                    }),
                    ..Default::default()
                }),
                warmup_duration_secs: Some("0s".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let lb = "spec.trafficPolicy.loadBalancer";
        assert!(has(&d, &format!("{lb}.consistentHash"), "needs a hash key"));
        assert!(has(
            &d,
            &format!("{lb}.consistentHash"),
            "at most one of ringHash"
        ));
        assert!(has(
            &d,
            &format!("{lb}.consistentHash.minimumRingSize"),
            "deprecated"
        ));
        assert!(has(
            &d,
            &format!("{lb}.warmupDurationSecs"),
            "greater than zero"
        ));
    }

    #[test]
    fn failover_priority_topology_labels_conflict_with_failover() {
        let d = locality_lb(
            LocalityLbSetting {
                failover: vec![LocalityFailover {
                    from: "us-west".into(),
                    to: "us-east".into(),
                }],
                failover_priority: vec!["topology.kubernetes.io/region".into()],
                ..Default::default()
            },
            true,
        );
        assert!(has(
            &d,
            &format!("{LB}.failoverPriority[0]"),
            "cannot be used together"
        ));
        let d = locality_lb(
            LocalityLbSetting {
                failover_priority: vec!["topology.istio.io/network".into()],
                ..Default::default()
            },
            false,
        );
        assert!(has(
            &d,
            &format!("{LB}.failoverPriority"),
            "silently ignores failover"
        ));
    }

    #[test]
    fn distribute_localities_are_checked() {
        let d = locality_lb(
            LocalityLbSetting {
                distribute: vec![LocalityDistribute {
                    from: "us-west/*/x".into(),
                    to: BTreeMap::new(),
                }],
                ..Default::default()
            },
            false,
        );
        assert!(has(
            &d,
            &format!("{LB}.distribute[0].from"),
            "not a locality"
        ));
        assert!(has(&d, &format!("{LB}.distribute[0].to"), "to is required"));
    }

    #[test]
    fn keepalive_and_local_origin() {
        let d = dr(TrafficPolicy {
            connection_pool: Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    tcp_keepalive: Some(TcpKeepalive {
                        probes: Some(3),
                        time: Some("-1s".into()),
                        interval: None,
                    }),
                    ..Default::default()
                }),
                http: Some(HttpSettings {
                    idle_timeout: Some("1d".into()),
                    ..Default::default()
                }),
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_local_origin_failures: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        });
        let tp = "spec.trafficPolicy";
        assert!(has(
            &d,
            &format!("{tp}.connectionPool.tcp.tcpKeepalive.time"),
            "signed"
        ));
        assert!(has(
            &d,
            &format!("{tp}.connectionPool.http.idleTimeout"),
            "unknown unit"
        ));
        assert!(has(
            &d,
            &format!("{tp}.outlierDetection.consecutiveLocalOriginFailures"),
            "splitExternalLocalOriginErrors"
        ));
    }

    #[test]
    fn host_selector_and_export() {
        let mut d = dr(TrafficPolicy {
            tls: Some(ClientTlsSettings {
                mode: Some(ClientTlsMode::Simple),
                subject_alt_names: vec![String::new()],
                sni: Some("*.example.com".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        d.spec.host = String::new();
        d.spec.export_to = vec!["Prod".into()];
        d.spec.workload_selector = Some(MatchLabelsSelector {
            match_labels: [("bad key!".to_owned(), "x".to_owned())].into(),
        });
        assert!(has(&d, "spec.host", "host is required"));
        assert!(has(&d, "spec.exportTo[0]", "not a valid name"));
        assert!(has(
            &d,
            "spec.workloadSelector.matchLabels[bad key!]",
            "label key"
        ));
        assert!(has(
            &d,
            "spec.trafficPolicy.tls.subjectAltNames[0]",
            "empty"
        ));
        assert!(has(&d, "spec.trafficPolicy.tls.sni", "wildcard"));
    }
}
