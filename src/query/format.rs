//! Query results out: a text table for people, CSV, JSON (an array of row
//! objects, or one object per line), Parquet, and the Arrow IPC stream for
//! programs that want typed columns without parsing.

use std::io::Write;

use deltalake::arrow::error::ArrowError;
use deltalake::arrow::ipc::writer::StreamWriter;

use super::QueryResult;

/// Output formats of `ironlake sql` and `POST /api/sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Aligned text table.
    Table,
    Csv,
    /// A JSON array of row objects.
    Json,
    /// One JSON object per line.
    Jsonl,
    Parquet,
    /// Arrow IPC stream.
    Arrow,
}

/// Errors writing a result.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] deltalake::parquet::errors::ParquetError),
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
}

/// Write `r` to `out` in `format`.
pub fn write<W: Write + Send>(r: &QueryResult, format: Format, out: W) -> Result<(), FormatError> {
    let batches: Vec<&deltalake::arrow::array::RecordBatch> = r.batches.iter().collect();
    match format {
        Format::Table => {
            let mut out = out;
            let t = deltalake::arrow::util::pretty::pretty_format_batches_with_schema(
                r.schema.clone(),
                &r.batches,
            )?;
            writeln!(out, "{t}")?;
            writeln!(
                out,
                "({} row{})",
                r.rows(),
                if r.rows() == 1 { "" } else { "s" }
            )?;
        }
        Format::Csv => {
            let mut w = deltalake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(out);
            if batches.is_empty() {
                w.write(&deltalake::arrow::array::RecordBatch::new_empty(
                    r.schema.clone(),
                ))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = deltalake::arrow::json::ArrayWriter::new(out);
            w.write_batches(&batches)?;
            w.finish()?;
        }
        Format::Jsonl => {
            let mut w = deltalake::arrow::json::LineDelimitedWriter::new(out);
            w.write_batches(&batches)?;
            w.finish()?;
        }
        Format::Parquet => {
            let mut w =
                deltalake::parquet::arrow::ArrowWriter::try_new(out, r.schema.clone(), None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
        Format::Arrow => {
            let mut w = StreamWriter::try_new(out, &r.schema)?;
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}
