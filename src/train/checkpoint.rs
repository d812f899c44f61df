//! What survives a killed run: the adapter, the optimiser's moments, the best check's adapter and
//! the [`State`] (plan, progress, measurements) in `train/<language>/checkpoint/`, written whole
//! or not at all, so that a resumed run continues bit for bit (ARCHITECTURE.md, "Training").

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::adapter::Adapter;
use super::model::Base;
use super::optim::AdamW;
use super::{Check, Cooldown, Judged, Settings, StageKind, TrainError, checks, files, hyper, stages};

/// The part of a checkpoint that is not tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) step: usize,
    pub(super) total: usize,
    /// The stages planned at the start and their updates (`total` is their sum).
    pub(super) stages: Vec<(StageKind, usize)>,
    pub(super) settings: Settings,
    pub(super) base_fingerprint: String,
    pub(super) data_dir: PathBuf,
    pub(super) data_fingerprint: String,
    pub(super) losses: Vec<f64>,
    pub(super) tokens: usize,
    pub(super) seconds: f64,
    pub(super) heldout_base: Option<f64>,
    /// The current preference stage's reference log-likelihoods (see `stages::reference`).
    pub(super) reference: Vec<f64>,
    /// Per planned stage, what an update and its start cost (`stages::Cost`), and the units done.
    #[serde(default)]
    pub(super) costs: Vec<stages::Cost>,
    #[serde(default)]
    pub(super) units: f64,
    #[serde(default)]
    pub(super) checks: Vec<Check>,
    #[serde(default)]
    pub(super) stopped: Option<String>,
    /// The update whose adapter SFT's checks kept.
    #[serde(default)]
    pub(super) kept: Option<usize>,
    /// The stages after SFT measured so far (`checks.rs`).
    #[serde(default)]
    pub(super) judged: Vec<Judged>,
    /// SFT's cool-down, once its checks stopped it early (`checks.rs`).
    #[serde(default)]
    pub(super) cooldown: Option<Cooldown>,
}

impl State {
    /// Units the plan has left from update `step` on.
    pub(super) fn units_left(&self) -> f64 {
        let mut first = 0;
        let mut left = 0.0;
        for (&(_, steps), cost) in self.stages.iter().zip(&self.costs) {
            let remaining = (first + steps).saturating_sub(self.step.max(first));
            left += remaining as f64 * cost.update + if self.step <= first { cost.start } else { 0.0 };
            first += steps;
        }
        left
    }

    /// Seconds the plan has left at the speed of the work done since `since` (units, seconds):
    /// where this process started. A resumed run's earlier part may have shared the machine with
    /// other work, or run on another one; its speed says little about tonight's.
    pub(super) fn eta_secs(&self, (units, seconds): (f64, f64)) -> f64 {
        let (units, seconds) = match self.units - units {
            done if done > 0.0 => (done, self.seconds - seconds),
            _ => (self.units, self.seconds),
        };
        self.units_left() * seconds / units.max(1e-9)
    }

    /// The stage of update `step`: its index, kind, length and the update's place in it.
    pub(super) fn stage_at(&self, step: usize) -> (usize, StageKind, usize, usize) {
        let mut first = 0;
        for (index, &(kind, steps)) in self.stages.iter().enumerate() {
            if step < first + steps {
                return (index, kind, steps, step - first);
            }
            first += steps;
        }
        unreachable!("step {step} is past the plan's {first} updates")
    }
}

pub(super) fn save(
    dir: &Path,
    adapter: &Adapter,
    base_model: &str,
    adam: &AdamW,
    best: Option<&[Tensor]>,
    state: &State,
) -> Result<(), TrainError> {
    files::replace_dir(dir, |tmp| {
        adapter.save(tmp, &state.settings, base_model)?;
        if let Some(best) = best {
            checks::save_best(tmp, best)?;
        }
        let mut moments = HashMap::new();
        for (i, (m, v)) in adam.m.iter().zip(&adam.v).enumerate() {
            moments.insert(format!("m.{i}"), m.clone());
            moments.insert(format!("v.{i}"), v.clone());
        }
        files::write_tensors(&tmp.join("optimizer.safetensors"), &moments)?;
        let text = serde_json::to_string_pretty(state).expect("state serializes");
        files::write_private(&tmp.join("state.json"), text.as_bytes())
    })
}

pub(super) fn read_state(dir: &Path) -> Result<State, TrainError> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TrainError::Checkpoint { path: path.clone(), reason: e.to_string() })?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint { path, reason: e.to_string() })
}

pub(super) fn load(dir: &Path, base: &Base, settings: &Settings) -> Result<(Adapter, AdamW), TrainError> {
    let adapter = Adapter::load(dir, base, settings)?;
    let moments_path = dir.join("optimizer.safetensors");
    let mut moments = files::read_tensors(&moments_path)?;
    let mut take = |name: String| {
        moments
            .remove(&name)
            .ok_or_else(|| TrainError::Checkpoint { path: moments_path.clone(), reason: format!("{name} is missing") })
    };
    let mut adam = AdamW::new(hyper(settings), &adapter.vars)?;
    for i in 0..adapter.vars.len() {
        adam.m[i] = take(format!("m.{i}"))?;
        adam.v[i] = take(format!("v.{i}"))?;
    }
    Ok((adapter, adam))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::clock_text;

    #[test]
    fn the_eta_counts_the_work_the_plan_has_left() {
        let cost = |update: f64, start: f64| stages::Cost { update, start };
        let mut state = State {
            step: 0,
            total: 15,
            stages: vec![(StageKind::Sft, 10), (StageKind::Dpo, 5)],
            settings: Settings::default(),
            base_fingerprint: String::new(),
            data_dir: PathBuf::new(),
            data_fingerprint: String::new(),
            losses: Vec::new(),
            tokens: 0,
            seconds: 0.0,
            heldout_base: None,
            reference: Vec::new(),
            costs: vec![cost(100.0, 0.0), cost(300.0, 200.0)],
            units: 0.0,
            checks: Vec::new(),
            stopped: None,
            kept: None,
            judged: Vec::new(),
            cooldown: None,
        };
        assert_eq!(state.units_left(), 1000.0 + 200.0 + 1500.0);
        state.step = 10;
        assert_eq!(state.units_left(), 200.0 + 1500.0, "the DPO stage's reference pass is still ahead");
        state.step = 12;
        assert_eq!(state.units_left(), 900.0);
        state.step = 15;
        assert_eq!(state.units_left(), 0.0);
        // Resumed at update 10 after 1 200 units in 1 200 s (a loaded machine); 600 units since,
        // in 300 s: 900 units left take 450 s, not 900 s.
        (state.step, state.units, state.seconds) = (12, 1800.0, 1500.0);
        assert_eq!(state.eta_secs((1200.0, 1200.0)), 450.0);
        assert_eq!(state.eta_secs((1800.0, 1500.0)), 900.0 * 1500.0 / 1800.0, "no update yet: the whole run's speed");
        assert_eq!(
            [clock_text(12.4), clock_text(250.0), clock_text(3900.0)],
            ["12 s".to_owned(), "4 min 10 s".to_owned(), "1 h 05 min".to_owned()]
        );
    }
}
