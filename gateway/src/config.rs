//! The gateway's configuration model.
//!
//! This is the one shape the data plane reads, whatever produced it: today a static YAML file
//! ([`file`]), later the controller over xDS. Everything here is already checked and parsed —
//! addresses are socket addresses, durations are [`Duration`]s, regexes are compiled — so the
//! request path never re-validates. [`Config::load`] and [`Config::from_yaml`] return every
//! problem of a file at once, each with the field path a user finds in their YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use causeway_crds::validation::FieldError;
use regex::Regex;
use serde::{Serialize, Serializer};

pub mod file;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read gateway config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("gateway config is not valid YAML: {0}")]
    Syntax(String),
    /// The file decoded, but some fields are wrong; every problem is listed.
    #[error("gateway config has {} problem(s):\n  {}", .0.len(), render(.0))]
    Invalid(Vec<FieldError>),
}

fn render(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

impl ConfigError {
    /// The field-level findings, when the file decoded far enough to have any.
    pub fn findings(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(f) => f,
            _ => &[],
        }
    }
}

/// A complete, validated gateway configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Sockets the gateway accepts connections on.
    pub listeners: Vec<Listener>,
    /// HTTP virtual hosts with their routes, matched by Host/:authority.
    #[serde(rename = "virtualHosts")]
    pub virtual_hosts: Vec<VirtualHost>,
    /// Upstream clusters, by name.
    pub clusters: BTreeMap<String, Cluster>,
}

impl Config {
    /// Reads and validates a YAML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        file::parse(&text, base)
    }

    /// Validates YAML text; relative file references resolve against the current directory.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        file::parse(text, Path::new("."))
    }

    /// The listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// A socket the gateway serves, and what it does with connections to it.
#[derive(Debug, Clone, Serialize)]
pub struct Listener {
    /// Unique name, used in stats and logs.
    pub name: String,
    /// Where to listen.
    pub address: SocketAddr,
    /// Clients whose `x-envoy-*` override headers are honoured (HTTP and HTTPS listeners).
    #[serde(rename = "trustedSources")]
    pub trusted_sources: Vec<Cidr>,
    /// What the listener speaks.
    #[serde(flatten)]
    pub kind: ListenerKind,
}

/// The protocol of a listener, with what only that protocol needs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "protocol")]
pub enum ListenerKind {
    /// Plain-text HTTP/1.1 and HTTP/2 (prior knowledge).
    #[serde(rename = "HTTP")]
    Http {
        /// Answer every request with a 301 to the `https` URL instead of routing it.
        #[serde(rename = "httpsRedirect")]
        https_redirect: bool,
        /// The virtual hosts this listener routes with, in order.
        #[serde(rename = "virtualHosts")]
        virtual_hosts: Vec<String>,
    },
    /// TLS-terminated HTTP/1.1 and HTTP/2 (ALPN).
    #[serde(rename = "HTTPS")]
    Https {
        /// Certificates by SNI.
        tls: ServerTls,
        /// The virtual hosts this listener routes with, in order.
        #[serde(rename = "virtualHosts")]
        virtual_hosts: Vec<String>,
    },
    /// TLS forwarded untouched to a cluster chosen by the ClientHello's SNI.
    #[serde(rename = "TLS_PASSTHROUGH")]
    TlsPassthrough {
        /// SNI routes, first match wins.
        #[serde(rename = "sniRoutes")]
        sni_routes: Vec<SniRoute>,
    },
    /// Raw TCP forwarded to one cluster.
    #[serde(rename = "TCP")]
    Tcp {
        /// The cluster connections go to.
        cluster: String,
    },
}

impl ListenerKind {
    /// The protocol's name as written in the file.
    pub fn protocol(&self) -> &'static str {
        match self {
            ListenerKind::Http { .. } => "HTTP",
            ListenerKind::Https { .. } => "HTTPS",
            ListenerKind::TlsPassthrough { .. } => "TLS_PASSTHROUGH",
            ListenerKind::Tcp { .. } => "TCP",
        }
    }

    /// The virtual hosts of an HTTP or HTTPS listener.
    pub fn virtual_hosts(&self) -> &[String] {
        match self {
            ListenerKind::Http { virtual_hosts, .. }
            | ListenerKind::Https { virtual_hosts, .. } => virtual_hosts,
            _ => &[],
        }
    }
}

/// A passthrough route: connections whose SNI matches go to `cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct SniRoute {
    /// Exact names or `*.` wildcards; `*` matches everything, including no SNI.
    #[serde(rename = "serverNames")]
    pub server_names: Vec<String>,
    /// Destination cluster.
    pub cluster: String,
}

