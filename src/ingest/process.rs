//! What one envelope becomes: a bronze row, silver readings, quarantine
//! rows with their reasons, readings for the twin, and readings whose
//! novelty must be looked up in `silver.readings` first.
//!
//! Everything a message carries is accounted for: each value is a silver
//! reading, a counted duplicate, or a quarantine row; a message that could
//! not be decoded is one quarantine row. A rejected value's row holds that
//! value (not a copy of the whole message, which is in bronze once).

use std::sync::Arc;

use super::dedup::{SignalDedup, Verdict};
use super::validate::{check, check_time, truncate, TimePolicy};
use super::TypedReading;
use crate::assets::{Asset, AssetIdx, AssetModel, SignalIdx};
use crate::connectors::{kept_payload, Decoded, RawValue, SignalRef, SignalValue};

/// Bytes of a rejected value kept in its quarantine row.
const KEPT_VALUE: usize = 1024;

/// A reading bound for silver (names are looked up from the model).
#[derive(Debug, Clone, Copy)]
pub struct SilverRow {
    pub asset: AssetIdx,
    pub signal: SignalIdx,
    pub ts_ms: i64,
    pub value: f64,
    pub ingest_ms: i64,
    /// The source marked it uncertain (quality `UNCERTAIN`).
    pub uncertain: bool,
}

/// A rejected message or value.
#[derive(Debug, Clone)]
pub struct QuarantineRow {
    pub signal: Option<String>,
    pub expectation: &'static str,
    pub reason: String,
    pub payload: String,
}

/// What one envelope gave.
#[derive(Debug, Default)]
pub struct Staged {
    pub silver: Vec<SilverRow>,
    pub quarantine: Vec<QuarantineRow>,
    /// Readings for the twin, and signals whose latest value was rejected.
    pub twin: Vec<TypedReading>,
    pub rejected: Vec<(SignalIdx, &'static str)>,
    /// Readings older than what dedup remembers: look them up first.
    pub unsure: Vec<SilverRow>,
    pub duplicates: u64,
}

/// An envelope as the ingest stage sees it (live, or read back from the journal).
pub struct Message<'a> {
    pub received_ms: i64,
    pub asset: Option<&'a Asset>,
    /// The asset id the message named, when it is not in the model.
    pub unknown_asset: Option<&'a str>,
    pub payload: &'a str,
    pub decoded: &'a Decoded,
}

/// Per-signal duplicate filters of an asset, created on first use.
pub fn filters<'a>(
    dedup: &'a mut std::collections::HashMap<AssetIdx, Vec<SignalDedup>>,
    asset: &Asset,
    seed: &std::collections::HashMap<(AssetIdx, SignalIdx), i64>,
) -> &'a mut Vec<SignalDedup> {
    dedup.entry(asset.idx).or_insert_with(|| {
        (0..asset.twin.signals.len())
            .map(|s| {
                SignalDedup::new(
                    seed.get(&(asset.idx, s as SignalIdx))
                        .copied()
                        .unwrap_or(i64::MIN),
                )
            })
            .collect()
    })
}

fn value_json(field: &str, v: &RawValue) -> String {
    let mut m = serde_json::Map::new();
    let j = match v {
        RawValue::Num(x) => serde_json::Number::from_f64(*x)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        RawValue::Bool(b) => serde_json::Value::Bool(*b),
        RawValue::Text(t) => serde_json::Value::String(truncate(t, KEPT_VALUE).to_string()),
        RawValue::Null => serde_json::Value::Null,
    };
    m.insert(truncate(field, 256).to_string(), j);
    serde_json::Value::Object(m).to_string()
}

