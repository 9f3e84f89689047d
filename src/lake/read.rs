//! Reading tables back: asset history for the API and the latest checkpoint of
//! every twin at start-up. Queries go through DataFusion over the Delta table,
//! with partition (plant, date) and column pruning; filters are built as
//! expressions, never by pasting user text into SQL.

use std::collections::HashMap;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use deltalake::datafusion::prelude::{col, lit, SessionContext};
use deltalake::datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use serde::Serialize;

use super::{LakeError, Lakehouse, Table};
use crate::time::day_of;

/// One point of an asset's history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HistoryPoint {
    /// Source timestamp, UTC ms.
    pub ts: i64,
    pub signal: String,
    pub value: f64,
    pub quality: String,
}

/// A history query over `silver.readings`.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub plant: String,
    pub asset_id: String,
    pub signal: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: usize,
}

impl HistoryQuery {
    /// Rows of the asset (and signal, if given) in `[from, to]`, with the
    /// partitions (plant, date) pruned.
    fn filter(&self) -> deltalake::datafusion::prelude::Expr {
        let mut f = col("plant")
            .eq(lit(self.plant.as_str()))
            .and(col("date").gt_eq(lit(ScalarValue::Date32(Some(day_of(self.from_ms))))))
            .and(col("date").lt_eq(lit(ScalarValue::Date32(Some(day_of(self.to_ms))))))
            .and(col("asset_id").eq(lit(self.asset_id.as_str())))
            .and(col("ts").gt_eq(ts_lit(self.from_ms)))
            .and(col("ts").lt_eq(ts_lit(self.to_ms)));
        if let Some(s) = &self.signal {
            f = f.and(col("signal").eq(lit(s.as_str())));
        }
        f
    }
}

fn ts_lit(ms: i64) -> deltalake::datafusion::prelude::Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(ms * 1000),
        Some("UTC".into()),
    ))
}

/// A signal's history in equal time buckets (columns of equal length,
/// buckets without data left out): what a chart of a long range draws.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct HistoryBuckets {
    /// Bucket start, UTC ms.
    pub ts: Vec<i64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub avg: Vec<f64>,
    /// The bucket's last value (by source time).
    pub last: Vec<f64>,
    pub count: Vec<i64>,
}

pub(super) async fn open(
    lake: &Lakehouse,
    t: Table,
) -> Result<(SessionContext, DeltaTable), LakeError> {
    let table = lake.open_or_create(t).await?;
    let ctx = SessionContext::new();
    table
        .update_datafusion_session(&ctx.state())
        .map_err(|source| LakeError::Delta {
            table: t.name(),
            source,
        })?;
    Ok((ctx, table))
}

impl Lakehouse {
    /// The newest `limit` points of an asset in `[from, to]`, oldest first.
    /// The second value tells whether older points were cut by the limit.
    pub async fn history(&self, q: &HistoryQuery) -> Result<(Vec<HistoryPoint>, bool), LakeError> {
        let t = Table::SilverReadings;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let (ctx, table) = open(self, t).await?;
        let provider = table.table_provider().await.map_err(qerr)?;
        let df = ctx
            .read_table(provider)
            .map_err(qerr)?
            .filter(q.filter())
            .map_err(qerr)?
            .select(vec![col("ts"), col("signal"), col("value"), col("quality")])
            .map_err(qerr)?
            .sort(vec![
                col("ts").sort(false, false),
                col("signal").sort(true, false),
            ])
            .map_err(qerr)?
            .limit(0, Some(q.limit + 1))
            .map_err(qerr)?;
        let batches = df.collect().await.map_err(qerr)?;
        let mut out = Vec::new();
        for b in &batches {
            let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
            let sig = string_column(b, 1)?;
            let val = b.column(2).as_primitive::<Float64Type>();
            let qual = string_column(b, 3)?;
            for i in 0..b.num_rows() {
                out.push(HistoryPoint {
                    ts: ts.value(i) / 1000,
                    signal: sig.value(i).to_string(),
                    value: val.value(i),
                    quality: qual.value(i).to_string(),
                });
            }
        }
        let truncated = out.len() > q.limit;
        out.truncate(q.limit);
        out.reverse();
        Ok((out, truncated))
    }

