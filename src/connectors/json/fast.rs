//! The common JSON payload decoded straight from its bytes: serde_json's
//! parser walks the document once, each leaf's dotted path is built in one
//! reused buffer and looked up in the binding, and no `Value` tree, key
//! string or path string is allocated (only text values and unknown fields
//! are). Its answer is the general decoder's, value for value and in the
//! same order (bound fields first, each group in the order of a
//! `serde_json::Map`); whatever it does not take, it hands back (`None`):
//! keys with escapes, dots or no characters, a key twice in one object,
//! arrays, empty objects, the edge gateway's reserved fields, a timestamp
//! that is not a number in range or an RFC 3339 text, nesting deeper than
//! [`MAX_DEPTH`] or wider than [`MAX_KEYS`], and every malformed payload
//! (the general decoder words its error).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::JsonBinding;
use crate::assets::SignalIdx;
use crate::connectors::{DecodeLimits, Decoded, RawValue, SignalRef, SignalValue};

/// Objects nested deeper than this go to the general decoder.
const MAX_DEPTH: usize = 8;
/// Objects with more keys than this go to the general decoder (the check
/// for a key given twice compares each key with those before it).
const MAX_KEYS: usize = 64;

/// What the walk collects.
struct Walk<'b> {
    /// The path of the value being read.
    cur: String,
    /// Every leaf's path, one after the other; leaf `i` is
    /// `paths[spans[i].0..spans[i].1]` and its value `values[i]`.
    paths: String,
    spans: Vec<(u32, u32)>,
    values: Vec<RawValue>,
    /// The binding's timestamp field, and the value found there.
    ts_field: Option<&'b str>,
    ts: Option<RawValue>,
}

/// The walk stopped: the general decoder takes the payload.
#[derive(Debug)]
struct Bail;

impl fmt::Display for Bail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not the common case")
    }
}

impl std::error::Error for Bail {}

impl de::Error for Bail {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Bail
    }
}

/// Decode `payload` if it is the common case; `None` hands it to the
/// general decoder.
pub(super) fn decode(
    payload: &[u8],
    b: &JsonBinding,
    received_ms: i64,
    limits: &DecodeLimits,
) -> Option<Decoded> {
    let mut w = Walk {
        cur: String::with_capacity(64),
        paths: String::with_capacity(payload.len()),
        spans: Vec::with_capacity(16),
        values: Vec::with_capacity(16),
        ts_field: b.ts_field.as_deref(),
        ts: None,
    };
    let mut de = serde_json::Deserializer::from_slice(payload);
    de.deserialize_map(Object {
        w: &mut w,
        depth: 0,
    })
    .ok()?;
    de.end().ok()?;
    let ts = match w.ts.take() {
        None => received_ms,
        Some(RawValue::Num(v)) => b.ts_unit.to_ms(v)?,
        Some(RawValue::Text(s)) => super::ts_of_text(&s)?,
        Some(_) => return None,
    };
    let Walk {
        paths,
        spans,
        mut values,
        ts_field,
        ..
    } = w;
    let path = |i: usize| &paths[spans[i].0 as usize..spans[i].1 as usize];
    // A timestamp field that names an object is the general decoder's
    // error to word.
    if let Some(tsf) = ts_field {
        let inside = |i: usize| {
            let p = path(i);
            p.len() > tsf.len() && p.starts_with(tsf) && p.as_bytes()[tsf.len()] == b'.'
        };
        if (0..spans.len()).any(inside) {
            return None;
        }
    }
    let total = spans.len();
    let mut known: Vec<(SignalIdx, usize)> = Vec::with_capacity(total);
    let mut unknown: Vec<usize> = Vec::new();
    for i in 0..total {
        match b.fields.get(path(i)) {
            Some(s) => known.push((*s, i)),
            None => unknown.push(i),
        }
    }
    // The order of a `serde_json::Map` (a BTreeMap): key by key at every
    // level, which is the paths' order with the dots as the lowest byte.
    let order = |a: usize, c: usize| map_order(path(a).as_bytes(), path(c).as_bytes());
    // Payloads usually list their keys in order already.
    if !known.windows(2).all(|p| order(p[0].1, p[1].1).is_lt()) {
        known.sort_by(|a, c| order(a.1, c.1));
    }
    if !unknown.windows(2).all(|p| order(p[0], p[1]).is_lt()) {
        unknown.sort_by(|&a, &c| order(a, c));
    }
    let refs = known
        .into_iter()
        .map(|(s, i)| (SignalRef::Known(s), i))
        .chain(
            unknown
                .into_iter()
                .map(|i| (SignalRef::Unknown(path(i).into()), i)),
        );
    let mut out = Vec::with_capacity(total.min(limits.max_fields));
    for (signal, i) in refs.take(limits.max_fields) {
        out.push(SignalValue {
            signal,
            ts_ms: ts,
            value: std::mem::replace(&mut values[i], RawValue::Null),
            uncertain: false,
        });
    }
    Some(super::limited(out, total, limits))
}

