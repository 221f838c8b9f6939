//! `WorkloadEntry`: a workload outside Kubernetes (a VM, a host, a pod in another cluster) as
//! an endpoint Services and ServiceEntries can select by labels. The same shape is a
//! ServiceEntry's `endpoints[]`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{label_map, locality, validate_metadata};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Spec of an Istio `WorkloadEntry` (also a ServiceEntry endpoint).
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "WorkloadEntry",
    namespaced,
    derive = "PartialEq",
    doc = "Istio WorkloadEntry: one workload outside Kubernetes, selectable by labels."
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    /// IP address, DNS name or `unix://` socket of the workload; may be empty only when
    /// `network` names a network reached through its gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Port name (of the selecting Service/ServiceEntry) to the port the workload listens on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Labels, matched by Service and ServiceEntry selectors and by subsets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network the workload is on; workloads on other networks are reached via its gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Locality `region/zone/subzone`, used by locality load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Load-balancing weight relative to the other endpoints (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Service account the workload's sidecar runs as; with it, meshed clients use mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// What a workload's `address` may be, which depends on where it is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressRule {
    /// An IP address or `unix://` socket (ServiceEntry resolution STATIC).
    IpOnly,
    /// An IP address, `unix://` socket or DNS name (WorkloadEntry, resolution DNS).
    IpOrHostname,
}

impl Validate for WorkloadEntry {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, &path.field("metadata"), report);
        self.spec.validate_at(&path.field("spec"), report);
    }
}

impl Validate for WorkloadEntrySpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        self.validate_with(path, AddressRule::IpOrHostname, None, report);
    }
}

impl WorkloadEntrySpec {
    /// Checks the workload; `service_ports` are the port names of the enclosing ServiceEntry
    /// (None for a standalone WorkloadEntry, whose selecting Services are not known here).
    pub(crate) fn validate_with(
        &self,
        path: &FieldPath,
        rule: AddressRule,
        service_ports: Option<&[&str]>,
        report: &mut Report,
    ) {
        let ap = path.field("address");
        let network = self.network.as_deref().filter(|n| !n.is_empty());
        match self.address.as_deref().filter(|a| !a.is_empty()) {
            None if network.is_none() => report.error(
                &ap,
                "address is required: write the workload's IP address (e.g. 10.0.0.12) or DNS \
                 name; leave it empty only together with network, for a workload reached \
                 through that network's gateway",
            ),
            None => {}
            Some(a) if a.starts_with("unix://") && !self.ports.is_empty() => report.error(
                &path.field("ports"),
                "a unix:// socket address has no ports: remove ports",
            ),
            Some(a) if a.starts_with("unix://") => {}
            Some(a) if a.parse::<std::net::IpAddr>().is_ok() => {}
            Some(a) => match rule {
                AddressRule::IpOnly => report.error(
                    &ap,
                    format!(
                        "{a:?} is not an IP address: with resolution STATIC endpoints must be \
                         IP addresses (or unix:// sockets); use resolution DNS for host names"
                    ),
                ),
                AddressRule::IpOrHostname => {
                    checks::hostname(&ap, a, Wildcard::Forbidden, report);
                }
            },
        }
        let pp = path.field("ports");
        for (name, port) in &self.ports {
            let p = pp.key(name);
            checks::port(&p, *port, report);
            if let Some(known) = service_ports
                && !known.contains(&name.as_str())
            {
                report.error(
                    &p,
                    format!(
                        "{name:?} is not one of the ServiceEntry's port names ({}): endpoint \
                         ports map a declared port name to the endpoint's port number",
                        known.join(", ")
                    ),
                );
            }
        }
        label_map(&path.field("labels"), &self.labels, report);
        if let Some(l) = self.locality.as_deref().filter(|l| !l.is_empty()) {
            locality(&path.field("locality"), l, false, report);
        }
        if let Some(sa) = &self.service_account {
            checks::object_name(&path.field("serviceAccount"), sa, report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn we(spec: WorkloadEntrySpec) -> WorkloadEntry {
        WorkloadEntry::new("my-vm", spec)
    }

    fn has(w: &WorkloadEntry, path: &str, needle: &str) -> bool {
        w.validate()
            .findings()
            .iter()
            .any(|f| f.path.as_str() == path && f.message.contains(needle))
    }

    #[test]
    fn full_entry_is_valid() {
        let w = we(WorkloadEntrySpec {
            address: Some("10.0.0.12".into()),
            ports: [("http".to_owned(), 8080)].into(),
            labels: [("app".to_owned(), "shop".to_owned())].into(),
            network: Some("net-west".into()),
            locality: Some("us-west/us-west-a".into()),
            weight: Some(2),
            service_account: Some("shop".into()),
        });
        assert!(w.validate().findings().is_empty(), "{:?}", w.validate());
    }

    #[test]
    fn address_is_required_without_network() {
        let w = we(WorkloadEntrySpec::default());
        assert!(has(&w, "spec.address", "address is required"));
        let w = we(WorkloadEntrySpec {
            network: Some("net-east".into()),
            ..Default::default()
        });
        assert!(w.validate().findings().is_empty());
    }

    #[test]
    fn bad_fields() {
        let w = we(WorkloadEntrySpec {
            address: Some("vm_1.example.com".into()),
            ports: [("http".to_owned(), 0)].into(),
            locality: Some("us-west/*".into()),
            service_account: Some("Bad".into()),
            ..Default::default()
        });
        assert!(has(&w, "spec.address", "not a valid hostname"));
        assert!(has(&w, "spec.ports[http]", "out of range"));
        assert!(has(&w, "spec.locality", "not a locality"));
        assert!(has(&w, "spec.serviceAccount", "not a valid name"));
    }

    #[test]
    fn static_endpoints_need_ips_and_known_ports() {
        let e = WorkloadEntrySpec {
            address: Some("vm1.example.com".into()),
            ports: [("grpc".to_owned(), 9000)].into(),
            ..Default::default()
        };
        let mut r = Report::new();
        let p = FieldPath::root("spec").field("endpoints").index(0);
        e.validate_with(&p, AddressRule::IpOnly, Some(&["http"]), &mut r);
        let paths: Vec<_> = r.findings().iter().map(|f| f.path.to_string()).collect();
        assert_eq!(
            paths,
            ["spec.endpoints[0].address", "spec.endpoints[0].ports[grpc]"]
        );
    }

    #[test]
    fn unix_sockets_have_no_ports() {
        let w = we(WorkloadEntrySpec {
            address: Some("unix:///var/run/app.sock".into()),
            ports: [("http".to_owned(), 80)].into(),
            ..Default::default()
        });
        assert!(has(&w, "spec.ports", "unix:// socket"));
    }
}
