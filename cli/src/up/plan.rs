//! What `causeway up` runs, derived from the quickstart resources (a pure function, so it is
//! unit-tested without starting anything): one gateway per gateway address of every Cluster,
//! one demo app per WorkloadEntry, one Envoy sidecar per cluster, one certificate per Secret an
//! AccessPoint listener names. Editing the resources moves the processes with them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use causeway_crds::document::{Loaded, Resource};
use causeway_crds::istio::IstioObject;

/// Where sidecars of a cluster listen: the host `.10` of the /24 of the cluster's first
/// gateway (127.0.N.10 in the quickstart), outbound port and admin port (ARCHITECTURE.md §9).
pub const SIDECAR_HOST: u8 = 10;
/// The sidecar's outbound listener port.
pub const SIDECAR_PORT: u16 = 15001;
/// The sidecar's Envoy admin port.
pub const SIDECAR_ADMIN_PORT: u16 = 15900;
/// The namespace whose view sidecars get (the quickstart's services live there).
pub const SIDECAR_NAMESPACE: &str = "retail";

/// Why the quickstart resources cannot be run.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// No Cluster at all.
    #[error("the quickstart resources declare no Cluster: nothing to start")]
    NoClusters,
    /// A gateway address that is not an IP address.
    #[error(
        "Cluster {cluster}: gateway address {address:?} is not an IP address (`causeway up` \
         starts the gateway on it, so it must be a local one such as 127.0.1.1)"
    )]
    GatewayAddress {
        /// The cluster.
        cluster: String,
        /// What it says.
        address: String,
    },
    /// A port number outside 1..=65535.
    #[error("{what}: port {port} is not a TCP port (1-65535)")]
    Port {
        /// Which object and field.
        what: String,
        /// The number.
        port: u32,
    },
    /// A WorkloadEntry `causeway up` cannot start a demo app for.
    #[error(
        "WorkloadEntry {namespace}/{name}: {problem} (`causeway up` starts a demo app per \
         WorkloadEntry: give it an IP address, a port and the label topology.istio.io/cluster)"
    )]
    Backend {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What is missing.
        problem: String,
    },
}

/// A gateway process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The address it serves (Cluster.spec.gateways[].address).
    pub address: IpAddr,
    /// Plain HTTP port.
    pub http: u16,
    /// HTTPS port.
    pub https: u16,
    /// Admin port (on the same address).
    pub admin: u16,
}

/// An Envoy sidecar process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// Outbound listener.
    pub listen: SocketAddr,
    /// Envoy admin.
    pub admin: SocketAddr,
}

/// One member cluster and what runs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPlan {
    /// Cluster name.
    pub name: String,
    /// `region/zone[/subzone]`.
    pub locality: String,
    /// Its gateways (usually one).
    pub gateways: Vec<Gateway>,
    /// Its sidecar, when it has an IPv4 gateway to place it next to.
    pub sidecar: Option<Sidecar>,
}

/// A demo backend process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// WorkloadEntry name.
    pub name: String,
    /// Its cluster.
    pub cluster: String,
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its `version` label (`v1` when absent).
    pub version: String,
}

/// A certificate to issue from the local CA into a `kubernetes.io/tls` Secret.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CertRequest {
    /// Secret namespace.
    pub namespace: String,
    /// Secret name.
    pub name: String,
    /// DNS names (the hosts of every AccessPoint naming the Secret).
    pub hosts: Vec<String>,
}

/// An AccessPoint, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Hosts.
    pub hosts: Vec<String>,
    /// Whether it has an HTTPS listener.
    pub https: bool,
}

/// Everything `causeway up` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Clusters in the order of the files.
    pub clusters: Vec<ClusterPlan>,
    /// Demo backends.
    pub backends: Vec<Backend>,
    /// Certificates to issue.
    pub certificates: Vec<CertRequest>,
    /// AccessPoints.
    pub services: Vec<Service>,
    /// NameService FQDNs.
    pub global_names: Vec<String>,
}

fn port(what: impl FnOnce() -> String, p: u32) -> Result<u16, PlanError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PlanError::Port {
            what: what(),
            port: p,
        })
}

/// The sidecar address next to a gateway: `.10` of its /24 (IPv4 only).
fn sidecar_for(gateway: IpAddr) -> Option<Sidecar> {
    let IpAddr::V4(v4) = gateway else {
        return None;
    };
    let [a, b, c, _] = v4.octets();
    let ip = IpAddr::V4(Ipv4Addr::new(a, b, c, SIDECAR_HOST));
    Some(Sidecar {
        listen: SocketAddr::new(ip, SIDECAR_PORT),
        admin: SocketAddr::new(ip, SIDECAR_ADMIN_PORT),
    })
}

