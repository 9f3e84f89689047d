//! `gold.features`: the model features of every machine whose twin type has
//! a feature set, per time bucket, computed offline from `silver.readings`
//! by the very engine the twins run live (`twins::features`), so training
//! data and live scoring see the same numbers. Long format: one row per
//! machine, bucket and feature (`features_version` says which definitions).
//!
//! Each update reads from `from` minus the longest window (so the first
//! rows' windows are full) and replaces the rows whose bucket ends at or
//! after `from`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use deltalake::arrow::array::{ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};

use super::inputs::{readings_of, us};
use super::{GoldContext, GoldError, GoldJob};
use crate::lake::Table;
use crate::twins::features::FeatureEngine;

/// The features job.
pub struct Features;

#[async_trait]
impl GoldJob for Features {
    fn kind(&self) -> &'static str {
        "features"
    }
    fn target(&self) -> Table {
        Table::GoldFeatures
    }
    fn sources(&self) -> &'static [Table] {
        &[Table::SilverReadings]
    }
    fn replace_key(&self) -> Option<&'static str> {
        Some("bucket_end")
    }
    async fn compute(
        &self,
        cx: &GoldContext<'_>,
        from: Option<i64>,
        now_ms: i64,
    ) -> Result<RecordBatch, GoldError> {
        let assets: Vec<_> = cx
            .model
            .assets
            .iter()
            .filter(|a| a.twin.features.is_some())
            .collect();
        let lookback = assets
            .iter()
            .filter_map(|a| a.twin.features.as_ref())
            .map(|s| (s.max_buckets as i64 + 1) * s.bucket_ms)
            .max()
            .unwrap_or(0);
        let ids: Vec<String> = assets.iter().map(|a| a.id.to_string()).collect();
        let rows = readings_of(cx, &ids, from.map(|f| f - lookback)).await?;
        // Each machine's readings in time order (ties keep silver's order).
        let mut by_asset: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, a) in rows.asset.iter().enumerate() {
            by_asset.entry(a.as_str()).or_default().push(i);
        }
        let (mut plant, mut line, mut asset_c, mut kind, mut version) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut end, mut feature, mut value) = (vec![], vec![], vec![]);
        for a in &assets {
            let Some(idx) = by_asset.get_mut(a.id.as_str()) else {
                continue;
            };
            idx.sort_by_key(|&i| rows.ts[i]);
            let Some(mut engine) = FeatureEngine::new(a.twin.clone()) else {
                continue;
            };
            let set = engine.set().clone();
            for &i in idx.iter() {
                let Some(signal) = a.twin.signal(&rows.text[i]) else {
                    continue;
                };
                let Some(row) = engine.push(signal, rows.ts[i], rows.value[i]) else {
                    continue;
                };
                if from.is_some_and(|f| row.bucket_end < f) || row.bucket_end > now_ms {
                    continue;
                }
                for (f, v) in set.features.iter().zip(&row.values) {
                    plant.push(a.plant.as_str().to_string());
                    line.push(a.line.as_str().to_string());
                    asset_c.push(a.id.to_string());
                    kind.push(a.twin.kind.clone());
                    version.push(set.version as i32);
                    end.push(row.bucket_end);
                    feature.push(f.name.clone());
                    value.push(*v);
                }
            }
        }
        let n = end.len();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(plant)),
            Arc::new(StringArray::from(line)),
            Arc::new(StringArray::from(asset_c)),
            Arc::new(StringArray::from(kind)),
            Arc::new(Int32Array::from(version)),
            Arc::new(us(&end)),
            Arc::new(StringArray::from(feature)),
            Arc::new(Float64Array::from(value)),
            Arc::new(us(&vec![now_ms; n])),
        ];
        Ok(RecordBatch::try_new(
            Table::GoldFeatures.arrow_schema(),
            cols,
        )?)
    }
}
