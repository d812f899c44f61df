//! Telling SFT when it has learnt enough. Every `validate_every` updates (and at the stage's start
//! and end) the adapter's mean loss per token is measured on the validation split — the user's
//! functions set aside by curation, neither trained on nor judged by the gate — and on general
//! code: standard-library files the gate does not score (`corpus::general`'s `others`). SFT stops
//! once the validation loss has not improved for `patience` checks (the user's code is learnt;
//! more updates only forget) or the general-code loss rose past the gate's margin, and the
//! adapter of the best check within that margin is kept. A night's plan is thus a most, not a
//! must (ARCHITECTURE.md, "Training").
//!
//! Each stage after SFT (KTO, DPO, the reward stage) is measured the same way at its start and its
//! end, and undone — the adapter it started from put back — when it made the validation loss
//! worse, or took general code past the margin further than it found it: on replayed real history
//! DPO after a long SFT cost the exam points while raising the validation loss (README, "Learning").

use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::adapter::Adapter;
use super::checkpoint::State;
use super::model::{Base, Lora, Sequence};
use super::{Event, Settings, StageKind, TrainError, files, optim, stages};
use crate::engine::TextTokenizer;

/// General-code files measured at each check, spread evenly over the corpus's others.
const GENERAL_FILES: usize = 8;
/// Tokens of each general-code file measured (its beginning), as the gate does.
const GENERAL_TOKENS: usize = 512;
/// The best check's adapter, in a checkpoint.
const BEST_FILE: &str = "best.safetensors";

/// What each check measures.
pub(crate) struct Watched {
    validation: Vec<Sequence>,
    general: Vec<Sequence>,
}

impl Watched {
    /// The first [`GENERAL_TOKENS`] tokens of [`GENERAL_FILES`] of `others`, spread evenly.
    pub(crate) fn new(
        validation: Vec<Sequence>,
        others: &[std::path::PathBuf],
        tokenizer: &TextTokenizer,
    ) -> Result<Watched, TrainError> {
        let step = (others.len() / GENERAL_FILES).max(1);
        let mut general = Vec::new();
        for path in others.iter().step_by(step).take(GENERAL_FILES) {
            // An unreadable file is one fewer measured, not a failed night.
            let Ok(text) = crate::corpus::beginning(path) else { continue };
            let mut tokens = tokenizer.encode(&text)?;
            tokens.truncate(GENERAL_TOKENS + 1);
            if tokens.len() >= 2 {
                general.push(Sequence { tokens, prompt_len: 1 });
            }
        }
        Ok(Watched { validation, general })
    }

    /// Nothing to measure: no validation split and no general code.
    pub(crate) fn none() -> Watched {
        Watched { validation: Vec::new(), general: Vec::new() }
    }

    /// Tokens one check passes forward (0 when nothing is watched: no check runs).
    pub(crate) fn tokens(&self) -> usize {
        self.validation.iter().chain(&self.general).map(|s| s.tokens.len()).sum()
    }
}

/// The adapter a check measures: the frozen base, the adapter's parameters (copied and put back)
/// and its view for forward passes (renewed when they are put back).
pub(crate) struct Checked<'a> {
    pub(crate) base: &'a Base,
    pub(crate) adapter: &'a Adapter,
    pub(crate) lora: &'a mut Lora,
}

impl Checked<'_> {
    fn measure(&self, watched: &Watched, step: usize) -> candle_core::Result<Check> {
        let mean = |sequences: &[Sequence]| {
            if sequences.is_empty() { Ok(None) } else { self.base.mean_scores(sequences, Some(self.lora)).map(Some) }
        };
        let validation = mean(&watched.validation)?;
        Ok(Check {
            step,
            validation: validation.as_ref().map(|m| m.nll),
            top1: validation.map(|m| m.top1),
            general: mean(&watched.general)?.map(|m| m.nll),
        })
    }

    /// Copies of the adapter's parameters (the best check's, or those a stage starts from).
    fn snapshot(&self) -> candle_core::Result<Vec<Tensor>> {
        self.adapter.vars.iter().map(|v| v.as_tensor().copy()).collect()
    }

    fn restore(&mut self, tensors: &[Tensor]) -> Result<(), TrainError> {
        self.adapter.vars.iter().zip(tensors).try_for_each(|(var, tensor)| var.set(tensor))?;
        *self.lora = self.adapter.view()?;
        Ok(())
    }
}

