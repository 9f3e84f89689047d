//! Model scoring cost: the shipped champions (`models/registry`) scoring
//! feature rows in batch (`POST /api/models/{name}/predict`, a matrix at a
//! time, parallel over row chunks) and one row at a time as a twin does
//! when a feature bucket closes (champion failure, RUL and energy, with the
//! explanation a failure model adds when it alerts).
//!
//! `cargo bench --bench scoring`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ironlake::ml::registry::Registry;
use ironlake::ml::serve::Champions;
use ironlake::platform::Config;
use ironlake::twins::features::FeatureRow;
use ironlake::twins::scoring::Scorer;

const ROWS: usize = 1_000_000;

/// Rows around the training medians (each feature scaled by 0.5 .. 1.5).
fn rows(impute: &[f64], n: usize) -> Vec<f64> {
    let k = impute.len();
    let mut x = Vec::with_capacity(n * k);
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..n {
        for m in impute {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            x.push(m * (0.5 + (s % 1000) as f64 / 1000.0));
        }
    }
    debug_assert_eq!(x.len(), n * k);
    x
}

fn batch(c: &mut Criterion) {
    let reg = Registry::open(concat!(env!("CARGO_MANIFEST_DIR"), "/models/registry"));
    let mut g = c.benchmark_group("batch_scoring");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS as u64));
    for name in ["cnc_mill_failure", "cnc_mill_rul", "cnc_mill_energy"] {
        let v = reg.resolve(name, "champion").unwrap();
        let m = reg.load(name, v).unwrap();
        let x = rows(&m.impute, ROWS);
        let mut out = vec![0.0; ROWS];
        g.bench_with_input(BenchmarkId::new(m.algorithm.name(), name), &x, |b, x| {
            b.iter(|| m.score_matrix(x, &mut out))
        });
        // The same forest walked one row at a time per tree (how batches
        // were scored before the lockstep packing), for the ratio.
        if let ironlake::ml::model::Algorithm::Forest(f) = &m.algorithm {
            let k = m.features.len();
            g.bench_with_input(BenchmarkId::new("row_walk", name), &x, |b, x| {
                b.iter(|| row_walk(f, x, k, &mut out))
            });
        }
    }
    g.finish();
}

/// Tree-major over chunks of 4096 rows, each row walking the tree with
/// branches (the previous batch path), parallel like the current one.
fn row_walk(f: &ironlake::ml::forest::Forest, x: &[f64], k: usize, out: &mut [f64]) {
    use rayon::prelude::*;
    out.par_chunks_mut(4096)
        .zip(x.par_chunks(4096 * k))
        .for_each(|(o, xs)| {
            o.fill(0.0);
            for t in &f.trees {
                for (r, slot) in o.iter_mut().enumerate() {
                    *slot += t.leaf(&xs[r * k..(r + 1) * k]);
                }
            }
            let n = f.trees.len() as f64;
            o.iter_mut().for_each(|v| *v /= n);
        });
}

fn live(c: &mut Criterion) {
    let cfg = Config::embedded().unwrap();
    let reg = Registry::open(concat!(env!("CARGO_MANIFEST_DIR"), "/models/registry"));
    let champions: Arc<Champions> = Champions::load(reg.clone(), &cfg.model);
    let set = cfg.model.twin_types["cnc_mill"].features.clone().unwrap();
    let m = reg.load("cnc_mill_failure", 1).unwrap();
    // A healthy row and one the failure model alerts on (vibration high).
    let healthy: Vec<Option<f64>> = set
        .names()
        .iter()
        .map(|n| m.features.iter().position(|f| f == n).map(|i| m.impute[i]))
        .collect();
    let mut worn = healthy.clone();
    for (i, n) in set.names().iter().enumerate() {
        if n.starts_with("vibration") || n.starts_with("temperature") {
            worn[i] = worn[i].map(|v| v * 3.0 + 5.0);
        }
    }
    let mut g = c.benchmark_group("twin_scoring");
    g.throughput(Throughput::Elements(1));
    for (what, values) in [("healthy", healthy), ("alerting", worn)] {
        let row = FeatureRow {
            bucket_end: 0,
            values,
        };
        let n = champions.score(&set, &row).len();
        assert_eq!(n, 3, "failure, RUL and energy champions");
        g.bench_function(what, |b| b.iter(|| champions.score(&set, &row)));
    }
    g.finish();
}

criterion_group!(benches, batch, live);
criterion_main!(benches);
