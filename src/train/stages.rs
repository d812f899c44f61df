//! The stages of a run and one update of each: SFT on the curated examples, then — when there is
//! enough preference data — KTO on taken vs rejected completions and DPO on pairs (the user's final
//! code ≻ the suggestion). Each stage is its own cosine schedule with fresh optimizer moments; the
//! preference stages compare against the adapter as the stage found it (the reference), whose
//! log-likelihoods are computed once at the stage's start and kept in the checkpoint.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::Settings;
use super::data::{DpoItem, KtoItem, Weighted};
use super::model::{Base, Dropout, Grads, Lora, Sequence};
use super::preference::{self, KtoTerm};

/// KTO needs this many desirable and this many undesirable examples.
const KTO_MIN_EACH: usize = 4;
/// DPO needs this many pairs.
const DPO_MIN: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Sft,
    Kto,
    Dpo,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Sft => "sft",
            StageKind::Kto => "kto",
            StageKind::Dpo => "dpo",
        }
    }
}

pub(crate) struct Data {
    pub(crate) sft: Vec<Weighted>,
    pub(crate) kto: Vec<KtoItem>,
    pub(crate) dpo: Vec<DpoItem>,
}

impl Data {
    /// How many items a stage draws from.
    pub(crate) fn len(&self, kind: StageKind) -> usize {
        match kind {
            StageKind::Sft => self.sft.len(),
            StageKind::Kto => self.kto.len(),
            StageKind::Dpo => self.dpo.len(),
        }
    }

    pub(crate) fn tiers(&self, kind: StageKind) -> Vec<u8> {
        match kind {
            StageKind::Sft => self.sft.iter().map(|w| w.tier).collect(),
            _ => vec![0; self.len(kind)],
        }
    }
}

/// The stages this data and these settings call for, with their number of updates.
pub(crate) fn plan(settings: &Settings, data: &Data) -> Vec<(StageKind, usize)> {
    // `epochs` passes over the data, and at least one update per epoch for a set smaller than a batch.
    let updates = |n: usize| (settings.epochs * n).div_ceil(settings.batch).max(settings.epochs).max(1);
    let mut stages = vec![(StageKind::Sft, settings.steps.unwrap_or_else(|| updates(data.sft.len())))];
    if settings.preference {
        let desirable = data.kto.iter().filter(|k| k.desirable).count();
        if desirable >= KTO_MIN_EACH && data.kto.len() - desirable >= KTO_MIN_EACH {
            stages.push((StageKind::Kto, updates(data.kto.len())));
        }
        if data.dpo.len() >= DPO_MIN {
            stages.push((StageKind::Dpo, updates(data.dpo.len())));
        }
    }
    stages
}

/// One update's loss and gradients.
pub(crate) struct Update {
    pub(crate) loss: f64,
    pub(crate) grads: Grads,
    pub(crate) tokens: usize,
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
    Ok(Update { loss, grads, tokens })
}

/// The reference log-likelihoods a preference stage needs, two per item: KTO (matched,
/// mismatched), DPO (chosen, rejected).
pub(crate) fn reference(base: &Base, lora: &Lora, kind: StageKind, data: &Data) -> candle_core::Result<Vec<f64>> {
    let pairs: Vec<(&Sequence, &Sequence)> = match kind {
        StageKind::Sft => return Ok(Vec::new()),
        StageKind::Kto => data.kto.iter().map(|k| (&k.sequence, &k.mismatched)).collect(),
        StageKind::Dpo => data.dpo.iter().map(|d| (&d.chosen, &d.rejected)).collect(),
    };
    let mut out = Vec::with_capacity(2 * pairs.len());
    for (a, b) in pairs {
        out.push(base.logprob(a, Some(lora))?);
        out.push(base.logprob(b, Some(lora))?);
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
    let mut tokens = 0;
    for &(index, item) in items {
        mismatched.push(base.logprob(&item.mismatched, Some(&frozen))? - reference[2 * index + 1]);
        let (pi, grads) = likelihood(base, lora, &item.sequence, checkpoint)?;
        let term = KtoTerm { delta: pi - reference[2 * index], desirable: item.desirable, weight: item.weight };
        parts.push((term, grads));
        tokens += item.sequence.tokens.len() + item.mismatched.tokens.len();
    }
    let z0 = preference::kl_estimate(&mismatched);
    let terms: Vec<KtoTerm> = parts.iter().map(|(t, _)| *t).collect();
    let (loss, coeffs) = preference::kto(&terms, z0, beta);
    let mut grads: Grads = vec![None; lora.pairs.len()];
    for ((_, part), c) in parts.into_iter().zip(coeffs) {
        add_scaled(&mut grads, part, c)?;
    }
    Ok(Update { loss, grads, tokens })
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
    Ok(Update { loss, grads, tokens })
}
