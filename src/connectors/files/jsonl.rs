//! JSON lines: one object per line, fields picked by path (`signals.power_kw`)
//! into typed columns; other fields are skipped without being decoded.
//!
//! The scanner is written for this job rather than building a JSON tree per
//! line: it walks the bytes once, compares keys against the few wanted
//! names of the current level, and parses a wanted value straight into its
//! column. It still checks the whole line is well-formed JSON (an unclosed
//! string or a missing brace rejects the line), so a damaged line is
//! reported, never half-loaded.

use std::ops::Range;
use std::path::Path;

use super::{read_lines, ColumnKind, Columns, FileError, FileSchema, LineParser, ParsedFile};

/// Wanted fields of one object level.
#[derive(Default)]
struct Level {
    fields: Vec<(Vec<u8>, Target)>,
}

enum Target {
    Column(usize),
    Object(Level),
}

impl Level {
    fn insert(&mut self, path: &[String], col: usize) -> Result<(), String> {
        let key = path[0].as_bytes().to_vec();
        let pos = self.fields.iter().position(|f| f.0 == key);
        if path.len() == 1 {
            if pos.is_some() {
                return Err(format!("field `{}` mapped twice", path[0]));
            }
            self.fields.push((key, Target::Column(col)));
            return Ok(());
        }
        let i = match pos {
            Some(i) => i,
            None => {
                self.fields.push((key, Target::Object(Level::default())));
                self.fields.len() - 1
            }
        };
        match &mut self.fields[i].1 {
            Target::Object(l) => l.insert(&path[1..], col),
            Target::Column(_) => Err(format!("field `{}` is both a value and an object", path[0])),
        }
    }

    #[inline]
    fn find(&self, key: &[u8]) -> Option<&Target> {
        // Compare length and first byte before the bytes: field names of
        // one level rarely share both.
        let (len, first) = (key.len(), key.first().copied());
        self.fields
            .iter()
            .find(|f| {
                f.0.len() == len
                    && f.0.first().copied() == first
                    // Inline byte loop: names are short, a memcmp call costs more.
                    && f.0.iter().zip(key).all(|(a, b)| a == b)
            })
            .map(|f| &f.1)
    }
}

struct JsonParser {
    root: Level,
    kinds: Vec<ColumnKind>,
    /// The layout of the file's first line, for the fast path.
    shape: Option<Vec<Seg>>,
}

/// One piece of a line's layout: literal bytes (keys, punctuation) that
/// must match exactly, then the value of a column (none after the last).
struct Seg {
    lit: Vec<u8>,
    col: Option<(usize, ColumnKind)>,
}

/// Read a JSON-lines file into batches of `schema` (see the module docs of
/// [`super`]), with `threads` readers.
pub fn read_jsonl(
    path: &Path,
    schema: &FileSchema,
    threads: usize,
) -> Result<ParsedFile, FileError> {
    read_jsonl_part(path, schema, threads, None)
}

/// Like [`read_jsonl`], only the lines that start in `range` (bytes) when
/// given: a large file read in slices that together hold every line once.
pub fn read_jsonl_part(
    path: &Path,
    schema: &FileSchema,
    threads: usize,
    range: Option<Range<u64>>,
) -> Result<ParsedFile, FileError> {
    let mut root = Level::default();
    for (i, c) in schema.columns.iter().enumerate() {
        if c.source.is_empty() || c.source.iter().any(|s| s.is_empty()) {
            return Err(FileError::Format {
                path: path.display().to_string(),
                message: format!("column `{}`: empty field path", c.name),
            });
        }
        root.insert(&c.source, i)
            .map_err(|message| FileError::Format {
                path: path.display().to_string(),
                message,
            })?;
    }
    let mut p = JsonParser {
        root,
        kinds: schema.columns.iter().map(|c| c.kind).collect(),
        shape: None,
    };
    p.shape = first_line(path).and_then(|l| p.learn_shape(&l, schema));
    read_lines(path, schema, &p, 0, threads, range)
}

/// The first line of a file (up to 64 KiB), if it can be read.
fn first_line(path: &Path) -> Option<Vec<u8>> {
    use std::io::{BufRead, Read};
    let f = std::fs::File::open(path).ok()?;
    let mut line = Vec::new();
    std::io::BufReader::new(f)
        .take(65_536)
        .read_until(b'\n', &mut line)
        .ok()?;
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Some(line)
}