/// Certificates a terminating listener presents.
#[derive(Debug, Clone, Serialize)]
pub struct ServerTls {
    /// Certificates, each for some server names; see [`ServerCertificate`].
    pub certificates: Vec<ServerCertificate>,
}

/// One certificate chain and key, and the SNI names it answers.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCertificate {
    /// Exact names and `*.` wildcards this certificate is selected for.
    #[serde(rename = "serverNames")]
    pub server_names: Vec<String>,
    /// Used when no name matches (or the client sent no SNI).
    pub default: bool,
    /// PEM certificate chain, leaf first.
    #[serde(rename = "certChain")]
    pub cert_chain: Pem,
    /// PEM private key; never serialized.
    #[serde(rename = "privateKey")]
    pub private_key: SecretPem,
}

/// PEM text and where it came from.
#[derive(Clone, Serialize)]
pub struct Pem {
    /// `file:PATH` or `inline`.
    pub source: String,
    /// The PEM text.
    #[serde(skip)]
    pub pem: String,
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pem({})", self.source)
    }
}

/// PEM text holding a private key: never printed, never dumped.
#[derive(Clone)]
pub struct SecretPem(pub Pem);

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPem({}, [redacted])", self.0.source)
    }
}

impl Serialize for SecretPem {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("[redacted] ({})", self.0.source))
    }
}

/// A set of domains and the routes for requests addressed to them.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualHost {
    /// Unique name.
    pub name: String,
    /// Exact names, `*.` wildcards, or `*`.
    pub domains: Vec<String>,
    /// First match wins.
    pub routes: Vec<Route>,
}

/// One route: a match and what to do with matching requests.
#[derive(Debug, Clone, Serialize)]
pub struct Route {
    /// Name for stats and logs (defaults to `VHOST/INDEX`).
    pub name: String,
    /// Conditions; all must hold.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// What happens to a matching request.
    pub action: Action,
    /// Edits to the request before it goes upstream.
    #[serde(rename = "requestHeaders")]
    pub request_headers: HeaderEdits,
    /// Edits to the response before it goes downstream.
    #[serde(rename = "responseHeaders")]
    pub response_headers: HeaderEdits,
}

/// Request conditions of a route. Absent conditions always hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteMatch {
    /// Path condition (the query string is not part of the path).
    pub path: Option<PathMatch>,
    /// Header conditions.
    pub headers: Vec<HeaderMatch>,
    /// The request method, upper case.
    pub method: Option<String>,
    /// Query parameter conditions.
    pub query: Vec<QueryMatch>,
}

/// How a path is compared.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    /// The whole path.
    Exact(String),
    /// A leading part of the path, compared byte by byte (Envoy's semantics: `/api` matches
    /// `/apis`).
    Prefix(String),
    /// A regex that must match the whole path.
    Regex(Pattern),
}

/// A compiled regex that serializes as its source and matches whole strings.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    anchored: Regex,
}

impl Pattern {
    /// Compiles `source` so it must match a whole string (RE2 full-match semantics).
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            source: source.to_owned(),
            anchored: Regex::new(&format!("^(?:{source})$"))?,
        })
    }

    /// Whether the whole of `s` matches.
    pub fn is_match(&self, s: &str) -> bool {
        self.anchored.is_match(s)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// A condition on one header (names are lower case).
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    /// Header name, lower case.
    pub name: String,
    /// How its value is compared.
    #[serde(flatten)]
    pub value: ValueMatch,
    /// Match when the condition does *not* hold.
    pub invert: bool,
}

/// A condition on one query parameter.
#[derive(Debug, Clone, Serialize)]
pub struct QueryMatch {
    /// Parameter name, compared exactly.
    pub name: String,
    /// How its (percent-decoded) value is compared.
    #[serde(flatten)]
    pub value: ValueMatch,
}

/// How a header or query value is compared.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Whole-value regex.
    Regex(Pattern),
    /// Present with any value.
    Present,
}

/// What a route does.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Proxy to one of weighted clusters.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed response.
    DirectResponse(DirectResponse),
}

/// Proxying to clusters.
#[derive(Debug, Clone, Serialize)]
pub struct Forward {
    /// Destinations with weights (summing to more than zero).
    pub clusters: Vec<WeightedCluster>,
    /// Replace the matched path prefix (prefix and exact matches only) with this.
    #[serde(rename = "prefixRewrite")]
    pub prefix_rewrite: Option<String>,
    /// Replace the Host/:authority sent upstream.
    #[serde(rename = "hostRewrite")]
    pub host_rewrite: Option<String>,
    /// The whole exchange must finish within this, else 504.
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retries: Option<RetryPolicy>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Mirroring.
    pub mirror: Option<Mirror>,
}

