//! `config.toml` in `MARUNOCHI_HOME`. Every key is optional; [`DEFAULT_CONFIG`] documents them all
//! and is exactly what an absent file means (a test keeps the two in step).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// The documented defaults, as a user would write them.
pub const DEFAULT_CONFIG: &str = r#"# marunochi configuration. Every key is optional; these are the defaults.

[log]
# Log level for the file under MARUNOCHI_HOME/logs (error, warn, info, debug, trace).
# The MARUNOCHI_LOG environment variable overrides it (same syntax as RUST_LOG).
level = "info"

[engine]
# The model to complete with: a .gguf file, or an HF directory (config.json, safetensors,
# tokenizer.json). `marunochi models` lists what is on this machine. Unset by default.
# model = "/path/to/qwen2.5-coder-1.5b-instruct-q8_0.gguf"

[proxy]
# Restart a crashed language server at most this many times within `restart_window_secs`;
# after that the proxy tells the editor and stops trying.
max_restarts = 5
restart_window_secs = 180
# Largest LSP message accepted from either side, in MiB. Bigger frames are skipped and logged.
max_message_mib = 64

[serving]
# How long the editor's completion menu may wait for the AI item, in milliseconds. The language
# server's own items are never held back longer than this; a late AI item is left out.
completion_deadline_ms = 80
# Wait this long after a keystroke before starting a generation, in milliseconds: a faster next
# keystroke replaces the request without touching the model.
debounce_ms = 25
# Most tokens one suggestion may have.
max_tokens = 64
# Other open documents of the workspace offered to the model as context (most recently edited first).
context_files = 3
# Functions of the workspace's files most like the lines before the cursor (BM25 over tree-sitter
# units, kept up to date as files change on disk), offered as context; 0 turns it off. Off by
# default: on the replay benchmark it helped Rust alone but not next to your own examples.
repository_snippets = 0
# Your own best code (taken and kept, quality 90 or more; the best there is while nothing reaches
# 90) most like the lines before the cursor, offered as examples; 0 turns it off.
own_examples = 1
# Definitions of the names just before the cursor, asked of your language server
# (`textDocument/definition`; functions and classes of your workspace, their first lines), offered
# as context; 0 turns it off. Asked when you type, so answers arrive during the debounce; a
# suggestion waits at most `definitions_wait_ms` longer for them and goes without the rest. Off by
# default: on the replay benchmark (cursor at a body's start) it did not help.
definitions = 0
definitions_wait_ms = 20
# Your recent edits (in any open document) offered as context.
recent_edits = true
# Learn from what you take and reject when to stay silent: suggestions your own P(taken) model puts
# below its threshold are not shown (one in ten is, so it keeps learning). The threshold is the
# highest that would have hidden at most 2 % of the characters you took lately; with fewer than
# 60 decided suggestions, or no such threshold, everything is shown. Off by default: on the replay
# benchmark it showed 40 % fewer suggestions but lost 6 % of the characters taken.
stay_silent = false
# Compute the prompt where your cursor lands (a file opened, a jump to another place) before you
# type there, in the model's idle time: the first suggestion after a jump then costs what a
# keystroke does. Costs CPU while you read code; false turns it off.
warm_ahead = true
# Tokens a prompt may take, and the share (percent) of them the context may use; the rest is the
# text around the cursor (three parts before it to one after). Longer prompts see more but cost
# more time on every cache miss. 30 % won over 20 % and 10 % on the replay benchmark.
prompt_tokens = 1024
context_share = 30

[capture]
# After you accept a suggestion, edits inside it for this long count as corrections of it (the
# strongest signal for training); after that the code is settled.
correction_window_secs = 120

[retention]
# Accepted code counts as kept (the seed's retention_7d / retention_30d) when at least this share
# of it is still there, by token edit distance, wherever it moved in the workspace.
survival_threshold = 0.67

