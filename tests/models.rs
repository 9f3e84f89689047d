//! Models end to end: simulated history into the lake, a failure model
//! trained on it and measured against baselines, registered, promoted,
//! served by the twins of a running platform (REST, gold.predictions,
//! gold.asset_state, the predicted-failure alarm), and hot-swapped when a
//! new version is promoted, without a restart.

mod common;

use std::sync::Arc;

use common::*;
use ironlake::ml::model::Model;
use ironlake::ml::registry::Registry;
use ironlake::ml::train::{Run, TrainParams};

/// 30 plant days of the demo plant (the simulator's ground truth labels
/// them), then a failure classifier trained on its features.
async fn trained(lake: &Arc<ironlake::lake::Lakehouse>) -> [(Model, Run); 2] {
    let cfg = ironlake::platform::Config::embedded().unwrap();
    let sc = ironlake::sim::Scenario::embedded_demo().unwrap();
    let rep = ironlake::sim::history::generate(
        &sc,
        &cfg.model,
        lake,
        &ironlake::sim::history::HistoryOpts {
            days: 30.0,
            seed: 42,
            // A fixed end: the same buckets, noise and figures on every run.
            end_ms: Some(1_790_000_000_000),
        },
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert!(rep.stops["wear"] >= 30, "{:?}", rep.stops);
    assert!(rep.stops["minor_stop"] > 1000, "{:?}", rep.stops);
    // The ground truth is in the lake, readable by SQL.
    assert_eq!(
        count(
            lake,
            "SELECT count(*) FROM system.sim_failures WHERE cause = 'wear'"
        )
        .await,
        rep.stops["wear"] as i64
    );
    let params = TrainParams {
        trees: 24,
        max_depth: 8,
        ..Default::default()
    };
    let (m, run, ds) = ironlake::ml::train_builtin(
        lake,
        &cfg.model,
        "cnc_mill_failure",
        params.clone(),
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(ds.groups.len(), 7, "the demo's seven mills");
    let (e, erun, _) = ironlake::ml::train_builtin(
        lake,
        &cfg.model,
        "cnc_mill_energy",
        params,
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .unwrap();
    [(m, run), (e, erun)]
}

/// The failure model's score in a prediction.
fn failure_score(p: &serde_json::Value) -> serde_json::Value {
    p["scores"]
        .as_array()
        .and_then(|v| v.iter().find(|s| s["model"] == "cnc_mill_failure"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_trained_on_history_is_served_by_the_twins_and_hot_swapped() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let hist = Arc::new(
        ironlake::lake::Lakehouse::open(dir.path().join("history").to_str().unwrap()).unwrap(),
    );
    let [(model, run), (energy, erun)] = trained(&hist).await;

    // Honest figures on the held-out test period, beside the baselines.
    let m = &run.metrics;
    assert!(m["roc_auc"] > 0.9, "{m:?}");
    assert!(
        m["failures"] >= 5.0,
        "the test period holds failures: {m:?}"
    );
    assert!(m["alert_recall"] >= 0.6, "{m:?}");
    assert!(m["alert_precision"] >= 0.6, "{m:?}");
    assert!(m["lead_h_median"] >= 8.0, "{m:?}");
    let constant = &run.compared[1];
    assert!(constant.name.contains("constant"));
    assert!(
        m["pr_auc"] > 2.0 * constant.test["pr_auc"].as_f64().unwrap(),
        "the model beats a constant failure rate: {m:?} vs {}",
        constant.test
    );
    // Splits never overlap and keep a horizon's gap.
    assert!(run.rows["train"] > run.rows["validation"]);
    assert_eq!(model.features_version, Some(3));
    assert!(model.threshold.is_some_and(|t| t > 0.0 && t < 1.0));
    assert!(run
        .sources
        .iter()
        .any(|(t, v)| t == "gold.features" && v.is_some()));

    // The energy baseline: expected power from state and load, against a
    // constant and a straight line on one feature; the waste its residual
    // flags against the waste the simulator hid.
    let em = &erun.metrics;
    println!("energy model: {em:?}");
    assert_eq!(energy.target, "power_mean_10m");
    assert!(!energy.features.iter().any(|f| f.starts_with("power")));
    // MAE: the RMSE is dominated by the waste rows, which no baseline of
    // normal power should follow.
    assert!(em["mae"] < 0.3 * em["baseline_mae"], "{em:?}");
    assert!(em["mae"] < 0.8 * em["baseline_linear_mae"], "{em:?}");
    assert!(em["tolerance_kw"] > 0.0, "{em:?}");
    assert!(em["waste_recall"] >= 0.6, "{em:?}");
    assert!(em["waste_precision"] >= 0.8, "{em:?}");
    assert!(
        em["waste_recall"] > em["baseline_waste_recall"]
            || em["waste_precision"] > em["baseline_waste_precision"],
        "{em:?}"
    );
    assert!(erun.sources.iter().any(|(t, _)| t == "system.sim_wear"));

    // Registered, promoted, with a model card.
    let reg = Registry::open(dir.path().join("registry"));
    let ecard = ironlake::ml::card(&energy, &erun);
    assert_eq!(reg.register(&energy, &erun, &ecard).unwrap(), 1);
    reg.set_alias("cnc_mill_energy", "champion", 1).unwrap();
    let card = ironlake::ml::card(&model, &run);
    assert_eq!(reg.register(&model, &run, &card).unwrap(), 1);
    reg.set_alias("cnc_mill_failure", "champion", 1).unwrap();
    assert_eq!(
        reg.load("cnc_mill_failure", 1).unwrap(),
        model,
        "the artifact round-trips exactly"
    );
    assert!(reg
        .card("cnc_mill_failure", 1)
        .unwrap()
        .contains("## Limits"));

    // A platform with a simulated mill serves it.
    let mq = free_port();
    let p1 = free_port();
    let plant = plant(
        "plant-m",
        "line-m",
        &[("mill-m", "cnc_mill", modbus(p1, 100))],
    );
    let mut pf = platform(&dir.path().join("lake"), mq, true);
    pf.models.serve = true;
    pf.models.registry = dir.path().join("registry").display().to_string();
    pf.models.reload_s = 1;
    let cfg = config(pf, &plant);
    let platform =
        ironlake::platform::Platform::start(cfg.clone(), ironlake::platform::Probes::default())
            .await
            .unwrap();
    let sim = ironlake::sim::Simulator::start(
        &ironlake::sim::Scenario::from_config(scenario(mq, 100), &cfg),
        5,
    )
    .await
    .unwrap();
    let addr = platform.http_addr;
    let p = eventually(60, "the twin scores its features with v1", || async move {
        let (_, a) = get(addr, "/api/assets/mill-m").await;
        let p = a["prediction"].clone();
        (failure_score(&p)["version"] == 1).then_some(p)
    })
    .await;
    let prob = p["failure_prob"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&prob), "{p}");
    assert!(
        (p["health"].as_f64().unwrap() - (100.0 - prob * 100.0)).abs() < 0.06,
        "{p}"
    );
    assert_eq!(failure_score(&p)["role"], "champion");
    // The energy baseline's expectation beside what the mill draws.
    let exp = p["energy_expected_kw"].as_f64().unwrap();
    let act = p["energy_actual_kw"].as_f64().unwrap();
    assert!(exp > 0.0 && act >= 0.0, "{p}");
    assert!(
        (p["energy_deviation_kw"].as_f64().unwrap() - (act - exp)).abs() < 0.011,
        "{p}"
    );

    // A new version that alerts on everything, promoted: served at once,
    // with the predicted-failure alarm and its reasons.
    let mut v2 = model.clone();
    v2.threshold = Some(0.0);
    reg.register(&v2, &run, &card).unwrap();
    reg.set_alias("cnc_mill_failure", "champion", 2).unwrap();
    let a = eventually(
        60,
        "v2 served without a restart, alarm raised",
        || async move {
            let (_, a) = get(addr, "/api/assets/mill-m").await;
            (failure_score(&a["prediction"])["version"] == 2 && a["prediction"]["alert"] == true)
                .then_some(a)
        },
    )
    .await;
    let alarm = a["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "predicted_failure")
        .cloned()
        .unwrap_or_else(|| panic!("no predicted_failure alarm in {}", a["alarms"]));
    assert!(
        alarm["message"]
            .as_str()
            .unwrap()
            .contains("cnc_mill_failure v2"),
        "{alarm}"
    );
    // v1 is archived by the promotion; the registry says so.
    let rm = reg.get("cnc_mill_failure").unwrap();
    assert_eq!(rm.alias("champion"), Some(2));
    assert_eq!(
        rm.version(1).unwrap().stage,
        ironlake::ml::registry::Stage::Archived
    );

    // Batch scoring over REST equals the artifact's own scores.
    let rows: Vec<serde_json::Value> = (0..50)
        .map(|i| {
            let mut r = serde_json::Map::new();
            for (k, f) in model.features.iter().enumerate() {
                r.insert(
                    f.clone(),
                    serde_json::json!(model.impute[k] * (0.5 + i as f64 / 25.0)),
                );
            }
            serde_json::Value::Object(r)
        })
        .collect();
    let body = serde_json::json!({ "rows": rows }).to_string();
    let (st, _, out) = post(
        addr,
        "/api/models/cnc_mill_failure/predict?version=1",
        "application/json",
        &body,
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&out));
    let out: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["version"], 1);
    let preds = out["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 50);
    for (i, p) in preds.iter().enumerate() {
        let x: Vec<f64> = model
            .impute
            .iter()
            .map(|m| m * (0.5 + i as f64 / 25.0))
            .collect();
        assert_eq!(p.as_f64().unwrap(), model.score(&x), "row {i}");
    }
    let (st, _, out) = post(
        addr,
        "/api/models/cnc_mill_failure/predict",
        "application/json",
        "{\"rows\": [{\"nothing\": 1}]}",
    )
    .await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&out));
    let (st, _, _) = post(
        addr,
        "/api/models/no_such_model/predict",
        "application/json",
        "{\"rows\": []}",
    )
    .await;
    assert_eq!(st, 404);

    // The MLflow client lists and inspects the registry.
    let script = format!(
        r#"
import json
from mlflow import MlflowClient
c = MlflowClient(tracking_uri="http://{addr}", registry_uri="http://{addr}")
names = [m.name for m in c.search_registered_models()]
champ = c.get_model_version_by_alias("cnc_mill_failure", "champion")
v1 = c.get_model_version("cnc_mill_failure", "1")
run = c.get_run(champ.run_id)
vs = [v.version for v in c.search_model_versions("name='cnc_mill_failure'")]
print(json.dumps(dict(names=names, champion=champ.version, v1_stage=v1.current_stage,
      metrics=run.data.metrics, params=run.data.params, versions=vs)))
"#
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success()
        && String::from_utf8_lossy(&out.stderr).contains("No module named 'mlflow'")
        && std::env::var("IRONLAKE_REQUIRE_MLFLOW").is_err()
    {
        eprintln!(
            "mlflow is not installed: MLflow client check skipped (scripts/test installs it)"
        );
    } else {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let j: serde_json::Value =
            serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
        assert_eq!(
            j["names"],
            serde_json::json!(["cnc_mill_energy", "cnc_mill_failure"]),
            "{j}"
        );
        assert_eq!(j["champion"], "2");
        assert_eq!(j["v1_stage"], "Archived");
        assert_eq!(j["versions"], serde_json::json!(["2", "1"]));
        assert_eq!(j["metrics"]["roc_auc"].as_f64().unwrap(), m["roc_auc"]);
        assert_eq!(j["params"]["trees"], "24");
        assert_eq!(j["params"]["algorithm"], run.algorithm);
    }

    // The lake has both versions' scores, and the alarm.
    let lake = platform.lake.clone();
    wait_count(
        &lake,
        60,
        "SELECT count(DISTINCT version) FROM gold.predictions WHERE model = 'cnc_mill_failure'",
        "SELECT count(DISTINCT version) FROM gold.predictions WHERE model = 'cnc_mill_failure'",
        2,
    )
    .await;
    wait_count(&lake, 60, "SELECT count(*) FROM silver.asset_events WHERE code = 'predicted_failure' AND kind = 'alarm_raised'", "SELECT count(*) FROM silver.asset_events WHERE code = 'predicted_failure' AND kind = 'alarm_raised'", 1)
    .await;
    wait_count(&lake, 60, "SELECT count(*) FROM gold.asset_state WHERE failure_prob IS NOT NULL AND health IS NOT NULL", "SELECT count(*) FROM gold.asset_state WHERE failure_prob IS NOT NULL AND health IS NOT NULL", 1)
    .await;
    wait_count(&lake, 60, "energy expectations recorded", "SELECT count(*) FROM gold.predictions WHERE model = 'cnc_mill_energy' AND expected_kw IS NOT NULL AND actual_kw IS NOT NULL AND threshold > 0", 1).await;
    wait_count(&lake, 60, "energy in the checkpoint", "SELECT count(*) FROM gold.asset_state WHERE energy_expected_kw IS NOT NULL AND energy_deviation_kw IS NOT NULL", 1).await;
    // Drift of the live inputs against the training data: per type and
    // per machine, every feature and the prediction, into gold.drift and REST.
    wait_count(&lake, 60, "champion inputs recorded", "SELECT count(*) FROM gold.predictions WHERE role = 'champion' AND inputs IS NOT NULL AND model = 'cnc_mill_failure'", 6).await;
    let rep = ironlake::ml::drift::check(&lake, &reg, 3_600_000, ironlake::time::now_ms(), 1)
        .await
        .unwrap();
    let k = model.features.len() as i64 + 1;
    assert!(rep.rows as i64 >= 2 * k, "type and machine scope: {rep:?}");
    assert_eq!(
        count(&lake, "SELECT count(*) FROM gold.drift WHERE scope = 'twin_type' AND model = 'cnc_mill_failure'").await,
        2 * k,
        "every feature and _prediction once for each version that scored (v1, then v2)"
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM gold.drift WHERE scope = 'asset' AND asset_id = 'mill-m' AND feature = '_prediction' AND n > 0 AND model = 'cnc_mill_failure'").await,
        2,
        "the machine's scores of each version"
    );
    // The energy baseline's expectations drift-checked as well.
    assert_eq!(
        count(&lake, "SELECT count(*) FROM gold.drift WHERE scope = 'asset' AND asset_id = 'mill-m' AND feature = '_prediction' AND n > 0 AND model = 'cnc_mill_energy'").await,
        1
    );
    let (st, d) = get(addr, "/api/models/cnc_mill_failure/drift").await;
    assert_eq!(st, 200, "{d}");
    let rows = d["rows"].as_array().unwrap();
    assert_eq!(
        rows.len() as i64,
        count(
            &lake,
            "SELECT count(*) FROM gold.drift WHERE model = 'cnc_mill_failure'"
        )
        .await,
        "one check so far: every row of the model's"
    );
    assert!(rows
        .iter()
        .all(|r| ["OK", "WARN", "ALERT"].contains(&r["status"].as_str().unwrap())));
    assert_eq!(
        d["alerts"].as_u64().unwrap() as usize,
        rows.iter().filter(|r| r["status"] == "ALERT").count()
    );
    // This mill's simulated clock runs 600x, the training data's 60x: its
    // hours since repair and rates cannot look like the training data.
    assert!(d["alerts"].as_u64().unwrap() >= 1, "{d}");
    sim.stop().await;
    platform.stop().await;
}

/// A table the platform did not produce (a historian export landed in the
/// lake) trains through `ironlake train --table`, split by its own time
/// column, and the model beats a constant on the held-out rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_lake_table_trains_with_the_command_line() {
    use deltalake::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    std::fs::create_dir_all(root.join("silver/historian")).unwrap();
    // Pump efficiency drops with bearing temperature and flow; three pumps, hourly.
    let n = 3000usize;
    let (mut unit, mut t, mut temp, mut flow, mut eff) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let (a, b) = ((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos());
        unit.push(format!("pump-{}", i % 3));
        t.push(i as i64 * 3_600_000);
        temp.push(40.0 + 10.0 * a);
        flow.push(100.0 + 20.0 * b);
        eff.push(
            90.0 - 0.8 * (temp[i] - 40.0) + 0.05 * (flow[i] - 100.0) + 0.3 * (i as f64 * 1.7).sin(),
        );
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("unit", DataType::Utf8, false),
        Field::new("t", DataType::Int64, false),
        Field::new("bearing_temp", DataType::Float64, false),
        Field::new("flow", DataType::Float64, false),
        Field::new("efficiency", DataType::Float64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(unit)),
            Arc::new(Int64Array::from(t)),
            Arc::new(Float64Array::from(temp)),
            Arc::new(Float64Array::from(flow)),
            Arc::new(Float64Array::from(eff)),
        ],
    )
    .unwrap();
    let url = url::Url::from_directory_path(root.join("silver/historian")).unwrap();
    deltalake::DeltaTable::try_from_url(url)
        .await
        .unwrap()
        .write(vec![batch])
        .await
        .unwrap();
    let reg = dir.path().join("registry");
    let out = tokio::task::spawn_blocking({
        let (root, reg) = (root.clone(), reg.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_ironlake"))
                .args([
                    "train",
                    "--model",
                    "pump_efficiency",
                    "--table",
                    "silver.historian",
                ])
                .args(["--label", "efficiency", "--features", "bearing_temp,flow"])
                .args([
                    "--group-by",
                    "unit",
                    "--order-by",
                    "t",
                    "--task",
                    "regression",
                ])
                .args(["--trees", "16", "--promote", "--lakehouse"])
                .arg(&root)
                .arg("--registry")
                .arg(&reg)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("registered pump_efficiency v1"), "{text}");
    let r = Registry::open(&reg);
    let m = r.get("pump_efficiency").unwrap();
    assert_eq!(m.alias("champion"), Some(1));
    let run = r.run("pump_efficiency", 1).unwrap();
    assert!(
        run.metrics["rmse"] < run.metrics["baseline_rmse"] / 3.0,
        "{:?}",
        run.metrics
    );
    assert_eq!(run.sources[0].0, "silver.historian");
    assert_eq!(
        run.sources[0].1,
        Some(0),
        "lineage: the table version trained on"
    );
    // The registry from the command line.
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_ironlake"))
        .args(["models", "list", "--registry"])
        .arg(&reg)
        .output()
        .unwrap();
    let l = String::from_utf8_lossy(&list.stdout);
    assert!(
        l.contains("pump_efficiency") && l.contains("champion=v1"),
        "{l}"
    );
    // A wrong column is a clear error, not a panic.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_ironlake"))
        .args([
            "train",
            "--model",
            "x",
            "--table",
            "silver.historian",
            "--label",
            "nope",
        ])
        .args(["--features", "flow", "--order-by", "t", "--lakehouse"])
        .arg(&root)
        .arg("--registry")
        .arg(&reg)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(e.contains("nope"), "{e}");
}

/// Past live predictions are scored once their labels are known: the
/// champion and the challenger, per day, against the stops that followed
/// (here a failure of two plant hours in `silver.asset_events`), into
/// `gold.model_quality` and `GET /api/models/{name}/quality`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_predictions_are_scored_once_their_labels_are_known() {
    use deltalake::protocol::SaveMode;
    use ironlake::lake::rows::{AssetEventRow, PredictionRow};
    use ironlake::lake::Table;
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(
        ironlake::lake::Lakehouse::open(dir.path().join("lake").to_str().unwrap()).unwrap(),
    );
    // Plant time runs 60x the timestamps (the built-in feature sets): a
    // plant hour is 60 s, a 10-minute bucket 10 s, the 24 h horizon 24 min.
    let ph = 60_000i64;
    let day = 86_400_000i64;
    let t0 = (ironlake::time::now_ms() / day - 2) * day + 3_600_000;
    let fail = t0 + 40 * ph;
    let score = |ts: i64, role: &'static str, p: f64| PredictionRow {
        ts_ms: ts,
        plant: "plant-q".into(),
        line: "line-q".into(),
        asset_id: "mill-q".into(),
        twin_type: "cnc_mill".into(),
        model: "cnc_mill_failure".into(),
        version: 1,
        role,
        failure_prob: Some(p),
        threshold: Some(0.5),
        alert: Some(p >= 0.5),
        rul_h: None,
        reasons: None,
        inputs: None,
        scored_at_ms: ts,
        expected_kw: None,
        actual_kw: None,
    };
    let mut rows = Vec::new();
    for k in 0..(60 * 6) {
        let ts = t0 + k * 10_000; // 60 plant hours of buckets
        if ts >= fail && ts <= fail + 2 * ph {
            continue; // down: not scored
        }
        // Champion: alerts 12 plant hours ahead of the failure, and one
        // false alarm of one plant hour early on; challenger: never.
        let warn = (ts >= fail - 12 * ph && ts < fail) || (ts > t0 + 5 * ph && ts <= t0 + 6 * ph);
        rows.push(score(ts, "champion", if warn { 0.9 } else { 0.1 }));
        rows.push(score(ts, "challenger", 0.2));
    }
    let ev = |ts: i64, code: &str| AssetEventRow {
        ts_ms: ts,
        plant: "plant-q".into(),
        line: "line-q".into(),
        asset_id: "mill-q".into(),
        kind: "state",
        code: code.into(),
        value: None,
        message: None,
    };
    let events = vec![
        ev(t0 - ph, "RUNNING"),
        ev(fail, "DOWN"),
        ev(fail + 2 * ph, "RUNNING"),
    ];
    for (t, b) in [
        (
            Table::GoldPredictions,
            ironlake::lake::rows::predictions_batch(&rows).unwrap(),
        ),
        (
            Table::SilverAssetEvents,
            ironlake::lake::rows::events_batch(&events).unwrap(),
        ),
    ] {
        lake.open_or_create(t)
            .await
            .unwrap()
            .write(vec![b])
            .with_save_mode(SaveMode::Append)
            .await
            .unwrap();
    }
    let cfg = ironlake::platform::Config::embedded().unwrap();
    let reg = Registry::open(dir.path().join("registry"));
    let now = t0 + 3 * 3_600_000;
    let rep = ironlake::ml::quality::check(&lake, &reg, &cfg.model, 7, now, 8.0)
        .await
        .unwrap();
    let by = |role: &str| rep.rows.iter().find(|q| q.role == role).unwrap().clone();
    let (c, ch) = (by("champion"), by("challenger"));
    assert_eq!(rep.rows.len(), 2, "one day, two roles: {:?}", rep.rows);
    // 24 plant hours of rows before the failure are positive; the champion
    // flags the last 12 of them and one false hour. Its false alert stays
    // open for a horizon, so the true one opens 10.7 h ahead: caught.
    assert_eq!((c.positives, c.flagged), (144, 78), "{c:?}");
    assert_eq!(c.precision, Some(72.0 / 78.0));
    assert_eq!(c.recall, Some(0.5));
    assert_eq!(
        (c.alerts, c.true_alerts, c.failures, c.caught),
        (2, 1, 1, 1)
    );
    assert_eq!((c.alert_precision, c.alert_recall), (Some(0.5), Some(1.0)));
    assert_eq!(
        (ch.flagged, ch.alerts, ch.failures, ch.caught),
        (0, 0, 1, 0)
    );
    assert_eq!((ch.precision, ch.recall), (None, Some(0.0)));
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM gold.model_quality WHERE model = 'cnc_mill_failure'"
        )
        .await,
        2
    );
    // Checked again later: the same days are replaced, not appended.
    ironlake::ml::quality::check(&lake, &reg, &cfg.model, 7, now + 60_000, 8.0)
        .await
        .unwrap();
    assert_eq!(
        count(&lake, "SELECT count(*) FROM gold.model_quality").await,
        2
    );

    // Over REST, from a platform on this lake (its registry gets the
    // shipped champions, so the model exists).
    let mut pf = platform(&dir.path().join("lake"), free_port(), true);
    pf.models.serve = true;
    pf.models.registry = dir.path().join("registry").display().to_string();
    let cfg = config(
        pf,
        &plant(
            "plant-q",
            "line-q",
            &[("mill-q", "cnc_mill", modbus(free_port(), 1000))],
        ),
    );
    let platform = ironlake::platform::Platform::start(cfg, ironlake::platform::Probes::default())
        .await
        .unwrap();
    let (st, q) = get(platform.http_addr, "/api/models/cnc_mill_failure/quality").await;
    assert_eq!(st, 200, "{q}");
    let s = q["summary"].as_array().unwrap();
    assert_eq!(s.len(), 2, "{q}");
    let champ = s.iter().find(|r| r["role"] == "champion").unwrap();
    assert_eq!(champ["alert_precision"].as_f64(), Some(0.5), "{q}");
    assert_eq!(champ["alert_recall"].as_f64(), Some(1.0), "{q}");
    assert_eq!(q["days"].as_array().unwrap().len(), 2);
    platform.stop().await;
}
