//! The stages of a run and one update of each: SFT on the curated examples, then — when there is
//! enough preference data — KTO on taken vs rejected completions and DPO on pairs (the user's final
//! code ≻ the suggestion), and — when asked for — the reward stage on the outcomes of shown
//! suggestions (RLOO, `preference.rs`). Each stage is its own cosine schedule with fresh optimizer
//! moments; the stages after SFT compare against the adapter as the stage found it (the
//! reference), whose log-likelihoods are computed once at the stage's start and kept in the
//! checkpoint.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::Settings;
use super::data::{DpoItem, KtoItem, RewardItem, Weighted};
use super::model::{Base, Dropout, Grads, Lora, Sequence};
use super::preference::{self, KtoTerm, RewardTerm};

/// KTO needs this many desirable and this many undesirable examples.
const KTO_MIN_EACH: usize = 4;
/// DPO needs this many pairs.
const DPO_MIN: usize = 2;
/// The reward stage needs this many items, with at least two different rewards.
const REWARD_MIN: usize = 8;
/// `ε` of the reward stage's trust region.
const REWARD_CLIP: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Sft,
    Kto,
    Dpo,
    Reward,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Sft => "sft",
            StageKind::Kto => "kto",
            StageKind::Dpo => "dpo",
            StageKind::Reward => "reward",
        }
    }
}

pub(crate) struct Data {
    pub(crate) sft: Vec<Weighted>,
    pub(crate) kto: Vec<KtoItem>,
    pub(crate) dpo: Vec<DpoItem>,
    pub(crate) reward: Vec<RewardItem>,
    /// Tokens one of SFT's checks passes forward (`checks.rs`); 0: no checks.
    pub(crate) check_tokens: usize,
}

impl Data {
    /// How many items a stage draws from.
    pub(crate) fn len(&self, kind: StageKind) -> usize {
        match kind {
            StageKind::Sft => self.sft.len(),
            StageKind::Kto => self.kto.len(),
            StageKind::Dpo => self.dpo.len(),
            StageKind::Reward => self.reward.len(),
        }
    }

    /// Each reward item's advantage: its reward less the mean of the others' (`preference.rs`).
    pub(crate) fn reward_advantages(&self) -> Vec<f64> {
        preference::advantages(&self.reward.iter().map(|r| r.reward).collect::<Vec<_>>())
    }

    pub(crate) fn tiers(&self, kind: StageKind) -> Vec<u8> {
        match kind {
            StageKind::Sft => self.sft.iter().map(|w| w.tier).collect(),
            _ => vec![0; self.len(kind)],
        }
    }
}

/// What a token costs through a forward pass alone, against a forward and a backward pass (with
/// gradient checkpointing the backward pass recomputes the forward: about 4 forwards in all).
const FORWARD: f64 = 0.3;
/// How a budget too small for every planned update is shared among the stages present.
const SHARES: [(StageKind, f64); 4] =
    [(StageKind::Sft, 0.6), (StageKind::Kto, 0.2), (StageKind::Dpo, 0.2), (StageKind::Reward, 0.2)];

/// What a stage costs in *units*, token passes (one token through a forward and a backward pass):
/// per update (a batch of average items), and once at its start (the reference pass of the
/// preference stages).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Cost {
    pub(crate) update: f64,
    pub(crate) start: f64,
}

impl Cost {
    /// The stage's cost with `updates` updates.
    pub(crate) fn of(&self, updates: usize) -> f64 {
        self.start + updates as f64 * self.update
    }
}

fn mean(lengths: impl Iterator<Item = usize>) -> f64 {
    let (sum, n) = lengths.fold((0, 0), |(sum, n), len| (sum + len, n + 1));
    if n == 0 { 0.0 } else { sum as f64 / n as f64 }
}

