//! The etcd v3 store.
//!
//! Layout: one key per object, `PREFIX GROUP/KIND/NAMESPACE/NAME` (`core` for the empty group,
//! `_` for the namespace of cluster-scoped objects), the value the object's JSON without
//! `metadata.resourceVersion`: the resource version *is* the key's `mod_revision`, and etcd's
//! store-wide revision is the counter. Every write is a transaction comparing the key's
//! `mod_revision` with the one the write was computed from, so a concurrent writer can never be
//! overwritten unseen: an unconditional put (apply) re-reads and retries, a conditional one
//! fails with [`StoreError::Conflict`]. Watches are etcd watches from `from + 1` with the
//! previous value (for deletions); a compacted start revision ends the watch with
//! [`StoreError::Gone`].
//!
//! Transport is plain HTTP/2 (`http://` endpoints): fine for an etcd on loopback or a trusted
//! network; TLS to etcd is not wired yet.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType as EtcdEventType, GetOptions, KeyValue,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::leader::Fence;
use super::{
    Applied, EventType, Expect, ObjectKey, ObjectList, Outcome, ResourceType, Selector, Store,
    StoreError, WatchEvent, WatchStream, Write, object,
};

/// Keys per page when listing: etcd answers are limited in size (the client accepts 4 MiB by
/// default), and a federation can hold tens of thousands of objects.
const PAGE: i64 = 500;

/// How often an unconditional write re-reads and retries after losing a race.
const MAX_ATTEMPTS: usize = 100;

/// Where the etcd store connects and which keys it uses.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix of every object; several federations can share one etcd with different
    /// prefixes.
    pub prefix: String,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for each request (a watch only until etcd accepts it).
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "/causeway/registry/".to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl EtcdOptions {
    /// Default options for these endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdOptions::default()
        }
    }
}

