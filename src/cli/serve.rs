//! The editor-facing processes: `proxy` and `lsp` (one `serve`), and the `daemon` they share.
//! A broken config must not cost the user their editor, so these report it and use the defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use super::report::{fail, say};
use crate::capture::Recorder;
use crate::config::{Config, ConfigError};
use crate::daemon::{self, DaemonOptions, Outcome};
use crate::home::Home;
use crate::logging;
use crate::proxy::{Backend, Proxy, ProxyOptions};
use crate::serving::{CaptureSink, ServingOptions};
use crate::store::Store;

/// Runs the proxy or the standalone server.
/// `ai`: `None` for a pure relay, else the `--model` given (if any).
pub fn serve(home: &Home, name: &str, verbose: bool, backend: Backend, ai: Option<Option<PathBuf>>) -> ExitCode {
    let (config, config_error) = config_or_defaults(home);
    let _log = logging::init(&home.logs_dir(), name, &config.log.level, verbose);
    if let Some(e) = config_error {
        tracing::error!("{e}; using the defaults");
        say(format!("{e}; using the defaults"));
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let ai = ai.map(|model| ServingOptions {
        home: home.clone(),
        exe: std::env::current_exe().unwrap_or_else(|_| "marunochi".into()),
        model,
        config: config.serving.clone(),
    });
    let capture = ai.as_ref().and_then(|_| match Store::open(&home.db_path()) {
        Ok(store) => {
            let window = std::time::Duration::from_secs(config.capture.correction_window_secs);
            let threshold = config.retention.survival_threshold;
            Some(Box::new(Recorder::spawn(
                store,
                session_id(),
                window,
                Box::new(crate::jobs::WriterJobs::new(threshold)),
            )) as Box<dyn CaptureSink>)
        }
        Err(e) => {
            // Suggestions still work; only their outcomes go unrecorded.
            tracing::error!("{e}");
            say(format!("not recording interactions: {e}"));
            None
        }
    });
    let proxy = Proxy::new(ProxyOptions { backend, ai, capture, config: config.proxy });
    match runtime.block_on(proxy.run()) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            fail(format!("{e:#}"))
        }
    }
}

pub fn daemon(home: &Home, verbose: bool, model: Option<PathBuf>) -> ExitCode {
    let (config, config_error) = config_or_defaults(home);
    let _log = logging::init(&home.logs_dir(), "daemon", &config.log.level, verbose);
    if let Some(e) = config_error {
        tracing::error!("{e}; using the defaults");
    }
    let options = DaemonOptions {
        home: home.clone(),
        model: crate::engine::discovery::resolve_model(model.as_deref(), config.engine.model.as_deref()),
        idle_exit: std::time::Duration::from_secs(config.daemon.idle_exit_secs),
        rollout: config.rollout.clone(),
        jobs: crate::jobs::daemon_jobs(home, &config),
    };
    match daemon::run(options) {
        Ok(Outcome::Served) => ExitCode::SUCCESS,
        Ok(Outcome::AlreadyRunning) => {
            say(format!("a daemon is already running for {}", home.root().display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            fail(e)
        }
    }
}

/// The configuration, else the defaults and the error that made us fall back to them.
fn config_or_defaults(home: &Home) -> (Config, Option<ConfigError>) {
    match Config::load(&home.config_file()) {
        Ok(config) => (config, None),
        Err(e) => (Config::default(), Some(e)),
    }
}

/// This process's editing session: the proxy's pid and start time.
fn session_id() -> String {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{:x}", std::process::id(), started.as_millis())
}