/// The cost of one update of `kind` on average items, and of its start when it has `updates`
/// updates: the reference pass scores only the items those updates draw.
pub(crate) fn cost(settings: &Settings, data: &Data, kind: StageKind, updates: usize) -> Cost {
    let batch = settings.batch as f64;
    let drawn = (updates * settings.batch).min(data.len(kind)) as f64;
    // SFT's checks: one at its start, one every `validate_every` updates.
    let checks = if kind == StageKind::Sft && checked(settings, updates) { check_units(data) } else { 0.0 };
    let update = match kind {
        StageKind::Sft => {
            batch * mean(data.sft.iter().map(|w| w.sequence.tokens.len()))
                + checks / settings.validate_every.max(1) as f64
        }
        StageKind::Kto => {
            batch
                * (mean(data.kto.iter().map(|k| k.sequence.tokens.len()))
                    + FORWARD * mean(data.kto.iter().map(|k| k.mismatched.tokens.len())))
        }
        StageKind::Dpo | StageKind::Reward => batch * reference_tokens(data, kind),
    };
    // A later stage is measured at its start and end to be judged (`checks.rs`); the start's
    // measure is often the last check's, but not always: planned as two.
    let start = if kind == StageKind::Sft {
        checks
    } else {
        let judged = if settings.validate_every > 0 { 2.0 * check_units(data) } else { 0.0 };
        FORWARD * drawn * reference_tokens(data, kind) + judged
    };
    Cost { update, start }
}

/// Whether an SFT stage of `updates` is checked (`checks.rs`): only one long enough to be checked
/// twice before its end.
pub(crate) fn checked(settings: &Settings, updates: usize) -> bool {
    settings.validate_every > 0 && updates >= 2 * settings.validate_every
}

/// The units one of SFT's checks costs (forward passes alone).
pub(crate) fn check_units(data: &Data) -> f64 {
    FORWARD * data.check_tokens as f64
}

/// Tokens the reference pass scores per item: both sequences of a KTO item or a DPO pair, the
/// one of a reward item.
fn reference_tokens(data: &Data, kind: StageKind) -> f64 {
    match kind {
        StageKind::Sft => 0.0,
        StageKind::Kto => mean(data.kto.iter().map(|k| k.sequence.tokens.len() + k.mismatched.tokens.len())),
        StageKind::Dpo => mean(data.dpo.iter().map(|d| d.chosen.tokens.len() + d.rejected.tokens.len())),
        StageKind::Reward => mean(data.reward.iter().map(|r| r.sequence.tokens.len())),
    }
}

/// The units an update of `kind` on these items took (its forward-only passes counted at
/// [`FORWARD`]).
pub(crate) fn units(update_tokens: usize, forward_tokens: usize) -> f64 {
    update_tokens as f64 + FORWARD * forward_tokens as f64
}

/// The stages this data and these settings call for, with their number of updates: fitted to
/// `settings.steps` (the whole run's updates) when given, else to `budget` (units the time
/// allows). Updates the user asked for (`steps`, `sft_steps`) are not cut by a budget.
pub(crate) fn plan(settings: &Settings, data: &Data, budget: Option<f64>) -> Vec<(StageKind, usize)> {
    // `epochs` passes over the data, and at least one update per epoch for a set smaller than a batch.
    let updates = |n: usize| (settings.epochs * n).div_ceil(settings.batch).max(settings.epochs).max(1);
    let mut stages = vec![(StageKind::Sft, settings.sft_steps.unwrap_or_else(|| updates(data.sft.len())))];
    if settings.preference {
        let desirable = data.kto.iter().filter(|k| k.desirable).count();
        if desirable >= KTO_MIN_EACH && data.kto.len() - desirable >= KTO_MIN_EACH {
            stages.push((StageKind::Kto, updates(data.kto.len())));
        }
        if data.dpo.len() >= DPO_MIN {
            stages.push((StageKind::Dpo, updates(data.dpo.len())));
        }
    }
    let first = data.reward.first().map(|r| r.reward);
    let varied = data.reward.iter().any(|r| Some(r.reward) != first);
    if settings.reward && data.reward.len() >= REWARD_MIN && varied {
        stages.push((StageKind::Reward, updates(data.reward.len())));
    }
    if let Some(total) = settings.after_sft_steps {
        share_out(&mut stages[1..], total);
    }
    if let Some(total) = settings.steps {
        // Shared in proportion to the passes planned; SFT takes what is left (more passes when the
        // total is larger).
        let planned: usize = stages.iter().map(|(_, n)| n).sum();
        for (_, n) in stages.iter_mut().skip(1) {
            *n = *n * total / planned;
        }
        let preference: usize = stages[1..].iter().map(|(_, n)| n).sum();
        stages[0].1 = total - preference;
    }
    let asked = settings.steps.is_some() || settings.sft_steps.is_some();
    if let Some(budget) = budget.filter(|_| !asked) {
        let total = |kind: StageKind, n: usize| cost(settings, data, kind, n).of(n);
        let needed: f64 = stages.iter().map(|(kind, n)| total(*kind, *n)).sum();
        if needed > budget {
            let share = |kind: StageKind| SHARES.iter().find(|(k, _)| *k == kind).map_or(0.0, |(_, s)| *s);
            let shares: f64 = stages.iter().map(|(kind, _)| share(*kind)).sum();
            let mut used = 0.0;
            for (kind, n) in stages.iter_mut().skip(1) {
                if settings.after_sft_steps.is_none() {
                    let room = budget * share(*kind) / shares;
                    // Each update costs itself and, at most, the reference pass of the items it draws.
                    let c = cost(settings, data, *kind, 1);
                    let most = c.update + FORWARD * settings.batch as f64 * reference_tokens(data, *kind);
                    *n = (*n).min((room / most) as usize);
                }
                used += total(*kind, *n);
            }
            let sft = &mut stages[0].1;
            // Checked, as a stage that long is: its checks are part of each update's cost.
            let c = cost(settings, data, StageKind::Sft, *sft);
            *sft = (*sft).min(((budget - used - c.start) / c.update.max(1.0)) as usize).max(1);
        }
    }
    stages.retain(|(kind, n)| *n > 0 || *kind == StageKind::Sft);
    stages
}

