//! VIP assignments from the controller's ADS (`causeway l4lb --xds`), as pure functions:
//! [`decode`] turns the CDS resources the controller sends (one Envoy `Cluster` per VIP entry,
//! `docs/l4lb.md` "VIPs from the controller") into [`Vip`]s, refusing with every reason what
//! the balancer cannot apply; [`combine`] adds them to the static file's VIPs and checks the
//! whole set the way the file is checked.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use causeway_xds::envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{LbConfig, LbPolicy},
};
use causeway_xds::envoy_types::pb::envoy::config::core::v3::{
    address, health_check::HealthChecker, socket_address,
};
use causeway_xds::envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;
use causeway_xds::envoy_types::pb::google::protobuf::{Struct, value::Kind};
use causeway_xds::{Any, type_url};
use prost::Message;

use crate::config::{
    Backend, Config, DEFAULT_TABLE_SIZE, HealthCheck, ProbeKind, Protocol, Vip, is_prime,
};

/// Filter-metadata key of a VIP entry's frontend (`vip`, `protocol`, `ports`).
pub const METADATA_KEY: &str = "causeway.l4lb";

/// Largest Maglev table accepted (Envoy's limit too).
pub const MAX_TABLE_SIZE: u64 = 5_000_011;

/// Decodes a complete CDS response into VIPs. Every problem of every resource is reported,
/// one per line, prefixed with the resource's name.
pub fn decode(resources: &[Any]) -> Result<Vec<Vip>, String> {
    let mut vips = Vec::new();
    let mut errors = Vec::new();
    for (i, any) in resources.iter().enumerate() {
        if any.type_url != type_url::CLUSTER {
            errors.push(format!(
                "resource {i}: type {} is not a VIP assignment (expected {})",
                any.type_url,
                type_url::CLUSTER
            ));
            continue;
        }
        let c = match Cluster::decode(any.value.as_slice()) {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("resource {i}: does not decode as a Cluster: {e}"));
                continue;
            }
        };
        let name = if c.name.is_empty() {
            format!("resource {i}")
        } else {
            c.name.clone()
        };
        match vip(c) {
            Ok(v) => vips.push(v),
            Err(list) => errors.extend(list.into_iter().map(|e| format!("{name}: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(vips)
    } else {
        Err(errors.join("; "))
    }
}

fn ms(d: Option<&causeway_xds::envoy_types::pb::google::protobuf::Duration>) -> Option<Duration> {
    let d = d?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos))
}

fn frontend(
    meta: Option<&Struct>,
    errors: &mut Vec<String>,
) -> Option<(Ipv4Addr, Protocol, Vec<u16>)> {
    let Some(meta) = meta else {
        errors.push(format!(
            "no metadata.filterMetadata[{METADATA_KEY:?}]: the VIP, protocol and ports are missing"
        ));
        return None;
    };
    let text = |k: &str| match meta.fields.get(k).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    };
    let address = match text("vip").map(|s| s.parse::<Ipv4Addr>()) {
        Some(Ok(a)) if !(a.is_unspecified() || a.is_broadcast() || a.is_multicast()) => Some(a),
        Some(Ok(a)) => {
            errors.push(format!("vip {a} cannot be a VIP"));
            None
        }
        Some(Err(_)) => {
            errors.push(format!(
                "vip {:?} is not an IPv4 address (this balancer serves IPv4 VIPs only)",
                text("vip").unwrap_or_default()
            ));
            None
        }
        None => {
            errors.push("vip: required (a string, the IPv4 VIP)".to_owned());
            None
        }
    };
    let protocol = match text("protocol").as_deref() {
        None | Some("TCP") => Protocol::Tcp,
        Some("UDP") => Protocol::Udp,
        Some(other) => {
            errors.push(format!("protocol {other:?}: must be TCP or UDP"));
            Protocol::Tcp
        }
    };
    let mut ports = Vec::new();
    match meta.fields.get("ports").and_then(|v| v.kind.as_ref()) {
        None => {}
        Some(Kind::ListValue(l)) => {
            for v in &l.values {
                match v.kind {
                    Some(Kind::NumberValue(n))
                        if (1.0..=65_535.0).contains(&n) && n.fract() == 0.0 =>
                    {
                        let p = n as u16;
                        if ports.contains(&p) {
                            errors.push(format!("port {p} is listed twice"));
                        }
                        ports.push(p);
                    }
                    _ => errors.push(format!("ports: {v:?} is not a port (1..=65535)")),
                }
            }
        }
        Some(_) => errors.push("ports: must be a list of numbers".to_owned()),
    }
    Some((address?, protocol, ports))
}

