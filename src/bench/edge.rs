//! `ironlake bench edge`: how fast the edge gateway's disk buffer drains
//! compared with how fast it filled. N simulated Modbus PLCs are polled
//! while the uplink broker is down (the buffer fills at the poll rate);
//! then an MQTT broker (the embedded rumqttd) comes up and the clock runs
//! until the buffer is empty. The PLCs keep being polled while it drains.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{parse_toml, PlantFile, PlatformFile};
use crate::connectors::mqtt::EmbeddedBrokerConfig;
use crate::edge::{Edge, EdgeConfig};
use crate::platform::Config;
use crate::sim::{Scenario, Simulator};

/// The options of `bench edge`.
#[derive(clap::Args, Debug)]
pub struct EdgeOpts {
    /// Simulated Modbus PLCs.
    #[arg(long, default_value_t = 50)]
    pub plcs: usize,
    /// Poll period of each PLC (ms).
    #[arg(long, default_value_t = 100)]
    pub poll_ms: u64,
    /// Seconds of outage (filling the buffer).
    #[arg(long, default_value_t = 20)]
    pub outage_s: u64,
    /// Messages in flight per round trip (`edge.batch`).
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
}

/// Run the edge benchmark.
pub async fn run(o: EdgeOpts) -> Result<()> {
    let dir = tempfile_dir()?;
    let mut plant = String::from(
        "[plant]\nid = \"edge\"\n[[areas]]\nid = \"a\"\n[[lines]]\nid = \"l\"\narea = \"a\"\n",
    );
    let ports = super::free_ports(o.plcs)?;
    for (i, port) in ports.into_iter().enumerate() {
        plant += &format!(
            "[[machines]]\nid = \"p{i}\"\nline = \"l\"\ntype = \"press\"\nsource = {{ protocol = \"modbus\", host = \"127.0.0.1\", port = {port}, poll_ms = {}, timeout_ms = 1000 }}\n",
            o.poll_ms
        );
    }
    let pf: PlantFile = parse_toml(&plant, "bench-edge")?;
    let mut p = PlatformFile::embedded_default()?;
    p.plants.clear();
    p.connectors.remove("mqtt");
    let cfg = Config::from_parts(
        p,
        Config::embedded_twin_types()?,
        vec![("bench-edge".into(), pf)],
    )?;
    let mq_port = super::free_ports(1)?[0];
    let sim = Simulator::start(
        &Scenario::from_config(super::plc_scenario("bench-edge", o.poll_ms), &cfg),
        7,
    )
    .await?;
    let edge_toml: toml::Value = toml::from_str(&format!(
        "buffer_dir = \"{}\"\nbatch = {}\n[uplink]\nprotocol = \"mqtt\"\nhost = \"127.0.0.1\"\nport = {mq_port}\nclient_id = \"bench-edge\"\n",
        dir.0.join("buffer").display(),
        o.batch
    ))?;
    let ec = EdgeConfig::from_section(Some(&edge_toml), "bench-edge.toml")?;
    let gw = Edge::start(cfg, ec).await?;
    println!(
        "bench edge: {} Modbus PLCs polled every {} ms; uplink down for {} s",
        o.plcs, o.poll_ms, o.outage_s
    );
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.outage_s)).await;
    let filled = gw.stats.buffered.load(Ordering::Relaxed);
    let fill_s = t.elapsed().as_secs_f64();
    let bytes = gw.pending_bytes();
    crate::connectors::mqtt::start_embedded_broker(
        &EmbeddedBrokerConfig {
            enabled: true,
            listen: ([127, 0, 0, 1], mq_port).into(),
            max_payload: 1 << 20,
            memory_mib: 64,
        },
        1,
    )
    .context("embedded broker")?;
    let t = Instant::now();
    while gw.pending_bytes() > 0 {
        if t.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("the buffer did not drain in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_s = t.elapsed().as_secs_f64();
    let published = gw.stats.published.load(Ordering::Relaxed);
    let fill_rate = filled as f64 / fill_s;
    let drain_rate = published as f64 / drain_s;
    println!(
        "filled: {filled} messages ({:.1} MB) in {fill_s:.1} s = {fill_rate:.0} msg/s; drained: {published} messages in {drain_s:.2} s = {drain_rate:.0} msg/s, {:.1}x the fill rate",
        bytes as f64 / 1e6,
        drain_rate / fill_rate
    );
    gw.stop().await;
    sim.stop().await;
    Ok(())
}

struct TmpDir(std::path::PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<TmpDir> {
    let p = std::env::temp_dir().join(format!("ironlake-bench-edge-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(TmpDir(p))
}
