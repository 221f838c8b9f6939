//! `Gateway`: the ports, hosts and TLS settings a set of gateway proxies listens with (L4-L6;
//! VirtualServices bound to it do the L7 routing).

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Protocol, label_map, validate_metadata};
use crate::validation::checks::{self, Wildcard};
use crate::validation::{FieldPath, Report, Validate};

/// Spec of an Istio `Gateway`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    derive = "PartialEq",
    doc = "Istio Gateway: listeners (port, hosts, TLS) of the selected gateway proxies."
)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Labels of the gateway pods that take this configuration (e.g. `istio: ingressgateway`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    /// The listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<Server>,
}

/// One listener: a port, the hosts served on it, and TLS.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Server {
    /// Port and protocol.
    pub port: Port,
    /// Address to bind to instead of all addresses (an IP or `unix://` socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Hosts served, as `[namespace/]host`: `shop.example.com`, `*.example.com`, `*`,
    /// `prod/*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// TLS settings (HTTPS/TLS ports, or `httpsRedirect` on HTTP ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Loopback address or socket to forward to by default (sidecar ingress only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// Name of the server, used in route and stat names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A listening port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// Port number the gateway pod listens on (the gateway Service's target port).
    pub number: u32,
    /// Protocol served.
    pub protocol: Protocol,
    /// Port name, unique within the Gateway.
    pub name: String,
    /// Not used by Gateways (kept so such YAML is reported, not silently dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// How a server handles TLS.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward the TLS stream untouched, routed by SNI (Istio's default when mode is unset).
    Passthrough,
    /// Terminate TLS with a server certificate.
    Simple,
    /// Terminate TLS and require a client certificate.
    Mutual,
    /// Passthrough routed by SNI without a VirtualService (east-west gateways).
    AutoPassthrough,
    /// Terminate mTLS with Istio's workload certificates.
    IstioMutual,
    /// Terminate TLS; verify a client certificate when one is presented.
    OptionalMutual,
}

impl ServerTlsMode {
    /// The mode as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerTlsMode::Passthrough => "PASSTHROUGH",
            ServerTlsMode::Simple => "SIMPLE",
            ServerTlsMode::Mutual => "MUTUAL",
            ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
            ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
            ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
        }
    }
}

/// TLS protocol versions.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum TlsProtocolVersion {
    /// Envoy's default.
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV10,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV11,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV12,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV13,
}

/// TLS settings of a server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsSettings {
    /// Answer plain-HTTP requests with a 301 to https (HTTP servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// The TLS mode (Istio defaults to PASSTHROUGH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ServerTlsMode>,
    /// Server certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_certificate: Option<String>,
    /// Private key file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    /// CA bundle file verifying client certificates (MUTUAL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// Certificate revocation list file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_crl: Option<String>,
    /// Secret (in the gateway's namespace) holding certificate, key and optionally `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
    /// Names accepted in client certificates' SAN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    /// Base64 SHA-256 hashes of accepted client certificates' SPKI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_spki: Vec<String>,
    /// Hex SHA-256 hashes of accepted client certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_certificate_hash: Vec<String>,
    /// Lowest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocolVersion>,
    /// Highest TLS version accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_protocol_version: Option<TlsProtocolVersion>,
    /// Cipher suites offered (OpenSSL names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

impl Validate for Gateway {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        validate_metadata(&self.metadata, &path.field("metadata"), report);
        self.spec.validate_at(&path.field("spec"), report);
    }
}

impl Validate for GatewaySpec {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        label_map(&path.field("selector"), &self.selector, report);
        let sp = path.field("servers");
        if self.servers.is_empty() {
            report.error(
                &sp,
                "at least one server is required, e.g. [{port: {number: 80, name: http, \
                 protocol: HTTP}, hosts: [shop.example.com]}]",
            );
        }
        for (i, s) in self.servers.iter().enumerate() {
            s.validate_at(&sp.index(i), report);
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, s) in self.servers.iter().enumerate() {
            if s.port.name.is_empty() {
                continue;
            }
            if let Some(first) = seen.get(s.port.name.as_str()) {
                report.error(
                    &sp.index(i).field("port").field("name"),
                    format!(
                        "port name {:?} is already used by servers[{first}]: port names must \
                         be unique within a Gateway; rename one",
                        s.port.name
                    ),
                );
            } else {
                seen.insert(&s.port.name, i);
            }
        }
    }
}