impl Plan {
    /// The plan for valid, decoded documents (documents that failed to decode are skipped:
    /// the caller refuses invalid input before).
    pub fn from_docs(docs: &[Loaded]) -> Result<Plan, PlanError> {
        let mut plan = Plan {
            clusters: Vec::new(),
            backends: Vec::new(),
            certificates: Vec::new(),
            services: Vec::new(),
            global_names: Vec::new(),
        };
        let mut certs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for doc in docs {
            let Ok(resource) = &doc.resource else {
                continue;
            };
            match resource {
                Resource::Cluster(c) => {
                    let name = c.metadata.name.clone().unwrap_or_default();
                    let mut gateways = Vec::new();
                    for (i, g) in c.spec.gateways.iter().enumerate() {
                        let address: IpAddr =
                            g.address.parse().map_err(|_| PlanError::GatewayAddress {
                                cluster: name.clone(),
                                address: g.address.clone(),
                            })?;
                        let what =
                            |f: &str| format!("Cluster {name}: spec.gateways[{i}].ports.{f}");
                        gateways.push(Gateway {
                            address,
                            http: port(|| what("http"), g.ports.http)?,
                            https: port(|| what("https"), g.ports.https)?,
                            admin: port(|| what("admin"), g.ports.admin)?,
                        });
                    }
                    plan.clusters.push(ClusterPlan {
                        locality: c.spec.locality.to_string(),
                        sidecar: gateways.first().and_then(|g| sidecar_for(g.address)),
                        gateways,
                        name,
                    });
                }
                Resource::Istio(i) => {
                    if let IstioObject::WorkloadEntry(w) = i.as_ref() {
                        let namespace = w
                            .metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into());
                        let name = w.metadata.name.clone().unwrap_or_default();
                        let problem = |p: &str| PlanError::Backend {
                            namespace: namespace.clone(),
                            name: name.clone(),
                            problem: p.to_owned(),
                        };
                        let ip: IpAddr = w
                            .spec
                            .address
                            .as_deref()
                            .and_then(|a| a.parse().ok())
                            .ok_or_else(|| problem("address is not an IP address"))?;
                        let p = w
                            .spec
                            .ports
                            .get("http")
                            .or_else(|| w.spec.ports.values().next())
                            .copied()
                            .ok_or_else(|| problem("no port"))?;
                        let p = port(|| format!("WorkloadEntry {namespace}/{name}"), p)?;
                        let cluster = w
                            .spec
                            .labels
                            .get(causeway_controller::placement::CLUSTER_LABEL)
                            .cloned()
                            .ok_or_else(|| problem("no topology.istio.io/cluster label"))?;
                        plan.backends.push(Backend {
                            cluster,
                            listen: SocketAddr::new(ip, p),
                            version: w
                                .spec
                                .labels
                                .get("version")
                                .cloned()
                                .unwrap_or_else(|| "v1".into()),
                            name,
                        });
                    }
                }
                Resource::AccessPoint(a) => {
                    let namespace = a
                        .metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into());
                    for l in &a.spec.listeners {
                        if let Some(r) = l.tls.as_ref().and_then(|t| t.credential_ref.as_ref()) {
                            let ns = r.namespace.clone().unwrap_or_else(|| namespace.clone());
                            certs
                                .entry((ns, r.name.clone()))
                                .or_default()
                                .extend(a.spec.hosts.iter().cloned());
                        }
                    }
                    plan.services.push(Service {
                        namespace,
                        name: a.metadata.name.clone().unwrap_or_default(),
                        hosts: a.spec.hosts.clone(),
                        https: a
                            .spec
                            .listeners
                            .iter()
                            .any(|l| l.tls.as_ref().is_some_and(|t| t.credential_ref.is_some())),
                    });
                }
                Resource::NameService(n) => plan.global_names.push(n.spec.fqdn.clone()),
                _ => {}
            }
        }
        if plan.clusters.is_empty() {
            return Err(PlanError::NoClusters);
        }
        plan.certificates = certs
            .into_iter()
            .map(|((namespace, name), mut hosts)| {
                hosts.sort();
                hosts.dedup();
                CertRequest {
                    namespace,
                    name,
                    hosts,
                }
            })
            .collect();
        Ok(plan)
    }

    /// Every TCP address a process of the plan binds, with what binds it (for the port check
    /// and for `causeway down`'s check that nothing is left listening). Sidecars only when
    /// `envoy` is true.
    pub fn listeners(&self, envoy: bool) -> Vec<(SocketAddr, String)> {
        let mut out = Vec::new();
        for c in &self.clusters {
            for g in &c.gateways {
                let at = |p: u16| SocketAddr::new(g.address, p);
                out.push((at(g.http), format!("gateway of {} (http)", c.name)));
                out.push((at(g.https), format!("gateway of {} (https)", c.name)));
                out.push((at(g.admin), format!("gateway of {} (admin)", c.name)));
            }
            if envoy && let Some(s) = &c.sidecar {
                out.push((s.listen, format!("Envoy sidecar of {}", c.name)));
                out.push((s.admin, format!("Envoy sidecar of {} (admin)", c.name)));
            }
        }
        for b in &self.backends {
            out.push((
                b.listen,
                format!("demo app {} ({} in {})", b.name, b.version, b.cluster),
            ));
        }
        out
    }

    /// The first cluster with a gateway and a sidecar: where the printed examples point.
    pub fn first_cluster(&self) -> Option<&ClusterPlan> {
        self.clusters.iter().find(|c| !c.gateways.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn quickstart() -> Vec<Loaded> {
        super::super::quickstart::embedded()
            .iter()
            .flat_map(|(_, text)| causeway_crds::document::load_yaml(text))
            .collect()
    }

    #[test]
    fn the_quickstart_is_the_local_federation_of_architecture_section_9() {
        let docs = quickstart();
        assert!(docs.iter().all(Loaded::is_ok));
        let p = Plan::from_docs(&docs).unwrap();
        let names: Vec<(&str, &str)> = p
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.locality.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("c1", "us-west/us-west-a"),
                ("c2", "us-west/us-west-b"),
                ("c3", "us-east/us-east-a")
            ]
        );
        for (n, c) in p.clusters.iter().enumerate() {
            let n = n + 1;
            assert_eq!(
                c.gateways,
                [Gateway {
                    address: format!("127.0.{n}.1").parse().unwrap(),
                    http: 8080,
                    https: 8443,
                    admin: 15000
                }]
            );
            let s = c.sidecar.as_ref().unwrap();
            assert_eq!(s.listen.to_string(), format!("127.0.{n}.10:15001"));
            assert_eq!(s.admin.to_string(), format!("127.0.{n}.10:15900"));
        }
        let backends: Vec<String> = p
            .backends
            .iter()
            .map(|b| format!("{} {} {}", b.cluster, b.listen, b.version))
            .collect();
        assert_eq!(
            backends,
            [
                "c1 127.0.1.21:3000 v1",
                "c1 127.0.1.22:3000 v2",
                "c2 127.0.2.21:3000 v1",
                "c2 127.0.2.22:3000 v2",
                "c3 127.0.3.21:3000 v1",
                "c3 127.0.3.22:3000 v2"
            ]
        );
        assert_eq!(
            p.certificates,
            [CertRequest {
                namespace: "retail".into(),
                name: "shop-cert".into(),
                hosts: vec!["shop.example.com".into()]
            }]
        );
        assert_eq!(p.global_names, ["shop.global"]);
        assert_eq!(p.services[0].hosts, ["shop.example.com"]);
        assert!(p.services[0].https);
        // 3 gateways × 3 ports + 3 sidecars × 2 + 6 demo apps.
        assert_eq!(p.listeners(true).len(), 9 + 6 + 6);
        assert_eq!(p.listeners(false).len(), 9 + 6);
    }

    #[test]
    fn refuses_what_it_cannot_start() {
        let load = |y: &str| causeway_crds::document::load_yaml(y);
        assert_eq!(
            Plan::from_docs(&load("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n")),
            Err(PlanError::NoClusters)
        );
        let cluster = "apiVersion: causeway.io/v1alpha1\nkind: Cluster\nmetadata: {name: c9}\n\
                       spec:\n  locality: {region: r}\n  gateways: [{address: gw.example.com}]\n";
        let err = Plan::from_docs(&load(cluster)).unwrap_err();
        assert!(err.to_string().contains("gw.example.com"), "{err}");
        let we = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
                  metadata: {name: a, namespace: n}\nspec: {address: 127.0.0.9, ports: {http: 80}}\n";
        let docs = [
            load(cluster.replace("gw.example.com", "127.0.9.1").as_str()),
            load(we),
        ]
        .concat();
        let err = Plan::from_docs(&docs).unwrap_err();
        assert!(
            err.to_string()
                .contains("WorkloadEntry n/a: no topology.istio.io/cluster label"),
            "{err}"
        );
    }

    #[test]
    fn sidecars_sit_next_to_ipv4_gateways_only() {
        assert_eq!(
            sidecar_for("10.1.2.1".parse().unwrap())
                .unwrap()
                .listen
                .to_string(),
            "10.1.2.10:15001"
        );
        assert_eq!(sidecar_for("::1".parse().unwrap()), None);
    }
}
