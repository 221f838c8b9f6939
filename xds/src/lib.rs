//! Envoy v3 xDS (ADS) machinery shared by the controller (server) and the gateway and balancer
//! (clients).
//!
//! The crate is generic over resources: it moves protobuf [`Any`]s keyed by type URL and resource
//! name and never looks inside them except to read a resource's name ([`resource_name`]). The
//! translation from Causeway's model to Envoy resources lives elsewhere and plugs in through
//! [`Snapshot`].
//!
//! - [`SnapshotCache`] holds one [`Snapshot`] per proxy group; [`AdsServer`] serves it over
//!   `StreamAggregatedResources` (state of the world) and `DeltaAggregatedResources` (incremental),
//!   and [`serve`] runs it on a socket.
//! - [`StatusRegistry`] reports, per connected proxy and type, whether it is SYNCED, STALE or
//!   NACKED.
//! - [`AdsClient`] is the client for Causeway's own gateway and L4 balancer.
//! - [`bootstrap()`] renders an Envoy bootstrap that points a sidecar at the controller.
//!
//! `docs/xds.md` describes the protocol contract (node metadata, grouping, ordering, ACK/NACK).

pub mod bootstrap;
pub mod cache;
pub mod client;
pub mod debounce;
pub mod delta;
pub mod metrics;
pub mod server;
pub mod sotw;
pub mod status;

pub use bootstrap::{ApiType, BootstrapOptions, bootstrap};
pub use cache::{GroupKey, NodeInfo, Snapshot, SnapshotCache, SnapshotError, TypeResources};
pub use client::{AdsClient, ClientOptions, ClientStatus, Handler};
pub use debounce::Debouncer;
pub use metrics::XdsMetrics;
pub use server::{
    AdsServer, DEFAULT_ADDR, GroupFn, ServeError, ServerOptions, serve, serve_listener,
};
pub use status::{LastNack, NackEvent, ProxyStatus, StatusRegistry, SyncState, TypeStatus};

/// The Envoy protobuf types this crate speaks, re-exported so callers build resources with the
/// very same `prost` types (a second copy of `envoy-types` would not interoperate).
pub use envoy_types;

/// The node a proxy sends in its first discovery request.
pub use envoy_types::pb::envoy::config::core::v3::Node;
/// A protobuf `Any` as `envoy-types` generates it (not `prost_types::Any`).
pub use envoy_types::pb::google::protobuf::Any;

/// Type URLs of the resource types Causeway serves.
pub mod type_url {
    /// Listeners (LDS). Wildcard type: a state-of-the-world response holds every listener.
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// Route configurations (RDS). Named type: requested by the listeners and routing scopes
    /// that use them.
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// Routing scopes (SRDS): which route configuration serves a request, by a key built from
    /// its headers. Wildcard type: Envoy subscribes to every scope of the stream.
    pub const SCOPED_ROUTE: &str =
        "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
    /// Clusters (CDS). Wildcard type.
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// Endpoints (EDS). Named type: requested by the EDS clusters that use them.
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// TLS secrets (SDS). Named type.
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    /// The order in which a new snapshot's types are pushed on one stream: clusters before their
    /// endpoints, listeners before their routing scopes and scopes before their routes, so that
    /// Envoy can warm a cluster or listener with the dependencies that arrive right behind it
    /// ("make before break"). Types not listed follow in type-URL order.
    pub const PUSH_ORDER: [&str; 6] = [CLUSTER, ENDPOINT, LISTENER, SCOPED_ROUTE, ROUTE, SECRET];

    /// Short name for logs and status (`CDS`, `EDS`, ...); the type URL itself when unknown.
    pub fn short(type_url: &str) -> &str {
        match type_url {
            LISTENER => "LDS",
            SCOPED_ROUTE => "SRDS",
            ROUTE => "RDS",
            CLUSTER => "CDS",
            ENDPOINT => "EDS",
            SECRET => "SDS",
            other => other,
        }
    }

    /// Orders the types to push and applies the warming rule: while clusters or endpoints are
    /// being sent or are unanswered (`busy`), listeners, routing scopes and routes wait. Sending them in one
    /// burst is not enough: Envoy applies a route as soon as it arrives, and a route naming a
    /// cluster that is still warming answers 503 until the cluster's endpoints land (seen here
    /// for a full second with delta xDS). Waiting for the CDS/EDS answers costs one round trip.
    pub(crate) fn order_and_hold(
        mut sends: Vec<String>,
        busy: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        sends.sort_by(|a, b| push_rank(a).cmp(&push_rank(b)).then_with(|| a.cmp(b)));
        let warming =
            sends.iter().any(|t| t == CLUSTER || t == ENDPOINT) || busy(CLUSTER) || busy(ENDPOINT);
        if warming {
            sends.retain(|t| t != LISTENER && t != SCOPED_ROUTE && t != ROUTE);
        }
        sends
    }

    /// Rank of a type in [`PUSH_ORDER`]; unknown types sort after the known ones.
    pub fn push_rank(type_url: &str) -> usize {
        PUSH_ORDER
            .iter()
            .position(|t| *t == type_url)
            .unwrap_or(PUSH_ORDER.len())
    }
}

/// The name of a resource of one of the [`type_url`] types, decoded from the `Any`; `None` for a
/// type this crate does not know or bytes that do not decode.
pub fn resource_name(any: &Any) -> Option<String> {
    use envoy_types::pb::envoy::config::{
        cluster::v3::Cluster,
        endpoint::v3::ClusterLoadAssignment,
        listener::v3::Listener,
        route::v3::{RouteConfiguration, ScopedRouteConfiguration},
    };
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
    use prost::Message;
    let bytes = any.value.as_slice();
    match any.type_url.as_str() {
        type_url::LISTENER => Listener::decode(bytes).ok().map(|r| r.name),
        type_url::ROUTE => RouteConfiguration::decode(bytes).ok().map(|r| r.name),
        type_url::SCOPED_ROUTE => ScopedRouteConfiguration::decode(bytes).ok().map(|r| r.name),
        type_url::CLUSTER => Cluster::decode(bytes).ok().map(|r| r.name),
        type_url::ENDPOINT => ClusterLoadAssignment::decode(bytes)
            .ok()
            .map(|r| r.cluster_name),
        type_url::SECRET => Secret::decode(bytes).ok().map(|r| r.name),
        _ => None,
    }
}

/// Packs a protobuf message into an [`Any`] with its type URL.
pub fn pack<T: prost::Name + prost::Message>(message: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A stable 64-bit FNV-1a hash rendered as 16 hex digits: versions must not change between
/// controller restarts for the same content, or every proxy would be re-sent everything after a
/// failover (std's `DefaultHasher` makes no such promise across Rust releases).
pub(crate) fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        // Length-prefix each part so that ("ab","c") and ("a","bc") differ.
        for b in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}
