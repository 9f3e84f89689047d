//! `ironlake bench`: measurements of the running platform. Results are
//! printed (and optionally written as JSON), never asserted.
//!
//! * `ingest`: MQTT publishers -> embedded broker -> ingest (bronze, silver,
//!   quarantine) -> twins, committed in Delta; readings/s and the delay from
//!   publish to twin (REST visibility) and to the silver commit.
//! * `scale`: many twins live in one process; resident memory per twin.
//! * `--data DIR --workload W`: the peer workloads ([`peers`]).
//! * `sql`: one dashboard query repeated (W8-W10, `scripts/bench_dashboard.py`).

mod edge;
mod kafka;
mod landing;
mod live;
mod membw;
mod modbus;
mod mqtt_load;
mod opcua;
pub mod peers;
mod sql;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Subcommand;

use crate::assets::TwinType;
use crate::config::{parse_toml, PlantFile, PlatformFile};
use crate::connectors::mqtt::{EmbeddedBrokerConfig, MqttConfig};
use crate::metrics::LatencyProbe;
use crate::platform::Config;
use crate::platform::{Platform, Probes};
use crate::time::now_ms;

/// Benchmark selection.
#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// MQTT -> bronze/silver/twins throughput and publish-to-visible delay.
    Ingest(IngestOpts),
    /// The live stream (`GET /api/stream`): events a second to N open
    /// subscribers (browsers) and the delay from the twin to each.
    Live(live::LiveOpts),
    /// The edge gateway's disk buffer: filled by Modbus PLCs during an
    /// uplink outage, then drained; drain rate against fill rate.
    Edge(edge::EdgeOpts),
    /// Many Modbus TCP devices polled at a short period: polls a second,
    /// missed cycles, poll start jitter.
    Modbus(modbus::ModbusOpts),
    /// OPC UA value changes a second: a simulated cell server whose items
    /// all change every tick, one platform subscribed to them.
    Opcua(opcua::OpcuaOpts),
    /// The Kafka connector on librdkafka's mock cluster: a backlog of keyed
    /// messages consumed, journaled and committed to silver.
    Kafka(kafka::KafkaOpts),
    /// The landing folder: a telemetry file of the peers' data set dropped
    /// into a watched folder, until committed to bronze, silver and quarantine.
    Landing(landing::LandingOpts),
    /// One dashboard query repeated on one SQL engine (W8-W10 of
    /// `scripts/bench_dashboard.py`): seconds per run and what the scans pruned.
    Sql(sql::SqlOpts),
    /// Sequential read, write and copy bandwidth of memory, one thread and
    /// all: the ceiling the peer workloads' traffic is compared with.
    Membw(membw::MembwOpts),
    /// N machines of 10 signals live in one process: RSS per twin.
    Scale {
        #[arg(long, default_value_t = 10_000)]
        machines: usize,
        /// Seconds of samples from every machine before measuring.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Messages a second from each machine (10 signals each).
        #[arg(long, default_value_t = 1.0)]
        hz: f64,
        /// Then stop (final checkpoints) and start again on the same
        /// lakehouse: start-up time until every twin is back from its checkpoint.
        #[arg(long)]
        restart: bool,
        /// An external broker (`HOST:PORT`, e.g. a Mosquitto) instead of
        /// the embedded one, so that RSS is ironlake's alone.
        #[arg(long)]
        broker: Option<String>,
        #[arg(long)]
        lakehouse: Option<String>,
    },
}

/// A twin type with 10 float signals (and a state signal code in `s0`).
fn bench_twin() -> Result<TwinType> {
    let mut t = String::from(
        "kind = \"bench10\"\n[state]\nsignal = \"s0\"\ncodes = { \"1\" = \"IDLE\", \"2\" = \"RUNNING\" }\n",
    );
    for i in 0..10 {
        t += &format!("[[signals]]\nname = \"s{i}\"\ntype = \"float\"\nmin = -1000\nmax = 1000\nmqtt = {{ field = \"v.s{i}\" }}\n");
    }
    t += "[[alarms]]\nname = \"s1_high\"\nsignal = \"s1\"\nkind = \"threshold\"\nabove = 900\nclear = 800\n";
    t += "[[alarms]]\nname = \"s2_z\"\nsignal = \"s2\"\nkind = \"zscore\"\nz = 6\n";
    Ok(TwinType::from_toml(&t, "bench10")?)
}

