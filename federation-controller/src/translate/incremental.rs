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
//! everything, which is rare and keeps the dependency rules few enough to trust.
//!
//! Above the pieces, whole stages are kept when the kinds they read did not change at all
//! (found by comparing the snapshot's `Arc`s with the previous ones, so an unchanged kind
//! costs a pointer comparison per object): the WorkloadEntry fingerprints and index, the
//! NameServices' FQDN index, host ownership (kept while no AccessPoint's claims, name or age
//! changed), the dependency fingerprints of unchanged AccessPoints, and every NameService's
//! objects while no AccessPoint's verdict changed. A change to one AccessPoint's routes thus
//! recomputes that AccessPoint and the gateways of its clusters, and walks the rest once.
//!
//! The property test `incremental_equals_full` (tests/translate_golden.rs) checks incremental
//! against full translation over random changes; each of the shortcuts above, removed, makes
//! it fail.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};

use foldhash::HashMap;
use std::sync::Arc;

use causeway_crds::istio::IstioObject;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use causeway_crds::istio::WorkloadEntry;
use causeway_crds::v1alpha1::{AccessPoint, NameService};

use super::proxy::{self, GatewayBody, GatewayConfig, Index, key_ref};
use super::{AccessPointVerdict, Snapshot, istio};
use crate::placement::{self, HostConflict, ObjectKey, Placed, Workload};
use crate::status::unresolved_refs;

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
    piece_changed(map, key, fp, round, compute, |_, _| true).0
}

