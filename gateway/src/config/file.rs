//! The YAML file format (documented in `docs/gateway.md`) — the proxy configuration document of
//! [`causeway_proxy_config`] — and its compilation into the [`Config`](super::Config) model.
//!
//! The document crate decodes (leniently about enum-like strings so that one run reports all of
//! them, strictly about unknown keys); this module checks everything else and resolves files and
//! secrets. Certificates and keys are read and parsed here, so a broken PEM is a load error with
//! a field path rather than a failed handshake later. The same [`compile`] serves the static file
//! and documents received over xDS.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use causeway_crds::duration::parse_duration;
use causeway_crds::validation::checks::{self, Wildcard};
use causeway_crds::validation::{FieldPath, Report};
use causeway_proxy_config::{self as doc, DecodeError, Protocol, ProxyConfig};

use super::{
    Action, Cluster, Config, ConfigError, ConnectionLimits, DirectResponse, Endpoint, Fault,
    Forward, HashPolicy, HeaderEdits, HeaderMatch, HealthCheck, LbPolicy, Listener, ListenerKind,
    LocalityGroup, Member, Mirror, Outlier, PathMatch, Pattern, Pem, QueryMatch, Redirect,
    RetryPolicy, Route, RouteMatch, SecretPem, ServerCertificate, ServerTls, SniRoute, TlsMode,
    UpstreamProtocol, UpstreamTls, ValueMatch, VirtualHost, WeightedCluster,
};
use crate::lb::retry::RetryOn;
use crate::tls;

/// Default TCP connect timeout for clusters that do not set one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default route timeout (Envoy's): an upstream that never answers cannot hold a request
/// forever.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// Parses and validates the YAML text of a gateway config; file references are relative to
/// `base`.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
    let document = ProxyConfig::from_yaml(text).map_err(|e| match e {
        DecodeError::Syntax(s) => ConfigError::Syntax(s),
        DecodeError::Invalid(f) => ConfigError::Invalid(f),
    })?;
    compile(&document, base)
}

/// Validates a proxy configuration document and compiles it into the gateway's model, reading
/// the files it names (relative to `base`) and resolving its secrets. Every problem is reported,
/// each with its field path.
pub fn compile(document: &ProxyConfig, base: &Path) -> Result<Config, ConfigError> {
    let mut report = Report::new();
    let config = translate(document, base, &mut report);
    if report.is_ok() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(report.errors().cloned().collect()))
    }
}

fn translate(file: &ProxyConfig, base: &Path, report: &mut Report) -> Config {
    let root = FieldPath::default();
    let clusters_path = root.field("clusters");
    checks::unique(
        &clusters_path,
        file.clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (i, c.name.as_str())),
        "cluster name",
        report,
    );
    let secrets = secrets(file, base, report);
    let mut clusters = BTreeMap::new();
    for (i, c) in file.clusters.iter().enumerate() {
        let ctx = Resolve {
            base,
            secrets: &secrets,
        };
        if let Some(c) = cluster(c, &clusters_path.index(i), &ctx, report) {
            clusters.entry(c.name.clone()).or_insert(c);
        }
    }

    let vh_path = root.field("virtualHosts");
    checks::unique(
        &vh_path,
        file.virtual_hosts
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.name.as_str())),
        "virtual host name",
        report,
    );
    let virtual_hosts: Vec<VirtualHost> = file
        .virtual_hosts
        .iter()
        .enumerate()
        .map(|(i, v)| virtual_host(v, &vh_path.index(i), &clusters, report))
        .collect();

    let l_path = root.field("listeners");
    checks::unique(
        &l_path,
        file.listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.name.as_str())),
        "listener name",
        report,
    );
    checks::unique(
        &l_path,
        file.listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.address.as_str())),
        "listener address",
        report,
    );
    let listeners = file
        .listeners
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let ctx = Resolve {
                base,
                secrets: &secrets,
            };
            listener(l, &l_path.index(i), &virtual_hosts, &clusters, &ctx, report)
        })
        .collect();
    Config {
        listeners,
        virtual_hosts,
        clusters,
    }
}

