//! `ironlake bench kafka`: the Kafka connector end to end on librdkafka's
//! mock cluster (in this process, no broker to install). A backlog of keyed
//! JSON messages (10 signals each) is produced first; the clock runs from
//! the platform's start until every reading is committed to silver.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::config::{parse_toml, PlantFile};
use crate::platform::{Config, Platform, Probes};

/// The options of `bench kafka`.
#[derive(clap::Args, Debug)]
pub struct KafkaOpts {
    /// Machines (message keys).
    #[arg(long, default_value_t = 1000)]
    pub machines: usize,
    /// Messages in the backlog (10 readings each).
    #[arg(long, default_value_t = 200_000)]
    pub messages: usize,
    /// Topic partitions.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Lakehouse directory (default: a temporary directory, removed after).
    #[arg(long)]
    pub lakehouse: Option<String>,
}

fn config(machines: usize, lake: &str, brokers: &str) -> Result<Config> {
    let mut plant = String::from("[plant]\nid = \"bench\"\n[[areas]]\nid = \"a\"\n");
    for l in 0..machines.div_ceil(100) {
        plant += &format!("[[lines]]\nid = \"l{l}\"\narea = \"a\"\n");
    }
    for m in 0..machines {
        plant += &format!(
            "[[machines]]\nid = \"m{m}\"\nline = \"l{}\"\ntype = \"bench10\"\nsource = {{ protocol = \"kafka\" }}\n",
            m / 100
        );
    }
    let pf: PlantFile = parse_toml(&plant, "bench-plant")?;
    let mut twins = std::collections::HashMap::new();
    twins.insert("bench10".to_string(), Arc::new(super::bench_twin()?));
    let mut p = super::bench_platform(lake)?;
    p.lake.flush_rows = 262_144;
    p.ingest.queue = 8192;
    let section: toml::Table = toml::from_str(&format!(
        "brokers = \"{brokers}\"\ngroup_id = \"bench\"\ntopics = [\"bench\"]\n"
    ))?;
    p.connectors
        .insert("kafka".into(), toml::Value::Table(section));
    Ok(Config::from_parts(
        p,
        twins,
        vec![("bench-plant".into(), pf)],
    )?)
}

/// Run the Kafka benchmark.
pub async fn run(o: KafkaOpts) -> Result<()> {
    let cluster = MockCluster::new(1).context("librdkafka mock cluster")?;
    cluster
        .create_topic("bench", o.partitions, 1)
        .context("create topic")?;
    let brokers = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let t0 = crate::time::now_ms() - (o.messages as i64 / o.machines.max(1) as i64 + 10) * 1000;
    let t = Instant::now();
    for i in 0..o.messages {
        let m = i % o.machines;
        let ts = t0 + (i / o.machines) as i64 * 1000;
        let mut body = format!("{{\"ts\":{ts},\"v\":{{");
        for s in 0..10 {
            if s > 0 {
                body.push(',');
            }
            body += &format!("\"s{s}\":{}.{}", (i + s) % 700, s);
        }
        body += "}}";
        let key = format!("m{m}");
        loop {
            match producer.send(BaseRecord::to("bench").key(&key).payload(&body)) {
                Ok(()) => break,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    println!(
        "bench kafka: {} messages ({} readings) of {} machines on {} partitions produced in {:.1} s (mock cluster)",
        o.messages,
        o.messages * 10,
        o.machines,
        o.partitions,
        t.elapsed().as_secs_f64()
    );
    let lake = super::tempdir_for(o.lakehouse)?;
    let cfg = config(o.machines, &lake.path, &brokers)?;
    let t = Instant::now();
    let platform = Platform::start(cfg, Probes::default()).await?;
    let want = (o.messages * 10) as u64;
    let stats = platform.ingest.clone();
    loop {
        let n = stats.readings.get();
        if n >= want {
            break;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("{n} of {want} readings after 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted = t.elapsed().as_secs_f64();
    platform.flush().await.map_err(anyhow::Error::msg)?;
    let committed = t.elapsed().as_secs_f64();
    platform.stop().await;
    println!(
        "consumed, journaled, validated, applied to twins: {:.2} s = {:.0} readings/s ({:.0} messages/s); committed to silver: {:.2} s = {:.0} readings/s",
        accepted,
        want as f64 / accepted,
        o.messages as f64 / accepted,
        committed,
        want as f64 / committed
    );
    drop(cluster);
    Ok(())
}
