//! The incremental (delta) protocol state of one stream, as pure functions.
//!
//! Per type the server tracks the version of every resource it believes the proxy holds. A push
//! sends only resources whose content version differs and names the removed ones. That belief is
//! updated when a response is sent (so two pushes in a row do not repeat resources) and rolled
//! back for the resources of a NACKed response, which are then not re-sent until their content
//! changes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use crate::cache::Snapshot;
use crate::sotw::{Nack, RequestKind};
use crate::status::{SyncState, TypeStatus};
use crate::type_url;

/// Unanswered responses kept per type; a proxy that never answers cannot grow the state.
const MAX_IN_FLIGHT: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
struct InFlight {
    nonce: String,
    version: String,
    /// Resource name -> (version sent or `None` for a removal, version held before).
    changes: BTreeMap<String, (Option<String>, Option<String>)>,
}

/// Per stream and type: subscription, what the proxy holds, and what is in flight.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeltaTypeState {
    /// Subscribed to every resource of the type.
    pub wildcard: bool,
    /// Explicitly subscribed names.
    pub names: BTreeSet<String>,
    /// Resource name -> version the proxy holds (or is being sent).
    pub held: BTreeMap<String, String>,
    nacked: BTreeMap<String, String>,
    unknown_to_announce: BTreeSet<String>,
    must_respond: bool,
    in_flight: VecDeque<InFlight>,
    nonce_sent: Option<String>,
    version_sent: Option<String>,
    version_acked: Option<String>,
    nack: Option<Nack>,
    resources_sent: usize,
    /// The snapshot version of this type the proxy holds all of (every subscribed resource
    /// sent at that version, nothing left to remove): with nothing else owed, a request needs
    /// no walk over the type's resources. Forgotten on any subscription change and on a NACK.
    complete_at: Option<String>,
}

impl DeltaTypeState {
    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// SYNCED, STALE, NACKED or not sent yet.
    pub fn sync_state(&self) -> SyncState {
        if self.nonce_sent.is_none() {
            SyncState::NotSent
        } else if self.nack.is_some() {
            SyncState::Nacked
        } else if !self.in_flight.is_empty() {
            SyncState::Stale
        } else {
            SyncState::Synced
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

/// Per stream: delta state by type URL.
pub type DeltaStreamState = BTreeMap<String, DeltaTypeState>;

/// Applies a request: subscription changes always (they are incremental and must not be lost),
/// then the ACK or NACK of the response whose nonce it carries.
pub fn on_delta_request(states: &mut DeltaStreamState, req: &DeltaDiscoveryRequest) -> RequestKind {
    let mut kind = RequestKind::Stale;
    let state = match states.get_mut(&req.type_url) {
        Some(s) => s,
        None => {
            let s = states.entry(req.type_url.clone()).or_default();
            // Legacy wildcard: a first request without names subscribes to everything.
            s.wildcard = req.resource_names_subscribe.is_empty();
            s.held = req
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            s.must_respond = true;
            kind = RequestKind::Initial;
            s
        }
    };
    if !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() {
        state.complete_at = None;
    }
    for name in &req.resource_names_subscribe {
        if name == "*" {
            state.wildcard = true;
        } else if state.names.insert(name.clone()) {
            state.unknown_to_announce.insert(name.clone());
        }
    }
    for name in &req.resource_names_unsubscribe {
        if name == "*" {
            state.wildcard = false;
        } else {
            state.names.remove(name);
            state.unknown_to_announce.remove(name);
        }
        if !state.subscribed(name) {
            // The proxy drops what it unsubscribed from; a later subscribe must send it again.
            state.held.remove(name);
            state.nacked.remove(name);
        }
    }
    if req.response_nonce.is_empty() {
        if kind == RequestKind::Stale {
            // A pure subscription change.
            kind = RequestKind::Initial;
        }
        return kind;
    }
    let Some(pos) = state
        .in_flight
        .iter()
        .position(|f| f.nonce == req.response_nonce)
    else {
        return kind;
    };
    let Some(answered) = state.in_flight.remove(pos) else {
        return kind;
    };
    match &req.error_detail {
        None => {
            state.version_acked = Some(answered.version);
            state.nack = None;
            RequestKind::Ack
        }
        Some(err) => {
            state.complete_at = None;
            let resources = answered.changes.keys().cloned().collect();
            for (name, (sent, before)) in answered.changes {
                if let Some(v) = sent {
                    state.nacked.insert(name.clone(), v);
                }
                match before {
                    Some(v) => state.held.insert(name, v),
                    None => state.held.remove(&name),
                };
            }
            let nack = Nack {
                version: answered.version,
                message: err.message.clone(),
                resources,
            };
            state.nack = Some(nack.clone());
            RequestKind::Nack(nack)
        }
    }
}

struct Plan<'a> {
    updates: Vec<(&'a str, &'a crate::cache::VersionedResource)>,
    removed: Vec<String>,
}

/// The snapshot's version of a type (the empty-set version when absent).
fn type_version<'a>(snapshot: &'a Snapshot, type_url: &str) -> std::borrow::Cow<'a, str> {
    match snapshot.get(type_url) {
        Some(set) => std::borrow::Cow::Borrowed(set.version()),
        None => std::borrow::Cow::Owned(crate::cache::empty_version()),
    }
}

