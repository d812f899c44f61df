//! The decoding loop: reuse the longest cached prefix, prefill the rest in chunks, then sample one
//! token at a time until an end token, a stop condition or the length limit. Cancellation is checked
//! between prefill chunks and between decode steps.
//!
//! Greedy decoding drafts from the context (prompt lookup): where the last tokens written occurred
//! before, the tokens that followed them there are fed with the chosen one in one pass, and each
//! drafted token the model itself would have chosen next is taken without a pass of its own.
//! Corrections and edits mostly copy nearby code, and our kernels read each weight once for all
//! the rows of a pass, so an accepted draft token costs less than a decode step; drafts start at one
//! token and double while confirmed. A pass of fewer than 8 rows computes each row exactly as a
//! decode step would (the same kernels, attention row by row), so the output is the one greedy
//! decoding gives token by token. Not with an adapter (its F32 matmul may round differently by
//! row count) nor while token healing constrains the first token.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::EngineError;
use super::lora::Adapter;
use super::transformer::{KvCache, Transformer};

/// Prompt tokens fed per forward pass while prefilling: small enough to notice a cancel quickly,
/// large enough to keep the matmuls efficient. Every chunk dequantizes every weight once: 256
/// instead of 128 took SmolLM2's 884-token prefill from 3.1 s to 2.6 s; 512 gained nothing more.
const PREFILL_CHUNK: usize = 256;

/// Most tokens drafted for one verify pass. The pass must stay under the row count from which
/// weights are dequantized for a batched matmul (`transformer::DEQUANTIZE_FROM_ROWS`, 8), where a
/// pass stops costing about one decode step.
const MOST_DRAFTED: usize = 6;
/// Drafting looks for the last this-many tokens written earlier in the context (then fewer, down
/// to two).
const DRAFT_KEY: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    Greedy,
    /// Nucleus sampling at a temperature, reproducible for a given seed.
    TopP {
        temperature: f32,
        top_p: f32,
        seed: u64,
    },
}

pub(crate) struct Generated {
    pub tokens: Vec<u32>,
    /// Sum of the chosen tokens' log-probabilities.
    pub logprob_sum: f64,
    pub reused_tokens: usize,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// Tokens drafted from the context, and how many of them the model confirmed.
    pub drafted: usize,
    pub accepted: usize,
}

/// What the caller's stop check says after each decoded token.
pub(crate) enum Verdict {
    Continue,
    Stop,
}

pub(crate) struct Generation<'a> {
    pub model: &'a Transformer,
    pub adapter: Option<&'a Adapter>,
    pub end_ids: &'a [u32],
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    pub cancel: &'a AtomicBool,
    /// Token healing: text taken off the end of the prompt that the generation must write again
    /// first, and every token's text to choose the tokens that may do so.
    pub heal: Option<(&'a str, &'a [String])>,
    /// Whether greedy decoding drafts from the context.
    pub draft: bool,
}

