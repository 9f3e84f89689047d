//! `ironlake bench sql`: one dashboard query repeated on one SQL engine, as a
//! running platform answers `POST /api/sql` (`scripts/bench_dashboard.py`
//! drives it for W8-W10 against DuckDB and polars). The first run opens the
//! tables cold; later runs are what a dashboard refresh costs. The last line
//! printed is `{"seconds": [...], "rows": n, "scan": {...}}`, where `scan`
//! sums the Parquet scans' metrics of the last run (files and row groups
//! pruned by statistics, bytes read): the evidence that time filters prune.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use deltalake::datafusion::physical_plan::display::DisplayableExecutionPlan;
use deltalake::datafusion::physical_plan::{collect, ExecutionPlan};

use crate::lake::Lakehouse;
use crate::query::format::{write, Format};
use crate::query::{QueryResult, SqlEngine};

/// The options of `bench sql`.
#[derive(clap::Args, Debug)]
pub struct SqlOpts {
    /// Lakehouse root (a folder or an object-store URL).
    #[arg(long)]
    pub lakehouse: String,
    /// The query (or `--query-file`).
    #[arg(long, conflicts_with = "query_file")]
    pub query: Option<String>,
    #[arg(long)]
    pub query_file: Option<PathBuf>,
    /// Runs; the first one opens the tables.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Write the last run's result here (Parquet), for checksums.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the last run's physical plan with its metrics to stderr.
    #[arg(long)]
    pub explain: bool,
    /// A DataFusion setting for the session, `KEY=VALUE` (repeatable), e.g.
    /// `datafusion.execution.parquet.pushdown_filters=false`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

/// Run `bench sql`.
pub async fn run(opts: SqlOpts) -> Result<()> {
    let sql = match (&opts.query, &opts.query_file) {
        (Some(q), _) => q.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => bail!("give --query or --query-file"),
    };
    if opts.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let lake = Arc::new(Lakehouse::open(&opts.lakehouse)?);
    let engine = SqlEngine::new(lake);
    let settings = opts
        .settings
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .with_context(|| format!("--set `{kv}`: expected KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut seconds = Vec::with_capacity(opts.repeats);
    let mut last = None;
    for _ in 0..opts.repeats {
        let t = Instant::now();
        let ctx = engine.session_with(&settings)?;
        let df = engine.plan(&ctx, &sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let plan = df.create_physical_plan().await?;
        let batches = collect(plan.clone(), ctx.task_ctx()).await?;
        seconds.push(t.elapsed().as_secs_f64());
        last = Some((QueryResult { schema, batches }, plan));
    }
    let (result, plan) = last.expect("at least one run");
    if opts.explain {
        eprintln!(
            "{}",
            DisplayableExecutionPlan::with_metrics(plan.as_ref()).indent(true)
        );
    }
    if let Some(path) = &opts.out {
        let f =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        write(&result, Format::Parquet, std::io::BufWriter::new(f))?;
    }
    let mut scan = BTreeMap::new();
    scan_metrics(plan.as_ref(), &mut scan);
    let line = serde_json::json!({
        "seconds": seconds,
        "rows": result.rows(),
        "scan": scan,
    });
    println!("{line}");
    Ok(())
}

/// Sum the count metrics of every scan in `plan` (names as DataFusion
/// reports them: `bytes_scanned`, `row_groups_pruned_statistics`, ...).
fn scan_metrics(plan: &dyn ExecutionPlan, out: &mut BTreeMap<String, serde_json::Value>) {
    if let Some(m) = plan.metrics() {
        for metric in m.aggregate_by_name().iter() {
            let v = metric.value();
            let name = v.name();
            if !(name.contains("pruned")
                || name.contains("matched")
                || name.contains("scanned")
                || name.starts_with("files")
                || name.contains("row_groups"))
            {
                continue;
            }
            let text = v.to_string();
            match (out.get(name).and_then(|e| e.as_u64()), text.parse::<u64>()) {
                (Some(prev), Ok(n)) => {
                    out.insert(name.to_string(), (prev + n).into());
                }
                (None, Ok(n)) => {
                    out.insert(name.to_string(), n.into());
                }
                _ => {
                    out.insert(name.to_string(), text.into());
                }
            }
        }
    }
    for child in plan.children() {
        scan_metrics(child.as_ref(), out);
    }
}
