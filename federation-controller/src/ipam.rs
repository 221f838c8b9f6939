//! VIP address management: one VIP per AccessPoint from a named pool, stable across updates
//! and restarts, released on delete, never given to two owners.
//!
//! State lives in the [`Store`] as two kinds of group `ipam.causeway.io` (format in
//! `docs/store.md`):
//! - `VipAllocation`, cluster-scoped, named after the address (`10-240-0-7`): the address is
//!   taken, by whom. One object per address is what makes "never twice" hold: creating it is
//!   a create-only write, and with etcd a transaction that fails when the key exists.
//! - `VipClaim`, in the owner's namespace and named like it: the owner's address, so the
//!   same owner always gets the same answer.
//!
//! Allocating creates both in one transaction; releasing deletes both in one. Several
//! controllers (or tasks) can allocate at once on one store: a lost race shows up as
//! `AlreadyExists` and the loser looks again, so no address is handed out twice and no owner
//! ends up with two.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use causeway_crds::v1alpha1::AccessPoint;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::store::{Expect, ObjectKey, ResourceType, Selector, Store, StoreError, Write};

mod pool;

pub use pool::{Pool, pools};

/// API group of the IPAM objects.
pub const GROUP: &str = "ipam.causeway.io";
/// `apiVersion` of the IPAM objects.
pub const API_VERSION: &str = "ipam.causeway.io/v1alpha1";
/// Label on `VipAllocation`s naming their pool.
pub const POOL_LABEL: &str = "ipam.causeway.io/pool";

/// How often one allocation looks again after losing races before giving up.
const MAX_ROUNDS: usize = 128;

/// Collisions with addresses unknown to the cache after which it is reloaded from the store.
const REFRESH_AFTER_COLLISIONS: usize = 16;

/// Why an allocation or release failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// A CIDR in the configuration does not parse or is not a network address.
    #[error("VIP pool {pool:?}: CIDR {cidr:?}: {message}")]
    InvalidCidr {
        /// The pool.
        pool: String,
        /// The CIDR as written.
        cidr: String,
        /// What is wrong.
        message: String,
    },
    /// Two CIDRs of the configuration overlap: an address would belong to two pools.
    #[error("VIP pools overlap: {first} and {second}; make the CIDRs disjoint")]
    Overlap {
        /// `pool: cidr`.
        first: String,
        /// `pool: cidr`.
        second: String,
    },
    /// `spec.vip.pool` names a pool the controller does not have.
    #[error(
        "VIP pool {pool:?} is not configured (configured: {known}); use one of those or add it to the controller's pools"
    )]
    UnknownPool {
        /// The pool asked for.
        pool: String,
        /// The configured pools.
        known: String,
    },
    /// `spec.vip.address` is not in the pool.
    #[error("{address} is not an address of VIP pool {pool}")]
    NotInPool {
        /// The address asked for.
        address: IpAddr,
        /// The pool.
        pool: String,
    },
    /// `spec.vip.address` already belongs to someone else.
    #[error(
        "{address} is already allocated to {owner}; choose another address or remove spec.vip.address"
    )]
    AddressTaken {
        /// The address asked for.
        address: IpAddr,
        /// Its owner (`namespace/name`).
        owner: String,
    },
    /// Every address of the pool is allocated.
    #[error(
        "VIP pool {pool} is exhausted ({size} addresses allocated); add a CIDR to it or delete unused AccessPoints"
    )]
    Exhausted {
        /// The pool, with its CIDRs.
        pool: String,
        /// Its size.
        size: u128,
    },
    /// `spec.vip.address` is not an IP address.
    #[error("spec.vip.address {address:?} is not an IP address")]
    InvalidAddress {
        /// The text.
        address: String,
    },
    /// `spec.vip.shareWith` names an AccessPoint whose VIP cannot be shared.
    #[error("spec.vip.shareWith: {target}: {reason}")]
    ShareTarget {
        /// The AccessPoint named (`namespace/name`).
        target: String,
        /// Why its VIP cannot be used.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An IPAM object in the store is malformed.
    #[error("IPAM object {key} is malformed: {message}")]
    Corrupt {
        /// The object.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Who holds an address: an AccessPoint, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl Owner {
    /// An owner.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Owner {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What an owner asks for (`spec.vip` of an AccessPoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The pool.
    pub pool: String,
    /// A specific address, or the next free one.
    pub address: Option<IpAddr>,
}

impl Request {
    /// Any address of `pool`.
    pub fn pool(pool: impl Into<String>) -> Self {
        Request {
            pool: pool.into(),
            address: None,
        }
    }
}

/// An owner's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The owner.
    pub owner: Owner,
    /// The pool it came from.
    pub pool: String,
    /// The address.
    pub address: IpAddr,
}

