//! The forgetting check that works with any model: mean negative log-likelihood per token on
//! general code every machine with the language installed has — Python's standard library sources,
//! the Rust toolchain's `library/` sources (the `rust-src` component) — under the base model and
//! the candidate. A benchmark a small model scores 0 on cannot fail; a likelihood always moves.

use super::EvalError;
use crate::corpus::Corpus;
use crate::engine::Engine;

/// Tokens scored per file (its beginning).
const TOKENS: usize = 512;

/// Mean negative log-likelihood per token of the corpus's files (their first [`TOKENS`] tokens)
/// under `adapter` (`None`: the base model).
pub fn nll(
    engine: &Engine,
    corpus: &Corpus,
    adapter: Option<&str>,
    progress: &dyn Fn(usize),
) -> Result<f64, EvalError> {
    let (mut sum, mut count) = (0.0, 0usize);
    for (i, path) in corpus.files.iter().enumerate() {
        progress(i);
        let text = crate::corpus::beginning(path)
            .map_err(|e| EvalError::Benchmark { path: path.clone(), reason: e.to_string() })?;
        let mut tokens = engine.tokenizer().encode(&text)?;
        tokens.truncate(TOKENS + 1);
        if tokens.len() < 2 {
            continue;
        }
        let logprobs = engine.target_logprobs(&tokens[..1], &tokens[1..], adapter)?;
        sum -= logprobs.iter().map(|&l| f64::from(l)).sum::<f64>();
        count += logprobs.len();
    }
    progress(corpus.files.len());
    Ok(if count == 0 { 0.0 } else { sum / count as f64 })
}
