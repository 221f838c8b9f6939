//! Load balancing end to end (issue 4, seed scenarios of seed-inventory-B Part H): locality
//! priorities and `distribute`, outlier detection (TM-05), round robin (TM-03), circuit
//! breaking (TM-06), retries and their budget and trusted overrides, fault injection,
//! mirroring, consistent hashing and active health checks. The gateway and its backends run in
//! process on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "gateway/support.rs"]
#[allow(dead_code)]
mod support;

#[path = "lb/backend.rs"]
mod backend;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backend::Ctl;
use support::*;

const LISTENER: &str = "- {name: http, address: \"127.0.0.1:0\", protocol: HTTP}";

/// Sends `n` GETs with `concurrency` clients; counts answers by backend (200s) and by status
/// (others).
async fn spread(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    headers: &[(&str, &str)],
) -> (BTreeMap<String, usize>, BTreeMap<u16, usize>) {
    let c = client();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let c = c.clone();
        let share = n / concurrency + usize::from(w < n % concurrency);
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tasks.push(tokio::spawn(async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let mut out = Vec::new();
            for _ in 0..share {
                let (status, hd, _) = get(&c, addr, "app.example.com", "/", &h).await;
                let b = hd
                    .get("x-backend")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                out.push((status, b));
            }
            out
        }));
    }
    let mut ok = BTreeMap::new();
    let mut bad = BTreeMap::new();
    for t in tasks {
        for (status, b) in t.await.unwrap() {
            if status == 200 {
                *ok.entry(b).or_insert(0) += 1;
            } else {
                *bad.entry(status).or_insert(0) += 1;
            }
        }
    }
    (ok, bad)
}

async fn metrics(gw: &Gw) -> String {
    let r = curl(&[&format!("http://{}/stats/prometheus", gw.admin())]).await;
    r.body
}

fn metric(text: &str, name: &str, cluster: &str) -> f64 {
    let prefix = format!("causeway_gateway_{name}{{cluster=\"{cluster}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in metrics"))
}

fn vhost(route_extra: &str) -> String {
    format!(
        "virtualHosts:\n- name: app\n  domains: [app.example.com]\n  routes:\n  - route: {{cluster: app{route_extra}}}\n"
    )
}

