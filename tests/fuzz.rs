//! Bounded fuzzing of the entry points that take text from outside: config
//! files and the SQL endpoint. Any input is parsed or refused with an
//! error; nothing panics. (Payload, register, journal record and time
//! parsing are fuzzed beside their code.)

mod common;

use std::sync::Arc;

use proptest::prelude::*;

fn toml_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "plants",
        "twins",
        "http",
        "lake",
        "root",
        "flush_rows",
        "shards",
        "queue",
        "mqtt",
        "port",
        "embedded",
        "enabled",
        "listen",
        "sql",
        "timeout_s",
        "kind",
        "signals",
        "name",
        "type",
        "min",
        "max",
        "modbus",
        "table",
        "address",
        "protocol",
        "topic",
        "machines",
        "id",
        "line",
        "source",
        "codes",
        "state",
    ]);
    let value = prop_oneof![
        Just("1".to_string()),
        Just("-7".to_string()),
        Just("\"x\"".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{ }".to_string()),
        Just("1e400".to_string()),
        Just("\"127.0.0.1:0\"".to_string()),
        "\"[a-z/.:0-9]{0,12}\"".prop_map(|s| s),
    ];
    proptest::collection::vec(
        prop_oneof![
            key.clone().prop_map(|k| format!("[{k}]\n")),
            key.clone().prop_map(|k| format!("[[{k}]]\n")),
            (key, value).prop_map(|(k, v)| format!("{k} = {v}\n")),
            "[^\n]{0,20}\n".prop_map(|s| s),
        ],
        0..20,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn config_files_never_panic(text in toml_like()) {
        let _ = ironlake::config::PlatformFile::parse_with_defaults(&text, "fuzz.toml");
        let _ = ironlake::config::parse_toml::<ironlake::config::PlantFile>(&text, "fuzz.toml");
        let _ = ironlake::assets::TwinType::from_toml(&text, "fuzz.toml");
        let _ = ironlake::config::parse_toml::<ironlake::config::PipelineFile>(&text, "fuzz.toml");
    }
}

fn sql_like() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "SELECT",
        "*",
        "FROM",
        "silver.readings",
        "gold.oee_shift",
        "WHERE",
        "value",
        ">",
        "1",
        "(",
        ")",
        ",",
        "count(",
        "GROUP BY",
        "ORDER BY",
        "LIMIT",
        "VERSION AS OF",
        "TIMESTAMP AS OF",
        "'now-1é'",
        "'2099-01-01'",
        "-1",
        "ts_resample(",
        "ts_gaps(",
        "'silver.readings'",
        "'power'",
        "JOIN",
        "ON",
        "asset_id",
        "=",
        ";",
        "DROP TABLE",
        "INSERT INTO",
        "x",
        "NULL",
        "CAST(",
        "AS",
        "BIGINT",
        "range(",
        "1e400",
        "'",
        "\"",
        "--",
        "/*",
        "UNION",
        "SET",
    ]);
    proptest::collection::vec(token, 0..14).prop_map(|t| t.join(" "))
}

#[test]
fn the_sql_entry_point_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(ironlake::lake::Lakehouse::open(dir.path().to_str().unwrap()).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(lake.ensure_all()).unwrap();
    let engine = ironlake::query::SqlEngine::new(lake);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
    runner
        .run(&sql_like(), |q| {
            let r = rt.block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    engine.query_limited(&q, 100),
                )
                .await
            });
            // Errors are fine; a panic fails the test.
            let _ = r;
            Ok(())
        })
        .unwrap();
}
