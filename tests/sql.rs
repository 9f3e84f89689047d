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
