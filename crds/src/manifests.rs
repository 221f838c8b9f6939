//! The CRD manifests, generated from the types.
//!
//! The checked-in copies under `crds/` (so `kubectl apply -f crds/` works) are compared with
//! these by a test; `causeway crds --out-dir crds/` rewrites them after a type change.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::v1alpha1::{AccessPoint, Cluster, ExternalService, NameService};

/// Every CRD the project defines, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Cluster::crd(),
        AccessPoint::crd(),
        NameService::crd(),
        ExternalService::crd(),
    ]
}

/// The file name a CRD is checked in under: `causeway.io_accesspoints.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// Renders one CRD as YAML with a header saying it is generated.
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(crd)?;
    Ok(format!(
        "# Generated from the Rust types in crds/src by `causeway crds --out-dir crds/`.\n\
         # Do not edit: change the types and regenerate.\n{body}"
    ))
}

/// Every CRD as one multi-document YAML stream.
pub fn render_all() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&render(&crd)?);
    }
    Ok(out)
}

/// A Markdown field reference of every kind, generated from the CRD schemas so it cannot drift
/// from the types (`docs/api-reference.md`; a test compares the checked-in copy).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "# API reference: causeway.io/v1alpha1\n\n\
         Generated from the Rust types by `causeway crds --reference`; do not edit. \
         [resources.md](resources.md) explains the semantics and the validation rules.\n",
    );
    for crd in crds() {
        let names = &crd.spec.names;
        out.push_str(&format!(
            "\n## {}\n\nScope: {}. Plural `{}`",
            names.kind, crd.spec.scope, names.plural
        ));
        if let Some(short) = names.short_names.as_ref().and_then(|s| s.first()) {
            out.push_str(&format!(", short name `{short}`"));
        }
        out.push_str(".\n");
        let Some(version) = crd.spec.versions.first() else {
            continue;
        };
        let Some(schema) = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        else {
            continue;
        };
        let Ok(schema) = serde_json::to_value(schema) else {
            continue;
        };
        if let Some(d) = schema.get("description").and_then(|d| d.as_str()) {
            out.push_str(&format!("\n{d}\n"));
        }
        out.push_str("\n| field | type | default | description |\n|---|---|---|---|\n");
        for root in ["spec", "status"] {
            if let Some(s) = schema.get("properties").and_then(|p| p.get(root)) {
                fields(root, s, &mut out);
            }
        }
    }
    out
}

fn type_of(s: &serde_json::Value) -> String {
    let t = s.get("type").and_then(|t| t.as_str()).unwrap_or("any");
    let base = match t {
        "array" => match s.get("items") {
            Some(items) => format!("[]{}", type_of(items)),
            None => "[]any".to_owned(),
        },
        "object" if s.get("properties").is_none() => match s.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map[string]{}", type_of(v)),
            _ => "object".to_owned(),
        },
        other => other.to_owned(),
    };
    match s.get("enum").and_then(|e| e.as_array()) {
        Some(values) => {
            let vs: Vec<String> = values
                .iter()
                .filter_map(|v| v.as_str().map(|v| format!("`{v}`")))
                .collect();
            format!("{base} ({})", vs.join(" \\| "))
        }
        None => base,
    }
}

fn fields(path: &str, s: &serde_json::Value, out: &mut String) {
    let required: Vec<&str> = s
        .get("required")
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(props) = s.get("properties").and_then(|p| p.as_object()) else {
        return;
    };
    for (name, p) in props {
        let field = format!("{path}.{name}");
        let desc = p
            .get("description")
            .and_then(|d| d.as_str())
            .unwrap_or("")
            .replace('\n', " ")
            .replace('|', "\\|");
        let default = p
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        let req = if required.contains(&name.as_str()) {
            " **required**"
        } else {
            ""
        };
        out.push_str(&format!(
            "| `{field}` | {}{req} | {default} | {desc} |\n",
            type_of(p)
        ));
        let child = match p.get("type").and_then(|t| t.as_str()) {
            Some("array") => p.get("items").map(|i| (format!("{field}[]"), i)),
            _ => Some((field.clone(), p)),
        };
        if let Some((cp, cs)) = child {
            // Conditions come from Kubernetes; their shape is documented there.
            if !cp.ends_with("conditions[]") {
                fields(&cp, cs, out);
            }
        }
    }
}
