//! Prometheus metrics of the gateway, served by the admin server at `/stats/prometheus`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a finished HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// Listener name.
    pub listener: String,
    /// Route name, empty when nothing matched.
    pub route: String,
    /// Upstream cluster, empty for local answers.
    pub cluster: String,
    /// Response status code.
    pub code: u16,
}

/// Labels of per-listener series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: String,
}

/// Labels of per-cluster series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClusterLabels {
    /// Cluster name.
    pub cluster: String,
}

/// Every metric the gateway keeps.
#[derive(Debug)]
pub struct Metrics {
    /// Requests by listener, route, cluster and code.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration (head received → response body sent) by listener.
    pub request_duration: Family<ListenerLabels, Histogram>,
    /// Open downstream connections by listener.
    pub active_connections: Family<ListenerLabels, Gauge>,
    /// Accepted downstream connections by listener.
    pub connections: Family<ListenerLabels, Counter>,
    /// Upstream requests in flight by cluster.
    pub upstream_active: Family<ClusterLabels, Gauge>,
    /// Upstream connect or protocol failures by cluster.
    pub upstream_failures: Family<ClusterLabels, Counter>,
    /// Upstream connections opened, by cluster.
    pub upstream_connections: Family<ClusterLabels, Counter>,
    /// Upstream connections open now (in use or idle in the pool), by cluster.
    pub upstream_connections_active: Family<ClusterLabels, Gauge>,
    /// Outlier ejections, by cluster.
    pub upstream_ejections: Family<ClusterLabels, Counter>,
    /// Hosts ejected now, by cluster.
    pub upstream_hosts_ejected: Family<ClusterLabels, Gauge>,
    /// Hosts taking traffic now (neither ejected nor failing health checks), by cluster.
    pub upstream_hosts_healthy: Family<ClusterLabels, Gauge>,
    /// Failed active health checks, by cluster.
    pub upstream_health_check_failures: Family<ClusterLabels, Counter>,
    /// Retries made, by cluster.
    pub upstream_retries: Family<ClusterLabels, Counter>,
    /// Retries not made because the retry budget or maxRetries was used up, by cluster.
    pub upstream_retries_overflow: Family<ClusterLabels, Counter>,
    /// Requests refused by the circuit breaker (503, flag UO), by cluster.
    pub upstream_overflow: Family<ClusterLabels, Counter>,
    /// Configuration reloads that were applied.
    pub reloads: Counter,
    /// Configuration reloads that were refused.
    pub reload_failures: Counter,
    registry: Registry,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// The connection counters of `cluster`.
    pub fn pool(&self, cluster: &str) -> crate::proxy::upstream::PoolMetrics {
        let labels = ClusterLabels {
            cluster: cluster.to_owned(),
        };
        crate::proxy::upstream::PoolMetrics {
            opened: self.upstream_connections.get_or_create(&labels).clone(),
            open: self
                .upstream_connections_active
                .get_or_create(&labels)
                .clone(),
            in_flight: self.upstream_active.get_or_create(&labels).clone(),
            failures: self.upstream_failures.get_or_create(&labels).clone(),
            ejections: self.upstream_ejections.get_or_create(&labels).clone(),
            ejected: self.upstream_hosts_ejected.get_or_create(&labels).clone(),
            healthy: self.upstream_hosts_healthy.get_or_create(&labels).clone(),
            health_check_failures: self
                .upstream_health_check_failures
                .get_or_create(&labels)
                .clone(),
            retries: self.upstream_retries.get_or_create(&labels).clone(),
            retries_overflow: self
                .upstream_retries_overflow
                .get_or_create(&labels)
                .clone(),
            overflow: self.upstream_overflow.get_or_create(&labels).clone(),
        }
    }

    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<ListenerLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let active_connections = Family::<ListenerLabels, Gauge>::default();
        let connections = Family::<ListenerLabels, Counter>::default();
        let upstream_active = Family::<ClusterLabels, Gauge>::default();
        let upstream_failures = Family::<ClusterLabels, Counter>::default();
        let upstream_connections = Family::<ClusterLabels, Counter>::default();
        let upstream_connections_active = Family::<ClusterLabels, Gauge>::default();
        let upstream_ejections = Family::<ClusterLabels, Counter>::default();
        let upstream_hosts_ejected = Family::<ClusterLabels, Gauge>::default();
        let upstream_hosts_healthy = Family::<ClusterLabels, Gauge>::default();
        let upstream_health_check_failures = Family::<ClusterLabels, Counter>::default();
        let upstream_retries = Family::<ClusterLabels, Counter>::default();
        let upstream_retries_overflow = Family::<ClusterLabels, Counter>::default();
        let upstream_overflow = Family::<ClusterLabels, Counter>::default();
        let reloads = Counter::default();
        let reload_failures = Counter::default();
        let mut registry = Registry::with_prefix("causeway_gateway");
        registry.register(
            "requests",
            "HTTP requests by listener, route, cluster and status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "HTTP request duration from request head to end of response body",
            request_duration.clone(),
        );
        registry.register(
            "active_connections",
            "Open downstream connections",
            active_connections.clone(),
        );
        registry.register(
            "downstream_connections",
            "Accepted downstream connections",
            connections.clone(),
        );
        registry.register(
            "upstream_requests_active",
            "Upstream requests in flight",
            upstream_active.clone(),
        );
        registry.register(
            "upstream_failures",
            "Upstream connect, TLS or protocol failures",
            upstream_failures.clone(),
        );
        registry.register(
            "upstream_connections",
            "Upstream connections opened",
            upstream_connections.clone(),
        );
        registry.register(
            "upstream_connections_active",
            "Upstream connections open (in use or idle in the pool)",
            upstream_connections_active.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Outlier detection ejections",
            upstream_ejections.clone(),
        );
        registry.register(
            "upstream_hosts_ejected",
            "Hosts ejected by outlier detection now",
            upstream_hosts_ejected.clone(),
        );
        registry.register(
            "upstream_hosts_healthy",
            "Hosts taking traffic (not ejected, passing health checks)",
            upstream_hosts_healthy.clone(),
        );
        registry.register(
            "upstream_health_check_failures",
            "Failed active health checks",
            upstream_health_check_failures.clone(),
        );
        registry.register("upstream_retries", "Retries made", upstream_retries.clone());
        registry.register(
            "upstream_retries_overflow",
            "Retries not made: retry budget or maxRetries used up",
            upstream_retries_overflow.clone(),
        );
        registry.register(
            "upstream_overflow",
            "Requests refused by the circuit breaker (503 UO)",
            upstream_overflow.clone(),
        );
        registry.register(
            "config_reloads",
            "Applied configuration reloads",
            reloads.clone(),
        );
        registry.register(
            "config_reload_failures",
            "Refused configuration reloads",
            reload_failures.clone(),
        );
        Metrics {
            requests,
            request_duration,
            active_connections,
            connections,
            upstream_active,
            upstream_failures,
            upstream_connections,
            upstream_connections_active,
            upstream_ejections,
            upstream_hosts_ejected,
            upstream_hosts_healthy,
            upstream_health_check_failures,
            upstream_retries,
            upstream_retries_overflow,
            upstream_overflow,
            reloads,
            reload_failures,
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