fn listener(
    l: &doc::Listener,
    path: &FieldPath,
    vhosts: &[VirtualHost],
    clusters: &BTreeMap<String, Cluster>,
    ctx: &Resolve<'_>,
    report: &mut Report,
) -> Option<Listener> {
    if l.name.is_empty() {
        report.error(&path.field("name"), "a listener needs a name");
    }
    let address = match l.address.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            report.error(
                &path.field("address"),
                format!(
                    "{:?} is not an IP:port address: write e.g. 127.0.1.1:8443 or [::1]:8080",
                    l.address
                ),
            );
            None
        }
    };
    let check_unused = |report: &mut Report, field: &str, used: bool| {
        if used {
            report.error(
                &path.field(field),
                format!("{field} does not apply to protocol {}", l.protocol),
            );
        }
    };
    let vhost_names = |report: &mut Report| -> Vec<String> {
        let names = match &l.virtual_hosts {
            Some(names) => names.clone(),
            None => vhosts.iter().map(|v| v.name.clone()).collect(),
        };
        for (i, n) in names.iter().enumerate() {
            if l.virtual_hosts.is_some() && !vhosts.iter().any(|v| &v.name == n) {
                report.error(
                    &path.field("virtualHosts").index(i),
                    format!("no virtual host named {n:?} in virtualHosts"),
                );
            }
        }
        check_domains_unique(path, &names, vhosts, report);
        names
    };
    let kind = match &l.protocol {
        Protocol::Http => {
            check_unused(report, "tls", l.tls.is_some());
            check_unused(report, "sniRoutes", !l.sni_routes.is_empty());
            check_unused(report, "cluster", l.cluster.is_some());
            ListenerKind::Http {
                https_redirect: l.https_redirect,
                virtual_hosts: vhost_names(report),
            }
        }
        Protocol::Https => {
            check_unused(report, "httpsRedirect", l.https_redirect);
            check_unused(report, "sniRoutes", !l.sni_routes.is_empty());
            check_unused(report, "cluster", l.cluster.is_some());
            let tls = match &l.tls {
                Some(t) => server_tls(t, &path.field("tls"), ctx, report),
                None => {
                    report.error(
                        &path.field("tls"),
                        "an HTTPS listener needs tls.certificates",
                    );
                    None
                }
            };
            let virtual_hosts = vhost_names(report);
            ListenerKind::Https {
                tls: tls?,
                virtual_hosts,
            }
        }
        Protocol::TlsPassthrough => {
            check_unused(report, "httpsRedirect", l.https_redirect);
            check_unused(report, "tls", l.tls.is_some());
            check_unused(report, "virtualHosts", l.virtual_hosts.is_some());
            check_unused(report, "cluster", l.cluster.is_some());
            if l.sni_routes.is_empty() {
                report.error(
                    &path.field("sniRoutes"),
                    "a TLS_PASSTHROUGH listener needs at least one sniRoute",
                );
            }
            let sni_routes = l
                .sni_routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let p = path.field("sniRoutes").index(i);
                    if r.server_names.is_empty() {
                        report.error(
                            &p.field("serverNames"),
                            "list the SNI names this route takes (\"*\" for any)",
                        );
                    }
                    for (j, n) in r.server_names.iter().enumerate() {
                        checks::hostname(
                            &p.field("serverNames").index(j),
                            n,
                            Wildcard::Allowed { bare: true },
                            report,
                        );
                    }
                    cluster_ref(&p.field("cluster"), &r.cluster, clusters, report);
                    SniRoute {
                        server_names: r.server_names.clone(),
                        cluster: r.cluster.clone(),
                    }
                })
                .collect();
            ListenerKind::TlsPassthrough { sni_routes }
        }
        Protocol::Tcp => {
            check_unused(report, "httpsRedirect", l.https_redirect);
            check_unused(report, "tls", l.tls.is_some());
            check_unused(report, "virtualHosts", l.virtual_hosts.is_some());
            check_unused(report, "sniRoutes", !l.sni_routes.is_empty());
            let cluster = l.cluster.clone().unwrap_or_default();
            cluster_ref(&path.field("cluster"), &cluster, clusters, report);
            ListenerKind::Tcp { cluster }
        }
        Protocol::Unknown(other) => {
            report.error(
                &path.field("protocol"),
                format!("unknown protocol {other:?}: use HTTP, HTTPS, TLS_PASSTHROUGH or TCP"),
            );
            return None;
        }
    };
    let mut trusted_sources = Vec::new();
    for (i, c) in l.trusted_sources.iter().enumerate() {
        match super::Cidr::parse(c) {
            Some(c) => trusted_sources.push(c),
            None => report.error(
                &path.field("trustedSources").index(i),
                format!("{c:?} is not a network: write e.g. 10.0.0.0/8 or 127.0.0.1/32"),
            ),
        }
    }
    if !trusted_sources.is_empty() && !matches!(l.protocol, Protocol::Http | Protocol::Https) {
        report.error(
            &path.field("trustedSources"),
            format!("trustedSources does not apply to protocol {}", l.protocol),
        );
    }
    Some(Listener {
        name: l.name.clone(),
        address: address?,
        trusted_sources,
        kind,
    })
}

/// A percentage (0-100, fractions allowed) as parts per million; unset = 100%.
fn percentage(path: &FieldPath, p: Option<f64>, report: &mut Report) -> u32 {
    match p {
        None => 1_000_000,
        Some(p) if (0.0..=100.0).contains(&p) => (p * 10_000.0).round() as u32,
        Some(p) => {
            report.error(path, format!("{p} is not a percentage: use 0-100"));
            0
        }
    }
}

/// A positive Go duration, or `default` (with an error when it does not parse).
fn duration_or(
    path: &FieldPath,
    d: Option<&str>,
    default: Duration,
    report: &mut Report,
) -> Duration {
    match d {
        None => default,
        Some(t) if checks::duration(path, t, true, report) => parse_duration(t).unwrap_or(default),
        Some(_) => default,
    }
}

fn retry_policy(r: &doc::Retries, path: &FieldPath, report: &mut Report) -> RetryPolicy {
    let per_try_timeout = r.per_try_timeout.as_deref().and_then(|t| {
        checks::duration(&path.field("perTryTimeout"), t, true, report)
            .then(|| parse_duration(t).ok())
            .flatten()
    });
    // Istio's defaults: retry on what is safe to retry when no condition is given.
    let defaults = [
        "connect-failure",
        "refused-stream",
        "unavailable",
        "cancelled",
        "503",
    ];
    let list: Vec<&str> = if r.retry_on.is_empty() {
        defaults.to_vec()
    } else {
        r.retry_on
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .collect()
    };
    let (retry_on, retriable_status_codes) = match RetryOn::parse(&list) {
        Ok(x) => x,
        Err(bad) => {
            report.error(
                &path.field("retryOn"),
                format!(
                    "unknown retry condition {bad:?}: use 5xx, gateway-error, connect-failure, \
                     reset, refused-stream, retriable-status-codes or a status code (e.g. 503)"
                ),
            );
            Default::default()
        }
    };
    RetryPolicy {
        attempts: r.attempts.unwrap_or(2),
        per_try_timeout,
        retry_on,
        retriable_status_codes,
    }
}

