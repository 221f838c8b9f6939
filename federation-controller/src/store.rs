//! The controller's store: Kubernetes-shaped objects (`serde_json::Value`) with resource
//! versions, optimistic concurrency, generations, a separate status and watches.
//!
//! One trait, [`Store`], and two backends:
//! - [`memory::MemoryStore`]: in-process, optionally persisted to a data directory (write-ahead
//!   log plus snapshots) so a restart loses nothing;
//! - [`etcd::EtcdStore`]: etcd v3, the production store of standalone mode.
//!
//! Both behave the same way; `tests/store_conformance.rs` runs one suite against each. The
//! rules (also in `docs/store.md`):
//! - identity is (API group, kind, namespace, name); the version in `apiVersion` is kept as
//!   written but is not part of the identity, as in Kubernetes;
//! - resource versions come from one store-wide counter that only grows (etcd's revision);
//!   `metadata.resourceVersion` is its decimal string;
//! - the store owns `metadata.uid`, `creationTimestamp`, `resourceVersion` and `generation`:
//!   whatever a writer sends for them is ignored;
//! - [`Store::put`] is apply: create or replace everything except `status`, which only
//!   [`Store::put_status`] writes. `generation` starts at 1 and grows only when something
//!   outside `metadata` and `status` changes. A put that changes nothing writes nothing and
//!   reports [`Outcome::Unchanged`];
//! - [`Store::watch`] from resource version `v` yields every change after `v`, in order; when
//!   the history before `v` is gone (compacted) it yields [`StoreError::Gone`] and ends, and the
//!   caller lists again.

use std::fmt;
use std::pin::Pin;

use futures::Stream;
use futures::future::BoxFuture;
use serde_json::{Map, Value};

pub mod etcd;
pub mod leader;
pub mod memory;
mod object;
pub mod reflector;
pub mod selector;

pub use selector::{Selector, SelectorError};

/// A kind of object: its API group (`""` for the core group of `v1` Secrets) and kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceType {
    /// API group, e.g. `causeway.io`; empty for the core group.
    pub group: String,
    /// Kind, e.g. `AccessPoint`.
    pub kind: String,
}

impl ResourceType {
    /// A resource type from its group and kind.
    pub fn new(group: impl Into<String>, kind: impl Into<String>) -> Self {
        ResourceType {
            group: group.into(),
            kind: kind.into(),
        }
    }

    /// The resource type of objects written with this `apiVersion` (`causeway.io/v1alpha1`,
    /// `v1`) and kind.
    pub fn from_api_version(api_version: &str, kind: impl Into<String>) -> Self {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        ResourceType::new(group, kind)
    }

