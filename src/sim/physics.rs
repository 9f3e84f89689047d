//! Simulated machine physics: shifts, state changes, part production with a
//! reject rate, slow degradation towards failure, repair, and signal values
//! that follow the state with lag and noise. Deterministic for a given seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::assets::{MachineState, SignalKind, TwinType};

/// Shift pattern in simulated time.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShiftPlan {
    /// Length of a shift, simulated hours.
    #[serde(default = "d_shift")]
    pub shift_hours: f64,
    /// SETUP at the start of each shift, simulated minutes.
    #[serde(default = "d_setup")]
    pub setup_minutes: f64,
    /// IDLE break in the middle of each shift, simulated minutes.
    #[serde(default = "d_break")]
    pub break_minutes: f64,
}

fn d_shift() -> f64 {
    8.0
}
fn d_setup() -> f64 {
    15.0
}
fn d_break() -> f64 {
    30.0
}

impl Default for ShiftPlan {
    fn default() -> Self {
        ShiftPlan {
            shift_hours: d_shift(),
            setup_minutes: d_setup(),
            break_minutes: d_break(),
        }
    }
}

/// How a signal behaves: level when idle, when running, noise, and how much
/// wear (degradation 0..1) adds while running.
#[derive(Debug, Clone, Copy)]
struct Profile {
    idle: f64,
    run: f64,
    noise: f64,
    wear: f64,
}

fn span(lo: f64, hi: f64) -> f64 {
    (hi - lo).max(1.0)
}

fn profile(name: &str, lo: f64, hi: f64) -> Profile {
    let s = span(lo, hi);
    let p = |idle: f64, run: f64, noise: f64, wear: f64| Profile {
        idle,
        run,
        noise,
        wear,
    };
    match name {
        "spindle_speed" => p(0.0, 0.4 * hi, 0.004 * hi, -0.03 * hi),
        "spindle_load" => p(2.0, 55.0, 2.0, 30.0),
        "vibration" => p(0.4, 2.0, 0.12, 5.5),
        "temperature" => p(24.0, 42.0, 0.25, 28.0),
        "motor_temp" => p(28.0, 55.0, 0.3, 20.0),
        "oil_temp" => p(30.0, 45.0, 0.2, 18.0),
        "tool_wear" | "jam" => p(0.0, 0.0, 0.0, 0.0),
        "force" => p(0.0, 0.45 * hi, 0.01 * hi, -0.05 * hi),
        "stroke_rate" => p(0.0, 15.0, 0.2, -2.0),
        "hydraulic_pressure" => p(180.0, 210.0, 1.5, -25.0),
        "speed" => p(0.0, 1.2, 0.01, -0.1),
        "motor_current" => p(1.0, 14.0, 0.3, 12.0),
        "discharge_pressure" => p(6.8, 7.5, 0.05, -1.2),
        "flow" => p(0.5, 18.0, 0.3, -3.0),
        "power" => p(0.12 * hi, 0.5 * hi, 0.01 * hi, 0.12 * hi),
        n if n.contains("temp") => p(lo + 0.2 * s, lo + 0.4 * s, 0.003 * s, 0.15 * s),
        n if n.contains("vibration") || n.contains("current") => {
            p(lo + 0.05 * s, lo + 0.2 * s, 0.01 * s, 0.2 * s)
        }
        _ => p(lo + 0.05 * s, lo + 0.5 * s, 0.01 * s, 0.0),
    }
}

/// A fault that changes what the machine reports.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Signal index -> value frozen at (stuck sensor).
    pub stuck: Vec<(usize, f64)>,
}

/// Why a simulated machine went DOWN (the simulator's ground truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownCause {
    /// Worn out: degradation reached 1 (what predictive maintenance predicts).
    Wear,
    /// A short random stop (jam, material shortage): not predictable.
    MinorStop,
    /// A failure injected by the scenario (`kind = "failure"`).
    Injected,
}

