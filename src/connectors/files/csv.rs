//! CSV with a header line (RFC 4180 quoting), columns picked by header name.
//! An empty field is null; `NaN` is a float NaN. A quoted field may hold
//! commas and doubled quotes, but not a newline (lines are split before
//! parsing, which is what lets the file be read in parallel).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::ops::Range;
use std::path::Path;

use super::{read_lines, Columns, FileError, FileSchema, LineParser, ParsedFile};

struct CsvParser {
    /// For each CSV field position, the output column (or none).
    target: Vec<Option<usize>>,
    fields: usize,
    /// Rescue mode: for each CSV field position outside the schema, its name.
    unknown: Vec<Option<String>>,
}

/// Read a CSV file into batches of `schema` with `threads` readers. Every
/// non-nullable column must be in the header.
pub fn read_csv(path: &Path, schema: &FileSchema, threads: usize) -> Result<ParsedFile, FileError> {
    read_csv_part(path, schema, threads, None)
}

/// Like [`read_csv`], only the lines that start in `range` (bytes) when
/// given. Header columns the schema does not have are reported as new
/// fields (with the first row's value) when the schema asks, and rescued
/// per row in rescue mode.
pub fn read_csv_part(
    path: &Path,
    schema: &FileSchema,
    threads: usize,
    range: Option<Range<u64>>,
) -> Result<ParsedFile, FileError> {
    let pstr = path.display().to_string();
    let file = File::open(path).map_err(|source| FileError::Io {
        path: pstr.clone(),
        source,
    })?;
    let mut header = Vec::new();
    let mut reader = BufReader::new(file);
    let n = reader
        .read_until(b'\n', &mut header)
        .map_err(|source| FileError::Io {
            path: pstr.clone(),
            source,
        })?;
    let fields = split(trim_eol(&header)).map_err(|m| FileError::Format {
        path: pstr.clone(),
        message: format!("header: {m}"),
    })?;
    let names: Vec<String> = fields
        .iter()
        .map(|f| String::from_utf8_lossy(f).trim().to_string())
        .collect();
    let mut target = vec![None; names.len()];
    for (c, col) in schema.columns.iter().enumerate() {
        let want = col.source.join(".");
        match names.iter().position(|n| *n == want) {
            Some(i) => target[i] = Some(c),
            None if col.nullable => {}
            None => {
                return Err(FileError::Format {
                    path: pstr,
                    message: format!("header has no column `{want}` (has: {})", names.join(", ")),
                })
            }
        }
    }
    let wants_unknown = schema.detect_new || schema.rescue;
    let unknown: Vec<Option<String>> = names
        .iter()
        .zip(&target)
        .map(|(n, t)| (t.is_none() && wants_unknown && !n.is_empty()).then(|| n.clone()))
        .collect();
    let mut new_fields = Vec::new();
    if unknown.iter().any(Option::is_some) {
        let mut first = Vec::new();
        let _ = reader.read_until(b'\n', &mut first);
        let values = split(trim_eol(&first)).unwrap_or_default();
        for (i, u) in unknown.iter().enumerate() {
            if let Some(name) = u {
                let sample = values
                    .get(i)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                new_fields.push(super::NewField {
                    path: name.clone(),
                    sample: serde_json::Value::String(sample).to_string(),
                });
            }
        }
    }
    let p = CsvParser {
        target,
        fields: names.len(),
        unknown: if schema.rescue { unknown } else { Vec::new() },
    };
    let mut out = read_lines(path, schema, &p, n as u64, threads, range)?;
    out.new_fields = new_fields;
    Ok(out)
}

fn trim_eol(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// The fields of one line as text (header and sample rows).
pub(crate) fn split_line(line: &str) -> Result<Vec<String>, String> {
    Ok(split(line.as_bytes())?
        .into_iter()
        .map(|f| String::from_utf8_lossy(&f).into_owned())
        .collect())
}

/// Split a line into fields, unquoting quoted ones.
fn split(line: &[u8]) -> Result<Vec<std::borrow::Cow<'_, [u8]>>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let (f, next) = field(line, i)?;
        out.push(f);
        match next {
            Some(n) => i = n,
            None => return Ok(out),
        }
    }
}

/// The field starting at `i` and the start of the next one (None at the end).
#[inline]
fn field(line: &[u8], i: usize) -> Result<(std::borrow::Cow<'_, [u8]>, Option<usize>), String> {
    if line.get(i) != Some(&b'"') {
        // Fields are short: a byte loop beats a vectorised search's set-up.
        let mut j = i;
        while j < line.len() {
            if line[j] == b',' {
                return Ok((line[i..j].into(), Some(j + 1)));
            }
            j += 1;
        }
        return Ok((line[i..].into(), None));
    }
    let mut out = Vec::new();
    let mut j = i + 1;
    loop {
        match memchr::memchr(b'"', &line[j..]) {
            None => return Err(format!("unterminated quote at byte {i}")),
            Some(k) => {
                out.extend_from_slice(&line[j..j + k]);
                j += k + 1;
                if line.get(j) == Some(&b'"') {
                    out.push(b'"');
                    j += 1;
                    continue;
                }
                return match line.get(j) {
                    None => Ok((out.into(), None)),
                    Some(b',') => Ok((out.into(), Some(j + 1))),
                    Some(_) => Err(format!("text after a closing quote at byte {j}")),
                };
            }
        }
    }
}

