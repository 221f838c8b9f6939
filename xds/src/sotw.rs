//! The state-of-the-world protocol state of one stream, as pure functions: classify a request
//! (initial, ACK, NACK, stale), decide which types to push for a snapshot and in which order, and
//! build a response. The server's stream task is only I/O around these.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::cache::{Snapshot, empty_version};
use crate::status::{SyncState, TypeStatus};
use crate::type_url;

/// Which resources of a type a stream asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// Every resource of the type (empty names on the first request, or the name `*`).
    Wildcard,
    /// Only these names (RDS, EDS and SDS as Envoy asks for them).
    Names(BTreeSet<String>),
}

impl Subscription {
    /// The subscription a request asks for. `legacy_wildcard` says whether this type's
    /// subscription started as "no names", in which case empty names keep meaning "all";
    /// otherwise empty names mean "none" (xDS protocol, "How the client specifies what
    /// resources to return").
    pub fn from_names(names: &[String], legacy_wildcard: bool) -> Self {
        if names.iter().any(|n| n == "*") || (names.is_empty() && legacy_wildcard) {
            Subscription::Wildcard
        } else {
            Subscription::Names(names.iter().cloned().collect())
        }
    }

    /// Whether the subscription includes `name`.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Subscription::Wildcard => true,
            Subscription::Names(n) => n.contains(name),
        }
    }
}

/// A NACK as recorded on the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The version the proxy rejected.
    pub version: String,
    /// The proxy's error message (`error_detail.message`).
    pub message: String,
    /// The resources of the rejected response, when known (delta: the resources it changed or
    /// removed); empty for state of the world, whose response held every resource of the type.
    pub resources: Vec<String>,
}

/// Per stream and type: what was asked, sent and acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeState {
    /// What the proxy subscribes to.
    pub subscription: Subscription,
    legacy_wildcard: bool,
    /// A response is owed regardless of versions (a first request, or a request with an empty
    /// nonce: Envoy needs an answer to finish warming even if it already has the version).
    pub must_respond: bool,
    /// Nonce of the last response sent.
    pub nonce_sent: Option<String>,
    /// Version of the last response sent.
    pub version_sent: Option<String>,
    /// Subscription the last response was built for.
    pub subscription_sent: Option<Subscription>,
    /// Number of resources in the last response.
    pub resources_sent: usize,
    /// The version the proxy last reported as applied (`version_info`).
    pub version_acked: Option<String>,
    /// Whether the last response was answered (ACK or NACK).
    pub answered: bool,
    /// The NACK of the last response, if it was rejected.
    pub nack: Option<Nack>,
}

impl TypeState {
    fn new(names: &[String]) -> Self {
        let legacy_wildcard = names.is_empty();
        TypeState {
            subscription: Subscription::from_names(names, legacy_wildcard),
            legacy_wildcard,
            must_respond: true,
            nonce_sent: None,
            version_sent: None,
            subscription_sent: None,
            resources_sent: 0,
            version_acked: None,
            answered: false,
            nack: None,
        }
    }

    /// SYNCED, STALE, NACKED or not sent yet.
    pub fn sync_state(&self) -> SyncState {
        match (&self.nonce_sent, self.answered, &self.nack) {
            (None, _, _) => SyncState::NotSent,
            (Some(_), _, Some(_)) => SyncState::Nacked,
            (Some(_), false, None) => SyncState::Stale,
            (Some(_), true, None) => SyncState::Synced,
        }
    }

    /// The status report of this type.
    pub fn status(&self, type_url: &str) -> TypeStatus {
        TypeStatus {
            type_url: type_url.to_owned(),
            state: self.sync_state(),
            sent_version: self.version_sent.clone(),
            acked_version: self.version_acked.clone(),
            nonce: self.nonce_sent.clone(),
            error: self.nack.as_ref().map(|n| n.message.clone()),
            nacked_version: self.nack.as_ref().map(|n| n.version.clone()),
            nacked_resources: self
                .nack
                .as_ref()
                .map(|n| n.resources.clone())
                .unwrap_or_default(),
            resources_sent: self.resources_sent,
        }
    }
}

/// What a request was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// First request for the type on this stream, or one with an empty nonce: always answered.
    Initial,
    /// The proxy applied the response with this nonce.
    Ack,
    /// The proxy rejected the response with this nonce.
    Nack(Nack),
    /// Answers a response that is no longer the latest: ignored entirely.
    Stale,
}

/// Per stream: state by type URL.
pub type StreamState = BTreeMap<String, TypeState>;

