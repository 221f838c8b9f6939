//! End-to-end tests of the gateway: started in process on loopback, with in-process backends,
//! driven by the real curl binary and a hyper client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "gateway/support.rs"]
mod support;

use std::time::Duration;

use support::*;

fn clusters(list: &[(&str, std::net::SocketAddr)]) -> String {
    let mut out = String::from("clusters:\n");
    for (name, addr) in list {
        out.push_str(&format!("- {{name: {name}, endpoints: [\"{addr}\"]}}\n"));
    }
    out
}

/// IG-01: host and wildcard routing; a raw-IP Host gets 404. HTTP/1.1 and h2c with curl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ig01_host_and_wildcard_routing_with_curl() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP}}
virtualHosts:
- name: shop
  domains: [shop.example.com]
  routes: [{{route: {{cluster: v1}}}}]
- name: wild
  domains: ["*.example.com"]
  routes: [{{route: {{cluster: v2}}}}]
{}"#,
        clusters(&[("v1", v1), ("v2", v2)])
    );
    let gw = start(&yaml).await;
    let port = gw.addr("http").port();
    let url = format!("http://shop.example.com:{port}/hello?x=1");
    let resolve = format!("shop.example.com:{port}:127.0.0.1");
    let r = curl(&["--resolve", &resolve, &url]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.starts_with("v1 GET /hello?x=1 HTTP/1.1"),
        "{}",
        r.body
    );
    assert_eq!(r.http_version, "1.1");

    let r = curl(&[
        "-H",
        "Host: www.example.com",
        &format!("http://127.0.0.1:{port}/"),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("v2 "), "{}", r.body);

    // h2c with prior knowledge reaches the same routes.
    let r = curl(&["--http2-prior-knowledge", "--resolve", &resolve, &url]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.http_version, "2");
    assert!(r.body.starts_with("v1 GET /hello?x=1"), "{}", r.body);

    // A raw IP as Host matches no virtual host.
    let r = curl(&[&format!("http://127.0.0.1:{port}/")]).await;
    assert_eq!(r.status, 404, "{r:?}");
}

