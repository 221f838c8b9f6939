//! Document → Envoy resources.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use causeway_crds::duration::parse_duration;
use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::common::mutation_rules::v3 as mutation_rules;
use envoy_types::pb::envoy::config::core::v3 as corev3;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::router::v3 as router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3 as tls_inspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3 as early_mutation;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3 as typev3;
use envoy_types::pb::google::protobuf as pb;

use super::{
    EnvoyOptions, EnvoyResources, TranslateError, ads, defaults, names, pack, pb_duration,
    u32_value, vhost_route_name,
};
use crate::{
    Cluster, Endpoint, HeaderEdits, HeaderMatch, LbPolicy, Listener, Protocol, ProxyConfig, Route,
    RouteAction, Secret, ServerCertificate, TlsMode, UpstreamProtocol, UpstreamTls, VirtualHost,
};

pub(super) fn to_envoy(
    doc: &ProxyConfig,
    opts: &EnvoyOptions,
) -> Result<EnvoyResources, TranslateError> {
    let mut out = EnvoyResources::default();
    // Virtual hosts of scoped listeners: each gets one route configuration, however many
    // listeners list it.
    let mut scoped_vhosts = BTreeSet::new();
    for (i, l) in doc.listeners.iter().enumerate() {
        listener(
            doc,
            l,
            &format!("listeners[{i}]"),
            opts,
            &mut scoped_vhosts,
            &mut out,
        )?;
    }
    for vi in scoped_vhosts {
        let v = &doc.virtual_hosts[vi];
        out.route_configs.push(rds::RouteConfiguration {
            name: vhost_route_name(&v.name),
            virtual_hosts: vec![virtual_host(v, &format!("virtualHosts[{vi}]"))?],
            // The listener's scope-key header is the proxy's business, not the upstream's.
            request_headers_to_remove: vec![names::LISTENER_HEADER.to_owned()],
            ..Default::default()
        });
    }
    for (i, c) in doc.clusters.iter().enumerate() {
        cluster(c, &format!("clusters[{i}]"), opts, &mut out)?;
    }
    for (i, s) in doc.secrets.iter().enumerate() {
        out.secrets.push(secret(s, &format!("secrets[{i}]"))?);
    }
    Ok(out)
}

fn duration(path: &str, s: &str) -> Result<Duration, TranslateError> {
    parse_duration(s).map_err(|e| TranslateError::document(path, e.to_string()))
}

fn opt_duration(path: &str, s: &Option<String>) -> Result<Option<pb::Duration>, TranslateError> {
    s.as_deref()
        .map(|s| duration(path, s).map(pb_duration))
        .transpose()
}

pub(super) fn socket_address(host: &str, port: u16) -> corev3::Address {
    corev3::Address {
        address: Some(corev3::address::Address::SocketAddress(
            corev3::SocketAddress {
                address: host.to_owned(),
                port_specifier: Some(corev3::socket_address::PortSpecifier::PortValue(u32::from(
                    port,
                ))),
                ..Default::default()
            },
        )),
    }
}

/// `IP:port` or `host:port` → (host without brackets, port, whether it is a DNS name).
fn split_address(path: &str, a: &str) -> Result<(String, u16, bool), TranslateError> {
    if let Ok(sa) = a.parse::<SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port(), false));
    }
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => match port.parse::<u16>() {
            Ok(p) => Ok((host.to_owned(), p, true)),
            Err(_) => Err(TranslateError::document(
                path,
                format!("{a:?}: the port after ':' is not a number up to 65535"),
            )),
        },
        _ => Err(TranslateError::document(
            path,
            format!("{a:?} has no port: write IP:port or hostname:port"),
        )),
    }
}

fn network_filter<T: prost::Message + prost::Name>(name: &str, config: &T) -> lds::Filter {
    lds::Filter {
        name: name.to_owned(),
        config_type: Some(lds::filter::ConfigType::TypedConfig(pack(config))),
    }
}