/// Applies a request to the stream state and says what it was.
pub fn on_request(states: &mut StreamState, req: &DiscoveryRequest) -> RequestKind {
    let Some(state) = states.get_mut(&req.type_url) else {
        let mut state = TypeState::new(&req.resource_names);
        if !req.version_info.is_empty() {
            // Reconnect: the proxy still holds what it accepted from an earlier stream.
            state.version_acked = Some(req.version_info.clone());
        }
        states.insert(req.type_url.clone(), state);
        return RequestKind::Initial;
    };
    if req.response_nonce.is_empty() {
        state.subscription = Subscription::from_names(&req.resource_names, state.legacy_wildcard);
        state.must_respond = true;
        return RequestKind::Initial;
    }
    if state.nonce_sent.as_deref() != Some(req.response_nonce.as_str()) {
        return RequestKind::Stale;
    }
    state.subscription = Subscription::from_names(&req.resource_names, state.legacy_wildcard);
    state.answered = true;
    state.version_acked = Some(req.version_info.clone());
    match &req.error_detail {
        Some(err) => {
            let nack = Nack {
                version: state.version_sent.clone().unwrap_or_default(),
                message: err.message.clone(),
                resources: Vec::new(),
            };
            state.nack = Some(nack.clone());
            RequestKind::Nack(nack)
        }
        None => {
            state.nack = None;
            RequestKind::Ack
        }
    }
}

/// The types to push now for `snapshot`, in push order (CDS, EDS, LDS, SRDS, RDS, SDS, then
/// others); LDS, SRDS and RDS wait while CDS or EDS responses are unanswered (see
/// `type_url::order_and_hold`).
///
/// A type is pushed when a response is owed, when the snapshot's version differs from the one
/// last sent, or when the subscription changed since. A NACKed version is not re-sent: the
/// version sent is still that version, so only a new snapshot version triggers a push.
pub fn pending_sends(states: &StreamState, snapshot: &Snapshot) -> Vec<String> {
    let out: Vec<String> = states
        .iter()
        .filter(|(t, s)| {
            s.must_respond
                || s.version_sent.as_deref() != Some(snapshot.version(t).as_str())
                || s.subscription_sent.as_ref() != Some(&s.subscription)
        })
        .map(|(t, _)| t.clone())
        .collect();
    type_url::order_and_hold(out, |t| {
        states
            .get(t)
            .is_some_and(|s| s.nonce_sent.is_some() && !s.answered)
    })
}

