//! `VirtualService`: how requests for a set of hosts are matched and routed (HTTP rules in
//! order, first match wins; TLS rules by SNI; TCP rules by port and subnet).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Destination, Headers, Percent, StringMatch, export_to, gateway_ref, header_name, ip_or_cidr,
    label_map, route_weights, unique_strings, validate_metadata,
};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Spec of an Istio `VirtualService`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    derive = "PartialEq",
    doc = "Istio VirtualService: routing rules for the traffic addressed to a set of hosts."
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// Hosts the rules apply to: short names, FQDNs, `*.example.com` wildcards or IPs. Empty
    /// only for a delegate VirtualService.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Gateways (`name`, `namespace/name`) and/or `mesh` (sidecars) the rules apply to; empty
    /// means `mesh`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// HTTP rules, evaluated in order; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// Rules for unterminated TLS (HTTPS passthrough), matched by SNI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Rules for opaque TCP traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces the VirtualService is visible to (`.`, `*` or names); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// One HTTP rule: match conditions and what to do with matching requests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Name of the rule, shown in access logs and debug output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, ORed together; empty matches every request.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations to forward to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<HttpRouteDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand matching requests to another VirtualService's rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<Delegate>,
    /// Rewrite the path and/or authority before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Overall request timeout (Go duration, e.g. `2s`); `0s` disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<HttpRetry>,
    /// Faults (delays, aborts) injected for testing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Destination that receives a copy of each request (responses are discarded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Several mirror destinations, each with its own percentage (instead of `mirror`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Share of requests copied to `mirror` (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<Percent>,
    /// CORS policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors_policy: Option<CorsPolicy>,
    /// Header changes for every destination of the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// Conditions on an HTTP request; all fields set must match.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// Name of the condition, appended to the rule name in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// URI scheme (`http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<StringMatch>,
    /// HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// `Host`/`:authority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Request headers (lower-case names); an empty match tests presence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    /// Port the request arrived on (for hosts served on several ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the calling workload (sidecar traffic only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this condition applies to, overriding the VirtualService's `gateways`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Query parameters (`exact` or `regex`; empty tests presence).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Whether `uri` matches case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
    /// Headers that must NOT match (an empty match means: header absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace of the calling workload (sidecar traffic only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Prefix of the per-route statistics Envoy emits for this match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_prefix: Option<String>,
}

/// A weighted destination of an HTTP rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// Where to send the request.
    pub destination: Destination,
    /// Share of the rule's traffic, in percent; the weights of a rule add up to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Header changes for requests sent to this destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Headers>,
}

/// A weighted destination of a TLS or TCP rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    /// Where to send the connection.
    pub destination: Destination,
    /// Share of the rule's connections, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// Another VirtualService whose HTTP rules handle the requests this rule matches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delegate {
    /// Name of the delegate VirtualService.
    pub name: String,
    /// Its namespace; the delegating VirtualService's own when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// How a redirect chooses its port when `port` is not given.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https.
    FromProtocolDefault,
    /// The port the request arrived on.
    FromRequestPort,
}

/// A redirect answered by the proxy (default 301).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRedirect {
    /// Replacement path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replacement authority (host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replacement port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Port derived from the protocol or the request, instead of `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive_port: Option<RedirectPortSelection>,
    /// Replacement scheme (`http`, `https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Status code: 301 (default), 302, 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

/// A fixed response answered by the proxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpDirectResponse {
    /// HTTP status, 200-599.
    pub status: u32,
    /// Response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<HttpBody>,
}

/// A response body: text or base64 bytes (one of them).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpBody {
    /// Body as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Body as base64-encoded bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<String>,
}

/// Path/authority rewrite applied before forwarding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replaces the part of the path matched by `match.uri` (whole path for `exact`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the `Host`/`:authority` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Rewrites the path with a regex substitution (instead of `uri`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// A regex substitution on the path.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegexRewrite {
    /// RE2 pattern to find.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Replacement; `\1` etc. refer to capture groups.
    pub rewrite: String,
}

/// Retry policy of an HTTP rule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries (0 disables retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Timeout of each attempt (Go duration, at least 1ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Comma-separated conditions to retry on (`5xx,connect-failure,...` or status codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<String>,
    /// Whether retries may go to other localities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_remote_localities: Option<bool>,
}

/// Faults injected into matching requests.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Abort with an error instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// An injected delay.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// Deprecated integer percentage; write `percentage.value` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    /// How long to delay (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_delay: Option<String>,
    /// Share of requests delayed (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// An injected abort.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// HTTP status returned (200-599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u32>,
    /// gRPC status name returned instead (e.g. `UNAVAILABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
    /// Share of requests aborted (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// A mirror destination with its own percentage.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMirrorPolicy {
    /// Where copies go.
    pub destination: Destination,
    /// Share of requests copied (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Cross-origin resource sharing policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsPolicy {
    /// Origins allowed to make requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<StringMatch>,
    /// Methods allowed (`Access-Control-Allow-Methods`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    /// Request headers allowed (`Access-Control-Allow-Headers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    /// Response headers browsers may read (`Access-Control-Expose-Headers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long preflight results may be cached (Go duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Whether credentials may be sent (`Access-Control-Allow-Credentials`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
}