fn tls_inspector() -> lds::ListenerFilter {
    lds::ListenerFilter {
        name: names::TLS_INSPECTOR.to_owned(),
        config_type: Some(lds::listener_filter::ConfigType::TypedConfig(pack(
            &tls_inspector::TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// The routing scopes of a scoped listener: every domain's key is the listener's name (set in
/// [`names::LISTENER_HEADER`] by [`listener_header_mutation`]) and the host without its port.
pub(super) fn scoped_routes(listener: &str) -> hcm::ScopedRoutes {
    use hcm::scoped_routes::scope_key_builder::{FragmentBuilder, fragment_builder};
    let header = |name: &str, separator: &str| FragmentBuilder {
        r#type: Some(fragment_builder::Type::HeaderValueExtractor(
            fragment_builder::HeaderValueExtractor {
                name: name.to_owned(),
                element_separator: separator.to_owned(),
                extract_type: Some(fragment_builder::header_value_extractor::ExtractType::Index(0)),
            },
        )),
    };
    hcm::ScopedRoutes {
        name: listener.to_owned(),
        scope_key_builder: Some(hcm::scoped_routes::ScopeKeyBuilder {
            fragments: vec![
                header(names::LISTENER_HEADER, ""),
                // `Host: shop.example.com:8080` → `shop.example.com`, as the domains match.
                header(names::AUTHORITY, ":"),
            ],
        }),
        rds_config_source: Some(ads()),
        config_specifier: Some(hcm::scoped_routes::ConfigSpecifier::ScopedRds(
            hcm::ScopedRds {
                scoped_rds_config_source: Some(ads()),
                ..Default::default()
            },
        )),
    }
}

/// Sets [`names::LISTENER_HEADER`] to the listener's name before the scope is chosen,
/// overwriting whatever a client sent.
pub(super) fn listener_header_mutation(listener: &str) -> corev3::TypedExtensionConfig {
    let m = early_mutation::HeaderMutation {
        mutations: vec![mutation_rules::HeaderMutation {
            action: Some(mutation_rules::header_mutation::Action::Append(
                corev3::HeaderValueOption {
                    header: Some(corev3::HeaderValue {
                        key: names::LISTENER_HEADER.to_owned(),
                        value: listener.to_owned(),
                        ..Default::default()
                    }),
                    append_action:
                        corev3::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd
                            as i32,
                    ..Default::default()
                },
            )),
        }],
    };
    corev3::TypedExtensionConfig {
        name: names::EARLY_HEADER_MUTATION.to_owned(),
        typed_config: Some(pack(&m)),
    }
}

fn http_connection_manager(listener: &str, scoped: bool, opts: &EnvoyOptions) -> lds::Filter {
    let (route_specifier, early_header_mutation_extensions) = if scoped {
        (
            hcm::http_connection_manager::RouteSpecifier::ScopedRoutes(scoped_routes(listener)),
            vec![listener_header_mutation(listener)],
        )
    } else {
        (
            hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
                config_source: Some(ads()),
                route_config_name: listener.to_owned(),
            }),
            vec![],
        )
    };
    let m = hcm::HttpConnectionManager {
        stat_prefix: listener.to_owned(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        early_header_mutation_extensions,
        http_filters: vec![hcm::HttpFilter {
            name: names::ROUTER.to_owned(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack(
                &router::Router::default(),
            ))),
            ..Default::default()
        }],
        // The gateway matches domains without the port. An edge proxy appends the client to
        // x-forwarded-for; a sidecar's peer is its own application, so it leaves the header
        // alone (EnvoyOptions::use_remote_address).
        strip_port_mode: Some(hcm::http_connection_manager::StripPortMode::StripAnyHostPort(true)),
        use_remote_address: Some(pb::BoolValue {
            value: opts.use_remote_address,
        }),
        ..Default::default()
    };
    network_filter(names::HTTP_CONNECTION_MANAGER, &m)
}

fn tcp_proxy(stat_prefix: &str, cluster: &str) -> lds::Filter {
    let t = tcp::TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(
            cluster.to_owned(),
        )),
        ..Default::default()
    };
    network_filter(names::TCP_PROXY, &t)
}

fn transport_socket<T: prost::Message + prost::Name>(context: &T) -> corev3::TransportSocket {
    corev3::TransportSocket {
        name: names::TLS_TRANSPORT_SOCKET.to_owned(),
        config_type: Some(corev3::transport_socket::ConfigType::TypedConfig(pack(
            context,
        ))),
    }
}

pub(super) fn sds(name: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: name.to_owned(),
        sds_config: Some(ads()),
    }
}

fn data_source(
    path: &str,
    (file_field, file): (&str, Option<&str>),
    (inline_field, inline): (&str, Option<&str>),
) -> Result<corev3::DataSource, TranslateError> {
    use corev3::data_source::Specifier;
    let specifier = match (file, inline) {
        (Some(f), None) => Specifier::Filename(f.to_owned()),
        (None, Some(p)) => Specifier::InlineString(p.to_owned()),
        _ => {
            return Err(TranslateError::document(
                format!("{path}.{file_field}"),
                format!("set exactly one of {file_field} and {inline_field}"),
            ));
        }
    };
    Ok(corev3::DataSource {
        specifier: Some(specifier),
        ..Default::default()
    })
}

