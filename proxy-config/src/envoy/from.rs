//! Envoy resources → document: the inverse of `to.rs` for everything it renders. Fields the
//! document cannot represent are errors naming the resource and field, never dropped silently:
//! the gateway NACKs with them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as corev3;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf::{self as pb, Any};
use prost::{Message, Name};

use super::{
    EnvoyResources, TranslateError, format_duration, names, std_duration, vhost_of_route_name,
};
use crate::{
    Cluster, DirectResponse, Endpoint, HeaderEdits, HeaderMatch, HealthCheck, LbPolicy, Listener,
    Locality, LocalityEndpoints, OutlierDetection, PathMatch, PrivateKeyPem, Protocol, ProxyConfig,
    Redirect, Retries, Route, RouteAction, RouteMatch, Secret, ServerCertificate, ServerTls,
    SniRoute, TlsMode, UpstreamProtocol, UpstreamTls, VirtualHost, WeightedCluster,
};

/// Where an error is: the resource kind and name, for [`TranslateError::Resource`].
#[derive(Clone, Copy)]
struct At<'a> {
    kind: &'static str,
    name: &'a str,
}

impl At<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> TranslateError {
        TranslateError::resource(self.kind, self.name, field, reason)
    }

    fn decode<T: Message + Name + Default>(
        &self,
        field: &str,
        any: &Any,
    ) -> Result<T, TranslateError> {
        if any.type_url != T::type_url() {
            return Err(self.err(
                field,
                format!("{} where {} was expected", any.type_url, T::full_name()),
            ));
        }
        T::decode(any.value.as_slice())
            .map_err(|e| self.err(field, format!("does not decode: {e}")))
    }
}

pub(super) fn from_envoy(res: &EnvoyResources) -> Result<ProxyConfig, TranslateError> {
    let routes: HashMap<&str, &rds::RouteConfiguration> = res
        .route_configs
        .iter()
        .map(|r| (r.name.as_str(), r))
        .collect();
    let assignments: HashMap<&str, &eds::ClusterLoadAssignment> = res
        .load_assignments
        .iter()
        .map(|c| (c.cluster_name.as_str(), c))
        .collect();
    // Routing scopes by the listener their key names. A scope of no listener (left over while
    // a listener goes away) is not an error: nothing routes through it.
    let mut scopes: HashMap<&str, Vec<&rds::ScopedRouteConfiguration>> = HashMap::new();
    for s in &res.scoped_routes {
        use rds::scoped_route_configuration::key::fragment::Type;
        if let Some(Type::StringKey(tag)) = s
            .key
            .as_ref()
            .and_then(|k| k.fragments.first())
            .and_then(|f| f.r#type.as_ref())
        {
            scopes.entry(tag.as_str()).or_default().push(s);
        }
    }
    let tables = RouteTables {
        routes: &routes,
        scopes: &scopes,
    };
    let mut doc = ProxyConfig::default();
    // xDS does not order resources: the document lists them by name, so the same resources
    // give the same document however they arrived.
    let mut listeners: Vec<&lds::Listener> = res.listeners.iter().collect();
    listeners.sort_by(|a, b| a.name.cmp(&b.name));
    let mut vhosts: Vec<(VirtualHost, String)> = Vec::new();
    for l in listeners {
        doc.listeners.push(listener(l, &tables, &mut vhosts)?);
    }
    doc.virtual_hosts = vhosts.into_iter().map(|(v, _)| v).collect();
    let all: Vec<String> = doc.virtual_hosts.iter().map(|v| v.name.clone()).collect();
    for l in &mut doc.listeners {
        if l.virtual_hosts.as_ref() == Some(&all) {
            l.virtual_hosts = None;
        }
    }
    for c in &res.clusters {
        doc.clusters.push(cluster(c, &assignments)?);
    }
    doc.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    for s in &res.secrets {
        doc.secrets.push(secret(s)?);
    }
    doc.secrets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(doc)
}

fn socket_address(
    at: At<'_>,
    field: &str,
    a: Option<&corev3::Address>,
) -> Result<(String, u16), TranslateError> {
    use corev3::socket_address::PortSpecifier;
    let Some(corev3::Address {
        address: Some(corev3::address::Address::SocketAddress(sa)),
    }) = a
    else {
        return Err(at.err(field, "only socket addresses are supported"));
    };
    let port = match sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => {
            u16::try_from(p).map_err(|_| at.err(field, format!("port {p} is out of range")))?
        }
        _ => return Err(at.err(field, "a numeric port_value is required")),
    };
    Ok((sa.address.clone(), port))
}

fn host_port(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{host}:{port}"),
    }
}

/// What listeners' connection managers route with: route configurations by name, routing
/// scopes by listener.
struct RouteTables<'a> {
    routes: &'a HashMap<&'a str, &'a rds::RouteConfiguration>,
    scopes: &'a HashMap<&'a str, Vec<&'a rds::ScopedRouteConfiguration>>,
}

/// How a connection manager finds its routes.
#[derive(Clone, PartialEq, Eq, Debug)]
enum RouteSource {
    /// One route configuration, by RDS.
    Rds(String),
    /// Routing scopes keyed by this listener tag and the host (SRDS).
    Scoped(String),
}

