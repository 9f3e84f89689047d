//! `max_by(x, key)` and `min_by(x, key)`: the value of `x` on the row with
//! the greatest (least) `key`, as Spark and Databricks SQL name them; DuckDB
//! users know them as `arg_max` and `arg_min`, which are aliases.
//!
//! ```sql
//! -- the newest value of every signal of every machine in the last hour
//! SELECT asset_id, signal, max_by(value, ts) AS value, max(ts) AS ts
//! FROM silver.readings WHERE ts >= now() - INTERVAL '1 hour'
//! GROUP BY asset_id, signal;
//! ```
//!
//! A dashboard's "last value" question. DataFusion answers it with
//! `last_value(x ORDER BY key)`, which compares keys through a generic row
//! comparator; here the key is read once per batch as a 64-bit integer
//! whose order is the key's (numbers, times, dates) and each group keeps its
//! best key and value in flat vectors.
//!
//! Rows whose key is NULL are skipped; a group without any key gives NULL.
//! The winning row's `x` is returned even when it is NULL. On equal keys the
//! row met first wins (like Spark, which row that is across files is not
//! defined).

use std::borrow::Cow;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, Int64Array, PrimitiveArray,
};
use deltalake::arrow::compute::kernels::boolean::not;
use deltalake::arrow::compute::{nullif, prep_null_mask_filter, take};
use deltalake::arrow::datatypes::{
    DataType, Date32Type, Date64Type, Field, FieldRef, Float32Type, Float64Type, Int16Type,
    Int32Type, Int64Type, Int8Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use deltalake::datafusion::error::{DataFusionError, Result};
use deltalake::datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use deltalake::datafusion::logical_expr::utils::format_state_name;
use deltalake::datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility,
};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::scalar::ScalarValue;

/// `max_by` / `min_by` (and their `arg_max` / `arg_min` aliases).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ByExtreme {
    name: &'static str,
    aliases: Vec<String>,
    /// `max_by` when true, `min_by` when false.
    max: bool,
    signature: Signature,
}

