//! `ServiceEntry`: adds hosts to the mesh's service registry: external services, and services
//! whose endpoints are WorkloadEntries (VMs, other clusters).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Protocol, WorkloadSelector, export_to, ip_or_cidr, unique_strings, validate_metadata,
};
use super::workload_entry::{AddressRule, WorkloadEntrySpec};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Spec of an Istio `ServiceEntry`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "ServiceEntry",
    namespaced,
    derive = "PartialEq",
    doc = "Istio ServiceEntry: hosts added to the mesh's service registry."
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// Host names of the service (`*.example.com` wildcards allowed, not `*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service (for TCP services without SNI/Host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports the service is reached on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Whether the service is part of the mesh (mTLS, telemetry) or external.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How endpoints are found (default NONE: the original destination address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Endpoints listed inline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Endpoints selected among WorkloadEntries and pods by labels (instead of `endpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces the entry is visible to (`.`, `*` or names); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Identities the endpoints' certificates must carry (mTLS).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port of a ServiceEntry.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port number clients connect to.
    pub number: u32,
    /// Protocol on the port.
    pub protocol: Protocol,
    /// Port name (a DNS label), referenced by endpoints' `ports`.
    pub name: String,
    /// Port the endpoints listen on, when it differs from `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// Whether a ServiceEntry's service is inside the mesh.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: no mTLS, external to policy.
    MeshExternal,
    /// Part of the mesh (e.g. VMs with sidecars).
    MeshInternal,
}

/// How a ServiceEntry's endpoints are resolved.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the address the client connected to.
    None,
    /// The endpoints' IP addresses.
    Static,
    /// Resolve host names (of endpoints, else of hosts) with DNS, all addresses used.
    Dns,
    /// Resolve with DNS, connecting to one address at a time.
    DnsRoundRobin,
}

impl Resolution {
    fn as_str(self) -> &'static str {
        match self {
            Resolution::None => "NONE",
            Resolution::Static => "STATIC",
            Resolution::Dns => "DNS",
            Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        }
    }
}

impl Validate for ServiceEntry {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, &path.field("metadata"), report);
        self.spec.validate_at(&path.field("spec"), report);
    }
}

