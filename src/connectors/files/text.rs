//! Scalar parsing for text formats: numbers and ISO-8601 timestamps, from
//! bytes, without allocating.
//!
//! Decimal floats take Clinger's fast path when it is exact (at most 19
//! significant digits giving a mantissa below 2^53 and a power of ten within
//! ±22: one multiplication or division of two exact doubles, correctly
//! rounded). Everything else (long mantissas, large exponents, `inf`) goes to
//! the standard library's correctly-rounded parser. Both give the same bits.

const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Parse a decimal number (`-12.5`, `3e-2`, `NaN`, `inf`).
#[inline]
pub fn parse_f64(b: &[u8]) -> Option<f64> {
    if let Some(v) = fast_f64(b) {
        return Some(v);
    }
    let s = std::str::from_utf8(b).ok()?;
    s.parse::<f64>().ok()
}

#[inline]
fn fast_f64(b: &[u8]) -> Option<f64> {
    match scan_f64(b) {
        Some((v, n)) if n == b.len() => Some(v),
        _ => None,
    }
}

/// Parse the decimal number at the start of `b` on the fast path: the value
/// and the bytes it took, or `None` when the fast path does not apply (the
/// caller then takes the token and uses [`parse_f64`]).
#[inline]
pub fn scan_f64(b: &[u8]) -> Option<(f64, usize)> {
    let (neg, mut i) = match b.first()? {
        b'-' => (true, 1),
        b'+' => (false, 1),
        _ => (false, 0),
    };
    let mut m: u64 = 0;
    let mut digits = 0u32;
    let mut exp: i32 = 0;
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        m = m.wrapping_mul(10).wrapping_add((b[i] - b'0') as u64);
        digits += 1;
        i += 1;
    }
    let int_end = i;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            m = m.wrapping_mul(10).wrapping_add((b[i] - b'0') as u64);
            digits += 1;
            exp -= 1;
            i += 1;
        }
    }
    if digits == 0 || (int_end == start && i == int_end + 1) {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        let (eneg, j) = match b.get(i) {
            Some(b'-') => (true, i + 1),
            Some(b'+') => (false, i + 1),
            _ => (false, i),
        };
        i = j;
        let mut e: i32 = 0;
        let es = i;
        while i < b.len() && b[i].is_ascii_digit() && e < 10_000 {
            e = e * 10 + (b[i] - b'0') as i32;
            i += 1;
        }
        if i == es {
            return None;
        }
        exp += if eneg { -e } else { e };
    }
    if digits > 19 || m >= (1u64 << 53) || !(-22..=22).contains(&exp) {
        return None;
    }
    let v = m as f64;
    let v = if exp < 0 {
        v / POW10[(-exp) as usize]
    } else {
        v * POW10[exp as usize]
    };
    Some((if neg { -v } else { v }, i))
}

