//! Running pipeline updates: incremental, idempotent, with expectations.
//!
//! **Exactly once.** A SQL pipeline reads the files its source's commits
//! added since the last update (the source's increments) and appends its
//! output to the target in one Delta commit that also carries an
//! application transaction (`txn { appId: "ironlake:<pipeline>:<source>",
//! version }`) naming the last source version it covers. The marker and the
//! data commit together or not at all, so after a crash the next update
//! starts exactly where the last committed one ended: no gap, no duplicate.
//! Two updates of the same pipeline at once (the CLI beside the platform's
//! background loop, or two processes) cannot both append a range: see
//! [`commit`](super::commit). An update with nothing new commits nothing.
//!
//! **Gold jobs** recompute the rows of a look-back window and replace them
//! (`replaceWhere <key> >= from`) in one commit, with one marker per source
//! table; unchanged sources mean no commit.
//!
//! Every update that does something is recorded in `system.pipeline_runs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::{AsArray, RecordBatch};
use deltalake::datafusion::datasource::MemTable;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use serde::Serialize;

use super::commit::{self, Commit, PipelineLock};
use super::expect::{self, ExpectationStats};
use super::gold::{GoldContext, GoldJob};
use super::spec::{Kind, Pipeline};
use super::PipelineError;
use crate::assets::AssetModel;
use crate::config::PipelinesConfig;
use crate::lake::increments::{added_files, read_files, AddedFile};
use crate::lake::{LakeError, Lakehouse, Table, TableName};
use crate::query::{QueryError, SqlEngine};
use crate::time::now_ms;

/// How an update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    UpToDate,
    Failed,
    /// Another update of the same pipeline was running; nothing was done.
    Busy,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::UpToDate => "up_to_date",
            Status::Failed => "failed",
            Status::Busy => "busy",
        }
    }
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
    /// Wait this long for another update of the same pipeline to finish
    /// (zero: give up at once with status `busy`).
    pub lock_wait: Duration,
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

