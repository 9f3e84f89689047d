//! Line and plant twins: aggregate their children (machines per state, active
//! alarms, part counts) from the status updates the children push.

use std::collections::{BTreeMap, HashMap};

use actix::prelude::*;
use serde::Serialize;

use crate::assets::{AssetIdx, MachineState};
use crate::time::now_ms;

/// What a machine tells its line.
#[derive(Message, Debug, Clone, Copy, PartialEq)]
#[rtype(result = "()")]
pub struct ChildStatus {
    pub asset: AssetIdx,
    pub state: MachineState,
    pub alarms: u32,
    pub critical: u32,
    pub good: f64,
    pub reject: f64,
}

/// Aggregates over a set of machines.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Aggregate {
    pub machines: usize,
    /// Machines per state (`RUNNING`, `IDLE`, `DOWN`, `SETUP`, `UNKNOWN`).
    pub by_state: BTreeMap<&'static str, usize>,
    pub active_alarms: u32,
    pub critical_alarms: u32,
    pub good_parts: f64,
    pub rejected_parts: f64,
    /// Rejected / (good + rejected), when parts were made.
    pub scrap_rate: Option<f64>,
    pub updated: Option<i64>,
}

impl Aggregate {
    fn empty(machines: usize) -> Self {
        let mut by_state = BTreeMap::new();
        for s in MachineState::ALL {
            by_state.insert(s.as_str(), 0);
        }
        by_state.insert(MachineState::Unknown.as_str(), machines);
        Aggregate {
            machines,
            by_state,
            ..Default::default()
        }
    }

    fn add(&mut self, other: &Aggregate) {
        self.machines += other.machines;
        for (k, v) in &other.by_state {
            *self.by_state.entry(k).or_default() += v;
        }
        self.active_alarms += other.active_alarms;
        self.critical_alarms += other.critical_alarms;
        self.good_parts += other.good_parts;
        self.rejected_parts += other.rejected_parts;
        self.updated = self.updated.max(other.updated);
    }

    fn finish(&mut self) {
        let total = self.good_parts + self.rejected_parts;
        self.scrap_rate = (total > 0.0).then(|| self.rejected_parts / total);
    }
}

/// Ask a line or plant for its aggregate.
#[derive(Message)]
#[rtype(result = "Aggregate")]
pub struct GetAggregate;

/// Line twin.
pub struct LineTwin {
    id: String,
    size: usize,
    children: HashMap<AssetIdx, ChildStatus>,
    plant: Option<Addr<PlantTwin>>,
    agg: Aggregate,
}

impl LineTwin {
    /// A line with `size` machines reporting to `plant`.
    pub fn new(id: String, size: usize, plant: Option<Addr<PlantTwin>>) -> Self {
        LineTwin {
            id,
            size,
            children: HashMap::new(),
            plant,
            agg: Aggregate::empty(size),
        }
    }

    fn recompute(&mut self) {
        let mut a = Aggregate::empty(self.size);
        a.by_state.insert(
            MachineState::Unknown.as_str(),
            self.size - self.children.len().min(self.size),
        );
        for c in self.children.values() {
            *a.by_state.entry(c.state.as_str()).or_default() += 1;
            a.active_alarms += c.alarms;
            a.critical_alarms += c.critical;
            a.good_parts += c.good;
            a.rejected_parts += c.reject;
        }
        a.updated = Some(now_ms());
        a.finish();
        self.agg = a;
    }
}

impl Actor for LineTwin {
    type Context = Context<Self>;
}

impl Handler<ChildStatus> for LineTwin {
    type Result = ();
    fn handle(&mut self, msg: ChildStatus, _: &mut Self::Context) {
        if self.children.get(&msg.asset) == Some(&msg) {
            return;
        }
        self.children.insert(msg.asset, msg);
        self.recompute();
        if let Some(p) = &self.plant {
            p.do_send(LineStatus {
                line: self.id.clone(),
                agg: self.agg.clone(),
            });
        }
    }
}

impl Handler<GetAggregate> for LineTwin {
    type Result = MessageResult<GetAggregate>;
    fn handle(&mut self, _: GetAggregate, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.agg.clone())
    }
}

/// What a line tells its plant.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct LineStatus {
    pub line: String,
    pub agg: Aggregate,
}

/// Plant twin.
pub struct PlantTwin {
    lines: BTreeMap<String, Aggregate>,
}

impl PlantTwin {
    /// A plant with the given lines and their sizes.
    pub fn new(lines: impl IntoIterator<Item = (String, usize)>) -> Self {
        PlantTwin {
            lines: lines
                .into_iter()
                .map(|(l, n)| (l, Aggregate::empty(n)))
                .collect(),
        }
    }
}

impl Actor for PlantTwin {
    type Context = Context<Self>;
}

impl Handler<LineStatus> for PlantTwin {
    type Result = ();
    fn handle(&mut self, msg: LineStatus, _: &mut Self::Context) {
        self.lines.insert(msg.line, msg.agg);
    }
}

impl Handler<GetAggregate> for PlantTwin {
    type Result = MessageResult<GetAggregate>;
    fn handle(&mut self, _: GetAggregate, _: &mut Self::Context) -> Self::Result {
        let mut a = Aggregate::default();
        for l in self.lines.values() {
            a.add(l);
        }
        a.finish();
        MessageResult(a)
    }
}
