//! `gold.oee_shift`: OEE per machine and shift with the losses behind it
//! (planned, running, idle, down, setup and unknown time, speed loss, parts,
//! actual and ideal cycle time).

use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray,
};

use super::inputs::{plant_data, plant_oee, us, ShiftInputs};
use super::{GoldContext, GoldError, GoldJob};
use crate::lake::Table;
use crate::pipeline::oee;

/// The OEE job.
pub struct OeeShift;

#[async_trait]
impl GoldJob for OeeShift {
    fn kind(&self) -> &'static str {
        "oee_shift"
    }
    fn target(&self) -> Table {
        Table::GoldOeeShift
    }
    fn sources(&self) -> &'static [Table] {
        &[Table::SilverAssetEvents, Table::SilverReadings]
    }
    fn replace_key(&self) -> Option<&'static str> {
        Some("shift_start")
    }

    async fn compute(
        &self,
        cx: &GoldContext<'_>,
        from: Option<i64>,
        now_ms: i64,
    ) -> Result<RecordBatch, GoldError> {
        let inp = ShiftInputs::read(cx, from, now_ms).await?;
        let mut cols = OeeCols::default();
        for plant in &cx.model.plants {
            let cal = plant.shift_calendar();
            let d = plant_data(&inp, cx.model, plant.id.as_str());
            if d.assets.is_empty() {
                continue;
            }
            let o = plant_oee(&d, &cal)?;
            for r in 0..o.key.len() {
                if from.is_some_and(|f| o.shift_start[r] < f) {
                    continue;
                }
                let name = &d.assets.names()[o.key[r] as usize];
                let asset = cx.model.asset(name);
                let line = asset.map_or("", |a| a.line.as_str());
                let ideal = asset.and_then(|a| a.twin.ideal_cycle_s);
                cols.push(
                    plant.id.as_str(),
                    line,
                    name,
                    &o,
                    r,
                    cal.shift(o.shift_start[r]).2,
                    ideal,
                );
            }
        }
        cols.finish(now_ms)
    }
}

#[derive(Default)]
struct OeeCols {
    plant: Vec<String>,
    line: Vec<String>,
    asset: Vec<String>,
    start: Vec<i64>,
    end: Vec<i64>,
    shift: Vec<String>,
    planned: Vec<i64>,
    running: Vec<i64>,
    idle: Vec<i64>,
    down: Vec<i64>,
    setup: Vec<i64>,
    good: Vec<i64>,
    reject: Vec<i64>,
    ideal: Vec<f64>,
    speed_loss: Vec<Option<f64>>,
    cycle: Vec<Option<f64>>,
    ideal_cycle: Vec<Option<f64>>,
    a: Vec<Option<f64>>,
    p: Vec<Option<f64>>,
    q: Vec<Option<f64>>,
    oee: Vec<Option<f64>>,
    unknown: Vec<i64>,
}

fn opt(a: &Float64Array, r: usize) -> Option<f64> {
    a.is_valid(r).then(|| a.value(r))
}

impl OeeCols {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        plant: &str,
        line: &str,
        asset: &str,
        o: &oee::OeeShifts,
        r: usize,
        shift: &str,
        ideal_cycle_s: Option<f64>,
    ) {
        let parts = o.good[r] + o.reject[r];
        // Actual cycle time: running time per part made.
        self.cycle
            .push((parts > 0).then(|| o.running_ms[r] as f64 / parts as f64 / 1000.0));
        self.ideal_cycle.push(ideal_cycle_s);
        self.plant.push(plant.into());
        self.line.push(line.into());
        self.asset.push(asset.into());
        self.start.push(o.shift_start[r]);
        self.end.push(o.shift_end[r]);
        self.shift.push(shift.into());
        self.planned.push(o.planned_ms[r]);
        self.running.push(o.running_ms[r]);
        self.idle.push(o.state_ms[1][r]);
        self.down.push(o.state_ms[2][r]);
        self.setup.push(o.state_ms[3][r]);
        self.unknown.push(o.unknown_ms[r]);
        self.good.push(o.good[r]);
        self.reject.push(o.reject[r]);
        let ideal = if o.ideal_ms[r].is_nan() {
            0.0
        } else {
            o.ideal_ms[r]
        };
        self.ideal.push(ideal);
        self.speed_loss
            .push((!o.ideal_ms[r].is_nan()).then(|| o.running_ms[r] as f64 - o.ideal_ms[r]));
        self.a.push(opt(&o.availability, r));
        self.p.push(opt(&o.performance, r));
        self.q.push(opt(&o.quality, r));
        self.oee.push(opt(&o.oee, r));
    }

    fn finish(self, now_ms: i64) -> Result<RecordBatch, GoldError> {
        let n = self.plant.len();
        let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
        let i = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        let f = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            s(self.plant),
            s(self.line),
            s(self.asset),
            Arc::new(us(&self.start)),
            Arc::new(us(&self.end)),
            s(self.shift),
            i(self.planned),
            i(self.running),
            i(self.idle),
            i(self.down),
            i(self.setup),
            i(self.good),
            i(self.reject),
            Arc::new(Float64Array::from(self.ideal)),
            f(self.speed_loss),
            f(self.cycle),
            f(self.ideal_cycle),
            f(self.a),
            f(self.p),
            f(self.q),
            f(self.oee),
            Arc::new(us(&vec![now_ms; n])),
            i(self.unknown),
        ];
        Ok(RecordBatch::try_new(
            Table::GoldOeeShift.arrow_schema(),
            cols,
        )?)
    }
}
