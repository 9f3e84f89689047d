//! The lakehouse: the Delta tables of the medallion layers, their schemas, the
//! batching writers and the readers used by the API and by twin start-up.
//!
//! Tables follow the contract in ARCHITECTURE.md (`layer.table` names, UTC
//! timestamps, partitioned by `plant` and `date`). This module owns creating and
//! appending to tables; it never decides what is valid data (the ingest stage
//! does) and never holds live state.

pub mod append;
pub mod increments;
pub mod name;
pub mod ops;
pub mod read;
pub mod rows;
pub mod schema;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;

use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::StructType;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use url::Url;

pub use name::{Layer, TableName, TableNameError};
pub use schema::Table;

/// Errors of the lake layer.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lakehouse root `{root}`: {message}")]
    Root { root: String, message: String },
    #[error("table {table}: {source}")]
    Delta {
        table: &'static str,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error("table {table}: query failed: {source}")]
    Query {
        table: &'static str,
        #[source]
        source: deltalake::datafusion::error::DataFusionError,
    },
    #[error("table {table}: {source}")]
    Open {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
    #[error("no table `{0}` in the lakehouse (see `ironlake lake tables`)")]
    NoTable(TableName),
}

/// The lakehouse root and its tables.
#[derive(Debug, Clone)]
pub struct Lakehouse {
    root: Url,
}

impl Lakehouse {
    /// Open (creating the directory if needed) a lakehouse at a local path or URL.
    pub fn open(root: &str) -> Result<Self, LakeError> {
        let err = |message: String| LakeError::Root {
            root: root.to_string(),
            message,
        };
        let url = if root.contains("://") {
            Url::parse(root).map_err(|e| err(e.to_string()))?
        } else {
            let p = PathBuf::from(root);
            std::fs::create_dir_all(&p)
                .map_err(|e| err(format!("cannot create directory: {e}")))?;
            let abs = std::fs::canonicalize(&p).map_err(|e| err(e.to_string()))?;
            Url::from_directory_path(&abs).map_err(|_| err("not an absolute path".into()))?
        };
        Ok(Lakehouse { root: url })
    }

    /// Root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// URL of a table's directory (`<root>/<layer>/<table>/`).
    pub fn table_url(&self, t: Table) -> Url {
        self.url_of(&t.table_name())
    }

    /// URL of any table's directory (`<root>/<layer>/<table>/`).
    pub fn url_of(&self, name: &TableName) -> Url {
        self.root
            .join(&format!("{}/{}/", name.layer(), name.table()))
            .unwrap_or_else(|_| self.root.clone())
    }

    /// Whether a Delta table exists under `name`. On object storage only
    /// the tables of the contract are known without listing.
    pub fn exists(&self, name: &TableName) -> bool {
        match self.url_of(name).to_file_path() {
            Ok(p) => p.join("_delta_log").is_dir(),
            Err(_) => Table::from_table_name(name).is_some(),
        }
    }

    /// The tables of a layer, sorted.
    pub fn list_tables(&self, layer: Layer) -> Vec<TableName> {
        let dir = self.root.join(&format!("{layer}/")).ok();
        let mut out: Vec<TableName> = match dir.map(|d| d.to_file_path()) {
            Some(Ok(p)) => std::fs::read_dir(p)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.path().join("_delta_log").is_dir())
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(|n| TableName::new(layer, n).ok())
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => Table::ALL
                .into_iter()
                .chain(Table::REGISTER)
                .chain(Table::PIPELINE)
                .chain(Table::SIM)
                .chain(Table::MONITOR)
                .map(|t| t.table_name())
                .filter(|n| n.layer() == layer)
                .collect(),
        };
        out.sort();
        out
    }

    /// Local directory of a table, when the lakehouse is on local disk.
    pub fn table_path(&self, t: Table) -> Option<PathBuf> {
        self.table_url(t).to_file_path().ok()
    }

    /// Open a table, creating it empty with its schema if it does not exist.
    pub async fn open_or_create(&self, t: Table) -> Result<DeltaTable, LakeError> {
        let url = self.table_url(t);
        if let Some(p) = self.table_path(t) {
            std::fs::create_dir_all(&p).map_err(|e| LakeError::Root {
                root: p.display().to_string(),
                message: format!("cannot create table directory: {e}"),
            })?;
        }
        let delta = |source| LakeError::Delta {
            table: t.name(),
            source,
        };
        // On local disk, only load a table that has a log (loading a missing
        // table makes the kernel log an error before we create it).
        let exists = self
            .table_path(t)
            .is_none_or(|p| p.join("_delta_log").is_dir());
        let table = if exists {
            DeltaTable::try_from_url(url).await.map_err(delta)?
        } else {
            deltalake::DeltaTableBuilder::from_url(url)
                .map_err(delta)?
                .build()
                .map_err(delta)?
        };
        if table.version().is_some() {
            return upgrade(t, table).await;
        }
        let schema: StructType = t
            .arrow_schema()
            .as_ref()
            .try_into_kernel()
            .map_err(|e: deltalake::arrow::error::ArrowError| delta(e.into()))?;
        table
            .create()
            .with_table_name(t.name())
            .with_comment(t.comment())
            .with_columns(schema.fields().cloned())
            .with_partition_columns(t.partition_columns().iter().map(|s| s.to_string()))
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(delta)
    }

    /// Create every table of the contract (idempotent), bringing tables
    /// written by an older ironlake up to the contract's columns.
    pub async fn ensure_all(&self) -> Result<(), LakeError> {
        for t in Table::ALL {
            self.open_or_create(t).await?;
        }
        Ok(())
    }
}

/// Shared handle to a lakehouse.
pub type LakeRef = Arc<Lakehouse>;

/// Add the nullable columns the contract has gained since `table` was
/// created (older rows read them as null). Columns are only ever added at
/// the end of a contract schema, so positions still match.
async fn upgrade(t: Table, table: DeltaTable) -> Result<DeltaTable, LakeError> {
    let have: std::collections::HashSet<String> = match table.snapshot() {
        Ok(s) => s.schema().fields().map(|f| f.name().to_string()).collect(),
        Err(_) => return Ok(table),
    };
    let contract = t.arrow_schema();
    let missing: Vec<_> = contract
        .fields()
        .iter()
        .filter(|f| !have.contains(f.name()) && f.is_nullable())
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(table);
    }
    let schema: StructType = (&deltalake::arrow::datatypes::Schema::new(missing))
        .try_into_kernel()
        .map_err(|e: deltalake::arrow::error::ArrowError| LakeError::Delta {
            table: t.name(),
            source: e.into(),
        })?;
    tracing::info!(table = %t.name(), columns = ?schema.fields().map(|f| f.name().to_string()).collect::<Vec<_>>(), "adding the contract's new columns");
    table
        .add_columns()
        .with_fields(schema.fields().cloned().collect::<Vec<_>>())
        .await
        .map_err(|source| LakeError::Delta {
            table: t.name(),
            source,
        })
}
