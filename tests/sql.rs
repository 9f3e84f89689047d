//! SQL over the lake, end to end: simulated PLCs fill the tables, then the
//! same questions asked over REST (JSON, CSV, Arrow IPC) and with the
//! `ironlake sql` command answer what the tables hold; bad SQL, unknown
//! tables, writes and impossible time travel are clear 400s / errors; table
//! maintenance (`ironlake lake ...`) leaves the data readable and unchanged.

mod common;

use std::process::Command;

use common::*;
use deltalake::arrow::array::AsArray;
use deltalake::arrow::datatypes::Int64Type;
use ironlake::platform::{Platform, Probes};
use ironlake::sim::{Scenario, Simulator};

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ironlake"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("ironlake runs")
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_over_rest_and_cli_returns_what_the_tables_hold() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (p1, mq) = (free_port(), free_port());
    let plant = plant(
        "plant-q",
        "line-q",
        &[
            ("mill-q", "cnc_mill", modbus(p1, 100)),
            ("press-q", "press", mqtt("test/line-q/press-q")),
        ],
    );
    let cfg = config(platform(dir.path(), mq, true), &plant);
    let platform = Platform::start(cfg.clone(), Probes::default())
        .await
        .unwrap();
    let sc = scenario(mq, 100);
    let sim = Simulator::start(&Scenario::from_config(sc, &cfg), 9)
        .await
        .unwrap();
    let (lake, addr) = (platform.lake.clone(), platform.http_addr);
    wait_count(
        &lake,
        30,
        "readings of both machines in silver",
        "SELECT count(DISTINCT asset_id) FROM silver.readings",
        2,
    )
    .await;
    sim.stop().await;
    platform.flush().await.unwrap();

    // The asset register is a table too: readings join it like any dimension.
    let reg = query(
        &lake,
        "SELECT asset_id, plant, line, twin_type, protocol, signals > 0 FROM silver.assets ORDER BY asset_id",
    )
    .await;
    assert_eq!(strings(&reg, 0), ["mill-q", "press-q"]);
    assert_eq!(strings(&reg, 1), ["plant-q", "plant-q"]);
    assert_eq!(strings(&reg, 3), ["cnc_mill", "press"]);
    assert_eq!(strings(&reg, 4), ["modbus", "mqtt"]);
    let joined = count(
        &lake,
        "SELECT count(*) FROM silver.readings r JOIN silver.assets a ON a.asset_id = r.asset_id \
         WHERE a.twin_type = 'cnc_mill'",
    )
    .await;
    assert_eq!(
        joined,
        count(
            &lake,
            "SELECT count(*) FROM silver.readings WHERE asset_id = 'mill-q'"
        )
        .await
    );
    assert!(joined > 0);

    // JSON: rows as objects, typed columns, the same numbers as the table.
    let q =
        "SELECT asset_id, count(*) AS n FROM silver.readings GROUP BY asset_id ORDER BY asset_id";
    let body = serde_json::json!({ "sql": q }).to_string();
    let (status, ct, bytes) = post(addr, "/api/sql", "application/json", &body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert!(ct.starts_with("application/json"));
    let doc = json(&bytes);
    assert_eq!(doc["columns"][0]["name"], "asset_id");
    assert_eq!(doc["columns"][1]["type"], "Int64");
    assert_eq!(doc["row_count"], 2);
    assert_eq!(doc["truncated"], false);
    let mill_rest = doc["rows"][0]["n"].as_i64().unwrap();
    assert_eq!(doc["rows"][0]["asset_id"], "mill-q");
    let mill_table = count(
        &lake,
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'mill-q'",
    )
    .await;
    assert_eq!(mill_rest, mill_table);

    // Arrow IPC: the same rows, typed.
    let body = serde_json::json!({ "sql": q, "format": "arrow" }).to_string();
    let (status, ct, bytes) = post(addr, "/api/sql", "application/json", &body).await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/vnd.apache.arrow.stream");
    let reader =
        deltalake::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)
            .unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    assert_eq!(
        batches[0].column(1).as_primitive::<Int64Type>().value(0),
        mill_table
    );

    // A plain-text body (what any web page can send cross-site) is refused.
    let (status, _, bytes) = post(
        addr,
        "/api/sql",
        "text/plain",
        "SELECT ts FROM silver.readings",
    )
    .await;
    assert_eq!(status, 415);
    assert!(
        json(&bytes)["error"]
            .as_str()
            .unwrap()
            .contains("application/sql"),
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    // The query as application/sql, CSV out, and the row cap.
    let (status, _, bytes) = post(
        addr,
        "/api/sql",
        "application/sql",
        "SELECT ts FROM silver.readings",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&bytes)["row_count"].as_u64().unwrap() as i64,
        count(&lake, "SELECT count(*) FROM silver.readings")
            .await
            .min(10_000)
    );
    let body = serde_json::json!({ "sql": "SELECT asset_id FROM silver.readings", "format": "csv", "max_rows": 3 }).to_string();
    let (status, ct, bytes) = post(addr, "/api/sql", "application/json", &body).await;
    assert_eq!((status, ct.as_str()), (200, "text/csv"));
    assert_eq!(
        String::from_utf8(bytes).unwrap().lines().count(),
        4,
        "header + 3 rows"
    );

    // Mistakes are 400s that say what is wrong.
    for (sql, says) in [
        ("SELEC 1", "Expected"),
        ("SELECT * FROM silver.nope", "silver.nope"),
        ("SELECT nope FROM silver.readings", "nope"),
        ("DROP TABLE silver.readings", "read-only"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELECT CAST(asset_id AS INT) FROM silver.readings", "Cast"),
        (
            "SELECT * FROM silver.readings VERSION AS OF 99999",
            "does not exist",
        ),
        (
            "SELECT * FROM silver.readings TIMESTAMP AS OF 'yesterday-ish'",
            "RFC 3339",
        ),
    ] {
        let (status, _, bytes) = post(addr, "/api/sql", "application/sql", sql).await;
        let doc = json(&bytes);
        assert_eq!(status, 400, "{sql}: {doc}");
        assert!(
            doc["error"].as_str().unwrap().contains(says),
            "{sql}: {doc}"
        );
    }
    let (status, _, _) = post(addr, "/api/sql", "application/json", "{\"query\": 1}").await;
    assert_eq!(status, 400);

    // Kernels as table functions: a regular grid and the pauses of a signal.
    let q = "SELECT count(*) AS n, count(DISTINCT asset_id) AS a FROM ts_resample('silver.readings', 'spindle_speed', 50, 'ffill')";
    let (status, _, bytes) = post(addr, "/api/sql", "application/sql", q).await;
    let doc = json(&bytes);
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["rows"][0]["n"].as_i64().unwrap() > 0 && doc["rows"][0]["a"] == 1,
        "{doc}"
    );
    let q = "SELECT count(*) AS n FROM ts_gaps('silver.readings', 'spindle_speed', 1)";
    let (status, _, bytes) = post(addr, "/api/sql", "application/sql", q).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    for bad in [
        "SELECT * FROM ts_gaps('silver.nope', 'x', 10)",
        "SELECT * FROM ts_resample('silver.readings', 'x', 0)",
    ] {
        let (status, _, bytes) = post(addr, "/api/sql", "application/sql", bad).await;
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&bytes));
        assert!(
            json(&bytes)["error"].as_str().unwrap().contains("usage"),
            "{bad}"
        );
    }

    // Time travel: version 0 is the empty table as created.
    let (status, _, bytes) = post(
        addr,
        "/api/sql",
        "application/sql",
        "SELECT count(*) AS n FROM silver.readings VERSION AS OF 0",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json(&bytes)["rows"][0]["n"], 0);
    platform.stop().await;

    // The CLI sees the same table.
    let root = dir.path().to_str().unwrap();
    let total = count(&lake, "SELECT count(*) FROM silver.readings").await;
    let out = cli(&[
        "sql",
        "--lakehouse",
        root,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM silver.readings",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("n\n{total}\n")
    );
    let pq = dir.path().join("mill.parquet");
    let out = cli(&[
        "sql",
        "--lakehouse",
        root,
        "--format",
        "parquet",
        "--out",
        pq.to_str().unwrap(),
        "SELECT * FROM silver.readings WHERE asset_id = 'mill-q'",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = ironlake::bench::peers::read_parquet(&pq, 1).unwrap();
    let mill_now = count(
        &lake,
        "SELECT count(*) FROM silver.readings WHERE asset_id = 'mill-q'",
    )
    .await;
    assert_eq!(
        back.iter().map(|b| b.num_rows()).sum::<usize>() as i64,
        mill_now
    );
    let out = cli(&["sql", "--lakehouse", root, "SELECT * FROM gold.nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gold.nope"));

    // Maintenance: history lists the commits; optimize compacts without
    // changing what a query returns; time travel still reaches old versions.
    let out = cli(&[
        "lake",
        "--lakehouse",
        root,
        "history",
        "silver.readings",
        "--limit",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hist = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(hist.lines().count(), 3, "{hist}");
    assert!(hist.contains("WRITE"), "{hist}");
    let rows_before = count(&lake, "SELECT count(*) FROM silver.readings").await;
    let out = cli(&["lake", "--lakehouse", root, "optimize", "silver.readings"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("compacted"));
    assert_eq!(
        count(&lake, "SELECT count(*) FROM silver.readings").await,
        rows_before
    );
    let out = cli(&[
        "lake",
        "--lakehouse",
        root,
        "history",
        "silver.readings",
        "--limit",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("OPTIMIZE"));
    let out = cli(&[
        "lake",
        "--lakehouse",
        root,
        "vacuum",
        "silver.readings",
        "--dry-run",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["lake", "--lakehouse", root, "history", "silver.nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no table `silver.nope`"));
    let out = cli(&["lake", "--lakehouse", root, "tables"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("silver.readings\n"));
}

/// GET with a client timeout; `None` when the client gave up.
async fn get_with_timeout(addr: std::net::SocketAddr, path: &str, secs: u64) -> Option<u16> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(secs)))
            .build()
            .into();
        agent.get(&url).call().ok().map(|r| r.status().as_u16())
    })
    .await
    .unwrap()
}

/// POST application/sql with a client timeout; `None` when the client gave up.
async fn post_sql_with_timeout(
    addr: std::net::SocketAddr,
    sql: &str,
    secs: u64,
) -> Option<(u16, String)> {
    let url = format!("http://{addr}/api/sql");
    let sql = sql.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(secs)))
            .build()
            .into();
        let mut r = agent
            .post(&url)
            .header("content-type", "application/sql")
            .send(sql.as_bytes())
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.body_mut().read_to_string().unwrap_or_default()))
    })
    .await
    .unwrap()
}

