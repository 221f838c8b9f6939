//! Leader election, so that of several controllers on one etcd only one allocates VIPs and
//! writes status.
//!
//! etcd: the leader holds the key `/causeway/leader/NAME` (value: its identity), attached to a
//! lease of `ttl` that it keeps alive every `ttl / 3`. Candidates create the key with a
//! transaction that fails if it exists, and otherwise watch it until it is deleted — which
//! happens when the leader resigns (lease revoked) or dies (lease expired). A leader that has
//! not had a keepalive acknowledged for `2/3 ttl` steps down on its own, before etcd can hand
//! the key to someone else. So a killed leader is replaced within about `ttl` plus one etcd
//! expiry tick.
//!
//! The memory store serves one controller (its data directory is locked), which is always the
//! leader: [`Leadership::always`].

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType as EtcdEventType, PutOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::etcd::EtcdStore;

/// Where and how a controller campaigns.
#[derive(Debug, Clone)]
pub struct ElectionOptions {
    /// What is being led (one election per name), e.g. `controller`.
    pub name: String,
    /// Who this candidate is (host name, pod name …); shown as the key's value.
    pub identity: String,
    /// Lease time to live: how long a dead leader keeps the role. Whole seconds, at least 2.
    pub ttl: Duration,
    /// Key prefix of elections.
    pub prefix: String,
}

impl ElectionOptions {
    /// Options for election `name` with candidate `identity` and a 10 s lease.
    pub fn new(name: impl Into<String>, identity: impl Into<String>) -> Self {
        ElectionOptions {
            name: name.into(),
            identity: identity.into(),
            ttl: Duration::from_secs(10),
            prefix: "/causeway/leader/".to_owned(),
        }
    }
}

/// Proof of one term of leadership: the leader key and the revision that created it. A store
/// fenced with it ([`EtcdStore::fenced`]) refuses every write once that term is over, even
/// when this controller has not noticed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub(crate) key: String,
    pub(crate) revision: i64,
}

