//! Traffic policy (locality, outlier detection, load balancing, connection pools, health checks)
//! and rollout policy, shared by AccessPoint, NameService and ExternalService.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validation::checks;
use crate::validation::{FieldPath, Report, Validate};

/// How traffic to a service's endpoints is spread and protected.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Locality-aware load balancing: weighted `distribute` or ordered `failover` (not both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<LocalityPolicy>,
    /// Passive health: eject endpoints that keep failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Endpoint picking within a locality.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
    /// Connection and request limits (circuit breaking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    /// Active health checks of the endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

/// Locality load balancing, Istio `localityLbSetting` semantics.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityPolicy {
    /// Turns locality load balancing off when `false` (default on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Weighted spread by the caller's locality: `from` a locality pattern, `to` patterns with
    /// percentages summing to 100 (`us-west/*` → 99% `us-west/*`, 1% `us-east/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Region failover order: when `from` has no healthy endpoint, use `to`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Endpoint label keys whose match with the caller's labels orders priorities
    /// (e.g. `topology.istio.io/network`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
}

/// One `distribute` rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityDistribute {
    /// Caller locality pattern: `region/zone/subzone`, a trailing part may be `*`.
    pub from: String,
    /// Target locality patterns and their percentages (summing to 100).
    pub to: BTreeMap<String, u32>,
}

/// One `failover` rule (region to region).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalityFailover {
    /// The region whose endpoints failed.
    pub from: String,
    /// The region to fail over to.
    pub to: String,
}

/// Checks a locality pattern (`us-west`, `us-west/*`, `us-west/us-west-a/*`, `*`).
fn locality_pattern(path: &FieldPath, pattern: &str, report: &mut Report) {
    let parts: Vec<&str> = pattern.split('/').collect();
    let bad_part = parts.iter().enumerate().find(|(i, p)| {
        p.is_empty()
            || (p.contains('*') && (**p != "*" || *i != parts.len() - 1))
            || p.contains(char::is_whitespace)
    });
    if parts.len() > 3 || bad_part.is_some() {
        report.error(
            path,
            format!(
                "{pattern:?} is not a locality pattern: write region[/zone[/subzone]], where only \
                 the last part may be \"*\" (e.g. us-west/*)"
            ),
        );
    }
}

impl Validate for LocalityPolicy {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if !self.distribute.is_empty() && !self.failover.is_empty() {
            report.error(
                path,
                "set either distribute or failover, not both: Istio refuses the combination \
                 (weights already decide where traffic goes)",
            );
        }
        if !self.distribute.is_empty() && !self.failover_priority.is_empty() {
            report.error(path, "set either distribute or failoverPriority, not both");
        }
        let dpath = path.field("distribute");
        checks::unique(
            &dpath,
            self.distribute.iter().map(|d| d.from.as_str()).enumerate(),
            "distribute.from",
            report,
        );
        for (i, d) in self.distribute.iter().enumerate() {
            let p = dpath.index(i);
            locality_pattern(&p.field("from"), &d.from, report);
            if d.to.is_empty() {
                report.error(
                    &p.field("to"),
                    "list target localities with percentages summing to 100",
                );
                continue;
            }
            for k in d.to.keys() {
                locality_pattern(&p.field("to").key(k), k, report);
            }
            let sum: u64 = d.to.values().map(|v| u64::from(*v)).sum();
            if sum != 100 {
                let parts: Vec<String> = d.to.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                report.error(
                    &p.field("to"),
                    format!(
                        "locality weights sum to {sum} ({}); they must sum to 100",
                        parts.join(", ")
                    ),
                );
            }
        }
        let fpath = path.field("failover");
        for (i, f) in self.failover.iter().enumerate() {
            let p = fpath.index(i);
            for (field, v) in [("from", &f.from), ("to", &f.to)] {
                if v.is_empty() || v.contains('/') || v.contains('*') {
                    report.error(
                        &p.field(field),
                        format!("{v:?}: failover is between regions; write a region name such as us-east"),
                    );
                }
            }
            if f.from == f.to && !f.from.is_empty() {
                report.error(
                    &p.field("to"),
                    "failover to the same region does nothing: name another region",
                );
            }
        }
        for (i, k) in self.failover_priority.iter().enumerate() {
            let mut map = BTreeMap::new();
            map.insert(k.clone(), String::new());
            let mut sub = Report::new();
            checks::labels(&FieldPath::default(), &map, &mut sub);
            if !sub.is_ok() {
                report.error(
                    &path.field("failoverPriority").index(i),
                    format!("{k:?} is not a label key (e.g. topology.istio.io/network)"),
                );
            }
        }
    }
}

