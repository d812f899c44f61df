//! `marunochi train`: one expert LoRA adapter per language, learned on this machine from the
//! curated examples (`curate/`). Entry: [`train`].
//!
//! The base model is loaded by the engine and never modified; training adds low-rank updates
//! `(α/r)·B·A` to all seven projections of every block (`model.rs`), keeps the base frozen behind
//! ops whose backward only produces input gradients (`frozen.rs`) — dense F32 for LoRA, 4-bit for
//! QLoRA — and optimises with AdamW on a cosine schedule (`optim.rs`). The loss is the examples'
//! weighted mean negative log-likelihood of the completion tokens only (the prompt is context).
//!
//! A run is reproducible from its seed: data order, LoRA initialisation and dropout masks are all
//! drawn from it per epoch/step, so a checkpoint (adapter, optimizer moments, step) resumes
//! bit-for-bit. The result is written atomically in PEFT layout to
//! `adapters/<language>/v<N>/` with a `marunochi.json` describing base, data and losses.

mod adapter;
mod checkpoint;
mod checks;
mod data;
mod files;
mod frozen;
#[cfg(test)]
mod gradcheck;
mod model;
mod optim;
mod preference;
mod speed;
mod stages;
mod tt;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::curate::{Example, KtoExample};
use crate::engine::lora::Projection;
use crate::engine::{Engine, EngineError, LoadOptions, ModelInfo};
use crate::home::Language;

use adapter::Adapter;
use checkpoint::State;
pub use checks::{Check, Cooldown, Judged};
use data::{Encoder, Weighted};
pub use files::{fingerprint, interrupted};
pub use model::BaseWeights;
use model::{Base, Dropout, Lora};
use optim::{AdamW, Hyper};
pub use speed::clock_text;
pub use stages::StageKind;

/// Held-out examples scored before and after training (each is a forward pass).
const HELDOUT_LIMIT: usize = 32;
/// The validation split `curate` writes (ARCHITECTURE.md, "Training").
const VALIDATION_FILE: &str = "validation.jsonl";
/// A budget is planned at this share of what the measured speed allows: updates vary with their
/// examples' lengths, and the machine with its other work.
const PLAN_MARGIN: f64 = 0.9;

/// What a run learns and how. Stored in checkpoints: a resumed run uses the checkpoint's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Optimizer updates of the whole run, shared among the stages in proportion to their
    /// passes over the data (SFT takes the rest); `None`: `epochs` passes in every stage.
    pub steps: Option<usize>,
    /// Updates of the SFT stage alone (the preference stages planned from their data).
    #[serde(default)]
    pub sft_steps: Option<usize>,
    /// Updates of the stages after SFT together (KTO, DPO, reward), shared in proportion to
    /// their passes over the data: variants of those stages compared at equal updates.
    #[serde(default)]
    pub after_sft_steps: Option<usize>,
    pub epochs: usize,
    /// Examples per update.
    pub batch: usize,
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    /// Save a checkpoint every this many updates (0: only when stopped).
    pub checkpoint_every: usize,
    /// Check the adapter on the validation split and general code every this many SFT updates
    /// (0: never; `checks.rs`), and stop SFT after `patience` checks without a better validation
    /// loss or once the general-code loss rose by more than `nll_rise`; the stages after SFT are
    /// measured at their start and end and undone when they harm (`checks::harm`).
    #[serde(default)]
    pub validate_every: usize,
    #[serde(default)]
    pub patience: usize,
    #[serde(default)]
    pub nll_rise: f64,
    /// When the checks stop SFT early: this share of the kept check's updates more, from its
    /// adapter, the learning rate falling to zero (`checks::Cooldown`; 0: none).
    #[serde(default)]
    pub cooldown: f64,
    /// Keep the frozen base 4-bit (QLoRA) instead of dense F32 (LoRA).
    pub qlora: bool,
    /// Recompute each layer in the backward pass instead of keeping every activation.
    pub gradient_checkpointing: bool,
    pub max_prompt_tokens: usize,
    pub max_target_tokens: usize,
    /// Run the KTO and DPO stages after SFT when there is enough preference data.
    pub preference: bool,
    /// Learning rate of the preference stages.
    pub preference_lr: f64,
    /// β of the KTO and DPO losses.
    pub beta: f64,
    /// Run the reward stage (RLOO on the outcomes of shown suggestions) after the others.
    #[serde(default)]
    pub reward: bool,
    /// DoRA: learn a magnitude per output row besides the low-rank direction (QDoRA with `qlora`).
    pub dora: bool,
    /// TT-LoRA: each update's A and B contracted from tensor-train cores of this rank (`tt.rs`).
    #[serde(default)]
    pub tt_rank: Option<usize>,
}

