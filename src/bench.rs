//! `ironlake bench`: measurements of the running platform (end-to-end ingest
//! throughput and latency, twins at scale). Results are printed, never asserted.

use anyhow::Result;
use clap::Subcommand;

/// Benchmark selection.
#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// MQTT -> bronze/silver/twins throughput and publish-to-visible delay.
    Ingest,
}

/// Run a benchmark.
pub async fn run(_cmd: BenchCmd) -> Result<()> {
    Ok(())
}