/// When and how often a failed upstream attempt is tried again.
#[derive(Debug, Clone, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Deadline of each attempt (the route timeout still bounds the whole).
    #[serde(rename = "perTryTimeout", with = "opt_duration")]
    pub per_try_timeout: Option<Duration>,
    /// Conditions that trigger a retry.
    #[serde(rename = "retryOn")]
    pub retry_on: crate::lb::retry::RetryOn,
    /// Statuses retried under `retriable-status-codes` (numbers in `retryOn`).
    #[serde(rename = "retriableStatusCodes")]
    pub retriable_status_codes: Vec<u16>,
}

/// Fault injection of a route.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// (status, share in parts per million).
    pub abort: Option<(u16, u32)>,
    /// (delay, share in parts per million).
    #[serde(serialize_with = "delay_fault")]
    pub delay: Option<(Duration, u32)>,
}

fn delay_fault<S: Serializer>(d: &Option<(Duration, u32)>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some((d, ppm)) => s.serialize_str(&format!("{}ms@{ppm}ppm", d.as_millis())),
        None => s.serialize_none(),
    }
}

/// Request mirroring of a route.
#[derive(Debug, Clone, Serialize)]
pub struct Mirror {
    /// Cluster receiving the copies.
    pub cluster: String,
    /// Share copied, in parts per million.
    pub ppm: u32,
}

/// An IPv4 or IPv6 network, `ADDR/LEN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: std::net::IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Parses `ADDR/LEN` or a bare address (a host route).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max)?,
            None => max,
        };
        Some(Cidr { addr, len })
    }

    /// Whether `ip` is inside the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A destination and its share of traffic.
#[derive(Debug, Clone, Serialize)]
pub struct WeightedCluster {
    /// Cluster name.
    pub name: String,
    /// Relative weight.
    pub weight: u32,
}

/// A redirect answer; unset parts keep the request's.
#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port (omitted from the URL when it is the scheme's default).
    pub port: Option<u16>,
    /// New path (the query string is kept).
    pub path: Option<String>,
    /// Status code: 301, 302, 303, 307 or 308.
    #[serde(rename = "responseCode")]
    pub response_code: u16,
}

/// A fixed answer.
#[derive(Debug, Clone, Serialize)]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// Header edits, applied remove → set → add.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderEdits {
    /// Headers replaced (or created).
    pub set: Vec<(String, String)>,
    /// Headers appended.
    pub add: Vec<(String, String)>,
    /// Headers removed.
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// An upstream cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    /// Unique name.
    pub name: String,
    /// Where its members are.
    pub endpoints: Vec<Endpoint>,
    /// How a member is picked.
    pub lb: LbPolicy,
    /// TCP connect (and TLS handshake) deadline.
    #[serde(rename = "connectTimeout", with = "duration")]
    pub connect_timeout: Duration,
    /// How to speak HTTP to it.
    pub protocol: UpstreamProtocol,
    /// TLS origination, when set.
    pub tls: Option<UpstreamTls>,
    /// Per endpoint, in the order of `endpoints`: its locality group and weight.
    pub members: Vec<Member>,
    /// Locality groups (one group of priority 0 for a flat endpoint list).
    pub localities: Vec<LocalityGroup>,
    /// Outlier detection, when set.
    #[serde(rename = "outlierDetection")]
    pub outlier: Option<Outlier>,
    /// Active health checking, when set.
    #[serde(rename = "healthCheck")]
    pub health_check: Option<HealthCheck>,
    /// Circuit-breaker limits and the retry budget.
    #[serde(rename = "connectionPool")]
    pub limits: ConnectionLimits,
    /// Consistent hashing, when set (the cluster then balances with Maglev).
    #[serde(rename = "consistentHash")]
    pub hash: Option<HashPolicy>,
}

/// An endpoint's place in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Index into [`Cluster::localities`].
    pub group: usize,
    /// Load-balancing weight within its group.
    pub weight: u32,
}

/// Endpoints of one locality at one priority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalityGroup {
    /// `region/zone/subzone` (empty parts unknown), for stats and logs.
    pub locality: String,
    /// 0 is used first.
    pub priority: u32,
    /// Locality weight (Istio `distribute`); when any group has one, locality-weighted
    /// balancing is on for its priority.
    pub weight: Option<u32>,
}

/// Outlier detection (passive health checking) of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outlier {
    /// Consecutive 5xx (and local failures) that eject; 0 = off.
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 (and local failures) that eject; 0 = off.
    #[serde(rename = "consecutiveGatewayErrors")]
    pub consecutive_gateway: u32,
    /// How often ejected hosts are considered for return.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Ejection time, multiplied by the host's ejection count.
    #[serde(rename = "baseEjectionTime", with = "duration")]
    pub base_ejection_time: Duration,
    /// Most hosts ejected at once, in percent (one host may always be ejected).
    #[serde(rename = "maxEjectionPercent")]
    pub max_ejection_percent: u32,
}