/// Passive health checking, Istio/Envoy outlier detection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx responses (or connect failures) that eject a host. Default 5.
    #[serde(
        default,
        rename = "consecutive5xxErrors",
        skip_serializing_if = "Option::is_none"
    )]
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive 502/503/504 or connect failures that eject a host. Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_gateway_errors: Option<u32>,
    /// How often ejections are evaluated. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Minimum ejection time, multiplied by the number of times the host was ejected. Default 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ejection_time: Option<String>,
    /// Most of the hosts that may be ejected at once, in percent. Default 10 (at least one host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ejection_percent: Option<u32>,
    /// Outlier detection pauses when fewer hosts than this percentage are healthy. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_health_percent: Option<u32>,
}

impl OutlierDetection {
    /// Default of `consecutive5xxErrors`.
    pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
    /// Default of `interval`.
    pub const DEFAULT_INTERVAL: &'static str = "10s";
    /// Default of `baseEjectionTime`.
    pub const DEFAULT_BASE_EJECTION_TIME: &'static str = "30s";
    /// Default of `maxEjectionPercent`.
    pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
}

impl Validate for OutlierDetection {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(i) = &self.interval {
            checks::duration(&path.field("interval"), i, true, report);
        }
        if let Some(b) = &self.base_ejection_time {
            checks::duration(&path.field("baseEjectionTime"), b, true, report);
        }
        for (field, v) in [
            ("maxEjectionPercent", self.max_ejection_percent),
            ("minHealthPercent", self.min_health_percent),
        ] {
            if let Some(v) = v {
                checks::percent(&path.field(field), f64::from(v), report);
            }
        }
        if self.consecutive_5xx_errors == Some(0)
            && self.consecutive_gateway_errors.is_none_or(|g| g == 0)
        {
            report.warning(
                &path.field("consecutive5xxErrors"),
                "0 turns 5xx ejection off and no other trigger is set: no host will ever be ejected",
            );
        }
    }
}

/// Endpoint selection: a simple algorithm or a consistent hash (not both).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// A simple algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Session affinity by hashing a request property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHash>,
}

/// Simple load-balancing algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Each endpoint in turn.
    #[default]
    RoundRobin,
    /// The less busy of two random endpoints.
    LeastRequest,
    /// A random endpoint.
    Random,
    /// Forward to the address the caller asked for.
    Passthrough,
}

/// Consistent hashing: exactly one hash key.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    /// Hash on this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash on this cookie, issued with `ttl` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the client's source IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
}

/// The cookie of cookie-based affinity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpCookie {
    /// Cookie name.
    pub name: String,
    /// Cookie path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of an issued cookie (e.g. `3600s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

impl Validate for LoadBalancer {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if self.simple.is_some() && self.consistent_hash.is_some() {
            report.error(path, "set either simple or consistentHash, not both");
        }
        if let Some(h) = &self.consistent_hash {
            let p = path.field("consistentHash");
            let keys = usize::from(h.http_header_name.is_some())
                + usize::from(h.http_cookie.is_some())
                + usize::from(h.use_source_ip == Some(true))
                + usize::from(h.http_query_parameter_name.is_some());
            if keys != 1 {
                report.error(
                    &p,
                    format!(
                        "set exactly one hash key of httpHeaderName, httpCookie, useSourceIp, \
                         httpQueryParameterName (found {keys})"
                    ),
                );
            }
            if let Some(c) = &h.http_cookie {
                if c.name.is_empty() {
                    report.error(
                        &p.field("httpCookie").field("name"),
                        "cookie name is required",
                    );
                }
                if let Some(ttl) = &c.ttl {
                    checks::duration(&p.field("httpCookie").field("ttl"), ttl, false, report);
                }
            }
        }
    }
}

/// Connection and request limits; overflow answers 503 with response flag `UO`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    /// TCP-level limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpPool>,
    /// HTTP-level limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpPool>,
}

/// TCP connection limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpPool {
    /// Most upstream connections to the whole service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Upstream connect timeout. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
}

/// HTTP request limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpPool {
    /// Most requests queued waiting for an HTTP/1.1 connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http1_max_pending_requests: Option<u32>,
    /// Most concurrent requests to the service over HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http2_max_requests: Option<u32>,
    /// Requests per connection before it is closed (1 disables keep-alive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_connection: Option<u32>,
    /// Most concurrent retries to the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Idle connections are closed after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
}

impl Validate for ConnectionPool {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(t) = &self.tcp {
            if t.max_connections == Some(0) {
                report.error(
                    &path.field("tcp").field("maxConnections"),
                    "0 would refuse every connection: use at least 1, or leave it out for no limit",
                );
            }
            if let Some(c) = &t.connect_timeout {
                checks::duration(&path.field("tcp").field("connectTimeout"), c, true, report);
            }
        }
        if let Some(h) = &self.http {
            if let Some(i) = &h.idle_timeout {
                checks::duration(&path.field("http").field("idleTimeout"), i, true, report);
            }
            for (field, v) in [
                ("http1MaxPendingRequests", h.http1_max_pending_requests),
                ("http2MaxRequests", h.http2_max_requests),
            ] {
                if v == Some(0) {
                    report.error(
                        &path.field("http").field(field),
                        "0 would refuse every request: use at least 1, or leave it out for no limit",
                    );
                }
            }
        }
    }
}