/// Builds the response for `type_url` from the snapshot and records it as sent.
pub fn build_response(
    states: &mut StreamState,
    type_url: &str,
    snapshot: &Snapshot,
    nonce: String,
) -> Option<DiscoveryResponse> {
    let state = states.get_mut(type_url)?;
    let (version, resources) = match snapshot.get(type_url) {
        Some(set) => (
            set.version().to_owned(),
            set.iter()
                .filter(|(name, _)| state.subscription.includes(name))
                .map(|(_, r)| r.resource.clone())
                .collect::<Vec<_>>(),
        ),
        None => (empty_version(), Vec::new()),
    };
    state.must_respond = false;
    state.nonce_sent = Some(nonce.clone());
    state.version_sent = Some(version.clone());
    state.subscription_sent = Some(state.subscription.clone());
    state.resources_sent = resources.len();
    state.answered = false;
    // A NACK concerns the version it rejected; a new response starts over.
    state.nack = None;
    Some(DiscoveryResponse {
        version_info: version,
        resources,
        type_url: type_url.to_owned(),
        nonce,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Any, pack};
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::google::rpc::Status;

    fn snapshot(tag: &str) -> Snapshot {
        let cla = |n: &str| -> Any {
            pack(&ClusterLoadAssignment {
                cluster_name: n.into(),
                ..Default::default()
            })
        };
        Snapshot::from_resources([
            pack(&Cluster {
                name: format!("c-{tag}"),
                ..Default::default()
            }),
            cla("a"),
            cla("b"),
            pack(&Listener {
                name: "l".into(),
                ..Default::default()
            }),
            pack(&RouteConfiguration {
                name: format!("r-{tag}"),
                ..Default::default()
            }),
        ])
        .unwrap()
    }

    fn req(t: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: t.into(),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn send_all(states: &mut StreamState, snap: &Snapshot, n: &mut u32) -> Vec<DiscoveryResponse> {
        pending_sends(states, snap)
            .iter()
            .map(|t| {
                *n += 1;
                build_response(states, t, snap, n.to_string()).unwrap()
            })
            .collect()
    }

    #[test]
    fn ack_nack_stale_and_no_resend_of_a_nacked_version() {
        let mut st = StreamState::new();
        let mut n = 0;
        let v1 = snapshot("1");
        assert_eq!(
            on_request(&mut st, &req(type_url::CLUSTER, &[], "", "")),
            RequestKind::Initial
        );
        let r = send_all(&mut st, &v1, &mut n);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].resources.len(), 1);
        assert_eq!(st[type_url::CLUSTER].sync_state(), SyncState::Stale);
        let v1cds = r[0].version_info.clone();
        // ACK
        assert_eq!(
            on_request(&mut st, &req(type_url::CLUSTER, &[], &v1cds, "1")),
            RequestKind::Ack
        );
        assert_eq!(st[type_url::CLUSTER].sync_state(), SyncState::Synced);
        assert!(send_all(&mut st, &v1, &mut n).is_empty());
        // push v2, NACK it
        let v2 = snapshot("2");
        let r = send_all(&mut st, &v2, &mut n);
        assert_eq!(r.len(), 1);
        let mut nack = req(type_url::CLUSTER, &[], &v1cds, "2");
        nack.error_detail = Some(Status {
            message: "bad cluster".into(),
            ..Default::default()
        });
        assert!(matches!(on_request(&mut st, &nack), RequestKind::Nack(_)));
        let s = st[type_url::CLUSTER].status(type_url::CLUSTER);
        assert_eq!(s.state, SyncState::Nacked);
        assert_eq!(s.acked_version.as_deref(), Some(v1cds.as_str()));
        assert_eq!(s.nacked_version, Some(v2.version(type_url::CLUSTER)));
        assert_eq!(s.error.as_deref(), Some("bad cluster"));
        // the NACKed version is not sent again
        assert!(send_all(&mut st, &v2, &mut n).is_empty());
        // a stale nonce is ignored
        assert_eq!(
            on_request(&mut st, &req(type_url::CLUSTER, &[], &v1cds, "1")),
            RequestKind::Stale
        );
        // v3 goes out with a fresh nonce
        let r = send_all(&mut st, &snapshot("3"), &mut n);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].nonce, "3");
        assert_eq!(st[type_url::CLUSTER].sync_state(), SyncState::Stale);
    }

    #[test]
    fn named_subscriptions_filter_and_resend_on_change() {
        let mut st = StreamState::new();
        let mut n = 0;
        let snap = snapshot("1");
        on_request(&mut st, &req(type_url::ENDPOINT, &["a"], "", ""));
        let r = send_all(&mut st, &snap, &mut n);
        assert_eq!(r[0].resources.len(), 1);
        let v = r[0].version_info.clone();
        on_request(&mut st, &req(type_url::ENDPOINT, &["a"], &v, "1"));
        assert!(send_all(&mut st, &snap, &mut n).is_empty());
        // the ACK carries a new name: answer with the new set at the same version
        on_request(&mut st, &req(type_url::ENDPOINT, &["a", "b"], &v, "1"));
        let r = send_all(&mut st, &snap, &mut n);
        assert_eq!(r[0].resources.len(), 2);
        assert_eq!(r[0].version_info, v);
        // after a named subscription, empty names mean none, not all
        on_request(&mut st, &req(type_url::ENDPOINT, &[], &v, "2"));
        let r = send_all(&mut st, &snap, &mut n);
        assert_eq!(r[0].resources.len(), 0);
    }

    #[test]
    fn push_order_is_cds_eds_lds_srds_rds() {
        let mut st = StreamState::new();
        let mut n = 0;
        for t in [
            type_url::ROUTE,
            type_url::SCOPED_ROUTE,
            type_url::LISTENER,
            type_url::ENDPOINT,
            type_url::CLUSTER,
        ] {
            let names: &[&str] = match t {
                type_url::ROUTE => &["r-1"],
                type_url::ENDPOINT => &["a"],
                _ => &[],
            };
            on_request(&mut st, &req(t, names, "", ""));
        }
        let snap = snapshot("1");
        let types = |r: Vec<DiscoveryResponse>| -> Vec<String> {
            r.into_iter().map(|r| r.type_url).collect()
        };
        // Clusters and endpoints first; listeners, routing scopes and routes wait for their
        // answers.
        let first = send_all(&mut st, &snap, &mut n);
        let versions: Vec<(String, String)> = first
            .iter()
            .map(|r| (r.type_url.clone(), r.version_info.clone()))
            .collect();
        assert_eq!(types(first), [type_url::CLUSTER, type_url::ENDPOINT]);
        assert!(send_all(&mut st, &snap, &mut n).is_empty());
        on_request(&mut st, &req(type_url::CLUSTER, &[], &versions[0].1, "1"));
        assert!(send_all(&mut st, &snap, &mut n).is_empty());
        on_request(
            &mut st,
            &req(type_url::ENDPOINT, &["a"], &versions[1].1, "2"),
        );
        assert_eq!(
            types(send_all(&mut st, &snap, &mut n)),
            [type_url::LISTENER, type_url::SCOPED_ROUTE, type_url::ROUTE]
        );
    }

    #[test]
    fn reconnect_is_always_answered_and_records_the_held_version() {
        let mut st = StreamState::new();
        let mut n = 0;
        let snap = snapshot("1");
        let held = snap.version(type_url::CLUSTER);
        // Envoy reconnects holding exactly this version: it still needs an answer.
        on_request(&mut st, &req(type_url::CLUSTER, &[], &held, ""));
        assert_eq!(
            st[type_url::CLUSTER].version_acked.as_deref(),
            Some(held.as_str())
        );
        assert_eq!(send_all(&mut st, &snap, &mut n).len(), 1);
        // An absent type is served as an empty set so the proxy finishes its initial fetch.
        on_request(&mut st, &req(type_url::SECRET, &[], "", ""));
        let r = send_all(&mut st, &snap, &mut n);
        assert_eq!(r.len(), 1);
        assert!(r[0].resources.is_empty());
    }
}
