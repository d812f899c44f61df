//! Expert adapters from the command line: list, promote, roll out, check, roll back, remove and
//! their history.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::report::{configured_model, fail, model_or_usage_error, print_json, strict_config};
use crate::deploy::{Entry, Registry, RolledBack};
use crate::home::{Home, Language};
use crate::logging;
use crate::store::Stage;
use crate::train;

#[derive(Subcommand, Debug)]
pub enum AdaptersAction {
    /// Every version per language: state, method, the gate's verdict.
    List {
        /// Only this language (default: every language).
        #[arg(long, value_name = "L")]
        language: Option<Language>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve VERSION (default: the newest candidate that passed the gate); the active one retires.
    Promote {
        /// The language whose adapters these are (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: Language,
        /// The version to serve, as `adapters list` names it (e.g. v3).
        version: Option<String>,
        /// Promote even without a passed gate.
        #[arg(long)]
        force: bool,
        /// The base model being served (default: `[engine] model`, else the best model found).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,
    },
    /// Start VERSION's rollout (default: the newest candidate that passed the gate): shadow, then
    /// canary, then active, each step taken by the daemon's checks on your outcomes. Scheduled
    /// training does this itself after the gate.
    Rollout {
        /// The language whose adapters these are (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: Language,
        /// The version to roll out, as `adapters list` names it (e.g. v3).
        version: Option<String>,
        /// Start at the canary stage.
        #[arg(long)]
        skip_shadow: bool,
        /// The base model being served (default: `[engine] model`, else the best model found).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,
    },
    /// Run the rollout checks now (the daemon runs them every `[rollout] check_every_secs`):
    /// judge shadow samples, move versions on, roll back what does worse.
    Check,
    /// Stop the rollout in progress (the canary, else the shadow); with none, back to the version
    /// the active one replaced, or to the base model.
    Rollback {
        /// The language whose adapters these are (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: Language,
    },
    /// Delete a version that is not active.
    Remove {
        /// The language whose adapters these are (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: Language,
        /// The version to delete, as `adapters list` names it (e.g. v3).
        version: String,
    },
    /// Enter a PEFT LoRA/DoRA adapter trained elsewhere (TRL, Axolotl, a PEFT script: a directory
    /// with adapter_config.json and adapter_model.safetensors) as a candidate. Its settings and every
    /// tensor's shape are checked against the base model; then `marunochi eval` and `adapters
    /// rollout` treat it like an adapter trained here.
    Import {
        /// The adapter directory (what `save_pretrained` wrote).
        dir: PathBuf,
        /// The language whose adapters these are (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: Language,
        /// The base model it must fit (default: `[engine] model`, else the best model found).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,
    },
    /// What happened to a language's adapters, and why.
    History {
        /// The language whose adapters these are (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: Language,
    },
}

pub fn adapters(home: &Home, action: AdaptersAction) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "adapters", "info", false);
    let registry = Registry::new(&home.adapters_dir(), &home.db_path());
    let result = match action {
        AdaptersAction::List { language, json } => registry.list(language.as_deref()).map(|entries| {
            if json {
                print_json(&entries);
            } else if entries.is_empty() {
                println!("no adapters yet (`marunochi train --language L` makes one)");
            } else {
                print_entries(&entries);
            }
        }),
        AdaptersAction::Promote { language, version, force, model } => {
            let fingerprint = match served_fingerprint(home, model.as_deref()) {
                Ok(f) => f,
                Err(code) => return code,
            };
            registry
                .promote(&language, version.as_deref(), &fingerprint, force)
                .map(|v| println!("{language}: {v} is active; serving uses it from the next keystroke"))
        }
        AdaptersAction::Rollout { language, version, skip_shadow, model } => {
            let fingerprint = match served_fingerprint(home, model.as_deref()) {
                Ok(f) => f,
                Err(code) => return code,
            };
            registry.start_rollout(&language, version.as_deref(), &fingerprint, skip_shadow).map(|v| {
                let stage = if skip_shadow { Stage::Canary } else { Stage::Shadow };
                println!("{language}: {v} is the {stage}; `marunochi adapters list` shows how it does")
            })
        }
        AdaptersAction::Check => return check(home),
        AdaptersAction::Rollback { language } => {
            registry.roll_back_newest(&language, "rolled back by the user").map(|done| match done {
                RolledBack::Rollout { stage, version } => println!("{language}: the {stage} {version} is rolled back"),
                RolledBack::Active { restored: Some(v) } => println!("{language}: back to {v}"),
                RolledBack::Active { restored: None } => println!("{language}: back to the base model"),
            })
        }
        AdaptersAction::Remove { language, version } => {
            registry.remove(&language, &version).map(|()| println!("{language}: {version} removed"))
        }
        AdaptersAction::Import { dir, language, model } => {
            let configured = configured_model(home);
            let model = match model_or_usage_error(model.as_deref(), configured.as_deref()) {
                Ok(model) => model,
                Err(code) => return code,
            };
            registry.import(&language, &dir, &model).map(|imported| {
                println!(
                    "{language}: {} imported from {} ({}, rank {}, {}): a candidate",
                    imported.version,
                    dir.display(),
                    imported.method,
                    imported.rank,
                    imported.target_modules.join(", ")
                );
                if let Some(name) = &imported.other_base_name {
                    println!(
                        "note: it names {name} as its base; every tensor fits {}, so it was taken",
                        model.display()
                    );
                }
                println!(
                    "next: `marunochi eval --language {language} --adapter {} --heldout HELDOUT.jsonl`, then \
                     `marunochi adapters rollout --language {language} {}`",
                    home.adapters_dir().join(language.as_str()).join(&imported.version).display(),
                    imported.version
                );
            })
        }
        AdaptersAction::History { language } => registry.history(&language).map(|events| {
            for e in events {
                println!(
                    "{}  {:<5} {} -> {}: {}",
                    e.at,
                    e.version,
                    e.from.map_or("new", |s| s.as_str()),
                    e.to,
                    e.reason
                );
            }
        }),
    };
    result.map_or_else(fail, |()| ExitCode::SUCCESS)
}

