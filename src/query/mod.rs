//! SQL over the lakehouse (DataFusion): every Delta table is reachable by its
//! `layer.table` name (`silver.readings`, `gold.oee_shift`,
//! `system.pipeline_runs`), and any table can be read as it was at a
//! version or an instant, with Databricks' syntax:
//!
//! ```sql
//! SELECT count(*) FROM silver.readings VERSION AS OF 12;
//! SELECT * FROM gold.oee_shift TIMESTAMP AS OF '2026-11-25T06:00:00Z';
//! ```
//!
//! Tables are resolved lazily: each layer is a DataFusion `SchemaProvider`
//! that opens a Delta table only when a query names it, at its newest
//! committed version, so a query sees every commit made before it started
//! and never a half-written one. Time travel is an AST rewrite before
//! planning: the versioned reference is swapped for a provider loaded at
//! that version (DataFusion would otherwise ignore the clause). Queries are
//! read-only: DDL, DML and `SET` are refused.

pub mod aggregates;
pub mod format;
pub mod functions;
pub mod pool;
mod snapshots;

pub use pool::{PoolError, QueryPool};

use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::{
    MemoryCatalogProviderList, MemorySchemaProvider, SchemaProvider, TableProvider,
};
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::context::SQLOptions;
use deltalake::datafusion::execution::runtime_env::RuntimeEnv;
use deltalake::datafusion::execution::SessionState;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use deltalake::datafusion::sql::parser::{DFParserBuilder, Statement as DFStatement};
use deltalake::datafusion::sql::sqlparser::ast::{
    Expr, Ident, ObjectName, TableFactor, TableVersion, Value, VisitMut, VisitorMut,
};
use deltalake::datafusion::sql::sqlparser::dialect::DatabricksDialect;
use deltalake::DeltaTable;

use crate::lake::{LakeError, Lakehouse, Layer, TableName};

const TIME_TRAVEL_SCHEMA: &str = "__time_travel";

/// Why a query failed. [`QueryError::is_user_error`] separates the caller's
/// mistakes (400) from the platform's (500).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("SQL: {0}")]
    Sql(String),
    #[error("only one statement per query (got {0})")]
    Statements(usize),
    #[error("table `{0}` does not exist (tables are named layer.table, e.g. silver.readings; see SHOW TABLES)")]
    UnknownTable(String),
    #[error("time travel on `{table}`: {message}")]
    TimeTravel { table: String, message: String },
    #[error("{0}")]
    Plan(DataFusionError),
    #[error("query failed: {0}")]
    Exec(DataFusionError),
    #[error(transparent)]
    Lake(#[from] LakeError),
}

impl QueryError {
    /// Whether the query needed more memory than the pool allows.
    pub fn is_resources_exhausted(&self) -> bool {
        match self {
            QueryError::Exec(e) | QueryError::Plan(e) => {
                matches!(e.find_root(), DataFusionError::ResourcesExhausted(_))
            }
            _ => false,
        }
    }

    /// Whether the query text is at fault (bad SQL, unknown table or column,
    /// a write statement) rather than the platform.
    pub fn is_user_error(&self) -> bool {
        match self {
            QueryError::Lake(_) => false,
            // A failed cast or an overflow is the query's doing; storage
            // and I/O failures are the platform's.
            QueryError::Exec(e) => !matches!(
                e.find_root(),
                DataFusionError::IoError(_)
                    | DataFusionError::ObjectStore(_)
                    | DataFusionError::External(_)
                    | DataFusionError::ResourcesExhausted(_)
                    | DataFusionError::Internal(_)
            ),
            _ => true,
        }
    }
}

/// A query's answer.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Runs read-only SQL against a lakehouse.
#[derive(Clone)]
pub struct SqlEngine {
    lake: Arc<Lakehouse>,
    /// Memory pool, spill files and the Parquet footer cache, shared by
    /// the engine's queries (Delta's data files never change, so a footer
    /// read once is good for every later query).
    env: Arc<RuntimeEnv>,
    /// The query pool's threads (DataFusion's target partitions); all
    /// cores when not in a pool.
    threads: Option<usize>,
    /// The tables' newest snapshots, shared by this engine's clones.
    snapshots: Arc<snapshots::Snapshots>,
}