/// Active health checks: HTTP GET of `path` when set, else a TCP connect.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// HTTP path to GET; a TCP connect check when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Statuses that count as healthy. Default `[200]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_statuses: Vec<u32>,
    /// Time between checks. Default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Time a check may take. Default 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Passing checks in a row that mark a host healthy. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<u32>,
    /// Failing checks in a row that mark a host unhealthy. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<u32>,
}

impl Validate for HealthCheck {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(p) = &self.path
            && !p.starts_with('/')
        {
            report.error(&path.field("path"), format!("{p:?} must start with '/'"));
        }
        for (i, s) in self.expected_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                report.error(
                    &path.field("expectedStatuses").index(i),
                    format!("{s} is not an HTTP status: use 100-599"),
                );
            }
        }
        for (field, v) in [("interval", &self.interval), ("timeout", &self.timeout)] {
            if let Some(v) = v {
                checks::duration(&path.field(field), v, true, report);
            }
        }
        for (field, v) in [
            ("healthyThreshold", self.healthy_threshold),
            ("unhealthyThreshold", self.unhealthy_threshold),
        ] {
            if v == Some(0) {
                report.error(&path.field(field), "must be at least 1");
            }
        }
    }
}

impl Validate for TrafficPolicy {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(l) = &self.locality {
            let lp = path.field("locality");
            l.validate_at(&lp, report);
            // Failover acts only when something marks a locality unhealthy. Istio accepts the
            // object and silently never fails over; we refuse it so nobody relies on a failover
            // that cannot happen.
            let wants_failover = !l.failover.is_empty() || !l.failover_priority.is_empty();
            if wants_failover && self.outlier_detection.is_none() && self.health_check.is_none() {
                let field = if l.failover.is_empty() {
                    "failoverPriority"
                } else {
                    "failover"
                };
                report.error(
                    &lp.field(field),
                    "failover needs a way to see that endpoints are unhealthy: add \
                     trafficPolicy.outlierDetection (e.g. consecutive5xxErrors: 3, interval: 1s, \
                     baseEjectionTime: 10s) or trafficPolicy.healthCheck",
                );
            }
        }
        if let Some(o) = &self.outlier_detection {
            o.validate_at(&path.field("outlierDetection"), report);
        }
        if let Some(lb) = &self.load_balancer {
            lb.validate_at(&path.field("loadBalancer"), report);
        }
        if let Some(c) = &self.connection_pool {
            c.validate_at(&path.field("connectionPool"), report);
        }
        if let Some(h) = &self.health_check {
            h.validate_at(&path.field("healthCheck"), report);
        }
    }
}

/// How a change reaches the placed clusters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// `ClusterByCluster` (default) stages the change in batches; `All` applies it everywhere.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Clusters per batch. Default 1.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// After a verified batch: `Manual` (default) waits for `causeway rollout approve`; `Auto`
    /// continues after `bakeTime`.
    #[serde(default)]
    pub pause: RolloutPause,
    /// How long a verified batch must stay healthy before the next one. Default 30s.
    #[serde(default = "default_bake_time")]
    pub bake_time: String,
    /// The probe that verifies a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<RolloutVerify>,
}

fn default_batch_size() -> u32 {
    1
}

fn default_bake_time() -> String {
    "30s".to_owned()
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            strategy: RolloutStrategy::default(),
            batch_size: default_batch_size(),
            pause: RolloutPause::default(),
            bake_time: default_bake_time(),
            verify: None,
        }
    }
}

/// Rollout strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutStrategy {
    /// Batches of `batchSize` clusters, each verified before the next.
    #[default]
    ClusterByCluster,
    /// Every placed cluster at once.
    All,
}

/// What happens after a verified batch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutPause {
    /// Wait for approval.
    #[default]
    Manual,
    /// Continue after the bake time.
    Auto,
}

/// The probe and error budget that verify a batch.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutVerify {
    /// Path requested through the cluster's gateway. Default `/`.
    #[serde(default = "default_verify_path")]
    pub path: String,
    /// Status the probe must get. Default 200.
    #[serde(default = "default_expect_status")]
    pub expect_status: u32,
    /// Highest tolerated share of 5xx responses during the bake time (0-1). Default 0.01.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
}

fn default_verify_path() -> String {
    "/".to_owned()
}

fn default_expect_status() -> u32 {
    200
}

fn default_max_error_rate() -> f64 {
    0.01
}

