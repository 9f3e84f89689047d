//! JSON payloads, shared by the protocols that carry them (MQTT, Kafka):
//! a [`JsonBinding`] maps a document's dotted field paths to one machine's
//! signals, and [`decode_json`] decodes a payload against it. Every leaf of the
//! document is accounted for: a bound signal, the timestamp, or an unknown
//! signal (quarantined by the ingest stage). Hostile payloads are bounded
//! before and while decoding: a payload over the size limit is not parsed
//! (`payload_too_large`), nesting is limited by the JSON parser (128 levels,
//! `malformed_payload`), and fields beyond `max_fields` are not taken
//! (`too_many_fields`, the first ones still are).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::assets::{AssetIdx, SignalIdx, TwinType};
use crate::config::ConfigError;
use crate::connectors::{DecodeLimits, Decoded, RawValue, SignalRef, SignalValue};

/// The JSON field path of each signal of a machine: its override in the
/// machine's `fields` table, else the first of the twin type's bindings
/// named in `bindings` (`field` read by `field_of`, whose error names the
/// binding), else, with `by_name`, the signal's own name. An override for
/// a signal the twin type lacks is an error naming `file` and `key`.
pub fn field_paths(
    twin: &TwinType,
    overrides: &std::collections::BTreeMap<String, String>,
    bindings: &[&str],
    by_name: bool,
    field_of: impl Fn(&str, &toml::Value) -> Result<String, String>,
    file: &str,
    key: &str,
) -> Result<HashMap<String, SignalIdx>, ConfigError> {
    let mut fields = HashMap::new();
    for (i, def) in twin.signals.iter().enumerate() {
        let path = match overrides.get(&def.name) {
            Some(p) => Some(p.clone()),
            None => {
                let mut found = None;
                for b in bindings {
                    if let Some(v) = def.bindings.get(*b) {
                        found = Some(field_of(b, v).map_err(|m| {
                            ConfigError::invalid(&twin.file, &format!("signals[{i}].{b}"), m)
                        })?);
                        break;
                    }
                }
                found.or_else(|| by_name.then(|| def.name.clone()))
            }
        };
        if let Some(p) = path {
            fields.insert(p, i as SignalIdx);
        }
    }
    for name in overrides.keys() {
        if twin.signal(name).is_none() {
            return Err(ConfigError::invalid(
                file,
                &format!("{key}.fields.{name}"),
                format!("twin type `{}` has no signal `{name}`", twin.kind),
            ));
        }
    }
    Ok(fields)
}

/// Unit of numeric source timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TsUnit {
    S,
    #[default]
    Ms,
    Us,
    Ns,
}

impl TsUnit {
    /// Milliseconds of a number in this unit (None when out of range).
    pub fn to_ms(self, v: f64) -> Option<i64> {
        let ms = match self {
            TsUnit::S => v * 1000.0,
            TsUnit::Ms => v,
            TsUnit::Us => v / 1000.0,
            TsUnit::Ns => v / 1_000_000.0,
        };
        (ms.is_finite() && ms.abs() < 9.0e15).then_some(ms as i64)
    }
}

/// How one machine's JSON payloads are decoded.
#[derive(Debug, Clone)]
pub struct JsonBinding {
    pub asset: AssetIdx,
    pub ts_field: Option<String>,
    pub ts_unit: TsUnit,
    /// Dotted field path -> signal.
    pub fields: HashMap<String, SignalIdx>,
    /// The envelopes' source (`mqtt:<topic>`, `kafka:<topic>`).
    pub source: Arc<str>,
}

impl crate::connectors::PayloadDecoder for JsonBinding {
    fn decode(&self, payload: &[u8], received_ms: i64, limits: &DecodeLimits) -> Decoded {
        decode_json(payload, self, received_ms, limits)
    }
}

/// Decode a JSON payload against a topic binding.
pub fn decode_json(
    payload: &[u8],
    b: &JsonBinding,
    received_ms: i64,
    limits: &DecodeLimits,
) -> Decoded {
    if payload.len() > limits.max_payload {
        return Decoded::Error {
            code: "payload_too_large",
            reason: format!(
                "payload of {} bytes is over the limit of {} bytes (ingest.max_payload_kib)",
                payload.len(),
                limits.max_payload
            ),
        };
    }
    if let Some(d) = fast::decode(payload, b, received_ms, limits) {
        return d;
    }
    decode_value(payload, b, received_ms, limits)
}