impl std::fmt::Debug for SqlEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqlEngine({})", self.lake.root())
    }
}

impl SqlEngine {
    /// An engine over `lake` (no memory limit, all cores: for the command
    /// line and batch work).
    pub fn new(lake: Arc<Lakehouse>) -> SqlEngine {
        SqlEngine {
            lake,
            env: Arc::new(RuntimeEnv::default()),
            threads: None,
            snapshots: Default::default(),
        }
    }

    /// An engine whose queries share `pool`'s memory limit and threads.
    pub fn in_pool(lake: Arc<Lakehouse>, pool: &QueryPool) -> SqlEngine {
        SqlEngine {
            lake,
            env: pool.env(),
            threads: Some(pool.threads()),
            snapshots: Default::default(),
        }
    }

    /// Opens every table of the lakehouse into the engine's snapshot cache,
    /// so the first dashboard query after start-up does not read a table's
    /// log (a year's log of 105,000 files: a 143 MB checkpoint, 0.5-0.6 s).
    /// Returns how many tables were opened; a table that fails to open is
    /// logged and left for the first query to report.
    pub async fn warm_snapshots(&self) -> usize {
        let mut opened = 0;
        for layer in Layer::ALL {
            for name in self.lake.list_tables(layer) {
                match self.snapshots.latest(&self.lake, &name).await {
                    Ok(Some(_)) => opened += 1,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(table = %name, error = %e, "could not open the table's snapshot ahead of queries")
                    }
                }
            }
        }
        opened
    }

    /// How many tables' snapshots the engine holds.
    pub fn snapshots_held(&self) -> usize {
        self.snapshots.len()
    }

    /// The lakehouse it reads.
    pub fn lake(&self) -> &Arc<Lakehouse> {
        &self.lake
    }

    /// A session with the layers registered as schemas (also usable for
    /// DataFrame work by the pipelines).
    pub fn session(&self) -> SessionContext {
        self.session_with(&[])
            .expect("no settings, nothing to refuse")
    }

    /// A session with DataFusion settings (`KEY`, `VALUE`) applied, e.g.
    /// `datafusion.execution.parquet.pushdown_filters`.
    pub fn session_with(
        &self,
        settings: &[(&str, &str)],
    ) -> Result<SessionContext, DataFusionError> {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("ironlake", "public")
            .with_create_default_catalog_and_schema(true);
        // Filters are evaluated after decoding, not inside the Parquet
        // decoder (delta-rs turns that on when given no session). Row-group
        // and page pruning by statistics happen either way. Measured on the
        // dashboard bench (2026-12-03): the top alarms 100 -> 55-65 ms (a
        // filter keeping every other row made the decoder's row selections
        // its largest cost), the last hour's last values 0.40 -> 0.37 s,
        // one machine's signal over 6 hours 0.61 -> 0.55 s; nothing slower.
        config.options_mut().execution.parquet.pushdown_filters = false;
        if let Some(threads) = self.threads {
            config = config.with_target_partitions(threads.max(1));
        }
        for (k, v) in settings {
            config.options_mut().set(k, v).map_err(|e| {
                DataFusionError::Configuration(format!("setting `{k}`: {}", e.strip_backtrace()))
            })?;
        }
        let ctx = SessionContext::new_with_config_rt(config, self.env.clone());
        // The schemas' scans take the session's settings, but not its
        // catalogs: a state holding the catalog list that holds the schema
        // would be a reference cycle, never freed (one session per query).
        let mut state = ctx.state();
        state.register_catalog_list(Arc::new(MemoryCatalogProviderList::new()));
        let state = Arc::new(state);
        if let Some(catalog) = ctx.catalog("ironlake") {
            for layer in Layer::ALL {
                let schema = LayerSchema {
                    lake: self.lake.clone(),
                    snapshots: self.snapshots.clone(),
                    layer,
                    state: state.clone(),
                };
                let _ = catalog.register_schema(layer.as_str(), Arc::new(schema));
            }
            let _ =
                catalog.register_schema(TIME_TRAVEL_SCHEMA, Arc::new(MemorySchemaProvider::new()));
        }
        functions::KernelFunction::register(self, &ctx);
        aggregates::ByExtreme::register(&ctx);
        Ok(ctx)
    }

    /// Run one read-only statement and collect its result.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, QueryError> {
        let ctx = self.session();
        let df = self.plan(&ctx, sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(QueryError::Exec)?;
        Ok(QueryResult { schema, batches })
    }

    /// Run one statement, keeping at most `max_rows` rows; the flag tells
    /// whether more rows were cut.
    pub async fn query_limited(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<(QueryResult, bool), QueryError> {
        let ctx = self.session();
        let df = self.plan(&ctx, sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let df = df.limit(0, Some(max_rows + 1)).map_err(QueryError::Plan)?;
        let mut batches = df.collect().await.map_err(QueryError::Exec)?;
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        let truncated = total > max_rows;
        if truncated {
            let mut keep = max_rows;
            for b in batches.iter_mut() {
                let n = b.num_rows().min(keep);
                *b = b.slice(0, n);
                keep -= n;
            }
        }
        Ok((QueryResult { schema, batches }, truncated))
    }

    /// Parse, rewrite time travel, plan and check one statement.
    pub async fn plan(
        &self,
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<deltalake::datafusion::dataframe::DataFrame, QueryError> {
        let dialect = DatabricksDialect {};
        let mut statements = DFParserBuilder::new(sql)
            .with_dialect(&dialect)
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| match e {
                DataFusionError::SQL(p, _) => QueryError::Sql(p.to_string()),
                other => QueryError::Sql(other.strip_backtrace()),
            })?;
        if statements.len() != 1 {
            return Err(QueryError::Statements(statements.len()));
        }
        let mut statement = statements.pop_front().expect("one statement");
        if let DFStatement::Statement(s) = &mut statement {
            let mut tt = TimeTravel::default();
            let _ = s.visit(&mut tt);
            for (i, (name, version)) in tt.found.into_iter().enumerate() {
                let provider = self.provider_at(&ctx.state(), &name, &version).await?;
                let schema = ctx
                    .catalog("ironlake")
                    .and_then(|c| c.schema(TIME_TRAVEL_SCHEMA))
                    .ok_or_else(|| QueryError::Sql("time travel schema missing".into()))?;
                schema
                    .register_table(format!("t{i}"), provider)
                    .map_err(QueryError::Plan)?;
            }
        }
        let state = ctx.state();
        let plan = state
            .statement_to_plan(statement)
            .await
            .map_err(|e| match e.find_root() {
                DataFusionError::Plan(m) if m.contains("table") && m.contains("not found") => {
                    let name = m.split('\'').nth(1).unwrap_or(m);
                    QueryError::UnknownTable(name.trim_start_matches("ironlake.").to_string())
                }
                _ => QueryError::Plan(e),
            })?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| {
                QueryError::Sql(format!("{} (queries are read-only)", e.strip_backtrace()))
            })?;
        ctx.execute_logical_plan(plan)
            .await
            .map_err(QueryError::Plan)
    }

    /// A table as of a version or instant.
    async fn provider_at(
        &self,
        state: &SessionState,
        name: &str,
        version: &TableVersion,
    ) -> Result<Arc<dyn TableProvider>, QueryError> {
        let err = |message: String| QueryError::TimeTravel {
            table: name.to_string(),
            message,
        };
        let table =
            TableName::parse(name).map_err(|_| QueryError::UnknownTable(name.to_string()))?;
        let Some(mut t) = open_table(&self.lake, &table).await? else {
            return Err(QueryError::UnknownTable(name.to_string()));
        };
        match version {
            TableVersion::VersionAsOf(e) => {
                let v: u64 = literal(e).and_then(|s| s.parse().ok()).ok_or_else(|| {
                    err(format!("VERSION AS OF takes a version number, not `{e}`"))
                })?;
                let newest = t.version().unwrap_or(0);
                if v > newest {
                    return Err(err(format!(
                        "version {v} does not exist (newest is {newest})"
                    )));
                }
                t.load_version(v)
                    .await
                    .map_err(|e| err(format!("version {v}: {e}")))?;
            }
            TableVersion::TimestampAsOf(e) | TableVersion::ForSystemTimeAsOf(e) => {
                let s = literal(e).ok_or_else(|| {
                    err(format!(
                        "TIMESTAMP AS OF takes a quoted RFC 3339 time, not `{e}`"
                    ))
                })?;
                let ms = crate::time::parse_time(&s, crate::time::now_ms())
                    .map_err(|e| err(e.message))?;
                let at = chrono::DateTime::from_timestamp_millis(ms)
                    .ok_or_else(|| err(format!("`{s}` is out of range")))?;
                t.load_with_datetime(at)
                    .await
                    .map_err(|e| err(format!("no version at or before {s}: {e}")))?;
            }
            other => {
                return Err(err(format!(
                    "`{other}` is not supported; use VERSION AS OF n or TIMESTAMP AS OF '...'"
                )))
            }
        }
        // Not the session's catalogs: the provider goes into them (a cycle).
        let mut state = state.clone();
        state.register_catalog_list(Arc::new(MemoryCatalogProviderList::new()));
        provider(&t, &Arc::new(state))
            .await
            .map_err(QueryError::Plan)
    }
}

