//! The inference engine: code completion with a local model in candle. Entry point:
//! [`Engine::load`] then [`Engine::complete`].
//!
//! One loaded base model (qwen2 or llama family, GGUF or HF safetensors) serves every request; LoRA
//! adapters are loaded by name next to it and chosen per request; KV caches are kept per document
//! (and adapter) in a small LRU so typing at the cursor only prefills the new tail.

mod attention;
pub mod count;
pub mod discovery;
mod families;
mod generate;
mod kernels;
mod llama;
pub mod lora;
pub mod oneshot;
pub mod postprocess;
pub mod prompt;
mod qwen2;
mod tokenizer;
mod transformer;
mod weights;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use candle_core::Device;

pub use generate::Sampling;
pub use lora::Adapter;
pub use postprocess::Mode;
pub use prompt::{Budget, ContextFile, PromptInput, RecentEdit, Template};
pub use tokenizer::TextTokenizer;
#[cfg(test)]
pub(crate) use transformer::Block;
pub use transformer::{Config, KvCache, RopeLayout, Transformer};
pub(crate) use transformer::{Linear, Weight, rope_tables};

use families::Naming;
use generate::{Generation, Verdict};
use postprocess::{Scan, StopScanner};
use weights::Weights;

/// Prompt and target token ids of one example.
pub type ExampleTokens = (Vec<u32>, Vec<u32>);

/// An example (the code before and after the cursor, and what goes there) as training sees it and
/// the eval gate scores it: the template's FIM prompt without context files (or the prefix alone for
/// a model without FIM tokens) within `limits.0` tokens, then the completion — at most `limits.1`
/// tokens — and the end-of-text token, so a completion's end is part of what is learnt. `None` for
/// an empty completion.
pub fn example_tokens(
    tokenizer: &TextTokenizer,
    template: Template,
    prefix: &str,
    suffix: &str,
    completion: &str,
    limits: (usize, usize),
) -> Result<Option<ExampleTokens>, EngineError> {
    let (max_prompt_tokens, max_target_tokens) = limits;
    let end = end_token(tokenizer, template);
    let input = PromptInput { path: "", prefix, suffix, repo_name: None, open_files: &[], recent_edits: &[] };
    let budget = Budget { max_prompt_tokens, prefix_share: 75, suffix_share: 25, context_share: 0 };
    let counter = count::Counter::new(tokenizer, &[prefix, suffix]);
    let mut prompt = tokenizer.encode_prompt(&prompt::build(template, &input, &budget, &|t| counter.count(t)))?;
    if completion.is_empty() {
        return Ok(None);
    }
    // Learnt as served: the text token healing takes off the prompt starts the answer, tokenized
    // together with it (as the model writes it then).
    let healed = healed_token(tokenizer, template, &prompt).map(str::to_owned);
    if healed.is_some() {
        prompt.pop();
    }
    let mut target = tokenizer.encode(&format!("{}{completion}", healed.unwrap_or_default()))?;
    if target.is_empty() {
        return Ok(None);
    }
    target.truncate(max_target_tokens);
    if target.len() < max_target_tokens {
        target.extend(end);
    }
    if prompt.is_empty() {
        // A completion at the very start of a file: condition on the end token instead.
        prompt.extend(end);
    }
    Ok(Some((prompt, target)))
}

/// The token that ends a document for this template (its first stop string that is one token, else
/// the tokenizer's end of text): what a completion is trained to end with, and what a prompt with
/// nothing before the cursor is conditioned on.
fn end_token(tokenizer: &TextTokenizer, template: Template) -> Option<u32> {
    template.stop_strings().iter().find_map(|s| tokenizer.token_id(s)).or(tokenizer.end_ids.first().copied())
}