/// The locality scenario: backends in us-west-a, us-west-b and us-east-a, the gateway in
/// us-west-a, Istio `distribute: us-west/* → 99%, us-east/* → 1%` as the controller renders it
/// (federation-controller/src/translate/locality.rs: one priority, weights ×1000 split over
/// the us-west localities by endpoint count). 10,000 requests → 1% ± 0.5% cross-region; every
/// us-west backend stopped → all traffic in us-east within the outlier interval + 1 s and no
/// client error after the first detection window (retries on); backends back → 99/1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_distribute_failover_and_recovery() {
    let west_a = Ctl::start("us-west-a").await;
    let west_b = Ctl::start("us-west-b").await;
    let east = Ctl::start("us-east-a").await;
    let interval = Duration::from_secs(1);
    let yaml = format!(
        r#"
listeners:
{LISTENER}
{vhost}
clusters:
- name: app
  connectTimeout: 1s
  localityEndpoints:
  - locality: {{region: us-west, zone: us-west-a}}
    weight: 49500
    endpoints: ["{a}"]
  - locality: {{region: us-west, zone: us-west-b}}
    weight: 49500
    endpoints: ["{b}"]
  - locality: {{region: us-east, zone: us-east-a}}
    weight: 1000
    endpoints: ["{e}"]
  outlierDetection: {{consecutiveGatewayErrors: 2, consecutive5xxErrors: 0, interval: 1s,
                     baseEjectionTime: 3s, maxEjectionPercent: 100}}
"#,
        vhost = vhost(", retries: {attempts: 3, retryOn: [connect-failure, gateway-error, reset]}"),
        a = west_a.addr,
        b = west_b.addr,
        e = east.addr,
    );
    let gw = start(&yaml).await;
    let addr = gw.addr("http");

    let cross = |ok: &BTreeMap<String, usize>| {
        let total: usize = ok.values().sum();
        ok.get("us-east-a").copied().unwrap_or(0) as f64 / total as f64
    };
    let (ok, bad) = spread(addr, 10_000, 16, &[]).await;
    assert!(bad.is_empty(), "{bad:?}");
    let share = cross(&ok);
    assert!(
        (0.005..=0.015).contains(&share),
        "cross-region share {share}: {ok:?}"
    );
    // The two us-west localities share the 99% evenly.
    let (wa, wb) = (ok["us-west-a"] as f64, ok["us-west-b"] as f64);
    assert!((wa / wb - 1.0).abs() < 0.1, "{ok:?}");

    // Every us-west backend stops.
    west_a.stop().await;
    west_b.stop().await;
    let stopped = tokio::time::Instant::now();
    let c = client();
    let mut errors_after_window = Vec::new();
    let mut all_east_since: Option<tokio::time::Instant> = None;
    let mut consecutive_east = 0;
    while consecutive_east < 500 {
        let now = tokio::time::Instant::now();
        assert!(
            now < stopped + interval + Duration::from_secs(1) || consecutive_east > 0,
            "traffic still not all in us-east {:?} after the stop",
            now - stopped
        );
        let (status, h, _) = get(&c, addr, "app.example.com", "/", &[]).await;
        let b = h.get("x-backend").map(|v| v.to_str().unwrap().to_owned());
        if status != 200 && now > stopped + interval {
            errors_after_window.push(status);
        }
        if status == 200 && b.as_deref() == Some("us-east-a") {
            consecutive_east += 1;
            all_east_since.get_or_insert(now);
        } else {
            consecutive_east = 0;
            all_east_since = None;
        }
    }
    let moved = all_east_since.unwrap() - stopped;
    assert!(
        moved <= interval + Duration::from_secs(1),
        "all traffic in us-east only after {moved:?}"
    );
    assert!(errors_after_window.is_empty(), "{errors_after_window:?}");
    let m = metrics(&gw).await;
    assert_eq!(metric(&m, "upstream_hosts_ejected", "app"), 2.0);
    assert_eq!(metric(&m, "upstream_hosts_healthy", "app"), 1.0);
    assert!(metric(&m, "upstream_ejections_total", "app") >= 2.0);

    // They come back: once their ejection is over, 99/1 again.
    west_a.restart().await;
    west_b.restart().await;
    eventually(
        "us-west back in service",
        Duration::from_secs(15),
        || async {
            let (ok, _) = spread(addr, 200, 4, &[]).await;
            ok.get("us-west-a").is_some_and(|n| *n > 50)
                && ok.get("us-west-b").is_some_and(|n| *n > 50)
        },
    )
    .await;
    let (ok, bad) = spread(addr, 10_000, 16, &[]).await;
    assert!(bad.is_empty(), "{bad:?}");
    let share = cross(&ok);
    assert!(
        (0.005..=0.015).contains(&share),
        "cross-region share {share}: {ok:?}"
    );
}

/// Priority failover with the overprovisioning factor: priority 0 with two hosts, one of them
/// ejected → 50% healthy × 1.4 = 70% stays, 30% spills to priority 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_spill_follows_overprovisioning() {
    let p0a = Ctl::start("p0-a").await;
    let p0b = Ctl::start("p0-b").await;
    let p1 = Ctl::start("p1").await;
    p0b.status.store(500, Ordering::Relaxed);
    let yaml = format!(
        r#"
listeners:
{LISTENER}
{vhost}
clusters:
- name: app
  localityEndpoints:
  - locality: {{region: us-west, zone: us-west-a}}
    endpoints: ["{a}", "{b}"]
  - locality: {{region: us-east}}
    priority: 1
    endpoints: ["{c}"]
  outlierDetection: {{consecutive5xxErrors: 1, interval: 10s, baseEjectionTime: 60s,
                     maxEjectionPercent: 100}}
"#,
        vhost = vhost(""),
        a = p0a.addr,
        b = p0b.addr,
        c = p1.addr,
    );
    let gw = start(&yaml).await;
    let addr = gw.addr("http");
    // Round robin reaches p0-b within two requests; its 500 ejects it.
    let (_, bad) = spread(addr, 2, 1, &[]).await;
    assert_eq!(bad.get(&500), Some(&1));
    let (ok, bad) = spread(addr, 4000, 8, &[]).await;
    assert!(bad.is_empty(), "{bad:?}");
    let spill = ok.get("p1").copied().unwrap_or(0) as f64 / 4000.0;
    assert!((0.26..=0.34).contains(&spill), "{ok:?}");
    assert!(!ok.contains_key("p0-b"));
}