impl DownCause {
    pub fn as_str(self) -> &'static str {
        match self {
            DownCause::Wear => "wear",
            DownCause::MinorStop => "minor_stop",
            DownCause::Injected => "injected",
        }
    }
}

/// One simulated machine.
pub struct MachineSim {
    pub twin: std::sync::Arc<TwinType>,
    rng: ChaCha8Rng,
    pub state: MachineState,
    /// Simulated seconds left in DOWN (repair) or forced SETUP.
    hold_s: f64,
    hold_state: MachineState,
    /// Degradation 0..1; at 1 the machine fails.
    pub degradation: f64,
    wear_rate: f64,
    good: f64,
    reject: f64,
    part_progress: f64,
    run_hours: f64,
    values: Vec<f64>,
    ideal_cycle_s: f64,
    injected: bool,
    /// Why the machine is DOWN, while it is (repair or stop in progress).
    pub down_cause: Option<DownCause>,
    /// The current job's (product's) load factor: how hard the machine
    /// works while running (load signals and power scale with it).
    pub job_load: f64,
    /// Power drawn beyond what the machine needs (kW, hidden ground truth of
    /// energy waste): auxiliaries left on through a break, a leak.
    pub waste_kw: f64,
    /// Auxiliaries left on until the machine runs again.
    left_on: bool,
    in_setup: bool,
    was_stopped: bool,
    /// Plant seconds left of a leak (compressed air, hydraulics).
    leak_s: f64,
    /// The `power` signal's full scale (kW), for waste sizes.
    power_hi: f64,
}

/// Signals whose running level follows the job's load factor.
fn follows_load(name: &str) -> bool {
    matches!(
        name,
        "spindle_load" | "force" | "motor_current" | "flow" | "power"
    )
}

