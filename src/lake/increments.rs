//! Increments: what an append-only Delta table gained between two versions,
//! i.e. the files its commits added, read from the commit log itself. This
//! is how a pipeline update is incremental without scanning the whole table
//! or trusting a timestamp watermark (rows can commit out of ingest order).
//!
//! Compaction (`optimize`) rewrites files with `dataChange = false`; those
//! adds are skipped, so compacting a source never duplicates rows
//! downstream. A commit that removes data (`dataChange = true`: a delete, an
//! overwrite) means the source is not append-only any more: the update stops
//! with [`IncrementError::NotAppendOnly`] rather than guess.

use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::{DeltaTable, ObjectStore, Path};
use object_store::ObjectStoreExt;

/// Errors reading a table's increments.
#[derive(Debug, thiserror::Error)]
pub enum IncrementError {
    #[error("source {table}: commit {version} removes data ({what}); pipelines read append-only sources (run with --full-refresh to rebuild the target)")]
    NotAppendOnly {
        table: String,
        version: u64,
        what: String,
    },
    #[error("source {table}: commit {version}: {message}")]
    Log {
        table: String,
        version: u64,
        message: String,
    },
    #[error("source {table}: file {path}: {message}")]
    File {
        table: String,
        path: String,
        message: String,
    },
}

/// A file a commit added, with its partition values.
#[derive(Debug, Clone)]
pub struct AddedFile {
    pub path: String,
    pub partition_values: Vec<(String, Option<String>)>,
    pub size: u64,
    pub version: u64,
}

/// Files with new rows in commits `after+1 ..= upto` (in commit order).
pub async fn added_files(
    table: &DeltaTable,
    name: &str,
    after: Option<u64>,
    upto: u64,
) -> Result<Vec<AddedFile>, IncrementError> {
    let log = table.log_store();
    let first = after.map_or(0, |v| v + 1);
    let mut out = Vec::new();
    for v in first..=upto {
        let lerr = |message: String| IncrementError::Log {
            table: name.to_string(),
            version: v,
            message,
        };
        let Some(bytes) = log
            .read_commit_entry(v)
            .await
            .map_err(|e| lerr(e.to_string()))?
        else {
            return Err(lerr("missing from the log (vacuumed or expired?)".into()));
        };
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let action: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| lerr(e.to_string()))?;
            if let Some(add) = action.get("add") {
                if add.get("dataChange").and_then(|d| d.as_bool()) == Some(false) {
                    continue;
                }
                let path = add["path"].as_str().unwrap_or_default().to_string();
                let partition_values = add["partitionValues"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(AddedFile {
                    path,
                    partition_values,
                    size: add["size"].as_u64().unwrap_or(0),
                    version: v,
                });
            } else if let Some(rm) = action.get("remove") {
                if rm.get("dataChange").and_then(|d| d.as_bool()) != Some(false) {
                    return Err(IncrementError::NotAppendOnly {
                        table: name.to_string(),
                        version: v,
                        what: format!("removes {}", rm["path"].as_str().unwrap_or("a file")),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Read added files as batches of the table's schema (partition columns
/// filled from the file's partition values).
pub async fn read_files(
    table: &DeltaTable,
    name: &str,
    schema: &SchemaRef,
    files: &[AddedFile],
) -> Result<Vec<RecordBatch>, IncrementError> {
    let store: Arc<dyn ObjectStore> = table.log_store().object_store(None);
    let mut out = Vec::new();
    for f in files {
        let ferr = |message: String| IncrementError::File {
            table: name.to_string(),
            path: f.path.clone(),
            message,
        };
        let decoded = percent_decode(&f.path);
        let path = Path::parse(&decoded).map_err(|e| ferr(e.to_string()))?;
        let bytes = store
            .get(&path)
            .await
            .map_err(|e| ferr(e.to_string()))?
            .bytes()
            .await
            .map_err(|e| ferr(e.to_string()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| ferr(e.to_string()))?
            .with_batch_size(65_536)
            .build()
            .map_err(|e| ferr(e.to_string()))?;
        for b in reader {
            let b = b.map_err(|e| ferr(e.to_string()))?;
            let n = b.num_rows();
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for field in schema.fields() {
                let col = match b.column_by_name(field.name()) {
                    Some(c) => c.clone(),
                    None => match f.partition_values.iter().find(|(k, _)| k == field.name()) {
                        Some((_, v)) => Arc::new(StringArray::from(vec![v.clone(); n])) as ArrayRef,
                        None => new_null_array(field.data_type(), n),
                    },
                };
                let col = if col.data_type() == field.data_type() {
                    col
                } else {
                    cast(&col, field.data_type())
                        .map_err(|e| ferr(format!("column {}: {e}", field.name())))?
                };
                cols.push(col);
            }
            out.push(RecordBatch::try_new(schema.clone(), cols).map_err(|e| ferr(e.to_string()))?);
        }
    }
    Ok(out)
}

/// Paths in the log are URL-encoded (`date=2026-11-25` stays, spaces do not).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(
            super::percent_decode("plant=a%20b/date=2026-11-25/x.parquet"),
            "plant=a b/date=2026-11-25/x.parquet"
        );
        assert_eq!(super::percent_decode("100%"), "100%");
    }
}
