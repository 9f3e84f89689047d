//! `ironlake pipeline`: list the pipelines, run updates (with a progress bar).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;

use ironlake::lake::Lakehouse;
use ironlake::pipeline::run::{RunOptions, Runner, Status};
use ironlake::platform::Config;

/// `ironlake pipeline ...`.
#[derive(Subcommand)]
pub enum PipelineOp {
    /// The pipelines of the config, with source, target and expectations.
    List,
    /// Run one update of a pipeline (or of all, in file order).
    Run {
        /// Pipeline name (default: every enabled pipeline).
        name: Option<String>,
        /// Rebuild the target from all source data.
        #[arg(long)]
        full_refresh: bool,
    },
}

/// Run a pipeline command.
pub async fn run(op: PipelineOp, cfg: &Config, lake: Arc<Lakehouse>) -> Result<()> {
    match op {
        PipelineOp::List => {
            for p in &cfg.pipelines {
                println!(
                    "{:<17} {:<13} {} -> {}{}",
                    p.name,
                    p.kind.as_str(),
                    p.sources()
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    p.target,
                    if p.enabled { "" } else { "  (disabled)" }
                );
                for e in &p.expectations {
                    println!("{:>19}{:?}: {} ({})", "", e.action, e.name, e.condition);
                }
            }
        }
        PipelineOp::Run { name, full_refresh } => {
            let selected: Vec<_> = match &name {
                Some(n) => {
                    let p = cfg
                        .pipelines
                        .iter()
                        .find(|p| &p.name == n || p.target.to_string() == *n)
                        .with_context(|| {
                            let names: Vec<_> =
                                cfg.pipelines.iter().map(|p| p.name.as_str()).collect();
                            format!("no pipeline `{n}` (have: {})", names.join(", "))
                        })?;
                    vec![p]
                }
                None => cfg.pipelines.iter().filter(|p| p.enabled).collect(),
            };
            let runner = Runner::new(lake, cfg.model.clone(), cfg.platform.pipelines.clone());
            let mut failed = 0;
            for p in selected {
                let bar = indicatif::ProgressBar::new(1).with_message(p.name.clone());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg:14} [{bar:30}] {pos}/{len} steps {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                let opts = RunOptions {
                    full_refresh,
                    // Wait for an update the platform runs in the background.
                    lock_wait: Duration::from_secs(600),
                };
                let r = runner.run(p, opts, Some(&bar)).await;
                bar.finish_and_clear();
                let secs = (r.finished_ms - r.started_ms) as f64 / 1000.0;
                match r.status {
                    Status::UpToDate => println!("{} -> {}: up to date", r.pipeline, r.target),
                    Status::Busy => println!(
                        "{} -> {}: skipped: {}",
                        r.pipeline,
                        r.target,
                        r.message.unwrap_or_default()
                    ),
                    Status::Ok => {
                        let exp: Vec<String> = r
                            .expectations
                            .iter()
                            .filter(|e| e.failed > 0)
                            .map(|e| {
                                format!("{} {:?}: {}", e.name, e.action, e.failed).to_lowercase()
                            })
                            .collect();
                        println!(
                            "{} -> {}: {} rows in, {} out, {} dropped, {} warned{} (version {}, {secs:.2} s)",
                            r.pipeline,
                            r.target,
                            r.rows_in,
                            r.rows_out,
                            r.rows_dropped,
                            r.rows_warned,
                            if exp.is_empty() { String::new() } else { format!(" [{}]", exp.join(", ")) },
                            r.target_version.map_or("-".into(), |v| v.to_string()),
                        );
                    }
                    Status::Failed => {
                        failed += 1;
                        eprintln!(
                            "{} -> {}: FAILED: {}",
                            r.pipeline,
                            r.target,
                            r.message.unwrap_or_default()
                        );
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!(
                    "{failed} pipeline update(s) failed; the targets were left unchanged"
                );
            }
        }
    }
    Ok(())
}
