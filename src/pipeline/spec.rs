//! Pipeline definitions (`config/pipelines/*.toml`): what a pipeline reads,
//! how it transforms, where it writes, and the expectations its output must
//! meet. Validated at load, with errors naming the file and key; a query or
//! condition that does not parse is caught here, before any data moves.
//!
//! ```toml
//! [pipeline]
//! name = "alarm_log"                 # default: the file name
//! kind = "sql"                       # sql | oee_shift | oee_rollup | energy_shift | downtime | reliability
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

use crate::config::ConfigError;
use deltalake::datafusion::sql::sqlparser::dialect::DatabricksDialect;
use deltalake::datafusion::sql::sqlparser::parser::Parser;

/// What a pipeline computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A SQL query over the new rows of `source` (named `source` in the query).
    Sql,
    /// OEE per machine and shift from state events and part counters.
    OeeShift,
    /// Energy per machine and shift from the power signal.
    EnergyShift,
    /// Every stop with its duration and reason.
    Downtime,
    /// MTBF and MTTR per machine over a trailing window.
    Reliability,
    /// OEE per line and per plant and shift, from `gold.oee_shift`.
    OeeRollup,
}

impl Kind {
    /// The name used in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sql => "sql",
            Kind::OeeShift => "oee_shift",
            Kind::EnergyShift => "energy_shift",
            Kind::Downtime => "downtime",
            Kind::Reliability => "reliability",
            Kind::OeeRollup => "oee_rollup",
        }
    }
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineDef {
    name: Option<String>,
    description: Option<String>,
    #[serde(default = "sql_kind")]
    kind: Kind,
    source: Option<String>,
    target: Option<String>,
    sql: Option<String>,
    #[serde(default)]
    partition_by: Vec<String>,
    #[serde(default = "enabled")]
    enabled: bool,
}

fn sql_kind() -> Kind {
    Kind::Sql
}
fn enabled() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    pipeline: PipelineDef,
    #[serde(default)]
    expectations: Vec<Expectation>,
}

/// A validated pipeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pipeline {
    pub name: String,
    pub description: String,
    pub kind: Kind,
    /// `layer.table` read incrementally (SQL pipelines).
    pub source: Option<String>,
    /// `layer.table` written.
    pub target: String,
    pub sql: Option<String>,
    pub partition_by: Vec<String>,
    pub expectations: Vec<Expectation>,
    pub enabled: bool,
    /// The file it came from.
    pub file: String,
}

/// Layers a pipeline may write.
const TARGET_LAYERS: [&str; 2] = ["silver", "gold"];

