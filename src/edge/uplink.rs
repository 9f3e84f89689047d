//! Buffered records out to the uplink, in order, acknowledged before the
//! buffer lets them go: batches of `edge.batch` records are published and
//! the acknowledged position moves only once the whole batch is confirmed
//! (MQTT `PUBACK`s, Kafka delivery reports). On any failure the connection
//! is dropped and the batch is sent again from the acknowledged position.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::config::UplinkConfig;
use super::{Buffer, EdgeConfig, EdgeRecord, EdgeStats};
use crate::assets::AssetModel;
use crate::connectors::Backoff;

/// Up to `n` records after the acknowledged position: (position, record).
fn next_batch(buffer: &Buffer, n: usize) -> Vec<(u64, EdgeRecord)> {
    let after = buffer.acked.load(Ordering::Relaxed);
    let replay = buffer.journal.lock().replay(after);
    let mut out = Vec::new();
    for r in replay {
        match r {
            Ok((lsn, bytes)) => {
                if let Some(rec) = EdgeRecord::decode(&bytes) {
                    out.push((lsn, rec));
                }
            }
            Err(e) => {
                warn!(error = %e, "edge buffer: unreadable record skipped");
            }
        }
        if out.len() >= n {
            break;
        }
    }
    out
}

/// The batch is acknowledged: let the buffer go up to `lsn`.
fn acknowledged(buffer: &Buffer, stats: &EdgeStats, lsn: u64, n: usize, last_trim: &mut Instant) {
    buffer.acked.fetch_max(lsn, Ordering::Relaxed);
    stats.published.fetch_add(n as u64, Ordering::Relaxed);
    let mut j = buffer.journal.lock();
    stats.pending_bytes.store(
        j.next_lsn()
            .saturating_sub(buffer.acked.load(Ordering::Relaxed)),
        Ordering::Relaxed,
    );
    // The trim position is persisted at most a few times a second.
    if last_trim.elapsed() > Duration::from_millis(250) {
        let _ = j.trim(buffer.acked.load(Ordering::Relaxed));
        *last_trim = Instant::now();
    }
    drop(j);
    buffer.freed.notify_one();
}

/// Pace a batch of `n` messages at `rate` a second (0: no pacing).
async fn pace(rate: u64, n: usize, started: Instant) {
    if rate == 0 {
        return;
    }
    let want = Duration::from_secs_f64(n as f64 / rate as f64);
    if let Some(rest) = want.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
}

fn topic_of(template: &str, model: &AssetModel, asset: &str) -> String {
    let (plant, line) = model
        .asset(asset)
        .map(|a| (a.plant.as_str(), a.line.as_str()))
        .unwrap_or(("unassigned", "unassigned"));
    template
        .replace("{plant}", plant)
        .replace("{line}", line)
        .replace("{asset}", asset)
}