/// The general decoder: the payload as a `serde_json::Value` tree, flattened.
/// [`fast::decode`] gives the same answer for the common payloads without
/// building the tree; this one takes everything else and words the errors.
fn decode_value(
    payload: &[u8],
    b: &JsonBinding,
    received_ms: i64,
    limits: &DecodeLimits,
) -> Decoded {
    let doc: serde_json::Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(e) => {
            return Decoded::Error {
                code: "malformed_payload",
                reason: format!("payload is not valid JSON: {e}"),
            }
        }
    };
    let serde_json::Value::Object(mut map) = doc else {
        return Decoded::Error {
            code: "malformed_payload",
            reason: "payload must be a JSON object".into(),
        };
    };
    // Reserved fields (the edge gateway writes them): an error the gateway
    // met reading the machine, and the fields whose values are Uncertain.
    if let Some(serde_json::Value::Object(e)) = map.get("_error") {
        let code = match e.get("code").and_then(|c| c.as_str()) {
            Some("bad_status") => "bad_status",
            Some("node_not_found") => "node_not_found",
            Some("device_exception") => "device_exception",
            _ => "edge_error",
        };
        let reason = e
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("the edge gateway reported an error without a reason")
            .chars()
            .take(1000)
            .collect();
        return Decoded::Error { code, reason };
    }
    let uncertain: Vec<String> = match map.remove("_uncertain") {
        Some(serde_json::Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        Some(other) => {
            // Not the gateway's list: an ordinary (unknown) field.
            map.insert("_uncertain".into(), other);
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut ts = received_ms;
    if let Some(tsf) = &b.ts_field {
        if let Some(v) = lookup(&map, tsf) {
            match parse_ts(v, b) {
                Some(t) => ts = t,
                None => {
                    let shown: String = v.to_string().chars().take(64).collect();
                    return Decoded::Error {
                        code: "bad_timestamp",
                        reason: format!(
                            "field `{tsf}` is not an epoch number ({:?}) or RFC 3339: {shown}",
                            b.ts_unit
                        ),
                    };
                }
            }
        }
    }
    let mut leaves = Vec::new();
    flatten("", &map, &mut leaves, b.ts_field.as_deref());
    let total = leaves.len();
    // Bound fields first: junk cannot crowd out what the twin type knows.
    let (known, unknown): (Vec<_>, Vec<_>) = leaves
        .into_iter()
        .partition(|(p, _)| b.fields.contains_key(p));
    let mut out = Vec::with_capacity(total.min(limits.max_fields));
    for (path, v) in known.into_iter().chain(unknown).take(limits.max_fields) {
        let is_uncertain = !uncertain.is_empty() && uncertain.contains(&path);
        let signal = match b.fields.get(&path) {
            Some(i) => SignalRef::Known(*i),
            None => SignalRef::Unknown(path.into_boxed_str()),
        };
        let value = match v {
            serde_json::Value::Number(n) => n.as_f64().map_or(RawValue::Null, RawValue::Num),
            serde_json::Value::Bool(x) => RawValue::Bool(*x),
            serde_json::Value::String(s) => RawValue::Text(s.as_str().into()),
            serde_json::Value::Null => RawValue::Null,
            other => RawValue::Text(other.to_string().into_boxed_str()),
        };
        out.push(SignalValue {
            signal,
            ts_ms: ts,
            value,
            uncertain: is_uncertain,
        });
    }
    limited(out, total, limits)
}

/// The values of a message of `total` fields, of which `out` were taken.
fn limited(out: Vec<SignalValue>, total: usize, limits: &DecodeLimits) -> Decoded {
    if total > limits.max_fields {
        return Decoded::Partial {
            values: out,
            code: "too_many_fields",
            reason: format!(
                "the message has {total} fields, more than {} (ingest.max_fields); the bound ones and the first others up to the limit were taken",
                limits.max_fields
            ),
        };
    }
    Decoded::Values(out)
}

/// The value at a dotted path.
fn lookup<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<&'a serde_json::Value> {
    if let Some(v) = map.get(path) {
        return Some(v);
    }
    let (head, rest) = path.split_once('.')?;
    match map.get(head)? {
        serde_json::Value::Object(inner) => lookup(inner, rest),
        _ => None,
    }
}

/// Leaves of an object but the timestamp as (dotted path, value). Their
/// number is bounded by the payload size limit checked before parsing.
fn flatten<'a>(
    prefix: &str,
    map: &'a serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, &'a serde_json::Value)>,
    ts_field: Option<&str>,
) {
    for (k, v) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            serde_json::Value::Object(inner) if !inner.is_empty() => {
                flatten(&path, inner, out, ts_field)
            }
            _ if ts_field == Some(path.as_str()) => {}
            _ => out.push((path, v)),
        }
    }
}