    /// The path segment shared by every object of this type: `GROUP/KIND/`, with `core` for
    /// the empty group. Both backends key objects under it.
    pub(crate) fn prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{group}/{}/", self.kind)
    }

    /// The prefix of the objects of one namespace (`None`: every namespace, and cluster-scoped
    /// objects).
    pub(crate) fn scope_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("{}{ns}/", self.prefix()),
            None => self.prefix(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if !self.group.is_empty() {
            object::check_segment("apiVersion", &self.group)?;
        }
        if self.kind.is_empty() || !self.kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(StoreError::invalid(
                "kind",
                format!(
                    "{:?} is not a kind: use letters and digits only, e.g. AccessPoint",
                    self.kind
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// Placeholder namespace segment of cluster-scoped objects in keys. Namespaces are DNS labels,
/// so none can be spelled `_`.
const CLUSTER_SCOPE: &str = "_";

/// The identity of one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Its type.
    pub resource: ResourceType,
    /// Its namespace; `None` for cluster-scoped kinds such as `Cluster`.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ObjectKey {
    /// A namespaced object's key.
    pub fn namespaced(
        resource: ResourceType,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        ObjectKey {
            resource,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// A cluster-scoped object's key.
    pub fn cluster_scoped(resource: ResourceType, name: impl Into<String>) -> Self {
        ObjectKey {
            resource,
            namespace: None,
            name: name.into(),
        }
    }

    /// The key of an object from its `apiVersion`, `kind`, `metadata.namespace` and
    /// `metadata.name`.
    pub fn of(object: &Value) -> Result<Self, StoreError> {
        let text = |field: &str, value: Option<&Value>| -> Result<Option<String>, StoreError> {
            match value {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(StoreError::invalid(field, "must be a string")),
            }
        };
        if !object.is_object() {
            return Err(StoreError::invalid(
                "",
                "an object must be a JSON/YAML mapping with apiVersion, kind and metadata",
            ));
        }
        let api_version = text("apiVersion", object.get("apiVersion"))?
            .ok_or_else(|| StoreError::invalid("apiVersion", "is required"))?;
        let kind = text("kind", object.get("kind"))?
            .ok_or_else(|| StoreError::invalid("kind", "is required"))?;
        let metadata = object.get("metadata");
        let name = text("metadata.name", metadata.and_then(|m| m.get("name")))?
            .ok_or_else(|| StoreError::invalid("metadata.name", "is required"))?;
        let namespace = text(
            "metadata.namespace",
            metadata.and_then(|m| m.get("namespace")),
        )?
        .filter(|ns| !ns.is_empty());
        let key = ObjectKey {
            resource: ResourceType::from_api_version(&api_version, kind),
            namespace,
            name,
        };
        key.check()?;
        Ok(key)
    }

    /// Refuses names that would not survive as one path segment of a key.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        self.resource.check()?;
        if let Some(ns) = &self.namespace {
            object::check_segment("metadata.namespace", ns)?;
        }
        object::check_segment("metadata.name", &self.name)
    }

    /// `GROUP/KIND/NAMESPACE/NAME` (`_` for the namespace of cluster-scoped objects).
    pub(crate) fn path(&self) -> String {
        format!(
            "{}{}/{}",
            self.resource.prefix(),
            self.namespace.as_deref().unwrap_or(CLUSTER_SCOPE),
            self.name
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.resource, self.name),
            None => write!(f, "{} {}", self.resource, self.name),
        }
    }
}

/// What a write expects to find; anything else fails without writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// No precondition (apply).
    #[default]
    Any,
    /// The object must not exist yet (create); otherwise [`StoreError::AlreadyExists`].
    Absent,
    /// The object must exist at exactly this resource version; otherwise
    /// [`StoreError::Conflict`] (or [`StoreError::NotFound`] when it does not exist).
    ResourceVersion(u64),
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The object did not exist.
    Created,
    /// The object changed.
    Updated,
    /// The object already was as written; nothing was written and no resource version used.
    Unchanged,
    /// The object was deleted.
    Deleted,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // kubectl's words, so `causeway apply` can print them as they are.
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Updated => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
        })
    }
}

/// One write of a [`Store::transaction`].
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// [`Store::put`] of this object.
    Put(Value, Expect),
    /// [`Store::put_status`]: the object and its new status.
    Status(ObjectKey, Value, Expect),
    /// [`Store::delete`].
    Delete(ObjectKey, Expect),
}

impl Write {
    /// The object this write is about.
    pub fn key(&self) -> Result<ObjectKey, StoreError> {
        let key = match self {
            Write::Put(object, _) => ObjectKey::of(object)?,
            Write::Status(key, _, _) | Write::Delete(key, _) => key.clone(),
        };
        key.check()?;
        Ok(key)
    }
}

/// Most writes one transaction may hold (etcd refuses transactions of more than 128
/// operations by default, and each write needs a comparison and an operation).
pub const MAX_TRANSACTION_WRITES: usize = 64;

/// The result of a write: what happened and the object as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// What the write did.
    pub outcome: Outcome,
    /// The stored object, with `metadata.resourceVersion` set.
    pub object: Value,
}

impl Applied {
    /// The stored object's resource version.
    pub fn resource_version(&self) -> u64 {
        resource_version(&self.object).unwrap_or(0)
    }
}

