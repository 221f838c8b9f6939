//! Durations as written in resources: Go's `time.ParseDuration` syntax, which is what Istio and
//! Kubernetes users already write (`500ms`, `1.5s`, `1m30s`, `2h`).

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string was empty.
    #[error("empty duration: write a number with a unit, e.g. 500ms, 2s or 1m30s")]
    Empty,
    /// The string started with a sign; negative durations mean nothing in a resource.
    #[error("durations cannot be negative or signed: write e.g. 2s")]
    Signed,
    /// A number without a unit (`30`), which Go refuses too.
    #[error("missing unit after {0:?}: add one of ns, us, ms, s, m, h (e.g. 30s)")]
    MissingUnit(String),
    /// An unknown unit.
    #[error("unknown unit {0:?}: use one of ns, us, ms, s, m, h")]
    UnknownUnit(String),
    /// Something that is not a number where a number belongs.
    #[error("{0:?} is not a duration: write numbers with units, e.g. 500ms, 2s or 1m30s")]
    Malformed(String),
    /// Larger than anything sensible (over ~290 years).
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a Go-style duration (`"1h2m3.5s"`, `"250ms"`, `"0"`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let original = s;
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') || s.starts_with('+') {
        return Err(DurationError::Signed);
    }
    // Go accepts a bare "0" as zero.
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(DurationError::Malformed(original.to_owned()));
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            "" => return Err(DurationError::MissingUnit(num.to_owned())),
            other => return Err(DurationError::UnknownUnit(other.to_owned())),
        };
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part
                .parse()
                .map_err(|_| DurationError::Overflow(original.to_owned()))?
        };
        let mut nanos = int
            .checked_mul(nanos_per_unit)
            .ok_or_else(|| DurationError::Overflow(original.to_owned()))?;
        // Fractions finer than a nanosecond are dropped, as Go does.
        let mut scale = nanos_per_unit;
        for digit in frac_part.bytes().take(18) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * scale;
        }
        total = total
            .checked_add(nanos)
            .ok_or_else(|| DurationError::Overflow(original.to_owned()))?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(original.to_owned()))?;
    // The remainder is below 1e9, so it always fits.
    let sub = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let cases = [
            ("0", Duration::ZERO),
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("1m30s", Duration::from_secs(90)),
            ("2h", Duration::from_secs(7200)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("0.001s", Duration::from_millis(1)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn refuses_bad_durations() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("-1s"), Err(DurationError::Signed));
        assert_eq!(
            parse_duration("30"),
            Err(DurationError::MissingUnit("30".into()))
        );
        assert_eq!(
            parse_duration("3sec"),
            Err(DurationError::UnknownUnit("sec".into()))
        );
        assert_eq!(
            parse_duration("1d"),
            Err(DurationError::UnknownUnit("d".into()))
        );
        assert!(matches!(
            parse_duration("1..2s"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999h"),
            Err(DurationError::Overflow(_))
        ));
    }
}
