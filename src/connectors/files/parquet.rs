//! Parquet files in the landing folder: read row group by row group (the
//! slices a large file is taken in), columns found by name and cast to the
//! source's schema. A value that does not cast (text in a number column)
//! is rescued in rescue mode and otherwise rejects its row, with the
//! reason, like a bad line of a text file.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::util::display::array_value_to_string;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use deltalake::parquet::basic::Encoding;
use rayon::prelude::*;

use super::{ColumnKind, FileError, FileSchema, NewField, ParsedFile, Rejected, RESCUED_COLUMN};

fn open_file(path: &Path) -> Result<File, FileError> {
    File::open(path).map_err(|source| FileError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn open(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, FileError> {
    let f = open_file(path)?;
    ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| FileError::Format {
        path: path.display().to_string(),
        message: format!("not a readable Parquet file: {e}"),
    })
}

/// Decode row groups `groups` of an opened file into batches of `batch_size` rows.
fn read_groups(
    builder: ParquetRecordBatchReaderBuilder<File>,
    groups: Vec<usize>,
    batch_size: usize,
    pstr: &str,
) -> Result<Vec<RecordBatch>, FileError> {
    let reader = builder
        .with_row_groups(groups)
        .with_batch_size(batch_size)
        .build()
        .map_err(|e| FileError::Format {
            path: pstr.to_string(),
            message: e.to_string(),
        })?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| FileError::Arrow {
            path: pstr.to_string(),
            source,
        })
}

/// The Arrow schema of a Parquet file.
pub fn file_schema(path: &Path) -> Result<SchemaRef, FileError> {
    Ok(open(path)?.schema().clone())
}

/// Row groups of a Parquet file.
pub fn row_groups(path: &Path) -> Result<usize, FileError> {
    Ok(open(path)?.metadata().num_row_groups())
}

/// The column kind a Parquet column is read as (none: not a scalar).
pub fn kind_of(t: &DataType) -> Option<ColumnKind> {
    Some(match t {
        DataType::Boolean => ColumnKind::Bool,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => ColumnKind::Float,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnKind::Text,
        DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8) => {
            ColumnKind::Text
        }
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => ColumnKind::Timestamp,
        _ => return None,
    })
}

fn target_type(k: ColumnKind) -> DataType {
    match k {
        ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ColumnKind::Float => DataType::Float64,
        ColumnKind::Int => DataType::Int64,
        ColumnKind::Text => {
            DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8))
        }
        ColumnKind::Bool => DataType::Boolean,
    }
}

