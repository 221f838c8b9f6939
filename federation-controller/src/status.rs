//! What the status of each object should say, as pure functions of the translator's verdicts,
//! the VIP allocations and what the proxies report.
//!
//! The status writer compares these with what is stored and writes only differences, so a
//! steady federation causes no writes. Conditions keep their `lastTransitionTime` while their
//! status does not change (Kubernetes' convention), which is also what makes the comparison
//! stable.

use std::collections::BTreeMap;
use std::net::IpAddr;

use causeway_crds::v1alpha1::{
    AccessPoint, AccessPointPhase, AccessPointStatus, CertificateStatus, Cluster, ClusterPhase,
    ClusterRolloutPhase, ClusterRolloutStatus, ClusterStatus, ExternalService,
    ExternalServiceStatus, NameService, NameServiceEndpoint, NameServiceStatus, ProxyRejections,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::translate::{AccessPointVerdict, Snapshot, TargetIssue};

/// What the controller knows about the connected proxies of one cluster (from the xDS server's
/// sync status).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterProxies {
    /// Connected gateway proxies.
    pub gateways: u32,
    /// Of those, the ones that acknowledged the latest configuration of their group.
    pub gateways_acked: u32,
    /// Connected sidecars.
    pub sidecars: u32,
    /// Of those, the ones that acknowledged the latest configuration.
    pub sidecars_acked: u32,
    /// `node: message` of every proxy whose last answer was a NACK.
    pub nacks: Vec<String>,
    /// Connected gateways whose last answer was a NACK.
    pub gateways_nacked: u32,
    /// NACKs attributed to the objects whose configuration the proxies of this cluster
    /// rejected (see `push::attribute`).
    pub rejections: BTreeMap<ObjectId, ObjectRejections>,
    /// When a proxy of the cluster was last heard from.
    pub last_seen: Option<Timestamp>,
}

