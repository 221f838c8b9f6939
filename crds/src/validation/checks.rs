//! Reusable field checks. Each takes the field's path and the report, so callers stay one line
//! per field.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;

use super::{FieldPath, Report};
use crate::duration::parse_duration;

/// Whether a wildcard is allowed where a hostname is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wildcard {
    /// Only exact names.
    Forbidden,
    /// `*.example.com` (a leading `*.` label) is allowed; so is a bare `*` when `bare` is set.
    Allowed {
        /// Whether the single `*` (every host) is accepted.
        bare: bool,
    },
}

/// Checks a DNS hostname (RFC 1123), optionally with a leading `*.` wildcard label.
///
/// Returns whether the name passed, so callers can skip checks that depend on it.
pub fn hostname(path: &FieldPath, host: &str, wildcard: Wildcard, report: &mut Report) -> bool {
    if host.is_empty() {
        report.error(
            path,
            "hostname is empty: write a DNS name such as shop.example.com",
        );
        return false;
    }
    if host == "*" {
        return match wildcard {
            Wildcard::Allowed { bare: true } => true,
            Wildcard::Allowed { bare: false } => {
                report.error(
                    path,
                    "\"*\" (every host) is not allowed here: name the hosts, or use a wildcard \
                     such as *.example.com",
                );
                false
            }
            Wildcard::Forbidden => {
                report.error(
                    path,
                    "wildcards are not allowed here: write an exact hostname",
                );
                false
            }
        };
    }
    let (name, is_wild) = match host.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (host, false),
    };
    if is_wild && wildcard == Wildcard::Forbidden {
        report.error(
            path,
            format!("wildcard {host:?} is not allowed here: write an exact hostname"),
        );
        return false;
    }
    if name.contains('*') {
        report.error(
            path,
            format!(
                "{host:?}: a wildcard may only be the whole leftmost label (\"*.example.com\"); \
                 partial or inner wildcards are not supported"
            ),
        );
        return false;
    }
    if host.len() > 253 {
        report.error(
            path,
            format!(
                "{host:?} is {} characters long; hostnames are at most 253",
                host.len()
            ),
        );
        return false;
    }
    if host.contains(':') {
        report.error(
            path,
            format!("{host:?}: write the hostname without a port; ports belong in the listener"),
        );
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            let hint = if label.bytes().any(|b| b.is_ascii_uppercase()) {
                " (use lower case)"
            } else {
                ""
            };
            report.error(
                path,
                format!(
                    "{host:?} is not a valid hostname{hint}: each dot-separated label must be \
                     1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
                ),
            );
            return false;
        }
    }
    true
}

/// Checks a TCP/UDP port number (1-65535).
pub fn port(path: &FieldPath, port: u32, report: &mut Report) -> bool {
    if port == 0 || port > 65535 {
        report.error(path, format!("port {port} is out of range: use 1-65535"));
        return false;
    }
    true
}

/// Checks a Go-style duration string; `min_positive` refuses zero.
pub fn duration(path: &FieldPath, value: &str, min_positive: bool, report: &mut Report) -> bool {
    match parse_duration(value) {
        Ok(d) if min_positive && d.is_zero() => {
            report.error(path, format!("{value:?} must be greater than zero"));
            false
        }
        Ok(_) => true,
        Err(e) => {
            report.error(path, format!("{value:?}: {e}"));
            false
        }
    }
}

/// Checks a regular expression in the RE2 dialect Envoy uses (Rust's `regex` is RE2-compatible
/// for everything RE2 accepts; look-around and back-references fail in both).
pub fn regex(path: &FieldPath, pattern: &str, report: &mut Report) -> bool {
    match Regex::new(pattern) {
        Ok(_) => true,
        Err(e) => {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("invalid").trim().to_owned();
            report.error(
                path,
                format!(
                    "regex {pattern:?} does not compile ({last}); use RE2 syntax (no look-around \
                     or back-references)"
                ),
            );
            false
        }
    }
}

/// Checks a percentage in 0..=100.
pub fn percent(path: &FieldPath, value: f64, report: &mut Report) -> bool {
    if !(0.0..=100.0).contains(&value) || value.is_nan() {
        report.error(path, format!("{value} is not a percentage: use 0-100"));
        return false;
    }
    true
}

fn dns1123_label_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap_or_else(|_| unreachable!())
    })
}

fn dns1123_subdomain_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .unwrap_or_else(|_| unreachable!())
    })
}

fn label_value_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
            .unwrap_or_else(|_| unreachable!())
    })
}

/// Checks a Kubernetes object name (DNS-1123 subdomain, at most 253 characters).
pub fn object_name(path: &FieldPath, name: &str, report: &mut Report) -> bool {
    if name.is_empty() {
        report.error(path, "name is required");
        return false;
    }
    if name.len() > 253 || !dns1123_subdomain_re().is_match(name) {
        report.error(
            path,
            format!(
                "{name:?} is not a valid name: use lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit (at most 253 characters)"
            ),
        );
        return false;
    }
    true
}

/// Checks a DNS-1123 label: namespace names, cluster names, listener and subset names.
pub fn dns_label(path: &FieldPath, name: &str, report: &mut Report) -> bool {
    if name.is_empty() {
        report.error(path, "a name is required here");
        return false;
    }
    if name.len() > 63 || !dns1123_label_re().is_match(name) {
        report.error(
            path,
            format!(
                "{name:?} is not a valid name: use 1-63 lower-case letters, digits and '-', \
                 starting and ending with a letter or digit"
            ),
        );
        return false;
    }
    true
}

