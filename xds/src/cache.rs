//! Snapshots of resources per proxy group, and the cache streams watch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use envoy_types::pb::google::protobuf::value::Kind;
use serde::Serialize;
use tokio::sync::watch;

use crate::{Any, Node, content_hash, resource_name, type_url};

/// Names a set of proxies that receive the same configuration (for example all sidecars of
/// namespace `retail` in cluster `c1`). The caller derives it from the node with a
/// [`crate::GroupFn`].
pub type GroupKey = String;

/// Why a [`Snapshot`] could not be built from a list of resources.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The crate cannot read the name of this type; use [`Snapshot::set_type`] with explicit names.
    #[error(
        "cannot name a resource of type {0}: only LDS/SRDS/RDS/CDS/EDS/SDS types are named \
         automatically; pass (name, resource) pairs to Snapshot::set_type"
    )]
    UnknownType(String),
    /// The bytes do not decode as the type the `Any` claims.
    #[error("resource of type {0} does not decode: the translator produced a corrupt Any")]
    Undecodable(String),
    /// Two resources of one type share a name; Envoy would keep only one of them.
    #[error("duplicate {type_url} resource {name:?}: resource names must be unique per type")]
    Duplicate {
        /// The type URL.
        type_url: String,
        /// The repeated name.
        name: String,
    },
}

/// One resource in a snapshot with its content version.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedResource {
    /// The resource.
    pub resource: Any,
    /// Hash of the resource's bytes: the per-resource version of delta xDS.
    pub version: String,
}

/// All resources of one type in a snapshot, by name, with a version for the whole set.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct TypeResources {
    version: String,
    resources: BTreeMap<String, VersionedResource>,
}

impl TypeResources {
    /// Builds the set; the versions are content hashes, so equal content gives equal versions
    /// across snapshots and across controller restarts.
    pub fn new(resources: impl IntoIterator<Item = (String, Any)>) -> Self {
        let resources: BTreeMap<String, VersionedResource> = resources
            .into_iter()
            .map(|(name, resource)| {
                let version = content_hash([resource.type_url.as_bytes(), &resource.value]);
                (name, VersionedResource { resource, version })
            })
            .collect();
        let version = content_hash(
            resources
                .iter()
                .flat_map(|(n, r)| [n.as_bytes(), r.version.as_bytes()]),
        );
        TypeResources { version, resources }
    }

    /// The version of the whole set (state-of-the-world `version_info`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The resource called `name`.
    pub fn get(&self, name: &str) -> Option<&VersionedResource> {
        self.resources.get(name)
    }

    /// Resources by name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &VersionedResource)> {
        self.resources.iter().map(|(n, r)| (n.as_str(), r))
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }
}

/// Everything one proxy group should have: resources by type URL and name.
///
/// A type that is absent is served as an empty set, so that a proxy subscribed to it completes
/// its initial fetch instead of waiting for a timeout.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Snapshot {
    types: BTreeMap<String, TypeResources>,
}

/// The version of an empty or absent type.
pub(crate) fn empty_version() -> String {
    TypeResources::new([]).version
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a snapshot from resources of the [`type_url`] types, named by [`resource_name`].
    pub fn from_resources(resources: impl IntoIterator<Item = Any>) -> Result<Self, SnapshotError> {
        let mut by_type: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
        for any in resources {
            if type_url::push_rank(&any.type_url) == type_url::PUSH_ORDER.len() {
                return Err(SnapshotError::UnknownType(any.type_url));
            }
            let Some(name) = resource_name(&any) else {
                return Err(SnapshotError::Undecodable(any.type_url));
            };
            let entry = by_type.entry(any.type_url.clone()).or_default();
            if entry.contains_key(&name) {
                return Err(SnapshotError::Duplicate {
                    type_url: any.type_url,
                    name,
                });
            }
            entry.insert(name, any);
        }
        let mut snapshot = Snapshot::new();
        for (t, resources) in by_type {
            snapshot.set_type(t, resources);
        }
        Ok(snapshot)
    }

    /// Replaces the resources of one type, with explicit names.
    pub fn set_type(
        &mut self,
        type_url: impl Into<String>,
        resources: impl IntoIterator<Item = (String, Any)>,
    ) {
        self.types
            .insert(type_url.into(), TypeResources::new(resources));
    }

    /// Builder form of [`Snapshot::set_type`].
    #[must_use]
    pub fn with_type(
        mut self,
        type_url: impl Into<String>,
        resources: impl IntoIterator<Item = (String, Any)>,
    ) -> Self {
        self.set_type(type_url, resources);
        self
    }

    /// The resources of one type.
    pub fn get(&self, type_url: &str) -> Option<&TypeResources> {
        self.types.get(type_url)
    }

    /// The type URLs present.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// The version a proxy ACKs for `type_url` once it holds this snapshot (the empty-set version
    /// for an absent type). The controller compares it with [`crate::TypeStatus::acked_version`].
    pub fn version(&self, type_url: &str) -> String {
        self.types
            .get(type_url)
            .map_or_else(empty_version, |t| t.version.clone())
    }

    fn same_versions(&self, other: &Snapshot) -> bool {
        self.types.len() == other.types.len()
            && self
                .types
                .iter()
                .zip(other.types.iter())
                .all(|((ta, a), (tb, b))| ta == tb && a.version == b.version)
    }
}