/// IG-02: HTTPS with per-SNI certificates (exact, wildcard, default), verified by curl with
/// --cacert; HTTP/2 negotiated by ALPN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ig02_https_sni_certificates_with_curl() {
    let v1 = backend("v1").await;
    let ca_shop = Ca::new("shop CA");
    let ca_wild = Ca::new("wildcard CA");
    let ca_default = Ca::new("default CA");
    let (shop_cert, shop_key) = ca_shop.leaf(&["shop.example.com"]);
    let (wild_cert, wild_key) = ca_wild.leaf(&["*.example.org"]);
    let (def_cert, def_key) = ca_default.leaf(&["fallback.test"]);
    let dir = tempfile::tempdir().unwrap();
    for (name, pem) in [
        ("shop.crt", &shop_cert),
        ("shop.key", &shop_key),
        ("wild.crt", &wild_cert),
        ("wild.key", &wild_key),
        ("def.crt", &def_cert),
        ("def.key", &def_key),
        ("ca-shop.pem", &ca_shop.pem),
        ("ca-wild.pem", &ca_wild.pem),
        ("ca-default.pem", &ca_default.pem),
    ] {
        std::fs::write(dir.path().join(name), pem).unwrap();
    }
    let p = |f: &str| dir.path().join(f).display().to_string();
    let yaml = format!(
        r#"
listeners:
- name: https
  address: "127.0.0.2:0"
  protocol: HTTPS
  tls:
    certificates:
    - {{serverNames: [shop.example.com], certFile: "{}", keyFile: "{}"}}
    - {{serverNames: ["*.example.org"], certFile: "{}", keyFile: "{}"}}
    - {{default: true, certFile: "{}", keyFile: "{}"}}
virtualHosts:
- name: all
  domains: ["*"]
  routes: [{{route: {{cluster: v1}}}}]
{}"#,
        p("shop.crt"),
        p("shop.key"),
        p("wild.crt"),
        p("wild.key"),
        p("def.crt"),
        p("def.key"),
        clusters(&[("v1", v1)])
    );
    let gw = start(&yaml).await;
    let port = gw.addr("https").port();
    let fetch = |host: &'static str, ca: String, extra: &'static [&'static str]| {
        let resolve = format!("{host}:{port}:127.0.0.2");
        let url = format!("https://{host}:{port}/tls");
        async move {
            let mut args = vec!["--resolve", &resolve, "--cacert", &ca];
            args.extend_from_slice(extra);
            args.push(&url);
            curl(&args).await
        }
    };
    let r = fetch("shop.example.com", p("ca-shop.pem"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.http_version, "2", "ALPN h2 by default");
    assert!(r.body.starts_with("v1 GET /tls"), "{}", r.body);
    assert!(r.body.contains("x-forwarded-proto: https"), "{}", r.body);

    let r = fetch("a.example.org", p("ca-wild.pem"), &["--http1.1"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.http_version, "1.1");

    // The shop certificate is not trusted under the wildcard CA: proves which cert was chosen.
    let r = fetch("shop.example.com", p("ca-wild.pem"), &[]).await;
    assert_eq!(
        r.exit, 60,
        "curl: peer certificate cannot be authenticated: {}",
        r.stderr
    );

    // Unknown SNI gets the default certificate (curl then rejects the name mismatch, but the
    // chain verifies against the default CA: error 60 is name, not issuer).
    let r = fetch("unknown.test", p("ca-default.pem"), &["-k"]).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// TM-01 and TM-02: an 80/20 split over 1,000 requests, and a header route ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tm01_weighted_split_and_tm02_header_route() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP}}
virtualHosts:
- name: shop
  domains: [shop.example.com]
  routes:
  - name: canary
    match: {{headers: [{{name: x-version, exact: v2}}]}}
    route: {{cluster: v2}}
  - name: split
    route: {{clusters: [{{name: v1, weight: 80}}, {{name: v2, weight: 20}}]}}
{}"#,
        clusters(&[("v1", v1), ("v2", v2)])
    );
    let gw = start(&yaml).await;
    let addr = gw.addr("http");
    let c = client();
    let mut v1_count = 0;
    for _ in 0..1000 {
        let (status, headers, _) = get(&c, addr, "shop.example.com", "/", &[]).await;
        assert_eq!(status, 200);
        if headers["x-backend"] == "v1" {
            v1_count += 1;
        }
    }
    // Binomial(1000, 0.8) has sd ≈ 12.6: ±60 is beyond 4.5 sd.
    assert!((740..=860).contains(&v1_count), "v1 got {v1_count} of 1000");
    for _ in 0..20 {
        let (status, headers, _) =
            get(&c, addr, "shop.example.com", "/", &[("x-version", "v2")]).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-backend"], "v2");
    }
}

/// TM-04 / EG-01: a route timeout gives 504 `upstream request timeout`; a dead upstream 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tm04_route_timeout_and_unreachable_upstream() {
    let slow = backend("slow").await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP}}
