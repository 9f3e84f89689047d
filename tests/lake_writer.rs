//! The table writers on real Delta tables: journal positions ride in every
//! commit, a commit whose checkpoint fails is not made twice, and a writer
//! that cannot reach its table stops within bounded time without claiming
//! rows it did not commit.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use deltalake::arrow::array::RecordBatch;
use ironlake::config::PlatformFile;
use ironlake::lake::rows::QuarantineRows;
use ironlake::lake::writer::{committed_marker, Origin, TableWriter, WriterOptions};
use ironlake::lake::{Lakehouse, Table};

fn rows(n: usize, tag: &str) -> RecordBatch {
    let mut q = QuarantineRows::new();
    for i in 0..n {
        q.push(
            ironlake::time::now_ms(),
            "test",
            "p",
            Some("m"),
            None,
            "x",
            &format!("{tag}-{i}"),
            "{}",
        );
    }
    q.finish().unwrap()
}

fn opts() -> WriterOptions {
    WriterOptions {
        streams: 2,
        app_prefix: "ironlake:ingest:test".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markers_ride_in_commits_and_failed_checkpoints_do_not_repeat_rows() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lakehouse::open(dir.path().to_str().unwrap()).unwrap();
    // The table checkpoints every 2 commits, and no checkpoint can be written.
    let t = lake.open_or_create(Table::SilverQuarantine).await.unwrap();
    let t = t
        .set_tbl_properties()
        .with_properties(
            [("delta.checkpointInterval".to_string(), "2".to_string())]
                .into_iter()
                .collect(),
        )
        .await
        .unwrap();
    let log = lake
        .table_path(Table::SilverQuarantine)
        .unwrap()
        .join("_delta_log");
    for v in 2..=20u64 {
        std::fs::create_dir_all(log.join(format!("{v:020}.checkpoint.parquet"))).unwrap();
    }
    drop(t);
    let cfg = PlatformFile::embedded_default().unwrap().lake;
    let (w, join) = TableWriter::start(&lake, Table::SilverQuarantine, &cfg, opts())
        .await
        .unwrap();
    for k in 1..=6u64 {
        w.append_from(
            rows(10, &format!("k{k}")),
            Origin {
                stream: 1,
                upto: k * 100,
            },
        )
        .await;
        w.flush().await.unwrap();
    }
    // Stream 0 handed over positions without rows: durable at once.
    w.progress(Origin { stream: 0, upto: 7 }).await;
    w.flush().await.unwrap();
    assert_eq!(w.marks(0).unwrap().durable.load(Ordering::Relaxed), 7);
    assert_eq!(w.marks(1).unwrap().durable.load(Ordering::Relaxed), 600);
    assert_eq!(w.stats().failed_commits.load(Ordering::Relaxed), 0);
    w.close().await;
    join.await.unwrap();
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.quarantine").await,
        60
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(DISTINCT reason) FROM silver.quarantine"
        )
        .await,
        60
    );
    let t = lake.open_by_name("silver.quarantine").await.unwrap();
    assert_eq!(
        committed_marker(&t, "ironlake:ingest:test:1")
            .await
            .unwrap(),
        Some(600)
    );
    // A new writer starts from the committed markers.
    let (w, join) = TableWriter::start(&lake, Table::SilverQuarantine, &cfg, opts())
        .await
        .unwrap();
    assert_eq!(w.marks(1).unwrap().durable.load(Ordering::Relaxed), 600);
    w.close().await;
    join.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_without_storage_stops_in_bounded_time_and_claims_nothing() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lakehouse::open(dir.path().to_str().unwrap()).unwrap();
    let cfg = PlatformFile::embedded_default().unwrap().lake;
    let (w, join) = TableWriter::start(&lake, Table::SilverQuarantine, &cfg, opts())
        .await
        .unwrap();
    w.append_from(
        rows(5, "ok"),
        Origin {
            stream: 0,
            upto: 10,
        },
    )
    .await;
    w.flush().await.unwrap();
    // The storage goes away: the log directory becomes a file.
    let table = lake.table_path(Table::SilverQuarantine).unwrap();
    let log = table.join("_delta_log");
    std::fs::rename(&log, table.join("_delta_log.away")).unwrap();
    std::fs::write(&log, b"not a directory").unwrap();
    w.append_from(
        rows(5, "stuck"),
        Origin {
            stream: 0,
            upto: 20,
        },
    )
    .await;
    assert!(w.flush().await.is_err(), "the commit fails");
    w.close().await;
    // A hang detector, not a timing assertion: the writer gives up on its own.
    tokio::time::timeout(Duration::from_secs(120), join)
        .await
        .expect("the writer stops")
        .unwrap();
    assert_eq!(
        w.marks(0).unwrap().durable.load(Ordering::Relaxed),
        10,
        "the uncommitted position is not claimed (the journal keeps it)"
    );
    assert_eq!(
        w.stats().rows_lost.load(Ordering::Relaxed),
        0,
        "journaled rows are not lost"
    );
    std::fs::remove_file(&log).unwrap();
    std::fs::rename(table.join("_delta_log.away"), &log).unwrap();
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.quarantine").await,
        5
    );
}

