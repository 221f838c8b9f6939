//! The checked-in CRD manifests equal the generated ones, and each is a structural
//! `apiextensions.k8s.io/v1` CRD (no kube-apiserver can run here, so these checks stand in for
//! the API server's own).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use causeway_crds::manifests;
use serde_json::Value;

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_manifests_match_the_types() {
    let mut stale = Vec::new();
    for crd in manifests::crds() {
        let path = crd_dir().join(manifests::file_name(&crd));
        let want = manifests::render(&crd).unwrap();
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        if have != want {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "CRD manifests are stale: {stale:?}\nregenerate with: cargo run -p causeway-cli -- crds --out-dir crds/"
    );
    // No manifest is left over from a kind that no longer exists.
    let expected: Vec<String> = manifests::crds().iter().map(manifests::file_name).collect();
    for entry in std::fs::read_dir(crd_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") {
            assert!(expected.contains(&name), "unexpected manifest crds/{name}");
        }
    }
}

/// Checks the rules of a structural schema (Kubernetes docs, "Specifying a structural schema").
fn structural(path: &str, s: &Value, in_junctor: bool, errors: &mut Vec<String>) {
    let Some(obj) = s.as_object() else {
        errors.push(format!("{path}: schema is not an object"));
        return;
    };
    for banned in ["$ref", "definitions", "$defs", "$schema"] {
        if obj.contains_key(banned) {
            errors.push(format!("{path}: {banned} is not allowed"));
        }
    }
    let escape = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if in_junctor {
        for banned in [
            "type",
            "default",
            "nullable",
            "description",
            "additionalProperties",
        ] {
            if obj.contains_key(banned) {
                errors.push(format!("{path}: {banned} inside allOf/anyOf/oneOf/not"));
            }
        }
    } else if !escape {
        match obj.get("type").and_then(Value::as_str) {
            Some("object" | "array" | "string" | "integer" | "number" | "boolean") => {}
            Some(t) => errors.push(format!("{path}: unknown type {t}")),
            None => errors.push(format!("{path}: no type")),
        }
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        errors.push(format!("{path}: both properties and additionalProperties"));
    }
    if obj.get("type").and_then(Value::as_str) == Some("array") && !obj.contains_key("items") {
        errors.push(format!("{path}: array without items"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural(&format!("{path}.{k}"), v, in_junctor, errors);
        }
    }
    if let Some(items) = obj.get("items") {
        structural(&format!("{path}[]"), items, in_junctor, errors);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural(&format!("{path}{{}}"), ap, in_junctor, errors);
    }
    for j in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get(j).and_then(Value::as_array) {
            for (i, sub) in list.iter().enumerate() {
                structural(&format!("{path}/{j}[{i}]"), sub, true, errors);
            }
        }
    }
    if let Some(not) = obj.get("not") {
        structural(&format!("{path}/not"), not, true, errors);
    }
}

/// Resolves a printer column's JSON path against the schema.
fn resolves(schema: &Value, json_path: &str) -> bool {
    let parts: Vec<&str> = json_path.trim_start_matches('.').split('.').collect();
    if parts.first() == Some(&"metadata") {
        return true;
    }
    let mut node = schema;
    for p in parts {
        match node.get("properties").and_then(|props| props.get(p)) {
            Some(n) => node = n,
            None => return false,
        }
    }
    true
}

#[test]
fn manifests_are_structural_v1_crds() {
    for crd in manifests::crds() {
        let text = std::fs::read_to_string(crd_dir().join(manifests::file_name(&crd))).unwrap();
        let v: Value = serde_yaml::from_str(&text).unwrap();
        let name = v["metadata"]["name"].as_str().unwrap();
        assert_eq!(v["apiVersion"], "apiextensions.k8s.io/v1", "{name}");
        assert_eq!(v["kind"], "CustomResourceDefinition", "{name}");
        let spec = &v["spec"];
        let plural = spec["names"]["plural"].as_str().unwrap();
        let group = spec["group"].as_str().unwrap();
        assert_eq!(
            name,
            format!("{plural}.{group}"),
            "metadata.name must be PLURAL.GROUP"
        );
        assert_eq!(group, "causeway.io");
        assert!(["Namespaced", "Cluster"].contains(&spec["scope"].as_str().unwrap()));
        let versions = spec["versions"].as_array().unwrap();
        let storage = versions.iter().filter(|v| v["storage"] == true).count();
        assert_eq!(storage, 1, "{name}: exactly one storage version");
        for ver in versions {
            assert_eq!(ver["served"], true, "{name}");
            let schema = &ver["schema"]["openAPIV3Schema"];
            assert_eq!(schema["type"], "object", "{name}: root type");
            let mut errors = Vec::new();
            structural("", schema, false, &mut errors);
            assert!(
                errors.is_empty(),
                "{name} is not structural:\n{}",
                errors.join("\n")
            );
            for field in ["spec", "status"] {
                assert!(
                    schema["properties"].get(field).is_some(),
                    "{name}: no {field}"
                );
            }
            assert!(
                ver["subresources"]["status"].is_object(),
                "{name}: no status subresource"
            );
            let cols = ver["additionalPrinterColumns"]
                .as_array()
                .expect("printer columns");
            assert!(cols.len() >= 3, "{name}: printer columns");
            for c in cols {
                let path = c["jsonPath"].as_str().unwrap();
                assert!(
                    resolves(schema, path),
                    "{name}: printer column {path} not in schema"
                );
                let t = c["type"].as_str().unwrap();
                assert!(["string", "integer", "number", "boolean", "date"].contains(&t));
            }
        }
    }
}

#[test]
fn the_structural_check_catches_violations() {
    let bad: Value = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "b": {"type": "array"},
            "c": {"type": "object", "anyOf": [{"type": "string"}]},
            "d": {"$ref": "#/definitions/X", "type": "object"}
        }
    });
    let mut errors = Vec::new();
    structural("", &bad, false, &mut errors);
    assert_eq!(errors.len(), 4, "{errors:?}");
}

#[test]
fn access_point_columns_show_vip_hosts_phase_age() {
    let crd = manifests::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "AccessPoint")
        .unwrap();
    let names: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["VIP", "Hosts", "Phase", "Age"]);
}

#[test]
fn checked_in_api_reference_matches_the_types() {
    let path = crd_dir().join("../docs/api-reference.md");
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == manifests::reference_markdown(),
        "docs/api-reference.md is stale: regenerate with \
         cargo run -p causeway-cli -- crds --reference > docs/api-reference.md"
    );
}