/// SFT's checks over a run: what they measure, the best check's adapter so far (kept in the
/// checkpoint too) and what one check costs in the plan's units.
pub(crate) struct Checker {
    watched: Watched,
    best: Option<Vec<Tensor>>,
    units: f64,
}

impl Checker {
    pub(crate) fn new(watched: Watched, best: Option<Vec<Tensor>>, data: &stages::Data) -> Checker {
        Checker { watched, best, units: stages::check_units(data) }
    }

    pub(crate) fn best(&self) -> Option<&[Tensor]> {
        self.best.as_deref()
    }

    /// Whether an SFT stage of `sft_updates` is checked: one too short to be checked twice before
    /// its end cannot stop early, and the gate judges what it learnt.
    pub(crate) fn applies(&self, settings: &Settings, sft_updates: usize) -> bool {
        self.watched.tokens() > 0 && stages::checked(settings, sft_updates)
    }

    /// The check before SFT's first update (a resumed run has it already).
    pub(crate) fn at_start(
        &mut self,
        state: &mut State,
        checked: &Checked,
        events: &dyn Fn(Event),
    ) -> Result<(), TrainError> {
        if state.checks.is_empty() {
            self.check(state, checked, events)?;
        }
        Ok(())
    }

    /// After SFT's update `local` of `steps` (stage `index` of the plan): a check when one is due.
    /// When the checks say stop, or at the stage's end, the best check's adapter is restored; a
    /// stop ends the stage here and the plan's later stages move up.
    pub(crate) fn after_update(
        &mut self,
        state: &mut State,
        (index, local, steps): (usize, usize, usize),
        checked: &mut Checked,
        events: &dyn Fn(Event),
    ) -> Result<(), TrainError> {
        let end_of_stage = local + 1 == steps;
        let cooling = state.cooldown.is_some_and(|c| local >= c.from);
        if ((local + 1) % state.settings.validate_every != 0 || cooling) && !end_of_stage {
            return Ok(());
        }
        let verdict = self.check(state, checked, events)?;
        state.units += self.units;
        if (verdict.stop.is_some() || end_of_stage) && verdict.best + 1 != state.checks.len() {
            checked.restore(self.best.as_deref().expect("the best check's adapter was kept"))?;
        }
        state.kept = Some(state.checks[verdict.best].step);
        if let Some(reason) = verdict.stop.filter(|_| !end_of_stage) {
            // The stage's first update is the run's `first`; the start check's adapter is untrained.
            let first = state.step - (local + 1);
            let kept = (verdict.best > 0).then(|| state.checks[verdict.best].step - first);
            let cooldown = kept.and_then(|kept| Cooldown::after(&state.settings, kept, local + 1, steps));
            state.stages[index].1 = local + 1 + cooldown.map_or(0, |c| c.updates);
            state.total = state.stages.iter().map(|(_, n)| n).sum();
            state.stopped = Some(reason);
            state.cooldown = cooldown;
            if let Some(cooldown) = &state.cooldown {
                events(Event::Cooldown { cooldown, kept: state.checks[verdict.best].step });
            }
        }
        Ok(())
    }

    /// Whether the stages after SFT are measured at their start and end, and undone when they
    /// harm (a check each end: part of the stage's start in the plan, `stages::cost`).
    pub(crate) fn judges(&self, settings: &Settings) -> bool {
        self.watched.tokens() > 0 && settings.validate_every > 0
    }