/// Lines with at most this many fields and no quote take the fast path.
const FAST_FIELDS: usize = 64;

/// The byte offsets of the commas of `line` (into `out`) and their count, or
/// `None` when the line has a quote or more than `FAST_FIELDS - 1` commas (the
/// field-by-field parser then reads it). Sixteen bytes are compared at a time.
#[inline]
fn commas(line: &[u8], out: &mut [u32; FAST_FIELDS]) -> Option<usize> {
    let mut n = 0usize;
    let mut i = 0usize;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        // SAFETY: SSE2 is part of x86-64; every load reads 16 bytes inside
        // `line` (i + 16 <= len).
        unsafe {
            let comma = _mm_set1_epi8(b',' as i8);
            let quote = _mm_set1_epi8(b'"' as i8);
            while i + 16 <= line.len() {
                let v = _mm_loadu_si128(line.as_ptr().add(i) as *const __m128i);
                if _mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) != 0 {
                    return None;
                }
                let mut m = _mm_movemask_epi8(_mm_cmpeq_epi8(v, comma)) as u32;
                while m != 0 {
                    *out.get_mut(n)? = i as u32 + m.trailing_zeros();
                    n += 1;
                    m &= m - 1;
                }
                i += 16;
            }
        }
    }
    for (j, &b) in line[i..].iter().enumerate() {
        if b == b'"' {
            return None;
        }
        if b == b',' {
            *out.get_mut(n)? = (i + j) as u32;
            n += 1;
        }
    }
    Some(n)
}

impl LineParser for CsvParser {
    fn parse(&self, line: &[u8], cols: &mut Columns) -> Result<(), String> {
        // Fast path: no quotes, the header's number of fields, nothing to
        // rescue; the commas are found for the whole line at once.
        if self.unknown.is_empty() && line.len() <= u32::MAX as usize {
            let mut ends = [0u32; FAST_FIELDS];
            if let Some(n) = commas(line, &mut ends) {
                if n + 1 == self.fields {
                    let mut start = 0;
                    for (k, target) in self.target.iter().enumerate() {
                        let end = if k < n { ends[k] as usize } else { line.len() };
                        if let Some(c) = *target {
                            let f = &line[start..end];
                            if f.is_empty() {
                                cols.push_null(c)?;
                            } else {
                                cols.push_parsed(c, f)?;
                            }
                        }
                        start = end + 1;
                    }
                    return Ok(());
                }
            }
        }
        self.parse_fields(line, cols)
    }
}

impl CsvParser {
    /// Field by field, unquoting quoted fields; rescues unknown fields.
    fn parse_fields(&self, line: &[u8], cols: &mut Columns) -> Result<(), String> {
        let mut i = 0;
        let mut k = 0;
        loop {
            let (f, next) = field(line, i)?;
            if k >= self.fields {
                return Err(format!("more than the header's {} fields", self.fields));
            }
            if let Some(c) = self.target[k] {
                if f.is_empty() {
                    cols.push_null(c)?;
                } else {
                    cols.push_parsed(c, &f)?;
                }
            } else if let Some(Some(name)) = self.unknown.get(k) {
                if !f.is_empty() {
                    let v = serde_json::Value::String(String::from_utf8_lossy(&f).into_owned());
                    cols.unknown_field(name, &v.to_string());
                }
            }
            k += 1;
            match next {
                Some(n) => i = n,
                None => break,
            }
        }
        if k != self.fields {
            return Err(format!("{k} fields, the header has {}", self.fields));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ColumnKind, FileColumn};
    use super::*;
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Float64Type, TimestampMillisecondType};
    use std::io::Write;

