//! Table maintenance: compaction (`optimize`), removal of files no version
//! needs any more (`vacuum`), the commit history, and log checkpoints.
//! `ironlake lake ...` and the pipelines' housekeeping call these.

use std::num::NonZeroU64;

use deltalake::arrow::array::{Array, AsArray};
use futures::StreamExt;
use serde::Serialize;

use super::rows::AssetRow;
use super::{LakeError, Lakehouse, TableName};
use deltalake::DeltaTable;

/// One commit of a table.
#[derive(Debug, Clone, Serialize)]
pub struct Commit {
    pub version: u64,
    /// Commit time, UTC ms.
    pub timestamp_ms: Option<i64>,
    pub operation: String,
    pub parameters: serde_json::Value,
    /// Operation metrics (rows and files written, ...), when recorded.
    pub metrics: serde_json::Value,
}

/// What `optimize` did.
#[derive(Debug, Clone, Serialize)]
pub struct OptimizeReport {
    pub files_added: u64,
    pub files_removed: u64,
    pub partitions_optimized: u64,
    pub version: Option<u64>,
}

/// What `vacuum` did (or would do, on a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    pub dry_run: bool,
    pub files_deleted: Vec<String>,
}

/// What `prune_checkpoints` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub files_removed: u64,
    /// When the files' statistics tell.
    pub rows_removed: Option<u64>,
    /// Old days kept because they hold the newest checkpoint of an asset no
    /// longer configured.
    pub days_kept_for_removed_assets: u64,
}

impl Lakehouse {
    /// Write `batches` to `t` (created with its schema when missing) in one
    /// commit, replacing the rows that match `replace_where` (all rows when
    /// `None`). Returns the new table version.
    pub async fn replace(
        &self,
        t: super::Table,
        batches: Vec<deltalake::arrow::array::RecordBatch>,
        replace_where: Option<String>,
    ) -> Result<u64, LakeError> {
        let table = self.open_or_create(t).await?;
        let mut w = table
            .write(batches)
            .with_save_mode(deltalake::protocol::SaveMode::Overwrite)
            .with_partition_columns(t.partition_columns().iter().map(|s| s.to_string()));
        if let Some(p) = replace_where {
            w = w.with_replace_where(p);
        }
        let table = w.await.map_err(|source| LakeError::Delta {
            table: t.name(),
            source,
        })?;
        Ok(table.version().unwrap_or(0) as u64)
    }

    /// Open an existing table by its `layer.table` name.
    pub async fn open_by_name(&self, name: &str) -> Result<DeltaTable, LakeError> {
        let n = TableName::parse(name).map_err(|e| LakeError::Root {
            root: self.root().to_string(),
            message: e.to_string(),
        })?;
        self.open_existing(&n).await
    }

    /// Open an existing table.
    pub async fn open_existing(&self, name: &TableName) -> Result<DeltaTable, LakeError> {
        if !self.exists(name) {
            return Err(LakeError::NoTable(name.clone()));
        }
        DeltaTable::try_from_url(self.url_of(name))
            .await
            .map_err(|source| LakeError::Open {
                table: name.to_string(),
                source,
            })
    }