/// Adds a virtual host read from route configuration `rc` to the document's list (once: a
/// virtual host listed by two listeners must be the same in both).
fn add_vhost(
    vhosts: &mut Vec<(VirtualHost, String)>,
    vh: VirtualHost,
    rc: &str,
    field: &str,
) -> Result<(), TranslateError> {
    match vhosts.iter().find(|(x, _)| x.name == vh.name) {
        Some((x, from)) if *x != vh => Err(TranslateError::resource(
            "RouteConfiguration",
            rc,
            field,
            format!(
                "virtual host {:?} differs from the one of the same name in {from:?}: names must identify one virtual host",
                vh.name
            ),
        )),
        Some(_) => Ok(()),
        None => {
            vhosts.push((vh, rc.to_owned()));
            Ok(())
        }
    }
}

/// The virtual hosts of a scoped listener: one per route configuration its scopes name, each
/// holding exactly that virtual host (whose domains the translator makes the scopes' hosts).
/// Sorted by name (scopes have no order; with exact hosts only, the order does not matter).
fn scoped_vhosts(
    at: At<'_>,
    tag: &str,
    tables: &RouteTables<'_>,
    vhosts: &mut Vec<(VirtualHost, String)>,
) -> Result<Vec<String>, TranslateError> {
    use rds::scoped_route_configuration::key::fragment::Type;
    let scopes = tables
        .scopes
        .get(tag)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if scopes.is_empty() {
        // A scoped listener always has a scope: its routing scopes are still on their way.
        return Err(at.err(
            "filter_chains[0].filters[0].scoped_routes",
            format!("no ScopedRouteConfiguration for listener {tag:?} was received"),
        ));
    }
    let mut route_configs: BTreeSet<&str> = BTreeSet::new();
    for s in scopes {
        let sat = At {
            kind: "ScopedRouteConfiguration",
            name: &s.name,
        };
        if s.on_demand || s.route_configuration.is_some() {
            return Err(sat.err(
                "route_configuration",
                "scopes are loaded eagerly and name their route configuration (RDS)",
            ));
        }
        let keys: Vec<Option<&Type>> = s
            .key
            .iter()
            .flat_map(|k| &k.fragments)
            .map(|f| f.r#type.as_ref())
            .collect();
        let [_, Some(Type::StringKey(_))] = keys.as_slice() else {
            return Err(sat.err(
                "key.fragments",
                "the key is two string fragments: the listener and the host",
            ));
        };
        route_configs.insert(s.route_configuration_name.as_str());
    }
    let mut listed = Vec::new();
    for rc_name in route_configs {
        let rc = tables.routes.get(rc_name).ok_or_else(|| {
            at.err(
                "scoped_routes",
                format!("no RouteConfiguration named {rc_name:?} was received"),
            )
        })?;
        let [v] = rc.virtual_hosts.as_slice() else {
            return Err(TranslateError::resource(
                "RouteConfiguration",
                rc_name,
                "virtual_hosts",
                "the route configuration of a routing scope holds exactly one virtual host",
            ));
        };
        if vhost_of_route_name(rc_name) != Some(v.name.as_str()) {
            return Err(TranslateError::resource(
                "RouteConfiguration",
                rc_name,
                "virtual_hosts[0].name",
                format!(
                    "a routing scope's route configuration is named after its virtual host ({:?})",
                    super::vhost_route_name(&v.name)
                ),
            ));
        }
        // The scopes' hosts and the virtual host's domains are not required to match: they
        // come by two resource types (SRDS, RDS) that a change updates one after the other, so
        // a proxy holds one type's new version with the other's old one for a moment (a new
        // host's scope before its domain, or the reverse). Refusing that pair deadlocks: each
        // NACK keeps the old half the next update is checked against. Envoy accepts it too; a
        // host in the domains but without its scope yet is served here a moment early, one
        // with a scope but not yet among the domains gets a 404 until its domain arrives.
        let vh = virtual_host(v, rc_name, 0)?;
        listed.push(vh.name.clone());
        add_vhost(vhosts, vh, rc_name, "virtual_hosts[0]")?;
    }
    listed.sort();
    Ok(listed)
}

fn listener(
    l: &lds::Listener,
    tables: &RouteTables<'_>,
    vhosts: &mut Vec<(VirtualHost, String)>,
) -> Result<Listener, TranslateError> {
    let at = At {
        kind: "Listener",
        name: &l.name,
    };
    let (host, port) = socket_address(at, "address", l.address.as_ref())?;
    if host.parse::<IpAddr>().is_err() {
        return Err(at.err("address", format!("{host:?} is not an IP address")));
    }
    let mut out = Listener {
        name: l.name.clone(),
        address: host_port(&host, port),
        ..Default::default()
    };
    let mut inspector = false;
    for (i, f) in l.listener_filters.iter().enumerate() {
        if f.name != names::TLS_INSPECTOR {
            return Err(at.err(
                format!("listener_filters[{i}]"),
                format!(
                    "listener filter {:?} is not supported (only {})",
                    f.name,
                    names::TLS_INSPECTOR
                ),
            ));
        }
        inspector = true;
    }
    let chains: Vec<(String, &lds::FilterChain)> = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("filter_chains[{i}]"), c))
        .chain(
            l.default_filter_chain
                .iter()
                .map(|c| ("default_filter_chain".to_owned(), c)),
        )
        .collect();
    let Some((_, first)) = chains.first() else {
        return Err(at.err("filter_chains", "a listener needs a filter chain"));
    };
    let first_filter = first.filters.first().map(|f| f.name.as_str()).unwrap_or("");
    for (field, c) in &chains {
        if c.filters.len() != 1 {
            return Err(at.err(
                format!("{field}.filters"),
                "exactly one network filter (http_connection_manager or tcp_proxy) per chain",
            ));
        }
        let m = c.filter_chain_match.clone().unwrap_or_default();
        if m != (lds::FilterChainMatch {
            server_names: m.server_names.clone(),
            ..Default::default()
        }) {
            return Err(at.err(
                format!("{field}.filter_chain_match"),
                "only server_names can be matched",
            ));
        }
    }
    match first_filter {
        names::HTTP_CONNECTION_MANAGER => {
            let tls = first.transport_socket.is_some();
            let mut route_name = None;
            for (field, c) in &chains {
                let m: hcm::HttpConnectionManager =
                    typed(at, &format!("{field}.filters[0]"), &c.filters[0])?;
                let name = http_connection_manager(at, &format!("{field}.filters[0]"), &m)?;
                if route_name.get_or_insert_with(|| name.clone()) != &name {
                    return Err(at.err(
                        format!("{field}.filters[0]"),
                        "every chain must route with the same route configuration",
                    ));
                }
                if c.transport_socket.is_some() != tls {
                    return Err(at.err(
                        format!("{field}.transport_socket"),
                        "either every filter chain terminates TLS or none does",
                    ));
                }
            }
            let Some(source) = route_name else {
                return Err(at.err("filter_chains", "a listener needs a filter chain"));
            };
            if tls {
                out.protocol = Protocol::Https;
                out.tls = Some(server_tls(at, l)?);
            } else {
                out.protocol = Protocol::Http;
                if chains.len() != 1 || first.filter_chain_match.is_some() {
                    return Err(at.err(
                        "filter_chains",
                        "a plain HTTP listener has one filter chain",
                    ));
                }
            }
            match source {
                RouteSource::Scoped(tag) => {
                    out.virtual_hosts = Some(scoped_vhosts(at, &tag, tables, vhosts)?);
                }
                RouteSource::Rds(route_name) => {
                    let rc = tables.routes.get(route_name.as_str()).ok_or_else(|| {
                        at.err(
                            "filter_chains[0].filters[0].rds.route_config_name",
                            format!("no RouteConfiguration named {route_name:?} was received"),
                        )
                    })?;
                    let redirect = rc.virtual_hosts.len() == 1
                        && rc.virtual_hosts[0].require_tls
                            == rds::virtual_host::TlsRequirementType::All as i32;
                    if redirect && !tls {
                        out.https_redirect = true;
                    } else {
                        let mut listed = Vec::new();
                        for (i, v) in rc.virtual_hosts.iter().enumerate() {
                            let vh = virtual_host(v, &rc.name, i)?;
                            listed.push(vh.name.clone());
                            add_vhost(vhosts, vh, &rc.name, &format!("virtual_hosts[{i}]"))?;
                        }
                        out.virtual_hosts = Some(listed);
                    }
                }
            }
        }
        names::TCP_PROXY => {
            let mut routes_out = Vec::new();
            for (field, c) in &chains {
                if c.transport_socket.is_some() {
                    return Err(at.err(
                        format!("{field}.transport_socket"),
                        "tcp_proxy chains forward TLS untouched: no transport socket",
                    ));
                }
                let t: tcp::TcpProxy = typed(at, &format!("{field}.filters[0]"), &c.filters[0])?;
                let cluster = match t.cluster_specifier {
                    Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(c)) => c,
                    _ => {
                        return Err(at.err(
                            format!("{field}.filters[0].cluster"),
                            "only a single cluster is supported",
                        ));
                    }
                };
                let server_names = c
                    .filter_chain_match
                    .as_ref()
                    .map(|m| m.server_names.clone())
                    .unwrap_or_default();
                routes_out.push((server_names, cluster, *field == "default_filter_chain"));
            }
            if inspector {
                out.protocol = Protocol::TlsPassthrough;
                // Envoy prefers the most specific name; the document's first match is the same
                // as long as the catch-all comes last.
                routes_out.sort_by_key(|(names, _, _)| names.is_empty());
                out.sni_routes = routes_out
                    .into_iter()
                    .map(|(names, cluster, _)| SniRoute {
                        server_names: if names.is_empty() {
                            vec!["*".to_owned()]
                        } else {
                            names
                        },
                        cluster,
                    })
                    .collect();
            } else {
                if routes_out.len() != 1 || !routes_out[0].0.is_empty() {
                    return Err(at.err(
                        "filter_chains",
                        "a TCP listener has one chain without match (SNI routing needs the tls_inspector listener filter)",
                    ));
                }
                out.protocol = Protocol::Tcp;
                out.cluster = routes_out.pop().map(|(_, c, _)| c);
            }
        }
        other => {
            return Err(at.err(
                "filter_chains[0].filters[0]",
                format!("network filter {other:?} is not supported: use http_connection_manager or tcp_proxy"),
            ));
        }
    }
    Ok(out)
}