impl JsonParser {
    /// Parse `line` with the general scanner, recording where each wanted
    /// value sits; the bytes between values become the literals of the
    /// layout. Lines of machine-written JSON (MQTT payload dumps, exports)
    /// repeat one layout, so the fast path below usually applies.
    fn learn_shape(&self, line: &[u8], schema: &FileSchema) -> Option<Vec<Seg>> {
        let mut cols = Columns::new(schema);
        let mut s = Scan {
            b: line,
            i: 0,
            unknown_seen: false,
            rec: Some(Vec::new()),
        };
        s.ws();
        s.object(Some(&self.root), self, &mut cols, "").ok()?;
        // A layout with fields outside the schema would let lines with them
        // pass unseen when they are to be detected or rescued.
        if s.unknown_seen && cols.wants_unknown() {
            return None;
        }
        let rec = s.rec.take()?;
        let mut segs = Vec::with_capacity(rec.len() + 1);
        let mut prev = 0;
        for (st, en, c) in rec {
            segs.push(Seg {
                lit: line[prev..st].to_vec(),
                col: Some((c, self.kinds[c])),
            });
            prev = en;
        }
        segs.push(Seg {
            lit: line[prev..].to_vec(),
            col: None,
        });
        Some(segs)
    }

    /// The fast path: the line must have exactly the learned layout (same
    /// keys, order and spacing); values are parsed in place. Returns false
    /// (having pushed nothing that counts: the caller rolls back) at the
    /// first difference, and the general scanner takes the line.
    fn fast(&self, shape: &[Seg], b: &[u8], cols: &mut Columns) -> bool {
        let mut i = 0;
        for seg in shape {
            if b.len() < i + seg.lit.len() || b[i..i + seg.lit.len()] != seg.lit[..] {
                return false;
            }
            i += seg.lit.len();
            let Some((c, kind)) = seg.col else { break };
            let rest = &b[i..];
            let ok = match kind {
                _ if rest.starts_with(b"null") => {
                    i += 4;
                    cols.push_null(c).is_ok()
                }
                ColumnKind::Text => {
                    if rest.first() != Some(&b'"') {
                        return false;
                    }
                    let mut j = 1;
                    while j < rest.len() && rest[j] != b'"' {
                        if rest[j] == b'\\' {
                            return false;
                        }
                        j += 1;
                    }
                    if j == rest.len() {
                        return false;
                    }
                    i += j + 1;
                    cols.push_text(c, &rest[1..j]).is_ok()
                }
                ColumnKind::Float => match super::text::scan_f64(rest) {
                    Some((v, n)) => {
                        i += n;
                        cols.push_f64(c, v).is_ok()
                    }
                    None => false,
                },
                ColumnKind::Bool => {
                    if rest.starts_with(b"true") {
                        i += 4;
                        cols.push_bool(c, true).is_ok()
                    } else if rest.starts_with(b"false") {
                        i += 5;
                        cols.push_bool(c, false).is_ok()
                    } else {
                        false
                    }
                }
                ColumnKind::Timestamp | ColumnKind::Int => {
                    let (neg, st) = if rest.first() == Some(&b'-') {
                        (true, 1)
                    } else {
                        (false, 0)
                    };
                    let mut j = st;
                    let mut v: i64 = 0;
                    while j < rest.len() && rest[j].is_ascii_digit() && j - st < 18 {
                        v = v * 10 + (rest[j] - b'0') as i64;
                        j += 1;
                    }
                    if j == st || rest.get(j).is_some_and(|d| d.is_ascii_digit()) {
                        return false;
                    }
                    i += j;
                    cols.push_i64(c, if neg { -v } else { v }).is_ok()
                }
            };
            if !ok {
                return false;
            }
        }
        i == b.len()
    }
}

