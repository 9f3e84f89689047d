//! Schema inference on first sight, and the schema a landing source keeps
//! as files arrive (`schema.json` in the source's state folder, one
//! version per change).
//!
//! Inference reads a sample (the first lines of a JSON-lines or CSV file,
//! a Parquet file's own schema). Nested JSON objects become one column per
//! leaf (`signals.power_kw` -> column `signals_power_kw`, the fields of
//! an object in name order); numbers are
//! doubles (so a column that starts with integers takes decimals later
//! without a type change), `true`/`false` booleans, anything else text;
//! the time column is a timestamp (epoch ms or ISO-8601). Arrays are not
//! columns: they are listed as ignored (and rescued in rescue mode).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{ColumnKind, FileColumn, FileError, FileSchema};

/// Lines (or rows) sampled to infer a schema.
pub const SAMPLE_LINES: usize = 1000;

/// One column of a source's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaColumn {
    /// Column name in the tables.
    pub name: String,
    /// Where it is read from: JSON field path (dots), CSV header, Parquet column.
    pub path: String,
    /// `double`, `long`, `string`, `boolean` or `timestamp`.
    pub kind: String,
}

/// A landing source's schema.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceSchema {
    /// 0 before the first file; +1 on every change.
    pub version: u32,
    pub columns: Vec<SchemaColumn>,
    /// Fields seen that are not columns (arrays; new fields under mode `none`).
    #[serde(default)]
    pub ignored: Vec<String>,
}

impl SourceSchema {
    /// The reader's schema: every column nullable (rows without a key are
    /// reported by the mapping, with their reason).
    pub fn file_schema(&self, rescue: bool, detect_new: bool) -> FileSchema {
        let mut s = FileSchema::new(
            self.columns
                .iter()
                .map(|c| FileColumn {
                    name: c.name.clone(),
                    source: c.path.split('.').map(str::to_string).collect(),
                    kind: ColumnKind::parse(&c.kind).unwrap_or(ColumnKind::Text),
                    nullable: true,
                })
                .collect(),
        );
        s.rescue = rescue;
        s.detect_new = detect_new;
        s
    }

    /// The column read from `path`.
    pub fn column(&self, path: &str) -> Option<&SchemaColumn> {
        self.columns.iter().find(|c| c.path == path)
    }

    /// Whether `path` is already known (a column or ignored).
    pub fn knows(&self, path: &str) -> bool {
        self.column(path).is_some() || self.ignored.iter().any(|p| p == path)
    }

    /// Add a column for `path` (named after it, made unique), unless known.
    pub fn add(&mut self, path: &str, kind: ColumnKind) -> bool {
        if self.knows(path) {
            return false;
        }
        let base: String = path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut name = base.clone();
        let mut n = 2;
        while self.columns.iter().any(|c| c.name == name) || name == super::RESCUED_COLUMN {
            name = format!("{base}_{n}");
            n += 1;
        }
        self.columns.push(SchemaColumn {
            name,
            path: path.to_string(),
            kind: kind.as_str().to_string(),
        });
        true
    }

    /// Remember a field that is not a column.
    pub fn ignore(&mut self, path: &str) -> bool {
        if self.knows(path) {
            return false;
        }
        self.ignored.push(path.to_string());
        true
    }

    /// Add what an inference found; returns the paths added as columns.
    pub fn merge(&mut self, found: &Inferred) -> Vec<String> {
        let mut added = Vec::new();
        for (path, kind) in &found.columns {
            if self.add(path, *kind) {
                added.push(path.clone());
            }
        }
        for p in &found.ignored {
            self.ignore(p);
        }
        added
    }
}

/// What a sample showed: columns in order of first appearance.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Inferred {
    pub columns: Vec<(String, ColumnKind)>,
    pub ignored: Vec<String>,
}

/// Kinds seen for one path so far.
#[derive(Default)]
struct Seen {
    order: Vec<String>,
    kinds: BTreeMap<String, Option<ColumnKind>>,
    ignored: Vec<String>,
}

impl Seen {
    fn note(&mut self, path: &str, k: Option<ColumnKind>) {
        match self.kinds.get_mut(path) {
            None => {
                self.order.push(path.to_string());
                self.kinds.insert(path.to_string(), k);
            }
            Some(prev) => {
                *prev = match (*prev, k) {
                    (None, k) | (k, None) => k,
                    (Some(a), Some(b)) if a == b => Some(a),
                    _ => Some(ColumnKind::Text),
                }
            }
        }
    }

    fn json(&mut self, prefix: &str, v: &serde_json::Value, ts: &str) {
        use serde_json::Value as J;
        match v {
            J::Object(m) => {
                for (k, v) in m {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    self.json(&path, v, ts);
                }
            }
            J::Array(_) => {
                if !self.ignored.iter().any(|p| p == prefix) {
                    self.ignored.push(prefix.to_string());
                }
            }
            _ if prefix == ts => self.note(prefix, Some(ColumnKind::Timestamp)),
            J::Null => self.note(prefix, None),
            J::Bool(_) => self.note(prefix, Some(ColumnKind::Bool)),
            J::Number(_) => self.note(prefix, Some(ColumnKind::Float)),
            J::String(_) => self.note(prefix, Some(ColumnKind::Text)),
        }
    }

    fn text(&mut self, path: &str, v: &str, ts: &str) {
        if v.is_empty() {
            return self.note(path, None);
        }
        let k = if path == ts {
            ColumnKind::Timestamp
        } else if matches!(v, "true" | "false" | "TRUE" | "FALSE" | "True" | "False") {
            ColumnKind::Bool
        } else if super::text::parse_f64(v.as_bytes()).is_some() {
            ColumnKind::Float
        } else {
            ColumnKind::Text
        };
        self.note(path, Some(k));
    }

