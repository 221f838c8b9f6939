//! Status writes: what every object's status should be, compared with what is stored.
//!
//! Computing 10,000 statuses and comparing them as JSON takes longer than translating one
//! change, and most of them cannot have changed. A [`StatusWriter`] remembers, per object,
//! the fingerprint of everything its status was computed from the last time that status
//! equalled the stored one; while the fingerprint is the same, so is the answer, and the object
//! is skipped. The inputs: the stored object itself (uid and resourceVersion, which every write
//! to it — ours included — changes), its verdict and VIP, the Clusters, Secrets and
//! WorkloadEntries (by uid and resourceVersion) and, for an AccessPoint, the proxy counts of
//! its clusters. Never skipped: objects without a resourceVersion (not from a store), Clusters
//! and ExternalServices (few), objects some proxy rejects (NACK events carry time), and
//! AccessPoints with a certificate (its `Expiring`/`Expired` state moves with the clock).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use foldhash::HashMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{KINDS, json};
use crate::placement::ObjectKey as NsName;
use crate::status::{self, ClusterProxies, ObjectId, ProxyReport};
use crate::store::{ObjectKey, ResourceType};
use crate::translate::proxy::key_ref;
use crate::translate::{self, AccessPointVerdict, Snapshot, object_key};

type Fp = u64;

fn hasher() -> foldhash::quality::FoldHasher<'static> {
    foldhash::quality::FixedState::default().build_hasher()
}

/// Which stored version of an object this is; `None` for objects not from a store.
fn version(meta: &ObjectMeta) -> Option<(&str, &str)> {
    Some((meta.uid.as_deref()?, meta.resource_version.as_deref()?))
}

/// What a proxy report says that an AccessPoint's status reads (not the rejections, checked
/// per object, nor when a proxy was last seen).
fn proxy_counts(p: &ClusterProxies) -> Fp {
    let mut h = hasher();
    (
        p.gateways,
        p.gateways_acked,
        p.gateways_nacked,
        p.sidecars,
        p.sidecars_acked,
        &p.nacks,
    )
        .hash(&mut h);
    h.finish()
}

/// Computes status writes, skipping objects whose status inputs did not change since their
/// status last matched (see the module documentation). A fresh writer skips nothing.
#[derive(Default)]
pub struct StatusWriter {
    /// By `kind\0namespace\0name`: the fingerprint under which the computed status equalled
    /// the stored one.
    quiet: HashMap<String, Fp>,
}

impl StatusWriter {
    /// How many objects the next call may skip (if their inputs stay the same).
    pub fn skippable(&self) -> usize {
        self.quiet.len()
    }

    /// Statuses of `s`'s objects that differ from the stored ones, as (key, status) writes.
    pub fn writes(
        &mut self,
        s: &Snapshot,
        verdicts: &BTreeMap<NsName, AccessPointVerdict>,
        vips: &BTreeMap<NsName, Result<IpAddr, String>>,
        proxies: &ProxyReport,
        now: Timestamp,
    ) -> Vec<(ObjectKey, Value)> {
        let mut out = Vec::new();
        let mut push = |resource: usize, ns: Option<&str>, name: &str, new: Value, old: Value| {
            let changed = new != old;
            if changed {
                let (group, kind) = KINDS[resource];
                let rt = ResourceType::new(group, kind);
                let key = match ns {
                    Some(ns) => ObjectKey::namespaced(rt, ns, name),
                    None => ObjectKey::cluster_scoped(rt, name),
                };
                out.push((key, new));
            }
            changed
        };

        // What every object's status may read; `None` when something is not from a store.
        let shared = {
            let mut h = hasher();
            let mut stored = true;
            let metas = (s.clusters.iter().map(|c| &c.metadata))
                .chain(s.secrets.iter().map(|c| &c.metadata))
                .chain(s.workload_entries.iter().map(|c| &c.metadata));
            for meta in metas {
                let v = version(meta);
                stored &= v.is_some();
                v.hash(&mut h);
            }
            stored.then(|| h.finish())
        };
        let counts: HashMap<&str, Fp> = proxies
            .iter()
            .map(|(name, p)| (name.as_str(), proxy_counts(p)))
            .collect();
        let rejected: std::collections::HashSet<&ObjectId> =
            proxies.values().flat_map(|p| p.rejections.keys()).collect();
        let mut buf = String::new();
        // A hasher primed with an object's shared inputs, when it may be skipped at all; the
        // caller adds what is its own.
        let fingerprint = |meta: &ObjectMeta, kind: &'static str| {
            let shared = shared?;
            let version = version(meta)?;
            // Ids are built only while some object has a rejection.
            if !rejected.is_empty() && rejected.contains(&ObjectId::of(kind, meta)) {
                return None;
            }
            let mut h = hasher();
            (shared, version).hash(&mut h);
            Some(h)
        };

