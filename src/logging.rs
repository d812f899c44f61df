//! Logs go to `MARUNOCHI_HOME/logs/<command>.log`, never to stdout (stdout carries the LSP stream),
//! and to stderr only with `--verbose`.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::home;

/// A log file grows to this size before it is rotated to `<name>.log.1`.
const ROTATE_BYTES: u64 = 10 * 1024 * 1024;
pub const LOG_ENV: &str = "MARUNOCHI_LOG";

/// Keep the guard alive until the process ends: dropping it flushes the log.
pub struct LogGuard {
    _flush_on_drop: Option<WorkerGuard>,
}

/// Starts logging for one command. `level` is the configured default; `MARUNOCHI_LOG` overrides it.
/// If the log file cannot be opened, logging goes to stderr alone and says why.
pub fn init(logs_dir: &Path, command: &str, level: &str, verbose: bool) -> LogGuard {
    let filter = || EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(level));
    let path = logs_dir.join(format!("{command}.log"));
    let file = home::create_private_dir(logs_dir).and_then(|()| {
        rotate(&path);
        home::open_private_append(&path)
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter()).with_ansi(false);
    match file {
        Ok(file) => {
            let (writer, guard) = tracing_appender::non_blocking(file);
            if verbose {
                builder.with_writer(writer.and(std::io::stderr)).init();
            } else {
                builder.with_writer(writer).init();
            }
            tracing::info!(pid = std::process::id(), version = env!("CARGO_PKG_VERSION"), "{command} starting");
            LogGuard { _flush_on_drop: Some(guard) }
        }
        Err(error) => {
            builder.with_writer(std::io::stderr).init();
            tracing::warn!(%error, path = %path.display(), "cannot open the log file; logging to stderr");
            LogGuard { _flush_on_drop: None }
        }
    }
}

fn rotate(path: &Path) {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > ROTATE_BYTES) {
        let _ = std::fs::rename(path, path.with_extension("log.1"));
    }
}
