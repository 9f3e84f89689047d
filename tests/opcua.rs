//! OPC UA against servers ironlake did not write and against its own
//! simulator.
//!
//! - The Python `asyncua` server (tests/opcua/server.py) with security on
//!   (Basic256Sha256 SignAndEncrypt, user/password only): `opcua browse`
//!   refuses its unknown certificate and says where it went, the
//!   certificate is moved to `trusted/` as a user would, the tree is
//!   printed, a twin type is generated from the machine object (OPC 40001
//!   state and identification recognised), and the platform subscribes:
//!   readings in silver, Bad values quarantined with the status name,
//!   Uncertain ones with quality UNCERTAIN. The server is then restarted
//!   with its namespace renumbered: the machine shows disconnected, then
//!   readings flow again.
//! - Two of the simulator's OPC UA cells (async-opcua servers), one read
//!   with Aes128_Sha256_RsaOaep SignAndEncrypt and a user, the other with
//!   Basic256Sha256 Sign and anonymous: every bound signal in silver.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use ironlake::assets::TwinType;
use ironlake::platform::{Config, Platform, Probes};

/// The test Python, if it has `asyncua`; without it the test skips with a
/// note, unless `IRONLAKE_REQUIRE_OPCUA=1` (CI).
fn asyncua_python() -> Option<String> {
    let py = python();
    let ok = Command::new(&py)
        .args(["-c", "import asyncua"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    if std::env::var("IRONLAKE_REQUIRE_OPCUA").as_deref() == Ok("1") {
        panic!("Python asyncua is required (IRONLAKE_REQUIRE_OPCUA=1) but `{py} -c 'import asyncua'` failed");
    }
    eprintln!("skipping: Python asyncua not installed (scripts/test installs it)");
    None
}

/// Start the asyncua server and wait until it listens.
fn asyncua_server(py: &str, port: u16, pki: &Path, shift: u32) -> Broker {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/opcua/server.py");
    let mut child = Command::new(py)
        .arg(script)
        .arg(port.to_string())
        .arg(pki)
        .arg("--shift")
        .arg(shift.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python runs");
    let out = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the asyncua server did not start");
    Broker(child)
}

fn ironlake(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ironlake"))
        .args(args)
        .env("IRONLAKE_LOG", "off")
        .output()
        .expect("ironlake runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asyncua_server_with_security_browse_generate_subscribe_and_reconnect() {
    init_logs();
    let Some(py) = asyncua_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server_pki = dir.path().join("server-pki");
    let mut server = asyncua_server(&py, port, &server_pki, 2);
    let url = format!("opc.tcp://127.0.0.1:{port}/acme/");
    let pki = dir.path().join("pki");
    let pki_s = pki.display().to_string();
    let secure = [
        "--security-policy",
        "Basic256Sha256",
        "--user",
        "operator",
        "--password",
        "secret",
        "--pki",
        pki_s.as_str(),
    ];

    // 1. The server's certificate is unknown: refused, and set aside in rejected/.
    let mut args = vec!["opcua", "browse", url.as_str()];
    args.extend(secure);
    let out = ironlake(&args);
    assert!(!out.status.success(), "an untrusted server must be refused");
    let err = text(&out.stderr);
    assert!(err.contains("rejected") && err.contains("trusted"), "{err}");
    assert!(
        pki.join("own/cert.der").exists(),
        "ironlake's certificate is created on first start"
    );
    let rejected: Vec<_> = std::fs::read_dir(pki.join("rejected"))
        .expect("rejected/ exists")
        .flatten()
        .collect();
    assert_eq!(
        rejected.len(),
        1,
        "the server's certificate is in rejected/"
    );
    std::fs::create_dir_all(pki.join("trusted")).unwrap();
    for f in rejected {
        std::fs::rename(f.path(), pki.join("trusted").join(f.file_name())).unwrap();
    }

    // 2. Trusted now: the address space as a tree.
    args.extend(["--depth", "5"]);
    let out = ironlake(&args);
    let tree = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for want in [
        "Machines/",
        "Mill1/",
        "Identification/",
        "Speed  Double r",
        "urn:acme:plc",
    ] {
        assert!(
            tree.contains(want),
            "`{want}` missing from the tree:\n{tree}"
        );
    }

    // 2b. An X.509 user identity: the server knows this user's certificate,
    // not another one (refused, and the error says it was the identity).
    let users = dir.path().join("users");
    let mk_user = |cert: &str, key: &str| {
        let script = format!(
            r#"
import asyncio
from pathlib import Path
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID
d = Path("{}")
d.mkdir(parents=True, exist_ok=True)
asyncio.run(setup_self_signed_certificate(d / "{key}", d / "{cert}", "urn:acme:user:{cert}", "127.0.0.1",
    [ExtendedKeyUsageOID.CLIENT_AUTH], {{"countryName": "DE", "organizationName": "ACME", "commonName": "maintenance"}}))
"#,
            users.display()
        );
        let out = Command::new(&py).arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    mk_user("known.der", "known.pem");
    mk_user("stranger.der", "stranger.pem");
    std::fs::copy(users.join("known.der"), server_pki.join("user-cert.der")).unwrap();
    let x509 = |cert: &str, key: &str| {
        let (c, k) = (users.join(cert), users.join(key));
        ironlake(&[
            "opcua",
            "browse",
            url.as_str(),
            "--security-policy",
            "Aes128_Sha256_RsaOaep",
            "--user-cert",
            c.to_str().unwrap(),
            "--user-key",
            k.to_str().unwrap(),
            "--pki",
            pki_s.as_str(),
            "--node",
            "/Objects/Machines",
            "--depth",
            "1",
        ])
    };
    let out = x509("known.der", "known.pem");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Mill1/"),
        "{}",
        text(&out.stdout)
    );
    let out = x509("stranger.der", "stranger.pem");
    assert!(
        !out.status.success(),
        "an unknown user certificate is refused"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("BadUserAccessDenied") && err.contains("refused the identity"),
        "{err}"
    );

    // 3. A twin type from the machine object.
    let twin_file = dir.path().join("twins/acme_mill.toml");
    let twin_s = twin_file.display().to_string();
    let mut gen = args.clone();
    gen.extend([
        "--node",
        "/Objects/Machines/Mill1",
        "--twin-type",
        "acme_mill",
        "--out",
        twin_s.as_str(),
    ]);
    let out = ironlake(&gen);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(summary.contains("OPC 40001"), "{summary}");
    let twin_toml = std::fs::read_to_string(&twin_file).unwrap();
    for want in [
        "kind = \"acme_mill\"",
        "name = \"ACME Machine Tools Mill 5X\"",
        "SerialNumber: SN-4711",
        "[state]",
        "name = \"state\"",
        "name = \"spindle_speed\"",
        "unit = \"rpm\"",
        "max = 24000.0",
        "name = \"spindle_is_rotating\"",
        "type = \"bool\"",
        "name = \"good_parts\"",
        "opcua = { path = \"Monitoring/Spindle/Speed\" }",
    ] {
        assert!(twin_toml.contains(want), "`{want}` missing:\n{twin_toml}");
    }
    let out = ironlake(&gen);
    assert!(
        !out.status.success(),
        "an existing twin type is not overwritten"
    );

    // 4. The platform subscribes with security and a user. The engineer
    // lets the type take signals that appear later (firmware updates).
    let twin_toml = twin_toml.replacen(
        "kind = \"acme_mill\"\n",
        "kind = \"acme_mill\"\nextra_signals = \"add\"\n",
        1,
    );
    assert!(twin_toml.contains("extra_signals"), "{twin_toml}");
    let twin = TwinType::from_toml(&twin_toml, &twin_s).unwrap();
    let mut twins = Config::embedded_twin_types().unwrap();
    twins.insert("acme_mill".into(), std::sync::Arc::new(twin));
    let plant_toml = plant(
        "plant-o",
        "line-o",
        &[
            (
                "mill-x",
                "acme_mill",
                "{ protocol = \"opcua\", server = \"acme\", node = \"/Objects/Machines/Mill1\" }"
                    .to_string(),
            ),
            // A machine the server does not have: quarantined, the other flows.
            (
                "mill-ghost",
                "acme_mill",
                "{ protocol = \"opcua\", server = \"acme\", node = \"/Objects/Machines/Mill9\" }"
                    .to_string(),
            ),
        ],
    );
    let mut p = platform(&dir.path().join("lake"), free_port(), false);
    p.connectors.remove("mqtt");
    let section: toml::Table = toml::from_str(&format!(
        r#"pki_dir = "{pki_s}"
[servers.acme]
endpoint = "{url}"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
identity = {{ user = "operator", password = "secret" }}
publishing_ms = 100
sampling_ms = 100
discover_s = 1
"#
    ))
    .unwrap();
    p.connectors
        .insert("opcua".into(), toml::Value::Table(section));
    let pf = ironlake::config::parse_toml(&plant_toml, "test-plant.toml").unwrap();
    let cfg = Config::from_parts(p, twins, vec![("test-plant.toml".into(), pf)]).unwrap();
    let platform = Platform::start(cfg, Probes::default()).await.unwrap();
    let lake = platform.lake.clone();
    let addr = platform.http_addr;
    let speed = "SELECT count(*) FROM silver.readings WHERE asset_id = 'mill-x' AND signal = 'spindle_speed'";
    wait_count(&lake, 60, "spindle speed readings in silver", speed, 10).await;
    wait_count(
        &lake,
        30,
        "a Bad value quarantined",
        "SELECT count(*) FROM silver.quarantine WHERE expectation = 'bad_status' AND reason LIKE '%BadSensorFailure%'",
        1,
    )
    .await;
    wait_count(
        &lake,
        30,
        "an Uncertain value with quality UNCERTAIN",
        "SELECT count(*) FROM silver.readings WHERE signal = 'spindle_temperature' AND quality = 'UNCERTAIN'",
        1,
    )
    .await;
    wait_count(
        &lake,
        30,
        "the missing machine's bindings quarantined",
        "SELECT count(*) FROM silver.quarantine WHERE asset_id = 'mill-ghost' AND expectation = 'node_not_found' AND reason LIKE '%no `Mill9` under `/Objects/Machines` (there: Mill1)%'",
        5,
    )
    .await;
    let good_temp = count(
        &lake,
        "SELECT count(*) FROM silver.readings WHERE signal = 'spindle_temperature' AND quality = 'GOOD'",
    )
    .await;
    assert!(good_temp > 0, "good temperatures land as GOOD");
    let v = eventually(
        30,
        "the twin shows live values and the 40001 state",
        || async move {
            let (_, v) = get(addr, "/api/assets/mill-x").await;
            let s = signals(&v);
            let speed = s.get("spindle_speed").and_then(|x| x["value"].as_f64())?;
            let known = matches!(v["state"].as_str(), Some("RUNNING") | Some("IDLE"));
            (known && (12000.0..=12090.0).contains(&speed)).then_some(v)
        },
    )
    .await;
    assert_eq!(v["source"]["protocol"], "opcua");
    assert_eq!(v["source"]["connected"], true);

    // 4b. A firmware update adds Monitoring/Coolant/Level on the server:
    // found by the next browse, subscribed, a signal of the twin.
    let coolant = "SELECT count(*) FROM silver.readings WHERE asset_id = 'mill-x' AND signal = 'coolant_level'";
    assert_eq!(count(&lake, coolant).await, 0);
    std::fs::write(server_pki.join("add-coolant"), "").unwrap();
    wait_count(
        &lake,
        60,
        "the new variable's readings in silver",
        coolant,
        5,
    )
    .await;
    eventually(30, "the twin shows the new signal", || async move {
        let (_, v) = get(addr, "/api/assets/mill-x").await;
        let level = signals(&v)
            .get("coolant_level")
            .and_then(|x| x["value"].as_f64())?;
        (71.0..=80.0).contains(&level).then_some(())
    })
    .await;
    let m = metrics_text(addr).await.unwrap_or_default();
    assert!(
        m.contains("ironlake_opcua_discovered_variables_total{server=\"acme\"} 1"),
        "{m}"
    );

    // 5. The server restarts with its namespaces renumbered.
    server.kill();
    eventually(
        30,
        "the machine shows its source disconnected",
        || async move {
            let (_, v) = get(addr, "/api/assets/mill-x").await;
            (v["source"]["connected"] == false).then_some(())
        },
    )
    .await;
    let before = count(&lake, speed).await;
    let _server = asyncua_server(&py, port, &server_pki, 5);
    wait_count(
        &lake,
        90,
        "readings again after the restart",
        speed,
        before + 10,
    )
    .await;
    let (_, v) = get(addr, "/api/assets/mill-x").await;
    assert_eq!(v["source"]["connected"], true, "{v}");
    assert!(v["source"]["reconnects"].as_u64().unwrap_or(0) >= 1, "{v}");
    // The discovered variable is found again under the new numbering.
    let before = count(&lake, coolant).await;
    wait_count(
        &lake,
        60,
        "coolant readings after the restart",
        coolant,
        before + 5,
    )
    .await;
    platform.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simulated_cells_over_aes128_sign_and_encrypt_and_basic256sha256_sign() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    // Two cells: one asked for Aes128_Sha256_RsaOaep SignAndEncrypt with a
    // user, the other for Basic256Sha256 Sign, anonymous.
    let machines: Vec<(&str, &str, String)> = [("mill-s1", "cell-a"), ("mill-s2", "cell-b")]
        .iter()
        .map(|(id, server)| {
            (
                *id,
                "cnc_mill",
                format!("{{ protocol = \"opcua\", server = \"{server}\", node = \"/Objects/Machines/{id}\" }}"),
            )
        })
        .collect();
    let ids = ["mill-s1", "mill-s2"];
    let plant_toml = plant("plant-s", "line-s", &machines);
    let mut p = platform(&dir.path().join("lake"), free_port(), false);
    p.connectors.remove("mqtt");
    let pki = dir.path().join("pki");
    let section: toml::Table = toml::from_str(&format!(
        r#"pki_dir = "{}"
trust_server_certs = true
[servers.cell-a]
endpoint = "opc.tcp://127.0.0.1:{port_a}/"
security_policy = "Aes128_Sha256_RsaOaep"
security_mode = "SignAndEncrypt"
identity = {{ user = "operator", password = "operator" }}
[servers.cell-b]
endpoint = "opc.tcp://127.0.0.1:{port_b}/"
security_policy = "Basic256Sha256"
security_mode = "Sign"
"#,
        pki.display()
    ))
    .unwrap();
    p.connectors
        .insert("opcua".into(), toml::Value::Table(section));
    let cfg = config(p, &plant_toml);
    let mut sf = scenario(free_port(), 200);
    sf.faults.clear();
    let sc = ironlake::sim::Scenario::from_config(sf, &cfg);
    let sim = ironlake::sim::Simulator::start(&sc, 7).await.unwrap();
    let platform = Platform::start(cfg, Probes::default()).await.unwrap();
    let lake = platform.lake.clone();
    let addr = platform.http_addr;
    // Every bound signal of both machines arrives; if not, say what each
    // mill's connection reports.
    let all = "SELECT count(*) FROM (SELECT DISTINCT asset_id, signal FROM silver.readings)";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = count_once_there(&lake, all).await;
        if n >= 18 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let mut sources = Vec::new();
            for id in ids {
                let (_, v) = get(addr, &format!("/api/assets/{id}")).await;
                sources.push(format!("{id}: {}", v["source"]));
            }
            panic!(
                "timed out after 60s waiting for all nine signals of both mills ({n} of 18); {}",
                sources.join("; ")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    for id in ids {
        eventually(30, "each mill's twin has a known state", || async move {
            let (_, v) = get(addr, &format!("/api/assets/{id}")).await;
            v["state"]
                .as_str()
                .filter(|s| !matches!(*s, "UNKNOWN" | "DISCONNECTED"))
                .map(|_| ())
        })
        .await;
    }
    assert!(pki.join("own/cert.der").exists());
    platform.stop().await;
    sim.stop().await;
}