fn fault(f: &doc::Fault, path: &FieldPath, report: &mut Report) -> Fault {
    let abort = f.abort.as_ref().map(|a| {
        let ap = path.field("abort");
        if !(200..=599).contains(&a.http_status) {
            report.error(
                &ap.field("httpStatus"),
                format!("{} is not an HTTP status: use 200-599", a.http_status),
            );
        }
        (
            a.http_status,
            percentage(&ap.field("percentage"), a.percentage, report),
        )
    });
    let delay = f.delay.as_ref().map(|d| {
        let dp = path.field("delay");
        let t = duration_or(
            &dp.field("fixedDelay"),
            Some(d.fixed_delay.as_str()),
            Duration::ZERO,
            report,
        );
        (t, percentage(&dp.field("percentage"), d.percentage, report))
    });
    if abort.is_none() && delay.is_none() {
        report.error(path, "a fault needs abort, delay or both");
    }
    Fault { abort, delay }
}

/// Two virtual hosts of one listener claiming the same domain would make the second unreachable
/// for it; Envoy refuses that too.
fn check_domains_unique(
    path: &FieldPath,
    names: &[String],
    vhosts: &[VirtualHost],
    report: &mut Report,
) {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for name in names {
        let Some(v) = vhosts.iter().find(|v| &v.name == name) else {
            continue;
        };
        for d in &v.domains {
            if let Some(first) = seen.insert(d.as_str(), v.name.as_str())
                && first != v.name
            {
                report.error(
                    &path.field("virtualHosts"),
                    format!(
                        "domain {d:?} is claimed by both virtual hosts {first:?} and {:?} on \
                             this listener: each domain may appear once",
                        v.name
                    ),
                );
            }
        }
    }
}

fn server_tls(
    t: &doc::ServerTls,
    path: &FieldPath,
    ctx: &Resolve<'_>,
    report: &mut Report,
) -> Option<ServerTls> {
    let cpath = path.field("certificates");
    if t.certificates.is_empty() {
        report.error(&cpath, "list at least one certificate");
        return None;
    }
    let defaults = t.certificates.iter().filter(|c| c.default).count();
    if defaults > 1 {
        report.error(
            &cpath,
            "more than one certificate has default: true; mark at most one",
        );
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (i, c) in t.certificates.iter().enumerate() {
        let p = cpath.index(i);
        if c.server_names.is_empty() && !c.default {
            report.error(
                &p.field("serverNames"),
                "list the SNI names this certificate serves, or mark it default: true",
            );
        }
        for (j, n) in c.server_names.iter().enumerate() {
            let np = p.field("serverNames").index(j);
            if checks::hostname(&np, n, Wildcard::Allowed { bare: false }, report)
                && !names.insert(n.clone())
            {
                report.error(
                    &np,
                    format!("{n:?} is served by an earlier certificate already"),
                );
            }
        }
        let Some((cert, key)) = ctx.key_pair(
            &p,
            KeyPairFields {
                cert: (
                    "certFile",
                    c.cert_file.as_deref(),
                    "certPem",
                    c.cert_pem.as_deref(),
                ),
                key: (
                    "keyFile",
                    c.key_file.as_deref(),
                    "keyPem",
                    c.key_pem.as_ref().map(|k| k.0.as_str()),
                ),
                secret: ("certSecret", c.cert_secret.as_deref()),
            },
            report,
        ) else {
            continue;
        };
        if let Err(e) = tls::certified_key(&cert, &key) {
            report.error(&p, e.to_string());
            continue;
        }
        out.push(ServerCertificate {
            server_names: c.server_names.clone(),
            default: c.default,
            cert_chain: cert,
            private_key: key,
        });
    }
    Some(ServerTls { certificates: out })
}

/// Reads PEM given either as a file (relative to `base`) or inline; exactly one is required.
fn pem(
    path: &FieldPath,
    (file_field, file): (&str, Option<&str>),
    (inline_field, inline): (&str, Option<&str>),
    base: &Path,
    report: &mut Report,
) -> Option<Pem> {
    match (file, inline) {
        (Some(_), Some(_)) => {
            report.error(
                &path.field(file_field),
                format!("set {file_field} or {inline_field}, not both"),
            );
            None
        }
        (None, None) => {
            report.error(
                &path.field(file_field),
                format!("{file_field} (a PEM file) or {inline_field} (inline PEM) is required"),
            );
            None
        }
        (Some(f), None) => {
            let full = base.join(f);
            match std::fs::read_to_string(&full) {
                Ok(pem) => Some(Pem {
                    source: format!("file:{}", full.display()),
                    pem,
                }),
                Err(e) => {
                    report.error(
                        &path.field(file_field),
                        format!("cannot read {}: {e}", full.display()),
                    );
                    None
                }
            }
        }
        (None, Some(p)) => Some(Pem {
            source: "inline".to_owned(),
            pem: p.to_owned(),
        }),
    }
}

fn cluster_ref(
    path: &FieldPath,
    name: &str,
    clusters: &BTreeMap<String, Cluster>,
    report: &mut Report,
) {
    if name.is_empty() {
        report.error(path, "name the destination cluster");
    } else if !clusters.contains_key(name) {
        report.error(path, format!("no cluster named {name:?} in clusters"));
    }
}

fn virtual_host(
    v: &doc::VirtualHost,
    path: &FieldPath,
    clusters: &BTreeMap<String, Cluster>,
    report: &mut Report,
) -> VirtualHost {
    if v.name.is_empty() {
        report.error(&path.field("name"), "a virtual host needs a name");
    }
    if v.domains.is_empty() {
        report.error(
            &path.field("domains"),
            "list the domains this virtual host serves (\"*\" for any)",
        );
    }
    let mut domains = Vec::new();
    for (i, d) in v.domains.iter().enumerate() {
        // Users copy Host headers, which may carry a port; matching ignores ports anyway.
        let lower = d.to_ascii_lowercase();
        if checks::hostname(
            &path.field("domains").index(i),
            &lower,
            Wildcard::Allowed { bare: true },
            report,
        ) {
            domains.push(lower);
        }
    }
    let rpath = path.field("routes");
    let routes = v
        .routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| route(r, &v.name, i, &rpath.index(i), clusters, report))
        .collect();
    VirtualHost {
        name: v.name.clone(),
        domains,
        routes,
    }
}