fn table_name_ok(s: &str, layers: &[&str]) -> bool {
    s.split_once('.').is_some_and(|(l, t)| {
        layers.contains(&l)
            && !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

impl Pipeline {
    /// The tables an update reads (and whose versions it records).
    pub fn sources(&self) -> Vec<String> {
        match self.kind {
            Kind::Sql => self.source.iter().cloned().collect(),
            Kind::OeeRollup => vec!["gold.oee_shift".into()],
            _ => vec!["silver.asset_events".into(), "silver.readings".into()],
        }
    }

    /// Parse and validate a pipeline file; `stem` is the default name.
    pub fn from_toml(text: &str, file: &str, stem: &str) -> Result<Pipeline, ConfigError> {
        let f: PipelineFile = crate::config::parse_toml(text, file)?;
        let bad = |key: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        let p = f.pipeline;
        let name = p.name.unwrap_or_else(|| stem.to_string());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                "pipeline.name",
                format!("`{name}`: use letters, digits, `_` and `-`"),
            ));
        }
        let default_target = match p.kind {
            Kind::Sql => None,
            Kind::OeeShift => Some("gold.oee_shift"),
            Kind::EnergyShift => Some("gold.energy_shift"),
            Kind::Downtime => Some("gold.downtime_events"),
            Kind::Reliability => Some("gold.reliability"),
            Kind::OeeRollup => Some("gold.oee_rollup"),
        };
        let target = p
            .target
            .or(default_target.map(str::to_string))
            .ok_or_else(|| {
                bad(
                    "pipeline.target",
                    "missing: the `layer.table` to write".into(),
                )
            })?;
        if !table_name_ok(&target, &TARGET_LAYERS) {
            return Err(bad(
                "pipeline.target",
                format!(
                    "`{target}`: expected silver.<name> or gold.<name> (lower case, digits, `_`)"
                ),
            ));
        }
        let dialect = DatabricksDialect {};
        if p.kind == Kind::Sql {
            let source = p.source.as_deref().unwrap_or_default();
            if !table_name_ok(source, &crate::query::LAYERS) {
                return Err(bad(
                    "pipeline.source",
                    format!("`{source}`: expected the `layer.table` to read"),
                ));
            }
            if source == target {
                return Err(bad(
                    "pipeline.source",
                    "a pipeline cannot read its own target".into(),
                ));
            }
            let sql = p.sql.as_deref().unwrap_or_default();
            if sql.trim().is_empty() {
                return Err(bad(
                    "pipeline.sql",
                    "missing: the query over `source`".into(),
                ));
            }
            let stmts =
                Parser::parse_sql(&dialect, sql).map_err(|e| bad("pipeline.sql", e.to_string()))?;
            if stmts.len() != 1
                || !matches!(
                    stmts[0],
                    deltalake::datafusion::sql::sqlparser::ast::Statement::Query(_)
                )
            {
                return Err(bad(
                    "pipeline.sql",
                    "must be exactly one SELECT query".into(),
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, e) in f.expectations.iter().enumerate() {
            if !names.insert(e.name.clone()) {
                return Err(bad(
                    &format!("expectations[{i}].name"),
                    format!("`{}` is used twice", e.name),
                ));
            }
            let whole = Parser::new(&dialect)
                .try_with_sql(&e.condition)
                .and_then(|mut p| {
                    p.parse_expr()?;
                    // One expression and nothing after it.
                    Ok(p.peek_token().token
                        == deltalake::datafusion::sql::sqlparser::tokenizer::Token::EOF)
                });
            match whole {
                Ok(true) => {}
                Ok(false) => {
                    return Err(bad(
                        &format!("expectations[{i}].condition"),
                        format!("`{}` must be one boolean expression", e.condition),
                    ))
                }
                Err(err) => {
                    return Err(bad(
                        &format!("expectations[{i}].condition"),
                        format!("`{}` does not parse: {err}", e.condition),
                    ))
                }
            }
        }
        Ok(Pipeline {
            name,
            description: p.description.unwrap_or_default(),
            kind: p.kind,
            source: p.source,
            target,
            sql: p.sql,
            partition_by: p.partition_by,
            expectations: f.expectations,
            enabled: p.enabled,
            file: file.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_definitions_name_file_and_key() {
        let ok = "[pipeline]\nsource = \"silver.readings\"\ntarget = \"gold.x\"\nsql = \"SELECT * FROM source\"\n[[expectations]]\nname = \"v\"\ncondition = \"value > 0\"\naction = \"drop\"\n";
        let p = Pipeline::from_toml(ok, "p.toml", "x").unwrap();
        assert_eq!(
            (p.name.as_str(), p.expectations[0].action),
            ("x", Action::Drop)
        );
        let cases = [
            (
                ok.replace("value > 0", "value >"),
                "expectations[0].condition",
            ),
            (
                ok.replace("value > 0", "true) AS x FROM t --"),
                "expectations[0].condition",
            ),
            (ok.replace("gold.x", "bronze.x"), "pipeline.target"),
            (ok.replace("SELECT * FROM source", "SELEC"), "pipeline.sql"),
            (
                ok.replace("SELECT * FROM source", "DROP TABLE source"),
                "pipeline.sql",
            ),
            (ok.replace("silver.readings", "readings"), "pipeline.source"),
            (ok.replace("\"drop\"", "\"explode\""), "action"),
            (
                format!("{ok}[[expectations]]\nname = \"v\"\ncondition = \"true\"\n"),
                "expectations[1].name",
            ),
        ];
        for (text, key) in cases {
            let e = Pipeline::from_toml(&text, "p.toml", "x")
                .unwrap_err()
                .to_string();
            assert!(e.contains("p.toml") && e.contains(key), "{key}: {e}");
        }
        let gold =
            Pipeline::from_toml("[pipeline]\nkind = \"oee_shift\"\n", "o.toml", "oee").unwrap();
        assert_eq!(gold.target, "gold.oee_shift");
    }
}
