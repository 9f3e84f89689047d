//! Rows of a landing file to readings, like messages are mapped: the asset
//! by its id, each value to a signal of the asset's twin type by name.
//!
//! * **long**: one reading per row (`asset`, `signal`, `ts`, `value`
//!   columns); the value column may mix numbers, booleans and text.
//! * **wide**: one row per asset and time; every other column (but the
//!   ignored ones) is a signal named by its field's last segment
//!   (`signals.power_kw` -> `power_kw`); a null is no reading.
//!
//! Whatever cannot become a reading is an issue with its reason (a row
//! without an asset or a time, an asset not configured, a column that is
//! no signal, a value rescued from its column), quarantined by the ingest
//! stage. Text columns are dictionaries: ids are looked up once per
//! distinct value, not once per row.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, AsArray, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use deltalake::arrow::datatypes::{DataType, UInt32Type};

use super::config::Layout;
use super::infer::SourceSchema;
use super::RESCUED_COLUMN;
use crate::assets::{AssetIdx, AssetModel, SignalIdx, SignalKind};
use crate::connectors::{ChunkIssue, ChunkReading, RawValue};

/// Columns a layout needs that the schema lacks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no column `{missing}` for the {what} (columns: {have})")]
pub struct MissingColumn {
    pub missing: String,
    pub what: &'static str,
    pub have: String,
}

/// Where the keys and signals are in a source's schema.
#[derive(Debug, Clone)]
pub struct Mapping {
    layout: Layout,
    asset: usize,
    ts: usize,
    /// long: signal and value columns.
    signal: usize,
    value: usize,
    /// wide: (column, signal name) of every signal column.
    signals: Vec<(usize, String)>,
}