async fn sql_running(addr: std::net::SocketAddr) -> Option<i64> {
    let text = metrics_text(addr).await?;
    text.lines()
        .find_map(|l| l.strip_prefix("ironlake_sql_running "))
        .and_then(|v| v.trim().parse().ok())
}

/// Queries run in their own bounded pool: one that needs more memory than
/// allowed fails with 413, one that runs too long is cancelled with 503, a
/// query beyond the concurrency limit is refused with 503, one whose client
/// left is cancelled; ingestion keeps going meanwhile, and no parameter
/// makes a request panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_are_bounded_and_cannot_stop_ingestion() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (plc, mq) = (free_port(), free_port());
    let plant = plant(
        "plant-q",
        "line-q",
        &[("mill-q", "cnc_mill", modbus(plc, 100))],
    );
    let mut p = platform(dir.path(), mq, false);
    p.sql.memory_mb = 16;
    p.sql.timeout_s = 60;
    p.sql.max_concurrent = 1;
    p.sql.queue_wait_ms = 0;
    let cfg = config(p, &plant);
    let sim = Simulator::start(&Scenario::from_config(scenario(mq, 100), &cfg), 4)
        .await
        .unwrap();
    let platform = Platform::start(cfg, Probes::default()).await.unwrap();
    let addr = platform.http_addr;
    let readings = |addr| async move {
        let (_, b) = get(addr, "/api/assets/mill-q").await;
        b["readings_total"].as_u64().unwrap_or(0)
    };
    eventually(30, "data flows", || async {
        (readings(addr).await > 10).then_some(())
    })
    .await;

    // More memory than the pool has: a clear 413.
    let (status, body) = post_sql_with_timeout(
        addr,
        "SELECT array_agg(value) FROM range(0, 50000000) AS t(value)",
        60,
    )
    .await
    .unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("sql.memory_mb"), "{body}");

    // Longer than the timeout: cancelled, 503; ingestion went on meanwhile.
    let before = readings(addr).await;
    let long = serde_json::json!({
        "sql": "SELECT count(*) FROM range(0, 100000000000) AS t(v) WHERE v % 7 = 3",
        "timeout_s": 2
    })
    .to_string();
    let (status, _, body) = post(addr, "/api/sql", "application/json", &long).await;
    let body = String::from_utf8_lossy(&body).to_string();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("timeout_s"), "{body}");
    assert!(
        readings(addr).await > before,
        "readings kept coming during the query"
    );

    // One at a time: a second query while one runs is refused with 503.
    let slow = {
        let long = long.clone();
        tokio::spawn(async move { post(addr, "/api/sql", "application/json", &long).await })
    };
    eventually(10, "the slow query runs", || async {
        (sql_running(addr).await == Some(1)).then_some(())
    })
    .await;
    let (status, body) = post_sql_with_timeout(addr, "SELECT 1", 10).await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("sql.max_concurrent"), "{body}");
    assert_eq!(slow.await.unwrap().0, 503, "timed out");

    // A client that leaves: its query is cancelled then, not at the
    // timeout (60 s).
    let gone = post_sql_with_timeout(
        addr,
        "SELECT count(*) FROM range(0, 100000000000) AS t(v) WHERE v % 7 = 3",
        1,
    )
    .await;
    assert!(gone.is_none(), "the client gave up");
    eventually(10, "the abandoned query was cancelled", || async {
        (sql_running(addr).await == Some(0)).then_some(())
    })
    .await;

    // No parameter makes a request panic.
    for q in [
        "now-1é",
        "now-é",
        "now-99999999999999999d",
        "%FF",
        "now-1%C3%A9",
    ] {
        let status = get_with_timeout(
            addr,
            &format!(
                "/api/assets/mill-q/history?from={}",
                q.replace('é', "%C3%A9")
            ),
            10,
        )
        .await;
        assert_eq!(status, Some(400), "{q}");
    }
    assert!(readings(addr).await > before);
    sim.stop().await;
    platform.stop().await;
}

