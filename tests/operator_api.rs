//! The REST endpoints the twin browser (and scripts) use, end to end through
//! MQTT into a running platform: the live stream (SSE) with its scope,
//! alarms and their acknowledgement (twin, REST and `silver.asset_events`),
//! downsampled history, events for a state timeline, search, the floor
//! map's positions, the shift report and the quarantine summary. Bad
//! requests get clear errors.

mod common;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::*;
use ironlake::platform::{Platform, Probes};
use rumqttc::{AsyncClient, MqttOptions, QoS};

fn reading(ts: i64, state: i64, oil: f64, good: i64) -> String {
    format!(
        "{{\"ts\": {ts}, \"state\": {state}, \"hydraulics\": {{\"oil_temp\": {oil}, \"pressure_bar\": 200}}, \
         \"press\": {{\"force_kn\": 100.5}}, \"counters\": {{\"good\": {good}, \"reject\": 0}}}}"
    )
}

/// Read SSE events from `url` for up to `secs` until `done` says so.
fn sse(
    url: &str,
    secs: u64,
    mut done: impl FnMut(&str, &serde_json::Value) -> bool,
) -> Vec<(String, serde_json::Value)> {
    let resp = ureq::get(url).call().expect("open stream");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap(),
        "text/event-stream"
    );
    let mut r = BufReader::new(resp.into_body().into_reader());
    let mut out = Vec::new();
    let t = Instant::now();
    let mut event = String::new();
    let mut line = String::new();
    while t.elapsed() < Duration::from_secs(secs) {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim_end();
        if let Some(e) = l.strip_prefix("event: ") {
            event = e.to_string();
        } else if let Some(d) = l.strip_prefix("data: ") {
            let v: serde_json::Value = serde_json::from_str(d).expect("event data is JSON");
            let stop = done(&event, &v);
            out.push((event.clone(), v));
            if stop {
                break;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_endpoints_end_to_end() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mq = free_port();
    let plant = plant(
        "plant-o",
        "line-o",
        &[
            ("press-o1", "press", mqtt("test/o/press-o1")),
            ("press-o2", "press", mqtt("test/o/press-o2")),
        ],
    );
    let platform = Platform::start(
        config(platform(dir.path(), mq, true), &plant),
        Probes::default(),
    )
    .await
    .unwrap();
    let addr = platform.http_addr;
    let mut o = MqttOptions::new("operator-pub", "127.0.0.1", mq);
    o.set_keep_alive(Duration::from_secs(10));
    let (client, mut ev) = AsyncClient::new(o, 1000);
    tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A live stream of press-o1's values and of everything's state, read
    // while readings arrive.
    let url = format!("http://{addr}/api/stream?assets=press-o1&plant=plant-o");
    let reader = tokio::task::spawn_blocking(move || {
        sse(&url, 20, |e, v| {
            e == "asset"
                && v["id"] == "press-o1"
                && v["alarms"].as_array().is_some_and(|a| !a.is_empty())
        })
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = ironlake::time::now_ms() - 120_000;
    for k in 0..60i64 {
        // press-o1 runs, its oil overheats from reading 40 on (alarm); press-o2 idles.
        let oil = if k >= 40 { 80.0 } else { 40.0 };
        let c = &client;
        c.publish(
            "test/o/press-o1",
            QoS::AtLeastOnce,
            false,
            reading(t0 + k * 1000, 2, oil, k),
        )
        .await
        .unwrap();
        c.publish(
            "test/o/press-o2",
            QoS::AtLeastOnce,
            false,
            reading(t0 + k * 1000, 1, 40.0, 0),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let events = reader.await.unwrap();
    assert_eq!(events[0].0, "hello", "{events:?}");
    let values: Vec<_> = events.iter().filter(|(e, _)| e == "values").collect();
    assert!(
        !values.is_empty(),
        "values of press-o1 were streamed: {events:?}"
    );
    assert!(
        values.iter().all(|(_, v)| v["id"] == "press-o1"),
        "only the asked machine's values"
    );
    assert!(values[0].1["signals"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "oil_temp"));
    assert!(
        events
            .iter()
            .any(|(e, v)| e == "asset" && v["id"] == "press-o2" && v["state"] == "IDLE"),
        "state changes of the plant's other machines: {events:?}"
    );
    let last = &events.last().unwrap().1;
    assert_eq!(last["alarms"][0]["name"], "oil_overtemperature");
    assert!(last["alarms"][0]["acknowledged"].is_null());

    // Alarms: listed with severity; filters checked.
    let (s, body) = get(addr, "/api/alarms?plant=plant-o&severity=critical").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["alarms"][0]["asset"], "press-o1");
    assert_eq!(body["alarms"][0]["severity"], "critical");
    assert_eq!(body["alarms"][0]["state"], "active");
    for (q, status) in [
        ("/api/alarms?state=bogus", 400),
        ("/api/alarms?severity=loud", 400),
        ("/api/alarms?plant=nowhere", 404),
    ] {
        assert_eq!(get(addr, q).await.0, status, "{q}");
    }

    // Acknowledge: bad requests first, then the real one.
    let ack = "/api/assets/press-o1/alarms/oil_overtemperature/ack";
    let j = "application/json";
    assert_eq!(post(addr, ack, j, "{}").await.0, 400, "a name is required");
    assert_eq!(post(addr, ack, j, "not json").await.0, 400);
    assert_eq!(
        post(
            addr,
            "/api/assets/press-o1/alarms/nope/ack",
            j,
            r#"{"by":"x"}"#
        )
        .await
        .0,
        404
    );
    assert_eq!(
        post(addr, "/api/assets/ghost/alarms/x/ack", j, r#"{"by":"x"}"#)
            .await
            .0,
        404
    );
    let (s, _, b) = post(
        addr,
        "/api/assets/press-o1/alarms/pressure_low/ack",
        j,
        r#"{"by":"x"}"#,
    )
    .await;
    assert_eq!(
        s,
        409,
        "an alarm that is not active: {}",
        String::from_utf8_lossy(&b)
    );
    let (s, _, b) = post(
        addr,
        ack,
        j,
        r#"{"by":"  Dana <b>\n", "comment":"oil cooler fan replaced"}"#,
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (_, body) = get(addr, "/api/alarms?asset=press-o1&state=acknowledged").await;
    let a = &body["alarms"][0];
    assert_eq!(
        a["acknowledged"]["by"], "Dana <b>",
        "trimmed, control characters removed, kept as text"
    );
    assert_eq!(a["acknowledged"]["comment"], "oil cooler fan replaced");
    assert_eq!(
        get(addr, "/api/alarms?asset=press-o1&state=unacknowledged")
            .await
            .1["count"],
        0
    );
    let lake = platform.lake.clone();
    wait_count(
        &lake,
        20,
        "the acknowledgement in silver.asset_events",
        "SELECT count(*) FROM silver.asset_events WHERE kind = 'alarm_ack' AND asset_id = 'press-o1' AND code = 'oil_overtemperature' AND message LIKE '%Dana%'",
        1,
    )
    .await;

    // The alarm clears; it is then listed as cleared, with its acknowledgement.
    let t1 = t0 + 60_000;
    for k in 0..3i64 {
        client
            .publish(
                "test/o/press-o1",
                QoS::AtLeastOnce,
                false,
                reading(t1 + k * 1000, 2, 40.0, 60 + k),
            )
            .await
            .unwrap();
    }
    let cleared = eventually(20, "the cleared alarm in the list", || async move {
        let (_, b) = get(
            addr,
            "/api/alarms?asset=press-o1&state=cleared&since=now-1h",
        )
        .await;
        b["alarms"].as_array().filter(|a| !a.is_empty()).cloned()
    })
    .await;
    assert_eq!(cleared[0]["name"], "oil_overtemperature");
    assert_eq!(cleared[0]["acknowledged"]["by"], "Dana <b>");
    assert_eq!(cleared[0]["raised"], t0 + 40_000);
    assert_eq!(cleared[0]["cleared"], t1);

    // Downsampled history: 60 readings in 6 buckets of 10 s.
    let path = format!(
        "/api/assets/press-o1/history?signal=oil_temp&from={t0}&to={}&points=6",
        t0 + 60_000 - 1
    );
    let b = eventually(20, "60 oil_temp readings in silver", || {
        let path = path.clone();
        async move {
            let (_, b) = get(addr, &path).await;
            (b["buckets"]["count"]
                .as_array()?
                .iter()
                .filter_map(|c| c.as_i64())
                .sum::<i64>()
                == 60)
                .then_some(b)
        }
    })
    .await;
    assert_eq!(b["bucket_ms"], 9_999);
    let max: Vec<f64> = b["buckets"]["max"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(*max.last().unwrap(), 80.0);
    assert_eq!(max[0], 40.0);
    assert_eq!(b["unit"], "degC");
    assert_eq!(
        get(addr, "/api/assets/press-o1/history?points=10").await.0,
        400,
        "points needs a signal"
    );
    assert_eq!(
        get(
            addr,
            "/api/assets/press-o1/history?signal=oil_temp&points=0"
        )
        .await
        .0,
        400
    );

    // Events for a state timeline: the state in force before `from`, then changes.
    let (s, ev) = get(
        addr,
        &format!(
            "/api/assets/press-o2/events?kind=state&from={}",
            t0 + 10_000
        ),
    )
    .await;
    assert_eq!(s, 200, "{ev}");
    assert_eq!(ev["state_before"]["code"], "IDLE");
    assert_eq!(
        get(addr, "/api/assets/press-o2/events?kind=bogus").await.0,
        400
    );

    // Search by id or name, positions for the map.
    let (_, found) = get(addr, "/api/assets?q=O2").await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["id"], "press-o2");
    assert!(found[0]["pos"].is_null(), "no position configured");

    // The shift report and the plant's OEE answer (empty before the gold jobs ran).
    let (s, rep) = get(addr, "/api/plants/plant-o/shift-report").await;
    assert_eq!(s, 200, "{rep}");
    assert!(rep["shift"]["start"].as_i64().unwrap() <= ironlake::time::now_ms());
    assert_eq!(get(addr, "/api/plants/plant-o/oee").await.0, 200);
    assert_eq!(get(addr, "/api/plants/plant-o/shifts").await.0, 200);
    assert_eq!(get(addr, "/api/plants/nope/shift-report").await.0, 404);
    assert_eq!(
        get(addr, "/api/plants/plant-o/shift-report?shift=yesterday-ish")
            .await
            .0,
        400
    );

    // Quarantine by reason over the last hour.
    client
        .publish("test/o/press-o1", QoS::AtLeastOnce, false, "{not json")
        .await
        .unwrap();
    let q = eventually(
        20,
        "the malformed message in the quarantine summary",
        || async move {
            let (_, b) = get(addr, "/api/quarantine").await;
            b["reasons"]
                .as_array()?
                .iter()
                .find(|r| r["expectation"] == "malformed_payload")
                .cloned()
        },
    )
    .await;
    assert_eq!(q["rows"], 1);
    assert_eq!(q["example"], "{not json");

    // The stream refuses what it cannot serve.
    assert_eq!(get(addr, "/api/stream?assets=ghost").await.0, 404);
    let metrics = metrics_text(addr).await.unwrap();
    assert!(
        metrics.contains("ironlake_live{stat=\"events_published\"}"),
        "{metrics}"
    );
    platform.stop().await;
}