/// One rule for unterminated TLS traffic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    /// Conditions, ORed; at least one, each naming SNI hosts.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TLS connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    /// SNI names to match (wildcards allowed); each must fall under the VirtualService's hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    /// Destination IP addresses or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// Port the connection arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this condition applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

/// One rule for opaque TCP traffic.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    /// Conditions, ORed; empty matches every connection.
    #[serde(rename = "match", default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TCP connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchAttributes {
    /// Destination IP addresses or CIDR blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_subnets: Vec<String>,
    /// Port the connection arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this condition applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
}

impl Validate for VirtualService {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, &path.field("metadata"), report);
        self.spec.validate_at(&path.field("spec"), report);
    }
}

impl Validate for VirtualServiceSpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let hp = path.field("hosts");
        let is_delegate = self.hosts.is_empty();
        if is_delegate {
            report.warning(
                &hp,
                "no hosts: this VirtualService only takes effect as the delegate of another \
                 VirtualService's http[].delegate; list the hosts it serves otherwise",
            );
        }
        let bound_to_mesh = self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh");
        for (i, host) in self.hosts.iter().enumerate() {
            let p = hp.index(i);
            if host == "*" {
                if bound_to_mesh {
                    report.error(
                        &p,
                        "\"*\" (every host) is only allowed for a VirtualService bound to \
                         gateways, not to the mesh: list the hosts, or set gateways without mesh",
                    );
                }
            } else if host.parse::<std::net::IpAddr>().is_err() {
                checks::hostname(&p, host, Wildcard::Allowed { bare: false }, report);
            }
        }
        unique_strings(&hp, &self.hosts, "host", report);

        let gp = path.field("gateways");
        for (i, g) in self.gateways.iter().enumerate() {
            gateway_ref(&gp.index(i), g, report);
        }
        unique_strings(&gp, &self.gateways, "gateway", report);

        if self.http.is_empty() && self.tls.is_empty() && self.tcp.is_empty() {
            report.error(
                path,
                "no rules: add http, tls or tcp rules, e.g. http: [{route: [{destination: \
                 {host: reviews}}]}]",
            );
        }

        let http_path = path.field("http");
        let mut catch_all: Option<usize> = None;
        for (i, rule) in self.http.iter().enumerate() {
            let rp = http_path.index(i);
            rule.validate(&rp, is_delegate, report);
            if let Some(first) = catch_all {
                report.warning(
                    &rp,
                    format!(
                        "unreachable: http[{first}] has no match conditions, so it takes every \
                         request before this rule; move the catch-all rule last"
                    ),
                );
            } else if rule.matches.is_empty() {
                catch_all = Some(i);
            }
        }

        let tls_path = path.field("tls");
        for (i, rule) in self.tls.iter().enumerate() {
            rule.validate(&tls_path.index(i), &self.hosts, report);
        }
        let tcp_path = path.field("tcp");
        for (i, rule) in self.tcp.iter().enumerate() {
            rule.validate_at(&tcp_path.index(i), report);
        }
        export_to(&path.field("exportTo"), &self.export_to, report);
    }
}

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

impl HttpRoute {
    fn validate(&self, path: &FieldPath, in_delegate: bool, report: &mut Report) {
        let mp = path.field("match");
        for (i, m) in self.matches.iter().enumerate() {
            m.validate_at(&mp.index(i), report);
        }
        self.validate_actions(path, in_delegate, report);

        let route_path = path.field("route");
        for (i, d) in self.route.iter().enumerate() {
            let dp = route_path.index(i);
            d.destination.validate_at(&dp.field("destination"), report);
            if let Some(h) = &d.headers {
                h.validate_at(&dp.field("headers"), report);
            }
        }
        let weights: Vec<Option<u32>> = self.route.iter().map(|d| d.weight).collect();
        route_weights(
            &route_path,
            &weights,
            |i| route_path.index(i).field("weight"),
            report,
        );

        if let Some(t) = &self.timeout {
            checks::duration(&path.field("timeout"), t, false, report);
        }
        if let Some(r) = &self.retries {
            r.validate_at(&path.field("retries"), report);
        }
        if let Some(f) = &self.fault {
            f.validate_at(&path.field("fault"), report);
        }
        if let Some(r) = &self.redirect {
            r.validate_at(&path.field("redirect"), report);
        }
        if let Some(d) = &self.direct_response {
            d.validate_at(&path.field("directResponse"), report);
        }
        if let Some(r) = &self.rewrite {
            r.validate_at(&path.field("rewrite"), report);
        }
        if let Some(m) = &self.mirror {
            m.validate_at(&path.field("mirror"), report);
            if !self.mirrors.is_empty() {
                report.error(
                    &path.field("mirrors"),
                    "mirror and mirrors cannot both be set: move the mirror destination into \
                     mirrors",
                );
            }
        }
        let msp = path.field("mirrors");
        for (i, m) in self.mirrors.iter().enumerate() {
            let p = msp.index(i);
            m.destination.validate_at(&p.field("destination"), report);
            if let Some(pc) = &m.percentage {
                pc.validate_at(&p.field("percentage"), report);
            }
        }
        if let Some(pc) = &self.mirror_percentage {
            let p = path.field("mirrorPercentage");
            pc.validate_at(&p, report);
            if self.mirror.is_none() {
                report.warning(
                    &p,
                    "mirrorPercentage has no effect without mirror: add mirror, or use mirrors \
                     with a percentage each",
                );
            }
        }
        if let Some(c) = &self.cors_policy {
            c.validate_at(&path.field("corsPolicy"), report);
        }
        if let Some(h) = &self.headers {
            h.validate_at(&path.field("headers"), report);
        }
    }