fn typed<T: Message + Name + Default>(
    at: At<'_>,
    field: &str,
    f: &lds::Filter,
) -> Result<T, TranslateError> {
    match &f.config_type {
        Some(lds::filter::ConfigType::TypedConfig(any)) => at.decode(field, any),
        _ => Err(at.err(field, "the filter needs a typed_config")),
    }
}

/// Checks an HTTP connection manager is what `to_envoy` renders, and returns its RDS name.
fn http_connection_manager(
    at: At<'_>,
    field: &str,
    m: &hcm::HttpConnectionManager,
) -> Result<RouteSource, TranslateError> {
    use hcm::http_connection_manager::RouteSpecifier;
    let source = match &m.route_specifier {
        Some(RouteSpecifier::Rds(r)) => RouteSource::Rds(r.route_config_name.clone()),
        // Scoped routes exactly as `to_envoy` renders them: keyed by the listener header this
        // connection manager sets and the host.
        Some(RouteSpecifier::ScopedRoutes(s)) if *s == super::to::scoped_routes(&s.name) => {
            if m.early_header_mutation_extensions != [super::to::listener_header_mutation(&s.name)]
            {
                return Err(at.err(
                    format!("{field}.early_header_mutation_extensions"),
                    format!(
                        "a scoped connection manager sets {} to {:?} and nothing else",
                        names::LISTENER_HEADER,
                        s.name
                    ),
                ));
            }
            RouteSource::Scoped(s.name.clone())
        }
        _ => {
            return Err(at.err(
                format!("{field}.route_specifier"),
                format!(
                    "routes must come by RDS (rds.route_config_name) or by routing scopes keyed by {} and {}",
                    names::LISTENER_HEADER,
                    names::AUTHORITY
                ),
            ));
        }
    };
    if matches!(source, RouteSource::Rds(_)) && !m.early_header_mutation_extensions.is_empty() {
        return Err(at.err(
            format!("{field}.early_header_mutation_extensions"),
            "early header mutations are not supported",
        ));
    }
    for (i, f) in m.http_filters.iter().enumerate() {
        if f.name != names::ROUTER {
            return Err(at.err(
                format!("{field}.http_filters[{i}]"),
                format!(
                    "HTTP filter {:?} is not supported (only {})",
                    f.name,
                    names::ROUTER
                ),
            ));
        }
    }
    Ok(source)
}