fn listener(
    doc: &ProxyConfig,
    l: &Listener,
    path: &str,
    opts: &EnvoyOptions,
    scoped_vhosts: &mut BTreeSet<usize>,
    out: &mut EnvoyResources,
) -> Result<(), TranslateError> {
    let addr: SocketAddr = l.address.parse().map_err(|_| {
        TranslateError::document(
            format!("{path}.address"),
            format!("{:?} is not an IP:port address", l.address),
        )
    })?;
    let mut listener = lds::Listener {
        name: l.name.clone(),
        address: Some(socket_address(&addr.ip().to_string(), addr.port())),
        ..Default::default()
    };
    match &l.protocol {
        Protocol::Http | Protocol::Https => {
            let listed = listed_vhosts(doc, l, path)?;
            let scoped = !l.https_redirect && scopable(listed.iter().map(|(_, v)| *v));
            if scoped {
                routing_scopes(l, path, &listed, out)?;
                scoped_vhosts.extend(listed.iter().map(|(i, _)| *i));
            } else {
                out.route_configs.push(route_configuration(l, &listed)?);
            }
            if l.protocol == Protocol::Http {
                listener.filter_chains.push(lds::FilterChain {
                    filters: vec![http_connection_manager(&l.name, scoped, opts)],
                    ..Default::default()
                });
            } else {
                https_chains(l, path, scoped, opts, &mut listener)?;
            }
        }
        Protocol::TlsPassthrough => {
            listener.listener_filters.push(tls_inspector());
            let mut seen = BTreeSet::new();
            let last = l.sni_routes.len().saturating_sub(1);
            for (i, r) in l.sni_routes.iter().enumerate() {
                let rp = format!("{path}.sniRoutes[{i}]");
                let any = r.server_names.iter().any(|n| n == "*");
                if any && (r.server_names.len() > 1 || i != last) {
                    return Err(TranslateError::document(
                        format!("{rp}.serverNames"),
                        "\"*\" must be the only name of the last SNI route: Envoy matches the \
                         most specific name, not the first route",
                    ));
                }
                for n in &r.server_names {
                    if n != "*" && !seen.insert(n.clone()) {
                        return Err(TranslateError::document(
                            format!("{rp}.serverNames"),
                            format!("{n:?} is already routed by an earlier SNI route"),
                        ));
                    }
                }
                listener.filter_chains.push(lds::FilterChain {
                    name: format!("sni-route-{i}"),
                    filter_chain_match: (!any).then(|| lds::FilterChainMatch {
                        server_names: r.server_names.clone(),
                        ..Default::default()
                    }),
                    filters: vec![tcp_proxy(&l.name, &r.cluster)],
                    ..Default::default()
                });
            }
        }
        Protocol::Tcp => {
            let cluster = l.cluster.as_deref().ok_or_else(|| {
                TranslateError::document(
                    format!("{path}.cluster"),
                    "a TCP listener needs a cluster",
                )
            })?;
            listener.filter_chains.push(lds::FilterChain {
                filters: vec![tcp_proxy(&l.name, cluster)],
                ..Default::default()
            });
        }
        Protocol::Unknown(p) => {
            return Err(TranslateError::document(
                format!("{path}.protocol"),
                format!("unknown protocol {p:?}: use HTTP, HTTPS, TLS_PASSTHROUGH or TCP"),
            ));
        }
    }
    out.listeners.push(listener);
    Ok(())
}

fn https_chains(
    l: &Listener,
    path: &str,
    scoped: bool,
    opts: &EnvoyOptions,
    listener: &mut lds::Listener,
) -> Result<(), TranslateError> {
    let certs = l
        .tls
        .as_ref()
        .map(|t| t.certificates.as_slice())
        .unwrap_or_default();
    if certs.is_empty() {
        return Err(TranslateError::document(
            format!("{path}.tls.certificates"),
            "an HTTPS listener needs at least one certificate",
        ));
    }
    listener.listener_filters.push(tls_inspector());
    for (i, c) in certs.iter().enumerate() {
        let cp = format!("{path}.tls.certificates[{i}]");
        let chain = lds::FilterChain {
            filter_chain_match: None,
            filters: vec![http_connection_manager(&l.name, scoped, opts)],
            transport_socket: Some(transport_socket(&tls::DownstreamTlsContext {
                common_tls_context: Some(server_certificate(c, &cp)?),
                ..Default::default()
            })),
            ..Default::default()
        };
        if !c.server_names.is_empty() {
            listener.filter_chains.push(lds::FilterChain {
                name: format!("certificate-{i}"),
                filter_chain_match: Some(lds::FilterChainMatch {
                    server_names: c.server_names.clone(),
                    ..Default::default()
                }),
                ..chain.clone()
            });
        }
        if c.default {
            listener.default_filter_chain = Some(lds::FilterChain {
                name: format!("certificate-{i}"),
                ..chain
            });
        }
    }
    Ok(())
}

fn server_certificate(
    c: &ServerCertificate,
    path: &str,
) -> Result<tls::CommonTlsContext, TranslateError> {
    let mut ctx = tls::CommonTlsContext {
        alpn_protocols: vec!["h2".to_owned(), "http/1.1".to_owned()],
        ..Default::default()
    };
    match &c.cert_secret {
        Some(name) => ctx.tls_certificate_sds_secret_configs.push(sds(name)),
        None => ctx.tls_certificates.push(tls::TlsCertificate {
            certificate_chain: Some(data_source(
                path,
                ("certFile", c.cert_file.as_deref()),
                ("certPem", c.cert_pem.as_deref()),
            )?),
            private_key: Some(data_source(
                path,
                ("keyFile", c.key_file.as_deref()),
                ("keyPem", c.key_pem.as_ref().map(|k| k.0.as_str())),
            )?),
            ..Default::default()
        }),
    }
    Ok(ctx)
}

/// The virtual hosts a listener serves (all of the document's when it lists none), with their
/// indexes in the document.
fn listed_vhosts<'a>(
    doc: &'a ProxyConfig,
    l: &Listener,
    path: &str,
) -> Result<Vec<(usize, &'a VirtualHost)>, TranslateError> {
    if l.https_redirect {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = match &l.virtual_hosts {
        Some(n) => n.iter().map(String::as_str).collect(),
        None => doc.virtual_hosts.iter().map(|v| v.name.as_str()).collect(),
    };
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let vi = doc
                .virtual_hosts
                .iter()
                .position(|v| v.name == *n)
                .ok_or_else(|| {
                    TranslateError::document(
                        format!("{path}.virtualHosts[{i}]"),
                        format!("no virtual host named {n:?}"),
                    )
                })?;
            Ok((vi, &doc.virtual_hosts[vi]))
        })
        .collect()
}