/// An object a NACK can be attributed to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectId {
    /// `AccessPoint`, `NameService` or `ExternalService`.
    pub kind: &'static str,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectId {
    /// The id of the object of `kind` with metadata `meta` (namespace `default` when unset).
    pub fn of(kind: &'static str, meta: &ObjectMeta) -> ObjectId {
        ObjectId {
            kind,
            namespace: namespace(meta).to_owned(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

/// The NACKs of one cluster's proxies attributed to one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectRejections {
    /// `PROXY (CLUSTER, TYPE): message` of every proxy rejecting it now.
    pub rejected_by: Vec<String>,
    /// Recent NACK events (bounded; the count in status adds those newer than the last one it
    /// counted, so a bound only matters for more events than that between two status writes).
    pub events: Vec<NackRecord>,
}

/// One NACK counted against an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NackRecord {
    /// When it arrived (strictly increasing within a controller).
    pub at: Timestamp,
    /// `PROXY (CLUSTER, TYPE): message`.
    pub message: String,
}

/// The `proxyRejections` status of object `id`: the stored count plus the NACK events newer
/// than the last one it counted, and the proxies rejecting it now. `None` while it was never
/// rejected.
pub fn proxy_rejections(
    id: &ObjectId,
    proxies: &ProxyReport,
    old: Option<&ProxyRejections>,
) -> Option<ProxyRejections> {
    let mut rejected_by: Vec<String> = Vec::new();
    let mut events: Vec<&NackRecord> = Vec::new();
    for c in proxies.values() {
        if let Some(r) = c.rejections.get(id) {
            rejected_by.extend(r.rejected_by.iter().cloned());
            events.extend(r.events.iter());
        }
    }
    rejected_by.sort();
    rejected_by.dedup();
    let counted_until = old
        .and_then(|o| o.last_time.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok());
    let fresh: Vec<&NackRecord> = events
        .into_iter()
        .filter(|e| counted_until.is_none_or(|t| e.at > t))
        .collect();
    let last = fresh.iter().max_by_key(|e| e.at);
    let count = old.map_or(0, |o| o.count) + fresh.len() as u64;
    if count == 0 && rejected_by.is_empty() {
        return None;
    }
    Some(ProxyRejections {
        count,
        last_time: last
            .map(|e| e.at.to_string())
            .or_else(|| old.and_then(|o| o.last_time.clone())),
        last_message: last
            .map(|e| e.message.clone())
            .or_else(|| old.and_then(|o| o.last_message.clone())),
        rejected_by,
    })
}

impl ClusterProxies {
    /// All connected proxies.
    pub fn total(&self) -> u32 {
        self.gateways + self.sidecars
    }
}

/// Connected proxies by cluster name.
pub type ProxyReport = BTreeMap<String, ClusterProxies>;

/// Condition types (Gateway API's, plus `RolledOut`).
pub mod types {
    /// The object is valid and not in conflict with another.
    pub const ACCEPTED: &str = "Accepted";
    /// Every reference (Secret, cluster, AccessPoint) resolves.
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    /// The object is in the configuration of at least one cluster's proxies.
    pub const PROGRAMMED: &str = "Programmed";
    /// Every placed cluster's proxies acknowledged it.
    pub const ROLLED_OUT: &str = "RolledOut";
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: kind.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// `new`, with the transition times of `old` kept for every condition whose status did not
/// change.
pub fn merge_conditions(old: &[Condition], mut new: Vec<Condition>) -> Vec<Condition> {
    for c in &mut new {
        if let Some(o) = old
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
    new
}

fn generation(meta: &ObjectMeta) -> Option<i64> {
    meta.generation
}

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// References of an AccessPoint that do not resolve, each as a message naming it.
pub fn unresolved_refs(ap: &AccessPoint, s: &Snapshot) -> Vec<String> {
    let ns = namespace(&ap.metadata);
    let mut out = Vec::new();
    for (i, l) in ap.spec.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        let refs = [
            ("credentialRef", tls.credential_ref.as_ref(), "tls.crt"),
            ("caRef", tls.ca_ref.as_ref(), "ca.crt"),
        ];
        for (field, r, key) in refs {
            let Some(r) = r else { continue };
            let rns = r.namespace.as_deref().unwrap_or(ns);
            match s.secret(rns, &r.name) {
                None => out.push(format!(
                    "spec.listeners[{i}].tls.{field}: Secret {rns}/{} does not exist; create it \
                     (e.g. kubectl create secret tls) or fix the name",
                    r.name
                )),
                Some(secret) if !has_key(secret, key) => out.push(format!(
                    "spec.listeners[{i}].tls.{field}: Secret {rns}/{} has no {key:?} key",
                    r.name
                )),
                Some(_) => {}
            }
        }
    }
    out
}

/// References of an ExternalService (origination CA and client certificate) that do not
/// resolve.
pub fn external_unresolved(x: &ExternalService, s: &Snapshot) -> Vec<String> {
    let ns = namespace(&x.metadata);
    let Some(o) = x.spec.egress.tls_origination.as_ref() else {
        return Vec::new();
    };
    let refs = [
        ("caRef", o.ca_ref.as_ref()),
        ("clientCertificateRef", o.client_certificate_ref.as_ref()),
    ];
    refs.into_iter()
        .filter_map(|(field, r)| {
            let r = r?;
            let rns = r.namespace.as_deref().unwrap_or(ns);
            s.secret(rns, &r.name).is_none().then(|| {
                format!(
                    "spec.egress.tlsOrigination.{field}: Secret {rns}/{} does not exist",
                    r.name
                )
            })
        })
        .collect()
}

fn has_key(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}

/// The PEM text under `key` of a Secret (`data` is base64 on the wire and bytes here;
/// `stringData` is text).
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

/// The state of the serving certificate of an AccessPoint's first credential.
fn certificate(ap: &AccessPoint, s: &Snapshot, now: Timestamp) -> Option<CertificateStatus> {
    let ns = namespace(&ap.metadata);
    let r = ap
        .spec
        .listeners
        .iter()
        .find_map(|l| l.tls.as_ref()?.credential_ref.as_ref())?;
    let rns = r.namespace.as_deref().unwrap_or(ns);
    let Some(secret) = s.secret(rns, &r.name) else {
        return Some(CertificateStatus {
            state: "Missing".to_owned(),
            ..Default::default()
        });
    };
    let version = secret.metadata.resource_version.clone();
    let not_after = secret_text(secret, "tls.crt").and_then(|pem| not_after(&pem));
    let state = match not_after {
        None => "Invalid",
        Some(t) if t <= now => "Expired",
        Some(t) if t.as_second() - now.as_second() < 14 * 24 * 3600 => "Expiring",
        Some(_) => "Installed",
    };
    Some(CertificateStatus {
        state: state.to_owned(),
        version,
        not_after: not_after.map(|t| t.to_string()),
    })
}

/// Expiry of the first certificate in a PEM chain.
pub fn not_after(pem: &str) -> Option<Timestamp> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = block.parse_x509().ok()?;
    Timestamp::from_second(cert.validity().not_after.timestamp()).ok()
}

/// The status an AccessPoint should have.
pub fn access_point_status(
    ap: &AccessPoint,
    verdict: &AccessPointVerdict,
    vip: Option<&Result<IpAddr, String>>,
    s: &Snapshot,
    proxies: &ProxyReport,
    now: Timestamp,
) -> AccessPointStatus {
    let generation = generation(&ap.metadata);
    let old = ap.status.as_ref();
    let refs = unresolved_refs(ap, s);
    let placement_msgs: Vec<String> = verdict
        .placed
        .issues
        .iter()
        .map(ToString::to_string)
        .collect();
    let accepted = verdict.accepted();
    let programmed = accepted && refs.is_empty() && !verdict.placed.clusters.is_empty();
    let cond =
        |kind, ok, reason: &str, msg: String| condition(kind, ok, reason, msg, generation, now);

    let id = ObjectId::of("AccessPoint", &ap.metadata);
    let clusters: Vec<ClusterRolloutStatus> = verdict
        .placed
        .clusters
        .iter()
        .map(|name| {
            let p = proxies.get(name).cloned().unwrap_or_default();
            let rejected = p
                .rejections
                .get(&id)
                .map(|r| r.rejected_by.clone())
                .unwrap_or_default();
            // A gateway rejecting *other* objects' changes still runs this AccessPoint's
            // configuration as it was accepted last: it counts as applied for this one.
            let (phase, message) = if !programmed {
                (ClusterRolloutPhase::Pending, None)
            } else if p.gateways == 0 {
                (
                    ClusterRolloutPhase::Pending,
                    Some("no gateway of this cluster is connected".to_owned()),
                )
            } else if !rejected.is_empty() {
                (
                    ClusterRolloutPhase::Failed,
                    Some(format!("rejected by {}", rejected.join("; "))),
                )
            } else if p.gateways_acked + p.gateways_nacked >= p.gateways {
                (ClusterRolloutPhase::Applied, None)
            } else {
                (ClusterRolloutPhase::Applying, None)
            };
            ClusterRolloutStatus {
                name: name.clone(),
                revision: generation.unwrap_or(0),
                phase,
                proxies_acked: p.gateways_acked,
                proxies_total: p.gateways,
                message,
            }
        })
        .collect();
    let applied = clusters
        .iter()
        .filter(|c| c.phase == ClusterRolloutPhase::Applied)
        .count();
    let failed = clusters
        .iter()
        .any(|c| c.phase == ClusterRolloutPhase::Failed);
    let routing_configured = programmed && applied == clusters.len();
    let phase = if !accepted {
        AccessPointPhase::Invalid
    } else if !programmed || applied == 0 && !failed {
        if clusters
            .iter()
            .any(|c| c.phase == ClusterRolloutPhase::Applying)
        {
            AccessPointPhase::RollingOut
        } else {
            AccessPointPhase::Pending
        }
    } else if routing_configured {
        AccessPointPhase::Ready
    } else if failed {
        AccessPointPhase::Degraded
    } else {
        AccessPointPhase::RollingOut
    };

    let mut conditions = Vec::new();
    conditions.push(if accepted {
        cond(types::ACCEPTED, true, "Accepted", String::new())
    } else {
        let msg = verdict
            .conflicts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        cond(types::ACCEPTED, false, "HostConflict", msg)
    });
    let mut unresolved = refs.clone();
    unresolved.extend(placement_msgs);
    conditions.push(if unresolved.is_empty() {
        cond(types::RESOLVED_REFS, true, "ResolvedRefs", String::new())
    } else {
        let reason = if refs.is_empty() {
            "InvalidPlacement"
        } else {
            "InvalidCertificateRef"
        };
        cond(types::RESOLVED_REFS, false, reason, unresolved.join("; "))
    });
    conditions.push(if programmed {
        cond(types::PROGRAMMED, true, "Programmed", String::new())
    } else if !accepted {
        cond(
            types::PROGRAMMED,
            false,
            "Invalid",
            "not accepted; see the Accepted condition".to_owned(),
        )
    } else if !refs.is_empty() {
        cond(
            types::PROGRAMMED,
            false,
            "RefNotResolved",
            "nothing is programmed until every reference resolves; see ResolvedRefs".to_owned(),
        )
    } else {
        cond(
            types::PROGRAMMED,
            false,
            "NoClusters",
            "placed on no registered cluster".to_owned(),
        )
    });
    conditions.push(cond(
        types::ROLLED_OUT,
        routing_configured,
        if routing_configured {
            "RolledOut"
        } else {
            "Pending"
        },
        format!(
            "{applied}/{} placed clusters acknowledged generation {}",
            clusters.len(),
            generation.unwrap_or(0)
        ),
    ));
    let (vip, vip_problem) = match vip {
        Some(Ok(a)) => (Some(a.to_string()), None),
        Some(Err(e)) => (None, Some(e.clone())),
        None => (None, None),
    };
    if let Some(problem) = vip_problem {
        // The VIP is the L4 side; L7 routing works without it, so it degrades Programmed's
        // message rather than refusing the object.
        if let Some(c) = conditions.iter_mut().find(|c| c.type_ == types::PROGRAMMED) {
            c.message = if c.message.is_empty() {
                format!("no VIP: {problem}")
            } else {
                format!("{}; no VIP: {problem}", c.message)
            };
        }
    }
    AccessPointStatus {
        observed_generation: generation,
        phase: Some(phase),
        vip,
        fqdn: ap.spec.hosts.first().cloned(),
        certificate: certificate(ap, s, now),
        routing_configured: Some(routing_configured),
        clusters,
        rollout: old.and_then(|o| o.rollout.clone()),
        proxy_rejections: proxy_rejections(
            &id,
            proxies,
            old.and_then(|o| o.proxy_rejections.as_ref()),
        ),
        conditions: merge_conditions(
            old.map(|o| o.conditions.as_slice()).unwrap_or_default(),
            conditions,
        ),
    }
}

/// The status a Cluster should have.
pub fn cluster_status(
    c: &Cluster,
    proxies: Option<&ClusterProxies>,
    now: Timestamp,
) -> ClusterStatus {
    let generation = generation(&c.metadata);
    let p = proxies.cloned().unwrap_or_default();
    let declared = !c.spec.gateways.is_empty();
    let (phase, reason, message) = if p.total() == 0 {
        (
            ClusterPhase::Unreachable,
            "NoProxies",
            "no proxy of this cluster is connected to the controller".to_owned(),
        )
    } else if !p.nacks.is_empty() {
        (
            ClusterPhase::Degraded,
            "Rejected",
            format!("configuration rejected by {}", p.nacks.join("; ")),
        )
    } else if declared && p.gateways == 0 {
        (
            ClusterPhase::Degraded,
            "NoGateway",
            "sidecars are connected but no gateway is".to_owned(),
        )
    } else {
        (
            ClusterPhase::Ready,
            "Ready",
            format!(
                "{} gateway(s), {} sidecar(s) connected",
                p.gateways, p.sidecars
            ),
        )
    };
    let old = c.status.as_ref();
    let conditions = vec![
        condition(types::ACCEPTED, true, "Accepted", "", generation, now),
        condition(
            types::PROGRAMMED,
            phase == ClusterPhase::Ready,
            reason,
            message,
            generation,
            now,
        ),
    ];
    ClusterStatus {
        observed_generation: generation,
        phase: Some(phase),
        proxies: Some(p.total()),
        // Kept from the old status when no proxy is heard from, so the last contact stays visible.
        last_seen: p
            .last_seen
            .map(|t| t.to_string())
            .or_else(|| old.and_then(|o| o.last_seen.clone())),
        conditions: merge_conditions(
            old.map(|o| o.conditions.as_slice()).unwrap_or_default(),
            conditions,
        ),
    }
}

/// The status a NameService should have: its gateway endpoints and whether its targets resolve.
pub fn name_service_status(
    ns: &NameService,
    serving_clusters: &[String],
    issues: &[TargetIssue],
    s: &Snapshot,
    now: Timestamp,
) -> NameServiceStatus {
    let generation = generation(&ns.metadata);
    let mut endpoints = Vec::new();
    for name in serving_clusters {
        let Some(c) = s.cluster(name) else { continue };
        for g in &c.spec.gateways {
            endpoints.push(NameServiceEndpoint {
                cluster: name.clone(),
                address: g.address.clone(),
                locality: c.spec.locality.to_string(),
            });
        }
    }
    let msgs: Vec<String> = issues.iter().map(ToString::to_string).collect();
    let conditions = vec![
        condition(types::ACCEPTED, true, "Accepted", "", generation, now),
        if msgs.is_empty() {
            condition(
                types::RESOLVED_REFS,
                true,
                "ResolvedRefs",
                "",
                generation,
                now,
            )
        } else {
            condition(
                types::RESOLVED_REFS,
                false,
                "TargetNotResolved",
                msgs.join("; "),
                generation,
                now,
            )
        },
        if endpoints.is_empty() {
            condition(
                types::PROGRAMMED,
                false,
                "NoEndpoints",
                "no target is served by any cluster's gateway",
                generation,
                now,
            )
        } else {
            condition(types::PROGRAMMED, true, "Programmed", "", generation, now)
        },
    ];
    NameServiceStatus {
        observed_generation: generation,
        endpoints,
        // Filled in by the caller from the proxy report (`proxy_rejections`).
        proxy_rejections: ns.status.as_ref().and_then(|o| o.proxy_rejections.clone()),
        conditions: merge_conditions(
            ns.status
                .as_ref()
                .map(|o| o.conditions.as_slice())
                .unwrap_or_default(),
            conditions,
        ),
    }
}

/// The status an ExternalService should have: the clusters whose egress gateways carry it.
pub fn external_service_status(
    x: &ExternalService,
    egress_clusters: Vec<String>,
    unresolved: &[String],
    now: Timestamp,
) -> ExternalServiceStatus {
    let generation = generation(&x.metadata);
    let conditions = vec![
        condition(types::ACCEPTED, true, "Accepted", "", generation, now),
        if unresolved.is_empty() {
            condition(
                types::RESOLVED_REFS,
                true,
                "ResolvedRefs",
                "",
                generation,
                now,
            )
        } else {
            condition(
                types::RESOLVED_REFS,
                false,
                "InvalidRef",
                unresolved.join("; "),
                generation,
                now,
            )
        },
        condition(
            types::PROGRAMMED,
            unresolved.is_empty() && !egress_clusters.is_empty(),
            if egress_clusters.is_empty() {
                "NoEgressGateway"
            } else {
                "Programmed"
            },
            if egress_clusters.is_empty() {
                "no registered cluster has a gateway to carry this egress traffic"
            } else {
                ""
            },
            generation,
            now,
        ),
    ];
    ExternalServiceStatus {
        observed_generation: generation,
        egress_clusters,
        // Filled in by the caller from the proxy report (`proxy_rejections`).
        proxy_rejections: x.status.as_ref().and_then(|o| o.proxy_rejections.clone()),
        conditions: merge_conditions(
            x.status
                .as_ref()
                .map(|o| o.conditions.as_slice())
                .unwrap_or_default(),
            conditions,
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rejections_count_every_nack_once_across_writes_and_restarts() {
        let id = ObjectId {
            kind: "AccessPoint",
            namespace: "security".into(),
            name: "vault".into(),
        };
        let t0: Timestamp = "2026-12-03T07:00:00Z".parse().unwrap();
        let ev = |s: i64, m: &str| NackRecord {
            at: t0
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(s))
                .unwrap(),
            message: m.into(),
        };
        let mut report = ProxyReport::new();
        report.entry("c1".into()).or_default().rejections.insert(
            id.clone(),
            ObjectRejections {
                rejected_by: vec!["gw (c1, LDS): bad cert".into()],
                events: vec![ev(1, "first"), ev(2, "second")],
            },
        );
        assert_eq!(proxy_rejections(&id, &ProxyReport::new(), None), None);
        let first = proxy_rejections(&id, &report, None).unwrap();
        assert_eq!(first.count, 2);
        assert_eq!(first.last_message.as_deref(), Some("second"));
        assert_eq!(first.rejected_by, ["gw (c1, LDS): bad cert"]);
        // Written, then computed again from the same events: nothing is counted twice.
        assert_eq!(
            proxy_rejections(&id, &report, Some(&first)),
            Some(first.clone())
        );
        // A new event counts once; an old one is not counted again.
        if let Some(c) = report.get_mut("c1") {
            c.rejections
                .get_mut(&id)
                .unwrap()
                .events
                .push(ev(3, "third"));
        }
        let second = proxy_rejections(&id, &report, Some(&first)).unwrap();
        assert_eq!(second.count, 3);
        // A restarted controller remembers nothing: the stored count stays, nobody rejects now.
        let after_restart = proxy_rejections(&id, &ProxyReport::new(), Some(&second)).unwrap();
        assert_eq!(after_restart.count, 3);
        assert!(after_restart.rejected_by.is_empty());
    }
}
