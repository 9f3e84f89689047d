//! Table names: `layer.table`, everywhere (SQL, pipelines, the CLI, the
//! API). A [`TableName`] is valid by construction: a known layer and a
//! lower-case identifier that is safe as a directory name.

use std::fmt;
use std::str::FromStr;

/// The layers of the lakehouse, each a directory under the root and a SQL
/// schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    Bronze,
    Silver,
    Gold,
    System,
}

impl Layer {
    /// Every layer, in medallion order.
    pub const ALL: [Layer; 4] = [Layer::Bronze, Layer::Silver, Layer::Gold, Layer::System];

    /// Name as used in paths and SQL.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Bronze => "bronze",
            Layer::Silver => "silver",
            Layer::Gold => "gold",
            Layer::System => "system",
        }
    }

    /// Layer by name.
    pub fn parse(s: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a text is not a table name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a table name: {message} (tables are named layer.table, e.g. silver.readings; layers: bronze, silver, gold, system)")]
pub struct TableNameError {
    pub text: String,
    pub message: &'static str,
}

/// A table's `layer.table` name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    layer: Layer,
    table: String,
}

impl TableName {
    /// A name from its parts; the table part must be a lower-case identifier.
    pub fn new(layer: Layer, table: &str) -> Result<TableName, TableNameError> {
        if !valid_identifier(table) {
            return Err(TableNameError {
                text: format!("{layer}.{table}"),
                message: "the table part must be lower-case letters, digits and `_`",
            });
        }
        Ok(TableName {
            layer,
            table: table.to_string(),
        })
    }

    /// Parse `layer.table`.
    pub fn parse(s: &str) -> Result<TableName, TableNameError> {
        let err = |message| TableNameError {
            text: s.chars().take(80).collect(),
            message,
        };
        let (l, t) = s.split_once('.').ok_or_else(|| err("no `.`"))?;
        let layer = Layer::parse(l).ok_or_else(|| err("unknown layer"))?;
        TableName::new(layer, t).map_err(|e| err(e.message))
    }

    /// The layer.
    pub fn layer(&self) -> Layer {
        self.layer
    }

    /// The table part (without the layer).
    pub fn table(&self) -> &str {
        &self.table
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.layer, self.table)
    }
}

impl FromStr for TableName {
    type Err = TableNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TableName::parse(s)
    }
}

impl serde::Serialize for TableName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Table parts are lower-case identifiers (they are directory names).
pub fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let n = TableName::parse("silver.readings").unwrap();
        assert_eq!(n.layer(), Layer::Silver);
        assert_eq!(n.table(), "readings");
        assert_eq!(n.to_string(), "silver.readings");
        for bad in [
            "readings",
            "lake.readings",
            "silver.",
            "silver.Readings",
            "silver.a/b",
            "silver.a.b",
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
        let e = TableName::parse("silver.../etc").unwrap_err().to_string();
        assert!(e.contains("layer.table"), "{e}");
    }
}