impl MachineSim {
    /// A machine of `twin`, seeded.
    pub fn new(twin: std::sync::Arc<TwinType>, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Wears out after 40..160 simulated running hours (a P-F interval
        // of days: the wear shows in vibration and temperature long before).
        let wear_rate = 1.0 / (rng.random_range(40.0..160.0) * 3600.0);
        let degradation = rng.random_range(0.0..0.6);
        let values = twin
            .signals
            .iter()
            .map(|d| {
                let (lo, hi) = (d.min.unwrap_or(0.0), d.max.unwrap_or(100.0));
                profile(&d.name, lo, hi).idle
            })
            .collect();
        let ideal_cycle_s = twin.ideal_cycle_s.unwrap_or(10.0);
        let good = rng.random_range(0..5000) as f64;
        MachineSim {
            rng,
            state: MachineState::Idle,
            hold_s: 0.0,
            hold_state: MachineState::Idle,
            degradation,
            wear_rate,
            good,
            reject: (good * 0.02).round(),
            part_progress: 0.0,
            run_hours: 1000.0,
            values,
            ideal_cycle_s,
            injected: false,
            down_cause: None,
            job_load: 1.0,
            waste_kw: 0.0,
            left_on: false,
            in_setup: false,
            was_stopped: true,
            leak_s: 0.0,
            power_hi: twin
                .signals
                .iter()
                .find(|d| d.name == "power")
                .map_or(0.0, |d| d.max.unwrap_or(100.0).min(1e9)),
            twin,
        }
    }

    /// Degradation gained per running hour (hidden wear rate).
    pub fn wear_per_h(&self) -> f64 {
        self.wear_rate * 3600.0
    }

    fn scheduled_state(plan: &ShiftPlan, sim_s: f64) -> MachineState {
        let shift_s = (plan.shift_hours * 3600.0).max(60.0);
        let t = sim_s.rem_euclid(shift_s);
        let setup = plan.setup_minutes * 60.0;
        let brk = plan.break_minutes * 60.0;
        let mid = shift_s / 2.0;
        if t < setup {
            MachineState::Setup
        } else if t >= mid && t < mid + brk {
            MachineState::Idle
        } else {
            MachineState::Running
        }
    }

    /// Force a failure now (fault injection).
    pub fn fail(&mut self) {
        self.degradation = 1.0;
        self.injected = true;
    }

    /// Advance by `dt_s` simulated seconds at simulated time `sim_s`.
    ///
    /// `dt_parts_s` is the wall-clock length of the step: parts are made at
    /// the machine's cycle time in real time, so that counters, timestamps
    /// and the ideal cycle time agree and OEE performance stays realistic
    /// even when the scenario runs the shift plan and wear faster
    /// (`time_scale`).
    pub fn step(&mut self, plan: &ShiftPlan, sim_s: f64, dt_s: f64, dt_parts_s: f64) {
        if self.hold_s > 0.0 {
            self.hold_s -= dt_s;
            self.state = self.hold_state;
            if self.hold_s <= 0.0 && self.hold_state == MachineState::Down {
                // Back up: set up again before running; a failure was repaired.
                if self.down_cause != Some(DownCause::MinorStop) {
                    self.degradation = self.rng.random_range(0.0..0.1);
                }
                self.down_cause = None;
                self.hold_state = MachineState::Setup;
                self.hold_s = self.rng.random_range(5.0..20.0) * 60.0;
            }
        } else if self.degradation >= 1.0 {
            self.down_cause = Some(if std::mem::take(&mut self.injected) {
                DownCause::Injected
            } else {
                DownCause::Wear
            });
            self.state = MachineState::Down;
            self.hold_state = MachineState::Down;
            // A worn-out part is replaced: hours, not minutes.
            self.hold_s = self.rng.random_range(2.0..8.0) * 3600.0;
        } else if self.rng.random_bool((dt_s / (4.0 * 3600.0)).min(1.0)) {
            // A short unplanned stop, every ~4 simulated hours.
            self.down_cause = Some(DownCause::MinorStop);
            self.state = MachineState::Down;
            self.hold_state = MachineState::Down;
            self.hold_s = self.rng.random_range(2.0..15.0) * 60.0;
        } else {
            self.state = Self::scheduled_state(plan, sim_s);
        }
        self.energy_step(dt_s);
        let running = self.state == MachineState::Running;
        if running {
            self.degradation = (self.degradation + self.wear_rate * dt_s).min(1.0);
            self.run_hours += dt_s / 3600.0;
            let cycle = self.ideal_cycle_s * (1.08 + 0.3 * self.degradation);
            self.part_progress += dt_parts_s / cycle;
            while self.part_progress >= 1.0 {
                self.part_progress -= 1.0;
                let p_reject = 0.01 + 0.12 * self.degradation * self.degradation;
                if self.rng.random_bool(p_reject.min(1.0)) {
                    self.reject += 1.0;
                } else {
                    self.good += 1.0;
                }
            }
        }
        // Signal values: first-order lag towards the target, plus noise.
        let lag = (dt_s / 30.0).min(1.0);
        for (i, d) in self.twin.signals.iter().enumerate() {
            let (lo, hi) = (d.min.unwrap_or(0.0), d.max.unwrap_or(f64::MAX));
            let pr = profile(&d.name, lo, hi.min(1e9));
            let k = if follows_load(&d.name) {
                self.job_load
            } else {
                1.0
            };
            let mut target = if running {
                pr.idle + (pr.run - pr.idle) * k + pr.wear * self.degradation * self.degradation
            } else {
                pr.idle
            };
            if d.name == "power" {
                target += self.waste_kw;
            }
            self.values[i] += (target - self.values[i]) * lag;
        }
    }

    /// Jobs and energy waste: a new job (load factor) at each set-up;
    /// auxiliaries left on through a stop now and then; a leak every few
    /// plant days of running, for hours.
    fn energy_step(&mut self, dt_s: f64) {
        let running = self.state == MachineState::Running;
        if self.state == MachineState::Setup && !self.in_setup {
            self.job_load = self.rng.random_range(0.7..1.2);
        }
        if !running && !self.was_stopped {
            // Stopping: the auxiliaries stay on one stop in five.
            self.left_on = self.rng.random_bool(0.2);
        }
        if running {
            self.left_on = false;
            if self.leak_s <= 0.0 && self.rng.random_bool((dt_s / (72.0 * 3600.0)).min(1.0)) {
                self.leak_s = self.rng.random_range(2.0..12.0) * 3600.0;
            }
        }
        self.leak_s = (self.leak_s - dt_s).max(0.0);
        self.in_setup = self.state == MachineState::Setup;
        self.was_stopped = !running;
        let hi = self.power_hi;
        self.waste_kw = if self.left_on { 0.2 * hi } else { 0.0 }
            + if self.leak_s > 0.0 { 0.06 * hi } else { 0.0 };
    }

    /// Current value of every signal (engineering units), in twin-type order.
    pub fn values(&mut self, ov: &Overrides) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.values.len());
        let twin = self.twin.clone();
        for (i, d) in twin.signals.iter().enumerate() {
            let (lo, hi) = (d.min.unwrap_or(f64::MIN), d.max.unwrap_or(f64::MAX));
            let pr = profile(
                &d.name,
                d.min.unwrap_or(0.0),
                d.max.unwrap_or(100.0).min(1e9),
            );
            let v = if Some(i as u16) == twin.state.as_ref().map(|s| s.0) {
                state_code(&twin, self.state)
            } else if Some(i as u16) == twin.good_counter {
                self.good
            } else if Some(i as u16) == twin.reject_counter {
                self.reject
            } else if d.name == "run_hours" {
                (self.run_hours * 10.0).round() / 10.0
            } else if d.name == "tool_wear" {
                (self.degradation * 100.0).min(hi)
            } else if d.name == "jam" {
                0.0
            } else {
                let noise: f64 = (0..3)
                    .map(|_| self.rng.random_range(-1.0..1.0))
                    .sum::<f64>()
                    * pr.noise;
                self.values[i] + noise
            };
            let v = match d.kind {
                SignalKind::Bool => (v != 0.0) as u8 as f64,
                SignalKind::Int | SignalKind::Counter if d.name != "run_hours" => v.round(),
                _ => v,
            };
            out.push(v.clamp(lo, hi));
        }
        for (i, v) in &ov.stuck {
            if let Some(slot) = out.get_mut(*i) {
                *slot = *v;
            }
        }
        out
    }
}

