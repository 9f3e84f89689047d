//! The pipeline file format (`config/pipelines/*.toml`), as written.
//! `pipeline::spec` validates it (table names, the query, expectations,
//! the gold job a `kind` names).
//!
//! ```toml
//! [pipeline]
//! name = "alarm_log"                 # default: the file name
//! kind = "sql"                       # sql, or a gold job: oee_shift, oee_rollup, energy_shift, downtime, reliability
//! source = "silver.asset_events"     # read incrementally (new commits only)
//! target = "gold.alarm_log"
//! partition_by = ["plant", "date"]
//! sql = "SELECT ts, plant, asset_id, code AS alarm FROM source WHERE kind = 'alarm'"
//!
//! [[expectations]]
//! name = "has_asset"
//! condition = "asset_id IS NOT NULL"
//! action = "drop"                    # warn | drop | fail
//! ```

use serde::Deserialize;

/// What happens to rows that break an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Keep the row, count it.
    Warn,
    /// Leave the row out of the target; write it to `silver.quarantine`
    /// with the expectation's name.
    Drop,
    /// Stop the update: the target stays as it was, the run says which rows broke it.
    Fail,
}

/// A named boolean SQL condition on the output rows. A row for which it is
/// false or NULL breaks it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub name: String,
    pub condition: String,
    #[serde(default = "warn")]
    pub action: Action,
}

fn warn() -> Action {
    Action::Warn
}

/// `[pipeline]` of a pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineDef {
    pub name: Option<String>,
    pub description: Option<String>,
    /// `sql` or the name of a gold job.
    #[serde(default = "sql_kind")]
    pub kind: String,
    pub source: Option<String>,
    pub target: Option<String>,
    pub sql: Option<String>,
    #[serde(default)]
    pub partition_by: Vec<String>,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn sql_kind() -> String {
    "sql".into()
}
fn enabled() -> bool {
    true
}

/// A whole pipeline file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: PipelineDef,
    #[serde(default)]
    pub expectations: Vec<Expectation>,
}