virtualHosts:
- name: shop
  domains: ["*"]
  routes:
  - match: {{path: {{prefix: /dead}}}}
    route: {{cluster: dead}}
  - route: {{cluster: slow, timeout: 200ms}}
{}"#,
        clusters(&[("slow", slow), ("dead", dead)])
    );
    let gw = start(&yaml).await;
    let port = gw.addr("http").port();
    let r = curl(&[&format!("http://127.0.0.1:{port}/delay/3000")]).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body, "upstream request timeout");
    let r = curl(&[&format!("http://127.0.0.1:{port}/delay/10")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The timeout bounds the whole exchange: a body still streaming when it passes is cut off
    // (curl: "transfer closed with outstanding read data remaining").
    let started = std::time::Instant::now();
    let r = curl(&[&format!("http://127.0.0.1:{port}/stall-body")]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.exit, 18, "{r:?}");
    assert!(r.body.starts_with("partial"), "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let r = curl(&[&format!("http://127.0.0.1:{port}/dead")]).await;
    assert_eq!(r.status, 503, "{r:?}");
}

/// Redirects, direct responses, httpsRedirect, rewrites and header edits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_answers_rewrites_and_header_edits() {
    let v1 = backend("v1").await;
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP}}
- {{name: redirect, address: "127.0.0.2:0", protocol: HTTP, httpsRedirect: true}}
virtualHosts:
- name: shop
  domains: [shop.example.com]
  routes:
  - match: {{path: {{exact: /healthz}}}}
    directResponse: {{status: 200, body: "ok"}}
  - match: {{path: {{prefix: /old/}}}}
    redirect: {{path: /new, responseCode: 302}}
  - match: {{path: {{prefix: /api/}}}}
    route: {{cluster: v1, prefixRewrite: /v2/, hostRewrite: internal.shop}}
    requestHeaders: {{set: {{x-from: gateway}}, remove: [x-secret]}}
    responseHeaders: {{add: {{x-served-by: causeway}}, remove: [x-backend]}}
{}"#,
        clusters(&[("v1", v1)])
    );
    let gw = start(&yaml).await;
    let port = gw.addr("http").port();
    let base = format!("http://127.0.0.1:{port}");
    let host = "Host: shop.example.com";
    let r = curl(&["-H", host, &format!("{base}/healthz")]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = curl(&["-H", host, &format!("{base}/old/x?q=1")]).await;
    assert_eq!(r.status, 302);
    assert!(
        r.headers
            .contains("location: http://shop.example.com/new?q=1"),
        "{}",
        r.headers
    );
    let r = curl(&[
        "-H",
        host,
        "-H",
        "x-secret: s",
        &format!("{base}/api/users?id=7"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("v1 GET /v2/users?id=7 "), "{}", r.body);
    assert!(r.body.contains("host: internal.shop\n"), "{}", r.body);
    assert!(r.body.contains("x-from: gateway\n"), "{}", r.body);
    assert!(!r.body.contains("x-secret"), "{}", r.body);
    assert!(r.headers.contains("x-served-by: causeway"), "{}", r.headers);
    assert!(!r.headers.contains("x-backend"), "{}", r.headers);
    // No matching route on a known host: 404.
    let r = curl(&["-H", host, &format!("{base}/nothing")]).await;
    assert_eq!(r.status, 404);

    let rport = gw.addr("redirect").port();
    let r = curl(&[
        "-H",
        "Host: shop.example.com:8080",
        &format!("http://127.0.0.2:{rport}/a?b=1"),
    ])
    .await;
    assert_eq!(r.status, 301);
    assert!(
        r.headers
            .contains("location: https://shop.example.com/a?b=1"),
        "{}",
        r.headers
    );
}

/// Proxy hygiene: forwarding headers, request ids, hop-by-hop stripping, size limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_hygiene_headers_and_limits() {
    let v1 = backend("v1").await;
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP}}
virtualHosts:
- {{name: all, domains: ["*"], routes: [{{route: {{cluster: v1}}}}]}}
{}"#,
        clusters(&[("v1", v1)])
    );
    let limits = causeway_gateway::Limits {
        max_request_body: 1024,
        max_header_bytes: 16 * 1024,
        ..Default::default()
    };
    let gw = start_with(&yaml, limits).await;
    let url = format!("http://127.0.0.1:{}/h", gw.addr("http").port());
    let r = curl(&[
        "-H",
        "x-forwarded-for: 10.0.0.9",
        "-H",
        "Connection: keep-alive, x-drop",
        "-H",
        "x-drop: 1",
        &url,
    ])
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("x-forwarded-for: 10.0.0.9, 127.0.0.1\n"),
        "{}",
        r.body
    );
    assert!(r.body.contains("x-forwarded-proto: http\n"), "{}", r.body);
    assert!(!r.body.contains("x-drop"), "{}", r.body);
    let rid = r
        .body
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("a generated request id");
    assert_eq!(rid.len(), 36, "{rid}");
    // Hop-by-hop response headers of the backend are not passed on.
    assert!(!r.headers.contains("keep-alive: timeout"), "{}", r.headers);
    let r = curl(&["-H", "x-request-id: mine", &url]).await;
    assert!(r.body.contains("x-request-id: mine\n"), "{}", r.body);

    let big = "x".repeat(2000);
    let r = curl(&["--data-binary", &big, &url]).await;
    assert_eq!(r.status, 413, "{r:?}");
    // Without a declared length the limit applies while streaming.
    let r = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &big,
        &url,
    ])
    .await;
    assert_eq!(r.status, 413, "{r:?}");
    let r = curl(&["--data-binary", "small", &url]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("body-bytes: 5\n"), "{}", r.body);

    let huge = format!("x-big: {}", "a".repeat(20 * 1024));
    let r = curl(&["-H", &huge, &url]).await;
    assert_eq!(r.status, 431, "{r:?}");
    let r = curl(&["--http2-prior-knowledge", "-H", &huge, &url]).await;
    assert_eq!(r.status, 431, "HTTP/2 too: {r:?}");
}