    /// Checks that the rule does exactly one thing: forward, redirect, answer, or delegate.
    fn validate_actions(&self, path: &FieldPath, in_delegate: bool, report: &mut Report) {
        if let Some(d) = &self.delegate {
            let dp = path.field("delegate");
            checks::object_name(&dp.field("name"), &d.name, report);
            if let Some(ns) = &d.namespace {
                checks::dns_label(&dp.field("namespace"), ns, report);
            }
            if in_delegate {
                report.error(
                    &dp,
                    "a delegate VirtualService (one without hosts) cannot delegate again: only \
                     one level of delegation is supported; route the requests here instead",
                );
            }
            if !self.route.is_empty() || self.redirect.is_some() || self.direct_response.is_some() {
                report.error(
                    &dp,
                    "delegate replaces route, redirect and directResponse: remove them, the \
                     delegate VirtualService decides where requests go",
                );
            }
            return;
        }
        if self.route.is_empty() && self.redirect.is_none() && self.direct_response.is_none() {
            report.error(
                &path.field("route"),
                "the rule does nothing: add route (e.g. [{destination: {host: reviews}}]), \
                 redirect, directResponse or delegate",
            );
        }
        if self.redirect.is_some() {
            let rp = path.field("redirect");
            if !self.route.is_empty() {
                report.error(
                    &rp,
                    "redirect and route cannot both be set: a redirect answers the client \
                     itself, so remove route (or remove redirect to forward the request)",
                );
            }
            if self.rewrite.is_some() {
                report.error(
                    &rp,
                    "redirect and rewrite cannot both be set: put the new path in redirect.uri",
                );
            }
            if self.fault.is_some() {
                report.error(
                    &rp,
                    "redirect and fault cannot both be set: faults apply to forwarded requests \
                     only; remove one",
                );
            }
        }
        if self.direct_response.is_some() {
            let dp = path.field("directResponse");
            let mut conflicts = Vec::new();
            if !self.route.is_empty() {
                conflicts.push("route");
            }
            if self.redirect.is_some() {
                conflicts.push("redirect");
            }
            if self.rewrite.is_some() {
                conflicts.push("rewrite");
            }
            if self.fault.is_some() {
                conflicts.push("fault");
            }
            if self.mirror.is_some() || !self.mirrors.is_empty() {
                conflicts.push("mirror");
            }
            if self.retries.is_some() {
                conflicts.push("retries");
            }
            if !conflicts.is_empty() {
                report.error(
                    &dp,
                    format!(
                        "directResponse answers the request itself, so {} cannot be set with \
                         it: remove them (or remove directResponse to forward the request)",
                        conflicts.join(", ")
                    ),
                );
            }
        }
    }
}

impl Validate for HttpMatchRequest {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        for (name, m) in [
            ("uri", &self.uri),
            ("scheme", &self.scheme),
            ("method", &self.method),
            ("authority", &self.authority),
        ] {
            if let Some(m) = m {
                m.validate_one(&path.field(name), report);
            }
        }
        for (field, map) in [
            ("headers", &self.headers),
            ("withoutHeaders", &self.without_headers),
        ] {
            for (name, m) in map {
                let p = path.field(field).key(name);
                header_name(&p, name, report);
                if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    report.warning(
                        &p,
                        format!(
                            "header names are matched in lower case: write {:?}",
                            name.to_ascii_lowercase()
                        ),
                    );
                }
                m.validate_presence_or_one(&p, report);
            }
        }
        for (name, m) in &self.query_params {
            let p = path.field("queryParams").key(name);
            if name.is_empty() {
                report.error(&p, "query parameter name is empty: name the parameter");
            }
            if m.prefix.is_some() {
                report.error(
                    &p.field("prefix"),
                    "prefix is not supported for query parameters: use exact or regex",
                );
            }
            m.validate_presence_or_one(&p, report);
        }
        if let Some(port) = self.port {
            checks::port(&path.field("port"), port, report);
        }
        label_map(&path.field("sourceLabels"), &self.source_labels, report);
        let gp = path.field("gateways");
        for (i, g) in self.gateways.iter().enumerate() {
            gateway_ref(&gp.index(i), g, report);
        }
        if let Some(ns) = &self.source_namespace {
            checks::dns_label(&path.field("sourceNamespace"), ns, report);
        }
    }
}