/// `total` updates shared among `stages` in proportion to the updates planned for each (floored;
/// the updates flooring leaves go to the first stages, so that they add up to `total`).
fn share_out(stages: &mut [(StageKind, usize)], total: usize) {
    let planned: usize = stages.iter().map(|(_, n)| n).sum();
    if planned == 0 {
        return;
    }
    for (_, n) in stages.iter_mut() {
        *n = *n * total / planned;
    }
    let left = total - stages.iter().map(|(_, n)| n).sum::<usize>();
    for (_, n) in stages.iter_mut().take(left) {
        *n += 1;
    }
}

/// One update's loss and gradients.
pub(crate) struct Update {
    pub(crate) loss: f64,
    pub(crate) grads: Grads,
    pub(crate) tokens: usize,
    /// Its cost in units (see [`Cost`]).
    pub(crate) units: f64,
}

/// Weighted mean NLL per completion token of `items`.
pub(crate) fn sft(
    base: &Base,
    lora: &Lora,
    items: &[&Weighted],
    dropout: impl Fn(usize) -> Dropout,
    checkpoint: bool,
) -> candle_core::Result<Update> {
    let weight_sum: f64 = items.iter().map(|s| s.weight).sum();
    let mut grads: Grads = vec![None; lora.pairs.len()];
    let (mut loss, mut tokens) = (0.0, 0);
    for (i, item) in items.iter().enumerate() {
        let share = item.weight / weight_sum / item.sequence.targets() as f64;
        let sum = base.accumulate(&item.sequence, -share, lora, Some(dropout(i)), checkpoint, &mut grads)?;
        loss -= share * sum;
        tokens += item.sequence.tokens.len();
    }
    Ok(Update { loss, grads, tokens, units: units(tokens, 0) })
}

/// The reference log-likelihoods a stage after SFT needs, two per item: KTO (matched,
/// mismatched), DPO (chosen, rejected), reward (the suggestion, 0) — for the items its updates
/// will draw (`drawn`, from the stage's fixed order); the others stay 0, never read (a
/// checkpoint's JSON has no NaN).
pub(crate) fn reference(
    base: &Base,
    lora: &Lora,
    kind: StageKind,
    data: &Data,
    drawn: &std::collections::BTreeSet<usize>,
) -> candle_core::Result<Vec<f64>> {
    let pairs: Vec<(&Sequence, &Sequence)> = match kind {
        StageKind::Sft => return Ok(Vec::new()),
        StageKind::Kto => data.kto.iter().map(|k| (&k.sequence, &k.mismatched)).collect(),
        StageKind::Dpo => data.dpo.iter().map(|d| (&d.chosen, &d.rejected)).collect(),
        StageKind::Reward => {
            let mut out = vec![0.0; 2 * data.reward.len()];
            for &i in drawn {
                out[2 * i] = base.logprob(&data.reward[i].sequence, Some(lora))?;
            }
            return Ok(out);
        }
    };
    let mut out = vec![0.0; 2 * pairs.len()];
    for &i in drawn {
        let (a, b) = pairs[i];
        out[2 * i] = base.logprob(a, Some(lora))?;
        out[2 * i + 1] = base.logprob(b, Some(lora))?;
    }
    Ok(out)
}

