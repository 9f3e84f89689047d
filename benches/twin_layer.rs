//! Twin layer throughput: readings delivered in batches through machine twin
//! actors (windows, state, counters and alarms updated), on the actix arbiters
//! the platform uses; and the twin core alone on one thread.
//!
//! `cargo bench --bench twin_layer`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ironlake::config::{PlatformFile, TwinConfig};
use ironlake::platform::Config;
use ironlake::twins::TwinOutput;
use ironlake::twins::{
    GetSnapshot, Ingest, MachineTwin, TwinCore, TwinIdentity, TwinShared, TypedReading,
};

const MACHINES: usize = 1000;
/// Samples per machine per batch (each sample: one value of every signal).
const SAMPLES: usize = 10;

/// The twin defaults of config/ironlake.toml, without periodic checkpoints.
fn twin_cfg() -> TwinConfig {
    let mut t = PlatformFile::embedded_default().unwrap().twin;
    t.checkpoint_interval_s = 3600;
    t
}

fn identity(i: usize) -> TwinIdentity {
    let twin = Config::embedded_twin_types().unwrap()["cnc_mill"].clone();
    TwinIdentity {
        idx: i as u32,
        id: Arc::from(format!("mill-{i}")),
        name: format!("mill-{i}"),
        plant: Arc::from("plant-a"),
        line: Arc::from("line-1"),
        area: "hall".into(),
        twin,
    }
}

/// A batch of `SAMPLES` samples of all 9 mill signals starting at `t0`.
fn batch(t0: i64, seed: u64) -> Vec<TypedReading> {
    let mut out = Vec::with_capacity(SAMPLES * 9);
    let mut x = seed | 1;
    for s in 0..SAMPLES {
        let ts = t0 + s as i64 * 100;
        for sig in 0..9u16 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x % 1000) as f64 / 1000.0;
            let value = match sig {
                0 => 2.0,
                6 => (t0 / 100 + s as i64) as f64,
                7 => 3.0,
                3 => 2.0 + noise,
                _ => 10.0 + noise * 5.0,
            };
            out.push(TypedReading {
                signal: sig,
                ts_ms: ts,
                value,
                ingest_ms: ts,
            });
        }
    }
    out
}

fn bench_core(c: &mut Criterion) {
    let mut g = c.benchmark_group("twin_core");
    let b = batch(0, 7);
    g.throughput(Throughput::Elements(b.len() as u64));
    let mut core = TwinCore::new(identity(0), &twin_cfg());
    let mut events = Vec::new();
    let mut t = 0i64;
    g.bench_function("apply_batch_90_readings", |bench| {
        bench.iter(|| {
            t += 1000;
            let mut b2 = b.clone();
            for r in &mut b2 {
                r.ts_ms += t;
            }
            core.apply(&b2, &mut events);
            events.clear();
        })
    });
    g.finish();
}

fn bench_actors(c: &mut Criterion) {
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<TwinOutput>(1 << 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(async move { while out_rx.recv().await.is_some() {} });
    let shared = Arc::new(TwinShared {
        cfg: twin_cfg(),
        out: out_tx,
        visibility: None,
        health: None,
        journal_id: Arc::from("bench"),
        live: Arc::new(ironlake::twins::live::LiveHub::new(MACHINES, 1024)),
        scorer: None,
        checkpoints: None,
    });
    let mailboxes: Arc<Vec<std::sync::atomic::AtomicU32>> = Arc::new(
        (0..MACHINES)
            .map(|_| std::sync::atomic::AtomicU32::new(0))
            .collect(),
    );
    // The actix system with two arbiters, as in the platform.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sys = actix::System::new();
        sys.block_on(async move {
            let arbiters: Vec<actix::Arbiter> = (0..2).map(|_| actix::Arbiter::new()).collect();
            let addrs: Vec<_> = (0..MACHINES)
                .map(|i| {
                    let core = TwinCore::new(identity(i), &shared.cfg);
                    let sh = shared.clone();
                    let mb = mailboxes.clone();
                    actix::Supervisor::start_in_arbiter(&arbiters[i % 2].handle(), move |_| {
                        MachineTwin::new(core, None, None, sh, mb)
                    })
                })
                .collect();
            tx.send(addrs).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let addrs = rx.recv().unwrap();
    let per_iter = (MACHINES * SAMPLES * 9) as u64;
    let mut g = c.benchmark_group("twin_actors");
    g.throughput(Throughput::Elements(per_iter));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    let mut t0 = 0i64;
    g.bench_function(
        format!("{MACHINES}_machines_batches_of_{}", SAMPLES * 9),
        |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        t0 += SAMPLES as i64 * 100;
                        for (i, a) in addrs.iter().enumerate() {
                            let msg = Ingest(ironlake::ingest::TwinBatch {
                                readings: batch(t0, i as u64 + 1),
                                ..Default::default()
                            });
                            if let Err(actix::prelude::SendError::Full(m)) = a.try_send(msg) {
                                let _ = a.send(m).await;
                            }
                        }
                    }
                    // Barrier: every mailbox is FIFO, so a snapshot answer means all was applied.
                    futures::future::join_all(addrs.iter().map(|a| a.send(GetSnapshot))).await;
                    start.elapsed()
                })
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench_core, bench_actors);
criterion_main!(benches);