/// Active health checking of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// HTTP path checked; `None` = a TCP connect check.
    pub path: Option<String>,
    /// Statuses that pass an HTTP check.
    #[serde(rename = "expectedStatuses")]
    pub expected_statuses: Vec<u16>,
    /// Time between checks of a host.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Deadline of one check.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Passes that make an unhealthy host healthy.
    #[serde(rename = "healthyThreshold")]
    pub healthy_threshold: u32,
    /// Failures that make a healthy host unhealthy (a 503 does at once).
    #[serde(rename = "unhealthyThreshold")]
    pub unhealthy_threshold: u32,
}

/// Circuit-breaker limits; `u32::MAX` = no limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectionLimits {
    /// Upstream connections (HTTP1: requests in flight).
    #[serde(rename = "maxConnections")]
    pub max_connections: u32,
    /// HTTP1: requests waiting for a connection.
    #[serde(rename = "http1MaxPendingRequests")]
    pub max_pending: u32,
    /// HTTP2: requests in flight.
    #[serde(rename = "http2MaxRequests")]
    pub max_requests: u32,
    /// Requests per connection; 0 = unlimited, 1 = no keep-alive.
    #[serde(rename = "maxRequestsPerConnection")]
    pub max_requests_per_connection: u32,
    /// Retries in flight.
    #[serde(rename = "maxRetries")]
    pub max_retries: u32,
    /// Retry budget: percent of requests in flight.
    #[serde(rename = "retryBudgetPercent")]
    pub retry_budget_percent: f64,
    /// Retry budget: retries always allowed in flight.
    #[serde(rename = "minRetryConcurrency")]
    pub min_retry_concurrency: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: u32::MAX,
            max_pending: u32::MAX,
            max_requests: u32::MAX,
            max_requests_per_connection: 0,
            max_retries: u32::MAX,
            retry_budget_percent: 20.0,
            min_retry_concurrency: 3,
        }
    }
}

impl ConnectionLimits {
    /// Whether any request limit is set (the data path skips the accounting otherwise).
    pub fn limits_requests(&self) -> bool {
        self.max_connections != u32::MAX || self.max_requests != u32::MAX
    }
}

/// What consistent hashing hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HashPolicy {
    /// A request header (lower case).
    Header(String),
    /// A cookie, issued when absent.
    Cookie {
        /// Cookie name.
        name: String,
        /// `Max-Age` of an issued cookie.
        #[serde(with = "duration")]
        ttl: Duration,
        /// `Path` of an issued cookie.
        path: String,
    },
    /// The client's IP address.
    SourceIp,
}

/// A cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Endpoint {
    /// An IP address.
    Static(SocketAddr),
    /// A DNS name resolved when connecting.
    Dns {
        /// Host name.
        host: String,
        /// Port.
        port: u16,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Static(a) => write!(f, "{a}"),
            Endpoint::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Load-balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// In turn.
    RoundRobin,
    /// The less busy of two random members.
    LeastRequest,
    /// Uniformly at random.
    Random,
    /// Consistent hashing with a Maglev table (set by `consistentHash`).
    Maglev,
}

/// The HTTP version spoken upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[serde(rename = "HTTP1")]
    Http1,
    /// HTTP/2 (prior knowledge in clear text, ALPN over TLS).
    #[serde(rename = "HTTP2")]
    Http2,
}

/// TLS origination to a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamTls {
    /// SIMPLE or MUTUAL.
    pub mode: TlsMode,
    /// Server name sent and verified; defaults to the endpoint's host name.
    pub sni: Option<String>,
    /// CA bundle the upstream certificate must chain to; the built-in web roots are not used.
    #[serde(rename = "caCertificates")]
    pub ca: Pem,
    /// Client certificate chain (MUTUAL).
    #[serde(rename = "clientCertificate")]
    pub client_cert: Option<Pem>,
    /// Client key (MUTUAL); never serialized.
    #[serde(rename = "clientKey")]
    pub client_key: Option<SecretPem>,
}

/// TLS origination mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TlsMode {
    /// Verify the server.
    #[serde(rename = "SIMPLE")]
    Simple,
    /// Verify the server and present a client certificate.
    #[serde(rename = "MUTUAL")]
    Mutual,
}

mod duration {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::Serializer;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}ms", d.as_millis())),
            None => s.serialize_none(),
        }
    }
}