/// Token healing: the text of the prompt's last token when the model should write it again itself,
/// in a prompt that ends at the cursor (the prefix-only template):
/// - bare indentation: tokenizers merge indentation with the word after it, so a prompt ending in
///   it is a boundary the model never saw, and SmolLM2 answered most such requests (the start of a
///   function body) with a newline or nothing on the replay benchmark (cutting the prompt at the
///   line break instead is no better: the line break merges with the indentation too);
/// - a half-typed word (`ret`, `self.app`) or operator (`=` of `==`, `.` of `.append`): the
///   tokenizer split where the typing stopped, not where the code's tokens end, so the model is
///   asked to write a token that starts with it (` return`, `append`, `==`).
fn healed_token<'a>(tokenizer: &'a TextTokenizer, template: Template, prompt: &[u32]) -> Option<&'a str> {
    if template != Template::PrefixOnly || prompt.len() < 2 {
        return None;
    }
    let text = tokenizer.token_texts().get(*prompt.last()? as usize)?;
    let bare_indentation = text.ends_with([' ', '\t']) && text.trim().is_empty();
    let piece = text.trim_start_matches([' ', '\t']);
    let word = !piece.is_empty() && piece.chars().all(|c| c.is_alphanumeric() || c == '_');
    let operator = !piece.is_empty() && piece.chars().all(|c| "=<>!+-*/%&|^.".contains(c));
    (bare_indentation || word || operator).then_some(text.as_str())
}

/// Caches kept, each for one place in a document with one adapter; a handful covers the places
/// being edited right now. SmolLM2 at a 1k-token prompt takes 47 MiB a cache, a 1.5B model 58.
const CACHE_SLOTS: usize = 6;

/// A cache was made at another place when the prompt does not contain this many of the tokens
/// before that cache's cursor, leaving out the last [`TYPED_TOKENS`] (typing there changes them).
const CURSOR_TOKENS: usize = 16;
const TYPED_TOKENS: usize = 4;

/// One cached prompt (and what was generated after it).
struct Slot {
    key: String,
    cache: KvCache,
    prompt_len: usize,
}

/// The key of a document's caches. The adapter's identity is part of it: a cache computed with an
/// adapter that has since been replaced (even while a request ran) must never be reused.
fn cache_key(document: &str, adapter_name: Option<&str>, adapter: Option<&Arc<Adapter>>) -> String {
    let identity = adapter.map_or(0, |a| Arc::as_ptr(a) as usize);
    format!("{document}\0{}\0{identity:x}", adapter_name.unwrap_or(""))
}

/// Whether a prompt is for another place than the cached prompt was: it does not contain the
/// tokens just before that prompt's cursor. Typing on, or the prefix window stepping forward as
/// the text grows, keeps them; a jump to another function does not.
fn elsewhere(cached_prompt: &[u32], prompt: &[u32]) -> bool {
    let end = cached_prompt.len().saturating_sub(TYPED_TOKENS);
    let before_cursor = &cached_prompt[end.saturating_sub(CURSOR_TOKENS)..end];
    !before_cursor.is_empty() && !prompt.windows(before_cursor.len()).any(|w| w == before_cursor)
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no model at {0} (give a .gguf file or an HF directory with config.json)")]
    NotFound(PathBuf),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: unsupported {what} (marunochi runs the qwen2 and llama families)")]
    Unsupported { path: PathBuf, what: String },
    #[error("model metadata: {0}")]
    Metadata(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the tokenizer has {tokenizer} tokens but the model only {model}: they do not belong together")]
    VocabMismatch { tokenizer: usize, model: usize },
    #[error(
        "not enough memory for {path}: loading needs about {needed_mib} MiB, {available_mib} MiB are available \
         (use a smaller or more quantized model)"
    )]
    OutOfMemory { path: PathBuf, needed_mib: u64, available_mib: u64 },
    #[error("adapter {path}: {reason}")]
    Adapter { path: PathBuf, reason: String },
    #[error("no adapter named {0:?} is loaded")]
    UnknownAdapter(String),
    #[error("routing: {0}")]
    Routing(String),
    #[error("cancelled")]
    Cancelled,
    #[error("model computation failed: {0}")]
    Candle(candle_core::Error),
    #[error("{0}")]
    Device(String),
}

