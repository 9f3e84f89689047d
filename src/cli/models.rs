//! `ironlake train` (with a progress bar) and `ironlake models ...`: the
//! model registry from the command line.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use ironlake::lake::Lakehouse;
use ironlake::ml::model::Task;
use ironlake::ml::registry::Registry;
use ironlake::ml::train::{Run, TrainParams};
use ironlake::platform::Config;

/// `ironlake train` arguments.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Model name: `<twin type>_failure` or `<twin type>_rul` on the built-in
    /// features (gold.features), or any name with --table. Left out with
    /// --all: every built-in model.
    #[arg(long)]
    pub model: Option<String>,
    /// Train every built-in model of the config.
    #[arg(long, conflicts_with = "model")]
    pub all: bool,
    /// Failure models: label "a failure starts within this many plant hours".
    #[arg(long, default_value_t = ironlake::ml::HORIZON_H)]
    pub horizon_h: f64,
    /// Alerts count as in time when at least this many plant hours ahead.
    #[arg(long, default_value_t = 8.0)]
    pub min_lead_h: f64,
    /// Trees of the random forest.
    #[arg(long, default_value_t = 48)]
    pub trees: usize,
    #[arg(long, default_value_t = 9)]
    pub max_depth: u16,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Make the new version the champion (served by the twins at once).
    #[arg(long)]
    pub promote: bool,
    /// Train on any lake table instead (`silver.my_table`).
    #[arg(long, requires_all = ["label", "features", "order_by"])]
    pub table: Option<String>,
    /// --table: the column to predict.
    #[arg(long)]
    pub label: Option<String>,
    /// --table: input columns, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// --table: the unit a row belongs to (a machine, a batch).
    #[arg(long)]
    pub group_by: Option<String>,
    /// --table: the time (or sequence) column the split follows.
    #[arg(long)]
    pub order_by: Option<String>,
    /// --table: what the label is.
    #[arg(long, value_enum, default_value_t = TaskArg::Regression)]
    pub task: TaskArg,
    #[command(flatten)]
    pub lake: super::LakeArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TaskArg {
    Classification,
    Regression,
}

/// `ironlake models ...`.
#[derive(Subcommand, Debug)]
pub enum ModelsOp {
    /// Registered models with their versions, aliases and headline metrics.
    List,
    /// One model: versions, stages, aliases, lineage; or one version's run.
    Show {
        name: String,
        /// A version (`3`), an alias (`champion`) or `latest`.
        version: Option<String>,
    },
    /// Point an alias at a version (default alias: champion). The twins
    /// serve a new champion within `[models] reload_s`, without a restart.
    Promote {
        name: String,
        version: String,
        #[arg(long, default_value = "champion")]
        alias: String,
    },
    /// Archive a version (it loses its aliases; no twin serves it).
    Archive { name: String, version: String },
    /// Check drift now: the served champions' scored rows of the last
    /// WINDOW seconds (gold.predictions) against their training data, into
    /// gold.drift; prints what moved.
    Drift {
        #[arg(long, default_value_t = 3600)]
        window_s: u64,
        /// Lakehouse root (default: `lake.root` of the config).
        #[arg(long)]
        lakehouse: Option<String>,
    },
    /// Score the failure models' past live predictions of the last DAYS
    /// days against the failures that followed (labels known), into
    /// gold.model_quality; prints precision and recall per model, version
    /// and role (champion beside challenger).
    Quality {
        #[arg(long, default_value_t = 14)]
        days: u64,
        /// Alerts count as in time when at least this many plant hours ahead.
        #[arg(long, default_value_t = 8.0)]
        min_lead_h: f64,
        /// Lakehouse root (default: `lake.root` of the config).
        #[arg(long)]
        lakehouse: Option<String>,
    },
    /// Print a version's model card (Markdown).
    Card {
        name: String,
        #[arg(default_value = "champion")]
        version: String,
    },
}

/// `--registry DIR` or the config's `[models] registry`.
#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Model registry directory (default: `[models] registry` of the config).
    #[arg(long, global = true)]
    pub registry: Option<PathBuf>,
}

fn registry(cfg: &Config, over: Option<&PathBuf>) -> Registry {
    match over {
        Some(p) => Registry::open(p),
        None => Registry::open(&cfg.platform.models.registry),
    }
}

fn bar() -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} trees ({elapsed})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    )
}