impl ByExtreme {
    fn new(max: bool) -> ByExtreme {
        let (name, alias) = if max {
            ("max_by", "arg_max")
        } else {
            ("min_by", "arg_min")
        };
        ByExtreme {
            name,
            aliases: vec![alias.to_string()],
            max,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }

    /// Register both functions in a session.
    pub fn register(ctx: &SessionContext) {
        for max in [true, false] {
            ctx.register_udaf(AggregateUDF::from(ByExtreme::new(max)));
        }
    }
}

/// Whether `t` can order rows here, i.e. [`keys_of`] maps it onto an `i64`
/// keeping order (asked of an empty column, so the list of types is one).
fn key_supported(t: &DataType) -> bool {
    keys_of(deltalake::arrow::array::new_empty_array(t).as_ref()).is_ok()
}

/// A float's bits as an `i64` ordered as the floats are (IEEE total order:
/// -NaN < -inf < ... < -0 < +0 < ... < inf < NaN).
fn ordered_f64(v: f64) -> i64 {
    let b = v.to_bits() as i64;
    b ^ (((b >> 63) as u64) >> 1) as i64
}

fn widen<T: ArrowPrimitiveType>(a: &dyn Array, f: impl Fn(T::Native) -> i64) -> Vec<i64> {
    a.as_primitive::<T>()
        .values()
        .iter()
        .map(|&v| f(v))
        .collect()
}

/// A key column as order-preserving `i64`s (nulls are looked up in the
/// column's own null buffer).
fn keys_of(a: &dyn Array) -> Result<Cow<'_, [i64]>> {
    Ok(match a.data_type() {
        DataType::Int64 => Cow::Borrowed(a.as_primitive::<Int64Type>().values().as_ref()),
        DataType::Timestamp(TimeUnit::Second, _) => {
            Cow::Borrowed(a.as_primitive::<TimestampSecondType>().values().as_ref())
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => Cow::Borrowed(
            a.as_primitive::<TimestampMillisecondType>()
                .values()
                .as_ref(),
        ),
        DataType::Timestamp(TimeUnit::Microsecond, _) => Cow::Borrowed(
            a.as_primitive::<TimestampMicrosecondType>()
                .values()
                .as_ref(),
        ),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => Cow::Borrowed(
            a.as_primitive::<TimestampNanosecondType>()
                .values()
                .as_ref(),
        ),
        DataType::Date64 => Cow::Borrowed(a.as_primitive::<Date64Type>().values().as_ref()),
        DataType::Int8 => Cow::Owned(widen::<Int8Type>(a, i64::from)),
        DataType::Int16 => Cow::Owned(widen::<Int16Type>(a, i64::from)),
        DataType::Int32 => Cow::Owned(widen::<Int32Type>(a, i64::from)),
        DataType::Date32 => Cow::Owned(widen::<Date32Type>(a, i64::from)),
        DataType::UInt8 => Cow::Owned(widen::<UInt8Type>(a, i64::from)),
        DataType::UInt16 => Cow::Owned(widen::<UInt16Type>(a, i64::from)),
        DataType::UInt32 => Cow::Owned(widen::<UInt32Type>(a, i64::from)),
        // Flipping the sign bit maps 0..=u64::MAX onto i64::MIN..=i64::MAX.
        DataType::UInt64 => Cow::Owned(widen::<UInt64Type>(a, |v| (v as i64) ^ i64::MIN)),
        DataType::Float32 => Cow::Owned(widen::<Float32Type>(a, |v| ordered_f64(f64::from(v)))),
        DataType::Float64 => Cow::Owned(widen::<Float64Type>(a, ordered_f64)),
        // An all-NULL key column: every row is skipped.
        DataType::Null => Cow::Owned(vec![0; a.len()]),
        other => {
            return Err(DataFusionError::Plan(format!(
                "max_by/min_by order rows by a number, a date or a timestamp, not {other}"
            )))
        }
    })
}

impl AggregateUDFImpl for ByExtreme {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let [value, key] = arg_types else {
            return Err(DataFusionError::Plan(format!(
                "{}(value, key) takes two arguments",
                self.name
            )));
        };
        if !key_supported(key) {
            return Err(DataFusionError::Plan(format!(
                "{}(value, key): the key orders rows and must be a number, a date or a timestamp, not {key}",
                self.name
            )));
        }
        Ok(value.clone())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ByExtremeAccumulator {
            max: self.max,
            best: None,
            data_type: args.return_field.data_type().clone(),
        }))
    }

    /// The partial state: the winning value and its key as an ordered
    /// `i64` (see [`keys_of`]).
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![
            Field::new(
                format_state_name(args.name, "value"),
                args.return_field.data_type().clone(),
                true,
            )
            .into(),
            Field::new(format_state_name(args.name, "key"), DataType::Int64, true).into(),
        ])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        let data_type = args.return_field.data_type().clone();
        Ok(Box::new(ByExtremeGroups {
            max: self.max,
            keys: Vec::new(),
            has: Vec::new(),
            batch_row: Vec::new(),
            values: value_store(&data_type),
        }))
    }
}

/// The non-grouped form (`SELECT max_by(x, ts) FROM t`), also used by
/// window frames.
#[derive(Debug)]
struct ByExtremeAccumulator {
    max: bool,
    best: Option<(i64, ScalarValue)>,
    data_type: DataType,
}

impl ByExtremeAccumulator {
    /// Fold rows of `values` with already-converted `keys`.
    fn fold(&mut self, values: &ArrayRef, key_col: &dyn Array, keys: &[i64]) -> Result<()> {
        let mut row = None;
        let mut best = self.best.as_ref().map(|b| b.0);
        for (i, &k) in keys.iter().enumerate() {
            if key_col.is_null(i) {
                continue;
            }
            if best.is_none_or(|b| better(self.max, k, b)) {
                best = Some(k);
                row = Some(i);
            }
        }
        if let (Some(i), Some(k)) = (row, best) {
            self.best = Some((k, ScalarValue::try_from_array(values, i)?));
        }
        Ok(())
    }
}

#[inline]
fn better(max: bool, candidate: i64, current: i64) -> bool {
    if max {
        candidate > current
    } else {
        candidate < current
    }
}

impl Accumulator for ByExtremeAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let keys = keys_of(values[1].as_ref())?;
        self.fold(&values[0], values[1].as_ref(), &keys)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let keys = states[1].as_primitive::<Int64Type>();
        self.fold(&states[0], keys, keys.values())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(match &self.best {
            Some((k, v)) => vec![v.clone(), ScalarValue::Int64(Some(*k))],
            None => vec![
                ScalarValue::try_from(&self.data_type)?,
                ScalarValue::Int64(None),
            ],
        })
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        match &self.best {
            Some((_, v)) => Ok(v.clone()),
            None => ScalarValue::try_from(&self.data_type),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.best.as_ref().map_or(0, |b| b.1.size())
    }
}

