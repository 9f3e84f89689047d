//! The order in which kernels visit rows. Per-key kernels need each key's
//! rows in time order; a stream in arrival order (interleaved across keys,
//! each key's timestamps rising) already is, so it can be walked as it is.
//!
//! * [`RowOrder::for_rows`]: natural when every key's timestamps rise, else
//!   grouped by key (a counting sort on the dense key codes, then only the
//!   keys that go back in time sorted); the visiting order of every kernel
//!   is then arrival order or `(key, ts)`.
//! * [`RowOrder::parallel`]: key-range [`Partitions`] for the kernels that
//!   run on all cores (rolling, windows, hold integration, as-of, dedup).
//!   With tens of thousands of keys the per-key state of an arrival-order
//!   walk no longer fits in cache and every row is a cache miss; a partition
//!   of a few hundred keys is walked with its state in cache, and its rows
//!   are copied out and back in sequential passes.

use std::ops::Range;

use rayon::prelude::*;

use super::keys::NULL_KEY;

/// Below this many rows a time-ordered input is walked as it is by
/// [`RowOrder::parallel`] (splitting it would cost more than it saves).
pub const SMALL_ROWS: usize = 65_536;
/// Most keys in one partition: their state (a W3 window is ~1.7 KB) stays
/// in the core's L2 cache while the partition is walked.
pub const MAX_PART_KEYS: usize = 256;

/// Row visiting order for per-key kernels.
#[derive(Debug, Clone)]
pub enum RowOrder {
    /// Rows `0..n` as they are: every key's timestamps are non-decreasing.
    Natural(usize),
    /// Rows grouped by key (codes ascending), each key's rows in time order,
    /// stable for equal timestamps; rows with a null key are left out.
    Grouped(Groups),
    /// Rows split into key ranges, each range's rows copied out in arrival
    /// order (see [`Partitions`]); kernels run the ranges in parallel.
    Partitioned(Partitions),
}

/// Row indices grouped by key: key `k`'s rows are `rows[offsets[k]..offsets[k + 1]]`.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    rows: Vec<u32>,
    offsets: Vec<usize>,
    /// Rows of the input (including null-key rows, which no group holds).
    n: usize,
}

impl RowOrder {
    /// The cheapest order in which every key's rows come in time order:
    /// natural when they already do, else grouped by key. The visiting
    /// order is the same as before grouping existed: arrival order, or
    /// `(key, ts)` stable.
    pub fn for_rows(keys: &[u32], n_keys: usize, ts: &[i64]) -> RowOrder {
        let scan = Scan::new(keys, n_keys, ts);
        if scan.time_ordered {
            RowOrder::Natural(keys.len())
        } else {
            RowOrder::Grouped(Groups::build(keys, ts, scan))
        }
    }

    /// The order for kernels that run in parallel: key-range partitions
    /// ([`Partitions`]), or natural for a small time-ordered input.
    pub fn parallel(keys: &[u32], n_keys: usize, ts: &[i64]) -> RowOrder {
        let scan = Scan::new(keys, n_keys, ts);
        if scan.time_ordered && keys.len() < SMALL_ROWS {
            RowOrder::Natural(keys.len())
        } else {
            RowOrder::Partitioned(Partitions::build(keys, ts, scan))
        }
    }

    /// Rows grouped by key whatever their order (for tests and for callers
    /// that walk groups themselves).
    pub fn grouped(keys: &[u32], n_keys: usize, ts: &[i64]) -> RowOrder {
        RowOrder::Grouped(Groups::build(keys, ts, Scan::new(keys, n_keys, ts)))
    }

    /// Rows split into key-range partitions whatever their size (for tests).
    pub fn partitioned(keys: &[u32], n_keys: usize, ts: &[i64]) -> RowOrder {
        RowOrder::Partitioned(Partitions::new(keys, n_keys, ts))
    }