/// The etcd store. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    endpoints: String,
    /// With a fence, every write also requires that leadership term to be current.
    fence: Option<Fence>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        let endpoints = options.endpoints.join(",");
        if options.endpoints.is_empty() {
            return Err(StoreError::invalid(
                "endpoints",
                "no etcd endpoint given: pass at least one URL such as http://127.0.0.1:2379",
            ));
        }
        if !options.prefix.ends_with('/') {
            return Err(StoreError::invalid(
                "prefix",
                format!("{:?} must end with '/'", options.prefix),
            ));
        }
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from its cluster's leader fails requests (and ends watches)
            // instead of serving a view that silently stopped moving.
            .with_require_leader(true);
        let client = Client::connect(&options.endpoints, Some(connect))
            .await
            .map_err(|e| unavailable(&endpoints, &e))?;
        let store = EtcdStore {
            client,
            prefix: options.prefix,
            endpoints,
            fence: None,
        };
        store.revision().await?;
        Ok(store)
    }

    /// This store, with every write made conditional on the leadership term of `fence`: once
    /// another controller leads, writes fail with [`StoreError::NotLeader`] instead of racing
    /// the new leader. Reads are unaffected.
    pub fn fenced(&self, fence: Fence) -> EtcdStore {
        EtcdStore {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The etcd client, for what the store trait does not cover (leases, leader election).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The etcd key of an object.
    pub fn key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key.path())
    }

    fn err(&self, e: &etcd_client::Error) -> StoreError {
        unavailable(&self.endpoints, e)
    }

    /// The object under an etcd key and its mod revision.
    async fn read(&self, key: &str) -> Result<Option<(Value, u64)>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(|e| self.err(&e))?;
        resp.kvs().first().map(decode).transpose()
    }

    /// The objects under several etcd keys, read at one revision.
    async fn read_all(&self, keys: &[String]) -> Result<Vec<Option<(Value, u64)>>, StoreError> {
        if let [key] = keys {
            return Ok(vec![self.read(key).await?]);
        }
        let gets: Vec<TxnOp> = keys.iter().map(|k| TxnOp::get(k.as_str(), None)).collect();
        let resp = self
            .client
            .clone()
            .txn(Txn::new().and_then(gets))
            .await
            .map_err(|e| self.err(&e))?;
        resp.op_responses()
            .iter()
            .map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(decode).transpose(),
                _ => Ok(None),
            })
            .collect()
    }

    /// Fails with [`StoreError::NotLeader`] if the fence's term is over.
    async fn check_fence(&self) -> Result<(), StoreError> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let resp = self
            .client
            .clone()
            .get(fence.key.as_str(), None)
            .await
            .map_err(|e| self.err(&e))?;
        let current = resp.kvs().first().map(KeyValue::create_revision);
        if current == Some(fence.revision) {
            return Ok(());
        }
        Err(StoreError::NotLeader {
            election: fence.key.clone(),
        })
    }

    async fn commit(&self, writes: Vec<Write>) -> Result<Vec<Applied>, StoreError> {
        let keys = object::transaction_keys(&writes)?;
        let etcd_keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        // Creates need not read first: they expect nothing, and the transaction's comparison
        // with "absent" catches an object that is there. Saves a round trip per allocation.
        let mut assume_absent = writes
            .iter()
            .all(|w| matches!(w, Write::Put(_, Expect::Absent)));
        for _ in 0..MAX_ATTEMPTS {
            let current = if std::mem::take(&mut assume_absent) {
                vec![None; etcd_keys.len()]
            } else {
                self.read_all(&etcd_keys).await?
            };
            let mut compares = Vec::with_capacity(writes.len());
            let mut ops = Vec::with_capacity(writes.len());
            let mut plans = Vec::with_capacity(writes.len());
            for (i, write) in writes.iter().enumerate() {
                let (key, etcd_key) = (&keys[i], etcd_keys[i].as_str());
                let current = current.get(i).and_then(Option::as_ref);
                let plan = object::plan(write.clone(), key, current.map(|(v, _)| v))?;
                // Every key is compared, unchanged ones too: the preconditions hold at the
                // moment of the commit, not only when they were read.
                let mod_revision = current.map_or(0, |(_, rev)| *rev);
                compares.push(Compare::mod_revision(
                    etcd_key,
                    CompareOp::Equal,
                    i64::try_from(mod_revision).unwrap_or(i64::MAX),
                ));
                match &plan {
                    object::Plan::Put(object, _) => {
                        let bytes =
                            serde_json::to_vec(object).map_err(|e| StoreError::Corrupt {
                                location: etcd_key.to_owned(),
                                message: format!("cannot encode the object: {e}"),
                            })?;
                        ops.push(TxnOp::put(etcd_key, bytes, None));
                    }
                    object::Plan::Delete(_) => ops.push(TxnOp::delete(etcd_key, None)),
                    object::Plan::Unchanged(_) => {}
                }
                plans.push(plan);
            }
            if let Some(fence) = &self.fence {
                compares.push(Compare::create_revision(
                    fence.key.as_str(),
                    CompareOp::Equal,
                    fence.revision,
                ));
            }
            let rev = if ops.is_empty() {
                0
            } else {
                let resp = self
                    .client
                    .clone()
                    .txn(Txn::new().when(compares).and_then(ops))
                    .await
                    .map_err(|e| self.err(&e))?;
                if !resp.succeeded() {
                    self.check_fence().await?;
                    // Lost a race: read again. The preconditions, checked again, turn that into
                    // the right error for conditional writes; apply simply recomputes.
                    continue;
                }
                resp.header().map_or(0, header_revision)
            };
            let results = plans
                .into_iter()
                .map(|plan| match plan {
                    object::Plan::Unchanged(object) => Applied {
                        outcome: Outcome::Unchanged,
                        object,
                    },
                    object::Plan::Put(mut object, outcome) => {
                        object::set_resource_version(&mut object, rev);
                        Applied { outcome, object }
                    }
                    object::Plan::Delete(mut object) => {
                        object::set_resource_version(&mut object, rev);
                        Applied {
                            outcome: Outcome::Deleted,
                            object,
                        }
                    }
                })
                .collect();
            return Ok(results);
        }
        Err(contention(&keys))
    }
}

fn contention(keys: &[ObjectKey]) -> StoreError {
    let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
    StoreError::Unavailable {
        backend: "etcd",
        message: format!(
            "{} changed {MAX_ATTEMPTS} times while this write was being applied; retry later",
            keys.join(", ")
        ),
    }
}