fn route(
    r: &doc::Route,
    vhost: &str,
    index: usize,
    path: &FieldPath,
    clusters: &BTreeMap<String, Cluster>,
    report: &mut Report,
) -> Option<Route> {
    let matcher = route_match(
        r.matcher.as_ref().unwrap_or(&doc::RouteMatch::default()),
        &path.field("match"),
        report,
    );
    let actions = [
        r.route.is_some(),
        r.redirect.is_some(),
        r.direct_response.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if actions != 1 {
        report.error(
            path,
            "a route needs exactly one of route, redirect or directResponse",
        );
    }
    let action = if let Some(f) = &r.route {
        let p = path.field("route");
        let mut weighted = Vec::new();
        match (&f.cluster, f.clusters.is_empty()) {
            (Some(c), true) => {
                cluster_ref(&p.field("cluster"), c, clusters, report);
                weighted.push(WeightedCluster {
                    name: c.clone(),
                    weight: 1,
                });
            }
            (None, false) => {
                for (i, w) in f.clusters.iter().enumerate() {
                    cluster_ref(
                        &p.field("clusters").index(i).field("name"),
                        &w.name,
                        clusters,
                        report,
                    );
                    weighted.push(WeightedCluster {
                        name: w.name.clone(),
                        weight: w.weight.unwrap_or(1),
                    });
                }
                if weighted.iter().map(|w| u64::from(w.weight)).sum::<u64>() == 0 {
                    report.error(
                        &p.field("clusters"),
                        "weights add up to zero: give at least one cluster a positive weight",
                    );
                }
            }
            _ => report.error(
                &p,
                "set cluster (one destination) or clusters (weighted), exactly one of them",
            ),
        }
        if let Some(rw) = &f.prefix_rewrite {
            if matches!(matcher.path, Some(PathMatch::Regex(_))) {
                report.error(
                    &p.field("prefixRewrite"),
                    "prefixRewrite needs a prefix or exact path match to know what to replace",
                );
            }
            if !rw.starts_with('/') {
                report.error(
                    &p.field("prefixRewrite"),
                    format!("{rw:?} must start with '/'"),
                );
            }
        }
        if let Some(h) = &f.host_rewrite {
            host_value(&p.field("hostRewrite"), h, report);
        }
        // Unset means Envoy's default; an explicit 0s switches the limit off.
        let timeout = match f.timeout.as_deref() {
            None => Some(DEFAULT_ROUTE_TIMEOUT),
            Some(t) => {
                if checks::duration(&p.field("timeout"), t, false, report) {
                    parse_duration(t).ok().filter(|d| !d.is_zero())
                } else {
                    None
                }
            }
        };
        let retries = f
            .retries
            .as_ref()
            .map(|r| retry_policy(r, &p.field("retries"), report))
            .filter(|r| r.attempts > 0);
        let fault = f
            .fault
            .as_ref()
            .map(|x| fault(x, &p.field("fault"), report));
        let mirror = f.mirror.as_ref().map(|m| {
            let mp = p.field("mirror");
            cluster_ref(&mp.field("cluster"), &m.cluster, clusters, report);
            Mirror {
                cluster: m.cluster.clone(),
                ppm: percentage(&mp.field("percentage"), m.percentage, report),
            }
        });
        Action::Forward(Forward {
            clusters: weighted,
            prefix_rewrite: f.prefix_rewrite.clone(),
            host_rewrite: f.host_rewrite.clone(),
            timeout,
            retries,
            fault,
            mirror,
        })
    } else if let Some(rd) = &r.redirect {
        let p = path.field("redirect");
        if let Some(s) = &rd.scheme
            && s != "http"
            && s != "https"
        {
            report.error(&p.field("scheme"), format!("{s:?}: use http or https"));
        }
        if let Some(h) = &rd.host {
            host_value(&p.field("host"), h, report);
        }
        if let Some(port) = rd.port {
            checks::port(&p.field("port"), port, report);
        }
        if let Some(pa) = &rd.path
            && !pa.starts_with('/')
        {
            report.error(&p.field("path"), format!("{pa:?} must start with '/'"));
        }
        let code = rd.response_code.unwrap_or(301);
        if ![301, 302, 303, 307, 308].contains(&code) {
            report.error(
                &p.field("responseCode"),
                format!("{code} is not a redirect: use 301, 302, 303, 307 or 308"),
            );
        }
        Action::Redirect(Redirect {
            scheme: rd.scheme.clone(),
            host: rd.host.clone(),
            port: rd.port.and_then(|p| u16::try_from(p).ok()),
            path: rd.path.clone(),
            response_code: code,
        })
    } else if let Some(d) = &r.direct_response {
        if !(200..=599).contains(&d.status) {
            report.error(
                &path.field("directResponse").field("status"),
                format!("{} is not an HTTP status: use 200-599", d.status),
            );
        }
        Action::DirectResponse(DirectResponse {
            status: d.status,
            body: d.body.clone(),
        })
    } else {
        return None;
    };
    Some(Route {
        name: r.name.clone().unwrap_or_else(|| format!("{vhost}/{index}")),
        matcher,
        action,
        request_headers: header_edits(
            r.request_headers.as_ref(),
            &path.field("requestHeaders"),
            report,
        ),
        response_headers: header_edits(
            r.response_headers.as_ref(),
            &path.field("responseHeaders"),
            report,
        ),
    })
}

fn host_value(path: &FieldPath, h: &str, report: &mut Report) {
    let host = match h.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => h,
    };
    checks::hostname(path, host, Wildcard::Forbidden, report);
}

