//! The command line, one file per command group: the platform (`demo`,
//! `run`, `simulate`, `check`), `sql`, `pipeline`, `lake`, `opcua`, `train`
//! and `models`. Shared here: the
//! `--lakehouse/--config` arguments, loading, waiting for a stop signal,
//! output that survives a closed pipe.

pub mod lake;
pub mod models;
pub mod opcua;
pub mod pipeline;
pub mod platform;
pub mod sql;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use ironlake::lake::Lakehouse;
use ironlake::platform::Config;

/// Where batch commands find the lake: `--lakehouse DIR`, or the
/// `lake.root` of `--config FILE` (default: the built-in config).
#[derive(Args, Debug, Clone)]
pub struct LakeArgs {
    /// Lakehouse root (default: `lake.root` of the config).
    #[arg(long, global = true)]
    pub lakehouse: Option<String>,
    /// Platform config (default: the one built into the binary).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

impl LakeArgs {
    /// The config named by `--config`, or the built-in one.
    pub fn load(&self) -> Result<Config> {
        load(self.config.as_ref())
    }

    /// The lakehouse named by `--lakehouse`, or by the config's `lake.root`.
    pub fn open_lake(&self) -> Result<Arc<Lakehouse>> {
        let root = match &self.lakehouse {
            Some(l) => l.clone(),
            None => self.load()?.platform.lake.root,
        };
        Ok(Arc::new(Lakehouse::open(&root)?))
    }
}

/// A config from disk, or the built-in one.
pub fn load(config: Option<&PathBuf>) -> Result<Config> {
    Ok(match config {
        Some(p) => Config::load(p)?,
        None => Config::embedded()?,
    })
}

/// Wait for `duration` seconds (forever without), or until Ctrl-C (SIGINT)
/// or SIGTERM (`docker stop`, `systemctl stop`): both stop the same clean way.
pub async fn wait(duration: Option<u64>) {
    let sleep = async {
        match duration {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending().await,
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sleep => {}
        _ = tokio::signal::ctrl_c() => eprintln!("\nstopping (interrupt): committing what is buffered and checkpointing twins ..."),
        _ = term => eprintln!("stopping (terminate): committing what is buffered and checkpointing twins ..."),
    }
}

/// A spinner on stderr while `msg` runs.
pub fn spinner(msg: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner().with_message(msg.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Print without panicking when stdout is closed early (`ironlake check | head`).
pub fn print_stdout(text: &str) {
    print_stdout_bytes(text.as_bytes());
}

/// Bytes to stdout, ignoring a closed pipe.
pub fn print_stdout_bytes(b: &[u8]) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(b);
}

/// Logs to stderr, filtered by `IRONLAKE_LOG` (default: warnings, and
/// ironlake's own info lines). The embedded broker's own log is off by
/// default: rumqttd logs every ordinary client disconnect as an error.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRONLAKE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,ironlake=info,rumqttd=off,opcua_client=error,opcua_core=error,opcua_server=error",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
