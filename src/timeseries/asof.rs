//! As-of join: for every left row (a reading), the right row (a state, a
//! setpoint, a product change) of the same key whose timestamp is the
//! closest before, after or either side, optionally within a tolerance.
//!
//! The right side is grouped per key once (a counting sort; it is the small
//! side in practice). The left side is walked in row order with two cursors
//! per key (`# right ts < t` and `# right ts <= t`); for a stream in time
//! order the cursors only move forward, so the whole join is one pass over
//! each side. A left key whose timestamps go backwards gets its cursors
//! re-placed by binary search, so any order gives the same answer.

use super::keys::NULL_KEY;
use rayon::prelude::*;

use super::order::RowOrder;
use super::{same_len, TsError};

/// Which right row matches a left row at time `t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsofDirection {
    /// The last right row with `ts <= t`.
    Backward,
    /// The first right row with `ts >= t`.
    Forward,
    /// The closer of the two; a tie goes to the backward one.
    Nearest,
}

impl std::str::FromStr for AsofDirection {
    type Err = TsError;
    fn from_str(s: &str) -> Result<Self, TsError> {
        match s.to_ascii_lowercase().as_str() {
            "backward" => Ok(AsofDirection::Backward),
            "forward" => Ok(AsofDirection::Forward),
            "nearest" => Ok(AsofDirection::Nearest),
            other => Err(TsError::Param(format!(
                "as-of direction `{other}`: expected backward, forward or nearest"
            ))),
        }
    }
}

/// No match for a left row.
pub const NO_MATCH: u32 = u32::MAX;

/// The right side grouped by key, each group sorted by time.
struct Right {
    offsets: Vec<usize>,
    ts: Vec<i64>,
    row: Vec<u32>,
}

/// Where one key's left rows have got to in its right group: `lt` = first
/// right row with ts >= the last left ts, `le` = first with ts > it.
#[derive(Clone, Copy)]
struct Cursor {
    lt: usize,
    le: usize,
    last: i64,
}

impl Right {
    fn new(keys: &[u32], ts: &[i64], n_keys: usize) -> Right {
        let mut offsets = vec![0usize; n_keys + 1];
        for &k in keys.iter().filter(|&&k| k != NULL_KEY) {
            offsets[k as usize + 1] += 1;
        }
        for k in 0..n_keys {
            offsets[k + 1] += offsets[k];
        }
        let total = offsets[n_keys];
        let mut fill = offsets.clone();
        let mut row = vec![0u32; total];
        for (i, &k) in keys.iter().enumerate() {
            if k != NULL_KEY {
                row[fill[k as usize]] = i as u32;
                fill[k as usize] += 1;
            }
        }
        for k in 0..n_keys {
            // Stable: equal timestamps keep row order.
            row[offsets[k]..offsets[k + 1]].sort_by_key(|&r| ts[r as usize]);
        }
        let ts = row.iter().map(|&r| ts[r as usize]).collect();
        Right { offsets, ts, row }
    }

    fn cursor(&self, k: usize) -> Cursor {
        Cursor {
            lt: self.offsets[k],
            le: self.offsets[k],
            last: i64::MIN,
        }
    }

    /// The match of a left row of key `k` at `t`; `c` is the key's cursor.
    #[inline]
    fn find(
        &self,
        k: usize,
        c: &mut Cursor,
        t: i64,
        direction: AsofDirection,
        tolerance_ms: Option<i64>,
    ) -> u32 {
        let (start, end) = (self.offsets[k], self.offsets[k + 1]);
        if t < c.last {
            let group = &self.ts[start..end];
            c.lt = start + group.partition_point(|&x| x < t);
            c.le = start + group.partition_point(|&x| x <= t);
        } else {
            let (mut a, mut b) = (c.lt, c.le.max(c.lt));
            while a < end && self.ts[a] < t {
                a += 1;
            }
            b = b.max(a);
            while b < end && self.ts[b] <= t {
                b += 1;
            }
            c.lt = a;
            c.le = b;
        }
        c.last = t;
        let back = (c.le > start).then(|| c.le - 1);
        let fwd = (c.lt < end).then_some(c.lt);
        let pick = match direction {
            AsofDirection::Backward => back,
            AsofDirection::Forward => fwd,
            AsofDirection::Nearest => match (back, fwd) {
                (Some(b), Some(f)) => Some(if t - self.ts[b] <= self.ts[f] - t {
                    b
                } else {
                    f
                }),
                (b, f) => b.or(f),
            },
        };
        let pick = pick.filter(|&p| tolerance_ms.is_none_or(|tol| (t - self.ts[p]).abs() <= tol));
        pick.map_or(NO_MATCH, |p| self.row[p])
    }
}

