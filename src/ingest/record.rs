//! The journal record of one envelope: when it was received, where from,
//! the raw payload, and what the connector decoded, in a compact binary
//! form. Signals and assets are stored by name, not index, so a record
//! written under one configuration is read correctly under another (a
//! signal that no longer exists comes back as an unknown signal).

use std::sync::Arc;

use crate::assets::AssetModel;
use crate::connectors::{Decoded, Envelope, RawValue, SignalRef, SignalValue};

/// Format version of a record.
const VERSION: u8 = 1;
/// Set on a value's tag when the source marked it uncertain.
const UNCERTAIN: u8 = 0x80;

/// An envelope read back from the journal.
#[derive(Debug)]
pub struct Record {
    pub received_ms: i64,
    pub source: Arc<str>,
    pub asset_id: Option<String>,
    pub payload: String,
    pub decoded: Decoded,
}

/// Encode an envelope into `out` (cleared first).
pub fn encode(env: &Envelope, model: &AssetModel, out: &mut Vec<u8>) {
    out.clear();
    out.push(VERSION);
    out.extend_from_slice(&env.received_ms.to_le_bytes());
    put_str(out, &env.source);
    let asset = env.asset.and_then(|a| model.assets.get(a as usize));
    put_str(out, asset.map_or("", |a| a.id.as_str()));
    put_str(out, &env.payload);
    let (kind, values, code, reason): (u8, &[SignalValue], &str, &str) = match &env.decoded {
        Decoded::Values(v) => (0, v, "", ""),
        Decoded::Partial {
            values,
            code,
            reason,
        } => (1, values, code, reason),
        Decoded::Error { code, reason } => (2, &[], code, reason),
        // The shard decodes before journaling; never written undecoded.
        Decoded::Deferred(_) => (2, &[], "rejected_by_connector", "not decoded"),
    };
    out.push(kind);
    put_str(out, code);
    put_str(out, reason);
    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
    for v in values {
        match &v.signal {
            SignalRef::Known(i) => {
                out.push(0);
                let name = asset
                    .and_then(|a| a.twin.signals.get(*i as usize))
                    .map_or("", |s| s.name.as_str());
                put_str(out, name);
            }
            SignalRef::Unknown(f) => {
                out.push(1);
                put_str(out, f);
            }
        }
        out.extend_from_slice(&v.ts_ms.to_le_bytes());
        let flag = if v.uncertain { UNCERTAIN } else { 0 };
        match &v.value {
            RawValue::Num(x) => {
                out.push(flag);
                out.extend_from_slice(&x.to_le_bytes());
            }
            RawValue::Bool(b) => {
                out.push(1 | flag);
                out.push(*b as u8);
            }
            RawValue::Text(t) => {
                out.push(2 | flag);
                put_str(out, t);
            }
            RawValue::Null => out.push(3 | flag),
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Why a record could not be read (a record from a newer version, or bytes
/// that are not a record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("journal record: {0}")]
pub struct RecordError(pub &'static str);

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.b.len() < n {
            return Err(RecordError("truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i64(&mut self) -> Result<i64, RecordError> {
        let b = self.take(8)?;
        Ok(i64::from_le_bytes(
            b.try_into().map_err(|_| RecordError("truncated"))?,
        ))
    }
    fn f64(&mut self) -> Result<f64, RecordError> {
        Ok(f64::from_bits(self.i64()? as u64))
    }
    fn str(&mut self) -> Result<&'a str, RecordError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| RecordError("text is not UTF-8"))
    }
}

/// Rejection codes a record may carry (`Decoded` holds them as `&'static str`).
const CODES: &[&str] = &[
    "malformed_payload",
    "bad_timestamp",
    "unknown_asset",
    "device_exception",
    "payload_too_large",
    "too_many_fields",
];

fn static_code(code: &str) -> &'static str {
    CODES
        .iter()
        .copied()
        .find(|c| *c == code)
        .unwrap_or("rejected_by_connector")
}

/// Decode a record, resolving signal names against `model`'s twin type of
/// the record's asset.
pub fn decode(bytes: &[u8], model: &AssetModel) -> Result<Record, RecordError> {
    let mut r = Reader { b: bytes };
    if r.u8()? != VERSION {
        return Err(RecordError("unknown version"));
    }
    let received_ms = r.i64()?;
    let source: Arc<str> = Arc::from(r.str()?);
    let asset_id = Some(r.str()?).filter(|s| !s.is_empty()).map(str::to_string);
    let payload = r.str()?.to_string();
    let kind = r.u8()?;
    let code = static_code(r.str()?);
    let reason = r.str()?.to_string();
    let n = r.u32()? as usize;
    let twin = asset_id
        .as_deref()
        .and_then(|a| model.asset(a))
        .map(|a| a.twin.clone());
    let mut values = Vec::with_capacity(n.min(bytes.len() / 16 + 1));
    for _ in 0..n {
        let known = r.u8()? == 0;
        let name = r.str()?;
        let signal = match (known, twin.as_ref().and_then(|t| t.signal(name))) {
            (true, Some(i)) => SignalRef::Known(i),
            _ => SignalRef::Unknown(name.into()),
        };
        let ts_ms = r.i64()?;
        let tag = r.u8()?;
        let uncertain = tag & UNCERTAIN != 0;
        let value = match tag & !UNCERTAIN {
            0 => RawValue::Num(r.f64()?),
            1 => RawValue::Bool(r.u8()? != 0),
            2 => RawValue::Text(r.str()?.into()),
            3 => RawValue::Null,
            _ => return Err(RecordError("unknown value tag")),
        };
        values.push(SignalValue {
            signal,
            ts_ms,
            value,
            uncertain,
        });
    }
    let decoded = match kind {
        0 => Decoded::Values(values),
        1 => Decoded::Partial {
            values,
            code,
            reason,
        },
        2 => Decoded::Error { code, reason },
        _ => return Err(RecordError("unknown payload kind")),
    };
    Ok(Record {
        received_ms,
        source,
        asset_id,
        payload,
        decoded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model() -> AssetModel {
        let files = crate::config::embedded_twin_type_files().unwrap();
        let twins = crate::assets::twin_types(files).unwrap();
        let plant: crate::config::PlantFile = crate::config::parse_toml(
            "[plant]\nid = \"p\"\n[[areas]]\nid = \"a\"\n[[lines]]\nid = \"l\"\narea = \"a\"\n\
             [[machines]]\nid = \"m1\"\nline = \"l\"\ntype = \"press\"\nsource = { protocol = \"mqtt\", topic = \"t\" }\n",
            "p.toml",
        )
        .unwrap();
        AssetModel::build(twins, vec![("p.toml".into(), plant)]).unwrap()
    }

    #[test]
    fn round_trip_by_name() {
        let m = model();
        let a = m.asset("m1").unwrap();
        let force = a.twin.signal("force").unwrap();
        let env = Envelope {
            received_ms: 1_700_000_000_000,
            source: Arc::from("mqtt:t"),
            asset: Some(a.idx),
            payload: "{\"force\": 3}".into(),
            decoded: Decoded::Partial {
                values: vec![
                    SignalValue {
                        signal: SignalRef::Known(force),
                        ts_ms: 5,
                        value: RawValue::Num(3.5),
                        uncertain: true,
                    },
                    SignalValue {
                        signal: SignalRef::Unknown("coolant".into()),
                        ts_ms: 6,
                        value: RawValue::Text("x".into()),
                        uncertain: false,
                    },
                    SignalValue {
                        signal: SignalRef::Unknown("b".into()),
                        ts_ms: 7,
                        value: RawValue::Bool(true),
                        uncertain: false,
                    },
                    SignalValue {
                        signal: SignalRef::Unknown("n".into()),
                        ts_ms: 8,
                        value: RawValue::Null,
                        uncertain: false,
                    },
                ],
                code: "too_many_fields",
                reason: "many".into(),
            },
            ack: None,
        };
        let mut buf = Vec::new();
        encode(&env, &m, &mut buf);
        let r = decode(&buf, &m).unwrap();
        assert_eq!(r.received_ms, env.received_ms);
        assert_eq!(&*r.source, "mqtt:t");
        assert_eq!(r.asset_id.as_deref(), Some("m1"));
        assert_eq!(r.payload, env.payload);
        assert_eq!(r.decoded, env.decoded);
    }

    proptest! {
        #[test]
        fn any_bytes_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let m = model();
            let _ = decode(&b, &m);
        }
    }
}