[curate]
# The bar (0-100) a taken suggestion's score must reach to become a training example: the seed's
# score, or the score over the signals actually observed (README: which code is trained on).
min_quality = 70
# true: admit by the seed's score alone (which needs observed test runs to reach 70), not also by
# the observed score, survival for 7 or 30 days, or a correction.
seed_score_only = false
# The newest share of each language's suggestions held out for the eval gate, never trained on.
heldout_share = 0.1
# Share of each training set drawn from earlier high-quality examples (replay against forgetting).
replay_share = 0.2
# Share of each training set made of general code (functions of the standard library's files the
# gate does not score), rehearsed against forgetting general coding. 0: none.
general_share = 0.0

[train]
# LoRA rank and scale (alpha / rank multiplies the update), dropout on the adapters' inputs.
rank = 16
alpha = 32
dropout = 0.05
# AdamW learning rate (cosine schedule after a short warmup), passes over the data, examples
# per update.
lr = 0.0002
epochs = 3
batch = 4
# Keep the frozen base model 4-bit while training (QLoRA): far less memory, somewhat slower.
qlora = false
# TT-LoRA: each update's factors as a tensor train of rank `tt_rank`, a few percent of LoRA's
# parameters (README, "TT-LoRA"); saved as plain LoRA of that rank too, so serving is the same.
tt_lora = false
tt_rank = 5
# SFT learning rate of a TT-LoRA run: its cores need a larger step than LoRA's factors to learn
# as much in the same updates (README, "Learning"); `--lr` overrides both.
tt_lr = 0.001
# Recompute each layer during the backward pass instead of keeping all activations.
gradient_checkpointing = true
# Save a resumable checkpoint every this many updates.
checkpoint_every = 50
# Every this many SFT updates, measure the adapter's loss on the validation split (functions
# set aside from your git history, neither trained on nor judged) and on general code; SFT stops
# once the validation loss has not improved for `patience` checks, or the general-code loss rose
# past `[eval] nll_rise`, and keeps the adapter of the best check. The stages after SFT are
# measured at their start and end and undone when they make the validation loss worse. 0: no
# checks, every planned update runs and every stage stays (README, "Learning").
validate_every = 25
patience = 2
# When the checks stop SFT early the learning rate is still high (the plan was for more updates):
# with a share here, SFT goes on from the kept check's adapter for that share of its updates more,
# the rate falling in a straight line to zero, and keeps the result if a last check finds it
# better. Off: on replayed real history it forgot more than it learnt (README, "Learning").
cooldown = 0.0
# Longest prompt and completion, in tokens, a training example may have.
max_prompt_tokens = 512
max_target_tokens = 256
# After SFT: KTO on taken vs rejected suggestions (with at least 4 of each) and DPO on
# corrections (final code preferred to the suggestion; at least 2), with this learning rate and β.
preference = true
preference_lr = 0.00005
beta = 0.1
# Then a reward stage (RLOO) on what became of every suggestion shown (README, "Learning from
# outcomes"), at the same learning rate.
reward = false

[eval]
# The gate's forgetting check with any model: the candidate's mean log-loss per token on general
# code (Python's standard library, the Rust library sources) may rise by at most this share.
nll_rise = 0.02
# A candidate that beats the reference on the held-out code but fails a forgetting check is judged
# again with its update scaled down to these strengths, in this order; the first that passes
# everything is served at that strength (its adapter_config.json's lora_alpha scaled to it).
# Plain LoRA only. [] judges at full strength only.
strengths = [0.75, 0.5]

[schedule]
# Training runs only inside this local time window (HH:MM-HH:MM, may cross midnight), while the
# machine is idle and not on battery; a run not done by the window's end resumes the next night.
enabled = true
window = "01:00-06:00"
# Idle: the 1-minute load average per core is below this.
max_load_per_core = 0.5
# Weekly retraining once a language has this many examples of training quality, at most every
# retrain_days days.
min_examples = 500
retrain_days = 7
# A drift or emergency event (acceptance under 50%) retrains at once, given this many examples.
min_drift_examples = 20

