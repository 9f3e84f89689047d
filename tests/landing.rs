//! The landing folder end to end: files dropped in a folder become bronze
//! rows, silver readings, quarantine rows with reasons and live twin values,
//! each file exactly once across restarts; half-written files wait; the
//! schema is inferred and evolves per Auto Loader's four modes; Parquet
//! written by another engine and non-telemetry tables land too.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use ironlake::config::PlatformFile;
use ironlake::lake::Lakehouse;
use ironlake::platform::{Platform, Probes};

fn files_section(p: &mut PlatformFile, sources: &str) {
    let t: toml::Table = toml::from_str(sources).unwrap();
    p.connectors
        .insert("files".into(), t.get("files").cloned().unwrap());
}

fn presses(ids: &[&str]) -> String {
    let m: Vec<(&str, &str, String)> = ids
        .iter()
        .map(|id| (*id, "press", "{ protocol = \"files\" }".to_string()))
        .collect();
    plant("plant-a", "line-1", &m)
}

async fn start(lake: &Path, sources: &str, plant_toml: &str) -> Platform {
    let p = platform_file_with(lake, sources);
    Platform::start(config(p, plant_toml), Probes::default())
        .await
        .unwrap()
}

fn now_ms() -> i64 {
    ironlake::time::now_ms()
}

/// `n` lines per machine and signal, one per second ending now.
fn long_lines(machines: &[&str], n: i64, t0: i64) -> String {
    let mut s = String::new();
    for i in 0..n {
        for m in machines {
            for (sig, v) in [
                ("force", 100.0 + (i % 1000) as f64),
                ("oil_temp", 40.5),
                ("power", 12.0),
            ] {
                s += &format!(
                    "{{\"machine\":\"{m}\",\"signal\":\"{sig}\",\"ts\":{},\"value\":{v}}}\n",
                    t0 + i * 1000
                );
            }
        }
    }
    s
}