fn vip(c: Cluster) -> Result<Vip, Vec<String>> {
    let mut errors = Vec::new();
    if c.lb_policy != LbPolicy::Maglev as i32 {
        errors.push(format!(
            "lb_policy {}: the balancer only balances with MAGLEV",
            LbPolicy::try_from(c.lb_policy)
                .map(|p| p.as_str_name().to_owned())
                .unwrap_or_else(|_| c.lb_policy.to_string())
        ));
    }
    let table_size = match &c.lb_config {
        Some(LbConfig::MaglevLbConfig(m)) => m
            .table_size
            .as_ref()
            .map_or(u64::from(DEFAULT_TABLE_SIZE), |t| t.value),
        _ => u64::from(DEFAULT_TABLE_SIZE),
    };
    if !is_prime(u32::try_from(table_size).unwrap_or(0)) || table_size > MAX_TABLE_SIZE {
        errors.push(format!(
            "table size {table_size}: must be a prime up to {MAX_TABLE_SIZE}, like 65537"
        ));
    }
    let meta = c
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get(METADATA_KEY));
    let front = frontend(meta, &mut errors);

    let mut backends: Vec<Backend> = Vec::new();
    let mut health_ports = BTreeSet::new();
    let endpoints = c
        .load_assignment
        .as_ref()
        .map(|l| l.endpoints.as_slice())
        .unwrap_or_default();
    for e in endpoints.iter().flat_map(|l| &l.lb_endpoints) {
        let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
            errors
                .push("an endpoint without an address (named endpoints are not supported)".into());
            continue;
        };
        let sa = ep.address.as_ref().and_then(|a| match &a.address {
            Some(address::Address::SocketAddress(s)) => Some(s),
            _ => None,
        });
        let Some(sa) = sa else {
            errors.push("an endpoint without a socket address".into());
            continue;
        };
        let Ok(address) = sa.address.parse::<Ipv4Addr>() else {
            errors.push(format!(
                "backend {:?} is not an IPv4 address (the IPIP destination)",
                sa.address
            ));
            continue;
        };
        let weight = e.load_balancing_weight.as_ref().map_or(1, |w| w.value);
        if !(1..=65_535).contains(&weight) {
            errors.push(format!(
                "backend {address}: weight {weight} is not in 1..=65535"
            ));
            continue;
        }
        if backends.iter().any(|b| b.address == address) {
            errors.push(format!("backend {address} is listed twice"));
            continue;
        }
        let port = ep.health_check_config.as_ref().map_or(0, |h| h.port_value);
        if port == 0 {
            if let Some(socket_address::PortSpecifier::PortValue(p)) = sa.port_specifier
                && p != 0
            {
                health_ports.insert(p);
            }
        } else {
            health_ports.insert(port);
        }
        backends.push(Backend { address, weight });
    }
    if backends.is_empty() {
        errors.push("no backends: a VIP entry needs at least one gateway".into());
    }
    if backends.len() as u64 * 10 > table_size {
        errors.push(format!(
            "table size {table_size} is too small for {} backends",
            backends.len()
        ));
    }
    if health_ports.len() > 1 {
        errors.push(format!(
            "the backends' health-check ports differ ({health_ports:?}): the balancer probes \
             one port per VIP"
        ));
    }

    let mut health_check = HealthCheck::default();
    match c.health_checks.as_slice() {
        [] => {}
        [h] => {
            if let Some(d) = ms(h.interval.as_ref()) {
                health_check.interval = d;
            }
            if let Some(d) = ms(h.timeout.as_ref()) {
                health_check.timeout = d;
            }
            if let Some(n) = &h.healthy_threshold {
                health_check.healthy_threshold = n.value;
            }
            if let Some(n) = &h.unhealthy_threshold {
                health_check.unhealthy_threshold = n.value;
            }
            if health_check.interval.is_zero()
                || health_check.timeout.is_zero()
                || health_check.timeout > health_check.interval
            {
                errors.push(
                    "health check: interval and timeout must be more than 0, the timeout at \
                     most the interval"
                        .into(),
                );
            }
            if health_check.healthy_threshold == 0 || health_check.unhealthy_threshold == 0 {
                errors.push("health check: thresholds must be at least 1".into());
            }
            let port = health_ports
                .iter()
                .next()
                .and_then(|p| u16::try_from(*p).ok())
                .or_else(|| front.as_ref().and_then(|f| f.2.first().copied()))
                .unwrap_or(0);
            if port == 0 {
                errors.push(
                    "health check: no port (set the endpoints' health_check_config.port_value \
                     or give the VIP ports)"
                        .into(),
                );
            }
            health_check.kind = match &h.health_checker {
                Some(HealthChecker::TcpHealthCheck(_)) => ProbeKind::Tcp { port },
                Some(HealthChecker::HttpHealthCheck(x)) => {
                    let path = if x.path.is_empty() {
                        "/".to_owned()
                    } else {
                        x.path.clone()
                    };
                    if !path.starts_with('/')
                        || path.chars().any(|c| c.is_ascii_control() || c == ' ')
                    {
                        errors.push(format!("health check path {path:?} is not a path"));
                    }
                    ProbeKind::Http {
                        port,
                        path,
                        host: x.host.clone(),
                    }
                }
                _ => {
                    errors.push("health check: only TCP and HTTP checks are supported".into());
                    ProbeKind::None
                }
            };
        }
        _ => errors.push("more than one health check: the balancer runs one per VIP".into()),
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some((address, protocol, ports)) = front else {
        return Err(errors);
    };
    Ok(Vip {
        name: c.name,
        address,
        protocol,
        ports,
        backends,
        health_check,
        table_size: u32::try_from(table_size).unwrap_or(DEFAULT_TABLE_SIZE),
    })
}

