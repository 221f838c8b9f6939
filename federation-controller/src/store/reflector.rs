//! List-then-watch that never gives up, for the controller's in-memory indexes (Kubernetes
//! calls it a reflector).
//!
//! [`reflect`] lists a kind, then watches from the list's version. When the watch ends with
//! [`StoreError::Gone`] it lists again and reports a fresh [`Reflected::Restarted`]; on any
//! other error (etcd restarting, a network blip) it waits with backoff and watches again from the
//! last version it saw, so nothing is missed and nothing is repeated. [`Cache`] applies what it
//! yields.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde_json::Value;

use super::{
    EventType, ObjectList, ResourceType, Selector, Store, StoreError, WatchEvent, WatchStream,
};

/// What a reflector reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Reflected {
    /// The complete current state, at this resource version: replace everything known.
    Restarted(ObjectList),
    /// One change after the last state reported.
    Event(WatchEvent),
}

/// First and longest wait after a failure.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

enum Phase {
    List,
    Watch(u64),
    Watching(WatchStream, u64),
}

struct State {
    store: Arc<dyn Store>,
    resource: ResourceType,
    namespace: Option<String>,
    phase: Phase,
    backoff: Duration,
}

impl State {
    async fn pause(&mut self, what: &str, error: &StoreError) {
        tracing::warn!(resource = %self.resource, %error, retry_in = ?self.backoff, "{what} failed");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF.1);
    }
}

/// The objects of a kind (in one namespace, or all with `None`): first
/// [`Reflected::Restarted`] with all of them, then every change. The stream never ends.
pub fn reflect(
    store: Arc<dyn Store>,
    resource: ResourceType,
    namespace: Option<String>,
) -> impl Stream<Item = Reflected> + Send {
    let state = State {
        store,
        resource,
        namespace,
        phase: Phase::List,
        backoff: BACKOFF.0,
    };
    futures::stream::unfold(state, |mut st| async move {
        loop {
            match std::mem::replace(&mut st.phase, Phase::List) {
                Phase::List => {
                    let listed = st
                        .store
                        .list(
                            &st.resource,
                            st.namespace.as_deref(),
                            &Selector::everything(),
                        )
                        .await;
                    match listed {
                        Ok(list) => {
                            st.backoff = BACKOFF.0;
                            st.phase = Phase::Watch(list.resource_version);
                            return Some((Reflected::Restarted(list), st));
                        }
                        Err(e) => st.pause("list", &e).await,
                    }
                }
                Phase::Watch(from) => {
                    let watch = st
                        .store
                        .watch(&st.resource, st.namespace.as_deref(), from)
                        .await;
                    match watch {
                        Ok(stream) => st.phase = Phase::Watching(stream, from),
                        Err(e) => {
                            st.pause("watch", &e).await;
                            st.phase = Phase::Watch(from);
                        }
                    }
                }
                Phase::Watching(mut stream, from) => match stream.next().await {
                    Some(Ok(event)) => {
                        st.backoff = BACKOFF.0;
                        st.phase = Phase::Watching(stream, event.resource_version);
                        return Some((Reflected::Event(event), st));
                    }
                    Some(Err(StoreError::Gone { .. })) => {
                        tracing::info!(resource = %st.resource, "watch history gone; listing again");
                    }
                    Some(Err(e)) => {
                        st.pause("watch", &e).await;
                        st.phase = Phase::Watch(from);
                    }
                    None => st.phase = Phase::Watch(from),
                },
            }
        }
    })
}

/// `NAMESPACE/NAME`: a reflector watches one kind, and a deletion may carry only the name
/// and namespace of the object (etcd, after compaction).
fn cache_key(object: &Value) -> Option<String> {
    let metadata = object.get("metadata")?;
    let name = metadata.get("name")?.as_str()?;
    let namespace = metadata
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(format!("{namespace}/{name}"))
}

/// The objects a reflector has reported, by namespace and name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cache {
    objects: BTreeMap<String, Value>,
    resource_version: u64,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Cache::default()
    }

    /// Applies what a reflector reported.
    pub fn apply(&mut self, reflected: Reflected) {
        match reflected {
            Reflected::Restarted(list) => {
                self.objects = list
                    .items
                    .into_iter()
                    .filter_map(|o| Some((cache_key(&o)?, o)))
                    .collect();
                self.resource_version = list.resource_version;
            }
            Reflected::Event(event) => {
                self.resource_version = event.resource_version;
                let Some(key) = cache_key(&event.object) else {
                    return;
                };
                match event.event_type {
                    EventType::Deleted => {
                        self.objects.remove(&key);
                    }
                    EventType::Added | EventType::Modified => {
                        self.objects.insert(key, event.object);
                    }
                }
            }
        }
    }

    /// The objects, in key order.
    pub fn objects(&self) -> impl Iterator<Item = &Value> {
        self.objects.values()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The resource version of the last state applied.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }
}
