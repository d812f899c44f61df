//! The curated files as token sequences: reading `train.jsonl`, `heldout.jsonl`, `kto.jsonl`,
//! `dpo.jsonl` and `reward.jsonl`, rendering each example in the model's own prompt format, and
//! the seeded order in which a stage draws them.

use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use sha2::Digest;

use super::TrainError;
use super::model::Sequence;
use crate::curate::{Example, KtoExample, Pair, RewardExample};
use crate::engine::{ExampleTokens, Template, TextTokenizer};
use crate::home::Language;

/// A tokenized example and its weight (priority × near-duplicate share).
pub(crate) struct Weighted {
    pub(crate) sequence: Sequence,
    pub(crate) weight: f64,
    /// Complexity tier (0: CC < 5, 1: 5–10, 2: > 10).
    pub(crate) tier: u8,
}

/// A KTO example: the completion after its own prompt, and after another example's prompt (the
/// mismatched pair whose log-ratio estimates the KL term).
pub(crate) struct KtoItem {
    pub(crate) sequence: Sequence,
    pub(crate) mismatched: Sequence,
    pub(crate) desirable: bool,
    pub(crate) weight: f64,
}

pub(crate) struct DpoItem {
    pub(crate) chosen: Sequence,
    pub(crate) rejected: Sequence,
}

/// A suggestion as shown after its prompt, and the reward of its outcome.
pub(crate) struct RewardItem {
    pub(crate) sequence: Sequence,
    pub(crate) reward: f64,
}

/// Lines of a curated JSONL file and a fingerprint of the file. A missing optional file is empty.
pub(crate) fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    language: &Language,
    required: bool,
) -> Result<(Vec<T>, String), TrainError> {
    let no_data = |reason: String| TrainError::NoData { language: language.clone(), reason };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hint = format!("run `marunochi curate --language {language}`");
            return Err(no_data(format!("{} does not exist ({hint})", path.display())));
        }
        Err(e) => return Err(no_data(format!("cannot read {}: {e}", path.display()))),
    };
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |reason: String| TrainError::Data { path: path.to_owned(), line: i + 1, reason };
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if let Some(weight) = value.get("weight").and_then(|w| w.as_f64())
            && !(weight.is_finite() && weight > 0.0)
        {
            return Err(bad(format!("weight {weight} is not positive")));
        }
        items.push(serde_json::from_value(value).map_err(|e| bad(e.to_string()))?);
    }
    if items.is_empty() && required {
        return Err(no_data(format!("{} holds no examples", path.display())));
    }
    let digest = sha2::Sha256::digest(text.as_bytes());
    Ok((items, digest.iter().take(12).map(|b| format!("{b:02x}")).collect()))
}

/// Renders examples as `engine::example_tokens` does (the eval gate scores the same way).
pub(crate) struct Encoder<'a> {
    pub(crate) tokenizer: &'a TextTokenizer,
    pub(crate) template: Template,
    pub(crate) max_prompt_tokens: usize,
    pub(crate) max_target_tokens: usize,
}