impl LineParser for JsonParser {
    fn parse(&self, line: &[u8], cols: &mut Columns) -> Result<(), String> {
        if let Some(shape) = &self.shape {
            if self.fast(shape, line, cols) {
                return Ok(());
            }
            cols.rollback();
        }
        let mut s = Scan {
            b: line,
            i: 0,
            unknown_seen: false,
            rec: None,
        };
        s.ws();
        s.object(Some(&self.root), self, cols, "")?;
        s.ws();
        if s.i != line.len() {
            return Err(format!("unexpected text after the object at byte {}", s.i));
        }
        Ok(())
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// A field outside the schema was skipped.
    unknown_seen: bool,
    /// When learning a layout: (value start, value end, column) of each value.
    rec: Option<Vec<(usize, usize, usize)>>,
}

impl<'a> Scan<'a> {
    #[inline]
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.i))
        }
    }

    /// A string starting at `"`: the raw bytes between the quotes and
    /// whether they contain escapes. Keys and ids are short, so a plain byte
    /// loop beats a vectorised search's set-up; long strings switch to it.
    #[inline]
    fn string(&mut self) -> Result<(&'a [u8], bool), String> {
        let start = self.i + 1;
        let mut j = start;
        let short_end = (start + 32).min(self.b.len());
        while j < short_end {
            match self.b[j] {
                b'"' => {
                    self.i = j + 1;
                    return Ok((&self.b[start..j], false));
                }
                b'\\' => break,
                _ => j += 1,
            }
        }
        let mut escaped = false;
        loop {
            match memchr::memchr2(b'"', b'\\', &self.b[j..]) {
                None => return Err(format!("unterminated string at byte {}", self.i)),
                Some(k) => {
                    j += k;
                    if self.b[j] == b'\\' {
                        escaped = true;
                        j += 2;
                        if j > self.b.len() {
                            return Err("unterminated string".into());
                        }
                    } else {
                        self.i = j + 1;
                        return Ok((&self.b[start..j], escaped));
                    }
                }
            }
        }
    }

    /// An object whose fields are described by `level`; `prefix` is its
    /// path (`signals.`) for naming fields the schema does not have.
    fn object(
        &mut self,
        level: Option<&Level>,
        p: &JsonParser,
        cols: &mut Columns,
        prefix: &str,
    ) -> Result<(), String> {
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(format!("expected a field name at byte {}", self.i));
            }
            let (key, esc) = self.string()?;
            let key_buf;
            let key = if esc {
                key_buf = unescape(key)?;
                &key_buf[..]
            } else {
                key
            };
            self.expect(b':')?;
            self.ws();
            match level.and_then(|l| l.find(key)) {
                Some(Target::Column(c)) => {
                    let st = self.i;
                    if let Err(e) = self.value_into(*c, p.kinds[*c], cols) {
                        // A well-formed value of the wrong type is rescued
                        // (rescue mode); a damaged line is rejected.
                        if !cols.rescuing() || self.rec.is_some() {
                            return Err(e);
                        }
                        self.i = st;
                        self.skip()?;
                        let raw = String::from_utf8_lossy(&self.b[st..self.i]).into_owned();
                        cols.rescue(*c, &raw, e)?;
                    }
                    if let Some(r) = &mut self.rec {
                        r.push((st, self.i, *c));
                    }
                }
                Some(Target::Object(l)) => {
                    if self.peek() == Some(b'{') {
                        let path = format!("{prefix}{}.", String::from_utf8_lossy(key));
                        self.object(Some(l), p, cols, &path)?;
                    } else if self.b[self.i..].starts_with(b"null") {
                        self.i += 4;
                    } else if cols.rescuing() && self.rec.is_none() {
                        let st = self.i;
                        self.skip()?;
                        let raw = String::from_utf8_lossy(&self.b[st..self.i]).into_owned();
                        let path = format!("{prefix}{}", String::from_utf8_lossy(key));
                        cols.unknown_field(&path, &raw);
                    } else {
                        return Err(format!(
                            "field `{}` is not an object",
                            String::from_utf8_lossy(key)
                        ));
                    }
                }
                None => {
                    let st = self.i;
                    self.skip()?;
                    self.unknown_seen = true;
                    if cols.wants_unknown() && self.rec.is_none() {
                        let path = format!("{prefix}{}", String::from_utf8_lossy(key));
                        let raw = String::from_utf8_lossy(&self.b[st..self.i]).into_owned();
                        cols.unknown_field(&path, &raw);
                    }
                }
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(format!("expected `,` or `}}` at byte {}", self.i)),
            }
        }
    }

    /// Parse a scalar into column `c`.
    #[inline]
    fn value_into(&mut self, c: usize, kind: ColumnKind, cols: &mut Columns) -> Result<(), String> {
        match self.peek() {
            Some(b'"') => {
                let (s, esc) = self.string()?;
                if esc {
                    let u = unescape(s)?;
                    cols.push_parsed(c, &u)
                } else {
                    cols.push_parsed(c, s)
                }
            }
            Some(b'n') if self.b[self.i..].starts_with(b"null") => {
                self.i += 4;
                cols.push_null(c)
            }
            Some(b't') if self.b[self.i..].starts_with(b"true") && kind == ColumnKind::Bool => {
                self.i += 4;
                cols.push_bool(c, true)
            }
            Some(b'f') if self.b[self.i..].starts_with(b"false") && kind == ColumnKind::Bool => {
                self.i += 5;
                cols.push_bool(c, false)
            }
            Some(b't') if self.b[self.i..].starts_with(b"true") && kind == ColumnKind::Text => {
                self.i += 4;
                cols.push_text(c, b"true")
            }
            Some(b'f') if self.b[self.i..].starts_with(b"false") && kind == ColumnKind::Text => {
                self.i += 5;
                cols.push_text(c, b"false")
            }
            Some(b't' | b'f' | b'{' | b'[') => Err(format!(
                "field `{}`: expected {}, found {}",
                cols.name(c),
                kind_name(kind),
                match self.peek() {
                    Some(b'{') => "an object",
                    Some(b'[') => "an array",
                    _ => "a boolean",
                }
            )),
            Some(_) => {
                if kind == ColumnKind::Float {
                    if let Some((v, n)) = super::text::scan_f64(&self.b[self.i..]) {
                        let end = self.i + n;
                        if end == self.b.len()
                            || matches!(
                                self.b[end],
                                b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'
                            )
                        {
                            self.i = end;
                            return cols.push_f64(c, v);
                        }
                    }
                }
                let st = self.i;
                while self.i < self.b.len()
                    && !matches!(
                        self.b[self.i],
                        b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n'
                    )
                {
                    self.i += 1;
                }
                let tok = &self.b[st..self.i];
                if kind == ColumnKind::Bool {
                    return Err(format!("field `{}`: expected a boolean", cols.name(c)));
                }
                cols.push_parsed(c, tok)
            }
            None => Err("line ends inside a value".into()),
        }
    }

    /// Skip any value (checking its brackets and strings).
    fn skip(&mut self) -> Result<(), String> {
        let mut depth = 0usize;
        loop {
            self.ws();
            match self.peek() {
                None => return Err("line ends inside a value".into()),
                Some(b'"') => {
                    self.string()?;
                }
                Some(b'{' | b'[') => {
                    depth += 1;
                    self.i += 1;
                    continue;
                }
                Some(b'}' | b']') => {
                    if depth == 0 {
                        return Err(format!("unexpected bracket at byte {}", self.i));
                    }
                    depth -= 1;
                    self.i += 1;
                }
                Some(b',' | b':') if depth > 0 => {
                    self.i += 1;
                    continue;
                }
                Some(_) => {
                    let st = self.i;
                    while self.i < self.b.len()
                        && !matches!(
                            self.b[self.i],
                            b',' | b'}' | b']' | b':' | b' ' | b'\t' | b'\r' | b'\n'
                        )
                    {
                        self.i += 1;
                    }
                    if st == self.i {
                        return Err(format!(
                            "unexpected `{}` at byte {}",
                            self.b[st] as char, st
                        ));
                    }
                }
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }
}

fn kind_name(k: ColumnKind) -> &'static str {
    match k {
        ColumnKind::Timestamp => "a timestamp",
        ColumnKind::Float => "a number",
        ColumnKind::Int => "an integer",
        ColumnKind::Text => "a string",
        ColumnKind::Bool => "a boolean",
    }
}