impl Validate for HttpRetry {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(t) = &self.per_try_timeout {
            checks::duration(&path.field("perTryTimeout"), t, true, report);
        }
        if let Some(on) = &self.retry_on {
            let p = path.field("retryOn");
            for cond in on.split(',').map(str::trim) {
                let is_status = cond.len() == 3 && cond.parse::<u16>().is_ok_and(|c| c >= 100);
                if !RETRY_ON.contains(&cond) && !is_status {
                    report.error(
                        &p,
                        format!(
                            "{cond:?} is not a retry condition: use a comma-separated list of \
                             {} or HTTP status codes (e.g. 5xx,connect-failure,503)",
                            RETRY_ON.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

impl Validate for HttpFaultInjection {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if self.delay.is_none() && self.abort.is_none() {
            report.error(
                path,
                "fault needs delay or abort, e.g. {abort: {httpStatus: 500, percentage: {value: \
                 10}}}",
            );
        }
        if let Some(d) = &self.delay {
            let dp = path.field("delay");
            match &d.fixed_delay {
                Some(fd) => {
                    checks::duration(&dp.field("fixedDelay"), fd, true, report);
                }
                None => report.error(
                    &dp.field("fixedDelay"),
                    "fixedDelay is required: say how long to delay, e.g. 5s",
                ),
            }
            if let Some(pc) = d.percent {
                let p = dp.field("percent");
                if pc > 100 {
                    report.error(&p, format!("{pc} is not a percentage: use 0-100"));
                }
                if d.percentage.is_some() {
                    report.error(
                        &p,
                        "percent and percentage cannot both be set: keep percentage.value",
                    );
                } else {
                    report.warning(
                        &p,
                        format!("percent is deprecated: write percentage: {{value: {pc}}} instead"),
                    );
                }
            }
            if let Some(pc) = &d.percentage {
                pc.validate_at(&dp.field("percentage"), report);
            }
        }
        if let Some(a) = &self.abort {
            let ap = path.field("abort");
            match (a.http_status, &a.grpc_status) {
                (Some(_), Some(_)) => report.error(
                    &ap,
                    "httpStatus and grpcStatus cannot both be set: keep the one your clients \
                     speak",
                ),
                (None, None) => report.error(
                    &ap.field("httpStatus"),
                    "abort needs httpStatus (e.g. 503) or grpcStatus (e.g. UNAVAILABLE)",
                ),
                (Some(s), None) if !(200..=599).contains(&s) => report.error(
                    &ap.field("httpStatus"),
                    format!("{s} is not an HTTP status an abort can return: use 200-599"),
                ),
                _ => {}
            }
            if let Some(pc) = &a.percentage {
                pc.validate_at(&ap.field("percentage"), report);
            }
        }
    }
}

impl Validate for HttpRedirect {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if self.uri.is_none()
            && self.authority.is_none()
            && self.scheme.is_none()
            && self.port.is_none()
            && self.derive_port.is_none()
        {
            report.error(
                path,
                "redirect changes nothing: set uri, authority, scheme or port",
            );
        }
        if let Some(p) = self.port {
            checks::port(&path.field("port"), p, report);
            if self.derive_port.is_some() {
                report.error(
                    &path.field("derivePort"),
                    "port and derivePort cannot both be set: keep one",
                );
            }
        }
        if let Some(a) = &self.authority {
            authority(&path.field("authority"), a, report);
        }
        if let Some(code) = self.redirect_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            report.error(
                &path.field("redirectCode"),
                format!("{code} is not a redirect status: use 301, 302, 303, 307 or 308"),
            );
        }
        if let Some(u) = &self.uri
            && !u.starts_with('/')
        {
            report.error(
                &path.field("uri"),
                format!("{u:?} must be a path starting with '/'"),
            );
        }
    }
}

/// Checks an authority (`host` or `host:port`) used by redirects and rewrites.
fn authority(path: &FieldPath, value: &str, report: &mut Report) {
    let host = match value.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() && !h.contains(':') => h,
        _ => value,
    };
    if host.parse::<std::net::IpAddr>().is_err() {
        checks::hostname(path, host, Wildcard::Forbidden, report);
    }
}

impl Validate for HttpDirectResponse {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if !(200..=599).contains(&self.status) {
            report.error(
                &path.field("status"),
                format!(
                    "{} is not an HTTP status a response can carry: use 200-599",
                    self.status
                ),
            );
        }
        if let Some(b) = &self.body
            && b.string.is_some() == b.bytes.is_some()
        {
            report.error(
                &path.field("body"),
                "set exactly one of body.string and body.bytes",
            );
        }
    }
}

impl Validate for HttpRewrite {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if self.uri.is_none() && self.authority.is_none() && self.uri_regex_rewrite.is_none() {
            report.error(
                path,
                "rewrite changes nothing: set uri, authority or uriRegexRewrite",
            );
        }
        if self.uri.is_some() && self.uri_regex_rewrite.is_some() {
            report.error(
                &path.field("uriRegexRewrite"),
                "uri and uriRegexRewrite cannot both be set: keep one",
            );
        }
        if let Some(a) = &self.authority {
            authority(&path.field("authority"), a, report);
        }
        if let Some(r) = &self.uri_regex_rewrite {
            checks::regex(
                &path.field("uriRegexRewrite").field("match"),
                &r.pattern,
                report,
            );
        }
    }
}

