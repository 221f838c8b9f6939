//! The static YAML file format (documented in `docs/gateway.md`) and its translation into the
//! [`Config`](super::Config) model.
//!
//! Decoding is deliberately lenient about enum-like strings (`protocol: HTTPX`) so that one run
//! reports all of them, and strict about unknown keys (a misspelt `virtualHost:` would otherwise
//! vanish). Certificates and keys are read and parsed here, so a broken PEM is a load error with a
//! field path rather than a failed handshake later.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use causeway_crds::duration::parse_duration;
use causeway_crds::strict;
use causeway_crds::validation::checks::{self, Wildcard};
use causeway_crds::validation::{FieldPath, Report};
use serde::{Deserialize, Serialize};

use super::{
    Action, Cluster, Config, ConfigError, DirectResponse, Endpoint, Forward, HeaderEdits,
    HeaderMatch, LbPolicy, Listener, ListenerKind, PathMatch, Pattern, Pem, QueryMatch, Redirect,
    Route, RouteMatch, SecretPem, ServerCertificate, ServerTls, SniRoute, TlsMode,
    UpstreamProtocol, UpstreamTls, ValueMatch, VirtualHost, WeightedCluster,
};
use crate::tls;

/// Default TCP connect timeout for clusters that do not set one.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default route timeout (Envoy's): an upstream that never answers cannot hold a request
/// forever.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileConfig {
    #[serde(default)]
    listeners: Vec<FileListener>,
    #[serde(default)]
    virtual_hosts: Vec<FileVirtualHost>,
    #[serde(default)]
    clusters: Vec<FileCluster>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileListener {
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    protocol: String,
    #[serde(default)]
    https_redirect: bool,
    tls: Option<FileServerTls>,
    virtual_hosts: Option<Vec<String>>,
    #[serde(default)]
    sni_routes: Vec<FileSniRoute>,
    cluster: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileServerTls {
    #[serde(default)]
    certificates: Vec<FileCertificate>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileCertificate {
    #[serde(default)]
    server_names: Vec<String>,
    #[serde(default)]
    default: bool,
    cert_file: Option<String>,
    cert_pem: Option<String>,
    key_file: Option<String>,
    key_pem: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileSniRoute {
    #[serde(default)]
    server_names: Vec<String>,
    #[serde(default)]
    cluster: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileVirtualHost {
    #[serde(default)]
    name: String,
    #[serde(default)]
    domains: Vec<String>,
    #[serde(default)]
    routes: Vec<FileRoute>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileRoute {
    name: Option<String>,
    #[serde(rename = "match")]
    matcher: Option<FileMatch>,
    route: Option<FileForward>,
    redirect: Option<FileRedirect>,
    direct_response: Option<FileDirectResponse>,
    request_headers: Option<FileHeaderEdits>,
    response_headers: Option<FileHeaderEdits>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileMatch {
    path: Option<FileStringMatch>,
    #[serde(default)]
    headers: Vec<FileHeaderMatch>,
    method: Option<String>,
    #[serde(default)]
    query: Vec<FileHeaderMatch>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileStringMatch {
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileHeaderMatch {
    #[serde(default)]
    name: String,
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
    present: Option<bool>,
    #[serde(default)]
    invert: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileForward {
    cluster: Option<String>,
    #[serde(default)]
    clusters: Vec<FileWeightedCluster>,
    prefix_rewrite: Option<String>,
    host_rewrite: Option<String>,
    timeout: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileWeightedCluster {
    #[serde(default)]
    name: String,
    weight: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileRedirect {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u32>,
    path: Option<String>,
    response_code: Option<u16>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileDirectResponse {
    status: u16,
    #[serde(default)]
    body: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileHeaderEdits {
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileCluster {
    #[serde(default)]
    name: String,
    #[serde(default)]
    endpoints: Vec<String>,
    lb: Option<String>,
    connect_timeout: Option<String>,
    protocol: Option<String>,
    tls: Option<FileUpstreamTls>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileUpstreamTls {
    #[serde(default)]
    mode: String,
    sni: Option<String>,
    ca_file: Option<String>,
    ca_pem: Option<String>,
    client_cert_file: Option<String>,
    client_cert_pem: Option<String>,
    client_key_file: Option<String>,
    client_key_pem: Option<String>,
}

/// Parses and validates the YAML text of a gateway config; file references are relative to
/// `base`.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
    let value: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    let value = match value {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        v => v,
    };
    let (file, dropped) = strict::decode_with_path::<FileConfig>(value).map_err(|e| {
        let mut r = Report::new();
        r.error(&e.path, e.message);
        ConfigError::Invalid(r.into_findings())
    })?;
    let mut report = Report::new();
    for path in dropped {
        report.error(
            &path,
            "unknown field: check its spelling against docs/gateway.md",
        );
    }
    let config = translate(file, base, &mut report);
    if report.is_ok() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(report.errors().cloned().collect()))
    }
}

fn translate(file: FileConfig, base: &Path, report: &mut Report) -> Config {
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
    let mut clusters = BTreeMap::new();
    for (i, c) in file.clusters.into_iter().enumerate() {
        if let Some(c) = cluster(c, &clusters_path.index(i), base, report) {
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
        .into_iter()
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
        .into_iter()
        .enumerate()
        .filter_map(|(i, l)| listener(l, &l_path.index(i), &virtual_hosts, &clusters, base, report))
        .collect();
    Config {
        listeners,
        virtual_hosts,
        clusters,
    }
}

fn listener(
    l: FileListener,
    path: &FieldPath,
    vhosts: &[VirtualHost],
    clusters: &BTreeMap<String, Cluster>,
    base: &Path,
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
    let kind = match l.protocol.as_str() {
        "HTTP" => {
            check_unused(report, "tls", l.tls.is_some());
            check_unused(report, "sniRoutes", !l.sni_routes.is_empty());
            check_unused(report, "cluster", l.cluster.is_some());
            ListenerKind::Http {
                https_redirect: l.https_redirect,
                virtual_hosts: vhost_names(report),
            }
        }
        "HTTPS" => {
            check_unused(report, "httpsRedirect", l.https_redirect);
            check_unused(report, "sniRoutes", !l.sni_routes.is_empty());
            check_unused(report, "cluster", l.cluster.is_some());
            let tls = match &l.tls {
                Some(t) => server_tls(t, &path.field("tls"), base, report),
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
        "TLS_PASSTHROUGH" => {
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
        "TCP" => {
            check_unused(report, "httpsRedirect", l.https_redirect);
            check_unused(report, "tls", l.tls.is_some());
            check_unused(report, "virtualHosts", l.virtual_hosts.is_some());
            check_unused(report, "sniRoutes", !l.sni_routes.is_empty());
            let cluster = l.cluster.clone().unwrap_or_default();
            cluster_ref(&path.field("cluster"), &cluster, clusters, report);
            ListenerKind::Tcp { cluster }
        }
        other => {
            report.error(
                &path.field("protocol"),
                format!("unknown protocol {other:?}: use HTTP, HTTPS, TLS_PASSTHROUGH or TCP"),
            );
            return None;
        }
    };
    Some(Listener {
        name: l.name,
        address: address?,
        kind,
    })
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
    t: &FileServerTls,
    path: &FieldPath,
    base: &Path,
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
        let cert = pem(
            &p,
            ("certFile", c.cert_file.as_deref()),
            ("certPem", c.cert_pem.as_deref()),
            base,
            report,
        );
        let key = pem(
            &p,
            ("keyFile", c.key_file.as_deref()),
            ("keyPem", c.key_pem.as_deref()),
            base,
            report,
        );
        let (Some(cert), Some(key)) = (cert, key) else {
            continue;
        };
        let key = SecretPem(key);
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
    v: FileVirtualHost,
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
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| route(r, &v.name, i, &rpath.index(i), clusters, report))
        .collect();
    VirtualHost {
        name: v.name,
        domains,
        routes,
    }
}

fn route(
    r: FileRoute,
    vhost: &str,
    index: usize,
    path: &FieldPath,
    clusters: &BTreeMap<String, Cluster>,
    report: &mut Report,
) -> Option<Route> {
    let matcher = route_match(r.matcher.unwrap_or_default(), &path.field("match"), report);
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
    let action = if let Some(f) = r.route {
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
        Action::Forward(Forward {
            clusters: weighted,
            prefix_rewrite: f.prefix_rewrite,
            host_rewrite: f.host_rewrite,
            timeout,
        })
    } else if let Some(rd) = r.redirect {
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
            scheme: rd.scheme,
            host: rd.host,
            port: rd.port.and_then(|p| u16::try_from(p).ok()),
            path: rd.path,
            response_code: code,
        })
    } else if let Some(d) = r.direct_response {
        if !(200..=599).contains(&d.status) {
            report.error(
                &path.field("directResponse").field("status"),
                format!("{} is not an HTTP status: use 200-599", d.status),
            );
        }
        Action::DirectResponse(DirectResponse {
            status: d.status,
            body: d.body,
        })
    } else {
        return None;
    };
    Some(Route {
        name: r.name.unwrap_or_else(|| format!("{vhost}/{index}")),
        matcher,
        action,
        request_headers: header_edits(r.request_headers, &path.field("requestHeaders"), report),
        response_headers: header_edits(r.response_headers, &path.field("responseHeaders"), report),
    })
}

fn host_value(path: &FieldPath, h: &str, report: &mut Report) {
    let host = match h.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => h,
    };
    checks::hostname(path, host, Wildcard::Forbidden, report);
}

fn route_match(m: FileMatch, path: &FieldPath, report: &mut Report) -> RouteMatch {
    let path_match = m.path.and_then(|p| {
        let pp = path.field("path");
        match (p.exact, p.prefix, p.regex) {
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
        .into_iter()
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
            let value = value_match(&hp, h.exact, h.prefix, h.regex, h.present, report)?;
            Some(HeaderMatch {
                name,
                value,
                invert: h.invert,
            })
        })
        .collect();
    let query = m
        .query
        .into_iter()
        .enumerate()
        .filter_map(|(i, q)| {
            let qp = path.field("query").index(i);
            if q.name.is_empty() {
                report.error(&qp.field("name"), "name the query parameter");
            }
            if q.invert {
                report.error(&qp.field("invert"), "invert applies to headers only");
            }
            let value = value_match(&qp, q.exact, q.prefix, q.regex, q.present, report)?;
            Some(QueryMatch {
                name: q.name,
                value,
            })
        })
        .collect();
    let method = m.method.map(|me| {
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

fn value_match(
    path: &FieldPath,
    exact: Option<String>,
    prefix: Option<String>,
    regex: Option<String>,
    present: Option<bool>,
    report: &mut Report,
) -> Option<ValueMatch> {
    match (exact, prefix, regex, present) {
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

fn header_edits(e: Option<FileHeaderEdits>, path: &FieldPath, report: &mut Report) -> HeaderEdits {
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
    let lower = |m: BTreeMap<String, String>| {
        m.into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    };
    HeaderEdits {
        set: lower(e.set),
        add: lower(e.add),
        remove: e.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
    }
}

fn cluster(c: FileCluster, path: &FieldPath, base: &Path, report: &mut Report) -> Option<Cluster> {
    if c.name.is_empty() {
        report.error(&path.field("name"), "a cluster needs a name");
    }
    if c.endpoints.is_empty() {
        report.error(
            &path.field("endpoints"),
            "list at least one endpoint (IP:port or hostname:port)",
        );
    }
    let mut endpoints = Vec::new();
    for (i, e) in c.endpoints.iter().enumerate() {
        let ep = path.field("endpoints").index(i);
        if let Ok(a) = e.parse::<SocketAddr>() {
            endpoints.push(Endpoint::Static(a));
            continue;
        }
        match e.rsplit_once(':') {
            Some((host, port)) => {
                let port_ok = match port.parse::<u32>() {
                    Ok(p) => checks::port(&ep, p, report),
                    Err(_) => {
                        report.error(&ep, format!("{e:?}: the port after ':' is not a number"));
                        false
                    }
                };
                if checks::hostname(&ep, host, Wildcard::Forbidden, report) && port_ok {
                    endpoints.push(Endpoint::Dns {
                        host: host.to_owned(),
                        port: port.parse().unwrap_or_default(),
                    });
                }
            }
            None => report.error(
                &ep,
                format!("{e:?} has no port: write IP:port or hostname:port"),
            ),
        }
    }
    let lb = match c.lb.as_deref() {
        None | Some("round_robin") => LbPolicy::RoundRobin,
        Some("least_request") => LbPolicy::LeastRequest,
        Some("random") => LbPolicy::Random,
        Some(other) => {
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
    let protocol = match c.protocol.as_deref() {
        None | Some("HTTP1") => UpstreamProtocol::Http1,
        Some("HTTP2") => UpstreamProtocol::Http2,
        Some(other) => {
            report.error(
                &path.field("protocol"),
                format!("unknown protocol {other:?}: use HTTP1 or HTTP2"),
            );
            UpstreamProtocol::Http1
        }
    };
    let tls = c
        .tls
        .as_ref()
        .and_then(|t| upstream_tls(t, &path.field("tls"), base, report));
    Some(Cluster {
        name: c.name,
        endpoints,
        lb,
        connect_timeout,
        protocol,
        tls,
    })
}

fn upstream_tls(
    t: &FileUpstreamTls,
    path: &FieldPath,
    base: &Path,
    report: &mut Report,
) -> Option<UpstreamTls> {
    let mode = match t.mode.as_str() {
        "SIMPLE" => TlsMode::Simple,
        "MUTUAL" => TlsMode::Mutual,
        other => {
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
    let ca = pem(
        path,
        ("caFile", t.ca_file.as_deref()),
        ("caPem", t.ca_pem.as_deref()),
        base,
        report,
    );
    if let Some(ca) = &ca
        && let Err(e) = tls::root_store(ca)
    {
        report.error(&path.field("caFile"), e.to_string());
    }
    let (client_cert, client_key) = match mode {
        TlsMode::Simple => {
            let set = [
                t.client_cert_file.is_some() || t.client_cert_pem.is_some(),
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
            let cert = pem(
                path,
                ("clientCertFile", t.client_cert_file.as_deref()),
                ("clientCertPem", t.client_cert_pem.as_deref()),
                base,
                report,
            );
            let key = pem(
                path,
                ("clientKeyFile", t.client_key_file.as_deref()),
                ("clientKeyPem", t.client_key_pem.as_deref()),
                base,
                report,
            )
            .map(SecretPem);
            if let (Some(c), Some(k)) = (&cert, &key)
                && let Err(e) = tls::certified_key(c, k)
            {
                report.error(&path.field("clientCertFile"), e.to_string());
            }
            (cert, key)
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