fn data_source(
    at: At<'_>,
    field: &str,
    d: Option<&corev3::DataSource>,
) -> Result<(Option<String>, Option<String>), TranslateError> {
    use corev3::data_source::Specifier;
    match d.and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::Filename(f)) => Ok((Some(f.clone()), None)),
        Some(Specifier::InlineString(s)) => Ok((None, Some(s.clone()))),
        Some(Specifier::InlineBytes(b)) => String::from_utf8(b.clone())
            .map(|s| (None, Some(s)))
            .map_err(|_| at.err(field, "inline_bytes are not UTF-8 PEM")),
        Some(Specifier::EnvironmentVariable(_)) => {
            Err(at.err(field, "environment_variable data sources are not supported"))
        }
        None => Err(at.err(field, "missing data source")),
    }
}

/// The certificate and key of a TLS context: (certFile, certPem, keyFile, keyPem, secret).
type KeyPair = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<PrivateKeyPem>,
    Option<String>,
);

fn key_pair(
    at: At<'_>,
    field: &str,
    c: &tls::CommonTlsContext,
) -> Result<Option<KeyPair>, TranslateError> {
    match (
        c.tls_certificates.as_slice(),
        c.tls_certificate_sds_secret_configs.as_slice(),
    ) {
        ([], []) => Ok(None),
        ([], [s]) => Ok(Some((None, None, None, None, Some(s.name.clone())))),
        ([t], []) => {
            let (cert_file, cert_pem) = data_source(
                at,
                &format!("{field}.tls_certificates[0].certificate_chain"),
                t.certificate_chain.as_ref(),
            )?;
            let (key_file, key_pem) = data_source(
                at,
                &format!("{field}.tls_certificates[0].private_key"),
                t.private_key.as_ref(),
            )?;
            Ok(Some((
                cert_file,
                cert_pem,
                key_file,
                key_pem.map(PrivateKeyPem),
                None,
            )))
        }
        _ => Err(at.err(
            field,
            "exactly one certificate (inline, file or SDS) per TLS context",
        )),
    }
}

fn server_tls(at: At<'_>, l: &lds::Listener) -> Result<ServerTls, TranslateError> {
    let mut certificates = Vec::new();
    let mut named: Vec<String> = Vec::new();
    let chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("filter_chains[{i}]"), c, false))
        .chain(
            l.default_filter_chain
                .iter()
                .map(|c| ("default_filter_chain".to_owned(), c, true)),
        );
    for (field, c, default) in chains {
        let Some(corev3::TransportSocket {
            config_type: Some(corev3::transport_socket::ConfigType::TypedConfig(any)),
            ..
        }) = &c.transport_socket
        else {
            return Err(at.err(format!("{field}.transport_socket"), "needs a typed_config"));
        };
        let ctx: tls::DownstreamTlsContext =
            at.decode(&format!("{field}.transport_socket"), any)?;
        let common = ctx.common_tls_context.unwrap_or_default();
        let pair = key_pair(
            at,
            &format!("{field}.transport_socket.common_tls_context"),
            &common,
        )?
        .ok_or_else(|| {
            at.err(
                format!("{field}.transport_socket"),
                "a terminating chain needs a certificate",
            )
        })?;
        if default
            && let Some(i) = named
                .iter()
                .position(|n| !c.name.is_empty() && *n == c.name)
        {
            // The default chain repeats a named certificate's chain: that certificate is the
            // default one.
            let cert: &mut ServerCertificate = &mut certificates[i];
            cert.default = true;
            continue;
        }
        let (cert_file, cert_pem, key_file, key_pem, cert_secret) = pair;
        certificates.push(ServerCertificate {
            server_names: c
                .filter_chain_match
                .as_ref()
                .map(|m| m.server_names.clone())
                .unwrap_or_default(),
            default,
            cert_file,
            cert_pem,
            key_file,
            key_pem,
            cert_secret,
        });
        named.push(c.name.clone());
    }
    Ok(ServerTls { certificates })
}