/// TM-03: round robin alternates evenly over the members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tm03_round_robin_spreads_evenly() {
    let b: Vec<Arc<Ctl>> = vec![
        Ctl::start("a").await,
        Ctl::start("b").await,
        Ctl::start("c").await,
    ];
    let yaml = format!(
        "listeners:\n{LISTENER}\n{}clusters:\n- {{name: app, endpoints: [\"{}\", \"{}\", \"{}\"]}}\n",
        vhost(""),
        b[0].addr,
        b[1].addr,
        b[2].addr
    );
    let gw = start(&yaml).await;
    let (ok, bad) = spread(gw.addr("http"), 300, 1, &[]).await;
    assert!(bad.is_empty());
    assert_eq!(
        ok.values().copied().collect::<Vec<_>>(),
        [100, 100, 100],
        "{ok:?}"
    );
}

/// TM-05: three 500s eject the only host → `no healthy upstream` (503) for about
/// baseEjectionTime → it returns → three more 500s eject it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tm05_outlier_ejection_and_recovery() {
    let b = Ctl::start("only").await;
    b.status.store(500, Ordering::Relaxed);
    let base = Duration::from_secs(2);
    let yaml = format!(
        r#"
listeners:
{LISTENER}
{vhost}
clusters:
- name: app
  endpoints: ["{a}"]
  outlierDetection: {{consecutive5xxErrors: 3, interval: 200ms, baseEjectionTime: 2s}}
"#,
        vhost = vhost(""),
        a = b.addr,
    );
    let gw = start(&yaml).await;
    let addr = gw.addr("http");
    let c = client();
    for _ in 0..3 {
        let (s, _, _) = get(&c, addr, "app.example.com", "/", &[]).await;
        assert_eq!(s, 500);
    }
    let ejected = tokio::time::Instant::now();
    let (s, _, body) = get(&c, addr, "app.example.com", "/", &[]).await;
    assert_eq!((s, body.as_str()), (503, "no healthy upstream"));
    let hits = b.hits.load(Ordering::Relaxed);
    let returned = loop {
        let (s, _, body) = get(&c, addr, "app.example.com", "/", &[]).await;
        if s == 500 {
            break ejected.elapsed();
        }
        assert_eq!((s, body.as_str()), (503, "no healthy upstream"));
        assert!(
            ejected.elapsed() < base * 2 + Duration::from_secs(2),
            "never returned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Requests during the ejection never reached the backend; it returned after about
    // baseEjectionTime (at the first 200 ms interval tick after it).
    assert_eq!(b.hits.load(Ordering::Relaxed), hits + 1);
    assert!(
        returned >= base - Duration::from_millis(300),
        "{returned:?}"
    );
    // That request was the first of the next three 500s.
    for _ in 0..2 {
        let (s, _, _) = get(&c, addr, "app.example.com", "/", &[]).await;
        assert_eq!(s, 500);
    }
    let (s, _, body) = get(&c, addr, "app.example.com", "/", &[]).await;
    assert_eq!(
        (s, body.as_str()),
        (503, "no healthy upstream"),
        "ejected again"
    );
    let m = metrics(&gw).await;
    assert_eq!(metric(&m, "upstream_ejections_total", "app"), 2.0);
    assert_eq!(metric(&m, "upstream_hosts_ejected", "app"), 1.0);
}

/// TM-06: maxConnections 5 with 8 concurrent slow requests → 5 succeed, 3 overflow at once
/// with `503` and `x-envoy-overloaded` (no pending queue); with a pending queue and a 1.5 s route
/// timeout, the 3 extra wait and get `504 upstream request timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tm06_connection_limit_overflows() {
    let b = Ctl::start("slow").await;
    b.delay_ms.store(1000, Ordering::Relaxed);
    let yaml = |pending: u32, timeout: &str| {
        format!(
            r#"
listeners:
{LISTENER}
{vhost}
clusters:
- name: app
  endpoints: ["{a}"]
  connectionPool: {{maxConnections: 5, http1MaxPendingRequests: {pending}}}
"#,
            vhost = vhost(&format!(", timeout: {timeout}")),
            a = b.addr,
        )
    };
    let run = |addr: SocketAddr| async move {
        let c = client();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                get(&c, addr, "app.example.com", "/", &[]).await
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    };
    let gw = start(&yaml(0, "5s")).await;
    let out = run(gw.addr("http")).await;
    let ok = out.iter().filter(|r| r.0 == 200).count();
    let overflow: Vec<_> = out.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok, overflow.len()), (5, 3), "{out:?}");
    for (_, h, body) in &overflow {
        assert_eq!(h["x-envoy-overloaded"], "true");
        assert!(body.contains("overflow"), "{body}");
    }
    let m = metrics(&gw).await;
    assert_eq!(metric(&m, "upstream_overflow_total", "app"), 3.0);
    drop(gw);

    let gw = start(&yaml(10, "1500ms")).await;
    let out = run(gw.addr("http")).await;
    let ok = out.iter().filter(|r| r.0 == 200).count();
    let timed_out: Vec<_> = out.iter().filter(|r| r.0 == 504).collect();
    assert_eq!((ok, timed_out.len()), (5, 3), "{out:?}");
    assert!(timed_out.iter().all(|r| r.2 == "upstream request timeout"));
}