/// `π` of `sequence` and its gradient, on their own (the loss's coefficient comes later).
fn likelihood(base: &Base, lora: &Lora, sequence: &Sequence, checkpoint: bool) -> candle_core::Result<(f64, Grads)> {
    let mut grads: Grads = vec![None; lora.pairs.len()];
    let pi = base.accumulate(sequence, 1.0, lora, None, checkpoint, &mut grads)?;
    Ok((pi, grads))
}

/// `total += c · part`.
fn add_scaled(total: &mut Grads, part: Grads, c: f64) -> candle_core::Result<()> {
    for (sum, part) in total.iter_mut().zip(part) {
        let Some(part) = part else { continue };
        let scaled: Vec<Tensor> = part.iter().map(|g| g * c).collect::<candle_core::Result<_>>()?;
        *sum = Some(match sum.take() {
            Some(previous) => previous.iter().zip(&scaled).map(|(p, g)| p + g).collect::<candle_core::Result<_>>()?,
            None => scaled,
        });
    }
    Ok(())
}

/// One KTO update over `items` (index into the stage's data, item).
pub(crate) fn kto(
    base: &Base,
    lora: &Lora,
    items: &[(usize, &KtoItem)],
    reference: &[f64],
    beta: f64,
    checkpoint: bool,
) -> candle_core::Result<Update> {
    let frozen = lora.detached();
    let mut mismatched = Vec::with_capacity(items.len());
    let mut parts = Vec::with_capacity(items.len());
    let (mut trained, mut forward) = (0, 0);
    for &(index, item) in items {
        mismatched.push(base.logprob(&item.mismatched, Some(&frozen))? - reference[2 * index + 1]);
        let (pi, grads) = likelihood(base, lora, &item.sequence, checkpoint)?;
        let term = KtoTerm { delta: pi - reference[2 * index], desirable: item.desirable, weight: item.weight };
        parts.push((term, grads));
        trained += item.sequence.tokens.len();
        forward += item.mismatched.tokens.len();
    }
    let tokens = trained + forward;
    let z0 = preference::kl_estimate(&mismatched);
    let terms: Vec<KtoTerm> = parts.iter().map(|(t, _)| *t).collect();
    let (loss, coeffs) = preference::kto(&terms, z0, beta);
    let mut grads: Grads = vec![None; lora.pairs.len()];
    for ((_, part), c) in parts.into_iter().zip(coeffs) {
        add_scaled(&mut grads, part, c)?;
    }
    Ok(Update { loss, grads, tokens, units: units(trained, forward) })
}

/// One DPO update over `items` (index into the stage's data, item).
pub(crate) fn dpo(
    base: &Base,
    lora: &Lora,
    items: &[(usize, &DpoItem)],
    reference: &[f64],
    beta: f64,
    checkpoint: bool,
) -> candle_core::Result<Update> {
    let mut ratios = Vec::with_capacity(items.len());
    let mut parts = Vec::with_capacity(items.len());
    let mut tokens = 0;
    for &(index, item) in items {
        let (chosen, chosen_grads) = likelihood(base, lora, &item.chosen, checkpoint)?;
        let (rejected, rejected_grads) = likelihood(base, lora, &item.rejected, checkpoint)?;
        ratios.push((chosen - reference[2 * index], rejected - reference[2 * index + 1]));
        parts.push((chosen_grads, rejected_grads));
        tokens += item.chosen.tokens.len() + item.rejected.tokens.len();
    }
    let (loss, coeffs) = preference::dpo(&ratios, beta);
    let mut grads: Grads = vec![None; lora.pairs.len()];
    for ((chosen, rejected), (cc, cr)) in parts.into_iter().zip(coeffs) {
        add_scaled(&mut grads, chosen, cc)?;
        add_scaled(&mut grads, rejected, cr)?;
    }
    Ok(Update { loss, grads, tokens, units: units(tokens, 0) })
}