/// A table written by an older ironlake (its contract had fewer columns)
/// is brought up to the contract when opened: the new columns are added,
/// old rows read them as null, and new rows with them append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_table_gains_the_contracts_new_columns() {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::datatypes::{Float64Type, Schema};
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    use deltalake::kernel::StructType;
    use ironlake::lake::rows::{predictions_batch, PredictionRow};
    let dir = tempfile::tempdir().unwrap();
    let lake = std::sync::Arc::new(Lakehouse::open(dir.path().to_str().unwrap()).unwrap());
    let row = |ts: i64, exp: Option<f64>| PredictionRow {
        ts_ms: ts,
        plant: "p".into(),
        line: "l".into(),
        asset_id: "a".into(),
        twin_type: "cnc_mill".into(),
        model: "cnc_mill_rul".into(),
        version: 1,
        role: "champion",
        failure_prob: None,
        threshold: None,
        alert: None,
        rul_h: Some(10.0),
        reasons: None,
        inputs: None,
        scored_at_ms: ts,
        expected_kw: exp,
        actual_kw: exp,
    };
    // gold.predictions as an older release created it: without the energy columns.
    let full = Table::GoldPredictions.arrow_schema();
    let old: Vec<_> = full
        .fields()
        .iter()
        .filter(|f| !f.name().ends_with("_kw"))
        .cloned()
        .collect();
    assert_eq!(old.len() + 2, full.fields().len());
    let old_schema = std::sync::Arc::new(Schema::new(old));
    let kernel: StructType = old_schema.as_ref().try_into_kernel().unwrap();
    std::fs::create_dir_all(lake.table_path(Table::GoldPredictions).unwrap()).unwrap();
    let t = deltalake::DeltaTableBuilder::from_url(lake.table_url(Table::GoldPredictions))
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_columns(kernel.fields().cloned())
        .with_partition_columns(["date".to_string()])
        .await
        .unwrap();
    let b = predictions_batch(&[row(1_700_000_000_000, None)]).unwrap();
    let b = RecordBatch::try_new(
        old_schema.clone(),
        old_schema
            .fields()
            .iter()
            .map(|f| b.column_by_name(f.name()).unwrap().clone())
            .collect(),
    )
    .unwrap();
    t.write(vec![b]).await.unwrap();

    // Opened by today's ironlake: upgraded, and today's rows append.
    lake.ensure_all().await.unwrap();
    lake.open_or_create(Table::GoldPredictions)
        .await
        .unwrap()
        .write(vec![predictions_batch(&[row(
            1_700_000_600_000,
            Some(7.5),
        )])
        .unwrap()])
        .await
        .unwrap();
    let got = query(
        &lake,
        "SELECT expected_kw FROM gold.predictions ORDER BY ts",
    )
    .await;
    let v: Vec<Option<f64>> = got
        .iter()
        .flat_map(|b| {
            let c = b.column(0).as_primitive::<Float64Type>().clone();
            (0..c.len())
                .map(move |i| (!c.is_null(i)).then(|| c.value(i)))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(v, vec![None, Some(7.5)]);
}

/// Start-up reads the twins' newest checkpoints from the last day's
/// partitions of `gold.asset_state` and looks further back only for twins
/// it did not find there; a restarting twin finds its own the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_checkpoints_come_from_recent_rows_first_and_older_ones_when_missing() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lakehouse::open(dir.path().to_str().unwrap()).unwrap();
    let now = ironlake::time::now_ms();
    let day = 86_400_000;
    let row = |asset: &str, ts_ms: i64, stats: &str| checkpoint_row(asset, ts_ms, stats.into());
    let rows = vec![
        row("idle", now - 40 * day, "idle-40d"),
        row("idle", now - 10 * day, "idle-10d"),
        row("busy", now - 10 * day, "busy-10d"),
        row("busy", now - 60_000, "busy-1m"),
        // in the same time range as the newest (read in the second pass)
        row("busy", now - 4_000, "busy-4s"),
        row("busy", now - 1_000, "busy-now"),
        row("hours", now - 3 * 3_600_000, "hours-3h"),
    ];
    write_checkpoints(&lake, &rows).await;

    // Everyone expected is on the last day: the older partitions are not read.
    let only = lake.latest_checkpoints(&["busy"]).await.unwrap();
    assert_eq!(only.get("busy").map(String::as_str), Some("busy-now"));
    assert!(!only.contains_key("idle"), "{only:?}");
    assert!(!only.contains_key("hours"), "{only:?}");
    // Beyond the last 10 minutes, the last day (and no further).
    let day = lake.latest_checkpoints(&["busy", "hours"]).await.unwrap();
    assert_eq!(day.get("hours").map(String::as_str), Some("hours-3h"));
    assert!(!day.contains_key("idle"), "{day:?}");
    // A twin missing there is looked for further back: its newest one.
    let all = lake.latest_checkpoints(&["busy", "idle"]).await.unwrap();
    assert_eq!(all.get("busy").map(String::as_str), Some("busy-now"));
    assert_eq!(all.get("idle").map(String::as_str), Some("idle-10d"));
    // One twin's own (a supervisor restart).
    let one = |a: &'static str| {
        let lake = &lake;
        async move { lake.latest_checkpoint("p", a).await.unwrap() }
    };
    assert_eq!(one("busy").await.as_deref(), Some("busy-now"));
    assert_eq!(one("idle").await.as_deref(), Some("idle-10d"));
    assert_eq!(one("hours").await.as_deref(), Some("hours-3h"));
    assert_eq!(one("nobody").await, None);
}