async fn by_expectation(lake: &Lakehouse) -> std::collections::BTreeMap<String, i64> {
    let b = query(
        lake,
        "SELECT expectation, count(*) AS n FROM silver.quarantine WHERE source LIKE 'landing:%' GROUP BY expectation ORDER BY expectation",
    )
    .await;
    let names = strings(&b, 0);
    let mut out = std::collections::BTreeMap::new();
    let mut i = 0;
    for batch in &b {
        let c = batch.column(1);
        let c = deltalake::arrow::compute::cast(c, &deltalake::arrow::datatypes::DataType::Int64)
            .unwrap();
        let c = c
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap();
        for r in 0..c.len() {
            out.insert(names[i].clone(), c.value(r));
            i += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_json_lines_land_once_with_bad_lines_quarantined_and_survive_restarts() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let landing = dir.path().join("landing");
    std::fs::create_dir_all(&landing).unwrap();
    let sources = format!(
        r#"
        [[files.sources]]
        name = "hist"
        path = "{}"
        layout = "long"
        asset = "machine"
        signal = "signal"
        value = "value"
        ts = "ts"
        settle_ms = 300
        poll_ms = 100
        chunk_mb = 1
        "#,
        landing.display()
    );
    let plant_toml = presses(&["p1", "p2"]);
    let platform = start(&lake_dir, &sources, &plant_toml).await;
    let addr = platform.http_addr;
    let lake = platform.lake.clone();

    // 1: 2 machines x 3 signals x 4000 s, more than a 1 MiB slice, plus bad lines.
    let t0 = now_ms() - 4000 * 1000;
    let mut text = long_lines(&["p1", "p2"], 4000, t0);
    let good = 2 * 3 * 4000;
    text += "{\"machine\":\"p1\",\"signal\":\"force\",\"ts\":1,\"value\":\n"; // truncated line
    text += &format!(
        "{{\"machine\":\"ghost\",\"signal\":\"force\",\"ts\":{t0},\"value\":1}}\n\
         {{\"machine\":\"p1\",\"signal\":\"vibration\",\"ts\":{t0},\"value\":1}}\n\
         {{\"machine\":\"p1\",\"signal\":\"force\",\"ts\":{},\"value\":99999}}\n\
         {{\"machine\":\"p1\",\"signal\":\"force\",\"ts\":{t0},\"value\":100}}\n\
         {{\"machine\":\"p2\",\"signal\":\"force\",\"ts\":\"2026-13-45T00:00:00Z\",\"value\":1}}\n",
        t0 + 500
    );
    assert!(text.len() > 1 << 20, "the file spans several slices");
    std::fs::write(landing.join("day1.jsonl"), &text).unwrap();

    // 2: being written under a temporary name: not read until renamed.
    let t2 = now_ms() - 10_000;
    let part = long_lines(&["p1"], 10, t2);
    std::fs::write(landing.join("day2.jsonl.tmp"), &part[..part.len() / 2]).unwrap();

    wait_count(
        &lake,
        60,
        "day1 in silver",
        "SELECT count(*) FROM silver.readings",
        good,
    )
    .await;
    let q = eventually(30, "day1's quarantine", || {
        let lake = lake.clone();
        async move {
            let q = by_expectation(&lake).await;
            (q.values().sum::<i64>() >= 5).then_some(q)
        }
    })
    .await;
    assert_eq!(q.get("parse_error"), Some(&2), "{q:?}");
    assert_eq!(q.get("unknown_asset"), Some(&1), "{q:?}");
    assert_eq!(q.get("unknown_signal"), Some(&1), "{q:?}");
    assert_eq!(q.get("out_of_range"), Some(&1), "{q:?}");
    // The exact duplicate of (p1, force, t0) is counted, not stored.
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.readings").await,
        good
    );
    // Bronze holds every parsed row, with its file.
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM bronze.landing_hist WHERE _file = 'day1.jsonl'"
        )
        .await,
        good + 4
    );
    // The twin shows the newest values.
    let snap = eventually(20, "p1's twin has the file's newest force", || async move {
        let (st, v) = get(addr, "/api/assets/p1").await;
        let s = signals(&v);
        (st == 200 && s.get("force").and_then(|f| f["value"].as_f64()) == Some(1099.0)).then_some(v)
    })
    .await;
    assert_eq!(snap["id"], "p1");

    // The half-written file waits; renamed, it lands.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM bronze.landing_hist WHERE _file LIKE 'day2%'"
        )
        .await,
        0
    );
    std::fs::write(landing.join("day2.jsonl.tmp"), &part).unwrap();
    std::fs::rename(landing.join("day2.jsonl.tmp"), landing.join("day2.jsonl")).unwrap();
    wait_count(
        &lake,
        30,
        "day2 in silver",
        "SELECT count(*) FROM silver.readings",
        good + 30,
    )
    .await;
    let status = eventually(30, "both files recorded as done", || async move {
        let (_, status) = get(addr, "/api/landing").await;
        (status["sources"][0]["files_done"] == 2).then_some(status)
    })
    .await;
    let s = &status["sources"][0];
    assert_eq!(s["name"], "hist");
    assert_eq!(s["state"], "watching", "{status}");
    assert_eq!(s["schema_version"], 1);
    assert!(s["columns"].as_array().unwrap().len() == 4, "{status}");
    let m = metrics_text(addr).await.unwrap_or_default();
    assert!(
        m.contains("ironlake_landing_files_total{outcome=\"done\",source=\"hist\"} 2"),
        "{m}"
    );
    platform.stop().await;

    // A crash after the commits but before the manifest recorded them:
    // the slices are read again and every table already holds them.
    let manifest = lake_dir.join("_journal/connectors/files/hist/manifest.json");
    let mut mf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    for f in mf["files"].as_array_mut().unwrap() {
        f["acked"] = 0.into();
        f["rows"] = 0.into();
    }
    std::fs::write(&manifest, serde_json::to_vec(&mf).unwrap()).unwrap();
    let t3 = now_ms() - 5_000;
    std::fs::write(landing.join("day3.jsonl"), long_lines(&["p2"], 5, t3)).unwrap();
    let platform = start(&lake_dir, &sources, &plant_toml).await;
    let lake = platform.lake.clone();
    wait_count(
        &lake,
        60,
        "day3 in silver",
        "SELECT count(*) FROM silver.readings",
        good + 30 + 15,
    )
    .await;
    let addr = platform.http_addr;
    eventually(30, "all three files done", || async move {
        let (_, s) = get(addr, "/api/landing").await;
        (s["sources"][0]["files_done"] == 3).then_some(())
    })
    .await;
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.readings").await,
        good + 30 + 15,
        "nothing written twice"
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM bronze.landing_hist").await,
        good + 4 + 30 + 15
    );
    assert_eq!(by_expectation(&lake).await.values().sum::<i64>(), 5);
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_evolution_modes_add_rescue_fail_and_ignore() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let mut sources = String::new();
    for (name, mode) in [
        ("add", "addNewColumns"),
        ("rescue", "rescue"),
        ("fail", "failOnNewColumns"),
        ("ignore", "none"),
    ] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        sources += &format!(
            "[[files.sources]]\nname = \"{name}\"\npath = \"{}\"\nlayout = \"wide\"\nasset = \"machine\"\nschema_evolution = \"{mode}\"\nignore = [\"operator\"]\nsettle_ms = 0\npoll_ms = 100\n",
            d.display()
        );
    }
    let ids = ["a1", "r1", "f1", "n1"];
    let platform = start(&lake_dir, &sources, &presses(&ids)).await;
    let lake = platform.lake.clone();
    let addr = platform.http_addr;
    let t0 = now_ms() - 60_000;
    // First files: the same columns everywhere (CSV for two, JSON for two).
    for (name, id) in [
        ("add", "a1"),
        ("rescue", "r1"),
        ("fail", "f1"),
        ("ignore", "n1"),
    ] {
        let d = dir.path().join(name);
        if name == "add" || name == "fail" {
            let mut csv = String::from("ts,machine,force,operator\n");
            for i in 0..10 {
                csv += &format!("{},{id},{}.5,anna\n", t0 + i * 1000, 100 + i);
            }
            drop_file(&d.join("1.csv"), &csv);
        } else {
            let mut js = String::new();
            for i in 0..10 {
                js += &format!(
                    "{{\"ts\":{},\"machine\":\"{id}\",\"signals\":{{\"force\":{}.5}}}}\n",
                    t0 + i * 1000,
                    100 + i
                );
            }
            drop_file(&d.join("1.jsonl"), &js);
        }
    }
    wait_count(
        &lake,
        60,
        "first files of all four sources",
        "SELECT count(*) FROM silver.readings",
        40,
    )
    .await;
    // Second files: a new signal column (oil_temp), and in JSON a value of
    // the wrong type.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for (name, id) in [
        ("add", "a1"),
        ("rescue", "r1"),
        ("fail", "f1"),
        ("ignore", "n1"),
    ] {
        let d = dir.path().join(name);
        if name == "add" || name == "fail" {
            let mut csv = String::from("ts,machine,force,operator,oil_temp\n");
            for i in 10..20 {
                csv += &format!("{},{id},{}.5,ben,55.5\n", t0 + i * 1000, 100 + i);
            }
            drop_file(&d.join("2.csv"), &csv);
        } else {
            let mut js = String::new();
            for i in 10..20 {
                let force = if i == 10 {
                    "\"n/a\"".to_string()
                } else {
                    format!("{}.5", 100 + i)
                };
                js += &format!(
                    "{{\"ts\":{},\"machine\":\"{id}\",\"signals\":{{\"force\":{force},\"oil_temp\":55.5}}}}\n",
                    t0 + i * 1000
                );
            }
            drop_file(&d.join("2.jsonl"), &js);
        }
    }
    // addNewColumns: the new signal lands, the schema has a second version.
    wait_count(
        &lake,
        60,
        "a1's oil_temp",
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'a1' AND signal = 'oil_temp'",
        10,
    )
    .await;
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'a1' AND signal = 'force'"
        )
        .await,
        20
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM bronze.landing_add WHERE oil_temp = 55.5 AND operator = 'ben'"
        )
        .await,
        10
    );
    // rescue: the schema stays; the new field and the bad value are in
    // _rescued_data and quarantined, the good values land.
    wait_count(
        &lake,
        60,
        "r1's second file",
        "SELECT count(*) FROM bronze.landing_rescue WHERE _file = '2.jsonl'",
        10,
    )
    .await;
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'r1' AND signal = 'force'"
        )
        .await,
        19
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'r1' AND signal = 'oil_temp'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM bronze.landing_rescue WHERE _rescued_data LIKE '%\"signals.oil_temp\":55.5%'").await,
        10
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM bronze.landing_rescue WHERE _rescued_data LIKE '%\"signals_force\":\"n/a\"%'").await,
        1
    );
    wait_count(
        &lake,
        30,
        "rescued rows quarantined",
        "SELECT count(*) FROM silver.quarantine WHERE asset_id = 'r1' AND expectation = 'rescued_data'",
        10,
    )
    .await;
    // none: the new column is ignored, the rest lands.
    wait_count(
        &lake,
        60,
        "n1's second file",
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'n1' AND signal = 'force'",
        19,
    )
    .await;
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'n1' AND signal = 'oil_temp'"
        )
        .await,
        0
    );
    // failOnNewColumns: the source stops at the file and says why.
    let st = eventually(30, "the fail source stopped", || async move {
        let (_, s) = get(addr, "/api/landing").await;
        let f = s["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "fail")
            .cloned()
            .unwrap();
        (f["state"] == "failed").then_some(f)
    })
    .await;
    let err = st["last_error"].as_str().unwrap();
    assert!(
        err.contains("`oil_temp`") && err.contains("failOnNewColumns") && err.contains("2.csv"),
        "{err}"
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'f1'"
        )
        .await,
        10
    );
    let (_, s) = get(addr, "/api/landing").await;
    let add = s["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "add")
        .unwrap();
    assert_eq!(add["schema_version"], 2, "{add}");
    let rescue = s["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "rescue")
        .unwrap();
    assert_eq!(rescue["schema_version"], 1, "{rescue}");
    platform.stop().await;

    // Other engines read the evolved table (old rows null in the new column).
    let script = r#"
import sys, json, deltalake, polars, duckdb
p = sys.argv[1] + "/bronze/landing_add"
dt = deltalake.DeltaTable(p)
t = dt.to_pyarrow_table()
pl = polars.read_delta(p)
con = duckdb.connect()
n = con.execute(f"SELECT count(*), count(oil_temp) FROM delta_scan('{p}')").fetchone() if False else None
print(json.dumps({"rows": t.num_rows, "cols": t.column_names, "oil_nulls": t.column("oil_temp").null_count, "polars": pl.height}))
"#;
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(&lake_dir)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "python readers failed (run the tests with scripts/test):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["rows"], 20, "{r}");
    assert_eq!(r["polars"], 20, "{r}");
    assert_eq!(r["oil_nulls"], 10, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parquet_from_another_writer_and_a_non_telemetry_table() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let pq = dir.path().join("pq");
    let erp = dir.path().join("erp");
    std::fs::create_dir_all(&pq).unwrap();
    std::fs::create_dir_all(&erp).unwrap();
    let sources = format!(
        r#"
        [[files.sources]]
        name = "pq"
        path = "{}"
        layout = "wide"
        asset = "machine"
        settle_ms = 0
        poll_ms = 100

        [[files.sources]]
        name = "orders"
        path = "{}"
        layout = "table"
        table = "erp_orders"
        schema_evolution = "rescue"
        settle_ms = 0
        poll_ms = 100
        "#,
        pq.display(),
        erp.display()
    );
    let platform = start(&lake_dir, &sources, &presses(&["w1", "w2"])).await;
    let lake = platform.lake.clone();
    // Files that cannot be used are quarantined whole; the source goes on.
    std::fs::write(pq.join("broken.parquet"), b"PAR1 this is not parquet PAR1").unwrap();
    std::fs::write(pq.join("noasset.csv"), "ts,force\n1,2\n").unwrap();
    wait_count(
        &lake,
        60,
        "two unreadable files quarantined",
        "SELECT count(*) FROM silver.quarantine WHERE expectation = 'unreadable_file'",
        2,
    )
    .await;
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.quarantine WHERE expectation = 'unreadable_file' AND reason LIKE '%no column `machine` for the asset id%' AND source LIKE 'landing:pq:noasset.csv%'").await,
        1
    );
    // Parquet written by pyarrow: 3 row groups, a timestamp column, ints.
    let t0 = now_ms() - 100_000;
    let script = format!(
        r#"
import pyarrow as pa, pyarrow.parquet as pq
n = 3000
ts = pa.array([{t0} + i * 10 for i in range(n)], type=pa.timestamp("ms", tz="UTC"))
t = pa.table({{"ts": ts, "machine": ["w1" if i % 2 else "w2" for i in range(n)],
              "force": pa.array([i % 400 for i in range(n)], type=pa.int32()),
              "power": [1.5] * n}})
pq.write_table(t, "{}/.part.parquet", row_group_size=1000)
import os; os.rename("{}/.part.parquet", "{}/batch.parquet")
"#,
        pq.display(),
        pq.display(),
        pq.display()
    );
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "pyarrow failed (run the tests with scripts/test):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        erp.join("orders.csv"),
        "order_id,product,qty,due\nA-1,bracket,100,2026-12-01T06:00:00Z\nA-2,\"hinge, left\",50,2026-12-02T06:00:00Z\n",
    )
    .unwrap();
    wait_count(
        &lake,
        60,
        "the Parquet rows as readings",
        "SELECT count(*) FROM silver.readings WHERE asset_id IN ('w1','w2')",
        6000,
    )
    .await;
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE signal = 'force' AND value = 399"
        )
        .await,
        7
    );
    wait_count(
        &lake,
        60,
        "the orders",
        "SELECT count(*) FROM silver.erp_orders",
        2,
    )
    .await;
    let m = metrics_text(platform.http_addr).await.unwrap_or_default();
    assert!(
        m.contains("ironlake_landing_files_total{outcome=\"unreadable\",source=\"pq\"} 2"),
        "{m}"
    );
    // A later export with a quantity that is not a number: rescued (rescue
    // mode), kept in bronze, quarantined, left out of silver.
    std::fs::write(
        erp.join("orders2.csv"),
        "order_id,product,qty,due\nA-3,bolt,many,2026-12-03T06:00:00Z\nA-4,nut,7,2026-12-03T07:00:00Z\n",
    )
    .unwrap();
    wait_count(
        &lake,
        60,
        "the second export",
        "SELECT count(*) FROM bronze.erp_orders",
        4,
    )
    .await;
    wait_count(
        &lake,
        60,
        "A-4 in silver",
        "SELECT count(*) FROM silver.erp_orders",
        3,
    )
    .await;
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.erp_orders WHERE product = 'hinge, left' AND qty = 50"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.erp_orders WHERE order_id = 'A-3'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM bronze.erp_orders WHERE _rescued_data = '{\"qty\":\"many\"}'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.quarantine WHERE expectation = 'rescued_data' AND payload LIKE '%A-3%'").await,
        1
    );
    platform.stop().await;
}

