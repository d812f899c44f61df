//! Getting started: `doctor` checks the installation, `config` reads and edits config.toml, `demo`
//! runs the whole loop on a sample project.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::report::{fail, strict_config, usage_error};
use crate::demo;
use crate::doctor::{self, Status};
use crate::engine::discovery::{self, Roots};
use crate::home::Home;
use crate::logging;
use crate::quality;

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// The value of SECTION.KEY (the default when the file does not set it), as TOML; nothing on
    /// stdout for a setting with no default that is not set (`engine.model`).
    Get {
        /// The setting, as SECTION.KEY (e.g. `serving.debounce_ms`).
        key: String,
    },
    /// Set SECTION.KEY to VALUE (TOML: `80`, `true`, `0.2`; otherwise a string).
    Set {
        /// The setting, as SECTION.KEY (e.g. `schedule.window`).
        key: String,
        /// Its new value.
        value: String,
    },
    /// Where config.toml is.
    Path,
}

pub fn doctor(home: &Home, json: bool) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "doctor", "info", false);
    let report = doctor::run(home);
    let healthy = if report.healthy() { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    if json {
        let checks: Vec<serde_json::Value> = report
            .checks
            .iter()
            .map(|c| {
                let status = match c.status {
                    Status::Ok => "ok",
                    Status::Warn => "warn",
                    Status::Fail => "fail",
                };
                serde_json::json!({"status": status, "what": c.what, "detail": c.detail, "fix": c.fix})
            })
            .collect();
        let version = env!("CARGO_PKG_VERSION");
        println!("{}", serde_json::json!({"version": version, "healthy": report.healthy(), "checks": checks}));
        return healthy;
    }
    println!("marunochi {}", env!("CARGO_PKG_VERSION"));
    for check in &report.checks {
        let mark = match check.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        println!("[{mark}] {}: {}", check.what, check.detail);
        if let Some(fix) = &check.fix {
            println!("       fix: {fix}");
        }
    }
    if report.healthy() {
        println!("\nmarunochi is ready.");
        ExitCode::SUCCESS
    } else {
        println!("\nSome checks failed; see `fix:` above.");
        ExitCode::FAILURE
    }
}

pub fn config(home: &Home, action: ConfigAction) -> ExitCode {
    let path = home.config_file();
    let result = match action {
        ConfigAction::Get { key } => crate::config::get(&path, &key).map(|value| match value {
            Some(value) => println!("{value}"),
            None => eprintln!("{key} is not set (it has no default)"),
        }),
        ConfigAction::Set { key, value } => crate::config::set(&path, &key, &value)
            .map(|()| println!("{key} = {}", crate::config::get(&path, &key).ok().flatten().unwrap_or(value))),
        ConfigAction::Path => {
            println!("{}", path.display());
            Ok(())
        }
    };
    result.map_or_else(usage_error, |()| ExitCode::SUCCESS)
}

pub fn demo(
    home: &Home,
    model: Option<PathBuf>,
    fallback: Option<PathBuf>,
    quick: bool,
    server: Vec<String>,
) -> ExitCode {
    let config = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let found = discovery::discover(&Roots::from_env());
    let model = match demo::choose_model(model.as_deref(), config.engine.model.as_deref(), &found, fallback.as_deref())
    {
        Ok(model) => model,
        Err(e) => return usage_error(e),
    };
    let server = if server.is_empty() { vec!["pylsp".to_owned()] } else { server };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !server[0].contains('/') && quality::lint::find_tool(&server[0], &path).is_none() {
        return usage_error(format!(
            "the language server {:?} is not on PATH: install it (`pip install python-lsp-server` \
             for pylsp) or name another after `--`",
            server[0]
        ));
    }
    let options = demo::Options {
        exe: std::env::current_exe().unwrap_or_else(|_| "marunochi".into()),
        model,
        server,
        dir: home.root().join("demo").join(crate::clock::now_ms().to_string()),
        quick,
    };
    demo::run(&options).map_or_else(|e| fail(format!("demo stopped: {e}")), |()| ExitCode::SUCCESS)
}
