//! The in-process store: a sorted map of objects, a bounded history of changes for watches, and
//! (with a data directory) a write-ahead log plus snapshots so that a restart loses nothing.
//!
//! Writes are serialised by one lock that also owns the log. A write is visible to readers and
//! watchers only after its log record is on disk (fsync), so nothing anyone has seen can be lost
//! by a crash. With a data directory, the blocking file work runs on tokio's blocking pool, and
//! it runs to completion even if the caller stops waiting: the log and the map never disagree.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::broadcast;

use super::{
    Applied, EventType, ObjectKey, ObjectList, Outcome, ResourceType, Selector, Store, StoreError,
    WatchEvent, WatchStream, Write, object,
};

mod wal;

use wal::{Entry, Record, RecordOp, Wal};

/// How a [`MemoryStore`] keeps its data.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    /// Directory that persists the store (created if missing; the store owns it). `None` keeps
    /// everything in memory only.
    pub data_dir: Option<PathBuf>,
    /// How many changes are kept for watches to resume from; older resource versions get
    /// [`StoreError::Gone`].
    pub history: usize,
    /// Log records written before the log is folded into a new snapshot.
    pub snapshot_every: usize,
    /// Changes a watcher may fall behind by before its watch ends with [`StoreError::Gone`].
    pub watch_buffer: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            data_dir: None,
            history: 10_000,
            snapshot_every: 10_000,
            watch_buffer: 4_096,
        }
    }
}

impl MemoryOptions {
    /// Options persisting to `dir`, defaults otherwise.
    pub fn persistent(dir: impl Into<PathBuf>) -> Self {
        MemoryOptions {
            data_dir: Some(dir.into()),
            ..MemoryOptions::default()
        }
    }
}

/// A change as kept in the history and sent to watchers.
#[derive(Debug)]
struct Change {
    /// The object's key path, for filtering by type and namespace.
    path: String,
    event: WatchEvent,
}

#[derive(Debug, Default)]
struct State {
    /// Key path → stored object (with `metadata.resourceVersion`).
    objects: BTreeMap<String, Value>,
    revision: u64,
    history: VecDeque<Arc<Change>>,
    /// Watches must start at or after this version.
    compacted: u64,
}

impl State {
    fn record(&mut self, change: Change, limit: usize) -> Arc<Change> {
        let change = Arc::new(change);
        self.history.push_back(change.clone());
        while self.history.len() > limit.max(1) {
            if let Some(old) = self.history.pop_front() {
                self.compacted = self.compacted.max(old.event.resource_version);
            }
        }
        change
    }

    /// Applies a replayed or new record and returns the changes it makes.
    fn apply(&mut self, record: Record) -> Vec<Change> {
        self.revision = record.rev;
        let rev = record.rev;
        record
            .ops
            .into_iter()
            .map(|entry| match entry.op {
                RecordOp::Put => {
                    let object = entry.object.unwrap_or(Value::Null);
                    let previous = self.objects.insert(entry.key.clone(), object.clone());
                    Change {
                        path: entry.key,
                        event: WatchEvent {
                            event_type: if previous.is_some() {
                                EventType::Modified
                            } else {
                                EventType::Added
                            },
                            object,
                            resource_version: rev,
                        },
                    }
                }
                RecordOp::Delete => {
                    let mut object = self.objects.remove(&entry.key).unwrap_or(Value::Null);
                    object::set_resource_version(&mut object, rev);
                    Change {
                        path: entry.key,
                        event: WatchEvent {
                            event_type: EventType::Deleted,
                            object,
                            resource_version: rev,
                        },
                    }
                }
            })
            .collect()
    }
}

struct Inner {
    state: RwLock<State>,
    /// Held for the whole of a write: serialises writers and owns the log.
    writer: Mutex<Option<Wal>>,
    events: broadcast::Sender<Arc<Change>>,
    options: MemoryOptions,
}

