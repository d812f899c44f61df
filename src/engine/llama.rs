//! The `llama` family: Llama 2/3, CodeLlama, DeepSeek-Coder (v1), SmolLM2. Pre-norm decoder with
//! grouped-query attention, **no biases**, SwiGLU MLP, untied or tied embeddings. HF checkpoints
//! rotate the two halves of each head; llama.cpp's converter permutes q/k so that GGUF files rotate
//! adjacent pairs instead, hence the layout depends on where the weights come from.

use candle_core::quantized::gguf_file;
use serde_json::Value;

use super::EngineError;
use super::families::{Family, HfConfig, HfDefaults, gguf_u32};
use super::transformer::{Config, RopeLayout};

pub(crate) const FAMILY: Family = Family { name: "llama", qkv_bias: false, config_from_gguf, config_from_hf };

fn config_from_gguf(
    md: &std::collections::HashMap<String, gguf_file::Value>,
    vocab: usize,
) -> Result<Config, EngineError> {
    let hidden = gguf_u32(md, "llama.embedding_length")?;
    let heads = gguf_u32(md, "llama.attention.head_count")?;
    Ok(Config {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: gguf_u32(md, "llama.feed_forward_length")?,
        num_layers: gguf_u32(md, "llama.block_count")?,
        num_heads: heads,
        num_kv_heads: md
            .get("llama.attention.head_count_kv")
            .and_then(|v| v.to_u32().ok())
            .map_or(heads, |v| v as usize),
        head_dim: md
            .get("llama.rope.dimension_count")
            .and_then(|v| v.to_u32().ok())
            .map_or(hidden / heads, |v| v as usize),
        rope_theta: md.get("llama.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0),
        rms_norm_eps: md.get("llama.attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32().ok()).unwrap_or(1e-5)
            as f64,
        max_position: gguf_u32(md, "llama.context_length")?,
        rope: RopeLayout::Interleaved,
    })
}

fn config_from_hf(json: &Value) -> Result<Config, EngineError> {
    HfConfig::config(json, HfDefaults { rope_theta: 10_000.0, rms_norm_eps: 1e-5, max_position: 4096 })
}
