//! Prometheus metrics of the ADS server.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::type_url;

/// Labels of the per-type counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// `CDS`, `EDS`, `LDS`, `RDS`, `SDS` or the type URL.
    pub r#type: String,
}

impl TypeLabels {
    fn of(type_url: &str) -> Self {
        TypeLabels {
            r#type: type_url::short(type_url).to_owned(),
        }
    }
}

/// Counters and gauges of the ADS server. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct XdsMetrics {
    /// Responses pushed, by type.
    pub pushes: Family<TypeLabels, Counter>,
    /// NACKs received, by type.
    pub nacks: Family<TypeLabels, Counter>,
    /// Requests that answered a response older than the latest (ignored).
    pub stale_nonces: Counter,
    /// Streams currently open.
    pub connected: Gauge,
}

impl XdsMetrics {
    /// Fresh metrics, not yet registered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the metrics under `xds_*` names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("xds_pushes", "xDS responses pushed", self.pushes.clone());
        registry.register(
            "xds_nacks",
            "xDS responses rejected by proxies",
            self.nacks.clone(),
        );
        registry.register(
            "xds_stale_nonces",
            "xDS requests answering a superseded response (ignored)",
            self.stale_nonces.clone(),
        );
        registry.register(
            "xds_connected_streams",
            "open ADS streams",
            self.connected.clone(),
        );
    }

    pub(crate) fn push(&self, type_url: &str) {
        self.pushes.get_or_create(&TypeLabels::of(type_url)).inc();
    }

    pub(crate) fn nack(&self, type_url: &str) {
        self.nacks.get_or_create(&TypeLabels::of(type_url)).inc();
    }
}
