//! Expectations on a pipeline's output rows, evaluated before anything is
//! written: `warn` counts, `drop` leaves the row out (the caller quarantines
//! it under the first drop expectation it breaks), `fail` stops the update
//! with the expectation, the number of rows and an example. A row for which
//! the condition is false or NULL breaks it.

use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::{filter_record_batch, not, or_kleene};
use deltalake::datafusion::dataframe::DataFrame;
use deltalake::datafusion::prelude::SessionContext;
use serde::Serialize;

use super::spec::{Action, Pipeline};
use super::PipelineError;

/// Rows that broke one expectation in an update.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectationStats {
    pub name: String,
    pub action: Action,
    pub failed: usize,
}

/// Rows dropped by one expectation.
pub struct Dropped {
    pub expectation: String,
    pub condition: String,
    pub rows: RecordBatch,
}

/// What evaluating the expectations gave.
pub struct Checked {
    /// Rows to write (at least one, possibly empty, batch with the output schema).
    pub keep: Vec<RecordBatch>,
    pub dropped: Vec<Dropped>,
    pub warned: usize,
}

/// Evaluate `p`'s expectations on the output of `df`, adding the failures
/// to `stats` (one per expectation, in order).
pub async fn check(
    p: &Pipeline,
    ctx: &SessionContext,
    df: DataFrame,
    stats: &mut [ExpectationStats],
) -> Result<Checked, PipelineError> {
    let out_cols = df.schema().fields().len();
    let out_schema = Arc::new(df.schema().as_arrow().clone());
    let mut df = df;
    for (i, e) in p.expectations.iter().enumerate() {
        df = ctx
            .parse_sql_expr(&e.condition, df.schema())
            .and_then(|x| df.clone().with_column(&format!("__expect_{i}"), x))
            .map_err(|err| PipelineError::BadExpectation {
                name: e.name.clone(),
                message: format!("`{}`: {}", e.condition, err.strip_backtrace()),
            })?;
    }
    let batches = df
        .collect()
        .await
        .map_err(|e| PipelineError::Query(crate::query::QueryError::Exec(e)))?;
    let werr = |e: deltalake::arrow::error::ArrowError| PipelineError::Write {
        table: p.target.to_string(),
        message: e.to_string(),
    };
    let mut out = Checked {
        keep: Vec::new(),
        dropped: Vec::new(),
        warned: 0,
    };
    for b in &batches {
        let data = b
            .project(&(0..out_cols).collect::<Vec<_>>())
            .map_err(werr)?;
        let mut dropped: Option<BooleanArray> = None;
        for (i, e) in p.expectations.iter().enumerate() {
            let col = b.column(out_cols + i);
            let Some(ok) = col.as_boolean_opt() else {
                return Err(PipelineError::BadExpectation {
                    name: e.name.clone(),
                    message: format!(
                        "`{}` is {}, not a boolean condition",
                        e.condition,
                        col.data_type()
                    ),
                });
            };
            // NULL counts as broken: the condition could not be affirmed.
            let broken: BooleanArray = ok.iter().map(|v| Some(v != Some(true))).collect();
            let n = broken.true_count();
            stats[i].failed += n;
            if n == 0 {
                continue;
            }
            match e.action {
                Action::Warn => out.warned += n,
                Action::Fail => {
                    let rows = filter_record_batch(&data, &broken).map_err(werr)?;
                    let example = rows_json(&rows.slice(0, rows.num_rows().min(2)));
                    return Err(PipelineError::Expectation {
                        name: e.name.clone(),
                        condition: e.condition.clone(),
                        rows: n,
                        example,
                    });
                }
                Action::Drop => {
                    // Quarantine under the first drop expectation a row breaks.
                    let fresh = match &dropped {
                        None => broken.clone(),
                        Some(d) => deltalake::arrow::compute::and(&broken, &not(d).map_err(werr)?)
                            .map_err(werr)?,
                    };
                    out.dropped.push(Dropped {
                        expectation: e.name.clone(),
                        condition: e.condition.clone(),
                        rows: filter_record_batch(&data, &fresh).map_err(werr)?,
                    });
                    dropped = Some(match dropped {
                        None => broken,
                        Some(d) => or_kleene(&d, &broken).map_err(werr)?,
                    });
                }
            }
        }
        let kept = match &dropped {
            None => data,
            Some(d) => filter_record_batch(&data, &not(d).map_err(werr)?).map_err(werr)?,
        };
        out.keep.push(kept);
    }
    if out.keep.is_empty() {
        // Nothing to write still commits the progress marker (and, for a
        // new target, creates it with its columns).
        out.keep.push(RecordBatch::new_empty(out_schema));
    }
    Ok(out)
}

/// Rows as JSON (an object for one row, an array otherwise), for messages
/// and quarantine payloads.
pub fn rows_json(b: &RecordBatch) -> String {
    let mut buf = Vec::new();
    let mut w = deltalake::arrow::json::ArrayWriter::new(&mut buf);
    let ok = w.write(b).is_ok() && w.finish().is_ok();
    let s = if ok {
        String::from_utf8_lossy(&buf).into_owned()
    } else {
        String::new()
    };
    if b.num_rows() == 1 {
        s.trim_start_matches('[').trim_end_matches(']').to_string()
    } else {
        s
    }
}