    /// The newest `limit` commits of a table, newest first.
    pub async fn table_history(
        &self,
        name: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Commit>, LakeError> {
        let t = self.open_by_name(name).await?;
        let newest = t.version().unwrap_or(0);
        let open = |source| LakeError::Open {
            table: name.to_string(),
            source,
        };
        let infos: Vec<_> = t.history(limit).collect().await;
        let mut out = Vec::with_capacity(infos.len());
        for (i, info) in infos.into_iter().enumerate() {
            let info = info.map_err(open)?;
            let metrics = info
                .info
                .get("operationMetrics")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            out.push(Commit {
                // Commits are listed newest first, one per version.
                version: newest.saturating_sub(i as u64),
                timestamp_ms: info.in_commit_timestamp.or(info.timestamp),
                operation: info.operation.unwrap_or_default(),
                parameters: serde_json::to_value(info.operation_parameters.unwrap_or_default())
                    .unwrap_or_default(),
                metrics,
            });
        }
        Ok(out)
    }

    /// Compact small files into files of about `target_bytes`.
    pub async fn optimize(
        &self,
        name: &str,
        target_bytes: u64,
    ) -> Result<OptimizeReport, LakeError> {
        let t = self.open_by_name(name).await?;
        let open = |source| LakeError::Open {
            table: name.to_string(),
            source,
        };
        let target = NonZeroU64::new(target_bytes.max(1 << 20)).unwrap_or(NonZeroU64::MIN);
        let (t, m) = t.optimize().with_target_size(target).await.map_err(open)?;
        Ok(OptimizeReport {
            files_added: m.num_files_added,
            files_removed: m.num_files_removed,
            partitions_optimized: m.partitions_optimized,
            version: t.version(),
        })
    }

    /// Delete files that no version younger than `retention_hours` needs.
    /// A retention under the table's own (7 days by default) is refused, as
    /// it could break readers still on an older version.
    pub async fn vacuum(
        &self,
        name: &str,
        retention_hours: u64,
        dry_run: bool,
    ) -> Result<VacuumReport, LakeError> {
        let t = self.open_by_name(name).await?;
        let open = |source| LakeError::Open {
            table: name.to_string(),
            source,
        };
        let (_, m) = t
            .vacuum()
            .with_retention_period(chrono::Duration::hours(retention_hours as i64))
            .with_dry_run(dry_run)
            .await
            .map_err(open)?;
        Ok(VacuumReport {
            dry_run: m.dry_run,
            files_deleted: m.files_deleted,
        })
    }

    /// Drop the `date` partitions of `gold.asset_state` before the UTC day
    /// `keep_days` before today: whole files, removed in one commit without
    /// rewriting anything (the files go at the next vacuum). A day holding
    /// the newest checkpoint of an asset not in `current` (a twin removed
    /// from the configuration) is kept, so that it resumes if it comes back.
    /// Call it only once every asset of `current` has a newer checkpoint.
    pub async fn prune_checkpoints(
        &self,
        keep_days: u32,
        current: &std::collections::HashSet<String>,
    ) -> Result<PruneReport, LakeError> {
        use deltalake::datafusion::functions_aggregate::expr_fn::max;
        use deltalake::datafusion::prelude::{col, lit};
        use deltalake::datafusion::scalar::ScalarValue;
        let t = super::Table::GoldAssetState;
        if keep_days == 0 {
            return Ok(PruneReport::default());
        }
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let day = |d: i32| lit(ScalarValue::Date32(Some(d)));
        let cutoff = crate::time::day_of(crate::time::now_ms()) - keep_days as i32;
        let old = col("date").lt(day(cutoff));
        let (ctx, table) = super::read::open(self, t).await?;
        let provider = table.table_provider().await.map_err(qerr)?;
        let batches = ctx
            .read_table(provider)
            .map_err(qerr)?
            .filter(old.clone())
            .map_err(qerr)?
            .aggregate(vec![col("asset_id")], vec![max(col("date")).alias("d")])
            .map_err(qerr)?
            .collect()
            .await
            .map_err(qerr)?;
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(PruneReport::default());
        }
        let mut keep = std::collections::BTreeSet::new();
        for b in &batches {
            let a = super::read::string_column(b, 0)?;
            let d = b
                .column(1)
                .as_primitive::<deltalake::arrow::datatypes::Date32Type>();
            for i in 0..b.num_rows() {
                if d.is_valid(i) && !current.contains(a.value(i)) {
                    keep.insert(d.value(i));
                }
            }
        }
        let mut predicate = old;
        if !keep.is_empty() {
            predicate =
                predicate.and(col("date").in_list(keep.iter().map(|d| day(*d)).collect(), true));
        }
        let (_, m) = table
            .delete()
            .with_predicate(predicate)
            .await
            .map_err(|source| LakeError::Delta {
                table: t.name(),
                source,
            })?;
        Ok(PruneReport {
            files_removed: m.num_removed_files as u64,
            rows_removed: m.num_deleted_rows.map(|n| n as u64),
            days_kept_for_removed_assets: keep.len() as u64,
        })
    }

    /// Make `silver.assets` hold exactly `rows` (the configured assets):
    /// rewritten in one commit when it holds anything else, untouched when
    /// it already matches (a restart with the same configuration commits
    /// nothing). Returns whether it was rewritten.
    pub async fn sync_register(&self, rows: &[AssetRow]) -> Result<bool, LakeError> {
        use deltalake::arrow::datatypes::{Float64Type, Int32Type};
        let t = super::Table::SilverAssets;
        let qerr = |source| LakeError::Query {
            table: t.name(),
            source,
        };
        let (ctx, table) = super::read::open(self, t).await?;
        let provider = table.table_provider().await.map_err(qerr)?;
        let names = [
            "asset_id",
            "name",
            "plant",
            "area",
            "line",
            "twin_type",
            "protocol",
            "signals",
            "x_m",
            "y_m",
        ];
        let batches = ctx
            .read_table(provider)
            .map_err(qerr)?
            .select_columns(&names)
            .map_err(qerr)?
            .collect()
            .await
            .map_err(qerr)?;
        let mut have = Vec::new();
        for b in &batches {
            let s = (0..7)
                .map(|i| super::read::string_column(b, i))
                .collect::<Result<Vec<_>, _>>()?;
            let n = b.column(7).as_primitive::<Int32Type>();
            let (x, y) = (
                b.column(8).as_primitive::<Float64Type>(),
                b.column(9).as_primitive::<Float64Type>(),
            );
            let opt =
                |a: &deltalake::arrow::array::Float64Array, i| a.is_valid(i).then(|| a.value(i));
            for i in 0..b.num_rows() {
                have.push(AssetRow {
                    asset_id: s[0].value(i).into(),
                    name: s[1].value(i).into(),
                    plant: s[2].value(i).into(),
                    area: s[3].value(i).into(),
                    line: s[4].value(i).into(),
                    twin_type: s[5].value(i).into(),
                    protocol: s[6].value(i).into(),
                    signals: n.value(i),
                    x_m: opt(x, i),
                    y_m: opt(y, i),
                });
            }
        }
        let key = |r: &AssetRow| (r.plant.clone(), r.asset_id.clone());
        let mut want = rows.to_vec();
        want.sort_by_key(key);
        have.sort_by_key(key);
        if have == want {
            return Ok(false);
        }
        let batch = super::rows::assets_batch(&want, crate::time::now_ms())?;
        self.replace(t, vec![batch], None).await?;
        Ok(true)
    }

    /// Write a checkpoint of the table's log at its current version.
    pub async fn checkpoint(&self, name: &str) -> Result<(), LakeError> {
        let t = self.open_by_name(name).await?;
        deltalake::checkpoints::create_checkpoint(&t, None)
            .await
            .map_err(|source| LakeError::Open {
                table: name.to_string(),
                source,
            })
    }
}
