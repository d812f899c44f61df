//! The base model as training sees it: the engine's weights behind frozen ops (`frozen.rs`), a
//! forward pass made of differentiable ops only (candle's fused `rms_norm`, `rope` and
//! `softmax_last_dim` have no backward), LoRA updates on all seven projections, and the backward
//! pass, whole or recomputed layer by layer (gradient checkpointing).
//!
//! Everything is phrased as "the gradient of `coeff · Σ log p(target tokens)`": SFT, KTO and DPO
//! losses are all sums of such terms with coefficients that depend only on values, so one
//! primitive serves them all and each sequence can be processed (and checkpointed) on its own.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::ops::{log_softmax, rms_norm_slow, softmax};
use candle_nn::rotary_emb::{rope_i_slow, rope_slow};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::frozen::{self, Frozen};
use crate::engine::lora::Projection;
use crate::engine::{Config, RopeLayout, Transformer, Weight};

/// Targets whose logits are computed at once: the head's output is `vocab` floats per target
/// (151 936 for Qwen), so a long completion is scored in slices.
const HEAD_CHUNK: usize = 64;

/// How the frozen base is held while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseWeights {
    /// Dequantized to the compute dtype (LoRA): fastest, most memory.
    Dense,
    /// Kept 4-bit (QLoRA): Q4_0/Q4_1/Q4_K as stored, anything else re-quantized to Q4_0, and
    /// dequantized for each use.
    FourBit,
}

struct Proj {
    frozen: Arc<Frozen>,
    bias: Option<Tensor>,
    /// `‖W_j‖²` of every output row j, for DoRA's weight norm (only computed for DoRA).
    row_norms_sq: Option<Tensor>,
}

struct Block {
    attn_norm: Tensor,
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    mlp_norm: Tensor,
    gate: Proj,
    up: Proj,
    down: Proj,
}

pub(crate) struct Base {
    pub(crate) config: Config,
    dtype: DType,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    head: Arc<Frozen>,
    cos: Tensor,
    sin: Tensor,
}

/// Per target token over some sequences: the mean negative log-likelihood, and the share the
/// model ranks first (teacher-forced), which may track greedy completions better than the loss.
pub(crate) struct MeanScores {
    pub(crate) nll: f64,
    pub(crate) top1: f64,
}

/// A token sequence to learn from: `tokens[prompt_len..]` are the targets (at least one).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sequence {
    pub(crate) tokens: Vec<u32>,
    pub(crate) prompt_len: usize,
}