/// Validate one message. `dedup` holds the filters of the message's asset;
/// `lsn` is the journal position of the message.
pub fn stage(
    msg: &Message<'_>,
    time: &TimePolicy,
    dedup: Option<&mut Vec<SignalDedup>>,
    lsn: u64,
) -> Staged {
    let mut out = Staged::default();
    let values: &[SignalValue] = match msg.decoded {
        Decoded::Error { code, reason } => {
            out.quarantine.push(QuarantineRow {
                signal: None,
                expectation: code,
                reason: reason.clone(),
                payload: kept_payload(msg.payload.as_bytes()),
            });
            return out;
        }
        Decoded::Partial {
            values,
            code,
            reason,
        } => {
            out.quarantine.push(QuarantineRow {
                signal: None,
                expectation: code,
                reason: reason.clone(),
                payload: kept_payload(msg.payload.as_bytes()),
            });
            values
        }
        Decoded::Values(v) => v,
        Decoded::Deferred(_) => &[],
    };
    let (Some(asset), Some(dedup)) = (msg.asset, dedup) else {
        if !values.is_empty() {
            out.quarantine.push(QuarantineRow {
                signal: None,
                expectation: "unknown_asset",
                reason: format!(
                    "no machine `{}` in the configuration",
                    msg.unknown_asset.unwrap_or_default()
                ),
                payload: kept_payload(msg.payload.as_bytes()),
            });
        }
        return out;
    };
    let twin = &asset.twin;
    for sv in values {
        let (idx, def) = match &sv.signal {
            SignalRef::Known(i) => match twin.signal_def(*i) {
                Some(d) => (*i, d),
                None => continue,
            },
            SignalRef::Unknown(field) => {
                // A field the twin type does not know: a new signal when the
                // type takes extra ones (numbers and booleans only).
                let kind = match sv.value {
                    RawValue::Bool(_) => Some(crate::assets::SignalKind::Bool),
                    RawValue::Num(_) => Some(crate::assets::SignalKind::Float),
                    _ => None,
                };
                let added = match kind {
                    Some(k) if twin.extra.add => twin
                        .extra
                        .get_or_add(field, k, &twin.signal_index)
                        .map(|(i, d)| (i, std::borrow::Cow::Owned((*d).clone()))),
                    None if twin.extra.add => Err(format!(
                        "a new field becomes a signal only with a number or boolean, got {}",
                        value_json(field, &sv.value)
                    )),
                    _ => Err(String::new()),
                };
                match added {
                    Ok(x) => x,
                    Err(why) => {
                        out.quarantine.push(QuarantineRow {
                            signal: Some(truncate(field, 256).to_string()),
                            expectation: "unknown_signal",
                            reason: if why.is_empty() {
                                format!(
                                    "twin type `{}` has no signal bound to field `{}`",
                                    twin.kind,
                                    truncate(field, 256)
                                )
                            } else {
                                format!(
                                    "twin type `{}` has no signal bound to field `{}` and adds none: {why}",
                                    twin.kind,
                                    truncate(field, 256)
                                )
                            },
                            payload: value_json(field, &sv.value),
                        });
                        continue;
                    }
                }
            }
        };
        let def: &crate::assets::SignalDef = &def;
        let checked =
            check_time(time, sv.ts_ms, msg.received_ms).and_then(|()| check(def, &sv.value));
        let x = match checked {
            Ok(x) => x,
            Err(r) => {
                out.rejected.push((idx, r.expectation));
                out.quarantine.push(QuarantineRow {
                    signal: Some(def.name.clone()),
                    expectation: r.expectation,
                    reason: r.reason,
                    payload: value_json(&def.name, &sv.value),
                });
                continue;
            }
        };
        let row = SilverRow {
            asset: asset.idx,
            signal: idx,
            ts_ms: sv.ts_ms,
            value: x,
            ingest_ms: msg.received_ms,
            uncertain: sv.uncertain,
        };
        if dedup.len() <= idx as usize {
            // An extra signal met for the first time on this asset.
            dedup.resize_with(idx as usize + 1, || SignalDedup::new(i64::MIN));
        }
        let Some(f) = dedup.get_mut(idx as usize) else {
            continue;
        };
        match f.check(sv.ts_ms) {
            Verdict::Duplicate => out.duplicates += 1,
            Verdict::Unsure => out.unsure.push(row),
            Verdict::New => {
                f.accept(sv.ts_ms, lsn);
                out.silver.push(row);
            }
        }
    }
    out.twin = out
        .silver
        .iter()
        .map(|r| TypedReading {
            signal: r.signal,
            ts_ms: r.ts_ms,
            value: r.value,
            ingest_ms: r.ingest_ms,
        })
        .collect();
    out
}

/// The model's names of a silver row: (plant, line, asset, signal).
pub fn names<'a>(
    model: &'a Arc<AssetModel>,
    r: &SilverRow,
) -> Option<(&'a str, &'a str, &'a str, std::borrow::Cow<'a, str>)> {
    let a = model.assets.get(r.asset as usize)?;
    let s = match a.twin.signals.get(r.signal as usize) {
        Some(s) => std::borrow::Cow::Borrowed(s.name.as_str()),
        None => std::borrow::Cow::Owned(a.twin.extra.def(r.signal)?.name.clone()),
    };
    Some((a.plant.as_str(), a.line.as_str(), a.id.as_str(), s))
}
