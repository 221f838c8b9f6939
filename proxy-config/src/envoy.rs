//! Translation of a [`ProxyConfig`] to Envoy v3 resources and back.
//!
//! [`to_envoy`] renders what the ADS server pushes to Envoy sidecars and to our gateway;
//! [`from_envoy`] turns what the gateway receives back into the document, which the gateway then
//! validates with the same code as a file. `from_envoy(to_envoy(doc)) == canonical(doc)`:
//! [`canonical`] spells out the few places where two documents mean the same and Envoy keeps
//! only one form (`lb: round_robin` and no `lb`, for example). `docs/proxy-config.md` maps every
//! document field to its Envoy field.
//!
//! Dynamic references (SRDS routing scopes, RDS route names, EDS clusters, SDS secrets) all go
//! through ADS. [`static_resources`] inlines them for a static Envoy bootstrap (validation and
//! tests).
//!
//! Routes are split per virtual host where Envoy can select them by host: a listener whose
//! virtual hosts all have exact domains routes through **scoped routes** (one routing scope per
//! listener and domain, keyed by the listener and the `Host` without its port, naming one
//! `RouteConfiguration` per virtual host), so a change to one virtual host (one AccessPoint)
//! changes one small route configuration instead of the listener's whole route table. A
//! listener with a wildcard domain, an HTTPS redirect or no virtual hosts keeps one
//! `RouteConfiguration` named after it. `docs/proxy-config.md` (Routes) has the rules.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as corev3;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf::{self as pb, Any};
use prost::{Message, Name};

use crate::ProxyConfig;

mod bootstrap;
mod canonical;
mod from;
mod to;

pub use bootstrap::static_resources;
pub use canonical::canonical;

/// Envoy's well-known names of the extensions used (informational in the protos: Envoy picks
/// the extension by the typed config's type URL).
pub mod names {
    /// The HTTP connection manager network filter.
    pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
    /// The TCP proxy network filter.
    pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
    /// The router HTTP filter.
    pub const ROUTER: &str = "envoy.filters.http.router";
    /// The TLS inspector listener filter (reads SNI for filter chain matching).
    pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
    /// The TLS transport socket.
    pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
    /// The key of the upstream HTTP protocol options in a cluster's
    /// `typed_extension_protocol_options`.
    pub const HTTP_PROTOCOL_OPTIONS: &str =
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
    /// The endpoint metadata namespace labels go to: the one Envoy's subset load balancer
    /// reads, so labels can select subsets.
    pub const LABELS_METADATA: &str = "envoy.lb";
    /// The name of the single virtual host of an `httpsRedirect` listener's route
    /// configuration.
    pub const HTTPS_REDIRECT_VHOST: &str = "https-redirect";
    /// The early header mutation extension (runs before the routing scope is chosen).
    pub const EARLY_HEADER_MUTATION: &str = "envoy.http.early_header_mutation.header_mutation";
    /// The request header a scoped listener sets to its own name before choosing a routing
    /// scope (and its route configurations remove before forwarding): every SRDS connection
    /// manager of a proxy shares one table of scopes, so the key must say which listener.
    pub const LISTENER_HEADER: &str = "x-causeway-listener";
    /// The pseudo-header the host part of a scope key is read from (`Host` in HTTP/1).
    pub const AUTHORITY: &str = ":authority";
    /// The prefix of the route configuration of one virtual host (`vhost/NAME`), as a
    /// scoped listener's routing scopes name it.
    pub const VHOST_ROUTE_PREFIX: &str = "vhost/";
}

/// The name of the route configuration that holds virtual host `vhost` alone.
pub fn vhost_route_name(vhost: &str) -> String {
    format!("{}{vhost}", names::VHOST_ROUTE_PREFIX)
}

/// The virtual host a per-virtual-host route configuration holds (the inverse of
/// [`vhost_route_name`]); `None` for a listener's route configuration.
pub fn vhost_of_route_name(route_config: &str) -> Option<&str> {
    route_config.strip_prefix(names::VHOST_ROUTE_PREFIX)
}