fn route_match(m: &doc::RouteMatch, path: &FieldPath, report: &mut Report) -> RouteMatch {
    let path_match = m.path.as_ref().and_then(|p| {
        let pp = path.field("path");
        match (p.exact.clone(), p.prefix.clone(), p.regex.clone()) {
            (Some(e), None, None) => {
                starts_with_slash(&pp.field("exact"), &e, report);
                Some(PathMatch::Exact(e))
            }
            (None, Some(pr), None) => {
                starts_with_slash(&pp.field("prefix"), &pr, report);
                Some(PathMatch::Prefix(pr))
            }
            (None, None, Some(r)) => pattern(&pp.field("regex"), &r, report).map(PathMatch::Regex),
            _ => {
                report.error(&pp, "set exactly one of exact, prefix or regex");
                None
            }
        }
    });
    let headers = m
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            let hp = path.field("headers").index(i);
            let name = h.name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                report.error(
                    &hp.field("name"),
                    format!("{:?} is not a valid header name", h.name),
                );
            }
            let value = value_match(&hp, h, report)?;
            Some(HeaderMatch {
                name,
                value,
                invert: h.invert,
            })
        })
        .collect();
    let query = m
        .query
        .iter()
        .enumerate()
        .filter_map(|(i, q)| {
            let qp = path.field("query").index(i);
            if q.name.is_empty() {
                report.error(&qp.field("name"), "name the query parameter");
            }
            if q.invert {
                report.error(&qp.field("invert"), "invert applies to headers only");
            }
            let value = value_match(&qp, q, report)?;
            Some(QueryMatch {
                name: q.name.clone(),
                value,
            })
        })
        .collect();
    let method = m.method.clone().map(|me| {
        if me.is_empty() || !me.bytes().all(|b| b.is_ascii_uppercase()) {
            report.error(
                &path.field("method"),
                format!("{me:?}: write the method in upper case, e.g. GET"),
            );
        }
        me
    });
    RouteMatch {
        path: path_match,
        headers,
        method,
        query,
    }
}

fn starts_with_slash(path: &FieldPath, s: &str, report: &mut Report) {
    if !s.starts_with('/') {
        report.error(path, format!("{s:?} must start with '/'"));
    }
}

fn pattern(path: &FieldPath, source: &str, report: &mut Report) -> Option<Pattern> {
    if !checks::regex(path, source, report) {
        return None;
    }
    match Pattern::new(source) {
        Ok(p) => Some(p),
        Err(e) => {
            report.error(path, format!("regex {source:?} does not compile: {e}"));
            None
        }
    }
}

fn value_match(path: &FieldPath, m: &doc::HeaderMatch, report: &mut Report) -> Option<ValueMatch> {
    match (
        m.exact.clone(),
        m.prefix.clone(),
        m.regex.clone(),
        m.present,
    ) {
        (Some(e), None, None, None) => Some(ValueMatch::Exact(e)),
        (None, Some(p), None, None) => Some(ValueMatch::Prefix(p)),
        (None, None, Some(r), None) => {
            pattern(&path.field("regex"), &r, report).map(ValueMatch::Regex)
        }
        (None, None, None, Some(true)) => Some(ValueMatch::Present),
        (None, None, None, Some(false)) => {
            report.error(
                &path.field("present"),
                "present: false matches nothing; to require absence use present: true with \
                 invert: true",
            );
            None
        }
        _ => {
            report.error(
                path,
                "set exactly one of exact, prefix, regex or present: true",
            );
            None
        }
    }
}

fn header_edits(
    e: Option<&doc::HeaderEdits>,
    path: &FieldPath,
    report: &mut Report,
) -> HeaderEdits {
    let Some(e) = e else {
        return HeaderEdits::default();
    };
    let mut check = |p: FieldPath, name: &str, value: Option<&str>| {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            report.error(&p, format!("{name:?} is not a valid header name"));
        } else if crate::proxy::is_hop_by_hop(&name.to_ascii_lowercase()) {
            report.error(
                &p,
                format!("{name:?} is a hop-by-hop header the gateway manages itself"),
            );
        }
        if let Some(v) = value
            && http::HeaderValue::from_str(v).is_err()
        {
            report.error(&p, format!("{v:?} is not a valid header value"));
        }
    };
    for (k, v) in &e.set {
        check(path.field("set").key(k), k, Some(v));
    }
    for (k, v) in &e.add {
        check(path.field("add").key(k), k, Some(v));
    }
    for (i, k) in e.remove.iter().enumerate() {
        check(path.field("remove").index(i), k, None);
    }
    let lower = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    };
    HeaderEdits {
        set: lower(&e.set),
        add: lower(&e.add),
        remove: e.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
    }
}

/// What file and secret references in a document resolve against.
struct Resolve<'a> {
    /// Directory relative file names are read from.
    base: &'a Path,
    /// The document's secrets, already read and checked.
    secrets: &'a BTreeMap<String, LoadedSecret>,
}

/// A secret of the document with its PEM read.
#[derive(Default)]
struct LoadedSecret {
    cert: Option<Pem>,
    key: Option<SecretPem>,
    ca: Option<Pem>,
}

/// The field names of the ways to give one certificate and key: files, inline PEM, or a secret.
struct KeyPairFields<'a> {
    /// (file field, file, inline field, inline PEM) of the chain.
    cert: (&'a str, Option<&'a str>, &'a str, Option<&'a str>),
    /// (file field, file, inline field, inline PEM) of the key.
    key: (&'a str, Option<&'a str>, &'a str, Option<&'a str>),
    /// (field, secret name).
    secret: (&'a str, Option<&'a str>),
}