    #[test]
    fn typed_columns_by_header_name_and_rejected_lines() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(
            f,
            "ts,plant,machine_id,power_kw\r\n\
             2024-01-01T06:30:00.001,plant-a,mc-1,1.5\r\n\
             2024-01-01T06:30:01.000,\"plant \"\"b\"\", east\",mc-2,NaN\n\
             2024-01-01T06:30:02.000,plant-a,mc-1,\n\
             bad-time,plant-a,mc-1,1\n\
             2024-01-01T06:30:03.000,plant-a,mc-1\n\
             2024-01-01T06:30:04.000,plant-a,mc-1,2.5"
        )
        .unwrap();
        f.flush().unwrap();
        let schema = FileSchema::new(vec![
            FileColumn::new("ts", "ts", ColumnKind::Timestamp, false),
            FileColumn::new("machine_id", "machine_id", ColumnKind::Text, false),
            FileColumn::new("plant", "plant", ColumnKind::Text, false),
            FileColumn::new("power_kw", "power_kw", ColumnKind::Float, true),
        ]);
        for threads in [1, 4] {
            let p = read_csv(f.path(), &schema, threads).unwrap();
            assert_eq!(p.rows(), 4);
            assert_eq!(p.rejected.len(), 2);
            assert!(
                p.rejected[0].reason.contains("not a timestamp"),
                "{:?}",
                p.rejected
            );
            assert!(p.rejected[1].reason.contains("3 fields"));
            let all: Vec<_> = p.batches.iter().collect();
            let b =
                deltalake::arrow::compute::concat_batches(&all[0].schema(), all.iter().copied())
                    .unwrap();
            assert_eq!(
                b.column(0)
                    .as_primitive::<TimestampMillisecondType>()
                    .value(0),
                1_704_090_600_001
            );
            let plant = deltalake::arrow::compute::cast(
                b.column(2),
                &deltalake::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            assert_eq!(plant.as_string::<i32>().value(1), "plant \"b\", east");
            let pw = b.column(3).as_primitive::<Float64Type>();
            assert!(pw.value(1).is_nan() && pw.is_null(2) && pw.value(3) == 2.5);
        }
        let strict = FileSchema::new(vec![FileColumn::new(
            "x",
            "missing",
            ColumnKind::Float,
            false,
        )]);
        assert!(read_csv(f.path(), &strict, 1)
            .unwrap_err()
            .to_string()
            .contains("no column `missing`"));
    }

    /// The whole-line fast path gives the same rows and the same errors as the
    /// field-by-field parser, for lines it takes and lines it hands over
    /// (quotes, wrong field counts, more fields than it keeps offsets for).
    #[test]
    fn fast_path_agrees_with_the_field_parser() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let schema = FileSchema::new(vec![
            FileColumn::new("ts", "ts", ColumnKind::Timestamp, true),
            FileColumn::new("id", "id", ColumnKind::Text, false),
            FileColumn::new("x", "x", ColumnKind::Float, true),
            FileColumn::new("n", "n", ColumnKind::Int, true),
        ]);
        let field = prop_oneof![
            Just(String::new()),
            Just("2024-01-01T06:30:00.001".to_string()),
            Just("1704090600001".to_string()),
            "-?[0-9]{1,6}(\\.[0-9]{1,4})?",
            "[a-z0-9-]{1,20}",
            "\"[a-z,\"]{0,6}\"",
            "[a-z]{0,3}\"[a-z]{0,3}",
        ];
        let lines = prop::collection::vec(
            prop_oneof![
                4 => prop::collection::vec(field.clone(), 1..8),
                1 => prop::collection::vec(field, 60..70),
            ]
            .prop_map(|f| f.join(",")),
            1..40,
        );
        for fields in [4usize, 6, 66] {
            // Header positions: the schema's columns spread over `fields`.
            let mut target = vec![None; fields];
            for (c, k) in [0, 1, fields / 2, fields - 1].into_iter().enumerate() {
                target[k] = Some(c);
            }
            let p = CsvParser {
                target,
                fields,
                unknown: Vec::new(),
            };
            let run = |lines: &[String], fast: bool| {
                let mut cols = Columns::new(&schema);
                let mut errs = Vec::new();
                for l in lines {
                    let r = if fast {
                        p.parse(l.as_bytes(), &mut cols)
                    } else {
                        p.parse_fields(l.as_bytes(), &mut cols)
                    };
                    match r.and_then(|_| cols.end_row()) {
                        Ok(()) => errs.push(None),
                        Err(e) => {
                            cols.rollback();
                            errs.push(Some(e));
                        }
                    }
                }
                cols.flush().unwrap();
                (cols.batches, errs)
            };
            let mut runner = TestRunner::new(Config::with_cases(200));
            runner
                .run(&lines, |lines| {
                    let (fast, slow) = (run(&lines, true), run(&lines, false));
                    prop_assert_eq!(&fast.1, &slow.1);
                    prop_assert_eq!(fast.0.len(), slow.0.len());
                    for (a, b) in fast.0.iter().zip(&slow.0) {
                        prop_assert_eq!(a, b);
                    }
                    Ok(())
                })
                .unwrap();
        }
        // Lines wider than the fast path keeps offsets for go to the field
        // parser; narrow ones give every comma's offset.
        let wide: String = (0..66)
            .map(|i| format!("f{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut ends = [0u32; FAST_FIELDS];
        assert_eq!(commas(wide.as_bytes(), &mut ends), None);
        let narrow = "2024-01-01T06:30:00.001,press-a-0001,71.25,3";
        assert_eq!(commas(narrow.as_bytes(), &mut ends), Some(3));
        assert_eq!(&ends[..3], &[23, 36, 42]);
    }
}