/// VS retries: a backend failing the first attempt → the client sees 200; without retries it
/// sees the failure. `x-envoy-max-retries` is honoured from trusted sources only and never
/// forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_failed_first_attempt() {
    let b = Ctl::start("flaky").await;
    let yaml = |trusted: &str| {
        format!(
            r#"
listeners:
- {{name: http, address: "127.0.0.1:0", protocol: HTTP{trusted}}}
virtualHosts:
- name: app
  domains: [app.example.com]
  routes:
  - match: {{path: {{prefix: /none}}}}
    route: {{cluster: app}}
  - route: {{cluster: app, retries: {{attempts: 2, perTryTimeout: 1s, retryOn: [5xx]}}}}
clusters:
- name: app
  endpoints: ["{a}"]
"#,
            a = b.addr
        )
    };
    let gw = start(&yaml("")).await;
    let addr = gw.addr("http");
    let c = client();
    b.fail_next.store(1, Ordering::Relaxed);
    let (s, _, body) = get(&c, addr, "app.example.com", "/", &[]).await;
    assert_eq!((s, body.as_str()), (200, "flaky\n"));
    assert_eq!(b.hits.load(Ordering::Relaxed), 2);
    // Two failures are within the two retries; three are not.
    b.fail_next.store(3, Ordering::Relaxed);
    let (s, _, _) = get(&c, addr, "app.example.com", "/", &[]).await;
    assert_eq!(s, 503);
    b.fail_next.store(0, Ordering::Relaxed);
    // No retry policy on /none: the first failure is the answer.
    b.fail_next.store(1, Ordering::Relaxed);
    let (s, _, _) = get(&c, addr, "app.example.com", "/none", &[]).await;
    assert_eq!(s, 503);
    // An untrusted client cannot turn retries off (nor up), and the header goes no further.
    b.fail_next.store(1, Ordering::Relaxed);
    let (s, _, _) = get(
        &c,
        addr,
        "app.example.com",
        "/",
        &[("x-envoy-max-retries", "0")],
    )
    .await;
    assert_eq!(s, 200);
    let m = metrics(&gw).await;
    assert_eq!(metric(&m, "upstream_retries_total", "app"), 4.0);
    drop(gw);

    // From a trusted source the override applies.
    let gw = start(&yaml(", trustedSources: [127.0.0.1/32]")).await;
    let addr = gw.addr("http");
    b.fail_next.store(1, Ordering::Relaxed);
    let (s, _, _) = get(
        &c,
        addr,
        "app.example.com",
        "/",
        &[("x-envoy-max-retries", "0")],
    )
    .await;
    assert_eq!(s, 503);
    b.fail_next.store(1, Ordering::Relaxed);
    let (s, _, _) = get(
        &c,
        addr,
        "app.example.com",
        "/none",
        &[("x-envoy-max-retries", "1")],
    )
    .await;
    assert_eq!(
        s, 200,
        "a trusted caller may ask for retries on a route without them"
    );
    b.delay_ms.store(500, Ordering::Relaxed);
    let (s, _, body) = get(
        &c,
        addr,
        "app.example.com",
        "/none",
        &[("x-envoy-upstream-rq-timeout-ms", "100")],
    )
    .await;
    assert_eq!((s, body.as_str()), (504, "upstream request timeout"));
    b.delay_ms.store(0, Ordering::Relaxed);
    let hosts = b.hosts.lock().unwrap().clone();
    assert!(!hosts.is_empty());
}

