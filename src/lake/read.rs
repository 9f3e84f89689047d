//! Reading tables back: asset history for the API and the latest checkpoint of
//! every twin at start-up. Queries go through DataFusion over the Delta table,
//! with partition (plant, date) and column pruning; filters are built as
//! expressions, never by pasting user text into SQL.

use std::collections::HashMap;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use deltalake::datafusion::prelude::{col, lit, SessionContext};
use deltalake::datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use serde::Serialize;

use super::rows::day_of;
use super::{LakeError, Lakehouse, Table};

/// One point of an asset's history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryPoint {
    /// Source timestamp, UTC ms.
    pub ts: i64,
    pub signal: String,
    pub value: f64,
    pub quality: String,
}

/// A history query over `silver.readings`.
#[derive(Debug, Clone)]
pub struct HistoryQuery<'a> {
    pub plant: &'a str,
    pub asset_id: &'a str,
    pub signal: Option<&'a str>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: usize,
}

fn ts_lit(ms: i64) -> deltalake::datafusion::prelude::Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(ms * 1000),
        Some("UTC".into()),
    ))
}

async fn open(lake: &Lakehouse, t: Table) -> Result<(SessionContext, DeltaTable), LakeError> {
    let table = lake.open_or_create(t).await?;
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|source| LakeError::Delta {
            table: t.name(),
            source,
        })?;
    Ok((ctx, table))
}

impl Lakehouse {
    /// The newest `limit` points of an asset in `[from, to]`, oldest first.
    /// The second value tells whether older points were cut by the limit.
    pub async fn history(
        &self,
        q: &HistoryQuery<'_>,
    ) -> Result<(Vec<HistoryPoint>, bool), LakeError> {
        let t = Table::SilverReadings;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let (ctx, table) = open(self, t).await?;
        let provider = table.table_provider().await.map_err(qerr)?;
        let mut filter = col("plant")
            .eq(lit(q.plant))
            .and(col("date").gt_eq(lit(ScalarValue::Date32(Some(day_of(q.from_ms))))))
            .and(col("date").lt_eq(lit(ScalarValue::Date32(Some(day_of(q.to_ms))))))
            .and(col("asset_id").eq(lit(q.asset_id)))
            .and(col("ts").gt_eq(ts_lit(q.from_ms)))
            .and(col("ts").lt_eq(ts_lit(q.to_ms)));
        if let Some(s) = q.signal {
            filter = filter.and(col("signal").eq(lit(s)));
        }
        let df = ctx
            .read_table(provider)
            .map_err(qerr)?
            .filter(filter)
            .map_err(qerr)?
            .select(vec![col("ts"), col("signal"), col("value"), col("quality")])
            .map_err(qerr)?
            .sort(vec![
                col("ts").sort(false, false),
                col("signal").sort(true, false),
            ])
            .map_err(qerr)?
            .limit(0, Some(q.limit + 1))
            .map_err(qerr)?;
        let batches = df.collect().await.map_err(qerr)?;
        let mut out = Vec::new();
        for b in &batches {
            let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
            let sig = string_column(b, 1)?;
            let val = b.column(2).as_primitive::<Float64Type>();
            let qual = string_column(b, 3)?;
            for i in 0..b.num_rows() {
                out.push(HistoryPoint {
                    ts: ts.value(i) / 1000,
                    signal: sig.value(i).to_string(),
                    value: val.value(i),
                    quality: qual.value(i).to_string(),
                });
            }
        }
        let truncated = out.len() > q.limit;
        out.truncate(q.limit);
        out.reverse();
        Ok((out, truncated))
    }

    /// The newest checkpoint (`stats` JSON) of every asset in `gold.asset_state`.
    pub async fn latest_checkpoints(&self) -> Result<HashMap<String, String>, LakeError> {
        let t = Table::GoldAssetState;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let (ctx, table) = open(self, t).await?;
        let provider = table.table_provider().await.map_err(qerr)?;
        ctx.register_table("asset_state", provider).map_err(qerr)?;
        let df = ctx
            .sql(
                "SELECT asset_id, stats FROM (\
                   SELECT asset_id, stats, row_number() OVER (PARTITION BY asset_id ORDER BY ts DESC) AS rn \
                   FROM asset_state) WHERE rn = 1",
            )
            .await
            .map_err(qerr)?;
        let batches = df.collect().await.map_err(qerr)?;
        let mut out = HashMap::new();
        for b in &batches {
            let a = string_column(b, 0)?;
            let s = string_column(b, 1)?;
            for i in 0..b.num_rows() {
                out.insert(a.value(i).to_string(), s.value(i).to_string());
            }
        }
        Ok(out)
    }
}

/// A column of a query result as plain UTF-8 strings, whatever string layout
/// (Utf8, LargeUtf8, Utf8View, dictionary) the engine produced.
pub fn string_column(
    b: &RecordBatch,
    i: usize,
) -> Result<deltalake::arrow::array::StringArray, LakeError> {
    let c =
        deltalake::arrow::compute::cast(b.column(i), &deltalake::arrow::datatypes::DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

/// Total rows of a set of batches.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// First column of the first row as i64 (for `SELECT count(*) ...`).
pub fn scalar_i64(batches: &[RecordBatch]) -> Option<i64> {
    let b = batches.iter().find(|b| b.num_rows() > 0)?;
    let c = b.column(0);
    if c.is_null(0) {
        return None;
    }
    c.as_primitive_opt::<deltalake::arrow::datatypes::Int64Type>()
        .map(|a| a.value(0))
}