/// The in-process store. Cheap to clone; clones share the data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store that keeps nothing on disk.
    pub fn new() -> Self {
        Self::with_state(State::default(), None, MemoryOptions::default())
    }

    /// Opens a store with these options, recovering what its data directory holds. Blocking:
    /// call it before serving, or from `spawn_blocking`.
    pub fn open(options: MemoryOptions) -> Result<Self, StoreError> {
        let Some(dir) = &options.data_dir else {
            return Ok(Self::with_state(State::default(), None, options));
        };
        let recovered = wal::recover(dir)?;
        let mut state = State {
            objects: recovered.objects,
            revision: recovered.revision,
            history: VecDeque::new(),
            compacted: recovered.revision,
        };
        // Replaying the log rebuilds the recent history, so watches can resume across a
        // restart from any version since the snapshot.
        for record in recovered.records {
            for change in state.apply(record) {
                state.record(change, options.history);
            }
        }
        tracing::info!(
            dir = %dir.display(),
            revision = state.revision,
            objects = state.objects.len(),
            "store recovered"
        );
        Ok(Self::with_state(state, Some(recovered.wal), options))
    }

    fn with_state(state: State, wal: Option<Wal>, options: MemoryOptions) -> Self {
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        MemoryStore {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                writer: Mutex::new(wal),
                events,
                options,
            }),
        }
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        if self.inner.options.data_dir.is_none() {
            return self.inner.commit(writes);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.commit(writes))
            .await
            .map_err(|e| StoreError::Unavailable {
                backend: "memory",
                message: format!("a store write did not finish: {e}"),
            })?
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        let keys = object::transaction_keys(&writes)?;
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        // Decide under a read lock: writers are serialised by `writer`, so the state cannot
        // change before we apply.
        let (record, results) = {
            let state = self.read();
            let rev = state.revision + 1;
            let mut record = Record {
                rev,
                ops: Vec::new(),
            };
            let mut results = Vec::with_capacity(writes.len());
            for (write, key) in writes.into_iter().zip(&keys) {
                let path = key.path();
                let applied = match object::plan(write, key, state.objects.get(&path))? {
                    object::Plan::Unchanged(object) => Applied {
                        outcome: Outcome::Unchanged,
                        object,
                    },
                    object::Plan::Put(mut object, outcome) => {
                        object::set_resource_version(&mut object, rev);
                        record.ops.push(Entry {
                            op: RecordOp::Put,
                            key: path,
                            object: Some(object.clone()),
                        });
                        Applied { outcome, object }
                    }
                    object::Plan::Delete(mut object) => {
                        object::set_resource_version(&mut object, rev);
                        record.ops.push(Entry {
                            op: RecordOp::Delete,
                            key: path,
                            object: None,
                        });
                        Applied {
                            outcome: Outcome::Deleted,
                            object,
                        }
                    }
                };
                results.push(applied);
            }
            (record, results)
        };
        if record.ops.is_empty() {
            return Ok(results);
        }
        if let Some(wal) = writer.as_mut() {
            wal.append(&record)?;
        }
        let snapshot_due = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for change in state.apply(record) {
                let change = state.record(change, self.options.history);
                // Sent under the state lock, so a watch that subscribes under the read lock
                // sees each change exactly once: in its history copy or from the channel.
                let _ = self.events.send(change);
            }
            writer
                .as_ref()
                .is_some_and(|w| w.records() >= self.options.snapshot_every)
        };
        if snapshot_due && let Some(wal) = writer.as_mut() {
            let state = self.read();
            if let Err(e) = wal.snapshot(state.revision, &state.objects) {
                // The log still has everything; the next write tries again.
                tracing::warn!(error = %e, "store snapshot failed; keeping the write-ahead log");
            }
        }
        Ok(results)
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Value>, StoreError>> {
        Box::pin(async move {
            key.check()?;
            Ok(self.inner.read().objects.get(&key.path()).cloned())
        })
    }

    fn list<'a>(
        &'a self,
        resource: &'a ResourceType,
        namespace: Option<&'a str>,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<ObjectList, StoreError>> {
        Box::pin(async move {
            resource.check()?;
            let prefix = resource.scope_prefix(namespace);
            let state = self.inner.read();
            let items = state
                .objects
                .range(prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&prefix))
                .filter(|(_, v)| selector.matches(v))
                .map(|(_, v)| v.clone())
                .collect();
            Ok(ObjectList {
                items,
                resource_version: state.revision,
            })
        })
    }

    fn transaction(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<Vec<Applied>, StoreError>> {
        Box::pin(self.commit(writes))
    }

    fn watch<'a>(
        &'a self,
        resource: &'a ResourceType,
        namespace: Option<&'a str>,
        from: u64,
    ) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        Box::pin(async move {
            resource.check()?;
            let prefix = resource.scope_prefix(namespace);
            let (backlog, receiver, compacted) = {
                let state = self.inner.read();
                let receiver = self.inner.events.subscribe();
                let backlog: VecDeque<Arc<Change>> = state
                    .history
                    .iter()
                    .filter(|c| c.event.resource_version > from && c.path.starts_with(&prefix))
                    .cloned()
                    .collect();
                (backlog, receiver, state.compacted)
            };
            if from < compacted {
                let gone = StoreError::Gone {
                    requested: from,
                    oldest: compacted,
                };
                return Ok(Box::pin(futures::stream::iter([Err(gone)])) as WatchStream);
            }
            Ok(watch_stream(prefix, from, backlog, receiver))
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move { Ok(self.inner.read().revision) })
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut state = self
                .inner
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if revision > state.revision {
                return Err(StoreError::invalid(
                    "revision",
                    format!(
                        "cannot compact to {revision}: the store is at {}",
                        state.revision
                    ),
                ));
            }
            while state
                .history
                .front()
                .is_some_and(|c| c.event.resource_version <= revision)
            {
                state.history.pop_front();
            }
            state.compacted = state.compacted.max(revision);
            Ok(())
        })
    }
}

struct WatchState {
    prefix: String,
    from: u64,
    last: u64,
    backlog: VecDeque<Arc<Change>>,
    receiver: broadcast::Receiver<Arc<Change>>,
    done: bool,
}

fn watch_stream(
    prefix: String,
    from: u64,
    backlog: VecDeque<Arc<Change>>,
    receiver: broadcast::Receiver<Arc<Change>>,
) -> WatchStream {
    let state = WatchState {
        prefix,
        from,
        last: from,
        backlog,
        receiver,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if let Some(change) = st.backlog.pop_front() {
            st.last = change.event.resource_version;
            return Some((Ok(change.event.clone()), st));
        }
        loop {
            match st.receiver.recv().await {
                Ok(change) => {
                    // Several changes of one transaction share a version: compare with where
                    // the watch started, not with the last change delivered.
                    if change.event.resource_version <= st.from
                        || !change.path.starts_with(&st.prefix)
                    {
                        continue;
                    }
                    st.last = change.event.resource_version;
                    return Some((Ok(change.event.clone()), st));
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    st.done = true;
                    let gone = StoreError::Gone {
                        requested: st.last,
                        oldest: st.last + missed,
                    };
                    return Some((Err(gone), st));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }))
}