impl Generation<'_> {
    pub(crate) fn run(
        &self,
        prompt: &[u32],
        cache: &mut KvCache,
        mut stop: impl FnMut(&[u32]) -> Result<Verdict, EngineError>,
    ) -> Result<Generated, EngineError> {
        let started = Instant::now();
        let reused = reusable_prefix(cache.tokens(), prompt);
        cache.truncate(reused);
        let logits = prefill(self.model, self.adapter, &prompt[reused..], cache, self.cancel)?
            .expect("at least one prompt token is always fed");
        let prefill_ms = started.elapsed().as_secs_f64() * 1000.0;

        let decode_started = Instant::now();
        let mut rng = match self.sampling {
            Sampling::TopP { seed, .. } => SplitMix64(seed),
            Sampling::Greedy => SplitMix64(0),
        };
        let mut tokens = Vec::new();
        let mut logprob_sum = 0.0;
        let mut owed = self.heal.map_or("", |(text, _)| text);
        // Drafted tokens already in the cache, each with the logits after it.
        let mut drafts: VecDeque<(u32, Vec<f32>)> = VecDeque::new();
        let (mut drafted, mut accepted) = (0, 0);
        // Drafts grow while the model keeps confirming them (copying a stretch) and start over
        // at one token when it does not: a rejected token costs a row of a pass for nothing.
        let mut draft_len = 1;
        let mut logits: Vec<f32> = logits.to_vec1()?;
        while tokens.len() < self.max_new_tokens {
            self.check_cancel()?;
            let mut logprobs = log_softmax_vec(&logits);
            if let Some((_, texts)) = self.heal.filter(|_| !owed.is_empty()) {
                // Tokens that write all of the owed text (the one taken off the prompt among them),
                // or all of it but its last space: byte-level tokenizers give a run of spaces'
                // last one to the word after it, so `"\n       " + " self"` is how indented code
                // reads in training. Shorter pieces would recreate the split healing undoes.
                for (logprob, text) in logprobs.iter_mut().zip(texts) {
                    let last_space_left = owed.strip_prefix(text.as_str()).is_some_and(|rest| rest == " ");
                    if !(text.starts_with(owed) || (last_space_left && !text.is_empty())) {
                        *logprob = f32::NEG_INFINITY;
                    }
                }
            }
            let token = match self.sampling {
                Sampling::Greedy => argmax(&logprobs),
                Sampling::TopP { temperature, top_p, .. } => sample_top_p(&logprobs, temperature, top_p, &mut rng),
            };
            // A draft the model agrees with is already in the cache; the rest are dropped from it.
            let confirmed = drafts.front().is_some_and(|(draft, _)| *draft == token);
            if !confirmed && !drafts.is_empty() {
                cache.truncate(cache.tokens().len() - drafts.len());
                drafts.clear();
                draft_len = 1;
            }
            if self.end_ids.contains(&token) {
                break;
            }
            logprob_sum += logprobs[token as usize] as f64;
            if let Some((_, texts)) = self.heal {
                owed = owed.strip_prefix(texts[token as usize].as_str()).unwrap_or("");
            }
            tokens.push(token);
            if let Verdict::Stop = stop(&tokens)? {
                break;
            }
            if confirmed {
                accepted += 1;
                logits = drafts.pop_front().expect("confirmed above").1;
                if drafts.is_empty() {
                    draft_len = (draft_len * 2).min(MOST_DRAFTED);
                }
                continue;
            }
            // At the model's context limit, what was generated so far is the completion.
            let room = self.model.config.max_position.saturating_sub(cache.tokens().len());
            if room == 0 {
                break;
            }
            let most = draft_len.min(self.max_new_tokens - tokens.len()).min(room - 1);
            let draft = match self.sampling {
                // An adapter's update is an F32 matmul whose rounding may depend on the row count;
                // without one every row of a pass is computed as a decode step computes it.
                Sampling::Greedy if self.draft && self.adapter.is_none() && owed.is_empty() && most > 0 => {
                    draft_from(prompt, &tokens, most)
                }
                _ => &[],
            };
            if draft.is_empty() {
                logits = self.model.forward(&[token], cache, self.adapter)?.to_vec1()?;
                continue;
            }
            let fed: Vec<u32> = std::iter::once(token).chain(draft.iter().copied()).collect();
            let mut rows = self.model.forward_from(&fed, cache, self.adapter, 0)?.to_vec2::<f32>()?.into_iter();
            logits = rows.next().expect("one row per fed token");
            drafts.extend(draft.iter().copied().zip(rows));
            drafted += draft.len();
        }
        // Leave the cache holding exactly what it computed for the prompt and the tokens kept.
        cache.truncate(cache.tokens().len() - drafts.len());
        Ok(Generated {
            tokens,
            logprob_sum,
            reused_tokens: reused,
            prefill_ms,
            decode_ms: decode_started.elapsed().as_secs_f64() * 1000.0,
            drafted,
            accepted,
        })
    }

    fn check_cancel(&self) -> Result<(), EngineError> {
        if self.cancel.load(Ordering::Relaxed) { Err(EngineError::Cancelled) } else { Ok(()) }
    }
}

/// Feeds `tokens` after what `cache` holds, [`PREFILL_CHUNK`] at a time, checking `cancel` before
/// each chunk (the chunks already fed stay in the cache: a warm-up cut short still saves its part);
/// the logits after the last token, `None` when there was nothing to feed.
pub(crate) fn prefill(
    model: &Transformer,
    adapter: Option<&Adapter>,
    tokens: &[u32],
    cache: &mut KvCache,
    cancel: &AtomicBool,
) -> Result<Option<candle_core::Tensor>, EngineError> {
    let mut logits = None;
    for chunk in tokens.chunks(PREFILL_CHUNK) {
        if cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        logits = Some(model.forward(chunk, cache, adapter)?);
    }
    Ok(logits)
}