/// The retry budget: with every attempt failing and many requests in flight, retries stay
/// within max(20% of active requests, 3) — the backend sees far fewer than 3× the requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_retries() {
    let b = Ctl::start("down").await;
    b.status.store(503, Ordering::Relaxed);
    b.delay_ms.store(100, Ordering::Relaxed);
    let yaml = format!(
        "listeners:\n{LISTENER}\n{}clusters:\n- name: app\n  endpoints: [\"{}\"]\n  connectionPool: {{retryBudget: {{percent: 10, minRetryConcurrency: 1}}}}\n",
        vhost(", retries: {attempts: 2, retryOn: [5xx]}"),
        b.addr
    );
    let gw = start(&yaml).await;
    let (_, bad) = spread(gw.addr("http"), 200, 40, &[]).await;
    assert_eq!(bad.get(&503), Some(&200));
    let hits = b.hits.load(Ordering::Relaxed);
    // Unbounded: 600 attempts. The budget allows about 10% of the 40 in flight.
    assert!(hits < 400, "{hits} attempts for 200 requests");
    let m = metrics(&gw).await;
    assert!(metric(&m, "upstream_retries_overflow_total", "app") > 0.0);
}

/// Fault abort at 80% over 1,000 requests lands within tolerance; a 100% delay is observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_and_delay() {
    let b = Ctl::start("app").await;
    let yaml = format!(
        r#"
listeners:
{LISTENER}
virtualHosts:
- name: app
  domains: [app.example.com]
  routes:
  - match: {{path: {{prefix: /slow}}}}
    route: {{cluster: app, fault: {{delay: {{fixedDelay: 400ms}}}}}}
  - route: {{cluster: app, fault: {{abort: {{httpStatus: 503, percentage: 80}}}}}}
clusters:
- {{name: app, endpoints: ["{a}"]}}
"#,
        a = b.addr
    );
    let gw = start(&yaml).await;
    let addr = gw.addr("http");
    let (ok, bad) = spread(addr, 1000, 8, &[]).await;
    let aborted = bad.get(&503).copied().unwrap_or(0);
    assert_eq!(aborted + ok.values().sum::<usize>(), 1000);
    // Binomial(1000, 0.8): sd 12.6; ±60 is beyond 4.5 sd.
    assert!((740..=860).contains(&aborted), "{aborted} aborted");
    assert_eq!(b.hits.load(Ordering::Relaxed), 1000 - aborted);
    let c = client();
    let (s, _, body) = get(&c, addr, "app.example.com", "/", &[]).await;
    assert!(s == 200 || body == "fault filter abort", "{s} {body}");
    let t = tokio::time::Instant::now();
    let (s, _, _) = get(&c, addr, "app.example.com", "/slow", &[]).await;
    assert_eq!(s, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

/// Mirroring: the mirror cluster receives a copy of each request with the `-shadow` Host; the
/// client only sees the primary's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_copies_with_shadow_host() {
    let primary = Ctl::start("primary").await;
    let shadow = Ctl::start("shadow").await;
    shadow.status.store(500, Ordering::Relaxed);
    let yaml = format!(
        "listeners:\n{LISTENER}\n{}clusters:\n- {{name: app, endpoints: [\"{}\"]}}\n- {{name: shadow, endpoints: [\"{}\"]}}\n",
        vhost(", mirror: {cluster: shadow, percentage: 100}"),
        primary.addr,
        shadow.addr
    );
    let gw = start(&yaml).await;
    let (ok, bad) = spread(gw.addr("http"), 20, 2, &[]).await;
    assert!(
        bad.is_empty(),
        "the mirror's 500s never reach the client: {bad:?}"
    );
    assert_eq!(ok.get("primary"), Some(&20));
    eventually("20 mirrored requests", Duration::from_secs(5), || async {
        shadow.hits.load(Ordering::Relaxed) == 20
    })
    .await;
    let hosts = shadow.hosts.lock().unwrap().clone();
    assert!(
        hosts.iter().all(|h| h == "app.example.com-shadow"),
        "{hosts:?}"
    );
    let hosts = primary.hosts.lock().unwrap().clone();
    assert!(hosts.iter().all(|h| h == "app.example.com"), "{hosts:?}");
}