impl Validate for CorsPolicy {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let op = path.field("allowOrigins");
        for (i, o) in self.allow_origins.iter().enumerate() {
            o.validate_one(&op.index(i), report);
        }
        let mp = path.field("allowMethods");
        for (i, m) in self.allow_methods.iter().enumerate() {
            let token = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
            if !token && m != "*" {
                report.error(
                    &mp.index(i),
                    format!("{m:?} is not an HTTP method: write e.g. GET, POST or *"),
                );
            }
        }
        for (field, names) in [
            ("allowHeaders", &self.allow_headers),
            ("exposeHeaders", &self.expose_headers),
        ] {
            for (i, n) in names.iter().enumerate() {
                if n != "*" {
                    header_name(&path.field(field).index(i), n, report);
                }
            }
        }
        if let Some(age) = &self.max_age {
            checks::duration(&path.field("maxAge"), age, false, report);
        }
    }
}

/// Whether `sni` falls under the VirtualService host `host`.
fn host_covers(host: &str, sni: &str) -> bool {
    if host == "*" || host == sni {
        return true;
    }
    match host.strip_prefix('*') {
        Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
        None => false,
    }
}

impl TlsRoute {
    fn validate(&self, path: &FieldPath, hosts: &[String], report: &mut Report) {
        let mp = path.field("match");
        if self.matches.is_empty() {
            report.error(
                &mp,
                "a tls rule needs at least one match with sniHosts, e.g. [{sniHosts: \
                 [shop.example.com]}]",
            );
        }
        for (i, m) in self.matches.iter().enumerate() {
            let p = mp.index(i);
            let sp = p.field("sniHosts");
            if m.sni_hosts.is_empty() {
                report.error(
                    &sp,
                    "sniHosts is required: list the TLS server names this rule takes",
                );
            }
            for (j, sni) in m.sni_hosts.iter().enumerate() {
                let hp = sp.index(j);
                if !checks::hostname(&hp, sni, Wildcard::Allowed { bare: true }, report) {
                    continue;
                }
                if !hosts.is_empty() && !hosts.iter().any(|h| host_covers(h, sni)) {
                    report.error(
                        &hp,
                        format!(
                            "SNI host {sni:?} is not one of the VirtualService's hosts ({}): \
                             add it to spec.hosts or fix the name",
                            hosts.join(", ")
                        ),
                    );
                }
            }
            l4_common(
                &p,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
                m.source_namespace.as_deref(),
                report,
            );
        }
        route_destinations(&path.field("route"), &self.route, report);
    }
}

impl Validate for TcpRoute {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let mp = path.field("match");
        for (i, m) in self.matches.iter().enumerate() {
            l4_common(
                &mp.index(i),
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
                m.source_namespace.as_deref(),
                report,
            );
        }
        route_destinations(&path.field("route"), &self.route, report);
    }
}

fn l4_common(
    path: &FieldPath,
    subnets: &[String],
    port: Option<u32>,
    source_labels: &BTreeMap<String, String>,
    gateways: &[String],
    source_namespace: Option<&str>,
    report: &mut Report,
) {
    let sp = path.field("destinationSubnets");
    for (i, s) in subnets.iter().enumerate() {
        ip_or_cidr(&sp.index(i), s, report);
    }
    if let Some(p) = port {
        checks::port(&path.field("port"), p, report);
    }
    label_map(&path.field("sourceLabels"), source_labels, report);
    let gp = path.field("gateways");
    for (i, g) in gateways.iter().enumerate() {
        gateway_ref(&gp.index(i), g, report);
    }
    if let Some(ns) = source_namespace {
        checks::dns_label(&path.field("sourceNamespace"), ns, report);
    }
}