/// Checkpoint history is kept for `twin.checkpoint_keep_days`: older days go
/// whole (no file rewritten), except the day holding the newest checkpoint
/// of an asset that is no longer configured; what restarts read is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_checkpoint_days_are_dropped_but_a_removed_assets_last_one_stays() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lakehouse::open(dir.path().to_str().unwrap()).unwrap();
    let now = ironlake::time::now_ms();
    let day = 86_400_000;
    let row = |asset: &str, ts_ms: i64| {
        checkpoint_row(asset, ts_ms, format!("{asset}@{}", (now - ts_ms) / day))
    };
    let mut rows = Vec::new();
    for back in [40, 10, 3, 1, 0] {
        for a in ["a", "b"] {
            rows.push(row(a, now - back * day));
        }
    }
    // removed from the configuration 10 days ago (and one even older)
    rows.push(row("gone", now - 40 * day));
    rows.push(row("gone", now - 10 * day));
    write_checkpoints(&lake, &rows).await;
    let sql = "SELECT count(*) FROM gold.asset_state";
    assert_eq!(count(&lake, sql).await, 12);

    let current = ["a", "b"].map(String::from).into_iter().collect();
    let r = lake.prune_checkpoints(2, &current).await.unwrap();
    assert_eq!(r.days_kept_for_removed_assets, 1, "{r:?}");
    assert!(r.files_removed >= 2, "{r:?}");
    // left: today and yesterday of a and b, and the day of gone's newest
    let left = query(&lake, "SELECT stats FROM gold.asset_state ORDER BY stats").await;
    assert_eq!(
        strings(&left, 0),
        ["a@0", "a@1", "a@10", "b@0", "b@1", "b@10", "gone@10"]
    );
    let cps = lake.latest_checkpoints(&["a", "b", "gone"]).await.unwrap();
    assert_eq!(cps["a"], "a@0");
    assert_eq!(cps["gone"], "gone@10");
    // Nothing to drop the second time; 0 keeps everything.
    assert_eq!(
        lake.prune_checkpoints(2, &current)
            .await
            .unwrap()
            .files_removed,
        0
    );
    assert_eq!(
        lake.prune_checkpoints(0, &Default::default())
            .await
            .unwrap()
            .files_removed,
        0
    );
    assert_eq!(count(&lake, sql).await, 7);
}