/// The text of a literal (number or string, possibly `TIMESTAMP '...'`).
fn literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(n.to_string()),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        Expr::TypedString(t) => match &t.value.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Finds `t VERSION AS OF ..` / `t TIMESTAMP AS OF ..` references and
/// points them at `__time_travel.t<i>`.
#[derive(Default)]
struct TimeTravel {
    found: Vec<(String, TableVersion)>,
}

impl VisitorMut for TimeTravel {
    type Break = ();

    fn pre_visit_table_factor(&mut self, f: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, version, .. } = f {
            if let Some(v) = version.take() {
                let text = name
                    .0
                    .iter()
                    .map(|p| p.to_string().trim_matches('"').to_string())
                    .collect::<Vec<_>>()
                    .join(".");
                let i = self.found.len();
                self.found.push((text, v));
                *name = ObjectName::from(vec![
                    Ident::new("ironlake"),
                    Ident::new(TIME_TRAVEL_SCHEMA),
                    Ident::new(format!("t{i}")),
                ]);
            }
        }
        ControlFlow::Continue(())
    }
}

/// Open a table if it exists.
async fn open_table(lake: &Lakehouse, name: &TableName) -> Result<Option<DeltaTable>, QueryError> {
    if !lake.exists(name) {
        return Ok(None);
    }
    let t = DeltaTable::try_from_url(lake.url_of(name))
        .await
        .map_err(|source| LakeError::Open {
            table: name.to_string(),
            source,
        })?;
    Ok(Some(t))
}

