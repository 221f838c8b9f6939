use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::*;
use crate::config::{Action, Config, Endpoint, LbPolicy, ListenerKind, UpstreamProtocol};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca() -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "config test CA");
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        issuer: Issuer::new(params, key),
        pem,
    }
}

fn leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn indent(pem: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    pem.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn errors(yaml: &str) -> Vec<String> {
    match Config::from_yaml(yaml) {
        Ok(_) => panic!("config was accepted"),
        Err(e) => {
            let f = e.findings();
            assert!(!f.is_empty(), "no findings: {e}");
            f.iter().map(ToString::to_string).collect()
        }
    }
}

fn full_example(dir: &std::path::Path) -> String {
    let ca = ca();
    let (cert, key) = leaf(&ca, &["shop.example.com", "*.example.com"]);
    std::fs::write(dir.join("shop.crt"), &cert).unwrap();
    std::fs::write(dir.join("shop.key"), &key).unwrap();
    std::fs::write(dir.join("ca.crt"), &ca.pem).unwrap();
    let (ccert, ckey) = leaf(&ca, &["client.example.com"]);
    format!(
        r#"
listeners:
- name: http
  address: 127.0.1.1:8080
  protocol: HTTP
- name: redirect
  address: 127.0.1.1:8081
  protocol: HTTP
  httpsRedirect: true
- name: https
  address: 127.0.1.1:8443
  protocol: HTTPS
  tls:
    certificates:
    - serverNames: [shop.example.com, "*.example.com"]
      default: true
      certFile: shop.crt
      keyFile: shop.key
  virtualHosts: [shop]
- name: passthrough
  address: 127.0.1.1:9443
  protocol: TLS_PASSTHROUGH
  sniRoutes:
  - serverNames: [db.example.com]
    cluster: shop-v1
- name: tcp
  address: 127.0.1.1:9000
  protocol: TCP
  cluster: shop-v2
virtualHosts:
- name: shop
  domains: [shop.example.com, "*.shop.example.com"]
  routes:
  - name: canary
    match:
      headers: [{{name: X-Version, exact: v2}}]
    route: {{cluster: shop-v2}}
  - name: api
    match:
      path: {{regex: "/api/v[0-9]+/.*"}}
      method: GET
      query: [{{name: debug, present: true}}]
    route:
      clusters: [{{name: shop-v1, weight: 80}}, {{name: shop-v2, weight: 20}}]
      timeout: 2s
      hostRewrite: internal.shop
    requestHeaders: {{set: {{x-from: gateway}}, remove: [x-secret]}}
    responseHeaders: {{add: {{x-served-by: causeway}}}}
  - name: old
    match: {{path: {{prefix: /old/}}}}
    redirect: {{path: /new, responseCode: 302}}
  - name: health
    match: {{path: {{exact: /healthz}}}}
    directResponse: {{status: 200, body: ok}}
  - name: default
    route: {{cluster: shop-v1, prefixRewrite: /app/}}
- name: fallback
  domains: ["*"]
  routes:
  - directResponse: {{status: 404, body: nothing here}}
clusters:
- name: shop-v1
  endpoints: [127.0.0.1:3000, "[::1]:3000"]
- name: shop-v2
  endpoints: [backend.internal:3000]
  lb: least_request
  connectTimeout: 250ms
  protocol: HTTP2
- name: payments
  endpoints: [api.payments.example:443]
  tls:
    mode: MUTUAL
    sni: api.payments.example
    caFile: ca.crt
    clientCertPem: |
{ccert}
    clientKeyPem: |
{ckey}
"#,
        ccert = indent(&ccert, 6),
        ckey = indent(&ckey, 6)
    )
}

#[test]
fn full_example_loads_into_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = full_example(dir.path());
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 5);
    assert_eq!(c.listeners[0].address.to_string(), "127.0.1.1:8080");
    match &c.listeners[0].kind {
        ListenerKind::Http {
            https_redirect,
            virtual_hosts,
        } => {
            assert!(!https_redirect);
            // No virtualHosts list means every virtual host, in file order.
            assert_eq!(virtual_hosts, &["shop", "fallback"]);
        }
        k => panic!("{k:?}"),
    }
    assert!(matches!(
        c.listeners[1].kind,
        ListenerKind::Http {
            https_redirect: true,
            ..
        }
    ));
    match &c.listeners[2].kind {
        ListenerKind::Https { tls, virtual_hosts } => {
            assert_eq!(virtual_hosts, &["shop"]);
            assert!(tls.certificates[0].default);
        }
        k => panic!("{k:?}"),
    }
    let shop = &c.virtual_hosts[0];
    assert_eq!(shop.routes.len(), 5);
    assert_eq!(shop.routes[0].matcher.headers[0].name, "x-version");
    assert_eq!(shop.routes[4].name, "default");
    assert_eq!(c.virtual_hosts[1].routes[0].name, "fallback/0");
    match &shop.routes[1].action {
        Action::Forward(f) => {
            assert_eq!(f.clusters.len(), 2);
            assert_eq!(f.timeout, Some(Duration::from_secs(2)));
            assert_eq!(f.host_rewrite.as_deref(), Some("internal.shop"));
        }
        a => panic!("{a:?}"),
    }
    let v2 = &c.clusters["shop-v2"];
    assert_eq!(v2.lb, LbPolicy::LeastRequest);
    assert_eq!(v2.protocol, UpstreamProtocol::Http2);
    assert_eq!(v2.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        v2.endpoints,
        [Endpoint::Dns {
            host: "backend.internal".into(),
            port: 3000
        }]
    );
    assert_eq!(
        c.clusters["shop-v1"].connect_timeout,
        DEFAULT_CONNECT_TIMEOUT
    );
    assert!(c.clusters["payments"].tls.is_some());
}