impl Settings {
    /// The `[train]` section of config.toml, with no step limit and seed 0.
    pub fn from_config(c: &crate::config::TrainConfig) -> Settings {
        Settings {
            steps: None,
            sft_steps: None,
            after_sft_steps: None,
            epochs: c.epochs,
            batch: c.batch,
            rank: c.rank,
            alpha: c.alpha,
            dropout: c.dropout,
            lr: if c.tt_lora { c.tt_lr } else { c.lr },
            warmup_ratio: crate::config::TrainConfig::WARMUP_RATIO,
            weight_decay: crate::config::TrainConfig::WEIGHT_DECAY,
            max_grad_norm: crate::config::TrainConfig::MAX_GRAD_NORM,
            seed: 0,
            checkpoint_every: c.checkpoint_every,
            validate_every: c.validate_every,
            patience: c.patience,
            cooldown: c.cooldown,
            nll_rise: crate::config::EvalConfig::default().nll_rise,
            qlora: c.qlora,
            gradient_checkpointing: c.gradient_checkpointing,
            max_prompt_tokens: c.max_prompt_tokens,
            max_target_tokens: c.max_target_tokens,
            preference: c.preference,
            preference_lr: c.preference_lr,
            beta: c.beta,
            reward: c.reward,
            dora: false,
            tt_rank: c.tt_lora.then_some(c.tt_rank),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings::from_config(&crate::config::TrainConfig::default())
    }
}

/// Whether to continue an interrupted run of this language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new run; refused while an interrupted one is waiting (so its work is not thrown away
    /// by accident).
    New,
    /// Continue the interrupted run from its last checkpoint.
    Resume,
    /// Discard an interrupted run and start over.
    Restart,
}

pub struct Options {
    pub model: PathBuf,
    pub language: Language,
    pub data: Data,
    /// `MARUNOCHI_HOME/adapters`: the result goes to `<language>/v<N>/` below it.
    pub adapters: PathBuf,
    /// Where this language's checkpoint lives (`MARUNOCHI_HOME/train/<language>`).
    pub work: PathBuf,
    pub settings: Settings,
    pub start: Start,
    /// Stop (with a checkpoint, like a signal) once this time has passed: the end of the night's
    /// training window. A new run is planned to end before it.
    pub until: Option<std::time::SystemTime>,
    /// Plan a new run to take at most this long (with `until`, the shorter of the two).
    pub budget: Option<Duration>,
}

/// Where the examples come from.
pub enum Data {
    /// A curated directory (`train.jsonl`, `heldout.jsonl`), as `marunochi curate` writes.
    Dir(PathBuf),
    /// Curate the store at `db` now, into `out/<language>/`. A resumed run reuses the directory
    /// its first part curated, so it learns from the same data.
    Curate { db: PathBuf, out: PathBuf, options: crate::curate::Options },
}

