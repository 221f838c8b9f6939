//! Shared by the integration tests: representative documents, certificates, and a readable
//! rendering of Envoy resources for golden files.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use causeway_proxy_config::ProxyConfig;
use causeway_proxy_config::envoy::EnvoyResources;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::http::early_header_mutation::header_mutation::v3::HeaderMutation as EarlyHeaderMutation;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use prost::{Message, Name};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `n`th ```yaml block of docs/gateway.md (0: the complete example; 1: the extensions).
pub fn doc_example(n: usize) -> String {
    let text = std::fs::read_to_string(repo().join("docs/gateway.md")).unwrap();
    let block = text.split("```yaml\n").nth(n + 1).unwrap();
    block[..block.find("```").unwrap()].to_owned()
}

/// Locality-grouped clusters as the controller renders them for a sidecar in us-west.
pub const LOCALITY: &str = r#"
listeners:
- name: outbound-80
  address: 127.0.0.1:15080
  protocol: HTTP
virtualHosts:
- name: shop.global
  domains: [shop.global, "shop.global:80"]
  routes:
  - name: default
    route:
      cluster: outbound|80||shop.global
      timeout: 5s
      retries: {attempts: 2, perTryTimeout: 1s, retryOn: [5xx, connect-failure, reset]}
clusters:
- name: outbound|80||shop.global
  connectTimeout: 1s
  protocol: HTTP2
  localityEndpoints:
  - locality: {region: us-west, zone: us-west-a}
    weight: 99
    endpoints: [{address: 127.0.1.1:15443, labels: {cluster: c1}}]
  - locality: {region: us-west, zone: us-west-b, subzone: rack-1}
    weight: 1
    endpoints: [{address: 127.0.1.2:15443, weight: 2, labels: {cluster: c2}}, "127.0.1.3:15443"]
  - locality: {region: us-east, zone: us-east-a}
    priority: 1
    weight: 1
    endpoints: [{address: 127.0.2.1:15443, labels: {cluster: c3}}]
  outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 0, interval: 1s, baseEjectionTime: 10s, maxEjectionPercent: 100}
  healthCheck: {path: /ready, expectedStatuses: [200, 204], interval: 1s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 2}
- name: tcp-health
  endpoints: ["127.0.3.1:5432"]
  healthCheck: {interval: 2s, timeout: 500ms, healthyThreshold: 2, unhealthyThreshold: 3}
"#;

pub fn parse(yaml: &str) -> ProxyConfig {
    ProxyConfig::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// A CA and leaf certificates made with rcgen.
pub struct Pki {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub ca_pem: String,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "proxy-config test CA");
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        Pki {
            issuer: rcgen::Issuer::new(params, key),
            ca_pem,
        }
    }

    /// (certificate PEM, key PEM) for these names.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Replaces the placeholders of a document with real certificates: files named by
/// `certFile`/`keyFile`/`caFile`/... are written under `dir` and the paths made absolute;
/// inline PEM placeholders (`-----BEGIN ...-----...`) get real PEM.
pub fn with_real_certs(doc: &ProxyConfig, dir: &Path) -> ProxyConfig {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(&["shop.example.com", "*.example.com", "localhost"]);
    let mut doc = doc.clone();
    let file = |f: &mut Option<String>, pem: &str| {
        if let Some(name) = f {
            let path = dir.join(name.replace('/', "_"));
            std::fs::write(&path, pem).unwrap();
            *f = Some(path.display().to_string());
        }
    };
    let inline = |p: &mut Option<String>, pem: &str| {
        if p.is_some() {
            *p = Some(pem.to_owned());
        }
    };
    for l in &mut doc.listeners {
        for c in l.tls.iter_mut().flat_map(|t| t.certificates.iter_mut()) {
            file(&mut c.cert_file, &cert);
            file(&mut c.key_file, &key);
            inline(&mut c.cert_pem, &cert);
            if c.key_pem.is_some() {
                c.key_pem = Some(key.as_str().into());
            }
        }
    }
    for c in &mut doc.clusters {
        if let Some(t) = &mut c.tls {
            file(&mut t.ca_file, &pki.ca_pem);
            file(&mut t.client_cert_file, &cert);
            file(&mut t.client_key_file, &key);
            inline(&mut t.ca_pem, &pki.ca_pem);
            inline(&mut t.client_cert_pem, &cert);
            if t.client_key_pem.is_some() {
                t.client_key_pem = Some(key.as_str().into());
            }
        }
    }
    for s in &mut doc.secrets {
        file(&mut s.cert_file, &cert);
        file(&mut s.key_file, &key);
        file(&mut s.ca_file, &pki.ca_pem);
        inline(&mut s.cert_pem, &cert);
        inline(&mut s.ca_pem, &pki.ca_pem);
        if s.key_pem.is_some() {
            s.key_pem = Some(key.as_str().into());
        }
    }
    doc
}