fn virtual_host(
    v: &rds::VirtualHost,
    rc: &str,
    index: usize,
) -> Result<VirtualHost, TranslateError> {
    let at = At {
        kind: "RouteConfiguration",
        name: rc,
    };
    let field = format!("virtual_hosts[{index}]");
    if v.require_tls != 0 {
        return Err(at.err(
            format!("{field}.require_tls"),
            "only an https-redirect route configuration (one virtual host) may require TLS",
        ));
    }
    let routes = v
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| route(at, &format!("{field}.routes[{i}]"), r))
        .collect::<Result<_, _>>()?;
    Ok(VirtualHost {
        name: v.name.clone(),
        domains: v.domains.clone(),
        routes,
    })
}

/// (exact, prefix, regex), one of them set.
type StringMatch = (Option<String>, Option<String>, Option<String>);

fn string_match(
    at: At<'_>,
    field: &str,
    m: &matcher::StringMatcher,
) -> Result<StringMatch, TranslateError> {
    use matcher::string_matcher::MatchPattern;
    if m.ignore_case {
        return Err(at.err(
            format!("{field}.ignore_case"),
            "case-insensitive matching is not supported",
        ));
    }
    match &m.match_pattern {
        Some(MatchPattern::Exact(e)) => Ok((Some(e.clone()), None, None)),
        Some(MatchPattern::Prefix(p)) => Ok((None, Some(p.clone()), None)),
        Some(MatchPattern::SafeRegex(r)) => Ok((None, None, Some(r.regex.clone()))),
        _ => Err(at.err(field, "only exact, prefix and safe_regex are supported")),
    }
}

fn route(at: At<'_>, field: &str, r: &rds::Route) -> Result<Route, TranslateError> {
    use rds::route_match::PathSpecifier;
    let m = r.r#match.clone().unwrap_or_default();
    let mf = format!("{field}.match");
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) if p == "/" => None,
        Some(PathSpecifier::Prefix(p)) => Some(PathMatch {
            prefix: Some(p.clone()),
            ..Default::default()
        }),
        Some(PathSpecifier::Path(p)) => Some(PathMatch {
            exact: Some(p.clone()),
            ..Default::default()
        }),
        Some(PathSpecifier::SafeRegex(re)) => Some(PathMatch {
            regex: Some(re.regex.clone()),
            ..Default::default()
        }),
        _ => {
            return Err(at.err(
                format!("{mf}.path_specifier"),
                "only prefix, path and safe_regex are supported",
            ));
        }
    };
    if m.case_sensitive.as_ref().is_some_and(|b| !b.value) {
        return Err(at.err(
            format!("{mf}.case_sensitive"),
            "case-insensitive paths are not supported",
        ));
    }
    let mut method = None;
    let mut headers = Vec::new();
    for (i, h) in m.headers.iter().enumerate() {
        use rds::header_matcher::HeaderMatchSpecifier;
        let hf = format!("{mf}.headers[{i}]");
        let mut out = HeaderMatch {
            name: h.name.clone(),
            invert: h.invert_match,
            ..Default::default()
        };
        match &h.header_match_specifier {
            Some(HeaderMatchSpecifier::StringMatch(s)) => {
                (out.exact, out.prefix, out.regex) = string_match(at, &hf, s)?;
            }
            Some(HeaderMatchSpecifier::PresentMatch(true)) => out.present = Some(true),
            _ => {
                return Err(at.err(
                    &hf,
                    "only string_match and present_match: true are supported",
                ));
            }
        }
        if h.name == ":method" && method.is_none() && !out.invert && out.exact.is_some() {
            method = out.exact;
            continue;
        }
        headers.push(out);
    }
    let mut query = Vec::new();
    for (i, q) in m.query_parameters.iter().enumerate() {
        use rds::query_parameter_matcher::QueryParameterMatchSpecifier;
        let qf = format!("{mf}.query_parameters[{i}]");
        let mut out = HeaderMatch {
            name: q.name.clone(),
            ..Default::default()
        };
        match &q.query_parameter_match_specifier {
            Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
                (out.exact, out.prefix, out.regex) = string_match(at, &qf, s)?;
            }
            Some(QueryParameterMatchSpecifier::PresentMatch(true)) => out.present = Some(true),
            _ => {
                return Err(at.err(
                    &qf,
                    "only string_match and present_match: true are supported",
                ));
            }
        }
        query.push(out);
    }
    let matcher = RouteMatch {
        path,
        headers,
        method,
        query,
    };
    let mut out = Route {
        name: (!r.name.is_empty()).then(|| r.name.clone()),
        matcher: (matcher != RouteMatch::default()).then_some(matcher),
        request_headers: header_edits(
            at,
            &format!("{field}.request_headers_to_add"),
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
        )?,
        response_headers: header_edits(
            at,
            &format!("{field}.response_headers_to_add"),
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        )?,
        ..Default::default()
    };
    match &r.action {
        Some(rds::route::Action::Route(a)) => {
            out.route = Some(route_action(at, &format!("{field}.route"), a)?)
        }
        Some(rds::route::Action::Redirect(rd)) => {
            out.redirect = Some(redirect(at, &format!("{field}.redirect"), rd)?)
        }
        Some(rds::route::Action::DirectResponse(d)) => {
            let status = u16::try_from(d.status).map_err(|_| {
                at.err(
                    format!("{field}.direct_response.status"),
                    "not an HTTP status",
                )
            })?;
            let body = match &d.body {
                None => String::new(),
                Some(b) => data_source(at, &format!("{field}.direct_response.body"), Some(b))?
                    .1
                    .ok_or_else(|| {
                        at.err(
                            format!("{field}.direct_response.body"),
                            "only inline bodies are supported",
                        )
                    })?,
            };
            out.direct_response = Some(DirectResponse { status, body });
        }
        _ => {
            return Err(at.err(
                format!("{field}.action"),
                "only route, redirect and direct_response are supported",
            ));
        }
    }
    Ok(out)
}

