use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::config::{Action, Config, Redirect};

const YAML: &str = r#"
listeners:
- {name: http, address: "127.0.0.1:8080", protocol: HTTP}
- {name: only-api, address: "127.0.0.1:8081", protocol: HTTP, virtualHosts: [api]}
virtualHosts:
- name: shop
  domains: [shop.example.com]
  routes:
  - name: canary
    match: {headers: [{name: x-version, exact: v2}]}
    route: {cluster: v2}
  - name: beta-user
    match: {headers: [{name: cookie, regex: ".*user=beta.*"}]}
    route: {cluster: v2}
  - name: no-auth
    match: {path: {prefix: /private}, headers: [{name: authorization, present: true, invert: true}]}
    directResponse: {status: 401, body: login first}
  - name: post-only
    match: {path: {exact: /orders}, method: POST}
    route: {cluster: v1}
  - name: query
    match: {path: {exact: /search}, query: [{name: q, prefix: "shoe"}, {name: lang, exact: "en us"}]}
    route: {cluster: v2}
  - name: regex
    match: {path: {regex: "/items/[0-9]+"}}
    route: {cluster: v2}
  - name: prefix
    match: {path: {prefix: /api}}
    route: {cluster: v1}
  - name: ua
    match: {headers: [{name: user-agent, prefix: curl/}]}
    route: {cluster: v1}
- name: wild
  domains: ["*.example.com"]
  routes:
  - {name: wild-all, route: {cluster: v1}}
- name: deep-wild
  domains: ["*.eu.example.com"]
  routes:
  - {name: deep, route: {cluster: v2}}
- name: api
  domains: [api.example.com]
  routes:
  - {name: api-all, match: {path: {prefix: /v1/}}, route: {cluster: v1}}
- name: any
  domains: ["*"]
  routes:
  - {name: catch-all, match: {path: {prefix: /}}, directResponse: {status: 200, body: any}}
clusters:
- {name: v1, endpoints: ["127.0.0.1:1"]}
- {name: v2, endpoints: ["127.0.0.1:2"]}
"#;

fn config() -> Arc<Config> {
    Arc::new(Config::from_yaml(YAML).unwrap_or_else(|e| panic!("{e}")))
}

fn route_name(
    router: &Router,
    method: &str,
    host: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> Option<String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let head = RequestHead {
        method,
        host,
        path,
        query,
        headers: &map,
    };
    match router.route(&head) {
        Decision::NotFound => None,
        Decision::Matched { route, .. } => Some(route.name.clone()),
    }
}

/// method, host, uri, headers, expected route.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    Option<&'a str>,
);

#[test]
fn routing_table() {
    let router = Router::new(config(), "http");
    #[rustfmt::skip]
    let table: &[Case] = &[
        // Host selection: exact, port and case ignored, trailing dot.
        ("GET", "shop.example.com", "/api/x", &[], Some("prefix")),
        ("GET", "SHOP.Example.COM:8080", "/api/x", &[], Some("prefix")),
        ("GET", "shop.example.com.", "/api/x", &[], Some("prefix")),
        // Wildcards: longest suffix wins; any depth below the suffix; the bare suffix is not
        // covered by its own wildcard.
        ("GET", "www.example.com", "/", &[], Some("wild-all")),
        ("GET", "a.b.example.com", "/", &[], Some("wild-all")),
        ("GET", "x.eu.example.com", "/", &[], Some("deep")),
        ("GET", "example.com", "/", &[], Some("catch-all")),
        // Exact beats wildcard.
        ("GET", "api.example.com", "/v1/users", &[], Some("api-all")),
        ("GET", "api.example.com", "/v2/users", &[], None),
        // Raw IP Host falls to the catch-all (IG-01 uses a listener without one, see below).
        ("GET", "127.0.0.1:8080", "/", &[], Some("catch-all")),
        // First match wins: header route before path routes.
        ("GET", "shop.example.com", "/api/x", &[("x-version", "v2")], Some("canary")),
        ("GET", "shop.example.com", "/api/x", &[("x-version", "v3")], Some("prefix")),
        ("GET", "shop.example.com", "/api/x", &[("cookie", "a=1; user=beta; b=2")], Some("beta-user")),
        // Header matched against every value of a repeated header.
        ("GET", "shop.example.com", "/", &[("x-version", "v1"), ("x-version", "v2")], Some("canary")),
        // Absent-header match (present + invert).
        ("GET", "shop.example.com", "/private/x", &[], Some("no-auth")),
        ("GET", "shop.example.com", "/private/x", &[("authorization", "Bearer t")], None),
        // Method.
        ("POST", "shop.example.com", "/orders", &[], Some("post-only")),
        ("GET", "shop.example.com", "/orders", &[], None),
        // Query: prefix and percent/plus decoding; the query is not part of the path.
        ("GET", "shop.example.com", "/search?q=shoes&lang=en+us", &[], Some("query")),
        ("GET", "shop.example.com", "/search?lang=en%20us&q=shoelaces", &[], Some("query")),
        ("GET", "shop.example.com", "/search?q=hats&lang=en+us", &[], None),
        ("GET", "shop.example.com", "/search?q=shoes", &[], None),
        // Regex is a whole-path match.
        ("GET", "shop.example.com", "/items/42", &[], Some("regex")),
        ("GET", "shop.example.com", "/items/42/reviews", &[], None),
        // Prefix is byte-wise (Envoy semantics).
        ("GET", "shop.example.com", "/apis", &[], Some("prefix")),
        ("GET", "shop.example.com", "/other", &[("user-agent", "curl/7.88")], Some("ua")),
        ("GET", "shop.example.com", "/other", &[("user-agent", "Mozilla")], None),
    ];
    for (method, host, uri, headers, want) in table {
        assert_eq!(
            route_name(&router, method, host, uri, headers).as_deref(),
            *want,
            "{method} {host}{uri} {headers:?}"
        );
    }
}