/// The allocator. Share it (it is `Send + Sync`); every method may run concurrently, also with
/// other allocators (other controllers) on the same store.
pub struct Ipam {
    store: Arc<dyn Store>,
    pools: BTreeMap<String, Pool>,
    /// Per pool, the address numbers known to be taken: saves a store round trip per collision.
    /// Addresses freed by other controllers are only seen again when the pool looks full.
    taken: Mutex<HashMap<String, BTreeSet<u128>>>,
}

impl fmt::Debug for Ipam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ipam")
            .field("pools", &self.pools)
            .finish_non_exhaustive()
    }
}

fn allocation_type() -> ResourceType {
    ResourceType::new(GROUP, "VipAllocation")
}

fn claim_type() -> ResourceType {
    ResourceType::new(GROUP, "VipClaim")
}

/// The object name of an address: dots and colons become dashes (`10-240-0-7`, `fd00--1`).
fn address_name(address: IpAddr) -> String {
    address.to_string().replace(['.', ':'], "-")
}

fn allocation_key(address: IpAddr) -> ObjectKey {
    ObjectKey::cluster_scoped(allocation_type(), address_name(address))
}

fn claim_key(owner: &Owner) -> ObjectKey {
    ObjectKey::namespaced(claim_type(), &owner.namespace, &owner.name)
}

fn allocation_object(owner: &Owner, pool: &str, address: IpAddr) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "VipAllocation",
        "metadata": {"name": address_name(address), "labels": {POOL_LABEL: pool}},
        "spec": {
            "address": address.to_string(),
            "pool": pool,
            "owner": {"namespace": owner.namespace, "name": owner.name},
        },
    })
}

fn claim_object(owner: &Owner, pool: &str, address: IpAddr) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "VipClaim",
        "metadata": {"name": owner.name, "namespace": owner.namespace},
        "spec": {"address": address.to_string(), "pool": pool},
    })
}

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// A stored claim: the allocation it names and its resource version.
fn parse_claim(owner: &Owner, object: &Value) -> Result<(Allocation, u64), IpamError> {
    let corrupt = |message: &str| IpamError::Corrupt {
        key: claim_key(owner).to_string(),
        message: message.to_owned(),
    };
    let address = text(object, "/spec/address")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| corrupt("spec.address is not an IP address"))?;
    let pool = text(object, "/spec/pool").ok_or_else(|| corrupt("spec.pool is missing"))?;
    let rv = crate::store::resource_version(object).unwrap_or(0);
    Ok((
        Allocation {
            owner: owner.clone(),
            pool: pool.to_owned(),
            address,
        },
        rv,
    ))
}

/// What one allocation attempt found.
enum Attempt {
    Done(Allocation),
    /// The candidate address was taken meanwhile.
    Taken(u128),
    /// The owner's claim changed meanwhile: start over.
    Retry,
}

impl Ipam {
    /// An allocator over `store` with these pools.
    pub fn new(store: Arc<dyn Store>, pools: BTreeMap<String, Pool>) -> Self {
        Ipam {
            store,
            pools,
            taken: Mutex::new(HashMap::new()),
        }
    }

    /// The configured pools.
    pub fn pools(&self) -> &BTreeMap<String, Pool> {
        &self.pools
    }