impl Resolve<'_> {
    /// A certificate chain and its key, from files, inline PEM or a secret (exactly one).
    fn key_pair(
        &self,
        path: &FieldPath,
        f: KeyPairFields<'_>,
        report: &mut Report,
    ) -> Option<(Pem, SecretPem)> {
        if let (field, Some(name)) = f.secret {
            if [f.cert.1, f.cert.3, f.key.1, f.key.3]
                .iter()
                .any(Option::is_some)
            {
                report.error(
                    &path.field(field),
                    format!(
                        "set {field} or the certificate and key themselves ({}, {}), not both",
                        f.cert.2, f.key.2
                    ),
                );
                return None;
            }
            return match self.secrets.get(name) {
                None => {
                    report.error(
                        &path.field(field),
                        format!("no secret named {name:?} in secrets"),
                    );
                    None
                }
                Some(LoadedSecret {
                    cert: Some(c),
                    key: Some(k),
                    ..
                }) => Some((c.clone(), k.clone())),
                Some(_) => {
                    report.error(
                        &path.field(field),
                        format!(
                            "secret {name:?} holds no certificate and key: give it certPem and \
                             keyPem (or certFile and keyFile)"
                        ),
                    );
                    None
                }
            };
        }
        let cert = pem(
            path,
            (f.cert.0, f.cert.1),
            (f.cert.2, f.cert.3),
            self.base,
            report,
        );
        let key = pem(
            path,
            (f.key.0, f.key.1),
            (f.key.2, f.key.3),
            self.base,
            report,
        );
        Some((cert?, SecretPem(key?)))
    }

    /// A CA bundle from a file, inline PEM or a secret (exactly one).
    fn ca(&self, path: &FieldPath, t: &doc::UpstreamTls, report: &mut Report) -> Option<Pem> {
        let Some(name) = &t.ca_secret else {
            return pem(
                path,
                ("caFile", t.ca_file.as_deref()),
                ("caPem", t.ca_pem.as_deref()),
                self.base,
                report,
            );
        };
        if t.ca_file.is_some() || t.ca_pem.is_some() {
            report.error(
                &path.field("caSecret"),
                "set caSecret, caFile or caPem, only one of them",
            );
            return None;
        }
        match self.secrets.get(name) {
            None => {
                report.error(
                    &path.field("caSecret"),
                    format!("no secret named {name:?} in secrets"),
                );
                None
            }
            Some(LoadedSecret { ca: Some(ca), .. }) => Some(ca.clone()),
            Some(_) => {
                report.error(
                    &path.field("caSecret"),
                    format!("secret {name:?} holds no CA bundle: give it caPem (or caFile)"),
                );
                None
            }
        }
    }
}

/// Reads and checks the document's secrets. A secret is either a certificate with its key or a
/// CA bundle, as an Envoy SDS secret is one or the other.
fn secrets(file: &ProxyConfig, base: &Path, report: &mut Report) -> BTreeMap<String, LoadedSecret> {
    let spath = FieldPath::default().field("secrets");
    checks::unique(
        &spath,
        file.secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.name.as_str())),
        "secret name",
        report,
    );
    let mut out = BTreeMap::new();
    for (i, s) in file.secrets.iter().enumerate() {
        let p = spath.index(i);
        if s.name.is_empty() {
            report.error(&p.field("name"), "a secret needs a name");
        }
        let has_pair = [&s.cert_pem, &s.cert_file, &s.key_file]
            .iter()
            .any(|f| f.is_some())
            || s.key_pem.is_some();
        let has_ca = s.ca_pem.is_some() || s.ca_file.is_some();
        let source = || format!("secret:{}", s.name);
        let mut loaded = LoadedSecret::default();
        match (has_pair, has_ca) {
            (true, true) => report.error(
                &p,
                "a secret holds either a certificate and key or a CA bundle: split it in two",
            ),
            (false, false) => report.error(
                &p,
                "a secret needs certPem and keyPem (or certFile and keyFile), or caPem (or caFile)",
            ),
            (true, false) => {
                let cert = pem(
                    &p,
                    ("certFile", s.cert_file.as_deref()),
                    ("certPem", s.cert_pem.as_deref()),
                    base,
                    report,
                );
                let key = pem(
                    &p,
                    ("keyFile", s.key_file.as_deref()),
                    ("keyPem", s.key_pem.as_ref().map(|k| k.0.as_str())),
                    base,
                    report,
                );
                loaded.cert = cert.map(|c| Pem {
                    source: source(),
                    ..c
                });
                loaded.key = key.map(|k| {
                    SecretPem(Pem {
                        source: source(),
                        ..k
                    })
                });
            }
            (false, true) => {
                let ca = pem(
                    &p,
                    ("caFile", s.ca_file.as_deref()),
                    ("caPem", s.ca_pem.as_deref()),
                    base,
                    report,
                );
                loaded.ca = ca.map(|c| Pem {
                    source: source(),
                    ..c
                });
            }
        }
        out.entry(s.name.clone()).or_insert(loaded);
    }
    out
}

fn endpoint(path: &FieldPath, e: &doc::Endpoint, report: &mut Report) -> Option<Endpoint> {
    if e.weight == Some(0) {
        report.error(
            path,
            "weight 0 would never be picked: use at least 1, or leave the endpoint out",
        );
    }
    let a = &e.address;
    if let Ok(a) = a.parse::<SocketAddr>() {
        return Some(Endpoint::Static(a));
    }
    match a.rsplit_once(':') {
        Some((host, port)) => {
            let port_ok = match port.parse::<u32>() {
                Ok(p) => checks::port(path, p, report),
                Err(_) => {
                    report.error(path, format!("{a:?}: the port after ':' is not a number"));
                    false
                }
            };
            if checks::hostname(path, host, Wildcard::Forbidden, report) && port_ok {
                return Some(Endpoint::Dns {
                    host: host.to_owned(),
                    port: port.parse().unwrap_or_default(),
                });
            }
            None
        }
        None => {
            report.error(
                path,
                format!("{a:?} has no port: write IP:port or hostname:port"),
            );
            None
        }
    }
}