fn header_edits(
    at: At<'_>,
    field: &str,
    add: &[corev3::HeaderValueOption],
    remove: &[String],
) -> Result<Option<HeaderEdits>, TranslateError> {
    use corev3::header_value_option::HeaderAppendAction;
    let mut e = HeaderEdits {
        remove: remove.to_vec(),
        ..Default::default()
    };
    for (i, o) in add.iter().enumerate() {
        let h = o.header.clone().unwrap_or_default();
        if !h.raw_value.is_empty() {
            return Err(at.err(format!("{field}[{i}]"), "use value, not raw_value"));
        }
        match HeaderAppendAction::try_from(o.append_action) {
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => e.set.insert(h.key, h.value),
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => e.add.insert(h.key, h.value),
            _ => return Err(at.err(format!("{field}[{i}].append_action"), "only OVERWRITE_IF_EXISTS_OR_ADD (set) and APPEND_IF_EXISTS_OR_ADD (add) are supported")),
        };
    }
    Ok((e != HeaderEdits::default()).then_some(e))
}

fn duration(
    at: At<'_>,
    field: &str,
    d: Option<&pb::Duration>,
) -> Result<Option<String>, TranslateError> {
    d.map(|d| {
        std_duration(d)
            .map(format_duration)
            .ok_or_else(|| at.err(field, "negative duration"))
    })
    .transpose()
}

fn route_action(
    at: At<'_>,
    field: &str,
    a: &rds::RouteAction,
) -> Result<RouteAction, TranslateError> {
    use rds::route_action::{ClusterSpecifier, HostRewriteSpecifier};
    let mut out = RouteAction {
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
        timeout: duration(at, &format!("{field}.timeout"), a.timeout.as_ref())?,
        ..Default::default()
    };
    match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) => out.cluster = Some(c.clone()),
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            out.clusters = w
                .clusters
                .iter()
                .map(|c| WeightedCluster {
                    name: c.name.clone(),
                    weight: c.weight.as_ref().map(|w| w.value),
                })
                .collect();
        }
        _ => {
            return Err(at.err(
                format!("{field}.cluster_specifier"),
                "only cluster and weighted_clusters are supported",
            ));
        }
    }
    match &a.host_rewrite_specifier {
        None => {}
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => out.host_rewrite = Some(h.clone()),
        Some(_) => {
            return Err(at.err(
                format!("{field}.host_rewrite_specifier"),
                "only host_rewrite_literal is supported",
            ));
        }
    }
    if let Some(r) = &a.retry_policy {
        out.retries = Some(Retries {
            attempts: r.num_retries.as_ref().map(|n| n.value),
            per_try_timeout: duration(
                at,
                &format!("{field}.retry_policy.per_try_timeout"),
                r.per_try_timeout.as_ref(),
            )?,
            retry_on: r
                .retry_on
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        });
    }
    Ok(out)
}

fn redirect(at: At<'_>, field: &str, r: &rds::RedirectAction) -> Result<Redirect, TranslateError> {
    use rds::redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier,
    };
    if r.strip_query {
        return Err(at.err(format!("{field}.strip_query"), "the query is always kept"));
    }
    Ok(Redirect {
        scheme: match &r.scheme_rewrite_specifier {
            None => None,
            Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.clone()),
            Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_owned()),
            Some(SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        },
        host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
        port: (r.port_redirect != 0).then_some(r.port_redirect),
        path: match &r.path_rewrite_specifier {
            None => None,
            Some(PathRewriteSpecifier::PathRedirect(p)) => Some(p.clone()),
            Some(_) => {
                return Err(at.err(
                    format!("{field}.path_rewrite_specifier"),
                    "only path_redirect is supported",
                ));
            }
        },
        response_code: match Code::try_from(r.response_code) {
            Ok(Code::MovedPermanently) => None,
            Ok(Code::Found) => Some(302),
            Ok(Code::SeeOther) => Some(303),
            Ok(Code::TemporaryRedirect) => Some(307),
            Ok(Code::PermanentRedirect) => Some(308),
            Err(_) => return Err(at.err(format!("{field}.response_code"), "unknown redirect code")),
        },
    })
}