/// Whether a listener serving these virtual hosts routes through scoped routes: at least one
/// virtual host, and every domain an exact host name, which is all an SRDS key can match (no
/// `*` wildcard, no fallback scope, no `:port`).
pub(super) fn scopable<'a>(vhosts: impl IntoIterator<Item = &'a VirtualHost>) -> bool {
    let mut any = false;
    for v in vhosts {
        any = true;
        if v.domains.is_empty() || v.domains.iter().any(|d| d.contains(['*', ':'])) {
            return false;
        }
    }
    any
}

/// One routing scope per domain of each virtual host of a scoped listener, keyed by the
/// listener and the domain (lower case: Envoy compares keys exactly, and clients send host
/// names in lower case), naming the virtual host's route configuration.
fn routing_scopes(
    l: &Listener,
    path: &str,
    listed: &[(usize, &VirtualHost)],
    out: &mut EnvoyResources,
) -> Result<(), TranslateError> {
    use rds::scoped_route_configuration::{Key, key::Fragment, key::fragment::Type};
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (vi, v) in listed {
        for (di, d) in v.domains.iter().enumerate() {
            let host = d.to_ascii_lowercase();
            match seen.insert(host.clone(), &v.name) {
                // Listed twice: one scope is enough.
                Some(other) if other == v.name => continue,
                Some(other) => {
                    return Err(TranslateError::document(
                        format!("virtualHosts[{vi}].domains[{di}]"),
                        format!(
                            "{d:?} is also a domain of virtual host {other:?} on listener {:?} \
                             ({path}): a host must name one virtual host",
                            l.name
                        ),
                    ));
                }
                None => {}
            }
            out.scoped_routes.push(rds::ScopedRouteConfiguration {
                name: format!("{}/{host}", l.name),
                route_configuration_name: vhost_route_name(&v.name),
                key: Some(Key {
                    fragments: [l.name.clone(), host]
                        .into_iter()
                        .map(|k| Fragment {
                            r#type: Some(Type::StringKey(k)),
                        })
                        .collect(),
                }),
                ..Default::default()
            });
        }
    }
    Ok(())
}

/// The one route configuration of a listener that is not scoped, named after it.
fn route_configuration(
    l: &Listener,
    listed: &[(usize, &VirtualHost)],
) -> Result<rds::RouteConfiguration, TranslateError> {
    let mut rc = rds::RouteConfiguration {
        name: l.name.clone(),
        ..Default::default()
    };
    if l.https_redirect {
        rc.virtual_hosts.push(rds::VirtualHost {
            name: names::HTTPS_REDIRECT_VHOST.to_owned(),
            domains: vec!["*".to_owned()],
            require_tls: rds::virtual_host::TlsRequirementType::All as i32,
            ..Default::default()
        });
        return Ok(rc);
    }
    for (vi, v) in listed {
        rc.virtual_hosts
            .push(virtual_host(v, &format!("virtualHosts[{vi}]"))?);
    }
    Ok(rc)
}

fn virtual_host(v: &VirtualHost, path: &str) -> Result<rds::VirtualHost, TranslateError> {
    let routes = v
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| route(r, &format!("{path}.routes[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok(rds::VirtualHost {
        name: v.name.clone(),
        domains: v.domains.clone(),
        routes,
        ..Default::default()
    })
}

fn string_matcher(
    path: &str,
    exact: &Option<String>,
    prefix: &Option<String>,
    regex: &Option<String>,
) -> Result<Option<matcher::StringMatcher>, TranslateError> {
    use matcher::string_matcher::MatchPattern;
    let pattern = match (exact, prefix, regex) {
        (Some(e), None, None) => MatchPattern::Exact(e.clone()),
        (None, Some(p), None) => MatchPattern::Prefix(p.clone()),
        (None, None, Some(r)) => MatchPattern::SafeRegex(regex_matcher(r)),
        (None, None, None) => return Ok(None),
        _ => {
            return Err(TranslateError::document(
                path,
                "set exactly one of exact, prefix or regex",
            ));
        }
    };
    Ok(Some(matcher::StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    }))
}

fn regex_matcher(r: &str) -> matcher::RegexMatcher {
    // No engine: Envoy's default, Google RE2 — the syntax the gateway checks for.
    matcher::RegexMatcher {
        regex: r.to_owned(),
        ..Default::default()
    }
}

fn header_matcher(h: &HeaderMatch, path: &str) -> Result<rds::HeaderMatcher, TranslateError> {
    use rds::header_matcher::HeaderMatchSpecifier;
    let spec = match (
        string_matcher(path, &h.exact, &h.prefix, &h.regex)?,
        h.present,
    ) {
        (Some(m), None) => HeaderMatchSpecifier::StringMatch(m),
        (None, Some(true)) => HeaderMatchSpecifier::PresentMatch(true),
        _ => {
            return Err(TranslateError::document(
                path,
                "set exactly one of exact, prefix, regex or present: true",
            ));
        }
    };
    Ok(rds::HeaderMatcher {
        name: h.name.clone(),
        header_match_specifier: Some(spec),
        invert_match: h.invert,
        ..Default::default()
    })
}