fn cluster(
    c: &doc::Cluster,
    path: &FieldPath,
    ctx: &Resolve<'_>,
    report: &mut Report,
) -> Option<Cluster> {
    if c.name.is_empty() {
        report.error(&path.field("name"), "a cluster needs a name");
    }
    // No endpoint is legitimate (a backend scaled to zero, not registered yet, or ejected by
    // the controller): requests get 503 `no healthy upstream`, as in Envoy.
    if !c.endpoints.is_empty() && !c.locality_endpoints.is_empty() {
        report.error(
            &path.field("localityEndpoints"),
            "set endpoints or localityEndpoints, not both",
        );
    }
    let mut endpoints = Vec::new();
    let mut members = Vec::new();
    let mut localities = Vec::new();
    if !c.endpoints.is_empty() {
        localities.push(LocalityGroup {
            locality: String::new(),
            priority: 0,
            weight: None,
        });
    }
    for (i, e) in c.endpoints.iter().enumerate() {
        if let Some(ep) = endpoint(&path.field("endpoints").index(i), e, report) {
            endpoints.push(ep);
            members.push(Member {
                group: 0,
                weight: e.weight.unwrap_or(1),
            });
        }
    }
    // Every priority is kept: the balancer spills from one to the next by health (lb::priority).
    for (gi, g) in c.locality_endpoints.iter().enumerate() {
        let gp = path.field("localityEndpoints").index(gi);
        if g.weight == Some(0) {
            report.error(
                &gp.field("weight"),
                "a locality weight of 0 takes no traffic: use at least 1, or leave the group out",
            );
        }
        let group = localities.len();
        let l = &g.locality;
        localities.push(LocalityGroup {
            locality: format!("{}/{}/{}", l.region, l.zone, l.subzone),
            priority: g.priority,
            weight: g.weight,
        });
        for (i, e) in g.endpoints.iter().enumerate() {
            if let Some(ep) = endpoint(&gp.field("endpoints").index(i), e, report) {
                endpoints.push(ep);
                members.push(Member {
                    group,
                    weight: e.weight.unwrap_or(1),
                });
            }
        }
    }
    let hash = c
        .consistent_hash
        .as_ref()
        .and_then(|h| hash_policy(h, &path.field("consistentHash"), report));
    if hash.is_some() && c.lb.is_some() {
        report.error(
            &path.field("lb"),
            "consistentHash picks hosts itself (Maglev): leave lb unset",
        );
    }
    let lb = match &c.lb {
        _ if hash.is_some() => LbPolicy::Maglev,
        None | Some(doc::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
        Some(doc::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Some(doc::LbPolicy::Random) => LbPolicy::Random,
        Some(doc::LbPolicy::Unknown(other)) => {
            report.error(
                &path.field("lb"),
                format!("unknown lb {other:?}: use round_robin, least_request or random"),
            );
            LbPolicy::RoundRobin
        }
    };
    let connect_timeout = match c.connect_timeout.as_deref() {
        None => DEFAULT_CONNECT_TIMEOUT,
        Some(t) => {
            if checks::duration(&path.field("connectTimeout"), t, true, report) {
                parse_duration(t).unwrap_or(DEFAULT_CONNECT_TIMEOUT)
            } else {
                DEFAULT_CONNECT_TIMEOUT
            }
        }
    };
    let protocol = match &c.protocol {
        None | Some(doc::UpstreamProtocol::Http1) => UpstreamProtocol::Http1,
        Some(doc::UpstreamProtocol::Http2) => UpstreamProtocol::Http2,
        Some(doc::UpstreamProtocol::Unknown(other)) => {
            report.error(
                &path.field("protocol"),
                format!("unknown protocol {other:?}: use HTTP1 or HTTP2"),
            );
            UpstreamProtocol::Http1
        }
    };
    let outlier = c.outlier_detection.as_ref().map(|o| {
        let op = path.field("outlierDetection");
        if let Some(p) = o.max_ejection_percent
            && p > 100
        {
            report.error(
                &op.field("maxEjectionPercent"),
                format!("{p} is not a percentage: use 0-100"),
            );
        }
        // Istio's defaults.
        Outlier {
            consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(5),
            consecutive_gateway: o.consecutive_gateway_errors.unwrap_or(0),
            interval: duration_or(
                &op.field("interval"),
                o.interval.as_deref(),
                Duration::from_secs(10),
                report,
            ),
            base_ejection_time: duration_or(
                &op.field("baseEjectionTime"),
                o.base_ejection_time.as_deref(),
                Duration::from_secs(30),
                report,
            ),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(10).min(100),
        }
    });
    let health_check = c.health_check.as_ref().map(|h| {
        let hp = path.field("healthCheck");
        let interval = duration_or(
            &hp.field("interval"),
            h.interval.as_deref(),
            Duration::from_secs(5),
            report,
        );
        let timeout = duration_or(
            &hp.field("timeout"),
            h.timeout.as_deref(),
            Duration::from_secs(1),
            report,
        );
        HealthCheck {
            path: h.path.clone(),
            expected_statuses: if h.expected_statuses.is_empty() {
                vec![200]
            } else {
                h.expected_statuses.clone()
            },
            interval,
            timeout,
            healthy_threshold: h.healthy_threshold.unwrap_or(1).max(1),
            unhealthy_threshold: h.unhealthy_threshold.unwrap_or(2).max(1),
        }
    });
    let limits = match &c.connection_pool {
        None => ConnectionLimits::default(),
        Some(p) => connection_limits(p, &path.field("connectionPool"), report),
    };
    if let Some(h) = &c.health_check {
        let hp = path.field("healthCheck");
        if let Some(p) = &h.path {
            starts_with_slash(&hp.field("path"), p, report);
        } else if !h.expected_statuses.is_empty() {
            report.error(
                &hp.field("expectedStatuses"),
                "expectedStatuses needs an HTTP check: set path too",
            );
        }
        for (i, s) in h.expected_statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                report.error(
                    &hp.field("expectedStatuses").index(i),
                    format!("{s} is not an HTTP status: use 100-599"),
                );
            }
        }
    }
    let tls = c
        .tls
        .as_ref()
        .and_then(|t| upstream_tls(t, &path.field("tls"), ctx, report));
    Some(Cluster {
        name: c.name.clone(),
        endpoints,
        lb,
        connect_timeout,
        protocol,
        tls,
        members,
        localities,
        outlier,
        health_check,
        limits,
        hash,
    })
}