/// The wire code of a state, from the twin type's code table (reverse lookup).
pub fn state_code(twin: &TwinType, st: MachineState) -> f64 {
    twin.state
        .as_ref()
        .and_then(|(_, codes)| {
            codes
                .iter()
                .find(|(_, s)| **s == st)
                .map(|(c, _)| *c as f64)
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Config;

    #[test]
    fn deterministic_for_a_seed_and_values_stay_in_range() {
        let types = Config::embedded_twin_types().unwrap();
        let twin = types["cnc_mill"].clone();
        let plan = ShiftPlan::default();
        let run = |seed| {
            let mut m = MachineSim::new(twin.clone(), seed);
            let mut out = Vec::new();
            for k in 0..500 {
                m.step(&plan, k as f64 * 60.0, 60.0, 60.0);
                out.push(m.values(&Overrides::default()));
            }
            out
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        for vals in &a {
            for (v, d) in vals.iter().zip(&twin.signals) {
                assert!(d.in_range(*v), "{} = {v}", d.name);
            }
        }
        // Over 500 simulated minutes the mill runs, makes parts and changes state.
        let states: std::collections::HashSet<u64> = a.iter().map(|v| v[0] as u64).collect();
        assert!(states.len() >= 2, "states seen: {states:?}");
        assert!(a.last().unwrap()[6] > a[0][6], "good parts grow");
    }
}
