//! The canonical form of a document: the one [`from_envoy`](super::from_envoy) returns.

use causeway_crds::duration::parse_duration;

use super::{defaults, format_duration, to::scopable, to::single_dns_host};
use crate::{HeaderEdits, LbPolicy, Protocol, ProxyConfig, RouteMatch, UpstreamProtocol};

/// Rewrites a document into the form [`from_envoy`](super::from_envoy)`(`[`to_envoy`](super::to_envoy)`(doc))`
/// returns. Both forms mean the same to the gateway; Envoy just keeps one of them:
///
/// - listeners, clusters and secrets sorted by name (xDS does not order resources);
/// - durations in canonical Go syntax (`1m30s`, `250ms`); health checks get Envoy's required
///   interval, timeout and thresholds ([`defaults`]);
/// - defaults left out: `lb: round_robin`, `protocol: HTTP1`, `responseCode: 301`, a path
///   condition `prefix: /`, empty `match`, header edits and route names;
/// - weighted destinations and nothing else have explicit weights (unset = 1);
/// - virtual hosts in the order listeners first list them, those no listener uses dropped, and a
///   listener listing every one of them lists none (`virtualHosts` unset = all); a listener that
///   only redirects to HTTPS lists none; a listener routed by scopes (every domain of its virtual
///   hosts exact, see [`to_envoy`](super::to_envoy)) lists them sorted by name, once each (Envoy
///   selects its virtual host by the exact host, so their order means nothing);
/// - fields that do not apply to a listener's protocol dropped; on HTTPS listeners the
///   certificate that is only `default` comes last;
/// - a cluster whose `localityEndpoints` is one group without locality, priority or weight
///   lists them as `endpoints`;
/// - upstream TLS `sni` set to the cluster's DNS host when it has exactly one (as the gateway
///   sends and verifies it).
pub fn canonical(doc: &ProxyConfig) -> ProxyConfig {
    let mut doc = doc.clone();
    let dur = |s: &mut Option<String>| {
        if let Some(d) = s.as_deref().and_then(|d| parse_duration(d).ok()) {
            *s = Some(format_duration(d));
        }
    };

    doc.listeners.sort_by(|a, b| a.name.cmp(&b.name));
    doc.clusters.sort_by(|a, b| a.name.cmp(&b.name));
    doc.secrets.sort_by(|a, b| a.name.cmp(&b.name));

    // Listeners, and the order of virtual hosts as listeners reference them.
    let mut order: Vec<String> = Vec::new();
    let all: Vec<String> = doc.virtual_hosts.iter().map(|v| v.name.clone()).collect();
    for l in &mut doc.listeners {
        let http = matches!(l.protocol, Protocol::Http | Protocol::Https);
        if l.protocol != Protocol::Http {
            l.https_redirect = false;
        }
        if l.protocol != Protocol::Https {
            l.tls = None;
        }
        if l.protocol != Protocol::TlsPassthrough {
            l.sni_routes.clear();
        }
        if l.protocol != Protocol::Tcp {
            l.cluster = None;
        }
        if !http || l.https_redirect {
            l.virtual_hosts = None;
        } else {
            let mut names = l.virtual_hosts.clone().unwrap_or_else(|| all.clone());
            let listed: Option<Vec<_>> = names
                .iter()
                .map(|n| doc.virtual_hosts.iter().find(|v| &v.name == n))
                .collect();
            if listed.is_some_and(scopable) {
                names.sort();
                names.dedup();
            }
            for n in &names {
                if !order.contains(n) {
                    order.push(n.clone());
                }
            }
            l.virtual_hosts = Some(names);
        }
        if let Some(tls) = &mut l.tls {
            // One default_filter_chain: the last default certificate wins. A certificate
            // without names exists only as that chain, which comes after the named ones.
            let last_default = tls.certificates.iter().rposition(|c| c.default);
            let mut named = Vec::new();
            let mut tail = None;
            for (i, mut c) in std::mem::take(&mut tls.certificates)
                .into_iter()
                .enumerate()
            {
                c.default = Some(i) == last_default;
                if !c.server_names.is_empty() {
                    named.push(c);
                } else if c.default {
                    tail = Some(c);
                }
            }
            named.extend(tail);
            tls.certificates = named;
        }
    }
    let mut vhosts = Vec::new();
    for n in &order {
        if let Some(v) = doc.virtual_hosts.iter().find(|v| &v.name == n) {
            vhosts.push(v.clone());
        }
    }
    doc.virtual_hosts = vhosts;
    for l in &mut doc.listeners {
        if l.virtual_hosts.as_ref() == Some(&order) {
            l.virtual_hosts = None;
        }
    }

    for v in &mut doc.virtual_hosts {
        for r in &mut v.routes {
            if r.name.as_deref() == Some("") {
                r.name = None;
            }
            if let Some(m) = &mut r.matcher {
                if m.path.as_ref().is_some_and(|p| {
                    p.prefix.as_deref() == Some("/") && p.exact.is_none() && p.regex.is_none()
                }) {
                    m.path = None;
                }
                if *m == RouteMatch::default() {
                    r.matcher = None;
                }
            }
            if let Some(a) = &mut r.route {
                for w in &mut a.clusters {
                    w.weight = Some(w.weight.unwrap_or(1));
                }
                if a.prefix_rewrite.as_deref() == Some("") {
                    a.prefix_rewrite = None;
                }
                dur(&mut a.timeout);
                if let Some(rt) = &mut a.retries {
                    dur(&mut rt.per_try_timeout);
                }
            }
            if let Some(rd) = &mut r.redirect {
                if rd.response_code == Some(301) {
                    rd.response_code = None;
                }
                if rd.port == Some(0) {
                    rd.port = None;
                }
            }
            for e in [&mut r.request_headers, &mut r.response_headers] {
                if e.as_ref() == Some(&HeaderEdits::default()) {
                    *e = None;
                }
            }
        }
    }

    for c in &mut doc.clusters {
        if c.lb == Some(LbPolicy::RoundRobin) {
            c.lb = None;
        }
        if c.protocol == Some(UpstreamProtocol::Http1) {
            c.protocol = None;
        }
        dur(&mut c.connect_timeout);
        if let [g] = c.locality_endpoints.as_slice()
            && g.locality == crate::Locality::default()
            && g.priority == 0
            && g.weight.is_none()
            && c.endpoints.is_empty()
        {
            c.endpoints = c.locality_endpoints.remove(0).endpoints;
        }
        if c.tls.as_ref().is_some_and(|t| t.sni.is_none()) {
            let sni = single_dns_host(c);
            if let Some(t) = &mut c.tls {
                t.sni = sni;
            }
        }
        if let Some(o) = &mut c.outlier_detection {
            dur(&mut o.interval);
            dur(&mut o.base_ejection_time);
        }
        if let Some(h) = &mut c.health_check {
            dur(&mut h.interval);
            dur(&mut h.timeout);
            h.interval
                .get_or_insert_with(|| format_duration(defaults::HEALTH_CHECK_INTERVAL));
            h.timeout
                .get_or_insert_with(|| format_duration(defaults::HEALTH_CHECK_TIMEOUT));
            h.healthy_threshold
                .get_or_insert(defaults::HEALTHY_THRESHOLD);
            h.unhealthy_threshold
                .get_or_insert(defaults::UNHEALTHY_THRESHOLD);
        }
    }
    doc
}
