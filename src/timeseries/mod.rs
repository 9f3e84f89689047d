//! Time-series kernels on Arrow arrays, per key (asset, machine, signal).
//!
//! Every kernel takes the rows of a table as parallel arrays: a dense key code
//! per row ([`Keys`]), a timestamp in UTC milliseconds per row, and the value
//! columns. Rows may arrive interleaved across keys (a plant's stream is in
//! time order, not grouped by machine); the kernels never regroup the table.
//! They walk the rows once in arrival order and keep a small state per key
//! (a cursor, a ring of window values, an open window). When some key's
//! timestamps go backwards, [`RowOrder`] supplies a `(key, ts)` permutation
//! instead, so results are the same for any input order; only the cost
//! changes (a sort).
//!
//! Results are aligned with the input rows (one output value per row) except
//! for aggregations ([`window`]) and detections ([`resample::gaps`]), which
//! return one row per group.
//!
//! This module owns the arithmetic. It never reads or writes tables: the
//! pipelines, the gold jobs, the SQL functions and `ironlake bench` call it.

pub mod asof;
pub mod dedup;
pub mod keys;
pub mod order;
pub mod resample;
pub mod rolling;
pub mod shifts;
pub mod window;

pub use asof::{asof_join, AsofDirection};
pub use dedup::dedup_first;
pub use keys::{KeyInterner, Keys};
pub use order::RowOrder;
pub use resample::{gaps, resample, Fill};
pub use rolling::{ema, rolling, RollingSpec, RollingStats, WindowFrame};
pub use shifts::{
    counter_deltas, counter_deltas_tolerant, counter_step, state_durations, FixedShifts,
    LocalShifts, ShiftCalendar,
};
pub use window::{integrate_hold, windows, WindowAggs, WindowSpec};

/// Errors of the kernels: inputs they cannot work on.
#[derive(Debug, thiserror::Error)]
pub enum TsError {
    #[error("column `{column}`: expected {expected}, found {found}")]
    Type {
        column: String,
        expected: &'static str,
        found: String,
    },
    #[error("columns have different lengths: {0}")]
    Length(String),
    #[error("invalid parameter: {0}")]
    Param(String),
}

/// Check that parallel inputs have the same number of rows.
pub(crate) fn same_len(what: &str, lens: &[usize]) -> Result<usize, TsError> {
    let n = lens.first().copied().unwrap_or(0);
    if lens.iter().any(|&l| l != n) {
        return Err(TsError::Length(format!("{what}: {lens:?}")));
    }
    Ok(n)
}