/// What a proxy says about itself: Envoy's node plus the metadata contract of `docs/xds.md`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
pub struct NodeInfo {
    /// `node.id`: unique per proxy.
    pub id: String,
    /// `node.cluster` (Envoy's "service cluster"; Causeway's bootstrap sets it to the federation
    /// cluster name too).
    pub node_cluster: String,
    /// Metadata `cluster`: the federation member cluster the proxy runs in.
    pub cluster: String,
    /// Metadata `role`: `gateway`, `sidecar` or `l4lb`.
    pub role: String,
    /// Metadata `namespace` (sidecars): decides which services the proxy may see.
    pub namespace: String,
    /// `node.locality`, or metadata `locality` as `region/zone/subzone` when the node has none.
    pub locality: Locality,
    /// Every string-valued metadata field, including the ones above.
    pub metadata: BTreeMap<String, String>,
}

/// Region, zone and subzone of a proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Default)]
pub struct Locality {
    /// Region, e.g. `us-west`.
    pub region: String,
    /// Zone, e.g. `us-west-a`.
    pub zone: String,
    /// Subzone, often empty.
    pub subzone: String,
}

impl NodeInfo {
    /// Reads the node; missing fields are empty strings.
    pub fn from_node(node: &Node) -> Self {
        let metadata: BTreeMap<String, String> = node
            .metadata
            .iter()
            .flat_map(|s| s.fields.iter())
            .filter_map(|(k, v)| match &v.kind {
                Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                _ => None,
            })
            .collect();
        let field = |k: &str| metadata.get(k).cloned().unwrap_or_default();
        let locality = match &node.locality {
            Some(l) if !(l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty()) => {
                Locality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    subzone: l.sub_zone.clone(),
                }
            }
            _ => {
                let text = field("locality");
                let mut parts = text.splitn(3, '/').map(str::to_owned);
                Locality {
                    region: parts.next().unwrap_or_default(),
                    zone: parts.next().unwrap_or_default(),
                    subzone: parts.next().unwrap_or_default(),
                }
            }
        };
        NodeInfo {
            id: node.id.clone(),
            node_cluster: node.cluster.clone(),
            cluster: field("cluster"),
            role: field("role"),
            namespace: field("namespace"),
            locality,
            metadata,
        }
    }

    /// A node as a client sends it: `id`, `node_cluster` (or `cluster` when empty), locality,
    /// and metadata `cluster`, `role`, `namespace` and `locality` (`region/zone/subzone`) on top
    /// of [`NodeInfo::metadata`]. The gateway and balancer build their node with this.
    pub fn to_node(&self) -> Node {
        use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
        use envoy_types::pb::google::protobuf::{Struct, Value};
        let mut fields = self.metadata.clone();
        let l = &self.locality;
        for (k, v) in [
            ("cluster", &self.cluster),
            ("role", &self.role),
            ("namespace", &self.namespace),
        ] {
            fields.insert(k.to_owned(), v.clone());
        }
        fields.insert(
            "locality".into(),
            format!("{}/{}/{}", l.region, l.zone, l.subzone),
        );
        Node {
            id: self.id.clone(),
            cluster: if self.node_cluster.is_empty() {
                self.cluster.clone()
            } else {
                self.node_cluster.clone()
            },
            metadata: Some(Struct {
                fields: fields
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            Value {
                                kind: Some(Kind::StringValue(v)),
                            },
                        )
                    })
                    .collect(),
            }),
            locality: Some(EnvoyLocality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.subzone.clone(),
            }),
            user_agent_name: "causeway".into(),
            ..Default::default()
        }
    }

    /// The default grouping: `role/cluster/namespace` (metadata `cluster` falling back to
    /// `node.cluster`). Proxies that agree on all three get the same configuration.
    pub fn default_group_key(&self) -> GroupKey {
        let cluster = if self.cluster.is_empty() {
            &self.node_cluster
        } else {
            &self.cluster
        };
        format!("{}/{}/{}", self.role, cluster, self.namespace)
    }
}

type Slot = watch::Sender<Option<Arc<Snapshot>>>;

/// Snapshots by proxy group. Cloning shares the cache.
///
/// Setting a snapshot wakes the streams of that group, which push what changed. A group without
/// a snapshot gets no responses yet: its proxies wait rather than receive an empty config.
#[derive(Clone, Default)]
pub struct SnapshotCache {
    groups: Arc<RwLock<HashMap<GroupKey, Slot>>>,
}

impl std::fmt::Debug for SnapshotCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("groups", &self.groups())
            .finish()
    }
}

