//! Prometheus metrics of the balancer and the decap agent.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of per-backend series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    /// VIP name.
    pub vip: String,
    /// Backend address.
    pub backend: String,
}

/// Labels of per-VIP series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct VipLabels {
    /// VIP name.
    pub vip: String,
}

/// Labels of drop counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why: `not_vip`, `no_backend`, `malformed`, `send_error`, `not_ipip`.
    pub reason: String,
}

/// Labels of XDP map series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MapLabels {
    /// `vip_ids`, `vip_keys`, `maglev_slots` or `backend_pairs`.
    pub map: String,
}

/// Labels of BGP series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PeerLabels {
    /// Peer address.
    pub peer: String,
}

/// Every metric of the balancer.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Packets forwarded per VIP and backend.
    pub packets: Family<BackendLabels, Counter>,
    /// Bytes (inner packets) forwarded per VIP and backend.
    pub bytes: Family<BackendLabels, Counter>,
    /// New flows (not found in conntrack) per VIP.
    pub new_flows: Family<VipLabels, Counter>,
    /// Packets dropped, by reason.
    pub dropped: Family<ReasonLabels, Counter>,
    /// Flows in the connection tracking table.
    pub conntrack_entries: Gauge,
    /// 1 when the backend is in the VIP's table.
    pub backend_healthy: Family<BackendLabels, Gauge>,
    /// 1 while the VIP's /32 is announced.
    pub vip_announced: Family<VipLabels, Gauge>,
    /// BGP session state per peer (1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm,
    /// 6 Established).
    pub bgp_state: Family<PeerLabels, Gauge>,
    /// BGP sessions established per peer.
    pub bgp_established: Family<PeerLabels, Counter>,
    /// Packets decapsulated and delivered (decap agent).
    pub decap_packets: Counter,
    /// Bytes (inner) delivered (decap agent).
    pub decap_bytes: Counter,
    /// Packets the XDP program left to the userspace path, by reason (`mtu`, `neighbour`).
    pub xdp_slow_path: Family<ReasonLabels, Counter>,
    /// Flows in the XDP program's connection tracking map (not idle).
    pub xdp_conntrack_entries: Gauge,
    /// Times the balancer's XDP program was loaded and attached: 1 at start, then one per
    /// reload (a map capacity exceeded, a failed map update); VIP changes are applied in place.
    pub xdp_program_loads: Counter,
    /// Size of the XDP maps VIPs use, by `map`.
    pub xdp_map_capacity: Family<MapLabels, Gauge>,
    /// Entries of those maps in use, by `map`.
    pub xdp_map_used: Family<MapLabels, Gauge>,
}

impl Metrics {
    /// Registers every metric under `causeway_l4lb_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("causeway_l4lb");
        r.register(
            "packets",
            "Packets encapsulated to a backend",
            self.packets.clone(),
        );
        r.register(
            "bytes",
            "Bytes (inner packets) encapsulated to a backend",
            self.bytes.clone(),
        );
        r.register(
            "new_flows",
            "Flows picked by Maglev (not found in conntrack)",
            self.new_flows.clone(),
        );
        r.register("dropped_packets", "Packets dropped", self.dropped.clone());
        r.register(
            "conntrack_entries",
            "Flows in the connection tracking table",
            self.conntrack_entries.clone(),
        );
        r.register(
            "backend_healthy",
            "1 when the backend is in the VIP's Maglev table",
            self.backend_healthy.clone(),
        );
        r.register(
            "vip_announced",
            "1 while the VIP /32 is announced over BGP",
            self.vip_announced.clone(),
        );
        r.register(
            "bgp_session_state",
            "BGP FSM state: 1 Idle, 2 Connect, 3 Active, 4 OpenSent, 5 OpenConfirm, 6 Established",
            self.bgp_state.clone(),
        );
        r.register(
            "bgp_sessions_established",
            "BGP sessions that reached Established",
            self.bgp_established.clone(),
        );
        r.register(
            "decap_packets",
            "IPIP packets decapsulated into the TUN device (decap agent)",
            self.decap_packets.clone(),
        );
        r.register(
            "decap_bytes",
            "Inner bytes delivered into the TUN device (decap agent)",
            self.decap_bytes.clone(),
        );
        r.register(
            "xdp_slow_path_packets",
            "Packets the XDP program passed to the userspace data path (mtu, neighbour)",
            self.xdp_slow_path.clone(),
        );
        r.register(
            "xdp_conntrack_entries",
            "Flows in the XDP program's connection tracking map",
            self.xdp_conntrack_entries.clone(),
        );
        r.register(
            "xdp_program_loads",
            "Times the XDP balancer program was loaded (1 at start, then one per reload: a map \
             capacity exceeded or a failed map update)",
            self.xdp_program_loads.clone(),
        );
        r.register(
            "xdp_map_capacity",
            "Size of the XDP maps VIPs use (vip_ids, vip_keys, maglev_slots, backend_pairs)",
            self.xdp_map_capacity.clone(),
        );
        r.register(
            "xdp_map_used",
            "Entries in use of the XDP maps VIPs use (vip_ids, vip_keys, maglev_slots, \
             backend_pairs)",
            self.xdp_map_used.clone(),
        );
    }

    /// Sets the XDP map gauges from a capacity and its use (`[ids, keys, slots, pairs]`).
    pub fn set_xdp_maps(&self, capacity: [u32; 4], used: [u64; 4]) {
        for (i, map) in ["vip_ids", "vip_keys", "maglev_slots", "backend_pairs"]
            .into_iter()
            .enumerate()
        {
            let l = MapLabels {
                map: map.to_owned(),
            };
            self.xdp_map_capacity
                .get_or_create(&l)
                .set(i64::from(capacity[i]));
            self.xdp_map_used
                .get_or_create(&l)
                .set(i64::try_from(used[i]).unwrap_or(i64::MAX));
        }
    }

    /// Counts a drop.
    pub fn drop_packet(&self, reason: &str) {
        self.dropped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Encodes the registry in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}
