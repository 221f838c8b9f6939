//! Incremental translation: the same output as a full translation, reusing what the previous
//! one computed for every piece whose inputs did not change.
//!
//! At eBay's scale (100 clusters, 10,000 AccessPoints and NameServices) a full translation
//! takes about a second, and a user who changes one AccessPoint should not wait for it. The
//! translator is split into pieces — the placement of each AccessPoint, the Istio objects of
//! each AccessPoint and NameService, the configuration of each gateway — and each piece is
//! remembered with a fingerprint of everything it reads. The next translation recomputes a
//! piece only when its fingerprint differs.
//!
//! Fingerprints are built from object *tokens*: the uid, generation, labels and annotations
//! of a stored object (the store bumps the generation on every change outside metadata and
//! status, so a status write does not invalidate anything), or a hash of the whole object when
//! it carries no generation (objects built in tests). Coarse inputs — every Cluster,
//! ExternalService and Secret — form one *epoch*: a change to any of them recomputes
//! everything, which is rare and keeps the dependency rules few enough to trust. The property
//! test `incremental_equals_full` (tests/translate_golden.rs) checks incremental against full translation over random changes.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::HashMap;
use std::sync::Arc;

use causeway_crds::istio::IstioObject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use causeway_crds::istio::WorkloadEntry;
use causeway_crds::v1alpha1::{AccessPoint, NameService};

use super::proxy::{self, GatewayConfig, Index, key_ref};
use super::{AccessPointVerdict, Snapshot, istio};
use crate::placement::{self, ObjectKey, Placed, Workload};

fn ns_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// A 64-bit fingerprint.
type Fp = u64;

/// The hasher of fingerprints: foldhash's quality variant with a fixed seed (fast, and well
/// mixed; fingerprints never leave the process, so no attacker picks their inputs).
fn hasher() -> foldhash::quality::FoldHasher<'static> {
    foldhash::quality::FixedState::default().build_hasher()
}

fn fp_of<T: Hash + ?Sized>(v: &T) -> Fp {
    let mut h = hasher();
    v.hash(&mut h);
    h.finish()
}

/// What identifies one version of a stored object for translation purposes.
fn token<T: Serialize>(meta: &ObjectMeta, object: &T) -> Fp {
    let mut h = hasher();
    meta.namespace.hash(&mut h);
    meta.name.hash(&mut h);
    match meta.generation {
        Some(g) => {
            (meta.uid.as_deref(), g, &meta.labels, &meta.annotations).hash(&mut h);
            meta.creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .hash(&mut h);
        }
        // Not from a store: only the whole content tells versions apart.
        None => serde_json::to_vec(object).unwrap_or_default().hash(&mut h),
    }
    h.finish()
}

/// A remembered piece: the fingerprint it was computed under, the last round that used it.
struct Entry<T> {
    fp: Fp,
    round: u64,
    value: T,
}

/// Pieces by key (`namespace/name`, or `cluster|address` for gateways).
type Pieces<T> = HashMap<String, Entry<T>>;

/// The piece of `key` under fingerprint `fp`: the remembered one when the fingerprint matches,
/// otherwise `compute()`'s (remembered from now on). Keys are looked up as `&str`, so an
/// unchanged piece costs no allocation.
fn piece<T: Clone>(
    map: &mut Pieces<T>,
    key: &str,
    fp: Fp,
    round: u64,
    compute: impl FnOnce() -> T,
) -> T {
    if let Some(e) = map.get_mut(key) {
        e.round = round;
        if e.fp != fp {
            e.fp = fp;
            e.value = compute();
        }
        return e.value.clone();
    }
    let value = compute();
    map.insert(
        key.to_owned(),
        Entry {
            fp,
            round,
            value: value.clone(),
        },
    );
    value
}

/// `namespace/name` into a reused buffer (names cannot contain `/`).
fn scratch_key<'b>(buf: &'b mut String, a: &str, sep: char, b: &str) -> &'b str {
    buf.clear();
    buf.push_str(a);
    buf.push(sep);
    buf.push_str(b);
    buf
}

/// The tokens of one kind's objects in the previous snapshot, kept with the objects: an object
/// that is the same `Arc` at the same position has the same token (the memo holds the `Arc`,
/// so its address cannot be reused by another object meanwhile).
struct Tokens<T> {
    objects: Vec<Arc<T>>,
    tokens: Vec<Fp>,
}