/// Parse a decimal integer.
#[inline]
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    if digits.len() > 18 {
        // Possibly still in range (19 digits): let the standard parser decide,
        // but only for all-digit text.
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        return std::str::from_utf8(b).ok()?.parse().ok();
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as i64;
    }
    Some(if neg { -v } else { v })
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
#[inline]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[inline]
fn num(b: &[u8], r: std::ops::Range<usize>) -> Option<u32> {
    let s = b.get(r)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

/// The day of the last date parsed by [`parse_iso_ms_cached`]: rows of a
/// file mostly share their date, and its validation and calendar arithmetic
/// were a tenth of a CSV parse.
#[derive(Debug, Clone, Copy, Default)]
pub struct DayCache {
    /// `YYYY-MM-DD` as read (all zero: nothing cached; no valid date is).
    date: [u8; 10],
    days: i64,
}

/// Parse `YYYY-MM-DD[T| ]hh:mm:ss[.fff...][Z|±hh:mm]` to UTC epoch ms
/// (no zone means UTC). Fractions beyond milliseconds are truncated.
pub fn parse_iso_ms(b: &[u8]) -> Option<i64> {
    parse_iso_ms_cached(b, &mut DayCache::default())
}

/// [`parse_iso_ms`], reusing the day of the previous call's date when it
/// is the same (the result is the same either way).
#[inline]
pub fn parse_iso_ms_cached(b: &[u8], cache: &mut DayCache) -> Option<i64> {
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = if b[..10] == cache.date {
        cache.days
    } else {
        let (y, mo, d) = (num(b, 0..4)?, num(b, 5..7)?, num(b, 8..10)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
            return None;
        }
        let days = days_from_civil(y as i64, mo, d);
        cache.date.copy_from_slice(&b[..10]);
        cache.days = days;
        days
    };
    let (h, mi, s) = (num(b, 11..13)?, num(b, 14..16)?, num(b, 17..19)?);
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        // Milliseconds from the first three digits; later ones are cut.
        let st = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - st < 3 {
                ms = ms * 10 + (b[i] - b'0') as i64;
            }
            i += 1;
        }
        ms *= match i - st {
            0 => return None,
            1 => 100,
            2 => 10,
            _ => 1,
        };
    }
    let mut offset_min = 0i64;
    match b.get(i) {
        None => {}
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => {}
        Some(&c @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(b, i + 1..i + 3)? as i64;
            let om = num(b, i + 4..i + 6)? as i64;
            offset_min = (oh * 60 + om) * if c == b'-' { -1 } else { 1 };
        }
        _ => return None,
    }
    let secs = days * 86_400 + h as i64 * 3600 + mi as i64 * 60 + s as i64 - offset_min * 60;
    Some(secs * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_iso_ms(b"2024-01-01T06:30:00.001"),
            Some(1_704_090_600_001)
        );
        assert_eq!(
            parse_iso_ms(b"2024-01-01 06:30:00"),
            Some(1_704_090_600_000)
        );
        assert_eq!(
            parse_iso_ms(b"2024-01-01T07:30:00.5+01:00"),
            Some(1_704_090_600_500)
        );
        assert_eq!(
            parse_iso_ms(b"2024-01-01T06:30:00Z"),
            Some(1_704_090_600_000)
        );
        assert_eq!(parse_iso_ms(b"2024-13-01T06:30:00"), None);
        assert_eq!(parse_iso_ms(b"yesterday"), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn numbers() {
        for s in [
            "0",
            "-0.0",
            "31.24",
            "1e5",
            "2.5E-3",
            "NaN",
            "inf",
            "123456789012345678901234",
        ] {
            let std: f64 = s.parse().unwrap();
            let got = parse_f64(s.as_bytes()).unwrap();
            assert!(
                got.to_bits() == std.to_bits() || (got.is_nan() && std.is_nan()),
                "{s}"
            );
        }
        for s in ["", "-", ".", "1.2.3", "abc", "1e", "--1"] {
            assert_eq!(parse_f64(s.as_bytes()), None, "{s}");
        }
        assert_eq!(parse_i64(b"-1704090600001"), Some(-1_704_090_600_001));
        assert_eq!(parse_i64(b"12x"), None);
    }

    #[test]
    fn the_day_cache_gives_the_same_answers_and_rejects_what_is_invalid() {
        let mut c = DayCache::default();
        let rows: [&[u8]; 9] = [
            b"2024-01-01T06:30:00.001",
            b"2024-01-01T23:59:59.99",
            // A new date, then back.
            b"2024-01-02T00:00:00Z",
            b"2024-01-01 06:30:00.123456",
            // The cached date with a bad time, a bad fraction, a bad zone.
            b"2024-01-01T24:00:00",
            b"2024-01-01T06:30:00.",
            b"2024-01-01T06:30:00+0x:00",
            // An invalid date right after a valid one, and a valid one after it.
            b"2024-13-01T06:30:00",
            b"2024-01-01T06:30:00.5",
        ];
        for r in rows {
            assert_eq!(parse_iso_ms_cached(r, &mut c), parse_iso_ms(r), "{r:?}");
        }
        assert_eq!(
            parse_iso_ms(b"2024-01-01T23:59:59.99"),
            Some(1_704_153_599_990)
        );
        assert_eq!(
            parse_iso_ms(b"2024-01-01 06:30:00.123456"),
            Some(1_704_090_600_123)
        );
        assert_eq!(parse_iso_ms(b"2024-01-01T24:00:00"), None);
        assert_eq!(parse_iso_ms(b"2024-01-01T06:30:00."), None);
        // An invalid date is never cached: it is rejected each time.
        let mut c = DayCache::default();
        for _ in 0..2 {
            assert_eq!(parse_iso_ms_cached(b"2024-00-10T06:30:00", &mut c), None);
        }
    }

    proptest! {
        /// Over any sequence of timestamps (few distinct dates, so the cache
        /// hits), the cached parse equals a fresh one.
        #[test]
        fn cached_and_fresh_parses_agree(rows in proptest::collection::vec(
            (2023u32..2026, 0u32..14, 0u32..33, 0u32..25, 0u32..61, 0u32..1000, 0usize..4), 1..64)) {
            let mut c = DayCache::default();
            for (y, mo, d, h, mi, ms, form) in rows {
                let s = match form {
                    0 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:07.{ms:03}Z"),
                    1 => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:07"),
                    2 => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:07.{}+02:00", ms % 10),
                    _ => format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:07.{ms:03}999"),
                };
                prop_assert_eq!(parse_iso_ms_cached(s.as_bytes(), &mut c), parse_iso_ms(s.as_bytes()), "{}", s);
                if let Some(v) = parse_iso_ms(s.as_bytes()) {
                    let want = (days_from_civil(y as i64, mo, d) * 86_400
                        + (h * 3600 + mi * 60 + 7) as i64
                        - if form == 2 { 7200 } else { 0 }) * 1000
                        + match form { 1 => 0, 2 => (ms % 10) as i64 * 100, _ => ms as i64 };
                    prop_assert_eq!(v, want, "{}", s);
                }
            }
        }

        #[test]
        fn floats_round_trip_bit_exact(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
            for s in [format!("{x}"), format!("{x:e}"), format!("{x:.3}")] {
                let std: f64 = s.parse().unwrap();
                prop_assert_eq!(parse_f64(s.as_bytes()).unwrap().to_bits(), std.to_bits(), "{}", s);
            }
        }
    }
}