    /// Visit every row index in order.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        match self {
            RowOrder::Natural(n) => (0..*n).for_each(f),
            RowOrder::Grouped(g) => g.rows.iter().for_each(|&i| f(i as usize)),
            RowOrder::Partitioned(p) => p.parts.iter().for_each(|part| {
                part.walk(|j| f(part.row[j] as usize));
            }),
        }
    }

    /// The key-range partitions, when the rows are partitioned.
    pub fn partitions(&self) -> Option<&Partitions> {
        match self {
            RowOrder::Partitioned(p) => Some(p),
            _ => None,
        }
    }

    /// The key groups, when the rows are grouped.
    pub fn groups(&self) -> Option<&Groups> {
        match self {
            RowOrder::Grouped(g) => Some(g),
            _ => None,
        }
    }

    /// Number of rows visited.
    pub fn len(&self) -> usize {
        match self {
            RowOrder::Natural(n) => *n,
            RowOrder::Grouped(g) => g.rows.len(),
            RowOrder::Partitioned(p) => p.parts.iter().map(|p| p.row.len()).sum(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One pass over the keys: rows per key and whether each key's timestamps rise.
struct Scan {
    counts: Vec<usize>,
    time_ordered: bool,
}

impl Scan {
    fn new(keys: &[u32], n_keys: usize, ts: &[i64]) -> Scan {
        let mut counts = vec![0usize; n_keys];
        let mut last = vec![i64::MIN; n_keys];
        let mut time_ordered = true;
        for (&k, &t) in keys.iter().zip(ts) {
            if k == NULL_KEY {
                continue;
            }
            let k = k as usize;
            counts[k] += 1;
            time_ordered &= t >= last[k];
            last[k] = t;
        }
        Scan {
            counts,
            time_ordered,
        }
    }
}

impl Groups {
    fn build(keys: &[u32], ts: &[i64], scan: Scan) -> Groups {
        let n_keys = scan.counts.len();
        let mut offsets = Vec::with_capacity(n_keys + 1);
        let mut acc = 0usize;
        offsets.push(0);
        for &c in &scan.counts {
            acc += c;
            offsets.push(acc);
        }
        // Stable counting sort: rows keep arrival order within their key.
        let mut rows = vec![0u32; acc];
        let mut fill = offsets[..n_keys].to_vec();
        for (i, &k) in keys.iter().enumerate() {
            if k != NULL_KEY {
                let f = &mut fill[k as usize];
                rows[*f] = i as u32;
                *f += 1;
            }
        }
        let mut g = Groups {
            rows,
            offsets,
            n: keys.len(),
        };
        if !scan.time_ordered {
            // Only the keys whose rows go back in time are sorted (stable).
            g.par_groups_mut(|group| {
                if group
                    .windows(2)
                    .any(|w| ts[w[1] as usize] < ts[w[0] as usize])
                {
                    group.sort_by_key(|&r| ts[r as usize]);
                }
            });
        }
        g
    }

    /// Number of keys (groups, some possibly empty).
    pub fn n_keys(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Rows of the input the groups were made from.
    pub fn n_rows(&self) -> usize {
        self.n
    }

    /// Key `k`'s rows, in time order.
    #[inline]
    pub fn group(&self, k: usize) -> &[u32] {
        &self.rows[self.offsets[k]..self.offsets[k + 1]]
    }

    fn par_groups_mut(&mut self, f: impl Fn(&mut [u32]) + Sync) {
        let mut parts = Vec::with_capacity(self.n_keys());
        let mut rest = self.rows.as_mut_slice();
        for k in 0..self.offsets.len() - 1 {
            let (g, r) = rest.split_at_mut(self.offsets[k + 1] - self.offsets[k]);
            parts.push(g);
            rest = r;
        }
        parts.into_par_iter().with_min_len(64).for_each(&f);
    }
}

/// Rows split into partitions of consecutive key codes, for kernels that
/// keep state per key. A partition holds at most [`MAX_PART_KEYS`] keys and
/// about an equal share of the rows, so that walking it touches only state
/// that stays in cache, and partitions run on all worker threads.
///
/// Each partition's rows are copied out in arrival order (its keys, ts and
/// original row numbers here; value columns by [`Partitions::split`]): one
/// sequential pass over the input writing one stream per partition. Results
/// computed per partition in that order go back to row order with
/// [`Partitions::merge`], the same pass the other way round. Neither ever
/// touches rows out of order, which is what makes this fast for tens of
/// thousands of machines, where an arrival-order walk misses the cache on
/// every row.
#[derive(Debug, Clone, Default)]
pub struct Partitions {
    /// Partition of each key code (`u32::MAX`: a key without rows).
    part_of: Vec<u32>,
    pub parts: Vec<Part>,
    /// Row ranges of the input handled by each thread in split/merge, and
    /// where each range's rows start in every partition.
    spans: Vec<(Range<usize>, Vec<usize>)>,
    n: usize,
}

/// One partition: keys `keys`, its rows in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Part {
    pub keys: Range<usize>,
    /// Key code of each row.
    pub key: Vec<u32>,
    /// Timestamp of each row.
    pub ts: Vec<i64>,
    /// Input row number of each row.
    pub row: Vec<u32>,
    /// When some key's rows go back in time: positions sorted by (key, ts),
    /// stable; else empty (walk in arrival order).
    perm: Vec<u32>,
}

impl Part {
    /// Rows in the partition.
    pub fn len(&self) -> usize {
        self.row.len()
    }

    /// Whether the partition has no rows.
    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }

    /// Visit the positions (`0..len`) so that each key's rows come in time order.
    #[inline]
    pub fn walk(&self, mut f: impl FnMut(usize)) {
        if self.perm.is_empty() {
            (0..self.row.len()).for_each(f)
        } else {
            self.perm.iter().for_each(|&j| f(j as usize))
        }
    }

    /// Whether [`Part::walk`] visits the rows out of arrival order.
    pub fn is_permuted(&self) -> bool {
        !self.perm.is_empty()
    }

    /// A column of the partition (in arrival order) copied into visiting
    /// order, so a kernel can walk `0..len` sequentially; borrowed when the
    /// visiting order is arrival order. Walking a shuffled partition through
    /// its permutation reads every column out of order inside the kernel's
    /// dependent per-row work; one gather per column (independent loads the
    /// core overlaps) and a sequential walk cost a fraction of that.
    pub fn gather<'a, T: Copy>(&self, col: &'a [T]) -> std::borrow::Cow<'a, [T]> {
        if self.perm.is_empty() {
            std::borrow::Cow::Borrowed(col)
        } else {
            std::borrow::Cow::Owned(self.perm.iter().map(|&j| col[j as usize]).collect())
        }
    }

    /// Results computed in visiting order (after [`Part::gather`]) back
    /// into arrival order.
    pub fn ungather<T: Copy + Default>(&self, visited: Vec<T>) -> Vec<T> {
        if self.perm.is_empty() {
            return visited;
        }
        let mut out = vec![T::default(); visited.len()];
        for (&j, v) in self.perm.iter().zip(visited) {
            out[j as usize] = v;
        }
        out
    }

    /// Index of key `k` among the partition's keys (for per-key state).
    #[inline]
    pub fn local(&self, k: u32) -> usize {
        k as usize - self.keys.start
    }
}

