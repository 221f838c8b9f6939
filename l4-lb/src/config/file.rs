//! The static YAML file format (documented in `docs/l4lb.md`) and its translation into the
//! [`Config`] model.
//!
//! Decoding is strict: an unknown key (`adress:`) or a value of the wrong type is refused with
//! the path of the field. Values are then checked all at once, so one run reports every problem.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Deserialize;

use super::{
    Backend, BgpConfig, BgpPeer, Config, ConfigError, ConntrackSettings, DEFAULT_TABLE_SIZE,
    FieldError, HealthCheck, ProbeKind, Protocol, Vip, is_prime,
};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    vips: Vec<FileVip>,
    conntrack: Option<FileConntrack>,
    bgp: Option<FileBgp>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileVip {
    #[serde(default)]
    name: String,
    #[serde(default)]
    address: String,
    protocol: Option<String>,
    #[serde(default)]
    ports: Vec<u16>,
    table_size: Option<u32>,
    #[serde(default)]
    backends: Vec<FileBackend>,
    health_check: Option<FileHealthCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileBackend {
    #[serde(default)]
    address: String,
    weight: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileHealthCheck {
    #[serde(rename = "type")]
    kind: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    host: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConntrack {
    capacity: Option<usize>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileBgp {
    local_as: Option<u32>,
    #[serde(default)]
    router_id: String,
    hold_time: Option<String>,
    next_hop: Option<String>,
    #[serde(default)]
    peers: Vec<FileBgpPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileBgpPeer {
    #[serde(default)]
    address: String,
    port: Option<u16>,
    remote_as: Option<u32>,
}

/// Parses and validates the YAML text of an l4lb config.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            // The YAML error names a path of its own ("vips[0]: unknown field ..."); ours is
            // more precise, so drop it.
            let mut message = e.inner().to_string();
            if let Some((head, rest)) = message.split_once(": ")
                && !head.contains(' ')
            {
                message = rest.to_owned();
            }
            ConfigError::Syntax(FieldError {
                path: if path == "." { String::new() } else { path },
                message,
            })
        })?
    };
    let mut errors = Errors::default();
    let config = translate(file, &mut errors);
    if errors.0.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(errors.0))
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

fn translate(file: FileConfig, errors: &mut Errors) -> Config {
    let mut names = BTreeSet::new();
    let mut services = BTreeSet::new();
    let mut vips = Vec::new();
    for (i, v) in file.vips.into_iter().enumerate() {
        let path = format!("vips[{i}]");
        if let Some(vip) = vip(v, &path, errors) {
            if !names.insert(vip.name.clone()) {
                errors.push(
                    &format!("{path}.name"),
                    format!("duplicate VIP name {:?}: names must be unique", vip.name),
                );
            }
            // Two entries may share an address only on disjoint protocol/port sets.
            let ports: Vec<Option<u16>> = if vip.ports.is_empty() {
                vec![None]
            } else {
                vip.ports.iter().copied().map(Some).collect()
            };
            for p in ports {
                let clash = services.contains(&(vip.address, vip.protocol, None))
                    || p.is_none()
                        && services
                            .iter()
                            .any(|(a, pr, _)| *a == vip.address && *pr == vip.protocol)
                    || !services.insert((vip.address, vip.protocol, p));
                if clash {
                    errors.push(
                        &format!("{path}.ports"),
                        format!(
                            "{} {}{} is already served by an earlier VIP entry",
                            vip.protocol,
                            vip.address,
                            p.map(|p| format!(":{p}")).unwrap_or_default()
                        ),
                    );
                    break;
                }
            }
            vips.push(vip);
        }
    }
    let conntrack = conntrack(file.conntrack, errors);
    let bgp = file.bgp.and_then(|b| bgp(b, errors));
    Config {
        vips,
        conntrack,
        bgp,
    }
}

fn ipv4(text: &str, path: &str, what: &str, errors: &mut Errors) -> Option<Ipv4Addr> {
    if text.is_empty() {
        errors.push(path, format!("required: the {what} (an IPv4 address)"));
        return None;
    }
    match text.parse::<Ipv4Addr>() {
        Ok(a) if a.is_unspecified() || a.is_broadcast() || a.is_multicast() => {
            errors.push(path, format!("{text} cannot be a {what}"));
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            errors.push(
                path,
                format!("{text:?} is not an IPv4 address (dotted quad, like 10.0.0.1)"),
            );
            None
        }
    }
}

fn vip(v: FileVip, path: &str, errors: &mut Errors) -> Option<Vip> {
    let before = errors.0.len();
    if v.name.is_empty() {
        errors.push(
            &format!("{path}.name"),
            "required: a name for metrics and logs",
        );
    } else if !v
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        errors.push(
            &format!("{path}.name"),
            format!("{:?}: use letters, digits, '-', '_' and '.' only", v.name),
        );
    }
    let address = ipv4(&v.address, &format!("{path}.address"), "VIP", errors);
    let protocol = match v.protocol.as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some(other) => {
            errors.push(
                &format!("{path}.protocol"),
                format!("{other:?}: must be TCP or UDP"),
            );
            Protocol::Tcp
        }
    };
    let mut seen = BTreeSet::new();
    for (j, p) in v.ports.iter().enumerate() {
        if *p == 0 {
            errors.push(&format!("{path}.ports[{j}]"), "port 0 is not a port");
        } else if !seen.insert(*p) {
            errors.push(
                &format!("{path}.ports[{j}]"),
                format!("port {p} is listed twice"),
            );
        }
    }
    let table_size = v.table_size.unwrap_or(DEFAULT_TABLE_SIZE);
    if !is_prime(table_size) {
        errors.push(
            &format!("{path}.tableSize"),
            format!("{table_size} is not prime: Maglev needs a prime table size, like 65537"),
        );
    }
    if v.backends.is_empty() {
        errors.push(
            &format!("{path}.backends"),
            "required: at least one backend gateway",
        );
    }
    let mut backends = Vec::new();
    let mut seen = BTreeSet::new();
    for (j, b) in v.backends.iter().enumerate() {
        let bpath = format!("{path}.backends[{j}]");
        let address = ipv4(
            &b.address,
            &format!("{bpath}.address"),
            "backend address",
            errors,
        );
        let weight = b.weight.unwrap_or(1);
        if !(1..=65_535).contains(&weight) {
            errors.push(
                &format!("{bpath}.weight"),
                format!(
                    "{weight}: must be 1..=65535 (remove the backend instead of weighting it 0)"
                ),
            );
        }
        if let Some(address) = address {
            if !seen.insert(address) {
                errors.push(
                    &format!("{bpath}.address"),
                    format!("backend {address} is listed twice"),
                );
            }
            backends.push(Backend { address, weight });
        }
    }
    if backends.len() as u64 * 10 > u64::from(table_size) {
        errors.push(
            &format!("{path}.tableSize"),
            format!(
                "{table_size} is too small for {} backends: use a prime above 100 × the backend count",
                backends.len()
            ),
        );
    }
    let health_check = health_check(
        v.health_check.unwrap_or_default(),
        &v.ports,
        &format!("{path}.healthCheck"),
        errors,
    );
    if errors.0.len() > before {
        return None;
    }
    Some(Vip {
        name: v.name,
        address: address?,
        protocol,
        ports: v.ports,
        backends,
        health_check,
        table_size,
    })
}

