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
use deltalake::parquet::file::metadata::ParquetMetaData;
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

/// The types [`read_table`] reads a file's columns as: the file's, with text
/// as a dictionary when every page of it is dictionary-encoded and as string
/// views otherwise.
fn table_schema(meta: &ParquetMetaData, schema: &SchemaRef) -> SchemaRef {
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
    Arc::new(Schema::new(
        schema
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
    ))
}

/// Read a whole Parquet file as it is (no schema mapping), for the engine's
/// own jobs and `ironlake bench` (W0): flat files of numbers, timestamps and
/// text by ironlake's page decoder ([`super::pages`]), anything else by
/// arrow-rs with row groups split between `threads` readers.
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
    let hint = table_schema(&meta, probe.schema());
    drop(probe);
    // Flat numbers, timestamps and text: decoded by ironlake's own page
    // decoder into whole-file column buffers; anything else (or a page it
    // cannot decode, so that the error below is arrow-rs's) by arrow-rs.
    let all: Vec<usize> = (0..hint.fields().len()).collect();
    match open_file(path).map(|f| super::pages::read(&f, &meta, &hint, &all, 0..groups, threads)) {
        Ok(Ok(batches)) => return Ok(batches),
        Ok(Err(why)) => tracing::debug!(path = %pstr, ?why, "read by arrow-rs"),
        Err(e) => return Err(e),
    }
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
    let meta = probe.metadata().clone();
    let n = meta.num_row_groups();
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
    // The wanted columns of these row groups by the page decoder (other
    // columns' pages are not read), or by arrow-rs.
    let hint = table_schema(&meta, &file_schema);
    let columns: Vec<usize> = file_schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.iter().any(|w| w == f.name()))
        .map(|(i, _)| i)
        .collect();
    let range = groups.first().copied().unwrap_or(0)..groups.last().map_or(0, |g| g + 1);
    let fast = open_file(path)
        .map(|f| super::pages::read(&f, &meta, &hint, &columns, range, super::default_threads()))?;
    let parts: Vec<Result<Vec<RecordBatch>, FileError>> = match fast {
        Ok(batches) => vec![Ok(batches)],
        Err(why) => {
            tracing::debug!(path = %pstr, ?why, "read by arrow-rs");
            groups
                .par_iter()
                .map(|&g| read_groups(open(path)?, vec![g], 65_536, &pstr))
                .collect()
        }
    };
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

    /// Every column kind the page decoder takes, `n` rows, about `nulls`
    /// of them null in the nullable columns.
    fn mixed(n: usize, seed: u64, nulls: f64) -> RecordBatch {
        use deltalake::arrow::array::{
            Date32Array, Float32Array, Int32Array, Int64Array, TimestampMillisecondArray,
        };
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let null = move |r: &mut rand_chacha::ChaCha8Rng| nulls > 0.0 && r.random_bool(nulls);
        let mut ts = Vec::new();
        let mut id = Vec::new();
        let mut count = Vec::new();
        let mut day = Vec::new();
        let mut ratio = Vec::new();
        let mut value = Vec::new();
        let mut machine = Vec::new();
        let mut note = Vec::new();
        for i in 0..n {
            ts.push(
                (!null(&mut r)).then(|| 1_700_000_000_000 + i as i64 * 100 + r.random_range(0..50)),
            );
            id.push(i as i64 * 7 - 3_000);
            count.push((!null(&mut r)).then(|| r.random_range(-5..500)));
            day.push(19_000 + (i / 1_000) as i32);
            ratio.push((!null(&mut r)).then(|| (r.random_range(0..100) as f32) / 8.0));
            value.push(if null(&mut r) {
                None
            } else if i % 97 == 0 {
                Some(f64::NAN)
            } else {
                Some((r.random_range(0.0..400.0f64) * 100.0).round() / 100.0)
            });
            machine.push(format!("press-{:02}", (i * 7) % 37));
            note.push(match r.random_range(0..10) {
                0 if nulls > 0.0 => None,
                1 => Some(String::new()),
                2 => Some("Prüfstand Ölpumpe".to_string()),
                _ => Some(format!(
                    "a longer free-text note, number {}",
                    r.random_range(0..n)
                )),
            });
        }
        RecordBatch::try_from_iter([
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")) as ArrayRef,
            ),
            ("id", Arc::new(Int64Array::from(id)) as ArrayRef),
            ("count", Arc::new(Int32Array::from(count)) as ArrayRef),
            ("day", Arc::new(Date32Array::from(day)) as ArrayRef),
            ("ratio", Arc::new(Float32Array::from(ratio)) as ArrayRef),
            ("value", Arc::new(Float64Array::from(value)) as ArrayRef),
            ("machine", Arc::new(StringArray::from(machine)) as ArrayRef),
            ("note", Arc::new(StringArray::from(note)) as ArrayRef),
        ])
        .unwrap()
    }

    fn write_with(path: &Path, batch: &RecordBatch, props: WriterProperties) {
        let mut w =
            ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
    }

    /// The file as arrow-rs reads it by itself, text as `Utf8`, one batch.
    fn reference(path: &Path) -> RecordBatch {
        let r = open(path).unwrap().build().unwrap();
        let schema = deltalake::arrow::array::RecordBatchReader::schema(&r);
        let b: Vec<RecordBatch> = r.collect::<Result<_, _>>().unwrap();
        deltalake::arrow::compute::concat_batches(&schema, &b).unwrap()
    }

    /// `batches` as one batch with text as `Utf8`.
    fn plain(batches: &[RecordBatch], like: &RecordBatch) -> RecordBatch {
        let cols = (0..like.num_columns())
            .map(|c| {
                let parts: Vec<ArrayRef> = batches
                    .iter()
                    .map(|b| cast(b.column(c), like.column(c).data_type()).unwrap())
                    .collect();
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                deltalake::arrow::compute::concat(&refs).unwrap()
            })
            .collect();
        RecordBatch::try_new(like.schema(), cols).unwrap()
    }

    #[test]
    fn the_page_decoder_reads_what_arrow_rs_reads_under_every_writer_setting() {
        use deltalake::parquet::basic::{Compression, ZstdLevel};
        use deltalake::parquet::file::properties::WriterVersion;
        let dir = tempfile::tempdir().unwrap();
        let mut cases = 0;
        for (k, nulls) in [0.0, 0.05, 0.9].into_iter().enumerate() {
            let batch = mixed(10_007, k as u64, nulls);
            for dictionary in [true, false] {
                for v2 in [false, true] {
                    for (codec, small_pages) in [
                        (Compression::SNAPPY, false),
                        (Compression::UNCOMPRESSED, true),
                        (Compression::ZSTD(ZstdLevel::default()), v2),
                    ] {
                        let mut props = WriterProperties::builder()
                            .set_dictionary_enabled(dictionary)
                            .set_compression(codec)
                            .set_max_row_group_row_count(Some(3_000))
                            .set_writer_version(if v2 {
                                WriterVersion::PARQUET_2_0
                            } else {
                                WriterVersion::PARQUET_1_0
                            });
                        if small_pages {
                            // Many pages, and dictionaries that overflow
                            // into plain pages part-way through a chunk.
                            props = props
                                .set_data_page_row_count_limit(333)
                                .set_write_batch_size(333)
                                .set_dictionary_page_size_limit(2_048);
                        }
                        let path = dir.path().join(format!("c{cases}.parquet"));
                        write_with(&path, &batch, props.build());
                        let want = reference(&path);
                        let probe = open(&path).unwrap();
                        let hint = table_schema(probe.metadata(), probe.schema());
                        let fast = super::super::pages::read(
                            &File::open(&path).unwrap(),
                            probe.metadata(),
                            &hint,
                            &(0..8).collect::<Vec<_>>(),
                            0..usize::MAX,
                            2,
                        );
                        // Version 2 writers fall back to delta encodings,
                        // which arrow-rs reads.
                        if v2 && (!dictionary || small_pages) {
                            match fast {
                                Err(super::super::pages::Outcome::Unsupported(why)) => {
                                    assert!(why.contains("DELTA"), "case {cases}: {why}")
                                }
                                other => panic!("case {cases}: {:?}", other.map(|b| b.len())),
                            }
                            assert_eq!(plain(&read_table(&path, 2).unwrap(), &want), want);
                            cases += 1;
                            continue;
                        }
                        let fast = fast.unwrap_or_else(|e| panic!("case {cases}: {e:?}"));
                        assert_eq!(fast.len(), 4, "one batch per row group");
                        assert_eq!(
                            fast.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
                            [3_000, 3_000, 3_000, 1_007]
                        );
                        assert_eq!(fast[0].schema(), hint);
                        let got = plain(&fast, &want);
                        for c in 0..want.num_columns() {
                            assert_eq!(
                                got.column(c).to_data(),
                                want.column(c).to_data(),
                                "case {cases} ({codec:?}, dictionary {dictionary}, v2 {v2}, nulls {nulls}): column {}",
                                want.schema().field(c).name()
                            );
                        }
                        // read_table takes the same path.
                        assert_eq!(plain(&read_table(&path, 2).unwrap(), &want), got);
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 36);
    }

    #[test]
    fn columns_the_page_decoder_does_not_take_are_read_by_arrow_rs() {
        use deltalake::arrow::array::BooleanArray;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.parquet");
        let b = mixed(5_000, 9, 0.1);
        let mut cols = b.columns().to_vec();
        cols.push(Arc::new(BooleanArray::from_iter(
            (0..5_000).map(|i| Some(i % 3 == 0)),
        )));
        let mut fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("running", DataType::Boolean, true));
        let b = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        write_with(&path, &b, WriterProperties::builder().build());
        let probe = open(&path).unwrap();
        let hint = table_schema(probe.metadata(), probe.schema());
        let why = super::super::pages::read(
            &File::open(&path).unwrap(),
            probe.metadata(),
            &hint,
            &(0..9).collect::<Vec<_>>(),
            0..1,
            2,
        )
        .unwrap_err();
        assert!(
            matches!(why, super::super::pages::Outcome::Unsupported(_)),
            "{why:?}"
        );
        let want = reference(&path);
        assert_eq!(plain(&read_table(&path, 2).unwrap(), &want), want);
    }

    #[test]
    fn a_damaged_file_is_an_error_never_a_panic() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ok.parquet");
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(2_000))
            .set_data_page_row_count_limit(500)
            .set_write_batch_size(500)
            .set_compression(deltalake::parquet::basic::Compression::UNCOMPRESSED)
            .build();
        write_with(&path, &mixed(6_000, 3, 0.05), props);
        let good = std::fs::read(&path).unwrap();
        // Cut short: the footer is gone.
        let cut = dir.path().join("cut.parquet");
        std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
        assert!(read_table(&cut, 2).is_err());
        // Bytes of the pages changed (the footer intact): page headers,
        // levels, bit widths, run lengths, dictionary indices and string
        // lengths go wrong in every way; each read ends in an error or in a
        // table of the right size.
        let footer = u32::from_le_bytes(good[good.len() - 8..good.len() - 4].try_into().unwrap())
            as usize
            + 8;
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let bad = dir.path().join("bad.parquet");
        let mut errors = 0;
        for _ in 0..300 {
            let mut data = good.clone();
            for _ in 0..r.random_range(1..4) {
                let at = r.random_range(4..good.len() - footer);
                data[at] = r.random();
            }
            std::fs::write(&bad, &data).unwrap();
            match read_table(&bad, 2) {
                Ok(b) => assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 6_000),
                Err(_) => errors += 1,
            }
        }
        assert!(errors > 0, "no damage was noticed");
    }

    #[test]
    fn a_landing_file_slice_reads_only_its_columns_and_row_groups() {
        use super::super::{ColumnKind, FileColumn, FileSchema};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slice.parquet");
        let src = mixed(10_007, 5, 0.05);
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(3_000))
            .build();
        write_with(&path, &src, props);
        let mut schema = FileSchema::new(vec![
            FileColumn::new("ts", "ts", ColumnKind::Timestamp, true),
            FileColumn::new("machine_id", "machine", ColumnKind::Text, false),
            FileColumn::new("value", "value", ColumnKind::Float, true),
            FileColumn::new("count", "count", ColumnKind::Float, true),
            FileColumn::new("note", "note", ColumnKind::Text, true),
            FileColumn::new("absent", "absent", ColumnKind::Float, true),
        ]);
        schema.detect_new = true;
        let got = read_parquet_part(&path, &schema, 1..3).unwrap();
        assert!(got.rejected.is_empty());
        let names: Vec<&str> = got.new_fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["id", "day", "ratio"]);
        let b = deltalake::arrow::compute::concat_batches(&got.batches[0].schema(), &got.batches)
            .unwrap();
        assert_eq!(b.num_rows(), 6_000);
        let want = src.slice(3_000, 6_000);
        let text = |a: &ArrayRef| cast(a, &DataType::Utf8).unwrap();
        assert_eq!(
            text(b.column(1)).to_data(),
            text(want.column_by_name("machine").unwrap()).to_data()
        );
        assert_eq!(
            text(b.column(4)).to_data(),
            text(want.column_by_name("note").unwrap()).to_data()
        );
        assert_eq!(
            b.column(2).to_data(),
            want.column_by_name("value").unwrap().to_data()
        );
        assert_eq!(
            b.column(3).to_data(),
            cast(want.column_by_name("count").unwrap(), &DataType::Float64)
                .unwrap()
                .to_data()
        );
        assert_eq!(
            b.column(0).to_data(),
            want.column_by_name("ts").unwrap().to_data()
        );
        assert_eq!(b.column(5).null_count(), 6_000);
    }
}
