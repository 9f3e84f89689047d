//! Time parameters of the API: RFC 3339, epoch milliseconds, or `now[-N{s,m,h,d}]`.

/// Parse a time parameter relative to `now_ms`.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(rest) = s.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now_ms);
        }
        let rest = rest
            .strip_prefix('-')
            .ok_or_else(|| format!("`{s}`: expected now-<n><s|m|h|d>"))?;
        let (num, unit) = rest.split_at(rest.len().saturating_sub(1));
        let n: i64 = num
            .parse()
            .map_err(|_| format!("`{s}`: expected now-<n><s|m|h|d>"))?;
        let mult = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("`{s}`: unit must be s, m, h or d")),
        };
        return Ok(now_ms - n * mult);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|_| format!("`{s}` is not RFC 3339, epoch milliseconds or now-<n><s|m|h|d>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_time("1700000000000", 0), Ok(1_700_000_000_000));
        assert_eq!(parse_time("now", 5000), Ok(5000));
        assert_eq!(parse_time("now-2m", 200_000), Ok(80_000));
        assert_eq!(parse_time("2026-01-02T03:04:05Z", 0), Ok(1_767_323_045_000));
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("now-3y", 0).is_err());
    }
}
