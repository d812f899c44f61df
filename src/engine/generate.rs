//! The decoding loop: reuse the longest cached prefix, prefill the rest in chunks, then sample one
//! token at a time until an end token, a stop condition or the length limit. Cancellation is checked
//! between prefill chunks and between decode steps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::EngineError;
use super::lora::Adapter;
use super::transformer::{KvCache, Transformer, log_softmax};

/// Prompt tokens fed per forward pass while prefilling: small enough to notice a cancel quickly,
/// large enough to keep the matmuls efficient. Every chunk dequantizes every weight once: 256
/// instead of 128 took SmolLM2's 884-token prefill from 3.1 s to 2.6 s; 512 gained nothing more.
const PREFILL_CHUNK: usize = 256;

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
        let mut logits = None;
        for chunk in prompt[reused..].chunks(PREFILL_CHUNK) {
            self.check_cancel()?;
            logits = Some(self.model.forward(chunk, cache, self.adapter)?);
        }
        let mut logits = logits.expect("at least one prompt token is always fed");
        let prefill_ms = started.elapsed().as_secs_f64() * 1000.0;

        let decode_started = Instant::now();
        let mut rng = match self.sampling {
            Sampling::TopP { seed, .. } => SplitMix64(seed),
            Sampling::Greedy => SplitMix64(0),
        };
        let mut tokens = Vec::new();
        let mut logprob_sum = 0.0;
        let mut owed = self.heal.map_or("", |(text, _)| text);
        while tokens.len() < self.max_new_tokens {
            self.check_cancel()?;
            let mut logprobs: Vec<f32> = log_softmax(&logits)?.to_vec1()?;
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
            // At the model's context limit, what was generated so far is the completion.
            if cache.tokens().len() >= self.model.config.max_position {
                break;
            }
            logits = self.model.forward(&[token], cache, self.adapter)?;
        }
        Ok(Generated {
            tokens,
            logprob_sum,
            reused_tokens: reused,
            prefill_ms,
            decode_ms: decode_started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn check_cancel(&self) -> Result<(), EngineError> {
        if self.cancel.load(Ordering::Relaxed) { Err(EngineError::Cancelled) } else { Ok(()) }
    }
}

/// How many leading prompt tokens the cache already holds; at least one token is always left to
/// feed, because the logits of the last prompt token are needed.
pub(crate) fn reusable_prefix(cached: &[u32], prompt: &[u32]) -> usize {
    let common = cached.iter().zip(prompt).take_while(|(a, b)| a == b).count();
    common.min(prompt.len().saturating_sub(1))
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