    /// One signal (`q.signal`) of an asset over `[from, to]` in buckets of `bucket_ms`
    /// (aligned to multiples of `bucket_ms` since the epoch), oldest first.
    /// The aggregation runs in DataFusion: a day of 1 Hz data comes back
    /// as a few hundred rows.
    pub async fn history_buckets(
        &self,
        q: &HistoryQuery,
        bucket_ms: i64,
    ) -> Result<HistoryBuckets, LakeError> {
        use deltalake::arrow::datatypes::{DataType, Int64Type};
        use deltalake::datafusion::functions_aggregate::expr_fn::{
            avg, count, last_value, max, min,
        };
        use deltalake::datafusion::prelude::cast;
        let t = Table::SilverReadings;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let (ctx, table) = open(self, t).await?;
        let provider = table.table_provider().await.map_err(qerr)?;
        let bucket_us = bucket_ms.max(1) * 1000;
        let us = cast(col("ts"), DataType::Int64);
        let bucket = (us.clone() - us % lit(bucket_us)).alias("bucket");
        let df = ctx
            .read_table(provider)
            .map_err(qerr)?
            .filter(q.filter())
            .map_err(qerr)?
            .aggregate(
                vec![bucket],
                vec![
                    min(col("value")).alias("min"),
                    max(col("value")).alias("max"),
                    avg(col("value")).alias("avg"),
                    last_value(col("value"), vec![col("ts").sort(true, false)]).alias("last"),
                    count(col("value")).alias("count"),
                ],
            )
            .map_err(qerr)?
            .sort(vec![col("bucket").sort(true, false)])
            .map_err(qerr)?;
        let batches = df.collect().await.map_err(qerr)?;
        let mut out = HistoryBuckets::default();
        for b in &batches {
            let bk = b.column(0).as_primitive::<Int64Type>();
            let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
            let (mn, mx, av, la) = (f(1), f(2), f(3), f(4));
            let n = b.column(5).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                out.ts.push(bk.value(i) / 1000);
                out.min.push(mn.value(i));
                out.max.push(mx.value(i));
                out.avg.push(av.value(i));
                out.last.push(la.value(i));
                out.count.push(n.value(i));
            }
        }
        Ok(out)
    }

    /// The newest checkpoint (`stats` JSON) of every asset in `gold.asset_state`.
    ///
    /// Every round adds a row per twin (100,000 twins every 30 s: 288
    /// million rows a day), so this reads the last 10 minutes first (a
    /// restart after a short stop finds every twin there, and the files
    /// of older rounds are skipped by their `ts` statistics), and looks
    /// further back (a day, a week, a month, everything) only for
    /// `expected` assets not found: start-up does not slow down as the
    /// table's history grows.
    pub async fn latest_checkpoints(
        &self,
        expected: &[&str],
    ) -> Result<HashMap<String, String>, LakeError> {
        const MIN: i64 = 60_000;
        const DAY: i64 = 86_400_000;
        let now = crate::time::now_ms();
        let mut out = HashMap::new();
        for back in [
            Some(10 * MIN),
            Some(DAY),
            Some(7 * DAY),
            Some(31 * DAY),
            None,
        ] {
            out = self.latest_checkpoints_since(back.map(|b| now - b)).await?;
            if expected.iter().all(|a| out.contains_key(*a)) {
                break;
            }
        }
        Ok(out)
    }

    /// The newest checkpoint of every asset with one at or after `since`
    /// (UTC ms; all of them: `None`).
    async fn latest_checkpoints_since(
        &self,
        since: Option<i64>,
    ) -> Result<HashMap<String, String>, LakeError> {
        self.newest_checkpoints(since.map_or(lit(true), rows_since))
            .await
    }

    /// The newest `stats` of every asset among the rows `filter` keeps, in
    /// two passes so that the checkpoints superseded by newer rounds are
    /// never read: the first reads only `asset_id` and `ts` and finds each
    /// asset's newest `ts`; the second reads `stats` only in the few time
    /// ranges those fall in (one per round, a few seconds wide), so the
    /// files of older rounds are pruned by their statistics, and streams
    /// the batches instead of holding them all.
    async fn newest_checkpoints(
        &self,
        filter: deltalake::datafusion::prelude::Expr,
    ) -> Result<HashMap<String, String>, LakeError> {
        use deltalake::datafusion::functions_aggregate::expr_fn::max;
        use futures::StreamExt;
        let t = Table::GoldAssetState;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let (ctx, table) = open(self, t).await?;
        let provider = table.table_provider().await.map_err(qerr)?;
        let batches = ctx
            .read_table(provider.clone())
            .map_err(qerr)?
            .filter(filter.clone())
            .map_err(qerr)?
            .aggregate(vec![col("asset_id")], vec![max(col("ts")).alias("ts")])
            .map_err(qerr)?
            .collect()
            .await
            .map_err(qerr)?;
        let mut newest: HashMap<String, i64> = HashMap::new();
        for b in &batches {
            let a = string_column(b, 0)?;
            let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                if ts.is_valid(i) {
                    newest.insert(a.value(i).to_string(), ts.value(i));
                }
            }
        }
        let Some(in_ranges) = checkpoint_ranges(newest.values().copied())
            .into_iter()
            .map(|(lo, hi)| {
                let us = |v| {
                    lit(ScalarValue::TimestampMicrosecond(
                        Some(v),
                        Some("UTC".into()),
                    ))
                };
                col("ts").between(us(lo), us(hi))
            })
            .reduce(|a, b| a.or(b))
        else {
            return Ok(HashMap::new());
        };
        let mut stream = ctx
            .read_table(provider)
            .map_err(qerr)?
            .filter(filter.and(in_ranges))
            .map_err(qerr)?
            .select(vec![col("asset_id"), col("ts"), col("stats")])
            .map_err(qerr)?
            .execute_stream()
            .await
            .map_err(qerr)?;
        let mut out = HashMap::with_capacity(newest.len());
        while let Some(b) = stream.next().await {
            let b = b.map_err(qerr)?;
            let a = string_column(&b, 0)?;
            let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
            let s = string_column(&b, 2)?;
            for i in 0..b.num_rows() {
                let id = a.value(i);
                if ts.is_valid(i) && newest.get(id) == Some(&ts.value(i)) {
                    out.insert(id.to_string(), s.value(i).to_string());
                }
            }
        }
        Ok(out)
    }
}

