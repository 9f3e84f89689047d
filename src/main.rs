//! The `ironlake` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ironlake::config::Config;
use ironlake::platform::{Platform, Probes};
use ironlake::sim::{Scenario, Simulator};

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
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: ironlake::bench::BenchCmd,
    },
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
    println!("  lakehouse   {}", p.lake.root());
    println!(
        "  plants {} | lines {} | machines {}",
        m.plants.len(),
        m.lines.len(),
        m.assets.len()
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
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

#[tokio::main]
async fn main() -> Result<()> {
    init_logging();
    let cli = Cli::parse();
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
        Cmd::Bench { which } => ironlake::bench::run(which).await?,
    }
    Ok(())
}
