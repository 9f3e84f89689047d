//! The twin browser in a real Chromium during a demo run: the overview with
//! both plants, a machine page whose values change live, a 15-minute chart,
//! an alarm acknowledged through the page and found in REST and in
//! `silver.asset_events`, the shift report equal to `gold.oee_shift`, search,
//! an unknown asset, a shift without gold rows, and a platform restart the
//! page survives by itself. Any JavaScript error or failed request fails.
//!
//! The browser side is `tests/ui/browser.mjs` (Playwright's `playwright-core`
//! driving the system Chromium; `scripts/test` installs it). Screenshots land
//! in `<target>/ui-screenshots/`. Without Node.js, Chromium or the package
//! the test says so and passes, unless `IRONLAKE_REQUIRE_BROWSER=1` (CI).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::free_port;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("IRONLAKE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// What the browser test needs, or why it cannot run.
fn prerequisites() -> Result<PathBuf, String> {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("no `node` on PATH".into());
    }
    let pw = root().join("tests/ui/node_modules/playwright-core");
    if !pw.exists() {
        return Err(format!(
            "{} is missing (run `npm ci --prefix tests/ui`, or scripts/test)",
            pw.display()
        ));
    }
    chromium().ok_or_else(|| "no Chromium (Debian: apt install chromium)".into())
}

/// A machine name longer than any screen is wide.
const LONG_NAME: &str = "Compressor B1 of the north wall feeding the press line and the transfer line with dried compressed air at seven bar, serviced by Kaeser";

/// The demo's config and scenario with this test's ports, pipelines every
/// 10 s, the stuck temperature sensor of mill-a2 stuck long enough for its
/// alarm to be acknowledged, and a very long name for compressor-b1.
fn write_config(dir: &Path, mqtt: u16) -> (PathBuf, PathBuf) {
    let plant_b = std::fs::read_to_string(root().join("config/plants/plant-b.toml"))
        .unwrap()
        .replace(
            r#"name = "Compressor B1""#,
            &format!(r#"name = "{LONG_NAME}""#),
        );
    assert!(plant_b.contains(LONG_NAME), "plant-b.toml changed shape");
    std::fs::write(dir.join("plant-b.toml"), plant_b).unwrap();
    let abs = |p: &str| {
        if p == "config/plants/plant-b.toml" {
            dir.join("plant-b.toml").display().to_string()
        } else {
            root().join(p).display().to_string()
        }
    };
    // The demo's plant list and twin directory, as absolute paths.
    let with_repo_paths = |text: String, plants_line: &str| {
        assert!(
            text.contains(plants_line),
            "the demo's plant list changed shape"
        );
        text.replace(
            plants_line,
            &format!(
                r#"plants = ["{}", "{}"]"#,
                abs("config/plants/plant-a.toml"),
                abs("config/plants/plant-b.toml")
            ),
        )
        .replace(
            r#"twins = "../twins""#,
            &format!(r#"twins = "{}""#, abs("twins")),
        )
    };
    let cfg = with_repo_paths(
        std::fs::read_to_string(root().join("config/ironlake.toml")).unwrap(),
        r#"plants = ["plants/plant-a.toml", "plants/plant-b.toml"]"#,
    )
    .replace(
        r#"dir = "pipelines""#,
        &format!(r#"dir = "{}""#, abs("config/pipelines")),
    )
    .replace("interval_s = 60", "interval_s = 10")
    .replace("port = 11883", &format!("port = {mqtt}"))
    .replace("127.0.0.1:11883", &format!("127.0.0.1:{mqtt}"))
    .replace(
        r#"client_id = "ironlake""#,
        &format!(r#"client_id = "ironlake-ui-{mqtt}""#),
    );
    assert!(cfg.contains(&format!("port = {mqtt}")) && cfg.contains("interval_s = 10"));
    let sc = with_repo_paths(
        std::fs::read_to_string(root().join("simulators/demo.toml")).unwrap(),
        r#"plants = ["../config/plants/plant-a.toml", "../config/plants/plant-b.toml"]"#,
    )
    .replace("port = 11883", &format!("port = {mqtt}"))
    .replace(
        "signal = \"temperature\"\nat_s = 30\nduration_s = 60",
        "signal = \"temperature\"\nat_s = 5\nduration_s = 900",
    );
    assert!(
        sc.contains("duration_s = 900"),
        "demo scenario changed shape"
    );
    let (c, s) = (dir.join("ironlake.toml"), dir.join("demo.toml"));
    std::fs::write(&c, cfg).unwrap();
    std::fs::write(&s, sc).unwrap();
    (c, s)
}

/// The demo as a user runs it (the binary), stopped on drop.
struct Demo {
    child: Child,
}

impl Demo {
    fn start(cfg: &Path, scenario: &Path, http: u16, lake: &Path, log: &Path) -> Demo {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ironlake"))
            .args(["demo", "--config"])
            .arg(cfg)
            .arg("--scenario")
            .arg(scenario)
            .args(["--http", &format!("127.0.0.1:{http}"), "--lakehouse"])
            .arg(lake)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start ironlake demo");
        Demo { child }
    }

    /// SIGTERM, as a service manager stops it, then wait.
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn get_json(url: &str) -> Option<serde_json::Value> {
    let mut r = ureq::get(url).call().ok()?;
    r.body_mut().read_json().ok()
}

/// Wait until `f` gives a value, up to `secs`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_twin_browser_in_chromium_during_a_demo() {
    let chrome = match prerequisites() {
        Ok(c) => c,
        Err(why) => {
            assert!(
                std::env::var("IRONLAKE_REQUIRE_BROWSER").as_deref() != Ok("1"),
                "IRONLAKE_REQUIRE_BROWSER=1 but {why}"
            );
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let (mqtt, http) = (free_port(), free_port());
    let (cfg, sc) = write_config(dir.path(), mqtt);
    let lake = dir.path().join("lake");
    let log = dir.path().join("demo.log");
    let base = format!("http://127.0.0.1:{http}");
    let mut demo = Demo::start(&cfg, &sc, http, &lake, &log);
    // Ready: gold rows for plant A's current shift and the stuck sensor's alarm.
    wait_for(120, "gold.oee_shift rows in plant A's shift report", || {
        let r = get_json(&format!("{base}/api/plants/plant-a/shift-report"))?;
        (r["machines"].as_array()?.len() >= 4).then_some(())
    });
    let shots = PathBuf::from(
        std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| root().join("target").display().to_string()),
    )
    .join("ui-screenshots");
    let mut node = Command::new("node")
        .arg(root().join("tests/ui/browser.mjs"))
        .arg(&base)
        .arg(&shots)
        .arg(&chrome)
        .current_dir(root().join("tests/ui"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = node.stdin.take().unwrap();
    let stdout = BufReader::new(node.stdout.take().unwrap());
    let mut transcript = String::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        println!("{line}");
        transcript.push_str(&line);
        transcript.push('\n');
        if line == "RESTART" {
            demo.stop();
            std::thread::sleep(Duration::from_secs(2));
            demo = Demo::start(&cfg, &sc, http, &lake, &log);
            wait_for(60, "the restarted platform", || {
                get_json(&format!("{base}/api/health")).map(|_| ())
            });
            writeln!(stdin, "RESTARTED").unwrap();
        }
    }
    let status = node.wait().unwrap();
    demo.stop();
    if !status.success() {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(40).collect();
        panic!(
            "the browser test failed (screenshots in {}):\n{transcript}\n--- demo log (last lines) ---\n{}",
            shots.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let timings = std::fs::read_to_string(shots.join("timings.json")).unwrap_or_default();
    println!("timings: {timings}");
}