/// Read a whole Parquet file as it is (no schema mapping), row groups split
/// between `threads` readers on the worker pool, for the engine's own jobs
/// and `ironlake bench` (W0).
///
/// Text columns stay dictionary-encoded when the file stores every page of
/// them as dictionary indices (the usual case for machine, line and plant
/// ids): the decoder then only unpacks indices. A column whose writer fell
/// back to plain pages (its dictionary outgrew the page limit, e.g. 100,000
/// machine ids) is read as a string view instead: rebuilding a dictionary
/// from plain values hashes every row and took 60 % of the load.
pub fn read_table(path: &Path, threads: usize) -> Result<Vec<RecordBatch>, FileError> {
    let pstr = path.display().to_string();
    let probe = open(path)?;
    let meta = probe.metadata().clone();
    let groups = meta.num_row_groups();
    let all_dictionary = |col: usize| {
        meta.row_groups().iter().all(|rg| {
            let c = rg.column(col);
            // Without page statistics (some writers leave them out) a
            // column with a dictionary page is taken to be all dictionary.
            c.dictionary_page_offset().is_some()
                && c.page_encoding_stats_mask().is_none_or(|m| {
                    m.is_only(Encoding::RLE_DICTIONARY) || m.is_only(Encoding::PLAIN_DICTIONARY)
                })
        })
    };
    let hint = Arc::new(Schema::new(
        probe
            .schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let t = match f.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                        if all_dictionary(i) {
                            DataType::Dictionary(
                                Box::new(DataType::Int32),
                                Box::new(DataType::Utf8),
                            )
                        } else {
                            DataType::Utf8View
                        }
                    }
                    t => t.clone(),
                };
                Field::new(f.name(), t, f.is_nullable())
            })
            .collect::<Vec<_>>(),
    ));
    drop(probe);
    let threads = threads.clamp(1, groups.max(1));
    let per = groups.div_ceil(threads);
    let err = |message: String| FileError::Format {
        path: pstr.clone(),
        message,
    };
    let parts: Vec<Result<Vec<RecordBatch>, FileError>> = (0..threads)
        .into_par_iter()
        .map(|t| {
            let rgs: Vec<usize> = (t * per..((t + 1) * per).min(groups)).collect();
            if rgs.is_empty() {
                return Ok(Vec::new());
            }
            let opts = ArrowReaderOptions::new().with_schema(hint.clone());
            let builder = open_file(path).and_then(|f| {
                ParquetRecordBatchReaderBuilder::try_new_with_options(f, opts)
                    .map_err(|e| err(e.to_string()))
            })?;
            // Batches of 32k rows: buffers small enough to be recycled by the
            // allocator instead of growing fresh memory per row group.
            read_groups(builder, rgs, 32_768, &pstr)
        })
        .collect();
    let mut out = Vec::new();
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Read row groups `groups` of a Parquet file into batches of `schema`.
pub fn read_parquet_part(
    path: &Path,
    schema: &FileSchema,
    groups: Range<usize>,
) -> Result<ParsedFile, FileError> {
    let pstr = path.display().to_string();
    let probe = open(path)?;
    let file_schema = probe.schema().clone();
    let n = probe.metadata().num_row_groups();
    drop(probe);
    let groups: Vec<usize> = (groups.start.min(n)..groups.end.min(n)).collect();
    let mut out = ParsedFile::default();
    let wanted: Vec<String> = schema.columns.iter().map(|c| c.source.join(".")).collect();
    if schema.detect_new || schema.rescue {
        for f in file_schema.fields() {
            if !wanted.iter().any(|w| w == f.name()) {
                out.new_fields.push(NewField {
                    path: f.name().clone(),
                    sample: String::new(),
                });
            }
        }
    }
    let parts: Vec<Result<Vec<RecordBatch>, FileError>> = groups
        .par_iter()
        .map(|&g| read_groups(open(path)?, vec![g], 65_536, &pstr))
        .collect();
    let out_schema = schema.arrow_schema();
    let mut row0 = 0u64;
    for p in parts {
        for b in p? {
            let rows = b.num_rows();
            let (batch, rejected) =
                convert(&b, schema, &wanted, &out_schema, row0).map_err(|source| {
                    FileError::Arrow {
                        path: pstr.clone(),
                        source,
                    }
                })?;
            out.rejected.extend(rejected);
            if batch.num_rows() > 0 {
                out.batches.push(batch);
            }
            row0 += rows as u64;
        }
    }
    Ok(out)
}

