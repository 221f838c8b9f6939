//! Strict decoding: finds fields a typed decode would silently drop.
//!
//! serde ignores unknown keys, so a misspelt `listners:` would vanish without a word. We decode,
//! encode again, and compare the two JSON trees: every key of the input that did not survive is
//! reported. The same comparison proves that the Istio types round-trip the seed examples.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::validation::FieldPath;

/// Whether a value carries no information, so dropping it loses nothing (`tls: []`, `x: null`).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Paths of keys present (and non-empty) in `input` but absent from `output`.
pub fn dropped_fields(input: &Value, output: &Value) -> Vec<FieldPath> {
    let mut out = Vec::new();
    walk(&FieldPath::default(), input, output, &mut out);
    out
}

fn walk(path: &FieldPath, input: &Value, output: &Value, out: &mut Vec<FieldPath>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = path.field(k);
                match b.get(k) {
                    Some(w) => walk(&p, v, w, out),
                    None if is_empty(v) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, w)) in a.iter().zip(b.iter()).enumerate() {
                walk(&path.index(i), v, w, out);
            }
        }
        _ => {}
    }
}

/// Paths where `input` and `output` differ in value, ignoring empty values on either side and
/// numeric representation (`80` equals `80.0`).
pub fn value_differences(input: &Value, output: &Value) -> Vec<FieldPath> {
    let mut out = Vec::new();
    diff(&FieldPath::default(), input, output, &mut out);
    out
}

fn diff(path: &FieldPath, a: &Value, b: &Value, out: &mut Vec<FieldPath>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = path.field(k);
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => diff(&p, v, w, out),
                    (Some(v), None) | (None, Some(v)) if is_empty(v) => {}
                    _ => out.push(p),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                out.push(path.clone());
                return;
            }
            for (i, (v, w)) in x.iter().zip(y.iter()).enumerate() {
                diff(&path.index(i), v, w, out);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            if x.as_f64() != y.as_f64() {
                out.push(path.clone());
            }
        }
        (x, y) if is_empty(x) && is_empty(y) => {}
        (x, y) => {
            if x != y {
                out.push(path.clone());
            }
        }
    }
}

/// Decodes `value` as `T` and reports the fields the decode dropped.
pub fn decode<T: DeserializeOwned + Serialize>(
    value: Value,
) -> Result<(T, Vec<FieldPath>), serde_json::Error> {
    let typed: T = serde_json::from_value(value.clone())?;
    let again = serde_json::to_value(&typed)?;
    let dropped = dropped_fields(&value, &again);
    Ok((typed, dropped))
}

/// A decode failure with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// Where decoding failed (`spec.listeners[0].protocol`).
    pub path: FieldPath,
    /// serde's description (`unknown variant `HTTPX`, expected one of ...`).
    pub message: String,
}

/// Like [`decode`], but a failure names the field that failed.
pub fn decode_with_path<T: DeserializeOwned + Serialize>(
    value: Value,
) -> Result<(T, Vec<FieldPath>), DecodeError> {
    let typed: T = serde_path_to_error::deserialize(&value).map_err(|e| DecodeError {
        path: match e.path().to_string() {
            p if p == "." => FieldPath::default(),
            p => FieldPath::root(&p),
        },
        message: e.inner().to_string(),
    })?;
    let again = serde_json::to_value(&typed).map_err(|e| DecodeError {
        path: FieldPath::default(),
        message: e.to_string(),
    })?;
    let dropped = dropped_fields(&value, &again);
    Ok((typed, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_dropped_keys_at_depth() {
        let input = json!({"spec": {"hosts": ["a"], "listners": [{"port": 80}], "tls": [],
            "http": [{"name": "x", "rout": 1}]}});
        let output = json!({"spec": {"hosts": ["a"], "http": [{"name": "x"}]}});
        let got: Vec<String> = dropped_fields(&input, &output)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, ["spec.http[0].rout", "spec.listners"]);
    }

    #[test]
    fn decode_errors_name_the_field() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct Inner {
            port: u16,
        }
        #[derive(serde::Deserialize, serde::Serialize)]
        struct Outer {
            listeners: Vec<Inner>,
        }
        let err = decode_with_path::<Outer>(json!({"listeners": [{"port": 1}, {"port": "x"}]}))
            .err()
            .unwrap();
        assert_eq!(err.path.as_str(), "listeners[1].port");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn value_differences_ignore_number_form_and_empties() {
        let a = json!({"w": 80, "l": [], "s": "x"});
        let b = json!({"w": 80.0, "s": "x", "m": {}});
        assert!(value_differences(&a, &b).is_empty());
        let c = json!({"w": 81, "s": "y"});
        let got: Vec<String> = value_differences(&a, &c)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(got, ["s", "w"]);
    }
}
