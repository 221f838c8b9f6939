//! The object rules both backends share: what a put or a status write turns the stored object
//! into, and which metadata the store owns.

use serde_json::{Map, Value};

use super::{Expect, MAX_TRANSACTION_WRITES, ObjectKey, Outcome, StoreError, Write};

/// Metadata fields the store sets; what a writer sends for them is ignored.
const SYSTEM_METADATA: [&str; 4] = ["uid", "creationTimestamp", "resourceVersion", "generation"];

/// Largest object accepted, as JSON. etcd refuses requests over 1.5 MiB by default
/// (`--max-request-bytes`), Kubernetes objects over 1.5 MB; both backends refuse the same
/// objects, with a message, rather than etcd failing obscurely.
pub(crate) const MAX_OBJECT_BYTES: usize = 1_000_000;

/// Longest name or namespace accepted (Kubernetes' limit for DNS subdomain names).
const MAX_SEGMENT: usize = 253;

/// Refuses what cannot be one segment of a key path.
pub(crate) fn check_segment(field: &str, value: &str) -> Result<(), StoreError> {
    let problem = if value.is_empty() {
        Some("must not be empty".to_owned())
    } else if value.len() > MAX_SEGMENT {
        Some(format!(
            "is {} characters long; the limit is {MAX_SEGMENT}",
            value.len()
        ))
    } else if value == "." || value == ".." || value == super::CLUSTER_SCOPE {
        Some(format!("{value:?} is reserved"))
    } else {
        value
            .chars()
            .find(|c| *c == '/' || *c == '%' || c.is_whitespace() || c.is_control())
            .map(|c| {
                format!("{value:?} contains {c:?}; use lower-case letters, digits, '-' and '.'")
            })
    };
    match problem {
        Some(message) => Err(StoreError::invalid(field, message)),
        None => Ok(()),
    }
}

/// What a precondition check decided.
pub(crate) fn check_expect(
    key: &ObjectKey,
    expect: Expect,
    current: Option<u64>,
) -> Result<(), StoreError> {
    match (expect, current) {
        (Expect::Any, _) | (Expect::Absent, None) => Ok(()),
        (Expect::Absent, Some(_)) => Err(StoreError::AlreadyExists {
            key: key.to_string(),
        }),
        (Expect::ResourceVersion(_), None) => Err(StoreError::NotFound {
            key: key.to_string(),
        }),
        (Expect::ResourceVersion(expected), Some(actual)) if expected != actual => {
            Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                actual,
            })
        }
        (Expect::ResourceVersion(_), Some(_)) => Ok(()),
    }
}

/// What one write of a transaction will do.
pub(crate) enum Plan {
    /// Nothing: the stored object (with its resource version) is already as written.
    Unchanged(Value),
    /// Store this object (without `resourceVersion`).
    Put(Value, Outcome),
    /// Delete the stored object (given with its resource version).
    Delete(Value),
}

/// The keys of a transaction's writes; refuses empty, oversized and repeated-key transactions.
pub(crate) fn transaction_keys(writes: &[Write]) -> Result<Vec<ObjectKey>, StoreError> {
    if writes.is_empty() || writes.len() > MAX_TRANSACTION_WRITES {
        return Err(StoreError::invalid(
            "transaction",
            format!(
                "has {} writes; a transaction takes 1 to {MAX_TRANSACTION_WRITES}",
                writes.len()
            ),
        ));
    }
    let mut keys: Vec<ObjectKey> = Vec::with_capacity(writes.len());
    for write in writes {
        let key = write.key()?;
        if keys.contains(&key) {
            return Err(StoreError::invalid(
                "transaction",
                format!("writes {key} twice; combine the changes into one write"),
            ));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn check_size(object: &Value) -> Result<(), StoreError> {
    let size = serde_json::to_vec(object).map_or(0, |v| v.len());
    if size > MAX_OBJECT_BYTES {
        return Err(StoreError::invalid(
            "",
            format!(
                "the object is {size} bytes as JSON; the store takes objects up to \
                 {MAX_OBJECT_BYTES} bytes: split it, or keep large data elsewhere"
            ),
        ));
    }
    Ok(())
}

/// Decides what a write does to `current` (the stored object with its resource version).
pub(crate) fn plan(
    write: Write,
    key: &ObjectKey,
    current: Option<&Value>,
) -> Result<Plan, StoreError> {
    let current_rv = current.and_then(super::resource_version);
    let not_found = || StoreError::NotFound {
        key: key.to_string(),
    };
    match write {
        Write::Put(body, expect) => {
            check_expect(key, expect, current_rv)?;
            Ok(match apply_put(body, current)? {
                Some((object, outcome)) => {
                    check_size(&object)?;
                    Plan::Put(object, outcome)
                }
                None => Plan::Unchanged(current.cloned().unwrap_or(Value::Null)),
            })
        }
        Write::Status(_, status, expect) => {
            let current = current.ok_or_else(not_found)?;
            check_expect(key, expect, current_rv)?;
            Ok(match apply_status(current, status) {
                Some(mut object) => {
                    strip_resource_version(&mut object);
                    check_size(&object)?;
                    Plan::Put(object, Outcome::Updated)
                }
                None => Plan::Unchanged(current.clone()),
            })
        }
        Write::Delete(_, expect) => {
            let current = current.ok_or_else(not_found)?;
            check_expect(key, expect, current_rv)?;
            Ok(Plan::Delete(current.clone()))
        }
    }
}

/// The object a put stores, given what is stored now: `None` when nothing would change.
/// The result has no `resourceVersion`; the backend sets it.
pub(crate) fn apply_put(
    mut body: Value,
    existing: Option<&Value>,
) -> Result<Option<(Value, Outcome)>, StoreError> {
    let Some(fields) = body.as_object_mut() else {
        return Err(StoreError::invalid("", "an object must be a mapping"));
    };
    // Status has its own write path, as with a Kubernetes status subresource: keep what is
    // stored, so an apply of a spec never wipes what the controller reported.
    fields.remove("status");
    if let Some(status) = existing.and_then(|e| e.get("status")) {
        fields.insert("status".to_owned(), status.clone());
    }
    let metadata = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return Err(StoreError::invalid("metadata", "must be a mapping"));
    };
    for field in SYSTEM_METADATA {
        metadata.remove(field);
    }
    if metadata
        .get("namespace")
        .is_some_and(|ns| ns.as_str() == Some(""))
    {
        metadata.remove("namespace");
    }

    let Some(existing) = existing else {
        metadata.insert("uid".to_owned(), Value::String(new_uid()?));
        metadata.insert("creationTimestamp".to_owned(), Value::String(now()));
        metadata.insert("generation".to_owned(), Value::from(1u64));
        return Ok(Some((body, Outcome::Created)));
    };

    let old_generation = super::generation(existing).unwrap_or(1);
    let spec_changed =
        without(&body, &["metadata", "status"]) != without(existing, &["metadata", "status"]);
    let metadata_changed = user_metadata(&body) != user_metadata(existing);
    if !spec_changed && !metadata_changed {
        return Ok(None);
    }
    let generation = old_generation + u64::from(spec_changed);
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["uid", "creationTimestamp"] {
            if let Some(v) = existing.get("metadata").and_then(|m| m.get(field)) {
                metadata.insert(field.to_owned(), v.clone());
            }
        }
        metadata.insert("generation".to_owned(), Value::from(generation));
    }
    Ok(Some((body, Outcome::Updated)))
}

/// The object a status write stores: `None` when the status is already this.
pub(crate) fn apply_status(existing: &Value, status: Value) -> Option<Value> {
    if existing.get("status") == Some(&status) {
        return None;
    }
    let mut object = existing.clone();
    if let Some(fields) = object.as_object_mut() {
        if status.is_null() {
            fields.remove("status");
        } else {
            fields.insert("status".to_owned(), status);
        }
    }
    if existing.get("status").is_none() && object.get("status").is_none() {
        return None;
    }
    Some(object)
}

/// Sets `metadata.resourceVersion`.
pub(crate) fn set_resource_version(object: &mut Value, revision: u64) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert(
            "resourceVersion".to_owned(),
            Value::String(revision.to_string()),
        );
    }
}

