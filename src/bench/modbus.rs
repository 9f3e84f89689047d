//! `ironlake bench modbus`: many Modbus TCP devices polled at a short
//! period by one platform (simulated PLCs on loopback, on the same cores):
//! polls a second against the schedule, missed cycles, how late polls
//! start (jitter), and readings committed to silver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{parse_toml, PlantFile};
use crate::connectors::modbus::ModbusConnector;
use crate::metrics::LatencyProbe;
use crate::platform::{Config, Platform, Probes};
use crate::sim::{Scenario, Simulator};

/// The options of `bench modbus`.
#[derive(clap::Args, Debug)]
pub struct ModbusOpts {
    /// Modbus TCP devices (one simulated PLC each, 8 registers read per poll).
    #[arg(long, default_value_t = 500)]
    pub devices: usize,
    /// Poll period (ms).
    #[arg(long, default_value_t = 100)]
    pub poll_ms: u64,
    /// Seconds measured (after 3 s of warm-up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Lakehouse directory (default: a temporary directory, removed after).
    #[arg(long)]
    pub lakehouse: Option<String>,
}

/// Run the Modbus benchmark.
pub async fn run(o: ModbusOpts) -> Result<()> {
    let ports = super::free_ports(o.devices)?;
    let mut plant = String::from("[plant]\nid = \"mb\"\n[[areas]]\nid = \"a\"\n");
    for l in 0..o.devices.div_ceil(100) {
        plant += &format!("[[lines]]\nid = \"l{l}\"\narea = \"a\"\n");
    }
    for (i, port) in ports.iter().enumerate() {
        plant += &format!(
            "[[machines]]\nid = \"d{i}\"\nline = \"l{}\"\ntype = \"press\"\nsource = {{ protocol = \"modbus\", host = \"127.0.0.1\", port = {port}, poll_ms = {}, timeout_ms = 1000 }}\n",
            i / 100,
            o.poll_ms
        );
    }
    let pf: PlantFile = parse_toml(&plant, "bench-modbus")?;
    let lake = super::tempdir_for(o.lakehouse)?;
    let p = super::bench_platform(lake.path.clone())?;
    let cfg = Config::from_parts(
        p,
        Config::embedded_twin_types()?,
        vec![("bench-modbus".into(), pf)],
    )?;
    let sim = Simulator::start(
        &Scenario::from_config(super::plc_scenario("bench-modbus", o.poll_ms), &cfg),
        11,
    )
    .await?;
    let stats = cfg
        .connectors
        .get::<ModbusConnector>()
        .context("modbus connector")?
        .stats()
        .clone();
    let platform = Platform::start(cfg, Probes::default()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probe = Arc::new(LatencyProbe::default());
    *stats.probe.lock() = Some(probe.clone());
    let (p0, m0, r0) = (
        stats.polls.get(),
        stats.missed.get(),
        platform.ingest.readings.get(),
    );
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    let secs = t.elapsed().as_secs_f64();
    let (p1, m1, r1) = (
        stats.polls.get(),
        stats.missed.get(),
        platform.ingest.readings.get(),
    );
    *stats.probe.lock() = None;
    let connected = platform
        .health
        .reconnects()
        .iter()
        .map(|x| x.1)
        .sum::<u64>();
    platform.stop().await;
    sim.stop().await;
    let want = o.devices as f64 * 1000.0 / o.poll_ms as f64;
    let ps = probe
        .percentiles(&[50.0, 99.0, 99.9, 100.0])
        .unwrap_or_else(|| vec![0.0; 4]);
    println!(
        "bench modbus: {} devices every {} ms ({want:.0} polls/s scheduled), {secs:.1} s",
        o.devices, o.poll_ms
    );
    println!(
        "polls: {:.0}/s ({:.1} % of schedule); missed cycles: {}; poll start lateness p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.1} ms; readings validated {:.0}/s; reconnects {}",
        (p1 - p0) as f64 / secs,
        100.0 * (p1 - p0) as f64 / secs / want,
        m1 - m0,
        ps[0],
        ps[1],
        ps[2],
        ps[3],
        (r1 - r0) as f64 / secs,
        connected
    );
    Ok(())
}
