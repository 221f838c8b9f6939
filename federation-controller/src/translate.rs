//! The translator: a pure function from the stored resources to what every member cluster
//! should have. No I/O happens here; the controller feeds it snapshots and ships its output.
//!
//! So far it produces the Istio objects of each member cluster ([`istio`]); the gateway and
//! sidecar xDS resources join it with the xDS work.

use std::collections::BTreeMap;
use std::sync::Arc;

use causeway_crds::istio::WorkloadEntry;
use causeway_crds::v1alpha1::{AccessPoint, Cluster, ExternalService, NameService};
use k8s_openapi::api::core::v1::Secret;

use crate::placement::{self, HostConflict, ObjectKey, Placed, PlacementIssue, Workload};

pub mod incremental;
pub mod istio;
pub mod locality;
pub mod proxy;

/// Everything the translator reads: one consistent snapshot of the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Registered member clusters.
    pub clusters: Vec<Arc<Cluster>>,
    /// Published services.
    pub access_points: Vec<Arc<AccessPoint>>,
    /// Global names.
    pub name_services: Vec<Arc<NameService>>,
    /// Backend endpoints outside Kubernetes (standalone mode), Istio's WorkloadEntry.
    pub workload_entries: Vec<Arc<WorkloadEntry>>,
    /// External hosts reached through egress gateways.
    pub external_services: Vec<Arc<ExternalService>>,
    /// Certificates, keys and CA bundles that listeners and origination refer to.
    pub secrets: Vec<Arc<Secret>>,
}

impl Snapshot {
    /// The Secret `name` in `namespace`.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets
            .iter()
            .find(|s| {
                s.metadata.name.as_deref() == Some(name)
                    && s.metadata.namespace.as_deref().unwrap_or("default") == namespace
            })
            .map(|s| &**s)
    }

    /// The Cluster called `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .map(|c| &**c)
    }
}

/// The translator's judgement of one AccessPoint, which the status writer turns into
/// conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AccessPointVerdict {
    /// Where it is placed.
    pub placed: Placed,
    /// Hosts it lost to older AccessPoints; non-empty means `Accepted=False, HostConflict`.
    pub conflicts: Vec<HostConflict>,
}

impl AccessPointVerdict {
    /// Whether the AccessPoint is programmed anywhere.
    pub fn accepted(&self) -> bool {
        self.conflicts.is_empty()
    }
}

/// The judgement of every AccessPoint of a snapshot.
pub fn judge_access_points(s: &Snapshot) -> BTreeMap<ObjectKey, AccessPointVerdict> {
    let workloads: Vec<Workload<'_>> = s
        .workload_entries
        .iter()
        .map(|w| Workload {
            namespace: w.metadata.namespace.as_deref().unwrap_or("default"),
            labels: &w.spec.labels,
        })
        .collect();
    let mut lost = placement::host_owners(&s.access_points);
    s.access_points
        .iter()
        .map(|ap| {
            let key = object_key(&ap.metadata);
            let verdict = AccessPointVerdict {
                placed: placement::resolve_placement(ap, &s.clusters, &workloads),
                conflicts: lost.remove(&key).unwrap_or_default(),
            };
            (key, verdict)
        })
        .collect()
}

/// `namespace/name` of an object (namespace `default` when unset, as kubectl does).
pub fn object_key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectKey {
    (
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A reason a NameService target could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetIssue {
    /// The named AccessPoint does not exist in the NameService's namespace.
    UnknownAccessPoint(String),
    /// The AccessPoint exists but is refused or placed nowhere.
    AccessPointNotServing(String),
    /// No cluster has endpoints of the service.
    NoEndpoints(String),
}

impl std::fmt::Display for TargetIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetIssue::UnknownAccessPoint(a) => {
                write!(f, "AccessPoint {a:?} does not exist in this namespace")
            }
            TargetIssue::AccessPointNotServing(a) => {
                write!(
                    f,
                    "AccessPoint {a:?} is not served anywhere (see its status)"
                )
            }
            TargetIssue::NoEndpoints(s) => write!(f, "no cluster has endpoints of service {s}"),
        }
    }
}

/// Which clusters serve a NameService, from its targets.
pub fn name_service_clusters(
    ns: &NameService,
    s: &Snapshot,
    verdicts: &BTreeMap<ObjectKey, AccessPointVerdict>,
) -> (Vec<String>, Vec<TargetIssue>) {
    let own_ns = ns.metadata.namespace.as_deref().unwrap_or("default");
    let mut clusters = Vec::new();
    let mut issues = Vec::new();
    for t in &ns.spec.targets {
        if let Some(ap) = &t.access_point {
            match verdicts.get(&(own_ns.to_owned(), ap.clone())) {
                None => issues.push(TargetIssue::UnknownAccessPoint(ap.clone())),
                Some(v) if !v.accepted() || v.placed.clusters.is_empty() => {
                    issues.push(TargetIssue::AccessPointNotServing(ap.clone()))
                }
                Some(v) => clusters.extend(v.placed.clusters.iter().cloned()),
            }
        } else if let Some(svc) = &t.service {
            let svc_ns = t.namespace.as_deref().unwrap_or(own_ns);
            let before = clusters.len();
            for w in &s.workload_entries {
                let labels = &w.spec.labels;
                if w.metadata.namespace.as_deref().unwrap_or("default") == svc_ns
                    && labels.get("app") == Some(svc)
                    && let Some(c) = labels.get(placement::CLUSTER_LABEL)
                    && s.clusters
                        .iter()
                        .any(|k| k.metadata.name.as_ref() == Some(c))
                {
                    clusters.push(c.clone());
                }
            }
            if clusters.len() == before {
                issues.push(TargetIssue::NoEndpoints(format!("{svc}.{svc_ns}")));
            }
        }
    }
    clusters.sort();
    clusters.dedup();
    (clusters, issues)
}

/// Placement problems rendered for status messages.
pub fn describe_issues(issues: &[PlacementIssue]) -> Vec<String> {
    issues.iter().map(ToString::to_string).collect()
}