/// This candidate's view of an election. Dropping it without [`Leadership::resign`] stops
/// campaigning abruptly, as a crash would: the role passes on when the lease expires.
#[derive(Debug)]
pub struct Leadership {
    state: watch::Receiver<bool>,
    /// The sender of a fixed state ([`Leadership::always`]).
    _fixed: Option<watch::Sender<bool>>,
    /// The current term's fence while leading.
    fence: watch::Receiver<Option<Fence>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Leadership {
    /// Always the leader (the memory store: one controller per data directory).
    pub fn always() -> Self {
        let (fixed, state) = watch::channel(true);
        let (_, fence) = watch::channel(None);
        Leadership {
            state,
            _fixed: Some(fixed),
            fence,
            stop: None,
            task: None,
        }
    }

    /// Campaigns in an etcd election in the background.
    pub fn campaign(store: &EtcdStore, options: ElectionOptions) -> Self {
        let (tx, state) = watch::channel(false);
        let (fence_tx, fence) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let client = store.client().clone();
        let signals = Signals {
            leading: tx,
            fence: fence_tx,
        };
        let task = tokio::spawn(run(client, options, signals, stop_rx));
        Leadership {
            state,
            _fixed: None,
            fence,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Whether this candidate leads right now.
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// The fence of the current term while leading (`None` otherwise, and for
    /// [`Leadership::always`]).
    pub fn fence(&self) -> Option<Fence> {
        self.fence.borrow().clone()
    }

    /// A receiver of the current term's fence (`Some` while leading on etcd).
    pub fn fence_changes(&self) -> watch::Receiver<Option<Fence>> {
        self.fence.clone()
    }

    /// A receiver of leadership changes (`true`: leading).
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.state.clone()
    }

    /// Waits until this candidate leads (`true`) or does not (`false`).
    pub async fn wait_for(&mut self, leading: bool) {
        // An error means the campaign task ended: nothing will change any more.
        let _ = self.state.wait_for(|l| *l == leading).await;
    }

    /// Stops campaigning; a leader gives up the role at once (its lease is revoked), so another
    /// candidate takes over without waiting for the lease to expire.
    pub async fn resign(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Where a campaign reports.
struct Signals {
    leading: watch::Sender<bool>,
    fence: watch::Sender<Option<Fence>>,
}

impl Signals {
    fn lead(&self, fence: Fence) {
        let _ = self.fence.send(Some(fence));
        let _ = self.leading.send(true);
    }

    fn follow(&self) {
        let _ = self.leading.send(false);
        let _ = self.fence.send(None);
    }
}

/// How long to wait before retrying after an etcd error.
const RETRY: Duration = Duration::from_millis(500);

async fn run(
    mut client: Client,
    options: ElectionOptions,
    state: Signals,
    mut stop: oneshot::Receiver<()>,
) {
    let key = format!("{}{}", options.prefix, options.name);
    let ttl_secs = i64::try_from(options.ttl.as_secs().max(2)).unwrap_or(i64::MAX);
    loop {
        let outcome = term(
            &mut client,
            &key,
            &options.identity,
            ttl_secs,
            &state,
            &mut stop,
        )
        .await;
        state.follow();
        match outcome {
            Term::Stopped => return,
            Term::Lost(reason) => {
                tracing::warn!(election = %key, identity = %options.identity, %reason, "not the leader any more");
            }
            Term::Error(e) => {
                tracing::warn!(election = %key, error = %e, "leader election: etcd error; retrying");
                tokio::select! {
                    _ = &mut stop => return,
                    () = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    }
}

enum Term {
    Stopped,
    Lost(String),
    Error(etcd_client::Error),
}

/// One round: wait for the key to be free, take it, lead until the lease is lost or `stop`.
async fn term(
    client: &mut Client,
    key: &str,
    identity: &str,
    ttl_secs: i64,
    state: &Signals,
    stop: &mut oneshot::Receiver<()>,
) -> Term {
    let lease = match client.lease_grant(ttl_secs, None).await {
        Ok(lease) => lease.id(),
        Err(e) => return Term::Error(e),
    };
    let outcome = lead(client, key, identity, lease, ttl_secs, state, stop).await;
    // Stop acting as the leader before anyone else can become it.
    state.follow();
    // Best effort: deletes the key if we still hold it, so the next leader need not wait for
    // the lease to expire.
    let _ = client.lease_revoke(lease).await;
    outcome
}

async fn lead(
    client: &mut Client,
    key: &str,
    identity: &str,
    lease: i64,
    ttl_secs: i64,
    state: &Signals,
    stop: &mut oneshot::Receiver<()>,
) -> Term {
    let (mut keeper, mut acks) = match client.lease_keep_alive(lease).await {
        Ok(k) => k,
        Err(e) => return Term::Error(e),
    };
    let ttl = Duration::from_secs(u64::try_from(ttl_secs).unwrap_or(2));
    let mut ticker = tokio::time::interval(ttl / 3);
    loop {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                identity,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = match client.txn(txn).await {
            Ok(resp) => resp,
            Err(e) => return Term::Error(e),
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            // The transaction's revision is the one that created the key.
            state.lead(Fence {
                key: key.to_owned(),
                revision,
            });
            break;
        }
        // Someone leads: keep our lease alive and wait for the key to go.
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut watch = match client.watch(key, Some(options)).await {
            Ok(w) => w,
            Err(e) => return Term::Error(e),
        };
        loop {
            tokio::select! {
                _ = &mut *stop => return Term::Stopped,
                _ = ticker.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        return Term::Error(e);
                    }
                }
                ack = acks.message() => match ack {
                    Ok(Some(ack)) if ack.ttl() > 0 => {}
                    Ok(_) => return Term::Lost("the lease expired while waiting".to_owned()),
                    Err(e) => return Term::Error(e),
                },
                message = watch.message() => match message {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            return Term::Lost("the watch on the leader key was cancelled".to_owned());
                        }
                        if resp.events().iter().any(|e| e.event_type() == EtcdEventType::Delete) {
                            break;
                        }
                    }
                    Ok(None) => return Term::Lost("etcd closed the watch".to_owned()),
                    Err(e) => return Term::Error(e),
                },
            }
        }
    }

    tracing::info!(election = %key, %identity, "became the leader");
    let mut last_ack = Instant::now();
    // Step down before etcd could expire the lease and let someone else in: with no
    // acknowledged keepalive for 2/3 of the TTL, we can no longer be sure we hold it.
    let give_up = ttl * 2 / 3;
    let options = WatchOptions::new();
    let mut watch = match client.watch(key, Some(options)).await {
        Ok(w) => w,
        Err(e) => return Term::Error(e),
    };
    loop {
        tokio::select! {
            _ = &mut *stop => return Term::Stopped,
            _ = ticker.tick() => {
                if last_ack.elapsed() >= give_up {
                    return Term::Lost(format!("no keepalive acknowledged for {give_up:?}"));
                }
                // A failed send is covered by the deadline above.
                let _ = keeper.keep_alive().await;
            }
            ack = acks.message() => match ack {
                Ok(Some(ack)) if ack.ttl() > 0 => last_ack = Instant::now(),
                Ok(_) => return Term::Lost("the lease expired".to_owned()),
                Err(e) => return Term::Lost(format!("keepalive failed: {e}")),
            },
            message = watch.message() => match message {
                Ok(Some(resp)) => {
                    if resp.events().iter().any(|e| e.event_type() == EtcdEventType::Delete) {
                        return Term::Lost("the leader key was deleted".to_owned());
                    }
                }
                Ok(None) | Err(_) => {
                    if last_ack.elapsed() >= give_up {
                        return Term::Lost("lost the watch on the leader key".to_owned());
                    }
                    match client.watch(key, Some(WatchOptions::new())).await {
                        Ok(w) => watch = w,
                        Err(e) => return Term::Lost(format!("cannot watch the leader key: {e}")),
                    }
                }
            },
        }
    }
}
