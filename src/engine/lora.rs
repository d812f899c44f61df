//! LoRA adapters in the PEFT layout (`adapter_model.safetensors` + `adapter_config.json`): the
//! update `(α/r)·B·A` for any of the seven projections of any layer. An adapter is plain data; the
//! model's [`Linear`](super::transformer) layers look it up per request, so any number can be loaded
//! at once and each request picks its own (the per-language expert router relies on this).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::Deserialize;

use super::EngineError;
use super::transformer::{Config, Transformer};

/// The seven linear projections of a block, with their PEFT/HF module names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Projection {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Projection {
    pub const ALL: [Projection; 7] = [
        Projection::Q,
        Projection::K,
        Projection::V,
        Projection::O,
        Projection::Gate,
        Projection::Up,
        Projection::Down,
    ];

    /// Position in [`Projection::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn module(self) -> &'static str {
        match self {
            Projection::Q => "q_proj",
            Projection::K => "k_proj",
            Projection::V => "v_proj",
            Projection::O => "o_proj",
            Projection::Gate => "gate_proj",
            Projection::Up => "up_proj",
            Projection::Down => "down_proj",
        }
    }

    /// `self_attn` or `mlp`, as in HF and PEFT tensor names.
    pub fn parent(self) -> &'static str {
        match self {
            Projection::Q | Projection::K | Projection::V | Projection::O => "self_attn",
            Projection::Gate | Projection::Up | Projection::Down => "mlp",
        }
    }

    /// `(in_features, out_features)` in a model with this config.
    pub fn shape(self, c: &Config) -> (usize, usize) {
        match self {
            Projection::Q => (c.hidden_size, c.num_heads * c.head_dim),
            Projection::K | Projection::V => (c.hidden_size, c.num_kv_heads * c.head_dim),
            Projection::O => (c.num_heads * c.head_dim, c.hidden_size),
            Projection::Gate | Projection::Up => (c.hidden_size, c.intermediate_size),
            Projection::Down => (c.intermediate_size, c.hidden_size),
        }
    }
}

/// One projection's low-rank update, stored transposed and pre-scaled for the forward pass.
pub struct LoraPair {
    /// `Aᵀ`: `[in, r]`.
    a_t: Tensor,
    /// `(α/r)·Bᵀ`: `[r, out]`.
    b_t_scaled: Tensor,
    /// DoRA: `m / ‖W + (α/r)·B·A‖` per output row, fixed once the adapter is loaded.
    dora_scale: Option<Tensor>,
}

impl LoraPair {
    /// The projection's output `y = x·Wᵀ` (bias not yet added) with the update applied.
    pub(crate) fn apply(&self, y: Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = (y + x.broadcast_matmul(&self.a_t)?.broadcast_matmul(&self.b_t_scaled)?)?;
        match &self.dora_scale {
            Some(scale) => y.broadcast_mul(scale),
            None => Ok(y),
        }
    }

    /// What [`LoraPair::apply`] adds to the base output `y`, so that several adapters' changes can
    /// be weighted per token ([`Route::Weighted`]). For DoRA it is the rescaled output minus `y`.
    pub(crate) fn change(&self, y: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let update = x.broadcast_matmul(&self.a_t)?.broadcast_matmul(&self.b_t_scaled)?;
        match &self.dora_scale {
            Some(scale) => (y + update)?.broadcast_mul(scale)? - y,
            None => Ok(update),
        }
    }
}

/// Which adapters change which tokens of one forward pass. A request routed by the language at the
/// cursor is [`Route::Whole`]; a mixed file (a Markdown fence, an HTML `<script>`) can route each
/// span of its tokens to its own language's expert with [`Route::Weighted`] (ARCHITECTURE.md,
/// "Experts per token").
#[derive(Clone)]
pub enum Route<'a> {
    /// One adapter, or none, for every token: the per-request path, computed exactly as before
    /// routing existed.
    Whole(Option<&'a Adapter>),
    /// Per token, a weight for each of `experts`: `weights` is F32 `[tokens, experts.len()]`. A
    /// one-hot row gives that token one expert, a zero row the base model, anything else mixes
    /// the experts' changes. The K/V of a position then depend on the experts of every token up
    /// to it, as if the tokens had been fed one by one, each with its own adapter.
    Weighted { experts: &'a [&'a Adapter], weights: Tensor },
}

impl Route<'_> {
    /// Adds the routed adapters' updates of `projection` in `layer` to the base output `y` of
    /// input `x` (`[1, tokens, _]`).
    pub(crate) fn apply(
        &self,
        layer: usize,
        projection: Projection,
        y: Tensor,
        x: &Tensor,
    ) -> candle_core::Result<Tensor> {
        match self {
            // No adapter, or none for this projection: exactly the base computation, nothing added.
            Route::Whole(adapter) => match adapter.and_then(|a| a.pair(layer, projection)) {
                Some(lora) => lora.apply(y, x),
                None => Ok(y),
            },
            Route::Weighted { experts, weights } => {
                let tokens = x.dim(1)?;
                if weights.dims() != [tokens, experts.len()] {
                    candle_core::bail!(
                        "routing weights are {:?} for {tokens} tokens and {} experts",
                        weights.dims(),
                        experts.len()
                    );
                }
                let mut routed = y.clone();
                for (column, expert) in experts.iter().enumerate() {
                    let Some(lora) = expert.pair(layer, projection) else { continue };
                    let weight = weights.narrow(1, column, 1)?.to_dtype(y.dtype())?.unsqueeze(0)?;
                    routed = (routed + lora.change(&y, x)?.broadcast_mul(&weight)?)?;
                }
                Ok(routed)
            }
        }
    }
}

