//! `ironlake sql`: one read-only query over the lake tables.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{print_stdout_bytes, LakeArgs};
use ironlake::query::format::Format;
use ironlake::query::SqlEngine;

/// Run `query` and write the result to `out` or stdout.
pub async fn run(query: &str, format: Format, out: Option<PathBuf>, lake: &LakeArgs) -> Result<()> {
    let lake = lake.open_lake()?;
    let result = SqlEngine::new(lake).query(query).await?;
    match out {
        Some(path) => {
            let f = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            ironlake::query::format::write(&result, format, std::io::BufWriter::new(f))?;
            eprintln!("{} rows written to {}", result.rows(), path.display());
        }
        None => {
            let mut buf = Vec::new();
            ironlake::query::format::write(&result, format, &mut buf)?;
            print_stdout_bytes(&buf);
        }
    }
    Ok(())
}
