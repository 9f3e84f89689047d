//! Files dropped in a landing folder (JSON lines, CSV, Parquet): the
//! watcher that takes each complete file once ([`landing`]), schema
//! inference and evolution ([`infer`]), rows to readings ([`map`]), and
//! the readers that turn files into typed Arrow batches with a given schema.
//!
//! A file is split into as many byte ranges as there are cores; each range
//! starts after a newline, is read in 8 MiB chunks (`pread`, no whole-file
//! buffer) and parsed into its own column buffers, so the cores never share
//! anything but the file. Text columns are dictionary-encoded as they are
//! read (a handful of machine, plant and line ids repeat millions of times).
//!
//! A line that cannot be parsed is not dropped: it is returned as
//! [`Rejected`] with its byte offset, the reason and the text, for the
//! caller to quarantine; the good lines still come through. Errors that make
//! the whole file unusable (cannot read it, CSV header without a required
//! column) are [`FileError`]s.

pub mod config;
mod csv;
mod dict;
pub mod infer;
mod jsonl;
mod landing;
pub mod map;
pub mod pages;
pub mod parquet;
pub mod store;
pub mod text;

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use deltalake::arrow::buffer::NullBuffer;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub use csv::{read_csv, read_csv_part};
use dict::DictBuilder;
pub use jsonl::{read_jsonl, read_jsonl_part};
pub use landing::{FileEntry, Files, FilesConnector, LandingStats, LandingStatus, Manifest};
pub use parquet::read_table as read_parquet_table;

/// Errors that stop a whole file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
    #[error("{path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
}

/// Type of a column read from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// UTC epoch ms from an integer or an ISO-8601 text; Arrow `Timestamp(ms, UTC)`.
    Timestamp,
    Float,
    Int,
    /// UTF-8 text, dictionary-encoded.
    Text,
    /// `true`/`false` (JSON booleans; `true`, `false`, `1`, `0` in text).
    Bool,
}

impl ColumnKind {
    /// How the kind is named in messages and schema files.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnKind::Timestamp => "timestamp",
            ColumnKind::Float => "double",
            ColumnKind::Int => "long",
            ColumnKind::Text => "string",
            ColumnKind::Bool => "boolean",
        }
    }

    /// The kind of a name given by [`ColumnKind::as_str`].
    pub fn parse(s: &str) -> Option<ColumnKind> {
        Some(match s {
            "timestamp" => ColumnKind::Timestamp,
            "double" => ColumnKind::Float,
            "long" => ColumnKind::Int,
            "string" => ColumnKind::Text,
            "boolean" => ColumnKind::Bool,
            _ => return None,
        })
    }
}

/// Name of the column that holds what did not fit the schema (rescue mode).
pub const RESCUED_COLUMN: &str = "_rescued_data";

/// One output column and where it comes from.
#[derive(Debug, Clone)]
pub struct FileColumn {
    /// Output column name.
    pub name: String,
    /// JSON: the field path (`["signals", "power_kw"]`); CSV: the header name.
    pub source: Vec<String>,
    pub kind: ColumnKind,
    /// Whether a missing or null value is allowed (else the line is rejected).
    pub nullable: bool,
}

impl FileColumn {
    /// A column read from a field (path separated by dots) of the same name's leaf.
    pub fn new(name: &str, source: &str, kind: ColumnKind, nullable: bool) -> FileColumn {
        FileColumn {
            name: name.into(),
            source: source.split('.').map(str::to_string).collect(),
            kind,
            nullable,
        }
    }
}

/// The columns to read.
#[derive(Debug, Clone)]
pub struct FileSchema {
    pub columns: Vec<FileColumn>,
    /// Values that do not fit their column's type and fields the schema
    /// does not have go, as a JSON object, into a last column
    /// [`RESCUED_COLUMN`] instead of rejecting the line (the column is then
    /// null, when it may be).
    pub rescue: bool,
    /// Report the fields a file has that the schema does not
    /// ([`ParsedFile::new_fields`]).
    pub detect_new: bool,
}

impl FileSchema {
    /// A schema of these columns, nothing rescued or detected.
    pub fn new(columns: Vec<FileColumn>) -> FileSchema {
        FileSchema {
            columns,
            rescue: false,
            detect_new: false,
        }
    }