/// Per-group state of the grouped form.
struct ByExtremeGroups {
    max: bool,
    /// Best key per group (meaningful where `has`).
    keys: Vec<i64>,
    has: Vec<bool>,
    /// Scratch: the winning row of the current batch per group, or
    /// `u32::MAX`.
    batch_row: Vec<u32>,
    values: Box<dyn ValueStore>,
}

impl ByExtremeGroups {
    fn resize(&mut self, groups: usize) {
        if self.keys.len() < groups {
            self.keys.resize(groups, 0);
            self.has.resize(groups, false);
            self.batch_row.resize(groups, u32::MAX);
            self.values.resize(groups);
        }
    }

    /// Fold one batch: `keys` already converted, `valid` tells which rows
    /// take part (key not NULL, filter true).
    fn fold(
        &mut self,
        values: &ArrayRef,
        keys: &[i64],
        valid: Option<&BooleanArray>,
        key_col: &dyn Array,
        groups: &[usize],
        total: usize,
    ) -> Result<()> {
        self.resize(total);
        let mut touched: Vec<usize> = Vec::new();
        let key_nulls = key_col.logical_nulls();
        for (row, (&g, &k)) in groups.iter().zip(keys.iter()).enumerate() {
            if key_nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                continue;
            }
            if valid.is_some_and(|f| !f.value(row)) {
                continue;
            }
            if !self.has[g] || better(self.max, k, self.keys[g]) {
                self.keys[g] = k;
                self.has[g] = true;
                if self.batch_row[g] == u32::MAX {
                    touched.push(g);
                }
                self.batch_row[g] = row as u32;
            }
        }
        if touched.is_empty() {
            return Ok(());
        }
        let rows: Vec<u32> = touched
            .iter()
            .map(|&g| std::mem::replace(&mut self.batch_row[g], u32::MAX))
            .collect();
        self.values.set(&touched, values, &rows)
    }

    fn emit_keys(&mut self, emit_to: EmitTo) -> (Vec<i64>, Vec<bool>) {
        let keys = emit_to.take_needed(&mut self.keys);
        let has = emit_to.take_needed(&mut self.has);
        let _ = emit_to.take_needed(&mut self.batch_row);
        (keys, has)
    }
}

/// A row filter with NULL as false, as DataFusion means it.
fn filter_mask(filter: Option<&BooleanArray>) -> Option<BooleanArray> {
    filter.map(|f| {
        if f.null_count() > 0 {
            prep_null_mask_filter(f)
        } else {
            f.clone()
        }
    })
}

impl GroupsAccumulator for ByExtremeGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        let keys = keys_of(values[1].as_ref())?;
        let mask = filter_mask(opt_filter);
        self.fold(
            &values[0],
            &keys,
            mask.as_ref(),
            values[1].as_ref(),
            group_indices,
            total_num_groups,
        )
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let (_, has) = self.emit_keys(emit_to);
        self.values.emit(emit_to, &has)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let (keys, has) = self.emit_keys(emit_to);
        let values = self.values.emit(emit_to, &has)?;
        let keys: Int64Array = keys
            .into_iter()
            .zip(has)
            .map(|(k, h)| h.then_some(k))
            .collect();
        Ok(vec![values, Arc::new(keys)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        let keys = values[1].as_primitive::<Int64Type>();
        self.fold(
            &values[0],
            keys.values(),
            None,
            keys,
            group_indices,
            total_num_groups,
        )
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let keys = keys_of(values[1].as_ref())?;
        let key_nulls = values[1].logical_nulls();
        let mut keys: ArrayRef = Arc::new(Int64Array::new(keys.into_owned().into(), key_nulls));
        if let Some(mask) = filter_mask(opt_filter) {
            // Rows the filter drops get a NULL key, so merging skips them.
            keys = Arc::new(nullif(&keys, &not(&mask)?)?);
        }
        Ok(vec![values[0].clone(), keys])
    }

    fn size(&self) -> usize {
        self.keys.capacity() * 8
            + self.has.capacity()
            + self.batch_row.capacity() * 4
            + self.values.size()
    }
}