/// Envoy resources as text: prost's pretty Debug, with every `Any` of a known type decoded in
/// place so that golden files show filters and TLS contexts rather than bytes. (Protobuf maps
/// are HashMaps: golden documents keep at most one entry per map so the text is stable.)
pub fn describe(res: &EnvoyResources) -> String {
    let mut out = String::new();
    for (kind, items) in [
        ("listeners", debug_all(&res.listeners)),
        ("scoped_routes", debug_all(&res.scoped_routes)),
        ("route_configs", debug_all(&res.route_configs)),
        ("clusters", debug_all(&res.clusters)),
        ("load_assignments", debug_all(&res.load_assignments)),
        ("secrets", debug_all(&res.secrets)),
    ] {
        for item in items {
            out.push_str(&format!("--- {kind}\n{}\n", drop_defaults(&expand(&item))));
        }
    }
    out
}

/// Leaves out fields at their protobuf default (unset, empty, false, zero): prost's Debug
/// prints every field, and Envoy's messages have hundreds.
fn drop_defaults(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let t = l.trim();
            let Some((field, value)) = t.split_once(": ") else {
                return true;
            };
            let plain = field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            !(plain && matches!(value, "None," | "[]," | "false," | "\"\"," | "0," | "{},"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn debug_all<T: std::fmt::Debug>(items: &[T]) -> Vec<String> {
    items.iter().map(|i| format!("{i:#?}")).collect()
}

fn decode_known(type_url: &str, bytes: &[u8]) -> Option<String> {
    fn d<T: Message + Name + Default + std::fmt::Debug>(url: &str, b: &[u8]) -> Option<String> {
        (url == T::type_url()).then(|| format!("{:#?}", T::decode(b).unwrap()))
    }
    d::<HttpConnectionManager>(type_url, bytes)
        .or_else(|| d::<TcpProxy>(type_url, bytes))
        .or_else(|| d::<Router>(type_url, bytes))
        .or_else(|| d::<TlsInspector>(type_url, bytes))
        .or_else(|| d::<DownstreamTlsContext>(type_url, bytes))
        .or_else(|| d::<UpstreamTlsContext>(type_url, bytes))
        .or_else(|| d::<HttpProtocolOptions>(type_url, bytes))
        .or_else(|| d::<EarlyHeaderMutation>(type_url, bytes))
}

/// Replaces `value: [ bytes… ]` after a known `type_url` with the decoded message.
fn expand(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut url: Option<String> = None;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("type_url: \"") {
            url = rest.strip_suffix("\",").map(str::to_owned);
        }
        if trimmed == "value: [" && url.is_some() {
            let indent = &line[..line.len() - trimmed.len()];
            let mut bytes = Vec::new();
            let mut j = i + 1;
            while lines[j].trim() != "]," {
                bytes.push(lines[j].trim().trim_end_matches(',').parse::<u8>().unwrap());
                j += 1;
            }
            let url_s = url.take().unwrap();
            if let Some(decoded) = decode_known(&url_s, &bytes) {
                let decoded = expand(&decoded);
                let mut first = true;
                for l in decoded.lines() {
                    if first {
                        out.push(format!("{indent}value: {l}"));
                        first = false;
                    } else {
                        out.push(format!("{indent}{l}"));
                    }
                }
                let last = out.pop().unwrap();
                out.push(format!("{last},"));
                i = j + 1;
                continue;
            }
        }
        out.push(line.to_owned());
        i += 1;
    }
    out.join("\n")
}
