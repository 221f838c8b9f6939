//! The sync status of every connected proxy as the API serves it
//! (`GET /apis/causeway.io/v1alpha1/proxies`, `causeway status --proxies`), modelled on
//! `istioctl proxy-status`: per proxy and per xDS type, SYNCED / STALE / NACKED / NOT_SENT with
//! the versions, and the last NACK with its reason.
//!
//! A pure function of the xDS server's [`ProxyStatus`] list, so the view is tested without a
//! server.

use causeway_xds::{ProxyStatus, SyncState, type_url};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

/// The path the list is served on.
pub const PATH: &str = "/apis/causeway.io/v1alpha1/proxies";

/// Short names of the six types a proxy may read, in push order (the table's columns).
pub const TYPES: [&str; 6] = ["CDS", "EDS", "LDS", "SRDS", "RDS", "SDS"];

fn state(s: SyncState) -> &'static str {
    match s {
        SyncState::Synced => "SYNCED",
        SyncState::Stale => "STALE",
        SyncState::Nacked => "NACKED",
        SyncState::NotSent => "NOT_SENT",
    }
}

fn time(unix_ms: u64) -> Value {
    i64::try_from(unix_ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// One proxy as the API shows it.
pub fn proxy_view(p: &ProxyStatus) -> Value {
    let cluster = if p.node.cluster.is_empty() {
        &p.node.node_cluster
    } else {
        &p.node.cluster
    };
    let l = &p.node.locality;
    let locality = [l.region.as_str(), &l.zone, &l.subzone]
        .join("/")
        .trim_end_matches('/')
        .to_owned();
    let mut types = Map::new();
    for (url, t) in &p.types {
        types.insert(
            type_url::short(url).to_owned(),
            json!({
                "typeUrl": url,
                "state": state(t.state),
                "sentVersion": t.sent_version,
                "ackedVersion": t.acked_version,
                "nackedVersion": t.nacked_version,
                "error": t.error,
                "nonce": t.nonce,
                "resources": t.resources_sent,
            }),
        );
    }
    json!({
        "id": p.node.id,
        "cluster": cluster,
        "role": p.node.role,
        "namespace": p.node.namespace,
        "locality": locality,
        "group": p.group,
        "protocol": p.protocol,
        "streamId": p.stream_id,
        "connectedSince": time(p.connected_since_unix_ms),
        "synced": p.synced(),
        "types": types,
        "nacks": p.nacks,
        "lastNack": p.last_nack.as_ref().map(|n| json!({
            "type": type_url::short(&n.type_url),
            "version": n.version,
            "message": n.message,
            "time": time(n.at_unix_ms),
        })),
    })
}

/// The list: sorted by cluster, role and id (a reconnecting proxy may briefly appear twice,
/// with two stream ids).
pub fn list_view(proxies: &[ProxyStatus]) -> Value {
    let mut items: Vec<Value> = proxies.iter().map(proxy_view).collect();
    let key = |v: &Value| {
        (
            v["cluster"].as_str().unwrap_or_default().to_owned(),
            v["role"].as_str().unwrap_or_default().to_owned(),
            v["id"].as_str().unwrap_or_default().to_owned(),
            v["streamId"].as_u64().unwrap_or_default(),
        )
    };
    items.sort_by_cached_key(key);
    json!({
        "apiVersion": "causeway.io/v1alpha1",
        "kind": "ProxyStatusList",
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use causeway_xds::status::{LastNack, Protocol};
    use causeway_xds::{NodeInfo, TypeStatus};

    use super::*;

    fn proxy(id: &str, cluster: &str, role: &str) -> ProxyStatus {
        let mut node = NodeInfo {
            id: id.to_owned(),
            cluster: cluster.to_owned(),
            role: role.to_owned(),
            ..Default::default()
        };
        node.locality.region = "us-west".to_owned();
        node.locality.zone = "us-west-a".to_owned();
        let t = |url: &str, state, sent: &str, acked: &str| TypeStatus {
            type_url: url.to_owned(),
            state,
            sent_version: Some(sent.to_owned()),
            acked_version: Some(acked.to_owned()),
            nonce: Some("7".to_owned()),
            error: (state == SyncState::Nacked).then(|| "bad regex".to_owned()),
            nacked_version: (state == SyncState::Nacked).then(|| sent.to_owned()),
            nacked_resources: Vec::new(),
            resources_sent: 1,
        };
        let types: BTreeMap<String, TypeStatus> = [
            t(type_url::CLUSTER, SyncState::Synced, "c1", "c1"),
            t(type_url::ROUTE, SyncState::Nacked, "r2", "r1"),
        ]
        .into_iter()
        .map(|t| (t.type_url.clone(), t))
        .collect();
        ProxyStatus {
            stream_id: 3,
            node,
            group: format!("{role}|{cluster}|"),
            protocol: Protocol::Delta,
            connected_since_unix_ms: 1_700_000_000_000,
            types,
            nacks: 2,
            last_nack: Some(LastNack {
                type_url: type_url::ROUTE.to_owned(),
                version: "r2".to_owned(),
                message: "bad regex".to_owned(),
                at_unix_ms: 1_700_000_001_000,
            }),
        }
    }

    #[test]
    fn shows_state_and_versions_per_type_and_the_last_nack() {
        let v = list_view(&[proxy("b", "c3", "gateway"), proxy("a", "c1", "sidecar")]);
        assert_eq!(v["kind"], "ProxyStatusList");
        let first = &v["items"][0];
        assert_eq!(first["id"], "a", "sorted by cluster: {v:#}");
        assert_eq!(first["locality"], "us-west/us-west-a");
        assert_eq!(first["protocol"], "delta");
        assert_eq!(first["synced"], false);
        assert_eq!(first["types"]["CDS"]["state"], "SYNCED");
        assert_eq!(first["types"]["RDS"]["state"], "NACKED");
        assert_eq!(first["types"]["RDS"]["ackedVersion"], "r1");
        assert_eq!(first["types"]["RDS"]["nackedVersion"], "r2");
        assert_eq!(first["types"]["RDS"]["error"], "bad regex");
        assert_eq!(first["nacks"], 2);
        assert_eq!(first["lastNack"]["type"], "RDS");
        assert_eq!(first["lastNack"]["message"], "bad regex");
        assert_eq!(first["connectedSince"], "2023-11-14T22:13:20Z");
    }
}
