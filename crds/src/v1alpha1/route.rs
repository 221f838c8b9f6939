//! HTTP, TLS and TCP routes with Istio VirtualService semantics: first match wins.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Destination, HeaderMatch, HeaderOperations, StringMatch, WeightedDestination, validate_hosts,
    validate_weights,
};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// An HTTP route: matches, then exactly one action (`route`, `redirect` or `directResponse`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Route name, shown in metrics and access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any of which selects this route; no conditions match every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatch>,
    /// Weighted destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<WeightedDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<HttpRedirect>,
    /// Answer directly with a fixed status and body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponse>,
    /// Rewrite the path prefix or Host before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<HttpRewrite>,
    /// Whole-request timeout including retries; on expiry the client gets 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Fault injection (testing resilience).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Copy requests to this destination, fire-and-forget (Host suffixed `-shadow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Destination>,
    /// Share of requests mirrored, in percent. Default 100 when `mirror` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_percentage: Option<f64>,
    /// Request and response header edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderOperations>,
}

/// Request conditions; all the given ones must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Name of this match, appended to the route name in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    /// Header conditions, by lower-case header name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderMatch>,
    /// Headers that must not match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub without_headers: BTreeMap<String, HeaderMatch>,
    /// Method condition (`exact: GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Host/authority condition (finer than the AccessPoint's hosts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<StringMatch>,
    /// Only requests that arrived on this listener port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Match the path case-insensitively.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_uri_case: Option<bool>,
}

/// A redirect answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRedirect {
    /// Replace the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replace the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replace the scheme (`https`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Replace the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Status code: 301 (default), 302, 303, 307 or 308.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_code: Option<u32>,
}

/// A fixed answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectResponse {
    /// Status code.
    pub status: u32,
    /// Response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// Rewrites applied before forwarding.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replaces the matched path prefix (or the whole path for exact matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the Host/:authority header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Retry policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Retries after the first try (0 turns retries off).
    pub attempts: u32,
    /// Timeout of each try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Conditions that trigger a retry: `5xx`, `gateway-error`, `connect-failure`, `reset`,
    /// `refused-stream`, `retriable-4xx`, `retriable-status-codes`, or a status code such as `503`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
}

/// The retry conditions Envoy understands for HTTP.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "refused-stream",
    "retriable-4xx",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Fault injection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Delay a share of requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    /// Abort a share of requests with a status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

/// A share of requests, in percent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Percent {
    /// 0-100, fractions allowed.
    pub value: f64,
}

/// Injected delay.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// How long to delay.
    pub fixed_delay: String,
    /// Which share of requests. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// Injected abort.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// Status returned.
    pub http_status: u32,
    /// Which share of requests. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Percent>,
}

/// A TLS passthrough route, chosen by SNI.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    /// Route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SNI names (exact or `*.` wildcard) this route takes.
    pub sni_hosts: Vec<String>,
    /// Only connections to this listener port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Weighted destinations.
    pub route: Vec<WeightedDestination>,
}

/// A TCP route, chosen by listener port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    /// Route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only connections to this listener port; every TCP listener when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    /// Weighted destinations.
    pub route: Vec<WeightedDestination>,
}

/// What routes need to know about the object around them.
pub struct RouteContext<'a> {
    /// Declared subset names.
    pub subsets: &'a [&'a str],
}

fn path_value(path: &FieldPath, v: &str, report: &mut Report) {
    if !v.starts_with('/') {
        report.error(path, format!("{v:?} must start with '/'"));
    }
}

fn destinations(
    path: &FieldPath,
    dests: &[WeightedDestination],
    ctx: &RouteContext<'_>,
    report: &mut Report,
) {
    for (i, d) in dests.iter().enumerate() {
        let p = path.index(i);
        d.destination
            .validate_with_subsets(&p.field("destination"), ctx.subsets, report);
        if let Some(h) = &d.headers {
            h.validate_at(&p.field("headers"), report);
        }
    }
    validate_weights(path, dests, report);
}

fn percentage(path: &FieldPath, p: &Option<Percent>, report: &mut Report) {
    if let Some(p) = p {
        checks::percent(&path.field("percentage").field("value"), p.value, report);
    }
}

impl HttpMatch {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        if let Some(u) = &self.uri {
            u.validate_at(&path.field("uri"), report);
            for v in [&u.exact, &u.prefix].into_iter().flatten() {
                path_value(&path.field("uri"), v, report);
            }
        }
        for (name, field) in [
            ("headers", &self.headers),
            ("withoutHeaders", &self.without_headers),
        ] {
            for (k, m) in field {
                let p = path.field(name).key(k);
                if k.bytes().any(|b| b.is_ascii_uppercase()) {
                    report.error(
                        &p,
                        format!(
                            "header names match in lower case: write {:?}",
                            k.to_ascii_lowercase()
                        ),
                    );
                }
                m.validate_at(&p, report);
            }
        }
        if let Some(m) = &self.method {
            m.validate_at(&path.field("method"), report);
        }
        for (k, m) in &self.query_params {
            m.validate_at(&path.field("queryParams").key(k), report);
        }
        if let Some(a) = &self.authority {
            a.validate_at(&path.field("authority"), report);
        }
        if let Some(p) = self.port {
            checks::port(&path.field("port"), p, report);
        }
    }
}