pub struct Adapter {
    pub name: String,
    pub rank: usize,
    pub alpha: f64,
    pub base_model: Option<String>,
    pairs: HashMap<(usize, Projection), LoraPair>,
}

#[derive(Deserialize)]
struct PeftConfig {
    peft_type: Option<String>,
    r: usize,
    lora_alpha: f64,
    #[serde(default)]
    use_rslora: bool,
    #[serde(default)]
    use_dora: bool,
    base_model_name_or_path: Option<String>,
}

impl Adapter {
    pub fn pair(&self, layer: usize, projection: Projection) -> Option<&LoraPair> {
        self.pairs.get(&(layer, projection))
    }

    /// `α/r` (or `α/√r` for rsLoRA), the factor PEFT applies to `B·A`.
    pub fn scale(&self, use_rslora: bool) -> f64 {
        if use_rslora { self.alpha / (self.rank as f64).sqrt() } else { self.alpha / self.rank as f64 }
    }

    /// Loads a PEFT adapter directory for a model with `config`. Every tensor's shape is checked
    /// against the model, so an adapter trained for another base model is refused, not misapplied.
    /// `strength` scales the update `B·A` (1: as trained; the gate tries weaker ones, see
    /// ARCHITECTURE.md "eval"); DoRA's magnitudes make scaling something else, so it is refused there.
    pub fn load(name: &str, dir: &Path, model: &Transformer, strength: f64) -> Result<Adapter, EngineError> {
        let (config, device) = (&model.config, model.device());
        let bad = |reason: String| EngineError::Adapter { path: dir.to_owned(), reason };
        let config_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| bad(format!("adapter_config.json: {e}")))?;
        let peft: PeftConfig = serde_json::from_str(&text).map_err(|e| bad(format!("adapter_config.json: {e}")))?;
        if peft.peft_type.as_deref().is_some_and(|t| t != "LORA") {
            return Err(bad(format!("peft_type {:?} is not LORA", peft.peft_type.unwrap_or_default())));
        }
        if peft.r == 0 {
            return Err(bad("r is 0".into()));
        }
        let weights_path = dir.join("adapter_model.safetensors");
        let tensors = candle_core::safetensors::load(&weights_path, device)
            .map_err(|e| bad(format!("adapter_model.safetensors: {e}")))?;
        let mut adapter = Adapter {
            name: name.to_owned(),
            rank: peft.r,
            alpha: peft.lora_alpha,
            base_model: peft.base_model_name_or_path,
            pairs: HashMap::new(),
        };
        if !(strength > 0.0 && strength.is_finite()) {
            return Err(bad(format!("strength {strength} is not a positive number")));
        }
        if peft.use_dora && strength != 1.0 {
            return Err(bad("a DoRA adapter cannot be loaded at another strength than it was trained at".into()));
        }
        let scale = adapter.scale(peft.use_rslora) * strength;
        let mut used = 0;
        for layer in 0..config.num_layers {
            for projection in Projection::ALL {
                let key = |name: &str| {
                    format!(
                        "base_model.model.model.layers.{layer}.{}.{}.{name}",
                        projection.parent(),
                        projection.module()
                    )
                };
                let (Some(a), Some(b)) = (tensors.get(&key("lora_A.weight")), tensors.get(&key("lora_B.weight")))
                else {
                    continue;
                };
                let (input, output) = projection.shape(config);
                if a.dims() != [peft.r, input] || b.dims() != [output, peft.r] {
                    return Err(bad(format!(
                        "layer {layer} {}: A is {:?} and B is {:?}, this model needs [{}, {input}] and [{output}, {}] \
                         (was the adapter trained for another base model?)",
                        projection.module(),
                        a.dims(),
                        b.dims(),
                        peft.r,
                        peft.r
                    )));
                }
                let a_t = a.to_dtype(DType::F32)?.t()?.contiguous()?;
                let b_t_scaled = (b.to_dtype(DType::F32)?.t()? * scale)?.contiguous()?;
                used += 2;
                let dora_scale = if peft.use_dora {
                    let key = key("lora_magnitude_vector");
                    let m = tensors.get(&key).ok_or_else(|| bad(format!("use_dora is set but {key} is missing")))?;
                    if m.dims() != [output] {
                        return Err(bad(format!("{key} is {:?}, this model needs [{output}]", m.dims())));
                    }
                    used += 1;
                    // ‖W + scale·B·A‖ per row, formed once: DoRA's weight norm is a constant.
                    let w = model.blocks[layer].linear(projection).weight.dequantize(device)?;
                    let norm = (w + a_t.matmul(&b_t_scaled)?.t()?)?.sqr()?.sum(1)?.sqrt()?;
                    Some(m.to_dtype(DType::F32)?.div(&norm)?)
                } else {
                    None
                };
                adapter.pairs.insert((layer, projection), LoraPair { a_t, b_t_scaled, dora_scale });
            }
        }
        if used == 0 {
            return Err(bad(
                "no LoRA tensors for this model's layers (expected base_model.model.model.layers.N...)".into()
            ));
        }
        if used < tensors.len() {
            return Err(bad(format!(
                "{} tensors do not match any layer of this model (it has {} layers)",
                tensors.len() - used,
                config.num_layers
            )));
        }
        Ok(adapter)
    }
}
