//! The quickstart resources: built into the binary from `deploy/quickstart/` (so an installed
//! `causeway` needs no checkout), or read from `--quickstart DIR`; validated before anything
//! starts; applied through the controller API once it answers.

use std::path::Path;

use anyhow::{Context, bail};
use causeway_controller::api::resources;
use causeway_crds::document::{Loaded, load_yaml};
use hyper::Method;
use serde_json::Value;

use crate::client::ApiClient;
use crate::validate;

/// `deploy/quickstart/`, as built into the binary: (file name, text).
pub fn embedded() -> &'static [(&'static str, &'static str)] {
    &[
        (
            "01-clusters.yaml",
            include_str!("../../../deploy/quickstart/01-clusters.yaml"),
        ),
        (
            "02-backends.yaml",
            include_str!("../../../deploy/quickstart/02-backends.yaml"),
        ),
        (
            "03-accesspoint-shop.yaml",
            include_str!("../../../deploy/quickstart/03-accesspoint-shop.yaml"),
        ),
        (
            "04-nameservice-shop-global.yaml",
            include_str!("../../../deploy/quickstart/04-nameservice-shop-global.yaml"),
        ),
    ]
}

/// Loaded documents with the file each came from.
pub struct Resources {
    /// (file shown in messages, document).
    pub docs: Vec<(String, Loaded)>,
}

impl Resources {
    /// The built-in quickstart, or the files of `dir` (its *.yaml, *.yml and *.json).
    /// Refuses, with `causeway validate`'s lines, anything that does not validate.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Resources> {
        let mut docs = Vec::new();
        match dir {
            None => {
                for (name, text) in embedded() {
                    let shown = format!("deploy/quickstart/{name} (built in)");
                    docs.extend(load_yaml(text).into_iter().map(|d| (shown.clone(), d)));
                }
            }
            Some(dir) => {
                let files = validate::collect(&[dir.to_path_buf()], false)?;
                if files.is_empty() {
                    bail!(
                        "--quickstart {}: no *.yaml, *.yml or *.json files in it",
                        dir.display()
                    );
                }
                for f in files {
                    let text = validate::read(&f)?;
                    let shown = validate::display(&f);
                    docs.extend(load_yaml(&text).into_iter().map(|d| (shown.clone(), d)));
                }
            }
        }
        let problems: Vec<String> = docs
            .iter()
            .flat_map(|(file, d)| validate::format_findings(file, d, true))
            .collect();
        if docs.iter().any(|(_, d)| !d.is_ok()) {
            bail!(
                "the quickstart resources do not validate; nothing was started:\n  {}\n\
                 (fix the file, or check it with `causeway validate -f FILE`)",
                problems.join("\n  ")
            );
        }
        Ok(Resources { docs })
    }

    /// The documents alone.
    pub fn loaded(&self) -> Vec<Loaded> {
        self.docs.iter().map(|(_, d)| d.clone()).collect()
    }
}

/// Creates or updates one object (as `causeway apply` does); returns `KIND/NAME`.
pub async fn apply_value(client: &ApiClient, value: &Value) -> anyhow::Result<String> {
    let text = |p: &str| {
        value
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind, name) = (text("/apiVersion"), text("/kind"), text("/metadata/name"));
    let served = resources::by_kind(&api_version, &kind)
        .with_context(|| format!("{kind}/{name}: the controller does not store {api_version}"))?;
    let ns = served.namespaced.then(|| {
        let n = text("/metadata/namespace");
        if n.is_empty() {
            "default".to_owned()
        } else {
            n
        }
    });
    let answer = client
        .call(
            Method::PUT,
            &served.object_path(ns.as_deref(), &name),
            Some(value),
        )
        .await?;
    if !answer.status.is_success() {
        bail!("applying {kind}/{name}: {}", answer.message());
    }
    Ok(format!("{kind}/{name}"))
}

/// Applies every document, in file order.
pub async fn apply_all(client: &ApiClient, res: &Resources) -> anyhow::Result<usize> {
    let mut n = 0;
    for (file, d) in &res.docs {
        let v = d
            .source
            .as_ref()
            .with_context(|| format!("{file}: {}: no source", d.display_name()))?;
        apply_value(client, v).await.with_context(|| file.clone())?;
        n += 1;
    }
    Ok(n)
}