/// Dotted paths in the order a flattened `serde_json::Map` gives them: a
/// dot (which no key of the common case holds) sorts before every byte.
fn map_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'.' { 0 } else { c };
    a.iter().map(|&c| key(c)).cmp(b.iter().map(|&c| key(c)))
}

/// An object whose keys extend the path `w.cur`.
struct Object<'w, 'b> {
    w: &'w mut Walk<'b>,
    depth: usize,
}

impl<'de> Visitor<'de> for Object<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Object { w, depth } = self;
        let base = w.cur.len();
        let mut keys: [&'de str; MAX_KEYS] = [""; MAX_KEYS];
        let mut n = 0;
        while let Some(key) = map.next_key_seed(Key)? {
            if key.is_empty() || key.contains('.') || n == MAX_KEYS {
                return Err(de::Error::custom(Bail));
            }
            if depth == 0 && (key == "_error" || key == "_uncertain") {
                return Err(de::Error::custom(Bail));
            }
            if keys[..n].contains(&key) {
                return Err(de::Error::custom(Bail));
            }
            keys[n] = key;
            n += 1;
            w.cur.truncate(base);
            if base > 0 {
                w.cur.push('.');
            }
            w.cur.push_str(key);
            map.next_value_seed(Member { w: &mut *w, depth })?;
        }
        if n == 0 {
            // `{}` is a leaf of the general decoder (its text).
            return Err(de::Error::custom(Bail));
        }
        w.cur.truncate(base);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Object<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

/// A key without escapes, borrowed from the payload.
struct Key;

impl<'de> Visitor<'de> for Key {
    type Value = &'de str;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key without escapes")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<&'de str, E> {
        Ok(v)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<&'de str, E> {
        Err(E::custom(Bail))
    }
}

impl<'de> DeserializeSeed<'de> for Key {
    type Value = &'de str;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'de str, D::Error> {
        d.deserialize_str(self)
    }
}

/// The value of the key just pushed onto the path.
struct Member<'w, 'b> {
    w: &'w mut Walk<'b>,
    depth: usize,
}

impl Member<'_, '_> {
    fn leaf<E: de::Error>(self, value: RawValue) -> Result<(), E> {
        let w = self.w;
        if w.ts_field == Some(w.cur.as_str()) {
            w.ts = Some(value);
            return Ok(());
        }
        let start = w.paths.len() as u32;
        w.paths.push_str(&w.cur);
        w.spans.push((start, w.paths.len() as u32));
        w.values.push(value);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Member<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(RawValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(RawValue::Num(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(RawValue::Num(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(RawValue::Num(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.leaf(RawValue::Text(v.into()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf(RawValue::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        if self.depth + 1 >= MAX_DEPTH {
            return Err(de::Error::custom(Bail));
        }
        Object {
            w: self.w,
            depth: self.depth + 1,
        }
        .visit_map(map)
    }
}

impl<'de> DeserializeSeed<'de> for Member<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}