fn print_entries(entries: &[Entry]) {
    for e in entries {
        let gate = match (e.gate, &e.gate_verdict) {
            (Some(true), Some(v)) => format!("gate passed: {v}"),
            (Some(false), Some(v)) => format!("gate failed: {v}"),
            (Some(passed), None) => format!("gate {}", if passed { "passed" } else { "failed" }),
            (None, _) => "not judged yet".to_owned(),
        };
        let method = e.method.as_deref().unwrap_or("?");
        println!("{:<12} {:<5} {:<12} {method:<6} {}  {gate}", e.language, e.version, e.state, e.created_at);
    }
}

/// `adapters check`: one round of the daemon's rollout checks.
fn check(home: &Home) -> ExitCode {
    let config = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let report = match crate::deploy::rollout::tick(home, &config) {
        Ok(report) => report,
        Err(e) => return fail(e),
    };
    for step in &report.steps {
        println!("{step}");
    }
    for wait in &report.waiting {
        println!("{} {}: stays {} ({})", wait.language, wait.version, wait.from, wait.reason);
    }
    if report.steps.is_empty() && report.waiting.is_empty() {
        println!("no rollout in progress and no active adapter to watch");
    }
    ExitCode::SUCCESS
}

/// The fingerprint of the base model being served (`--model`, else the configured or found one),
/// which adapters must have been trained on.
fn served_fingerprint(home: &Home, model: Option<&Path>) -> Result<String, ExitCode> {
    let configured = configured_model(home);
    let model = model_or_usage_error(model, configured.as_deref())?;
    train::fingerprint(&model).map_err(|e| fail(format!("{}: {e}", model.display())))
}