#[test]
fn dump_never_contains_private_keys() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = full_example(dir.path());
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let c = Config::load(&path).unwrap();
    let dump = serde_json::to_string_pretty(&c).unwrap();
    assert!(!dump.contains("PRIVATE KEY"), "{dump}");
    assert!(dump.contains("[redacted]"), "{dump}");
    assert!(dump.contains("\"protocol\": \"TLS_PASSTHROUGH\""), "{dump}");
    assert!(!format!("{c:?}").contains("PRIVATE KEY"));
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let errs = errors(
        r#"
listeners:
- name: web
  address: localhost:80
  protocol: HTTPX
- name: web
  address: 127.0.0.1:8443
  protocol: HTTPS
- name: tcp
  address: 127.0.0.1:9000
  protocol: TCP
  cluster: nope
virtualHosts:
- name: v
  domains: [Shop.Example.com:8080, "foo*.example.com"]
  routes:
  - match:
      path: {prefix: api, exact: /x}
      headers: [{name: "bad header", regex: "(unclosed"}]
      method: get
    route: {clusters: [{name: missing, weight: 0}], timeout: soon}
  - redirect: {responseCode: 200, scheme: ftp}
  - {}
  - directResponse: {status: 99}
    route: {cluster: c}
clusters:
- name: c
  endpoints: [nohost, "bad_name:80", "127.0.0.1:99999"]
  lb: fastest
  connectTimeout: 0s
  protocol: HTTP3
  tls: {mode: SIMPLE}
"#,
    );
    let expect = [
        "clusters[0].endpoints[0]: \"nohost\" has no port",
        "clusters[0].endpoints[1]: \"bad_name\" is not a valid hostname",
        "clusters[0].endpoints[2]: port 99999 is out of range",
        "clusters[0].lb: unknown lb \"fastest\"",
        "clusters[0].connectTimeout: \"0s\" must be greater than zero",
        "clusters[0].protocol: unknown protocol \"HTTP3\"",
        "clusters[0].tls.caFile: caFile (a PEM file) or caPem (inline PEM) is required",
        "virtualHosts[0].domains[1]: \"foo*.example.com\": a wildcard may only be",
        "virtualHosts[0].routes[0].match.path: set exactly one of exact, prefix or regex",
        "virtualHosts[0].routes[0].match.headers[0].name: \"bad header\" is not a valid header",
        "virtualHosts[0].routes[0].match.headers[0].regex: regex \"(unclosed\" does not compile",
        "virtualHosts[0].routes[0].match.method: \"get\": write the method in upper case",
        "virtualHosts[0].routes[0].route.clusters[0].name: no cluster named \"missing\"",
        "virtualHosts[0].routes[0].route.clusters: weights add up to zero",
        "virtualHosts[0].routes[0].route.timeout: \"soon\"",
        "virtualHosts[0].routes[1].redirect.scheme: \"ftp\": use http or https",
        "virtualHosts[0].routes[1].redirect.responseCode: 200 is not a redirect",
        "virtualHosts[0].routes[2]: a route needs exactly one of route, redirect or directResponse",
        "virtualHosts[0].routes[3]: a route needs exactly one of",
        "listeners[1]: duplicate listener name \"web\"",
        "listeners[0].address: \"localhost:80\" is not an IP:port address",
        "listeners[0].protocol: unknown protocol \"HTTPX\"",
        "listeners[1].tls: an HTTPS listener needs tls.certificates",
        "listeners[2].cluster: no cluster named \"nope\"",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in\n{}",
            errs.join("\n")
        );
    }
    // Upper case in a domain is normalised, not refused; the port is an error.
    assert!(
        errs.iter()
            .any(|e| e.starts_with("virtualHosts[0].domains[0]:") && e.contains("without a port")),
        "{errs:#?}"
    );
}

