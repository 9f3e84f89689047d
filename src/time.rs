//! Time, in one place: the wall clock in UTC milliseconds, parsing of the
//! time expressions users type (`now`, `now-15m`, RFC 3339, epoch
//! milliseconds), and the literals the platform writes into its own SQL.
//!
//! Inside ironlake time is UTC `i64` milliseconds. This module owns turning
//! text into that and back; it never reads configuration and never decides
//! what a plausible timestamp is (the ingest stage does).

/// Milliseconds in one second, minute, hour and day.
pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Current UTC time in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Why a time expression could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}`: {message}")]
pub struct TimeParseError {
    pub text: String,
    pub message: String,
}

fn parse_err(text: &str, message: &str) -> TimeParseError {
    TimeParseError {
        text: text.chars().take(64).collect(),
        message: message.to_string(),
    }
}

/// A duration such as `15m`, `2h`, `30s`, `7d` in milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, TimeParseError> {
    let t = s.trim();
    let Some(unit) = t.chars().last() else {
        return Err(parse_err(s, "expected <n><s|m|h|d>"));
    };
    let num = &t[..t.len() - unit.len_utf8()];
    let mult = match unit {
        's' => SECOND_MS,
        'm' => MINUTE_MS,
        'h' => HOUR_MS,
        'd' => DAY_MS,
        _ => return Err(parse_err(s, "unit must be s, m, h or d")),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| parse_err(s, "expected <n><s|m|h|d> with a whole number n"))?;
    if n < 0 {
        return Err(parse_err(s, "the amount must not be negative"));
    }
    n.checked_mul(mult)
        .ok_or_else(|| parse_err(s, "duration out of range"))
}

/// Parse a time expression relative to `now_ms`: `now`, `now-<n><s|m|h|d>`,
/// epoch milliseconds, or RFC 3339 (`2026-01-02T03:04:05Z`).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, TimeParseError> {
    let t = s.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(rest) = t.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now_ms);
        }
        let Some(d) = rest.strip_prefix('-') else {
            return Err(parse_err(s, "expected now-<n><s|m|h|d>"));
        };
        let d = parse_duration(d).map_err(|e| parse_err(s, &e.message))?;
        return now_ms
            .checked_sub(d)
            .ok_or_else(|| parse_err(s, "time out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| parse_err(s, "not RFC 3339, epoch milliseconds or now-<n><s|m|h|d>"))
}

/// RFC 3339 text of an instant, UTC with milliseconds
/// (`2026-01-02T03:04:05.000Z`); out-of-range instants print as the epoch.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// A SQL timestamp literal of an instant, for queries the platform writes
/// itself (never from user text).
pub fn timestamp_literal(ms: i64) -> String {
    format!("TIMESTAMP '{}'", rfc3339(ms))
}

/// A SQL date literal of the UTC day of an instant.
pub fn date_literal(ms: i64) -> String {
    let d = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    format!("DATE '{}'", d.format("%Y-%m-%d"))
}

/// UTC day number (days since 1970-01-01) of an instant: the `date`
/// partition value of the lake tables.
pub fn day_of(ms: i64) -> i32 {
    ms.div_euclid(DAY_MS) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert_eq!(parse_time("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_time("now", 5000), Ok(5000));
        assert_eq!(parse_time("now-2m", 200_000), Ok(80_000));
        assert_eq!(parse_time(" now-1h ", HOUR_MS), Ok(0));
        assert_eq!(parse_time("2026-01-02T03:04:05Z", 0), Ok(1_767_323_045_000));
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("now-3y", 0).is_err());
        assert!(parse_time("now+3m", 0).is_err());
        assert!(parse_time("now--3m", 0).is_err());
        assert!(parse_time("now-", 0).is_err());
    }

    #[test]
    fn multibyte_units_are_errors_not_panics() {
        // Found by a user: the last character of `now-1é` is two bytes.
        let e = parse_time("now-1é", 0).unwrap_err();
        assert!(e.message.contains("unit"), "{e}");
        assert!(parse_time("now-é", 0).is_err());
        assert!(parse_duration("1日").is_err());
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(parse_time("now-9999999999999999d", 0).is_err());
        assert!(parse_time(&format!("now-{}d", i64::MAX / DAY_MS), i64::MIN).is_err());
    }

    #[test]
    fn literals() {
        assert_eq!(timestamp_literal(0), "TIMESTAMP '1970-01-01T00:00:00.000Z'");
        assert_eq!(date_literal(DAY_MS + 5), "DATE '1970-01-02'");
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(DAY_MS), 1);
    }

    proptest! {
        #[test]
        fn any_text_parses_or_errors(s in "\\PC{0,24}", now in any::<i64>()) {
            let _ = parse_time(&s, now);
            let _ = parse_duration(&s);
        }

        #[test]
        fn now_minus_duration_round_trips(n in 0i64..1_000_000, unit in prop::sample::select(vec!['s', 'm', 'h', 'd'])) {
            let now = 1_700_000_000_000;
            let mult = match unit { 's' => SECOND_MS, 'm' => MINUTE_MS, 'h' => HOUR_MS, _ => DAY_MS };
            prop_assert_eq!(parse_time(&format!("now-{n}{unit}"), now), Ok(now - n * mult));
        }
    }
}