fn route(r: &Route, path: &str) -> Result<rds::Route, TranslateError> {
    use rds::route_match::PathSpecifier;
    let m = r.matcher.clone().unwrap_or_default();
    let mp = format!("{path}.match");
    let path_specifier = match &m.path {
        None => PathSpecifier::Prefix("/".to_owned()),
        Some(p) => match (&p.exact, &p.prefix, &p.regex) {
            (Some(e), None, None) => PathSpecifier::Path(e.clone()),
            (None, Some(pr), None) => PathSpecifier::Prefix(pr.clone()),
            (None, None, Some(re)) => PathSpecifier::SafeRegex(regex_matcher(re)),
            _ => {
                return Err(TranslateError::document(
                    format!("{mp}.path"),
                    "set exactly one of exact, prefix or regex",
                ));
            }
        },
    };
    let mut headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| header_matcher(h, &format!("{mp}.headers[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(method) = &m.method {
        headers.push(rds::HeaderMatcher {
            name: ":method".to_owned(),
            header_match_specifier: Some(rds::header_matcher::HeaderMatchSpecifier::StringMatch(
                matcher::StringMatcher {
                    match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(
                        method.clone(),
                    )),
                    ignore_case: false,
                },
            )),
            ..Default::default()
        });
    }
    let mut query_parameters = Vec::new();
    for (i, q) in m.query.iter().enumerate() {
        use rds::query_parameter_matcher::QueryParameterMatchSpecifier;
        let qp = format!("{mp}.query[{i}]");
        if q.invert {
            return Err(TranslateError::document(
                format!("{qp}.invert"),
                "invert applies to headers only",
            ));
        }
        let spec = match (
            string_matcher(&qp, &q.exact, &q.prefix, &q.regex)?,
            q.present,
        ) {
            (Some(s), None) => QueryParameterMatchSpecifier::StringMatch(s),
            (None, Some(true)) => QueryParameterMatchSpecifier::PresentMatch(true),
            _ => {
                return Err(TranslateError::document(
                    qp,
                    "set exactly one of exact, prefix, regex or present: true",
                ));
            }
        };
        query_parameters.push(rds::QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(spec),
        });
    }
    let action = match (&r.route, &r.redirect, &r.direct_response) {
        (Some(a), None, None) => {
            rds::route::Action::Route(route_action(a, &format!("{path}.route"))?)
        }
        (None, Some(rd), None) => {
            use rds::redirect_action::{
                PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier,
            };
            let code = match rd.response_code {
                None | Some(301) => Code::MovedPermanently,
                Some(302) => Code::Found,
                Some(303) => Code::SeeOther,
                Some(307) => Code::TemporaryRedirect,
                Some(308) => Code::PermanentRedirect,
                Some(other) => {
                    return Err(TranslateError::document(
                        format!("{path}.redirect.responseCode"),
                        format!("{other} is not a redirect: use 301, 302, 303, 307 or 308"),
                    ));
                }
            };
            rds::route::Action::Redirect(rds::RedirectAction {
                scheme_rewrite_specifier: rd
                    .scheme
                    .clone()
                    .map(SchemeRewriteSpecifier::SchemeRedirect),
                host_redirect: rd.host.clone().unwrap_or_default(),
                port_redirect: rd.port.unwrap_or(0),
                path_rewrite_specifier: rd.path.clone().map(PathRewriteSpecifier::PathRedirect),
                response_code: code as i32,
                strip_query: false,
            })
        }
        (None, None, Some(d)) => rds::route::Action::DirectResponse(rds::DirectResponseAction {
            status: u32::from(d.status),
            body: (!d.body.is_empty()).then(|| corev3::DataSource {
                specifier: Some(corev3::data_source::Specifier::InlineString(d.body.clone())),
                ..Default::default()
            }),
            ..Default::default()
        }),
        _ => {
            return Err(TranslateError::document(
                path,
                "a route needs exactly one of route, redirect or directResponse",
            ));
        }
    };
    let (request_headers_to_add, request_headers_to_remove) =
        header_edits(r.request_headers.as_ref());
    let (response_headers_to_add, response_headers_to_remove) =
        header_edits(r.response_headers.as_ref());
    Ok(rds::Route {
        name: r.name.clone().unwrap_or_default(),
        r#match: Some(rds::RouteMatch {
            path_specifier: Some(path_specifier),
            headers,
            query_parameters,
            ..Default::default()
        }),
        action: Some(action),
        request_headers_to_add,
        request_headers_to_remove,
        response_headers_to_add,
        response_headers_to_remove,
        ..Default::default()
    })
}