        for c in &s.clusters {
            let name = c.metadata.name.as_deref().unwrap_or_default();
            let st = status::cluster_status(c, proxies.get(name), now);
            push(0, None, name, json(&st), json(&c.status));
        }
        // Borrowed lookups: no key is allocated for an object that is skipped.
        let verdict_of: HashMap<(&str, &str), &AccessPointVerdict> = verdicts
            .iter()
            .map(|(k, v)| ((k.0.as_str(), k.1.as_str()), v))
            .collect();
        let vip_of: HashMap<(&str, &str), &Result<IpAddr, String>> = vips
            .iter()
            .map(|(k, v)| ((k.0.as_str(), k.1.as_str()), v))
            .collect();
        for ap in &s.access_points {
            let (ns, name) = key_ref(&ap.metadata);
            let Some(&verdict) = verdict_of.get(&(ns, name)) else {
                continue;
            };
            let vip = vip_of.get(&(ns, name)).copied();
            let fp = fingerprint(&ap.metadata, "AccessPoint").map(|mut h| {
                (verdict, vip).hash(&mut h);
                for c in &verdict.placed.clusters {
                    counts.get(c.as_str()).hash(&mut h);
                }
                h.finish()
            });
            let qk = quiet_key(&mut buf, "AccessPoint", &ap.metadata);
            if fp.is_some() && self.quiet.get(qk) == fp.as_ref() {
                continue;
            }
            let st = status::access_point_status(ap, verdict, vip, s, proxies, now);
            let skippable = st.certificate.is_none();
            let changed = push(1, Some(ns), name, json(&st), json(&ap.status));
            remember(&mut self.quiet, qk, fp.filter(|_| skippable && !changed));
        }
        for n in &s.name_services {
            let (ns, _) = key_ref(&n.metadata);
            let fp = fingerprint(&n.metadata, "NameService").map(|mut h| {
                for t in &n.spec.targets {
                    t.access_point
                        .as_deref()
                        .and_then(|ap| verdict_of.get(&(ns, ap)))
                        .hash(&mut h);
                }
                h.finish()
            });
            let qk = quiet_key(&mut buf, "NameService", &n.metadata);
            if fp.is_some() && self.quiet.get(qk) == fp.as_ref() {
                continue;
            }
            let key = object_key(&n.metadata);
            let (clusters, issues) = translate::name_service_clusters(n, s, verdicts);
            let mut st = status::name_service_status(n, &clusters, &issues, s, now);
            st.proxy_rejections = status::proxy_rejections(
                &ObjectId::of("NameService", &n.metadata),
                proxies,
                n.status.as_ref().and_then(|o| o.proxy_rejections.as_ref()),
            );
            let changed = push(2, Some(&key.0), &key.1, json(&st), json(&n.status));
            remember(&mut self.quiet, qk, fp.filter(|_| !changed));
        }
        for x in &s.external_services {
            let key = object_key(&x.metadata);
            let unresolved = status::external_unresolved(x, s);
            let egress: Vec<String> = s
                .clusters
                .iter()
                .filter(|c| !c.spec.gateways.is_empty())
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            let mut st = status::external_service_status(x, egress, &unresolved, now);
            st.proxy_rejections = status::proxy_rejections(
                &ObjectId::of("ExternalService", &x.metadata),
                proxies,
                x.status.as_ref().and_then(|o| o.proxy_rejections.as_ref()),
            );
            push(3, Some(&key.0), &key.1, json(&st), json(&x.status));
        }
        out
    }
}

/// `kind\0namespace\0name` of an object, in `buf`.
fn quiet_key<'b>(buf: &'b mut String, kind: &str, meta: &ObjectMeta) -> &'b str {
    buf.clear();
    buf.push_str(kind);
    buf.push('\0');
    buf.push_str(meta.namespace.as_deref().unwrap_or("default"));
    buf.push('\0');
    buf.push_str(meta.name.as_deref().unwrap_or_default());
    buf
}

/// Remembers `fp` under `key`, or forgets the key.
fn remember(quiet: &mut HashMap<String, Fp>, key: &str, fp: Option<Fp>) {
    match fp {
        Some(fp) => match quiet.get_mut(key) {
            Some(v) => *v = fp,
            None => {
                quiet.insert(key.to_owned(), fp);
            }
        },
        None => {
            quiet.remove(key);
        }
    }
}
