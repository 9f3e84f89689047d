//! `ironlake demo | run | simulate | check`: the platform and the simulator.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{load, print_stdout, wait};
use ironlake::platform::{Config, Platform, Probes};
use ironlake::sim::{Scenario, Simulator};

/// `ironlake demo`: the embedded broker, the simulated plant and the platform.
pub async fn demo(
    config: Option<PathBuf>,
    scenario: Option<PathBuf>,
    http: Option<SocketAddr>,
    lakehouse: Option<String>,
    duration: Option<u64>,
    seed: u64,
) -> Result<()> {
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
    // The platform first: stopped PLCs would show as lost devices.
    platform.stop().await;
    sim.stop().await;
    Ok(())
}

/// `ironlake run`: real PLCs and brokers as configured.
pub async fn run(
    config: PathBuf,
    http: Option<SocketAddr>,
    lakehouse: Option<String>,
    duration: Option<u64>,
) -> Result<()> {
    let mut cfg = Config::load(&config)?;
    apply_overrides(&mut cfg, http, lakehouse);
    let platform = Platform::start(cfg, Probes::default())
        .await
        .context("starting the platform")?;
    print_banner(&platform);
    wait(duration).await;
    platform.stop().await;
    Ok(())
}

/// `ironlake edge`: the edge gateway.
pub async fn edge(config: PathBuf, duration: Option<u64>) -> Result<()> {
    let cfg = Config::load(&config)?;
    let edge = ironlake::edge::EdgeConfig::from_section(cfg.platform.edge.as_ref(), &cfg.origin)?;
    let target = match &edge.uplink {
        ironlake::edge::UplinkConfig::Mqtt { host, port, .. } => format!("mqtt://{host}:{port}"),
        ironlake::edge::UplinkConfig::Kafka { brokers, topic, .. } => {
            format!("kafka://{brokers}/{topic}")
        }
    };
    let buffer = edge.buffer_dir.display().to_string();
    let gw = ironlake::edge::Edge::start(cfg, edge)
        .await
        .context("starting the edge gateway")?;
    println!(
        "ironlake edge: reading the PLCs, buffering in {buffer}, publishing to {target}; Ctrl-C to stop"
    );
    wait(duration).await;
    gw.stop().await;
    Ok(())
}

