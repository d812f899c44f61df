//! How fast this machine trains: units per second (`stages::Cost`) per base model and setup,
//! measured once with one discarded update and then remembered from every run, so that a budget
//! (`--budget`, `--until`) can be planned; and the times a plan is told in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use super::adapter::Adapter;
use super::data::Weighted;
use super::model::{Base, Dropout};
use super::{Event, Options, Settings, TrainError, stages};

/// `1 h 05 min`, `4 min 10 s`, `12 s`.
pub fn clock_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, _) => format!("{h} h {m:02} min"),
    }
}

/// Measured training speeds, per base model and setup, in units per second (`stages::Cost`):
/// `MARUNOCHI_HOME/train/speed.json`.
fn file(options: &Options) -> PathBuf {
    options.work.parent().unwrap_or(&options.work).join("speed.json")
}

pub(super) fn key(settings: &Settings, fingerprint: &str) -> String {
    let tt = settings.tt_rank.map(|r| format!(" tt={r}")).unwrap_or_default();
    format!(
        "{fingerprint} qlora={} dora={}{tt} checkpointing={} threads={}",
        settings.qlora,
        settings.dora,
        settings.gradient_checkpointing,
        candle_core::utils::get_num_threads()
    )
}

fn known(options: &Options) -> HashMap<String, f64> {
    std::fs::read_to_string(file(options)).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Keeps a measured speed for the next plan; a failure to write costs only a measurement later.
pub(super) fn remember(options: &Options, key: &str, rate: f64) {
    if !(rate.is_finite() && rate > 0.0) {
        return;
    }
    let mut known = known(options);
    known.insert(key.to_owned(), rate);
    let text = serde_json::to_string_pretty(&known).expect("speeds serialize");
    if let Err(e) = crate::home::write_private(&file(options), text.as_bytes()) {
        tracing::warn!(error = %e, "cannot keep the measured training speed");
    }
}

/// How fast this machine trains this base model with these settings: remembered from earlier
/// runs, else measured now with one SFT update on a batch of median length (thrown away).
pub(super) fn measure(
    options: &Options,
    base: &Base,
    adapter: &Adapter,
    data: &stages::Data,
    settings: &Settings,
    fingerprint: &str,
    events: &dyn Fn(Event),
) -> Result<f64, TrainError> {
    let name = key(settings, fingerprint);
    if let Some(&rate) = known(options).get(&name).filter(|r| **r > 0.0) {
        return Ok(rate);
    }
    events(Event::Stage("measuring this machine's training speed (once for this model and setup)"));
    let lora = adapter.view()?;
    // Items of the median length: the speed per token falls as sequences grow.
    let mut by_length: Vec<&Weighted> = data.sft.iter().collect();
    by_length.sort_by_key(|w| w.sequence.tokens.len());
    let middle = by_length.len().saturating_sub(settings.batch) / 2;
    let items: Vec<&Weighted> = by_length.into_iter().skip(middle).take(settings.batch).collect();
    let started = Instant::now();
    let no_dropout = |_| Dropout { p: 0.0, seed: 0 };
    let update = stages::sft(base, &lora, &items, no_dropout, settings.gradient_checkpointing)?;
    let rate = update.units / started.elapsed().as_secs_f64().max(1e-9);
    remember(options, &name, rate);
    Ok(rate)
}