[rollout]
# A new adapter that passed the gate runs in shadow first: on this share of requests, when the
# daemon is otherwise idle, it also generates (never shown), and what it wrote is compared with
# the code you kept. Once it is not worse than the served adapter by more than `shadow_margin`
# (edit similarity, 95% confidence, at least `shadow_min_samples` samples) it becomes the canary.
shadow_share = 0.25
shadow_min_samples = 20
shadow_margin = 0.1
# The canary serves this share of requests. With at least `canary_min_suggestions` decided
# suggestions it becomes active when its acceptance and retention are not worse than the active
# version's by more than `acceptance_drop` (relative, 80% confidence), and it is rolled back when
# its acceptance is lower by more than `acceptance_drop` (relative) or its error rate higher by
# more than `error_rise` (points), significantly. The same triggers roll an active adapter back
# to the one it replaced.
canary_share = 0.2
canary_min_suggestions = 30
acceptance_drop = 0.1
error_rise = 0.15
# The daemon checks every this many seconds and acts on its own; with `automatic = false` only
# `marunochi adapters check` moves versions on or rolls them back.
automatic = true
check_every_secs = 300

[daemon]
# The daemon (one per user, holding the model for every editor window) exits after this many
# seconds without any connected proxy.
idle_exit_secs = 900
"#;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub engine: EngineConfig,
    pub proxy: ProxyConfig,
    pub serving: ServingConfig,
    pub capture: CaptureConfig,
    pub retention: RetentionConfig,
    pub curate: CurateConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub schedule: ScheduleConfig,
    pub rollout: RolloutConfig,
    pub daemon: DaemonConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    pub correction_window_secs: u64,
}

