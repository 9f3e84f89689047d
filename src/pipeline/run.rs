//! Running pipeline updates: incremental, idempotent, with expectations.
//!
//! **Exactly once.** A SQL pipeline reads the files its source's commits
//! added since the last update and appends its output to the target in one
//! Delta commit that also carries an application transaction
//! (`txn { appId: "ironlake:<pipeline>:<source>", version }`) naming the
//! last source version it covers. The marker and the data commit together
//! or not at all, so after a crash the next update starts exactly where the
//! last committed one ended: no gap, no duplicate. An update with nothing
//! new commits nothing ("up to date").
//!
//! **Gold jobs** recompute the shifts of a look-back window and replace
//! those rows (`replaceWhere shift_start >= from`) in one commit, with one
//! marker per source table; unchanged sources mean no commit.
//!
//! **Expectations** are evaluated on the output rows before anything is
//! written: `warn` counts, `drop` sends the row to `silver.quarantine` with
//! the expectation's name (written before the target, so a crash can repeat
//! a quarantine row but never lose one), `fail` stops the update and leaves
//! the target at its previous version. Every update that does something is
//! recorded in `system.pipeline_runs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use deltalake::arrow::compute::{filter_record_batch, not, or_kleene};
use deltalake::datafusion::datasource::MemTable;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use serde::Serialize;

use super::gold;
use super::source::{added_files, read_files, SourceError};
use super::spec::{Action, Kind, Pipeline};
use crate::assets::AssetModel;
use crate::config::PipelinesConfig;
use crate::connectors::now_ms;
use crate::lake::{LakeError, Lakehouse, Table};
use crate::query::{QueryError, SqlEngine};

/// Why an update failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    Gold(#[from] gold::GoldError),
    #[error("expectation `{name}` (`{condition}`) failed on {rows} row(s), e.g. {example}; the target was not changed")]
    Expectation {
        name: String,
        condition: String,
        rows: usize,
        example: String,
    },
    #[error("expectation `{name}`: {message}")]
    BadExpectation { name: String, message: String },
    #[error("writing {table}: {message}")]
    Write { table: String, message: String },
    #[error("source {0} does not exist yet")]
    NoSource(String),
}

/// How an update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    UpToDate,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::UpToDate => "up_to_date",
            Status::Failed => "failed",
        }
    }
}

/// Rows that broke one expectation in an update.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectationStats {
    pub name: String,
    pub action: Action,
    pub failed: usize,
}

/// What one update did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub pipeline: String,
    pub target: String,
    pub status: Status,
    pub rows_in: usize,
    pub rows_out: usize,
    pub rows_dropped: usize,
    pub rows_warned: usize,
    pub expectations: Vec<ExpectationStats>,
    pub source_versions: BTreeMap<String, u64>,
    pub target_version: Option<u64>,
    pub message: Option<String>,
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// Options of one update.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Rebuild the target from all source data.
    pub full_refresh: bool,
}

/// Runs pipeline updates against a lakehouse.
#[derive(Clone)]
pub struct Runner {
    lake: Arc<Lakehouse>,
    sql: SqlEngine,
    model: Arc<AssetModel>,
    config: PipelinesConfig,
}

/// Source data read per step of an update (bounds memory on backfills).
const CHUNK_BYTES: u64 = 256 << 20;

fn app_id(pipeline: &str, source: &str) -> String {
    format!("ironlake:{pipeline}:{source}")
}

impl Runner {
    /// A runner for `lake`, resolving assets and shifts through `model`.
    pub fn new(lake: Arc<Lakehouse>, model: Arc<AssetModel>, config: PipelinesConfig) -> Runner {
        Runner {
            sql: SqlEngine::new(lake.clone()),
            lake,
            model,
            config,
        }
    }

