//! The `ironlake` command line (the commands live in `cli/`).

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use ironlake::query::format::Format;

/// mimalloc: faster than the system allocator for the many short-lived
/// allocations of parsing and Arrow kernels, and it keeps freed memory for
/// reuse instead of returning it to the OS and faulting it in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's mimalloc.h (libmimalloc-sys has
/// no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[derive(Parser)]
#[command(
    name = "ironlake",
    version,
    about = "Industrial digital twins, a Delta lakehouse and REST, in one binary"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the demo: embedded MQTT broker, simulated plant and the platform.
    Demo {
        /// REST address.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Lakehouse directory.
        #[arg(long)]
        lakehouse: Option<String>,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Seed of the simulation.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Platform config (default: the one built into the binary).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Scenario (default: the demo scenario built into the binary).
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Connect to real PLCs and brokers as configured (no simulator).
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        http: Option<SocketAddr>,
        #[arg(long)]
        lakehouse: Option<String>,
        #[arg(long)]
        duration: Option<u64>,
    },
    /// The edge gateway: read the PLCs of a config's plants, buffer on
    /// disk, publish to the `[edge.uplink]` MQTT broker or Kafka cluster.
    Edge {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Start simulated PLCs (Modbus TCP servers, MQTT publishers) for a scenario.
    Simulate {
        #[arg(long, required_unless_present_any = ["replay", "history_days"])]
        scenario: Option<PathBuf>,
        /// Instead of serving live PLCs, write N plant days of simulated
        /// history ending now into the lakehouse (gold.features and the
        /// ground truth tables system.sim_failures, system.sim_wear), as
        /// fast as the CPU allows (default scenario: the demo).
        #[arg(long, conflicts_with = "replay")]
        history_days: Option<f64>,
        /// Lakehouse for --history-days (default: `lake.root` of --config).
        #[arg(long)]
        lakehouse: Option<String>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        duration: Option<u64>,
        /// Replay recorded bronze rows instead: a table (`bronze.raw_events`)
        /// of the config's lakehouse, or a lakehouse directory (its
        /// `bronze.raw_events`).
        #[arg(long, conflicts_with = "scenario")]
        replay: Option<String>,
        /// Start of the recording to replay (RFC 3339, or `now-1d`).
        #[arg(long, default_value = "now-1h")]
        from: String,
        /// End of the recording to replay.
        #[arg(long, default_value = "now")]
        to: String,
        /// Recording seconds per real second (`10x` or `10`).
        #[arg(long, default_value = "1x")]
        speed: String,
        /// Keep the recorded timestamps in JSON payloads (default: moved to now).
        #[arg(long)]
        keep_time: bool,
        /// Where to replay to: the config whose broker, Kafka and Modbus
        /// addresses receive the traffic (default: the built-in one).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// OPC UA commissioning: `opcua browse URL [--depth N]` prints the
    /// address space; with `--node PATH --twin-type NAME` it writes a twin type.
    Opcua {
        #[command(subcommand)]
        op: cli::opcua::OpcuaOp,
    },
    /// Validate a config (platform, plants, twin types) and print a summary.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run one read-only SQL query over the lake tables (`layer.table` names,
    /// `VERSION AS OF n` / `TIMESTAMP AS OF '...'` for time travel).
    Sql {
        /// The query, e.g. "SELECT asset_id, count(*) FROM silver.readings GROUP BY 1".
        query: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        lake: cli::LakeArgs,
    },
    /// Declarative pipelines (config/pipelines/*.toml): list them or run updates.
    Pipeline {
        #[command(subcommand)]
        op: cli::pipeline::PipelineOp,
        #[command(flatten)]
        lake: cli::LakeArgs,
    },
    /// Train a model (smartcore) on the lake and register it: the built-in
    /// failure and RUL models of a twin type, or any table with --table.
    Train {
        #[command(flatten)]
        args: cli::models::TrainArgs,
        #[command(flatten)]
        registry: cli::models::RegistryArgs,
    },
    /// The model registry: list, show, promote, archive, card.
    Models {
        #[command(subcommand)]
        op: cli::models::ModelsOp,
        /// Platform config (default: the one built into the binary).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        #[command(flatten)]
        registry: cli::models::RegistryArgs,
    },
    /// Table maintenance: list, history, optimize, vacuum, checkpoint.
    Lake {
        #[command(subcommand)]
        op: cli::lake::LakeOp,
        #[command(flatten)]
        lake: cli::LakeArgs,
    },
    /// Benchmarks: `bench ingest`, `bench scale`, or the peer workloads
    /// with `bench --data DIR --workload W [--json]`.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        which: Option<ironlake::bench::BenchCmd>,
        /// Data set made by ../shared/bench/gen_telemetry.py (peer workloads).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Workload W0..W7 (see WORKLOADS.md).
        #[arg(long)]
        workload: Option<String>,
        /// Print the result as one JSON line.
        #[arg(long)]
        json: bool,
        /// Untimed runs before the timed one (warm allocator, like a long-running engine).
        #[arg(long, default_value_t = 1)]
        warmup: usize,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Batch work (SQL, pipelines, maintenance, the peer workloads) fills
    // large fresh buffers; the platform cares about tail latency.
    let batch = matches!(
        cli.cmd,
        Cmd::Sql { .. }
            | Cmd::Pipeline { .. }
            | Cmd::Lake { .. }
            | Cmd::Train { .. }
            | Cmd::Bench { which: None, .. }
    );
    // Allocator defaults (each can be overridden with the MIMALLOC_*
    // environment variable of the same name):
    // * large OS pages, for batch commands only: column buffers on
    //   transparent huge pages, one page fault per 2 MiB instead of per
    //   4 KiB when a kernel or reader fills fresh memory (for the platform,
    //   zeroing 2 MiB at a time raised the publish-to-twin p99 from ~30 to
    //   ~50 ms in `bench ingest`);
    // * purge delay 10 s instead of 10 ms (the decay jemalloc uses by
    //   default), so a table dropped and rebuilt by the next job does not
    //   fault in every page again;
    // * no transparent huge pages at all for the platform (MIMALLOC_ALLOW_THP):
    //   when a thousand twins' windows or the broker's logs grow at the same
    //   moment, faulting in and zeroing 2 MiB pages stalled the one thread
    //   for up to half a second (`bench ingest`, 60 s: publish -> received
    //   p99 534-777 ms with, 97 ms without).
    let unset = |name: &str| std::env::var_os(name).is_none();
    // SAFETY: mi_option_set is not thread-safe; this runs first, while the
    // process has one thread.
    unsafe {
        if batch && unset("MIMALLOC_ALLOW_LARGE_OS_PAGES") && unset("MIMALLOC_LARGE_OS_PAGES") {
            libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
        }
        if unset("MIMALLOC_PURGE_DELAY") {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000);
        }
        // mimalloc reads MIMALLOC_ALLOW_THP before main; this is what it
        // does with 0 (the flag covers every mapping of the process).
        #[cfg(target_os = "linux")]
        if !batch && unset("MIMALLOC_ALLOW_THP") {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(cli_main(cli))
}

async fn cli_main(cli: Cli) -> Result<()> {
    cli::init_logging();
    match cli.cmd {
        Cmd::Demo {
            http,
            lakehouse,
            duration,
            seed,
            config,
            scenario,
        } => cli::platform::demo(config, scenario, http, lakehouse, duration, seed).await?,
        Cmd::Run {
            config,
            http,
            lakehouse,
            duration,
        } => cli::platform::run(config, http, lakehouse, duration).await?,
        Cmd::Edge { config, duration } => cli::platform::edge(config, duration).await?,
        Cmd::Simulate {
            scenario,
            seed,
            duration,
            replay,
            from,
            to,
            speed,
            keep_time,
            config,
            history_days,
            lakehouse,
        } => match (replay, scenario) {
            (None, sc) if history_days.is_some() => {
                let days = history_days.unwrap_or_default();
                cli::platform::history(sc, seed, days, config, lakehouse).await?
            }
            (Some(r), _) => {
                cli::platform::replay(r, &from, &to, &speed, keep_time, config, duration).await?
            }
            (None, Some(sc)) => cli::platform::simulate(sc, seed, duration).await?,
            (None, None) => anyhow::bail!("give --scenario FILE or --replay TABLE_OR_DIR"),
        },
        Cmd::Check { config } => cli::platform::check(config)?,
        Cmd::Train { args, registry } => cli::models::train(args, registry).await?,
        Cmd::Models {
            op,
            config,
            registry,
        } => cli::models::models(op, config.as_ref(), registry).await?,
        Cmd::Opcua { op } => cli::opcua::run(op).await?,
        Cmd::Sql {
            query,
            format,
            out,
            lake,
        } => cli::sql::run(&query, format, out, &lake).await?,
        Cmd::Pipeline { op, lake } => {
            let cfg = lake.load()?;
            let root = lake
                .lakehouse
                .clone()
                .unwrap_or_else(|| cfg.platform.lake.root.clone());
            let l = std::sync::Arc::new(ironlake::lake::Lakehouse::open(&root)?);
            cli::pipeline::run(op, &cfg, l).await?;
        }
        Cmd::Lake { op, lake } => {
            let l = lake.open_lake()?;
            cli::lake::run(op, &l).await?;
        }
        Cmd::Bench {
            which: Some(which), ..
        } => ironlake::bench::run(which).await?,
        Cmd::Bench {
            which: None,
            data,
            workload,
            json,
            warmup,
        } => {
            let (Some(data), Some(w)) = (data, workload) else {
                anyhow::bail!(
                    "bench: give a subcommand (ingest, scale) or --data DIR --workload W"
                );
            };
            ironlake::bench::peers::run(&data, &w, json, warmup)?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The option numbers `main` sets point at the options meant: read back
    /// with mimalloc v3's defaults (purge delay 1000 ms, no large OS pages).
    /// A mimalloc that renumbers its options fails here instead of silently
    /// setting others.
    #[test]
    fn mimalloc_option_numbers_are_the_ones_meant() {
        // SAFETY: reads only.
        unsafe {
            assert_eq!(
                libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY),
                1000,
                "purge delay"
            );
            assert_eq!(
                libmimalloc_sys::mi_option_get(libmimalloc_sys::mi_option_large_os_pages),
                0,
                "large OS pages"
            );
        }
    }
}