    /// Before a stage after SFT: measures the adapter it starts from (unless an earlier check
    /// measured it, [`measured_already`]) and keeps a copy to put back (in the checkpoint too, so
    /// a resumed run can still undo the stage).
    pub(crate) fn before_stage(
        &mut self,
        state: &mut State,
        stage: StageKind,
        checked: &Checked,
        events: &dyn Fn(Event),
    ) -> Result<(), TrainError> {
        let before = match measured_already(&state.checks, state.kept, &state.judged) {
            Some(check) => check,
            None => {
                let before = checked.measure(&self.watched, state.step)?;
                events(Event::Check { check: &before, general_rise: general_rise(state, &before), stop: None });
                before
            }
        };
        state.judged.push(Judged { stage, before, after: None, undone: None });
        self.best = Some(checked.snapshot()?);
        Ok(())
    }

    /// At the end of a stage after SFT: measures the adapter again and undoes the stage when it
    /// did harm ([`harm`]).
    pub(crate) fn after_stage(
        &mut self,
        state: &mut State,
        checked: &mut Checked,
        events: &dyn Fn(Event),
    ) -> Result<(), TrainError> {
        let after = checked.measure(&self.watched, state.step)?;
        let rise = general_rise(state, &after);
        events(Event::Check { check: &after, general_rise: rise, stop: None });
        let judged = state.judged.last().expect("measured at the stage's start");
        let undone = harm(&judged.before, general_rise(state, &judged.before), &after, rise, state.settings.nll_rise);
        if undone.is_some() {
            checked.restore(self.best.as_deref().expect("the adapter the stage started from was kept"))?;
        }
        let judged = state.judged.last_mut().expect("measured at the stage's start");
        (judged.after, judged.undone) = (Some(after), undone);
        events(Event::Judged { judged });
        Ok(())
    }

    /// Measures the adapter as it stands, keeps a copy of it when it is the best so far, and says
    /// what the checks so far decide.
    fn check(&mut self, state: &mut State, checked: &Checked, events: &dyn Fn(Event)) -> Result<Verdict, TrainError> {
        state.checks.push(checked.measure(&self.watched, state.step)?);
        let verdict = verdict(&state.checks, &state.settings);
        if verdict.best + 1 == state.checks.len() {
            self.best = Some(checked.snapshot()?);
        }
        let last = state.checks.last().expect("just measured");
        events(Event::Check { check: last, general_rise: general_rise(state, last), stop: verdict.stop.as_deref() });
        Ok(verdict)
    }
}

/// One check: after `step` updates of the run, the mean loss per token on each set watched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub step: usize,
    pub validation: Option<f64>,
    /// The share of the validation completions' tokens the adapter ranks first (teacher-forced):
    /// recorded beside the loss, for it may track greedy completions better (README, "Learning").
    #[serde(default)]
    pub top1: Option<f64>,
    pub general: Option<f64>,
}

/// SFT going on from the kept check's adapter once the checks stopped it early. The plan was for
/// more updates, so the learning rate there is still high; the usual last part of a schedule,
/// its fall to zero, is what the early stop cut off. Fresh moments (those of the updates after the
/// kept check belong to an adapter that was put back) and a short warmup, then the rate falls in a
/// straight line to zero; one check at its end, and its adapter is kept only if that check is the
/// best (README, "Learning").
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cooldown {
    /// The SFT update it starts at.
    pub from: usize,
    pub updates: usize,
    /// The rate after the warmup: the schedule's at the kept check's update.
    pub lr: f64,
}

impl Cooldown {
    /// The cool-down from the adapter SFT update `kept` (counted from 1) made, starting at update
    /// `from` of a stage planned for `steps`; none when the share is 0 or the plan has no room
    /// for it (the stop came at its end: the schedule's own fall to zero was run).
    fn after(settings: &Settings, kept: usize, from: usize, steps: usize) -> Option<Cooldown> {
        let updates = (settings.cooldown * kept as f64).ceil() as usize;
        (kept > 0 && updates > 0 && from + updates <= steps).then(|| Cooldown {
            from,
            updates,
            lr: optim::cosine_lr(settings.lr, kept - 1, steps, optim::warmup(steps, settings.warmup_ratio)),
        })
    }