/// The type URLs of the resources, as in an ADS `DiscoveryResponse`.
pub mod type_url {
    /// LDS.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RDS.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// SRDS.
    pub const SCOPED_ROUTE: &str =
        "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
    /// CDS.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// EDS.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// SDS.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// Defaults for what Envoy requires and the document leaves optional.
pub mod defaults {
    use std::time::Duration;

    /// Envoy's default overprovisioning factor, in percent: a priority level keeps all its
    /// traffic while at least 1/1.4 ≈ 71% of its endpoints are healthy.
    pub const OVERPROVISIONING_FACTOR: u32 = 140;
    /// Health check interval when `healthCheck.interval` is unset.
    pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
    /// Health check timeout when `healthCheck.timeout` is unset.
    pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
    /// Successes that make a host healthy when `healthCheck.healthyThreshold` is unset.
    pub const HEALTHY_THRESHOLD: u32 = 1;
    /// Failures that make a host unhealthy when `healthCheck.unhealthyThreshold` is unset.
    pub const UNHEALTHY_THRESHOLD: u32 = 2;
}

/// Choices of the translation that are not part of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyOptions {
    /// `ClusterLoadAssignment.policy.overprovisioning_factor`, in percent.
    pub overprovisioning_factor: u32,
    /// `HttpConnectionManager.use_remote_address` on every HTTP listener: `true` for an edge
    /// proxy (a gateway: the peer is the client, appended to `x-forwarded-for`, and
    /// `x-envoy-*` headers of external clients are sanitised), `false` for a sidecar's outbound
    /// listener (the peer is the local application: `x-forwarded-for` passes unchanged and the
    /// gateway at the other end appends the real hop).
    pub use_remote_address: bool,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            overprovisioning_factor: defaults::OVERPROVISIONING_FACTOR,
            use_remote_address: true,
        }
    }
}

impl EnvoyOptions {
    /// The options for a sidecar: as the default, without `use_remote_address`.
    pub fn sidecar() -> Self {
        EnvoyOptions {
            use_remote_address: false,
            ..EnvoyOptions::default()
        }
    }
}

/// The Envoy resources of one document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvoyResources {
    /// LDS resources, one per document listener.
    pub listeners: Vec<lds::Listener>,
    /// SRDS resources: per scoped listener, one routing scope per domain, named
    /// `LISTENER/DOMAIN`.
    pub scoped_routes: Vec<rds::ScopedRouteConfiguration>,
    /// RDS resources: one per virtual host of a scoped listener (`vhost/NAME`, shared by the
    /// listeners that list it), one per other HTTP/HTTPS listener, named after it.
    pub route_configs: Vec<rds::RouteConfiguration>,
    /// CDS resources, one per document cluster.
    pub clusters: Vec<cds::Cluster>,
    /// EDS resources, one per EDS cluster (clusters with DNS names carry theirs inline).
    pub load_assignments: Vec<eds::ClusterLoadAssignment>,
    /// SDS resources, one per document secret.
    pub secrets: Vec<tls::Secret>,
}

impl EnvoyResources {
    /// Every resource packed as an [`Any`], by type URL and then by resource name.
    pub fn to_any(&self) -> BTreeMap<String, BTreeMap<String, Any>> {
        let mut out: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
        let mut put = |name: &str, any: Any| {
            out.entry(any.type_url.clone())
                .or_default()
                .insert(name.to_owned(), any);
        };
        for r in &self.listeners {
            put(&r.name, pack(r));
        }
        for r in &self.scoped_routes {
            put(&r.name, pack(r));
        }
        for r in &self.route_configs {
            put(&r.name, pack(r));
        }
        for r in &self.clusters {
            put(&r.name, pack(r));
        }
        for r in &self.load_assignments {
            put(&r.cluster_name, pack(r));
        }
        for r in &self.secrets {
            put(&r.name, pack(r));
        }
        out
    }