/// Consistent hashing: a cookie is issued with its TTL when absent and keeps the client on one
/// host over 100 requests; a header and the source IP hash too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_cookie_header_and_source_ip() {
    let mut backends = Vec::new();
    for i in 0..4 {
        backends.push(Ctl::start(&format!("b{i}")).await);
    }
    let eps: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    let eps = eps.join(", ");
    let yaml = format!(
        r#"
listeners:
{LISTENER}
virtualHosts:
- name: app
  domains: [app.example.com]
  routes:
  - match: {{path: {{prefix: /header}}}}
    route: {{cluster: by-header}}
  - match: {{path: {{prefix: /ip}}}}
    route: {{cluster: by-ip}}
  - route: {{cluster: app}}
clusters:
- name: app
  endpoints: [{eps}]
  consistentHash: {{httpCookie: {{name: sticky, ttl: 3600s}}}}
- name: by-header
  endpoints: [{eps}]
  consistentHash: {{httpHeaderName: x-user}}
- name: by-ip
  endpoints: [{eps}]
  consistentHash: {{useSourceIp: true}}
"#
    );
    let gw = start(&yaml).await;
    let addr = gw.addr("http");
    let c = client();
    let mut cookies_seen = std::collections::BTreeSet::new();
    let mut backends_seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let (s, h, _) = get(&c, addr, "app.example.com", "/", &[]).await;
        assert_eq!(s, 200);
        let set = h["set-cookie"].to_str().unwrap().to_owned();
        assert!(set.starts_with("sticky="), "{set}");
        assert!(set.contains("Max-Age=3600"), "{set}");
        let value = set.split(';').next().unwrap().to_owned();
        let first = h["x-backend"].to_str().unwrap().to_owned();
        for _ in 0..100 {
            let (s, h, _) = get(&c, addr, "app.example.com", "/", &[("cookie", &value)]).await;
            assert_eq!(s, 200);
            assert_eq!(h["x-backend"], first.as_str(), "cookie {value} moved");
            assert!(
                h.get("set-cookie").is_none(),
                "no new cookie when one is sent"
            );
        }
        cookies_seen.insert(value);
        backends_seen.insert(first);
    }
    assert_eq!(cookies_seen.len(), 8);
    assert!(
        backends_seen.len() > 1,
        "fresh cookies spread: {backends_seen:?}"
    );

    let mut users = std::collections::BTreeSet::new();
    for u in 0..20 {
        let user = format!("user-{u}");
        let (_, h, _) = get(&c, addr, "app.example.com", "/header", &[("x-user", &user)]).await;
        let first = h["x-backend"].to_str().unwrap().to_owned();
        for _ in 0..10 {
            let (_, h, _) = get(&c, addr, "app.example.com", "/header", &[("x-user", &user)]).await;
            assert_eq!(h["x-backend"], first.as_str());
        }
        users.insert(first);
    }
    assert!(users.len() > 1, "{users:?}");
    let (ok, _) = {
        let (_, h, _) = get(&c, addr, "app.example.com", "/ip", &[]).await;
        let first = h["x-backend"].to_str().unwrap().to_owned();
        let mut same = 0;
        for _ in 0..50 {
            let (_, h, _) = get(&c, addr, "app.example.com", "/ip", &[]).await;
            same += usize::from(h["x-backend"] == first.as_str());
        }
        (same, first)
    };
    assert_eq!(ok, 50);
}