/// Removes `metadata.resourceVersion` (etcd keeps it as the key's mod revision instead).
pub(crate) fn strip_resource_version(object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
    }
}

fn without(object: &Value, fields: &[&str]) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        for field in fields {
            map.remove(*field);
        }
    }
    copy
}

fn user_metadata(object: &Value) -> Value {
    let mut metadata = object.get("metadata").cloned().unwrap_or(Value::Null);
    if let Some(map) = metadata.as_object_mut() {
        for field in SYSTEM_METADATA {
            map.remove(field);
        }
    }
    metadata
}

/// A random (version 4) UUID, as Kubernetes gives objects.
fn new_uid() -> Result<String, StoreError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| StoreError::Unavailable {
        backend: "store",
        message: format!("the operating system's random source failed: {e}"),
    })?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

/// The current time as Kubernetes writes timestamps: RFC 3339, UTC, whole seconds.
fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ap(spec: Value) -> Value {
        json!({"apiVersion": "causeway.io/v1alpha1", "kind": "AccessPoint",
               "metadata": {"name": "shop", "namespace": "retail"}, "spec": spec})
    }

    #[test]
    fn create_sets_system_metadata() {
        let (obj, outcome) = apply_put(ap(json!({"hosts": ["a"]})), None)
            .unwrap()
            .unwrap();
        assert_eq!(outcome, Outcome::Created);
        let md = &obj["metadata"];
        assert_eq!(md["generation"], 1);
        assert_eq!(md["uid"].as_str().unwrap().len(), 36);
        let ts = md["creationTimestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
    }

    #[test]
    fn status_in_a_put_is_ignored_and_kept() {
        let (stored, _) = apply_put(ap(json!({})), None).unwrap().unwrap();
        let stored = apply_status(&stored, json!({"vip": "10.0.0.1"})).unwrap();
        let mut body = ap(json!({}));
        body["status"] = json!({"vip": "bogus"});
        assert!(apply_put(body, Some(&stored)).unwrap().is_none());
    }

    #[test]
    fn labels_do_not_bump_generation() {
        let (stored, _) = apply_put(ap(json!({"a": 1})), None).unwrap().unwrap();
        let mut body = ap(json!({"a": 1}));
        body["metadata"]["labels"] = json!({"x": "y"});
        let (obj, outcome) = apply_put(body, Some(&stored)).unwrap().unwrap();
        assert_eq!(outcome, Outcome::Updated);
        assert_eq!(obj["metadata"]["generation"], 1);
        assert_eq!(obj["metadata"]["uid"], stored["metadata"]["uid"]);
        let (obj, _) = apply_put(ap(json!({"a": 2})), Some(&obj)).unwrap().unwrap();
        assert_eq!(obj["metadata"]["generation"], 2);
    }

    #[test]
    fn segments() {
        assert!(check_segment("metadata.name", "shop-1.example").is_ok());
        for bad in ["", "a/b", "..", "_", "a b", "a%2f"] {
            assert!(check_segment("metadata.name", bad).is_err(), "{bad:?}");
        }
    }
}