fn header_edits(e: Option<&HeaderEdits>) -> (Vec<corev3::HeaderValueOption>, Vec<String>) {
    use corev3::header_value_option::HeaderAppendAction;
    let Some(e) = e else {
        return (Vec::new(), Vec::new());
    };
    let option =
        |(k, v): (&String, &String), action: HeaderAppendAction| corev3::HeaderValueOption {
            header: Some(corev3::HeaderValue {
                key: k.clone(),
                value: v.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        };
    let add = e
        .set
        .iter()
        .map(|kv| option(kv, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(
            e.add
                .iter()
                .map(|kv| option(kv, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect();
    (add, e.remove.clone())
}

fn route_action(a: &RouteAction, path: &str) -> Result<rds::RouteAction, TranslateError> {
    use rds::route_action::{ClusterSpecifier, HostRewriteSpecifier};
    let cluster_specifier = match (&a.cluster, a.clusters.is_empty()) {
        (Some(c), true) => ClusterSpecifier::Cluster(c.clone()),
        (None, false) => ClusterSpecifier::WeightedClusters(rds::WeightedCluster {
            clusters: a
                .clusters
                .iter()
                .map(|w| rds::weighted_cluster::ClusterWeight {
                    name: w.name.clone(),
                    weight: Some(u32_value(w.weight.unwrap_or(1))),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        _ => {
            return Err(TranslateError::document(
                path,
                "set cluster (one destination) or clusters (weighted), exactly one of them",
            ));
        }
    };
    let retry_policy = match &a.retries {
        None => None,
        Some(r) => Some(rds::RetryPolicy {
            retry_on: r.retry_on.join(","),
            num_retries: r.attempts.map(u32_value),
            per_try_timeout: opt_duration(
                &format!("{path}.retries.perTryTimeout"),
                &r.per_try_timeout,
            )?,
            ..Default::default()
        }),
    };
    Ok(rds::RouteAction {
        cluster_specifier: Some(cluster_specifier),
        prefix_rewrite: a.prefix_rewrite.clone().unwrap_or_default(),
        host_rewrite_specifier: a
            .host_rewrite
            .clone()
            .map(HostRewriteSpecifier::HostRewriteLiteral),
        timeout: opt_duration(&format!("{path}.timeout"), &a.timeout)?,
        retry_policy,
        ..Default::default()
    })
}

/// The one DNS host of a cluster's endpoints, when there is exactly one: the SNI sent (and the
/// name verified) when `tls.sni` is unset, as the gateway does.
pub(super) fn single_dns_host(c: &Cluster) -> Option<String> {
    let hosts: BTreeSet<String> = c
        .all_endpoints()
        .filter(|(_, e)| e.address.parse::<SocketAddr>().is_err())
        .filter_map(|(_, e)| e.address.rsplit_once(':').map(|(h, _)| h.to_owned()))
        .collect();
    if hosts.len() == 1 {
        hosts.into_iter().next()
    } else {
        None
    }
}

fn cluster(
    c: &Cluster,
    path: &str,
    opts: &EnvoyOptions,
    out: &mut EnvoyResources,
) -> Result<(), TranslateError> {
    use cds::cluster::{ClusterDiscoveryType, DiscoveryType, LbPolicy as EnvoyLb};
    let (cla, dns) = load_assignment(c, path, opts)?;
    let lb = match &c.lb {
        None | Some(LbPolicy::RoundRobin) => EnvoyLb::RoundRobin,
        Some(LbPolicy::LeastRequest) => EnvoyLb::LeastRequest,
        Some(LbPolicy::Random) => EnvoyLb::Random,
        Some(LbPolicy::Unknown(other)) => {
            return Err(TranslateError::document(
                format!("{path}.lb"),
                format!("unknown lb {other:?}: use round_robin, least_request or random"),
            ));
        }
    };
    let h2 = match &c.protocol {
        None | Some(UpstreamProtocol::Http1) => false,
        Some(UpstreamProtocol::Http2) => true,
        Some(UpstreamProtocol::Unknown(other)) => {
            return Err(TranslateError::document(
                format!("{path}.protocol"),
                format!("unknown protocol {other:?}: use HTTP1 or HTTP2"),
            ));
        }
    };
    let mut cluster = cds::Cluster {
        name: c.name.clone(),
        connect_timeout: opt_duration(&format!("{path}.connectTimeout"), &c.connect_timeout)?,
        lb_policy: lb as i32,
        ..Default::default()
    };
    if dns {
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32));
        cluster.load_assignment = Some(cla);
    } else {
        cluster.cluster_discovery_type =
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
        cluster.eds_cluster_config = Some(cds::cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        });
        out.load_assignments.push(cla);
    }
    if c.locality_endpoints.iter().any(|g| g.weight.is_some()) {
        cluster.common_lb_config = Some(cds::cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cds::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    cds::cluster::common_lb_config::LocalityWeightedLbConfig {},
                ),
            ),
            ..Default::default()
        });
    }
    if h2 {
        let options = upstream_http::HttpProtocolOptions {
            upstream_protocol_options: Some(
                upstream_http::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                    upstream_http::http_protocol_options::ExplicitHttpConfig {
                        protocol_config: Some(
                            upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                                corev3::Http2ProtocolOptions::default(),
                            ),
                        ),
                    },
                ),
            ),
            ..Default::default()
        };
        cluster.typed_extension_protocol_options =
            HashMap::from([(names::HTTP_PROTOCOL_OPTIONS.to_owned(), pack(&options))]);
    }
    if let Some(t) = &c.tls {
        let sni = t.sni.clone().or_else(|| single_dns_host(c));
        cluster.transport_socket = Some(transport_socket(&upstream_tls(
            t,
            sni,
            h2,
            &format!("{path}.tls"),
        )?));
    }
    if let Some(o) = &c.outlier_detection {
        let op = format!("{path}.outlierDetection");
        // Enforcement follows the count: 0 switches a check off, as in Istio. Success-rate
        // ejection (on by default in Envoy) has no document field, so it stays off.
        let enforce = |n: Option<u32>| n.map(|n| u32_value(if n == 0 { 0 } else { 100 }));
        cluster.outlier_detection = Some(cds::OutlierDetection {
            consecutive_5xx: o.consecutive_5xx_errors.map(u32_value),
            enforcing_consecutive_5xx: enforce(o.consecutive_5xx_errors),
            consecutive_gateway_failure: o.consecutive_gateway_errors.map(u32_value),
            enforcing_consecutive_gateway_failure: enforce(o.consecutive_gateway_errors),
            interval: opt_duration(&format!("{op}.interval"), &o.interval)?,
            base_ejection_time: opt_duration(
                &format!("{op}.baseEjectionTime"),
                &o.base_ejection_time,
            )?,
            max_ejection_percent: o.max_ejection_percent.map(u32_value),
            enforcing_success_rate: Some(u32_value(0)),
            ..Default::default()
        });
    }
    if let Some(h) = &c.health_check {
        let hp = format!("{path}.healthCheck");
        let checker = match &h.path {
            Some(p) => corev3::health_check::HealthChecker::HttpHealthCheck(
                corev3::health_check::HttpHealthCheck {
                    path: p.clone(),
                    expected_statuses: h
                        .expected_statuses
                        .iter()
                        .map(|s| typev3::Int64Range {
                            start: i64::from(*s),
                            end: i64::from(*s) + 1,
                        })
                        .collect(),
                    ..Default::default()
                },
            ),
            None => corev3::health_check::HealthChecker::TcpHealthCheck(
                corev3::health_check::TcpHealthCheck::default(),
            ),
        };
        cluster.health_checks.push(corev3::HealthCheck {
            timeout: Some(
                opt_duration(&format!("{hp}.timeout"), &h.timeout)?
                    .unwrap_or(pb_duration(defaults::HEALTH_CHECK_TIMEOUT)),
            ),
            interval: Some(
                opt_duration(&format!("{hp}.interval"), &h.interval)?
                    .unwrap_or(pb_duration(defaults::HEALTH_CHECK_INTERVAL)),
            ),
            healthy_threshold: Some(u32_value(
                h.healthy_threshold.unwrap_or(defaults::HEALTHY_THRESHOLD),
            )),
            unhealthy_threshold: Some(u32_value(
                h.unhealthy_threshold
                    .unwrap_or(defaults::UNHEALTHY_THRESHOLD),
            )),
            health_checker: Some(checker),
            ..Default::default()
        });
    }
    out.clusters.push(cluster);
    Ok(())
}

/// The cluster's members as a ClusterLoadAssignment, and whether any is a DNS name (then the
/// cluster is STRICT_DNS with the assignment inline: EDS carries addresses only).
fn load_assignment(
    c: &Cluster,
    path: &str,
    opts: &EnvoyOptions,
) -> Result<(eds::ClusterLoadAssignment, bool), TranslateError> {
    let mut dns = false;
    let mut lb_endpoints =
        |eps: &[Endpoint], p: &str| -> Result<Vec<eds::LbEndpoint>, TranslateError> {
            eps.iter()
                .enumerate()
                .map(|(i, e)| {
                    let ep = format!("{p}[{i}]");
                    let (host, port, is_dns) = split_address(&ep, &e.address)?;
                    dns |= is_dns;
                    if e.weight == Some(0) {
                        return Err(TranslateError::document(
                            ep,
                            "an endpoint weight must be at least 1",
                        ));
                    }
                    Ok(eds::LbEndpoint {
                        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(
                            eds::Endpoint {
                                address: Some(socket_address(&host, port)),
                                ..Default::default()
                            },
                        )),
                        load_balancing_weight: e.weight.map(u32_value),
                        metadata: labels_metadata(&e.labels),
                        ..Default::default()
                    })
                })
                .collect()
        };
    let mut groups = Vec::new();
    if !c.endpoints.is_empty() {
        if !c.locality_endpoints.is_empty() {
            return Err(TranslateError::document(
                format!("{path}.localityEndpoints"),
                "set endpoints or localityEndpoints, not both",
            ));
        }
        groups.push(eds::LocalityLbEndpoints {
            lb_endpoints: lb_endpoints(&c.endpoints, &format!("{path}.endpoints"))?,
            ..Default::default()
        });
    }
    let weighted = c
        .locality_endpoints
        .iter()
        .filter(|g| g.weight.is_some())
        .count();
    for (i, g) in c.locality_endpoints.iter().enumerate() {
        let gp = format!("{path}.localityEndpoints[{i}]");
        if weighted > 0 && g.weight.is_none() {
            return Err(TranslateError::document(
                format!("{gp}.weight"),
                "give every locality group a weight or none: with locality weights, Envoy sends \
                 a group without one no traffic",
            ));
        }
        if g.weight == Some(0) {
            return Err(TranslateError::document(
                format!("{gp}.weight"),
                "a locality weight must be at least 1",
            ));
        }
        let l = &g.locality;
        groups.push(eds::LocalityLbEndpoints {
            locality: (!l.region.is_empty() || !l.zone.is_empty() || !l.subzone.is_empty()).then(
                || corev3::Locality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    sub_zone: l.subzone.clone(),
                },
            ),
            lb_endpoints: lb_endpoints(&g.endpoints, &format!("{gp}.endpoints"))?,
            load_balancing_weight: g.weight.map(u32_value),
            priority: g.priority,
            ..Default::default()
        });
    }
    // Envoy refuses priorities with gaps: 0, 1, 2, … must all be present.
    let priorities: BTreeSet<u32> = groups.iter().map(|g| g.priority).collect();
    if let Some(max) = priorities.last()
        && usize::try_from(*max).map_or(true, |m| m + 1 != priorities.len())
    {
        return Err(TranslateError::document(
            format!("{path}.localityEndpoints"),
            format!("priorities {priorities:?} have gaps: number them 0, 1, 2, … without skipping"),
        ));
    }
    let cla = eds::ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints: groups,
        policy: Some(eds::cluster_load_assignment::Policy {
            overprovisioning_factor: Some(u32_value(opts.overprovisioning_factor)),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((cla, dns))
}

fn labels_metadata(
    labels: &std::collections::BTreeMap<String, String>,
) -> Option<corev3::Metadata> {
    if labels.is_empty() {
        return None;
    }
    let fields = labels
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                pb::Value {
                    kind: Some(pb::value::Kind::StringValue(v.clone())),
                },
            )
        })
        .collect();
    Some(corev3::Metadata {
        filter_metadata: HashMap::from([(
            names::LABELS_METADATA.to_owned(),
            pb::Struct { fields },
        )]),
        ..Default::default()
    })
}

