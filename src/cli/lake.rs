//! `ironlake lake`: list tables, history, optimize, vacuum, checkpoint.

use anyhow::Result;
use clap::Subcommand;

use super::spinner;
use ironlake::lake::Lakehouse;

/// `ironlake lake ...`.
#[derive(Subcommand)]
pub enum LakeOp {
    /// Every table of every layer.
    Tables,
    /// The commits of a table, newest first.
    History {
        /// `layer.table`, e.g. silver.readings.
        table: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Compact small files into large ones.
    Optimize {
        table: String,
        /// Target file size in MiB.
        #[arg(long, default_value_t = 128)]
        target_mb: u64,
    },
    /// Delete files no version within the retention needs.
    Vacuum {
        table: String,
        /// Keep files needed by versions younger than this (Delta's default: 168 h).
        #[arg(long, default_value_t = 168)]
        retention_hours: u64,
        /// Only list what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write a log checkpoint at the current version.
    Checkpoint { table: String },
}

/// Run a lake command.
pub async fn run(op: LakeOp, lake: &Lakehouse) -> Result<()> {
    match op {
        LakeOp::Tables => {
            for layer in ironlake::lake::Layer::ALL {
                for t in lake.list_tables(layer) {
                    println!("{t}");
                }
            }
        }
        LakeOp::History { table, limit } => {
            for c in lake.table_history(&table, Some(limit)).await? {
                let when = c
                    .timestamp_ms
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default();
                println!(
                    "{:>6}  {when}  {:<14} {} {}",
                    c.version, c.operation, c.parameters, c.metrics
                );
            }
        }
        LakeOp::Optimize { table, target_mb } => {
            let bar = spinner(&format!("optimizing {table}"));
            let r = lake.optimize(&table, target_mb << 20).await;
            bar.finish_and_clear();
            let r = r?;
            println!(
                "{table}: {} files compacted into {} in {} partitions (version {})",
                r.files_removed,
                r.files_added,
                r.partitions_optimized,
                r.version.map_or("-".into(), |v| v.to_string())
            );
        }
        LakeOp::Vacuum {
            table,
            retention_hours,
            dry_run,
        } => {
            let bar = spinner(&format!("vacuuming {table}"));
            let r = lake.vacuum(&table, retention_hours, dry_run).await;
            bar.finish_and_clear();
            let r = r?;
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            println!("{table}: {verb} {} files", r.files_deleted.len());
            for f in r.files_deleted.iter().take(50) {
                println!("  {f}");
            }
        }
        LakeOp::Checkpoint { table } => {
            lake.checkpoint(&table).await?;
            println!("{table}: checkpoint written");
        }
    }
    Ok(())
}