impl Validate for Server {
    fn validate_at(&self, path: &FieldPath, report: &mut Report) {
        let pp = path.field("port");
        checks::port(&pp.field("number"), self.port.number, report);
        if self.port.name.is_empty() {
            report.error(
                &pp.field("name"),
                "port name is required: name it after the protocol, e.g. http or https-443",
            );
        }
        if self.port.target_port.is_some() {
            report.error(
                &pp.field("targetPort"),
                "targetPort has no effect on a Gateway: remove it; port.number is the port the \
                 gateway pod listens on",
            );
        }
        let hp = path.field("hosts");
        if self.hosts.is_empty() {
            report.error(
                &hp,
                "hosts is required: list the hosts served on this port, or \"*\" for all",
            );
        }
        for (i, h) in self.hosts.iter().enumerate() {
            server_host(&hp.index(i), h, report);
        }
        checks::unique(
            &hp,
            self.hosts.iter().map(String::as_str).enumerate(),
            "host",
            report,
        );
        if let Some(b) = &self.bind
            && !b.starts_with("unix://")
        {
            checks::ip_address(&path.field("bind"), b, report);
        }
        if let Some(e) = &self.default_endpoint {
            default_endpoint(&path.field("defaultEndpoint"), e, report);
        }
        let protocol = self.port.protocol;
        let tp = path.field("tls");
        match &self.tls {
            None if protocol.is_tls() => report.error(
                &tp,
                format!(
                    "protocol {} needs tls settings: add tls: {{mode: SIMPLE, credentialName: \
                     <secret>}} (or mode PASSTHROUGH to forward TLS untouched)",
                    protocol.as_str()
                ),
            ),
            None => {}
            Some(tls) => tls.validate(&tp, protocol, report),
        }
    }
}

/// Checks a server host: `[namespace/]dnsName`, namespace being `*`, `.`, `~` or a name.
fn server_host(path: &FieldPath, value: &str, report: &mut Report) {
    let (ns, host) = match value.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, value),
    };
    if let Some(ns) = ns
        && !matches!(ns, "*" | "." | "~")
        && !checks::dns_label(path, ns, report)
    {
        return;
    }
    checks::hostname(path, host, Wildcard::Allowed { bare: true }, report);
}

/// Checks a `defaultEndpoint`: `127.0.0.1:PORT`, `[::1]:PORT` or a `unix://` socket.
fn default_endpoint(path: &FieldPath, value: &str, report: &mut Report) {
    if value.starts_with("unix://") {
        return;
    }
    match value.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.ip().is_loopback() || addr.ip().is_unspecified() => {}
        _ => report.error(
            path,
            format!(
                "{value:?} is not a default endpoint: write 127.0.0.1:PORT (a loopback address) \
                 or unix:///path/to/socket"
            ),
        ),
    }
}