/// Checks Kubernetes label keys and values.
pub fn labels(path: &FieldPath, labels: &BTreeMap<String, String>, report: &mut Report) {
    for (k, v) in labels {
        let key_path = path.key(k);
        let (prefix, name) = match k.rsplit_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        let name_ok = !name.is_empty() && name.len() <= 63 && label_value_re().is_match(name);
        let prefix_ok = prefix.is_none_or(|p| p.len() <= 253 && dns1123_subdomain_re().is_match(p));
        if !name_ok || !prefix_ok {
            report.error(
                &key_path,
                format!(
                    "label key {k:?} is invalid: an optional DNS prefix and '/', then 1-63 \
                     characters of letters, digits, '-', '_' and '.', starting and ending with a \
                     letter or digit"
                ),
            );
        }
        if v.len() > 63 || !label_value_re().is_match(v) {
            report.error(
                &key_path,
                format!(
                    "label value {v:?} is invalid: at most 63 characters of letters, digits, '-', \
                     '_' and '.', starting and ending with a letter or digit"
                ),
            );
        }
    }
}

/// Checks an IPv4 or IPv6 address literal.
pub fn ip_address(path: &FieldPath, addr: &str, report: &mut Report) -> bool {
    if addr.parse::<std::net::IpAddr>().is_err() {
        report.error(
            path,
            format!("{addr:?} is not an IP address: write e.g. 10.0.0.1 or fd00::1"),
        );
        return false;
    }
    true
}

/// Checks that names in a list are unique, reporting each repeat at its own index.
pub fn unique<'a>(
    path: &FieldPath,
    items: impl IntoIterator<Item = (usize, &'a str)>,
    what: &str,
    report: &mut Report,
) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in items {
        if let Some(first) = seen.get(name) {
            report.error(
                &path.index(i),
                format!("duplicate {what} {name:?} (also at index {first}): each must be unique"),
            );
        } else {
            seen.insert(name, i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&FieldPath, &mut Report) -> bool) -> (bool, Vec<String>) {
        let mut r = Report::new();
        let ok = f(&FieldPath::root("spec").field("x"), &mut r);
        (ok, r.findings().iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn hostnames() {
        let any = Wildcard::Allowed { bare: true };
        for good in [
            "shop.example.com",
            "a",
            "x-1.y",
            "*.example.com",
            "*",
            "example.com.",
        ] {
            assert!(check(|p, r| hostname(p, good, any, r)).0, "{good}");
        }
        for bad in [
            "",
            "Shop.example.com",
            "-a.com",
            "a..b",
            "foo*.example.com",
            "a.*.com",
            "shop.example.com:443",
            "under_score.com",
        ] {
            let (ok, errs) = check(|p, r| hostname(p, bad, any, r));
            assert!(!ok, "{bad}");
            assert!(errs[0].starts_with("spec.x: "), "{errs:?}");
        }
        assert!(!check(|p, r| hostname(p, "*.a.com", Wildcard::Forbidden, r)).0);
        assert!(!check(|p, r| hostname(p, "*", Wildcard::Allowed { bare: false }, r)).0);
        let long = format!("{}.com", "a".repeat(64));
        assert!(!check(|p, r| hostname(p, &long, any, r)).0);
    }

    #[test]
    fn ports_regexes_durations() {
        assert!(check(|p, r| port(p, 443, r)).0);
        let (ok, errs) = check(|p, r| port(p, 70000, r));
        assert!(!ok);
        assert_eq!(errs, ["spec.x: port 70000 is out of range: use 1-65535"]);
        assert!(!check(|p, r| port(p, 0, r)).0);
        assert!(check(|p, r| regex(p, "^/api/v[0-9]+/.*", r)).0);
        let (ok, errs) = check(|p, r| regex(p, "(unclosed", r));
        assert!(!ok);
        assert!(errs[0].contains("does not compile"), "{errs:?}");
        assert!(!check(|p, r| regex(p, "(?=look)", r)).0);
        assert!(check(|p, r| duration(p, "1m", true, r)).0);
        assert!(!check(|p, r| duration(p, "0s", true, r)).0);
        let (_, errs) = check(|p, r| duration(p, "5 seconds", false, r));
        assert!(errs[0].contains("\"5 seconds\""), "{errs:?}");
    }

    #[test]
    fn names_and_labels() {
        assert!(check(|p, r| dns_label(p, "c1", r)).0);
        assert!(!check(|p, r| dns_label(p, "C1", r)).0);
        assert!(check(|p, r| object_name(p, "shop.v1", r)).0);
        let mut r = Report::new();
        let l: BTreeMap<String, String> = [
            ("app".to_owned(), "shop".to_owned()),
            ("topology.istio.io/cluster".to_owned(), "c1".to_owned()),
            ("bad key!".to_owned(), "x".to_owned()),
            ("ok".to_owned(), "-bad".to_owned()),
        ]
        .into();
        labels(&FieldPath::root("metadata").field("labels"), &l, &mut r);
        let paths: Vec<_> = r.findings().iter().map(|f| f.path.to_string()).collect();
        assert_eq!(paths, ["metadata.labels[bad key!]", "metadata.labels[ok]"]);
    }

    #[test]
    fn unique_reports_repeats() {
        let mut r = Report::new();
        unique(
            &FieldPath::root("spec").field("listeners"),
            [(0, "http"), (1, "https"), (2, "http")],
            "listener name",
            &mut r,
        );
        assert_eq!(r.findings().len(), 1);
        assert_eq!(r.findings()[0].path.as_str(), "spec.listeners[2]");
    }
}