fn cluster(
    c: &cds::Cluster,
    assignments: &HashMap<&str, &eds::ClusterLoadAssignment>,
) -> Result<Cluster, TranslateError> {
    use cds::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy as EnvoyLb};
    let at = At {
        kind: "Cluster",
        name: &c.name,
    };
    let cla = match &c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) if *t == DiscoveryType::Eds as i32 => {
            let service = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&c.name);
            *assignments.get(service).ok_or_else(|| {
                at.err(
                    "eds_cluster_config",
                    format!("no ClusterLoadAssignment for {service:?} was received"),
                )
            })?
        }
        Some(ClusterDiscoveryType::Type(t))
            if *t == DiscoveryType::StrictDns as i32 || *t == DiscoveryType::Static as i32 =>
        {
            c.load_assignment.as_ref().ok_or_else(|| {
                at.err(
                    "load_assignment",
                    "a STATIC or STRICT_DNS cluster needs its load_assignment",
                )
            })?
        }
        _ => {
            return Err(at.err(
                "type",
                "only EDS, STATIC and STRICT_DNS clusters are supported",
            ));
        }
    };
    let mut out = Cluster {
        name: c.name.clone(),
        connect_timeout: duration(at, "connect_timeout", c.connect_timeout.as_ref())?,
        ..Default::default()
    };
    out.lb = match EnvoyLb::try_from(c.lb_policy) {
        Ok(EnvoyLb::RoundRobin) => None,
        Ok(EnvoyLb::LeastRequest) => Some(LbPolicy::LeastRequest),
        Ok(EnvoyLb::Random) => Some(LbPolicy::Random),
        _ => {
            return Err(at.err(
                "lb_policy",
                "only ROUND_ROBIN, LEAST_REQUEST and RANDOM are supported",
            ));
        }
    };
    load_assignment(cla, &mut out)?;
    for (k, v) in &c.typed_extension_protocol_options {
        if k != names::HTTP_PROTOCOL_OPTIONS {
            return Err(at.err(
                format!("typed_extension_protocol_options[{k}]"),
                "not supported",
            ));
        }
        let o: upstream_http::HttpProtocolOptions =
            at.decode(&format!("typed_extension_protocol_options[{k}]"), v)?;
        use upstream_http::http_protocol_options::{
            UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
        };
        out.protocol = match o.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => Some(UpstreamProtocol::Http2),
                Some(ProtocolConfig::HttpProtocolOptions(_)) => None,
                _ => {
                    return Err(at.err(
                        format!("typed_extension_protocol_options[{k}]"),
                        "explicit HTTP/1 or HTTP/2 only",
                    ));
                }
            },
            _ => {
                return Err(at.err(
                    format!("typed_extension_protocol_options[{k}]"),
                    "explicit_http_config only",
                ));
            }
        };
    }
    if let Some(ts) = &c.transport_socket {
        out.tls = Some(upstream_tls(at, ts)?);
    }
    if let Some(o) = &c.outlier_detection {
        out.outlier_detection = Some(OutlierDetection {
            consecutive_5xx_errors: o.consecutive_5xx.as_ref().map(|v| v.value),
            consecutive_gateway_errors: o.consecutive_gateway_failure.as_ref().map(|v| v.value),
            interval: duration(at, "outlier_detection.interval", o.interval.as_ref())?,
            base_ejection_time: duration(
                at,
                "outlier_detection.base_ejection_time",
                o.base_ejection_time.as_ref(),
            )?,
            max_ejection_percent: o.max_ejection_percent.as_ref().map(|v| v.value),
        });
    }
    match c.health_checks.as_slice() {
        [] => {}
        [h] => out.health_check = Some(health_check(at, h)?),
        _ => return Err(at.err("health_checks", "at most one health check per cluster")),
    }
    Ok(out)
}

fn health_check(at: At<'_>, h: &corev3::HealthCheck) -> Result<HealthCheck, TranslateError> {
    use corev3::health_check::HealthChecker;
    let mut out = HealthCheck {
        interval: duration(at, "health_checks[0].interval", h.interval.as_ref())?,
        timeout: duration(at, "health_checks[0].timeout", h.timeout.as_ref())?,
        healthy_threshold: h.healthy_threshold.as_ref().map(|v| v.value),
        unhealthy_threshold: h.unhealthy_threshold.as_ref().map(|v| v.value),
        ..Default::default()
    };
    match &h.health_checker {
        Some(HealthChecker::HttpHealthCheck(hc)) => {
            out.path = Some(hc.path.clone());
            for (i, r) in hc.expected_statuses.iter().enumerate() {
                if r.end <= r.start || r.start < 100 || r.end > 600 {
                    return Err(at.err(
                        format!("health_checks[0].http_health_check.expected_statuses[{i}]"),
                        "not a range of HTTP statuses",
                    ));
                }
                out.expected_statuses
                    .extend((r.start..r.end).filter_map(|s| u16::try_from(s).ok()));
            }
        }
        Some(HealthChecker::TcpHealthCheck(t)) if t.send.is_none() && t.receive.is_empty() => {}
        _ => {
            return Err(at.err(
                "health_checks[0].health_checker",
                "only HTTP and plain TCP connect checks are supported",
            ));
        }
    }
    Ok(out)
}