/// Rows at or after `ms` (UTC): the `date` partitions from its day on, and
/// `ts` for the files and rows within them.
fn rows_since(ms: i64) -> deltalake::datafusion::prelude::Expr {
    col("date")
        .gt_eq(lit(ScalarValue::Date32(Some(day_of(ms)))))
        .and(col("ts").gt_eq(ts_lit(ms)))
}

/// The time ranges (µs, inclusive) that hold the given checkpoint times:
/// times closer than `ROUND_GAP_US` share a range (a round of checkpoints
/// takes a few seconds, rounds are tens of seconds apart), and at most
/// `MAX_RANGES` ranges are kept by closing the smallest gaps, so that the
/// filter stays short when a few assets stopped checkpointing long ago.
fn checkpoint_ranges(times: impl Iterator<Item = i64>) -> Vec<(i64, i64)> {
    const ROUND_GAP_US: i64 = 5_000_000;
    const MAX_RANGES: usize = 16;
    let mut ts: Vec<i64> = times.collect();
    ts.sort_unstable();
    ts.dedup();
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for t in ts {
        match ranges.last_mut() {
            Some(r) if t - r.1 <= ROUND_GAP_US => r.1 = t,
            _ => ranges.push((t, t)),
        }
    }
    while ranges.len() > MAX_RANGES {
        let i = (1..ranges.len())
            .min_by_key(|&i| ranges[i].0 - ranges[i - 1].1)
            .expect("more than one range");
        ranges[i - 1].1 = ranges[i].1;
        ranges.remove(i);
    }
    ranges
}

impl Lakehouse {
    /// The newest checkpoint of one twin (what a twin restarts from), if
    /// `gold.asset_state` holds one: the most recent rows first.
    pub async fn latest_checkpoint(
        &self,
        plant: &str,
        asset_id: &str,
    ) -> Result<Option<String>, LakeError> {
        let now = crate::time::now_ms();
        let of = col("plant")
            .eq(lit(plant))
            .and(col("asset_id").eq(lit(asset_id)));
        let after = |ms: i64| of.clone().and(rows_since(ms));
        // A running twin checkpointed within the last interval: the last
        // 10 minutes first, then the last day, then everything.
        for filter in [after(now - 600_000), after(now - 86_400_000), of.clone()] {
            if let Some(cp) = self.newest_checkpoints(filter).await?.remove(asset_id) {
                return Ok(Some(cp));
            }
        }
        Ok(None)
    }
}

