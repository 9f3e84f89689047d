//! `ironlake bench landing`: the landing folder end to end. A telemetry
//! file made by `../shared/bench/gen_telemetry.py` (the peers' data set:
//! wide rows of 5 signals) is dropped into a watched folder of a running
//! platform; the clock runs from the drop until every slice is committed
//! to bronze, silver and quarantine (the source's manifest says done).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;

use crate::assets::TwinType;
use crate::config::{parse_toml, PlantFile};
use crate::connectors::files::FilesConnector;
use crate::platform::{Config, Platform, Probes};

/// The options of `bench landing`.
#[derive(clap::Args, Debug)]
pub struct LandingOpts {
    /// Folder written by `gen_telemetry.py --jsonl --csv` (telemetry.parquet,
    /// telemetry.jsonl, telemetry.csv).
    #[arg(long)]
    pub data: PathBuf,
    /// Formats to measure, each into a fresh lakehouse.
    #[arg(long, value_delimiter = ',', default_value = "jsonl,csv,parquet")]
    pub formats: Vec<String>,
    /// Slice size (the source's `chunk_mb`).
    #[arg(long, default_value_t = 64)]
    pub chunk_mb: u64,
    /// Lakehouse directory (default: a temporary directory, removed after).
    #[arg(long)]
    pub lakehouse: Option<String>,
}

const SIGNALS: [(&str, f64, f64); 5] = [
    ("temperature_c", -40.0, 200.0),
    ("vibration_mm_s", 0.0, 100.0),
    ("current_a", 0.0, 1000.0),
    ("power_kw", 0.0, 1000.0),
    ("spindle_rpm", 0.0, 30000.0),
];

fn twin() -> Result<TwinType> {
    let mut t = String::from("kind = \"telemetry5\"\n");
    for (s, lo, hi) in SIGNALS {
        t += &format!("[[signals]]\nname = \"{s}\"\ntype = \"float\"\nmin = {lo}\nmax = {hi}\n");
    }
    Ok(TwinType::from_toml(&t, "telemetry5")?)
}

/// (plant, line, machine) of every machine in the data set.
fn machines(data: &std::path::Path) -> Result<BTreeSet<(String, String, String)>> {
    let batches = super::peers::read_parquet(&data.join("telemetry.parquet"), 2)?;
    let mut out = BTreeSet::new();
    for b in &batches {
        let col = |n: &str| -> Result<_> {
            let c = b.column_by_name(n).context("telemetry.parquet column")?;
            Ok(cast(c, &DataType::Utf8)?)
        };
        let (p, l, m) = (col("plant")?, col("line")?, col("machine_id")?);
        let (p, l, m) = (
            p.as_string::<i32>(),
            l.as_string::<i32>(),
            m.as_string::<i32>(),
        );
        let mut seen = HashMap::new();
        for i in 0..b.num_rows() {
            if m.is_null(i) {
                continue;
            }
            seen.entry(m.value(i))
                .or_insert((p.value(i).to_string(), l.value(i).to_string()));
        }
        for (m, (p, l)) in seen {
            out.insert((p, l, m.to_string()));
        }
    }
    Ok(out)
}

fn config(
    lake: &str,
    landing: &std::path::Path,
    format: &str,
    chunk_mb: u64,
    ms: &BTreeSet<(String, String, String)>,
) -> Result<Config> {
    let mut plants: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for (p, l, m) in ms {
        plants.entry(p).or_default().push((l, m));
    }
    let mut files = Vec::new();
    for (p, list) in &plants {
        let mut t = format!("[plant]\nid = \"{p}\"\n[[areas]]\nid = \"a\"\n");
        let lines: BTreeSet<&str> = list.iter().map(|x| x.0).collect();
        // Line ids are global: the data's repeat in every plant.
        for l in lines {
            t += &format!("[[lines]]\nid = \"{p}-{l}\"\narea = \"a\"\n");
        }
        for (l, m) in list {
            t += &format!("[[machines]]\nid = \"{m}\"\nline = \"{p}-{l}\"\ntype = \"telemetry5\"\nsource = {{ protocol = \"files\" }}\n");
        }
        let pf: PlantFile = parse_toml(&t, "bench-plant")?;
        files.push((format!("{p}.toml"), pf));
    }
    let mut twins = HashMap::new();
    twins.insert("telemetry5".to_string(), Arc::new(twin()?));
    let mut platform = super::bench_platform(lake)?;
    platform.lake.compact_interval_s = 0;
    let asset = if format == "jsonl" {
        "machine"
    } else {
        "machine_id"
    };
    let section: toml::Table = toml::from_str(&format!(
        "[[sources]]\nname = \"bench\"\npath = \"{}\"\nformat = \"{format}\"\nlayout = \"wide\"\nasset = \"{asset}\"\nignore = [\"plant\", \"line\"]\nsettle_ms = 0\npoll_ms = 20\nchunk_mb = {chunk_mb}\ntwin_horizon_s = 0\n",
        landing.display()
    ))?;
    platform
        .connectors
        .insert("files".into(), toml::Value::Table(section));
    Ok(Config::from_parts(platform, twins, files)?)
}