fn health_check(h: FileHealthCheck, ports: &[u16], path: &str, errors: &mut Errors) -> HealthCheck {
    let mut out = HealthCheck::default();
    let port = match (h.port, ports.first()) {
        (Some(0), _) => {
            errors.push(&format!("{path}.port"), "port 0 is not a port");
            0
        }
        (Some(p), _) => p,
        (None, Some(p)) => *p,
        (None, None) => 0,
    };
    let needs_port = |errors: &mut Errors| {
        if port == 0 && h.port.is_none() {
            errors.push(
                &format!("{path}.port"),
                "required: the VIP serves every port, so say which one to probe",
            );
        }
    };
    out.kind = match h.kind.as_deref() {
        None | Some("TCP") => {
            needs_port(errors);
            if h.path.is_some() {
                errors.push(&format!("{path}.path"), "only HTTP checks have a path");
            }
            ProbeKind::Tcp { port }
        }
        Some("HTTP") => {
            needs_port(errors);
            let p = h.path.clone().unwrap_or_else(|| "/".to_owned());
            if !p.starts_with('/') || p.chars().any(|c| c.is_ascii_control() || c == ' ') {
                errors.push(
                    &format!("{path}.path"),
                    format!("{p:?}: must start with '/' and contain no spaces"),
                );
            }
            let host = h.host.clone().unwrap_or_default();
            if host.chars().any(|c| c.is_ascii_control() || c == ' ') {
                errors.push(
                    &format!("{path}.host"),
                    format!("{host:?}: not a host name"),
                );
            }
            ProbeKind::Http {
                port,
                path: p,
                host,
            }
        }
        Some("NONE") => ProbeKind::None,
        Some(other) => {
            errors.push(
                &format!("{path}.type"),
                format!("{other:?}: must be TCP, HTTP or NONE"),
            );
            ProbeKind::None
        }
    };
    if let Some(t) = &h.interval
        && let Some(d) = duration(t, &format!("{path}.interval"), errors)
    {
        out.interval = d;
    }
    if let Some(t) = &h.timeout
        && let Some(d) = duration(t, &format!("{path}.timeout"), errors)
    {
        out.timeout = d;
    }
    if out.interval.is_zero() {
        errors.push(&format!("{path}.interval"), "must be more than 0");
    }
    if out.timeout.is_zero() || out.timeout > out.interval {
        errors.push(
            &format!("{path}.timeout"),
            "must be more than 0 and at most the interval",
        );
    }
    for (v, field, slot) in [
        (
            h.healthy_threshold,
            "healthyThreshold",
            &mut out.healthy_threshold,
        ),
        (
            h.unhealthy_threshold,
            "unhealthyThreshold",
            &mut out.unhealthy_threshold,
        ),
    ] {
        match v {
            Some(0) => errors.push(&format!("{path}.{field}"), "must be at least 1"),
            Some(n) => *slot = n,
            None => {}
        }
    }
    out
}