/// One reward update over `items` (index into the stage's data, item), with the stage's
/// `advantages` ([`Data::reward_advantages`]). A batch whose advantages are all 0 teaches nothing
/// and costs no pass.
pub(crate) fn reward(
    base: &Base,
    lora: &Lora,
    items: &[(usize, &RewardItem)],
    advantages: &[f64],
    reference: &[f64],
    checkpoint: bool,
) -> candle_core::Result<Update> {
    let mut grads: Grads = vec![None; lora.pairs.len()];
    if items.iter().all(|&(index, _)| advantages[index] == 0.0) {
        return Ok(Update { loss: 0.0, grads, tokens: 0, units: 0.0 });
    }
    let mut terms = Vec::with_capacity(items.len());
    let mut parts = Vec::with_capacity(items.len());
    let mut tokens = 0;
    for &(index, item) in items {
        let (pi, part) = likelihood(base, lora, &item.sequence, checkpoint)?;
        let targets = item.sequence.targets();
        terms.push(RewardTerm { advantage: advantages[index], delta: pi - reference[2 * index], tokens: targets });
        parts.push(part);
        tokens += item.sequence.tokens.len();
    }
    let (loss, coeffs) = preference::reward(&terms, REWARD_CLIP);
    for (part, c) in parts.into_iter().zip(coeffs) {
        add_scaled(&mut grads, part, c)?;
    }
    Ok(Update { loss, grads, tokens, units: units(tokens, 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(tokens: usize) -> Sequence {
        Sequence { tokens: vec![1; tokens], prompt_len: tokens / 2 }
    }

    /// 40 SFT examples of 100 tokens, 16 KTO items (half desirable) of 100 + 50, 8 DPO pairs of
    /// 100 + 100.
    fn data() -> Data {
        Data {
            sft: (0..40).map(|_| Weighted { sequence: sequence(100), weight: 1.0, tier: 0 }).collect(),
            kto: (0..16)
                .map(|i| KtoItem {
                    sequence: sequence(100),
                    mismatched: sequence(50),
                    desirable: i % 2 == 0,
                    weight: 1.0,
                })
                .collect(),
            dpo: (0..8).map(|_| DpoItem { chosen: sequence(100), rejected: sequence(100) }).collect(),
            reward: (0..12).map(|i| RewardItem { sequence: sequence(60), reward: f64::from(i % 3) - 1.0 }).collect(),
            check_tokens: 0,
        }
    }

    fn settings() -> Settings {
        Settings { epochs: 3, batch: 4, ..Settings::default() }
    }

    #[test]
    fn epochs_plan_every_stage_and_steps_bound_the_whole_run() {
        let full = plan(&settings(), &data(), None);
        assert_eq!(full, [(StageKind::Sft, 30), (StageKind::Kto, 12), (StageKind::Dpo, 6)]);
        let bounded = plan(&Settings { steps: Some(16), ..settings() }, &data(), None);
        assert_eq!(bounded, [(StageKind::Sft, 10), (StageKind::Kto, 4), (StageKind::Dpo, 2)]);
        assert_eq!(bounded.iter().map(|(_, n)| n).sum::<usize>(), 16);
        let one = plan(&Settings { steps: Some(1), ..settings() }, &data(), None);
        assert_eq!(one, [(StageKind::Sft, 1)], "stages with no update left are dropped");
        let longer = plan(&Settings { steps: Some(100), ..settings() }, &data(), None);
        assert_eq!(longer[0], (StageKind::Sft, 100 - 25 - 12), "more passes of SFT");
        let sft = plan(&Settings { sft_steps: Some(5), ..settings() }, &data(), None);
        assert_eq!(sft, [(StageKind::Sft, 5), (StageKind::Kto, 12), (StageKind::Dpo, 6)]);
        let after = Settings { sft_steps: Some(5), after_sft_steps: Some(5), ..settings() };
        assert_eq!(plan(&after, &data(), None), [(StageKind::Sft, 5), (StageKind::Kto, 4), (StageKind::Dpo, 1)]);
        let reward = Settings { preference: false, reward: true, ..after };
        assert_eq!(plan(&reward, &data(), None), [(StageKind::Sft, 5), (StageKind::Reward, 5)], "equal updates");
    }

    #[test]
    fn the_reward_stage_runs_when_asked_for_on_varied_rewards() {
        let asked = Settings { reward: true, ..settings() };
        assert_eq!(plan(&settings(), &data(), None).len(), 3, "off unless asked for");
        assert_eq!(plan(&asked, &data(), None)[3], (StageKind::Reward, 9));
        let reward = cost(&asked, &data(), StageKind::Reward, 9);
        assert_eq!((reward.update, reward.start), (4.0 * 60.0, 0.3 * 12.0 * 60.0));
        let mut same = data();
        same.reward.iter_mut().for_each(|r| r.reward = 0.5);
        assert_eq!(plan(&asked, &same, None).len(), 3, "equal rewards teach nothing");
        let mut few = data();
        few.reward.truncate(REWARD_MIN - 1);
        assert_eq!(plan(&asked, &few, None).len(), 3, "too few items");
        let budget = plan(&asked, &data(), None).iter().map(|(k, n)| cost(&asked, &data(), *k, *n).of(*n)).sum::<f64>();
        let fitted = plan(&asked, &data(), Some(budget * 0.5));
        let spent: f64 = fitted.iter().map(|(k, n)| cost(&asked, &data(), *k, *n).of(*n)).sum();
        assert!(spent <= budget * 0.5 && fitted.iter().any(|(k, _)| *k == StageKind::Reward), "{fitted:?}");
    }

    #[test]
    fn a_budget_is_shared_among_the_stages_and_never_overrun() {
        let s = settings();
        let (sft, kto, dpo) = (
            cost(&s, &data(), StageKind::Sft, 30),
            cost(&s, &data(), StageKind::Kto, 12),
            cost(&s, &data(), StageKind::Dpo, 6),
        );
        assert_eq!((sft.update, sft.start), (400.0, 0.0));
        assert_eq!((kto.update, kto.start), (4.0 * (100.0 + 0.3 * 50.0), 0.3 * 16.0 * 150.0));
        assert_eq!((dpo.update, dpo.start), (800.0, 0.3 * 8.0 * 200.0));
        let one = cost(&s, &data(), StageKind::Dpo, 1);
        assert_eq!(one.start, 0.3 * 4.0 * 200.0, "one update's reference pass scores the 4 pairs it draws");
        let total = |stages: &[(StageKind, usize)]| -> f64 {
            stages.iter().map(|(k, n)| cost(&s, &data(), *k, *n).of(*n)).sum()
        };
        let everything = total(&plan(&s, &data(), None));
        assert_eq!(plan(&s, &data(), Some(everything)), plan(&s, &data(), None), "it fits: nothing changes");
        for budget in [everything * 0.7, everything * 0.3, 5000.0] {
            let fitted = plan(&s, &data(), Some(budget));
            assert!(total(&fitted) <= budget, "{budget}: {fitted:?}");
            assert!(fitted[0].1 >= 1);
        }
        assert_eq!(plan(&s, &data(), Some(0.0)), [(StageKind::Sft, 1)], "at least one update");
        let asked = Settings { steps: Some(16), ..settings() };
        assert_eq!(plan(&asked, &data(), Some(0.0)), plan(&asked, &data(), None), "asked-for updates are kept");
        let after = Settings { after_sft_steps: Some(3), ..settings() };
        let fitted = plan(&after, &data(), Some(everything * 0.3));
        assert_eq!(fitted[1..], [(StageKind::Kto, 2), (StageKind::Dpo, 1)], "not cut by the budget");
        assert!(fitted[0].1 < 30 && total(&fitted) <= everything * 0.3, "SFT gets the rest: {fitted:?}");
    }

    #[test]
    fn a_long_sft_stage_pays_for_its_checks_and_a_budget_still_holds() {
        let s = Settings { validate_every: 5, ..settings() };
        let data = Data { check_tokens: 1000, ..data() };
        let long = cost(&s, &data, StageKind::Sft, 30);
        assert_eq!((long.update, long.start), (400.0 + 300.0 / 5.0, 300.0), "a check every 5 and one at the start");
        assert_eq!(cost(&s, &data, StageKind::Sft, 9), cost(&settings(), &data, StageKind::Sft, 9), "too short");
        let unjudged = Settings { validate_every: 0, ..s.clone() };
        let (dpo, unjudged) = (cost(&s, &data, StageKind::Dpo, 3), cost(&unjudged, &data, StageKind::Dpo, 3));
        assert_eq!(dpo.start - unjudged.start, 600.0, "a later stage is measured at its start and end");
        let total =
            |stages: &[(StageKind, usize)]| -> f64 { stages.iter().map(|(k, n)| cost(&s, &data, *k, *n).of(*n)).sum() };
        let everything = total(&plan(&s, &data, None));
        for budget in [everything * 0.7, everything * 0.3] {
            let fitted = plan(&s, &data, Some(budget));
            assert!(total(&fitted) <= budget, "{budget}: {fitted:?}");
        }
    }
}
