//! The in-process store: a sorted map of objects, a bounded history of changes for watches, and
//! (with a data directory) a write-ahead log plus snapshots so that a restart loses nothing.
//!
//! Writes are serialised by one lock that also owns the log. A write is visible to readers and
//! watchers only after its log record is on disk (fsync), so nothing anyone has seen can be lost
//! by a crash. With a data directory, the blocking file work runs on tokio's blocking pool, and
//! it runs to completion even if the caller stops waiting: the log and the map never disagree.

use std::collections::{BTreeMap, HashMap, VecDeque};
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
                            previous,
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
                            previous: None,
                        },
                    }
                }
            })
            .collect()
    }
}

struct Inner {
    state: RwLock<State>,
    /// Held for the whole of a commit: serialises writers and owns the log.
    writer: Mutex<Option<Wal>>,
    /// Transactions waiting for the next group commit (persistent stores only).
    queue: Mutex<Queue>,
    events: broadcast::Sender<Arc<Change>>,
    options: MemoryOptions,
}

type Reply = std::sync::mpsc::SyncSender<Result<Vec<Applied>, StoreError>>;

/// A transaction waiting to be committed, and where its result goes.
struct Pending {
    writes: Vec<Write>,
    reply: Reply,
}

/// Group commit: while one thread writes and fsyncs a batch, the transactions arriving meanwhile
/// queue up and go to disk together with the next fsync. Whoever finds no committer running
/// becomes it, and commits batches until the queue is empty.
#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    committing: bool,
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
                queue: Mutex::new(Queue::default()),
                events,
                options,
            }),
        }
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        if self.inner.options.data_dir.is_none() {
            return self.inner.commit_now(writes);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.submit(writes))
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

    /// Commits one transaction without queueing (stores without a data directory: nothing
    /// to wait for).
    fn commit_now(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        self.commit_batch(vec![Pending { writes, reply }]);
        result.recv().unwrap_or_else(|_| Err(lost_reply()))
    }

    /// Queues a transaction for the next group commit and waits for its result. Blocking.
    fn submit(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        let (reply, result) = std::sync::mpsc::sync_channel(1);
        let lead = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.pending.push(Pending { writes, reply });
            !std::mem::replace(&mut queue.committing, true)
        };
        if lead {
            let _guard = LeaderGuard(&self.queue);
            loop {
                let batch = {
                    let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                    if queue.pending.is_empty() {
                        queue.committing = false;
                        break;
                    }
                    std::mem::take(&mut queue.pending)
                };
                self.commit_batch(batch);
            }
        }
        result.recv().unwrap_or_else(|_| Err(lost_reply()))
    }

    /// Plans every transaction of a batch in order (each sees the ones before it), writes
    /// their log records with one fsync, then makes them visible and answers.
    fn commit_batch(&self, batch: Vec<Pending>) {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut records = Vec::new();
        let mut answers: Vec<(Reply, Result<Vec<Applied>, StoreError>)> = Vec::new();
        {
            // Writers are serialised by `writer`, so the state cannot change before we apply.
            let state = self.read();
            let mut overlay: HashMap<String, Option<Value>> = HashMap::new();
            let mut rev = state.revision;
            for pending in batch {
                let planned = plan_transaction(&state, &overlay, rev + 1, pending.writes);
                if let Ok((record, _)) = &planned
                    && !record.ops.is_empty()
                {
                    rev += 1;
                    for entry in &record.ops {
                        overlay.insert(entry.key.clone(), entry.object.clone());
                    }
                    records.push(record.clone());
                }
                answers.push((pending.reply, planned.map(|(_, results)| results)));
            }
        }
        if !records.is_empty() {
            if let Some(wal) = writer.as_mut()
                && let Err(e) = wal.append(&records)
            {
                // Nothing of the batch is applied. Answers computed against earlier
                // transactions of the batch are void as well: everyone gets the error.
                let message = e.to_string();
                for (reply, _) in answers {
                    let _ = reply.send(Err(StoreError::Unavailable {
                        backend: "memory",
                        message: message.clone(),
                    }));
                }
                return;
            }
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for record in records {
                for change in state.apply(record) {
                    let change = state.record(change, self.options.history);
                    // Sent under the state lock, so a watch that subscribes under the read
                    // lock sees each change exactly once: in its history copy or from here.
                    let _ = self.events.send(change);
                }
            }
        }
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
        let snapshot_due = writer
            .as_ref()
            .is_some_and(|w| w.records() >= self.options.snapshot_every);
        if snapshot_due && let Some(wal) = writer.as_mut() {
            let state = self.read();
            if let Err(e) = wal.snapshot(state.revision, &state.objects) {
                // The log still has everything; the next write tries again.
                tracing::warn!(error = %e, "store snapshot failed; keeping the write-ahead log");
            }
        }
    }
}

/// If a committer panics (a bug), lets the next writer take over instead of every later write
/// waiting for a committer that is gone.
struct LeaderGuard<'a>(&'a Mutex<Queue>);

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .committing = false;
        }
    }
}

fn lost_reply() -> StoreError {
    StoreError::Unavailable {
        backend: "memory",
        message: "a store write was abandoned by its committer (a bug: see the logs)".to_owned(),
    }
}

/// Plans one transaction at revision `rev` against the state plus the earlier transactions of
/// the batch (`overlay`: key → object, `None` if deleted).
fn plan_transaction(
    state: &State,
    overlay: &HashMap<String, Option<Value>>,
    rev: u64,
    writes: Vec<Write>,
) -> Result<(Record, Vec<Applied>), StoreError> {
    let keys = object::transaction_keys(&writes)?;
    let mut record = Record {
        rev,
        ops: Vec::new(),
    };
    let mut results = Vec::with_capacity(writes.len());
    for (write, key) in writes.into_iter().zip(&keys) {
        let path = key.path();
        let current = match overlay.get(&path) {
            Some(pending) => pending.as_ref(),
            None => state.objects.get(&path),
        };
        let applied = match object::plan(write, key, current)? {
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
    Ok((record, results))
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