/// The test Python, if it has moto's S3 server; without it the test skips
/// with a note, unless `IRONLAKE_REQUIRE_S3=1` (CI).
fn moto_python() -> Option<String> {
    let py = python();
    let ok = std::process::Command::new(&py)
        .args(["-c", "import moto.server, boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(py);
    }
    if std::env::var("IRONLAKE_REQUIRE_S3").as_deref() == Ok("1") {
        panic!("moto[server] is required (IRONLAKE_REQUIRE_S3=1) but `{py} -c 'import moto.server'` failed");
    }
    eprintln!("skipping: moto[server] not installed (scripts/test installs it)");
    None
}

/// Run a boto3 script against the S3 server at `port` (`s3` is the client).
fn s3_script(py: &str, port: u16, body: &str) {
    let script = format!(
        "import boto3, io\ns3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', aws_access_key_id='test', aws_secret_access_key='test', region_name='us-east-1')\n{body}"
    );
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "boto3 script failed:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_object_store_prefix_on_an_s3_server_lands_each_object_once() {
    init_logs();
    let Some(py) = moto_python() else { return };
    let port = free_port();
    let _s3 = Broker(
        std::process::Command::new(&py)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto server starts"),
    );
    let up = eventually(30, "the S3 server listens", || async move {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_ok()
            .then_some(())
    });
    up.await;
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let t0 = now_ms() - 2_100_000;
    let day1 = long_lines(&["p1", "p2"], 2000, t0);
    std::fs::write(dir.path().join("day1.jsonl"), &day1).unwrap();
    // Objects before the platform starts: a JSON-lines export in a
    // sub-prefix, a Parquet file of three row groups written by pyarrow, an
    // upload under a temporary name, a broken Parquet object, and an object
    // beside the prefix (not taken).
    s3_script(
        &py,
        port,
        &format!(
            r#"
s3.create_bucket(Bucket='plant')
s3.upload_file('{}', 'plant', 'landing/hist/2026/day1.jsonl')
import pyarrow as pa, pyarrow.parquet as pq
n = 3000
t = pa.table({{"ts": pa.array([{t0} + 50 + i * 100 for i in range(n)], type=pa.timestamp("ms", tz="UTC")),
              "machine": ["p1" if i % 2 else "p2" for i in range(n)],
              "signal": ["power"] * n, "value": [float(i % 50) for i in range(n)]}})
buf = io.BytesIO(); pq.write_table(t, buf, row_group_size=1000)
s3.put_object(Bucket='plant', Key='landing/hist/batch.parquet', Body=buf.getvalue())
s3.put_object(Bucket='plant', Key='landing/hist/upload.jsonl.part', Body=b'{{"machine":')
s3.put_object(Bucket='plant', Key='landing/hist/broken.parquet', Body=b'PAR1 not parquet PAR1')
s3.put_object(Bucket='plant', Key='landing/other/x.jsonl', Body=b'{{}}\n')
"#,
            dir.path().join("day1.jsonl").display()
        ),
    );
    let sources = format!(
        r#"
        [[files.sources]]
        name = "hist"
        path = "s3://plant/landing/hist"
        layout = "long"
        asset = "machine"
        settle_ms = 0
        poll_ms = 100
        chunk_mb = 1
        [files.sources.storage_options]
        aws_endpoint = "http://127.0.0.1:{port}"
        aws_allow_http = "true"
        aws_access_key_id = "test"
        aws_secret_access_key = "test"
        aws_region = "us-east-1"
        "#
    );
    let plant_toml = presses(&["p1", "p2"]);
    let platform = start(&lake_dir, &sources, &plant_toml).await;
    let lake = platform.lake.clone();
    let good = 2 * 3 * 2000 + 3000;
    wait_count(
        &lake,
        90,
        "the JSON-lines and Parquet objects in silver",
        "SELECT count(*) FROM silver.readings",
        good,
    )
    .await;
    wait_count(
        &lake,
        30,
        "the broken object quarantined",
        "SELECT count(*) FROM silver.quarantine WHERE expectation = 'unreadable_file' AND source LIKE 'landing:hist:broken.parquet%'",
        1,
    )
    .await;
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM bronze.landing_hist WHERE _file = '2026/day1.jsonl'"
        )
        .await,
        2 * 3 * 2000
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE signal = 'power' AND value = 49"
        )
        .await,
        60
    );
    let addr = platform.http_addr;
    let status = eventually(30, "three objects recorded", || async move {
        let (_, s) = get(addr, "/api/landing").await;
        (s["sources"][0]["files_done"] == 3).then_some(s)
    })
    .await;
    assert_eq!(status["sources"][0]["path"], "s3://plant/landing/hist");
    platform.stop().await;
    // Staged copies are gone once committed.
    let staging = lake_dir.join("_journal/connectors/files/hist/staging");
    let left: Vec<_> = walk(&staging);
    assert!(left.is_empty(), "staged copies left: {left:?}");

    // Restarted: the objects are not read again; a new object and the
    // finished upload land.
    s3_script(
        &py,
        port,
        &format!(
            "s3.put_object(Bucket='plant', Key='landing/hist/day2.jsonl', Body={:?}.encode())\ns3.delete_object(Bucket='plant', Key='landing/hist/upload.jsonl.part')",
            long_lines(&["p2"], 10, now_ms() - 20_000)
        ),
    );
    let platform = start(&lake_dir, &sources, &plant_toml).await;
    let lake = platform.lake.clone();
    wait_count(
        &lake,
        60,
        "day2 in silver",
        "SELECT count(*) FROM silver.readings",
        good + 30,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.readings").await,
        good + 30,
        "nothing read twice"
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM bronze.landing_hist WHERE _file LIKE '%x.jsonl'"
        )
        .await,
        0,
        "nothing beside the prefix"
    );
    platform.stop().await;

    // A misspelt storage option is a configuration error naming the key.
    let bad = sources.replace(
        "aws_region = \"us-east-1\"",
        "aws_region = \"us-east-1\"\n        aws_endpiont = \"x\"",
    );
    let pf: ironlake::config::PlantFile =
        ironlake::config::parse_toml(&plant_toml, "test-plant.toml").unwrap();
    let e = match ironlake::platform::Config::from_parts(
        platform_file_with(&lake_dir, &bad),
        ironlake::platform::Config::embedded_twin_types().unwrap(),
        vec![("test-plant.toml".into(), pf)],
    ) {
        Err(e) => e.to_string(),
        Ok(c) => match Platform::start(c, Probes::default()).await {
            Ok(_) => panic!("a misspelt storage option must not start"),
            Err(e) => e.to_string(),
        },
    };
    assert!(e.contains("`aws_endpiont` is not an option"), "{e}");
}

fn platform_file_with(lake: &Path, sources: &str) -> PlatformFile {
    let mut p = platform(lake, free_port(), false);
    p.connectors.remove("mqtt");
    files_section(&mut p, sources);
    p
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(d) else {
        return out;
    };
    for e in rd.flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// Drop a file as a file-drop tool does: written under a `.tmp` name the
/// sources skip, then renamed. With `settle_ms = 0` a file written in place
/// can be read while it is still empty.
fn drop_file(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