    /// Run one update of `p` and record it. Never returns an error: a failed
    /// update is a report with status `failed` and the reason.
    pub async fn run(
        &self,
        p: &Pipeline,
        opts: RunOptions,
        progress: Option<&indicatif::ProgressBar>,
    ) -> RunReport {
        let started_ms = now_ms();
        let mut r = RunReport {
            run_id: format!("{}-{started_ms}", p.name),
            pipeline: p.name.clone(),
            target: p.target.clone(),
            status: Status::Ok,
            rows_in: 0,
            rows_out: 0,
            rows_dropped: 0,
            rows_warned: 0,
            expectations: p
                .expectations
                .iter()
                .map(|e| ExpectationStats {
                    name: e.name.clone(),
                    action: e.action,
                    failed: 0,
                })
                .collect(),
            source_versions: BTreeMap::new(),
            target_version: None,
            message: None,
            started_ms,
            finished_ms: started_ms,
        };
        let res = match p.kind {
            Kind::Sql => self.run_sql(p, opts, &mut r, progress).await,
            _ => self.run_gold(p, opts, &mut r).await,
        };
        if let Err(e) = res {
            r.status = Status::Failed;
            r.message = Some(e.to_string());
            tracing::warn!(pipeline = %p.name, error = %e, "pipeline update failed");
        }
        r.finished_ms = now_ms();
        if r.status != Status::UpToDate {
            if let Err(e) = self.record(&r).await {
                tracing::warn!(pipeline = %p.name, error = %e, "cannot record the run in system.pipeline_runs");
            }
        }
        r
    }

    async fn open_target(&self, name: &str) -> Result<Option<DeltaTable>, PipelineError> {
        let (layer, table) = name.split_once('.').unwrap_or(("", name));
        if !self.lake.table_exists(layer, table) {
            return Ok(None);
        }
        Ok(Some(self.lake.open_by_name(name).await?))
    }

    async fn txn_version(t: Option<&DeltaTable>, app: &str) -> Result<Option<u64>, PipelineError> {
        let Some(t) = t else { return Ok(None) };
        let state = t.snapshot().map_err(|source| LakeError::Open {
            table: app.to_string(),
            source,
        })?;
        let v = state
            .transaction_version(t.log_store().as_ref(), app)
            .await
            .map_err(|source| LakeError::Open {
                table: app.to_string(),
                source,
            })?;
        Ok(v.map(|v| v as u64))
    }