/// The result of a list: the matching objects, in key order, and the store's resource version
/// at the time of the list, from which a watch continues without missing anything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectList {
    /// Matching objects ordered by namespace and name.
    pub items: Vec<Value>,
    /// Resource version of the store when the list was read.
    pub resource_version: u64,
}

/// The kind of change a watch event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object changed (spec, metadata or status).
    Modified,
    /// The object was deleted; the event carries its last state.
    Deleted,
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Kubernetes' watch event type names.
        f.write_str(match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        })
    }
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (before it, for deletions), its
    /// `metadata.resourceVersion` set to [`WatchEvent::resource_version`].
    pub object: Value,
    /// The resource version of the change.
    pub resource_version: u64,
    /// For [`EventType::Modified`], the object before the change (with its own resource
    /// version); `None` otherwise. It lets [`WatchEvent::select`] tell objects that enter or
    /// leave a label selection.
    pub previous: Option<Value>,
}

impl WatchEvent {
    /// This event as seen by a watch with a label selector, with Kubernetes' semantics: a
    /// change that makes an object match is `Added`, one that makes it stop matching is
    /// `Deleted` (carrying its last matching state at the change's version), changes to
    /// objects that matched neither before nor after are not seen.
    pub fn select(self, selector: &Selector) -> Option<WatchEvent> {
        if selector.is_everything() {
            return Some(self);
        }
        let now = selector.matches(&self.object);
        match self.event_type {
            EventType::Added | EventType::Deleted => now.then_some(self),
            EventType::Modified => {
                let before = self.previous.as_ref().is_some_and(|p| selector.matches(p));
                match (before, now) {
                    (true, true) => Some(self),
                    (false, true) => Some(WatchEvent {
                        event_type: EventType::Added,
                        previous: None,
                        ..self
                    }),
                    (true, false) => {
                        let mut last = self.previous?;
                        object::set_resource_version(&mut last, self.resource_version);
                        Some(WatchEvent {
                            event_type: EventType::Deleted,
                            object: last,
                            resource_version: self.resource_version,
                            previous: None,
                        })
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

/// The stream a watch returns. It ends after an error.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// A store of Kubernetes-shaped objects. Object-safe: the controller holds an
/// `Arc<dyn Store>`.
pub trait Store: Send + Sync {
    /// The object with this key, `None` if there is none.
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Value>, StoreError>>;

    /// The objects of a type (in one namespace, or in all of them with `None`) whose labels
    /// match the selector.
    fn list<'a>(
        &'a self,
        resource: &'a ResourceType,
        namespace: Option<&'a str>,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<ObjectList, StoreError>>;

    /// Applies several writes to distinct objects atomically: either every precondition holds
    /// and every write happens, at one new resource version, or nothing is written and the
    /// first failing write's error is returned. Results are in the order of the writes
    /// (unchanged ones report the stored object). At most [`MAX_TRANSACTION_WRITES`] writes.
    fn transaction(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Vec<Applied>, StoreError>>;

    /// Creates or replaces an object (everything but `status`, which is kept), as apply does.
    fn put(&self, object: Value, expect: Expect) -> BoxFuture<'_, Result<Applied, StoreError>> {
        Box::pin(async move { single(self.transaction(vec![Write::Put(object, expect)]).await) })
    }

    /// Replaces an existing object's `status`; nothing else changes and `generation` stays.
    /// `Value::Null` removes the status.
    fn put_status<'a>(
        &'a self,
        key: &'a ObjectKey,
        status: Value,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Applied, StoreError>> {
        Box::pin(async move {
            single(
                self.transaction(vec![Write::Status(key.clone(), status, expect)])
                    .await,
            )
        })
    }

    /// Deletes an object and returns its last state, `metadata.resourceVersion` set to the
    /// deletion's resource version. [`StoreError::NotFound`] when there is none.
    fn delete<'a>(
        &'a self,
        key: &'a ObjectKey,
        expect: Expect,
    ) -> BoxFuture<'a, Result<Value, StoreError>> {
        Box::pin(async move {
            single(
                self.transaction(vec![Write::Delete(key.clone(), expect)])
                    .await,
            )
            .map(|applied| applied.object)
        })
    }

    /// Every change to objects of a type (in one namespace, or all with `None`) after resource
    /// version `from`, in resource version order. Start from an [`ObjectList`]'s version to see
    /// everything after the list. If the history after `from` is no longer kept, the stream's
    /// first item is [`StoreError::Gone`].
    fn watch<'a>(
        &'a self,
        resource: &'a ResourceType,
        namespace: Option<&'a str>,
        from: u64,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>>;

    /// The store's current resource version.
    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Forgets the change history up to and including `revision`: watches from before it get
    /// [`StoreError::Gone`]. Objects are not affected. Compacting to a version already
    /// compacted is a no-op.
    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Why a store operation failed. Messages name the object and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{key} not found")]
    NotFound {
        /// The object.
        key: String,
    },
    /// A create found the object already there.
    #[error("{key} already exists: apply it without the create precondition to replace it")]
    AlreadyExists {
        /// The object.
        key: String,
    },
    /// A resource version precondition failed: someone else changed the object first.
    #[error(
        "{key} has been modified: the write expected resourceVersion {expected} but the store \
         has {actual}; read the object again, reapply the change and retry"
    )]
    Conflict {
        /// The object.
        key: String,
        /// The resource version the write expected.
        expected: u64,
        /// The resource version in the store.
        actual: u64,
    },
    /// A watch asked for history the store no longer keeps.
    #[error(
        "resource version {requested} is too old: the store keeps changes after {oldest} only; \
         list again and watch from the list's resourceVersion"
    )]
    Gone {
        /// The version the watch started from.
        requested: u64,
        /// The oldest version a watch can start from.
        oldest: u64,
    },
    /// The object or request is malformed.
    #[error("{field}: {message}")]
    Invalid {
        /// Field path of the problem (`metadata.name`), empty for the whole object.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A label selector does not parse.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// The backend cannot be reached or refused the request.
    #[error("store backend {backend} is unavailable: {message}")]
    Unavailable {
        /// `etcd` or `memory`.
        backend: &'static str,
        /// The backend's error and what to check.
        message: String,
    },
    /// Reading or writing the data directory failed.
    #[error("store data directory: {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A fenced write (see `leader::Fence`) after this controller's term as leader ended.
    #[error(
        "this controller is no longer the leader ({election}); the write was not applied — the \
         current leader does the writing"
    )]
    NotLeader {
        /// The election's key.
        election: String,
    },
    /// Stored data cannot be read back.
    #[error("store data is corrupt at {location}: {message}")]
    Corrupt {
        /// The file and line, or the etcd key.
        location: String,
        /// What is wrong and what to do.
        message: String,
    },
}