/// The bench twin type's feature set (`--models`): window statistics of
/// four signals over a minute, slopes over five, one 10 s bucket.
fn bench_features() -> String {
    let mut t = String::from("twin_type = \"bench10\"\nversion = 1\nbucket_s = 10\n");
    for s in 1..=4 {
        for (stat, w) in [("mean", 60), ("std", 60), ("max", 60), ("slope", 300)] {
            t += &format!(
                "[[features]]\nname = \"s{s}_{stat}\"\nstat = \"{stat}\"\nsignal = \"s{s}\"\nwindow_s = {w}\n"
            );
        }
    }
    t
}

/// A registry at `root` with champions for `bench10` (`--models`): a
/// logistic failure model and a random forest RUL model (48 trees, depth 9)
/// fit to synthetic rows of the feature set.
fn bench_registry(root: &std::path::Path, set: &crate::assets::features::FeatureSet) -> Result<()> {
    use crate::ml::dataset::Dataset;
    use crate::ml::model::{Algorithm, Model, Task};
    use crate::ml::train::{train, TrainParams};
    use rand::{Rng, SeedableRng};
    let names: Vec<String> = set.names().iter().map(|s| s.to_string()).collect();
    let k = names.len();
    let n = 20_000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let x: Vec<f64> = (0..n * k)
        .map(|_| rng.random_range(-500.0..500.0))
        .collect();
    // A label no straight line follows (so the forest is the one kept).
    let y: Vec<f64> = (0..n)
        .map(|r| {
            let (a, b) = (x[r * k], x[r * k + 5]);
            (if a > 0.0 { 100.0 } else { 10.0 })
                + if b > 200.0 { 50.0 } else { 0.0 }
                + (a * b / 1e4).sin() * 20.0
        })
        .collect();
    let ds = Dataset {
        features: names.clone(),
        x,
        y,
        group: vec![0; n],
        groups: vec!["m0".into()],
        t: (0..n as i64).map(|i| i * 10_000).collect(),
        failures: vec![Vec::new()],
        unplanned: vec![Vec::new()],
        sources: Vec::new(),
        ms_per_hour: 3_600_000.0,
    };
    let params = TrainParams {
        task: Task::Regression,
        trees: 48,
        max_depth: 9,
        ..Default::default()
    };
    let (mut rul, run) = train(
        &ds,
        "bench10_rul",
        &params,
        &indicatif::ProgressBar::hidden(),
    )?;
    anyhow::ensure!(
        matches!(rul.algorithm, Algorithm::Forest(_)),
        "the synthetic RUL model should be a forest"
    );
    rul.twin_type = Some("bench10".into());
    rul.features_version = Some(set.version);
    rul.target = "rul_h".into();
    let failure = Model {
        name: "bench10_failure".into(),
        task: Task::Classification,
        target: "failure_within_24h".into(),
        algorithm: Algorithm::Logistic {
            mean: vec![0.0; k],
            std: vec![300.0; k],
            coef: (0..k).map(|i| ((i % 5) as f64 - 2.0) * 0.3).collect(),
            intercept: -4.0,
        },
        threshold: Some(0.9),
        horizon_h: Some(24.0),
        ..rul.clone()
    };
    let reg = crate::ml::registry::Registry::open(root);
    for m in [&failure, &rul] {
        let run = crate::ml::train::Run {
            model: m.name.clone(),
            ..run.clone()
        };
        let v = reg.register(m, &run, &crate::ml::card(m, &run))?;
        reg.set_alias(&m.name, "champion", v)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn bench_config(
    machines: usize,
    lake: &str,
    mqtt_port: u16,
    broker: Option<(String, u16)>,
    connections: Option<usize>,
    wildcard: bool,
    models: bool,
) -> Result<Config> {
    let mut plant = String::from("[plant]\nid = \"bench\"\n[[areas]]\nid = \"a\"\n");
    let lines = machines.div_ceil(100);
    for l in 0..lines {
        plant += &format!("[[lines]]\nid = \"l{l}\"\narea = \"a\"\n");
    }
    for m in 0..machines {
        plant += &format!(
            "[[machines]]\nid = \"m{m}\"\nline = \"l{}\"\ntype = \"bench10\"\nsource = {{ protocol = \"mqtt\", topic = \"bench/m{m}\" }}\n",
            m / 100
        );
    }
    let pf: PlantFile = parse_toml(&plant, "bench-plant")?;
    let mut twins = HashMap::new();
    let mut twin = bench_twin()?;
    if models {
        let def: crate::config::features::FeatureSetDef =
            parse_toml(&bench_features(), "bench10 features")?;
        let mut m = HashMap::from([("bench10".to_string(), twin)]);
        crate::assets::features::attach(&mut m, vec![("bench10 features".into(), def)])?;
        twin = m.remove("bench10").context("bench twin type")?;
    }
    let set = twin.features.clone();
    twins.insert("bench10".to_string(), Arc::new(twin));
    // Defaults from config/ironlake.toml; larger commits and queues for load.
    let mut platform = PlatformFile::embedded_default()?;
    platform.plants.clear();
    platform.http.listen = "127.0.0.1:0".parse()?;
    platform.lake.root = lake.into();
    platform.lake.flush_rows = 262_144;
    platform.ingest.queue = 8192;
    platform.models.serve = models;
    platform.models.drift_interval_s = 0;
    if let Some(set) = set.filter(|_| models) {
        let root = std::path::Path::new(lake).join("registry");
        bench_registry(&root, &set)?;
        platform.models.registry = root.display().to_string();
    }
    let mut mqtt = MqttConfig::from_platform(&platform)?;
    mqtt.port = mqtt_port;
    mqtt.client_id = format!("ironlake-bench-{mqtt_port}");
    mqtt.subscribe = if wildcard {
        vec!["bench/#".into()]
    } else {
        Vec::new()
    };
    if let Some(n) = connections {
        mqtt.connections = n;
    }
    mqtt.keep_alive_s = 30;
    match broker {
        Some((host, port)) => {
            mqtt.host = host;
            mqtt.port = port;
            mqtt.embedded = None;
        }
        None => {
            mqtt.embedded = Some(EmbeddedBrokerConfig {
                enabled: true,
                listen: ([127, 0, 0, 1], mqtt_port).into(),
                max_payload: 65536,
                memory_mib: 256,
            })
        }
    }
    mqtt.write_to(&mut platform);
    Ok(Config::from_parts(
        platform,
        twins,
        vec![("bench-plant".into(), pf)],
    )?)
}

/// `n` free loopback ports, all held until every one is chosen (the OS
/// hands freed ports out again).
/// Platform settings of the connector benches: the built-in defaults with
/// no plants, HTTP on a free port, the lake at `root`, no background
/// pipeline updates and no MQTT connector.
fn bench_platform(root: impl Into<String>) -> Result<PlatformFile> {
    let mut p = PlatformFile::embedded_default()?;
    p.plants.clear();
    p.http.listen = "127.0.0.1:0".parse()?;
    p.lake.root = root.into();
    p.pipelines.interval_s = 0;
    p.connectors.remove("mqtt");
    Ok(p)
}

/// A scenario for simulated PLCs only (no MQTT machines, no faults),
/// updating every `tick_ms`.
fn plc_scenario(name: &str, tick_ms: u64) -> crate::sim::ScenarioFile {
    crate::sim::ScenarioFile {
        name: name.into(),
        description: String::new(),
        plants: vec![],
        twins: String::new(),
        tick_ms,
        time_scale: 60.0,
        mqtt: crate::sim::SimMqtt {
            host: "127.0.0.1".into(),
            port: 1,
        },
        shifts: Default::default(),
        faults: vec![],
    }
}

fn free_ports(n: usize) -> Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    Ok(held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Resident set size of this process in bytes (Linux).
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// The highest resident set size this process has had, in bytes (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return f64::NAN;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn proc_status_bytes(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// One machine's message; with `state_every`, the machine alternates
/// RUNNING (code 2) and IDLE-like code 1 every that many samples.
fn sample(m: usize, seq: u64, ts: i64, state_every: Option<u64>) -> Vec<u8> {
    let mut s = Vec::with_capacity(128);
    sample_into(&mut s, m, seq, ts, state_every);
    s
}

/// [`sample`] appended to `s`.
fn sample_into(s: &mut Vec<u8>, m: usize, seq: u64, ts: i64, state_every: Option<u64>) {
    let state = match state_every {
        Some(n) if ((seq + m as u64) / n.max(1)) % 2 == 1 => 1,
        _ => 2,
    };
    // Written with integer formatting by hand: the publishers stand in for
    // PLCs on other machines, so the less of the 2 cores they take, the more
    // the bench measures ironlake (float formatting was ~3% of the CPU,
    // `write!` with integers still 3%).
    s.extend_from_slice(b"{\"ts\":");
    if ts < 0 {
        s.push(b'-');
    }
    push_u64(s, ts.unsigned_abs());
    s.extend_from_slice(b",\"v\":{\"s0\":");
    push_u64(s, state);
    for i in 1..10u8 {
        // Tenths in -100..=100: the value to one decimal.
        let t = ((seq as f64 * 0.37 + m as f64 + i as f64 * 1.7).sin() * 100.0).round() as i64;
        s.extend_from_slice(&[b',', b'"', b's', b'0' + i, b'"', b':']);
        if t < 0 {
            s.push(b'-');
        }
        let a = t.unsigned_abs();
        push_u64(s, a / 10);
        if !a.is_multiple_of(10) {
            s.extend_from_slice(&[b'.', b'0' + (a % 10) as u8]);
        }
    }
    s.extend_from_slice(b"}}");
}

/// `v` in decimal.
fn push_u64(s: &mut Vec<u8>, mut v: u64) {
    let mut d = [0u8; 20];
    let mut i = d.len();
    loop {
        i -= 1;
        d[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    s.extend_from_slice(&d[i..]);
}

/// How publishers pace their samples.
#[derive(Clone, Copy)]
enum Pace {
    /// Every machine at the same instant of each tick (`rate` Hz): the
    /// worst case, a burst of all machines at once.
    Burst(f64),
    /// Each machine `rate` times a second, their phases spread evenly over
    /// the period, as independent PLCs publish.
    Spread(f64),
    /// As fast as the broker takes them (QoS 1 flow control).
    Unpaced,
}

/// What a publisher sends: its pace, and whether machines change state
/// (every that many samples).
#[derive(Clone, Copy)]
struct Load {
    pace: Pace,
    state_every: Option<u64>,
}

/// Publish samples for `topics` from one connection until `stop`.
async fn publisher(
    host: String,
    port: u16,
    id: usize,
    topics: Vec<usize>,
    load: Load,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    let Load { pace, state_every } = load;
    let mut c = mqtt_load::LoadPublisher::connect(&host, port, &format!("bench-pub-{id}"), 200)
        .await
        .with_context(|| format!("publisher {id}"))?;
    let n = topics.len().max(1) as u64;
    let (period, per_tick) = match pace {
        Pace::Burst(hz) => (Duration::from_secs_f64(1.0 / hz), None),
        Pace::Spread(hz) => (Duration::from_millis(1), Some(hz * n as f64)),
        Pace::Unpaced => (Duration::ZERO, None),
    };
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = std::time::Instant::now();
    // A machine's samples carry strictly increasing times, also when ticks
    // missed during a stall fire back to back (equal times would be
    // duplicates, which ironlake rightly drops).
    let mut last_ts = vec![0i64; topics.len()];
    let names: Vec<Vec<u8>> = topics
        .iter()
        .map(|m| format!("bench/m{m}").into_bytes())
        .collect();
    let mut body = Vec::with_capacity(160);
    let mut k = 0u64; // messages published
    while !stop.load(Ordering::Relaxed) {
        // How many messages are due by now.
        let due = match (pace, per_tick) {
            (Pace::Unpaced, _) => k + n,
            (_, Some(per_s)) => {
                tick.tick().await;
                (start.elapsed().as_secs_f64() * per_s) as u64
            }
            _ => {
                tick.tick().await;
                k + n
            }
        };
        while k < due && !stop.load(Ordering::Relaxed) {
            let j = (k % n) as usize;
            let ts = now_ms().max(last_ts[j] + 1);
            last_ts[j] = ts;
            let m = topics[j];
            body.clear();
            sample_into(&mut body, m, k / n, ts, state_every);
            c.publish(&names[j], &body).await?;
            sent.fetch_add(1, Ordering::Relaxed);
            k += 1;
        }
        // Paced: what is due now leaves now.
        c.flush().await?;
    }
    c.close(Duration::from_millis(500)).await
}

fn fmt_p(p: &LatencyProbe) -> String {
    match p.percentiles(&[50.0, 99.0]) {
        Some(v) => format!(
            "p50 {:.1} ms, p99 {:.1} ms ({} samples)",
            v[0],
            v[1],
            p.len()
        ),
        None => "no samples".into(),
    }
}

/// Run a benchmark.
pub async fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Ingest(opts) => ingest(opts).await,
        BenchCmd::Live(opts) => live::run(opts).await,
        BenchCmd::Landing(opts) => landing::run(opts).await,
        BenchCmd::Kafka(opts) => kafka::run(opts).await,
        BenchCmd::Edge(opts) => edge::run(opts).await,
        BenchCmd::Modbus(opts) => modbus::run(opts).await,
        BenchCmd::Opcua(opts) => opcua::run(opts).await,
        BenchCmd::Sql(opts) => sql::run(opts).await,
        BenchCmd::Membw(opts) => membw::run(opts),
        BenchCmd::Scale {
            machines,
            seconds,
            hz,
            restart,
            broker,
            lakehouse,
        } => scale(machines, seconds, hz, restart, broker, lakehouse).await,
    }
}

/// The options of `bench ingest`.
#[derive(clap::Args, Debug)]
pub struct IngestOpts {
    /// Simulated machines (one MQTT topic each, 10 signals per message).
    #[arg(long, default_value_t = 1000)]
    pub machines: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Publisher connections.
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,
    /// Samples per second per machine (0: as fast as the broker takes them,
    /// a saturation test whose delays only show queueing).
    #[arg(long, default_value_t = 30.0)]
    pub rate: f64,
    /// Lakehouse directory (default: a temporary directory, removed after).
    #[arg(long)]
    pub lakehouse: Option<String>,
    /// An external broker (`HOST:PORT`, e.g. a Mosquitto) instead of the
    /// embedded one.
    #[arg(long)]
    pub broker: Option<String>,
    /// MQTT connections (sessions) ironlake shares the machine topics over
    /// (`mqtt.connections`; default: the platform's).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Ingest shards (`ingest.shards`; default: the platform's default).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Seconds between twin checkpoint rounds (`twin.checkpoint_interval_s`;
    /// default: the platform's).
    #[arg(long)]
    pub checkpoint_s: Option<u64>,
    /// Subscribe to one wildcard filter (`bench/#`, one connection)
    /// instead of each machine's topic.
    #[arg(long)]
    pub wildcard: bool,
    /// All machines publish at the same instant of each tick (a burst of
    /// every machine at once) instead of at phases spread over the period.
    #[arg(long)]
    pub burst: bool,
    /// Print every second's ingest rate and publish -> received /
    /// acknowledged p99 and max (where stalls come from).
    #[arg(long)]
    pub timeline: bool,
    /// Every machine also computes a feature set (16 features, a 10 s
    /// bucket) and is scored at each bucket by two champions: a logistic
    /// failure model and a 48-tree random forest RUL model, fit on the spot
    /// to synthetic rows (their cost, not their meaning), as the shipped
    /// champions score the mills.
    #[arg(long)]
    pub models: bool,
}

async fn ingest(o: IngestOpts) -> Result<()> {
    let IngestOpts {
        machines,
        seconds,
        publishers,
        rate,
        lakehouse,
        broker,
        connections,
        shards,
        checkpoint_s,
        wildcard,
        burst,
        timeline,
        models,
    } = o;
    let tmp = tempdir_for(lakehouse)?;
    let external = broker_addr(broker.as_deref())?;
    let port = free_port()?;
    let mut cfg = bench_config(
        machines,
        &tmp.path,
        port,
        external.clone(),
        connections,
        wildcard,
        models,
    )?;
    if let Some(n) = shards {
        anyhow::ensure!((1..=256).contains(&n), "--shards must be from 1 to 256");
        cfg.platform.ingest.shards = n;
    }
    if let Some(s) = checkpoint_s {
        anyhow::ensure!(s > 0, "--checkpoint-s must be above 0");
        cfg.platform.twin.checkpoint_interval_s = s;
    }
    let connections = MqttConfig::from_platform(&cfg.platform)?.connections;
    let (pub_host, pub_port) = external.unwrap_or(("127.0.0.1".into(), port));
    let probes = Probes {
        visibility: Some(Arc::new(LatencyProbe::default())),
        silver_commit: Some(Arc::new(LatencyProbe::default())),
        acked: Some(Arc::new(LatencyProbe::default())),
        received: Some(Arc::new(LatencyProbe::default())),
    };
    let platform = Platform::start(cfg, probes.clone())
        .await
        .context("starting the platform")?;
    let offered = if rate > 0.0 {
        format!(
            "{:.0} readings/s offered ({})",
            rate * machines as f64 * 10.0,
            if burst {
                "all machines at once each tick"
            } else {
                "machines' phases spread over the period"
            }
        )
    } else {
        "unpaced".into()
    };
    let via = broker
        .as_deref()
        .map_or("embedded broker".to_string(), |b| format!("broker {b}"));
    println!("ironlake bench ingest: {machines} machines x 10 signals over MQTT ({via}), {publishers} publishers, {seconds} s, {offered}; ironlake subscribes {}",
        if wildcard {
            "bench/# on one connection".to_string()
        } else {
            format!("each machine's topic over {connections} connections")
        }
    );
    // Warm-up: let the subscriber connect.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 0..publishers.max(1) {
        let topics: Vec<usize> = (0..machines)
            .filter(|m| m % publishers.max(1) == p)
            .collect();
        let pace = match (rate > 0.0, burst) {
            (false, _) => Pace::Unpaced,
            (true, true) => Pace::Burst(rate),
            (true, false) => Pace::Spread(rate),
        };
        tasks.push(tokio::spawn(publisher(
            pub_host.clone(),
            pub_port,
            p,
            topics,
            Load {
                pace,
                state_every: None,
            },
            stop.clone(),
            sent.clone(),
        )));
    }
    let r0 = platform.ingest.status().readings;
    let c0 = platform
        .writer(crate::lake::Table::SilverReadings)
        .map(|w| w.status().rows_committed)
        .unwrap_or(0);
    let start = Instant::now();
    let cpu0 = cpu_seconds();
    let bar = indicatif::ProgressBar::new(seconds);
    let (mut r_prev, mut rx_prev, mut ack_prev) = (r0, 0, 0);
    for sec in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if timeline {
            let r = platform.ingest.status().readings;
            let window = |p: &Option<Arc<LatencyProbe>>, from: &mut usize| {
                let p = p.as_deref()?;
                let v = p.percentiles_from(*from, &[99.0, 100.0]);
                *from = p.len();
                v
            };
            let rx = window(&probes.received, &mut rx_prev).unwrap_or_default();
            let ack = window(&probes.acked, &mut ack_prev).unwrap_or_default();
            bar.suspend(|| println!(
                "  t={:>3}s {:>7} readings/s  received p99/max {:>6.0}/{:<6.0} ms  acknowledged p99/max {:>6.0}/{:<6.0} ms",
                sec + 1,
                r - r_prev,
                rx.first().copied().unwrap_or(f64::NAN),
                rx.get(1).copied().unwrap_or(f64::NAN),
                ack.first().copied().unwrap_or(f64::NAN),
                ack.get(1).copied().unwrap_or(f64::NAN),
            ));
            r_prev = r;
        }
        bar.inc(1);
        bar.set_message(format!(
            "{} readings",
            platform.ingest.status().readings - r0
        ));
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let r1 = platform.ingest.status().readings;
    let c1 = platform
        .writer(crate::lake::Table::SilverReadings)
        .map(|w| w.status().rows_committed)
        .unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let msgs = sent.load(Ordering::Relaxed);
    println!(
        "  published        {msgs} messages ({:.0}/s)",
        msgs as f64 / elapsed
    );
    println!(
        "  ingested         {:.0} readings/s through bronze+silver+twins",
        (r1 - r0) as f64 / elapsed
    );
    println!(
        "  silver committed {:.0} rows/s (Delta commits every 1 s / 256k rows)",
        (c1 - c0) as f64 / elapsed
    );
    println!(
        "  CPU              {:.2} cores busy (publishers, broker and platform), {:.2} us per reading ingested",
        cpu / elapsed,
        cpu * 1e6 / (r1 - r0).max(1) as f64
    );
    println!(
        "  publish -> twin (REST-visible): {}",
        fmt_p(
            probes
                .visibility
                .as_deref()
                .unwrap_or(&LatencyProbe::default())
        )
    );
    println!(
        "  publish -> received:            {}",
        fmt_p(
            probes
                .received
                .as_deref()
                .unwrap_or(&LatencyProbe::default())
        )
    );
    println!(
        "  publish -> acknowledged:        {}",
        fmt_p(probes.acked.as_deref().unwrap_or(&LatencyProbe::default()))
    );
    println!(
        "  publish -> silver commit:       {}",
        fmt_p(
            probes
                .silver_commit
                .as_deref()
                .unwrap_or(&LatencyProbe::default())
        )
    );
    println!("  health: {:?}", platform.ingest.status());
    let lake = platform.lake.clone();
    platform.stop().await;
    if models {
        let sql = crate::query::SqlEngine::new(lake);
        let r = sql
            .query(
                "SELECT count(*) AS n, count(DISTINCT asset_id) AS machines FROM gold.predictions",
            )
            .await?;
        let b = r.batches.first().context("no answer")?;
        let n = crate::lake::read::scalar_i64(&r.batches).unwrap_or(0);
        println!(
            "  models:           {n} scores in gold.predictions ({:.0}/s) of {} machines",
            n as f64 / elapsed,
            deltalake::arrow::compute::cast(
                b.column(1),
                &deltalake::arrow::datatypes::DataType::Int64
            )
            .ok()
            .and_then(|c| c
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>()
                .map(|a| a.value(0)))
            .unwrap_or(0)
        );
    }
    Ok(())
}

async fn scale(
    machines: usize,
    seconds: u64,
    hz: f64,
    restart: bool,
    broker: Option<String>,
    lakehouse: Option<String>,
) -> Result<()> {
    anyhow::ensure!(hz > 0.0, "--hz must be above 0");
    let tmp = tempdir_for(lakehouse)?;
    let external = broker_addr(broker.as_deref())?;
    let port = free_port()?;
    let base = rss_bytes().unwrap_or(0);
    let cfg = bench_config(
        machines,
        &tmp.path,
        port,
        external.clone(),
        Some(1),
        true,
        false,
    )?;
    let (pub_host, pub_port) = external.clone().unwrap_or(("127.0.0.1".into(), port));
    let t0 = Instant::now();
    let platform = Platform::start(cfg, Probes::default())
        .await
        .context("starting the platform")?;
    let up = all_twins_answer(&platform).await;
    let start_s = t0.elapsed().as_secs_f64();
    let started = rss_bytes().unwrap_or(0);
    println!(
        "ironlake bench scale: {machines} machines x 10 signals; {hz} message/s each for {seconds} s"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let pubs = 2;
    let mut tasks = Vec::new();
    for p in 0..pubs {
        let topics: Vec<usize> = (0..machines).filter(|m| m % pubs == p).collect();
        tasks.push(tokio::spawn(publisher(
            pub_host.clone(),
            pub_port,
            p,
            topics,
            Load {
                pace: Pace::Spread(hz),
                state_every: None,
            },
            stop.clone(),
            sent.clone(),
        )));
    }
    let bar = indicatif::ProgressBar::new(seconds);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let live = rss_bytes().unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let st = platform.ingest.status();
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("  RSS before start  {:.1} MiB", mb(base));
    println!(
        "  RSS after start   {:.1} MiB ({up} twins answering after {start_s:.2} s)",
        mb(started)
    );
    println!(
        "  RSS live (windows filled for {seconds} s)  {:.1} MiB (peak so far {:.1} MiB)",
        mb(live),
        mb(peak_rss_bytes().unwrap_or(0))
    );
    println!(
        "  per twin          {:.1} KiB",
        (live.saturating_sub(base)) as f64 / 1024.0 / machines as f64
    );
    println!("  readings ingested {}", st.readings);
    let t1 = Instant::now();
    platform.stop().await;
    println!(
        "  stop (final checkpoints of every twin)  {:.2} s",
        t1.elapsed().as_secs_f64()
    );
    if restart {
        let before = rss_bytes().unwrap_or(0);
        let cfg = bench_config(
            machines,
            &tmp.path,
            free_port()?,
            external,
            Some(1),
            true,
            false,
        )?;
        let t0 = Instant::now();
        let platform = Platform::start(cfg, Probes::default())
            .await
            .context("starting the platform again")?;
        let ready = t0.elapsed().as_secs_f64();
        let up = all_twins_answer(&platform).await;
        let all = t0.elapsed().as_secs_f64();
        let restored = platform
            .twins
            .machines
            .first()
            .map(|a| a.send(crate::twins::GetSnapshot));
        let readings = match restored {
            Some(f) => f.await.map(|s| s.readings_total).unwrap_or(0),
            None => 0,
        };
        println!(
            "  restart: platform up in {ready:.2} s, {up} twins answering after {all:.2} s (the first restored {readings} readings), RSS {:.1} -> {:.1} MiB (peak {:.1} MiB)",
            mb(before),
            mb(rss_bytes().unwrap_or(0)),
            mb(peak_rss_bytes().unwrap_or(0))
        );
        platform.stop().await;
    }
    Ok(())
}

/// `--broker HOST:PORT`.
fn broker_addr(broker: Option<&str>) -> Result<Option<(String, u16)>> {
    broker
        .map(|b| {
            let (h, p) = b.rsplit_once(':').context("--broker takes HOST:PORT")?;
            Ok((h.to_string(), p.parse::<u16>().context("--broker port")?))
        })
        .transpose()
}

/// How many twins answer (each after restoring its checkpoint).
async fn all_twins_answer(platform: &Platform) -> usize {
    let asks = platform
        .twins
        .machines
        .iter()
        .map(|a| a.send(crate::twins::GetSummary));
    futures::future::join_all(asks)
        .await
        .into_iter()
        .filter(|r| r.is_ok())
        .count()
}

struct TmpLake {
    path: String,
    _dir: Option<tempfile_dir::TempDir>,
}

mod tempfile_dir {
    /// A directory removed on drop.
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tempdir_for(lakehouse: Option<String>) -> Result<TmpLake> {
    Ok(match lakehouse {
        Some(p) => TmpLake {
            path: p,
            _dir: None,
        },
        None => {
            let p = std::env::temp_dir().join(format!("ironlake-bench-{}", std::process::id()));
            std::fs::create_dir_all(&p)?;
            TmpLake {
                path: p.display().to_string(),
                _dir: Some(tempfile_dir::TempDir(p)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written number formatting writes what `write!` would.
    #[test]
    fn samples_match_formatted_text() {
        use std::fmt::Write;
        for m in [0usize, 1, 17, 999] {
            for seq in (0..2_000u64).chain([u32::MAX as u64, 1 << 40]) {
                let ts = 1_700_000_000_000 + seq as i64;
                let state = if ((seq + m as u64) / 3) % 2 == 1 {
                    1
                } else {
                    2
                };
                let mut want = format!("{{\"ts\":{ts},\"v\":{{\"s0\":{state}");
                for i in 1..10 {
                    let t = ((seq as f64 * 0.37 + m as f64 + i as f64 * 1.7).sin() * 100.0).round()
                        / 10.0;
                    let _ = write!(want, ",\"s{i}\":{t}");
                }
                want.push_str("}}");
                let got = String::from_utf8(sample(m, seq, ts, Some(3))).unwrap();
                // `{t}` of a float prints -0 for a tiny negative value.
                assert_eq!(
                    got,
                    want.replace(":-0,", ":0,").replace(":-0}", ":0}"),
                    "m {m} seq {seq}"
                );
            }
        }
    }

    #[test]
    fn samples_are_json_with_every_signal_to_one_decimal() {
        for (m, seq) in [(0usize, 0u64), (7, 3), (999, 123_456), (42, 9)] {
            let body = sample(m, seq, 1_700_000_000_000, Some(5));
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(v["ts"], 1_700_000_000_000i64);
            let state = if ((seq + m as u64) / 5) % 2 == 1 {
                1
            } else {
                2
            };
            assert_eq!(v["v"]["s0"], state);
            for i in 1..10 {
                let want =
                    ((seq as f64 * 0.37 + m as f64 + i as f64 * 1.7).sin() * 100.0).round() / 10.0;
                let got = v["v"][format!("s{i}")].as_f64().expect("a number");
                assert!((got - want).abs() < 1e-9, "s{i}: {got} != {want}");
            }
        }
    }
}