fn conntrack(c: Option<FileConntrack>, errors: &mut Errors) -> ConntrackSettings {
    let mut out = ConntrackSettings::default();
    let Some(c) = c else { return out };
    if let Some(n) = c.capacity {
        if n == 0 {
            errors.push("conntrack.capacity", "must be at least 1");
        }
        out.capacity = n;
    }
    if let Some(t) = &c.idle_timeout {
        match duration(t, "conntrack.idleTimeout", errors) {
            Some(d) if d.is_zero() => errors.push("conntrack.idleTimeout", "must be more than 0"),
            Some(d) => out.idle_timeout = d,
            None => {}
        }
    }
    out
}

fn bgp(b: FileBgp, errors: &mut Errors) -> Option<BgpConfig> {
    let before = errors.0.len();
    let local_as = match b.local_as {
        Some(0) | None => {
            errors.push("bgp.localAs", "required: this balancer's AS number (1..)");
            0
        }
        Some(n) => n,
    };
    let router_id = ipv4(&b.router_id, "bgp.routerId", "BGP router id", errors);
    let hold_time = match &b.hold_time {
        None => 90,
        Some(t) => match duration(t, "bgp.holdTime", errors) {
            Some(d) if d.is_zero() => 0,
            Some(d) if (3..=65_535).contains(&d.as_secs()) && d.subsec_nanos() == 0 => {
                d.as_secs() as u16
            }
            Some(_) => {
                errors.push(
                    "bgp.holdTime",
                    "must be 0 or whole seconds from 3s to 65535s (RFC 4271)",
                );
                90
            }
            None => 90,
        },
    };
    let next_hop = b
        .next_hop
        .as_deref()
        .and_then(|t| ipv4(t, "bgp.nextHop", "next hop", errors));
    if b.peers.is_empty() {
        errors.push("bgp.peers", "required: at least one router to announce to");
    }
    let mut peers = Vec::new();
    for (i, p) in b.peers.iter().enumerate() {
        let path = format!("bgp.peers[{i}]");
        let address = ipv4(
            &p.address,
            &format!("{path}.address"),
            "peer address",
            errors,
        );
        let remote_as = match p.remote_as {
            Some(0) | None => {
                errors.push(
                    &format!("{path}.remoteAs"),
                    "required: the peer's AS number",
                );
                0
            }
            Some(n) => n,
        };
        let port = match p.port {
            Some(0) => {
                errors.push(&format!("{path}.port"), "port 0 is not a port");
                179
            }
            Some(n) => n,
            None => 179,
        };
        if let Some(address) = address {
            peers.push(BgpPeer {
                address,
                port,
                remote_as,
            });
        }
    }
    if errors.0.len() > before {
        return None;
    }
    Some(BgpConfig {
        local_as,
        router_id: router_id?,
        hold_time,
        next_hop,
        peers,
    })
}