impl Encoder<'_> {
    /// Prompt and target tokens, `None` for an empty completion.
    fn pair(&self, prefix: &str, suffix: &str, completion: &str) -> Result<Option<ExampleTokens>, TrainError> {
        let limits = (self.max_prompt_tokens, self.max_target_tokens);
        Ok(crate::engine::example_tokens(self.tokenizer, self.template, prefix, suffix, completion, limits)?)
    }

    fn join(prompt: &[u32], target: &[u32]) -> Sequence {
        Sequence { tokens: [prompt, target].concat(), prompt_len: prompt.len() }
    }

    /// SFT examples; also returns how many were skipped for an empty completion.
    pub(crate) fn sft(&self, examples: &[Example]) -> Result<(Vec<Weighted>, usize), TrainError> {
        let mut out = Vec::with_capacity(examples.len());
        for e in examples {
            if let Some((prompt, target)) = self.pair(&e.prefix, &e.suffix, &e.completion)? {
                out.push(Weighted { sequence: Self::join(&prompt, &target), weight: e.weight, tier: e.tier });
            }
        }
        let skipped = examples.len() - out.len();
        Ok((out, skipped))
    }

    /// KTO examples, each also paired with the next one's prompt (cyclically).
    pub(crate) fn kto(&self, examples: &[KtoExample]) -> Result<Vec<KtoItem>, TrainError> {
        let mut parts = Vec::new();
        for e in examples {
            if let Some((prompt, target)) = self.pair(&e.prefix, &e.suffix, &e.completion)? {
                parts.push((prompt, target, e.desirable, e.weight));
            }
        }
        Ok((0..parts.len())
            .map(|i| {
                let (prompt, target, desirable, weight) = &parts[i];
                let other = &parts[(i + 1) % parts.len()].1;
                KtoItem {
                    sequence: Self::join(prompt, target),
                    mismatched: Self::join(prompt, other),
                    desirable: *desirable,
                    weight: *weight,
                }
            })
            .collect())
    }

    pub(crate) fn dpo(&self, pairs: &[Pair]) -> Result<Vec<DpoItem>, TrainError> {
        let mut out = Vec::new();
        for p in pairs {
            let chosen = self.pair(&p.prefix, &p.suffix, &p.chosen)?;
            let rejected = self.pair(&p.prefix, &p.suffix, &p.rejected)?;
            if let (Some((prompt, chosen)), Some((_, rejected))) = (chosen, rejected) {
                out.push(DpoItem { chosen: Self::join(&prompt, &chosen), rejected: Self::join(&prompt, &rejected) });
            }
        }
        Ok(out)
    }

    pub(crate) fn reward(&self, examples: &[RewardExample]) -> Result<Vec<RewardItem>, TrainError> {
        let mut out = Vec::new();
        for e in examples {
            if let Some((prompt, target)) = self.pair(&e.prefix, &e.suffix, &e.completion)? {
                out.push(RewardItem { sequence: Self::join(&prompt, &target), reward: e.reward });
            }
        }
        Ok(out)
    }
}

/// A 64-bit seed for one purpose of one run (`parts` name the purpose and the indices).
pub(crate) fn mix(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(seed ^ 0x6A09_E667_F3BC_C909, |h, &p| {
        let mut z = (h ^ p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Which item the i-th draw of a stage is: epochs one after the other, each in curriculum order
/// (the complexity tiers as curated, easiest first), shuffled within a tier by the seed.
pub(crate) struct Order {
    tiers: Vec<Vec<usize>>,
    seed: u64,
    len: usize,
}

impl Order {
    pub(crate) fn new(tiers: impl Iterator<Item = u8>, seed: u64) -> Order {
        let mut grouped = vec![Vec::new(); 3];
        let mut len = 0;
        for (i, tier) in tiers.enumerate() {
            grouped[usize::from(tier).min(2)].push(i);
            len += 1;
        }
        Order { tiers: grouped, seed, len }
    }

    pub(crate) fn at(&self, draw: usize) -> usize {
        let (epoch, position) = (draw / self.len, draw % self.len);
        let mut rng = ChaCha8Rng::seed_from_u64(mix(self.seed, &[epoch as u64]));
        let mut flat = Vec::with_capacity(self.len);
        for tier in &self.tiers {
            let mut tier = tier.clone();
            tier.shuffle(&mut rng);
            flat.extend(tier);
        }
        flat[position]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_epoch_keeps_the_curriculum_and_reshuffles_within_tiers() {
        let tiers = [2u8, 0, 1, 0, 2, 0];
        let order = Order::new(tiers.iter().copied(), 3);
        let epoch = |e: usize| (0..6).map(|i| order.at(e * 6 + i)).collect::<Vec<_>>();
        for e in 0..4 {
            let drawn = epoch(e);
            let mut sorted = drawn.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2, 3, 4, 5], "every example once per epoch");
            let drawn_tiers: Vec<u8> = drawn.iter().map(|&i| tiers[i]).collect();
            assert_eq!(drawn_tiers, vec![0, 0, 0, 1, 2, 2], "easiest first");
        }
        assert!((0..4).any(|e| epoch(e) != epoch(0)), "the order within a tier changes between epochs");
        assert_eq!(epoch(1), (0..6).map(|i| Order::new(tiers.iter().copied(), 3).at(6 + i)).collect::<Vec<_>>());
    }
}