    /// Arrow schema of the batches produced.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                let t = match c.kind {
                    ColumnKind::Timestamp => {
                        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
                    }
                    ColumnKind::Float => DataType::Float64,
                    ColumnKind::Int => DataType::Int64,
                    ColumnKind::Text => {
                        DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8))
                    }
                    ColumnKind::Bool => DataType::Boolean,
                };
                Field::new(&c.name, t, c.nullable)
            })
            .collect();
        if self.rescue {
            fields.push(Field::new(RESCUED_COLUMN, DataType::Utf8, true));
        }
        Arc::new(Schema::new(fields))
    }
}

/// A line that was not loaded, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Byte offset of the line in the file.
    pub offset: u64,
    pub reason: String,
    /// The line (cut at 1 KiB).
    pub text: String,
}

/// A field a file has that the schema does not, with one of its values.
#[derive(Debug, Clone, PartialEq)]
pub struct NewField {
    /// JSON: the field path (`signals.vibration`); CSV: the header name.
    pub path: String,
    /// The value's text as it stood in the file (JSON: the JSON value).
    pub sample: String,
}

/// Distinct new fields remembered per file.
const MAX_NEW_FIELDS: usize = 256;

/// What a file gave.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub batches: Vec<RecordBatch>,
    pub rejected: Vec<Rejected>,
    /// Fields not in the schema (when the schema asks to detect them), in
    /// order of first appearance.
    pub new_fields: Vec<NewField>,
}

impl ParsedFile {
    /// Rows loaded.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

const BATCH_ROWS: usize = 131_072;
const CHUNK: usize = 8 << 20;

/// Values of one column plus the (rare) rows that are null, so that a
/// column without nulls costs no validity work per row.
struct Vals<T> {
    v: Vec<T>,
    nulls: Vec<u32>,
}

impl<T: Copy + Default> Vals<T> {
    fn new() -> Self {
        Vals {
            v: Vec::with_capacity(BATCH_ROWS),
            nulls: Vec::new(),
        }
    }
    #[inline]
    fn push(&mut self, x: T) {
        self.v.push(x);
    }
    fn push_null(&mut self) {
        self.nulls.push(self.v.len() as u32);
        self.v.push(T::default());
    }
    fn truncate(&mut self, n: usize) {
        self.v.truncate(n);
        while self.nulls.last().is_some_and(|&r| r as usize >= n) {
            self.nulls.pop();
        }
    }
    /// The values and validity so far; the buffers restart empty.
    fn take(&mut self) -> (Vec<T>, Option<NullBuffer>) {
        let v = std::mem::replace(&mut self.v, Vec::with_capacity(BATCH_ROWS));
        let nulls = std::mem::take(&mut self.nulls);
        if nulls.is_empty() {
            return (v, None);
        }
        let mut ok = vec![true; v.len()];
        for r in nulls {
            ok[r as usize] = false;
        }
        (v, Some(NullBuffer::from(ok)))
    }
}

/// One column being filled.
enum Buf {
    I64(Vals<i64>),
    F64(Vals<f64>),
    Bool(Vals<bool>),
    Text(DictBuilder),
}

/// Column buffers of one thread, with row rollback for rejected lines.
pub(crate) struct Columns {
    schema: SchemaRef,
    kinds: Vec<ColumnKind>,
    nullable: Vec<bool>,
    bufs: Vec<Buf>,
    rows: usize,
    set: Vec<bool>,
    batches: Vec<RecordBatch>,
    /// Rescue mode: per row, the JSON object of what did not fit (or none).
    rescued: Option<Vec<Option<Box<str>>>>,
    /// The current row's rescued `"key":value` pairs.
    rescue_row: String,
    detect_new: bool,
    new_fields: Vec<NewField>,
    /// The last ISO date parsed in a timestamp column and its day.
    days: text::DayCache,
}

impl Columns {
    fn new(schema: &FileSchema) -> Columns {
        let bufs = schema
            .columns
            .iter()
            .map(|c| match c.kind {
                ColumnKind::Timestamp | ColumnKind::Int => Buf::I64(Vals::new()),
                ColumnKind::Float => Buf::F64(Vals::new()),
                ColumnKind::Bool => Buf::Bool(Vals::new()),
                ColumnKind::Text => Buf::Text(DictBuilder::default()),
            })
            .collect();
        Columns {
            schema: schema.arrow_schema(),
            kinds: schema.columns.iter().map(|c| c.kind).collect(),
            nullable: schema.columns.iter().map(|c| c.nullable).collect(),
            bufs,
            rows: 0,
            set: vec![false; schema.columns.len()],
            batches: Vec::new(),
            rescued: schema.rescue.then(Vec::new),
            rescue_row: String::new(),
            detect_new: schema.detect_new || schema.rescue,
            new_fields: Vec::new(),
            days: text::DayCache::default(),
        }
    }