/// TLS passthrough: the client completes TLS with the upstream's own certificate; plain TCP
/// forwarding next to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_by_sni_and_tcp() {
    let ca = Ca::new("upstream CA");
    let (cert, key) = ca.leaf(&["db.example.com"]);
    let tls_up = tls_backend("db", &cert, &key, None).await;
    let echo = tcp_echo("tcp").await;
    let yaml = format!(
        r#"
listeners:
- name: pass
  address: "127.0.0.3:0"
  protocol: TLS_PASSTHROUGH
  sniRoutes: [{{serverNames: [db.example.com], cluster: db}}]
- {{name: tcp, address: "127.0.0.4:0", protocol: TCP, cluster: echo}}
{}"#,
        clusters(&[("db", tls_up), ("echo", echo)])
    );
    let gw = start(&yaml).await;
    let port = gw.addr("pass").port();
    let ca_file = gw.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let resolve = format!("db.example.com:{port}:127.0.0.3");
    let r = curl(&[
        "--resolve",
        &resolve,
        "--cacert",
        ca_file.to_str().unwrap(),
        &format!("https://db.example.com:{port}/through"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("db GET /through"), "{}", r.body);
    // openssl s_client sees the upstream's own certificate, verified against the upstream's CA.
    let out = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.3:{port}"),
            "-servername",
            "db.example.com",
            "-CAfile",
            ca_file.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subject=CN = db.example.com"), "{text}");
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    // An SNI without a route is closed.
    let resolve = format!("other.example.com:{port}:127.0.0.3");
    let r = curl(&[
        "-k",
        "--resolve",
        &resolve,
        &format!("https://other.example.com:{port}/"),
    ])
    .await;
    assert_ne!(r.exit, 0, "{r:?}");

    let mut s = tokio::net::TcpStream::connect(gw.addr("tcp"))
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"tcp: ping");
}

/// Origination: plain HTTP in, TLS to the upstream verified against its CA; a wrong CA is a
/// 503; MUTUAL presents a client certificate to a server that requires one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_simple_mutual_and_wrong_ca() {
    captured_logs();
    let server_ca = Ca::new("server CA");
    let other_ca = Ca::new("other CA");
    let client_ca = Ca::new("client CA");
    let (cert, key) = server_ca.leaf(&["api.payments.example"]);
    let simple = tls_backend("simple", &cert, &key, None).await;
    let mutual = tls_backend("mutual", &cert, &key, Some(&client_ca.pem)).await;
    let (ccert, ckey) = client_ca.leaf(&["gateway.client"]);
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP}}
virtualHosts:
- name: egress
  domains: ["*"]
  routes:
  - match: {{path: {{prefix: /simple}}}}
    route: {{cluster: simple}}
  - match: {{path: {{prefix: /wrong-ca}}}}
    route: {{cluster: wrong-ca}}
  - match: {{path: {{prefix: /no-client-cert}}}}
    route: {{cluster: no-client-cert}}
  - route: {{cluster: mutual}}