impl Sequence {
    pub(crate) fn targets(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// One projection's update: `scale · B·A` with `A [r, in]`, `B [out, r]`; with a magnitude
/// vector `m [out]` it is DoRA: the updated weight's rows are rescaled to `m`,
/// `W' = m ⊙ (W + scale·B·A) / ‖W + scale·B·A‖_row`, the norm treated as a constant in the
/// backward pass (as the DoRA paper and PEFT do).
#[derive(Clone)]
pub(crate) struct Pair {
    pub(crate) a: Tensor,
    pub(crate) b: Tensor,
    pub(crate) magnitude: Option<Tensor>,
}

impl Pair {
    /// A, B and (with DoRA) m, in that order: the order of parameters and gradients.
    pub(crate) fn tensors(&self) -> Vec<&Tensor> {
        [&self.a, &self.b].into_iter().chain(&self.magnitude).collect()
    }

    fn detached(&self) -> Pair {
        Pair { a: self.a.detach(), b: self.b.detach(), magnitude: self.magnitude.as_ref().map(Tensor::detach) }
    }
}

/// The updates a forward pass adds, per layer and projection (index `layer * 7 + projection`).
/// Built from the trainer's `Var`s (so backprop reaches them) or detached copies (forward only).
#[derive(Clone)]
pub(crate) struct Lora {
    pub(crate) scale: f64,
    pub(crate) pairs: Vec<Option<Pair>>,
}

impl Lora {
    fn pair(&self, layer: usize, projection: Projection) -> Option<&Pair> {
        self.pairs.get(layer * Projection::ALL.len() + projection.index()).and_then(Option::as_ref)
    }

    pub(crate) fn detached(&self) -> Lora {
        Lora { scale: self.scale, pairs: self.pairs.iter().map(|p| p.as_ref().map(Pair::detached)).collect() }
    }
}

/// Dropout on the adapters' inputs (PEFT's `lora_dropout`). Masks are drawn from a seed per step
/// so that a layer recomputed for its backward sees exactly the masks of its forward, and a resumed
/// run the masks of an uninterrupted one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dropout {
    pub(crate) p: f64,
    pub(crate) seed: u64,
}

/// Gradients of the LoRA tensors, indexed like [`Lora::pairs`], each in [`Pair::tensors`] order.
pub(crate) type Grads = Vec<Option<Vec<Tensor>>>;

impl Base {
    /// Takes over a loaded model's weights. `dtype` is what the maths runs in (F32; F64 for
    /// gradient checks).
    /// With `dora`, each projection's row norms are computed once (DoRA's starting magnitudes and
    /// weight norm); plain LoRA does not pay for them.
    pub(crate) fn new(model: Transformer, weights: BaseWeights, dtype: DType, dora: bool) -> candle_core::Result<Base> {
        let (cos, sin) = crate::engine::rope_tables(&model.config, &Device::Cpu)?;
        let Transformer { config, embed, blocks, norm, output, .. } = model;
        let frozen =
            |weight: Weight| -> candle_core::Result<Arc<Frozen>> { Ok(Arc::new(freeze(weight, weights, dtype)?)) };
        let proj = |linear: crate::engine::Linear| -> candle_core::Result<Proj> {
            let row_norms_sq =
                if dora { Some(linear.weight.dequantize(&Device::Cpu)?.sqr()?.sum(1)?.to_dtype(dtype)?) } else { None };
            Ok(Proj {
                frozen: frozen(linear.weight)?,
                bias: linear.bias.map(|b| b.to_dtype(dtype)).transpose()?,
                row_norms_sq,
            })
        };
        let blocks = blocks
            .into_iter()
            .map(|b| {
                Ok(Block {
                    attn_norm: b.attn_norm.to_dtype(dtype)?,
                    q: proj(b.q)?,
                    k: proj(b.k)?,
                    v: proj(b.v)?,
                    o: proj(b.o)?,
                    mlp_norm: b.mlp_norm.to_dtype(dtype)?,
                    gate: proj(b.gate)?,
                    up: proj(b.up)?,
                    down: proj(b.down)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Base {
            embed: embed.to_dtype(dtype)?,
            norm: norm.to_dtype(dtype)?,
            head: frozen(output)?,
            cos: cos.to_dtype(dtype)?,
            sin: sin.to_dtype(dtype)?,
            config,
            dtype,
            blocks,
        })
    }

    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }

    /// `‖W_j‖` of a projection's rows: where a DoRA magnitude vector starts.
    pub(crate) fn row_norms(&self, layer: usize, projection: Projection) -> candle_core::Result<Tensor> {
        let b = &self.blocks[layer];
        let proj = match projection {
            Projection::Q => &b.q,
            Projection::K => &b.k,
            Projection::V => &b.v,
            Projection::O => &b.o,
            Projection::Gate => &b.gate,
            Projection::Up => &b.up,
            Projection::Down => &b.down,
        };
        match &proj.row_norms_sq {
            Some(norms) => norms.sqrt(),
            None => candle_core::bail!("the base was loaded without DoRA's row norms"),
        }
    }

    /// Bytes held by the frozen projections and the head.
    pub(crate) fn frozen_bytes(&self) -> usize {
        let projections = self.blocks.iter().flat_map(|b| [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down]);
        projections.map(|p| p.frozen.resident_bytes()).sum::<usize>() + self.head.resident_bytes()
    }

    /// Mean negative log-likelihood per target token of `sequences`, and the share of target
    /// tokens the model ranks first (teacher-forced), without gradients.
    pub(crate) fn mean_scores<'a>(
        &self,
        sequences: impl IntoIterator<Item = &'a Sequence>,
        lora: Option<&Lora>,
    ) -> candle_core::Result<MeanScores> {
        let (mut sum, mut hits, mut count) = (0.0, 0, 0);
        for sequence in sequences {
            let x = self.hidden(sequence, lora)?;
            for (start, targets) in self.target_chunks(sequence)? {
                let logits = self.target_logits(&x, start, targets.dim(0)?)?;
                sum -= sum_f64(&picked_logprobs(&logits, &targets)?)?;
                let firsts = logits.argmax(D::Minus1)?.eq(&targets)?.to_dtype(DType::U32)?;
                hits += firsts.sum_all()?.to_scalar::<u32>()? as usize;
            }
            count += sequence.targets();
        }
        let count = count.max(1) as f64;
        Ok(MeanScores { nll: sum / count, top1: hits as f64 / count })
    }

    /// `Σ log p(targets)`, without gradients.
    pub(crate) fn logprob(&self, sequence: &Sequence, lora: Option<&Lora>) -> candle_core::Result<f64> {
        let x = self.hidden(sequence, lora)?;
        let mut sum = 0.0;
        for (start, targets) in self.target_chunks(sequence)? {
            sum += sum_f64(&self.target_logprobs(&x, start, &targets)?)?;
        }
        Ok(sum)
    }

    /// The last block's output for every position, without gradients.
    fn hidden(&self, sequence: &Sequence, lora: Option<&Lora>) -> candle_core::Result<Tensor> {
        let lora = lora.map(Lora::detached);
        let mut x = self.embed(&sequence.tokens)?;
        for layer in 0..self.blocks.len() {
            x = self.block(layer, &x, lora.as_ref(), None)?;
        }
        Ok(x)
    }

    /// Adds the gradient of `coeff · Σ log p(targets)` with respect to every tensor of `lora` to
    /// `grads` and returns `Σ log p(targets)`. With `checkpoint`, only each layer's input is kept
    /// and the layer is recomputed for its backward (activation memory of one layer, not all).
    pub(crate) fn accumulate(
        &self,
        sequence: &Sequence,
        coeff: f64,
        lora: &Lora,
        dropout: Option<Dropout>,
        checkpoint: bool,
        grads: &mut Grads,
    ) -> candle_core::Result<f64> {
        let layers = self.blocks.len();
        let embedded = self.embed(&sequence.tokens)?;
        if checkpoint {
            let frozen = lora.detached();
            let mut inputs = Vec::with_capacity(layers);
            let mut x = embedded;
            for layer in 0..layers {
                let next = self.block(layer, &x, Some(&frozen), dropout)?;
                inputs.push(x);
                x = next;
            }
            let (sum, mut upstream) = self.head_backward(&x, sequence, coeff)?;
            for layer in (0..layers).rev() {
                // The first layer's input (the embedding) needs no gradient.
                let input = if layer == 0 { None } else { Some(Var::from_tensor(&inputs[layer])?) };
                let x = input.as_ref().map_or(&inputs[0], |v| v.as_tensor());
                let out = self.block(layer, x, Some(lora), dropout)?;
                let step = (out * &upstream)?.sum_all()?.backward()?;
                collect(&step, lora, layer..layer + 1, grads)?;
                if let Some(input) = input {
                    upstream = step.get(input.as_tensor()).cloned().unwrap_or(upstream.zeros_like()?);
                }
            }
            Ok(sum)
        } else {
            let mut x = embedded;
            for layer in 0..layers {
                x = self.block(layer, &x, Some(lora), dropout)?;
            }
            let (sum, upstream) = self.head_backward(&x.detach(), sequence, coeff)?;
            let step = (x * upstream)?.sum_all()?.backward()?;
            collect(&step, lora, 0..layers, grads)?;
            Ok(sum)
        }
    }

    /// `Σ log p(targets)` from the last hidden states, and the gradient of `coeff ·` that sum with
    /// respect to them.
    fn head_backward(&self, x: &Tensor, sequence: &Sequence, coeff: f64) -> candle_core::Result<(f64, Tensor)> {
        let x = Var::from_tensor(x)?;
        let mut grad = x.zeros_like()?;
        let mut sum = 0.0;
        for (start, targets) in self.target_chunks(sequence)? {
            let logprobs = self.target_logprobs(x.as_tensor(), start, &targets)?.sum_all()?;
            sum += logprobs.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            let step = (logprobs * coeff)?.backward()?;
            if let Some(g) = step.get(x.as_tensor()) {
                grad = (grad + g)?;
            }
        }
        Ok((sum, grad))
    }

    /// The targets in slices of [`HEAD_CHUNK`]: (position of the first one, their ids).
    fn target_chunks(&self, sequence: &Sequence) -> candle_core::Result<Vec<(usize, Tensor)>> {
        if sequence.prompt_len == 0 || sequence.targets() == 0 {
            candle_core::bail!("a training sequence needs a prompt and at least one target token");
        }
        let targets = &sequence.tokens[sequence.prompt_len..];
        targets
            .chunks(HEAD_CHUNK)
            .enumerate()
            .map(|(i, ids)| Ok((sequence.prompt_len + i * HEAD_CHUNK, Tensor::new(ids, &Device::Cpu)?)))
            .collect()
    }

    /// `log p(tokens[start + i])` for the targets `ids` starting at position `start`: the hidden
    /// state before each target predicts it.
    fn target_logprobs(&self, x: &Tensor, start: usize, ids: &Tensor) -> candle_core::Result<Tensor> {
        picked_logprobs(&self.target_logits(x, start, ids.dim(0)?)?, ids)
    }

    /// The logits predicting the `count` tokens from position `start` on.
    fn target_logits(&self, x: &Tensor, start: usize, count: usize) -> candle_core::Result<Tensor> {
        let h = x.narrow(1, start - 1, count)?;
        let h = rms_norm_slow(&h, &self.norm, self.config.rms_norm_eps as f32)?;
        frozen::linear(&self.head, &h)?.squeeze(0)
    }

    fn embed(&self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        if tokens.len() > self.config.max_position {
            candle_core::bail!("{} tokens exceed the model's context of {}", tokens.len(), self.config.max_position);
        }
        self.embed.embedding(&Tensor::new(tokens, &Device::Cpu)?)?.unsqueeze(0)
    }

    /// One decoder block, `[1, seq, hidden]` in and out.
    fn block(
        &self,
        layer: usize,
        x: &Tensor,
        lora: Option<&Lora>,
        dropout: Option<Dropout>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let b = &self.blocks[layer];
        let (_, seq, _) = x.dims3()?;
        let eps = c.rms_norm_eps as f32;
        // One dropout mask per adapter input (q/k/v share theirs, as do gate/up).
        let dropped = |t: &Tensor, input: u64| match dropout {
            Some(d) if lora.is_some() && d.p > 0.0 => apply_dropout(t, d, layer as u64 * 4 + input),
            _ => Ok(t.clone()),
        };
        let project = |p: &Proj, which: Projection, x: &Tensor, x_dropped: &Tensor| -> candle_core::Result<Tensor> {
            let mut y = frozen::linear(&p.frozen, x)?;
            if let Some((scale, pair)) = lora.and_then(|l| l.pair(layer, which).map(|pair| (l.scale, pair))) {
                let update = (x_dropped.broadcast_matmul(&pair.a.t()?)?.broadcast_matmul(&pair.b.t()?)? * scale)?;
                y = match &pair.magnitude {
                    None => (y + update)?,
                    Some(m) => (y + update)?.broadcast_mul(&m.broadcast_div(&dora_norm(p, pair, scale)?)?)?,
                };
            }
            match &p.bias {
                Some(bias) => y.broadcast_add(bias),
                None => Ok(y),
            }
        };
        let h = rms_norm_slow(x, &b.attn_norm, eps)?;
        let h_dropped = dropped(&h, 0)?;
        let heads = |t: Tensor, n: usize| t.reshape((1, seq, n, c.head_dim))?.transpose(1, 2)?.contiguous();
        let q = heads(project(&b.q, Projection::Q, &h, &h_dropped)?, c.num_heads)?;
        let k = heads(project(&b.k, Projection::K, &h, &h_dropped)?, c.num_kv_heads)?;
        let v = heads(project(&b.v, Projection::V, &h, &h_dropped)?, c.num_kv_heads)?;
        let (cos, sin) = (self.cos.narrow(0, 0, seq)?, self.sin.narrow(0, 0, seq)?);
        let (q, k) = match c.rope {
            RopeLayout::Halves => (rope_slow(&q, &cos, &sin)?, rope_slow(&k, &cos, &sin)?),
            RopeLayout::Interleaved => (rope_i_slow(&q, &cos, &sin)?, rope_i_slow(&k, &cos, &sin)?),
        };
        // Grouped-query attention: the query heads sharing a KV head become extra rows against it.
        let group = c.num_heads / c.num_kv_heads;
        let q = q.reshape((1, c.num_kv_heads, group * seq, c.head_dim))?;
        let scores = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?;
        let mask = causal_mask(seq, self.dtype)?;
        let scores = scores.broadcast_add(&Tensor::cat(&vec![mask; group], 0)?)?;
        let attended = softmax(&scores, D::Minus1)?.matmul(&v)?;
        let attended = attended.reshape((1, c.num_heads, seq, c.head_dim))?.transpose(1, 2)?.reshape((
            1,
            seq,
            c.num_heads * c.head_dim,
        ))?;
        let x = (x + project(&b.o, Projection::O, &attended, &dropped(&attended, 1)?)?)?;

        let h = rms_norm_slow(&x, &b.mlp_norm, eps)?;
        let h_dropped = dropped(&h, 2)?;
        let gate = project(&b.gate, Projection::Gate, &h, &h_dropped)?.silu()?;
        let act = (gate * project(&b.up, Projection::Up, &h, &h_dropped)?)?;
        x + project(&b.down, Projection::Down, &act, &dropped(&act, 3)?)?
    }
}

/// `‖W + scale·B·A‖` per output row, without gradient and without forming the matrix:
/// `‖W_j‖² + 2·scale·(B ⊙ W·Aᵀ)_j + scale²·(B·A·Aᵀ ⊙ B)_j`, summed over each row.
fn dora_norm(p: &Proj, pair: &Pair, scale: f64) -> candle_core::Result<Tensor> {
    let (a, b) = (pair.a.detach(), pair.b.detach());
    let Some(row_norms_sq) = &p.row_norms_sq else {
        candle_core::bail!("a DoRA adapter on a base loaded without DoRA's row norms");
    };
    let w_a = frozen::linear(&p.frozen, &a)?.t()?;
    let cross = (&b * &w_a)?.sum(1)?;
    let update = (b.matmul(&a.matmul(&a.t()?)?)? * &b)?.sum(1)?;
    ((row_norms_sq + (cross * (2.0 * scale))?)? + (update * (scale * scale))?)?.sqrt()
}

/// The frozen form of one projection's weight.
fn freeze(weight: Weight, mode: BaseWeights, dtype: DType) -> candle_core::Result<Frozen> {
    let four_bit = |t: GgmlDType| matches!(t, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q4K);
    Ok(match (mode, weight) {
        (BaseWeights::Dense, weight) => Frozen::Dense(weight.dequantize(&Device::Cpu)?.to_dtype(dtype)?),
        (BaseWeights::FourBit, weight) if weight.quantization().is_some_and(four_bit) => Frozen::Packed(weight),
        (BaseWeights::FourBit, weight) => {
            let dense = weight.dequantize(&Device::Cpu)?;
            drop(weight);
            let (_, in_features) = dense.dims2()?;
            if in_features % GgmlDType::Q4_0.block_size() != 0 {
                candle_core::bail!(
                    "QLoRA needs each weight row to be a multiple of {} values; this model has {in_features} \
                     (train with plain LoRA instead)",
                    GgmlDType::Q4_0.block_size()
                );
            }
            let packed = QTensor::quantize(&dense, GgmlDType::Q4_0)?;
            Frozen::Packed(Weight::new(QMatMul::from_qtensor(packed)?)?)
        }
    })
}

/// `t` with each value zeroed with probability `p` and the rest scaled by `1 / (1 - p)`.
fn apply_dropout(t: &Tensor, dropout: Dropout, input: u64) -> candle_core::Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(dropout.seed ^ input.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let keep = 1.0 / (1.0 - dropout.p);
    let mask: Vec<f32> =
        (0..t.elem_count()).map(|_| if rng.random::<f64>() < dropout.p { 0.0 } else { keep as f32 }).collect();
    t * Tensor::from_vec(mask, t.shape(), t.device())?.to_dtype(t.dtype())?
}

fn causal_mask(seq: usize, dtype: DType) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> =
        (0..seq).flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Tensor::from_vec(mask, (seq, seq), &Device::Cpu)?.to_dtype(dtype)
}

/// Moves the gradients of `layers`' LoRA tensors from one backward pass into `grads`.
fn collect(
    step: &candle_core::backprop::GradStore,
    lora: &Lora,
    layers: std::ops::Range<usize>,
    grads: &mut Grads,
) -> candle_core::Result<()> {
    let per_layer = Projection::ALL.len();
    let span = layers.start * per_layer..layers.end * per_layer;
    for (pair, sum) in lora.pairs[span.clone()].iter().zip(&mut grads[span]) {
        let Some(pair) = pair else { continue };
        let mut found = Vec::new();
        for t in pair.tensors() {
            found.push(match step.get(t) {
                Some(g) => g.clone(),
                None => t.zeros_like()?,
            });
        }
        *sum = Some(match sum.take() {
            Some(previous) => previous.iter().zip(&found).map(|(p, g)| p + g).collect::<candle_core::Result<_>>()?,
            None => found,
        });
    }
    Ok(())
}

/// `log p(ids[i])` under each row of `logits`.
fn picked_logprobs(logits: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    log_softmax(logits, D::Minus1)?.gather(&ids.unsqueeze(1)?, 1)?.squeeze(1)
}

fn sum_f64(t: &Tensor) -> candle_core::Result<f64> {
    t.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::QMatMul;

    use super::*;
    use crate::engine::{Block as EngineBlock, Linear};
    use crate::train::gradcheck::assert_gradients_match;

    fn config(rope: RopeLayout) -> Config {
        Config {
            vocab_size: 40,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            max_position: 64,
            rope,
        }
    }

    /// A random model of `config` (F32 weights, biases on q/k/v as qwen2 has).
    fn random_model(config: Config) -> Transformer {
        let randn = |shape: (usize, usize)| Tensor::randn(0f32, 0.3, shape, &Device::Cpu).unwrap();
        let linear = |layer, projection: Projection| {
            let (input, output) = projection.shape(&config);
            let bias = matches!(projection, Projection::Q | Projection::K | Projection::V)
                .then(|| Tensor::randn(0f32, 0.1, output, &Device::Cpu).unwrap());
            Linear { weight: Weight::new(QMatMul::Tensor(randn((output, input)))).unwrap(), bias, layer, projection }
        };
        let norm = || {
            (Tensor::ones(config.hidden_size, DType::F32, &Device::Cpu).unwrap()
                + Tensor::randn(0f32, 0.1, config.hidden_size, &Device::Cpu).unwrap())
            .unwrap()
        };
        let blocks = (0..config.num_layers)
            .map(|l| EngineBlock {
                attn_norm: norm(),
                q: linear(l, Projection::Q),
                k: linear(l, Projection::K),
                v: linear(l, Projection::V),
                o: linear(l, Projection::O),
                mlp_norm: norm(),
                gate: linear(l, Projection::Gate),
                up: linear(l, Projection::Up),
                down: linear(l, Projection::Down),
            })
            .collect();
        let embed = randn((config.vocab_size, config.hidden_size));
        let output = Weight::new(QMatMul::Tensor(randn((config.vocab_size, config.hidden_size)))).unwrap();
        let final_norm = norm();
        Transformer::new(config, embed, blocks, final_norm, output).unwrap()
    }

    /// LoRA variables with random A and B (B is zero at the start of training, which would hide
    /// A's gradient); with `dora`, magnitudes near the base rows' norms.
    fn random_lora(base: &Base, dtype: DType, dora: bool) -> (Vec<Var>, Lora) {
        let config = &base.config;
        let mut vars = Vec::new();
        let mut pairs = Vec::new();
        for layer in 0..config.num_layers {
            for projection in Projection::ALL {
                let (input, output) = projection.shape(config);
                let randn = |shape: (usize, usize)| {
                    Var::from_tensor(&Tensor::randn(0f32, 0.2, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap())
                        .unwrap()
                };
                let (a, b) = (randn((4, input)), randn((output, 4)));
                let magnitude = dora.then(|| {
                    let noise = Tensor::randn(0f32, 0.1, output, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
                    Var::from_tensor(&(base.row_norms(layer, projection).unwrap() + noise).unwrap()).unwrap()
                });
                pairs.push(Some(Pair {
                    a: a.as_tensor().clone(),
                    b: b.as_tensor().clone(),
                    magnitude: magnitude.as_ref().map(|m| m.as_tensor().clone()),
                }));
                vars.push(vec![a, b].into_iter().chain(magnitude).collect::<Vec<_>>());
            }
        }
        (vars.into_iter().flatten().collect(), Lora { scale: 2.0, pairs })
    }

    fn sequence() -> Sequence {
        Sequence { tokens: vec![3, 17, 5, 9, 33, 2, 8, 21, 11], prompt_len: 4 }
    }

    fn grads(base: &Base, lora: &Lora, dropout: Option<Dropout>, checkpoint: bool) -> (f64, Grads) {
        let mut grads = vec![None; lora.pairs.len()];
        let sum = base.accumulate(&sequence(), 0.7, lora, dropout, checkpoint, &mut grads).unwrap();
        (sum, grads)
    }

    /// `0.7 · Σ log p` with one LoRA tensor replaced.
    fn objective(base: &Base, lora: &Lora, index: usize, which: usize, value: &Tensor) -> f64 {
        let mut moved = lora.clone();
        let pair = moved.pairs[index].as_mut().unwrap();
        match which {
            0 => pair.a = value.clone(),
            1 => pair.b = value.clone(),
            _ => pair.magnitude = Some(value.clone()),
        }
        0.7 * base.logprob(&sequence(), Some(&moved)).unwrap()
    }

    fn check_against_finite_differences(rope: RopeLayout, weights: BaseWeights, dora: bool) {
        let base = Base::new(random_model(config(rope)), weights, DType::F64, dora).unwrap();
        let (vars, lora) = random_lora(&base, DType::F64, dora);
        let per_pair = if dora { 3 } else { 2 };
        let (sum, grads) = grads(&base, &lora, None, false);
        assert!((sum - base.logprob(&sequence(), Some(&lora)).unwrap()).abs() < 1e-9);
        // Every projection of the last layer and a few of the first.
        for index in [0, 3, 6, 7, 8, 9, 10, 11, 12, 13] {
            for which in 0..per_pair {
                let var = &vars[per_pair * index + which];
                let grad = &grads[index].as_ref().unwrap()[which];
                if which == 2 {
                    assert_gradients_match(var, grad, |value| objective(&base, &lora, index, which, value));
                } else if dora {
                    // DoRA's norm is held constant in the backward pass, so A's and B's gradients
                    // are not the exact derivative: compare with the norm frozen at its value.
                    continue;
                } else {
                    assert_gradients_match(var, grad, |value| objective(&base, &lora, index, which, value));
                }
            }
        }
    }

    #[test]
    fn lora_gradients_match_finite_differences() {
        check_against_finite_differences(RopeLayout::Halves, BaseWeights::Dense, false);
    }

    #[test]
    fn lora_gradients_match_finite_differences_with_interleaved_rope() {
        check_against_finite_differences(RopeLayout::Interleaved, BaseWeights::Dense, false);
    }

    #[test]
    fn qlora_gradients_match_finite_differences_on_a_4_bit_base() {
        check_against_finite_differences(RopeLayout::Halves, BaseWeights::FourBit, false);
    }

    #[test]
    fn qdora_magnitude_gradients_match_finite_differences_on_a_4_bit_base() {
        check_against_finite_differences(RopeLayout::Halves, BaseWeights::FourBit, true);
    }

    #[test]
    fn dora_with_magnitudes_at_the_row_norms_and_zero_b_is_the_base_model() {
        let base = Base::new(random_model(config(RopeLayout::Halves)), BaseWeights::Dense, DType::F64, true).unwrap();
        let (_, mut lora) = random_lora(&base, DType::F64, true);
        for (i, pair) in lora.pairs.iter_mut().enumerate() {
            let pair = pair.as_mut().unwrap();
            pair.b = pair.b.zeros_like().unwrap();
            pair.magnitude = Some(base.row_norms(i / 7, Projection::ALL[i % 7]).unwrap());
        }
        let with = base.logprob(&sequence(), Some(&lora)).unwrap();
        let without = base.logprob(&sequence(), None).unwrap();
        assert!((with - without).abs() < 1e-9, "{with} vs {without}");
    }

    #[test]
    fn checkpointing_gives_the_same_gradients_dropout_included() {
        let base = Base::new(random_model(config(RopeLayout::Halves)), BaseWeights::Dense, DType::F64, true).unwrap();
        let (_, lora) = random_lora(&base, DType::F64, true);
        let dropout = Some(Dropout { p: 0.3, seed: 7 });
        let (sum_whole, whole) = grads(&base, &lora, dropout, false);
        let (sum_layers, layers) = grads(&base, &lora, dropout, true);
        assert!((sum_whole - sum_layers).abs() < 1e-10);
        for (w, l) in whole.iter().zip(&layers) {
            for (w, l) in w.as_ref().unwrap().iter().zip(l.as_ref().unwrap()) {
                let diff = (w - l).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
                assert!(diff < 1e-10, "{diff}");
            }
        }
        let (_, undropped) = grads(&base, &lora, None, true);
        let differs = |a: &Grads, b: &Grads| {
            let (a, b) = (&a[0].as_ref().unwrap()[0], &b[0].as_ref().unwrap()[0]);
            (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap() > 1e-6
        };
        assert!(differs(&layers, &undropped), "dropout changes the gradients");
    }

    #[test]
    fn the_training_forward_matches_the_engines() {
        // Same weights, same tokens: the differentiable forward must score like the inference one.
        let config = config(RopeLayout::Halves);
        let model = random_model(config.clone());
        let tokens = [3u32, 17, 5, 9, 33];
        let mut cache = crate::engine::KvCache::default();
        let engine_logits = model.forward(&tokens[..4], &mut cache, None).unwrap();
        let engine_logprob = log_softmax(&engine_logits, D::Minus1).unwrap().to_vec1::<f32>().unwrap()[33];
        let base = Base::new(model, BaseWeights::Dense, DType::F32, false).unwrap();
        let ours = base.logprob(&Sequence { tokens: tokens.to_vec(), prompt_len: 4 }, None).unwrap();
        assert!((ours - engine_logprob as f64).abs() < 1e-4, "{ours} vs {engine_logprob}");
    }

    #[test]
    fn top1_counts_the_targets_the_engine_would_pick_greedily() {
        let model = random_model(config(RopeLayout::Halves));
        let greedy_next = |tokens: &[u32]| {
            let mut cache = crate::engine::KvCache::default();
            let logits = model.forward(tokens, &mut cache, None).unwrap();
            logits.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap()
        };
        // Three targets the model ranks first, then two it does not.
        let mut tokens = vec![3u32, 17];
        for picked in [true, true, true, false, false] {
            let next = greedy_next(&tokens);
            tokens.push(if picked { next } else { (next + 1) % 40 });
        }
        let base = Base::new(model, BaseWeights::Dense, DType::F32, false).unwrap();
        let sequence = Sequence { tokens, prompt_len: 2 };
        let scores = base.mean_scores([&sequence], None).unwrap();
        assert!((scores.top1 - 0.6).abs() < 1e-12, "{}", scores.top1);
        let nll = -base.logprob(&sequence, None).unwrap() / 5.0;
        assert!((scores.nll - nll).abs() < 1e-12, "{} vs {nll}", scores.nll);
    }
}