#[test]
fn unknown_fields_are_refused_with_paths() {
    let errs = errors(
        r#"
listeners:
- name: http
  address: 127.0.0.1:8080
  protocol: HTTP
  virtualHost: [x]
clusters:
- name: c
  endpoints: [127.0.0.1:1]
  loadBalancer: random
"#,
    );
    assert_eq!(
        errs,
        [
            "clusters[0].loadBalancer: unknown field: check its spelling against docs/gateway.md",
            "listeners[0].virtualHost: unknown field: check its spelling against docs/gateway.md"
        ]
    );
}

#[test]
fn wrong_types_name_the_field() {
    let errs = errors("clusters:\n- name: c\n  endpoints: 7\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("clusters[0].endpoints: invalid type"),
        "{errs:?}"
    );
    assert!(matches!(
        Config::from_yaml("listeners: [").unwrap_err(),
        ConfigError::Syntax(_)
    ));
}

#[test]
fn empty_file_is_an_empty_config() {
    let c = Config::from_yaml("").unwrap();
    assert!(c.listeners.is_empty() && c.clusters.is_empty());
}

#[test]
fn certificate_problems_are_caught_at_load() {
    let ca = ca();
    let (cert_a, _) = leaf(&ca, &["a.example.com"]);
    let (_, key_b) = leaf(&ca, &["b.example.com"]);
    let yaml = format!(
        r#"
listeners:
- name: https
  address: 127.0.0.1:8443
  protocol: HTTPS
  tls:
    certificates:
    - serverNames: [a.example.com]
      certPem: |
{cert}
      keyPem: |
{key}
    - serverNames: ["*"]
      certPem: "not a pem"
      keyFile: /nonexistent/key.pem
    - certPem: "x"
      keyPem: "y"
virtualHosts: []
"#,
        cert = indent(&cert_a, 8),
        key = indent(&key_b, 8)
    );
    let errs = errors(&yaml);
    let want = [
        "listeners[0].tls.certificates[0]: certificate inline and key inline do not form a usable pair",
        "listeners[0].tls.certificates[1].serverNames[0]: \"*\" (every host) is not allowed here",
        "listeners[0].tls.certificates[1].keyFile: cannot read /nonexistent/key.pem",
        "listeners[0].tls.certificates[2].serverNames: list the SNI names",
        "listeners[0].tls.certificates[2]: inline: no CERTIFICATE block found",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in\n{}",
            errs.join("\n")
        );
    }
}

#[test]
fn listener_fields_must_fit_the_protocol() {
    let errs = errors(
        r#"
listeners:
- name: a
  address: 127.0.0.1:1
  protocol: TCP
  httpsRedirect: true
  virtualHosts: [v]
- name: b
  address: 127.0.0.1:2
  protocol: TLS_PASSTHROUGH
- name: c
  address: 127.0.0.1:3
  protocol: HTTP
  cluster: x
  virtualHosts: [v, w, missing]
virtualHosts:
- {name: v, domains: [a.com, "*"], routes: []}
- {name: w, domains: [a.com], routes: []}
clusters: [{name: x, endpoints: ["127.0.0.1:1"]}]
"#,
    );
    let want = [
        "listeners[0].httpsRedirect: httpsRedirect does not apply to protocol TCP",
        "listeners[0].virtualHosts: virtualHosts does not apply to protocol TCP",
        "listeners[0].cluster: name the destination cluster",
        "listeners[1].sniRoutes: a TLS_PASSTHROUGH listener needs at least one sniRoute",
        "listeners[2].cluster: cluster does not apply to protocol HTTP",
        "listeners[2].virtualHosts[2]: no virtual host named \"missing\"",
        "listeners[2].virtualHosts: domain \"a.com\" is claimed by both virtual hosts \"v\" and \"w\"",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in\n{}",
            errs.join("\n")
        );
    }
}