clusters:
- name: simple
  endpoints: ["{simple}"]
  tls:
    mode: SIMPLE
    sni: api.payments.example
    caPem: |
{server_ca}
- name: wrong-ca
  endpoints: ["{simple}"]
  tls:
    mode: SIMPLE
    sni: api.payments.example
    caPem: |
{other_ca}
- name: no-client-cert
  endpoints: ["{mutual}"]
  tls:
    mode: SIMPLE
    sni: api.payments.example
    caPem: |
{server_ca}
- name: mutual
  endpoints: ["{mutual}"]
  protocol: HTTP2
  tls:
    mode: MUTUAL
    sni: api.payments.example
    caPem: |
{server_ca}
    clientCertPem: |
{ccert}
    clientKeyPem: |
{ckey}
"#,
        server_ca = indent(&server_ca.pem, 6),
        other_ca = indent(&other_ca.pem, 6),
        ccert = indent(&ccert, 6),
        ckey = indent(&ckey, 6),
    );
    let gw = start(&yaml).await;
    let base = format!("http://127.0.0.1:{}", gw.addr("http").port());
    let r = curl(&[
        "-H",
        "Host: api.payments.example",
        &format!("{base}/simple"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.starts_with("simple GET /simple HTTP/1.1"),
        "{}",
        r.body
    );
    let r = curl(&[&format!("{base}/wrong-ca")]).await;
    assert_eq!(r.status, 503, "{r:?}");
    // The operator sees why: a warning naming the certificate verification failure, and the
    // access log line with the upstream-failure flag.
    eventually(
        "the verification failure in the log",
        Duration::from_secs(5),
        || async {
            let logs = captured_logs();
            logs.lines().any(|l| {
                l.contains("upstream request failed")
                    && l.contains("wrong-ca")
                    && l.contains("invalid peer certificate: UnknownIssuer")
            }) && logs.lines().any(|l| {
                l.contains("\"path\":\"/wrong-ca\"") && l.contains("\"response_flags\":\"UF\"")
            })
        },
    )
    .await;
    let r = curl(&[&format!("{base}/no-client-cert")]).await;
    assert_eq!(r.status, 503, "{r:?}");
    let r = curl(&[
        "-H",
        "Host: api.payments.example",
        &format!("{base}/mutual"),
    ])
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    // HTTP/2 upstream negotiated by ALPN.
    assert!(
        r.body.starts_with("mutual GET /mutual HTTP/2.0"),
        "{}",
        r.body
    );
}

/// Admin: readiness, redacted config dump, Prometheus stats, log level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let v1 = backend("v1").await;
    let ca = Ca::new("admin CA");
    let (cert, key) = ca.leaf(&["shop.example.com"]);
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP}}
- name: https
  address: "127.0.0.2:0"
  protocol: HTTPS
  tls:
    certificates:
    - serverNames: [shop.example.com]
      certPem: |
{cert}
      keyPem: |
{key}
virtualHosts:
- {{name: all, domains: ["*"], routes: [{{name: everything, route: {{cluster: v1}}}}]}}
{}"#,
        clusters(&[("v1", v1)]),
        cert = indent(&cert, 8),
        key = indent(&key, 8),
    );
    let gw = start(&yaml).await;
    let admin = format!("http://{}", gw.admin());
    let r = curl(&[&format!("{admin}/ready")]).await;
    assert_eq!((r.status, r.body.trim()), (200, "LIVE"));
    let r = curl(&[&format!("{admin}/config_dump")]).await;
    assert_eq!(r.status, 200);
    let dump: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(dump["listeners"][1]["protocol"], "HTTPS");
    assert!(!r.body.contains("PRIVATE KEY"), "{}", r.body);
    assert!(r.body.contains("[redacted]"));

    let url = format!("http://127.0.0.1:{}/", gw.addr("http").port());
    for _ in 0..3 {
        assert_eq!(curl(&[&url]).await.status, 200);
    }
    let metrics_url = format!("{admin}/stats/prometheus");
    // The request counter is updated when the response body finishes, just after curl sees it.
    eventually("request metrics", Duration::from_secs(5), || {
        let u = metrics_url.clone();
        async move {
            curl(&[&u]).await.body.contains(
                "causeway_gateway_requests_total{listener=\"http\",route=\"everything\",cluster=\"v1\",code=\"200\"} 3",
            )
        }
    })
    .await;
    let r = curl(&[&metrics_url]).await;
    assert!(
        r.body
            .contains("causeway_gateway_request_duration_seconds_bucket{"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("causeway_gateway_downstream_connections_total{listener=\"http\"}"),
        "{}",
        r.body
    );
    // Pool stats: keep-alive means at most one upstream connection per request, usually one.
    let opened: u32 = r
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix("causeway_gateway_upstream_connections_total{cluster=\"v1\"} ")
        })
        .unwrap_or_else(|| panic!("no upstream connection counter in {}", r.body))
        .parse()
        .unwrap();
    assert!((1..=3).contains(&opened), "{opened}");
    assert!(
        r.body
            .contains("causeway_gateway_upstream_connections_active{cluster=\"v1\"} "),
        "{}",
        r.body
    );
    let r = curl(&["-X", "POST", &format!("{admin}/logging?level=debug")]).await;
    assert_eq!(r.status, 501, "no log control wired in this test: {r:?}");
    let r = curl(&[&format!("{admin}/nope")]).await;
    assert_eq!(r.status, 404);
}

