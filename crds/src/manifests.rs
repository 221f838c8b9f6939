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