/// The complete example of docs/gateway.md loads, with real certificates put where it points.
#[test]
fn documented_example_loads() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/gateway.md"),
    )
    .unwrap();
    let start = doc.find("```yaml\n").unwrap() + "```yaml\n".len();
    let yaml = &doc[start..];
    let yaml = &yaml[..yaml.find("```").unwrap()];
    let ca = ca();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    for (name, sans) in [
        ("shop", vec!["shop.example.com"]),
        ("wildcard", vec!["*.example.com"]),
        ("client", vec!["client.example.com"]),
    ] {
        let (c, k) = leaf(&ca, &sans);
        std::fs::write(dir.path().join(format!("certs/{name}.crt")), c).unwrap();
        std::fs::write(dir.path().join(format!("certs/{name}.key")), k).unwrap();
    }
    std::fs::write(dir.path().join("certs/payments-ca.pem"), &ca.pem).unwrap();
    let (c, k) = leaf(&ca, &["default.example.com"]);
    let yaml = yaml
        .replace(
            "        -----BEGIN CERTIFICATE-----\n        ...\n",
            &format!("{}\n", indent(&c, 8)),
        )
        .replace(
            "        -----BEGIN PRIVATE KEY-----\n        ...\n",
            &format!("{}\n", indent(&k, 8)),
        );
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 5);
    assert_eq!(c.virtual_hosts[0].routes.len(), 5);
    assert_eq!(c.clusters.len(), 5);
}

/// Certificates by secret name, locality-grouped endpoints, outlier detection, health checks
/// and retries compile; wrong references are reported with their paths.
#[test]
fn secrets_and_locality_endpoints_compile() {
    let ca = ca();
    let (cert, key) = leaf(&ca, &["shop.example.com"]);
    let yaml = format!(
        r#"
listeners:
- name: https
  address: 127.0.0.1:8443
  protocol: HTTPS
  tls:
    certificates:
    - {{serverNames: [shop.example.com], certSecret: shop}}
virtualHosts:
- name: v
  domains: ["*"]
  routes:
  - route: {{cluster: c, retries: {{attempts: 2, perTryTimeout: 1s, retryOn: [5xx]}}}}
clusters:
- name: c
  localityEndpoints:
  - locality: {{region: us-west, zone: us-west-a}}
    weight: 99
    endpoints: [{{address: "127.0.0.1:1", labels: {{cluster: c1}}}}, "127.0.0.1:2"]
  - locality: {{region: us-east}}
    priority: 1
    endpoints: ["127.0.0.1:3"]
  outlierDetection: {{consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 10s}}
  healthCheck: {{path: /ready, interval: 1s, timeout: 1s}}
  tls: {{mode: SIMPLE, caSecret: root}}
secrets:
- name: shop
  certPem: |
{cert}
  keyPem: |
{key}
- name: root
  caPem: |
{ca}
"#,
        cert = indent(&cert, 4),
        key = indent(&key, 4),
        ca = indent(&ca.pem, 4),
    );
    let c = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let cl = &c.clusters["c"];
    // Every priority is kept, each endpoint with its locality group.
    assert_eq!(cl.endpoints.len(), 3);
    let groups: Vec<usize> = cl.members.iter().map(|m| m.group).collect();
    assert_eq!(groups, [0, 0, 1]);
    assert_eq!(cl.localities[0].weight, Some(99));
    assert_eq!(cl.localities[1].priority, 1);
    assert_eq!(cl.outlier.as_ref().unwrap().consecutive_5xx, 3);
    let Action::Forward(f) = &c.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert_eq!(f.retries.as_ref().unwrap().attempts, 2);
    assert_eq!(cl.tls.as_ref().unwrap().ca.source, "secret:root");
    let ListenerKind::Https { tls, .. } = &c.listeners[0].kind else {
        panic!()
    };
    assert_eq!(tls.certificates[0].cert_chain.source, "secret:shop");

    let bad = yaml
        .replace("certSecret: shop", "certSecret: root")
        .replace("caSecret: root", "caSecret: nope")
        .replace(
            "interval: 1s, baseEjectionTime",
            "interval: 1x, baseEjectionTime",
        );
    let errs = errors(&bad);
    let want = [
        "listeners[0].tls.certificates[0].certSecret: secret \"root\" holds no certificate and key",
        "clusters[0].tls.caSecret: no secret named \"nope\" in secrets",
        "clusters[0].outlierDetection.interval:",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in\n{}",
            errs.join("\n")
        );
    }
}

