//! Text ⇄ token ids: `tokenizer.json` next to the model, or the byte-level BPE tokenizer that a GGUF
//! file embeds in its metadata (llama.cpp's `tokenizer.ggml.*` keys) when there is none.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use candle_core::quantized::gguf_file;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::EngineError;
use super::prompt::{Prompt, Segment};

/// Qwen2's pre-tokenizer split (the same in its tokenizer.json and in llama.cpp's `qwen2` pre type).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub struct TextTokenizer {
    inner: Tokenizer,
    /// Ids that end a generation (EOS and the family's end-of-text tokens that exist here).
    pub end_ids: Vec<u32>,
    /// Every id's text, built on first use (token healing).
    texts: OnceLock<Vec<String>>,
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<TextTokenizer, EngineError> {
        let inner =
            Tokenizer::from_file(path).map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(TextTokenizer::with_end_ids(inner, None))
    }

    /// Builds the tokenizer a GGUF file describes (byte-level BPE, `tokenizer.ggml.model = gpt2`).
    pub fn from_gguf(md: &HashMap<String, gguf_file::Value>) -> Result<TextTokenizer, EngineError> {
        let text = |key: &str| md.get(key).and_then(|v| v.to_string().ok()).cloned();
        let model = text("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            return Err(EngineError::Tokenizer(format!(
                "the GGUF file embeds a {model:?} tokenizer, which marunochi cannot rebuild; \
                 put the model's tokenizer.json next to the .gguf file"
            )));
        }
        let strings = |key: &str| -> Result<Vec<String>, EngineError> {
            let values = md.get(key).and_then(|v| v.to_vec().ok()).ok_or_else(|| {
                EngineError::Tokenizer(format!("GGUF metadata {key} is missing; put tokenizer.json next to the model"))
            })?;
            Ok(values.iter().filter_map(|v| v.to_string().ok().cloned()).collect())
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| m.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect();
        let vocab: Vocab = tokens.iter().enumerate().map(|(id, t)| (t.clone(), id as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| EngineError::Tokenizer(format!("GGUF tokenizer: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer(text("tokenizer.ggml.pre").as_deref())?));
        inner.with_decoder(Some(ByteLevel::default()));
        // Control (3) and user-defined (4) tokens are matched whole in text, like added tokens.
        let types = md.get("tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok());
        let specials: Vec<AddedToken> = types
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, t)| matches!(t.to_i32(), Ok(3 | 4)))
            .filter_map(|(id, _)| tokens.get(id))
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        inner.add_special_tokens(specials).map_err(|e| EngineError::Tokenizer(format!("GGUF special tokens: {e}")))?;
        let eos = md.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok());
        Ok(TextTokenizer::with_end_ids(inner, eos))
    }

    fn with_end_ids(inner: Tokenizer, eos: Option<u32>) -> TextTokenizer {
        let names =
            ["<|endoftext|>", "<|im_end|>", "</s>", "<|end_of_text|>", "<|eot_id|>", "<｜end▁of▁sentence｜>", "<EOT>"];
        let mut end_ids: Vec<u32> = names.iter().filter_map(|n| inner.token_to_id(n)).collect();
        end_ids.extend(eos);
        end_ids.sort_unstable();
        end_ids.dedup();
        TextTokenizer { inner, end_ids, texts: OnceLock::new() }
    }

    /// Every id's text as it reads inside a sequence: decoded after a newline, since some decoders
    /// drop a word-boundary space at the very start of a text.
    pub fn token_texts(&self) -> &[String] {
        self.texts.get_or_init(|| {
            let anchor = self.inner.encode("\n", false).ok().and_then(|e| e.get_ids().first().copied());
            let base = anchor.and_then(|a| self.decode(&[a]).ok()).unwrap_or_default();
            (0..self.vocab_size() as u32)
                .map(|id| {
                    let pair = anchor.map_or_else(|| self.decode(&[id]), |a| self.decode(&[a, id]));
                    pair.ok().and_then(|t| t.strip_prefix(base.as_str()).map(str::to_owned)).unwrap_or_default()
                })
                .collect()
        })
    }

    /// Number of ids the tokenizer can produce (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Encodes text; special-token strings in it (FIM markers) become their single ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let encoding = self.inner.encode(text, false).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes a built prompt: its sentinels by id (their spelling in text can differ from the
    /// vocabulary's, e.g. `▁<PRE>`), the text between them as text.
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>, EngineError> {
        let mut ids = Vec::new();
        for segment in prompt.segments() {
            match segment {
                Segment::Special(token) => match self.token_id(token) {
                    Some(id) => ids.push(id),
                    None => ids.extend(self.encode(token)?),
                },
                Segment::Text(text) => ids.extend(self.encode(text)?),
            }
        }
        Ok(ids)
    }

    /// The byte range of `text` each of its tokens covers, in order.
    pub fn token_ranges(&self, text: &str) -> Result<Vec<std::ops::Range<usize>>, EngineError> {
        let encoding = self.inner.encode(text, false).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_offsets().iter().map(|&(start, end)| start..end).collect())
    }

    /// Decodes ids, keeping special tokens as text so stop strings can see them.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.inner.decode(ids, false).map_err(|e| EngineError::Tokenizer(e.to_string()))
    }
}

/// llama.cpp's `tokenizer.ggml.pre` names, as HF pre-tokenizers.
fn pre_tokenizer(pre: Option<&str>) -> Result<PreTokenizerWrapper, EngineError> {
    let byte_level = |use_regex| PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, use_regex));
    Ok(match pre {
        Some("qwen2") => {
            let split = Split::new(SplitPattern::Regex(QWEN2_SPLIT.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| EngineError::Tokenizer(e.to_string()))?;
            PreTokenizerWrapper::Sequence(Sequence::new(vec![split.into(), byte_level(false)]))
        }
        // SmolLM and friends: GPT-2's split with every digit on its own.
        Some("smollm") => {
            PreTokenizerWrapper::Sequence(Sequence::new(vec![Digits::new(true).into(), byte_level(true)]))
        }
        Some("gpt2") | None => byte_level(true),
        Some(other) => {
            tracing::warn!(pre = other, "unknown GGUF pre-tokenizer; using GPT-2's split (prefer a tokenizer.json)");
            byte_level(true)
        }
    })
}
