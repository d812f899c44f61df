//! Logs go to `MARUNOCHI_HOME/logs/<command>.log`, never to stdout (stdout carries the LSP stream),
//! and to stderr only with `--verbose`. A file past 10 MiB moves to `<command>.log.1`, also while
//! the process runs.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
    let file = home::create_private_dir(logs_dir).and_then(|()| RotatingFile::open(&path, ROTATE_BYTES));
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

/// A log file that moves to `<name>.log.1` whenever it has grown past `limit`, at start and while
/// the process runs (a daemon or proxy may run for weeks).
struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    limit: u64,
    size: u64,
}

impl RotatingFile {
    fn open(path: &Path, limit: u64) -> io::Result<RotatingFile> {
        let mut log = RotatingFile { path: path.to_owned(), file: home::open_private_append(path)?, limit, size: 0 };
        log.size = log.file.metadata()?.len();
        if log.size > limit {
            log.rotate()?;
        }
        Ok(log)
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, self.path.with_extension("log.1"))?;
        self.file = home::open_private_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > self.limit {
            self.rotate()?;
        }
        let written = self.file.write(buf)?;
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_rotates_while_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.log");
        let mut log = RotatingFile::open(&path, 1000).unwrap();
        for _ in 0..50 {
            log.write_all(&[b'x'; 99]).unwrap();
            log.write_all(b"\n").unwrap();
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let previous = std::fs::metadata(path.with_extension("log.1")).unwrap().len();
        assert!(current <= 1100 && previous > 1000 && previous <= 1100, "{current} {previous}");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions()) & 0o777,
            0o600
        );
    }
}
