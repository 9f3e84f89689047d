//! Time-series kernels as SQL table functions, for what plain SQL cannot
//! say well:
//!
//! ```sql
//! -- a regular 1-minute grid per asset, interpolated, no bridging of gaps > 5 min
//! SELECT * FROM ts_resample('silver.readings', 'power', 60000, 'linear', 300000, 'now-1d');
//! -- every pause in a signal longer than 30 s
//! SELECT * FROM ts_gaps('silver.readings', 'power', 30000, 'now-1d');
//! ```
//!
//! The first argument names a readings-shaped table (`asset_id`, `signal`,
//! `ts`, `value`); the last, optional one bounds the time read (RFC 3339,
//! epoch ms or `now-<n><s|m|h|d>`). The call itself only checks arguments;
//! the data is read and the kernel run when the query executes.

use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use deltalake::datafusion::catalog::{
    Session, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use deltalake::datafusion::datasource::memory::MemorySourceConfig;
use deltalake::datafusion::error::{DataFusionError, Result};
use deltalake::datafusion::logical_expr::{Expr, TableType};
use deltalake::datafusion::physical_plan::ExecutionPlan;
use deltalake::datafusion::scalar::ScalarValue;

use super::SqlEngine;
use crate::lake::read::string_column;
use crate::timeseries::resample::{gaps, resample, Fill};
use crate::timeseries::{KeyInterner, RowOrder};

/// Which kernel a call runs.
#[derive(Debug, Clone)]
enum Op {
    Resample {
        interval_ms: i64,
        fill: Fill,
        max_gap_ms: Option<i64>,
    },
    Gaps {
        threshold_ms: i64,
    },
}

/// A registered function: `ts_resample` or `ts_gaps`.
#[derive(Debug)]
pub struct KernelFunction {
    engine: SqlEngine,
    name: &'static str,
}

impl KernelFunction {
    /// Register `ts_resample` and `ts_gaps` in a session.
    pub fn register(engine: &SqlEngine, ctx: &deltalake::datafusion::prelude::SessionContext) {
        for name in ["ts_resample", "ts_gaps"] {
            ctx.register_udtf(
                name,
                Arc::new(KernelFunction {
                    engine: engine.clone(),
                    name,
                }),
            );
        }
    }
}

fn plan_err(msg: String) -> DataFusionError {
    DataFusionError::Plan(msg)
}

fn text(e: &Expr) -> Option<String> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

fn int(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::Int64(Some(v)), _) => Some(*v),
        Expr::Literal(ScalarValue::Int32(Some(v)), _) => Some(*v as i64),
        Expr::Literal(ScalarValue::UInt64(Some(v)), _) => Some(*v as i64),
        _ => None,
    }
}

impl TableFunctionImpl for KernelFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let a = args.exprs();
        let usage = match self.name {
            "ts_resample" => "ts_resample('layer.table', 'signal', interval_ms [, 'linear'|'ffill' [, max_gap_ms [, 'since']]])",
            _ => "ts_gaps('layer.table', 'signal', threshold_ms [, 'since'])",
        };
        let bad = |what: &str| plan_err(format!("{}: {what}; usage: {usage}", self.name));
        let table = a
            .first()
            .and_then(text)
            .ok_or_else(|| bad("first argument: a table name in quotes"))?;
        let name = crate::lake::TableName::parse(&table).map_err(|e| bad(&e.to_string()))?;
        if !self.engine.lake.exists(&name) {
            return Err(bad(&format!("no table `{table}`")));
        }
        let signal = a
            .get(1)
            .and_then(text)
            .ok_or_else(|| bad("second argument: a signal name in quotes"))?;
        let n = a
            .get(2)
            .and_then(int)
            .filter(|&v| v > 0)
            .ok_or_else(|| bad("third argument: milliseconds > 0"))?;
        let (op, since_at) = match self.name {
            "ts_resample" => {
                let fill = match a.get(3) {
                    None => Fill::Linear,
                    Some(e) => text(e)
                        .ok_or_else(|| bad("fourth argument: 'linear' or 'ffill'"))?
                        .parse()
                        .map_err(|e: crate::timeseries::TsError| bad(&e.to_string()))?,
                };
                let max_gap_ms = match a.get(4) {
                    None => None,
                    Some(e) => Some(int(e).ok_or_else(|| bad("fifth argument: max gap in ms"))?),
                };
                (
                    Op::Resample {
                        interval_ms: n,
                        fill,
                        max_gap_ms,
                    },
                    5,
                )
            }
            _ => (Op::Gaps { threshold_ms: n }, 3),
        };
        let since = match a.get(since_at) {
            None => None,
            Some(e) => {
                let s = text(e).ok_or_else(|| bad("last argument: a time in quotes"))?;
                Some(
                    crate::time::parse_time(&s, crate::time::now_ms())
                        .map_err(|m| bad(&m.to_string()))?,
                )
            }
        };
        if a.len() > since_at + 1 {
            return Err(bad("too many arguments"));
        }
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(match op {
            Op::Resample { .. } => vec![
                Field::new("asset_id", DataType::Utf8, false),
                Field::new("ts", ts, false),
                Field::new("value", DataType::Float64, true),
            ],
            Op::Gaps { .. } => vec![
                Field::new("asset_id", DataType::Utf8, false),
                Field::new("gap_start", ts.clone(), false),
                Field::new("gap_end", ts, false),
                Field::new("duration_ms", DataType::Int64, false),
            ],
        }));
        Ok(Arc::new(KernelTable {
            engine: self.engine.clone(),
            table: name,
            signal,
            since,
            op,
            schema,
        }))
    }
}