/// A reading to look for in `silver.readings`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadingKey {
    pub plant: String,
    pub asset_id: String,
    pub signal: String,
    pub ts_ms: i64,
}

impl Lakehouse {
    /// Which of `keys` `silver.readings` holds (exact `(asset_id, signal,
    /// ts)` matches), with the ingest time of the row, reading only the
    /// `(plant, date)` partitions concerned.
    pub async fn find_readings(
        &self,
        keys: &[ReadingKey],
    ) -> Result<HashMap<ReadingKey, i64>, LakeError> {
        use std::collections::{BTreeMap, BTreeSet, HashSet};
        let t = Table::SilverReadings;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let mut found = HashMap::new();
        if keys.is_empty() {
            return Ok(found);
        }
        let (ctx, table) = open(self, t).await?;
        let wanted: HashSet<&ReadingKey> = keys.iter().collect();
        // One query per plant: partitions pruned by plant and date.
        let mut by_plant: BTreeMap<&str, Vec<&ReadingKey>> = BTreeMap::new();
        for k in keys {
            by_plant.entry(k.plant.as_str()).or_default().push(k);
        }
        for (plant, ks) in by_plant {
            let days: BTreeSet<i32> = ks.iter().map(|k| day_of(k.ts_ms)).collect();
            let assets: BTreeSet<&str> = ks.iter().map(|k| k.asset_id.as_str()).collect();
            let ts: BTreeSet<i64> = ks.iter().map(|k| k.ts_ms).collect();
            let filter = col("plant")
                .eq(lit(plant))
                .and(
                    col("date").in_list(
                        days.iter()
                            .map(|d| lit(ScalarValue::Date32(Some(*d))))
                            .collect(),
                        false,
                    ),
                )
                .and(col("asset_id").in_list(assets.iter().map(|a| lit(*a)).collect(), false))
                .and(col("ts").in_list(ts.iter().map(|t| ts_lit(*t)).collect(), false));
            let provider = table.table_provider().await.map_err(qerr)?;
            let batches = ctx
                .read_table(provider)
                .map_err(qerr)?
                .filter(filter)
                .map_err(qerr)?
                .select(vec![
                    col("asset_id"),
                    col("signal"),
                    col("ts"),
                    col("ingest_ts"),
                ])
                .map_err(qerr)?
                .collect()
                .await
                .map_err(qerr)?;
            for b in &batches {
                let a = string_column(b, 0)?;
                let sg = string_column(b, 1)?;
                let t = b.column(2).as_primitive::<TimestampMicrosecondType>();
                let it = b.column(3).as_primitive::<TimestampMicrosecondType>();
                for i in 0..b.num_rows() {
                    let k = ReadingKey {
                        plant: plant.to_string(),
                        asset_id: a.value(i).to_string(),
                        signal: sg.value(i).to_string(),
                        ts_ms: t.value(i) / 1000,
                    };
                    if wanted.contains(&k) {
                        found.insert(k, it.value(i) / 1000);
                    }
                }
            }
        }
        Ok(found)
    }

    /// `(asset_id, signal, ts_ms)` of every row of `silver.readings` of
    /// `plant` for `assets` with `from_ms <= ts <= to_ms` (only the
    /// partitions of those days are read): what a batch of older readings
    /// is checked against before it is accepted.
    pub async fn reading_keys_between(
        &self,
        plant: &str,
        assets: &[&str],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<std::collections::HashSet<(String, String, i64)>, LakeError> {
        let t = Table::SilverReadings;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let mut out = std::collections::HashSet::new();
        if assets.is_empty() || from_ms > to_ms {
            return Ok(out);
        }
        let (ctx, table) = open(self, t).await?;
        let filter = col("plant")
            .eq(lit(plant))
            .and(col("date").gt_eq(lit(ScalarValue::Date32(Some(day_of(from_ms))))))
            .and(col("date").lt_eq(lit(ScalarValue::Date32(Some(day_of(to_ms))))))
            .and(col("asset_id").in_list(assets.iter().map(|a| lit(*a)).collect(), false))
            .and(col("ts").gt_eq(ts_lit(from_ms)))
            .and(col("ts").lt_eq(ts_lit(to_ms)));
        let provider = table.table_provider().await.map_err(qerr)?;
        let batches = ctx
            .read_table(provider)
            .map_err(qerr)?
            .filter(filter)
            .map_err(qerr)?
            .select(vec![col("asset_id"), col("signal"), col("ts")])
            .map_err(qerr)?
            .collect()
            .await
            .map_err(qerr)?;
        for b in &batches {
            let a = string_column(b, 0)?;
            let sg = string_column(b, 1)?;
            let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                out.insert((
                    a.value(i).to_string(),
                    sg.value(i).to_string(),
                    ts.value(i) / 1000,
                ));
            }
        }
        Ok(out)
    }

