//! Pipelines, validated: what a pipeline reads, how it transforms (a SQL
//! query or a gold job), where it writes, and the expectations its output
//! must meet. Built from the file format of `config::pipeline`, with errors
//! naming the file and key; a query or condition that does not parse is
//! caught here, before any data moves.

use deltalake::datafusion::sql::sqlparser::dialect::DatabricksDialect;
use deltalake::datafusion::sql::sqlparser::parser::Parser;

use super::gold::{self, GoldJob};
use crate::config::{ConfigError, PipelineFile};
use crate::lake::{Layer, TableName};

pub use crate::config::pipeline::{Action, Expectation};

/// What a pipeline computes.
#[derive(Clone, Copy)]
pub enum Kind {
    /// A SQL query over the new rows of `source` (named `source` in the query).
    Sql,
    /// A gold job.
    Gold(&'static dyn GoldJob),
}

impl Kind {
    /// The name used in pipeline files.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sql => "sql",
            Kind::Gold(j) => j.kind(),
        }
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        self.as_str() == other.as_str()
    }
}

impl serde::Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A validated pipeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pipeline {
    pub name: String,
    pub description: String,
    pub kind: Kind,
    /// The table read incrementally (SQL pipelines).
    pub source: Option<TableName>,
    /// The table written.
    pub target: TableName,
    pub sql: Option<String>,
    pub partition_by: Vec<String>,
    pub expectations: Vec<Expectation>,
    pub enabled: bool,
    /// The file it came from.
    pub file: String,
}

impl Pipeline {
    /// The tables an update reads (and whose versions it records).
    pub fn sources(&self) -> Vec<TableName> {
        match self.kind {
            Kind::Sql => self.source.iter().cloned().collect(),
            Kind::Gold(j) => j.sources().iter().map(|t| t.table_name()).collect(),
        }
    }

    /// Parse and validate a pipeline file; `stem` is the default name.
    pub fn from_toml(text: &str, file: &str, stem: &str) -> Result<Pipeline, ConfigError> {
        let f: PipelineFile = crate::config::parse_toml(text, file)?;
        Pipeline::from_file(f, file, stem)
    }

    /// Validate a parsed pipeline file; `stem` is the default name.
    pub fn from_file(f: PipelineFile, file: &str, stem: &str) -> Result<Pipeline, ConfigError> {
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
        let kind = match p.kind.as_str() {
            "sql" => Kind::Sql,
            k => Kind::Gold(gold::job(k).ok_or_else(|| {
                let kinds: Vec<&str> = gold::JOBS.iter().map(|j| j.kind()).collect();
                bad(
                    "pipeline.kind",
                    format!("unknown kind `{k}` (kinds: sql, {})", kinds.join(", ")),
                )
            })?),
        };
        let target_text = match (&p.target, kind) {
            (Some(t), _) => t.clone(),
            (None, Kind::Gold(j)) => j.target().name().to_string(),
            (None, Kind::Sql) => {
                return Err(bad(
                    "pipeline.target",
                    "missing: the `layer.table` to write".into(),
                ))
            }
        };
        let target = TableName::parse(&target_text)
            .ok()
            .filter(|t| matches!(t.layer(), Layer::Silver | Layer::Gold))
            .ok_or_else(|| {
                bad(
                    "pipeline.target",
                    format!(
                        "`{target_text}`: expected silver.<name> or gold.<name> (lower case, digits, `_`)"
                    ),
                )
            })?;
        let dialect = DatabricksDialect {};
        let mut source = None;
        if kind == Kind::Sql {
            let text = p.source.as_deref().unwrap_or_default();
            let s = TableName::parse(text).map_err(|e| bad("pipeline.source", e.to_string()))?;
            if s == target {
                return Err(bad(
                    "pipeline.source",
                    "a pipeline cannot read its own target".into(),
                ));
            }
            source = Some(s);
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
            kind,
            source,
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
        assert_eq!(gold.target.to_string(), "gold.oee_shift");
        let e = Pipeline::from_toml("[pipeline]\nkind = \"oee\"\n", "o.toml", "oee")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pipeline.kind") && e.contains("oee_shift"),
            "{e}"
        );
    }
}