fn duration(text: &str, path: &str, errors: &mut Errors) -> Option<Duration> {
    match parse_duration(text) {
        Some(d) => Some(d),
        None => {
            errors.push(
                path,
                format!("{text:?} is not a duration: use a number with ms, s or m (500ms, 2s)"),
            );
            None
        }
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `3m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (num, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let v: f64 = num.parse().ok()?;
    let secs = v * scale;
    if !secs.is_finite() || secs > 1e9 {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
vips:
  - name: shop
    address: 10.9.0.10
    protocol: TCP
    ports: [80, 443]
    tableSize: 251
    backends:
      - address: 10.1.0.21
        weight: 2
      - address: 10.1.0.22
    healthCheck:
      type: HTTP
      port: 8080
      path: /ready
      interval: 1s
      timeout: 300ms
      healthyThreshold: 3
      unhealthyThreshold: 1
  - name: dns
    address: 10.9.0.10
    protocol: UDP
    ports: [53]
    backends:
      - address: 10.1.0.23
conntrack:
  capacity: 1000
  idleTimeout: 2m
bgp:
  localAs: 65001
  routerId: 10.1.0.11
  holdTime: 9s
  peers:
    - address: 10.1.0.1
      remoteAs: 65000
"#;

    fn errors(text: &str) -> Vec<String> {
        match parse(text) {
            Ok(c) => panic!("expected errors, got {c:?}"),
            Err(e) => e.findings().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn full_file() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.vips.len(), 2);
        let shop = &c.vips[0];
        assert_eq!(shop.address, Ipv4Addr::new(10, 9, 0, 10));
        assert_eq!(shop.ports, [80, 443]);
        assert_eq!(shop.table_size, 251);
        assert_eq!(
            shop.backends,
            [
                Backend {
                    address: Ipv4Addr::new(10, 1, 0, 21),
                    weight: 2
                },
                Backend {
                    address: Ipv4Addr::new(10, 1, 0, 22),
                    weight: 1
                }
            ]
        );
        assert_eq!(
            shop.health_check,
            HealthCheck {
                kind: ProbeKind::Http {
                    port: 8080,
                    path: "/ready".into(),
                    host: String::new()
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(300),
                healthy_threshold: 3,
                unhealthy_threshold: 1,
            }
        );
        let dns = &c.vips[1];
        assert_eq!(dns.protocol, Protocol::Udp);
        assert_eq!(dns.table_size, DEFAULT_TABLE_SIZE);
        assert_eq!(dns.health_check.kind, ProbeKind::Tcp { port: 53 });
        assert_eq!(c.conntrack.capacity, 1000);
        assert_eq!(c.conntrack.idle_timeout, Duration::from_secs(120));
        let bgp = c.bgp.unwrap();
        assert_eq!(bgp.hold_time, 9);
        assert_eq!(bgp.peers[0].port, 179);
        assert_eq!(bgp.peers[0].remote_as, 65000);
        assert_eq!(c.vips.len(), 2);
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        let c = parse("").unwrap();
        assert!(c.vips.is_empty());
        assert!(c.bgp.is_none());
    }

    #[test]
    fn unknown_field_names_its_path() {
        let e = errors("vips:\n  - name: a\n    adress: 10.0.0.1\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("vips[0].adress: unknown field `adress`"),
            "{e:?}"
        );
    }

    #[test]
    fn wrong_type_names_its_path() {
        let e = errors(
            "vips:\n  - name: a\n    address: 10.0.0.1\n    backends:\n      - address: 10.0.0.2\n        weight: heavy\n",
        );
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("vips[0].backends[0].weight: invalid type"),
            "{e:?}"
        );
    }

    #[test]
    fn not_yaml() {
        let err = parse("vips: [").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax(_)), "{err}");
    }

    #[test]
    fn every_value_problem_is_reported() {
        let e = errors(
            r#"
vips:
  - name: "bad name"
    address: 10.9.0.300
    protocol: SCTP
    ports: [80, 80, 0]
    tableSize: 100
    backends:
      - address: 10.1.0.21
        weight: 0
      - address: 10.1.0.21
      - address: nope
    healthCheck:
      type: GRPC
      interval: 1h
      timeout: 0ms
      unhealthyThreshold: 0
  - name: empty
    address: 10.9.0.11
conntrack:
  capacity: 0
  idleTimeout: forever
bgp:
  routerId: 1.2.3.4
  holdTime: 2s
  peers:
    - address: 10.1.0.1
"#,
        );
        let want = [
            "vips[0].name: \"bad name\": use letters",
            "vips[0].address: \"10.9.0.300\" is not an IPv4 address",
            "vips[0].protocol: \"SCTP\": must be TCP or UDP",
            "vips[0].ports[1]: port 80 is listed twice",
            "vips[0].ports[2]: port 0 is not a port",
            "vips[0].tableSize: 100 is not prime",
            "vips[0].backends[0].weight: 0: must be 1..=65535",
            "vips[0].backends[1].address: backend 10.1.0.21 is listed twice",
            "vips[0].backends[2].address: \"nope\" is not an IPv4 address",
            "vips[0].healthCheck.type: \"GRPC\": must be TCP, HTTP or NONE",
            "vips[0].healthCheck.interval: \"1h\" is not a duration",
            "vips[0].healthCheck.timeout: must be more than 0",
            "vips[0].healthCheck.unhealthyThreshold: must be at least 1",
            "vips[1].backends: required: at least one backend",
            "vips[1].healthCheck.port: required: the VIP serves every port",
            "conntrack.capacity: must be at least 1",
            "conntrack.idleTimeout: \"forever\" is not a duration",
            "bgp.localAs: required",
            "bgp.holdTime: must be 0 or whole seconds",
            "bgp.peers[0].remoteAs: required",
        ];
        for w in want {
            assert!(
                e.iter().any(|x| x.starts_with(w)),
                "missing {w:?} in {e:#?}"
            );
        }
        assert_eq!(e.len(), want.len(), "{e:#?}");
    }

    #[test]
    fn overlapping_vips_are_refused() {
        let e = errors(
            r#"
vips:
  - name: a
    address: 10.9.0.10
    ports: [80]
    backends: [{address: 10.1.0.1}]
  - name: b
    address: 10.9.0.10
    ports: [443, 80]
    backends: [{address: 10.1.0.1}]
  - name: a
    address: 10.9.0.11
    ports: [80]
    backends: [{address: 10.1.0.1}]
"#,
        );
        assert_eq!(
            e,
            [
                "vips[1].ports: TCP 10.9.0.10:80 is already served by an earlier VIP entry",
                "vips[2].name: duplicate VIP name \"a\": names must be unique",
            ]
        );
    }

    #[test]
    fn all_ports_vip_clashes_with_any_other() {
        let e = errors(
            r#"
vips:
  - name: a
    address: 10.9.0.10
    ports: [80]
    backends: [{address: 10.1.0.1}]
  - name: b
    address: 10.9.0.10
    healthCheck: {type: NONE}
    backends: [{address: 10.1.0.1}]
"#,
        );
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("vips[1].ports: TCP 10.9.0.10 is already served"));
    }

    #[test]
    fn too_small_table() {
        let mut text = String::from(
            "vips:\n  - name: a\n    address: 10.9.0.10\n    ports: [80]\n    tableSize: 31\n    backends:\n",
        );
        for i in 1..=4 {
            text.push_str(&format!("      - address: 10.1.0.{i}\n"));
        }
        let e = errors(&text);
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("too small for 4 backends"), "{e:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("3m"), Some(Duration::from_secs(180)));
        for bad in ["", "s", "5", "-1s", "1h", "1e3s", "1 s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn vip_addresses_are_distinct_and_sorted() {
        let c = parse(FULL).unwrap();
        assert_eq!(c.vip_addresses(), [Ipv4Addr::new(10, 9, 0, 10)]);
    }
}