async fn provider(
    t: &DeltaTable,
    state: &Arc<SessionState>,
) -> Result<Arc<dyn TableProvider>, DataFusionError> {
    t.update_datafusion_session(state.as_ref())
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    // With the session, the scan takes its Parquet settings
    // (`datafusion.execution.parquet.*`, e.g. `pushdown_filters`) from it.
    t.table_provider().with_session(state.clone()).await
}

/// One layer of the lakehouse as a SQL schema.
struct LayerSchema {
    lake: Arc<Lakehouse>,
    snapshots: Arc<snapshots::Snapshots>,
    layer: Layer,
    /// Shares the runtime (object stores) and the settings with the
    /// session using it.
    state: Arc<SessionState>,
}

impl std::fmt::Debug for LayerSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LayerSchema({})", self.layer)
    }
}

#[async_trait]
impl SchemaProvider for LayerSchema {
    fn table_names(&self) -> Vec<String> {
        self.lake
            .list_tables(self.layer)
            .into_iter()
            .map(|n| n.table().to_string())
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let Ok(name) = TableName::new(self.layer, name) else {
            return Ok(None);
        };
        let t = self
            .snapshots
            .latest(&self.lake, &name)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        match t {
            Some(t) => Ok(Some(provider(&t, &self.state).await?)),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        TableName::new(self.layer, name).is_ok_and(|n| self.lake.exists(&n))
    }
}