impl Validate for Rollout {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if self.batch_size == 0 {
            report.error(&path.field("batchSize"), "batchSize must be at least 1");
        }
        checks::duration(&path.field("bakeTime"), &self.bake_time, false, report);
        if let Some(v) = &self.verify {
            let p = path.field("verify");
            if !v.path.starts_with('/') {
                report.error(
                    &p.field("path"),
                    format!("{:?} must start with '/'", v.path),
                );
            }
            if !(100..=599).contains(&v.expect_status) {
                report.error(
                    &p.field("expectStatus"),
                    format!("{} is not an HTTP status: use 100-599", v.expect_status),
                );
            }
            if !(0.0..=1.0).contains(&v.max_error_rate) || v.max_error_rate.is_nan() {
                report.error(
                    &p.field("maxErrorRate"),
                    format!("{} is not a rate: use 0-1 (0.01 is 1%)", v.max_error_rate),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(v: &impl Validate) -> Vec<String> {
        let mut r = Report::new();
        v.validate_at(&FieldPath::root("spec").field("trafficPolicy"), &mut r);
        r.findings().iter().map(|f| f.to_string()).collect()
    }

    fn distribute(to: &[(&str, u32)]) -> LocalityDistribute {
        LocalityDistribute {
            from: "us-west/*".into(),
            to: to.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn locality_rules() {
        let ok = TrafficPolicy {
            locality: Some(LocalityPolicy {
                distribute: vec![distribute(&[("us-west/*", 99), ("us-east/*", 1)])],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(errors(&ok).is_empty());

        let bad_sum = TrafficPolicy {
            locality: Some(LocalityPolicy {
                distribute: vec![distribute(&[("us-west/*", 90), ("us-east/*", 1)])],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            errors(&bad_sum),
            [
                "spec.trafficPolicy.locality.distribute[0].to: locality weights sum to 91 \
              (us-east/*: 1, us-west/*: 90); they must sum to 100"
            ]
        );

        let both = TrafficPolicy {
            locality: Some(LocalityPolicy {
                distribute: vec![distribute(&[("us-west/*", 100)])],
                failover: vec![LocalityFailover {
                    from: "us-west".into(),
                    to: "us-east".into(),
                }],
                ..Default::default()
            }),
            outlier_detection: Some(OutlierDetection::default()),
            ..Default::default()
        };
        let e = errors(&both);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("spec.trafficPolicy.locality: set either distribute or failover"));

        let bad_pattern = TrafficPolicy {
            locality: Some(LocalityPolicy {
                distribute: vec![LocalityDistribute {
                    from: "*/us-west".into(),
                    to: [("us-west/*".to_owned(), 100)].into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(errors(&bad_pattern).len(), 1);
    }

    #[test]
    fn failover_needs_health_signal() {
        let mut p = TrafficPolicy {
            locality: Some(LocalityPolicy {
                failover: vec![LocalityFailover {
                    from: "us-west".into(),
                    to: "us-east".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = errors(&p);
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("spec.trafficPolicy.locality.failover: failover needs"));
        p.outlier_detection = Some(OutlierDetection {
            consecutive_5xx_errors: Some(3),
            ..Default::default()
        });
        assert!(errors(&p).is_empty());
    }

    #[test]
    fn outlier_and_pool_and_lb() {
        let p = TrafficPolicy {
            outlier_detection: Some(OutlierDetection {
                interval: Some("1 s".into()),
                max_ejection_percent: Some(150),
                ..Default::default()
            }),
            connection_pool: Some(ConnectionPool {
                tcp: Some(TcpPool {
                    max_connections: Some(0),
                    connect_timeout: Some("1s".into()),
                }),
                http: None,
            }),
            load_balancer: Some(LoadBalancer {
                simple: Some(SimpleLb::Random),
                consistent_hash: Some(ConsistentHash {
                    use_source_ip: Some(true),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let paths: Vec<String> = errors(&p)
            .iter()
            .map(|e| e.split(": ").next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            paths,
            [
                "spec.trafficPolicy.outlierDetection.interval",
                "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                "spec.trafficPolicy.loadBalancer",
                "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            ]
        );
    }

    #[test]
    fn rollout_defaults_and_checks() {
        let r: Rollout = serde_json::from_str("{}").unwrap();
        assert_eq!(r, Rollout::default());
        assert_eq!(r.batch_size, 1);
        assert_eq!(r.pause, RolloutPause::Manual);
        let bad = Rollout {
            batch_size: 0,
            bake_time: "soon".into(),
            verify: Some(RolloutVerify {
                path: "health".into(),
                expect_status: 1000,
                max_error_rate: 5.0,
            }),
            ..Default::default()
        };
        let mut rep = Report::new();
        bad.validate_at(&FieldPath::root("spec").field("rollout"), &mut rep);
        assert_eq!(rep.findings().len(), 5);
    }
}