impl ServerTlsSettings {
    fn validate(&self, path: &FieldPath, protocol: Protocol, report: &mut Report) {
        if self.https_redirect == Some(true) && protocol != Protocol::Http {
            report.warning(
                &path.field("httpsRedirect"),
                format!(
                    "httpsRedirect only works on plain-HTTP servers; on this {} server it does \
                     nothing: move it to the port-80 HTTP server",
                    protocol.as_str()
                ),
            );
        }
        let certs = [
            ("serverCertificate", &self.server_certificate),
            ("privateKey", &self.private_key),
            ("caCertificates", &self.ca_certificates),
            ("caCrl", &self.ca_crl),
            ("credentialName", &self.credential_name),
        ];
        let cert_fields: Vec<&str> = certs
            .iter()
            .filter(|c| c.1.is_some())
            .map(|c| c.0)
            .collect();
        if !protocol.is_tls() {
            if let Some(mode) = self.mode {
                report.warning(
                    &path.field("mode"),
                    format!(
                        "TLS mode {} is ignored with protocol {}: use protocol HTTPS (or TLS) \
                         to serve TLS; keep only httpsRedirect here",
                        mode.as_str(),
                        protocol.as_str()
                    ),
                );
            }
            return;
        }
        match self.mode {
            None | Some(ServerTlsMode::Passthrough) | Some(ServerTlsMode::AutoPassthrough) => {
                if !cert_fields.is_empty() {
                    let hint = if self.mode.is_none() {
                        "mode is not set, so Istio uses PASSTHROUGH and ignores"
                    } else {
                        "passthrough modes forward TLS untouched and ignore"
                    };
                    report.warning(
                        &path.field("mode"),
                        format!(
                            "{hint} {}: set mode: SIMPLE to terminate TLS with this certificate",
                            cert_fields.join(", ")
                        ),
                    );
                }
                if self.mode == Some(ServerTlsMode::AutoPassthrough) && protocol != Protocol::Tls {
                    report.error(
                        &path.field("mode"),
                        "AUTO_PASSTHROUGH needs protocol TLS: set port.protocol to TLS",
                    );
                }
            }
            Some(ServerTlsMode::IstioMutual) => {
                for field in &cert_fields {
                    report.error(
                        &path.field(field),
                        format!(
                            "{field} cannot be set with mode ISTIO_MUTUAL, which uses Istio's \
                             workload certificates: remove it, or use mode MUTUAL with your own \
                             certificates"
                        ),
                    );
                }
            }
            Some(mode) => {
                if self.credential_name.is_some() {
                    for (field, value) in &certs[..3] {
                        if value.is_some() {
                            report.warning(
                                &path.field(field),
                                format!(
                                    "{field} is ignored because credentialName is set (the \
                                     Secret supplies the certificates): remove it"
                                ),
                            );
                        }
                    }
                } else {
                    let mode_name = mode.as_str();
                    if self.server_certificate.is_none() || self.private_key.is_none() {
                        report.error(
                            path,
                            format!(
                                "mode {mode_name} needs a certificate: set credentialName (a \
                                 kubernetes.io/tls Secret in the gateway's namespace) or both \
                                 serverCertificate and privateKey"
                            ),
                        );
                    }
                    if mode != ServerTlsMode::Simple && self.ca_certificates.is_none() {
                        report.error(
                            &path.field("caCertificates"),
                            format!(
                                "mode {mode_name} verifies client certificates and needs a CA: \
                                 set caCertificates, or credentialName with a Secret that has \
                                 ca.crt"
                            ),
                        );
                    }
                }
            }
        }
        if let (Some(min), Some(max)) = (self.min_protocol_version, self.max_protocol_version)
            && min != TlsProtocolVersion::TlsAuto
            && max != TlsProtocolVersion::TlsAuto
            && min > max
        {
            report.error(
                &path.field("minProtocolVersion"),
                "minProtocolVersion is above maxProtocolVersion: swap them",
            );
        }
        checks::unique(
            &path.field("cipherSuites"),
            self.cipher_suites.iter().map(String::as_str).enumerate(),
            "cipher suite",
            report,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(
        number: u32,
        protocol: Protocol,
        name: &str,
        tls: Option<ServerTlsSettings>,
    ) -> Server {
        Server {
            port: Port {
                number,
                protocol,
                name: name.into(),
                target_port: None,
            },
            hosts: vec!["uk.bookinfo.com".into()],
            tls,
            ..Default::default()
        }
    }

    fn gw(servers: Vec<Server>) -> Gateway {
        Gateway::new(
            "my-gateway",
            GatewaySpec {
                selector: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
                servers,
            },
        )
    }

    fn has(g: &Gateway, path: &str, needle: &str) -> bool {
        g.validate()
            .findings()
            .iter()
            .any(|f| f.path.as_str() == path && f.message.contains(needle))
    }

    fn all(g: &Gateway) -> Vec<String> {
        g.validate()
            .findings()
            .iter()
            .map(|f| f.to_string())
            .collect()
    }

    #[test]
    fn redirect_and_simple_tls_are_valid() {
        let g = gw(vec![
            server(
                80,
                Protocol::Http,
                "http",
                Some(ServerTlsSettings {
                    https_redirect: Some(true),
                    ..Default::default()
                }),
            ),
            server(
                443,
                Protocol::Https,
                "https-443",
                Some(ServerTlsSettings {
                    mode: Some(ServerTlsMode::Simple),
                    credential_name: Some("cert".into()),
                    ..Default::default()
                }),
            ),
        ]);
        assert!(all(&g).is_empty(), "{:?}", all(&g));
    }

    #[test]
    fn simple_needs_a_certificate() {
        let g = gw(vec![server(
            443,
            Protocol::Https,
            "https",
            Some(ServerTlsSettings {
                mode: Some(ServerTlsMode::Simple),
                private_key: Some("/etc/certs/privatekey.pem".into()),
                ..Default::default()
            }),
        )]);
        assert!(
            has(&g, "spec.servers[0].tls", "credentialName"),
            "{:?}",
            all(&g)
        );
    }

    #[test]
    fn mutual_needs_a_ca() {
        let g = gw(vec![server(
            443,
            Protocol::Https,
            "https",
            Some(ServerTlsSettings {
                mode: Some(ServerTlsMode::Mutual),
                server_certificate: Some("/c.pem".into()),
                private_key: Some("/k.pem".into()),
                ..Default::default()
            }),
        )]);
        assert!(has(&g, "spec.servers[0].tls.caCertificates", "needs a CA"));
    }

    #[test]
    fn https_redirect_on_https_warns() {
        let g = gw(vec![server(
            443,
            Protocol::Https,
            "https",
            Some(ServerTlsSettings {
                https_redirect: Some(true),
                mode: Some(ServerTlsMode::Simple),
                credential_name: Some("cert".into()),
                ..Default::default()
            }),
        )]);
        let r = g.validate();
        assert!(r.is_ok());
        assert!(has(&g, "spec.servers[0].tls.httpsRedirect", "plain-HTTP"));
    }

    #[test]
    fn https_without_tls() {
        let g = gw(vec![server(443, Protocol::Https, "https", None)]);
        assert!(has(&g, "spec.servers[0].tls", "needs tls settings"));
    }

    #[test]
    fn istio_mutual_refuses_certs() {
        let g = gw(vec![server(
            80,
            Protocol::Https,
            "https",
            Some(ServerTlsSettings {
                mode: Some(ServerTlsMode::IstioMutual),
                credential_name: Some("x".into()),
                ..Default::default()
            }),
        )]);
        assert!(has(
            &g,
            "spec.servers[0].tls.credentialName",
            "ISTIO_MUTUAL"
        ));
    }

    #[test]
    fn unset_mode_with_certificate_warns() {
        let g = gw(vec![server(
            443,
            Protocol::Https,
            "https",
            Some(ServerTlsSettings {
                credential_name: Some("x".into()),
                ..Default::default()
            }),
        )]);
        assert!(g.validate().is_ok());
        assert!(has(&g, "spec.servers[0].tls.mode", "PASSTHROUGH"));
    }

    #[test]
    fn ports_hosts_and_names() {
        let mut a = server(0, Protocol::Http, "http", None);
        a.port.target_port = Some(8080);
        a.hosts = vec!["prod/*.example.com".into(), "Bad_Host".into(), "*".into()];
        let b = server(8080, Protocol::Http, "http", None);
        let mut c = server(8081, Protocol::Tcp, "tcp", None);
        c.hosts.clear();
        c.bind = Some("not-an-ip".into());
        c.default_endpoint = Some("10.0.0.1:80".into());
        let g = gw(vec![a, b, c]);
        assert!(has(&g, "spec.servers[0].port.number", "out of range"));
        assert!(has(&g, "spec.servers[0].port.targetPort", "no effect"));
        assert!(has(&g, "spec.servers[0].hosts[1]", "not a valid hostname"));
        assert!(has(&g, "spec.servers[1].port.name", "already used"));
        assert!(has(&g, "spec.servers[2].hosts", "hosts is required"));
        assert!(has(&g, "spec.servers[2].bind", "not an IP address"));
        assert!(has(&g, "spec.servers[2].defaultEndpoint", "loopback"));
        assert_eq!(all(&g).len(), 7, "{:?}", all(&g));
    }

    #[test]
    fn protocol_versions_ordered() {
        let g = gw(vec![server(
            443,
            Protocol::Https,
            "https",
            Some(ServerTlsSettings {
                mode: Some(ServerTlsMode::Simple),
                credential_name: Some("x".into()),
                min_protocol_version: Some(TlsProtocolVersion::TlsV13),
                max_protocol_version: Some(TlsProtocolVersion::TlsV12),
                ..Default::default()
            }),
        )]);
        assert!(has(&g, "spec.servers[0].tls.minProtocolVersion", "swap"));
    }

    #[test]
    fn passthrough_modes() {
        let g = gw(vec![
            server(
                443,
                Protocol::Https,
                "https",
                Some(ServerTlsSettings {
                    mode: Some(ServerTlsMode::AutoPassthrough),
                    ..Default::default()
                }),
            ),
            server(
                8443,
                Protocol::Tls,
                "tls",
                Some(ServerTlsSettings {
                    mode: Some(ServerTlsMode::Passthrough),
                    server_certificate: Some("/c.pem".into()),
                    ..Default::default()
                }),
            ),
        ]);
        assert!(has(
            &g,
            "spec.servers[0].tls.mode",
            "AUTO_PASSTHROUGH needs protocol TLS"
        ));
        assert!(has(
            &g,
            "spec.servers[1].tls.mode",
            "ignore serverCertificate"
        ));
    }

    #[test]
    fn tls_mode_on_http_server_warns() {
        let g = gw(vec![server(
            80,
            Protocol::Http,
            "http",
            Some(ServerTlsSettings {
                mode: Some(ServerTlsMode::Simple),
                ..Default::default()
            }),
        )]);
        assert!(g.validate().is_ok());
        assert!(has(
            &g,
            "spec.servers[0].tls.mode",
            "ignored with protocol HTTP"
        ));
    }

    #[test]
    fn credential_name_wins_over_files() {
        let g = gw(vec![server(
            443,
            Protocol::Https,
            "https",
            Some(ServerTlsSettings {
                mode: Some(ServerTlsMode::Simple),
                credential_name: Some("cert".into()),
                server_certificate: Some("/c.pem".into()),
                cipher_suites: vec!["A".into(), "A".into()],
                ..Default::default()
            }),
        )]);
        assert!(has(
            &g,
            "spec.servers[0].tls.serverCertificate",
            "ignored because credentialName"
        ));
        assert!(has(
            &g,
            "spec.servers[0].tls.cipherSuites[1]",
            "duplicate cipher suite"
        ));
    }

    #[test]
    fn servers_are_required() {
        let g = gw(vec![]);
        assert!(has(&g, "spec.servers", "at least one server"));
        let mut s = server(80, Protocol::Http, "", None);
        s.hosts = vec!["Prod/a.example.com".into()];
        let g = gw(vec![s]);
        assert!(has(
            &g,
            "spec.servers[0].port.name",
            "port name is required"
        ));
        assert!(has(&g, "spec.servers[0].hosts[0]", "not a valid name"));
    }
}
