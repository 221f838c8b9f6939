//! `causeway status`: one screen with the federation's health — clusters with locality, phase
//! and proxies; AccessPoints with VIP, hosts and phase; NameServices with their endpoints —
//! and `--wait`, which exits 0 once everything is Ready (scripts and `causeway up` use it).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use hyper::Method;
use serde_json::Value;

use crate::client::ApiClient;

/// Everything `status` shows, as fetched.
#[derive(Debug, Default)]
pub struct Overview {
    clusters: Vec<Value>,
    access_points: Vec<Value>,
    name_services: Vec<Value>,
}

async fn list(client: &ApiClient, path: &str) -> anyhow::Result<Vec<Value>> {
    let a = client.call(Method::GET, path, None).await?;
    if !a.status.is_success() {
        bail!("GET {path}: {}", a.message());
    }
    Ok(a.body
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default())
}

impl Overview {
    /// Reads clusters, AccessPoints and NameServices of every namespace.
    pub async fn fetch(client: &ApiClient) -> anyhow::Result<Overview> {
        Ok(Overview {
            clusters: list(client, "/apis/causeway.io/v1alpha1/clusters").await?,
            access_points: list(client, "/apis/causeway.io/v1alpha1/accesspoints").await?,
            name_services: list(client, "/apis/causeway.io/v1alpha1/nameservices").await?,
        })
    }