/// What the caller is told while training runs.
pub enum Event<'a> {
    Stage(&'a str),
    /// `eta_secs`: the planned work left over the speed of this process's updates (see
    /// `State::eta_secs`).
    Step {
        stage: &'static str,
        step: usize,
        total: usize,
        loss: f64,
        tokens_per_s: f64,
        eta_secs: f64,
    },
    Checkpoint {
        step: usize,
    },
    /// A check of SFT (`checks.rs`): `general_rise` against the stage's start, and why SFT stops
    /// here if it does.
    Check {
        check: &'a Check,
        general_rise: Option<f64>,
        stop: Option<&'a str>,
    },
    /// SFT's checks stopped it early: it cools down from the adapter of update `kept`.
    Cooldown {
        cooldown: &'a Cooldown,
        kept: usize,
    },
    /// A stage after SFT measured at its end, kept or undone (`checks.rs`).
    Judged {
        judged: &'a Judged,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub language: Language,
    pub version: String,
    pub directory: PathBuf,
    pub steps: usize,
    pub examples: usize,
    pub skipped: usize,
    pub kto_examples: usize,
    pub dpo_pairs: usize,
    pub reward_items: usize,
    pub tokens: usize,
    pub seconds: f64,
    pub tokens_per_s: f64,
    /// Mean loss of the first and the last SFT update.
    pub first_loss: f64,
    pub last_loss: f64,
    pub stages: Vec<StageReport>,
    /// Mean negative log-likelihood per token of the held-out completions, base vs adapter.
    pub heldout_base: Option<f64>,
    pub heldout_adapter: Option<f64>,
    pub resumed_from: Option<usize>,
    /// SFT's checks on the validation split and general code (`checks.rs`), the first at its start.
    pub checks: Vec<Check>,
    /// Why SFT ended before its planned updates, and the update whose adapter was kept.
    pub stopped: Option<String>,
    pub kept: Option<usize>,
    /// The stages after SFT, each measured at its start and end, kept or undone.
    pub judged: Vec<Judged>,
    /// SFT's cool-down after an early stop (its adapter kept only if its check was the best).
    pub cooldown: Option<Cooldown>,
    /// The most memory this process held (VmHWM), in bytes.
    pub peak_memory: Option<u64>,
    pub frozen_base_bytes: usize,
    /// Numbers the optimiser trained (TT-LoRA: the cores).
    pub parameters: usize,
    /// Size on disk of the PEFT tensors and, for TT-LoRA, of the cores.
    pub peft_bytes: u64,
    pub cores_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: StageKind,
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("training failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("no training data for {language}: {reason}")]
    NoData { language: Language, reason: String },
    #[error("{path}, line {line}: {reason}")]
    Data { path: PathBuf, line: usize, reason: String },
    #[error("cannot save {path}: {source}")]
    Save { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error(
        "an interrupted {language} run is waiting at update {step} of {total} ({dir}); pass --resume to continue \
         it or --restart to discard it"
    )]
    Interrupted { language: Language, step: usize, total: usize, dir: PathBuf },
    #[error("nothing to resume for {language}: no checkpoint in {dir}")]
    NothingToResume { language: Language, dir: PathBuf },
    #[error("the checkpoint in {dir} was made {what}; resume with the same, or pass --restart")]
    Mismatch { dir: PathBuf, what: String },
    #[error("stopped at update {step} of {total}; the checkpoint is saved, --resume continues")]
    Stopped { step: usize, total: usize },
    #[error(transparent)]
    Curate(#[from] crate::curate::CurateError),
    #[error("{language} is being trained already (by the process in {lock})")]
    Busy { language: Language, lock: PathBuf },
    #[error("invalid setting: {0}")]
    Settings(String),
}

/// Trains one adapter as `options` say, reporting progress to `events`; returns when done or
/// when `stop` is set (with a checkpoint saved and [`TrainError::Stopped`]).
pub fn train(options: &Options, events: &dyn Fn(Event), stop: &AtomicBool) -> Result<Report, TrainError> {
    // One run per language at a time: a scheduled run and one started by hand would share the
    // checkpoint.
    let lock_path = options.work.join("lock");
    let locked = crate::home::create_private_dir(&options.work).and_then(|()| crate::home::try_lock(&lock_path));
    let _lock = match locked {
        Ok(Some(lock)) => lock,
        Ok(None) => return Err(TrainError::Busy { language: options.language.clone(), lock: lock_path }),
        Err(source) => return Err(TrainError::Save { path: lock_path, source }),
    };
    let mut run = prepare(options, std::time::SystemTime::now(), events)?;
    run_stages(&mut run, options, events, stop)?;
    finish(run, options, events)
}

/// A run between its preparation and its end: the frozen base, the adapter being trained and its
/// optimiser, the encoded data and the progress so far.
struct Run {
    checkpoint_dir: PathBuf,
    settings: Settings,
    base: Base,
    info: ModelInfo,
    data: stages::Data,
    heldout: Vec<Weighted>,
    checker: checks::Checker,
    /// Training examples left out (too long, or empty once encoded).
    skipped: usize,
    adapter: Adapter,
    adam: AdamW,
    lora: Lora,
    state: State,
    resumed_from: Option<usize>,
}

/// Takes up the checkpoint (or refuses to overwrite one), reads and checks the data against it,
/// loads the base model and encodes the data, and sets up the adapter and the plan.
fn prepare(options: &Options, started: std::time::SystemTime, events: &dyn Fn(Event)) -> Result<Run, TrainError> {
    let checkpoint_dir = options.work.join("checkpoint");
    let resumed = match (options.start, files::existing_dir(&checkpoint_dir)) {
        (Start::New, Some(dir)) => {
            let state = checkpoint::read_state(&dir)?;
            let (step, total, language) = (state.step, state.total, options.language.clone());
            return Err(TrainError::Interrupted { language, step, total, dir });
        }
        (Start::Resume, None) => {
            return Err(TrainError::NothingToResume { language: options.language.clone(), dir: checkpoint_dir });
        }
        (Start::Resume, Some(dir)) => {
            let state = checkpoint::read_state(&dir)?;
            Some((dir, state))
        }
        (Start::Restart, Some(dir)) => {
            std::fs::remove_dir_all(&dir).map_err(|source| TrainError::Save { path: dir.clone(), source })?;
            None
        }
        (Start::Restart | Start::New, None) => None,
    };
    let settings = resumed.as_ref().map_or(&options.settings, |(_, state)| &state.settings).clone();
    check_settings(&settings)?;

    let data_dir = curated_dir(options, resumed.as_ref().map(|(_, state)| state), events)?;
    events(Event::Stage("reading the training data"));
    let language = &options.language;
    let (examples, train_fingerprint) = data::read_jsonl::<Example>(&data_dir.join("train.jsonl"), language, true)?;
    let (heldout, _) = data::read_jsonl::<Example>(&data_dir.join("heldout.jsonl"), language, false)?;
    let (validation, validation_fingerprint) =
        data::read_jsonl::<Example>(&data_dir.join(VALIDATION_FILE), language, false)?;
    let (kto, kto_fingerprint) = data::read_jsonl::<KtoExample>(&data_dir.join("kto.jsonl"), language, false)?;
    let (dpo, dpo_fingerprint) = data::read_jsonl::<crate::curate::Pair>(&data_dir.join("dpo.jsonl"), language, false)?;
    let (reward, reward_fingerprint) =
        data::read_jsonl::<crate::curate::RewardExample>(&data_dir.join("reward.jsonl"), language, false)?;
    let mut data_fingerprint = format!("{train_fingerprint}-{kto_fingerprint}-{dpo_fingerprint}");
    // Only a run with the reward stage depends on its data (older checkpoints resume unchanged).
    if settings.reward {
        data_fingerprint = format!("{data_fingerprint}-{reward_fingerprint}");
    }
    if settings.validate_every > 0 {
        data_fingerprint = format!("{data_fingerprint}-{validation_fingerprint}");
    }
    let base_fingerprint = files::fingerprint(&options.model).map_err(|e| EngineError::io(&options.model, e))?;
    if let Some((dir, state)) = &resumed {
        if state.base_fingerprint != base_fingerprint {
            let what = format!(
                "with another base model (fingerprint {}; {} is {base_fingerprint})",
                state.base_fingerprint,
                options.model.display()
            );
            return Err(TrainError::Mismatch { dir: dir.clone(), what });
        }
        if state.data_fingerprint != data_fingerprint {
            let what = format!("from other data than {}", data_dir.display());
            return Err(TrainError::Mismatch { dir: dir.clone(), what });
        }
    }

    events(Event::Stage("loading the base model"));
    let engine = Engine::load_on(&options.model, &LoadOptions::default(), &Device::Cpu, &|_, _| {})?;
    let (transformer, tokenizer, template, info) = engine.into_parts();
    let weights = if settings.qlora { BaseWeights::FourBit } else { BaseWeights::Dense };
    check_memory(&transformer.config, weights, &options.model)?;
    let base = Base::new(transformer, weights, DType::F32, settings.dora)?;

    let encoder = Encoder {
        tokenizer: &tokenizer,
        template,
        max_prompt_tokens: settings.max_prompt_tokens,
        max_target_tokens: settings.max_target_tokens,
    };
    let (sft, skipped) = encoder.sft(&examples)?;
    if sft.is_empty() {
        let reason = format!("all {} examples have an empty completion", examples.len());
        return Err(TrainError::NoData { language: options.language.clone(), reason });
    }
    let (heldout, _) = encoder.sft(&heldout[..heldout.len().min(HELDOUT_LIMIT)])?;
    let watched = if settings.validate_every == 0 {
        checks::Watched::none()
    } else {
        let (validation, _) = encoder.sft(&validation[..validation.len().min(HELDOUT_LIMIT)])?;
        let others = match crate::corpus::general(language) {
            Ok(corpus) => corpus.others,
            Err(reason) => {
                events(Event::Stage(&format!("general code is not watched during training: {reason}")));
                Vec::new()
            }
        };
        checks::Watched::new(validation.into_iter().map(|w| w.sequence).collect(), &others, &tokenizer)?
    };
    let data = stages::Data {
        sft,
        kto: encoder.kto(&kto)?,
        dpo: encoder.dpo(&dpo)?,
        reward: encoder.reward(&reward)?,
        check_tokens: watched.tokens(),
    };

    let (adapter, adam, best, state) = match resumed {
        Some((dir, state)) => {
            let (adapter, adam) = checkpoint::load(&dir, &base, &settings)?;
            let best = checks::load_best(&dir, adapter.vars.len())?;
            (adapter, adam, best, state)
        }
        None => {
            let adapter = Adapter::new(&base, &settings)?;
            let adam = AdamW::new(hyper(&settings), &adapter.vars)?;
            let scoring = Instant::now();
            let heldout_base = if heldout.is_empty() {
                None
            } else {
                events(Event::Stage("scoring the held-out examples with the base model"));
                Some(base.mean_scores(heldout.iter().map(|w| &w.sequence), None)?.nll)
            };
            // The adapter's scoring at the end takes as long again.
            let reserve = scoring.elapsed() + Duration::from_secs(10);
            // The run ends by the budget's end (counted from its start) or `until`, the sooner.
            let end = [options.budget.map(|b| started + b), options.until].into_iter().flatten().min();
            let rate = match end {
                Some(_) => Some(speed::measure(options, &base, &adapter, &data, &settings, &base_fingerprint, events)?),
                None => None,
            };
            let window = end.map(|end| end.duration_since(std::time::SystemTime::now()).unwrap_or_default());
            let budget = window.zip(rate).map(|(w, rate)| w.saturating_sub(reserve).as_secs_f64() * rate * PLAN_MARGIN);
            let stages = stages::plan(&settings, &data, budget);
            let costs: Vec<stages::Cost> =
                stages.iter().map(|(kind, n)| stages::cost(&settings, &data, *kind, *n)).collect();
            if let (Some(window), Some(rate)) = (window, rate) {
                let planned: f64 = stages.iter().zip(&costs).map(|((_, n), c)| c.of(*n)).sum();
                let parts: Vec<String> = stages.iter().map(|(kind, n)| format!("{} {n}", kind.name())).collect();
                events(Event::Stage(&format!(
                    "planned for the {} left: {} updates, about {} of training",
                    clock_text(window.as_secs_f64()),
                    parts.join(", "),
                    clock_text(planned / rate)
                )));
            }
            let state = State {
                step: 0,
                total: stages.iter().map(|(_, steps)| steps).sum(),
                stages,
                settings: settings.clone(),
                base_fingerprint,
                data_dir: data_dir.clone(),
                data_fingerprint,
                losses: Vec::new(),
                tokens: 0,
                seconds: 0.0,
                heldout_base,
                reference: Vec::new(),
                costs,
                units: 0.0,
                checks: Vec::new(),
                stopped: None,
                kept: None,
                judged: Vec::new(),
                cooldown: None,
            };
            (adapter, adam, None, state)
        }
    };
    let resumed_from = (state.step > 0).then_some(state.step);
    let lora = adapter.view()?;
    let checker = checks::Checker::new(watched, best, &data);
    Ok(Run {
        checkpoint_dir,
        settings,
        base,
        info,
        data,
        heldout,
        checker,
        skipped,
        adapter,
        adam,
        lora,
        state,
        resumed_from,
    })
}

/// The planned updates from where the run stands, a checkpoint every `checkpoint_every` updates;
/// stopped (with a checkpoint) by `stop` or at `options.until`.
fn run_stages(run: &mut Run, options: &Options, events: &dyn Fn(Event), stop: &AtomicBool) -> Result<(), TrainError> {
    let Run { checkpoint_dir, settings, base, info, data, checker, adapter, adam, lora, state, .. } = run;
    let settings = &*settings;
    let since = (state.units, state.seconds);
    while state.step < state.total {
        let past_deadline = options.until.is_some_and(|until| std::time::SystemTime::now() >= until);
        if stop.load(Ordering::Relaxed) || past_deadline {
            speed::remember(options, &speed::key(settings, &state.base_fingerprint), state.units / state.seconds);
            checkpoint::save(checkpoint_dir, adapter, &info.name(), adam, checker.best(), state)?;
            events(Event::Checkpoint { step: state.step });
            return Err(TrainError::Stopped { step: state.step, total: state.total });
        }
        let (index, kind, steps, local) = state.stage_at(state.step);
        if local == 0 {
            events(Event::Stage(kind.name()));
            // Each stage is an optimisation of its own: fresh moments, and for the preference
            // stages the adapter as it stands now is the reference.
            *adam = AdamW::new(hyper(settings), &adapter.vars)?;
            let started = Instant::now();
            let order = data::Order::new(data.tiers(kind).into_iter(), data::mix(settings.seed, &[1, index as u64]));
            let drawn = (0..steps * settings.batch).map(|i| order.at(i)).collect();
            state.reference = stages::reference(base, &lora.detached(), kind, data, &drawn)?;
            if kind == StageKind::Sft && checker.applies(settings, steps) {
                checker.at_start(state, &checks::Checked { base, adapter, lora }, events)?;
            } else if kind != StageKind::Sft && checker.judges(settings) {
                checker.before_stage(state, kind, &checks::Checked { base, adapter, lora }, events)?;
            }
            state.seconds += started.elapsed().as_secs_f64();
            state.units += state.costs.get(index).map_or(0.0, |c| c.start);
        }
        if kind == StageKind::Sft && state.cooldown.is_some_and(|c| c.from == local) {
            *adam = AdamW::new(hyper(settings), &adapter.vars)?;
        }
        let started = Instant::now();
        let order = data::Order::new(data.tiers(kind).into_iter(), data::mix(settings.seed, &[1, index as u64]));
        let draws: Vec<usize> = (0..settings.batch).map(|i| order.at(local * settings.batch + i)).collect();
        let checkpointing = settings.gradient_checkpointing;
        let update = match kind {
            StageKind::Sft => {
                let items: Vec<_> = draws.iter().map(|&i| &data.sft[i]).collect();
                let step = state.step as u64;
                let dropout =
                    |i: usize| Dropout { p: settings.dropout, seed: data::mix(settings.seed, &[2, step, i as u64]) };
                stages::sft(base, lora, &items, dropout, checkpointing)?
            }
            StageKind::Kto => {
                let items: Vec<_> = draws.iter().map(|&i| (i, &data.kto[i])).collect();
                stages::kto(base, lora, &items, &state.reference, settings.beta, checkpointing)?
            }
            StageKind::Dpo => {
                let items: Vec<_> = draws.iter().map(|&i| (i, &data.dpo[i])).collect();
                stages::dpo(base, lora, &items, &state.reference, settings.beta, checkpointing)?
            }
            StageKind::Reward => {
                let items: Vec<_> = draws.iter().map(|&i| (i, &data.reward[i])).collect();
                stages::reward(base, lora, &items, &data.reward_advantages(), &state.reference, checkpointing)?
            }
        };
        // A reward batch whose advantages are all 0 has no gradient: the moments must not move the
        // adapter.
        if update.grads.iter().any(Option::is_some) {
            let grads = adapter.grads(update.grads)?;
            let base_lr = if kind == StageKind::Sft { settings.lr } else { settings.preference_lr };
            let (moment_step, lr) = match state.cooldown.and_then(|c| c.lr(local, settings).map(|lr| (c.from, lr))) {
                Some((from, lr)) if kind == StageKind::Sft => (local - from + 1, lr),
                _ => (local + 1, optim::cosine_lr(base_lr, local, steps, optim::warmup(steps, settings.warmup_ratio))),
            };
            adam.step(&adapter.vars, &grads, moment_step, lr)?;
            *lora = adapter.view()?;
        }
        state.step += 1;
        state.losses.push(update.loss);
        state.tokens += update.tokens;
        state.units += update.units;
        let tokens_per_s = update.tokens as f64 / started.elapsed().as_secs_f64();
        if kind == StageKind::Sft && checker.applies(settings, steps) {
            checker.after_update(state, (index, local, steps), &mut checks::Checked { base, adapter, lora }, events)?;
        } else if kind != StageKind::Sft && local + 1 == steps && checker.judges(settings) {
            checker.after_stage(state, &mut checks::Checked { base, adapter, lora }, events)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        state.seconds += seconds;
        events(Event::Step {
            stage: kind.name(),
            step: state.step,
            total: state.total,
            loss: update.loss,
            tokens_per_s,
            eta_secs: state.eta_secs(since),
        });
        if settings.checkpoint_every > 0 && state.step % settings.checkpoint_every == 0 && state.step < state.total {
            checkpoint::save(checkpoint_dir, adapter, &info.name(), adam, checker.best(), state)?;
            events(Event::Checkpoint { step: state.step });
        }
    }
    speed::remember(options, &speed::key(settings, &state.base_fingerprint), state.units / state.seconds);
    Ok(())
}

/// Scores the held-out examples with the adapter, writes `adapters/<language>/v<N>/` and removes
/// the checkpoint it no longer needs.
fn finish(run: Run, options: &Options, events: &dyn Fn(Event)) -> Result<Report, TrainError> {
    let Run {
        checkpoint_dir, settings, base, info, data, heldout, skipped, adapter, lora, state, resumed_from, ..
    } = run;
    let heldout_adapter = if heldout.is_empty() {
        None
    } else {
        events(Event::Stage("scoring the held-out examples with the adapter"));
        Some(base.mean_scores(heldout.iter().map(|w| &w.sequence), Some(&lora))?.nll)
    };
    events(Event::Stage("saving the adapter"));
    let language_dir = options.adapters.join(&options.language);
    let version = files::next_version(&language_dir);
    let directory = language_dir.join(&version);
    let mut first = 0;
    let stage_reports = state
        .stages
        .iter()
        .map(|&(kind, steps)| {
            let losses = &state.losses[first..first + steps];
            first += steps;
            StageReport {
                stage: kind,
                steps,
                first_loss: losses.first().copied().unwrap_or(f64::NAN),
                last_loss: losses.last().copied().unwrap_or(f64::NAN),
            }
        })
        .collect::<Vec<_>>();
    let mut report = Report {
        language: options.language.clone(),
        version: version.clone(),
        directory: directory.clone(),
        steps: state.step,
        examples: data.sft.len(),
        skipped,
        kto_examples: data.kto.len(),
        dpo_pairs: data.dpo.len(),
        reward_items: data.reward.len(),
        tokens: state.tokens,
        seconds: state.seconds,
        tokens_per_s: state.tokens as f64 / state.seconds.max(1e-9),
        first_loss: stage_reports[0].first_loss,
        last_loss: stage_reports[0].last_loss,
        stages: stage_reports,
        heldout_base: state.heldout_base,
        heldout_adapter,
        resumed_from,
        checks: state.checks.clone(),
        stopped: state.stopped.clone(),
        kept: state.kept,
        judged: state.judged.clone(),
        cooldown: state.cooldown,
        peak_memory: None,
        frozen_base_bytes: base.frozen_bytes(),
        parameters: adapter.parameters(),
        peft_bytes: 0,
        cores_bytes: None,
    };
    files::replace_dir(&directory, |dir| write_adapter(dir, &adapter, &settings, &info, &state, options, &report))?;
    if let Some(dir) = files::existing_dir(&checkpoint_dir) {
        std::fs::remove_dir_all(&dir).map_err(|source| TrainError::Save { path: dir, source })?;
    }
    let size = |file: &str| std::fs::metadata(directory.join(file)).map(|m| m.len()).ok();
    report.peft_bytes = size(adapter::PEFT_FILE).unwrap_or(0);
    report.cores_bytes = size(adapter::CORES_FILE);
    report.peak_memory = peak_memory();
    Ok(report)
}

/// The curated directory to train from: given, remembered by the run being resumed, or curated
/// from the store now.
fn curated_dir(options: &Options, resumed: Option<&State>, events: &dyn Fn(Event)) -> Result<PathBuf, TrainError> {
    let (db, out, curate_options) = match (&options.data, resumed) {
        (Data::Dir(dir), _) => return Ok(dir.clone()),
        (Data::Curate { .. }, Some(state)) => return Ok(state.data_dir.clone()),
        (Data::Curate { db, out, options }, None) => (db, out, options),
    };
    let no_data = |reason: String| TrainError::NoData { language: options.language.clone(), reason };
    events(Event::Stage("curating your interactions"));
    if !db.exists() {
        return Err(no_data(format!("nothing recorded yet ({} does not exist)", db.display())));
    }
    let curate_options = crate::curate::Options { language: Some(options.language.clone()), ..curate_options.clone() };
    let summaries = crate::curate::curate(db, out, &curate_options).map_err(|e| match e {
        crate::curate::CurateError::NoData(_) => {
            no_data("no suggestion in this language has been taken or rejected yet".into())
        }
        e => e.into(),
    })?;
    let summary = summaries.into_iter().next().expect("curate reports the language it was asked for");
    if summary.train == 0 {
        return Err(no_data(format!(
            "none of its interactions qualifies yet ({} taken but not admitted at quality {}: a failed run, a bad \
             rating or code soon deleted keeps code out); `marunochi data mine` adds the functions you wrote in \
             your git repositories",
            summary.below_quality, curate_options.min_quality
        )));
    }
    Ok(summary.directory)
}

fn check_settings(s: &Settings) -> Result<(), TrainError> {
    let bad = |what: &str| Err(TrainError::Settings(what.to_owned()));
    if s.rank == 0 {
        return bad("rank must be at least 1");
    }
    if s.tt_rank == Some(0) {
        return bad("the TT rank must be at least 1");
    }
    if s.tt_rank.is_some() && s.dora {
        return bad("TT-LoRA and DoRA cannot be combined (DoRA's magnitudes need plain LoRA)");
    }
    if s.batch == 0 {
        return bad("batch must be at least 1");
    }
    if !(0.0..1.0).contains(&s.dropout) {
        return bad("dropout must be in [0, 1)");
    }
    if !(s.lr > 0.0 && s.lr.is_finite()) {
        return bad("the learning rate must be a positive number");
    }
    if s.steps == Some(0) || (s.steps.is_none() && s.epochs == 0) {
        return bad("nothing to do: steps (or epochs) is 0");
    }
    if s.max_prompt_tokens == 0 || s.max_target_tokens == 0 {
        return bad("max prompt and target tokens must be at least 1");
    }
    if s.validate_every > 0 && s.patience == 0 {
        return bad("patience must be at least 1 (validate_every = 0 turns the checks off)");
    }
    if !(s.nll_rise >= 0.0 && s.nll_rise.is_finite()) {
        return bad("the general-code margin (nll_rise) must be a share of at least 0");
    }
    Ok(())
}

fn hyper(s: &Settings) -> Hyper {
    Hyper {
        lr: s.lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: s.weight_decay,
        max_grad_norm: s.max_grad_norm,
    }
}
/// Refuses a dense (LoRA) run that would not fit, pointing at QLoRA.
fn check_memory(config: &crate::engine::Config, weights: BaseWeights, model: &Path) -> Result<(), TrainError> {
    if weights == BaseWeights::FourBit {
        return Ok(());
    }
    let per_layer: usize = Projection::ALL.iter().map(|p| p.shape(config)).map(|(i, o)| i * o).sum();
    let needed = ((per_layer * config.num_layers + config.vocab_size * config.hidden_size) * 4) as u64;
    match crate::engine::available_memory() {
        Some(available) if needed > available => Err(TrainError::Settings(format!(
            "plain LoRA on {} needs about {} MiB for the dense base, {} MiB are available; --qlora keeps it 4-bit",
            model.display(),
            needed >> 20,
            available >> 20
        ))),
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
fn write_adapter(
    dir: &Path,
    adapter: &Adapter,
    settings: &Settings,
    info: &ModelInfo,
    state: &State,
    options: &Options,
    report: &Report,
) -> Result<(), TrainError> {
    adapter.save(dir, settings, &info.name())?;
    let metadata = json!({
        "language": options.language,
        "version": report.version,
        "created_at": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "base_model": {
            "path": info.path,
            "name": info.name(),
            "family": info.family,
            "quantization": info.quantization,
            "fingerprint": state.base_fingerprint,
        },
        "data": {
            "directory": state.data_dir,
            "fingerprint": state.data_fingerprint,
            "examples": report.examples,
            "skipped": report.skipped,
        },
        "training": {
            "method": match (settings.qlora, settings.dora, settings.tt_rank.is_some()) {
                (false, false, false) => "lora",
                (true, false, false) => "qlora",
                (false, true, _) => "dora",
                (true, true, _) => "qdora",
                (false, false, true) => "tt-lora",
                (true, false, true) => "tt-qlora",
            },
            "parameters": report.parameters,
            "settings": settings,
            "steps": state.step,
            "tokens": state.tokens,
            "seconds": state.seconds,
            "losses": state.losses,
            "checks": state.checks,
            "stopped": state.stopped,
            "kept": state.kept,
            "judged": state.judged,
            "cooldown": state.cooldown,
        },
        "heldout": { "base_nll": report.heldout_base, "adapter_nll": report.heldout_adapter },
    });
    files::write_private(&dir.join("marunochi.json"), serde_json::to_string_pretty(&metadata).expect("json").as_bytes())
}

fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tt_lora_run_from_config_takes_its_own_learning_rate() {
        let mut config = crate::config::TrainConfig::default();
        assert_eq!(Settings::from_config(&config).lr, config.lr);
        config.tt_lora = true;
        let settings = Settings::from_config(&config);
        assert_eq!((settings.lr, settings.tt_rank), (config.tt_lr, Some(config.tt_rank)));
        assert!(config.tt_lr > config.lr);
    }
}