fn print_run(run: &Run) {
    println!(
        "  run {} ({:.1} s, {})",
        run.run_id, run.duration_s, run.algorithm
    );
    for (k, v) in &run.periods {
        println!(
            "  {k:<11} {v} ({} rows)",
            run.rows.get(k).copied().unwrap_or(0)
        );
    }
    let m = &run.metrics;
    let g = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    if m.contains_key("pr_auc") {
        println!(
            "  test: ROC AUC {:.3}, PR AUC {:.3}; alerts at >= {:.2}: precision {:.2}, recall {:.2} ({} of {} failures flagged >= {} h ahead), median lead {:.1} h, unplanned downtime avoidable {:.0} %",
            g("roc_auc"),
            g("pr_auc"),
            g("threshold"),
            g("alert_precision"),
            g("alert_recall"),
            g("failures_caught"),
            g("failures"),
            run.params.min_lead_h,
            g("lead_h_median"),
            g("downtime_avoided_share") * 100.0
        );
    } else if m.contains_key("tolerance_kw") {
        println!(
            "  test: MAE {:.2} kW, RMSE {:.2} kW (waste included); tolerance {:.2} kW; waste found: precision {:.2}, recall {:.2}, {:.0} of {:.0} kWh",
            g("mae"),
            g("rmse"),
            g("tolerance_kw"),
            g("waste_precision"),
            g("waste_recall"),
            g("waste_kwh_estimated"),
            g("waste_kwh_true")
        );
    } else {
        println!(
            "  test: RMSE {:.1} h, MAE {:.1} h, PHM score {:.1} per row (baseline RMSE {:.1} h)",
            g("rmse"),
            g("mae"),
            g("phm_mean"),
            g("baseline_rmse")
        );
    }
    for c in run.compared.iter().skip(1) {
        let t = &c.test;
        if let Some(a) = t.get("alerts").filter(|a| !a.is_null()) {
            println!(
                "  vs {}: PR AUC {:.3}; alert precision {:.2}, recall {:.2}",
                c.name,
                t["pr_auc"].as_f64().unwrap_or(f64::NAN),
                a["precision"].as_f64().unwrap_or(f64::NAN),
                a["recall"].as_f64().unwrap_or(f64::NAN)
            );
        } else if t.get("kwh_true").is_some() {
            let f = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "  {}: precision {:.2}, recall {:.2} at {:.2} kW ({:.0} of {:.0} kWh)",
                c.name,
                f("precision"),
                f("recall"),
                f("tolerance_kw"),
                f("kwh_estimated"),
                f("kwh_true")
            );
        } else {
            println!(
                "  vs {}: RMSE {:.2}, MAE {:.2}",
                c.name,
                t["rmse"].as_f64().unwrap_or(f64::NAN),
                t["mae"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}

/// `ironlake train`.
pub async fn train(a: TrainArgs, reg: RegistryArgs) -> Result<()> {
    let cfg = a.lake.load()?;
    let lake: Arc<Lakehouse> = a.lake.open_lake()?;
    let registry = registry(&cfg, reg.registry.as_ref());
    let params = TrainParams {
        horizon_h: Some(a.horizon_h),
        min_lead_h: a.min_lead_h,
        trees: a.trees,
        max_depth: a.max_depth,
        seed: a.seed,
        ..Default::default()
    };
    let mut jobs: Vec<(String, Option<ironlake::ml::model::Model>, Option<Run>)> = Vec::new();
    if let Some(table) = &a.table {
        let name = a.model.clone().context("--table needs --model NAME")?;
        let ds = ironlake::ml::dataset::from_table(
            &lake,
            table,
            a.label.as_deref().unwrap_or_default(),
            &a.features,
            a.group_by.as_deref(),
            a.order_by.as_deref().unwrap_or_default(),
        )
        .await?;
        let p = TrainParams {
            task: match a.task {
                TaskArg::Classification => Task::Classification,
                TaskArg::Regression => Task::Regression,
            },
            horizon_h: None,
            ..params.clone()
        };
        let pb = bar();
        pb.set_message(format!("training {name} on {table} ({} rows)", ds.rows()));
        let (n2, p2) = (name.clone(), p.clone());
        let pb2 = pb.clone();
        let (mut m, run) =
            tokio::task::spawn_blocking(move || ironlake::ml::train::train(&ds, &n2, &p2, &pb2))
                .await??;
        pb.finish_and_clear();
        m.target = a.label.clone().unwrap_or_default();
        jobs.push((name, Some(m), Some(run)));
    } else {
        let names = match (&a.model, a.all) {
            (Some(n), _) => vec![n.clone()],
            (None, true) => ironlake::ml::builtin_names(&cfg.model),
            (None, false) => bail!(
                "name a model with --model (built-in: {}) or use --all",
                ironlake::ml::builtin_names(&cfg.model).join(", ")
            ),
        };
        for name in names {
            let pb = bar();
            pb.set_message(format!("training {name}"));
            let (m, run, ds) =
                ironlake::ml::train_builtin(&lake, &cfg.model, &name, params.clone(), &pb).await?;
            pb.finish_and_clear();
            println!(
                "{name}: {} rows of {} machines, {} failures in the history",
                ds.rows(),
                ds.groups.len(),
                ds.failures.iter().map(|f| f.len()).sum::<usize>()
            );
            jobs.push((name, Some(m), Some(run)));
        }
    }
    for (name, m, run) in jobs {
        let (m, run) = (m.expect("trained"), run.expect("trained"));
        let card = ironlake::ml::card(&m, &run);
        let v = registry.register(&m, &run, &card)?;
        println!("registered {name} v{v} in {}", registry.root().display());
        print_run(&run);
        if a.promote {
            registry.set_alias(&name, "champion", v)?;
            println!("  {name} v{v} is the champion");
        }
    }
    Ok(())
}

/// `ironlake models ...`.
pub async fn models(op: ModelsOp, cfg_path: Option<&PathBuf>, reg: RegistryArgs) -> Result<()> {
    let cfg = super::load(cfg_path)?;
    let r = registry(&cfg, reg.registry.as_ref());
    match op {
        ModelsOp::List => {
            let all = r.list()?;
            if all.is_empty() {
                println!(
                    "no models in {} (train one: ironlake train --model cnc_mill_failure)",
                    r.root().display()
                );
            }
            for m in all {
                let aliases: Vec<String> =
                    m.aliases.iter().map(|(a, v)| format!("{a}=v{v}")).collect();
                println!(
                    "{:<20} {:<14} {:<20} {} versions  {}",
                    m.name,
                    m.task,
                    m.target,
                    m.versions.len(),
                    aliases.join(" ")
                );
            }
        }
        ModelsOp::Show { name, version } => match version {
            None => {
                let m = r.get(&name)?;
                println!("{} ({} of {})", m.name, m.task, m.target);
                for v in &m.versions {
                    let al: Vec<&str> = m
                        .aliases
                        .iter()
                        .filter(|(_, x)| **x == v.version)
                        .map(|(a, _)| a.as_str())
                        .collect();
                    let key = if m.task == "classification" {
                        "pr_auc"
                    } else {
                        "rmse"
                    };
                    println!(
                        "  v{:<3} {:<10} {:<20} {key} {:.3}  {}  from {}",
                        v.version,
                        v.stage.as_str(),
                        v.algorithm,
                        v.metrics.get(key).copied().unwrap_or(f64::NAN),
                        al.join(","),
                        v.sources
                            .iter()
                            .map(|(t, n)| format!(
                                "{t}@{}",
                                n.map(|n| n.to_string()).unwrap_or("?".into())
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
            Some(w) => {
                let v = r.resolve(&name, &w)?;
                let run = r.run(&name, v)?;
                println!("{name} v{v}");
                print_run(&run);
            }
        },
        ModelsOp::Promote {
            name,
            version,
            alias,
        } => {
            let v = r.resolve(&name, &version)?;
            r.set_alias(&name, &alias, v)?;
            println!("{name}: {alias} -> v{v}");
        }
        ModelsOp::Archive { name, version } => {
            let v = r.resolve(&name, &version)?;
            r.archive(&name, v)?;
            println!("{name} v{v} archived");
        }
        ModelsOp::Drift {
            window_s,
            lakehouse,
        } => {
            let root = lakehouse.unwrap_or_else(|| cfg.platform.lake.root.clone());
            let lake = Arc::new(Lakehouse::open(&root)?);
            let rep = ironlake::ml::drift::check(
                &lake,
                &r,
                window_s as i64 * 1000,
                ironlake::time::now_ms(),
                6,
            )
            .await?;
            if rep.rows == 0 {
                println!("no champion scores in gold.predictions in the last {window_s} s");
            } else {
                println!("{} drift rows written to gold.drift", rep.rows);
                for a in &rep.alerts {
                    println!("  {a}");
                }
                if rep.alerts.is_empty() {
                    println!(
                        "  no input or prediction over PSI {}",
                        ironlake::ml::drift::PSI_ALERT
                    );
                }
            }
        }
        ModelsOp::Quality {
            days,
            min_lead_h,
            lakehouse,
        } => {
            let root = lakehouse.unwrap_or_else(|| cfg.platform.lake.root.clone());
            let lake = Arc::new(Lakehouse::open(&root)?);
            let rep = ironlake::ml::quality::check(
                &lake,
                &r,
                &cfg.model,
                days as i64,
                ironlake::time::now_ms(),
                min_lead_h,
            )
            .await?;
            if rep.rows.is_empty() {
                println!("no failure-model scores with known labels in the last {days} days");
            }
            let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.2}"));
            for q in &rep.rows {
                println!(
                    "{} {} v{} {:<10} rows {:>6}  precision {}  recall {}  alerts {}/{} true  failures {}/{} caught",
                    q.day,
                    q.model,
                    q.version,
                    q.role,
                    q.rows,
                    f(q.precision),
                    f(q.recall),
                    q.true_alerts,
                    q.alerts,
                    q.caught,
                    q.failures
                );
            }
        }
        ModelsOp::Card { name, version } => {
            let v = r.resolve(&name, &version)?;
            super::print_stdout(&r.card(&name, v)?);
        }
    }
    Ok(())
}