    async fn run_sql(
        &self,
        p: &Pipeline,
        opts: RunOptions,
        r: &mut RunReport,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<(), PipelineError> {
        let source_name = p.source.clone().unwrap_or_default();
        let (layer, table) = source_name.split_once('.').unwrap_or(("", ""));
        if !self.lake.table_exists(layer, table) {
            return Err(PipelineError::NoSource(source_name));
        }
        let source = self.lake.open_by_name(&source_name).await?;
        let v_now = source.version().unwrap_or(0);
        r.source_versions.insert(source_name.clone(), v_now);
        let target = self.open_target(&p.target).await?;
        let app = app_id(&p.name, &source_name);
        let done = if opts.full_refresh {
            None
        } else {
            Self::txn_version(target.as_ref(), &app).await?
        };
        if done == Some(v_now) {
            r.status = Status::UpToDate;
            return Ok(());
        }
        let files = added_files(&source, &source_name, done, v_now).await?;
        if files.is_empty() && !opts.full_refresh {
            r.status = Status::UpToDate;
            return Ok(());
        }
        // Steps of whole commits, each at most CHUNK_BYTES of files.
        let mut steps: Vec<(Vec<super::source::AddedFile>, u64)> = Vec::new();
        let mut cur: Vec<super::source::AddedFile> = Vec::new();
        let mut bytes = 0;
        for (i, f) in files.iter().enumerate() {
            bytes += f.size;
            cur.push(f.clone());
            let commit_ends = files.get(i + 1).is_none_or(|n| n.version != f.version);
            if commit_ends && bytes >= CHUNK_BYTES {
                steps.push((std::mem::take(&mut cur), f.version));
                bytes = 0;
            }
        }
        steps.push((cur, v_now));
        if let Some(pb) = progress {
            pb.set_length(steps.len() as u64);
            pb.set_position(0);
        }
        let schema = source
            .snapshot()
            .map_err(|source| LakeError::Open {
                table: source_name.clone(),
                source,
            })?
            .snapshot()
            .arrow_schema();
        let sql = p.sql.clone().unwrap_or_default();
        let mut overwrite = opts.full_refresh;
        for (step_files, upto) in steps {
            let batches = read_files(&source, &source_name, &schema, &step_files).await?;
            r.rows_in += batches.iter().map(|b| b.num_rows()).sum::<usize>();
            let ctx = self.sql.session();
            let mem = MemTable::try_new(schema.clone(), vec![batches])
                .map_err(|e| PipelineError::Query(QueryError::Plan(e)))?;
            ctx.register_table("source", Arc::new(mem))
                .map_err(|e| PipelineError::Query(QueryError::Plan(e)))?;
            let df = self.sql.plan(&ctx, &sql).await?;
            let out = self.expectations(p, &ctx, df, r).await?;
            let version = self
                .commit(
                    &p.target,
                    out,
                    &p.partition_by,
                    if overwrite {
                        SaveMode::Overwrite
                    } else {
                        SaveMode::Append
                    },
                    None,
                    vec![Transaction::new(&app, upto as i64)],
                )
                .await?;
            r.target_version = version;
            overwrite = false;
            if let Some(pb) = progress {
                pb.inc(1);
            }
        }
        Ok(())
    }

    async fn run_gold(
        &self,
        p: &Pipeline,
        opts: RunOptions,
        r: &mut RunReport,
    ) -> Result<(), PipelineError> {
        let sources = p.sources();
        let target = self.open_target(&p.target).await?;
        let mut unchanged = target.is_some() && !opts.full_refresh;
        let mut txns = Vec::new();
        for s in &sources {
            let s = s.as_str();
            let t = self.lake.open_by_name(s).await?;
            let v = t.version().unwrap_or(0);
            r.source_versions.insert(s.to_string(), v);
            let app = app_id(&p.name, s);
            if Self::txn_version(target.as_ref(), &app).await? != Some(v) {
                unchanged = false;
            }
            txns.push(Transaction::new(&app, v as i64));
        }
        if unchanged {
            r.status = Status::UpToDate;
            return Ok(());
        }
        let now = now_ms();
        // Reliability is a trailing window: always rebuilt whole.
        let from = (target.is_some() && !opts.full_refresh && p.kind != Kind::Reliability)
            .then(|| now - self.config.lookback_h as i64 * 3_600_000);
        let batch = match p.kind {
            Kind::OeeShift => gold::oee_shift(&self.sql, &self.model, from, now).await?,
            Kind::EnergyShift => gold::energy_shift(&self.sql, &self.model, from, now).await?,
            Kind::Downtime => {
                super::downtime::downtime_events(&self.sql, &self.model, from, now).await?
            }
            Kind::OeeRollup => gold::oee_rollup(&self.sql, from, now).await?,
            _ => {
                super::downtime::reliability(
                    &self.sql,
                    &self.model,
                    self.config.reliability_days,
                    now,
                )
                .await?
            }
        };
        r.rows_in = batch.num_rows();
        let ctx = self.sql.session();
        let df = ctx
            .read_batch(batch)
            .map_err(|e| PipelineError::Query(QueryError::Plan(e)))?;
        let out = self.expectations(p, &ctx, df, r).await?;
        let table = Table::from_name(&p.target);
        let partition: Vec<String> = table
            .map(|t| {
                t.partition_columns()
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .unwrap_or_else(|| vec!["plant".into()]);
        // Rows are keyed by when they start: replace exactly those recomputed.
        let key = if p.kind == Kind::Downtime {
            "start"
        } else {
            "shift_start"
        };
        // A plain string literal: delta-rs records the predicate in the commit
        // and cannot print a `TIMESTAMP '...'` expression back.
        let predicate = from.map(|f| {
            let d = chrono::DateTime::from_timestamp_millis(f).unwrap_or_default();
            format!("{key} >= '{}'", d.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
        });
        r.target_version = self
            .commit(
                &p.target,
                out,
                &partition,
                SaveMode::Overwrite,
                predicate,
                txns,
            )
            .await?;
        Ok(())
    }

    /// Evaluate the expectations on the output of `df`: count, quarantine
    /// dropped rows, fail on `fail`. Returns the rows to write.
    async fn expectations(
        &self,
        p: &Pipeline,
        ctx: &deltalake::datafusion::prelude::SessionContext,
        df: deltalake::datafusion::dataframe::DataFrame,
        r: &mut RunReport,
    ) -> Result<Vec<RecordBatch>, PipelineError> {
        let out_cols = df.schema().fields().len();
        let out_schema = Arc::new(df.schema().as_arrow().clone());
        let mut df = df;
        for (i, e) in p.expectations.iter().enumerate() {
            let expr = ctx
                .parse_sql_expr(&e.condition, df.schema())
                .and_then(|x| df.clone().with_column(&format!("__expect_{i}"), x))
                .map_err(|err| PipelineError::BadExpectation {
                    name: e.name.clone(),
                    message: format!("`{}`: {}", e.condition, err.strip_backtrace()),
                })?;
            df = expr;
        }
        let batches = df
            .collect()
            .await
            .map_err(|e| PipelineError::Query(QueryError::Exec(e)))?;
        let mut keep_batches = Vec::new();
        let mut quarantine = Vec::new();
        for b in &batches {
            let data = b.project(&(0..out_cols).collect::<Vec<_>>()).map_err(|e| {
                PipelineError::Write {
                    table: p.target.clone(),
                    message: e.to_string(),
                }
            })?;
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
                r.expectations[i].failed += n;
                if n == 0 {
                    continue;
                }
                match e.action {
                    Action::Warn => r.rows_warned += n,
                    Action::Fail => {
                        let rows = filter_record_batch(&data, &broken).unwrap_or(data.slice(0, 0));
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
                            Some(d) => deltalake::arrow::compute::and(
                                &broken,
                                &not(d).unwrap_or(broken.clone()),
                            )
                            .unwrap_or(broken.clone()),
                        };
                        let rows = filter_record_batch(&data, &fresh).unwrap_or(data.slice(0, 0));
                        quarantine.push((e.name.clone(), e.condition.clone(), rows));
                        dropped = Some(match dropped {
                            None => broken,
                            Some(d) => or_kleene(&d, &broken).unwrap_or(d),
                        });
                    }
                }
            }
            let kept = match &dropped {
                None => data,
                Some(d) => filter_record_batch(
                    &data,
                    &not(d).map_err(|e| PipelineError::Write {
                        table: p.target.clone(),
                        message: e.to_string(),
                    })?,
                )
                .map_err(|e| PipelineError::Write {
                    table: p.target.clone(),
                    message: e.to_string(),
                })?,
            };
            r.rows_out += kept.num_rows();
            keep_batches.push(kept);
        }
        for (name, cond, rows) in quarantine {
            r.rows_dropped += rows.num_rows();
            self.quarantine(p, &name, &cond, &rows).await?;
        }
        if keep_batches.is_empty() {
            // Nothing to write still commits the progress marker (and, for a
            // new target, creates it with its columns).
            keep_batches.push(RecordBatch::new_empty(out_schema));
        }
        Ok(keep_batches)
    }

    /// Write dropped rows to `silver.quarantine`.
    async fn quarantine(
        &self,
        p: &Pipeline,
        name: &str,
        cond: &str,
        rows: &RecordBatch,
    ) -> Result<(), PipelineError> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let plants = rows.column_by_name("plant").and_then(|c| {
            deltalake::arrow::compute::cast(c, &deltalake::arrow::datatypes::DataType::Utf8).ok()
        });
        let assets = rows.column_by_name("asset_id").and_then(|c| {
            deltalake::arrow::compute::cast(c, &deltalake::arrow::datatypes::DataType::Utf8).ok()
        });
        let now = now_ms();
        let mut q = crate::lake::rows::QuarantineRows::new();
        let reason = format!(
            "pipeline `{}` -> {}: expectation `{name}` ({cond}) is false or null",
            p.name, p.target
        );
        let source = format!("pipeline:{}", p.name);
        for i in 0..rows.num_rows() {
            let s = |a: &Option<deltalake::arrow::array::ArrayRef>| {
                a.as_ref().and_then(|a| {
                    let a = a.as_string::<i32>();
                    a.is_valid(i).then(|| a.value(i).to_string())
                })
            };
            let plant =
                s(&plants).unwrap_or_else(|| crate::connectors::UNASSIGNED_PLANT.to_string());
            q.push(
                now,
                &source,
                &plant,
                s(&assets).as_deref(),
                None,
                name,
                &reason,
                &rows_json(&rows.slice(i, 1)),
            );
        }
        let batch = q.finish()?;
        let t = self.lake.open_or_create(Table::SilverQuarantine).await?;
        t.write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .await
            .map_err(|e| PipelineError::Write {
                table: "silver.quarantine".into(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// One commit of `batches` to `target` with the progress markers.
    async fn commit(
        &self,
        target: &str,
        batches: Vec<RecordBatch>,
        partition_by: &[String],
        mode: SaveMode,
        replace_where: Option<String>,
        txns: Vec<Transaction>,
    ) -> Result<Option<u64>, PipelineError> {
        let werr = |message: String| PipelineError::Write {
            table: target.to_string(),
            message,
        };
        let (layer, name) = target.split_once('.').unwrap_or(("", target));
        let url = self.lake.table_url_by_name(layer, name);
        if let Ok(p) = url.to_file_path() {
            std::fs::create_dir_all(&p).map_err(|e| werr(e.to_string()))?;
        }
        let table = match self.open_target(target).await? {
            Some(t) => t,
            None => {
                if let Some(t) = Table::from_name(target) {
                    self.lake.open_or_create(t).await?
                } else {
                    deltalake::DeltaTableBuilder::from_url(url)
                        .and_then(|b| b.build())
                        .map_err(|e| werr(e.to_string()))?
                }
            }
        };
        let empty = batches.first().map(|b| b.slice(0, 0));
        let mut batches: Vec<RecordBatch> =
            batches.into_iter().filter(|b| b.num_rows() > 0).collect();
        if batches.is_empty() {
            batches.extend(empty);
        }
        let props = CommitProperties::default().with_application_transactions(txns);
        let mut w = table
            .write(batches)
            .with_save_mode(mode)
            .with_commit_properties(props);
        if !partition_by.is_empty() {
            w = w.with_partition_columns(partition_by.to_vec());
        }
        if let Some(pred) = replace_where {
            w = w.with_replace_where(pred);
        }
        let t = w.await.map_err(|e| {
            werr(format!(
                "{e} (if the pipeline's output columns changed, rebuild with `ironlake pipeline run {target} --full-refresh`)"
            ))
        })?;
        Ok(t.version())
    }

    /// Append a run to `system.pipeline_runs`.
    async fn record(&self, r: &RunReport) -> Result<(), PipelineError> {
        let batch = run_batch(r)?;
        let t = self.lake.open_or_create(Table::SystemPipelineRuns).await?;
        t.write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .await
            .map_err(|e| PipelineError::Write {
                table: "system.pipeline_runs".into(),
                message: e.to_string(),
            })?;
        Ok(())
    }
}

/// A `system.pipeline_runs` row.
fn run_batch(r: &RunReport) -> Result<RecordBatch, LakeError> {
    use deltalake::arrow::array::{
        ArrayRef, Date32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    let ts = |ms: i64| {
        Arc::new(TimestampMicrosecondArray::from(vec![ms * 1000]).with_timezone("UTC")) as ArrayRef
    };
    let s = |v: &str| Arc::new(StringArray::from(vec![v.to_string()])) as ArrayRef;
    let i = |v: usize| Arc::new(Int64Array::from(vec![v as i64])) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        s(&r.run_id),
        s(&r.pipeline),
        s(&r.target),
        ts(r.started_ms),
        ts(r.finished_ms),
        s(r.status.as_str()),
        i(r.rows_in),
        i(r.rows_out),
        i(r.rows_dropped),
        i(r.rows_warned),
        s(&serde_json::to_string(&r.expectations).unwrap_or_default()),
        s(&serde_json::to_string(&r.source_versions).unwrap_or_default()),
        Arc::new(Int64Array::from(vec![r.target_version.map(|v| v as i64)])),
        Arc::new(StringArray::from(vec![r.message.clone()])),
        Arc::new(Date32Array::from(vec![crate::lake::rows::day_of(
            r.started_ms,
        )])),
    ];
    Ok(RecordBatch::try_new(
        Table::SystemPipelineRuns.arrow_schema(),
        cols,
    )?)
}

/// Rows as a JSON array (for messages and quarantine payloads).
fn rows_json(b: &RecordBatch) -> String {
    let mut buf = Vec::new();
    let mut w = deltalake::arrow::json::ArrayWriter::new(&mut buf);
    let ok = w.write(b).is_ok() && w.finish().is_ok();
    let s = if ok {
        String::from_utf8_lossy(&buf).into_owned()
    } else {
        String::new()
    };
    // A single row reads better as an object.
    if b.num_rows() == 1 {
        s.trim_start_matches('[').trim_end_matches(']').to_string()
    } else {
        s
    }
}

impl RunReport {
    /// Status as stored (`ok`, `up_to_date`, `failed`).
    pub fn status_str(&self) -> &'static str {
        self.status.as_str()
    }
}