    /// The newest `ts` per value of the `keys` columns of a table, over
    /// rows with `from_ms <= ts <= until_ms` (partitions before `from_ms`
    /// are not read): watermarks, data horizons, the last event per asset.
    pub async fn newest_ts(
        &self,
        t: Table,
        keys: &[&str],
        from_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(Vec<String>, i64)>, LakeError> {
        use deltalake::datafusion::functions_aggregate::expr_fn::max;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let (ctx, table) = open(self, t).await?;
        let provider = table.table_provider().await.map_err(qerr)?;
        let batches = ctx
            .read_table(provider)
            .map_err(qerr)?
            .filter(
                col("date")
                    .gt_eq(lit(ScalarValue::Date32(Some(day_of(from_ms)))))
                    .and(col("ts").gt_eq(ts_lit(from_ms)))
                    .and(col("ts").lt_eq(ts_lit(until_ms))),
            )
            .map_err(qerr)?
            .aggregate(
                keys.iter().map(|k| col(*k)).collect(),
                vec![max(col("ts")).alias("newest")],
            )
            .map_err(qerr)?
            .collect()
            .await
            .map_err(qerr)?;
        let mut out = Vec::new();
        for b in &batches {
            let cols = (0..keys.len())
                .map(|i| string_column(b, i))
                .collect::<Result<Vec<_>, _>>()?;
            let w = b
                .column(keys.len())
                .as_primitive::<TimestampMicrosecondType>();
            for i in 0..b.num_rows() {
                if w.is_valid(i) {
                    let k = cols.iter().map(|c| c.value(i).to_string()).collect();
                    out.push((k, w.value(i) / 1000));
                }
            }
        }
        Ok(out)
    }
}

/// A column of a query result as plain UTF-8 strings, whatever string layout
/// (Utf8, LargeUtf8, Utf8View, dictionary) the engine produced.
pub fn string_column(
    b: &RecordBatch,
    i: usize,
) -> Result<deltalake::arrow::array::StringArray, LakeError> {
    let c =
        deltalake::arrow::compute::cast(b.column(i), &deltalake::arrow::datatypes::DataType::Utf8)?;
    Ok(c.as_string::<i32>().clone())
}

/// Total rows of a set of batches.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// First column of the first row as i64 (for `SELECT count(*) ...`).
pub fn scalar_i64(batches: &[RecordBatch]) -> Option<i64> {
    let b = batches.iter().find(|b| b.num_rows() > 0)?;
    let c = b.column(0);
    if c.is_null(0) {
        return None;
    }
    c.as_primitive_opt::<deltalake::arrow::datatypes::Int64Type>()
        .map(|a| a.value(0))
}

#[cfg(test)]
mod tests {
    use super::checkpoint_ranges;

    #[test]
    fn checkpoint_times_become_one_range_per_round() {
        let s = 1_000_000;
        // two rounds 30 s apart, each spread over 3 s, and one asset whose
        // newest checkpoint is a day old
        let times = [0, 1, 2, 3, 30, 31, 33, -86_400].map(|t| t * s);
        assert_eq!(
            checkpoint_ranges(times.into_iter()),
            vec![(-86_400 * s, -86_400 * s), (0, 3 * s), (30 * s, 33 * s)]
        );
        assert!(checkpoint_ranges(std::iter::empty()).is_empty());
    }

    #[test]
    fn many_stragglers_merge_into_few_ranges_that_still_hold_every_time() {
        let times: Vec<i64> = (0..1000).map(|i| i * i * 60_000_000).collect();
        let r = checkpoint_ranges(times.iter().copied());
        assert_eq!(r.len(), 16);
        assert!(r.windows(2).all(|w| w[0].1 < w[1].0));
        for t in &times {
            assert!(
                r.iter().any(|(lo, hi)| lo <= t && t <= hi),
                "{t} not covered"
            );
        }
    }
}