/// Whether nothing can be owed without walking the resources: the proxy holds all of this
/// version and no response or announcement is pending.
fn nothing_owed(state: &DeltaTypeState, type_url: &str, snapshot: &Snapshot) -> bool {
    !state.must_respond
        && state.unknown_to_announce.is_empty()
        && state
            .complete_at
            .as_deref()
            .is_some_and(|v| v == type_version(snapshot, type_url))
}

fn plan<'a>(state: &DeltaTypeState, type_url: &str, snapshot: &'a Snapshot) -> Option<Plan<'a>> {
    // Every ACK on every stream asks "anything to send?" for every type: answer from the
    // version when possible rather than comparing every resource (1,000 streams × 5 types ×
    // hundreds of resources made delta slower to settle than the state of the world).
    if nothing_owed(state, type_url, snapshot) {
        return None;
    }
    let set = snapshot.get(type_url);
    let updates: Vec<_> = set
        .into_iter()
        .flat_map(|s| s.iter())
        .filter(|(name, r)| {
            state.subscribed(name)
                && state.held.get(*name) != Some(&r.version)
                && state.nacked.get(*name) != Some(&r.version)
        })
        .collect();
    let exists = |name: &str| set.is_some_and(|s| s.get(name).is_some());
    let mut removed: BTreeSet<String> = state
        .held
        .keys()
        .filter(|n| state.subscribed(n) && !exists(n))
        .cloned()
        .collect();
    // A named resource that does not exist is announced as removed once, so the proxy stops
    // waiting for it (an EDS cluster would otherwise warm until its initial fetch timeout).
    removed.extend(
        state
            .unknown_to_announce
            .iter()
            .filter(|n| !exists(n))
            .cloned(),
    );
    if updates.is_empty() && removed.is_empty() && !state.must_respond {
        return None;
    }
    Some(Plan {
        updates,
        removed: removed.into_iter().collect(),
    })
}

/// Forgets NACKs the snapshot has moved past: a rejected resource whose content changed (or that
/// is gone) no longer blocks anything, and once no rejected content is left in the snapshot the
/// type is back in sync even when nothing needs sending (the proxy still holds what the snapshot
/// now says, e.g. after the controller reverted a bad change).
///
/// Returns the types whose sync state changed, for the status report.
pub fn settle_nacks(states: &mut DeltaStreamState, snapshot: &Snapshot) -> Vec<String> {
    let mut settled = Vec::new();
    for (t, state) in states.iter_mut() {
        if state.nacked.is_empty() && state.nack.is_none() {
            continue;
        }
        let set = snapshot.get(t);
        state.nacked.retain(|name, v| {
            set.and_then(|s| s.get(name))
                .is_some_and(|r| &r.version == v)
        });
        if state.nacked.is_empty() && state.nack.take().is_some() {
            settled.push(t.clone());
        }
    }
    settled
}

/// The types with something to push for `snapshot`, in push order, LDS/RDS held while CDS or
/// EDS responses are unanswered.
pub fn pending_delta_sends(states: &DeltaStreamState, snapshot: &Snapshot) -> Vec<String> {
    let out: Vec<String> = states
        .iter()
        .filter(|(t, s)| plan(s, t, snapshot).is_some())
        .map(|(t, _)| t.clone())
        .collect();
    type_url::order_and_hold(out, |t| {
        states.get(t).is_some_and(|s| !s.in_flight.is_empty())
    })
}