/// The winning values of every group.
trait ValueStore: Send {
    fn resize(&mut self, groups: usize);
    /// `groups[i]` now holds `values[rows[i]]`.
    fn set(&mut self, groups: &[usize], values: &ArrayRef, rows: &[u32]) -> Result<()>;
    /// The values of the groups `emit_to` names, NULL where `has` is false.
    fn emit(&mut self, emit_to: EmitTo, has: &[bool]) -> Result<ArrayRef>;
    fn size(&self) -> usize;
}

fn value_store(data_type: &DataType) -> Box<dyn ValueStore> {
    macro_rules! prim {
        ($t:ty) => {
            Box::new(Primitive::<$t> {
                values: Vec::new(),
                valid: Vec::new(),
                data_type: data_type.clone(),
            })
        };
    }
    match data_type {
        DataType::Float64 => prim!(Float64Type),
        DataType::Float32 => prim!(Float32Type),
        DataType::Int64 => prim!(Int64Type),
        DataType::Int32 => prim!(Int32Type),
        DataType::Int16 => prim!(Int16Type),
        DataType::Int8 => prim!(Int8Type),
        DataType::UInt64 => prim!(UInt64Type),
        DataType::UInt32 => prim!(UInt32Type),
        DataType::UInt16 => prim!(UInt16Type),
        DataType::UInt8 => prim!(UInt8Type),
        DataType::Date32 => prim!(Date32Type),
        DataType::Date64 => prim!(Date64Type),
        DataType::Timestamp(TimeUnit::Second, _) => prim!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => prim!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => prim!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => prim!(TimestampNanosecondType),
        other => Box::new(Scalars {
            values: Vec::new(),
            data_type: other.clone(),
            bytes: 0,
        }),
    }
}

/// Values of a primitive type, flat.
struct Primitive<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    valid: Vec<bool>,
    /// Carries a timestamp's time zone.
    data_type: DataType,
}

impl<T: ArrowPrimitiveType> ValueStore for Primitive<T> {
    fn resize(&mut self, groups: usize) {
        self.values.resize(groups, T::Native::default());
        self.valid.resize(groups, false);
    }

    fn set(&mut self, groups: &[usize], values: &ArrayRef, rows: &[u32]) -> Result<()> {
        let a = values.as_primitive::<T>();
        let nulls = a.logical_nulls();
        let v = a.values();
        for (&g, &r) in groups.iter().zip(rows) {
            let r = r as usize;
            self.values[g] = v[r];
            self.valid[g] = nulls.as_ref().is_none_or(|n| n.is_valid(r));
        }
        Ok(())
    }

    fn emit(&mut self, emit_to: EmitTo, has: &[bool]) -> Result<ArrayRef> {
        let values = emit_to.take_needed(&mut self.values);
        let valid = emit_to.take_needed(&mut self.valid);
        let nulls: Vec<bool> = valid.iter().zip(has).map(|(&v, &h)| v && h).collect();
        let array = PrimitiveArray::<T>::new(values.into(), Some(nulls.into()))
            .with_data_type(self.data_type.clone());
        Ok(Arc::new(array))
    }

    fn size(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<T::Native>() + self.valid.capacity()
    }
}

/// Values of any other type (text, booleans, decimals, nested), one scalar
/// per group.
struct Scalars {
    values: Vec<Option<ScalarValue>>,
    data_type: DataType,
    /// Heap bytes of the scalars held (kept up to date: `size` is asked
    /// for every batch).
    bytes: usize,
}

impl ValueStore for Scalars {
    fn resize(&mut self, groups: usize) {
        self.values.resize(groups, None);
    }

    fn set(&mut self, groups: &[usize], values: &ArrayRef, rows: &[u32]) -> Result<()> {
        // One `take` of the winners, then a scalar each.
        let picked = take(
            values.as_ref(),
            &deltalake::arrow::array::UInt32Array::from(rows.to_vec()),
            None,
        )?;
        for (i, &g) in groups.iter().enumerate() {
            let v = ScalarValue::try_from_array(&picked, i)?;
            self.bytes += v.size();
            if let Some(old) = self.values[g].replace(v) {
                self.bytes -= old.size();
            }
        }
        Ok(())
    }