fn load_assignment(
    cla: &eds::ClusterLoadAssignment,
    out: &mut Cluster,
) -> Result<(), TranslateError> {
    let at = At {
        kind: "ClusterLoadAssignment",
        name: &cla.cluster_name,
    };
    let mut groups = Vec::new();
    for (gi, g) in cla.endpoints.iter().enumerate() {
        let gf = format!("endpoints[{gi}]");
        let mut endpoints = Vec::new();
        for (i, e) in g.lb_endpoints.iter().enumerate() {
            let ef = format!("{gf}.lb_endpoints[{i}]");
            let Some(eds::lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                return Err(at.err(&ef, "needs an endpoint"));
            };
            let (host, port) =
                socket_address(at, &format!("{ef}.endpoint.address"), ep.address.as_ref())?;
            endpoints.push(Endpoint {
                address: host_port(&host, port),
                weight: e.load_balancing_weight.as_ref().map(|w| w.value),
                labels: labels(at, &format!("{ef}.metadata"), e.metadata.as_ref())?,
            });
        }
        let l = g.locality.clone().unwrap_or_default();
        groups.push(LocalityEndpoints {
            locality: Locality {
                region: l.region,
                zone: l.zone,
                subzone: l.sub_zone,
            },
            priority: g.priority,
            weight: g.load_balancing_weight.as_ref().map(|w| w.value),
            endpoints,
        });
    }
    match groups.as_slice() {
        [g] if g.locality == Locality::default() && g.priority == 0 && g.weight.is_none() => {
            out.endpoints = groups.pop().map(|g| g.endpoints).unwrap_or_default();
        }
        _ => out.locality_endpoints = groups,
    }
    Ok(())
}

fn labels(
    at: At<'_>,
    field: &str,
    m: Option<&corev3::Metadata>,
) -> Result<BTreeMap<String, String>, TranslateError> {
    let mut out = BTreeMap::new();
    let Some(m) = m else { return Ok(out) };
    for (ns, s) in &m.filter_metadata {
        if ns != names::LABELS_METADATA {
            return Err(at.err(
                format!("{field}.filter_metadata[{ns}]"),
                format!("only {} metadata is supported", names::LABELS_METADATA),
            ));
        }
        for (k, v) in &s.fields {
            match &v.kind {
                Some(pb::value::Kind::StringValue(s)) => {
                    out.insert(k.clone(), s.clone());
                }
                _ => {
                    return Err(at.err(
                        format!("{field}.filter_metadata[{ns}][{k}]"),
                        "labels are strings",
                    ));
                }
            }
        }
    }
    Ok(out)
}

fn upstream_tls(at: At<'_>, ts: &corev3::TransportSocket) -> Result<UpstreamTls, TranslateError> {
    use tls::common_tls_context::ValidationContextType;
    let Some(corev3::transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Err(at.err("transport_socket", "needs a typed_config"));
    };
    let ctx: tls::UpstreamTlsContext = at.decode("transport_socket", any)?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let mut out = UpstreamTls {
        sni: (!ctx.sni.is_empty()).then_some(ctx.sni),
        ..Default::default()
    };
    let cf = "transport_socket.common_tls_context";
    match &common.validation_context_type {
        Some(ValidationContextType::ValidationContext(v)) => {
            (out.ca_file, out.ca_pem) = data_source(
                at,
                &format!("{cf}.validation_context.trusted_ca"),
                v.trusted_ca.as_ref(),
            )?;
        }
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            let s = c
                .validation_context_sds_secret_config
                .as_ref()
                .ok_or_else(|| {
                    at.err(
                        format!("{cf}.combined_validation_context"),
                        "needs validation_context_sds_secret_config",
                    )
                })?;
            out.ca_secret = Some(s.name.clone());
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            out.ca_secret = Some(s.name.clone())
        }
        _ => {
            return Err(at.err(
                format!("{cf}.validation_context_type"),
                "a CA to verify the upstream with is required",
            ));
        }
    }
    match key_pair(at, cf, &common)? {
        None => out.mode = TlsMode::Simple,
        Some((cert_file, cert_pem, key_file, key_pem, secret)) => {
            out.mode = TlsMode::Mutual;
            out.client_cert_file = cert_file;
            out.client_cert_pem = cert_pem;
            out.client_key_file = key_file;
            out.client_key_pem = key_pem;
            out.client_cert_secret = secret;
        }
    }
    Ok(out)
}

fn secret(s: &tls::Secret) -> Result<Secret, TranslateError> {
    let at = At {
        kind: "Secret",
        name: &s.name,
    };
    let mut out = Secret {
        name: s.name.clone(),
        ..Default::default()
    };
    match &s.r#type {
        Some(tls::secret::Type::TlsCertificate(t)) => {
            (out.cert_file, out.cert_pem) = data_source(
                at,
                "tls_certificate.certificate_chain",
                t.certificate_chain.as_ref(),
            )?;
            let (key_file, key_pem) =
                data_source(at, "tls_certificate.private_key", t.private_key.as_ref())?;
            out.key_file = key_file;
            out.key_pem = key_pem.map(PrivateKeyPem);
        }
        Some(tls::secret::Type::ValidationContext(v)) => {
            (out.ca_file, out.ca_pem) =
                data_source(at, "validation_context.trusted_ca", v.trusted_ca.as_ref())?;
        }
        _ => {
            return Err(at.err(
                "type",
                "only tls_certificate and validation_context secrets are supported",
            ));
        }
    }
    Ok(out)
}
