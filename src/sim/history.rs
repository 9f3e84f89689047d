//! Simulated plant history (`ironlake simulate --history-days N`): the
//! scenario's machines run on a virtual clock, as fast as the CPU allows,
//! through the same physics as the live simulator, for N days of plant time
//! ending now. What lands in the lake:
//!
//! * `gold.features`: every machine's feature rows, computed by the twins'
//!   own feature engine from the readings the simulated PLC would have sent
//!   (so training sees exactly what live scoring sees);
//! * `system.sim_failures`: the ground truth of every stop (when, how long,
//!   why: `wear`, `minor_stop`), which evaluation trusts instead of the
//!   platform's alarms;
//! * `system.sim_wear`: each machine's hidden degradation and wear rate per
//!   feature bucket, and the power it wasted in the bucket (mean kW beyond
//!   what the machine needed: auxiliaries left on, leaks), the ground truth
//!   of the energy baseline.
//!
//! Timestamps follow the scenario's `time_scale` (the demo's plant clock
//! runs 60x, so 30 plant days are 12 hours of timestamps), exactly as the
//! live simulator stamps them; feature sets say the same scale. Faults of
//! the scenario are not replayed: the history is the machines' physics.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};

use super::physics::{DownCause, MachineSim, Overrides};
use super::Scenario;
use crate::assets::{AssetModel, MachineState};
use crate::lake::{LakeError, Lakehouse, Table};
use crate::twins::features::FeatureEngine;

/// What to generate.
#[derive(Debug, Clone)]
pub struct HistoryOpts {
    /// Plant days (at the scenario's time scale).
    pub days: f64,
    pub seed: u64,
    /// End of the history (UTC ms); now when `None`.
    pub end_ms: Option<i64>,
}

/// What a history run wrote.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HistoryReport {
    pub machines: usize,
    pub plant_days: f64,
    pub from_ms: i64,
    pub to_ms: i64,
    pub readings: u64,
    pub feature_rows: u64,
    /// Stops by cause.
    pub stops: BTreeMap<String, u64>,
    /// Plant hours DOWN by cause.
    pub down_hours: BTreeMap<String, f64>,
}

/// Why a history could not be written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history: {0}")]
    Invalid(String),
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("history: arrow: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
}

#[derive(Default)]
struct Out {
    plant: Vec<String>,
    line: Vec<String>,
    asset: Vec<String>,
    kind: Vec<String>,
    version: Vec<i32>,
    end: Vec<i64>,
    feature: Vec<String>,
    value: Vec<Option<f64>>,
    // failures
    f_plant: Vec<String>,
    f_line: Vec<String>,
    f_asset: Vec<String>,
    f_kind: Vec<String>,
    f_start: Vec<i64>,
    f_end: Vec<Option<i64>>,
    f_cause: Vec<&'static str>,
    f_hours: Vec<Option<f64>>,
    // wear
    w_plant: Vec<String>,
    w_asset: Vec<String>,
    w_kind: Vec<String>,
    w_ts: Vec<i64>,
    w_deg: Vec<f64>,
    w_rate: Vec<f64>,
    w_state: Vec<&'static str>,
    w_waste: Vec<f64>,
}

fn us<I: IntoIterator<Item = Option<i64>>>(v: I) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(
        v.into_iter()
            .map(|t| t.map(|t| t * 1000))
            .collect::<Vec<_>>(),
    )
    .with_timezone("UTC")
}

