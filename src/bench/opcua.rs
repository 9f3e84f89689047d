//! `ironlake bench opcua`: value changes a second through the OPC UA
//! connector. One simulated cell (the simulator's async-opcua server, on
//! loopback, same cores) with `machines` CNC mills whose 9 bound signals all
//! change every `tick_ms`; one platform subscribed to all of them (sampling
//! 0 = every change, queue 100, publishing `publishing_ms`). Measured: the
//! changes the server made against the readings validated by the ingest
//! stage, a second.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::{parse_toml, PlantFile};
use crate::platform::{Config, Platform, Probes};
use crate::sim::opcua_server::{CellServer, ServedMachine};

/// The options of `bench opcua`.
#[derive(clap::Args, Debug)]
pub struct OpcuaOpts {
    /// Machines on the cell server (CNC mills, 9 signals each).
    #[arg(long, default_value_t = 300)]
    pub machines: usize,
    /// Every signal changes this often (ms).
    #[arg(long, default_value_t = 25)]
    pub tick_ms: u64,
    /// Subscription publishing interval (ms).
    #[arg(long, default_value_t = 100)]
    pub publishing_ms: u64,
    /// Seconds measured (after 5 s of warm-up).
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Lakehouse directory (default: a temporary directory, removed after).
    #[arg(long)]
    pub lakehouse: Option<String>,
}

/// Run the OPC UA benchmark.
pub async fn run(o: OpcuaOpts) -> Result<()> {
    let port = super::free_ports(1)?[0];
    let url = format!("opc.tcp://127.0.0.1:{port}/");
    let mut plant = String::from("[plant]\nid = \"ua\"\n[[areas]]\nid = \"a\"\n");
    for l in 0..o.machines.div_ceil(100) {
        plant += &format!("[[lines]]\nid = \"l{l}\"\narea = \"a\"\n");
    }
    for i in 0..o.machines {
        plant += &format!(
            "[[machines]]\nid = \"p{i}\"\nline = \"l{}\"\ntype = \"cnc_mill\"\nsource = {{ protocol = \"opcua\", server = \"cell\", node = \"/Objects/Machines/p{i}\" }}\n",
            i / 100
        );
    }
    let pf: PlantFile = parse_toml(&plant, "bench-opcua")?;
    let lake = super::tempdir_for(o.lakehouse)?;
    let mut p = super::bench_platform(lake.path.clone())?;
    let section: toml::Table = toml::from_str(&format!(
        "[servers.cell]\nendpoint = \"{url}\"\npublishing_ms = {}\nsampling_ms = 0\nqueue_size = 100\n",
        o.publishing_ms
    ))?;
    p.connectors
        .insert("opcua".into(), toml::Value::Table(section));
    let cfg = Config::from_parts(
        p,
        Config::embedded_twin_types()?,
        vec![("bench-opcua".into(), pf)],
    )?;
    let plan = cfg
        .connectors
        .get::<crate::connectors::opcua::OpcuaConnector>()
        .context("opcua connector")?
        .servers()[0]
        .clone();
    let served: Vec<ServedMachine> = plan
        .machines
        .iter()
        .map(|m| ServedMachine {
            asset: &cfg.model.assets[m.asset as usize],
            object_path: vec!["Machines".into(), m.id.clone()],
            signals: m
                .signals
                .iter()
                .filter_map(|s| match &s.address {
                    crate::connectors::opcua::address::Address::Path { segments, .. } => Some((
                        s.signal as usize,
                        segments.iter().map(|x| x.name.clone()).collect(),
                    )),
                    _ => None,
                })
                .collect(),
        })
        .collect();
    let signals: usize = served.iter().map(|m| m.signals.len()).sum();
    let pki = std::env::temp_dir().join(format!("ironlake-bench-opcua-pki-{port}"));
    let cell = std::sync::Arc::new(
        CellServer::start(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            "bench",
            &served,
            &pki,
        )
        .await?,
    );
    drop(served);
    // The server changes every signal every tick, values inside the mill's ranges.
    let stop = tokio_util::sync::CancellationToken::new();
    let changes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (cell, stop, changes) = (cell.clone(), stop.clone(), changes.clone());
        let n = o.machines;
        let sig_n = cfg.model.assets.first().map_or(0, |a| a.twin.signals.len());
        let per_tick = signals as u64;
        let tick = Duration::from_millis(o.tick_ms.max(1));
        tokio::spawn(async move {
            let mut t = tokio::time::interval(tick);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut k = 0u64;
            let mut values = vec![0.0; sig_n];
            while !stop.is_cancelled() {
                t.tick().await;
                k += 1;
                let now = crate::time::now_ms();
                for i in 0..n {
                    for (j, v) in values.iter_mut().enumerate() {
                        // 1..3: inside every mill signal's range (the state's too).
                        *v = 1.0 + ((k + i as u64 + j as u64) % 3) as f64;
                    }
                    cell.publish(i, &values, crate::assets::MachineState::Running, now);
                }
                changes.fetch_add(per_tick, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let platform = Platform::start(cfg, Probes::default()).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c0, r0) = (
        changes.load(std::sync::atomic::Ordering::Relaxed),
        platform.ingest.readings.get(),
    );
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.seconds)).await;
    let secs = t.elapsed().as_secs_f64();
    let (c1, r1) = (
        changes.load(std::sync::atomic::Ordering::Relaxed),
        platform.ingest.readings.get(),
    );
    stop.cancel();
    let _ = writer.await;
    platform.stop().await;
    if let Ok(c) = std::sync::Arc::try_unwrap(cell) {
        c.stop().await;
    }
    let _ = std::fs::remove_dir_all(&pki);
    println!(
        "bench opcua: {} machines, {signals} monitored items changing every {} ms ({:.0} changes/s scheduled), publishing {} ms, {secs:.1} s",
        o.machines,
        o.tick_ms,
        signals as f64 * 1000.0 / o.tick_ms as f64,
        o.publishing_ms
    );
    println!(
        "server made {:.0} changes/s; ironlake validated {:.0} readings/s ({:.1} %)",
        (c1 - c0) as f64 / secs,
        (r1 - r0) as f64 / secs,
        100.0 * (r1 - r0) as f64 / (c1 - c0).max(1) as f64
    );
    Ok(())
}