    /// The learning rate of SFT update `local`, when it is one of the cool-down's.
    pub(crate) fn lr(&self, local: usize, settings: &Settings) -> Option<f64> {
        let step = local.checked_sub(self.from).filter(|&s| s < self.updates)?;
        Some(optim::cooldown_lr(self.lr, step, self.updates, optim::warmup(self.updates, settings.warmup_ratio)))
    }
}

/// A stage after SFT as measured at its start and its end; `undone` says why it was undone, if it
/// was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub stage: StageKind,
    pub before: Check,
    pub after: Option<Check>,
    pub undone: Option<String>,
}

/// The check that measured the adapter a stage after SFT starts from, when one did: the stage
/// before it kept or undone (its `after` or its `before`), else the check whose adapter SFT kept.
fn measured_already(checks: &[Check], kept: Option<usize>, judged: &[Judged]) -> Option<Check> {
    match judged.last() {
        Some(last) if last.undone.is_some() => Some(last.before.clone()),
        Some(last) => last.after.clone(),
        None => kept.and_then(|step| checks.iter().find(|c| c.step == step)).cloned(),
    }
}

/// The general-code loss of `check` against the base model's: SFT's first check, or without SFT
/// checks the first stage judged after it (the closest measure of the base there is).
fn general_rise(state: &State, check: &Check) -> Option<f64> {
    let start = state.checks.first().or(state.judged.first().map(|j| &j.before))?;
    check.general.zip(start.general).filter(|(_, then)| *then > 0.0).map(|(now, then)| now / then - 1.0)
}

/// Why a stage that took the adapter from `before` to `after` must be undone, if it must: it made
/// the validation loss worse, or took the general-code loss past `margin` and further than it found
/// it (a stage is not blamed for forgetting SFT did).
fn harm(
    before: &Check,
    rise_before: Option<f64>,
    after: &Check,
    rise_after: Option<f64>,
    margin: f64,
) -> Option<String> {
    if let (Some(then), Some(now)) = (before.validation, after.validation)
        && now > then
    {
        return Some(format!("validation loss up from {then:.4} to {now:.4}"));
    }
    match (rise_before, rise_after) {
        (Some(then), Some(now)) if now > margin && now > then => {
            Some(format!("general-code loss up {:.1} % (more than the {:.1} % allowed)", now * 100.0, margin * 100.0))
        }
        _ => None,
    }
}

/// What the checks so far (the first at the stage's start) say.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    /// The check whose adapter is the one to keep.
    best: usize,
    /// Why SFT stops now, if it does.
    stop: Option<String>,
}

fn verdict(checks: &[Check], settings: &Settings) -> Verdict {
    let start = &checks[0];
    let rise = |c: &Check| match (c.general, start.general) {
        (Some(now), Some(then)) if then > 0.0 => now / then - 1.0,
        _ => 0.0,
    };
    let within = |c: &&Check| rise(c) <= settings.nll_rise;
    // The lowest validation loss within the margin (the earliest of equals); without a validation
    // split, the newest check within it.
    let best = checks
        .iter()
        .enumerate()
        .filter(|(_, c)| within(c))
        .min_by(|(i, a), (j, b)| match (a.validation, b.validation) {
            (Some(a), Some(b)) => a.total_cmp(&b).then(i.cmp(j)),
            _ => j.cmp(i),
        })
        .map_or(0, |(i, _)| i);
    let last = checks.last().expect("a check");
    // Forgetting past the margin from the first check on: the least trained adapter is kept, not
    // the start's nothing, for the gate may still serve it weaker (`[eval] strengths`).
    let best = if best == 0 && checks.len() > 1 && !within(&&checks[1]) { 1 } else { best };
    let stop = if !within(&last) {
        Some(format!(
            "general-code loss up {:.1} % (more than the {:.1} % allowed)",
            rise(last) * 100.0,
            settings.nll_rise * 100.0
        ))
    } else if last.validation.is_some() && checks.len() - 1 - best >= settings.patience {
        Some(format!(
            "validation loss not better than {:.4} (update {}) for {} checks",
            checks[best].validation.unwrap_or_default(),
            checks[best].step,
            checks.len() - 1 - best
        ))
    } else {
        None
    };
    Verdict { best, stop }
}