/// Six hourly commits of `silver.readings` (one file per plant each): a
/// dashboard's "last hour" query must read only the last hour's files
/// (file statistics on `ts` prune the rest, in the Delta log and in the
/// scan), and answer exactly what that hour holds; `bench sql` reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_filter_reads_only_the_files_of_its_hours() {
    use deltalake::arrow::array::{
        ArrayRef, Date32Array, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use ironlake::lake::{Lakehouse, Table};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let lake = Lakehouse::open(dir.path().to_str().unwrap()).unwrap();
    let schema = Table::SilverReadings.arrow_schema();
    let t0_us: i64 = 1_711_843_200_000_000; // 2024-03-31 00:00 UTC
    let hour_us: i64 = 3_600_000_000;
    let mut last_hour_sum = 0.0f64;
    for h in 0..6i64 {
        let n = 120usize; // 2 plants x 2 machines x 30 samples
        let ts: Vec<i64> = (0..n)
            .map(|i| t0_us + h * hour_us + (i / 4) as i64 * 60_000_000)
            .collect();
        let plant: Vec<&str> = (0..n)
            .map(|i| if i % 4 < 2 { "plant-a" } else { "plant-b" })
            .collect();
        let asset: Vec<String> = (0..n).map(|i| format!("m{}", i % 4)).collect();
        let value: Vec<f64> = (0..n).map(|i| (h * 1000 + i as i64) as f64).collect();
        if h == 5 {
            last_hour_sum = value.iter().sum();
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(ts.clone()).with_timezone("UTC")),
            Arc::new(StringArray::from(plant)),
            Arc::new(StringArray::from(vec!["line-1"; n])),
            Arc::new(StringArray::from(asset)),
            Arc::new(StringArray::from(vec!["power"; n])),
            Arc::new(Float64Array::from(value)),
            Arc::new(StringArray::from(vec!["good"; n])),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Date32Array::from(vec![19_813; n])),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let table = lake.open_or_create(Table::SilverReadings).await.unwrap();
        table
            .write(vec![batch])
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .with_partition_columns(["plant".to_string(), "date".to_string()])
            .await
            .unwrap();
    }
    let out = dir.path().join("answer.parquet");
    let q = "SELECT count(*) AS n, sum(value) AS s FROM silver.readings \
             WHERE ts >= TIMESTAMP '2024-03-31 05:00:00Z' AND ts < TIMESTAMP '2024-03-31 06:00:00Z'";
    let o = cli(&[
        "bench",
        "sql",
        "--lakehouse",
        dir.path().to_str().unwrap(),
        "--query",
        q,
        "--repeats",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let report = json(stdout.trim().lines().last().unwrap().as_bytes());
    assert_eq!(report["seconds"].as_array().unwrap().len(), 2, "{report}");
    // 12 files in the table; only the last hour's 2 are opened.
    let opened = report["scan"]["files_opened"].as_u64().unwrap_or(u64::MAX);
    assert_eq!(opened, 2, "files opened for one hour: {report}");
    let back = ironlake::bench::peers::read_parquet(&out, 1).unwrap();
    let n = back[0].column(0).as_primitive::<Int64Type>().value(0);
    let s = back[0]
        .column(1)
        .as_primitive::<deltalake::arrow::datatypes::Float64Type>()
        .value(0);
    assert_eq!(n, 120);
    assert_eq!(s, last_hour_sum);
}

/// Write `batch` as one more commit of the table under `dir` (created by the
/// first write).
async fn append_commit(dir: &std::path::Path, batch: deltalake::arrow::array::RecordBatch) {
    std::fs::create_dir_all(dir).unwrap();
    let url = url::Url::from_directory_path(dir).unwrap();
    let exists = dir.join("_delta_log").is_dir();
    let table = if exists {
        deltalake::DeltaTable::try_from_url(url).await.unwrap()
    } else {
        deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap()
    };
    table
        .write(vec![batch])
        .with_save_mode(deltalake::protocol::SaveMode::Append)
        .await
        .unwrap();
}

/// Rows of `gold.last_test`: (asset, ts µs or NULL, value or NULL, label or
/// NULL, seq).
type LastRow = (String, Option<i64>, Option<f64>, Option<String>, i64);

fn last_test_batch(rows: &[LastRow]) -> deltalake::arrow::array::RecordBatch {
    use deltalake::arrow::array::{
        ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use std::sync::Arc;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.1)).with_timezone("UTC"),
        ),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.3.as_deref()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.4))),
    ];
    let names = ["asset", "ts", "value", "label", "seq"];
    RecordBatch::try_from_iter(names.into_iter().zip(cols)).unwrap()
}