fn route_destinations(path: &FieldPath, route: &[RouteDestination], report: &mut Report) {
    if route.is_empty() {
        report.error(
            path,
            "route is required: add at least one destination, e.g. [{destination: {host: db}}]",
        );
    }
    for (i, d) in route.iter().enumerate() {
        d.destination
            .validate_at(&path.index(i).field("destination"), report);
    }
    let weights: Vec<Option<u32>> = route.iter().map(|d| d.weight).collect();
    route_weights(path, &weights, |i| path.index(i).field("weight"), report);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::common::PortSelector;

    fn dest(host: &str, subset: &str, weight: Option<u32>) -> HttpRouteDestination {
        HttpRouteDestination {
            destination: Destination {
                host: host.into(),
                subset: Some(subset.into()),
                port: None,
            },
            weight,
            headers: None,
        }
    }

    fn vs(spec: VirtualServiceSpec) -> VirtualService {
        let mut v = VirtualService::new("reviews", spec);
        v.metadata.namespace = Some("prod".into());
        v
    }

    fn one_rule(rule: HttpRoute) -> VirtualService {
        vs(VirtualServiceSpec {
            hosts: vec!["reviews".into()],
            http: vec![rule],
            ..Default::default()
        })
    }

    fn findings(v: &VirtualService) -> Vec<String> {
        v.validate()
            .findings()
            .iter()
            .map(|f| f.to_string())
            .collect()
    }

    fn has(v: &VirtualService, path: &str, needle: &str) -> bool {
        v.validate()
            .findings()
            .iter()
            .any(|f| f.path.as_str() == path && f.message.contains(needle))
    }

    #[test]
    fn a_simple_split_is_valid() {
        let v = one_rule(HttpRoute {
            route: vec![
                dest("reviews", "v1", Some(90)),
                dest("reviews", "v2", Some(10)),
            ],
            ..Default::default()
        });
        assert!(findings(&v).is_empty(), "{:?}", findings(&v));
    }

    #[test]
    fn weights_must_add_to_100() {
        let v = one_rule(HttpRoute {
            route: vec![
                dest("reviews", "v1", Some(90)),
                dest("reviews", "v2", Some(20)),
            ],
            ..Default::default()
        });
        assert!(
            has(&v, "spec.http[0].route", "add up to 110"),
            "{:?}",
            findings(&v)
        );
        let v = one_rule(HttpRoute {
            route: vec![
                dest("reviews", "v1", Some(101)),
                dest("reviews", "v2", None),
            ],
            ..Default::default()
        });
        assert!(has(&v, "spec.http[0].route[0].weight", "over 100"));
    }

    #[test]
    fn string_match_needs_exactly_one() {
        let v = one_rule(HttpRoute {
            matches: vec![HttpMatchRequest {
                uri: Some(StringMatch {
                    exact: Some("/a".into()),
                    prefix: Some("/b".into()),
                    regex: None,
                }),
                ..Default::default()
            }],
            route: vec![dest("reviews", "v1", None)],
            ..Default::default()
        });
        assert!(has(&v, "spec.http[0].match[0].uri", "exactly one"));
    }

    #[test]
    fn regex_and_port_and_duration() {
        let v = one_rule(HttpRoute {
            matches: vec![HttpMatchRequest {
                headers: [(
                    "x-user".to_owned(),
                    StringMatch {
                        regex: Some("(?=x)".into()),
                        ..Default::default()
                    },
                )]
                .into(),
                port: Some(70000),
                ..Default::default()
            }],
            route: vec![dest("reviews", "v1", None)],
            timeout: Some("10 seconds".into()),
            ..Default::default()
        });
        assert!(has(
            &v,
            "spec.http[0].match[0].headers[x-user].regex",
            "does not compile"
        ));
        assert!(has(&v, "spec.http[0].match[0].port", "out of range"));
        assert!(has(&v, "spec.http[0].timeout", "10 seconds"));
    }

    #[test]
    fn redirect_conflicts_with_route() {
        let v = one_rule(HttpRoute {
            redirect: Some(HttpRedirect {
                uri: Some("/v2/get_user".into()),
                ..Default::default()
            }),
            route: vec![dest("flaskapp", "v1", None)],
            ..Default::default()
        });
        assert!(has(&v, "spec.http[0].redirect", "redirect and route"));
    }

    #[test]
    fn rule_without_action() {
        let v = one_rule(HttpRoute::default());
        assert!(has(&v, "spec.http[0].route", "does nothing"));
    }

    #[test]
    fn unreachable_rules_warn() {
        let v = vs(VirtualServiceSpec {
            hosts: vec!["reviews".into()],
            http: vec![
                HttpRoute {
                    route: vec![dest("reviews", "v1", None)],
                    ..Default::default()
                },
                HttpRoute {
                    matches: vec![HttpMatchRequest {
                        uri: Some(StringMatch::prefix("/v2")),
                        ..Default::default()
                    }],
                    route: vec![dest("reviews", "v2", None)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        let r = v.validate();
        assert!(r.is_ok());
        assert_eq!(r.findings()[0].path.as_str(), "spec.http[1]");
    }

    #[test]
    fn fault_rules() {
        let v = one_rule(HttpRoute {
            route: vec![dest("reviews", "v1", None)],
            fault: Some(HttpFaultInjection {
                delay: Some(FaultDelay {
                    percent: Some(50),
                    fixed_delay: Some("7s".into()),
                    percentage: None,
                }),
                abort: Some(FaultAbort {
                    http_status: Some(700),
                    grpc_status: None,
                    percentage: Some(Percent { value: 180.0 }),
                }),
            }),
            ..Default::default()
        });
        assert!(has(&v, "spec.http[0].fault.delay.percent", "deprecated"));
        assert!(has(&v, "spec.http[0].fault.abort.httpStatus", "200-599"));
        assert!(has(
            &v,
            "spec.http[0].fault.abort.percentage.value",
            "0-100"
        ));
    }

    #[test]
    fn retries_rules() {
        let v = one_rule(HttpRoute {
            route: vec![dest("reviews", "v1", None)],
            retries: Some(HttpRetry {
                attempts: Some(3),
                per_try_timeout: Some("0s".into()),
                retry_on: Some("5xx,connect-failure,503,bogus".into()),
                retry_remote_localities: Some(true),
            }),
            ..Default::default()
        });
        assert!(has(
            &v,
            "spec.http[0].retries.perTryTimeout",
            "greater than zero"
        ));
        assert!(has(&v, "spec.http[0].retries.retryOn", "\"bogus\""));
        assert_eq!(v.validate().findings().len(), 2);
    }

    #[test]
    fn wildcard_star_needs_gateways() {
        let mut v = one_rule(HttpRoute {
            route: vec![dest("reviews", "v1", None)],
            ..Default::default()
        });
        v.spec.hosts = vec!["*".into()];
        assert!(has(&v, "spec.hosts[0]", "bound to gateways"));
        v.spec.gateways = vec!["istio-system/ingress".into()];
        assert!(v.validate().findings().is_empty());
    }

    #[test]
    fn tls_sni_must_be_a_host() {
        let v = vs(VirtualServiceSpec {
            hosts: vec!["istio.io".into()],
            tls: vec![TlsRoute {
                matches: vec![TlsMatchAttributes {
                    sni_hosts: vec!["istio.io".into(), "example.com".into()],
                    port: Some(443),
                    ..Default::default()
                }],
                route: vec![RouteDestination {
                    destination: Destination {
                        host: "istio.io".into(),
                        subset: None,
                        port: Some(PortSelector { number: 443 }),
                    },
                    weight: None,
                }],
            }],
            ..Default::default()
        });
        let r = v.validate();
        assert_eq!(r.findings().len(), 1, "{:?}", r.findings());
        assert_eq!(
            r.findings()[0].path.as_str(),
            "spec.tls[0].match[0].sniHosts[1]"
        );
        assert!(host_covers("*.example.com", "a.example.com"));
        assert!(!host_covers("*.example.com", "example.com"));
    }

    #[test]
    fn tcp_needs_route_and_valid_subnets() {
        let v = vs(VirtualServiceSpec {
            hosts: vec!["db".into()],
            tcp: vec![TcpRoute {
                matches: vec![L4MatchAttributes {
                    destination_subnets: vec!["10.0.0.0/40".into()],
                    ..Default::default()
                }],
                route: vec![],
            }],
            ..Default::default()
        });
        assert!(has(
            &v,
            "spec.tcp[0].match[0].destinationSubnets[0]",
            "CIDR"
        ));
        assert!(has(&v, "spec.tcp[0].route", "route is required"));
    }

    #[test]
    fn delegate_rules() {
        let v = one_rule(HttpRoute {
            delegate: Some(Delegate {
                name: "productpage".into(),
                namespace: Some("nsA".into()),
            }),
            route: vec![dest("reviews", "v1", None)],
            ..Default::default()
        });
        assert!(has(
            &v,
            "spec.http[0].delegate.namespace",
            "not a valid name"
        ));
        assert!(has(&v, "spec.http[0].delegate", "delegate replaces route"));
    }

    #[test]
    fn direct_response_and_rewrite() {
        let v = one_rule(HttpRoute {
            direct_response: Some(HttpDirectResponse {
                status: 99,
                body: Some(HttpBody::default()),
            }),
            rewrite: Some(HttpRewrite::default()),
            ..Default::default()
        });
        assert!(has(&v, "spec.http[0].directResponse.status", "200-599"));
        assert!(has(&v, "spec.http[0].directResponse.body", "exactly one"));
        assert!(has(&v, "spec.http[0].directResponse", "rewrite"));
        assert!(has(&v, "spec.http[0].rewrite", "changes nothing"));
    }

    #[test]
    fn query_params_refuse_prefix() {
        let v = one_rule(HttpRoute {
            matches: vec![HttpMatchRequest {
                query_params: [("v".to_owned(), StringMatch::prefix("2"))].into(),
                ..Default::default()
            }],
            route: vec![dest("reviews", "v1", None)],
            ..Default::default()
        });
        assert!(has(
            &v,
            "spec.http[0].match[0].queryParams[v].prefix",
            "not supported"
        ));
    }

    #[test]
    fn no_rules_and_bad_export() {
        let v = vs(VirtualServiceSpec {
            hosts: vec!["reviews".into()],
            export_to: vec!["*".into(), ".".into()],
            ..Default::default()
        });
        assert!(has(&v, "spec", "no rules"));
        assert!(has(&v, "spec.exportTo", "use it alone"));
    }

    #[test]
    fn mirror_rules() {
        let shadow = Destination {
            host: "reviews.test.svc.cluster.local".into(),
            subset: None,
            port: None,
        };
        let v = one_rule(HttpRoute {
            route: vec![dest("reviews", "v1", None)],
            mirror: Some(shadow.clone()),
            mirrors: vec![HttpMirrorPolicy {
                destination: shadow,
                percentage: None,
            }],
            ..Default::default()
        });
        assert!(has(&v, "spec.http[0].mirrors", "cannot both be set"));
        let v = one_rule(HttpRoute {
            route: vec![dest("reviews", "v1", None)],
            mirror_percentage: Some(Percent { value: 10.0 }),
            ..Default::default()
        });
        assert!(has(
            &v,
            "spec.http[0].mirrorPercentage",
            "no effect without mirror"
        ));
    }

    #[test]
    fn redirect_fields() {
        let v = one_rule(HttpRoute {
            redirect: Some(HttpRedirect {
                uri: Some("v2".into()),
                authority: Some("Shop.example.com".into()),
                port: Some(443),
                derive_port: Some(RedirectPortSelection::FromRequestPort),
                redirect_code: Some(200),
                scheme: None,
            }),
            ..Default::default()
        });
        assert!(has(&v, "spec.http[0].redirect.uri", "starting with '/'"));
        assert!(has(&v, "spec.http[0].redirect.authority", "lower case"));
        assert!(has(
            &v,
            "spec.http[0].redirect.derivePort",
            "cannot both be set"
        ));
        assert!(has(&v, "spec.http[0].redirect.redirectCode", "301, 302"));
        let v = one_rule(HttpRoute {
            redirect: Some(HttpRedirect::default()),
            ..Default::default()
        });
        assert!(has(&v, "spec.http[0].redirect", "changes nothing"));
    }

    #[test]
    fn cors_and_header_operations() {
        let v = one_rule(HttpRoute {
            route: vec![HttpRouteDestination {
                headers: Some(Headers {
                    request: Some(crate::istio::HeaderOperations {
                        remove: vec!["bad header".into()],
                        ..Default::default()
                    }),
                    response: None,
                }),
                ..dest("reviews", "v1", None)
            }],
            cors_policy: Some(CorsPolicy {
                allow_origins: vec![StringMatch::default()],
                allow_methods: vec!["get".into()],
                allow_headers: vec!["x y".into()],
                max_age: Some("1 day".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(has(
            &v,
            "spec.http[0].route[0].headers.request.remove[0]",
            "header name"
        ));
        assert!(has(
            &v,
            "spec.http[0].corsPolicy.allowOrigins[0]",
            "set one of"
        ));
        assert!(has(
            &v,
            "spec.http[0].corsPolicy.allowMethods[0]",
            "HTTP method"
        ));
        assert!(has(
            &v,
            "spec.http[0].corsPolicy.allowHeaders[0]",
            "header name"
        ));
        assert!(has(&v, "spec.http[0].corsPolicy.maxAge", "1 day"));
    }

    #[test]
    fn upper_case_header_names_warn() {
        let v = one_rule(HttpRoute {
            matches: vec![HttpMatchRequest {
                headers: [("X-Version".to_owned(), StringMatch::exact("v2"))].into(),
                ..Default::default()
            }],
            route: vec![dest("reviews", "v2", None)],
            ..Default::default()
        });
        assert!(v.validate().is_ok());
        assert!(has(
            &v,
            "spec.http[0].match[0].headers[X-Version]",
            "\"x-version\""
        ));
    }

    #[test]
    fn delegates_cannot_delegate_again() {
        let v = vs(VirtualServiceSpec {
            http: vec![HttpRoute {
                delegate: Some(Delegate {
                    name: "more".into(),
                    namespace: None,
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(has(&v, "spec.hosts", "only takes effect as the delegate"));
        assert!(has(&v, "spec.http[0].delegate", "only one level"));
    }

    #[test]
    fn hosts_and_gateways_checked() {
        let v = vs(VirtualServiceSpec {
            hosts: vec!["a.example.com".into(), "a.example.com".into(), "b_c".into()],
            gateways: vec!["istio-system/ingress/x".into()],
            http: vec![HttpRoute {
                route: vec![dest("reviews", "v1", None)],
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(has(&v, "spec.hosts[1]", "duplicate host"));
        assert!(has(&v, "spec.hosts[2]", "not a valid hostname"));
        assert!(has(&v, "spec.gateways[0]", "not a gateway reference"));
    }

    #[test]
    fn tls_match_needs_sni_hosts() {
        let v = vs(VirtualServiceSpec {
            hosts: vec!["istio.io".into()],
            tls: vec![TlsRoute {
                matches: vec![TlsMatchAttributes::default()],
                route: vec![RouteDestination {
                    destination: Destination {
                        host: "istio.io".into(),
                        subset: None,
                        port: None,
                    },
                    weight: None,
                }],
            }],
            ..Default::default()
        });
        assert!(has(
            &v,
            "spec.tls[0].match[0].sniHosts",
            "sniHosts is required"
        ));
    }

    #[test]
    fn metadata_is_checked() {
        let mut v = one_rule(HttpRoute {
            route: vec![dest("reviews", "v1", None)],
            ..Default::default()
        });
        v.metadata.name = None;
        v.metadata.namespace = Some("nsA".into());
        assert!(has(&v, "metadata.name", "required"));
        assert!(has(&v, "metadata.namespace", "not a valid name"));
    }
}