    fn emit(&mut self, emit_to: EmitTo, has: &[bool]) -> Result<ArrayRef> {
        let values = emit_to.take_needed(&mut self.values);
        self.bytes -= values.iter().flatten().map(|v| v.size()).sum::<usize>();
        let null = ScalarValue::try_from(&self.data_type)?;
        let scalars = values
            .into_iter()
            .zip(has)
            .map(|(v, &h)| match v {
                Some(v) if h => v,
                _ => null.clone(),
            })
            .collect::<Vec<_>>();
        if scalars.is_empty() {
            return Ok(deltalake::arrow::array::new_empty_array(&self.data_type));
        }
        ScalarValue::iter_to_array(scalars)
    }

    fn size(&self) -> usize {
        self.bytes + self.values.capacity() * std::mem::size_of::<Option<ScalarValue>>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};

    fn groups(max: bool, data_type: &DataType) -> ByExtremeGroups {
        ByExtremeGroups {
            max,
            keys: Vec::new(),
            has: Vec::new(),
            batch_row: Vec::new(),
            values: value_store(data_type),
        }
    }

    /// Rows skipped by the partial phase (`convert_to_state`, used when
    /// grouping does not reduce the rows) merge to the same answer as
    /// `update_batch`, FILTER included; `EmitTo::First` keeps the rest.
    #[test]
    fn state_of_raw_rows_merges_like_an_update() {
        let values: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            Some(2.0),
            None,
            Some(4.0),
            Some(5.0),
        ]));
        let keys: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(10), Some(30), Some(40), None, Some(20)])
                .with_timezone("UTC"),
        );
        let filter =
            BooleanArray::from(vec![Some(true), Some(true), Some(false), Some(true), None]);
        let group_of = [0usize, 0, 0, 1, 1];

        let mut direct = groups(true, &DataType::Float64);
        direct
            .update_batch(&[values.clone(), keys.clone()], &group_of, Some(&filter), 2)
            .unwrap();
        let state = direct
            .convert_to_state(&[values.clone(), keys.clone()], Some(&filter))
            .unwrap();
        let mut merged = groups(true, &DataType::Float64);
        merged.merge_batch(&state, &group_of, 2).unwrap();

        for acc in [&mut direct, &mut merged] {
            let first = acc.evaluate(EmitTo::First(1)).unwrap();
            let first = first.as_primitive::<Float64Type>();
            // Group 0: the row at ts 40 is filtered out, so ts 30 wins.
            assert_eq!(first.len(), 1);
            assert_eq!(first.value(0), 2.0);
            // Group 1: a NULL key and a NULL filter: no row, NULL.
            let rest = acc.evaluate(EmitTo::All).unwrap();
            assert_eq!(rest.len(), 1);
            assert!(rest.is_null(0));
        }
    }

    /// `min_by` of text values, across two batches, through `state` and
    /// `merge_batch` (the two phases of a parallel aggregation).
    #[test]
    fn text_values_through_both_phases() {
        let mut partial = groups(false, &DataType::Utf8);
        for (vals, ks) in [
            (vec!["b", "a", "c"], vec![5i64, 7, 3]),
            (vec!["d", "e", "f"], vec![1i64, 9, 2]),
        ] {
            let v: ArrayRef = Arc::new(StringArray::from(vals));
            let k: ArrayRef = Arc::new(Int64Array::from(ks));
            partial.update_batch(&[v, k], &[0, 1, 0], None, 2).unwrap();
        }
        let state = partial.state(EmitTo::All).unwrap();
        let mut fin = groups(false, &DataType::Utf8);
        fin.merge_batch(&state, &[1, 0], 2).unwrap();
        let out = fin.evaluate(EmitTo::All).unwrap();
        let out = out.as_string::<i32>();
        // Partial group 0 (keys 5, 3, 1, 2) -> "d" lands in final group 1;
        // partial group 1 (keys 7, 9) -> "a" in final group 0.
        assert_eq!(out.value(0), "a");
        assert_eq!(out.value(1), "d");
    }

    #[test]
    fn float_keys_keep_their_order() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -1.5,
            -0.0,
            0.0,
            1e-300,
            2.5,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ordered_f64(w[0]) <= ordered_f64(w[1]), "{} {}", w[0], w[1]);
        }
        assert!(ordered_f64(-1.5) < ordered_f64(-1.25));
    }
}