fn connection_limits(
    p: &doc::ConnectionPool,
    path: &FieldPath,
    report: &mut Report,
) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    let budget = p.retry_budget.as_ref();
    let percent = budget
        .and_then(|b| b.percent)
        .unwrap_or(d.retry_budget_percent);
    if !(0.0..=100.0).contains(&percent) {
        report.error(
            &path.field("retryBudget").field("percent"),
            format!("{percent} is not a percentage: use 0-100"),
        );
    }
    if let Some(n) = p.max_requests_per_connection
        && n > 1
    {
        // Accepted (Istio writes it) but not enforced: say so rather than pretend.
        tracing::warn!(
            field = %path.field("maxRequestsPerConnection"),
            "maxRequestsPerConnection above 1 is not enforced; connections are reused until idle"
        );
    }
    ConnectionLimits {
        max_connections: p.max_connections.unwrap_or(d.max_connections),
        max_pending: p.http1_max_pending_requests.unwrap_or(d.max_pending),
        max_requests: p.http2_max_requests.unwrap_or(d.max_requests),
        max_requests_per_connection: p
            .max_requests_per_connection
            .unwrap_or(d.max_requests_per_connection),
        max_retries: p.max_retries.unwrap_or(d.max_retries),
        retry_budget_percent: percent,
        min_retry_concurrency: budget
            .and_then(|b| b.min_retry_concurrency)
            .unwrap_or(d.min_retry_concurrency),
    }
}

fn hash_policy(
    h: &doc::ConsistentHash,
    path: &FieldPath,
    report: &mut Report,
) -> Option<HashPolicy> {
    let set = [
        h.http_header_name.is_some(),
        h.http_cookie.is_some(),
        h.use_source_ip,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        report.error(
            path,
            "set exactly one of httpHeaderName, httpCookie or useSourceIp",
        );
        return None;
    }
    if let Some(name) = &h.http_header_name {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            report.error(
                &path.field("httpHeaderName"),
                format!("{name:?} is not a header name"),
            );
            return None;
        }
        return Some(HashPolicy::Header(name.to_ascii_lowercase()));
    }
    if let Some(c) = &h.http_cookie {
        let cp = path.field("httpCookie");
        let valid_name = !c.name.is_empty()
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name {
            report.error(
                &cp.field("name"),
                format!(
                    "{:?} is not a cookie name: use letters, digits, - _ .",
                    c.name
                ),
            );
        }
        let Some(ttl) = c.ttl.as_deref() else {
            report.error(
                &cp.field("ttl"),
                "give the cookie a ttl: the gateway issues it when a request has none",
            );
            return None;
        };
        let ttl = duration_or(
            &cp.field("ttl"),
            Some(ttl),
            Duration::from_secs(3600),
            report,
        );
        let cookie_path = c.path.clone().unwrap_or_else(|| "/".to_owned());
        starts_with_slash(&cp.field("path"), &cookie_path, report);
        return Some(HashPolicy::Cookie {
            name: c.name.clone(),
            ttl,
            path: cookie_path,
        });
    }
    Some(HashPolicy::SourceIp)
}

fn upstream_tls(
    t: &doc::UpstreamTls,
    path: &FieldPath,
    ctx: &Resolve<'_>,
    report: &mut Report,
) -> Option<UpstreamTls> {
    let mode = match &t.mode {
        doc::TlsMode::Simple => TlsMode::Simple,
        doc::TlsMode::Mutual => TlsMode::Mutual,
        doc::TlsMode::Unknown(other) => {
            report.error(
                &path.field("mode"),
                format!("unknown TLS mode {other:?}: use SIMPLE or MUTUAL"),
            );
            return None;
        }
    };
    if let Some(sni) = &t.sni {
        checks::hostname(&path.field("sni"), sni, Wildcard::Forbidden, report);
    }
    let ca = ctx.ca(path, t, report);
    if let Some(ca) = &ca
        && let Err(e) = tls::root_store(ca)
    {
        report.error(&path.field("caFile"), e.to_string());
    }
    let (client_cert, client_key) = match mode {
        TlsMode::Simple => {
            let set = [
                t.client_cert_file.is_some()
                    || t.client_cert_pem.is_some()
                    || t.client_cert_secret.is_some(),
                t.client_key_file.is_some() || t.client_key_pem.is_some(),
            ];
            if set.contains(&true) {
                report.error(
                    &path.field("mode"),
                    "a client certificate is only sent in MUTUAL mode",
                );
            }
            (None, None)
        }
        TlsMode::Mutual => {
            let pair = ctx.key_pair(
                path,
                KeyPairFields {
                    cert: (
                        "clientCertFile",
                        t.client_cert_file.as_deref(),
                        "clientCertPem",
                        t.client_cert_pem.as_deref(),
                    ),
                    key: (
                        "clientKeyFile",
                        t.client_key_file.as_deref(),
                        "clientKeyPem",
                        t.client_key_pem.as_ref().map(|k| k.0.as_str()),
                    ),
                    secret: ("clientCertSecret", t.client_cert_secret.as_deref()),
                },
                report,
            );
            if let Some((c, k)) = &pair
                && let Err(e) = tls::certified_key(c, k)
            {
                report.error(&path.field("clientCertFile"), e.to_string());
            }
            match pair {
                Some((c, k)) => (Some(c), Some(k)),
                None => (None, None),
            }
        }
    };
    Some(UpstreamTls {
        mode,
        sni: t.sni.clone(),
        ca: ca?,
        client_cert,
        client_key,
    })
}

#[cfg(test)]
mod tests;
