//! The order in which kernels visit rows. Per-key kernels need each key's
//! rows in time order; a stream in arrival order (interleaved across keys,
//! each key's timestamps rising) already is, so the natural order is used
//! and nothing is sorted. Otherwise a stable `(key, ts)` permutation is made
//! once and shared by all kernels of a job.

use super::keys::NULL_KEY;

/// Row visiting order for per-key kernels.
#[derive(Debug, Clone)]
pub enum RowOrder {
    /// Rows `0..n` as they are: every key's timestamps are non-decreasing.
    Natural(usize),
    /// A permutation: rows sorted by (key, ts), stable for ties.
    Sorted(Vec<u32>),
}

impl RowOrder {
    /// The cheapest order in which every key's rows come in time order.
    pub fn for_rows(keys: &[u32], n_keys: usize, ts: &[i64]) -> RowOrder {
        if is_time_ordered(keys, n_keys, ts) {
            RowOrder::Natural(keys.len())
        } else {
            let mut idx: Vec<u32> = (0..keys.len() as u32).collect();
            idx.sort_by_key(|&i| (keys[i as usize], ts[i as usize]));
            RowOrder::Sorted(idx)
        }
    }

    /// Visit every row index in order.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(usize)) {
        match self {
            RowOrder::Natural(n) => (0..*n).for_each(f),
            RowOrder::Sorted(idx) => idx.iter().for_each(|&i| f(i as usize)),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            RowOrder::Natural(n) => *n,
            RowOrder::Sorted(idx) => idx.len(),
        }
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether each key's timestamps are non-decreasing in row order (null keys
/// are ignored).
pub fn is_time_ordered(keys: &[u32], n_keys: usize, ts: &[i64]) -> bool {
    let mut last = vec![i64::MIN; n_keys];
    keys.iter().zip(ts).all(|(&k, &t)| {
        if k == NULL_KEY {
            return true;
        }
        let l = &mut last[k as usize];
        let ok = t >= *l;
        *l = t;
        ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_when_each_key_rises_sorted_otherwise() {
        let keys = [0, 1, 0, 1];
        assert!(matches!(
            RowOrder::for_rows(&keys, 2, &[1, 0, 2, 5]),
            RowOrder::Natural(4)
        ));
        let o = RowOrder::for_rows(&keys, 2, &[3, 0, 2, 5]);
        let mut seen = vec![];
        o.for_each(|i| seen.push(i));
        assert_eq!(seen, vec![2, 0, 1, 3]);
    }
}