#[test]
fn listener_sees_only_its_virtual_hosts() {
    let router = Router::new(config(), "only-api");
    assert_eq!(
        route_name(&router, "GET", "api.example.com", "/v1/x", &[]).as_deref(),
        Some("api-all")
    );
    // No catch-all on this listener: raw IP and other hosts are 404.
    assert_eq!(route_name(&router, "GET", "127.0.0.1", "/", &[]), None);
    assert_eq!(
        route_name(&router, "GET", "shop.example.com", "/api", &[]),
        None
    );
    // An unknown listener routes nothing.
    let none = Router::new(config(), "missing");
    assert_eq!(
        route_name(&none, "GET", "shop.example.com", "/api", &[]),
        None
    );
}

#[test]
fn weighted_pick_follows_weights_exactly_over_a_full_cycle() {
    let c = config();
    let Action::Forward(_) = &c.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    let clusters = [
        WeightedCluster {
            name: "a".into(),
            weight: 80,
        },
        WeightedCluster {
            name: "b".into(),
            weight: 20,
        },
        WeightedCluster {
            name: "z".into(),
            weight: 0,
        },
    ];
    let mut counts = std::collections::HashMap::new();
    for roll in 0..1000u64 {
        let c = pick_weighted(&clusters, roll).unwrap();
        *counts.entry(c.name.clone()).or_insert(0) += 1;
    }
    assert_eq!(counts["a"], 800);
    assert_eq!(counts["b"], 200);
    assert!(!counts.contains_key("z"));
    assert!(pick_weighted(&[], 3).is_none());
    assert_eq!(
        pick_weighted(&clusters, u64::MAX).map(|c| &c.name[..]),
        Some("a")
    );
}

#[test]
fn prefix_rewrite() {
    let prefix = RouteMatch {
        path: Some(PathMatch::Prefix("/api/".into())),
        ..Default::default()
    };
    let exact = RouteMatch {
        path: Some(PathMatch::Exact("/old".into())),
        ..Default::default()
    };
    let none = RouteMatch::default();
    let cases = [
        (&prefix, Some("/"), "/api/users", "/users"),
        (&prefix, Some("/v2/"), "/api/users", "/v2/users"),
        (&prefix, None, "/api/users", "/api/users"),
        (&exact, Some("/new"), "/old", "/new"),
        (&none, Some("/app/"), "/x/y", "/app/x/y"),
        (&none, Some("/app"), "/x", "/appx"),
    ];
    for (m, rw, path, want) in cases {
        assert_eq!(rewrite_path(m, rw, path), want, "{rw:?} {path}");
    }
}

#[test]
fn redirect_locations() {
    let r = |scheme: Option<&str>, host: Option<&str>, port: Option<u16>, path: Option<&str>| {
        Redirect {
            scheme: scheme.map(Into::into),
            host: host.map(Into::into),
            port,
            path: path.map(Into::into),
            response_code: 301,
        }
    };
    let cases = [
        // httpsRedirect: scheme change drops the http port.
        (
            r(Some("https"), None, None, None),
            "http",
            "shop.example.com:8080",
            "/a",
            Some("b=1"),
            "https://shop.example.com/a?b=1",
        ),
        (
            r(Some("https"), None, Some(8443), None),
            "http",
            "shop.example.com:8080",
            "/a",
            None,
            "https://shop.example.com:8443/a",
        ),
        (
            r(Some("https"), None, Some(443), None),
            "http",
            "shop.example.com",
            "/",
            None,
            "https://shop.example.com/",
        ),
        (
            r(None, None, None, Some("/new")),
            "http",
            "shop.example.com:8080",
            "/old",
            None,
            "http://shop.example.com:8080/new",
        ),
        (
            r(None, Some("www.example.com"), None, None),
            "https",
            "example.com:8443",
            "/x",
            None,
            "https://www.example.com/x",
        ),
        (
            r(None, None, None, None),
            "http",
            "[::1]:8080",
            "/",
            None,
            "http://[::1]:8080/",
        ),
    ];
    for (red, scheme, host, path, query, want) in cases {
        assert_eq!(redirect_location(&red, scheme, host, path, query), want);
    }
}

#[test]
fn host_helpers() {
    assert_eq!(normalize_host("A.B:80"), "a.b");
    assert_eq!(normalize_host("[::1]:80"), "::1");
    assert_eq!(normalize_host("a.b."), "a.b");
    assert_eq!(split_host_port("a.b:80"), ("a.b", Some(80)));
    assert_eq!(split_host_port("a.b"), ("a.b", None));
    assert_eq!(split_host_port("[::1]:443"), ("[::1]", Some(443)));
    assert_eq!(split_host_port("::1"), ("::1", None));
    assert_eq!(query_value(Some("a&b=2&a=3"), "a").as_deref(), Some(""));
    assert_eq!(query_value(Some("x=%41%zz"), "x").as_deref(), Some("A%zz"));
    assert_eq!(query_value(None, "x"), None);
}