    /// What is not Ready yet, one line each; empty when everything is.
    pub fn not_ready(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.clusters.is_empty() {
            out.push("no clusters registered".to_owned());
        }
        for c in &self.clusters {
            let phase = text(c, &["status", "phase"]);
            if phase != "Ready" {
                // The reason names what to look at: the proxy that rejected its configuration,
                // or that no gateway is connected.
                out.push(format!(
                    "cluster {}: {}{}",
                    name(c),
                    or_dash(&phase),
                    first_false_condition(c)
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
        }
        for a in &self.access_points {
            if a.pointer("/status/routingConfigured") != Some(&Value::Bool(true))
                || a.pointer("/status/observedGeneration") != a.pointer("/metadata/generation")
            {
                out.push(format!(
                    "accesspoint {}/{}: {}{}",
                    namespace(a),
                    name(a),
                    or_dash(&text(a, &["status", "phase"])),
                    first_false_condition(a)
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
        }
        for n in &self.name_services {
            let programmed = conditions(n)
                .iter()
                .any(|c| c["type"] == "Programmed" && c["status"] == "True");
            if !programmed {
                out.push(format!(
                    "nameservice {}/{}: not programmed{}",
                    namespace(n),
                    name(n),
                    first_false_condition(n)
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
        }
        out
    }

    /// The three tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let clusters: Vec<Vec<String>> = self
            .clusters
            .iter()
            .map(|c| {
                vec![
                    name(c),
                    locality(c),
                    or_dash(&text(c, &["spec", "role"])),
                    or_dash(&text(c, &["status", "phase"])),
                    or_dash(&text(c, &["status", "proxies"])),
                    or_dash(&text(c, &["status", "lastSeen"])),
                ]
            })
            .collect();
        section(
            &mut out,
            "CLUSTERS",
            &["NAME", "LOCALITY", "ROLE", "PHASE", "PROXIES", "LAST SEEN"],
            &clusters,
        );
        let aps: Vec<Vec<String>> = self
            .access_points
            .iter()
            .map(|a| {
                let clusters = a
                    .pointer("/status/clusters")
                    .and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .map(|c| format!("{}:{}", text(c, &["name"]), text(c, &["phase"])))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                vec![
                    namespace(a),
                    name(a),
                    or_dash(&text(a, &["status", "vip"])),
                    join(a.pointer("/spec/hosts")),
                    or_dash(&text(a, &["status", "phase"])),
                    or_dash(&text(a, &["status", "routingConfigured"])),
                    or_dash(&clusters),
                ]
            })
            .collect();
        section(
            &mut out,
            "ACCESSPOINTS",
            &[
                "NAMESPACE",
                "NAME",
                "VIP",
                "HOSTS",
                "PHASE",
                "ROUTING",
                "CLUSTERS",
            ],
            &aps,
        );
        let nss: Vec<Vec<String>> = self
            .name_services
            .iter()
            .map(|n| {
                let endpoints = n
                    .pointer("/status/endpoints")
                    .and_then(Value::as_array)
                    .map(|es| {
                        es.iter()
                            .map(|e| {
                                format!("{}@{}", text(e, &["cluster"]), text(e, &["locality"]))
                            })
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                let programmed = conditions(n)
                    .iter()
                    .find(|c| c["type"] == "Programmed")
                    .map(|c| text(c, &["status"]))
                    .unwrap_or_default();
                vec![
                    namespace(n),
                    name(n),
                    text(n, &["spec", "fqdn"]),
                    or_dash(&endpoints),
                    or_dash(&programmed),
                ]
            })
            .collect();
        section(
            &mut out,
            "NAMESERVICES",
            &["NAMESPACE", "NAME", "FQDN", "ENDPOINTS", "PROGRAMMED"],
            &nss,
        );
        out
    }
}

fn conditions(v: &Value) -> Vec<Value> {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `Type: message` of the first condition that is False, for a one-line reason.
fn first_false_condition(v: &Value) -> Option<String> {
    conditions(v)
        .into_iter()
        .find(|c| c["status"] == "False")
        .map(|c| format!("{}: {}", text(&c, &["reason"]), text(&c, &["message"])))
}

fn text(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn name(v: &Value) -> String {
    text(v, &["metadata", "name"])
}

fn namespace(v: &Value) -> String {
    text(v, &["metadata", "namespace"])
}

fn locality(c: &Value) -> String {
    let parts = ["region", "zone", "subzone"]
        .iter()
        .map(|p| text(c, &["spec", "locality", p]))
        .collect::<Vec<_>>();
    parts.join("/").trim_end_matches('/').to_owned()
}

fn join(v: Option<&Value>) -> String {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

fn section(out: &mut String, title: &str, header: &[&str], rows: &[Vec<String>]) {
    if !out.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}   ");
            }
        }
        l.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// `causeway status [--wait DURATION]`.
pub async fn run(client: &ApiClient, wait: Option<Duration>) -> anyhow::Result<ExitCode> {
    let Some(limit) = wait else {
        let o = Overview::fetch(client).await?;
        print!("{}", o.render());
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = Instant::now() + limit;
    let mut last_report = Instant::now();
    loop {
        // The controller may still be starting: a refused connection is "not ready yet".
        let (overview, problems) = match Overview::fetch(client).await {
            Ok(o) => {
                let p = o.not_ready();
                (Some(o), p)
            }
            Err(e) => (None, vec![format!("controller: {e:#}")]),
        };
        if problems.is_empty()
            && let Some(o) = overview
        {
            print!("{}", o.render());
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            if let Some(o) = overview {
                print!("{}", o.render());
            }
            eprintln!("not ready after {limit:?}:");
            for p in problems {
                eprintln!("  {p}");
            }
            return Ok(ExitCode::FAILURE);
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "waiting for {} thing(s), e.g. {}",
                problems.len(),
                problems.first().map(String::as_str).unwrap_or_default()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// How `status --proxies` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxiesOutput {
    /// One row per proxy.
    Table,
    /// The API's `ProxyStatusList`.
    Json,
}

/// Where `status --proxies` reads from.
const PROXIES_PATH: &str = "/apis/causeway.io/v1alpha1/proxies";

/// The xDS types as columns, in push order.
const PROXY_TYPES: [&str; 6] = ["CDS", "EDS", "LDS", "SRDS", "RDS", "SDS"];

/// The longest NACK message a table row shows (the JSON output has all of it).
const NACK_WIDTH: usize = 100;

async fn fetch_proxies(client: &ApiClient) -> anyhow::Result<Value> {
    let a = client.call(Method::GET, PROXIES_PATH, None).await?;
    if !a.status.is_success() {
        bail!("GET {PROXIES_PATH}: {}", a.message());
    }
    Ok(a.body)
}

fn proxy_items(list: &Value) -> Vec<Value> {
    list.get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A type's cell: `STATE VERSION` (the rejected version when NACKED, the one sent otherwise),
/// versions cut to 8 hex digits; `-` when the proxy did not subscribe to the type.
fn type_cell(t: &Value) -> String {
    if t.is_null() {
        return "-".to_owned();
    }
    let state = text(t, &["state"]);
    let version = match state.as_str() {
        "NACKED" => text(t, &["nackedVersion"]),
        "SYNCED" => text(t, &["ackedVersion"]),
        _ => text(t, &["sentVersion"]),
    };
    let short: String = version.chars().take(8).collect();
    if short.is_empty() {
        state
    } else {
        format!("{state} {short}")
    }
}

fn last_nack(p: &Value) -> String {
    let n = &p["lastNack"];
    if n.is_null() {
        return "-".to_owned();
    }
    let msg = text(n, &["message"]).replace('\n', " ");
    let mut cut: String = msg.chars().take(NACK_WIDTH).collect();
    if cut.len() < msg.len() {
        cut.push('…');
    }
    format!(
        "{} {} ({}x): {cut}",
        text(n, &["type"]),
        text(n, &["time"]),
        text(p, &["nacks"])
    )
}

/// The `status --proxies` table: one row per connected proxy.
pub fn render_proxies(list: &Value) -> String {
    let rows: Vec<Vec<String>> = proxy_items(list)
        .iter()
        .map(|p| {
            let mut row = vec![
                text(p, &["id"]),
                or_dash(&text(p, &["cluster"])),
                or_dash(&text(p, &["role"])),
                or_dash(&text(p, &["locality"])),
            ];
            row.extend(PROXY_TYPES.iter().map(|t| type_cell(&p["types"][*t])));
            row.push(last_nack(p));
            row
        })
        .collect();
    let mut out = String::new();
    let mut header = vec!["PROXY", "CLUSTER", "ROLE", "LOCALITY"];
    header.extend(PROXY_TYPES);
    header.push("LAST NACK");
    section(&mut out, "PROXIES", &header, &rows);
    out
}

/// Proxies not SYNCED on every type they subscribed to, one line each.
pub fn proxies_not_synced(list: &Value) -> Vec<String> {
    proxy_items(list)
        .iter()
        .filter_map(|p| {
            let types = p["types"].as_object()?;
            let bad: Vec<String> = types
                .iter()
                .filter(|(_, t)| t["state"] != "SYNCED")
                .map(|(name, t)| format!("{name} {}", text(t, &["state"])))
                .collect();
            (!bad.is_empty() || types.is_empty()).then(|| {
                format!(
                    "proxy {} ({}): {}",
                    text(p, &["id"]),
                    text(p, &["cluster"]),
                    if bad.is_empty() {
                        "nothing subscribed yet".to_owned()
                    } else {
                        bad.join(", ")
                    }
                )
            })
        })
        .collect()
}

/// `causeway status --proxies [--wait DURATION] [-o json]`.
pub async fn run_proxies(
    client: &ApiClient,
    wait: Option<Duration>,
    output: ProxiesOutput,
) -> anyhow::Result<ExitCode> {
    let print = |list: &Value| match output {
        ProxiesOutput::Table => print!("{}", render_proxies(list)),
        ProxiesOutput::Json => {
            println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
        }
    };
    let Some(limit) = wait else {
        print(&fetch_proxies(client).await?);
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = Instant::now() + limit;
    loop {
        let (list, problems) = match fetch_proxies(client).await {
            Ok(l) => {
                let mut p = proxies_not_synced(&l);
                if proxy_items(&l).is_empty() {
                    p.push("no proxy is connected".to_owned());
                }
                (Some(l), p)
            }
            Err(e) => (None, vec![format!("controller: {e:#}")]),
        };
        if problems.is_empty()
            && let Some(l) = &list
        {
            print(l);
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            if let Some(l) = &list {
                print(l);
            }
            eprintln!("not synced after {limit:?}:");
            for p in problems {
                eprintln!("  {p}");
            }
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn overview() -> Overview {
        Overview {
            clusters: vec![json!({
                "metadata": {"name": "c1"},
                "spec": {"locality": {"region": "us-west", "zone": "us-west-a"}, "role": "Gateway"},
                "status": {"phase": "Ready", "proxies": 2}
            })],
            access_points: vec![json!({
                "metadata": {"name": "shop", "namespace": "retail", "generation": 2},
                "spec": {"hosts": ["shop.example.com"]},
                "status": {"observedGeneration": 2, "vip": "10.240.0.7", "phase": "Ready",
                           "routingConfigured": true,
                           "clusters": [{"name": "c1", "phase": "Applied"}]}
            })],
            name_services: vec![json!({
                "metadata": {"name": "shop-global", "namespace": "retail"},
                "spec": {"fqdn": "shop.global"},
                "status": {"endpoints": [{"cluster": "c1", "locality": "us-west/us-west-a"}],
                           "conditions": [{"type": "Programmed", "status": "True"}]}
            })],
        }
    }

    #[test]
    fn renders_three_tables() {
        let text = overview().render();
        assert!(
            text.contains("c1     us-west/us-west-a   Gateway   Ready   2"),
            "{text}"
        );
        assert!(text.contains("10.240.0.7"), "{text}");
        assert!(text.contains("c1:Applied"), "{text}");
        assert!(text.contains("c1@us-west/us-west-a"), "{text}");
    }

    #[test]
    fn proxies_table_has_a_column_per_type_and_the_last_nack() {
        let list = json!({"items": [{
            "id": "gw-c1", "cluster": "c1", "role": "gateway", "locality": "us-west/us-west-a",
            "nacks": 1,
            "types": {
                "CDS": {"state": "SYNCED", "ackedVersion": "0123456789abcdef"},
                "LDS": {"state": "NACKED", "nackedVersion": "fedcba9876543210", "ackedVersion": "aa"},
                "RDS": {"state": "STALE", "sentVersion": "1111222233334444"}
            },
            "lastNack": {"type": "LDS", "time": "2026-12-03T07:00:00Z", "message": "listeners[1]: bad\ncert"}
        }]});
        let text = render_proxies(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>()[..11],
            [
                "PROXY", "CLUSTER", "ROLE", "LOCALITY", "CDS", "EDS", "LDS", "SRDS", "RDS", "SDS",
                "LAST"
            ]
        );
        assert!(lines[2].starts_with("gw-c1"), "{text}");
        for want in [
            "SYNCED 01234567",
            "NACKED fedcba98",
            "STALE 11112222",
            "LDS 2026-12-03T07:00:00Z (1x): listeners[1]: bad cert",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        assert_eq!(
            proxies_not_synced(&list),
            ["proxy gw-c1 (c1): LDS NACKED, RDS STALE"]
        );
        assert!(render_proxies(&json!({"items": []})).contains("(none)"));
    }

    #[test]
    fn ready_only_when_everything_is() {
        assert_eq!(overview().not_ready(), Vec::<String>::new());
        let mut o = overview();
        o.access_points[0]["metadata"]["generation"] = json!(3);
        assert_eq!(
            o.not_ready(),
            ["accesspoint retail/shop: Ready"],
            "an older observedGeneration is not ready"
        );
        let mut o = overview();
        o.clusters[0]["status"]["phase"] = json!("Degraded");
        o.clusters[0]["status"]["conditions"] = json!([
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": ""},
            {"type": "Programmed", "status": "False", "reason": "Rejected",
             "message": "configuration rejected by gateway-c1 (SRDS)"}
        ]);
        o.name_services[0]["status"]["conditions"] = json!([
            {"type": "Programmed", "status": "False", "reason": "NoEndpoints", "message": "none"}
        ]);
        assert_eq!(
            o.not_ready(),
            [
                "cluster c1: Degraded (Rejected: configuration rejected by gateway-c1 (SRDS))",
                "nameservice retail/shop-global: not programmed (NoEndpoints: none)"
            ]
        );
        assert_eq!(Overview::default().not_ready(), ["no clusters registered"]);
    }
}