/// Hot reload: a changed file swaps routes; an invalid file is refused and the old config keeps
/// serving; a kept listener keeps its socket and its open keep-alive connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_swaps_routes_and_refuses_invalid_config() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let config = |cluster: &str| {
        format!(
            r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP}}
virtualHosts:
- {{name: all, domains: ["*"], routes: [{{route: {{cluster: {cluster}}}}}]}}
{}"#,
            clusters(&[("v1", v1), ("v2", v2)])
        )
    };
    let gw = start(&config("v1")).await;
    let addr = gw.addr("http");
    // One HTTP/1.1 connection, opened before the first reload and used for every request.
    let conn = Conn::open(addr).await;
    assert_eq!(conn.backend().await, "v1");

    std::fs::write(gw.config_path(), config("v2")).unwrap();
    eventually("reload to v2", Duration::from_secs(10), || async {
        conn.backend().await == "v2"
    })
    .await;
    assert_eq!(gw.addr("http"), addr, "the listener kept its socket");

    std::fs::write(
        gw.config_path(),
        "listeners: [{name: http, protocol: HTTPX}]",
    )
    .unwrap();
    let failures = || {
        let m = gw.running.gateway.metrics().encode();
        m.contains("causeway_gateway_config_reload_failures_total 1")
    };
    eventually("refused reload", Duration::from_secs(10), || async {
        failures()
    })
    .await;
    assert_eq!(conn.backend().await, "v2", "old config still serving");

    // SIGHUP-style trigger reloads too.
    std::fs::write(gw.dir.path().join("other"), "").unwrap();
    std::fs::write(gw.config_path(), config("v1")).unwrap();
    gw.running.trigger_reload();
    eventually("reload back to v1", Duration::from_secs(10), || async {
        conn.backend().await == "v1"
    })
    .await;
    let m = gw.running.gateway.metrics().encode();
    assert!(
        m.contains("causeway_gateway_downstream_connections_total{listener=\"http\"} 1\n"),
        "{m}"
    );
}