/// Run the scenario's machines over `opts.days` plant days and write the
/// tables above. `model` is the platform's asset model (its twin types carry
/// the feature sets); machines whose twin type has none still get ground
/// truth. `progress` is told the plant hours done per machine.
pub async fn generate(
    sc: &Scenario,
    model: &AssetModel,
    lake: &Lakehouse,
    opts: &HistoryOpts,
    progress: &indicatif::ProgressBar,
) -> Result<HistoryReport, HistoryError> {
    let f = &sc.file;
    if !(opts.days > 0.0 && opts.days <= 3650.0) {
        return Err(HistoryError::Invalid(format!(
            "{} days: between 0 and 3650",
            opts.days
        )));
    }
    let dt_real = f.tick_ms as f64 / 1000.0;
    let dt_sim = dt_real * f.time_scale;
    let steps = (opts.days * 86_400.0 / dt_sim).ceil() as u64;
    let to_ms = opts.end_ms.unwrap_or_else(crate::time::now_ms);
    let span_ms = (steps as f64 * dt_real * 1000.0).round() as i64;
    let from_ms = to_ms - span_ms;
    progress.set_length(steps * sc.model.assets.len() as u64);
    let mut out = Out::default();
    let mut rep = HistoryReport {
        machines: sc.model.assets.len(),
        plant_days: opts.days,
        from_ms,
        to_ms,
        ..Default::default()
    };
    for a in &sc.model.assets {
        // The platform's twin type (with its feature set) for the same machine.
        let twin = model
            .asset(a.id.as_str())
            .map(|p| p.twin.clone())
            .unwrap_or_else(|| a.twin.clone());
        let mut sim = MachineSim::new(
            a.twin.clone(),
            opts.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(a.idx as u64 + 1)),
        );
        let mut engine = FeatureEngine::new(twin.clone());
        let set = engine.as_ref().map(|e| e.set().clone());
        let (plant, line, id, kind) = (
            a.plant.to_string(),
            a.line.to_string(),
            a.id.to_string(),
            a.twin.kind.clone(),
        );
        let mut down: Option<(i64, DownCause)> = None;
        // Waste kW x plant seconds since the last feature row, and the seconds.
        let (mut waste, mut waste_s) = (0.0f64, 0.0f64);
        let ov = Overrides::default();
        for k in 1..=steps {
            let t = k as f64 * dt_real;
            sim.step(&f.shifts, t * f.time_scale, dt_sim, dt_real);
            waste += sim.waste_kw * dt_sim;
            waste_s += dt_sim;
            let ts = from_ms + (t * 1000.0).round() as i64;
            match (down, sim.down_cause) {
                (None, Some(c)) => down = Some((ts, c)),
                (Some((t0, c)), now) if now != Some(c) => {
                    out.f_plant.push(plant.clone());
                    out.f_line.push(line.clone());
                    out.f_asset.push(id.clone());
                    out.f_kind.push(kind.clone());
                    out.f_start.push(t0);
                    out.f_end.push(Some(ts));
                    out.f_cause.push(c.as_str());
                    let h = (ts - t0) as f64 / 3_600_000.0 * f.time_scale;
                    out.f_hours.push(Some(h));
                    *rep.stops.entry(c.as_str().into()).or_default() += 1;
                    *rep.down_hours.entry(c.as_str().into()).or_default() += h;
                    down = now.map(|c| (ts, c));
                }
                _ => {}
            }
            let values = sim.values(&ov);
            rep.readings += values.len() as u64;
            let Some(e) = engine.as_mut() else {
                continue;
            };
            for (i, v) in values.into_iter().enumerate() {
                let Some(row) = e.push(i as u16, ts, v) else {
                    continue;
                };
                let set = set.as_ref().expect("engine has a set");
                rep.feature_rows += 1;
                for (fd, v) in set.features.iter().zip(&row.values) {
                    out.plant.push(plant.clone());
                    out.line.push(line.clone());
                    out.asset.push(id.clone());
                    out.kind.push(kind.clone());
                    out.version.push(set.version as i32);
                    out.end.push(row.bucket_end);
                    out.feature.push(fd.name.clone());
                    out.value.push(*v);
                }
                out.w_plant.push(plant.clone());
                out.w_asset.push(id.clone());
                out.w_kind.push(kind.clone());
                out.w_ts.push(row.bucket_end);
                out.w_deg.push(sim.degradation);
                out.w_rate.push(sim.wear_per_h());
                out.w_state.push(state_name(sim.state));
                out.w_waste.push(waste / waste_s.max(1e-9));
                (waste, waste_s) = (0.0, 0.0);
            }
            if k % 4096 == 0 {
                progress.inc(4096);
                tokio::task::yield_now().await;
            }
        }
        progress.inc(steps % 4096);
        if let Some((t0, c)) = down {
            // Still down at the end: a stop without an end.
            out.f_plant.push(plant.clone());
            out.f_line.push(line.clone());
            out.f_asset.push(id.clone());
            out.f_kind.push(kind.clone());
            out.f_start.push(t0);
            out.f_end.push(None);
            out.f_cause.push(c.as_str());
            out.f_hours.push(None);
            *rep.stops.entry(c.as_str().into()).or_default() += 1;
        }
    }
    write(lake, out, from_ms, to_ms, f.time_scale).await?;
    Ok(rep)
}

fn state_name(s: MachineState) -> &'static str {
    s.as_str()
}

async fn write(
    lake: &Lakehouse,
    o: Out,
    from_ms: i64,
    to_ms: i64,
    scale: f64,
) -> Result<(), HistoryError> {
    let n = o.end.len();
    let features = RecordBatch::try_new(
        Table::GoldFeatures.arrow_schema(),
        vec![
            Arc::new(StringArray::from(o.plant)) as ArrayRef,
            Arc::new(StringArray::from(o.line)),
            Arc::new(StringArray::from(o.asset)),
            Arc::new(StringArray::from(o.kind)),
            Arc::new(Int32Array::from(o.version)),
            Arc::new(us(o.end.into_iter().map(Some))),
            Arc::new(StringArray::from(o.feature)),
            Arc::new(Float64Array::from(o.value)),
            Arc::new(us(std::iter::repeat_n(Some(to_ms), n))),
        ],
    )?;
    let nf = o.f_start.len();
    let failures = RecordBatch::try_new(
        Table::SimFailures.arrow_schema(),
        vec![
            Arc::new(StringArray::from(o.f_plant)) as ArrayRef,
            Arc::new(StringArray::from(o.f_line)),
            Arc::new(StringArray::from(o.f_asset)),
            Arc::new(StringArray::from(o.f_kind)),
            Arc::new(us(o.f_start.into_iter().map(Some))),
            Arc::new(us(o.f_end)),
            Arc::new(StringArray::from(o.f_cause)),
            Arc::new(Float64Array::from(o.f_hours)),
            Arc::new(Float64Array::from(vec![scale; nf])),
        ],
    )?;
    let wear = RecordBatch::try_new(
        Table::SimWear.arrow_schema(),
        vec![
            Arc::new(StringArray::from(o.w_plant)) as ArrayRef,
            Arc::new(StringArray::from(o.w_asset)),
            Arc::new(StringArray::from(o.w_kind)),
            Arc::new(us(o.w_ts.into_iter().map(Some))),
            Arc::new(Float64Array::from(o.w_deg)),
            Arc::new(Float64Array::from(o.w_rate)),
            Arc::new(StringArray::from(o.w_state)),
            Arc::new(Float64Array::from(o.w_waste)),
        ],
    )?;
    let _ = to_ms;
    let since = format!("'{}'", crate::time::rfc3339(from_ms));
    lake.replace(
        Table::GoldFeatures,
        vec![features],
        Some(format!("bucket_end >= {since}")),
    )
    .await?;
    lake.replace(Table::SimFailures, vec![failures], None)
        .await?;
    lake.replace(Table::SimWear, vec![wear], None).await?;
    Ok(())
}