impl Mapping {
    /// The mapping of `schema` for a source's layout and key columns
    /// (given as field paths).
    pub fn new(
        schema: &SourceSchema,
        layout: Layout,
        keys: [&str; 4],
        ignore: &[String],
    ) -> Result<Mapping, MissingColumn> {
        let [asset, ts, signal, value] = keys;
        let have = || {
            schema
                .columns
                .iter()
                .map(|c| c.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let find = |p: &str, what: &'static str| {
            schema
                .columns
                .iter()
                .position(|c| c.path == p)
                .ok_or_else(|| MissingColumn {
                    missing: p.to_string(),
                    what,
                    have: have(),
                })
        };
        let mut m = Mapping {
            layout,
            asset: 0,
            ts: 0,
            signal: 0,
            value: 0,
            signals: Vec::new(),
        };
        if layout == Layout::Table {
            return Ok(m);
        }
        m.asset = find(asset, "asset id")?;
        m.ts = find(ts, "time")?;
        match layout {
            Layout::Long => {
                m.signal = find(signal, "signal name")?;
                m.value = find(value, "value")?;
            }
            Layout::Wide => {
                for (i, c) in schema.columns.iter().enumerate() {
                    if i == m.asset || i == m.ts || ignore.contains(&c.path) {
                        continue;
                    }
                    let leaf = c.path.rsplit('.').next().unwrap_or(&c.path).to_string();
                    m.signals.push((i, leaf));
                }
            }
            Layout::Table => {}
        }
        Ok(m)
    }
}

/// What a chunk's rows gave.
#[derive(Debug, Default)]
pub struct Mapped {
    pub readings: Vec<ChunkReading>,
    pub issues: Vec<ChunkIssue>,
    /// Layout `table`: the rows without rescued data.
    pub table_rows: Vec<RecordBatch>,
}

/// Text of a dictionary or plain string column, per distinct value.
enum Text<'a> {
    Dict(&'a DictionaryArray<UInt32Type>, StringArray),
    Plain(&'a StringArray),
}

impl<'a> Text<'a> {
    fn of(a: &'a dyn Array) -> Option<Text<'a>> {
        match a.data_type() {
            DataType::Dictionary(_, _) => {
                let d = a.as_any().downcast_ref::<DictionaryArray<UInt32Type>>()?;
                let v = d.values().as_string_opt::<i32>()?.clone();
                Some(Text::Dict(d, v))
            }
            DataType::Utf8 => Some(Text::Plain(a.as_string_opt::<i32>()?)),
            _ => None,
        }
    }
    /// (key of the distinct value, text) of row `r`, none when null.
    #[inline]
    fn get(&self, r: usize) -> Option<(usize, &str)> {
        match self {
            Text::Dict(d, v) => {
                if d.is_null(r) {
                    return None;
                }
                let k = d.keys().value(r) as usize;
                Some((k, v.value(k)))
            }
            Text::Plain(s) => (!s.is_null(r)).then(|| (r, s.value(r))),
        }
    }
}

/// A value column of any kind.
fn raw_value(a: &dyn Array, r: usize) -> RawValue {
    if a.is_null(r) {
        return RawValue::Null;
    }
    if let Some(f) = a.as_any().downcast_ref::<Float64Array>() {
        return RawValue::Num(f.value(r));
    }
    if let Some(b) = a.as_any().downcast_ref::<BooleanArray>() {
        return RawValue::Bool(b.value(r));
    }
    if let Some(i) = a.as_any().downcast_ref::<Int64Array>() {
        return RawValue::Num(i.value(r) as f64);
    }
    if let Some(t) = a.as_any().downcast_ref::<TimestampMillisecondArray>() {
        return RawValue::Num(t.value(r) as f64);
    }
    let text = match Text::of(a) {
        Some(t) => t.get(r).map(|(_, s)| s.to_string()),
        None => None,
    };
    match text {
        Some(s) => text_value(&s),
        None => RawValue::Null,
    }
}

/// A text value as a number or boolean when it is one (long files mix them).
pub fn text_value(s: &str) -> RawValue {
    if let Some(x) = super::text::parse_f64(s.trim().as_bytes()) {
        return RawValue::Num(x);
    }
    match s {
        "true" | "TRUE" | "True" => RawValue::Bool(true),
        "false" | "FALSE" | "False" => RawValue::Bool(false),
        _ => RawValue::Text(s.into()),
    }
}

fn value_text(v: &RawValue) -> String {
    match v {
        RawValue::Num(x) => serde_json::Number::from_f64(*x)
            .map(|n| n.to_string())
            .unwrap_or_else(|| x.to_string()),
        RawValue::Bool(b) => b.to_string(),
        RawValue::Text(t) => serde_json::Value::String(t.to_string()).to_string(),
        RawValue::Null => "null".into(),
    }
}

/// Per-batch caches: asset of each distinct id, signal of each (twin
/// type, distinct name).
struct Lookup<'m> {
    model: &'m AssetModel,
    assets: Vec<Option<Option<AssetIdx>>>,
}

impl<'m> Lookup<'m> {
    fn asset(&mut self, key: usize, id: &str) -> Option<AssetIdx> {
        if key >= self.assets.len() {
            self.assets.resize(key + 1, None);
        }
        *self.assets[key].get_or_insert_with(|| self.model.asset(id).map(|a| a.idx))
    }
}

/// A value of signal `name` (`sig` when the asset's twin type has it):
/// a reading, or an `unknown_signal` issue.
fn push_value(
    out: &mut Mapped,
    sig: Option<SignalIdx>,
    (asset, id, kind): (AssetIdx, &str, &str),
    name: &str,
    ts_ms: i64,
    value: RawValue,
    offset: u64,
) {
    match sig {
        Some(signal) => out.readings.push(ChunkReading {
            asset,
            signal,
            ts_ms,
            value,
        }),
        None => out.issues.push(ChunkIssue {
            asset: Some(id.to_string()),
            signal: Some(name.to_string()),
            code: "unknown_signal",
            reason: format!("twin type `{kind}` has no signal `{name}`"),
            payload: format!(
                "{{{}:{}}}",
                serde_json::Value::String(name.into()),
                value_text(&value)
            ),
            offset,
        }),
    }
}

/// Map the rows of `batches` (read with the source's schema).
pub fn map_rows(
    m: &Mapping,
    model: &AssetModel,
    batches: &[RecordBatch],
    offset_of_row: impl Fn(usize) -> u64,
) -> Mapped {
    let mut out = Mapped::default();
    let mut row0 = 0usize;
    for b in batches {
        map_batch(m, model, b, row0, &offset_of_row, &mut out);
        row0 += b.num_rows();
    }
    out
}

fn row_json(b: &RecordBatch, r: usize) -> String {
    let mut o = serde_json::Map::new();
    for (i, f) in b.schema().fields().iter().enumerate() {
        let v = raw_value(b.column(i).as_ref(), r);
        let j = serde_json::from_str(&value_text(&v)).unwrap_or(serde_json::Value::Null);
        o.insert(f.name().clone(), j);
    }
    let s = serde_json::Value::Object(o).to_string();
    crate::connectors::kept_payload(s.as_bytes())
}

fn map_batch(
    m: &Mapping,
    model: &AssetModel,
    b: &RecordBatch,
    row0: usize,
    offset_of_row: &impl Fn(usize) -> u64,
    out: &mut Mapped,
) {
    let rows = b.num_rows();
    let rescued = b
        .schema()
        .index_of(RESCUED_COLUMN)
        .ok()
        .and_then(|i| b.column(i).as_string_opt::<i32>().cloned());
    if m.layout == Layout::Table {
        if let Some(res) = &rescued {
            let mut keep = Vec::with_capacity(rows);
            for r in 0..rows {
                let bad = res.is_valid(r);
                keep.push(!bad);
                if bad {
                    out.issues.push(ChunkIssue {
                        asset: None,
                        signal: None,
                        code: "rescued_data",
                        reason: format!(
                            "values that do not fit the table's columns: {}",
                            res.value(r)
                        ),
                        payload: row_json(b, r),
                        offset: offset_of_row(row0 + r),
                    });
                }
            }
            let mask = BooleanArray::from(keep);
            if let Ok(f) = deltalake::arrow::compute::filter_record_batch(b, &mask) {
                // Silver holds the typed columns only.
                let cols: Vec<usize> = (0..f.num_columns())
                    .filter(|&i| f.schema().field(i).name() != RESCUED_COLUMN)
                    .collect();
                if let Ok(p) = f.project(&cols) {
                    out.table_rows.push(p);
                }
            }
        } else {
            out.table_rows.push(b.clone());
        }
        return;
    }
    let Some(asset_col) = Text::of(b.column(m.asset).as_ref()) else {
        return;
    };
    let Some(ts) = b
        .column(m.ts)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
    else {
        return;
    };
    let mut look = Lookup {
        model,
        assets: Vec::new(),
    };
    // (asset's twin kind, distinct signal key) -> signal
    let mut sig_cache: foldhash::HashMap<(usize, usize), Option<SignalIdx>> = Default::default();
    let signal_col = if m.layout == Layout::Long {
        Text::of(b.column(m.signal).as_ref())
    } else {
        None
    };
    let value_col = b.column(m.value).clone();
    for r in 0..rows {
        let offset = offset_of_row(row0 + r);
        let issue = |code: &'static str, reason: String, asset: Option<String>| ChunkIssue {
            asset,
            signal: None,
            code,
            reason,
            payload: row_json(b, r),
            offset,
        };
        let Some((akey, id)) = asset_col.get(r) else {
            out.issues.push(issue(
                "missing_asset",
                "the row has no asset id".into(),
                None,
            ));
            continue;
        };
        let Some(asset) = look.asset(akey, id) else {
            out.issues.push(issue(
                "unknown_asset",
                format!("no machine `{id}` in the configuration"),
                Some(id.to_string()),
            ));
            continue;
        };
        let a = &model.assets[asset as usize];
        if ts.is_null(r) {
            out.issues.push(issue(
                "missing_ts",
                "the row has no time".into(),
                Some(id.to_string()),
            ));
            continue;
        }
        let t = ts.value(r);
        if let Some(res) = rescued.as_ref().filter(|x| x.is_valid(r)) {
            out.issues.push(ChunkIssue {
                asset: Some(id.to_string()),
                signal: None,
                code: "rescued_data",
                reason: "values that do not fit the source's columns".into(),
                payload: crate::connectors::kept_payload(res.value(r).as_bytes()),
                offset,
            });
        }
        match m.layout {
            Layout::Long => {
                let Some((skey, name)) = signal_col.as_ref().and_then(|s| s.get(r)) else {
                    out.issues.push(issue(
                        "missing_signal",
                        "the row has no signal name".into(),
                        Some(id.to_string()),
                    ));
                    continue;
                };
                let twin_key = Arc::as_ptr(&a.twin) as usize;
                let sig = *sig_cache
                    .entry((twin_key, skey))
                    .or_insert_with(|| a.twin.signal_or_extra(name, SignalKind::Float));
                let value = raw_value(value_col.as_ref(), r);
                push_value(out, sig, (asset, id, &a.twin.kind), name, t, value, offset);
            }
            Layout::Wide => {
                for (c, name) in &m.signals {
                    let col = b.column(*c);
                    if col.is_null(r) {
                        continue;
                    }
                    // Columns are keyed above the dictionary keys of `long`.
                    let twin_key = Arc::as_ptr(&a.twin) as usize;
                    let sig = *sig_cache
                        .entry((twin_key, usize::MAX - *c))
                        .or_insert_with(|| a.twin.signal_or_extra(name, SignalKind::Float));
                    let value = raw_value(col.as_ref(), r);
                    push_value(out, sig, (asset, id, &a.twin.kind), name, t, value, offset);
                }
            }
            Layout::Table => {}
        }
    }
}