    fn finish(self) -> Inferred {
        let mut kinds = self.kinds;
        Inferred {
            columns: self
                .order
                .into_iter()
                .map(|p| {
                    let k = kinds.remove(&p).flatten().unwrap_or(ColumnKind::Text);
                    (p, k)
                })
                .collect(),
            ignored: self.ignored,
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> FileError + '_ {
    move |source| FileError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Infer the columns of a JSON-lines file from its first lines (lines that
/// are not JSON objects are skipped here; the reader reports them).
pub fn infer_jsonl(path: &Path, ts: &str) -> Result<Inferred, FileError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut seen = Seen::default();
    for line in BufReader::new(f).lines().take(SAMPLE_LINES) {
        let line = line.map_err(io(path))?;
        if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str(&line) {
            seen.json("", &v, ts);
        }
    }
    Ok(seen.finish())
}

/// The columns of the JSON value `raw` found at `path` (a new field's
/// sample): one column, or one per leaf of an object.
pub fn infer_json_value(path: &str, raw: &str, ts: &str) -> Inferred {
    let mut seen = Seen::default();
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) => seen.json(path, &v, ts),
        Err(_) => seen.note(path, Some(ColumnKind::Text)),
    }
    seen.finish()
}

/// Infer the columns of a CSV file from its header and first rows.
pub fn infer_csv(path: &Path, ts: &str) -> Result<Inferred, FileError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut lines = BufReader::new(f).lines();
    let Some(header) = lines.next().transpose().map_err(io(path))? else {
        return Ok(Inferred::default());
    };
    let names: Vec<String> = super::csv::split_line(header.trim_end_matches('\r'))
        .map_err(|message| FileError::Format {
            path: path.display().to_string(),
            message: format!("header: {message}"),
        })?
        .into_iter()
        .map(|n| n.trim().to_string())
        .collect();
    let mut seen = Seen::default();
    for n in &names {
        seen.note(n, None);
    }
    for line in lines.take(SAMPLE_LINES) {
        let line = line.map_err(io(path))?;
        let Ok(fields) = super::csv::split_line(line.trim_end_matches('\r')) else {
            continue;
        };
        for (n, v) in names.iter().zip(fields) {
            seen.text(n, &v, ts);
        }
    }
    let mut out = seen.finish();
    out.columns.retain(|(n, _)| !n.is_empty());
    Ok(out)
}

/// The columns of a Parquet file, from its schema.
pub fn infer_parquet(path: &Path, ts: &str) -> Result<Inferred, FileError> {
    let schema = super::parquet::file_schema(path)?;
    let mut out = Inferred::default();
    for f in schema.fields() {
        match super::parquet::kind_of(f.data_type()) {
            Some(_) if f.name() == ts => {
                out.columns.push((f.name().clone(), ColumnKind::Timestamp))
            }
            Some(k) => out.columns.push((f.name().clone(), k)),
            None => out.ignored.push(f.name().clone()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn json_sample_flattens_and_widens_to_text() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            r#"{{"machine":"m1","ts":"2026-01-01T00:00:00Z","signals":{{"p":1,"on":true}},"tags":[1]}}"#
        )
        .unwrap();
        writeln!(
            f,
            r#"{{"machine":"m2","ts":1,"signals":{{"p":2.5,"on":null,"mode":"x"}},"n":1}}"#
        )
        .unwrap();
        writeln!(f, r#"{{"machine":"m2","ts":1,"n":"abc"}}"#).unwrap();
        writeln!(f, "not json").unwrap();
        f.flush().unwrap();
        let i = infer_jsonl(f.path(), "ts").unwrap();
        let cols: Vec<(&str, ColumnKind)> =
            i.columns.iter().map(|(p, k)| (p.as_str(), *k)).collect();
        // Fields of one object come in name order (serde_json's map).
        assert_eq!(
            cols,
            vec![
                ("machine", ColumnKind::Text),
                ("signals.on", ColumnKind::Bool),
                ("signals.p", ColumnKind::Float),
                ("ts", ColumnKind::Timestamp),
                ("n", ColumnKind::Text),
                ("signals.mode", ColumnKind::Text),
            ]
        );
        assert_eq!(i.ignored, vec!["tags".to_string()]);
        let mut s = SourceSchema::default();
        assert_eq!(s.merge(&i).len(), 6);
        assert_eq!(s.columns[2].name, "signals_p");
        assert_eq!(s.column("signals.on").unwrap().kind, "boolean");
        assert!(s.merge(&i).is_empty());
        let v = infer_json_value("extra", r#"{"a":1,"b":"x"}"#, "ts");
        assert_eq!(
            v.columns,
            vec![
                ("extra.a".to_string(), ColumnKind::Float),
                ("extra.b".to_string(), ColumnKind::Text)
            ]
        );
    }

    #[test]
    fn csv_sample_types_columns() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(
            f,
            "ts,machine,temp,ok,note\n2026-01-01T00:00:00Z,m1,1.5,true,\n2026-01-01T00:00:01Z,m1,2,false,\"a, b\"\n"
        )
        .unwrap();
        f.flush().unwrap();
        let i = infer_csv(f.path(), "ts").unwrap();
        let kinds: Vec<ColumnKind> = i.columns.iter().map(|c| c.1).collect();
        assert_eq!(
            kinds,
            vec![
                ColumnKind::Timestamp,
                ColumnKind::Text,
                ColumnKind::Float,
                ColumnKind::Bool,
                ColumnKind::Text
            ]
        );
    }
}