/// Decode JSON string escapes.
fn unescape(s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *s.get(i + 1).ok_or("bad escape")?;
        i += 2;
        match e {
            b'"' | b'\\' | b'/' => out.push(e),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let hex = |at: usize| -> Result<u32, String> {
                    let h = s.get(at..at + 4).ok_or("bad \\u escape")?;
                    u32::from_str_radix(std::str::from_utf8(h).map_err(|_| "bad \\u escape")?, 16)
                        .map_err(|_| "bad \\u escape".to_string())
                };
                let mut cp = hex(i)?;
                i += 4;
                if (0xD800..0xDC00).contains(&cp) && s.get(i..i + 2) == Some(b"\\u") {
                    let lo = hex(i + 2)?;
                    if (0xDC00..0xE000).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                let ch = char::from_u32(cp).ok_or("bad \\u escape")?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return Err(format!("bad escape `\\{}`", e as char)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::FileColumn;
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Float64Type, TimestampMillisecondType};
    use std::io::Write;

    fn schema() -> FileSchema {
        FileSchema::new(vec![
            FileColumn::new("machine_id", "machine", ColumnKind::Text, false),
            FileColumn::new("ts", "ts", ColumnKind::Timestamp, false),
            FileColumn::new("power_kw", "signals.power_kw", ColumnKind::Float, true),
            FileColumn::new("rpm", "signals.rpm", ColumnKind::Float, true),
        ])
    }

    #[test]
    fn the_fast_path_reads_exactly_what_the_general_scanner_reads() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let values = [
            "1.754",
            "null",
            "-0.5",
            "2.5e3",
            "12345678901234567890.5",
            "7",
            "1e400",
        ];
        for (i, v) in values.iter().enumerate() {
            let m = if i == 3 { "mc-\\u00e9" } else { "mc-1" };
            writeln!(
                f,
                r#"{{"machine":"{m}","ts":{},"signals":{{"power_kw":{v},"rpm":{i}}}}}"#,
                1_704_090_600_000i64 + i as i64
            )
            .unwrap();
        }
        // A line with another layout, and a bad one, still go the general way.
        writeln!(
            f,
            r#"{{"ts":5,"machine":"mc-2","signals":{{"rpm":1,"power_kw":2}}}}"#
        )
        .unwrap();
        writeln!(
            f,
            r#"{{"machine":"mc-1","ts":x,"signals":{{"power_kw":1,"rpm":1}}}}"#
        )
        .unwrap();
        f.flush().unwrap();
        let fast = read_jsonl(f.path(), &schema(), 1).unwrap();
        let mut root = Level::default();
        for (i, c) in schema().columns.iter().enumerate() {
            root.insert(&c.source, i).unwrap();
        }
        let general = JsonParser {
            root,
            kinds: schema().columns.iter().map(|c| c.kind).collect(),
            shape: None,
        };
        let slow = read_lines(f.path(), &schema(), &general, 0, 1, None).unwrap();
        assert_eq!(fast.rows(), 8);
        assert_eq!(fast.batches, slow.batches);
        assert_eq!(fast.rejected, slow.rejected);
        assert_eq!(fast.rejected.len(), 1);
    }

    #[test]
    fn good_lines_load_bad_lines_are_rejected_with_reasons() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let lines = [
            r#"{"machine":"mc-1","ts":1704090600001,"extra":[1,{"a":"}"}],"signals":{"power_kw":1.754,"rpm":null}}"#,
            r#"{"signals":{"rpm":6000.5},"ts":"2024-01-01T06:30:01Z","machine":"mc-\u0032"}"#,
            r#"{"machine":"mc-1","ts":1704090600001,"signals":{"power_kw":"hot"}}"#,
            r#"{"machine":"mc-1","ts":1704090600001,"signals":{"power_kw":1.0}"#,
            r#"{"machine":"mc-1","signals":{}}"#,
            r#"{"machine":"mc-1","ts":1,"ts":2}"#,
            r#"{"machine":"mc-1","ts":5,"signals":{"power_kw":true}}"#,
            r#"not json"#,
            "",
            r#"{"machine":"mc-3","ts":7}"#,
        ];
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f.flush().unwrap();
        for threads in [1, 3] {
            let p = read_jsonl(f.path(), &schema(), threads).unwrap();
            assert_eq!(p.rows(), 3, "threads {threads}");
            let reasons: Vec<&str> = p.rejected.iter().map(|r| r.reason.as_str()).collect();
            assert_eq!(p.rejected.len(), 6, "{reasons:?}");
            assert!(reasons
                .iter()
                .any(|r| r.contains("`power_kw`: `hot` is not a number")));
            assert!(reasons.iter().any(|r| r.contains("field `ts` is missing")));
            assert!(reasons.iter().any(|r| r.contains("given twice")));
            assert!(reasons.iter().any(|r| r.contains("found a boolean")));
            let all: Vec<_> = p.batches.iter().collect();
            let b =
                deltalake::arrow::compute::concat_batches(&all[0].schema(), all.iter().copied())
                    .unwrap();
            let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
            let pw = b.column(2).as_primitive::<Float64Type>();
            let m = deltalake::arrow::compute::cast(
                b.column(0),
                &deltalake::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let m = m.as_string::<i32>();
            assert_eq!(m.value(1), "mc-2");
            assert_eq!(ts.value(1), 1_704_090_601_000);
            assert_eq!(pw.value(0), 1.754);
            assert!(pw.is_null(1) && b.column(3).is_null(0) && b.column(3).is_valid(1));
            assert_eq!(m.value(2), "mc-3");
        }
    }
}

#[cfg(test)]
mod rescue_tests {
    use super::super::{FileColumn, RESCUED_COLUMN};
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use std::io::Write;

    fn read(text: &str, rescue: bool, detect: bool) -> ParsedFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.flush().unwrap();
        let mut s = FileSchema::new(vec![
            FileColumn::new("ts", "ts", ColumnKind::Timestamp, true),
            FileColumn::new("machine", "machine", ColumnKind::Text, true),
            FileColumn::new("signals_force", "signals.force", ColumnKind::Float, true),
            FileColumn::new("on", "on", ColumnKind::Bool, true),
        ]);
        s.rescue = rescue;
        s.detect_new = detect;
        read_jsonl(f.path(), &s, 1).unwrap()
    }

    #[test]
    fn rescue_keeps_rows_and_puts_what_does_not_fit_aside() {
        let text = "{\"ts\":1,\"machine\":\"m\",\"signals\":{\"force\":\"n/a\",\"oil\":5.5},\"on\":true}\n\
                    {\"ts\":2,\"machine\":\"m\",\"signals\":{\"force\":1.5,\"oil\":5.5},\"on\":false}\n\
                    {\"ts\":3,\"machine\":\"m\",\"signals\":{\"force\":2.5},\"on\":1,\"tags\":[1,2]}\n\
                    {\"ts\":4,\"machine\":\"m\",\"signals\":{\"force\":2.5}\n";
        let p = read(text, true, false);
        assert_eq!(p.rows(), 3);
        assert_eq!(p.rejected.len(), 1, "a broken line is still rejected");
        let b = &p.batches[0];
        let res = b
            .column_by_name(RESCUED_COLUMN)
            .unwrap()
            .as_string::<i32>()
            .clone();
        assert_eq!(res.value(0), r#"{"signals_force":"n/a","signals.oil":5.5}"#);
        assert_eq!(res.value(1), r#"{"signals.oil":5.5}"#);
        assert_eq!(res.value(2), r#"{"on":1,"tags":[1,2]}"#);
        let f = b
            .column(2)
            .as_primitive::<deltalake::arrow::datatypes::Float64Type>();
        assert!(f.is_null(0) && f.value(1) == 1.5);
        let on = b.column(3).as_boolean();
        assert!(on.value(0) && !on.value(1) && on.is_null(2));
        let paths: Vec<_> = p.new_fields.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(paths, vec!["signals.oil", "tags"]);
    }

    #[test]
    fn new_fields_are_reported_without_rescue() {
        let text = "{\"ts\":1,\"machine\":\"m\",\"signals\":{\"force\":1,\"oil\":{\"t\":5}},\"x\":\"y\"}\n";
        let p = read(text, false, true);
        assert_eq!(p.rows(), 1);
        assert_eq!(p.new_fields[0].path, "signals.oil");
        assert_eq!(p.new_fields[0].sample, "{\"t\":5}");
        assert_eq!(p.new_fields[1].path, "x");
        assert!(read(text, false, false).new_fields.is_empty());
    }
}