fn app_id(pipeline: &str, source: &TableName) -> String {
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

    /// Run the updates' queries in `pool` (its memory limit and threads).
    pub fn in_pool(mut self, pool: &crate::query::QueryPool) -> Runner {
        self.sql = SqlEngine::in_pool(self.lake.clone(), pool);
        self
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
            target: p.target.to_string(),
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
        let res = match PipelineLock::acquire(&self.lake, &p.name, opts.lock_wait).await {
            Ok(Some(_lock)) => match p.kind {
                Kind::Sql => self.run_sql(p, opts, &mut r, progress).await,
                Kind::Gold(job) => self.run_gold(p, job, opts, &mut r).await,
            },
            Ok(None) => {
                r.status = Status::Busy;
                r.message = Some("another update of this pipeline is running".into());
                Ok(())
            }
            Err(e) => Err(e),
        };
        match res {
            Err(PipelineError::Concurrent { .. }) => {
                // Another process committed this range first: nothing lost,
                // nothing doubled; the next update goes on from there.
                r.status = Status::Busy;
                r.message = Some("another update committed the same range first".into());
            }
            Err(e) => {
                r.status = Status::Failed;
                r.message = Some(e.to_string());
                tracing::warn!(pipeline = %p.name, error = %e, "pipeline update failed");
            }
            Ok(()) => {}
        }
        r.finished_ms = now_ms();
        if matches!(r.status, Status::Ok | Status::Failed) {
            if let Err(e) = self.record(&r).await {
                tracing::warn!(pipeline = %p.name, error = %e, "cannot record the run in system.pipeline_runs");
            }
        }
        r
    }

    async fn open_target(&self, name: &TableName) -> Result<Option<DeltaTable>, PipelineError> {
        if !self.lake.exists(name) {
            return Ok(None);
        }
        Ok(Some(self.lake.open_existing(name).await?))
    }

    async fn run_sql(
        &self,
        p: &Pipeline,
        opts: RunOptions,
        r: &mut RunReport,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<(), PipelineError> {
        let Some(source_name) = p.source.clone() else {
            return Err(PipelineError::NoSource(String::new()));
        };
        if !self.lake.exists(&source_name) {
            return Err(PipelineError::NoSource(source_name.to_string()));
        }
        let source = self.lake.open_existing(&source_name).await?;
        let v_now = source.version().unwrap_or(0);
        r.source_versions.insert(source_name.to_string(), v_now);
        // The markers are read from this snapshot, and the commit is made on it.
        let mut target = self.open_target(&p.target).await?;
        let app = app_id(&p.name, &source_name);
        let done = match (&target, opts.full_refresh) {
            (Some(t), false) => commit::txn_version(t, &app).await?.map(|v| v as u64),
            _ => None,
        };
        if done == Some(v_now) {
            r.status = Status::UpToDate;
            return Ok(());
        }
        let name = source_name.to_string();
        let files = added_files(&source, &name, done, v_now).await?;
        if files.is_empty() && !opts.full_refresh {
            r.status = Status::UpToDate;
            return Ok(());
        }
        // Dropped rows go to quarantine before the target commit, each step
        // marked with the source version it reaches. After a crash between
        // the two, the first step ends exactly where the quarantine already
        // is, so no dropped row is quarantined twice.
        let q_app = format!("{app}:quarantine");
        let q_done = if opts.full_refresh {
            None
        } else {
            let q = self.lake.open_or_create(Table::SilverQuarantine).await?;
            commit::txn_version(&q, &q_app).await?.map(|v| v as u64)
        }
        .filter(|q| done.is_none_or(|d| *q > d) && *q < v_now);
        let steps = steps(files, v_now, q_done);
        if let Some(pb) = progress {
            pb.set_length(steps.len() as u64);
            pb.set_position(0);
        }
        let schema = source
            .snapshot()
            .map_err(|source| LakeError::Open {
                table: name.clone(),
                source,
            })?
            .snapshot()
            .arrow_schema();
        let sql = p.sql.clone().unwrap_or_default();
        let mut overwrite = opts.full_refresh;
        for (step_files, upto) in steps {
            let batches = read_files(&source, &name, &schema, &step_files).await?;
            r.rows_in += batches.iter().map(|b| b.num_rows()).sum::<usize>();
            let ctx = self.sql.session();
            let mem = MemTable::try_new(schema.clone(), vec![batches])
                .map_err(|e| PipelineError::Query(QueryError::Plan(e)))?;
            ctx.register_table("source", Arc::new(mem))
                .map_err(|e| PipelineError::Query(QueryError::Plan(e)))?;
            let df = self.sql.plan(&ctx, &sql).await?;
            let checked = expect::check(p, &ctx, df, &mut r.expectations).await?;
            r.rows_warned += checked.warned;
            // Dropped rows go to quarantine first, exactly once per range.
            self.quarantine(p, &checked.dropped, Some((q_app.clone(), upto)), r)
                .await?;
            r.rows_out += checked.keep.iter().map(|b| b.num_rows()).sum::<usize>();
            let t = commit::commit(
                &self.lake,
                target.take(),
                Commit {
                    target: &p.target,
                    batches: checked.keep,
                    partition_by: &p.partition_by,
                    mode: if overwrite {
                        SaveMode::Overwrite
                    } else {
                        SaveMode::Append
                    },
                    replace_where: None,
                    txns: vec![Transaction::new(&app, upto as i64)],
                    merge_schema: false,
                },
            )
            .await?;
            r.target_version = t.version();
            target = Some(t);
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
        job: &'static dyn GoldJob,
        opts: RunOptions,
        r: &mut RunReport,
    ) -> Result<(), PipelineError> {
        let target = self.open_target(&p.target).await?;
        let mut unchanged = target.is_some() && !opts.full_refresh;
        let mut txns = Vec::new();
        for s in job.sources() {
            let name = s.table_name();
            let t = self.lake.open_or_create(*s).await?;
            let v = t.version().unwrap_or(0);
            r.source_versions.insert(name.to_string(), v);
            let app = app_id(&p.name, &name);
            let done = match &target {
                Some(t) => commit::txn_version(t, &app).await?,
                None => None,
            };
            if done != Some(v as i64) {
                unchanged = false;
            }
            txns.push(Transaction::new(&app, v as i64));
        }
        if unchanged {
            r.status = Status::UpToDate;
            return Ok(());
        }
        let now = now_ms();
        let from = (target.is_some() && !opts.full_refresh && job.replace_key().is_some())
            .then(|| now - self.config.lookback_h as i64 * crate::time::HOUR_MS);
        let cx = GoldContext {
            sql: &self.sql,
            model: &self.model,
            config: &self.config,
        };
        let batch = job.compute(&cx, from, now).await?;
        r.rows_in = batch.num_rows();
        let ctx = self.sql.session();
        let df = ctx
            .read_batch(batch)
            .map_err(|e| PipelineError::Query(QueryError::Plan(e)))?;
        let checked = expect::check(p, &ctx, df, &mut r.expectations).await?;
        r.rows_warned += checked.warned;
        self.quarantine(p, &checked.dropped, None, r).await?;
        r.rows_out += checked.keep.iter().map(|b| b.num_rows()).sum::<usize>();
        let partition: Vec<String> = Table::from_table_name(&p.target)
            .map(|t| {
                t.partition_columns()
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .unwrap_or_else(|| vec!["plant".into()]);
        // Rows are keyed by when they start: replace exactly those recomputed.
        // A plain string literal: delta-rs records the predicate in the
        // commit and cannot print a `TIMESTAMP '...'` expression back.
        let replace_where = match (from, job.replace_key()) {
            (Some(f), Some(key)) => Some(format!("{key} >= '{}'", crate::time::rfc3339(f))),
            _ => None,
        };
        let t = commit::commit(
            &self.lake,
            target,
            Commit {
                target: &p.target,
                batches: checked.keep,
                partition_by: &partition,
                mode: SaveMode::Overwrite,
                replace_where,
                txns,
                merge_schema: true,
            },
        )
        .await?;
        r.target_version = t.version();
        Ok(())
    }

    /// Write dropped rows to `silver.quarantine`; with `marker` (app id,
    /// version) only once per marker.
    async fn quarantine(
        &self,
        p: &Pipeline,
        dropped: &[expect::Dropped],
        marker: Option<(String, u64)>,
        r: &mut RunReport,
    ) -> Result<(), PipelineError> {
        let n: usize = dropped.iter().map(|d| d.rows.num_rows()).sum();
        r.rows_dropped += n;
        if n == 0 {
            return Ok(());
        }
        let t = self.lake.open_or_create(Table::SilverQuarantine).await?;
        if let Some((app, v)) = &marker {
            if commit::txn_version(&t, app).await? >= Some(*v as i64) {
                return Ok(());
            }
        }
        let now = now_ms();
        let mut q = crate::lake::rows::QuarantineRows::new();
        let source = format!("pipeline:{}", p.name);
        for d in dropped {
            let rows = &d.rows;
            let reason = format!(
                "pipeline `{}` -> {}: expectation `{}` ({}) is false or null",
                p.name, p.target, d.expectation, d.condition
            );
            let text = |name: &str| {
                rows.column_by_name(name).and_then(|c| {
                    deltalake::arrow::compute::cast(c, &deltalake::arrow::datatypes::DataType::Utf8)
                        .ok()
                })
            };
            let (plants, assets) = (text("plant"), text("asset_id"));
            for i in 0..rows.num_rows() {
                let s = |a: &Option<deltalake::arrow::array::ArrayRef>| {
                    a.as_ref().and_then(|a| {
                        use deltalake::arrow::array::Array;
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
                    &d.expectation,
                    &reason,
                    &expect::rows_json(&rows.slice(i, 1)),
                );
            }
        }
        let batch = q.finish()?;
        let mut props = deltalake::kernel::transaction::CommitProperties::default();
        if let Some((app, v)) = marker {
            props = props.with_application_transactions(vec![Transaction::new(&app, v as i64)]);
        }
        t.write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(props)
            .await
            .map_err(|e| PipelineError::Write {
                table: "silver.quarantine".into(),
                message: e.to_string(),
            })?;
        Ok(())
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

/// Steps of whole source commits, each at most [`CHUNK_BYTES`] of files,
/// with the last source version each covers; one step ends at `boundary`
/// when given.
fn steps(files: Vec<AddedFile>, v_now: u64, boundary: Option<u64>) -> Vec<(Vec<AddedFile>, u64)> {
    let mut steps = Vec::new();
    let mut cur: Vec<AddedFile> = Vec::new();
    let mut bytes = 0;
    let mut pending_boundary = boundary;
    for (i, f) in files.iter().enumerate() {
        if let Some(b) = pending_boundary {
            if f.version > b {
                steps.push((std::mem::take(&mut cur), b));
                bytes = 0;
                pending_boundary = None;
            }
        }
        bytes += f.size;
        cur.push(f.clone());
        let commit_ends = files.get(i + 1).is_none_or(|n| n.version != f.version);
        if commit_ends && bytes >= CHUNK_BYTES {
            steps.push((std::mem::take(&mut cur), f.version));
            bytes = 0;
        }
    }
    if let Some(b) = pending_boundary {
        steps.push((std::mem::take(&mut cur), b));
    }
    steps.push((cur, v_now));
    steps
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
        Arc::new(Date32Array::from(vec![crate::time::day_of(r.started_ms)])),
    ];
    Ok(RecordBatch::try_new(
        Table::SystemPipelineRuns.arrow_schema(),
        cols,
    )?)
}

impl RunReport {
    /// Status as stored (`ok`, `up_to_date`, `failed`).
    pub fn status_str(&self) -> &'static str {
        self.status.as_str()
    }
}