impl From<candle_core::Error> for EngineError {
    fn from(error: candle_core::Error) -> EngineError {
        EngineError::Candle(weights::without_backtrace(error))
    }
}

impl EngineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> EngineError {
        if source.kind() == std::io::ErrorKind::NotFound {
            return EngineError::NotFound(path.to_owned());
        }
        EngineError::Io { path: path.to_owned(), source }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Memory the load may use, in bytes; `None` reads what the system has available.
    pub memory_limit: Option<u64>,
}

/// What was loaded, for `complete --json`, `models` and `model_version`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub family: &'static str,
    /// `gguf` or `safetensors`.
    pub format: &'static str,
    /// The dominant weight type (e.g. `Q8_0`, `F32`).
    pub quantization: String,
    pub size_bytes: u64,
}

impl ModelInfo {
    /// A short name: the file or directory name.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }
}

pub struct Engine {
    model: Transformer,
    tokenizer: TextTokenizer,
    template: Template,
    info: ModelInfo,
    adapters: RwLock<HashMap<String, Arc<Adapter>>>,
    caches: Mutex<Vec<Slot>>,
    /// Greedy decoding drafts from the context (see `generate.rs`); off only to measure it.
    drafting: AtomicBool,
}

/// A request to continue a token sequence (the prompt is already rendered).
pub struct TokenRequest<'a> {
    /// Which KV cache to reuse (typically the document URI).
    pub cache_key: &'a str,
    pub prompt: &'a str,
    pub adapter: Option<&'a str>,
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    /// Generation stops as soon as the decoded text contains one of these (it is cut there).
    pub stop: &'a [String],
}

/// A code completion at a cursor.
pub struct CompletionRequest<'a> {
    /// Which KV cache to reuse (typically the document URI).
    pub cache_key: &'a str,
    /// The document around the cursor and the context the prompt may use.
    pub input: PromptInput<'a>,
    pub adapter: Option<&'a str>,
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    pub budget: Budget,
    /// Extra stop strings on top of the template's.
    pub stop: &'a [String],
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// What to show: post-processed, `None` when nothing worth showing came out.
    pub text: Option<String>,
    /// What the model produced up to the stop, before post-processing.
    pub raw: String,
    pub mode: Mode,
    pub template: Template,
    pub stats: Continuation,
}

/// What [`Engine::warm`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Warmed {
    pub prompt_tokens: usize,
    /// Tokens the cache already held; the rest were computed.
    pub reused_tokens: usize,
    pub prefill_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    pub text: String,
    pub prompt_tokens: usize,
    /// Prompt tokens that came from the cache instead of being computed.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    /// Mean log-probability of the generated tokens (≤ 0; closer to 0 is more confident).
    pub mean_logprob: f64,
    pub prefill_ms: f64,
    pub decode_tok_s: f64,
    /// Tokens drafted from the context during greedy decoding, and how many the model confirmed
    /// (each confirmed one saved a decode step).
    pub drafted_tokens: usize,
    pub accepted_drafts: usize,
}

impl Engine {
    /// Loads a model: a `.gguf` file, or an HF directory (`config.json`, safetensors, `tokenizer.json`).
    pub fn load(path: &Path, options: &LoadOptions) -> Result<Engine, EngineError> {
        Engine::load_on(path, options, &chosen_device()?, &|_, _| {})
    }