/// One file batch in the schema's columns; rows with a value that does not
/// fit are rescued or rejected (their `offset` is the row number).
fn convert(
    b: &RecordBatch,
    schema: &FileSchema,
    wanted: &[String],
    out_schema: &SchemaRef,
    row0: u64,
) -> Result<(RecordBatch, Vec<Rejected>), deltalake::arrow::error::ArrowError> {
    let rows = b.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(out_schema.fields().len());
    let mut rescued: Vec<Option<serde_json::Map<String, serde_json::Value>>> = Vec::new();
    let mut bad: Vec<Option<String>> = Vec::new();
    let mut note = |row: usize, col: &str, v: String, rescue: bool, why: String| {
        if rescue {
            if rescued.is_empty() {
                rescued.resize(rows, None);
            }
            rescued[row]
                .get_or_insert_with(Default::default)
                .insert(col.to_string(), serde_json::Value::String(v));
        } else {
            if bad.is_empty() {
                bad.resize(rows, None);
            }
            bad[row].get_or_insert(why);
        }
    };
    for (c, w) in schema.columns.iter().zip(wanted) {
        let t = target_type(c.kind);
        let col: ArrayRef = match b.schema().index_of(w) {
            Ok(i) => {
                let src = b.column(i);
                let casted = if kind_of(src.data_type()).is_none() {
                    deltalake::arrow::array::new_null_array(&t, rows)
                } else {
                    cast(src, &t)?
                };
                if casted.null_count() > src.null_count() {
                    for r in 0..rows {
                        if casted.is_null(r) && src.is_valid(r) {
                            let v = array_value_to_string(src, r).unwrap_or_default();
                            let why = format!("column `{w}`: `{v}` is not {}", c.kind.as_str());
                            note(r, &c.name, v, schema.rescue, why);
                        }
                    }
                }
                casted
            }
            Err(_) => deltalake::arrow::array::new_null_array(&t, rows),
        };
        cols.push(col);
    }
    if schema.rescue {
        for (i, f) in b.schema().fields().iter().enumerate() {
            if wanted.iter().any(|w| w == f.name()) {
                continue;
            }
            let a = b.column(i);
            for r in 0..rows {
                if a.is_valid(r) {
                    let v = array_value_to_string(a, r).unwrap_or_default();
                    note(r, f.name(), v, true, String::new());
                }
            }
        }
        let texts: Vec<Option<String>> = (0..rows)
            .map(|r| {
                rescued
                    .get(r)
                    .and_then(|m| m.as_ref())
                    .map(|m| serde_json::Value::Object(m.clone()).to_string())
            })
            .collect();
        cols.push(Arc::new(StringArray::from(texts)));
        debug_assert!(out_schema.field_with_name(RESCUED_COLUMN).is_ok());
    }
    let batch = RecordBatch::try_new(out_schema.clone(), cols)?;
    if bad.is_empty() {
        return Ok((batch, Vec::new()));
    }
    let mut rejected = Vec::new();
    let keep: deltalake::arrow::array::BooleanArray = bad
        .iter()
        .enumerate()
        .map(|(r, why)| match why {
            Some(w) => {
                rejected.push(Rejected {
                    offset: row0 + r as u64,
                    reason: w.clone(),
                    text: row_text(b, r),
                });
                Some(false)
            }
            None => Some(true),
        })
        .collect();
    Ok((filter_record_batch(&batch, &keep)?, rejected))
}

/// A row as JSON text (for quarantine).
fn row_text(b: &RecordBatch, r: usize) -> String {
    let mut m = serde_json::Map::new();
    for (i, f) in b.schema().fields().iter().enumerate() {
        let a = b.column(i);
        let v = if a.is_null(r) {
            serde_json::Value::Null
        } else {
            serde_json::Value::String(array_value_to_string(a, r).unwrap_or_default())
        };
        m.insert(f.name().clone(), v);
    }
    let s = serde_json::Value::Object(m).to_string();
    let mut end = s.len().min(1024);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{AsArray, Float64Array};
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::file::properties::WriterProperties;

    /// A file of `n` rows: `machine` cycles through `machines` ids.
    fn write(path: &Path, n: usize, machines: usize, dict_page_limit: usize) {
        let ids = StringArray::from_iter_values((0..n).map(|i| format!("mc-{:06}", i % machines)));
        let v = Float64Array::from_iter_values((0..n).map(|i| i as f64));
        let batch = RecordBatch::try_from_iter([
            ("machine", Arc::new(ids) as ArrayRef),
            ("v", Arc::new(v) as ArrayRef),
        ])
        .unwrap();
        let props = WriterProperties::builder()
            .set_dictionary_page_size_limit(dict_page_limit)
            .set_data_page_row_count_limit(1_000)
            .set_write_batch_size(1_000)
            .set_max_row_group_row_count(Some(4_000))
            .build();
        let mut w =
            ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    #[test]
    fn text_stays_dictionary_unless_the_writer_fell_back_to_plain() {
        let dir = tempfile::tempdir().unwrap();
        // Few machines: every page dictionary-encoded.
        let few = dir.path().join("few.parquet");
        write(&few, 10_000, 50, 1 << 20);
        let b = read_table(&few, 2).unwrap();
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 10_000);
        assert!(matches!(
            b[0].column(0).data_type(),
            DataType::Dictionary(..)
        ));
        // Many machines and a small dictionary page: the writer falls back
        // to plain pages, read as string views with the same values.
        let many = dir.path().join("many.parquet");
        write(&many, 10_000, 5_000, 4_096);
        let b = read_table(&many, 2).unwrap();
        assert_eq!(b[0].column(0).data_type(), &DataType::Utf8View);
        let mut seen = Vec::new();
        for batch in &b {
            let c = batch.column(0).as_string_view();
            seen.extend(c.iter().map(|s| s.unwrap().to_string()));
        }
        assert_eq!(seen.len(), 10_000);
        assert_eq!(seen[7_777], format!("mc-{:06}", 7_777 % 5_000));
    }
}
