//! The `qwen2` family: Qwen2 / Qwen2.5 / Qwen2.5-Coder (0.5B–32B). Pre-norm decoder with grouped-
//! query attention, **biases on q/k/v** (and nowhere else), RoPE with θ = 1e6 over head halves (in
//! both HF and GGUF files: llama.cpp does not permute qwen2's q/k), SwiGLU MLP, and embeddings tied
//! to the output layer in the small sizes.

use candle_core::quantized::gguf_file;
use serde_json::Value;

use super::EngineError;
use super::families::{Family, HfConfig, HfDefaults, gguf_u32};
use super::transformer::{Config, RopeLayout};

pub(crate) const FAMILY: Family = Family { name: "qwen2", qkv_bias: true, config_from_gguf, config_from_hf };

fn config_from_gguf(
    md: &std::collections::HashMap<String, gguf_file::Value>,
    vocab: usize,
) -> Result<Config, EngineError> {
    let hidden = gguf_u32(md, "qwen2.embedding_length")?;
    let heads = gguf_u32(md, "qwen2.attention.head_count")?;
    Ok(Config {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: gguf_u32(md, "qwen2.feed_forward_length")?,
        num_layers: gguf_u32(md, "qwen2.block_count")?,
        num_heads: heads,
        num_kv_heads: gguf_u32(md, "qwen2.attention.head_count_kv")?,
        head_dim: hidden / heads,
        rope_theta: md.get("qwen2.rope.freq_base").and_then(|v| v.to_f32().ok()).unwrap_or(1_000_000.0),
        rms_norm_eps: md.get("qwen2.attention.layer_norm_rms_epsilon").and_then(|v| v.to_f32().ok()).unwrap_or(1e-6)
            as f64,
        max_position: gguf_u32(md, "qwen2.context_length")?,
        rope: RopeLayout::Halves,
    })
}

fn config_from_hf(json: &Value) -> Result<Config, EngineError> {
    HfConfig::config(json, HfDefaults { rope_theta: 1_000_000.0, rms_norm_eps: 1e-6, max_position: 32_768 })
}