fn unavailable(endpoints: &str, e: &etcd_client::Error) -> StoreError {
    if let etcd_client::Error::GRpcStatus(status) = e
        && status.message().contains("request is too large")
    {
        // Each object fits (the store checks), but a transaction of several may not.
        return StoreError::invalid(
            "transaction",
            format!(
                "etcd refused it as too large ({}): write fewer or smaller objects at once, or \
                 raise etcd's --max-request-bytes",
                status.message()
            ),
        );
    }
    StoreError::Unavailable {
        backend: "etcd",
        message: format!("{e} (endpoints {endpoints}: check that etcd is running and reachable)"),
    }
}

fn header_revision(h: &etcd_client::ResponseHeader) -> u64 {
    u64::try_from(h.revision()).unwrap_or(0)
}

fn decode(kv: &KeyValue) -> Result<(Value, u64), StoreError> {
    let rev = u64::try_from(kv.mod_revision()).unwrap_or(0);
    let mut object: Value =
        serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
            location: String::from_utf8_lossy(kv.key()).into_owned(),
            message: format!(
                "the value is not a JSON object ({e}); something other than Causeway wrote under \
             the store's prefix: delete the key with etcdctl"
            ),
        })?;
    object::set_resource_version(&mut object, rev);
    Ok((object, rev))
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, Result<Option<Value>, StoreError>> {
        Box::pin(async move {
            key.check()?;
            Ok(self.read(&self.key(key)).await?.map(|(v, _)| v))
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
            let prefix = format!("{}{}", self.prefix, resource.scope_prefix(namespace));
            let end = prefix_end(&prefix);
            let mut client = self.client.clone();
            let mut list = ObjectList::default();
            let mut start = prefix.clone().into_bytes();
            let mut restarts = 0;
            // Every page is read at the first page's revision: the list is one consistent
            // snapshot, and a watch from its revision misses nothing.
            loop {
                let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
                if list.resource_version > 0 {
                    options = options
                        .with_revision(i64::try_from(list.resource_version).unwrap_or(i64::MAX));
                }
                let resp = match client.get(start.clone(), Some(options)).await {
                    Ok(resp) => resp,
                    // Compacted between two pages: start over at the current revision.
                    Err(etcd_client::Error::GRpcStatus(status))
                        if restarts < 5 && status.message().contains("has been compacted") =>
                    {
                        restarts += 1;
                        list = ObjectList::default();
                        start = prefix.clone().into_bytes();
                        continue;
                    }
                    Err(e) => return Err(self.err(&e)),
                };
                if list.resource_version == 0 {
                    list.resource_version = resp.header().map_or(0, header_revision);
                }
                for kv in resp.kvs() {
                    let (object, _) = decode(kv)?;
                    if selector.matches(&object) {
                        list.items.push(object);
                    }
                }
                match resp.kvs().last() {
                    Some(last) if resp.more() => {
                        start = last.key().to_vec();
                        start.push(0);
                    }
                    _ => return Ok(list),
                }
            }
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
            let prefix = format!("{}{}", self.prefix, resource.scope_prefix(namespace));
            let start = i64::try_from(from.saturating_add(1)).unwrap_or(i64::MAX);
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(start)
                .with_prev_key();
            let stream = self
                .client
                .clone()
                .watch(prefix.as_str(), Some(options))
                .await
                .map_err(|e| self.err(&e))?;
            let state = WatchState {
                stream,
                pending: VecDeque::new(),
                from,
                prefix_len: self.prefix.len(),
                endpoints: self.endpoints.clone(),
                done: false,
            };
            Ok(Box::pin(futures::stream::unfold(state, next_event)) as WatchStream)
        })
    }

    fn revision(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let resp = self
                .client
                .clone()
                .get(
                    self.prefix.as_str(),
                    Some(GetOptions::new().with_count_only()),
                )
                .await
                .map_err(|e| self.err(&e))?;
            Ok(resp.header().map_or(0, header_revision))
        })
    }

    fn compact(&self, revision: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let rev = i64::try_from(revision).unwrap_or(i64::MAX);
            match self.client.clone().compact(rev, None).await {
                Ok(_) => Ok(()),
                Err(etcd_client::Error::GRpcStatus(status))
                    if status
                        .message()
                        .contains("required revision has been compacted") =>
                {
                    Ok(())
                }
                Err(etcd_client::Error::GRpcStatus(status))
                    if status.message().contains("future revision") =>
                {
                    Err(StoreError::invalid(
                        "revision",
                        format!("cannot compact to {revision}: it is in the future"),
                    ))
                }
                Err(e) => Err(self.err(&e)),
            }
        })
    }
}