/// Publish until stopped.
pub(crate) async fn publish(
    buffer: Arc<Buffer>,
    model: Arc<AssetModel>,
    edge: EdgeConfig,
    stats: Arc<EdgeStats>,
    stop: CancellationToken,
) {
    match edge.uplink.clone() {
        UplinkConfig::Mqtt {
            host,
            port,
            client_id,
            topic,
            username,
            password,
        } => {
            let mut opts = MqttOptions::new(client_id, host.clone(), port);
            opts.set_keep_alive(Duration::from_secs(10));
            opts.set_clean_session(true);
            opts.set_inflight(edge.batch.min(u16::MAX as usize) as u16);
            opts.set_max_packet_size(16 << 20, 16 << 20);
            if let (Some(u), Some(p)) = (username, password) {
                opts.set_credentials(u, p);
            }
            mqtt(
                &buffer,
                &model,
                &edge,
                &stats,
                &stop,
                opts,
                &topic,
                &format!("{host}:{port}"),
            )
            .await
        }
        UplinkConfig::Kafka {
            brokers,
            topic,
            properties,
        } => kafka(&buffer, &edge, &stats, &stop, &brokers, &topic, &properties).await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn mqtt(
    buffer: &Buffer,
    model: &AssetModel,
    edge: &EdgeConfig,
    stats: &EdgeStats,
    stop: &CancellationToken,
    opts: MqttOptions,
    template: &str,
    endpoint: &str,
) {
    let mut backoff = Backoff::default();
    let mut last_trim = Instant::now();
    'connect: while !stop.is_cancelled() {
        let (client, mut el) = AsyncClient::new(opts.clone(), edge.batch * 2 + 16);
        // Connected when the broker says so.
        let connected = loop {
            let ev = tokio::select! {
                e = tokio::time::timeout(Duration::from_secs(5), el.poll()) => e,
                _ = stop.cancelled() => return,
            };
            match ev {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break true,
                Ok(Ok(_)) => continue,
                _ => break false,
            }
        };
        if !connected {
            stats.uplink_connected.store(0, Ordering::Relaxed);
            stats.uplink_errors.fetch_add(1, Ordering::Relaxed);
            let d = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(d) => continue 'connect,
                _ = stop.cancelled() => return,
            }
        }
        backoff.reset();
        stats.uplink_connected.store(1, Ordering::Relaxed);
        info!(endpoint, "edge uplink connected");
        loop {
            let batch = next_batch(buffer, edge.batch);
            if batch.is_empty() {
                // Idle: keep the connection alive until there is more.
                tokio::select! {
                    _ = buffer.appended.notified() => continue,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    e = el.poll() => {
                        if e.is_err() {
                            stats.uplink_connected.store(0, Ordering::Relaxed);
                            stats.uplink_errors.fetch_add(1, Ordering::Relaxed);
                            warn!(endpoint, "edge uplink lost; buffering");
                            continue 'connect;
                        }
                        continue;
                    }
                    _ = stop.cancelled() => return,
                }
            }
            let started = Instant::now();
            let n = batch.len();
            let last = batch.last().map_or(0, |b| b.0);
            for (_, rec) in &batch {
                let topic = topic_of(template, model, &rec.asset);
                if client
                    .try_publish(topic, QoS::AtLeastOnce, false, rec.payload.clone())
                    .is_err()
                {
                    break;
                }
            }
            // Every PUBACK of the batch, or start over.
            let mut acks = 0usize;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while acks < n {
                let ev = tokio::select! {
                    e = tokio::time::timeout_at(deadline, el.poll()) => e,
                    _ = stop.cancelled() => return,
                };
                match ev {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acks += 1,
                    Ok(Ok(_)) => {}
                    _ => {
                        stats.uplink_connected.store(0, Ordering::Relaxed);
                        stats.uplink_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(endpoint, "edge uplink lost; buffering");
                        continue 'connect;
                    }
                }
            }
            acknowledged(buffer, stats, last, n, &mut last_trim);
            pace(edge.drain_rate, n, started).await;
        }
    }
}

async fn kafka(
    buffer: &Buffer,
    edge: &EdgeConfig,
    stats: &EdgeStats,
    stop: &CancellationToken,
    brokers: &str,
    topic: &str,
    properties: &std::collections::BTreeMap<String, String>,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let mut cc = rdkafka::ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "5");
    for (k, v) in properties {
        cc.set(k, v);
    }
    let producer: FutureProducer = match cc.create() {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "edge: cannot create the kafka producer");
            stop.cancelled().await;
            return;
        }
    };
    let mut backoff = Backoff::default();
    let mut last_trim = Instant::now();
    while !stop.is_cancelled() {
        let batch = next_batch(buffer, edge.batch);
        if batch.is_empty() {
            tokio::select! {
                _ = buffer.appended.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.cancelled() => return,
            }
            continue;
        }
        let started = Instant::now();
        let n = batch.len();
        let last = batch.last().map_or(0, |b| b.0);
        let sends = batch.iter().map(|(_, rec)| {
            producer.send(
                FutureRecord::to(topic)
                    .key(rec.asset.as_str())
                    .payload(rec.payload.as_slice()),
                Duration::from_secs(10),
            )
        });
        let results = tokio::select! {
            r = futures::future::join_all(sends) => r,
            _ = stop.cancelled() => return,
        };
        if let Some(Err((e, _))) = results.iter().find(|r| r.is_err()) {
            stats.uplink_connected.store(0, Ordering::Relaxed);
            stats.uplink_errors.fetch_add(1, Ordering::Relaxed);
            warn!(error = %e, "edge uplink (kafka) failed; buffering");
            let d = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop.cancelled() => return,
            }
            continue;
        }
        backoff.reset();
        stats.uplink_connected.store(1, Ordering::Relaxed);
        acknowledged(buffer, stats, last, n, &mut last_trim);
        pace(edge.drain_rate, n, started).await;
    }
}
