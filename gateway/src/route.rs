//! HTTP routing as a pure function: (configuration, request head) → decision.
//!
//! A [`Router`] is built once per configuration and listener, so the per-request work is a hash
//! lookup for the virtual host and a linear first-match scan of its routes — no allocation unless
//! a query string has to be decoded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;

use crate::config::{
    Config, HeaderMatch, PathMatch, Redirect, Route, RouteMatch, ValueMatch, VirtualHost,
    WeightedCluster,
};

/// The parts of a request routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// Method, as sent.
    pub method: &'a str,
    /// Host header or :authority, possibly with a port.
    pub host: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// What routing decided.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// No virtual host for the host, or no route matched: 404.
    NotFound,
    /// This route of this virtual host applies.
    Matched {
        /// The virtual host chosen by Host.
        vhost: &'a VirtualHost,
        /// The first route that matched.
        route: &'a Route,
    },
}

/// Virtual-host lookup for one listener: exact domains, then the longest `*.` suffix, then `*`.
#[derive(Debug, Clone)]
pub struct Router {
    config: Arc<Config>,
    exact: HashMap<String, usize>,
    /// (suffix including the leading dot, vhost index), longest suffix first.
    suffixes: Vec<(String, usize)>,
    catch_all: Option<usize>,
}

impl Router {
    /// The router of listener `listener` (an HTTP or HTTPS listener) of `config`.
    pub fn new(config: Arc<Config>, listener: &str) -> Router {
        let names: Vec<String> = config
            .listener(listener)
            .map(|l| l.kind.virtual_hosts().to_vec())
            .unwrap_or_default();
        let mut exact = HashMap::new();
        let mut suffixes = Vec::new();
        let mut catch_all = None;
        for name in &names {
            let Some(i) = config.virtual_hosts.iter().position(|v| &v.name == name) else {
                continue;
            };
            for d in &config.virtual_hosts[i].domains {
                let d = d.strip_suffix('.').unwrap_or(d);
                if d == "*" {
                    catch_all.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    suffixes.push((suffix.to_owned(), i));
                } else {
                    exact.entry(d.to_owned()).or_insert(i);
                }
            }
        }
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Router {
            config,
            exact,
            suffixes,
            catch_all,
        }
    }

    /// The configuration this router was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The virtual host for a Host value (port and trailing dot ignored, case-insensitive).
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let host = normalize_host(host);
        let i = self.exact.get(host.as_ref()).copied().or_else(|| {
            self.suffixes
                .iter()
                // `*.example.com` needs at least one label before the suffix.
                .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                .map(|(_, i)| *i)
                .or(self.catch_all)
        })?;
        self.config.virtual_hosts.get(i)
    }

    /// Routes a request.
    pub fn route(&self, head: &RequestHead<'_>) -> Decision<'_> {
        let Some(vhost) = self.virtual_host(head.host) else {
            return Decision::NotFound;
        };
        match vhost.routes.iter().find(|r| matches(&r.matcher, head)) {
            Some(route) => Decision::Matched { vhost, route },
            None => Decision::NotFound,
        }
    }
}

/// Lower case, without port and trailing dot; borrows when nothing changes.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let no_port = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content only.
        rest.split_once(']').map(|(h, _)| h).unwrap_or(rest)
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    let trimmed = no_port.strip_suffix('.').unwrap_or(no_port);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Splits `host:port` (and `[v6]:port`); the port is `None` when absent or not a number.
pub fn split_host_port(host: &str) -> (&str, Option<u16>) {
    if host.starts_with('[') {
        return match host.rsplit_once("]:") {
            Some((h, p)) => (&host[..h.len() + 1], p.parse().ok()),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (host, None),
        },
        _ => (host, None),
    }
}

/// Whether every condition of `m` holds for `head`.
pub fn matches(m: &RouteMatch, head: &RequestHead<'_>) -> bool {
    if let Some(method) = &m.method
        && method != head.method
    {
        return false;
    }
    if let Some(p) = &m.path {
        let ok = match p {
            PathMatch::Exact(e) => head.path == e,
            PathMatch::Prefix(pr) => head.path.starts_with(pr.as_str()),
            PathMatch::Regex(re) => re.is_match(head.path),
        };
        if !ok {
            return false;
        }
    }
    if !m.headers.iter().all(|h| header_matches(h, head.headers)) {
        return false;
    }
    m.query
        .iter()
        .all(|q| query_value(head.query, &q.name).is_some_and(|v| value_matches(&q.value, &v)))
}

fn header_matches(h: &HeaderMatch, headers: &HeaderMap) -> bool {
    let mut values = headers.get_all(h.name.as_str()).iter().peekable();
    let found = match &h.value {
        ValueMatch::Present => values.peek().is_some(),
        v => values.any(|hv| hv.to_str().is_ok_and(|s| value_matches(v, s))),
    };
    found != h.invert
}

fn value_matches(m: &ValueMatch, s: &str) -> bool {
    match m {
        ValueMatch::Exact(e) => s == e,
        ValueMatch::Prefix(p) => s.starts_with(p.as_str()),
        ValueMatch::Regex(r) => r.is_match(s),
        ValueMatch::Present => true,
    }
}

/// The percent-decoded value of the first query parameter called `name` (`a` in `?a` is "").
pub fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Picks a weighted destination; `roll` is any random number (it is reduced modulo the total).
pub fn pick_weighted(clusters: &[WeightedCluster], roll: u64) -> Option<&WeightedCluster> {
    let total: u64 = clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return clusters.first();
    }
    let mut point = roll % total;
    for c in clusters {
        let w = u64::from(c.weight);
        if point < w {
            return Some(c);
        }
        point -= w;
    }
    clusters.last()
}

/// The path sent upstream after a `prefixRewrite`: the matched prefix (or exact path) replaced.
pub fn rewrite_path<'p>(m: &RouteMatch, rewrite: Option<&str>, path: &'p str) -> Cow<'p, str> {
    let Some(rw) = rewrite else {
        return Cow::Borrowed(path);
    };
    let rest = match &m.path {
        Some(PathMatch::Prefix(p)) => path.strip_prefix(p.as_str()).unwrap_or(path),
        Some(PathMatch::Exact(_)) => "",
        // No path condition matches everything, i.e. the prefix "/".
        None => path.strip_prefix('/').unwrap_or(path),
        Some(PathMatch::Regex(_)) => return Cow::Borrowed(path),
    };
    // Avoid "//" when both the rewrite ends and the rest starts with a slash.
    if rw.ends_with('/') && rest.starts_with('/') {
        Cow::Owned(format!("{rw}{}", &rest[1..]))
    } else {
        Cow::Owned(format!("{rw}{rest}"))
    }
}

/// The Location of a redirect for a request with this scheme, Host, path and query.
pub fn redirect_location(
    r: &Redirect,
    scheme: &str,
    host: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (bare_host, old_port) = split_host_port(host);
    let new_host = r.host.as_deref().unwrap_or(bare_host);
    // Without an explicit port, a scheme or host change drops the old port (it belonged to the
    // old origin); otherwise the request's port is kept.
    let port = match r.port {
        Some(p) => Some(p),
        None if r.scheme.is_none() && r.host.is_none() => old_port,
        None => None,
    };
    let port = port.filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
    let path = r.path.as_deref().unwrap_or(path);
    let mut out = format!("{scheme}://{new_host}");
    if let Some(p) = port {
        out.push(':');
        out.push_str(&p.to_string());
    }
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests;