/// `max_by` / `min_by` (and DuckDB's `arg_max` / `arg_min`) give the value on
/// the row of the greatest / least key of each group, across files,
/// batches and both aggregation phases: NULL keys are skipped, a NULL value
/// on the winning row is the answer, FILTER applies, text values and float
/// or integer keys work, and the grouped answer equals DataFusion's
/// `last_value(... ORDER BY ...)`. A key that cannot order rows is a clear
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_by_and_min_by_give_the_value_at_the_extreme_key() {
    use deltalake::arrow::array::Array;
    use deltalake::arrow::datatypes::Float64Type;
    use ironlake::lake::Lakehouse;
    use ironlake::query::SqlEngine;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("gold").join("last_test");
    // 3 commits x 30,000 rows of 700 assets in shuffled order; every
    // (asset, ts) distinct, so the answer is defined.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut all: Vec<LastRow> = Vec::new();
    let mut seq = 0i64;
    for _commit in 0..3 {
        let mut rows = Vec::new();
        for _ in 0..30_000 {
            let r = next();
            let asset = format!("m{:03}", r % 700);
            seq += 1;
            // ts unique per row; one row in 50 has no ts, one in 40 no value.
            let ts = (r % 50 != 0)
                .then_some(1_700_000_000_000_000 + ((r >> 20) % 10_000_000) as i64 * 100_000 + seq);
            let value = (r % 40 != 1).then_some(((r >> 8) % 100_000) as f64 / 7.0 - 5_000.0);
            let label = (r % 30 != 2).then(|| format!("l{}", (r >> 16) % 997));
            rows.push((asset, ts, value, label, seq));
        }
        append_commit(&table_dir, last_test_batch(&rows)).await;
        all.extend(rows);
    }
    // The newest row of all (of m000) has a NULL value: its answer is NULL.
    let newest_ts = all.iter().filter_map(|r| r.1).max().unwrap();
    let forced = (
        "m000".to_string(),
        Some(newest_ts + 1),
        None,
        Some("newest".to_string()),
        seq + 1,
    );
    append_commit(&table_dir, last_test_batch(std::slice::from_ref(&forced))).await;
    all.push(forced);

    // What each answer must be, computed here.
    type Pick = (Option<i64>, Option<f64>, Option<String>); // (key, value, label)
    let mut newest: BTreeMap<String, Pick> = BTreeMap::new();
    let mut oldest: BTreeMap<String, Pick> = BTreeMap::new();
    let mut biggest_seq_positive: BTreeMap<String, (i64, Option<f64>)> = BTreeMap::new();
    for (asset, ts, value, label, seq) in &all {
        // An asset without any ts (m050, m100, ...: r % 50 == 0 there)
        // answers NULL.
        let n = newest.entry(asset.clone()).or_insert((None, None, None));
        if let Some(ts) = ts {
            if n.0.is_none_or(|k| *ts > k) {
                *n = (Some(*ts), *value, label.clone());
            }
            let o = oldest.entry(asset.clone()).or_insert((None, None, None));
            if o.0.is_none_or(|k| *ts < k) {
                *o = (Some(*ts), *value, label.clone());
            }
        }
        if value.is_some_and(|v| v > 0.0) {
            let b = biggest_seq_positive
                .entry(asset.clone())
                .or_insert((i64::MIN, None));
            if *seq > b.0 {
                *b = (*seq, *value);
            }
        }
    }

    let lake = Arc::new(Lakehouse::open(dir.path().to_str().unwrap()).unwrap());
    let engine = SqlEngine::new(lake);
    let q = engine
        .query(
            "SELECT asset, max_by(value, ts) AS newest, min_by(value, ts) AS oldest, \
             max_by(label, ts) AS newest_label, arg_min(label, ts) AS oldest_label, \
             last_value(value ORDER BY ts NULLS FIRST) AS df_last, \
             arg_max(value, seq) FILTER (WHERE value > 0) AS last_positive \
             FROM gold.last_test GROUP BY asset ORDER BY asset",
        )
        .await
        .unwrap();
    assert_eq!(q.rows(), newest.len());
    let mut checked = 0;
    for b in &q.batches {
        let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
        let (newest_v, oldest_v, df_last, last_pos) = (f(1), f(2), f(5), f(6));
        let text = |i: usize, r: usize| -> Option<String> {
            let c = deltalake::arrow::compute::cast(
                b.column(i),
                &deltalake::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let c = c.as_string::<i32>();
            c.is_valid(r).then(|| c.value(r).to_string())
        };
        for r in 0..b.num_rows() {
            let a = text(0, r).unwrap();
            let opt = |c: &deltalake::arrow::array::Float64Array| c.is_valid(r).then(|| c.value(r));
            let want_new = &newest[&a];
            let want_old = oldest.get(&a).cloned().unwrap_or((None, None, None));
            assert_eq!(opt(newest_v), want_new.1, "max_by(value, ts) of {a}");
            assert_eq!(opt(oldest_v), want_old.1, "min_by(value, ts) of {a}");
            assert_eq!(text(3, r), want_new.2, "max_by(label, ts) of {a}");
            assert_eq!(text(4, r), want_old.2, "arg_min(label, ts) of {a}");
            if want_new.0.is_some() {
                // (last_value does not skip NULL keys: they sort first here.)
                assert_eq!(
                    opt(newest_v),
                    opt(df_last),
                    "max_by against last_value for {a}"
                );
            }
            assert_eq!(
                opt(last_pos),
                biggest_seq_positive.get(&a).and_then(|b| b.1),
                "arg_max(value, seq) FILTER (WHERE value > 0) of {a}"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 700);
    assert_eq!(
        newest.values().filter(|n| n.0.is_none()).count(),
        13,
        "groups without any key are in the test (m050, m100, ... m650; m000 has the forced row)"
    );
    assert!(
        newest["m000"].1.is_none(),
        "the forced newest row has no value"
    );

    // Without GROUP BY, and with a float key.
    let one = engine
        .query("SELECT max_by(label, ts) AS l, min_by(asset, value) AS a FROM gold.last_test")
        .await
        .unwrap();
    let b = &one.batches[0];
    let text = |i: usize| {
        let c = deltalake::arrow::compute::cast(
            b.column(i),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        c.as_string::<i32>().value(0).to_string()
    };
    assert_eq!(text(0), "newest");
    let lowest = all
        .iter()
        .filter(|r| r.2.is_some())
        .min_by(|x, y| x.2.partial_cmp(&y.2).unwrap())
        .unwrap();
    assert_eq!(text(1), lowest.0);

    // A text key cannot order rows: the planner says so.
    let err = engine
        .query("SELECT max_by(value, label) FROM gold.last_test")
        .await
        .unwrap_err();
    assert!(err.is_user_error(), "{err}");
    assert!(
        err.to_string()
            .contains("must be a number, a date or a timestamp"),
        "{err}"
    );
}

/// `n` rows of machine m1, seq and ts counting up from `from`.
fn m1_rows(n: i64, from: i64) -> Vec<LastRow> {
    (0..n)
        .map(|i| {
            (
                "m1".to_string(),
                Some(from + i),
                Some(i as f64),
                None,
                from + i,
            )
        })
        .collect()
}

/// The platform opens every table into its SQL engine at start-up, so a
/// dashboard's first query does not read the table's log; what is
/// committed after that is still seen by the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmed_snapshots_hold_every_table_and_still_see_new_commits() {
    use ironlake::lake::Lakehouse;
    use ironlake::query::SqlEngine;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("gold").join("last_test");
    let b = dir.path().join("silver").join("other_test");
    append_commit(&a, last_test_batch(&m1_rows(4, 0))).await;
    append_commit(&b, last_test_batch(&m1_rows(7, 0))).await;
    let lake = Arc::new(Lakehouse::open(dir.path().to_str().unwrap()).unwrap());
    let engine = SqlEngine::new(lake);
    assert_eq!(engine.snapshots_held(), 0);
    assert_eq!(engine.warm_snapshots().await, 2, "both tables opened");
    assert_eq!(engine.snapshots_held(), 2);

    append_commit(&a, last_test_batch(&m1_rows(3, 100))).await;
    let r = engine
        .query("SELECT count(*) FROM gold.last_test")
        .await
        .unwrap();
    assert_eq!(
        r.batches[0].column(0).as_primitive::<Int64Type>().value(0),
        7
    );
    let r = engine
        .query("SELECT count(*) FROM silver.other_test")
        .await
        .unwrap();
    assert_eq!(
        r.batches[0].column(0).as_primitive::<Int64Type>().value(0),
        7
    );
}

/// One engine answers many queries (as `POST /api/sql` does) and keeps
/// each table's snapshot between them: a commit made after a query is seen
/// by the next one, and a table deleted and written again under the same
/// name is read afresh, never from the old snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_sees_every_commit_and_a_recreated_table() {
    use ironlake::lake::Lakehouse;
    use ironlake::query::SqlEngine;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("gold").join("last_test");
    let lake = Arc::new(Lakehouse::open(dir.path().to_str().unwrap()).unwrap());
    let engine = SqlEngine::new(lake);
    let count = |engine: SqlEngine| async move {
        let r = engine
            .query("SELECT count(*) AS n, max(seq) AS s FROM gold.last_test")
            .await
            .unwrap();
        let b = &r.batches[0];
        (
            b.column(0).as_primitive::<Int64Type>().value(0),
            b.column(1).as_primitive::<Int64Type>().value(0),
        )
    };
    append_commit(&table_dir, last_test_batch(&m1_rows(10, 0))).await;
    assert_eq!(count(engine.clone()).await, (10, 9));
    append_commit(&table_dir, last_test_batch(&m1_rows(5, 100))).await;
    append_commit(&table_dir, last_test_batch(&m1_rows(5, 200))).await;
    assert_eq!(count(engine.clone()).await, (20, 204), "new commits seen");
    assert_eq!(count(engine.clone()).await, (20, 204), "and again");

    // Deleted and written again: `commits` commits of `n` rows each, the
    // k-th starting at seq `from + 10 k`.
    let recreate = |commits: i64, n: i64, from: i64| {
        let (dir, batches) = (
            table_dir.clone(),
            (0..commits)
                .map(|k| last_test_batch(&m1_rows(n, from + 10 * k)))
                .collect::<Vec<_>>(),
        );
        async move {
            std::fs::remove_dir_all(&dir).unwrap();
            for b in batches {
                append_commit(&dir, b).await;
            }
        }
    };
    recreate(1, 3, 1000).await;
    assert_eq!(
        count(engine.clone()).await,
        (3, 1002),
        "recreated, 1 version"
    );
    // The engine last read version 0; now three commits exist.
    recreate(3, 2, 2000).await;
    assert_eq!(
        count(engine.clone()).await,
        (6, 2021),
        "recreated, 3 versions"
    );
    // As many versions as the snapshot the engine holds.
    recreate(3, 1, 3000).await;
    assert_eq!(
        count(engine.clone()).await,
        (3, 3020),
        "recreated at the same version"
    );
    // A table that is gone is an unknown table again.
    std::fs::remove_dir_all(&table_dir).unwrap();
    let err = engine
        .query("SELECT count(*) FROM gold.last_test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// Sessions of one engine are cloned from one made on its first query:
/// they must be independent (time travel registers tables in a session),
/// see the same tables and functions, and be freed after their query (a
/// session whose table schemas pointed back at its catalogs never was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_independent_and_freed_after_their_query() {
    use ironlake::lake::Lakehouse;
    use ironlake::query::SqlEngine;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let table_dir = dir.path().join("gold").join("last_test");
    append_commit(&table_dir, last_test_batch(&m1_rows(10, 0))).await;
    append_commit(&table_dir, last_test_batch(&m1_rows(5, 100))).await;
    let lake = Arc::new(Lakehouse::open(dir.path().to_str().unwrap()).unwrap());
    let engine = SqlEngine::new(lake);
    let n = |r: &ironlake::query::QueryResult| {
        r.batches[0].column(0).as_primitive::<Int64Type>().value(0)
    };
    // Time travel and the newest version in turn and at once: each query
    // sees the version it asked for.
    let (old, new, old2) = tokio::join!(
        engine.query("SELECT count(*) FROM gold.last_test VERSION AS OF 0"),
        engine.query("SELECT count(*) FROM gold.last_test"),
        engine.query("SELECT max_by(seq, seq) FROM gold.last_test VERSION AS OF 0"),
    );
    assert_eq!(n(&old.unwrap()), 10);
    assert_eq!(n(&new.unwrap()), 15);
    assert_eq!(
        n(&old2.unwrap()),
        9,
        "the engine's own aggregates are there"
    );
    let a = engine.session();
    let b = engine.session();
    let tt = |ctx: &deltalake::datafusion::prelude::SessionContext| {
        ctx.catalog("ironlake")
            .and_then(|c| c.schema("__time_travel"))
            .unwrap()
    };
    let empty = Arc::new(deltalake::datafusion::datasource::empty::EmptyTable::new(
        Arc::new(deltalake::arrow::datatypes::Schema::empty()),
    ));
    tt(&a).register_table("t0".into(), empty).unwrap();
    assert!(tt(&a).table_exist("t0"));
    assert!(!tt(&b).table_exist("t0"), "a session's tables are its own");
    let r = engine.query("SHOW TABLES").await.unwrap();
    let listed = deltalake::arrow::util::pretty::pretty_format_batches(&r.batches)
        .unwrap()
        .to_string();
    assert!(listed.contains("last_test"), "{listed}");

    // After a query that opened a table, nothing holds its session, with
    // or without settings of its own.
    for settings in [vec![], vec![("datafusion.execution.batch_size", "1024")]] {
        let ctx = if settings.is_empty() {
            engine.session()
        } else {
            engine.session_with(&settings).unwrap()
        };
        let df = engine
            .plan(&ctx, "SELECT count(*) FROM gold.last_test")
            .await
            .unwrap();
        let rows = df.collect().await.unwrap();
        assert_eq!(rows[0].column(0).as_primitive::<Int64Type>().value(0), 15);
        let catalogs = Arc::downgrade(ctx.state().catalog_list());
        drop(ctx);
        assert!(
            catalogs.upgrade().is_none(),
            "the session of a finished query is still held ({settings:?})"
        );
    }
}