/// [`piece`], also telling whether the value differs from the one remembered before (`same`
/// compares a recomputed value with the old one; a new key always counts as changed).
fn piece_changed<T: Clone>(
    map: &mut Pieces<T>,
    key: &str,
    fp: Fp,
    round: u64,
    compute: impl FnOnce() -> T,
    same: impl FnOnce(&T, &T) -> bool,
) -> (T, bool) {
    if let Some(e) = map.get_mut(key) {
        e.round = round;
        let mut changed = false;
        if e.fp != fp {
            e.fp = fp;
            let value = compute();
            changed = !same(&e.value, &value);
            e.value = value;
        }
        return (e.value.clone(), changed);
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
    (value, true)
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

impl<T> Tokens<T> {
    /// Whether `now` holds exactly the objects of the previous snapshot.
    fn same(&self, now: &[Arc<T>]) -> bool {
        self.objects.len() == now.len()
            && self.objects.iter().zip(now).all(|(a, b)| Arc::ptr_eq(a, b))
    }

    /// Whether every object of `now` has the name of the previous snapshot's object at its
    /// position (then an order of the previous snapshot by name still holds).
    fn names_unchanged(&self, now: &[Arc<T>], meta: impl Fn(&T) -> &ObjectMeta) -> bool {
        self.objects.len() == now.len()
            && self
                .objects
                .iter()
                .zip(now)
                .all(|(a, b)| Arc::ptr_eq(a, b) || key_ref(meta(a)) == key_ref(meta(b)))
    }

    /// The token of every object of `now` (by `token_of`), computing only those that are not
    /// the same `Arc` as in the previous snapshot.
    fn update(&mut self, now: &[Arc<T>], token_of: impl Fn(&T) -> Fp) -> &[Fp] {
        if !self.same(now) {
            let tokens = now
                .iter()
                .enumerate()
                .map(|(i, o)| match (self.objects.get(i), self.tokens.get(i)) {
                    (Some(p), Some(t)) if Arc::ptr_eq(p, o) => *t,
                    _ => token_of(o),
                })
                .collect();
            self.objects = now.to_vec();
            self.tokens = tokens;
        }
        &self.tokens
    }
}

/// What the translator derives from the WorkloadEntries alone, kept while they are the same
/// objects (a change to an AccessPoint or NameService leaves them alone).
#[derive(Default)]
struct WorkloadMemo {
    tokens: Tokens<WorkloadEntry>,
    /// Order-independent sums of the tokens of the entries of each `namespace/app`.
    groups: HashMap<String, Fp>,
    /// The gateways' index of the entries, once a gateway was computed from it.
    index: Option<Arc<proxy::WorkloadIndex>>,
}

impl WorkloadMemo {
    /// Takes the entries of this snapshot; whether they changed.
    fn update(&mut self, now: &[Arc<WorkloadEntry>]) -> bool {
        if self.tokens.same(now) {
            return false;
        }
        let tokens = self.tokens.update(now, |w| token(&w.metadata, w));
        self.groups.clear();
        self.index = None;
        let mut buf = String::new();
        for (w, t) in now.iter().zip(tokens) {
            if let Some(app) = w.spec.labels.get("app") {
                let key = scratch_key(&mut buf, ns_of(&w.metadata), '/', app);
                match self.groups.get_mut(key) {
                    Some(sum) => *sum = sum.wrapping_add(*t),
                    None => {
                        self.groups.insert(key.to_owned(), *t);
                    }
                }
            }
        }
        true
    }

    /// The fingerprint of the entries of service `app` in `namespace`.
    fn group(&self, buf: &mut String, namespace: &str, app: &str) -> Option<Fp> {
        self.groups
            .get(scratch_key(buf, namespace, '/', app))
            .copied()
    }
}

/// Host ownership (which AccessPoint lost which claims), kept while no AccessPoint's claims,
/// name or age changed: most changes are to routes, and deciding ownership sorts every
/// AccessPoint.
#[derive(Default)]
struct HostMemo {
    claims: Tokens<AccessPoint>,
    fp: Option<Fp>,
    lost: BTreeMap<ObjectKey, Vec<HostConflict>>,
}

impl HostMemo {
    /// The losers of host conflicts among `aps`, and whether they changed.
    fn update(
        &mut self,
        aps: &[Arc<AccessPoint>],
    ) -> (&BTreeMap<ObjectKey, Vec<HostConflict>>, bool) {
        let fps = self.claims.update(aps, |ap| {
            let created = ap.metadata.creation_timestamp.as_ref().map(|t| t.0);
            fp_of(&(created, key_ref(&ap.metadata), placement::claims(ap)))
        });
        let fp = fp_of(fps);
        let mut changed = false;
        if self.fp != Some(fp) {
            let lost = placement::host_owners(aps);
            changed = self.fp.is_none() || lost != self.lost;
            self.lost = lost;
            self.fp = Some(fp);
        }
        (&self.lost, changed)
    }
}

/// A remembered placement, with whether every reference of the AccessPoint resolves.
#[derive(Clone, PartialEq)]
struct Placement {
    placed: Placed,
    refs_resolve: bool,
}

/// What the translations so far produced, with the fingerprints they were computed under.
#[derive(Default)]
struct Memo {
    /// Translations so far; pieces not used by the latest are forgotten.
    round: u64,
    /// The previous epoch.
    epoch: Option<Fp>,
    /// Placement of each AccessPoint.
    placed: Pieces<Placement>,
    /// Istio objects of each AccessPoint.
    istio_ap: Pieces<Arc<Vec<IstioObject>>>,
    /// Istio objects of each NameService.
    istio_ns: Pieces<Arc<Vec<IstioObject>>>,
    /// The previous translation's NameService chunks, in order.
    istio_ns_out: Vec<Arc<Vec<IstioObject>>>,
    /// What every gateway of a cluster serves, by cluster.
    bodies: Pieces<Arc<GatewayBody>>,
    /// Configuration of each gateway.
    gateways: Pieces<Arc<GatewayConfig>>,
    /// What the WorkloadEntries alone decide.
    workloads: WorkloadMemo,
    /// Host ownership.
    hosts: HostMemo,
    /// Tokens of the previous snapshot's AccessPoints, and their dependency fingerprints.
    access_point_tokens: Tokens<AccessPoint>,
    access_point_deps: Vec<Fp>,
    /// The previous snapshot's AccessPoint positions in key order.
    access_point_order: Vec<usize>,
    /// Tokens of the previous snapshot's NameServices, and their positions in key order.
    name_service_tokens: Tokens<NameService>,
    name_service_order: Vec<usize>,
    /// The NameServices' FQDNs by AccessPoint, once built from the current NameServices.
    fqdns: Option<Arc<proxy::FqdnIndex>>,
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

/// Positions of `objects` in key order (usually already so: stores list in key order).
fn key_order<T>(objects: &[Arc<T>], meta: impl Fn(&T) -> &ObjectMeta) -> Vec<usize> {
    let mut order: Vec<usize> = (0..objects.len()).collect();
    let key = |i: usize| key_ref(meta(&objects[i]));
    if !order.is_sorted_by(|a, b| key(*a) <= key(*b)) {
        order.sort_by(|a, b| key(*a).cmp(&key(*b)));
    }
    order
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
        let epoch_changed = memo.epoch.replace(epoch) != Some(epoch);

        // Which kinds changed at all: most changes touch one object of one kind, and what
        // depends only on the other kinds is kept whole.
        let workloads_changed = memo.workloads.update(&s.workload_entries);
        let nss = &s.name_services;
        let name_services_changed = !memo.name_service_tokens.same(nss);
        if name_services_changed {
            memo.fqdns = None;
            if !memo
                .name_service_tokens
                .names_unchanged(nss, |n| &n.metadata)
            {
                memo.name_service_order = key_order(nss, |n| &n.metadata);
            }
        }
        let ns_tokens = memo
            .name_service_tokens
            .update(nss, |n| token(&n.metadata, n));
        let aps = &s.access_points;
        let access_point_names_unchanged = memo
            .access_point_tokens
            .names_unchanged(aps, |a| &a.metadata);
        if !access_point_names_unchanged {
            memo.access_point_order = key_order(aps, |a| &a.metadata);
        }
        let wl = &memo.workloads;
        let idx = Index::with(s, wl.index.clone(), memo.fqdns.clone());

        // Per AccessPoint (by position): the fingerprint of what it depends on: itself, the
        // NameServices naming it, its backends' endpoints; the previous one when none of that
        // changed.
        let reuse_deps = !workloads_changed && !name_services_changed;
        let previous = &memo.access_point_tokens;
        let deps: Vec<Fp> = aps
            .iter()
            .enumerate()
            .map(|(i, ap)| {
                let same_object = previous.objects.get(i).is_some_and(|p| Arc::ptr_eq(p, ap));
                if same_object
                    && reuse_deps
                    && let Some(d) = memo.access_point_deps.get(i)
                {
                    return *d;
                }
                let own = match previous.tokens.get(i) {
                    Some(t) if same_object => *t,
                    _ => token(&ap.metadata, &**ap),
                };
                let (ns, name) = key_ref(&ap.metadata);
                let mut h = hasher();
                own.hash(&mut h);
                idx.fqdns(ns, name).hash(&mut h);
                for (bns, svc) in placement::backend_refs(ap) {
                    wl.group(&mut buf, bns, svc).hash(&mut h);
                }
                h.finish()
            })
            .collect();
        let own_tokens = memo
            .access_point_tokens
            .update(aps, |a| token(&a.metadata, a));

        // Verdicts, in key order: placement per AccessPoint (memoised), host ownership over
        // all (memoised while no claim changes).
        let order = &memo.access_point_order;
        let (lost, mut verdicts_changed) = memo.hosts.update(aps);
        verdicts_changed |= !access_point_names_unchanged;
        let workloads: std::cell::OnceCell<Vec<Workload<'_>>> = std::cell::OnceCell::new();
        let mut refs_resolve = Vec::with_capacity(aps.len());
        let mut verdict_list = Vec::with_capacity(aps.len());
        for &i in order {
            let ap = &aps[i];
            let (ns, name) = key_ref(&ap.metadata);
            let (p, changed) = piece_changed(
                &mut memo.placed,
                scratch_key(&mut buf, ns, '/', name),
                fp_of(&(epoch, deps[i])),
                round,
                || Placement {
                    placed: placement::resolve_placement(
                        ap,
                        &s.clusters,
                        workloads.get_or_init(|| {
                            s.workload_entries
                                .iter()
                                .map(|w| Workload {
                                    namespace: ns_of(&w.metadata),
                                    labels: &w.spec.labels,
                                })
                                .collect()
                        }),
                    ),
                    refs_resolve: unresolved_refs(ap, s).is_empty(),
                },
                PartialEq::eq,
            );
            verdicts_changed |= changed;
            let key = (ns.to_owned(), name.to_owned());
            let conflicts = if lost.is_empty() {
                Vec::new()
            } else {
                lost.get(&key).cloned().unwrap_or_default()
            };
            refs_resolve.push(p.refs_resolve);
            verdict_list.push((
                key,
                AccessPointVerdict {
                    placed: p.placed,
                    conflicts,
                },
            ));
        }
        // Sorted input: the map is built in bulk.
        let verdicts: BTreeMap<ObjectKey, AccessPointVerdict> = verdict_list.into_iter().collect();

        // Istio objects, AccessPoints then NameServices, each in key order (the verdicts are
        // in `order`).
        let by_name = istio::clusters_by_name(s);
        let mut istio_out = Vec::with_capacity(aps.len() + nss.len());
        for (&i, (key, v)) in order.iter().zip(&verdicts) {
            let ap = &aps[i];
            let fp = fp_of(&(epoch, own_tokens[i], v.accepted(), &v.placed.clusters));
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
        // A NameService's objects depend on the epoch, itself, the verdicts of the
        // AccessPoints it targets and the endpoints of the services it targets: when none of
        // these kinds changed, the previous chunks stand.
        let keep_name_services =
            !epoch_changed && !name_services_changed && !workloads_changed && !verdicts_changed;
        if keep_name_services {
            istio_out.extend(memo.istio_ns_out.iter().cloned());
        } else {
            let verdict_of: HashMap<(&str, &str), &AccessPointVerdict> = verdicts
                .iter()
                .map(|(k, v)| ((k.0.as_str(), k.1.as_str()), v))
                .collect();
            let mut ns_out = Vec::with_capacity(nss.len());
            for &i in &memo.name_service_order {
                let n = &nss[i];
                let (ns, name) = key_ref(&n.metadata);
                let mut h = hasher();
                (epoch, ns_tokens[i]).hash(&mut h);
                for t in &n.spec.targets {
                    if let Some(ap) = &t.access_point {
                        let v = verdict_of.get(&(ns, ap.as_str()));
                        v.map(|v| (v.accepted(), &v.placed.clusters)).hash(&mut h);
                    } else if let Some(svc) = &t.service {
                        let sns = t.namespace.as_deref().unwrap_or(ns);
                        wl.group(&mut buf, sns, svc).hash(&mut h);
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
                    ns_out.push(objects);
                }
            }
            memo.istio_ns.retain(|_, e| e.round == round);
            istio_out.extend(ns_out.iter().cloned());
            memo.istio_ns_out = ns_out;
        }

        // The AccessPoints each cluster's gateways serve (accepted, references resolved), by
        // position, in key order: what `proxy::served_by_cluster` computes.
        let mut served: HashMap<&str, Vec<usize>> = HashMap::default();
        for ((&i, v), resolve) in order.iter().zip(verdicts.values()).zip(&refs_resolve) {
            if !v.accepted() || !resolve {
                continue;
            }
            for c in &v.placed.clusters {
                served.entry(c.as_str()).or_default().push(i);
            }
        }

        // Gateways: what a cluster's gateways serve from the cluster and its AccessPoints;
        // each gateway's configuration from that and its address.
        let mut gateways = Vec::new();
        for c in &s.clusters {
            if c.spec.gateways.is_empty() {
                continue;
            }
            let cname = c.metadata.name.as_deref().unwrap_or_default();
            let list: &[usize] = served.get(cname).map(Vec::as_slice).unwrap_or_default();
            let mut h = hasher();
            epoch.hash(&mut h);
            for &i in list {
                // The dependency fingerprint covers the AccessPoint's name (its token does).
                deps[i].hash(&mut h);
            }
            let fp = h.finish();
            let body = piece(&mut memo.bodies, cname, fp, round, || {
                let list: Vec<&AccessPoint> = list.iter().map(|&i| &*aps[i]).collect();
                Arc::new(proxy::gateway_body(s, &idx, c, &list))
            });
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
                            config: body.config(g),
                        })
                    },
                );
                gateways.push(config);
            }
        }
        if memo.workloads.index.is_none() {
            memo.workloads.index = idx.workload_index();
        }
        if memo.fqdns.is_none() {
            memo.fqdns = idx.fqdn_index();
        }
        memo.access_point_deps = deps;

        // Forget what this translation did not use (deleted objects and gateways).
        memo.placed.retain(|_, e| e.round == round);
        memo.istio_ap.retain(|_, e| e.round == round);
        memo.bodies.retain(|_, e| e.round == round);
        memo.gateways.retain(|_, e| e.round == round);
        Translation {
            verdicts,
            istio: istio_out,
            gateways,
        }
    }
}