    /// Whether values that do not fit are rescued rather than rejected.
    #[inline]
    fn rescuing(&self) -> bool {
        self.rescued.is_some()
    }

    /// Whether fields outside the schema are wanted (detected or rescued).
    #[inline]
    fn wants_unknown(&self) -> bool {
        self.detect_new
    }

    /// A field outside the schema: remember it (first value as sample) and,
    /// in rescue mode, rescue its value. `raw_json` is the value as JSON.
    fn unknown_field(&mut self, path: &str, raw_json: &str) {
        if self.new_fields.len() < MAX_NEW_FIELDS && !self.new_fields.iter().any(|f| f.path == path)
        {
            self.new_fields.push(NewField {
                path: path.to_string(),
                sample: raw_json.to_string(),
            });
        }
        if self.rescuing() {
            self.add_rescued(path, raw_json);
        }
    }

    fn add_rescued(&mut self, key: &str, raw_json: &str) {
        self.rescue_row
            .push(if self.rescue_row.is_empty() { '{' } else { ',' });
        self.rescue_row
            .push_str(&serde_json::Value::String(key.to_string()).to_string());
        self.rescue_row.push(':');
        self.rescue_row.push_str(raw_json);
    }

    /// Column `c`'s value `raw_json` does not fit its type: in rescue mode
    /// the column is null and the value rescued (Ok); otherwise `reason`.
    fn rescue(&mut self, c: usize, raw_json: &str, reason: String) -> Result<(), String> {
        if !self.rescuing() || !self.nullable[c] {
            return Err(reason);
        }
        self.set[c] = false;
        self.push_null(c)?;
        let name = self.name(c).to_string();
        self.add_rescued(&name, raw_json);
        Ok(())
    }

    fn name(&self, c: usize) -> &str {
        self.schema.field(c).name()
    }

    /// Mark column `c` as given in this row; error on a repeated field.
    #[inline]
    fn claim(&mut self, c: usize) -> Result<(), String> {
        if std::mem::replace(&mut self.set[c], true) {
            return Err(format!("field `{}` given twice", self.name(c)));
        }
        Ok(())
    }

    #[inline]
    fn push_i64(&mut self, c: usize, v: i64) -> Result<(), String> {
        self.claim(c)?;
        if let Buf::I64(b) = &mut self.bufs[c] {
            b.push(v);
        }
        Ok(())
    }

    #[inline]
    fn push_f64(&mut self, c: usize, v: f64) -> Result<(), String> {
        self.claim(c)?;
        if let Buf::F64(b) = &mut self.bufs[c] {
            b.push(v);
        }
        Ok(())
    }

    #[inline]
    fn push_bool(&mut self, c: usize, v: bool) -> Result<(), String> {
        self.claim(c)?;
        if let Buf::Bool(b) = &mut self.bufs[c] {
            b.push(v);
        }
        Ok(())
    }

    #[inline]
    fn push_text(&mut self, c: usize, s: &[u8]) -> Result<(), String> {
        self.claim(c)?;
        if let Buf::Text(d) = &mut self.bufs[c] {
            d.push(s)
                .map_err(|_| format!("field `{}`: not UTF-8", self.schema.field(c).name()))?;
        }
        Ok(())
    }

    #[inline]
    fn push_null(&mut self, c: usize) -> Result<(), String> {
        self.claim(c)?;
        if !self.nullable[c] {
            return Err(format!("field `{}` is null", self.name(c)));
        }
        match &mut self.bufs[c] {
            Buf::I64(b) => b.push_null(),
            Buf::F64(b) => b.push_null(),
            Buf::Bool(b) => b.push_null(),
            Buf::Text(d) => d.push_null(),
        }
        Ok(())
    }

