//! The `ironlake` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::sync::Arc;

use ironlake::config::Config;
use ironlake::lake::Lakehouse;
use ironlake::platform::{Platform, Probes};
use ironlake::query::format::Format;
use ironlake::query::SqlEngine;
use ironlake::sim::{Scenario, Simulator};

/// mimalloc: faster than the system allocator for the many short-lived
/// allocations of parsing and Arrow kernels, and it keeps freed memory for
/// reuse instead of returning it to the OS and faulting it in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Start simulated PLCs (Modbus TCP servers, MQTT publishers) for a scenario.
    Simulate {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long)]
        duration: Option<u64>,
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
        /// Lakehouse root (default: `lake.root` of the config).
        #[arg(long)]
        lakehouse: Option<String>,
        /// Platform config (default: the one built into the binary).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Declarative pipelines (config/pipelines/*.toml): list them or run updates.
    Pipeline {
        #[command(subcommand)]
        op: PipelineOp,
        /// Lakehouse root (default: `lake.root` of the config).
        #[arg(long, global = true)]
        lakehouse: Option<String>,
        /// Platform config (default: the one built into the binary).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Table maintenance: list, history, optimize, vacuum, checkpoint.
    Lake {
        #[command(subcommand)]
        op: LakeOp,
        /// Lakehouse root (default: `lake.root` of the config).
        #[arg(long, global = true)]
        lakehouse: Option<String>,
        /// Platform config (default: the one built into the binary).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
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

#[derive(Subcommand)]
enum PipelineOp {
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

async fn pipeline_op(op: PipelineOp, cfg: &Config, lake: Arc<Lakehouse>) -> Result<()> {
    use ironlake::pipeline::run::{RunOptions, Runner, Status};
    match op {
        PipelineOp::List => {
            for p in &cfg.pipelines {
                println!(
                    "{:<17} {:<13} {} -> {}{}",
                    p.name,
                    p.kind.as_str(),
                    p.sources().join(", "),
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
                        .find(|p| &p.name == n || &p.target == n)
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
                let r = runner.run(p, RunOptions { full_refresh }, Some(&bar)).await;
                bar.finish_and_clear();
                let secs = (r.finished_ms - r.started_ms) as f64 / 1000.0;
                match r.status {
                    Status::UpToDate => println!("{} -> {}: up to date", r.pipeline, r.target),
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

#[derive(Subcommand)]
enum LakeOp {
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

/// The lakehouse named by --lakehouse, or by the config's `lake.root`.
fn open_lake(lakehouse: Option<String>, config: Option<&PathBuf>) -> Result<Arc<Lakehouse>> {
    let root = match lakehouse {
        Some(l) => l,
        None => load(config)?.platform.lake.root,
    };
    Ok(Arc::new(Lakehouse::open(&root)?))
}

async fn lake_op(op: LakeOp, lake: &Lakehouse) -> Result<()> {
    match op {
        LakeOp::Tables => {
            for layer in ironlake::query::LAYERS {
                for t in lake.list_tables(layer) {
                    println!("{layer}.{t}");
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

fn spinner(msg: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_message(msg.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRONLAKE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,ironlake=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn load(config: Option<&PathBuf>) -> Result<Config> {
    Ok(match config {
        Some(p) => Config::load(p)?,
        None => Config::embedded()?,
    })
}

fn apply_overrides(cfg: &mut Config, http: Option<SocketAddr>, lakehouse: Option<String>) {
    if let Some(h) = http {
        cfg.platform.http.listen = h;
    }
    if let Some(l) = lakehouse {
        cfg.platform.lake.root = l;
    }
}

async fn wait(duration: Option<u64>) {
    let sleep = async {
        match duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sleep => {}
        _ = tokio::signal::ctrl_c() => eprintln!("\nstopping: flushing writers and checkpointing twins ..."),
    }
}

fn print_banner(p: &Platform) {
    let m = &p.config.model;
    println!("ironlake {} is running", env!("CARGO_PKG_VERSION"));
    println!("  REST API    http://{}/api", p.http_addr);
    println!("  assets      http://{}/api/assets", p.http_addr);
    println!(
        "  SQL         POST http://{}/api/sql  (or: ironlake sql \"SELECT ...\")",
        p.http_addr
    );
    println!("  lakehouse   {}", p.lake.root());
    println!(
        "  plants {} | lines {} | machines {} | pipelines {} (every {} s; GET /api/pipelines)",
        m.plants.len(),
        m.lines.len(),
        m.assets.len(),
        p.config.pipelines.iter().filter(|x| x.enabled).count(),
        p.config.platform.pipelines.interval_s
    );
    println!("Press Ctrl-C to stop.");
}

/// The plant tree of a validated config, as `ironlake check` prints it.
fn plant_tree(cfg: &Config) -> String {
    use std::fmt::Write;
    let m = &cfg.model;
    let mut out = String::new();
    let mut kinds: Vec<_> = m.twin_types.keys().cloned().collect();
    kinds.sort();
    let _ = writeln!(out, "{}: OK", cfg.origin);
    let _ = writeln!(out, "  twin types: {}", kinds.join(", "));
    for p in &m.plants {
        let _ = writeln!(
            out,
            "  plant {} ({}), time zone {}",
            p.id, p.name, p.timezone
        );
        for l in m.lines_of(p.id.as_str()) {
            let _ = writeln!(out, "    line {} ({} machines)", l.id, l.assets.len());
            for &i in &l.assets {
                let a = &m.assets[i as usize];
                let _ = writeln!(
                    out,
                    "      {} [{}] {}",
                    a.id,
                    a.twin.kind,
                    a.source.endpoint()
                );
            }
        }
    }
    out
}

/// Print without panicking when stdout is closed early (`ironlake check | head`).
fn print_stdout(text: &str) {
    print_stdout_bytes(text.as_bytes());
}

fn print_stdout_bytes(b: &[u8]) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(b);
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Batch work (SQL, pipelines, maintenance, the peer workloads) fills
    // large fresh buffers; the platform cares about tail latency.
    let batch = matches!(
        cli.cmd,
        Cmd::Sql { .. } | Cmd::Pipeline { .. } | Cmd::Lake { .. } | Cmd::Bench { which: None, .. }
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
    //   fault in every page again.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15; // mimalloc v3 mimalloc.h
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
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(cli_main(cli))
}

async fn cli_main(cli: Cli) -> Result<()> {
    init_logging();
    match cli.cmd {
        Cmd::Demo {
            http,
            lakehouse,
            duration,
            seed,
            config,
            scenario,
        } => {
            let mut cfg = load(config.as_ref()).context("loading the platform config")?;
            apply_overrides(&mut cfg, http, lakehouse);
            let sc = match scenario {
                Some(p) => Scenario::load(&p)?,
                None => Scenario::embedded_demo()?,
            };
            let platform = Platform::start(cfg, Probes::default())
                .await
                .context("starting the platform")?;
            let sim = Simulator::start(&sc, seed)
                .await
                .context("starting the simulator")?;
            print_banner(&platform);
            wait(duration).await;
            sim.stop().await;
            platform.stop().await;
        }
        Cmd::Run {
            config,
            http,
            lakehouse,
            duration,
        } => {
            let mut cfg = Config::load(&config)?;
            apply_overrides(&mut cfg, http, lakehouse);
            let platform = Platform::start(cfg, Probes::default())
                .await
                .context("starting the platform")?;
            print_banner(&platform);
            wait(duration).await;
            platform.stop().await;
        }
        Cmd::Simulate {
            scenario,
            seed,
            duration,
        } => {
            let sc = Scenario::load(&scenario)?;
            let sim = Simulator::start(&sc, seed).await?;
            println!(
                "simulating `{}`: {} machines; Ctrl-C to stop",
                sc.file.name,
                sc.model.assets.len()
            );
            wait(duration).await;
            sim.stop().await;
        }
        Cmd::Check { config } => {
            let cfg = load(config.as_ref())?;
            print_stdout(&plant_tree(&cfg));
        }
        Cmd::Sql {
            query,
            format,
            out,
            lakehouse,
            config,
        } => {
            let lake = open_lake(lakehouse, config.as_ref())?;
            let result = SqlEngine::new(lake).query(&query).await?;
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
        }
        Cmd::Pipeline {
            op,
            lakehouse,
            config,
        } => {
            let cfg = load(config.as_ref())?;
            let root = lakehouse.unwrap_or_else(|| cfg.platform.lake.root.clone());
            let lake = Arc::new(Lakehouse::open(&root)?);
            pipeline_op(op, &cfg, lake).await?;
        }
        Cmd::Lake {
            op,
            lakehouse,
            config,
        } => {
            let lake = open_lake(lakehouse, config.as_ref())?;
            lake_op(op, &lake).await?;
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