/// Active health checks: a 503 from the health path takes the host out at once; when the
/// path passes again it returns; a stopped host fails its TCP check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_remove_and_restore_hosts() {
    let a = Ctl::start("a").await;
    let b = Ctl::start("b").await;
    let yaml = format!(
        r#"
listeners:
{LISTENER}
virtualHosts:
- name: app
  domains: [app.example.com]
  routes:
  - match: {{path: {{prefix: /tcp}}}}
    route: {{cluster: tcp}}
  - route: {{cluster: app}}
clusters:
- name: app
  endpoints: ["{a}", "{b}"]
  healthCheck: {{path: /healthz, interval: 200ms, timeout: 1s, healthyThreshold: 2, unhealthyThreshold: 3}}
- name: tcp
  endpoints: ["{a}", "{b}"]
  healthCheck: {{interval: 200ms, timeout: 1s, unhealthyThreshold: 1}}
"#,
        a = a.addr,
        b = b.addr
    );
    let gw = start(&yaml).await;
    let addr = gw.addr("http");
    eventually("health checks running", Duration::from_secs(5), || async {
        b.health_checks.load(Ordering::Relaxed) > 0
    })
    .await;
    b.health_status.store(503, Ordering::Relaxed);
    eventually("b out after one 503", Duration::from_secs(2), || async {
        let (ok, _) = spread(addr, 20, 1, &[]).await;
        ok.get("a") == Some(&20)
    })
    .await;
    let m = metrics(&gw).await;
    assert_eq!(metric(&m, "upstream_hosts_healthy", "app"), 1.0);
    assert!(metric(&m, "upstream_health_check_failures_total", "app") >= 1.0);
    b.health_status.store(200, Ordering::Relaxed);
    eventually(
        "b back after two passes",
        Duration::from_secs(3),
        || async {
            let (ok, _) = spread(addr, 20, 1, &[]).await;
            ok.get("b").is_some_and(|n| *n > 0)
        },
    )
    .await;

    // TCP check: stop b, and the tcp cluster stops sending it requests without any failing.
    b.stop().await;
    eventually("tcp check sees b down", Duration::from_secs(3), || async {
        let m = metrics(&gw).await;
        metric(&m, "upstream_hosts_healthy", "tcp") == 1.0
    })
    .await;
    let c = client();
    for _ in 0..20 {
        let (s, h, _) = get(&c, addr, "app.example.com", "/tcp", &[]).await;
        assert_eq!((s, h["x-backend"].to_str().unwrap()), (200, "a"));
    }
}
