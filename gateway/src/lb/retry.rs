//! Retries: which failures are retried, the retry budget, and the `x-envoy-*` overrides.
//!
//! Conditions use Envoy's names. `5xx` retries any 5xx answer and every local failure
//! (connect failure, reset, per-try timeout); `gateway-error` the same but only 502/503/504;
//! `connect-failure` failed connects; `reset` and `refused-stream` resets before an answer;
//! `retriable-status-codes` the status codes listed (a number in `retryOn`, Istio's way, both
//! lists the code and turns the condition on).
//!
//! **Budget.** Retries in flight to a cluster may be at most `percent` (default 20%) of its
//! requests in flight, or `minRetryConcurrency` (default 3), whichever is more — and at most
//! `maxRetries`. A retry over budget is not made: the client gets the failed attempt's answer.
//! This is what keeps a failing cluster from being hit by (1 + attempts) × the traffic.

use serde::{Serialize, Serializer};

/// A set of retry conditions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u8);

impl RetryOn {
    /// Any 5xx answer and local failures.
    pub const FIVE_XX: RetryOn = RetryOn(1);
    /// 502, 503, 504 and local failures.
    pub const GATEWAY_ERROR: RetryOn = RetryOn(2);
    /// Connect failures.
    pub const CONNECT_FAILURE: RetryOn = RetryOn(4);
    /// Resets (and refused streams) before an answer.
    pub const RESET: RetryOn = RetryOn(8);
    /// The listed status codes.
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(16);

    const NAMES: [(&'static str, RetryOn); 6] = [
        ("5xx", RetryOn::FIVE_XX),
        ("gateway-error", RetryOn::GATEWAY_ERROR),
        ("connect-failure", RetryOn::CONNECT_FAILURE),
        ("reset", RetryOn::RESET),
        ("refused-stream", RetryOn::RESET),
        ("retriable-status-codes", RetryOn::RETRIABLE_STATUS_CODES),
    ];

    /// Whether every condition of `other` is in `self`.
    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    /// Parses condition names and status codes; gRPC conditions (`cancelled`, `unavailable`,
    /// …) are accepted and ignored, as they only apply to gRPC status trailers. The error is
    /// the unknown entry.
    pub fn parse<'a>(list: &[&'a str]) -> Result<(RetryOn, Vec<u16>), &'a str> {
        let mut on = RetryOn::default();
        let mut codes = Vec::new();
        for item in list {
            if let Some((_, c)) = RetryOn::NAMES.iter().find(|(n, _)| n == item) {
                on.0 |= c.0;
            } else if let Ok(code) = item.parse::<u16>()
                && (100..=599).contains(&code)
            {
                codes.push(code);
                on.0 |= RetryOn::RETRIABLE_STATUS_CODES.0;
            } else if matches!(
                *item,
                "cancelled"
                    | "deadline-exceeded"
                    | "internal"
                    | "resource-exhausted"
                    | "unavailable"
            ) {
            } else {
                return Err(item);
            }
        }
        Ok((on, codes))
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = RetryOn::NAMES
            .iter()
            .filter(|(n, c)| *n != "refused-stream" && self.contains(*c))
            .map(|(n, _)| *n)
            .collect();
        s.collect_seq(names)
    }
}

/// How an upstream attempt failed (or answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// It answered with this status.
    Status(u16),
    /// The connection could not be made.
    ConnectFailure,
    /// The connection or stream was reset before the answer.
    Reset,
    /// The per-try timeout passed.
    Timeout,
}

/// Whether `attempt` is retried under `on` (with `codes` for retriable-status-codes).
pub fn retriable(on: RetryOn, codes: &[u16], attempt: Attempt) -> bool {
    match attempt {
        Attempt::Status(s) => {
            (on.contains(RetryOn::FIVE_XX) && (500..600).contains(&s))
                || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(s, 502..=504))
                || (on.contains(RetryOn::RETRIABLE_STATUS_CODES) && codes.contains(&s))
        }
        Attempt::ConnectFailure => {
            on.contains(RetryOn::FIVE_XX)
                || on.contains(RetryOn::GATEWAY_ERROR)
                || on.contains(RetryOn::CONNECT_FAILURE)
        }
        Attempt::Reset => {
            on.contains(RetryOn::FIVE_XX)
                || on.contains(RetryOn::GATEWAY_ERROR)
                || on.contains(RetryOn::RESET)
        }
        Attempt::Timeout => on.contains(RetryOn::FIVE_XX) || on.contains(RetryOn::GATEWAY_ERROR),
    }
}

