//! Inlining dynamic references, for a static Envoy bootstrap.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::bootstrap::v3::bootstrap::StaticResources;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3 as corev3;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::{EnvoyResources, TranslateError, names, pack};

/// The resources as Envoy's `static_resources`: route configurations inlined into their
/// listeners' connection managers (a scoped listener's routing scopes become an inline
/// `scoped_route_configurations_list`, each with its route configuration inline), load assignments into their clusters (EDS clusters become
/// STATIC), and SDS references turned into references to the static secrets. For
/// `envoy --mode validate` and for running Envoy without a control plane.
pub fn static_resources(res: &EnvoyResources) -> Result<StaticResources, TranslateError> {
    let routes: HashMap<&str, &rds::RouteConfiguration> = res
        .route_configs
        .iter()
        .map(|r| (r.name.as_str(), r))
        .collect();
    let mut out = StaticResources {
        secrets: res.secrets.clone(),
        ..Default::default()
    };
    let tables = Tables {
        routes: &routes,
        scopes: &res.scoped_routes,
    };
    for l in &res.listeners {
        let mut l = l.clone();
        let name = l.name.clone();
        for chain in l
            .filter_chains
            .iter_mut()
            .chain(l.default_filter_chain.as_mut())
        {
            inline_chain(&name, chain, &tables)?;
        }
        out.listeners.push(l);
    }
    for c in &res.clusters {
        let mut c = c.clone();
        if c.cluster_discovery_type == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)) {
            let cla = res
                .load_assignments
                .iter()
                .find(|a| a.cluster_name == c.name)
                .ok_or_else(|| {
                    TranslateError::resource(
                        "Cluster",
                        &c.name,
                        "eds_cluster_config",
                        "no ClusterLoadAssignment of that name to inline",
                    )
                })?;
            c.cluster_discovery_type =
                Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32));
            c.eds_cluster_config = None;
            c.load_assignment = Some(cla.clone());
        }
        if let Some(ts) = &mut c.transport_socket {
            let name = c.name.clone();
            rewrite_socket::<tls::UpstreamTlsContext>(&name, "Cluster", ts, |ctx| {
                if let Some(common) = &mut ctx.common_tls_context {
                    static_sds(common);
                }
            })?;
        }
        out.clusters.push(c);
    }
    Ok(out)
}

struct Tables<'a> {
    routes: &'a HashMap<&'a str, &'a rds::RouteConfiguration>,
    scopes: &'a [rds::ScopedRouteConfiguration],
}

fn missing_route(listener: &str, field: &str, name: &str) -> TranslateError {
    TranslateError::resource(
        "Listener",
        listener,
        field,
        format!("no RouteConfiguration named {name:?} to inline"),
    )
}

/// A scoped connection manager's routing scopes (those keyed by its listener tag), with their
/// route configurations inline.
fn inline_scopes(
    listener: &str,
    s: &mut hcm::ScopedRoutes,
    tables: &Tables<'_>,
) -> Result<(), TranslateError> {
    use rds::scoped_route_configuration::key::fragment::Type;
    let mut list = Vec::new();
    for scope in tables.scopes {
        let tag = scope
            .key
            .as_ref()
            .and_then(|k| k.fragments.first())
            .and_then(|f| f.r#type.as_ref());
        if tag != Some(&Type::StringKey(s.name.clone())) {
            continue;
        }
        let rc = tables
            .routes
            .get(scope.route_configuration_name.as_str())
            .ok_or_else(|| {
                missing_route(listener, "scoped_routes", &scope.route_configuration_name)
            })?;
        list.push(rds::ScopedRouteConfiguration {
            route_configuration_name: String::new(),
            route_configuration: Some((*rc).clone()),
            ..scope.clone()
        });
    }
    s.rds_config_source = None;
    s.config_specifier = Some(
        hcm::scoped_routes::ConfigSpecifier::ScopedRouteConfigurationsList(
            hcm::ScopedRouteConfigurationsList {
                scoped_route_configurations: list,
            },
        ),
    );
    Ok(())
}

fn inline_chain(
    listener: &str,
    chain: &mut lds::FilterChain,
    tables: &Tables<'_>,
) -> Result<(), TranslateError> {
    for f in &mut chain.filters {
        if f.name != names::HTTP_CONNECTION_MANAGER {
            continue;
        }
        let Some(lds::filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
            continue;
        };
        let mut m: hcm::HttpConnectionManager = decode(any, "Listener", listener)?;
        match &mut m.route_specifier {
            Some(hcm::http_connection_manager::RouteSpecifier::Rds(r)) => {
                let rc = tables
                    .routes
                    .get(r.route_config_name.as_str())
                    .ok_or_else(|| {
                        missing_route(listener, "rds.route_config_name", &r.route_config_name)
                    })?;
                m.route_specifier = Some(
                    hcm::http_connection_manager::RouteSpecifier::RouteConfig((*rc).clone()),
                );
            }
            Some(hcm::http_connection_manager::RouteSpecifier::ScopedRoutes(s)) => {
                inline_scopes(listener, s, tables)?;
            }
            _ => {}
        }
        *any = pack(&m);
    }
    if let Some(ts) = &mut chain.transport_socket {
        rewrite_socket::<tls::DownstreamTlsContext>(listener, "Listener", ts, |ctx| {
            if let Some(common) = &mut ctx.common_tls_context {
                static_sds(common);
            }
        })?;
    }
    Ok(())
}

fn decode<T: Message + Name + Default>(
    any: &Any,
    kind: &'static str,
    name: &str,
) -> Result<T, TranslateError> {
    T::decode(any.value.as_slice()).map_err(|e| {
        TranslateError::resource(kind, name, T::full_name(), format!("does not decode: {e}"))
    })
}

fn rewrite_socket<T: Message + Name + Default>(
    name: &str,
    kind: &'static str,
    ts: &mut corev3::TransportSocket,
    f: impl FnOnce(&mut T),
) -> Result<(), TranslateError> {
    if let Some(corev3::transport_socket::ConfigType::TypedConfig(any)) = &mut ts.config_type {
        let mut ctx: T = decode(any, kind, name)?;
        f(&mut ctx);
        *any = pack(&ctx);
    }
    Ok(())
}

/// An SDS reference without a config source names a static secret.
fn static_sds(c: &mut tls::CommonTlsContext) {
    for s in &mut c.tls_certificate_sds_secret_configs {
        s.sds_config = None;
    }
    match &mut c.validation_context_type {
        Some(tls::common_tls_context::ValidationContextType::CombinedValidationContext(v)) => {
            if let Some(s) = &mut v.validation_context_sds_secret_config {
                s.sds_config = None;
            }
        }
        Some(tls::common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
            s,
        )) => s.sds_config = None,
        _ => {}
    }
}