/// The static part of the configuration after the file was read again (SIGHUP): the file's
/// VIPs with the `conntrack` and `bgp` settings in force, which apply only at start (the
/// conntrack tables are sized and the BGP sessions opened then). Returns it and, per setting of
/// the file that differs from the one in force, a note that it waits for a restart.
pub fn reloaded_file(running: &Config, file: Config) -> (Config, Vec<String>) {
    let mut notes = Vec::new();
    if file.conntrack != running.conntrack {
        notes.push("conntrack: changed in the file; applies at the next start".to_owned());
    }
    if file.bgp != running.bgp {
        notes.push("bgp: changed in the file; applies at the next start".to_owned());
    }
    (
        Config {
            vips: file.vips,
            conntrack: running.conntrack,
            bgp: running.bgp.clone(),
        },
        notes,
    )
}

/// The VIP set of the static file plus the controller's: names unique, and no two entries on
/// the same address, protocol and port (an any-port entry takes every port). The file's
/// settings (conntrack, BGP) stay as they are.
pub fn combine(base: &Config, dynamic: Vec<Vip>) -> Result<Config, String> {
    let mut errors = Vec::new();
    let mut names = BTreeSet::new();
    let mut services: BTreeSet<(Ipv4Addr, Protocol, Option<u16>)> = BTreeSet::new();
    let from_file = base.vips.len();
    let all: Vec<Vip> = base.vips.iter().cloned().chain(dynamic).collect();
    for (i, v) in all.iter().enumerate() {
        let origin = if i < from_file {
            "the static file"
        } else {
            "the controller"
        };
        if !names.insert(v.name.as_str()) {
            errors.push(format!(
                "{}: VIP name used twice (last from {origin})",
                v.name
            ));
        }
        let ports: Vec<Option<u16>> = if v.ports.is_empty() {
            vec![None]
        } else {
            v.ports.iter().copied().map(Some).collect()
        };
        for p in ports {
            let clash = services.contains(&(v.address, v.protocol, None))
                || p.is_none()
                    && services
                        .iter()
                        .any(|(a, pr, _)| *a == v.address && *pr == v.protocol)
                || !services.insert((v.address, v.protocol, p));
            if clash {
                errors.push(format!(
                    "{}: {} {}{} (from {origin}) is already served by another VIP entry",
                    v.name,
                    v.protocol,
                    v.address,
                    p.map(|p| format!(":{p}")).unwrap_or_default()
                ));
                break;
            }
        }
    }
    if errors.is_empty() {
        Ok(Config {
            vips: all,
            conntrack: base.conntrack,
            bgp: base.bgp.clone(),
        })
    } else {
        Err(errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_xds::envoy_types::pb::envoy::config::cluster::v3::cluster::MaglevLbConfig;
    use causeway_xds::envoy_types::pb::envoy::config::core::v3::{
        self as core, HealthCheck as EnvoyHealthCheck, Metadata, SocketAddress, health_check,
    };
    use causeway_xds::envoy_types::pb::envoy::config::endpoint::v3::{
        ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, endpoint,
    };
    use causeway_xds::envoy_types::pb::google::protobuf::{
        ListValue, UInt32Value, UInt64Value, Value,
    };
    use causeway_xds::pack;

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    /// A cluster as the controller renders it.
    fn cluster(name: &str, vip: &str, ports: &[u16], backends: &[(&str, u32)]) -> Cluster {
        let meta = Struct {
            fields: [
                ("vip".to_owned(), s(vip)),
                ("protocol".to_owned(), s("TCP")),
                (
                    "ports".to_owned(),
                    Value {
                        kind: Some(Kind::ListValue(ListValue {
                            values: ports
                                .iter()
                                .map(|p| Value {
                                    kind: Some(Kind::NumberValue(f64::from(*p))),
                                })
                                .collect(),
                        })),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        let lb_endpoints = backends
            .iter()
            .map(|(a, w)| LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(core::Address {
                        address: Some(address::Address::SocketAddress(SocketAddress {
                            address: (*a).to_owned(),
                            ..Default::default()
                        })),
                    }),
                    health_check_config: Some(endpoint::HealthCheckConfig {
                        port_value: 15000,
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                load_balancing_weight: Some(UInt32Value { value: *w }),
                ..Default::default()
            })
            .collect();
        Cluster {
            name: name.into(),
            lb_policy: LbPolicy::Maglev as i32,
            lb_config: Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: Some(UInt64Value { value: 65_537 }),
            })),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name.into(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            health_checks: vec![EnvoyHealthCheck {
                health_checker: Some(HealthChecker::HttpHealthCheck(
                    health_check::HttpHealthCheck {
                        path: "/ready".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }],
            metadata: Some(Metadata {
                filter_metadata: [(METADATA_KEY.to_owned(), meta)].into_iter().collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_what_the_controller_sends() {
        let c = cluster(
            "retail/shop",
            "10.240.0.1",
            &[80, 443],
            &[("10.1.0.21", 1), ("10.1.0.22", 2)],
        );
        let vips = decode(&[pack(&c)]).unwrap();
        assert_eq!(vips.len(), 1);
        let v = &vips[0];
        assert_eq!(v.name, "retail/shop");
        assert_eq!(v.address, Ipv4Addr::new(10, 240, 0, 1));
        assert_eq!(v.protocol, Protocol::Tcp);
        assert_eq!(v.ports, [80, 443]);
        assert_eq!(
            v.backends,
            [
                Backend {
                    address: Ipv4Addr::new(10, 1, 0, 21),
                    weight: 1
                },
                Backend {
                    address: Ipv4Addr::new(10, 1, 0, 22),
                    weight: 2
                }
            ]
        );
        assert_eq!(v.table_size, 65_537);
        assert_eq!(
            v.health_check.kind,
            ProbeKind::Http {
                port: 15000,
                path: "/ready".into(),
                host: String::new()
            }
        );
        // Absent durations and thresholds keep the balancer's defaults.
        assert_eq!(v.health_check.interval, Duration::from_millis(500));
        assert_eq!(decode(&[]).unwrap(), []);
    }

    #[test]
    fn refuses_what_it_cannot_apply_with_every_reason() {
        let mut bad = cluster("a", "fd00::1", &[80], &[("gw.example", 1)]);
        bad.lb_policy = LbPolicy::RoundRobin as i32;
        let mut small = cluster("b", "10.240.0.2", &[80], &[("10.1.0.21", 1)]);
        small.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
            table_size: Some(UInt64Value { value: 65_536 }),
        }));
        let empty = cluster("c", "10.240.0.3", &[80], &[]);
        let mut nometa = cluster("d", "10.240.0.4", &[80], &[("10.1.0.21", 1)]);
        nometa.metadata = None;
        let e = decode(&[pack(&bad), pack(&small), pack(&empty), pack(&nometa)]).unwrap_err();
        for want in [
            "a: lb_policy ROUND_ROBIN",
            "a: vip \"fd00::1\" is not an IPv4 address",
            "a: backend \"gw.example\" is not an IPv4 address",
            "b: table size 65536",
            "c: no backends",
            "d: no metadata.filterMetadata[\"causeway.l4lb\"]",
        ] {
            assert!(e.contains(want), "{want:?} missing from {e}");
        }
        let other = Any {
            type_url: type_url::LISTENER.into(),
            value: vec![],
        };
        assert!(
            decode(&[other])
                .unwrap_err()
                .contains("is not a VIP assignment")
        );
    }

    #[test]
    fn combines_with_the_file_and_refuses_clashes() {
        let base = crate::config::file::parse(
            "vips:\n- {name: static, address: 10.9.0.1, ports: [80], backends: [{address: 10.1.0.9}]}\n\
             bgp: {localAs: 65001, routerId: 10.1.0.11, peers: [{address: 10.1.0.1, remoteAs: 65000}]}\n",
        )
        .unwrap();
        let ok = decode(&[pack(&cluster(
            "retail/shop",
            "10.240.0.1",
            &[80],
            &[("10.1.0.21", 1)],
        ))])
        .unwrap();
        let c = combine(&base, ok).unwrap();
        assert_eq!(c.vips.len(), 2);
        assert_eq!(c.vips[0].name, "static");
        assert!(c.bgp.is_some());
        let clash = decode(&[pack(&cluster(
            "retail/x",
            "10.9.0.1",
            &[],
            &[("10.1.0.21", 1)],
        ))])
        .unwrap();
        let e = combine(&base, clash).unwrap_err();
        assert!(
            e.contains("retail/x: TCP 10.9.0.1 (from the controller) is already served"),
            "{e}"
        );
        let same_name = decode(&[pack(&cluster(
            "static",
            "10.240.0.9",
            &[80],
            &[("10.1.0.21", 1)],
        ))])
        .unwrap();
        assert!(
            combine(&base, same_name)
                .unwrap_err()
                .contains("used twice")
        );
    }

    #[test]
    fn a_reloaded_file_brings_its_vips_and_keeps_the_start_settings() {
        let running = crate::config::file::parse(
            "vips:\n- {name: a, address: 10.9.0.1, ports: [80], backends: [{address: 10.1.0.9}]}\n\
             bgp: {localAs: 65001, routerId: 10.1.0.11, peers: [{address: 10.1.0.1, remoteAs: 65000}]}\n",
        )
        .unwrap();
        let same_settings = crate::config::file::parse(
            "vips:\n- {name: b, address: 10.9.0.2, ports: [80], backends: [{address: 10.1.0.9}]}\n\
             bgp: {localAs: 65001, routerId: 10.1.0.11, peers: [{address: 10.1.0.1, remoteAs: 65000}]}\n",
        )
        .unwrap();
        let (c, notes) = reloaded_file(&running, same_settings);
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(c.vips.len(), 1);
        assert_eq!(c.vips[0].name, "b");
        let other_settings =
            crate::config::file::parse("vips: []\nconntrack: {capacity: 1000}\n").unwrap();
        let (c, notes) = reloaded_file(&running, other_settings);
        assert!(c.vips.is_empty());
        assert_eq!(c.bgp, running.bgp);
        assert_eq!(c.conntrack, running.conntrack);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("conntrack:") && notes[1].starts_with("bgp:"));
    }
}
