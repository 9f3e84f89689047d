//! Twins checkpoint to gold.asset_state and come back with their state after a
//! platform restart (the journal gives them what came after the checkpoint);
//! a restarted twin resumes from its last checkpoint.

mod common;

use common::*;
use ironlake::platform::{Platform, Probes};
use ironlake::sim::{Scenario, Simulator};
use ironlake::twins::{GetSnapshot, Restart};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twin_state_survives_restart_and_supervisor_restart() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (p1, mq) = (free_port(), free_port());
    let plant = plant(
        "plant-r",
        "line-r",
        &[("press-r", "press", modbus(p1, 100))],
    );
    let cfg = config(platform(dir.path(), mq, false), &plant);
    let sim = Simulator::start(&Scenario::from_config(scenario(mq, 100), &cfg), 3)
        .await
        .unwrap();
    let first = Platform::start(cfg.clone(), Probes::default())
        .await
        .unwrap();
    let addr = first.http_addr;
    eventually(60, "the press made parts and has full windows", || async {
        let (_, b) = get(addr, "/api/assets/press-r").await;
        (b["counters"]["good_total"].as_f64().unwrap_or(0.0) > 0.0
            && signals(&b)["force"]["count_window"]["count"].as_u64() == Some(20))
        .then_some(())
    })
    .await;

    // Stop the PLC and the platform; the final checkpoint holds the last state.
    sim.stop().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let last = first.twins.machines[0].send(GetSnapshot).await.unwrap();
    first.stop().await;

    // A new platform on the same lakehouse, with the PLC gone: only the
    // checkpoint can provide this state.
    let mut cfg2 = cfg.clone();
    cfg2.platform.http.listen = "127.0.0.1:0".parse().unwrap();
    let second = Platform::start(cfg2, Probes::default()).await.unwrap();
    let (_, b) = get(second.http_addr, "/api/assets/press-r").await;
    assert_eq!(b["readings_total"].as_u64(), Some(last.readings_total));
    // The platform was down and the PLC is gone: the state is no longer known.
    assert!(
        b["state"] == serde_json::to_value(last.state).unwrap() || b["state"] == "DISCONNECTED",
        "{}",
        b["state"]
    );
    assert_eq!(
        b["counters"]["good_total"].as_f64(),
        Some(last.counters.good_total)
    );
    assert_eq!(
        b["counters"]["good_parts"].as_f64(),
        last.counters.good_parts
    );
    let s = signals(&b);
    let force = last.signals.iter().find(|x| x.name == "force").unwrap();
    assert_eq!(
        s["force"]["count_window"]["count"].as_u64(),
        Some(force.count_window.count as u64)
    );
    // The restored window recomputes its sums from the values, the live one
    // kept running sums: equal up to the last bit of rounding.
    let (restored, live) = (
        s["force"]["count_window"]["mean"].as_f64().unwrap(),
        force.count_window.mean.unwrap(),
    );
    assert!(
        (restored - live).abs() <= 1e-12 * live.abs().max(1.0),
        "{restored} vs {live}"
    );
    assert_eq!(s["force"]["value"].as_f64(), force.value);
    assert_eq!(b["source"]["connected"], false);
    let addr2 = second.http_addr;
    eventually(10, "the machine shows DISCONNECTED", || async {
        let (_, b) = get(addr2, "/api/assets/press-r").await;
        (b["state"] == "DISCONNECTED").then_some(())
    })
    .await;
    let lake2 = second.lake.clone();
    eventually(10, "a DISCONNECTED event in silver.asset_events", || {
        let lake = lake2.clone();
        async move {
            (count(&lake, "SELECT count(*) FROM silver.asset_events WHERE kind = 'state' AND code = 'DISCONNECTED'").await > 0)
                .then_some(())
        }
    })
    .await;

    // Supervisor restart: the twin comes back from its last checkpoint.
    let first = second;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let twin = first.twins.machines[0].clone();
    let before = twin.send(GetSnapshot).await.unwrap();
    twin.do_send(Restart);
    let after = eventually(10, "twin answers after restart", || {
        let twin = twin.clone();
        async move { twin.send(GetSnapshot).await.ok() }
    })
    .await;
    assert!(after.readings_total > 0, "restored, not empty");
    assert_eq!(after.readings_total, before.readings_total);
    assert_eq!(after.counters, before.counters);

    first.stop().await;
}