/// Run the landing benchmark.
pub async fn run(o: LandingOpts) -> Result<()> {
    let ms = machines(&o.data)?;
    println!(
        "bench landing: {} machines, slices of {} MiB, {} cores",
        ms.len(),
        o.chunk_mb,
        rayon::current_num_threads()
    );
    println!(
        "{:<8} {:>10} {:>9} {:>8} {:>12} {:>12} {:>10} {:>11}",
        "format", "rows", "MB", "seconds", "rows/s", "readings/s", "MB/s", "quarantined"
    );
    for format in &o.formats {
        let file = match format.as_str() {
            "jsonl" => "telemetry.jsonl",
            "csv" => "telemetry.csv",
            "parquet" => "telemetry.parquet",
            f => bail!("unknown format `{f}` (jsonl, csv, parquet)"),
        };
        let src = o.data.join(file);
        if !src.exists() {
            bail!(
                "{} is missing (gen_telemetry.py --jsonl --csv writes it)",
                src.display()
            );
        }
        let lake = super::tempdir_for(o.lakehouse.clone().map(|p| format!("{p}/{format}")))?;
        let landing = PathBuf::from(&lake.path).join("_landing_in");
        std::fs::create_dir_all(&landing)?;
        let cfg = config(&lake.path, &landing, format, o.chunk_mb, &ms)?;
        let platform = Platform::start(cfg.clone(), Probes::default()).await?;
        let files = cfg
            .connectors
            .get::<FilesConnector>()
            .context("files connector")?;
        let bytes = std::fs::metadata(&src)?.len();
        // Hard link (or copy) under a hidden name, then rename: one drop.
        let hidden = landing.join(format!(".{file}"));
        if std::fs::hard_link(&src, &hidden).is_err() {
            std::fs::copy(&src, &hidden)?;
        }
        let t = Instant::now();
        std::fs::rename(&hidden, landing.join(file))?;
        loop {
            let st = files.status();
            if let Some(s) = st.first() {
                if s.files_done >= 1 {
                    break;
                }
                if s.state == "failed" {
                    bail!("landing failed: {:?}", s.last_error);
                }
            }
            if t.elapsed() > Duration::from_secs(3600) {
                bail!("not done after an hour");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let secs = t.elapsed().as_secs_f64();
        let rows = files.status()[0].rows;
        let sql = crate::query::SqlEngine::new(platform.lake.clone());
        let n = |q: &'static str| {
            let sql = &sql;
            async move {
                sql.query(q)
                    .await
                    .map(|r| crate::lake::read::scalar_i64(&r.batches).unwrap_or(0))
            }
        };
        let silver = n("SELECT count(*) FROM silver.readings").await?;
        let quarantined = n("SELECT count(*) FROM silver.quarantine").await?;
        platform.stop().await;
        println!(
            "{:<8} {:>10} {:>9.0} {:>8.2} {:>12.0} {:>12.0} {:>10.0} {:>11}",
            format,
            rows,
            bytes as f64 / 1e6,
            secs,
            rows as f64 / secs,
            silver as f64 / secs,
            bytes as f64 / 1e6 / secs,
            quarantined
        );
    }
    Ok(())
}