impl SnapshotCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the snapshot of a group and notifies its streams, unless every type version is
    /// unchanged (then nothing is pushed). Returns the snapshot as stored.
    pub fn set_snapshot(&self, group: impl Into<GroupKey>, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        let group = group.into();
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        let slot = groups
            .entry(group)
            .or_insert_with(|| watch::Sender::new(None));
        let new = snapshot.clone();
        slot.send_if_modified(move |current| {
            if current.as_ref().is_some_and(|c| c.same_versions(&new)) {
                return false;
            }
            *current = Some(new);
            true
        });
        snapshot
    }

    /// The current snapshot of a group.
    pub fn snapshot(&self, group: &str) -> Option<Arc<Snapshot>> {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        groups.get(group).and_then(|s| s.borrow().clone())
    }

    /// Forgets a group's snapshot. Its connected proxies keep what they have (static stability);
    /// they get responses again when a snapshot is set.
    pub fn clear_snapshot(&self, group: &str) {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = groups.get(group) {
            slot.send_replace(None);
        }
    }

    /// The groups that have a snapshot.
    pub fn groups(&self) -> Vec<GroupKey> {
        let groups = self.groups.read().unwrap_or_else(PoisonError::into_inner);
        let mut keys: Vec<GroupKey> = groups
            .iter()
            .filter(|(_, s)| s.borrow().is_some())
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// A receiver that sees every snapshot of the group, starting with the current one.
    pub(crate) fn watch(&self, group: &str) -> watch::Receiver<Option<Arc<Snapshot>>> {
        let mut groups = self.groups.write().unwrap_or_else(PoisonError::into_inner);
        groups
            .entry(group.to_owned())
            .or_insert_with(|| watch::Sender::new(None))
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn cluster(name: &str) -> Any {
        pack(&Cluster {
            name: name.into(),
            ..Default::default()
        })
    }

    #[test]
    fn from_resources_names_and_versions() {
        let s = Snapshot::from_resources([cluster("a"), cluster("b")]).unwrap();
        let cds = s.get(type_url::CLUSTER).unwrap();
        assert_eq!(cds.len(), 2);
        assert!(cds.get("a").is_some());
        let again = Snapshot::from_resources([cluster("b"), cluster("a")]).unwrap();
        assert_eq!(
            s.version(type_url::CLUSTER),
            again.version(type_url::CLUSTER)
        );
        let other = Snapshot::from_resources([cluster("a")]).unwrap();
        assert_ne!(
            s.version(type_url::CLUSTER),
            other.version(type_url::CLUSTER)
        );
        assert_eq!(s.version(type_url::LISTENER), empty_version());
    }

    #[test]
    fn from_resources_rejects_duplicates_and_unknown_types() {
        assert!(matches!(
            Snapshot::from_resources([cluster("a"), cluster("a")]),
            Err(SnapshotError::Duplicate { .. })
        ));
        let odd = Any {
            type_url: "type.googleapis.com/foo.Bar".into(),
            value: vec![],
        };
        assert!(matches!(
            Snapshot::from_resources([odd]),
            Err(SnapshotError::UnknownType(_))
        ));
    }

    #[test]
    fn node_info_reads_metadata_and_locality() {
        let s = |v: &str| Value {
            kind: Some(Kind::StringValue(v.into())),
        };
        let node = Node {
            id: "sidecar-1".into(),
            cluster: "c1".into(),
            metadata: Some(Struct {
                fields: [
                    ("cluster".to_string(), s("c1")),
                    ("role".to_string(), s("sidecar")),
                    ("namespace".to_string(), s("retail")),
                    ("locality".to_string(), s("x/y")),
                ]
                .into_iter()
                .collect(),
            }),
            locality: Some(EnvoyLocality {
                region: "us-west".into(),
                zone: "us-west-a".into(),
                sub_zone: String::new(),
            }),
            ..Default::default()
        };
        let info = NodeInfo::from_node(&node);
        assert_eq!(info.role, "sidecar");
        assert_eq!(info.locality.zone, "us-west-a");
        assert_eq!(info.default_group_key(), "sidecar/c1/retail");
        let bare = NodeInfo::from_node(&Node {
            metadata: node.metadata.clone(),
            ..Default::default()
        });
        assert_eq!(bare.locality.region, "x");
        assert_eq!(bare.locality.zone, "y");
        let back = NodeInfo::from_node(&info.to_node());
        assert_eq!(back.default_group_key(), info.default_group_key());
        assert_eq!(back.locality, info.locality);
    }

    #[tokio::test]
    async fn set_snapshot_notifies_only_on_change() {
        let cache = SnapshotCache::new();
        let mut rx = cache.watch("g");
        assert!(rx.borrow_and_update().is_none());
        cache.set_snapshot("g", Snapshot::from_resources([cluster("a")]).unwrap());
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        cache.set_snapshot("g", Snapshot::from_resources([cluster("a")]).unwrap());
        assert!(!rx.has_changed().unwrap());
        cache.set_snapshot("g", Snapshot::from_resources([cluster("b")]).unwrap());
        assert!(rx.has_changed().unwrap());
        assert_eq!(cache.groups(), vec!["g".to_string()]);
    }
}