impl Default for CaptureConfig {
    fn default() -> CaptureConfig {
        CaptureConfig { correction_window_secs: 120 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(deserialize_with = "share")]
    pub survival_threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CurateConfig {
    pub min_quality: f64,
    #[serde(deserialize_with = "share")]
    pub heldout_share: f64,
    #[serde(deserialize_with = "share")]
    pub replay_share: f64,
    #[serde(deserialize_with = "share")]
    pub general_share: f64,
    pub seed_score_only: bool,
}

impl Default for CurateConfig {
    fn default() -> CurateConfig {
        CurateConfig {
            min_quality: 70.0,
            heldout_share: 0.1,
            replay_share: 0.2,
            general_share: 0.0,
            seed_score_only: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub rank: usize,
    pub alpha: f64,
    #[serde(deserialize_with = "share")]
    pub dropout: f64,
    pub lr: f64,
    pub epochs: usize,
    pub batch: usize,
    pub qlora: bool,
    pub tt_lora: bool,
    pub tt_rank: usize,
    pub tt_lr: f64,
    pub gradient_checkpointing: bool,
    pub checkpoint_every: usize,
    pub validate_every: usize,
    pub patience: usize,
    #[serde(deserialize_with = "share")]
    pub cooldown: f64,
    pub max_prompt_tokens: usize,
    pub max_target_tokens: usize,
    pub preference: bool,
    pub preference_lr: f64,
    pub beta: f64,
    pub reward: bool,
}

impl TrainConfig {
    /// The optimizer's settings that config.toml does not expose (the trainer's, and the ones
    /// `curate --for trl|axolotl` writes for other engines).
    pub const WARMUP_RATIO: f64 = 0.05;
    pub const WEIGHT_DECAY: f64 = 0.0;
    pub const MAX_GRAD_NORM: f64 = 1.0;
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            lr: 2e-4,
            epochs: 3,
            batch: 4,
            qlora: false,
            tt_lora: false,
            tt_rank: 5,
            tt_lr: 1e-3,
            gradient_checkpointing: true,
            checkpoint_every: 50,
            validate_every: 25,
            patience: 2,
            cooldown: 0.0,
            max_prompt_tokens: 512,
            max_target_tokens: 256,
            preference: true,
            preference_lr: 5e-5,
            beta: 0.1,
            reward: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub enabled: bool,
    /// Local `HH:MM-HH:MM`; checked when used ([`Window`]).
    pub window: String,
    pub max_load_per_core: f64,
    pub min_examples: usize,
    pub retrain_days: u32,
    pub min_drift_examples: usize,
}

impl Default for ScheduleConfig {
    fn default() -> ScheduleConfig {
        ScheduleConfig {
            enabled: true,
            window: "01:00-06:00".into(),
            max_load_per_core: 0.5,
            min_examples: 500,
            retrain_days: 7,
            min_drift_examples: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    #[serde(deserialize_with = "share")]
    pub shadow_share: f64,
    pub shadow_min_samples: usize,
    #[serde(deserialize_with = "share")]
    pub shadow_margin: f64,
    #[serde(deserialize_with = "share")]
    pub canary_share: f64,
    pub canary_min_suggestions: usize,
    #[serde(deserialize_with = "share")]
    pub acceptance_drop: f64,
    #[serde(deserialize_with = "share")]
    pub error_rise: f64,
    pub automatic: bool,
    pub check_every_secs: u64,
}

impl Default for RolloutConfig {
    fn default() -> RolloutConfig {
        RolloutConfig {
            shadow_share: 0.25,
            shadow_min_samples: 20,
            shadow_margin: 0.1,
            canary_share: 0.2,
            canary_min_suggestions: 30,
            acceptance_drop: 0.1,
            error_rise: 0.15,
            automatic: true,
            check_every_secs: 300,
        }
    }
}

/// A fraction, 0 to 1.
fn share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(serde::de::Error::custom(format!("{value} is not a share between 0 and 1")))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    #[serde(deserialize_with = "share")]
    pub nll_rise: f64,
    #[serde(deserialize_with = "weaker_strengths")]
    pub strengths: Vec<f64>,
}

impl Default for EvalConfig {
    fn default() -> EvalConfig {
        EvalConfig { nll_rise: 0.02, strengths: vec![0.75, 0.5] }
    }
}

/// Strengths below full, strongest first: the gate tries them in this order.
fn weaker_strengths<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let values = Vec::<f64>::deserialize(d)?;
    if let Some(bad) = values.iter().find(|v| !(**v > 0.0 && **v < 1.0)) {
        return Err(serde::de::Error::custom(format!("{bad} is not a strength between 0 and 1 (both excluded)")));
    }
    if values.windows(2).any(|w| w[1] >= w[0]) {
        return Err(serde::de::Error::custom(format!("{values:?} is not strongest first, without repeats")));
    }
    Ok(values)
}

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig { survival_threshold: 0.67 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServingConfig {
    pub completion_deadline_ms: u64,
    pub debounce_ms: u64,
    pub max_tokens: usize,
    pub context_files: usize,
    pub repository_snippets: usize,
    pub own_examples: usize,
    pub definitions: usize,
    pub definitions_wait_ms: u64,
    pub recent_edits: bool,
    pub stay_silent: bool,
    pub warm_ahead: bool,
    pub prompt_tokens: usize,
    pub context_share: u32,
}

impl Default for ServingConfig {
    fn default() -> ServingConfig {
        ServingConfig {
            completion_deadline_ms: 80,
            debounce_ms: 25,
            max_tokens: 64,
            context_files: 3,
            repository_snippets: 0,
            own_examples: 1,
            definitions: 0,
            definitions_wait_ms: 20,
            recent_edits: true,
            stay_silent: false,
            warm_ahead: true,
            prompt_tokens: 1024,
            context_share: 30,
        }
    }
}

impl ServingConfig {
    pub fn completion_deadline(&self) -> Duration {
        Duration::from_millis(self.completion_deadline_ms)
    }

    pub fn debounce(&self) -> Duration {
        Duration::from_millis(self.debounce_ms)
    }

    pub fn definitions_wait(&self) -> Duration {
        Duration::from_millis(self.definitions_wait_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    pub idle_exit_secs: u64,
}

impl Default for DaemonConfig {
    fn default() -> DaemonConfig {
        DaemonConfig { idle_exit_secs: 900 }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub model: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    pub max_restarts: u32,
    pub restart_window_secs: u64,
    pub max_message_mib: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig { level: "info".into() }
    }
}

impl Default for ProxyConfig {
    fn default() -> ProxyConfig {
        ProxyConfig { max_restarts: 5, restart_window_secs: 180, max_message_mib: 64 }
    }
}

impl ProxyConfig {
    pub fn max_message_bytes(&self) -> usize {
        usize::try_from(self.max_message_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    pub fn restart_window(&self) -> Duration {
        Duration::from_secs(self.restart_window_secs)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Config {
    /// Reads `path`; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text)
                .map_err(|e| ConfigError::Invalid { path: path.to_owned(), message: e.to_string().trim().to_owned() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read { path: path.to_owned(), source }),
        }
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}

/// `marunochi config set SECTION.KEY VALUE`: writes one setting into `path` (created if missing),
/// keeping everything else in the file as it was. VALUE is read as TOML (`80`, `true`, `0.2`) or,
/// when that does not fit the setting, as a string (`01:00-06:00`). An unknown key or a value of
/// the wrong type is refused with the reason, and the file is left untouched.
pub fn set(path: &Path, key: &str, value: &str) -> Result<(), ConfigError> {
    let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
    let (section, name) = key
        .split_once('.')
        .filter(|(s, n)| !s.is_empty() && !n.is_empty() && !n.contains('.'))
        .ok_or_else(|| invalid(format!("{key:?} is not SECTION.KEY (e.g. serving.completion_deadline_ms)")))?;
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
    };
    let document: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| invalid(e.to_string()))?;
    let typed = value.parse::<toml_edit::Value>().ok();
    let candidates = typed.into_iter().chain(std::iter::once(toml_edit::Value::from(value)));
    let mut first_error = None;
    for candidate in candidates {
        let mut edited = document.clone();
        let table = edited
            .entry(section)
            .or_insert_with(toml_edit::table)
            .as_table_mut()
            .ok_or_else(|| invalid(format!("[{section}] is not a table")))?;
        table[name] = toml_edit::value(candidate);
        let new_text = edited.to_string();
        // The window is a plain string to serde; its form is checked where it is used, and here.
        let parsed = Config::parse(&new_text)
            .map_err(|e| e.to_string().trim().to_owned())
            .and_then(|config| config.schedule.window.parse::<Window>().map(|_| ()));
        match parsed {
            Ok(()) => {
                // A new file renamed over the old: a crash leaves one or the other, whole. The
                // home may not exist yet (`config set` as the first command run).
                let tmp = path.with_extension("toml.tmp");
                let home = path.parent().unwrap_or(Path::new("."));
                return crate::home::create_private_dir(home)
                    .and_then(|()| crate::home::write_private(&tmp, new_text.as_bytes()))
                    .and_then(|()| std::fs::rename(&tmp, path))
                    .map_err(|source| ConfigError::Write { path: path.to_owned(), source });
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(invalid(format!("{key} = {value}: {}", first_error.unwrap_or_default())))
}

/// `marunochi config get SECTION.KEY`: the value in `path`, else the default, as TOML; `None` for
/// a setting that is unset by default (commented out in [`DEFAULT_CONFIG`]) and not set.
pub fn get(path: &Path, key: &str) -> Result<Option<String>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ConfigError::Read { path: path.to_owned(), source }),
    };
    let lookup = |text: &str| -> Option<String> {
        let document: toml_edit::DocumentMut = text.parse().ok()?;
        let (section, name) = key.split_once('.')?;
        Some(document.get(section)?.get(name)?.as_value()?.clone().decorated("", "").to_string())
    };
    if let Some(value) = lookup(&text).or_else(|| lookup(DEFAULT_CONFIG)) {
        return Ok(Some(value));
    }
    if key.split_once('.').is_some_and(|(section, name)| unset_by_default(section, name)) {
        return Ok(None);
    }
    Err(ConfigError::Invalid {
        path: path.to_owned(),
        message: format!("{key} is not a setting (`marunochi config --help` says where they are documented)"),
    })
}

/// Whether [`DEFAULT_CONFIG`] documents `[section] name` as a commented-out example.
fn unset_by_default(section: &str, name: &str) -> bool {
    let header = format!("[{section}]");
    let example = format!("# {name} = ");
    DEFAULT_CONFIG
        .lines()
        .skip_while(|line| line.trim() != header)
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .any(|line| line.starts_with(&example))
}

/// The nightly window, in local minutes since midnight; it may cross midnight (`22:30-05:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Window {
    pub start: u16,
    pub end: u16,
}

impl FromStr for Window {
    type Err = String;

    fn from_str(text: &str) -> Result<Window, String> {
        let bad = || format!("{text:?} is not a window such as 01:00-06:00 (local HH:MM-HH:MM)");
        let minute = |hm: &str| -> Option<u16> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 60 + m)
        };
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let window = Window { start: minute(start).ok_or_else(bad)?, end: minute(end).ok_or_else(bad)? };
        if window.start == window.end {
            return Err(format!("{text:?} is an empty window"));
        }
        Ok(window)
    }
}

impl Window {
    pub fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` to the window's end.
    pub fn minutes_left(&self, minute: u16) -> u16 {
        (self.end + 24 * 60 - minute) % (24 * 60)
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}:{:02}-{:02}:{:02}", self.start / 60, self.start % 60, self.end / 60, self.end % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_outside_0_to_1_is_refused_with_its_key() {
        let error = Config::parse("[retention]\nsurvival_threshold = 67\n").unwrap_err().to_string();
        assert!(error.contains("survival_threshold") && error.contains("between 0 and 1"), "{error}");
    }

    #[test]
    fn the_documented_defaults_are_the_defaults() {
        assert_eq!(Config::parse(DEFAULT_CONFIG).unwrap(), Config::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn set_edits_one_setting_keeps_the_rest_and_refuses_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "# mine\n[serving]\n# fast\ndebounce_ms = 10\n").unwrap();
        set(&path, "serving.completion_deadline_ms", "120").unwrap();
        set(&path, "schedule.window", "22:30-05:00").unwrap();
        set(&path, "rollout.automatic", "false").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine\n[serving]\n# fast\ndebounce_ms = 10\n"), "{text}");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.serving.completion_deadline_ms, 120);
        assert_eq!(config.schedule.window, "22:30-05:00");
        assert!(!config.rollout.automatic);
        assert_eq!(get(&path, "schedule.window").unwrap().as_deref(), Some("\"22:30-05:00\""));
        assert_eq!(get(&path, "daemon.idle_exit_secs").unwrap().as_deref(), Some("900"));

        for (key, value, says) in [
            ("serving.deadline", "80", "unknown field `deadline`"),
            ("serving.completion_deadline_ms", "soon", "serving.completion_deadline_ms = soon"),
            ("rollout.canary_share", "2", "not a share"),
            ("deadline", "80", "is not SECTION.KEY"),
            ("schedule.window", "late", "not a window such as 01:00-06:00"),
            ("eval.strengths", "[0.5, 0.75]", "not strongest first"),
            ("eval.strengths", "[0.75, 1.0]", "1 is not a strength between 0 and 1"),
        ] {
            let error = set(&path, key, value).unwrap_err().to_string();
            assert!(error.contains(says), "{key}: {error}");
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "a refused value leaves the file as it was");
        assert!(get(&path, "serving.nothing").is_err());
    }

    #[test]
    fn the_readme_documents_exactly_these_defaults() {
        let readme = include_str!("../README.md");
        for line in DEFAULT_CONFIG.lines().skip(1).filter(|l| !l.is_empty()) {
            assert!(readme.contains(&format!("  {line}\n")), "README.md lacks the config line {line:?}");
        }
    }

    #[test]
    fn the_engine_model_is_optional() {
        assert_eq!(Config::default().engine.model, None);
        let config = Config::parse("[engine]\nmodel = \"/m/q.gguf\"\n").unwrap();
        assert_eq!(config.engine.model.as_deref(), Some(std::path::Path::new("/m/q.gguf")));
    }

    #[test]
    fn partial_files_keep_other_defaults() {
        let config = Config::parse("[proxy]\nmax_restarts = 1\n").unwrap();
        assert_eq!(config.proxy.max_restarts, 1);
        assert_eq!(config.proxy.max_message_mib, 64);
    }

    #[test]
    fn typos_and_wrong_types_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[proxy]\nmax_restart = 3\n").unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        assert!(message.contains("config.toml") && message.contains("max_restart"), "{message}");
        std::fs::write(&path, "[proxy]\nmax_restarts = \"many\"\n").unwrap();
        let message = Config::load(&path).unwrap_err().to_string();
        assert!(message.contains("line 2"), "{message}");
        assert_eq!(Config::load(&dir.path().join("absent.toml")).unwrap(), Config::default());
    }
}