    /// Push a text value into column `c`, converted to the column's kind.
    fn push_parsed(&mut self, c: usize, s: &[u8]) -> Result<(), String> {
        let bad = |me: &Self, what: &str| {
            format!(
                "field `{}`: `{}` is not {what}",
                me.name(c),
                String::from_utf8_lossy(s)
            )
        };
        let r = match self.kinds[c] {
            ColumnKind::Text => return self.push_text(c, s),
            ColumnKind::Float => match text::parse_f64(s) {
                Some(v) => return self.push_f64(c, v),
                None => bad(self, "a number"),
            },
            ColumnKind::Int => match text::parse_i64(s) {
                Some(v) => return self.push_i64(c, v),
                None => bad(self, "an integer"),
            },
            ColumnKind::Timestamp => {
                match text::parse_i64(s).or_else(|| text::parse_iso_ms_cached(s, &mut self.days)) {
                    Some(v) => return self.push_i64(c, v),
                    None => bad(self, "a timestamp (epoch ms or ISO-8601)"),
                }
            }
            ColumnKind::Bool => match s {
                b"true" | b"TRUE" | b"True" | b"1" => return self.push_bool(c, true),
                b"false" | b"FALSE" | b"False" | b"0" => return self.push_bool(c, false),
                _ => bad(self, "a boolean"),
            },
        };
        let raw = serde_json::Value::String(String::from_utf8_lossy(s).into_owned()).to_string();
        self.rescue(c, &raw, r)
    }

    /// Close the current row: unset columns become null (or reject the row).
    fn end_row(&mut self) -> Result<(), String> {
        for c in 0..self.set.len() {
            if !self.set[c] {
                if !self.nullable[c] {
                    return Err(format!("field `{}` is missing", self.name(c)));
                }
                self.push_null(c)?;
            }
        }
        self.set.iter_mut().for_each(|s| *s = false);
        if let Some(r) = &mut self.rescued {
            if self.rescue_row.is_empty() {
                r.push(None);
            } else {
                self.rescue_row.push('}');
                r.push(Some(std::mem::take(&mut self.rescue_row).into_boxed_str()));
            }
        }
        self.rows += 1;
        Ok(())
    }

    /// Undo a partly pushed row.
    fn rollback(&mut self) {
        let n = self.rows;
        for b in &mut self.bufs {
            match b {
                Buf::I64(b) => b.truncate(n),
                Buf::F64(b) => b.truncate(n),
                Buf::Bool(b) => b.truncate(n),
                Buf::Text(d) => d.truncate(n),
            }
        }
        self.set.iter_mut().for_each(|s| *s = false);
        self.rescue_row.clear();
    }

    fn flush(&mut self) -> Result<(), deltalake::arrow::error::ArrowError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.bufs.len());
        for (b, kind) in self.bufs.iter_mut().zip(&self.kinds) {
            cols.push(match b {
                Buf::I64(b) => {
                    let (v, nulls) = b.take();
                    if *kind == ColumnKind::Timestamp {
                        Arc::new(
                            TimestampMillisecondArray::new(v.into(), nulls).with_timezone("UTC"),
                        )
                    } else {
                        Arc::new(Int64Array::new(v.into(), nulls))
                    }
                }
                Buf::F64(b) => {
                    let (v, nulls) = b.take();
                    Arc::new(Float64Array::new(v.into(), nulls))
                }
                Buf::Bool(b) => {
                    let (v, nulls) = b.take();
                    Arc::new(BooleanArray::new(v.into_iter().collect(), nulls))
                }
                Buf::Text(d) => Arc::new(d.finish()?),
            });
        }
        if let Some(r) = &mut self.rescued {
            let rows = std::mem::take(r);
            cols.push(Arc::new(StringArray::from_iter(
                rows.iter().map(|x| x.as_deref()),
            )));
        }
        self.batches
            .push(RecordBatch::try_new(self.schema.clone(), cols)?);
        self.rows = 0;
        Ok(())
    }
}

/// Parse one line into the columns.
pub(crate) trait LineParser: Sync {
    fn parse(&self, line: &[u8], cols: &mut Columns) -> Result<(), String>;
}