    fn pool(&self, name: &str) -> Result<&Pool, IpamError> {
        self.pools.get(name).ok_or_else(|| IpamError::UnknownPool {
            pool: name.to_owned(),
            known: self.pools.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }

    /// The owner's allocation, if it has one.
    pub async fn get(&self, owner: &Owner) -> Result<Option<Allocation>, IpamError> {
        match self.store.get(&claim_key(owner)).await? {
            Some(object) => Ok(Some(parse_claim(owner, &object)?.0)),
            None => Ok(None),
        }
    }

    /// Every allocation, by owner. Malformed claims are left out (and logged): one damaged
    /// object must not stop the others from being reconciled.
    pub async fn list(&self) -> Result<Vec<Allocation>, IpamError> {
        let claims = self
            .store
            .list(&claim_type(), None, &Selector::everything())
            .await?;
        Ok(claims
            .items
            .iter()
            .filter_map(|object| {
                let owner = Owner::new(
                    text(object, "/metadata/namespace").unwrap_or_default(),
                    text(object, "/metadata/name").unwrap_or_default(),
                );
                match parse_claim(&owner, object) {
                    Ok((allocation, _)) => Some(allocation),
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a malformed VIP claim");
                        None
                    }
                }
            })
            .collect())
    }

    /// The owner's address: the one it has if that still fits the request, else a new one
    /// (the old one is released in the same transaction).
    pub async fn allocate(
        &self,
        owner: &Owner,
        request: &Request,
    ) -> Result<Allocation, IpamError> {
        let pool = self.pool(&request.pool)?;
        if let Some(address) = request.address
            && pool.index_of(address).is_none()
        {
            return Err(IpamError::NotInPool {
                address,
                pool: pool.to_string(),
            });
        }
        let owner_key = owner.to_string();
        let mut refreshed = false;
        let mut collisions = 0usize;
        for _ in 0..MAX_ROUNDS {
            let claim = match self.store.get(&claim_key(owner)).await? {
                Some(object) => Some(parse_claim(owner, &object)?),
                None => None,
            };
            if let Some((current, _)) = &claim
                && current.pool == request.pool
                && request.address.is_none_or(|a| a == current.address)
            {
                return Ok(current.clone());
            }
            let candidate = match request.address {
                Some(address) => pool.index_of(address),
                None => self.candidate(pool, &owner_key),
            };
            let Some(index) = candidate else {
                // Looks full: what other controllers released is only seen after a re-read.
                if !refreshed {
                    self.refresh(pool).await?;
                    refreshed = true;
                    continue;
                }
                return Err(IpamError::Exhausted {
                    pool: pool.to_string(),
                    size: pool.size(),
                });
            };
            match self
                .try_allocate(owner, pool, index, claim.as_ref())
                .await?
            {
                Attempt::Done(allocation) => return Ok(allocation),
                Attempt::Retry => {}
                Attempt::Taken(index) => {
                    self.mark(pool, index, true);
                    if let Some(address) = request.address {
                        return Err(self.taken_error(address).await);
                    }
                    // The cache is behind what other controllers allocated: rather than
                    // discovering their addresses one collision at a time, read them all.
                    collisions += 1;
                    if collisions.is_multiple_of(REFRESH_AFTER_COLLISIONS) {
                        self.refresh(pool).await?;
                        refreshed = true;
                    }
                }
            }
        }
        Err(IpamError::Store(StoreError::Unavailable {
            backend: "ipam",
            message: format!("allocating a VIP for {owner} kept losing races; retry later"),
        }))
    }

    async fn taken_error(&self, address: IpAddr) -> IpamError {
        let owner = match self.store.get(&allocation_key(address)).await {
            Ok(Some(object)) => format!(
                "{}/{}",
                text(&object, "/spec/owner/namespace").unwrap_or("?"),
                text(&object, "/spec/owner/name").unwrap_or("?")
            ),
            _ => "another AccessPoint".to_owned(),
        };
        IpamError::AddressTaken { address, owner }
    }

    async fn try_allocate(
        &self,
        owner: &Owner,
        pool: &Pool,
        index: u128,
        claim: Option<&(Allocation, u64)>,
    ) -> Result<Attempt, IpamError> {
        let Some(address) = pool.address(index) else {
            return Ok(Attempt::Taken(index));
        };
        let mut writes = vec![Write::Put(
            allocation_object(owner, pool.name(), address),
            Expect::Absent,
        )];
        match claim {
            None => writes.push(Write::Put(
                claim_object(owner, pool.name(), address),
                Expect::Absent,
            )),
            Some((old, rv)) => {
                writes.push(Write::Put(
                    claim_object(owner, pool.name(), address),
                    Expect::ResourceVersion(*rv),
                ));
                // Only if it is there: a claim whose allocation object went missing (outside
                // interference) must still be able to move.
                if old.address != address
                    && self
                        .store
                        .get(&allocation_key(old.address))
                        .await?
                        .is_some()
                {
                    writes.push(Write::Delete(allocation_key(old.address), Expect::Any));
                }
            }
        }
        match self.store.transaction(writes).await {
            Ok(_) => {
                self.mark(pool, index, true);
                if let Some((old, _)) = claim
                    && let Some(old_pool) = self.pools.get(&old.pool)
                    && let Some(i) = old_pool.index_of(old.address)
                {
                    self.mark(old_pool, i, false);
                }
                Ok(Attempt::Done(Allocation {
                    owner: owner.clone(),
                    pool: pool.name().to_owned(),
                    address,
                }))
            }
            Err(StoreError::AlreadyExists { .. }) => {
                // Either the address was taken or someone created this owner's claim: a claim
                // now present means the latter.
                if claim.is_none() && self.store.get(&claim_key(owner)).await?.is_some() {
                    Ok(Attempt::Retry)
                } else {
                    Ok(Attempt::Taken(index))
                }
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(Attempt::Retry),
            Err(e) => Err(e.into()),
        }
    }

    /// The next address to try for an owner: the first one, from its probe start on, that is
    /// not known to be taken. Loads the pool's allocations on first use.
    fn candidate(&self, pool: &Pool, owner: &str) -> Option<u128> {
        let taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let empty = BTreeSet::new();
        let used = taken.get(pool.name()).unwrap_or(&empty);
        let size = pool.size();
        if u128::try_from(used.len()).unwrap_or(u128::MAX) >= size {
            return None;
        }
        let start = pool.start_for(owner);
        // The first free number at or after `start`, wrapping around: walk the taken set
        // instead of every number, so a nearly full pool costs O(taken), not O(size).
        let mut n = start;
        for &t in used.range(start..) {
            if t != n {
                return Some(n);
            }
            n += 1;
        }
        if n < size {
            return Some(n);
        }
        let mut n = 0;
        for &t in used.range(..start) {
            if t != n {
                return Some(n);
            }
            n += 1;
        }
        (n < start).then_some(n)
    }

    fn mark(&self, pool: &Pool, index: u128, used: bool) {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let set = taken.entry(pool.name().to_owned()).or_default();
        if used {
            set.insert(index);
        } else {
            set.remove(&index);
        }
    }

    /// Reloads which addresses of a pool are taken.
    async fn refresh(&self, pool: &Pool) -> Result<(), IpamError> {
        let selector =
            Selector::parse(&format!("{POOL_LABEL}={}", pool.name())).map_err(StoreError::from)?;
        let list = self.store.list(&allocation_type(), None, &selector).await?;
        let used: BTreeSet<u128> = list
            .items
            .iter()
            .filter_map(|o| text(o, "/spec/address")?.parse().ok())
            .filter_map(|a| pool.index_of(a))
            .collect();
        self.taken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pool.name().to_owned(), used);
        Ok(())
    }

    /// Loads every pool's allocations; call once at start so the first allocations do not
    /// collide with existing ones one by one.
    pub async fn load(&self) -> Result<(), IpamError> {
        for pool in self.pools.values() {
            self.refresh(pool).await?;
        }
        Ok(())
    }

    /// Releases the owner's address; returns it, or `None` when the owner had none.
    pub async fn release(&self, owner: &Owner) -> Result<Option<IpAddr>, IpamError> {
        for _ in 0..MAX_ROUNDS {
            let Some(object) = self.store.get(&claim_key(owner)).await? else {
                return Ok(None);
            };
            let (allocation, rv) = parse_claim(owner, &object)?;
            let claim = Write::Delete(claim_key(owner), Expect::ResourceVersion(rv));
            let address = Write::Delete(allocation_key(allocation.address), Expect::Any);
            let result = match self.store.transaction(vec![claim.clone(), address]).await {
                // An allocation object missing under a claim can only come from outside
                // interference; the claim still goes.
                Err(StoreError::NotFound { .. }) => self.store.transaction(vec![claim]).await,
                other => other,
            };
            match result {
                Ok(_) => {
                    if let Some(pool) = self.pools.get(&allocation.pool)
                        && let Some(i) = pool.index_of(allocation.address)
                    {
                        self.mark(pool, i, false);
                    }
                    return Ok(Some(allocation.address));
                }
                Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Store(StoreError::Unavailable {
            backend: "ipam",
            message: format!("releasing the VIP of {owner} kept losing races; retry later"),
        }))
    }

    /// Brings the allocations in line with the AccessPoints: each one without
    /// `spec.vip.shareWith` gets (or keeps) its own VIP, each one with it gets the VIP of the
    /// AccessPoint it names in its namespace, and the VIPs of AccessPoints that are gone or now
    /// share are released. Returns, per AccessPoint, its VIP or why it has none (for its
    /// status); `Err` only when releasing fails.
    pub async fn reconcile<A: std::borrow::Borrow<AccessPoint> + Sync>(
        &self,
        access_points: &[A],
    ) -> Result<BTreeMap<Owner, Result<IpAddr, IpamError>>, IpamError> {
        /// Allocations in flight at once: enough to hide store round trips.
        const PARALLEL: usize = 16;
        let owner_of = |ap: &AccessPoint| {
            Owner::new(
                ap.metadata.namespace.as_deref().unwrap_or("default"),
                ap.metadata.name.as_deref().unwrap_or_default(),
            )
        };
        let (sharing, owning): (Vec<&AccessPoint>, Vec<&AccessPoint>) = access_points
            .iter()
            .map(std::borrow::Borrow::borrow)
            .partition(|ap| ap.spec.vip.share_with.is_some());
        // Owned inputs first: a stream over borrowed AccessPoints makes the future not `Send`
        // for every lifetime (rust-lang/rust#102211), and the controller spawns it.
        let jobs: Vec<(Owner, Result<Request, IpamError>)> = owning
            .iter()
            .map(|ap| {
                let vip = &ap.spec.vip;
                let request = match vip.address.as_deref().map(str::parse::<IpAddr>) {
                    None => Ok(Request::pool(&vip.pool)),
                    Some(Ok(address)) => Ok(Request {
                        pool: vip.pool.clone(),
                        address: Some(address),
                    }),
                    Some(Err(_)) => Err(IpamError::InvalidAddress {
                        address: vip.address.clone().unwrap_or_default(),
                    }),
                };
                (owner_of(ap), request)
            })
            .collect();
        let mut out: BTreeMap<Owner, Result<IpAddr, IpamError>> = futures::stream::iter(jobs)
            .map(|(owner, request)| async move {
                let result = match request {
                    Ok(request) => self.allocate(&owner, &request).await.map(|a| a.address),
                    Err(e) => Err(e),
                };
                (owner, result)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        // Sharers look only at owners: chains of sharing are refused, whatever the order.
        let mut shared = Vec::with_capacity(sharing.len());
        for ap in &sharing {
            let owner = owner_of(ap);
            let target = Owner::new(
                owner.namespace.clone(),
                ap.spec.vip.share_with.clone().unwrap_or_default(),
            );
            let result = match out.get(&target) {
                Some(Ok(address)) => Ok(*address),
                Some(Err(e)) => Err(format!("it has no VIP: {e}")),
                None if sharing.iter().any(|s| owner_of(s) == target) => Err(
                    "it shares another AccessPoint's VIP itself; name that one instead".to_owned(),
                ),
                None => Err("no such AccessPoint in this namespace".to_owned()),
            };
            let result = result.map_err(|reason| IpamError::ShareTarget {
                target: target.to_string(),
                reason,
            });
            shared.push((owner, result));
        }
        out.extend(shared);
        let live: BTreeSet<Owner> = owning.iter().map(|ap| owner_of(ap)).collect();
        self.release_orphans(&live).await?;
        Ok(out)
    }

    /// Releases the addresses of owners that no longer exist (deleted while no controller was
    /// watching). Returns what was released.
    pub async fn release_orphans(
        &self,
        live: &BTreeSet<Owner>,
    ) -> Result<Vec<Allocation>, IpamError> {
        let mut released = Vec::new();
        for allocation in self.list().await? {
            if !live.contains(&allocation.owner) && self.release(&allocation.owner).await?.is_some()
            {
                released.push(allocation);
            }
        }
        Ok(released)
    }
}
