//! Downtime and reliability (gold): every stop of every machine with its
//! duration and reason, and MTBF / MTTR per machine.
//!
//! A stop is a maximal stretch of one non-running state (DOWN, IDLE, SETUP)
//! between state changes; repeated-state heartbeats do not split it. Its
//! reason is the alarm the machine raised closest before the stop began
//! (within 10 minutes, or up to 1 minute after: PLCs often report the alarm
//! just after the state), found with the as-of join kernel; otherwise
//! `unspecified`. A stop still going on at the newest data is `open`.
//!
//! Reliability over the trailing `reliability_days`: MTBF = running time /
//! failures (stops in DOWN), MTTR = DOWN time / failures.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};

use super::gold::{horizon, rows, state_events, us, GoldError, Rows};
use crate::assets::AssetModel;
use crate::lake::Table;
use crate::query::SqlEngine;
use crate::timeseries::{asof_join, AsofDirection, KeyInterner};

/// How far before a stop an alarm still explains it.
const REASON_BEFORE_MS: i64 = 600_000;
/// How far after the stop began an alarm still explains it.
const REASON_AFTER_MS: i64 = 60_000;

/// One machine's state stretches: (start, end, state, open).
fn stretches(states: &Rows, idx: &[usize], horizon: Option<i64>) -> Vec<(i64, i64, String, bool)> {
    let mut out: Vec<(i64, i64, String, bool)> = Vec::new();
    for (j, &i) in idx.iter().enumerate() {
        let state = &states.text[i];
        let start = states.ts[i];
        let (end, open) = match idx.get(j + 1) {
            Some(&n) => (states.ts[n], false),
            None => (horizon.unwrap_or(start).max(start), true),
        };
        match out.last_mut() {
            Some(last) if &last.2 == state && last.1 == start => {
                last.1 = end;
                last.3 = open;
            }
            _ => out.push((start, end, state.clone(), open)),
        }
    }
    out
}

/// Per asset, the indexes of its state rows in time order.
fn by_asset(states: &Rows) -> HashMap<String, Vec<usize>> {
    let mut m: HashMap<String, Vec<usize>> = HashMap::new();
    for i in 0..states.asset.len() {
        m.entry(states.asset[i].clone()).or_default().push(i);
    }
    for v in m.values_mut() {
        v.sort_by_key(|&i| states.ts[i]);
    }
    m
}

/// `gold.downtime_events` rows for stops starting at or after `from`.
pub async fn downtime_events(
    sql: &SqlEngine,
    model: &AssetModel,
    from: Option<i64>,
    now_ms: i64,
) -> Result<RecordBatch, GoldError> {
    let states = state_events(sql, from).await?;
    let alarm_from = from.map(|f| f - REASON_BEFORE_MS);
    let alarm_window = alarm_from.map_or(String::new(), |f| {
        format!("AND ts >= {}", crate::query::timestamp_literal(f))
    });
    let alarms = rows(
        sql,
        &format!("SELECT asset_id, ts, code, value FROM silver.asset_events WHERE kind = 'alarm_raised' {alarm_window}"),
    )
    .await?;
    let horizon = horizon(sql, from).await?;
    // Stops of every asset.
    let mut stops: Vec<(String, i64, i64, String, bool)> = Vec::new();
    for (asset, idx) in by_asset(&states) {
        for (a, b, state, open) in stretches(&states, &idx, horizon.get(&asset).copied()) {
            if state != "RUNNING" && state != "UNKNOWN" && from.is_none_or(|f| a >= f) {
                stops.push((asset.clone(), a, b, state, open));
            }
        }
    }
    stops.sort_by(|x, y| (&x.0, x.1).cmp(&(&y.0, y.1)));
    // Reason: the nearest alarm raised before the stop (plus a grace after).
    let mut keys = KeyInterner::new();
    let sk: Vec<u32> = stops.iter().map(|s| keys.code(&s.0)).collect();
    let st: Vec<i64> = stops.iter().map(|s| s.1 + REASON_AFTER_MS).collect();
    let ak: Vec<u32> = alarms.asset.iter().map(|a| keys.code(a)).collect();
    let m = asof_join(
        &sk,
        &st,
        &ak,
        &alarms.ts,
        keys.len(),
        AsofDirection::Backward,
        Some(REASON_BEFORE_MS + REASON_AFTER_MS),
    )?;
    let mut c: [Vec<String>; 6] = Default::default();
    let (mut start, mut end, mut dur, mut shift_start, mut open) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (i, (asset, a, b, state, is_open)) in stops.into_iter().enumerate() {
        let Some(meta) = model.asset(&asset) else {
            continue;
        };
        let plant = model.plant(meta.plant.as_str());
        let (ss, shift_name) = plant.map_or((a, String::new()), |p| {
            let cal = p.shift_calendar();
            let (s, _, n) = cal.shift(a);
            (s, n.to_string())
        });
        let reason = if m[i] == u32::MAX {
            "unspecified".to_string()
        } else {
            alarms.text[m[i] as usize].clone()
        };
        c[0].push(meta.plant.as_str().to_string());
        c[1].push(meta.line.as_str().to_string());
        c[2].push(asset);
        c[3].push(state);
        c[4].push(reason);
        c[5].push(shift_name);
        start.push(a);
        end.push(b);
        dur.push(b - a);
        shift_start.push(ss);
        open.push(is_open);
    }
    let n = start.len();
    let [plant, line, asset, state, reason, shift] = c;
    let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        s(plant),
        s(line),
        s(asset),
        Arc::new(us(&start)),
        Arc::new(us(&end)),
        Arc::new(Int64Array::from(dur)),
        s(state),
        s(reason),
        Arc::new(us(&shift_start)),
        s(shift),
        Arc::new(BooleanArray::from(open)),
        Arc::new(us(&vec![now_ms; n])),
    ];
    Ok(RecordBatch::try_new(
        Table::GoldDowntimeEvents.arrow_schema(),
        cols,
    )?)
}