/// Read `path` in parallel ranges, parsing each line after `skip_first`
/// (a header) with `parser`.
pub(crate) fn read_lines(
    path: &Path,
    schema: &FileSchema,
    parser: &dyn LineParser,
    data_start: u64,
    threads: usize,
    range: Option<Range<u64>>,
) -> Result<ParsedFile, FileError> {
    let pstr = path.display().to_string();
    let io = |source| FileError::Io {
        path: pstr.clone(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let flen = file.metadata().map_err(io)?.len();
    // Lines that start in [data_start, len): the whole file, or a slice of it.
    let first_at_line_start = range.as_ref().is_none_or(|r| r.start <= data_start);
    let (data_start, len) = match range {
        Some(r) => (r.start.max(data_start).min(flen), r.end.min(flen)),
        None => (data_start, flen),
    };
    let threads = threads.max(1) as u64;
    let span = (len - data_start.min(len)).div_ceil(threads).max(1);
    type ThreadOut = Result<(Vec<RecordBatch>, Vec<Rejected>, Vec<NewField>), FileError>;
    // On the process-wide worker pool (threads and allocator heaps persist
    // between files).
    let results: Vec<ThreadOut> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let (file, pstr) = (&file, &pstr);
            let a = (data_start + t * span).min(len);
            let b = (data_start + (t + 1) * span).min(len);
            let mut cols = Columns::new(schema);
            let mut rejected = Vec::new();
            let arrow = |source| FileError::Arrow {
                path: pstr.clone(),
                source,
            };
            scan_range(
                file,
                a,
                b,
                a == data_start && first_at_line_start,
                |off, line| {
                    if line.is_empty() {
                        return Ok(());
                    }
                    let r = parser.parse(line, &mut cols).and_then(|_| cols.end_row());
                    if let Err(reason) = r {
                        cols.rollback();
                        let cut = &line[..line.len().min(1024)];
                        rejected.push(Rejected {
                            offset: off,
                            reason,
                            text: String::from_utf8_lossy(cut).into_owned(),
                        });
                    } else if cols.rows >= BATCH_ROWS {
                        cols.flush().map_err(arrow)?;
                    }
                    Ok(())
                },
            )
            .map_err(|source| FileError::Io {
                path: pstr.clone(),
                source,
            })??;
            cols.flush().map_err(arrow)?;
            Ok((cols.batches, rejected, cols.new_fields))
        })
        .collect();
    let mut out = ParsedFile::default();
    for r in results {
        let (b, rej, new) = r?;
        out.batches.extend(b);
        out.rejected.extend(rej);
        for f in new {
            if !out.new_fields.iter().any(|g| g.path == f.path) {
                out.new_fields.push(f);
            }
        }
    }
    Ok(out)
}

/// Call `f(offset, line)` for every line that starts in `[a, b)`. Unless
/// `at_line_start`, the range begins after the first newline at or after
/// `a - 1`. A trailing `\r` is removed.
fn scan_range<E>(
    file: &File,
    a: u64,
    b: u64,
    at_line_start: bool,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
) -> std::io::Result<Result<(), E>> {
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    // File offset of buf[0].
    let mut pos = if at_line_start { a } else { a - 1 };
    let mut skip_partial = !at_line_start;
    loop {
        let filled = buf.len();
        buf.resize(filled + CHUNK, 0);
        let n = read_full(file, &mut buf[filled..], pos + filled as u64)?;
        buf.truncate(filled + n);
        let eof = n == 0;
        let mut ls = 0usize;
        if skip_partial {
            match memchr::memchr(b'\n', &buf) {
                Some(nl) => {
                    ls = nl + 1;
                    skip_partial = false;
                }
                None if eof => return Ok(Ok(())),
                None => {
                    pos += buf.len() as u64;
                    buf.clear();
                    continue;
                }
            }
        }
        while let Some(nl) = memchr::memchr(b'\n', &buf[ls..]) {
            let off = pos + ls as u64;
            if off >= b {
                return Ok(Ok(()));
            }
            let mut line = &buf[ls..ls + nl];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if let Err(e) = f(off, line) {
                return Ok(Err(e));
            }
            ls += nl + 1;
        }
        if eof {
            let off = pos + ls as u64;
            if ls < buf.len() && off < b {
                if let Err(e) = f(off, &buf[ls..]) {
                    return Ok(Err(e));
                }
            }
            return Ok(Ok(()));
        }
        buf.drain(..ls);
        pos += ls as u64;
    }
}

fn read_full(file: &File, buf: &mut [u8], mut off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], off)?;
        if n == 0 {
            break;
        }
        done += n;
        off += n as u64;
    }
    Ok(done)
}

/// Number of reader threads: the worker pool's size (the machine's cores).
pub fn default_threads() -> usize {
    rayon::current_num_threads()
}