/// An epoch number in the binding's unit, or an RFC 3339 string.
/// Plausibility (not in the future, not ancient) is the ingest stage's call.
fn parse_ts(v: &serde_json::Value, b: &JsonBinding) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => b.ts_unit.to_ms(n.as_f64()?),
        serde_json::Value::String(s) => ts_of_text(s),
        _ => None,
    }
}

/// An RFC 3339 timestamp's epoch milliseconds (both decoders).
fn ts_of_text(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.timestamp_millis())
}

mod fast;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn binding() -> JsonBinding {
        JsonBinding {
            asset: 3,
            ts_field: Some("ts".into()),
            ts_unit: TsUnit::Ms,
            fields: [
                ("state".to_string(), 0u16),
                ("spindle.speed".to_string(), 1u16),
            ]
            .into_iter()
            .collect(),
            source: std::sync::Arc::from("mqtt:t"),
        }
    }

    fn decode(p: &[u8], received: i64) -> Decoded {
        decode_json(p, &binding(), received, &DecodeLimits::default())
    }

    #[test]
    fn decodes_nested_fields_and_timestamp() {
        let d = decode(
            br#"{"ts": 1700000000123, "state": 2, "spindle": {"speed": 1200.5}}"#,
            5,
        );
        let Decoded::Values(v) = d else {
            panic!("{d:?}")
        };
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|x| x.ts_ms == 1_700_000_000_123));
        assert!(v.contains(&SignalValue {
            signal: SignalRef::Known(1),
            ts_ms: 1_700_000_000_123,
            value: RawValue::Num(1200.5),
            uncertain: false,
        }));
    }

    #[test]
    fn reports_unknown_fields_and_keeps_wrong_types_for_validation() {
        let d = decode(br#"{"state": "running", "coolant": 3}"#, 42);
        let Decoded::Values(v) = d else {
            panic!("{d:?}")
        };
        assert!(v.contains(&SignalValue {
            signal: SignalRef::Known(0),
            ts_ms: 42,
            value: RawValue::Text("running".into()),
            uncertain: false,
        }));
        assert!(v.contains(&SignalValue {
            signal: SignalRef::Unknown("coolant".into()),
            ts_ms: 42,
            value: RawValue::Num(3.0),
            uncertain: false,
        }));
    }

    #[test]
    fn the_edge_gateways_uncertain_list_and_errors() {
        let d = decode(
            br#"{"ts": 7, "state": 2, "spindle": {"speed": 9.5}, "_uncertain": ["spindle.speed"]}"#,
            5,
        );
        let Decoded::Values(v) = d else {
            panic!("{d:?}")
        };
        assert_eq!(v.len(), 2, "{v:?}");
        for x in &v {
            assert_eq!(x.uncertain, x.signal == SignalRef::Known(1), "{x:?}");
        }
        let d = decode(
            br#"{"ts": 7, "_error": {"code": "bad_status", "reason": "signal `t`: BadSensorFailure"}}"#,
            5,
        );
        assert_eq!(
            d,
            Decoded::Error {
                code: "bad_status",
                reason: "signal `t`: BadSensorFailure".into()
            }
        );
        // Not a list: an ordinary unknown field.
        let Decoded::Values(v) = decode(br#"{"_uncertain": 1}"#, 5) else {
            panic!()
        };
        assert_eq!(v[0].signal, SignalRef::Unknown("_uncertain".into()));
    }

    #[test]
    fn malformed_and_bad_timestamps_are_errors_with_reasons() {
        match decode(b"{not json", 0) {
            Decoded::Error { code, reason } => {
                assert_eq!(code, "malformed_payload");
                assert!(reason.contains("JSON"));
            }
            d => panic!("{d:?}"),
        }
        assert!(matches!(
            decode(b"[1,2]", 0),
            Decoded::Error {
                code: "malformed_payload",
                ..
            }
        ));
        assert!(matches!(
            decode(br#"{"ts": "yesterday"}"#, 0),
            Decoded::Error {
                code: "bad_timestamp",
                ..
            }
        ));
        match decode(br#"{"ts": "2026-01-02T03:04:05Z", "state": 1}"#, 0) {
            Decoded::Values(v) => assert_eq!(v[0].ts_ms, 1_767_323_045_000),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn timestamp_units() {
        let mut b = binding();
        b.ts_unit = TsUnit::Us;
        let d = decode_json(
            br#"{"ts": 1700000000123456, "state": 1}"#,
            &b,
            0,
            &DecodeLimits::default(),
        );
        assert_eq!(d.values()[0].ts_ms, 1_700_000_000_123);
        b.ts_unit = TsUnit::S;
        let d = decode_json(
            br#"{"ts": 1700000000.5, "state": 1}"#,
            &b,
            0,
            &DecodeLimits::default(),
        );
        assert_eq!(d.values()[0].ts_ms, 1_700_000_000_500);
    }

    #[test]
    fn hostile_payloads_are_bounded() {
        let limits = DecodeLimits {
            max_payload: 1000,
            max_fields: 3,
        };
        let big = vec![b' '; 1001];
        assert!(matches!(
            decode_json(&big, &binding(), 0, &limits),
            Decoded::Error {
                code: "payload_too_large",
                ..
            }
        ));
        let many = br#"{"ts": 5, "a": 1, "b": 2, "c": 3, "d": 4, "state": 2}"#;
        match decode_json(many, &binding(), 0, &limits) {
            Decoded::Partial { values, code, .. } => {
                assert_eq!(code, "too_many_fields");
                assert_eq!(values.len(), 3);
                assert!(values.iter().all(|v| v.ts_ms == 5));
                assert_eq!(values[0].signal, SignalRef::Known(0), "bound fields first");
            }
            d => panic!("{d:?}"),
        }
        let exactly = br#"{"ts": 5, "a": 1, "b": 2, "c": 3}"#;
        assert!(matches!(
            decode_json(exactly, &binding(), 0, &limits),
            Decoded::Values(v) if v.len() == 3
        ));
        // 100k levels of nesting: an error, not a stack overflow.
        let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        assert!(matches!(
            decode(deep.as_bytes(), 0),
            Decoded::Error {
                code: "malformed_payload",
                ..
            }
        ));
    }

    /// A JSON document as text, so that it can hold what a `Value` cannot
    /// (a key twice, keys in any order).
    #[derive(Debug, Clone)]
    enum Doc {
        Leaf(String),
        Obj(Vec<(String, Doc)>),
    }

    impl Doc {
        fn text(&self) -> String {
            match self {
                Doc::Leaf(s) => s.clone(),
                Doc::Obj(m) => {
                    let inner: Vec<String> = m
                        .iter()
                        .map(|(k, v)| format!("{k}: {}", v.text()))
                        .collect();
                    format!("{{{}}}", inner.join(", "))
                }
            }
        }
    }

    fn doc() -> impl Strategy<Value = Doc> {
        let key = prop_oneof![
            8 => prop::sample::select(vec!["ts", "v", "s0", "s1", "state", "spindle", "speed", "a", "b", "z", "a-b", "aa", "a_b"]).prop_map(|k| format!("\"{k}\"")),
            1 => prop::sample::select(vec!["", "a.b", "_error", "_uncertain", "s\\u0030", "\\\"q"]).prop_map(|k| format!("\"{k}\"")),
        ];
        let leaf = prop_oneof![
            Just("1700000000123".to_string()),
            Just("\"2026-01-02T03:04:05Z\"".to_string()),
            "-?[0-9]{1,22}(\\.[0-9]{1,6})?(e-?[0-9]{1,3})?",
            Just("true".to_string()),
            Just("null".to_string()),
            Just("\"running\"".to_string()),
            Just("\"a\\nb\"".to_string()),
            Just("[1, 2]".to_string()),
            Just("{}".to_string()),
            Just("\"yesterday\"".to_string()),
        ]
        .prop_map(Doc::Leaf);
        leaf.prop_recursive(4, 40, 8, move |inner| {
            prop::collection::vec((key.clone(), inner), 0..8).prop_map(Doc::Obj)
        })
    }

    /// The fast decoder gives the general decoder's answer whenever it
    /// answers at all, and it answers for a good share of random documents.
    #[test]
    fn the_fast_decoder_agrees_with_the_general_one() {
        use proptest::test_runner::{Config, TestRunner};
        let cases = (
            doc(),
            prop::sample::select(vec![None, Some("ts"), Some("v.ts"), Some("v")]),
            prop::sample::select(vec![TsUnit::Ms, TsUnit::S, TsUnit::Ns]),
            prop::sample::select(vec![2usize, 1000]),
        );
        let answered = std::cell::Cell::new(0usize);
        let mut runner = TestRunner::new(Config::with_cases(2000));
        runner
            .run(&cases, |(d, ts_field, unit, max_fields)| {
                let text = d.text();
                let mut b = binding();
                b.ts_field = ts_field.map(str::to_string);
                b.ts_unit = unit;
                b.fields.insert("v.s0".into(), 4);
                b.fields.insert("a".into(), 5);
                b.fields.insert("z".into(), 6);
                let limits = DecodeLimits {
                    max_payload: 1 << 20,
                    max_fields,
                };
                if let Some(fast) = fast::decode(text.as_bytes(), &b, 77, &limits) {
                    answered.set(answered.get() + 1);
                    prop_assert_eq!(
                        fast,
                        decode_value(text.as_bytes(), &b, 77, &limits),
                        "{}",
                        text
                    );
                }
                Ok(())
            })
            .unwrap();
        assert!(
            answered.get() > 200,
            "the fast path answered {} of 2000",
            answered.get()
        );
    }

    /// The payloads machines send take the fast path (in any key order).
    #[test]
    fn common_payloads_take_the_fast_path() {
        let mut b = binding();
        b.fields.insert("v.s1".into(), 7);
        b.fields.insert("v.s0".into(), 8);
        let limits = DecodeLimits::default();
        for p in [
            r#"{"ts":1700000000123,"v":{"s0":2,"s1":-4.25,"extra":true}}"#,
            r#"{"v":{"s1":1e3,"s0":"running"},"state":null,"ts":"2026-01-02T03:04:05Z","spindle":{"speed":12}}"#,
            r#"{"state":1}"#,
        ] {
            let fast = fast::decode(p.as_bytes(), &b, 5, &limits);
            assert!(fast.is_some(), "{p}");
            assert_eq!(
                fast.unwrap(),
                decode_value(p.as_bytes(), &b, 5, &limits),
                "{p}"
            );
        }
        // What it leaves to the general decoder.
        for p in [
            r#"{"ts":1,"ts":2}"#,
            r#"{"a.b":1}"#,
            r#"{"s\u0030":1}"#,
            r#"{"a":[1]}"#,
            r#"{"a":{}}"#,
            r#"{"ts":7,"_uncertain":["state"]}"#,
            r#"{"_error":{"code":"bad_status"}}"#,
            r#"{"ts":"yesterday"}"#,
            r#"{"ts":{"x":1}}"#,
            r#"{"state":1} x"#,
            r#"[1]"#,
        ] {
            assert!(fast::decode(p.as_bytes(), &b, 5, &limits).is_none(), "{p}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_without_panic(p in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&p, 0);
        }

        #[test]
        fn any_json_decodes_without_panic(s in "\\{(\"[a-z.]{0,4}\": ?(-?[0-9]{1,20}(\\.[0-9]{0,5})?|\"[^\"]{0,8}\"|true|null|\\[\\]|\\{\\}),? ?){0,8}\\}") {
            let _ = decode(s.as_bytes(), 0);
        }
    }
}
