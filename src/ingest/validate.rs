//! Typing and range checks of decoded values against the twin type, and
//! the plausibility of source timestamps. Pure functions, unit-tested here.

use crate::assets::{SignalDef, SignalKind};
use crate::connectors::RawValue;

/// Why a value was rejected: the expectation name (quarantine `expectation`)
/// and a sentence for people (quarantine `reason`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub expectation: &'static str,
    pub reason: String,
}

fn reject(expectation: &'static str, reason: String) -> Rejection {
    Rejection {
        expectation,
        reason,
    }
}

/// Type and range check of one value.
pub fn check(def: &SignalDef, v: &RawValue) -> Result<f64, Rejection> {
    let x = match (def.kind, v) {
        (_, RawValue::Null) => {
            return Err(reject(
                "null_value",
                format!("signal `{}` is null", def.name),
            ))
        }
        (SignalKind::Bool, RawValue::Bool(b)) => *b as u8 as f64,
        (SignalKind::Bool, RawValue::Num(n)) if *n == 0.0 || *n == 1.0 => *n,
        (SignalKind::Bool, other) => {
            return Err(reject(
                "wrong_type",
                format!(
                    "signal `{}` expects a boolean, got {}",
                    def.name,
                    describe(other)
                ),
            ))
        }
        (_, RawValue::Num(n)) if !n.is_finite() => {
            return Err(reject(
                "wrong_type",
                format!("signal `{}` got a non-finite number", def.name),
            ))
        }
        (SignalKind::Int, RawValue::Num(n)) if n.fract() != 0.0 => {
            return Err(reject(
                "wrong_type",
                format!("signal `{}` expects an integer, got {n}", def.name),
            ))
        }
        (_, RawValue::Num(n)) => *n,
        (_, other) => {
            return Err(reject(
                "wrong_type",
                format!(
                    "signal `{}` expects a number, got {}",
                    def.name,
                    describe(other)
                ),
            ))
        }
    };
    if !def.in_range(x) {
        let lo = def.min.map_or("-inf".to_string(), |m| m.to_string());
        let hi = def.max.map_or("+inf".to_string(), |m| m.to_string());
        let unit = if def.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", def.unit)
        };
        return Err(reject(
            "out_of_range",
            format!(
                "signal `{}` value {x} outside valid range [{lo}, {hi}]{unit}",
                def.name
            ),
        ));
    }
    Ok(x)
}

fn describe(v: &RawValue) -> String {
    match v {
        RawValue::Num(n) => format!("number {n}"),
        RawValue::Bool(b) => format!("boolean {b}"),
        RawValue::Text(t) => format!("string {:?}", truncate(t, 64)),
        RawValue::Null => "null".into(),
    }
}

/// The first `n` characters of `s`.
pub fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Which source timestamps are plausible: not further ahead of the ingest
/// clock than `max_future_ms`, not older than `max_past_ms`.
#[derive(Debug, Clone, Copy)]
pub struct TimePolicy {
    pub max_future_ms: i64,
    pub max_past_ms: i64,
}

/// Check a source timestamp against the ingest clock.
pub fn check_time(p: &TimePolicy, ts_ms: i64, received_ms: i64) -> Result<(), Rejection> {
    let date = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map_or_else(|| format!("{ms} ms"), |d| d.to_rfc3339())
    };
    if ts_ms > received_ms.saturating_add(p.max_future_ms) {
        let hint = if ts_ms > received_ms.saturating_mul(100) {
            " (it looks like microseconds or nanoseconds since the epoch: set `ts_unit` on the machine's source)"
        } else {
            " (is the device clock right?)"
        };
        return Err(reject(
            "future_timestamp",
            format!(
                "source timestamp {} is more than {} s ahead of the ingest clock{hint}",
                date(ts_ms),
                p.max_future_ms / 1000
            ),
        ));
    }
    if ts_ms < received_ms.saturating_sub(p.max_past_ms) {
        let hint = if ts_ms > 0 && ts_ms < received_ms / 100 {
            " (it looks like seconds since the epoch: set `ts_unit = \"s\"` on the machine's source)"
        } else {
            " (a device clock reset?)"
        };
        return Err(reject(
            "ancient_timestamp",
            format!(
                "source timestamp {} is more than {} days old (ingest.max_past_days){hint}",
                date(ts_ms),
                p.max_past_ms / crate::time::DAY_MS
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(kind: SignalKind, min: Option<f64>, max: Option<f64>) -> SignalDef {
        SignalDef {
            name: "s".into(),
            unit: "bar".into(),
            kind,
            min,
            max,
            description: String::new(),
            bindings: Default::default(),
        }
    }

    #[test]
    fn types_and_ranges() {
        let f = def(SignalKind::Float, Some(0.0), Some(10.0));
        assert_eq!(check(&f, &RawValue::Num(5.5)), Ok(5.5));
        let r = check(&f, &RawValue::Num(11.0)).unwrap_err();
        assert_eq!(r.expectation, "out_of_range");
        assert!(r.reason.contains("[0, 10] bar"), "{}", r.reason);
        assert_eq!(
            check(&f, &RawValue::Text("abc".into()))
                .unwrap_err()
                .expectation,
            "wrong_type"
        );
        assert_eq!(
            check(&f, &RawValue::Null).unwrap_err().expectation,
            "null_value"
        );
        assert_eq!(
            check(&f, &RawValue::Num(f64::NAN)).unwrap_err().expectation,
            "wrong_type"
        );
        let i = def(SignalKind::Int, None, None);
        assert_eq!(check(&i, &RawValue::Num(2.0)), Ok(2.0));
        assert_eq!(
            check(&i, &RawValue::Num(2.5)).unwrap_err().expectation,
            "wrong_type"
        );
        let b = def(SignalKind::Bool, None, None);
        assert_eq!(check(&b, &RawValue::Bool(true)), Ok(1.0));
        assert_eq!(check(&b, &RawValue::Num(0.0)), Ok(0.0));
        assert_eq!(
            check(&b, &RawValue::Num(3.0)).unwrap_err().expectation,
            "wrong_type"
        );
    }

    #[test]
    fn implausible_times_are_rejected_with_a_hint() {
        let p = TimePolicy {
            max_future_ms: 300_000,
            max_past_ms: 30 * crate::time::DAY_MS,
        };
        let now = 1_767_323_045_000;
        assert!(check_time(&p, now, now).is_ok());
        assert!(check_time(&p, now + 299_000, now).is_ok());
        let r = check_time(&p, 4_070_908_800_000, now).unwrap_err();
        assert_eq!(r.expectation, "future_timestamp");
        assert!(r.reason.contains("2099"), "{}", r.reason);
        let r = check_time(&p, now * 1000, now).unwrap_err();
        assert!(r.reason.contains("microseconds"), "{}", r.reason);
        let r = check_time(&p, 0, now).unwrap_err();
        assert_eq!(r.expectation, "ancient_timestamp");
        assert!(r.reason.contains("1970"), "{}", r.reason);
        let r = check_time(&p, now / 1000, now).unwrap_err();
        assert!(r.reason.contains("seconds"), "{}", r.reason);
        assert!(check_time(&p, i64::MIN, now).is_err());
        assert!(check_time(&p, i64::MAX, now).is_err());
    }
}