impl Validate for ServiceEntrySpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let resolution = self.resolution.unwrap_or(Resolution::None);
        let dns = matches!(resolution, Resolution::Dns | Resolution::DnsRoundRobin);
        let hp = path.field("hosts");
        if self.hosts.is_empty() {
            report.error(
                &hp,
                "hosts is required: list the service's names, e.g. [api.example.com]",
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let p = hp.index(i);
            if h.parse::<std::net::IpAddr>().is_ok() {
                report.error(
                    &p,
                    format!("{h:?} is an IP address: hosts are names; put addresses in addresses"),
                );
                continue;
            }
            if !checks::hostname(&p, h, Wildcard::Allowed { bare: false }, report) {
                continue;
            }
            if dns && self.endpoints.is_empty() && h.starts_with("*.") {
                report.error(
                    &p,
                    format!(
                        "wildcard host {h:?} cannot be resolved with resolution {} when no \
                         endpoints are given: list exact host names, add endpoints, or use \
                         resolution NONE",
                        resolution.as_str()
                    ),
                );
            }
        }
        unique_strings(&hp, &self.hosts, "host", report);

        let ap = path.field("addresses");
        for (i, a) in self.addresses.iter().enumerate() {
            ip_or_cidr(&ap.index(i), a, report);
        }

        let pp = path.field("ports");
        if self.ports.is_empty() {
            report.error(
                &pp,
                "at least one port is required, e.g. [{number: 443, name: https, protocol: TLS}]",
            );
        }
        for (i, port) in self.ports.iter().enumerate() {
            let p = pp.index(i);
            checks::port(&p.field("number"), port.number, report);
            checks::dns_label(&p.field("name"), &port.name, report);
            if let Some(t) = port.target_port {
                checks::port(&p.field("targetPort"), t, report);
            }
        }
        unique_strings(
            &pp,
            &self
                .ports
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>(),
            "port name",
            report,
        );
        unique_strings(
            &pp,
            &self
                .ports
                .iter()
                .map(|p| p.number.to_string())
                .collect::<Vec<_>>(),
            "port number",
            report,
        );
        if !self.addresses.is_empty()
            && self.hosts.len() > 1
            && self.ports.iter().any(|p| !p.protocol.is_http())
        {
            report.warning(
                &hp,
                "with addresses and TCP/TLS ports, connections are matched by address and port \
                 only, so the hosts cannot be told apart: use one host per ServiceEntry",
            );
        }

        let ep = path.field("endpoints");
        if !self.endpoints.is_empty() && self.workload_selector.is_some() {
            report.error(
                &path.field("workloadSelector"),
                "endpoints and workloadSelector cannot both be set: list the endpoints, or \
                 select WorkloadEntries by label",
            );
        }
        match resolution {
            Resolution::None if !self.endpoints.is_empty() => report.error(
                &ep,
                "resolution NONE forwards to the original destination and ignores endpoints: \
                 use resolution STATIC (IP endpoints) or DNS, or remove endpoints",
            ),
            Resolution::Static if self.endpoints.is_empty() && self.workload_selector.is_none() => {
                report.warning(
                    &ep,
                    "resolution STATIC without endpoints or workloadSelector has no endpoints: \
                     traffic to these hosts fails; add endpoints",
                );
            }
            Resolution::DnsRoundRobin if self.endpoints.len() > 1 => report.error(
                &ep,
                "resolution DNS_ROUND_ROBIN takes at most one endpoint: use resolution DNS for \
                 several",
            ),
            _ => {}
        }
        let rule = if resolution == Resolution::Static {
            AddressRule::IpOnly
        } else {
            AddressRule::IpOrHostname
        };
        let names: Vec<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();
        for (i, e) in self.endpoints.iter().enumerate() {
            e.validate_with(&ep.index(i), rule, Some(&names), report);
        }
        if let Some(ws) = &self.workload_selector {
            ws.validate_at(&path.field("workloadSelector"), report);
        }
        export_to(&path.field("exportTo"), &self.export_to, report);
        let sp = path.field("subjectAltNames");
        for (i, san) in self.subject_alt_names.iter().enumerate() {
            if san.is_empty() {
                report.error(&sp.index(i), "empty subject alternative name: remove it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(number: u32, name: &str, protocol: Protocol) -> ServicePort {
        ServicePort {
            number,
            protocol,
            name: name.into(),
            target_port: None,
        }
    }

    fn se(spec: ServiceEntrySpec) -> ServiceEntry {
        ServiceEntry::new("mysw", spec)
    }

    fn has(s: &ServiceEntry, path: &str, needle: &str) -> bool {
        s.validate()
            .findings()
            .iter()
            .any(|f| f.path.as_str() == path && f.message.contains(needle))
    }

    fn ip(a: &str) -> WorkloadEntrySpec {
        WorkloadEntrySpec {
            address: Some(a.into()),
            ..Default::default()
        }
    }

    #[test]
    fn static_entry_is_valid() {
        let s = se(ServiceEntrySpec {
            hosts: vec!["www.jianghao.tech".into()],
            ports: vec![port(443, "https", Protocol::Https)],
            location: Some(Location::MeshExternal),
            resolution: Some(Resolution::Static),
            endpoints: vec![ip("2.2.2.2"), ip("3.3.3.3")],
            ..Default::default()
        });
        assert!(s.validate().findings().is_empty(), "{:?}", s.validate());
    }

    #[test]
    fn wildcard_with_dns_needs_endpoints() {
        let s = se(ServiceEntrySpec {
            hosts: vec!["*.httpbin.com".into()],
            ports: vec![port(80, "http", Protocol::Http)],
            resolution: Some(Resolution::Dns),
            ..Default::default()
        });
        assert!(has(&s, "spec.hosts[0]", "resolution DNS"));
    }

    #[test]
    fn static_endpoints_must_be_ips() {
        let s = se(ServiceEntrySpec {
            hosts: vec!["db.example.com".into()],
            ports: vec![port(5432, "tcp", Protocol::Tcp)],
            resolution: Some(Resolution::Static),
            endpoints: vec![ip("db1.example.com")],
            ..Default::default()
        });
        assert!(has(&s, "spec.endpoints[0].address", "not an IP address"));
    }

    #[test]
    fn endpoints_and_selector_conflict() {
        let s = se(ServiceEntrySpec {
            hosts: vec!["httpbin.com".into()],
            ports: vec![port(80, "http", Protocol::Http)],
            resolution: Some(Resolution::Static),
            endpoints: vec![ip("10.0.0.1")],
            workload_selector: Some(WorkloadSelector {
                labels: [("app".to_owned(), "httpbin".to_owned())].into(),
            }),
            ..Default::default()
        });
        assert!(has(&s, "spec.workloadSelector", "cannot both be set"));
    }

    #[test]
    fn ports_hosts_and_resolution_rules() {
        let s = se(ServiceEntrySpec {
            hosts: vec!["*".into(), "10.0.0.1".into()],
            ports: vec![
                port(80, "http", Protocol::Http),
                port(80, "Http", Protocol::Http),
            ],
            resolution: Some(Resolution::None),
            endpoints: vec![ip("10.0.0.1")],
            ..Default::default()
        });
        assert!(has(&s, "spec.hosts[0]", "not allowed"));
        assert!(has(&s, "spec.hosts[1]", "IP address"));
        assert!(has(&s, "spec.ports[1].name", "not a valid name"));
        assert!(has(&s, "spec.ports[1]", "duplicate port number"));
        assert!(has(&s, "spec.endpoints", "resolution NONE"));
        let s = se(ServiceEntrySpec {
            hosts: vec!["a.example.com".into()],
            resolution: Some(Resolution::DnsRoundRobin),
            endpoints: vec![ip("10.0.0.1"), ip("10.0.0.2")],
            ..Default::default()
        });
        assert!(has(&s, "spec.ports", "at least one port"));
        assert!(has(&s, "spec.endpoints", "DNS_ROUND_ROBIN"));
    }

    #[test]
    fn endpoint_port_names_must_exist() {
        let mut e = ip("10.0.0.1");
        e.ports = [("grpc".to_owned(), 9000)].into();
        let s = se(ServiceEntrySpec {
            hosts: vec!["a.example.com".into()],
            ports: vec![port(80, "http", Protocol::Http)],
            resolution: Some(Resolution::Static),
            endpoints: vec![e],
            ..Default::default()
        });
        assert!(has(&s, "spec.endpoints[0].ports[grpc]", "(http)"));
    }

    #[test]
    fn warnings_for_static_without_endpoints_and_shared_addresses() {
        let s = se(ServiceEntrySpec {
            hosts: vec!["a.example.com".into(), "b.example.com".into()],
            addresses: vec!["10.0.0.0/33".into(), "240.0.0.1".into()],
            ports: vec![port(5432, "tcp", Protocol::Tcp)],
            resolution: Some(Resolution::Static),
            subject_alt_names: vec![String::new()],
            ..Default::default()
        });
        assert!(has(&s, "spec.endpoints", "traffic to these hosts fails"));
        assert!(has(&s, "spec.hosts", "one host per ServiceEntry"));
        assert!(has(&s, "spec.addresses[0]", "CIDR"));
        assert!(has(&s, "spec.subjectAltNames[0]", "empty"));
    }

    #[test]
    fn target_port_and_export_to() {
        let mut p = port(80, "http", Protocol::Http);
        p.target_port = Some(0);
        let s = se(ServiceEntrySpec {
            hosts: vec!["a.example.com".into()],
            ports: vec![p],
            export_to: vec![".".into(), ".".into()],
            ..Default::default()
        });
        assert!(has(&s, "spec.ports[0].targetPort", "out of range"));
        assert!(has(&s, "spec.exportTo[1]", "duplicate exportTo entry"));
    }
}
