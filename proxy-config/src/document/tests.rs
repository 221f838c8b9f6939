use pretty_assertions::assert_eq;

use super::*;

const EXTENDED: &str = r#"
listeners:
- name: http
  address: 127.0.1.1:8080
  protocol: HTTP
  httpsRedirect: false
- name: https
  address: 127.0.1.1:8443
  protocol: HTTPS
  tls:
    certificates:
    - serverNames: [shop.example.com]
      certSecret: shop-cert
virtualHosts:
- name: shop
  domains: [shop.example.com]
  routes:
  - match: {path: {prefix: /}, headers: [{name: x-a, exact: b, invert: false}]}
    route:
      cluster: outbound|80||shop.global
      retries: {attempts: 3, perTryTimeout: 1s, retryOn: [5xx, connect-failure]}
  - directResponse: {status: 200, body: ""}
clusters:
- name: outbound|80||shop.global
  localityEndpoints:
  - locality: {region: us-west, zone: us-west-a, subzone: ""}
    priority: 0
    weight: 99
    endpoints: [{address: 127.0.1.1:8080, labels: {cluster: c1}}]
  - locality: {region: us-east}
    priority: 1
    weight: 1
    endpoints: ["127.0.2.1:8080", {address: "127.0.2.2:8080", weight: 2}]
  outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 0, interval: 1s, baseEjectionTime: 10s, maxEjectionPercent: 100}
  healthCheck: {path: /ready, interval: 1s, timeout: 1s, healthyThreshold: 1, unhealthyThreshold: 2}
- name: plain
  endpoints: ["127.0.0.1:3000", {address: "127.0.0.1:3001"}]
  tls: {mode: SIMPLE, caSecret: root-ca}
secrets:
- {name: shop-cert, certPem: CERT, keyPem: KEY}
- {name: root-ca, caPem: CA}
"#;

#[test]
fn extended_document_decodes_and_renders_back_the_same() {
    let doc = ProxyConfig::from_yaml(EXTENDED).unwrap_or_else(|e| panic!("{e}"));
    let c = &doc.clusters[0];
    assert_eq!(c.locality_endpoints[0].weight, Some(99));
    assert_eq!(c.locality_endpoints[1].priority, 1);
    assert_eq!(
        c.locality_endpoints[0].endpoints[0].labels["cluster"],
        "c1".to_owned()
    );
    assert_eq!(c.locality_endpoints[1].endpoints[1].weight, Some(2));
    assert_eq!(
        doc.clusters[1].endpoints[1],
        Endpoint::new("127.0.0.1:3001")
    );
    assert_eq!(
        doc.virtual_hosts[0].routes[0]
            .route
            .as_ref()
            .and_then(|r| r.retries.as_ref())
            .map(|r| r.retry_on.clone()),
        Some(vec!["5xx".to_owned(), "connect-failure".to_owned()])
    );
    let yaml = doc.to_yaml();
    assert!(!yaml.contains("httpsRedirect"), "{yaml}");
    assert!(!yaml.contains("priority: 0"), "{yaml}");
    // The short form is rendered when there is nothing but the address.
    assert!(yaml.contains("- 127.0.0.1:3001"), "{yaml}");
    assert_eq!(ProxyConfig::from_yaml(&yaml).unwrap(), doc);
}

#[test]
fn unknown_fields_are_reported_everywhere_including_long_endpoints() {
    let err = ProxyConfig::from_yaml(
        "clusters:\n- name: c\n  endpoint: [x]\n  outlierDetection: {intervall: 1s}\n",
    )
    .unwrap_err();
    let DecodeError::Invalid(f) = err else {
        panic!("{err}")
    };
    let paths: Vec<String> = f.iter().map(|f| f.path.to_string()).collect();
    assert_eq!(
        paths,
        [
            "clusters[0].endpoint",
            "clusters[0].outlierDetection.intervall"
        ]
    );
    let err = ProxyConfig::from_yaml("clusters:\n- name: c\n  endpoints: [{adress: x}]\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("clusters[0].endpoints[0]") && err.contains("unknown field `adress`"),
        "{err}"
    );
}

#[test]
fn enum_strings_decode_leniently() {
    let doc = ProxyConfig::from_yaml(
        "listeners: [{name: a, protocol: HTTPX}]\nclusters: [{name: c, lb: fastest}]",
    )
    .unwrap();
    assert_eq!(doc.listeners[0].protocol, Protocol::Unknown("HTTPX".into()));
    assert_eq!(
        doc.clusters[0].lb,
        Some(LbPolicy::Unknown("fastest".into()))
    );
    assert_eq!(doc.to_yaml().matches("HTTPX").count(), 1);
}

#[test]
fn keys_never_show_in_debug_and_redacted_hides_them() {
    let doc = ProxyConfig::from_yaml(EXTENDED).unwrap();
    assert!(!format!("{doc:?}").contains("KEY"));
    assert!(doc.to_yaml().contains("KEY"));
    let red = doc.redacted().to_yaml();
    assert!(!red.contains("KEY") && red.contains("[redacted]"), "{red}");
}