    /// [`Engine::load`] on a given device, reporting progress as (layers done, layers).
    pub fn load_on(
        path: &Path,
        options: &LoadOptions,
        device: &Device,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Engine, EngineError> {
        let metadata = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
        let (model, tokenizer, info) = if metadata.is_dir() {
            load_hf(path, options, device, progress)?
        } else {
            load_gguf(path, options, device, progress)?
        };
        if tokenizer.vocab_size() > model.config.vocab_size {
            return Err(EngineError::VocabMismatch {
                tokenizer: tokenizer.vocab_size(),
                model: model.config.vocab_size,
            });
        }
        let template = Template::detect(|token| tokenizer.token_id(token).is_some());
        let engine = Engine {
            model,
            tokenizer,
            template,
            info,
            adapters: RwLock::default(),
            caches: Mutex::default(),
            drafting: AtomicBool::new(true),
        };
        let info = &engine.info;
        tracing::info!(model = %info.path.display(), family = info.family, quantization = %info.quantization, device = engine.device_name(), "model loaded");
        Ok(engine)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// `cpu`, `cuda` or `metal`.
    pub fn device_name(&self) -> &'static str {
        match self.model.device() {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
            Device::Metal(_) => "metal",
        }
    }

    pub fn config(&self) -> &Config {
        &self.model.config
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Loads (or replaces) the PEFT adapter in `dir` under `name`.
    pub fn load_adapter(&self, name: &str, dir: &Path) -> Result<(), EngineError> {
        self.load_adapter_at(name, dir, 1.0)
    }

    /// Loads (or replaces) the PEFT adapter in `dir` under `name` with its update scaled by
    /// `strength` (plain LoRA only).
    pub fn load_adapter_at(&self, name: &str, dir: &Path, strength: f64) -> Result<(), EngineError> {
        let adapter = Adapter::load(name, dir, &self.model, strength)?;
        self.adapters.write().expect("adapter lock").insert(name.to_owned(), Arc::new(adapter));
        // Caches computed with an older version of this adapter are useless now; free them.
        self.caches.lock().expect("cache lock").retain(|slot| !slot.key.contains(&format!("\0{name}\0")));
        Ok(())
    }

    pub fn adapter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.adapters.read().expect("adapter lock").keys().cloned().collect();
        names.sort();
        names
    }

    /// Turns drafting from the context on or off (on by default; the output is the same either
    /// way, so this is only for measuring what it saves).
    pub fn set_drafting(&self, on: bool) {
        self.drafting.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn template(&self) -> Template {
        self.template
    }

    /// The loaded parts, for the trainer, which computes with the same weights differently.
    pub(crate) fn into_parts(self) -> (Transformer, TextTokenizer, Template, ModelInfo) {
        (self.model, self.tokenizer, self.template, self.info)
    }

    /// Completes the code at a cursor: builds the prompt for this model's template within the
    /// token budget, generates until the template's or the cursor context's stop, post-processes.
    pub fn complete(&self, request: &CompletionRequest, cancel: &AtomicBool) -> Result<Completion, EngineError> {
        let input = &request.input;
        let (ids, healed) = self.prompt_ids(request)?;
        let mode = postprocess::mode_at(input.prefix, input.suffix);
        let mut stops: Vec<&str> = self.template.stop_strings().to_vec();
        stops.extend(request.stop.iter().map(String::as_str));
        let mut scanner = StopScanner::new(mode, input.prefix, &stops);
        let stats = self.run(
            request.cache_key,
            request.adapter,
            ids,
            request.sampling,
            request.max_new_tokens,
            healed,
            cancel,
            |text| {
                // A token can end inside a multi-byte character; wait for the rest of it. The
                // healed text is the prompt's, not the completion's.
                let text = text.trim_end_matches('\u{FFFD}').strip_prefix(healed)?;
                match scanner.scan(text) {
                    Scan::Stop(at) => Some(healed.len() + at),
                    Scan::Continue => None,
                }
            },
        )?;
        let text = postprocess::finish(stats.text.strip_prefix(healed).unwrap_or(""), input.prefix, input.suffix, mode);
        Ok(Completion { text, raw: stats.text.clone(), mode, template: self.template, stats })
    }

    /// Computes the KV cache of the prompt [`Engine::complete`] would build for `request`, and
    /// generates nothing: a completion asked there next (or a few characters further on) only
    /// computes what differs. A cancel stops it between prefill chunks; the chunks done are kept.
    pub fn warm(&self, request: &CompletionRequest, cancel: &AtomicBool) -> Result<Warmed, EngineError> {
        let started = std::time::Instant::now();
        let (ids, _) = self.prompt_ids(request)?;
        if ids.is_empty() {
            return Err(EngineError::Tokenizer("the prompt is empty".into()));
        }
        let adapter = self.adapter(request.adapter)?;
        let key = cache_key(request.cache_key, request.adapter, adapter.as_ref());
        let mut cache = self.take_cache(&key, &ids)?;
        let reused = generate::shared_start(cache.tokens(), &ids);
        cache.truncate(reused);
        let result = candle_core::utils::with_threadpool(|| {
            generate::prefill(&self.model, adapter.as_deref(), &ids[reused..], &mut cache, cancel)
        });
        self.put_cache(key, cache, ids.len());
        result?;
        Ok(Warmed {
            prompt_tokens: ids.len(),
            reused_tokens: reused,
            prefill_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// The prompt's tokens for a completion request, and the text token healing took off its end.
    fn prompt_ids(&self, request: &CompletionRequest) -> Result<(Vec<u32>, &str), EngineError> {
        let input = &request.input;
        let counter = count::Counter::new(&self.tokenizer, &[input.prefix, input.suffix]);
        let prompt = prompt::build(self.template, input, &request.budget, &|text| counter.count(text));
        let mut ids = self.tokenizer.encode_prompt(&prompt)?;
        let healed = healed_token(&self.tokenizer, self.template, &ids).unwrap_or_default();
        if !healed.is_empty() {
            ids.pop();
        }
        if ids.is_empty() {
            // The very start of a file with a prefix-only model: as training examples there are.
            ids.extend(end_token(&self.tokenizer, self.template));
        }
        Ok((ids, healed))
    }

    /// Continues `request.prompt` as plain text, reusing the cached prefix of the same key and adapter.
    pub fn continue_text(&self, request: &TokenRequest, cancel: &AtomicBool) -> Result<Continuation, EngineError> {
        let prompt = self.tokenizer.encode(request.prompt)?;
        self.run(
            request.cache_key,
            request.adapter,
            prompt,
            request.sampling,
            request.max_new_tokens,
            "",
            cancel,
            |text| request.stop.iter().filter_map(|s| text.find(s.as_str())).min(),
        )
    }

    /// Generates after `prompt`; `cut_at` sees the decoded text after every token and says where it
    /// ends, if it does.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        cache_key: &str,
        adapter_name: Option<&str>,
        prompt: Vec<u32>,
        sampling: Sampling,
        max_new_tokens: usize,
        heal: &str,
        cancel: &AtomicBool,
        mut cut_at: impl FnMut(&str) -> Option<usize> + Send,
    ) -> Result<Continuation, EngineError> {
        let adapter = self.adapter(adapter_name)?;
        if prompt.is_empty() {
            return Err(EngineError::Tokenizer("the prompt is empty".into()));
        }
        let key = self::cache_key(cache_key, adapter_name, adapter.as_ref());
        let mut cache = self.take_cache(&key, &prompt)?;
        let generation = Generation {
            model: &self.model,
            adapter: adapter.as_deref(),
            end_ids: &self.tokenizer.end_ids,
            max_new_tokens,
            sampling,
            cancel,
            heal: (!heal.is_empty()).then(|| (heal, self.tokenizer.token_texts())),
            draft: self.drafting.load(std::sync::atomic::Ordering::Relaxed),
        };
        let mut cut = None;
        // On one of candle's rayon threads: candle's own small ops (norms, RoPE) split their work
        // with rayon, and called from any other thread each would hand its one row over to a pool
        // thread and wait for it: two norms and RoPE on q and k, four times per layer and token.
        let result = candle_core::utils::with_threadpool(|| {
            generation.run(&prompt, &mut cache, |tokens| {
                let text = self.tokenizer.decode(tokens)?;
                if let Some(at) = cut_at(&text) {
                    cut = Some(text[..at].to_owned());
                    return Ok(Verdict::Stop);
                }
                Ok(Verdict::Continue)
            })
        });
        // A cancelled or failed run may have left the cache half-extended; it is still a valid
        // cache of whatever tokens it records, so keep it.
        self.put_cache(key, cache, prompt.len());
        let generated = result?;
        let text = match cut {
            Some(text) => text,
            None => self.tokenizer.decode(&generated.tokens)?,
        };
        let count = generated.tokens.len();
        Ok(Continuation {
            text,
            prompt_tokens: prompt.len(),
            reused_tokens: generated.reused_tokens,
            generated_tokens: count,
            mean_logprob: if count == 0 { 0.0 } else { generated.logprob_sum / count as f64 },
            prefill_ms: generated.prefill_ms,
            decode_tok_s: if generated.decode_ms > 0.0 { count as f64 * 1000.0 / generated.decode_ms } else { 0.0 },
            drafted_tokens: generated.drafted,
            accepted_drafts: generated.accepted,
        })
    }

    /// Next-token logits after `tokens`, continuing `cache` (for scoring and parity checks).
    pub fn logits(&self, tokens: &[u32], cache: &mut KvCache, adapter: Option<&str>) -> Result<Vec<f32>, EngineError> {
        let adapter = self.adapter(adapter)?;
        Ok(self.model.forward(tokens, cache, adapter.as_deref())?.to_vec1()?)
    }

    /// `log p(target[i] | prompt, target[..i])` for every target token, in one pass (for scoring a
    /// user's final code under a model and adapter).
    pub fn target_logprobs(
        &self,
        prompt: &[u32],
        target: &[u32],
        adapter: Option<&str>,
    ) -> Result<Vec<f32>, EngineError> {
        if prompt.is_empty() || target.is_empty() {
            return Err(EngineError::Tokenizer("scoring needs a prompt and a target".into()));
        }
        let adapter = self.adapter(adapter)?;
        let tokens = [prompt, &target[..target.len() - 1]].concat();
        let mut cache = KvCache::default();
        let logits = self.model.forward_from(&tokens, &mut cache, adapter.as_deref(), prompt.len() - 1)?;
        let logprobs = transformer::log_softmax(&logits)?;
        let ids = candle_core::Tensor::new(target, logits.device())?.unsqueeze(1)?;
        Ok(logprobs.gather(&ids, 1)?.squeeze(1)?.to_vec1()?)
    }

    /// `log p(tokens[i + 1] | tokens[..=i])` for every position `i` but the last, in one pass in
    /// which position `i` is computed with the adapters of row `i` of `weights` (one weight per
    /// name in `experts`; a one-hot row is one expert, a zero row the base model): per-token
    /// routing in a mixed file (ARCHITECTURE.md, "Experts per token").
    pub fn routed_logprobs(
        &self,
        tokens: &[u32],
        experts: &[&str],
        weights: &[Vec<f32>],
    ) -> Result<Vec<f32>, EngineError> {
        if tokens.len() < 2 {
            return Err(EngineError::Routing("scoring needs at least two tokens".into()));
        }
        if weights.len() != tokens.len() - 1 || weights.iter().any(|row| row.len() != experts.len()) {
            return Err(EngineError::Routing(format!(
                "one row of {} weight(s) is needed per predicting position ({} tokens, {} rows)",
                experts.len(),
                tokens.len(),
                weights.len()
            )));
        }
        let loaded =
            experts.iter().map(|name| self.adapter(Some(name)).map(Option::unwrap)).collect::<Result<Vec<_>, _>>()?;
        let experts: Vec<&Adapter> = loaded.iter().map(Arc::as_ref).collect();
        let fed = &tokens[..tokens.len() - 1];
        let flat: Vec<f32> = weights.iter().flatten().copied().collect();
        let weights = candle_core::Tensor::from_vec(flat, (fed.len(), experts.len()), self.model.device())?;
        let route = lora::Route::Weighted { experts: &experts, weights };
        let logits = self.model.forward_routed(fed, &mut KvCache::default(), &route, 0)?;
        let logprobs = transformer::log_softmax(&logits)?;
        let ids = candle_core::Tensor::new(&tokens[1..], logits.device())?.unsqueeze(1)?;
        Ok(logprobs.gather(&ids, 1)?.squeeze(1)?.to_vec1()?)
    }

    fn adapter(&self, name: Option<&str>) -> Result<Option<Arc<Adapter>>, EngineError> {
        let Some(name) = name else { return Ok(None) };
        let adapters = self.adapters.read().expect("adapter lock");
        adapters.get(name).cloned().map(Some).ok_or_else(|| EngineError::UnknownAdapter(name.to_owned()))
    }

    /// The cache of `key` that shares the longest start with `prompt`. It is taken out of the LRU
    /// (to be put back extended), unless `prompt` is elsewhere in the document (it does not hold
    /// the cache's last tokens, where that cache's cursor was): then the shared start is copied
    /// and the cache stays, so jumping back to that place finds it.
    fn take_cache(&self, key: &str, prompt: &[u32]) -> Result<KvCache, EngineError> {
        let mut caches = self.caches.lock().expect("cache lock");
        let shared = |cache: &KvCache| generate::shared_start(cache.tokens(), prompt);
        let best = caches.iter().enumerate().filter(|(_, s)| s.key == key).max_by_key(|(_, s)| shared(&s.cache));
        let Some((i, slot)) = best else { return Ok(KvCache::default()) };
        if elsewhere(&slot.cache.tokens()[..slot.prompt_len.min(slot.cache.tokens().len())], prompt) {
            return Ok(slot.cache.fork(shared(&slot.cache))?);
        }
        Ok(caches.remove(i).cache)
    }

    /// Puts a cache back as the most recently used; `prompt_len` of its tokens were the prompt
    /// (the rest were generated after it).
    fn put_cache(&self, key: String, cache: KvCache, prompt_len: usize) {
        let mut caches = self.caches.lock().expect("cache lock");
        caches.insert(0, Slot { key, cache, prompt_len });
        caches.truncate(CACHE_SLOTS);
    }
}

fn load_gguf(
    path: &Path,
    options: &LoadOptions,
    device: &Device,
    progress: &dyn Fn(usize, usize),
) -> Result<(Transformer, TextTokenizer, ModelInfo), EngineError> {
    let mut weights = Weights::open_gguf(path, device)?;
    let content = weights.gguf_content().expect("opened as GGUF");
    let md = &content.metadata;
    let arch = md.get("general.architecture").and_then(|v| v.to_string().ok()).cloned().unwrap_or_default();
    let family = families::family(&arch)
        .ok_or_else(|| EngineError::Unsupported { path: path.to_owned(), what: format!("architecture {arch:?}") })?;
    let sibling = path.with_file_name("tokenizer.json");
    let tokenizer = if sibling.exists() { TextTokenizer::from_file(&sibling)? } else { TextTokenizer::from_gguf(md)? };
    let embed = content.tensor_infos.get("token_embd.weight").ok_or_else(|| EngineError::Corrupt {
        path: path.to_owned(),
        reason: "tensor token_embd.weight is missing".into(),
    })?;
    let vocab = embed.shape.dims()[0];
    // Named as `marunochi models` names it.
    let quantization = discovery::gguf_quantization(content).unwrap_or_default();
    let config = (family.config_from_gguf)(md, vocab)?;
    let size_bytes = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?.len();
    // The embedding table is dequantized to F32 for lookups, on top of the file itself.
    check_memory(path, size_bytes + (config.vocab_size * config.hidden_size * 4) as u64, options)?;
    let model = families::build(family, config, &mut weights, Naming::Gguf, progress)?;
    let info = ModelInfo { path: path.to_owned(), family: family.name, format: "gguf", quantization, size_bytes };
    Ok((model, tokenizer, info))
}

fn load_hf(
    dir: &Path,
    options: &LoadOptions,
    device: &Device,
    progress: &dyn Fn(usize, usize),
) -> Result<(Transformer, TextTokenizer, ModelInfo), EngineError> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| EngineError::io(&config_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::Corrupt { path: config_path.clone(), reason: e.to_string() })?;
    let model_type = json.get("model_type").and_then(|v| v.as_str()).unwrap_or_default();
    let family = families::family(model_type)
        .ok_or_else(|| EngineError::Unsupported { path: dir.to_owned(), what: format!("model_type {model_type:?}") })?;
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
    let config = (family.config_from_hf)(&json)?;
    let size_bytes: u64 = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let dtype = json.get("torch_dtype").and_then(|v| v.as_str()).unwrap_or("float32").to_owned();
    // Weights are converted to F32 on load: half-precision checkpoints double in size.
    let in_memory = if dtype == "float32" { size_bytes } else { size_bytes * 2 };
    check_memory(dir, in_memory, options)?;
    let mut weights = Weights::open_safetensors(dir, device)?;
    let model = families::build(family, config, &mut weights, Naming::Hf, progress)?;
    let info =
        ModelInfo { path: dir.to_owned(), family: family.name, format: "safetensors", quantization: dtype, size_bytes };
    Ok((model, tokenizer, info))
}

/// For `benches/kernel_speed.rs`: our CPU kernels against candle's, printed side by side.
#[doc(hidden)]
pub fn kernel_speed_against_candle() -> candle_core::Result<()> {
    kernels::speed::against_candle()
}

/// Where to compute, from `MARUNOCHI_DEVICE`: `auto` (the default) takes the GPU when marunochi was
/// built with `--features cuda` or `metal` and one is there, else the CPU; `cpu` and `gpu` insist.
fn chosen_device() -> Result<Device, EngineError> {
    let wanted = std::env::var_os("MARUNOCHI_DEVICE").unwrap_or_default();
    let wanted = wanted.to_string_lossy();
    match wanted.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(gpu().unwrap_or_else(|why| {
            if cfg!(any(feature = "cuda", feature = "metal")) {
                tracing::info!("computing on the CPU: {why}");
            }
            Device::Cpu
        })),
        "cpu" => Ok(Device::Cpu),
        "gpu" => gpu().map_err(|why| EngineError::Device(format!("MARUNOCHI_DEVICE=gpu: {why}"))),
        _ => Err(EngineError::Device(format!("MARUNOCHI_DEVICE is {wanted:?}; use auto, cpu or gpu"))),
    }
}

fn gpu() -> Result<Device, String> {
    if cfg!(feature = "cuda") {
        return Device::new_cuda(0).map_err(|e| format!("no usable CUDA device: {}", weights::without_backtrace(e)));
    }
    if cfg!(feature = "metal") {
        return Device::new_metal(0).map_err(|e| format!("no usable Metal device: {}", weights::without_backtrace(e)));
    }
    Err("this marunochi was built without GPU support (build it with --features cuda or --features metal)".into())
}

/// Refuses a load that cannot fit, before allocating anything.
fn check_memory(path: &Path, needed: u64, options: &LoadOptions) -> Result<(), EngineError> {
    let Some(available) = options.memory_limit.or_else(available_memory) else { return Ok(()) };
    if needed > available {
        return Err(EngineError::OutOfMemory {
            path: path.to_owned(),
            needed_mib: needed.div_ceil(1 << 20),
            available_mib: available >> 20,
        });
    }
    Ok(())
}

pub(crate) fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