impl HttpRoute {
    /// Checks the route; `ctx` gives the surrounding object's subsets.
    pub fn validate_with(&self, path: &FieldPath, ctx: &RouteContext<'_>, report: &mut Report) {
        for (i, m) in self.matches.iter().enumerate() {
            m.validate_at(&path.field("match").index(i), report);
        }
        let actions = usize::from(!self.route.is_empty())
            + usize::from(self.redirect.is_some())
            + usize::from(self.direct_response.is_some());
        if actions != 1 {
            report.error(
                path,
                format!("set exactly one of route, redirect, directResponse (found {actions})"),
            );
        }
        destinations(&path.field("route"), &self.route, ctx, report);
        if let Some(r) = &self.redirect {
            let p = path.field("redirect");
            if let Some(code) = r.redirect_code
                && ![301, 302, 303, 307, 308].contains(&code)
            {
                report.error(
                    &p.field("redirectCode"),
                    format!("{code} is not a redirect status: use 301, 302, 303, 307 or 308"),
                );
            }
            if let Some(u) = &r.uri {
                path_value(&p.field("uri"), u, report);
            }
            if let Some(a) = &r.authority {
                checks::hostname(&p.field("authority"), a, Wildcard::Forbidden, report);
            }
            if let Some(s) = &r.scheme
                && s != "http"
                && s != "https"
            {
                report.error(&p.field("scheme"), format!("{s:?}: use http or https"));
            }
            if let Some(port) = r.port {
                checks::port(&p.field("port"), port, report);
            }
        }
        if let Some(d) = &self.direct_response
            && !(200..=599).contains(&d.status)
        {
            report.error(
                &path.field("directResponse").field("status"),
                format!("{} is not a response status: use 200-599", d.status),
            );
        }
        if let Some(rw) = &self.rewrite {
            let p = path.field("rewrite");
            if self.route.is_empty() {
                report.error(
                    &p,
                    "rewrite applies only to forwarded requests: add a route",
                );
            }
            if let Some(u) = &rw.uri {
                path_value(&p.field("uri"), u, report);
            }
            if let Some(a) = &rw.authority {
                checks::hostname(&p.field("authority"), a, Wildcard::Forbidden, report);
            }
        }
        if let Some(t) = &self.timeout {
            checks::duration(&path.field("timeout"), t, false, report);
        }
        if let Some(r) = &self.retries {
            let p = path.field("retries");
            if r.attempts > 10 {
                report.warning(
                    &p.field("attempts"),
                    format!(
                        "{} retries can multiply load on a struggling backend; 2-3 is usual",
                        r.attempts
                    ),
                );
            }
            if let Some(t) = &r.per_try_timeout {
                checks::duration(&p.field("perTryTimeout"), t, true, report);
            }
            for (i, cond) in r.retry_on.iter().enumerate() {
                let is_status =
                    cond.len() == 3 && cond.parse::<u32>().is_ok_and(|s| (100..=599).contains(&s));
                if !is_status && !RETRY_ON.contains(&cond.as_str()) {
                    report.error(
                        &p.field("retryOn").index(i),
                        format!(
                            "unknown retry condition {cond:?}: use one of {} or a status code \
                             such as 503",
                            RETRY_ON.join(", ")
                        ),
                    );
                }
            }
        }
        if let Some(f) = &self.fault {
            let p = path.field("fault");
            if f.delay.is_none() && f.abort.is_none() {
                report.error(&p, "set delay, abort or both");
            }
            if let Some(d) = &f.delay {
                checks::duration(
                    &p.field("delay").field("fixedDelay"),
                    &d.fixed_delay,
                    false,
                    report,
                );
                percentage(&p.field("delay"), &d.percentage, report);
            }
            if let Some(a) = &f.abort {
                if !(200..=599).contains(&a.http_status) {
                    report.error(
                        &p.field("abort").field("httpStatus"),
                        format!("{} is not a response status: use 200-599", a.http_status),
                    );
                }
                percentage(&p.field("abort"), &a.percentage, report);
            }
        }
        if let Some(m) = &self.mirror {
            m.validate_with_subsets(&path.field("mirror"), ctx.subsets, report);
        }
        if let Some(mp) = self.mirror_percentage {
            checks::percent(&path.field("mirrorPercentage"), mp, report);
            if self.mirror.is_none() {
                report.error(
                    &path.field("mirrorPercentage"),
                    "set mirror too, or remove mirrorPercentage",
                );
            }
        }
        if let Some(h) = &self.headers {
            h.validate_at(&path.field("headers"), report);
        }
    }
}

impl TlsRoute {
    /// Checks the route; `ctx` gives the surrounding object's subsets.
    pub fn validate_with(&self, path: &FieldPath, ctx: &RouteContext<'_>, report: &mut Report) {
        if self.sni_hosts.is_empty() {
            report.error(
                &path.field("sniHosts"),
                "list the SNI names this route takes",
            );
        }
        validate_hosts(
            &path.field("sniHosts"),
            &self.sni_hosts,
            Wildcard::Allowed { bare: true },
            report,
        );
        if let Some(p) = self.port {
            checks::port(&path.field("port"), p, report);
        }
        if self.route.is_empty() {
            report.error(&path.field("route"), "add at least one destination");
        }
        destinations(&path.field("route"), &self.route, ctx, report);
    }
}

impl TcpRoute {
    /// Checks the route; `ctx` gives the surrounding object's subsets.
    pub fn validate_with(&self, path: &FieldPath, ctx: &RouteContext<'_>, report: &mut Report) {
        if let Some(p) = self.port {
            checks::port(&path.field("port"), p, report);
        }
        if self.route.is_empty() {
            report.error(&path.field("route"), "add at least one destination");
        }
        destinations(&path.field("route"), &self.route, ctx, report);
    }
}
