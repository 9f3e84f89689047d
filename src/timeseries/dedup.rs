//! Deduplication on `(key, ts)`, keeping the first row in arrival order.
//!
//! A re-delivered reading arrives late: its timestamp is at or below the
//! newest one already seen for its key. So one pass splits rows into
//! *in-order* rows (ts above the key's running maximum: new by construction,
//! and each key's in-order timestamps form a sorted list) and *late* rows.
//! A late row is a duplicate iff its ts is in its key's sorted list (binary
//! search; an in-order row with the same ts can only have come earlier) or
//! equals an earlier kept late row (a small hash set). Exact for any order,
//! and a plain scan for the usual stream.

use foldhash::{HashSet, HashSetExt};

use super::keys::NULL_KEY;
use rayon::prelude::*;

use super::order::Partitions;
use super::{same_len, TsError};

/// Indices of the rows to keep, ascending: the first row of every
/// `(key, ts)`, among the rows where `keep` is true (all when `None`).
/// Rows with a null key are kept.
pub fn dedup_first(
    keys: &[u32],
    ts: &[i64],
    n_keys: usize,
    keep: Option<&[bool]>,
) -> Result<Vec<u32>, TsError> {
    let n = same_len("dedup key/ts", &[keys.len(), ts.len()])?;
    if let Some(m) = keep {
        same_len("dedup mask", &[n, m.len()])?;
    }
    let mut max = vec![i64::MIN; n_keys];
    let mut in_order: Vec<Vec<i64>> = vec![Vec::new(); n_keys];
    let mut out = Vec::with_capacity(n);
    let mut late = Vec::new();
    for i in 0..n {
        if keep.is_some_and(|m| !m[i]) {
            continue;
        }
        let k = keys[i];
        if k == NULL_KEY {
            out.push(i as u32);
            continue;
        }
        let (k, t) = (k as usize, ts[i]);
        if t > max[k] || in_order[k].is_empty() {
            max[k] = t;
            in_order[k].push(t);
            out.push(i as u32);
        } else {
            late.push(i as u32);
        }
    }
    if late.is_empty() {
        return Ok(out);
    }
    if late.len() > n / 16 {
        // Far from time order (a shuffled delivery): group the rows by key
        // and time instead of checking each late row on its own.
        return Ok(dedup_grouped(keys, ts, n_keys, keep));
    }
    let mut kept_late: HashSet<(u32, i64)> = HashSet::with_capacity(late.len());
    let mut keep_late = Vec::new();
    for &i in &late {
        let (k, t) = (keys[i as usize], ts[i as usize]);
        if in_order[k as usize].binary_search(&t).is_ok() {
            continue;
        }
        if kept_late.insert((k, t)) {
            keep_late.push(i);
        }
    }
    // Merge the two ascending index lists.
    let mut merged = Vec::with_capacity(out.len() + keep_late.len());
    let (mut a, mut b) = (0, 0);
    while a < out.len() || b < keep_late.len() {
        if b == keep_late.len() || (a < out.len() && out[a] < keep_late[b]) {
            merged.push(out[a]);
            a += 1;
        } else {
            merged.push(keep_late[b]);
            b += 1;
        }
    }
    Ok(merged)
}

/// [`dedup_first`] by key ranges ([`Partitions`]): each key's rows
/// visited in time order (stable, so the first arrival of a timestamp comes
/// first), the first of each run of equal timestamps kept; ranges on all
/// worker threads.
fn dedup_grouped(keys: &[u32], ts: &[i64], n_keys: usize, keep: Option<&[bool]>) -> Vec<u32> {
    let n = keys.len();
    let first: Vec<bool> = {
        let p = Partitions::new(keys, n_keys, ts);
        {
            let kept = keep.map(|m| p.split(keys, m));
            let parts: Vec<Vec<bool>> = p
                .parts
                .par_iter()
                .enumerate()
                .map(|(pi, part)| {
                    // In visiting order (see `Part::gather`), back at the end.
                    let key = part.gather(&part.key);
                    let ts = part.gather(&part.ts);
                    let kept = kept.as_ref().map(|m| part.gather(&m[pi]));
                    let mut first = vec![false; part.len()];
                    let mut prev: Vec<Option<i64>> = vec![None; part.keys.len()];
                    for (j, (&k, &t)) in key.iter().zip(ts.iter()).enumerate() {
                        let pr = &mut prev[part.local(k)];
                        if kept.as_ref().is_none_or(|m| m[j]) && *pr != Some(t) {
                            *pr = Some(t);
                            first[j] = true;
                        }
                    }
                    part.ungather(first)
                })
                .collect();
            p.merge(keys, &parts, false)
        }
    };
    (0..n)
        .filter(|&i| first[i] || (keys[i] == NULL_KEY && keep.is_none_or(|m| m[i])))
        .map(|i| i as u32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(keys: &[u32], ts: &[i64], keep: &[bool]) -> Vec<u32> {
        let mut seen = std::collections::HashSet::new();
        (0..keys.len())
            .filter(|&i| keep[i] && seen.insert((keys[i], ts[i])))
            .map(|i| i as u32)
            .collect()
    }

    #[test]
    fn late_redelivery_is_dropped_late_new_row_kept() {
        let keys = [0, 0, 1, 0, 0, 0];
        let ts = [10, 20, 10, 10, 15, 15];
        assert_eq!(dedup_first(&keys, &ts, 2, None).unwrap(), vec![0, 1, 2, 4]);
        let mask = [false, true, true, true, true, true];
        assert_eq!(
            dedup_first(&keys, &ts, 2, Some(&mask)).unwrap(),
            vec![1, 2, 3, 4]
        );
    }

    proptest! {
        #[test]
        fn agrees_with_reference(rows in prop::collection::vec((0u32..4, 0i64..30, any::<bool>()), 0..200)) {
            let keys: Vec<u32> = rows.iter().map(|r| r.0).collect();
            let ts: Vec<i64> = rows.iter().map(|r| r.1).collect();
            let keep: Vec<bool> = rows.iter().map(|r| r.2).collect();
            prop_assert_eq!(dedup_first(&keys, &ts, 4, Some(&keep)).unwrap(), reference(&keys, &ts, &keep));
            prop_assert_eq!(dedup_grouped(&keys, &ts, 4, Some(&keep)), reference(&keys, &ts, &keep));
        }
    }
}
