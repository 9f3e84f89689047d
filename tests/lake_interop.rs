//! The Delta tables read back with engines other than the writer: the Python
//! `deltalake` package, polars and DuckDB see the same schema and row counts.
//! Needs `python3` with `deltalake polars duckdb pyarrow` (installed by `.ci/run`).

mod common;

use std::process::Command;

use common::*;
use ironlake::lake::Table;
use ironlake::platform::{Platform, Probes};
use ironlake::sim::{Scenario, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tables_read_back_with_python_deltalake_polars_and_duckdb() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (p1, mq) = (free_port(), free_port());
    let plant = plant(
        "plant-i",
        "line-i",
        &[
            ("mill-i", "cnc_mill", modbus(p1, 100)),
            ("press-i", "press", mqtt("test/line-i/press-i")),
        ],
    );
    let mut sc = scenario(mq, 100);
    sc.faults.push(ironlake::sim::Fault {
        machine: "press-i".into(),
        kind: ironlake::sim::FaultKind::MalformedPayload,
        at_s: 0.5,
        duration_s: 0.0,
        every_s: 0.5,
        signal: None,
        value: None,
    });
    // The shipped champions score the mill and the press (gold.predictions).
    let mut pf = platform(dir.path(), mq, true);
    pf.models.serve = true;
    pf.models.registry = concat!(env!("CARGO_MANIFEST_DIR"), "/models/registry").into();
    let cfg = config(pf, &plant);
    let platform = Platform::start(cfg.clone(), Probes::default())
        .await
        .unwrap();
    let sim = Simulator::start(&Scenario::from_config(sc, &cfg), 5)
        .await
        .unwrap();
    let lake = platform.lake.clone();
    eventually(60, "rows in every table", || {
        let lake = lake.clone();
        async move {
            for t in [
                "bronze.raw_events",
                "silver.readings",
                "silver.asset_events",
                "silver.quarantine",
                "gold.asset_state",
                "gold.predictions",
            ] {
                if count(&lake, &format!("SELECT count(*) FROM {t}")).await == 0 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    sim.stop().await;
    platform.stop().await;

    let out = Command::new(python())
        .arg("tests/interop/read_tables.py")
        .arg(dir.path())
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python readers failed (run the tests with scripts/test, which installs deltalake, polars, duckdb and pyarrow):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for t in Table::ALL.into_iter().chain(Table::REGISTER) {
        let ours = count(&lake, &format!("SELECT count(*) FROM {}", t.name())).await;
        let r = &report[t.name()];
        assert!(ours > 0, "{}", t.name());
        for engine in ["deltalake_rows", "polars_rows", "duckdb_rows"] {
            assert_eq!(r[engine].as_i64(), Some(ours), "{} {engine}: {r}", t.name());
        }
        let want: Vec<String> = t
            .arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut got: Vec<String> = r["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        let mut want_sorted = want.clone();
        got.sort();
        want_sorted.sort();
        assert_eq!(got, want_sorted, "{} columns", t.name());
        assert_eq!(
            r["partition_columns"],
            serde_json::json!(t.partition_columns()),
            "{}",
            t.name()
        );
    }
    let dt = &report["silver_dtypes"];
    assert_eq!(dt["value"], "Float64");
    assert!(dt["ts"].as_str().unwrap().contains("UTC"), "{dt}");
}
