//! Durations as operators write them on the command line: `60s`, `10m`, `24h`, `7d`, or a
//! sum such as `1h30m`, and back again for reports.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing was given.
    #[error("empty duration (expected e.g. 60s, 10m, 24h)")]
    Empty,
    /// A part is not `<number><unit>`.
    #[error("{0:?} is not a duration (expected a number and a unit: s, m, h or d, e.g. 10m or 1h30m)")]
    Malformed(String),
    /// The unit is not one of `s`, `m`, `h`, `d`.
    #[error("unknown unit {unit:?} in {input:?} (expected s, m, h or d)")]
    Unit {
        /// The unit found.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// The total is zero.
    #[error("duration {0:?} is zero")]
    Zero(String),
    /// The total does not fit.
    #[error("duration {0:?} is too long")]
    Overflow(String),
}

/// Parses `60s`, `10m`, `24h`, `7d` or a sum of them (`1h30m`). A positive total is required.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(input.to_owned());
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(malformed());
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        if unit_len == 0 {
            return Err(malformed());
        }
        let (unit, after) = after.split_at(unit_len);
        let scale: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            other => return Err(DurationError::Unit { unit: other.to_owned(), input: input.to_owned() }),
        };
        let overflow = || DurationError::Overflow(input.to_owned());
        let n: u64 = number.parse().map_err(|_| overflow())?;
        total = n.checked_mul(scale).and_then(|v| total.checked_add(v)).ok_or_else(overflow)?;
        rest = after;
    }
    if total == 0 {
        return Err(DurationError::Zero(input.to_owned()));
    }
    Ok(Duration::from_secs(total))
}

/// Formats whole seconds compactly, largest units first, at most two of them: `23h 59m`,
/// `4m 10s`, `3650d`, `0s`. Negative values (already past) get a leading `-`.
pub fn format_seconds(seconds: i64) -> String {
    let sign = if seconds < 0 { "-" } else { "" };
    let mut left = seconds.unsigned_abs();
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400u64), ("h", 3600), ("m", 60), ("s", 1)] {
        if left >= size || (unit == "s" && parts.is_empty()) {
            parts.push(format!("{}{unit}", left / size));
            left %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    format!("{sign}{}", parts.join(" "))
}

/// Formats a [`Duration`] like [`format_seconds`].
pub fn format_duration(d: Duration) -> String {
    format_seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_each_unit_and_sums() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn refuses_malformed_zero_unknown_units_and_overflow() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(parse_duration("60"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse_duration("h"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse_duration("-5m"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse_duration("1.5h"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse_duration("10 m"), Err(DurationError::Malformed(_))));
        assert!(matches!(parse_duration("5ms"), Err(DurationError::Unit { .. })));
        assert!(matches!(parse_duration("3w"), Err(DurationError::Unit { .. })));
        assert!(matches!(parse_duration("0s"), Err(DurationError::Zero(_))));
        assert!(matches!(parse_duration("99999999999999999999d"), Err(DurationError::Overflow(_))));
        assert!(matches!(parse_duration("999999999999999999d"), Err(DurationError::Overflow(_))));
        let msg = parse_duration("3w").unwrap_err().to_string();
        assert!(msg.contains("\"w\"") && msg.contains("s, m, h or d"), "{msg}");
    }

    #[test]
    fn formats_two_largest_units() {
        assert_eq!(format_seconds(0), "0s");
        assert_eq!(format_seconds(59), "59s");
        assert_eq!(format_seconds(250), "4m 10s");
        assert_eq!(format_seconds(86_399), "23h 59m");
        assert_eq!(format_seconds(3650 * 86_400), "3650d");
        assert_eq!(format_seconds(90_061), "1d 1h");
        assert_eq!(format_seconds(-75), "-1m 15s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }
}