/// For each left row, the index of its matching right row, or [`NO_MATCH`].
/// Keys must come from one [`super::KeyInterner`] (codes `< n_keys`).
/// `tolerance_ms` bounds `|left ts - right ts|`. The left rows are walked in
/// arrival order when they come in time order from a few keys, otherwise
/// split into key ranges ([`RowOrder::parallel`]) and matched on all worker
/// threads.
pub fn asof_join(
    left_keys: &[u32],
    left_ts: &[i64],
    right_keys: &[u32],
    right_ts: &[i64],
    n_keys: usize,
    direction: AsofDirection,
    tolerance_ms: Option<i64>,
) -> Result<Vec<u32>, TsError> {
    let n = same_len("as-of left key/ts", &[left_keys.len(), left_ts.len()])?;
    same_len("as-of right key/ts", &[right_keys.len(), right_ts.len()])?;
    if tolerance_ms.is_some_and(|t| t < 0) {
        return Err(TsError::Param("as-of tolerance must be >= 0".into()));
    }
    if let Some(&k) = left_keys
        .iter()
        .chain(right_keys)
        .find(|&&k| k != NULL_KEY && k as usize >= n_keys)
    {
        return Err(TsError::Param(format!("key code {k} >= {n_keys} keys")));
    }
    let right = Right::new(right_keys, right_ts, n_keys);
    let mut out = vec![NO_MATCH; n];
    let order = RowOrder::parallel(left_keys, n_keys, left_ts);
    match order.partitions() {
        None => {
            let mut cur: Vec<Cursor> = (0..n_keys).map(|k| right.cursor(k)).collect();
            order.for_each(|i| {
                let k = left_keys[i];
                if k != NULL_KEY {
                    let k = k as usize;
                    out[i] = right.find(k, &mut cur[k], left_ts[i], direction, tolerance_ms);
                }
            });
        }
        Some(p) => {
            let parts: Vec<Vec<u32>> = p
                .parts
                .par_iter()
                .map(|part| {
                    // In visiting order (see `Part::gather`), back at the end.
                    let key = part.gather(&part.key);
                    let ts = part.gather(&part.ts);
                    let mut m = vec![NO_MATCH; part.len()];
                    let mut cur: Vec<Cursor> = part.keys.clone().map(|k| right.cursor(k)).collect();
                    for (j, (&k, &t)) in key.iter().zip(ts.iter()).enumerate() {
                        let k = k as usize;
                        let c = &mut cur[k - part.keys.start];
                        m[j] = right.find(k, c, t, direction, tolerance_ms);
                    }
                    part.ungather(m)
                })
                .collect();
            out = p.merge(left_keys, &parts, NO_MATCH);
        }
    }
    Ok(out)
}

/// The simple definition, for tests: scan every right row.
#[cfg(test)]
pub(crate) fn asof_reference(
    lk: &[u32],
    lt: &[i64],
    rk: &[u32],
    rt: &[i64],
    dir: AsofDirection,
    tol: Option<i64>,
) -> Vec<u32> {
    lk.iter()
        .zip(lt)
        .map(|(&k, &t)| {
            let cands = (0..rk.len()).filter(|&j| rk[j] == k);
            // Among equal right timestamps: the last row going backward, the
            // first going forward (what a stable sort + cursor gives).
            let back = cands.clone().filter(|&j| rt[j] <= t).fold(
                None,
                |best: Option<usize>, j| match best {
                    Some(b) if rt[b] > rt[j] => Some(b),
                    _ => Some(j),
                },
            );
            let fwd =
                cands
                    .filter(|&j| rt[j] >= t)
                    .fold(None, |best: Option<usize>, j| match best {
                        Some(b) if rt[b] <= rt[j] => Some(b),
                        _ => Some(j),
                    });
            let pick = match dir {
                AsofDirection::Backward => back,
                AsofDirection::Forward => fwd,
                AsofDirection::Nearest => match (back, fwd) {
                    (Some(b), Some(f)) => Some(if t - rt[b] <= rt[f] - t { b } else { f }),
                    (b, f) => b.or(f),
                },
            };
            pick.filter(|&p| tol.is_none_or(|tol| (t - rt[p]).abs() <= tol))
                .map_or(NO_MATCH, |p| p as u32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backward_forward_nearest_with_tolerance() {
        // Right: key 0 at 10, 20, 30; key 1 at 15.
        let (rk, rt) = (vec![0, 1, 0, 0], vec![10, 15, 20, 30]);
        let (lk, lt) = (vec![0, 0, 0, 1, 0], vec![5, 10, 24, 100, 26]);
        let j = |d, tol| asof_join(&lk, &lt, &rk, &rt, 2, d, tol).unwrap();
        let m = NO_MATCH;
        assert_eq!(j(AsofDirection::Backward, None), vec![m, 0, 2, 1, 2]);
        assert_eq!(j(AsofDirection::Forward, None), vec![0, 0, 3, m, 3]);
        assert_eq!(j(AsofDirection::Nearest, None), vec![0, 0, 2, 1, 3]);
        assert_eq!(j(AsofDirection::Backward, Some(5)), vec![m, 0, 2, m, m]);
        assert!(asof_join(&lk, &lt, &rk, &rt, 2, AsofDirection::Nearest, Some(-1)).is_err());
    }

    fn side(max_len: usize) -> impl Strategy<Value = (Vec<u32>, Vec<i64>)> {
        prop::collection::vec((0u32..3, 0i64..60), 0..max_len).prop_map(|v| v.into_iter().unzip())
    }

    proptest! {
        #[test]
        fn agrees_with_reference(
            (lk, lt) in side(80),
            (rk, rt) in side(30),
            dir in prop_oneof![Just(AsofDirection::Backward), Just(AsofDirection::Forward), Just(AsofDirection::Nearest)],
            tol in prop::option::of(0i64..20),
        ) {
            let got = asof_join(&lk, &lt, &rk, &rt, 3, dir, tol).unwrap();
            prop_assert_eq!(got, asof_reference(&lk, &lt, &rk, &rt, dir, tol));
            // The same rows in time order are walked as they come.
            let mut by_ts: Vec<usize> = (0..lk.len()).collect();
            by_ts.sort_by_key(|&i| lt[i]);
            let (sk, st): (Vec<u32>, Vec<i64>) = by_ts.iter().map(|&i| (lk[i], lt[i])).unzip();
            let got = asof_join(&sk, &st, &rk, &rt, 3, dir, tol).unwrap();
            prop_assert_eq!(got, asof_reference(&sk, &st, &rk, &rt, dir, tol));
        }
    }
}