fn single(results: Result<Vec<Applied>, StoreError>) -> Result<Applied, StoreError> {
    results?.pop().ok_or_else(|| StoreError::Unavailable {
        backend: "store",
        message: "a transaction of one write returned no result".to_owned(),
    })
}

impl StoreError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        StoreError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// The HTTP status code the API answers with for this error (409 for conflicts, 410 for
    /// expired watches, 422 for invalid objects …).
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::NotFound { .. } => 404,
            StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => 409,
            StoreError::Gone { .. } => 410,
            StoreError::Invalid { .. } => 422,
            StoreError::Selector(_) => 400,
            StoreError::Unavailable { .. } | StoreError::NotLeader { .. } => 503,
            StoreError::Io { .. } | StoreError::Corrupt { .. } => 500,
        }
    }
}

/// The `metadata.resourceVersion` of an object, if it has a valid one.
pub fn resource_version(object: &Value) -> Option<u64> {
    object
        .get("metadata")?
        .get("resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

/// The `metadata.generation` of an object, if it has one.
pub fn generation(object: &Value) -> Option<u64> {
    object.get("metadata")?.get("generation")?.as_u64()
}

/// The `metadata.labels` of an object (empty when it has none).
pub fn labels(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata")?.get("labels")?.as_object()
}