struct WatchState {
    stream: etcd_client::WatchStream,
    pending: VecDeque<WatchEvent>,
    from: u64,
    prefix_len: usize,
    endpoints: String,
    done: bool,
}

async fn next_event(mut st: WatchState) -> Option<(Result<WatchEvent, StoreError>, WatchState)> {
    if st.done {
        return None;
    }
    loop {
        if let Some(event) = st.pending.pop_front() {
            st.from = event.resource_version;
            return Some((Ok(event), st));
        }
        let resp = match st.stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                st.done = true;
                let e = StoreError::Unavailable {
                    backend: "etcd",
                    message: format!(
                        "etcd ({}) closed the watch; watch again from resource version {}",
                        st.endpoints, st.from
                    ),
                };
                return Some((Err(e), st));
            }
            Err(e) => {
                st.done = true;
                return Some((Err(unavailable(&st.endpoints, &e)), st));
            }
        };
        if resp.compact_revision() > 0 {
            st.done = true;
            let e = StoreError::Gone {
                requested: st.from,
                oldest: u64::try_from(resp.compact_revision()).unwrap_or(0),
            };
            return Some((Err(e), st));
        }
        if resp.canceled() {
            st.done = true;
            let e = StoreError::Unavailable {
                backend: "etcd",
                message: format!(
                    "etcd cancelled the watch: {}; watch again from resource version {}",
                    resp.cancel_reason(),
                    st.from
                ),
            };
            return Some((Err(e), st));
        }
        for event in resp.events() {
            match convert(event, st.prefix_len) {
                Ok(Some(e)) => st.pending.push_back(e),
                Ok(None) => {}
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
        }
    }
}

fn convert(
    event: &etcd_client::Event,
    prefix_len: usize,
) -> Result<Option<WatchEvent>, StoreError> {
    let Some(kv) = event.kv() else {
        return Ok(None);
    };
    let rev = u64::try_from(kv.mod_revision()).unwrap_or(0);
    match event.event_type() {
        EtcdEventType::Put => {
            let (object, _) = decode(kv)?;
            let (event_type, previous) = if kv.create_revision() == kv.mod_revision() {
                (EventType::Added, None)
            } else {
                // Missing only if compacted away; selection then treats it as not matching.
                let previous = event.prev_kv().map(decode).transpose()?.map(|(v, _)| v);
                (EventType::Modified, previous)
            };
            Ok(Some(WatchEvent {
                event_type,
                object,
                resource_version: rev,
                previous,
            }))
        }
        EtcdEventType::Delete => {
            let mut object = match event.prev_kv() {
                Some(prev) => decode(prev)?.0,
                // The previous value is gone only if it was compacted away; the key still says
                // which object it was.
                None => skeleton(kv.key(), prefix_len),
            };
            object::set_resource_version(&mut object, rev);
            Ok(Some(WatchEvent {
                event_type: EventType::Deleted,
                object,
                resource_version: rev,
                previous: None,
            }))
        }
    }
}

/// A minimal object (kind, name, namespace) rebuilt from an etcd key.
fn skeleton(key: &[u8], prefix_len: usize) -> Value {
    let key = String::from_utf8_lossy(key);
    let parts: Vec<&str> = key.get(prefix_len..).unwrap_or("").split('/').collect();
    match parts.as_slice() {
        [_group, kind, namespace, name] => {
            let mut metadata = json!({ "name": name });
            if *namespace != super::CLUSTER_SCOPE {
                metadata["namespace"] = json!(namespace);
            }
            json!({ "kind": kind, "metadata": metadata })
        }
        _ => json!({ "metadata": {} }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end("/a/b/"), b"/a/b0".to_vec());
        assert_eq!(
            skeleton(b"/p/causeway.io/Cluster/_/c1", 3)["metadata"]["name"],
            "c1"
        );
        let ap = skeleton(b"/p/causeway.io/AccessPoint/retail/shop", 3);
        assert_eq!(ap["metadata"]["namespace"], "retail");
        assert_eq!(ap["kind"], "AccessPoint");
    }
}