/// SIGTERM drain: a request in flight finishes; new connections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let v1 = backend("v1").await;
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.7:0", protocol: HTTP}}
virtualHosts:
- {{name: all, domains: ["*"], routes: [{{route: {{cluster: v1}}}}]}}
{}"#,
        clusters(&[("v1", v1)])
    );
    let gw = start(&yaml).await;
    let addr = gw.addr("http");
    let c = client();
    let slow = tokio::spawn({
        let c = c.clone();
        async move { get(&c, addr, "x", "/delay/300", &[]).await }
    });
    let gateway = gw.running.gateway.clone();
    // In flight means forwarded upstream: a connection whose request head has not been read
    // yet is simply closed by a drain.
    eventually("request in flight", Duration::from_secs(5), || {
        let m = gateway.metrics().encode();
        async move { m.contains("causeway_gateway_upstream_requests_active{cluster=\"v1\"} 1\n") }
    })
    .await;
    let admin = format!("http://{}/ready", gw.admin());
    assert_eq!(curl(&[&admin]).await.status, 200);
    gateway.shutdown().await;
    let r = curl(&[&admin]).await;
    assert_eq!((r.status, r.body.trim()), (503, "DRAINING"));
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("v1 GET /delay/300"), "{body}");
    assert_eq!(gateway.open_connections(), 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// h2load over TLS with ALPN h2: every stream succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_over_tls_every_stream_succeeds() {
    let v1 = backend("v1").await;
    let ca = Ca::new("h2load CA");
    let (cert, key) = ca.leaf(&["shop.example.com"]);
    let yaml = format!(
        r#"
listeners:
- name: https
  address: "127.0.0.5:0"
  protocol: HTTPS
  tls:
    certificates:
    - default: true
      certPem: |
{cert}
      keyPem: |
{key}
virtualHosts:
- {{name: all, domains: ["*"], routes: [{{route: {{cluster: v1}}}}]}}
{}"#,
        clusters(&[("v1", v1)]),
        cert = indent(&cert, 8),
        key = indent(&key, 8),
    );
    let gw = start(&yaml).await;
    let url = format!("https://127.0.0.5:{}/h2", gw.addr("https").port());
    let out = tokio::process::Command::new("h2load")
        .args(["-n", "2000", "-c", "4", "-m", "10", &url])
        .output()
        .await
        .expect("h2load is installed (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains(
            "requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"
        ),
        "{text}"
    );
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
}

/// Hot reload under load: wrk keeps 8 connections busy while the file is rewritten 20 times
/// (each rewrite awaited until applied): no socket errors, no status other than 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_wrk_load_loses_nothing() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let config = |w1: u32| {
        format!(
            r#"
listeners:
- {{name: http, address: "127.0.0.6:0", protocol: HTTP}}
virtualHosts:
- name: all
  domains: ["*"]
  routes: [{{route: {{clusters: [{{name: v1, weight: {w1}}}, {{name: v2, weight: {}}}]}}}}]
{}"#,
            100 - w1,
            clusters(&[("v1", v1), ("v2", v2)])
        )
    };
    let gw = start(&config(50)).await;
    let url = format!("http://127.0.0.6:{}/load", gw.addr("http").port());
    let wrk = tokio::process::Command::new("wrk")
        .args(["-t1", "-c8", "-d3s", &url])
        .output();
    let reloads = async {
        for i in 1..=20u32 {
            std::fs::write(gw.config_path(), config(i * 4)).unwrap();
            let want = format!("causeway_gateway_config_reloads_total {i}\n");
            eventually("reload applied", Duration::from_secs(10), || {
                let m = gw.running.gateway.metrics().encode();
                let ok = m.contains(&want);
                async move { ok }
            })
            .await;
        }
    };
    let (out, ()) = tokio::join!(wrk, reloads);
    let out = out.expect("wrk is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("requests in"), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    assert_eq!(gw.running.gateway.config().virtual_hosts.len(), 1);
}

/// TCP connections with no traffic either way are closed after the idle timeout, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = tcp_echo("tcp").await;
    let yaml = format!(
        "listeners:\n- {{name: tcp, address: \"127.0.0.8:0\", protocol: TCP, cluster: echo}}\n{}",
        clusters(&[("echo", echo)])
    );
    let limits = causeway_gateway::Limits {
        stream_idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let gw = start_with(&yaml, limits).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("tcp"))
        .await
        .unwrap();
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"tcp: ping");
    let quiet_since = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the gateway closes an idle connection")
        .unwrap_or(0);
    assert_eq!(n, 0, "EOF");
    assert!(
        quiet_since.elapsed() >= Duration::from_millis(250),
        "closed after {:?}",
        quiet_since.elapsed()
    );
}

