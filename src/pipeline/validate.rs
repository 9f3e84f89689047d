//! Typing and range checks of decoded values against the twin type, and the
//! per-signal duplicate filter. Pure functions, unit-tested here.

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

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Remembers recent timestamps of one `(asset, signal)` to drop duplicates.
///
/// A reading is a duplicate if its timestamp equals one of the last
/// [`RECENT`] accepted ones, or is at or below `floor` (the newest timestamp
/// already committed to silver when the platform started: redeliveries after a
/// restart). Late but new readings are accepted.
#[derive(Debug, Clone)]
pub struct Dedup {
    floor: i64,
    recent: [i64; RECENT],
    pos: usize,
}

/// Timestamps remembered per signal.
pub const RECENT: usize = 8;

impl Dedup {
    /// A filter that treats everything at or below `floor` as seen.
    pub fn new(floor: i64) -> Self {
        Dedup {
            floor,
            recent: [i64::MIN; RECENT],
            pos: 0,
        }
    }

    /// True when `ts` was seen; otherwise remembers it.
    pub fn seen(&mut self, ts: i64) -> bool {
        if ts <= self.floor || self.recent.contains(&ts) {
            return true;
        }
        self.recent[self.pos] = ts;
        self.pos = (self.pos + 1) % RECENT;
        false
    }
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
            modbus: None,
            mqtt: None,
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
    fn dedup_drops_repeats_and_replays_below_the_floor() {
        let mut d = Dedup::new(100);
        assert!(d.seen(100), "committed before start");
        assert!(!d.seen(101));
        assert!(d.seen(101));
        assert!(!d.seen(103));
        assert!(!d.seen(102), "late but new");
        assert!(d.seen(102));
    }
}