/// `silver.assets` follows the configuration: written when it differs,
/// untouched when it matches, and a removed machine leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_asset_register_is_rewritten_only_when_the_configuration_changes() {
    use ironlake::lake::rows::AssetRow;
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake = Lakehouse::open(dir.path().to_str().unwrap()).unwrap();
    let row = |id: &str, plant: &str, x: Option<f64>| AssetRow {
        asset_id: id.into(),
        name: format!("Machine {id}"),
        plant: plant.into(),
        area: "Machining".into(),
        line: "l1".into(),
        twin_type: "cnc_mill".into(),
        protocol: "modbus".into(),
        signals: 9,
        x_m: x,
        y_m: x.map(|v| v / 2.0),
    };
    let first = vec![row("m1", "a", Some(3.5)), row("m2", "b", None)];
    assert!(lake.sync_register(&first).await.unwrap());
    let version = |lake: &Lakehouse| {
        let lake = lake.clone();
        async move {
            lake.open_or_create(Table::SilverAssets)
                .await
                .unwrap()
                .version()
        }
    };
    let v1 = version(&lake).await;
    // The same register in another order: nothing to commit.
    let same = vec![first[1].clone(), first[0].clone()];
    assert!(!lake.sync_register(&same).await.unwrap());
    assert_eq!(version(&lake).await, v1);
    // m2 removed, m3 added, m1 moved: exactly the new register.
    let next = vec![row("m1", "a", Some(4.0)), row("m3", "a", None)];
    assert!(lake.sync_register(&next).await.unwrap());
    let q = query(
        &lake,
        "SELECT asset_id, x_m FROM silver.assets ORDER BY asset_id",
    )
    .await;
    assert_eq!(strings(&q, 0), ["m1", "m3"]);
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.assets WHERE x_m = 4.0 AND y_m = 2.0"
        )
        .await,
        1
    );
    assert!(!lake.sync_register(&next).await.unwrap());
}

/// A `gold.asset_state` row of plant `p`, line `l` with `stats` as its checkpoint.
fn checkpoint_row(asset: &str, ts_ms: i64, stats: String) -> ironlake::lake::rows::AssetStateRow {
    ironlake::lake::rows::AssetStateRow {
        ts_ms,
        plant: "p".into(),
        line: "l".into(),
        asset_id: asset.into(),
        state: "RUNNING",
        health: None,
        failure_prob: None,
        rul_h: None,
        lat: None,
        lon: None,
        zone: None,
        good_parts: 0,
        rejected_parts: 0,
        active_alarms: 0,
        stats,
        energy_expected_kw: None,
        energy_deviation_kw: None,
    }
}

/// Commit `rows` to `gold.asset_state` through a table writer.
async fn write_checkpoints(lake: &Lakehouse, rows: &[ironlake::lake::rows::AssetStateRow]) {
    let cfg = PlatformFile::embedded_default().unwrap().lake;
    let (w, join) = TableWriter::start(lake, Table::GoldAssetState, &cfg, opts())
        .await
        .unwrap();
    let batch = ironlake::lake::rows::asset_state_batch(rows).unwrap();
    assert!(w.append(batch).await);
    w.flush().await.unwrap();
    w.close().await;
    join.await.unwrap();
}
