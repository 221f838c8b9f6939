//! Envoy bootstrap for a sidecar or gateway that takes all of its config from Causeway's ADS.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};

use crate::server::DEFAULT_ADDR;

/// Which ADS variant the proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ApiType {
    /// `GRPC`: StreamAggregatedResources.
    #[default]
    StateOfTheWorld,
    /// `DELTA_GRPC`: DeltaAggregatedResources.
    Delta,
}

/// What goes into the bootstrap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// `node.id`: unique per proxy.
    pub node_id: String,
    /// The federation cluster the proxy runs in: `node.cluster` and metadata `cluster`.
    pub cluster: String,
    /// Metadata `role`: `gateway`, `sidecar` or `l4lb`.
    pub role: String,
    /// Metadata `namespace` (sidecars: decides which services it sees); may be empty.
    pub namespace: String,
    /// `node.locality` region.
    pub region: String,
    /// `node.locality` zone.
    pub zone: String,
    /// `node.locality` sub_zone.
    pub subzone: String,
    /// More string metadata (for example `listen`, the address the sidecar's outbound listener
    /// should bind); the fields above win on a clash.
    pub extra_metadata: BTreeMap<String, String>,
    /// Envoy's admin listener; port 0 lets Envoy choose (read it with `--admin-address-path`).
    pub admin: SocketAddr,
    /// Host (IP address or DNS name) of the controller's ADS.
    pub xds_host: String,
    /// Port of the controller's ADS.
    pub xds_port: u16,
    /// SotW or delta.
    pub api_type: ApiType,
}

impl BootstrapOptions {
    /// Options for `node_id` in `cluster` with `role`, pointing at [`DEFAULT_ADDR`], admin on
    /// 127.0.0.1:15000.
    pub fn new(
        node_id: impl Into<String>,
        cluster: impl Into<String>,
        role: impl Into<String>,
    ) -> Self {
        let (host, port) = DEFAULT_ADDR
            .rsplit_once(':')
            .unwrap_or(("127.0.0.1", "15010"));
        BootstrapOptions {
            node_id: node_id.into(),
            cluster: cluster.into(),
            role: role.into(),
            namespace: String::new(),
            region: String::new(),
            zone: String::new(),
            subzone: String::new(),
            extra_metadata: BTreeMap::new(),
            admin: SocketAddr::from(([127, 0, 0, 1], 15000)),
            xds_host: host.to_owned(),
            xds_port: port.parse().unwrap_or(15010),
            api_type: ApiType::default(),
        }
    }
}

/// Name of the static cluster that reaches the controller.
pub const XDS_CLUSTER: &str = "causeway-xds";

/// The bootstrap as JSON text (valid YAML too; Envoy reads it with `-c FILE.json` or
/// `--config-yaml`). Pure: the same options give the same text.
pub fn bootstrap(opts: &BootstrapOptions) -> String {
    let mut metadata: BTreeMap<String, String> = opts.extra_metadata.clone();
    metadata.insert("cluster".into(), opts.cluster.clone());
    metadata.insert("role".into(), opts.role.clone());
    metadata.insert("namespace".into(), opts.namespace.clone());
    let api_type = match opts.api_type {
        ApiType::StateOfTheWorld => "GRPC",
        ApiType::Delta => "DELTA_GRPC",
    };
    // An IP literal needs no resolver; a name is resolved and re-resolved by Envoy.
    let cluster_type = if opts.xds_host.parse::<IpAddr>().is_ok() {
        "STATIC"
    } else {
        "STRICT_DNS"
    };
    let ads_source = json!({"ads": {}, "resource_api_version": "V3"});
    let doc: Value = json!({
        "node": {
            "id": opts.node_id,
            "cluster": opts.cluster,
            "locality": {"region": opts.region, "zone": opts.zone, "sub_zone": opts.subzone},
            "metadata": metadata,
        },
        "admin": {
            "address": {"socket_address": {
                "address": opts.admin.ip().to_string(),
                "port_value": opts.admin.port(),
            }},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
                "set_node_on_first_message_only": true,
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                "type": cluster_type,
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {
                            // PINGs find a dead controller connection long before TCP would,
                            // so Envoy reconnects (to a restarted controller) promptly.
                            "connection_keepalive": {"interval": "30s", "timeout": "10s"},
                        }},
                    },
                },
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": opts.xds_host,
                        "port_value": opts.xds_port,
                    }}}}]}],
                },
            }],
        },
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_node_ads_and_cluster() {
        let mut o = BootstrapOptions::new("sidecar-1", "c1", "sidecar");
        o.namespace = "retail".into();
        o.region = "us-west".into();
        o.zone = "us-west-a".into();
        o.api_type = ApiType::Delta;
        let v: Value = serde_json::from_str(&bootstrap(&o)).unwrap();
        assert_eq!(v["node"]["id"], "sidecar-1");
        assert_eq!(v["node"]["cluster"], "c1");
        assert_eq!(v["node"]["metadata"]["role"], "sidecar");
        assert_eq!(v["node"]["metadata"]["namespace"], "retail");
        assert_eq!(v["node"]["locality"]["zone"], "us-west-a");
        assert_eq!(
            v["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        let c = &v["static_resources"]["clusters"][0];
        assert_eq!(c["type"], "STATIC");
        let sa = &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(sa["address"], "127.0.0.1");
        assert_eq!(sa["port_value"], 15010);
        assert_eq!(bootstrap(&o), bootstrap(&o));
    }
}