/// `gold.reliability`: MTBF and MTTR per machine over `[now - days, now]`.
pub async fn reliability(
    sql: &SqlEngine,
    model: &AssetModel,
    days: u64,
    now_ms: i64,
) -> Result<RecordBatch, GoldError> {
    let from = now_ms - days as i64 * 86_400_000;
    let states = state_events(sql, Some(from)).await?;
    let horizon = horizon(sql, Some(from)).await?;
    let mut out: Vec<(String, i64, i64, i64)> = Vec::new();
    for (asset, idx) in by_asset(&states) {
        let (mut running, mut down, mut failures) = (0i64, 0i64, 0i64);
        for (a, b, state, _) in stretches(&states, &idx, horizon.get(&asset).copied()) {
            let (a, b) = (a.max(from), b.min(now_ms));
            if b <= a {
                continue;
            }
            match state.as_str() {
                "RUNNING" => running += b - a,
                "DOWN" => {
                    down += b - a;
                    failures += 1;
                }
                _ => {}
            }
        }
        out.push((asset, running, down, failures));
    }
    out.sort();
    let mut c: [Vec<String>; 3] = Default::default();
    let (mut run_c, mut down_c, mut fail_c, mut mtbf, mut mttr) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (asset, running, down, failures) in out {
        let Some(meta) = model.asset(&asset) else {
            continue;
        };
        c[0].push(meta.plant.as_str().to_string());
        c[1].push(meta.line.as_str().to_string());
        c[2].push(asset);
        run_c.push(running);
        down_c.push(down);
        fail_c.push(failures);
        mtbf.push((failures > 0).then(|| running as f64 / failures as f64 / 3_600_000.0));
        mttr.push((failures > 0).then(|| down as f64 / failures as f64 / 3_600_000.0));
    }
    let n = run_c.len();
    let [plant, line, asset] = c;
    let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let cols: Vec<ArrayRef> = vec![
        s(plant),
        s(line),
        s(asset),
        Arc::new(us(&vec![from; n])),
        Arc::new(us(&vec![now_ms; n])),
        Arc::new(Int64Array::from(run_c)),
        Arc::new(Int64Array::from(down_c)),
        Arc::new(Int64Array::from(fail_c)),
        Arc::new(Float64Array::from(mtbf)),
        Arc::new(Float64Array::from(mttr)),
        Arc::new(us(&vec![now_ms; n])),
    ];
    Ok(RecordBatch::try_new(
        Table::GoldReliability.arrow_schema(),
        cols,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_do_not_split_a_stop_and_the_last_stays_open() {
        let r = Rows {
            asset: vec!["m".into(); 4],
            ts: vec![0, 10, 20, 30],
            text: vec![
                "DOWN".into(),
                "DOWN".into(),
                "RUNNING".into(),
                "IDLE".into(),
            ],
            value: vec![0.0; 4],
        };
        let s = stretches(&r, &[0, 1, 2, 3], Some(45));
        assert_eq!(
            s,
            vec![
                (0, 20, "DOWN".to_string(), false),
                (20, 30, "RUNNING".to_string(), false),
                (30, 45, "IDLE".to_string(), true)
            ]
        );
    }
}