pub(crate) fn save_best(dir: &Path, best: &[Tensor]) -> Result<(), TrainError> {
    let named = best.iter().enumerate().map(|(i, t)| (format!("best.{i}"), t.clone())).collect();
    files::write_tensors(&dir.join(BEST_FILE), &named)
}

/// The best check's adapter a checkpoint holds, if it holds one.
pub(crate) fn load_best(dir: &Path, count: usize) -> Result<Option<Vec<Tensor>>, TrainError> {
    let path = dir.join(BEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let mut tensors = files::read_tensors(&path)?;
    (0..count)
        .map(|i| {
            tensors
                .remove(&format!("best.{i}"))
                .ok_or_else(|| TrainError::Checkpoint { path: path.clone(), reason: format!("best.{i} is missing") })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(step: usize, validation: f64, general: f64) -> Check {
        Check { step, validation: Some(validation), top1: None, general: Some(general) }
    }

    fn settings() -> Settings {
        Settings { validate_every: 25, patience: 2, nll_rise: 0.02, ..Settings::default() }
    }

    #[test]
    fn sft_goes_on_while_the_validation_loss_falls_and_stops_after_patience_checks_without_it() {
        let mut checks = vec![check(0, 1.0, 2.0), check(25, 0.9, 2.01), check(50, 0.8, 2.02)];
        assert_eq!(verdict(&checks, &settings()), Verdict { best: 2, stop: None });
        checks.push(check(75, 0.85, 2.02));
        assert_eq!(verdict(&checks, &settings()), Verdict { best: 2, stop: None }, "one check without a better loss");
        checks.push(check(100, 0.8, 2.03));
        let v = verdict(&checks, &settings());
        assert_eq!(v.best, 2, "an equal loss later is no better");
        assert!(v.stop.as_deref().is_some_and(|s| s.contains("0.8000 (update 50) for 2 checks")), "{v:?}");
    }

    #[test]
    fn a_later_stage_is_undone_when_it_worsens_the_validation_loss_or_takes_general_code_past_the_margin() {
        let margin = 0.02;
        let before = check(250, 0.877, 2.38);
        let undone = |after: &Check, rises: (f64, f64)| harm(&before, Some(rises.0), after, Some(rises.1), margin);
        // The measured night: DPO after 200 updates of SFT (README, "Learning").
        let night = check(288, 0.8908, 2.3844);
        assert_eq!(undone(&night, (0.012, 0.014)).as_deref(), Some("validation loss up from 0.8770 to 0.8908"));
        assert_eq!(undone(&check(288, 0.87, 2.39), (0.012, 0.016)), None, "better validation, general within");
        assert_eq!(undone(&before, (0.012, 0.012)), None, "no change is no harm");
        let forgot = undone(&check(288, 0.87, 2.45), (0.012, 0.041));
        assert!(forgot.as_deref().is_some_and(|w| w.contains("up 4.1 % (more than the 2.0 % allowed)")), "{forgot:?}");
        // SFT's own forgetting past the margin is not the later stage's, unless it adds to it.
        assert_eq!(undone(&check(288, 0.87, 2.45), (0.03, 0.029)), None);
        assert!(undone(&check(288, 0.87, 2.45), (0.03, 0.031)).is_some());
        // Without a validation split only general code judges.
        let blind = |v: Option<f64>| Check { validation: v, ..check(0, 0.0, 2.4) };
        assert_eq!(harm(&blind(None), Some(0.0), &blind(None), Some(0.01), margin), None);
    }

    #[test]
    fn an_early_stop_cools_down_from_the_kept_adapter_when_the_plan_has_room() {
        let settings = Settings { cooldown: 0.2, ..settings() };
        // The night on the faster machine (README, "Learning"): 476 SFT updates planned, stopped
        // at 225 by general code, update 200 kept while the rate was still two thirds of its peak.
        let night = Cooldown::after(&settings, 200, 225, 476).expect("room for 40 updates");
        assert_eq!((night.from, night.updates), (225, 40));
        assert!((night.lr / settings.lr - 0.67).abs() < 0.01, "{night:?}");
        assert_eq!(night.lr(224, &settings), None, "before it, the schedule's own rate");
        let rates: Vec<f64> = (225..265).map(|local| night.lr(local, &settings).unwrap()).collect();
        assert_eq!(rates[0], night.lr / 2.0, "two updates of warmup: fresh moments");
        assert_eq!(rates[1], night.lr);
        assert!(rates.windows(2).skip(2).all(|w| w[1] < w[0]) && rates[39] < night.lr / 30.0, "{rates:?}");
        assert_eq!(night.lr(265, &settings), None);

        assert_eq!(Cooldown::after(&settings, 440, 465, 476), None, "stopped near its end: the rate fell already");
        assert_eq!(Cooldown::after(&Settings { cooldown: 0.0, ..settings }, 200, 225, 476), None, "turned off");
        assert_eq!(Cooldown::after(&settings, 1, 26, 476).map(|c| c.updates), Some(1), "at least one update");
    }

    #[test]
    fn a_later_stage_starts_from_a_measure_the_run_has_when_it_has_one() {
        let checks = [check(0, 1.0, 2.0), check(25, 0.9, 2.0), check(50, 0.95, 2.0)];
        assert_eq!(measured_already(&checks, Some(25), &[]), Some(checks[1].clone()), "the adapter SFT kept");
        assert_eq!(measured_already(&[], None, &[]), None, "SFT unchecked: measure");
        let judged = |undone: Option<&str>| Judged {
            stage: StageKind::Kto,
            before: check(25, 0.9, 2.0),
            after: Some(check(60, 0.92, 2.0)),
            undone: undone.map(str::to_owned),
        };
        assert_eq!(measured_already(&checks, Some(25), &[judged(None)]), Some(check(60, 0.92, 2.0)), "kept");
        assert_eq!(measured_already(&checks, Some(25), &[judged(Some("worse"))]), Some(check(25, 0.9, 2.0)));
    }

    #[test]
    fn general_code_past_the_margin_stops_sft_and_keeps_the_best_check_within_it() {
        let checks = vec![check(0, 1.0, 2.0), check(25, 0.9, 2.05), check(50, 0.7, 2.06)];
        let v = verdict(&checks, &settings());
        assert_eq!(v.best, 1, "every trained check forgot too much: the least trained is kept, for the gate to weaken");
        assert!(v.stop.as_deref().is_some_and(|s| s.contains("up 3.0 % (more than the 2.0 % allowed)")), "{v:?}");

        let checks = vec![check(0, 1.0, 2.0), check(25, 0.9, 2.03), check(50, 0.7, 2.05)];
        let v = verdict(&checks, &settings());
        assert_eq!(v.best, 1, "the lowest validation loss within the margin, not the lowest of all");
        assert!(v.stop.is_some());

        let checks = vec![check(0, 1.0, 2.0), check(25, 1.1, 2.01), check(50, 1.2, 2.01)];
        let v = verdict(&checks, &settings());
        assert_eq!(v.best, 0, "training that only made the user's code less likely keeps nothing of it");
        assert!(v.stop.is_some());
    }

    #[test]
    fn without_a_validation_split_the_newest_check_within_the_margin_is_kept() {
        let general = |step, nll| Check { step, validation: None, top1: None, general: Some(nll) };
        let checks = vec![general(0, 2.0), general(25, 2.01), general(50, 2.02), general(75, 2.01)];
        assert_eq!(verdict(&checks, &settings()), Verdict { best: 3, stop: None }, "no patience without validation");
        let checks = vec![general(0, 2.0), general(25, 2.01), general(50, 2.1)];
        let v = verdict(&checks, &settings());
        assert_eq!(v.best, 1);
        assert!(v.stop.is_some());
    }
}