/// Builds the delta response for `type_url` and records it as sent; `None` if nothing is owed.
pub fn build_delta_response(
    states: &mut DeltaStreamState,
    type_url: &str,
    snapshot: &Snapshot,
    nonce: String,
) -> Option<DeltaDiscoveryResponse> {
    let state = states.get_mut(type_url)?;
    let Plan { updates, removed } = plan(state, type_url, snapshot)?;
    let version = snapshot.version(type_url);
    // After this response the proxy holds (or is being sent) every subscribed resource of this
    // version, unless rejected content is being held back.
    let complete = state.nacked.is_empty();
    let mut changes = BTreeMap::new();
    let resources: Vec<Resource> = updates
        .into_iter()
        .map(|(name, r)| {
            let before = state.held.insert(name.to_owned(), r.version.clone());
            changes.insert(name.to_owned(), (Some(r.version.clone()), before));
            Resource {
                name: name.to_owned(),
                version: r.version.clone(),
                resource: Some(r.resource.clone()),
                ..Default::default()
            }
        })
        .collect();
    for name in &removed {
        let before = state.held.remove(name);
        changes.insert(name.clone(), (None, before));
    }
    state.unknown_to_announce.clear();
    state.must_respond = false;
    state.nonce_sent = Some(nonce.clone());
    state.version_sent = Some(version.clone());
    state.resources_sent = resources.len();
    state.nack = None;
    state.complete_at = complete.then(|| version.clone());
    if state.in_flight.len() >= MAX_IN_FLIGHT {
        state.in_flight.pop_front();
    }
    state.in_flight.push_back(InFlight {
        nonce: nonce.clone(),
        version: version.clone(),
        changes,
    });
    Some(DeltaDiscoveryResponse {
        system_version_info: version,
        resources,
        type_url: type_url.to_owned(),
        removed_resources: removed,
        nonce,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::google::rpc::Status;

    fn clusters(spec: &[(&str, u32)]) -> Snapshot {
        Snapshot::from_resources(spec.iter().map(|(n, t)| {
            pack(&Cluster {
                name: (*n).into(),
                per_connection_buffer_limit_bytes: Some(
                    envoy_types::pb::google::protobuf::UInt32Value { value: *t },
                ),
                ..Default::default()
            })
        }))
        .unwrap()
    }

    fn req(t: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: t.into(),
            resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn sends_only_changes_and_removals() {
        let t = type_url::CLUSTER;
        let mut st = DeltaStreamState::new();
        assert_eq!(
            on_delta_request(&mut st, &req(t, &[], &[], "")),
            RequestKind::Initial
        );
        let s1 = clusters(&[("a", 1), ("b", 1)]);
        let r = build_delta_response(&mut st, t, &s1, "1".into()).unwrap();
        assert_eq!(names(&r), ["a", "b"]);
        assert_eq!(st[t].sync_state(), SyncState::Stale);
        assert_eq!(
            on_delta_request(&mut st, &req(t, &[], &[], "1")),
            RequestKind::Ack
        );
        assert_eq!(st[t].sync_state(), SyncState::Synced);
        assert!(pending_delta_sends(&st, &s1).is_empty());
        let s2 = clusters(&[("a", 2), ("c", 1)]);
        let r = build_delta_response(&mut st, t, &s2, "2".into()).unwrap();
        assert_eq!(names(&r), ["a", "c"]);
        assert_eq!(r.removed_resources, ["b"]);
        // sent, not yet ACKed: not sent again
        assert!(pending_delta_sends(&st, &s2).is_empty());
    }

    #[test]
    fn nack_rolls_back_and_is_not_resent_until_changed() {
        let t = type_url::CLUSTER;
        let mut st = DeltaStreamState::new();
        on_delta_request(&mut st, &req(t, &[], &[], ""));
        let s1 = clusters(&[("a", 1)]);
        build_delta_response(&mut st, t, &s1, "1".into()).unwrap();
        on_delta_request(&mut st, &req(t, &[], &[], "1"));
        let s2 = clusters(&[("a", 2)]);
        build_delta_response(&mut st, t, &s2, "2".into()).unwrap();
        let mut nack = req(t, &[], &[], "2");
        nack.error_detail = Some(Status {
            message: "no".into(),
            ..Default::default()
        });
        assert!(matches!(
            on_delta_request(&mut st, &nack),
            RequestKind::Nack(_)
        ));
        assert_eq!(st[t].sync_state(), SyncState::Nacked);
        assert_eq!(
            st[t].held.get("a"),
            s1.get(t).unwrap().get("a").map(|r| &r.version)
        );
        assert!(pending_delta_sends(&st, &s2).is_empty());
        // reverting to what the proxy holds needs no push and clears the NACK
        assert_eq!(settle_nacks(&mut st, &s1), [t.to_owned()]);
        assert!(settle_nacks(&mut st, &s1).is_empty());
        assert_eq!(st[t].sync_state(), SyncState::Synced);
        assert!(pending_delta_sends(&st, &s1).is_empty());
        let s3 = clusters(&[("a", 3)]);
        let r = build_delta_response(&mut st, t, &s3, "3".into()).unwrap();
        assert_eq!(names(&r), ["a"]);
        // going back to the first content is a change like any other
        on_delta_request(&mut st, &req(t, &[], &[], "3"));
        let r = build_delta_response(&mut st, t, &s1, "4".into()).unwrap();
        assert_eq!(names(&r), ["a"]);
    }

    /// A type the proxy holds all of is answered from its version, yet subscription changes
    /// and new versions are still seen.
    #[test]
    fn complete_types_skip_the_walk_but_still_see_changes() {
        let t = type_url::ENDPOINT;
        let cla = |n: &str, w: u32| {
            pack(&ClusterLoadAssignment {
                cluster_name: n.into(),
                policy: Some(
                    envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment::Policy {
                        overprovisioning_factor: Some(
                            envoy_types::pb::google::protobuf::UInt32Value { value: w },
                        ),
                        ..Default::default()
                    },
                ),
                ..Default::default()
            })
        };
        let s1 = Snapshot::from_resources([cla("x", 1), cla("y", 1)]).unwrap();
        let mut st = DeltaStreamState::new();
        on_delta_request(&mut st, &req(t, &["x"], &[], ""));
        let r = build_delta_response(&mut st, t, &s1, "1".into()).unwrap();
        assert_eq!(names(&r), ["x"]);
        on_delta_request(&mut st, &req(t, &[], &[], "1"));
        assert!(nothing_owed(&st[t], t, &s1));
        assert!(pending_delta_sends(&st, &s1).is_empty());
        // Subscribing to y is a change the version does not show.
        on_delta_request(&mut st, &req(t, &["y"], &[], ""));
        assert!(!nothing_owed(&st[t], t, &s1));
        let r = build_delta_response(&mut st, t, &s1, "2".into()).unwrap();
        assert_eq!(names(&r), ["y"]);
        on_delta_request(&mut st, &req(t, &[], &[], "2"));
        // A new version of y: sent, and only y.
        let s2 = Snapshot::from_resources([cla("x", 1), cla("y", 2)]).unwrap();
        assert_eq!(pending_delta_sends(&st, &s2), [t.to_owned()]);
        let r = build_delta_response(&mut st, t, &s2, "3".into()).unwrap();
        assert_eq!(names(&r), ["y"]);
    }

    #[test]
    fn named_subscriptions_reconnect_and_unknown_names() {
        let t = type_url::ENDPOINT;
        let snap = Snapshot::from_resources(["x", "y"].map(|n| {
            pack(&ClusterLoadAssignment {
                cluster_name: n.into(),
                ..Default::default()
            })
        }))
        .unwrap();
        let mut st = DeltaStreamState::new();
        // Reconnect holding x at the current version: only y is sent; z does not exist.
        let mut first = req(t, &["x", "y", "z"], &[], "");
        first.initial_resource_versions.insert(
            "x".into(),
            snap.get(t).unwrap().get("x").unwrap().version.clone(),
        );
        on_delta_request(&mut st, &first);
        let r = build_delta_response(&mut st, t, &snap, "1".into()).unwrap();
        assert_eq!(names(&r), ["y"]);
        assert_eq!(r.removed_resources, ["z"]);
        on_delta_request(&mut st, &req(t, &[], &["y"], "1"));
        assert!(!st[t].held.contains_key("y"));
        assert!(pending_delta_sends(&st, &snap).is_empty());
        // re-subscribing sends it again
        on_delta_request(&mut st, &req(t, &["y"], &[], ""));
        let r = build_delta_response(&mut st, t, &snap, "2".into()).unwrap();
        assert_eq!(names(&r), ["y"]);
    }
}