/// Positions of a partition's rows by (key, ts), stable: a counting sort by
/// key (arrival order kept), then each key's run sorted by time where it
/// goes back. Runs of a shuffled delivery are short and nearly sorted, so
/// this is about linear; a comparison sort of the whole partition by
/// (key, ts) took most of W3's time on rows shuffled within minutes.
fn time_order(part: &Part) -> Vec<u32> {
    let nk = part.keys.len();
    let mut start = vec![0usize; nk + 1];
    for &k in &part.key {
        start[part.local(k) + 1] += 1;
    }
    for i in 0..nk {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut perm = vec![0u32; part.key.len()];
    for (j, &k) in part.key.iter().enumerate() {
        let f = &mut fill[part.local(k)];
        perm[*f] = j as u32;
        *f += 1;
    }
    for i in 0..nk {
        let run = &mut perm[start[i]..start[i + 1]];
        if run
            .windows(2)
            .any(|w| part.ts[w[1] as usize] < part.ts[w[0] as usize])
        {
            run.sort_by_key(|&j| part.ts[j as usize]);
        }
    }
    perm
}

impl Partitions {
    /// Split rows into key-range partitions, each key's rows walked in time order.
    pub fn new(keys: &[u32], n_keys: usize, ts: &[i64]) -> Partitions {
        Partitions::build(keys, ts, Scan::new(keys, n_keys, ts))
    }

    fn build(keys: &[u32], ts: &[i64], scan: Scan) -> Partitions {
        let n = keys.len();
        let n_keys = scan.counts.len();
        let threads = rayon::current_num_threads().max(1);
        let rows: usize = scan.counts.iter().sum();
        let target = rows.div_ceil(threads * 4).max(1);
        // Key ranges: cut when a range has its share of rows or enough keys.
        let mut ranges = Vec::new();
        let (mut start, mut acc) = (0, 0);
        for (k, &c) in scan.counts.iter().enumerate() {
            acc += c;
            if acc >= target || k + 1 - start >= MAX_PART_KEYS {
                ranges.push(start..k + 1);
                (start, acc) = (k + 1, 0);
            }
        }
        if start < n_keys {
            ranges.push(start..n_keys);
        }
        let mut part_of = vec![u32::MAX; n_keys];
        for (p, r) in ranges.iter().enumerate() {
            part_of[r.clone()].iter_mut().for_each(|x| *x = p as u32);
        }
        // Thread spans of the input, and each span's start in every part.
        let per = n.div_ceil(threads).max(1);
        let span_ranges: Vec<Range<usize>> =
            (0..n).step_by(per).map(|a| a..(a + per).min(n)).collect();
        let counts: Vec<Vec<usize>> = span_ranges
            .par_iter()
            .map(|r| {
                let mut c = vec![0usize; ranges.len()];
                for &k in &keys[r.clone()] {
                    if k != NULL_KEY {
                        c[part_of[k as usize] as usize] += 1;
                    }
                }
                c
            })
            .collect();
        let mut next = vec![0usize; ranges.len()];
        let spans: Vec<(Range<usize>, Vec<usize>)> = span_ranges
            .into_iter()
            .zip(&counts)
            .map(|(r, c)| {
                let starts = next.clone();
                next.iter_mut().zip(c).for_each(|(a, b)| *a += b);
                (r, starts)
            })
            .collect();
        let mut parts: Vec<Part> = ranges
            .into_iter()
            .zip(&next)
            .map(|(keys, &len)| Part {
                keys,
                key: vec![0; len],
                ts: vec![0; len],
                row: vec![0; len],
                perm: Vec::new(),
            })
            .collect();
        let mut p = Partitions {
            part_of,
            parts: Vec::new(),
            spans,
            n,
        };
        {
            let mut key: Vec<&mut [u32]> = parts.iter_mut().map(|x| x.key.as_mut_slice()).collect();
            p.scatter(keys, keys, &mut key);
        }
        {
            let mut t: Vec<&mut [i64]> = parts.iter_mut().map(|x| x.ts.as_mut_slice()).collect();
            p.scatter(keys, ts, &mut t);
        }
        {
            let ids: Vec<u32> = (0..n as u32).collect();
            let mut r: Vec<&mut [u32]> = parts.iter_mut().map(|x| x.row.as_mut_slice()).collect();
            p.scatter(keys, &ids, &mut r);
        }
        if !scan.time_ordered {
            parts.par_iter_mut().for_each(|part| {
                let back = {
                    let mut last = vec![i64::MIN; part.keys.len()];
                    part.key.iter().zip(&part.ts).any(|(&k, &t)| {
                        let l = &mut last[k as usize - part.keys.start];
                        let b = t < *l;
                        *l = t;
                        b
                    })
                };
                if back {
                    part.perm = time_order(part);
                }
            });
        }
        p.parts = parts;
        p
    }

    /// Copy `col` (one value per input row) into `out[part]`, in arrival order.
    fn scatter<T: Copy + Send + Sync>(&self, keys: &[u32], col: &[T], out: &mut [&mut [T]]) {
        // Cut every part's output into one slice per thread span.
        let mut per_span: Vec<Vec<&mut [T]>> = (0..self.spans.len()).map(|_| Vec::new()).collect();
        for (p, dst) in out.iter_mut().enumerate() {
            let mut rest: &mut [T] = std::mem::take(dst);
            for (s, (_, starts)) in self.spans.iter().enumerate() {
                let end = self
                    .spans
                    .get(s + 1)
                    .map_or(rest.len() + starts[p], |n| n.1[p]);
                let (a, b) = rest.split_at_mut(end - starts[p]);
                per_span[s].push(a);
                rest = b;
            }
        }
        per_span
            .into_par_iter()
            .zip(&self.spans)
            .for_each(|(mut dst, (r, _))| {
                let mut cur = vec![0usize; dst.len()];
                for i in r.clone() {
                    let k = keys[i];
                    if k != NULL_KEY {
                        let p = self.part_of[k as usize] as usize;
                        dst[p][cur[p]] = col[i];
                        cur[p] += 1;
                    }
                }
            });
    }

    /// A value column split into the partitions, in their arrival order.
    pub fn split<T: Copy + Default + Send + Sync>(&self, keys: &[u32], col: &[T]) -> Vec<Vec<T>> {
        let mut out: Vec<Vec<T>> = self
            .parts
            .iter()
            .map(|p| vec![T::default(); p.len()])
            .collect();
        let mut dst: Vec<&mut [T]> = out.iter_mut().map(|v| v.as_mut_slice()).collect();
        self.scatter(keys, col, &mut dst);
        out
    }

    /// Per-partition results (in each partition's arrival order) back in
    /// input row order; rows with a null key get `fill`.
    pub fn merge<T: Copy + Send + Sync>(&self, keys: &[u32], parts: &[Vec<T>], fill: T) -> Vec<T> {
        let mut out = vec![fill; self.n];
        let mut chunks: Vec<&mut [T]> = Vec::with_capacity(self.spans.len());
        let mut rest = out.as_mut_slice();
        for (r, _) in &self.spans {
            let (a, b) = rest.split_at_mut(r.len());
            chunks.push(a);
            rest = b;
        }
        chunks
            .into_par_iter()
            .zip(&self.spans)
            .for_each(|(dst, (r, starts))| {
                let mut cur = starts.clone();
                for (o, &k) in dst.iter_mut().zip(&keys[r.clone()]) {
                    if k != NULL_KEY {
                        let p = self.part_of[k as usize] as usize;
                        *o = parts[p][cur[p]];
                        cur[p] += 1;
                    }
                }
            });
        out
    }

    /// Rows of the input.
    pub fn n_rows(&self) -> usize {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_when_each_key_rises_grouped_otherwise() {
        let keys = [0, 1, 0, 1];
        assert!(matches!(
            RowOrder::for_rows(&keys, 2, &[1, 0, 2, 5]),
            RowOrder::Natural(4)
        ));
        let o = RowOrder::for_rows(&keys, 2, &[3, 0, 2, 5]);
        let mut seen = vec![];
        o.for_each(|i| seen.push(i));
        assert_eq!(seen, vec![2, 0, 1, 3]);
        // A null key is left out; equal timestamps keep arrival order.
        let keys = [1, NULL_KEY, 0, 1, 1];
        let o = RowOrder::for_rows(&keys, 2, &[5, 0, 1, 5, 4]);
        let g = o.groups().unwrap();
        assert_eq!(g.group(0), &[2]);
        assert_eq!(g.group(1), &[4, 0, 3]);
        assert_eq!(g.n_rows(), 5);
    }

    #[test]
    fn partitions_split_and_merge_back_in_row_order() {
        // 700 keys interleaved in time order, a null key among them.
        let n_keys = 700;
        let mut keys: Vec<u32> = (0..100_000).map(|i| (i * 7 % n_keys) as u32).collect();
        keys[5] = NULL_KEY;
        let ts: Vec<i64> = (0..100_000).collect();
        let o = RowOrder::parallel(&keys, n_keys, &ts);
        let p = o.partitions().expect("partitioned");
        assert!(p.parts.len() >= 3);
        assert!(p.parts.iter().all(|x| x.keys.len() <= MAX_PART_KEYS));
        assert_eq!(p.parts.iter().map(|x| x.len()).sum::<usize>(), 99_999);
        for part in &p.parts {
            // Arrival order within a partition, only its keys.
            assert!(part.row.windows(2).all(|w| w[0] < w[1]));
            assert!(part.key.iter().all(|k| part.keys.contains(&(*k as usize))));
        }
        let v: Vec<f64> = (0..100_000).map(|i| i as f64 * 0.5).collect();
        let split = p.split(&keys, &v);
        let back = p.merge(&keys, &split, -1.0);
        assert_eq!(back[5], -1.0);
        assert!((0..100_000).filter(|&i| i != 5).all(|i| back[i] == v[i]));
        // Out of order: each key's rows are walked in time order.
        let mut ts2 = ts.clone();
        ts2.reverse();
        let o = RowOrder::parallel(&keys, n_keys, &ts2);
        let mut last = vec![i64::MIN; n_keys];
        let mut seen = 0;
        o.for_each(|i| {
            let k = keys[i] as usize;
            assert!(ts2[i] >= last[k]);
            last[k] = ts2[i];
            seen += 1;
        });
        assert_eq!(seen, 99_999);
        // Equal timestamps keep arrival order within a key.
        let o = RowOrder::partitioned(&[1, 0, 1, 1], 2, &[5, 1, 5, 4]);
        let mut seen = vec![];
        o.for_each(|i| seen.push(i));
        assert_eq!(seen, vec![1, 3, 0, 2]);
        // Small and time-ordered: walked as it is.
        let few = RowOrder::parallel(&keys[..10], n_keys, &ts[..10]);
        assert!(matches!(few, RowOrder::Natural(10)));
    }
}
