//! From files to a [`Transformer`]: which family a model is, its config, and the tensor names of
//! each file layout (llama.cpp's GGUF names, HF's safetensors names).

use candle_core::quantized::gguf_file;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

use super::EngineError;
use super::lora::Projection;
use super::transformer::{Block, Config, Linear, Transformer, Weight};
use super::weights::Weights;

/// What differs between the architectures we run (see `qwen2.rs`, `llama.rs`).
pub(crate) struct Family {
    pub name: &'static str,
    pub qkv_bias: bool,
    pub config_from_gguf: fn(&HashMap<String, gguf_file::Value>, usize) -> Result<Config, EngineError>,
    pub config_from_hf: fn(&Value) -> Result<Config, EngineError>,
}

pub(crate) const FAMILIES: [&Family; 2] = [&super::qwen2::FAMILY, &super::llama::FAMILY];

/// The family for a GGUF `general.architecture` or an HF `model_type`.
pub(crate) fn family(arch: &str) -> Option<&'static Family> {
    FAMILIES.into_iter().find(|f| f.name == arch)
}

pub(crate) fn gguf_u32(md: &HashMap<String, gguf_file::Value>, key: &str) -> Result<usize, EngineError> {
    md.get(key)
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .ok_or_else(|| EngineError::Metadata(format!("GGUF metadata {key} is missing or not a number")))
}

/// The HF `config.json` keys both families use.
#[derive(Deserialize)]
pub(crate) struct HfConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub rope_theta: Option<f64>,
    pub rms_norm_eps: Option<f64>,
    pub max_position_embeddings: Option<usize>,
}

/// What a family assumes when its config.json leaves a key out.
pub(crate) struct HfDefaults {
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position: usize,
}

impl HfConfig {
    /// Reads config.json; HF checkpoints always rotate head halves.
    pub(crate) fn config(json: &Value, defaults: HfDefaults) -> Result<Config, EngineError> {
        let hf = HfConfig::deserialize(json).map_err(|e| EngineError::Metadata(format!("config.json: {e}")))?;
        Ok(Config {
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / hf.num_attention_heads),
            rope_theta: hf.rope_theta.unwrap_or(defaults.rope_theta) as f32,
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(defaults.rms_norm_eps),
            max_position: hf.max_position_embeddings.unwrap_or(defaults.max_position),
            rope: super::transformer::RopeLayout::Halves,
        })
    }
}

/// Tensor names of one file layout.
#[derive(Clone, Copy)]
pub(crate) enum Naming {
    Gguf,
    Hf,
}

impl Naming {
    fn embed(self) -> &'static str {
        match self {
            Naming::Gguf => "token_embd.weight",
            Naming::Hf => "model.embed_tokens.weight",
        }
    }

    fn final_norm(self) -> &'static str {
        match self {
            Naming::Gguf => "output_norm.weight",
            Naming::Hf => "model.norm.weight",
        }
    }

    fn output(self) -> &'static str {
        match self {
            Naming::Gguf => "output.weight",
            Naming::Hf => "lm_head.weight",
        }
    }

    fn norm(self, layer: usize, mlp: bool) -> String {
        match (self, mlp) {
            (Naming::Gguf, false) => format!("blk.{layer}.attn_norm.weight"),
            (Naming::Gguf, true) => format!("blk.{layer}.ffn_norm.weight"),
            (Naming::Hf, false) => format!("model.layers.{layer}.input_layernorm.weight"),
            (Naming::Hf, true) => format!("model.layers.{layer}.post_attention_layernorm.weight"),
        }
    }

    /// `weight` or `bias` of one projection.
    fn projection(self, layer: usize, projection: Projection, part: &str) -> String {
        match self {
            Naming::Gguf => {
                let short = match projection {
                    Projection::Q => "attn_q",
                    Projection::K => "attn_k",
                    Projection::V => "attn_v",
                    Projection::O => "attn_output",
                    Projection::Gate => "ffn_gate",
                    Projection::Up => "ffn_up",
                    Projection::Down => "ffn_down",
                };
                format!("blk.{layer}.{short}.{part}")
            }
            Naming::Hf => format!("model.layers.{layer}.{}.{}.{part}", projection.parent(), projection.module()),
        }
    }
}

/// Loads every tensor of a model and checks each shape against `config`.
pub(crate) fn build(
    family: &Family,
    config: Config,
    weights: &mut Weights,
    naming: Naming,
    progress: &dyn Fn(usize, usize),
) -> Result<Transformer, EngineError> {
    let c = &config;
    let embed = weights.tensor(naming.embed())?;
    weights.expect_shape(naming.embed(), &embed, &[c.vocab_size, c.hidden_size])?;
    let norm = |weights: &mut Weights, name: &str| -> Result<_, EngineError> {
        let t = weights.tensor(name)?;
        weights.expect_shape(name, &t, &[c.hidden_size])?;
        Ok(t)
    };
    let mut blocks = Vec::with_capacity(c.num_layers);
    for layer in 0..c.num_layers {
        progress(layer, c.num_layers);
        let mut linear = |projection: Projection| -> Result<Linear, EngineError> {
            let name = naming.projection(layer, projection, "weight");
            let weight = weights.matmul(&name)?;
            let (input, output) = projection.shape(c);
            weights.expect_matmul_shape(&name, &weight, &[output, input])?;
            let bias_name = naming.projection(layer, projection, "bias");
            let wants_bias = family.qkv_bias && matches!(projection, Projection::Q | Projection::K | Projection::V);
            let bias = if wants_bias {
                let bias = weights.tensor(&bias_name)?;
                weights.expect_shape(&bias_name, &bias, &[output])?;
                Some(bias)
            } else {
                None
            };
            Ok(Linear { weight: Weight::new(weight)?, bias, layer, projection })
        };
        let (q, k, v, o) =
            (linear(Projection::Q)?, linear(Projection::K)?, linear(Projection::V)?, linear(Projection::O)?);
        let (gate, up, down) = (linear(Projection::Gate)?, linear(Projection::Up)?, linear(Projection::Down)?);
        blocks.push(Block {
            attn_norm: norm(weights, &naming.norm(layer, false))?,
            q,
            k,
            v,
            o,
            mlp_norm: norm(weights, &naming.norm(layer, true))?,
            gate,
            up,
            down,
        });
    }
    let final_norm = norm(weights, naming.final_norm())?;
    // Small models tie the output layer to the embeddings and ship no separate tensor.
    let output_name = if weights.has(naming.output()) { naming.output() } else { naming.embed() };
    let output = weights.matmul(output_name)?;
    weights.expect_matmul_shape(output_name, &output, &[c.vocab_size, c.hidden_size])?;
    progress(c.num_layers, c.num_layers);
    Ok(Transformer::new(config, embed, blocks, final_norm, Weight::new(output)?)?)
}