/// The result of a kernel call, computed at scan time.
#[derive(Debug)]
struct KernelTable {
    engine: SqlEngine,
    table: crate::lake::TableName,
    signal: String,
    since: Option<i64>,
    op: Op,
    schema: SchemaRef,
}

fn us_array(ms: &[i64]) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(ms.iter().map(|t| t * 1000).collect::<Vec<_>>())
        .with_timezone("UTC")
}

impl KernelTable {
    async fn compute(&self) -> Result<RecordBatch> {
        use deltalake::datafusion::prelude::{col, lit};
        use deltalake::datafusion::scalar::ScalarValue;
        // Rows of the signal (since `since`), in any order: the kernels
        // order what they need themselves.
        let mut filter = col("signal").eq(lit(self.signal.as_str()));
        if let Some(ms) = self.since {
            filter = filter.and(col("ts").gt_eq(lit(ScalarValue::TimestampMicrosecond(
                Some(ms.saturating_mul(1000)),
                Some("UTC".into()),
            ))));
        }
        let batches = self
            .engine
            .session()
            .table(self.table.to_string())
            .await?
            .filter(filter)?
            .select(vec![col("asset_id"), col("ts"), col("value")])?
            .collect()
            .await?;
        let mut keys = KeyInterner::new();
        let (mut k, mut t, mut v) = (Vec::new(), Vec::new(), Vec::new());
        for b in &batches {
            let a = string_column(b, 0).map_err(|e| DataFusionError::External(Box::new(e)))?;
            let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
            let val = deltalake::arrow::compute::cast(b.column(2), &DataType::Float64)?;
            let val = val.as_primitive::<deltalake::arrow::datatypes::Float64Type>();
            for i in 0..b.num_rows() {
                k.push(keys.code(a.value(i)));
                t.push(ts.value(i) / 1000);
                v.push(val.is_valid(i).then(|| val.value(i)));
            }
        }
        let values = Float64Array::from(v);
        let order = RowOrder::for_rows(&k, keys.len(), &t);
        let names = StringArray::from_iter_values(keys.names().iter());
        let name_of = |codes: &[u32]| -> Result<ArrayRef> {
            Ok(deltalake::arrow::compute::take(
                &names,
                &deltalake::arrow::array::UInt32Array::from(codes.to_vec()),
                None,
            )?)
        };
        let kerr = |e: crate::timeseries::TsError| DataFusionError::External(Box::new(e));
        let cols: Vec<ArrayRef> = match &self.op {
            Op::Resample {
                interval_ms,
                fill,
                max_gap_ms,
            } => {
                let r = resample(
                    &k,
                    &t,
                    &values,
                    keys.len(),
                    &order,
                    *interval_ms,
                    *fill,
                    *max_gap_ms,
                )
                .map_err(kerr)?;
                vec![
                    name_of(&r.key)?,
                    Arc::new(us_array(&r.ts)),
                    Arc::new(r.value),
                ]
            }
            Op::Gaps { threshold_ms } => {
                let g = gaps(&k, &t, keys.len(), &order, *threshold_ms).map_err(kerr)?;
                let dur: Vec<i64> = g.start.iter().zip(&g.end).map(|(a, b)| b - a).collect();
                vec![
                    name_of(&g.key)?,
                    Arc::new(us_array(&g.start)),
                    Arc::new(us_array(&g.end)),
                    Arc::new(Int64Array::from(dur)),
                ]
            }
        };
        Ok(RecordBatch::try_new(self.schema.clone(), cols)?)
    }
}

#[async_trait]
impl TableProvider for KernelTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = self.compute().await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