/// The tokens that followed the most recent earlier occurrence of the context's last
/// [`DRAFT_KEY`] tokens (or fewer, down to two), at most `most` of them; the context is the prompt
/// and the tokens generated so far.
fn draft_from<'a>(prompt: &'a [u32], generated: &'a [u32], most: usize) -> &'a [u32] {
    let at = |i: usize| if i < prompt.len() { prompt[i] } else { generated[i - prompt.len()] };
    let len = prompt.len() + generated.len();
    for key in (2..=DRAFT_KEY.min(len.saturating_sub(1))).rev() {
        let found = (0..len - key).rev().find(|&start| (0..key).all(|i| at(start + i) == at(len - key + i)));
        if let Some(start) = found {
            let from = start + key;
            // Drafts come from one side: the prompt's tokens, or the completion's own.
            return if from < prompt.len() {
                &prompt[from..(from + most).min(prompt.len())]
            } else {
                let from = from - prompt.len();
                &generated[from..(from + most).min(generated.len())]
            };
        }
    }
    &[]
}

/// How many leading prompt tokens the cache already holds; at least one token is always left to
/// feed, because the logits of the last prompt token are needed.
pub(crate) fn reusable_prefix(cached: &[u32], prompt: &[u32]) -> usize {
    shared_start(cached, prompt).min(prompt.len().saturating_sub(1))
}

/// How many leading tokens `cached` and `prompt` have in common.
pub(crate) fn shared_start(cached: &[u32], prompt: &[u32]) -> usize {
    cached.iter().zip(prompt).take_while(|(a, b)| a == b).count()
}

/// Log-probabilities of one row of logits.
fn log_softmax_vec(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|l| l - log_sum).collect()
}

fn argmax(values: &[f32]) -> u32 {
    values.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}

fn sample_top_p(logprobs: &[f32], temperature: f32, top_p: f32, rng: &mut SplitMix64) -> u32 {
    if temperature <= 0.0 {
        return argmax(logprobs);
    }
    let mut candidates: Vec<(u32, f64)> =
        logprobs.iter().enumerate().map(|(i, &lp)| (i as u32, (lp as f64 / temperature as f64))).collect();
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    let max = candidates[0].1;
    let weights: Vec<f64> = candidates.iter().map(|(_, l)| (l - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut kept = 0;
    let mut mass = 0.0;
    for w in &weights {
        kept += 1;
        mass += w / total;
        if mass >= top_p as f64 {
            break;
        }
    }
    let kept_total: f64 = weights[..kept].iter().sum();
    let mut target = rng.next_f64() * kept_total;
    for (i, w) in weights[..kept].iter().enumerate() {
        target -= w;
        if target <= 0.0 {
            return candidates[i].0;
        }
    }
    candidates[kept - 1].0
}

/// A tiny deterministic RNG (SplitMix64): sampling needs reproducibility, not cryptography.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_reuse_always_leaves_a_token_to_feed() {
        assert_eq!(reusable_prefix(&[1, 2, 3], &[1, 2, 3, 4]), 3);
        assert_eq!(reusable_prefix(&[1, 2, 3], &[1, 2, 3]), 2);
        assert_eq!(reusable_prefix(&[1, 2, 3, 9, 9], &[1, 2, 4]), 2);
        assert_eq!(reusable_prefix(&[], &[5]), 0);
    }

    #[test]
    fn drafts_continue_the_latest_earlier_occurrence_of_the_last_tokens() {
        // "a b c X Y a b c Z W" … then "a b c" again: the latest occurrence (followed by Z W) wins.
        let prompt = [1, 2, 3, 8, 9, 1, 2, 3, 6, 7];
        assert_eq!(draft_from(&prompt, &[1, 2, 3], 4), &[6, 7]);
        assert_eq!(draft_from(&prompt, &[1, 2, 3], 1), &[6]);
        // Two tokens when three do not match; the completion's own tokens count too.
        assert_eq!(draft_from(&prompt, &[5, 8, 9], 3), &[1, 2, 3]);
        assert_eq!(draft_from(&[4], &[5, 6, 7, 5, 6], 2), &[7, 5]);
        assert!(draft_from(&prompt, &[42, 43], 3).is_empty(), "nothing to copy");
        assert!(draft_from(&[1], &[], 3).is_empty());
    }

    #[test]
    fn top_p_keeps_only_the_nucleus_and_is_reproducible() {
        let logprobs = [(-0.1f32), -3.0, -3.0, -10.0];
        let mut rng = SplitMix64(7);
        for _ in 0..200 {
            assert_eq!(sample_top_p(&logprobs, 1.0, 0.5, &mut rng), 0);
        }
        let draw = |seed| {
            let mut rng = SplitMix64(seed);
            (0..20).map(|_| sample_top_p(&logprobs, 2.0, 0.99, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert!(draw(3).iter().any(|&t| t != 0), "a high temperature must sometimes pick others");
    }
}