    /// Decodes resources received over xDS; unknown type URLs and undecodable bytes are
    /// errors.
    pub fn from_any<'a>(
        resources: impl IntoIterator<Item = &'a Any>,
    ) -> Result<EnvoyResources, TranslateError> {
        let mut out = EnvoyResources::default();
        for any in resources {
            match any.type_url.as_str() {
                type_url::LISTENER => out.listeners.push(unpack(any, "Listener")?),
                type_url::ROUTE => out.route_configs.push(unpack(any, "RouteConfiguration")?),
                type_url::SCOPED_ROUTE => out
                    .scoped_routes
                    .push(unpack(any, "ScopedRouteConfiguration")?),
                type_url::CLUSTER => out.clusters.push(unpack(any, "Cluster")?),
                type_url::ENDPOINT => out
                    .load_assignments
                    .push(unpack(any, "ClusterLoadAssignment")?),
                type_url::SECRET => out.secrets.push(unpack(any, "Secret")?),
                other => {
                    return Err(TranslateError::resource(
                        "resource",
                        "",
                        "type_url",
                        format!(
                            "{other:?} is not a listener, routing scope, route, cluster, endpoint or secret type"
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// Why a document or a set of Envoy resources could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A document field that Envoy cannot express, or that is invalid.
    #[error("{path}: {reason}")]
    Document {
        /// The field path in the document (`clusters[2].endpoints[0]`).
        path: String,
        /// What is wrong and what to do about it.
        reason: String,
    },
    /// An Envoy resource field the document cannot represent (the gateway NACKs with this).
    #[error("{kind} {name:?}: {field}: {reason}")]
    Resource {
        /// The resource type (`Listener`, `Cluster`, …).
        kind: &'static str,
        /// The resource's name.
        name: String,
        /// The field, as a path inside the resource (`filter_chains[0].filters[0]`).
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl TranslateError {
    pub(crate) fn document(path: impl Into<String>, reason: impl Into<String>) -> Self {
        TranslateError::Document {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn resource(
        kind: &'static str,
        name: &str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        TranslateError::Resource {
            kind,
            name: name.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Renders a document as Envoy resources. The document should have passed the gateway's
/// validation; what Envoy cannot express anyway is an error naming the field.
pub fn to_envoy(doc: &ProxyConfig, opts: &EnvoyOptions) -> Result<EnvoyResources, TranslateError> {
    to::to_envoy(doc, opts)
}

/// Turns Envoy resources (as [`to_envoy`] renders them) back into a document. Whatever the
/// document cannot represent is an error naming the resource and field.
pub fn from_envoy(res: &EnvoyResources) -> Result<ProxyConfig, TranslateError> {
    from::from_envoy(res)
}

/// Packs a message into an [`Any`] with its type URL.
pub fn pack<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

fn unpack<T: Message + Name + Default>(any: &Any, kind: &'static str) -> Result<T, TranslateError> {
    T::decode(any.value.as_slice()).map_err(|e| {
        TranslateError::resource(kind, "", "", format!("does not decode as {kind}: {e}"))
    })
}

/// The ADS config source every dynamic reference uses.
pub(crate) fn ads() -> corev3::ConfigSource {
    corev3::ConfigSource {
        config_source_specifier: Some(corev3::config_source::ConfigSourceSpecifier::Ads(
            corev3::AggregatedConfigSource {},
        )),
        resource_api_version: corev3::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub(crate) fn pb_duration(d: Duration) -> pb::Duration {
    pb::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub(crate) fn std_duration(d: &pb::Duration) -> Option<Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos))
}

/// A duration in the document's canonical Go syntax: `250ms`, `1s`, `1m30s`, `2h`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let nanos = d.subsec_nanos();
    if !nanos.is_multiple_of(1_000_000) {
        return format!("{}ns", d.as_nanos());
    }
    if nanos != 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

pub(crate) fn u32_value(v: u32) -> pb::UInt32Value {
    pb::UInt32Value { value: v }
}