/// Issue 4's fields: fault, mirror, retries with status codes, connection pool, consistent
/// hashing and trusted sources compile, and their mistakes are reported with paths.
#[test]
fn traffic_policy_fields_compile_and_are_checked() {
    let yaml = r#"
listeners:
- {name: http, address: "127.0.0.1:8080", protocol: HTTP, trustedSources: [10.0.0.0/8, "::1"]}
virtualHosts:
- name: v
  domains: ["*"]
  routes:
  - route:
      cluster: c
      retries: {attempts: 3, retryOn: [gateway-error, "409"]}
      fault: {abort: {httpStatus: 503, percentage: 80}, delay: {fixedDelay: 2s, percentage: 0.5}}
      mirror: {cluster: shadow, percentage: 25}
clusters:
- name: c
  endpoints: ["127.0.0.1:1"]
  connectionPool: {maxConnections: 5, http1MaxPendingRequests: 0, retryBudget: {percent: 10}}
  consistentHash: {httpCookie: {name: sticky, ttl: 60s}}
- {name: shadow, endpoints: ["127.0.0.1:2"]}
"#;
    let c = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
    let l = &c.listeners[0];
    assert_eq!(l.trusted_sources.len(), 2);
    assert!(l.trusted_sources[0].contains("10.1.2.3".parse().unwrap()));
    assert!(!l.trusted_sources[0].contains("11.0.0.1".parse().unwrap()));
    assert!(l.trusted_sources[1].contains("::1".parse().unwrap()));
    let Action::Forward(f) = &c.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    let r = f.retries.as_ref().unwrap();
    assert_eq!(
        (r.attempts, r.retriable_status_codes.clone()),
        (3, vec![409])
    );
    let fault = f.fault.as_ref().unwrap();
    assert_eq!(fault.abort, Some((503, 800_000)));
    assert_eq!(
        fault.delay,
        Some((std::time::Duration::from_secs(2), 5_000))
    );
    assert_eq!(f.mirror.as_ref().unwrap().ppm, 250_000);
    let cl = &c.clusters["c"];
    assert_eq!(cl.lb, LbPolicy::Maglev);
    assert_eq!(cl.limits.max_connections, 5);
    assert_eq!(cl.limits.max_pending, 0);
    assert_eq!(cl.limits.retry_budget_percent, 10.0);
    assert!(matches!(
        &cl.hash,
        Some(crate::config::HashPolicy::Cookie { name, .. }) if name == "sticky"
    ));

    let bad = yaml
        .replace("10.0.0.0/8", "10.0.0.0/33")
        .replace("\"409\"", "sometimes")
        .replace(
            "httpStatus: 503, percentage: 80",
            "httpStatus: 99, percentage: 180",
        )
        .replace("cluster: shadow", "cluster: nope")
        .replace("{name: sticky, ttl: 60s}", "{name: sticky}");
    let errs = errors(&bad);
    for want in [
        "listeners[0].trustedSources[0]:",
        "virtualHosts[0].routes[0].route.retries.retryOn: unknown retry condition \"sometimes\"",
        "virtualHosts[0].routes[0].route.fault.abort.httpStatus:",
        "virtualHosts[0].routes[0].route.fault.abort.percentage:",
        "virtualHosts[0].routes[0].route.mirror.cluster: no cluster named \"nope\"",
        "clusters[0].consistentHash.httpCookie.ttl:",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(want)),
            "{want} not in {errs:#?}"
        );
    }
}
