//! `causeway apply`, `get` and `delete`: kubectl-like verbs against the controller API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use causeway_controller::api::resources::{self, Served};
use causeway_crds::manifests;
use hyper::{Method, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::client::ApiClient;
use crate::validate;

/// How `get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table with the kind's status columns.
    Table,
    /// YAML.
    Yaml,
    /// JSON.
    Json,
}

/// kubectl's `kind.group/name`.
fn display_ref(s: &Served, name: &str) -> String {
    if s.group.is_empty() {
        format!("{}/{name}", s.kind.to_ascii_lowercase())
    } else {
        format!("{}.{}/{name}", s.kind.to_ascii_lowercase(), s.group)
    }
}

/// Applies every object of the files. Everything is validated first; if anything is invalid
/// nothing is sent.
pub async fn apply(
    client: &ApiClient,
    files: &[PathBuf],
    recursive: bool,
) -> anyhow::Result<ExitCode> {
    let paths = validate::collect(files, recursive)?;
    let mut docs = Vec::new();
    let mut invalid = false;
    for path in &paths {
        let text = validate::read(path)?;
        let name = validate::display(path);
        for doc in causeway_crds::document::load_yaml(&text) {
            for line in validate::format_findings(&name, &doc, false) {
                println!("{line}");
            }
            if !doc.is_ok() {
                invalid = true;
            }
            docs.push(doc);
        }
    }
    if invalid {
        eprintln!(
            "nothing applied: fix the errors above (causeway validate -f ... checks offline)"
        );
        return Ok(ExitCode::FAILURE);
    }
    let mut failed = false;
    for doc in docs {
        let value = doc_value(&doc)?;
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(s) = resources::by_kind(api_version, kind) else {
            eprintln!(
                "{}: the controller does not store {api_version} {kind}",
                doc.display_name()
            );
            failed = true;
            continue;
        };
        let name = doc.name.clone().unwrap_or_default();
        let ns = s.namespaced.then(|| {
            doc.namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned())
        });
        let answer = client
            .call(
                Method::PUT,
                &s.object_path(ns.as_deref(), &name),
                Some(&value),
            )
            .await?;
        for w in &answer.warnings {
            eprintln!(
                "Warning: {}",
                w.trim_start_matches("299 - ").trim_matches('"')
            );
        }
        if answer.status.is_success() {
            println!(
                "{} {}",
                display_ref(s, &name),
                answer.outcome.as_deref().unwrap_or("configured")
            );
        } else {
            eprintln!("error: {}: {}", display_ref(s, &name), answer.message());
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The object as the user wrote it (what is sent; the server fills in the rest).
fn doc_value(doc: &causeway_crds::document::Loaded) -> anyhow::Result<Value> {
    doc.source
        .clone()
        .context("internal: a loaded document without its source")
}

fn lookup(kind: &str) -> anyhow::Result<&'static Served> {
    resources::by_cli_name(kind).with_context(|| {
        format!(
            "unknown kind {kind:?}: use one of {}",
            resources::cli_names()
        )
    })
}

/// Follows a printer-column JSON path (`.status.vip`) into an object; lists become
/// comma-separated.
fn column(obj: &Value, path: &str) -> String {
    let mut v = obj;
    for part in path.trim_start_matches('.').split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// kubectl-style age: `45s`, `3m`, `2h`, `4d`.
pub fn age(created: &str, now: Timestamp) -> String {
    let Ok(t) = created.parse::<Timestamp>() else {
        return String::new();
    };
    let secs = now.as_second().saturating_sub(t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Renders objects as a table with the kind's printer columns.
pub fn table(s: &Served, items: &[Value], with_namespace: bool, now: Timestamp) -> String {
    let columns: Vec<(String, String, String)> = manifests::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == s.kind)
        .and_then(|c| c.spec.versions.into_iter().next())
        .and_then(|v| v.additional_printer_columns)
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.name.to_ascii_uppercase(), c.json_path, c.type_))
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".into());
    }
    header.push("NAME".into());
    header.extend(columns.iter().map(|c| c.0.clone()));
    if columns.is_empty() {
        header.push("AGE".into());
    }
    rows.push(header);
    for it in items {
        let mut row = Vec::new();
        if with_namespace {
            row.push(column(it, ".metadata.namespace"));
        }
        row.push(column(it, ".metadata.name"));
        for (_, path, ty) in &columns {
            let v = column(it, path);
            row.push(if ty == "date" { age(&v, now) } else { v });
        }
        if columns.is_empty() {
            row.push(age(&column(it, ".metadata.creationTimestamp"), now));
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `causeway get KIND [NAME]`.
pub async fn get(
    client: &ApiClient,
    kind: &str,
    name: Option<&str>,
    namespace: &str,
    all_namespaces: bool,
    selector: Option<&str>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let s = lookup(kind)?;
    let ns = (s.namespaced && !all_namespaces).then_some(namespace);
    let (items, single) = match name {
        Some(n) => {
            let a = client
                .call(Method::GET, &s.object_path(ns, n), None)
                .await?;
            if a.status == StatusCode::NOT_FOUND {
                eprintln!("Error from server (NotFound): {}", a.message());
                return Ok(ExitCode::FAILURE);
            }
            if !a.status.is_success() {
                bail!("{}", a.message());
            }
            (vec![a.body], true)
        }
        None => {
            let mut path = s.collection_path(ns);
            if let Some(sel) = selector {
                path.push_str("?labelSelector=");
                path.push_str(&encode(sel));
            }
            let a = client.call(Method::GET, &path, None).await?;
            if !a.status.is_success() {
                bail!("{}", a.message());
            }
            let items = a
                .body
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            (items, false)
        }
    };
    match output {
        Output::Table => {
            if items.is_empty() {
                match ns {
                    Some(n) => eprintln!("No resources found in {n} namespace."),
                    None => eprintln!("No resources found."),
                }
            } else {
                print!(
                    "{}",
                    table(s, &items, s.namespaced && all_namespaces, Timestamp::now())
                );
            }
        }
        Output::Yaml => {
            if single {
                print!("{}", serde_yaml::to_string(&items[0])?);
            } else {
                print!(
                    "{}",
                    serde_yaml::to_string(
                        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
                    )?
                );
            }
        }
        Output::Json => {
            let v = if single {
                items[0].clone()
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `causeway get rendered --cluster NAME`: the gateway and sidecar configuration and the Istio
/// objects the controller renders for one cluster (YAML unless `-o json`).
pub async fn rendered(
    client: &ApiClient,
    cluster: Option<&str>,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let Some(cluster) = cluster else {
        bail!("get rendered needs --cluster NAME (see `causeway get clusters`)");
    };
    let path = format!(
        "/apis/causeway.io/v1alpha1/clusters/{}/rendered",
        encode(cluster)
    );
    let a = client.call(Method::GET, &path, None).await?;
    if a.status == StatusCode::NOT_FOUND {
        eprintln!("Error from server (NotFound): {}", a.message());
        return Ok(ExitCode::FAILURE);
    }
    if !a.status.is_success() {
        bail!("{}", a.message());
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&a.body)?),
        Output::Yaml | Output::Table => print!("{}", serde_yaml::to_string(&a.body)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `causeway delete KIND NAME`.
pub async fn delete(
    client: &ApiClient,
    kind: &str,
    names: &[String],
    namespace: &str,
) -> anyhow::Result<ExitCode> {
    let s = lookup(kind)?;
    let ns = s.namespaced.then_some(namespace);
    let mut failed = false;
    for n in names {
        let a = client
            .call(Method::DELETE, &s.object_path(ns, n), None)
            .await?;
        if a.status.is_success() {
            println!("{} \"{n}\" deleted", s.qualified());
        } else {
            eprintln!(
                "Error from server ({}): {}",
                a.body
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("Error"),
                a.message()
            );
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        assert_eq!(age("2026-01-01T11:59:15Z", now), "45s");
        assert_eq!(age("2026-01-01T11:00:00Z", now), "60m");
        assert_eq!(age("2026-01-01T00:00:00Z", now), "12h");
        assert_eq!(age("2025-12-25T12:00:00Z", now), "7d");
        assert_eq!(age("garbage", now), "");
    }

    #[test]
    fn tables_use_printer_columns() {
        let s = resources::by_cli_name("ap").unwrap();
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let items = vec![serde_json::json!({
            "metadata": {"name": "shop", "namespace": "retail", "creationTimestamp": "2026-01-01T11:58:00Z"},
            "spec": {"hosts": ["shop.example.com", "www.shop.example.com"]},
            "status": {"vip": "10.240.0.1", "phase": "Ready"}
        })];
        let t = table(s, &items, true, now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAMESPACE", "NAME", "VIP", "HOSTS", "PHASE", "AGE"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "retail",
                "shop",
                "10.240.0.1",
                "shop.example.com,www.shop.example.com",
                "Ready",
                "2m"
            ]
        );
        assert_eq!(encode("app in (a,b)"), "app%20in%20%28a%2Cb%29");
    }
}