/// `ironlake simulate --replay`: recorded bronze rows as live traffic.
pub async fn replay(
    what: String,
    from: &str,
    to: &str,
    speed: &str,
    keep_time: bool,
    config: Option<PathBuf>,
    duration: Option<u64>,
) -> Result<()> {
    let cfg = match &config {
        Some(p) => Config::load(p)?,
        None => Config::embedded()?,
    };
    let (root, table) = if std::path::Path::new(&what).is_dir() {
        (what.clone(), "bronze.raw_events".to_string())
    } else {
        (cfg.platform.lake.root.clone(), what.clone())
    };
    let now = ironlake::time::now_ms();
    let from_ms =
        ironlake::time::parse_time(from, now).with_context(|| format!("--from {from}"))?;
    let to_ms = ironlake::time::parse_time(to, now).with_context(|| format!("--to {to}"))?;
    let speed: f64 = speed
        .trim_end_matches(['x', 'X'])
        .parse()
        .with_context(|| format!("--speed {speed}: a number, like 10x"))?;
    let lake = std::sync::Arc::new(ironlake::lake::Lakehouse::open(&root)?);
    println!(
        "replaying {table} of {root} from {} to {} at {speed}x; Ctrl-C to stop",
        ironlake::time::rfc3339(from_ms),
        ironlake::time::rfc3339(to_ms)
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let run = ironlake::sim::replay::replay(
        cfg,
        lake,
        ironlake::sim::replay::ReplayOpts {
            table,
            from_ms,
            to_ms,
            speed,
            shift_time: !keep_time,
        },
        stop.clone(),
    );
    tokio::pin!(run);
    let report = tokio::select! {
        r = &mut run => r?,
        _ = wait(duration) => {
            stop.cancel();
            run.await?
        }
    };
    println!(
        "replayed: {} MQTT messages, {} Modbus polls, {} Kafka messages ({} skipped: no endpoint for their protocol)",
        report.mqtt, report.modbus, report.kafka, report.skipped
    );
    Ok(())
}

/// `ironlake simulate`: simulated PLCs only.
pub async fn simulate(scenario: PathBuf, seed: u64, duration: Option<u64>) -> Result<()> {
    let sc = Scenario::load(&scenario)?;
    let sim = Simulator::start(&sc, seed).await?;
    println!(
        "simulating `{}`: {} machines; Ctrl-C to stop",
        sc.file.name,
        sc.model.assets.len()
    );
    wait(duration).await;
    sim.stop().await;
    Ok(())
}

/// `ironlake simulate --history-days N`: simulated plant history into the lake.
pub async fn history(
    scenario: Option<PathBuf>,
    seed: u64,
    days: f64,
    config: Option<PathBuf>,
    lakehouse: Option<String>,
) -> Result<()> {
    let sc = match &scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::embedded_demo()?,
    };
    let cfg = load(config.as_ref())?;
    let root = lakehouse.unwrap_or_else(|| cfg.platform.lake.root.clone());
    let lake = ironlake::lake::Lakehouse::open(&root)?;
    let pb = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} simulating {msg} [{bar:30}] {percent}% ({eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(format!(
        "{days} plant days of `{}` ({} machines)",
        sc.file.name,
        sc.model.assets.len()
    ));
    let opts = ironlake::sim::history::HistoryOpts {
        days,
        seed,
        end_ms: None,
    };
    let t0 = std::time::Instant::now();
    let rep = ironlake::sim::history::generate(&sc, &cfg.model, &lake, &opts, &pb).await?;
    pb.finish_and_clear();
    println!(
        "{} plant days of {} machines in {:.1} s: {} readings, {} feature rows ({} to {}) into {root}",
        rep.plant_days,
        rep.machines,
        t0.elapsed().as_secs_f64(),
        rep.readings,
        rep.feature_rows,
        ironlake::time::rfc3339(rep.from_ms),
        ironlake::time::rfc3339(rep.to_ms),
    );
    for (cause, n) in &rep.stops {
        println!(
            "  {n:>5} stops of cause {cause}: {:.0} plant hours down",
            rep.down_hours.get(cause).copied().unwrap_or(0.0)
        );
    }
    println!("ground truth: system.sim_failures, system.sim_wear; features: gold.features");
    Ok(())
}

/// `ironlake check`: validate a config and print the plant tree.
pub fn check(config: Option<PathBuf>) -> Result<()> {
    let cfg = load(config.as_ref())?;
    print_stdout(&plant_tree(&cfg));
    Ok(())
}

fn apply_overrides(cfg: &mut Config, http: Option<SocketAddr>, lakehouse: Option<String>) {
    if let Some(h) = http {
        cfg.platform.http.listen = h;
    }
    if let Some(l) = lakehouse {
        cfg.platform.lake.root = l;
    }
}

/// What a started platform prints.
pub fn print_banner(p: &Platform) {
    let m = &p.config.model;
    println!("ironlake {} is running", env!("CARGO_PKG_VERSION"));
    println!("  twin browser  http://{}/", p.http_addr);
    println!("  REST API      http://{}/api", p.http_addr);
    println!("  live stream   http://{}/api/stream", p.http_addr);
    println!("  assets        http://{}/api/assets", p.http_addr);
    println!(
        "  SQL           POST http://{}/api/sql  (or: ironlake sql \"SELECT ...\")",
        p.http_addr
    );
    println!("  metrics       http://{}/metrics", p.http_addr);
    println!("  lakehouse     {}", p.lake.root());
    println!(
        "  plants {} | lines {} | machines {} | pipelines {} (every {} s; GET /api/pipelines)",
        m.plants.len(),
        m.lines.len(),
        m.assets.len(),
        p.config.pipelines.iter().filter(|x| x.enabled).count(),
        p.config.platform.pipelines.interval_s
    );
    println!("Press Ctrl-C (or send SIGTERM) to stop.");
}

/// The plant tree of a validated config, as `ironlake check` prints it.
pub fn plant_tree(cfg: &Config) -> String {
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
                    cfg.connectors.endpoint(a.idx)
                );
            }
        }
    }
    out
}