/// The seeds' scenarios with the demo app, with their exact strings: IG-01 (host and wildcard,
/// raw IP → 404), TM-02 (header route), TM-04 (route timeout → 504), 5xx passed through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_scenarios_with_the_demo_app() {
    let v1 = demo_backend("v1").await;
    let v2 = demo_backend("v2").await;
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.9:0", protocol: HTTP}}
virtualHosts:
- name: go-multiroute
  domains: [go-multiroute.default.svc.cluster.local, "*.foobar.com"]
  routes:
  - match: {{headers: [{{name: test-version, exact: v2}}]}}
    route: {{cluster: v2}}
  - match: {{path: {{exact: /test_timeout}}}}
    route: {{cluster: v2, timeout: 500ms}}
  - route: {{cluster: v1}}
{}"#,
        clusters(&[("v1", v1), ("v2", v2)])
    );
    let gw = start(&yaml).await;
    let base = format!("http://127.0.0.9:{}", gw.addr("http").port());
    let r = curl(&[
        "-H",
        "Host: go-multiroute.default.svc.cluster.local",
        &format!("{base}/route1"),
    ])
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        "[v1] Hello, You are at /route1, Got: route1's content"
    );
    let r = curl(&["-H", "Host: x.foobar.com", &format!("{base}/route1")]).await;
    assert_eq!(
        r.body,
        "[v1] Hello, You are at /route1, Got: route1's content"
    );
    let r = curl(&[&format!("{base}/route1")]).await;
    assert_eq!(r.status, 404, "raw IP host");
    for _ in 0..5 {
        let r = curl(&[
            "-H",
            "Host: x.foobar.com",
            "-H",
            "test-version: v2",
            &format!("{base}/route2"),
        ])
        .await;
        assert_eq!(
            r.body,
            "[v2] Hello, You are at /route2, Got: route2's content"
        );
    }
    let r = curl(&["-H", "Host: x.foobar.com", &format!("{base}/test_timeout")]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (504, "upstream request timeout")
    );
    let r = curl(&[
        "-H",
        "Host: x.foobar.com",
        &format!("{base}/test_circuit_breaker"),
    ])
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body, "[v1] test_circuit_breaker returned 500\n");
    let r = curl(&["-H", "Host: x.foobar.com", &format!("{base}/get_ip")]).await;
    assert_eq!(r.body, format!("[v1] Hello, Your ip is {}", v1.ip()));
}

/// Endpoints given as DNS names resolve (hickory, with the system's hosts file and resolv.conf).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_name_endpoints() {
    let v1 = backend("v1").await;
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.10:0", protocol: HTTP}}
virtualHosts:
- {{name: all, domains: ["*"], routes: [{{route: {{cluster: named}}}}]}}
clusters:
- {{name: named, endpoints: ["localhost:{}"]}}
"#,
        v1.port()
    );
    let gw = start(&yaml).await;
    let r = curl(&[&format!("http://127.0.0.10:{}/dns", gw.addr("http").port())]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("v1 GET /dns"), "{}", r.body);
}

/// Slowloris: a client that never finishes its request head is disconnected after the
/// header-read timeout, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let v1 = backend("v1").await;
    let yaml = format!(
        r#"
listeners:
- {{name: http, address: "127.0.0.11:0", protocol: HTTP}}
virtualHosts:
- {{name: all, domains: ["*"], routes: [{{route: {{cluster: v1}}}}]}}
{}"#,
        clusters(&[("v1", v1)])
    );
    let limits = causeway_gateway::Limits {
        header_read_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let gw = start_with(&yaml, limits).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr("http"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("the gateway closes a connection whose head never completes");
    // Either a clean close or a reset; never an answer from the backend.
    let _ = read;
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "cut off after {:?}",
        started.elapsed()
    );
}
