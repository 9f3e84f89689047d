//! `gold.reliability`: MTBF and MTTR per machine over the trailing
//! `pipelines.reliability_days`: MTBF = running time / failures (stops in
//! DOWN), MTTR = DOWN time / failures. Rebuilt whole on every update.

use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};

use super::downtime_events::{by_asset, stretches};
use super::inputs::{horizon, state_events, us};
use super::{GoldContext, GoldError, GoldJob};
use crate::assets::MachineState;
use crate::lake::Table;

/// The reliability job.
pub struct Reliability;

#[async_trait]
impl GoldJob for Reliability {
    fn kind(&self) -> &'static str {
        "reliability"
    }
    fn target(&self) -> Table {
        Table::GoldReliability
    }
    fn sources(&self) -> &'static [Table] {
        &[Table::SilverAssetEvents, Table::SilverReadings]
    }
    fn replace_key(&self) -> Option<&'static str> {
        None
    }
    async fn compute(
        &self,
        cx: &GoldContext<'_>,
        _from: Option<i64>,
        now_ms: i64,
    ) -> Result<RecordBatch, GoldError> {
        reliability(cx, now_ms).await
    }
}

/// `gold.reliability`: MTBF and MTTR per machine over `[now - days, now]`.
async fn reliability(cx: &GoldContext<'_>, now_ms: i64) -> Result<RecordBatch, GoldError> {
    let model = cx.model;
    let from = now_ms - cx.config.reliability_days as i64 * crate::time::DAY_MS;
    let states = state_events(cx, Some(from)).await?;
    let horizon = horizon(cx, Some(from), now_ms).await?;
    let mut out: Vec<(String, i64, i64, i64)> = Vec::new();
    for (asset, idx) in by_asset(&states) {
        let (mut running, mut down, mut failures) = (0i64, 0i64, 0i64);
        for (a, b, state, _) in stretches(&states, &idx, horizon.get(&asset).copied()) {
            let (a, b) = (a.max(from), b.min(now_ms));
            if b <= a {
                continue;
            }
            match MachineState::parse(&state) {
                Some(MachineState::Running) => running += b - a,
                Some(MachineState::Down) => {
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
