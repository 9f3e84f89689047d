//! `ironlake bench membw`: what this machine's memory can stream, the
//! ceiling the peer workloads are measured against (`scripts/bench_shapes.py`
//! divides each workload's least memory traffic by its time). Sequential
//! read (a sum), write (a fill) and copy of a buffer far larger than the
//! caches, on one thread and on every worker thread; best of `--repeats`.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{bail, Result};
use rayon::prelude::*;

/// The options of `bench membw`.
#[derive(clap::Args, Debug)]
pub struct MembwOpts {
    /// Buffer size in MiB (each of the two buffers of the copy).
    #[arg(long, default_value_t = 512)]
    pub mib: usize,
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// GB/s of the best of `repeats` runs of `f` over `bytes`.
fn best(repeats: usize, bytes: usize, mut f: impl FnMut()) -> f64 {
    let mut t = f64::INFINITY;
    for _ in 0..repeats {
        let s = Instant::now();
        f();
        t = t.min(s.elapsed().as_secs_f64());
    }
    bytes as f64 / t / 1e9
}

fn sum(chunk: &[u64]) -> u64 {
    // Four lanes so the adds do not serialise on one register.
    let mut acc = [0u64; 4];
    let quads = chunk.chunks_exact(4);
    let tail = quads.remainder();
    for c in quads {
        for i in 0..4 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    tail.iter().chain(&acc).fold(0, |a, &b| a.wrapping_add(b))
}

/// Run `bench membw`.
pub fn run(opts: MembwOpts) -> Result<()> {
    if opts.mib < 64 || opts.repeats == 0 {
        bail!("--mib must be at least 64 (larger than the caches) and --repeats at least 1");
    }
    let n = opts.mib << 17; // u64s
    let bytes = n * 8;
    let threads = rayon::current_num_threads();
    let chunk = n.div_ceil(threads * 8).max(4096);
    // Touched before timing: page faults are not bandwidth.
    let mut a: Vec<u64> = (0..n as u64).collect();
    let mut b: Vec<u64> = vec![1; n];
    let r = opts.repeats;
    let read_1 = best(r, bytes, || {
        black_box(sum(black_box(&a)));
    });
    let read_all = best(r, bytes, || {
        black_box(a.par_chunks(chunk).map(sum).reduce(|| 0, u64::wrapping_add));
    });
    let write_1 = best(r, bytes, || {
        black_box(&mut a).fill(black_box(7));
    });
    let write_all = best(r, bytes, || {
        a.par_chunks_mut(chunk)
            .for_each(|c| black_box(c).fill(black_box(7)));
    });
    // A copy reads one buffer and writes the other: twice the bytes.
    let copy_1 = best(r, 2 * bytes, || {
        black_box(&mut b).copy_from_slice(black_box(&a));
    });
    let copy_all = best(r, 2 * bytes, || {
        b.par_chunks_mut(chunk)
            .zip(a.par_chunks(chunk))
            .for_each(|(d, s)| black_box(d).copy_from_slice(s));
    });
    let doc = serde_json::json!({
        "threads": threads,
        "buffer_mib": opts.mib,
        "read_gbs_1": read_1,
        "read_gbs_all": read_all,
        "write_gbs_1": write_1,
        "write_gbs_all": write_all,
        "copy_gbs_1": copy_1,
        "copy_gbs_all": copy_all,
    });
    if opts.json {
        println!("{doc}");
    } else {
        println!(
            "memory bandwidth, GB/s (1 thread / {threads} threads), {} MiB buffers:",
            opts.mib
        );
        println!("  read  {read_1:6.1} / {read_all:6.1}");
        println!("  write {write_1:6.1} / {write_all:6.1}");
        println!("  copy  {copy_1:6.1} / {copy_all:6.1}  (bytes read + written)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_pass_really_reads_every_word() {
        // A sum the compiler cannot skip, and exact: every element counted once.
        let v: Vec<u64> = (0..100_000).collect();
        assert_eq!(sum(&v), 100_000 * 99_999 / 2);
        let odd: Vec<u64> = (0..10_003).collect();
        assert_eq!(
            sum(&odd),
            10_003 * 10_002 / 2,
            "a tail shorter than 4 counts too"
        );
    }

    #[test]
    fn buffers_smaller_than_the_caches_are_refused() {
        let e = run(MembwOpts {
            mib: 8,
            repeats: 1,
            json: true,
        })
        .unwrap_err();
        assert!(e.to_string().contains("at least 64"), "{e}");
    }
}