/// Whether one more retry fits: `active_retries` in flight (not counting this one) against
/// the budget of `percent` of `active_requests`, at least `min_concurrency`, at most
/// `max_retries`.
pub fn budget_allows(
    active_requests: u64,
    active_retries: u64,
    percent: f64,
    min_concurrency: u32,
    max_retries: u32,
) -> bool {
    let budget = ((active_requests as f64) * percent / 100.0) as u64;
    let limit = budget
        .max(u64::from(min_concurrency))
        .min(u64::from(max_retries));
    active_retries < limit
}

/// Most retries a trusted `x-envoy-max-retries` may ask for: a bound even for trusted callers.
pub const MAX_OVERRIDE_RETRIES: u32 = 10;

/// The value of `x-envoy-max-retries` (bounded) or `x-envoy-upstream-rq-timeout-ms`; `None`
/// when malformed (the header is then ignored).
pub fn parse_override(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_with_codes_and_grpc_names() {
        let (on, codes) = RetryOn::parse(&["gateway-error", "connect-failure", "503"]).unwrap();
        assert!(on.contains(RetryOn::GATEWAY_ERROR));
        assert!(on.contains(RetryOn::CONNECT_FAILURE));
        assert!(on.contains(RetryOn::RETRIABLE_STATUS_CODES));
        assert!(!on.contains(RetryOn::FIVE_XX));
        assert_eq!(codes, [503]);
        assert!(RetryOn::parse(&["unavailable", "cancelled"]).is_ok());
        assert_eq!(RetryOn::parse(&["5xx", "sometimes"]), Err("sometimes"));
        assert_eq!(
            serde_json::to_string(&on).unwrap(),
            r#"["gateway-error","connect-failure","retriable-status-codes"]"#
        );
    }

    #[test]
    fn what_each_condition_retries() {
        let five = RetryOn::FIVE_XX;
        assert!(retriable(five, &[], Attempt::Status(500)));
        assert!(retriable(five, &[], Attempt::Timeout));
        assert!(retriable(five, &[], Attempt::ConnectFailure));
        assert!(!retriable(five, &[], Attempt::Status(404)));
        let gw = RetryOn::GATEWAY_ERROR;
        assert!(!retriable(gw, &[], Attempt::Status(500)));
        assert!(retriable(gw, &[], Attempt::Status(503)));
        let cf = RetryOn::CONNECT_FAILURE;
        assert!(retriable(cf, &[], Attempt::ConnectFailure));
        assert!(!retriable(cf, &[], Attempt::Reset));
        assert!(!retriable(cf, &[], Attempt::Status(503)));
        let codes = RetryOn::RETRIABLE_STATUS_CODES;
        assert!(retriable(codes, &[409], Attempt::Status(409)));
        assert!(!retriable(codes, &[409], Attempt::Status(500)));
        assert!(retriable(RetryOn::RESET, &[], Attempt::Reset));
    }

    #[test]
    fn budget_is_a_share_of_active_requests_with_a_floor() {
        // 100 requests in flight, 20%: 20 retries.
        assert!(budget_allows(100, 19, 20.0, 3, u32::MAX));
        assert!(!budget_allows(100, 20, 20.0, 3, u32::MAX));
        // Few requests: the floor of 3.
        assert!(budget_allows(1, 2, 20.0, 3, u32::MAX));
        assert!(!budget_allows(1, 3, 20.0, 3, u32::MAX));
        // maxRetries caps both.
        assert!(!budget_allows(1000, 5, 20.0, 3, 5));
    }

    #[test]
    fn override_values() {
        assert_eq!(parse_override(b"3"), Some(3));
        assert_eq!(parse_override(b" 250 "), Some(250));
        assert_eq!(parse_override(b"-1"), None);
        assert_eq!(parse_override(b"lots"), None);
    }
}