impl<T> Default for Tokens<T> {
    fn default() -> Self {
        Self {
            objects: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

impl<T: Serialize> Tokens<T> {
    /// The token of every object of `now`, computing only those that are not the same `Arc`
    /// as in the previous snapshot.
    fn update(&mut self, now: &[Arc<T>], meta: impl Fn(&T) -> &ObjectMeta) -> &[Fp] {
        let tokens = now
            .iter()
            .enumerate()
            .map(|(i, o)| match (self.objects.get(i), self.tokens.get(i)) {
                (Some(p), Some(t)) if Arc::ptr_eq(p, o) => *t,
                _ => token(meta(o), &**o),
            })
            .collect();
        self.objects = now.to_vec();
        self.tokens = tokens;
        &self.tokens
    }
}

/// What the translations so far produced, with the fingerprints they were computed under.
#[derive(Default)]
struct Memo {
    /// Translations so far; pieces not used by the latest are forgotten.
    round: u64,
    /// Placement of each AccessPoint.
    placed: Pieces<Placed>,
    /// Istio objects of each AccessPoint.
    istio_ap: Pieces<Arc<Vec<IstioObject>>>,
    /// Istio objects of each NameService.
    istio_ns: Pieces<Arc<Vec<IstioObject>>>,
    /// Configuration of each gateway.
    gateways: Pieces<Arc<GatewayConfig>>,
    /// Tokens of the previous snapshot's WorkloadEntries, AccessPoints and NameServices.
    workload_tokens: Tokens<WorkloadEntry>,
    access_point_tokens: Tokens<AccessPoint>,
    name_service_tokens: Tokens<NameService>,
}

/// The translator's output, as the reconciler publishes it.
#[derive(Debug, Clone, Default)]
pub struct Translation {
    /// Placement and conflicts of every AccessPoint.
    pub verdicts: BTreeMap<ObjectKey, AccessPointVerdict>,
    /// The Istio objects every member cluster gets, in chunks of one AccessPoint or
    /// NameService (AccessPoints first, each part sorted by key); chunks are shared with
    /// earlier translations when unchanged.
    pub istio: Vec<Arc<Vec<IstioObject>>>,
    /// The configuration of every gateway, in cluster order; shared with earlier
    /// translations when unchanged (compare with [`Arc::ptr_eq`] to skip work downstream).
    pub gateways: Vec<Arc<GatewayConfig>>,
}

/// A translator that remembers its previous output (see the module documentation).
#[derive(Default)]
pub struct Translator {
    memo: Memo,
}

impl Translator {
    /// A translator with nothing remembered: its first translation is a full one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Translates `s`, reusing the pieces of the previous translation whose inputs are
    /// unchanged. The result equals a full translation of `s`.
    pub fn translate(&mut self, s: &Snapshot) -> Translation {
        let memo = &mut self.memo;
        memo.round += 1;
        let round = memo.round;
        let mut buf = String::new();

        // The epoch: everything whose change recomputes everything.
        let mut h = hasher();
        for c in &s.clusters {
            token(&c.metadata, &**c).hash(&mut h);
        }
        for x in &s.external_services {
            token(&x.metadata, &**x).hash(&mut h);
        }
        for sec in &s.secrets {
            token(&sec.metadata, &**sec).hash(&mut h);
        }
        let epoch = h.finish();

        // WorkloadEntries by (namespace, app): an order-independent sum of their tokens.
        let mut groups: HashMap<(&str, &str), Fp> = HashMap::default();
        let we_tokens = memo
            .workload_tokens
            .update(&s.workload_entries, |w| &w.metadata);
        for (w, t) in s.workload_entries.iter().zip(we_tokens) {
            if let Some(app) = w.spec.labels.get("app") {
                let e = groups
                    .entry((ns_of(&w.metadata), app.as_str()))
                    .or_default();
                *e = e.wrapping_add(*t);
            }
        }
        let idx = Index::new(s);

        // Per AccessPoint: its own token, the NameServices naming it, its backends' endpoints.
        // The same dependency fingerprints by object address, for the gateways' lists of
        // `&AccessPoint` (hashing an address, not two strings, 15,000 times).
        let mut deps_by_ptr: HashMap<usize, Fp> =
            HashMap::with_capacity_and_hasher(s.access_points.len(), Default::default());
        let mut ap_tokens: HashMap<(&str, &str), (Fp, Fp)> =
            HashMap::with_capacity_and_hasher(s.access_points.len(), Default::default());
        let own_tokens = memo
            .access_point_tokens
            .update(&s.access_points, |a| &a.metadata);
        for (ap, own) in s.access_points.iter().zip(own_tokens) {
            let (ns, name) = key_ref(&ap.metadata);
            let own = *own;
            let mut h = hasher();
            own.hash(&mut h);
            idx.fqdns(ns, name).hash(&mut h);
            for (bns, svc) in placement::backend_refs(ap) {
                groups.get(&(bns, svc)).hash(&mut h);
            }
            let deps = h.finish();
            ap_tokens.insert((ns, name), (own, deps));
            deps_by_ptr.insert(Arc::as_ptr(ap) as usize, deps);
        }

        // Verdicts: placement per AccessPoint (memoised), host ownership over all.
        let workloads: Vec<Workload<'_>> = s
            .workload_entries
            .iter()
            .map(|w| Workload {
                namespace: ns_of(&w.metadata),
                labels: &w.spec.labels,
            })
            .collect();
        let mut lost = placement::host_owners(&s.access_points);
        let mut verdicts = BTreeMap::new();
        for ap in &s.access_points {
            let (ns, name) = key_ref(&ap.metadata);
            let deps = ap_tokens.get(&(ns, name)).map(|t| t.1);
            let placed = piece(
                &mut memo.placed,
                scratch_key(&mut buf, ns, '/', name),
                fp_of(&(epoch, deps)),
                round,
                || placement::resolve_placement(ap, &s.clusters, &workloads),
            );
            let key = (ns.to_owned(), name.to_owned());
            let conflicts = if lost.is_empty() {
                Vec::new()
            } else {
                lost.remove(&key).unwrap_or_default()
            };
            verdicts.insert(key, AccessPointVerdict { placed, conflicts });
        }

        // Istio objects, AccessPoints then NameServices, each in key order.
        let by_name = istio::clusters_by_name(s);
        let aps: HashMap<(&str, &str), &AccessPoint> = s
            .access_points
            .iter()
            .map(|ap| (key_ref(&ap.metadata), &**ap))
            .collect();
        let mut istio_out = Vec::with_capacity(s.access_points.len() + s.name_services.len());
        for (key, v) in &verdicts {
            let Some(ap) = aps.get(&(key.0.as_str(), key.1.as_str())).copied() else {
                continue;
            };
            let own = ap_tokens
                .get(&(key.0.as_str(), key.1.as_str()))
                .map(|t| t.0);
            let fp = fp_of(&(epoch, own, v.accepted(), &v.placed.clusters));
            let objects = piece(
                &mut memo.istio_ap,
                scratch_key(&mut buf, &key.0, '/', &key.1),
                fp,
                round,
                || Arc::new(istio::access_point_objects(ap, key, v, &by_name)),
            );
            if !objects.is_empty() {
                istio_out.push(objects);
            }
        }
        let verdict_of: HashMap<(&str, &str), &AccessPointVerdict> = verdicts
            .iter()
            .map(|(k, v)| ((k.0.as_str(), k.1.as_str()), v))
            .collect();
        let ns_tokens = memo
            .name_service_tokens
            .update(&s.name_services, |n| &n.metadata)
            .to_vec();
        let mut nss: Vec<_> = s.name_services.iter().zip(ns_tokens).collect();
        nss.sort_by(|a, b| key_ref(&a.0.metadata).cmp(&key_ref(&b.0.metadata)));
        for (n, own) in nss {
            let (ns, name) = key_ref(&n.metadata);
            let mut h = hasher();
            (epoch, own).hash(&mut h);
            for t in &n.spec.targets {
                if let Some(ap) = &t.access_point {
                    let v = verdict_of.get(&(ns, ap.as_str()));
                    v.map(|v| (v.accepted(), &v.placed.clusters)).hash(&mut h);
                } else if let Some(svc) = &t.service {
                    let sns = t.namespace.as_deref().unwrap_or(ns);
                    groups.get(&(sns, svc.as_str())).hash(&mut h);
                }
            }
            let objects = piece(
                &mut memo.istio_ns,
                scratch_key(&mut buf, ns, '/', name),
                h.finish(),
                round,
                || Arc::new(istio::name_service_objects(n, s, &verdicts, &by_name)),
            );
            if !objects.is_empty() {
                istio_out.push(objects);
            }
        }

        // Gateways: each from its cluster and the AccessPoints it serves.
        let served = proxy::served_by_cluster(s, &verdicts);
        let mut gateways = Vec::new();
        for c in &s.clusters {
            let cname = c.metadata.name.as_deref().unwrap_or_default();
            let list: &[&AccessPoint] = served.get(cname).map(Vec::as_slice).unwrap_or_default();
            let mut h = hasher();
            epoch.hash(&mut h);
            for ap in list {
                // The dependency fingerprint covers the AccessPoint's name (its token does).
                deps_by_ptr
                    .get(&(std::ptr::from_ref::<AccessPoint>(ap) as usize))
                    .hash(&mut h);
            }
            let fp = h.finish();
            for g in &c.spec.gateways {
                let config = piece(
                    &mut memo.gateways,
                    scratch_key(&mut buf, cname, '|', &g.address),
                    fp,
                    round,
                    || {
                        Arc::new(GatewayConfig {
                            cluster: cname.to_owned(),
                            address: g.address.clone(),
                            config: proxy::gateway_config(s, &idx, c, g, list),
                        })
                    },
                );
                gateways.push(config);
            }
        }

        // Forget what this translation did not use (deleted objects and gateways).
        memo.placed.retain(|_, e| e.round == round);
        memo.istio_ap.retain(|_, e| e.round == round);
        memo.istio_ns.retain(|_, e| e.round == round);
        memo.gateways.retain(|_, e| e.round == round);
        Translation {
            verdicts,
            istio: istio_out,
            gateways,
        }
    }
}