fn upstream_tls(
    t: &UpstreamTls,
    sni: Option<String>,
    h2: bool,
    path: &str,
) -> Result<tls::UpstreamTlsContext, TranslateError> {
    use tls::common_tls_context::ValidationContextType;
    let mutual = match &t.mode {
        TlsMode::Simple => false,
        TlsMode::Mutual => true,
        TlsMode::Unknown(other) => {
            return Err(TranslateError::document(
                format!("{path}.mode"),
                format!("unknown TLS mode {other:?}: use SIMPLE or MUTUAL"),
            ));
        }
    };
    // The gateway verifies the upstream's name as well as its chain; Envoy only does when told
    // which SAN to expect.
    let san = sni
        .iter()
        .map(|s| tls::SubjectAltNameMatcher {
            san_type: tls::subject_alt_name_matcher::SanType::Dns as i32,
            matcher: Some(matcher::StringMatcher {
                match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(s.clone())),
                ignore_case: false,
            }),
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let validation = match &t.ca_secret {
        Some(name) => ValidationContextType::CombinedValidationContext(
            tls::common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(tls::CertificateValidationContext {
                    match_typed_subject_alt_names: san,
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(name)),
                ..Default::default()
            },
        ),
        None => ValidationContextType::ValidationContext(tls::CertificateValidationContext {
            trusted_ca: Some(data_source(
                path,
                ("caFile", t.ca_file.as_deref()),
                ("caPem", t.ca_pem.as_deref()),
            )?),
            match_typed_subject_alt_names: san,
            ..Default::default()
        }),
    };
    let mut ctx = tls::CommonTlsContext {
        validation_context_type: Some(validation),
        alpn_protocols: vec![if h2 { "h2" } else { "http/1.1" }.to_owned()],
        ..Default::default()
    };
    if mutual {
        match &t.client_cert_secret {
            Some(name) => ctx.tls_certificate_sds_secret_configs.push(sds(name)),
            None => ctx.tls_certificates.push(tls::TlsCertificate {
                certificate_chain: Some(data_source(
                    path,
                    ("clientCertFile", t.client_cert_file.as_deref()),
                    ("clientCertPem", t.client_cert_pem.as_deref()),
                )?),
                private_key: Some(data_source(
                    path,
                    ("clientKeyFile", t.client_key_file.as_deref()),
                    (
                        "clientKeyPem",
                        t.client_key_pem.as_ref().map(|k| k.0.as_str()),
                    ),
                )?),
                ..Default::default()
            }),
        }
    }
    Ok(tls::UpstreamTlsContext {
        common_tls_context: Some(ctx),
        sni: sni.unwrap_or_default(),
        ..Default::default()
    })
}

fn secret(s: &Secret, path: &str) -> Result<tls::Secret, TranslateError> {
    let pair = s.cert_pem.is_some()
        || s.cert_file.is_some()
        || s.key_pem.is_some()
        || s.key_file.is_some();
    let ca = s.ca_pem.is_some() || s.ca_file.is_some();
    let kind = match (pair, ca) {
        (true, false) => tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: Some(data_source(
                path,
                ("certFile", s.cert_file.as_deref()),
                ("certPem", s.cert_pem.as_deref()),
            )?),
            private_key: Some(data_source(
                path,
                ("keyFile", s.key_file.as_deref()),
                ("keyPem", s.key_pem.as_ref().map(|k| k.0.as_str())),
            )?),
            ..Default::default()
        }),
        (false, true) => tls::secret::Type::ValidationContext(tls::CertificateValidationContext {
            trusted_ca: Some(data_source(
                path,
                ("caFile", s.ca_file.as_deref()),
                ("caPem", s.ca_pem.as_deref()),
            )?),
            ..Default::default()
        }),
        _ => {
            return Err(TranslateError::document(
                path,
                "a secret holds either a certificate and key or a CA bundle",
            ));
        }
    };
    Ok(tls::Secret {
        name: s.name.clone(),
        r#type: Some(kind),
    })
}
