//! `ironlake bench live`: the live stream's fan-out.
//!
//! N machines publish 10 signals at `rate` Hz over MQTT (state changing
//! every `state_every_s` seconds) into a running platform, while
//! `subscribers` clients hold `GET /api/stream` open, as that many
//! browsers on the overview (every machine's state) with a machine page's
//! values each. It reports the events delivered a second and the delay from
//! the twin publishing an event to a subscriber reading it, plus the
//! source-to-subscriber delay of signal values (published at most twice a
//! second per machine: a change within 500 ms of the last waits for the
//! next half-second tick).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{bench_config, fmt_p, free_port, publisher, tempdir_for, Load, Pace};
use crate::metrics::LatencyProbe;
use crate::platform::{Platform, Probes};
use crate::time::now_ms;

/// The options of `bench live`.
#[derive(clap::Args, Debug)]
pub struct LiveOpts {
    /// Simulated machines (one MQTT topic each, 10 signals per message).
    #[arg(long, default_value_t = 500)]
    pub machines: usize,
    /// Samples per second per machine.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Each machine changes state this often (seconds).
    #[arg(long, default_value_t = 10)]
    pub state_every_s: u64,
    /// Open streams.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Machines whose values each subscriber follows.
    #[arg(long, default_value_t = 1)]
    pub values_per_subscriber: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Serve the REST API and twin browser here during the run (e.g.
    /// 127.0.0.1:8080, to watch the overview under this load).
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
    #[arg(long)]
    pub lakehouse: Option<String>,
    /// Before the run, publish a day of 1 Hz history for machine m0 and
    /// time the downsampled history query a day chart makes.
    #[arg(long)]
    pub backfill_day: bool,
}

#[derive(Default)]
struct Tally {
    events: AtomicU64,
    bytes: AtomicU64,
    resyncs: AtomicU64,
    fanout: LatencyProbe,
    source: LatencyProbe,
}

/// One subscriber: a raw HTTP/1.1 client reading the chunked SSE body.
async fn subscriber(
    addr: std::net::SocketAddr,
    query: String,
    stop: Arc<AtomicBool>,
    measure: Arc<AtomicBool>,
    t: Arc<Tally>,
) -> Result<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "GET /api/stream?{query} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        if line == "\r\n" {
            break;
        }
        anyhow::ensure!(!line.is_empty(), "stream closed during the headers");
    }
    let mut chunk = Vec::new();
    let mut event = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            break;
        }
        let size = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
        chunk.resize(size + 2, 0);
        r.read_exact(&mut chunk).await?;
        let now = now_ms();
        let on = measure.load(Ordering::Relaxed);
        if on {
            t.bytes.fetch_add(size as u64, Ordering::Relaxed);
        }
        for l in chunk[..size].split(|b| *b == b'\n') {
            if let Some(e) = l.strip_prefix(b"event: ") {
                event = String::from_utf8_lossy(e).into_owned();
            } else if let Some(d) = l.strip_prefix(b"data: ") {
                if !on {
                    continue;
                }
                t.events.fetch_add(1, Ordering::Relaxed);
                if event == "resync" {
                    t.resyncs.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let v: serde_json::Value = serde_json::from_slice(d).unwrap_or_default();
                if let Some(ts) = v["ts"].as_i64() {
                    t.fanout.record((now - ts) as f64);
                }
                if event == "values" {
                    if let Some(src) = v["last_update"].as_i64() {
                        t.source.record((now - src) as f64);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Run the benchmark.
pub async fn run(o: LiveOpts) -> Result<()> {
    let tmp = tempdir_for(o.lakehouse.clone())?;
    let port = free_port()?;
    let mut cfg = bench_config(o.machines, &tmp.path, port, None, None, false, false)?;
    if let Some(h) = o.http {
        cfg.platform.http.listen = h;
    }
    cfg.platform.http.max_streams = cfg.platform.http.max_streams.max(o.subscribers + 16);
    let platform = Platform::start(cfg, Probes::default())
        .await
        .context("starting the platform")?;
    let addr = platform.http_addr;
    println!(
        "ironlake bench live: {} machines x 10 signals at {} Hz (state changes every {} s), {} subscribers each following every machine's state and {} machine's values, {} s; twin browser at http://{addr}/",
        o.machines, o.rate, o.state_every_s, o.subscribers, o.values_per_subscriber, o.seconds
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    if o.backfill_day {
        backfill_day(&platform, port).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let measure = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let state_every = (o.state_every_s as f64 * o.rate).round().max(1.0) as u64;
    let mut pubs = Vec::new();
    for p in 0..2usize {
        let topics: Vec<usize> = (0..o.machines).filter(|m| m % 2 == p).collect();
        pubs.push(tokio::spawn(publisher(
            "127.0.0.1".into(),
            port,
            p,
            topics,
            Load {
                pace: Pace::Spread(o.rate),
                state_every: Some(state_every),
            },
            stop.clone(),
            sent.clone(),
        )));
    }
    let tally = Arc::new(Tally::default());
    let mut subs = Vec::new();
    for i in 0..o.subscribers {
        let values: Vec<String> = (0..o.values_per_subscriber)
            .map(|k| format!("m{}", (i * o.values_per_subscriber + k) % o.machines.max(1)))
            .collect();
        let q = format!("plant=bench&assets={}", values.join(","));
        subs.push(tokio::spawn(subscriber(
            addr,
            q,
            stop.clone(),
            measure.clone(),
            tally.clone(),
        )));
    }
    // Warm-up: every machine seen once, every stream open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    measure.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let published0 = platform_live_published(&platform);
    let bar = indicatif::ProgressBar::new(o.seconds);
    for _ in 0..o.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    measure.store(false, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let published = platform_live_published(&platform) - published0;
    stop.store(true, Ordering::Relaxed);
    let open = subs.iter().filter(|s| !s.is_finished()).count();
    for s in subs {
        s.abort();
    }
    for p in pubs {
        let _ = p.await;
    }
    let t = &tally;
    let ev = t.events.load(Ordering::Relaxed) as f64;
    println!(
        "  twins published {:.0} events/s; {} of {} streams open at the end",
        published as f64 / secs,
        open,
        o.subscribers
    );
    println!(
        "  delivered {:.0} events/s in total ({:.0} per subscriber), {:.1} MB/s, {} resyncs",
        ev / secs,
        ev / secs / o.subscribers.max(1) as f64,
        t.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        t.resyncs.load(Ordering::Relaxed)
    );
    println!("  twin -> subscriber:   {}", fmt_p(&t.fanout));
    println!(
        "  source -> subscriber (values, at most 2/s per machine): {}",
        fmt_p(&t.source)
    );
    platform.stop().await;
    Ok(())
}

fn platform_live_published(p: &Platform) -> u64 {
    p.twins.live.published()
}

/// A day of 1 Hz samples for m0 (86,400 messages of 10 signals), then the
/// history query of a day chart (700 buckets), timed five times.
async fn backfill_day(platform: &Platform, port: u16) -> Result<()> {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let mut o = MqttOptions::new("bench-backfill", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(200);
    let (c, mut el) = AsyncClient::new(o, 1000);
    let pump = tokio::spawn(async move {
        loop {
            if let Err(e) = el.poll().await {
                tracing::warn!(error = %e, "backfill publisher: reconnecting");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let day = 86_400i64;
    let t0 = now_ms() - day * 1000;
    let r0 = platform.ingest.status().readings;
    let start = Instant::now();
    let bar = indicatif::ProgressBar::new(day as u64);
    // Paced at about 4000 messages/s: the embedded broker keeps
    // `mqtt.embedded.memory_mib` shared by all 500 filters (about 2000
    // messages each), and a faster burst into one topic stalled its routing
    // (see the README's Performance notes).
    for k in 0..day {
        let body = super::sample(0, k as u64, t0 + k * 1000, None);
        c.publish("bench/m0", QoS::AtLeastOnce, false, body).await?;
        if k % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if k % 1000 == 0 {
            bar.set_position(k as u64);
        }
    }
    bar.finish_and_clear();
    while platform.ingest.status().readings < r0 + day as u64 * 10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Committed to silver (1 s flush interval) before querying.
    tokio::time::sleep(Duration::from_secs(3)).await;
    pump.abort();
    println!(
        "  backfilled a day of 1 Hz history for m0 (864,000 readings) in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let path = format!(
        "/api/assets/m0/history?signal=s1&from={t0}&to={}&points=700",
        t0 + day * 1000
    );
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..5 {
        let t = Instant::now();
        body = http_get(platform.http_addr, &path).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let counted: i64 = v["buckets"]["count"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_i64()).sum())
        .unwrap_or(0);
    println!(
        "  a day of history in 700 buckets ({} buckets, {} readings): median {:.0} ms, max {:.0} ms over 5 queries",
        v["count"], counted, times[2], times[4]
    );
    Ok(())
}

/// A GET answered with `Connection: close`; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (_, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok(body.to_string())
}
