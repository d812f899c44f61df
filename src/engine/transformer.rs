//! The decoder stack shared by the qwen2 and llama families: pre-norm blocks of grouped-query
//! attention with RoPE and a SwiGLU MLP. The two families differ only in what their files
//! (`qwen2.rs`, `llama.rs`) configure: tensor names, q/k/v biases, RoPE layout, tied embeddings.
//!
//! The model is immutable once loaded and shared by every request; what a request changes lives in
//! its [`KvCache`], and which LoRA adapters apply to which tokens is an argument ([`Route`]).

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{D, DType, Device, Module, Tensor};

use super::attention;
use super::kernels::prefill::{self, Packed};
use super::kernels::{Matrix, candle_repacks};
use super::lora::{Adapter, Projection, Route};

/// How q/k are laid out for RoPE: HF checkpoints rotate the two halves of each head ("neox"),
/// llama.cpp permutes llama q/k weights so that adjacent pairs rotate ("interleaved").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    Halves,
    Interleaved,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f32,
    pub rms_norm_eps: f64,
    pub max_position: usize,
    pub rope: RopeLayout,
}

/// From this many rows on, a quantized weight is dequantized for one F32 matmul: candle's plain
/// quantized CPU kernel works row by row, while the F32 gemm batches, so prefilling a chunk is
/// several times faster this way (measured in `benches/engine_speed.rs`); decoding (one row) keeps
/// the memory-light quantized kernels. Weights in integer tiles — ours (`Matrix::batches_in_int8`)
/// or candle's (`kernels::candle_repacks`) — keep them for every row count (faster still).
const DEQUANTIZE_FROM_ROWS: usize = 8;

/// A weight matrix as loaded: candle's representation, or one with our own decode kernel.
pub(crate) enum Weight {
    Candle(QMatMul),
    Own(Matrix),
}

impl Weight {
    /// The formats we have faster CPU kernels for get ours (`Matrix::for_qtensor`); everything else
    /// stays with candle.
    pub(crate) fn new(weight: QMatMul) -> candle_core::Result<Weight> {
        match &weight {
            QMatMul::QTensor(q) => match Matrix::for_qtensor(q) {
                Some(matrix) => Ok(Weight::Own(matrix?)),
                None => Ok(Weight::Candle(weight)),
            },
            _ => Ok(Weight::Candle(weight)),
        }
    }

    /// The GGUF block format the weight is stored in, if quantized.
    pub(crate) fn quantization(&self) -> Option<GgmlDType> {
        match self {
            Weight::Candle(QMatMul::QTensor(q)) => Some(q.dtype()),
            Weight::Candle(_) => None,
            Weight::Own(matrix) => Some(matrix.quantization()),
        }
    }

    /// Bytes the weight occupies in memory.
    pub(crate) fn packed_bytes(&self) -> usize {
        match self {
            Weight::Candle(QMatMul::QTensor(q)) => q.storage_size_in_bytes(),
            Weight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.elem_count() * t.dtype().size_in_bytes(),
            Weight::Own(matrix) => matrix.packed_bytes(),
        }
    }

    /// The weights as an F32 `[out, in]` tensor.
    pub(crate) fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Weight::Candle(QMatMul::QTensor(q)) => q.dequantize(device),
            Weight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.to_dtype(DType::F32),
            Weight::Own(matrix) => matrix.dequantize(device),
        }
    }

    /// `x · Wᵀ`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let rows = x.elem_count() / x.dim(D::Minus1)?;
        let batched = rows >= DEQUANTIZE_FROM_ROWS;
        match self {
            Weight::Own(matrix) if batched && !matrix.batches_in_int8() => {
                with_features(x, matrix.out_features(), prefill::matmul(&values(x)?, Packed::Own(matrix))?)
            }
            Weight::Own(matrix) => with_features(x, matrix.out_features(), matrix.matmul(&values(x)?)),
            Weight::Candle(weight @ QMatMul::QTensor(q)) if batched => {
                let (out_features, in_features) = q.shape().dims2()?;
                if q.device().is_cpu() && candle_repacks(q.dtype(), rows, out_features, in_features) {
                    weight.forward(x)
                } else if Packed::Candle(q).supported() {
                    with_features(x, out_features, prefill::matmul(&values(x)?, Packed::Candle(q))?)
                } else {
                    x.broadcast_matmul(&q.dequantize(x.device())?.t()?)
                }
            }
            Weight::Candle(weight) => weight.forward(x),
        }
    }
}

/// The activations as one F32 row-major vector, for our kernels.
fn values(x: &Tensor) -> candle_core::Result<Vec<f32>> {
    x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
}

/// Our kernels' output `y` shaped as `x` with `out_features` in its last dimension.
fn with_features(x: &Tensor, out_features: usize, y: Vec<f32>) -> candle_core::Result<Tensor> {
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("activations have a feature dimension") = out_features;
    Tensor::from_vec(y, dims, x.device())
}

/// One projection of a block, with the hook where a LoRA adapter adds its low-rank update.
pub(crate) struct Linear {
    pub(crate) weight: Weight,
    pub(crate) bias: Option<Tensor>,
    pub(crate) layer: usize,
    pub(crate) projection: Projection,
}

impl Linear {
    fn forward(&self, x: &Tensor, route: &Route) -> candle_core::Result<Tensor> {
        let y = route.apply(self.layer, self.projection, self.weight.forward(x)?, x)?;
        match &self.bias {
            Some(bias) => y.broadcast_add(bias),
            None => Ok(y),
        }
    }
}

impl Block {
    pub(crate) fn linear(&self, projection: Projection) -> &Linear {
        match projection {
            Projection::Q => &self.q,
            Projection::K => &self.k,
            Projection::V => &self.v,
            Projection::O => &self.o,
            Projection::Gate => &self.gate,
            Projection::Up => &self.up,
            Projection::Down => &self.down,
        }
    }
}

pub(crate) struct Block {
    pub(crate) attn_norm: Tensor,
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) mlp_norm: Tensor,
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

pub struct Transformer {
    pub config: Config,
    pub(crate) embed: Tensor,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm: Tensor,
    pub(crate) output: Weight,
    cos: Tensor,
    sin: Tensor,
}

/// Keys and values of every layer for the tokens seen so far, so a prompt that extends an earlier
/// one only needs its new tail computed. Each layer's buffers are preallocated and written in place
/// (appending a token copies nothing old); truncating only shortens the token list.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<LayerCache>>,
    tokens: Vec<u32>,
}

/// `[1, kv_heads, capacity, head_dim]` buffers; positions past `tokens.len()` are stale.
struct LayerCache {
    k: Tensor,
    v: Tensor,
}

impl KvCache {
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Forgets everything after the first `len` tokens (their K/V slots are simply overwritten later).
    pub fn truncate(&mut self, len: usize) {
        self.tokens.truncate(len);
    }

    /// A cache of its own holding a copy of the first `len` tokens (the buffers are written in
    /// place, so sharing them would let one cache overwrite the other's positions).
    pub fn fork(&self, len: usize) -> candle_core::Result<KvCache> {
        let len = len.min(self.tokens.len());
        if len == 0 {
            return Ok(KvCache::default());
        }
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                layer
                    .as_ref()
                    .map(|l| {
                        let copy = |t: &Tensor| {
                            let (batch, kv_heads, _, head_dim) = t.dims4()?;
                            let fresh = Tensor::zeros(
                                (batch, kv_heads, len.next_power_of_two().max(256), head_dim),
                                t.dtype(),
                                t.device(),
                            )?;
                            fresh.slice_set(&t.narrow(2, 0, len)?.contiguous()?, 2, 0)?;
                            Ok::<_, candle_core::Error>(fresh)
                        };
                        Ok(LayerCache { k: copy(&l.k)?, v: copy(&l.v)? })
                    })
                    .transpose()
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(KvCache { layers, tokens: self.tokens[..len].to_vec() })
    }
}

/// Writes `k`/`v` (`[1, kv_heads, seq, head_dim]`) at position `past` and returns views of all
/// `past + seq` positions.
fn append(
    layer: &mut Option<LayerCache>,
    k: &Tensor,
    v: &Tensor,
    past: usize,
    max_position: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (batch, kv_heads, seq, head_dim) = k.dims4()?;
    let needed = past + seq;
    let capacity = layer.as_ref().map_or(0, |l| l.k.dim(2).unwrap_or(0));
    if capacity < needed {
        // Grow geometrically so a long generation reallocates only a few times.
        let grown = needed.next_power_of_two().max(256).min(max_position.max(needed));
        let fresh = || Tensor::zeros((batch, kv_heads, grown, head_dim), k.dtype(), k.device());
        let (new_k, new_v) = (fresh()?, fresh()?);
        if let Some(old) = layer.as_ref().filter(|_| past > 0) {
            new_k.slice_set(&old.k.narrow(2, 0, past)?.contiguous()?, 2, 0)?;
            new_v.slice_set(&old.v.narrow(2, 0, past)?.contiguous()?, 2, 0)?;
        }
        *layer = Some(LayerCache { k: new_k, v: new_v });
    }
    let cache = layer.as_ref().expect("allocated above");
    cache.k.slice_set(&k.contiguous()?, 2, past)?;
    cache.v.slice_set(&v.contiguous()?, 2, past)?;
    Ok((cache.k.narrow(2, 0, needed)?, cache.v.narrow(2, 0, needed)?))
}

impl Transformer {
    pub(crate) fn new(
        config: Config,
        embed: Tensor,
        blocks: Vec<Block>,
        norm: Tensor,
        output: Weight,
    ) -> candle_core::Result<Transformer> {
        let (cos, sin) = rope_tables(&config, embed.device())?;
        Ok(Transformer { config, embed, blocks, norm, output, cos, sin })
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Runs `tokens` after what `cache` holds, appends them to it and returns the logits (F32,
    /// shape `[vocab]`) for the last one.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        adapter: Option<&Adapter>,
    ) -> candle_core::Result<Tensor> {
        self.forward_from(tokens, cache, adapter, tokens.len() - 1)?.flatten_all()
    }

    /// [`Transformer::forward`], returning the logits (`[tokens.len() - from, vocab]`) after each of
    /// `tokens[from..]`: what scoring a known continuation needs.
    pub fn forward_from(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        adapter: Option<&Adapter>,
        from: usize,
    ) -> candle_core::Result<Tensor> {
        self.forward_routed(tokens, cache, &Route::Whole(adapter), from)
    }

    /// [`Transformer::forward_from`] with each token's adapters chosen by `route`.
    pub fn forward_routed(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        route: &Route,
        from: usize,
    ) -> candle_core::Result<Tensor> {
        let past = cache.tokens.len();
        let seq = tokens.len();
        if past + seq > self.config.max_position {
            candle_core::bail!("{} tokens exceed the model's context of {}", past + seq, self.config.max_position);
        }
        cache.layers.resize_with(self.blocks.len(), || None);
        let ids = Tensor::new(tokens, self.device())?.unsqueeze(0)?;
        let mut x = self.embed.embedding(&ids.squeeze(0)?)?.unsqueeze(0)?;
        let mask = std::cell::OnceCell::new();
        let (cos, sin) = (self.cos.narrow(0, past, seq)?, self.sin.narrow(0, past, seq)?);
        let at = Positions { past, mask: &mask, cos: &cos, sin: &sin };
        for (block, layer_cache) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let h = candle_nn::ops::rms_norm(&x, &block.attn_norm, self.config.rms_norm_eps as f32)?;
            let attended = self.attention(block, &h, layer_cache, &at, route)?;
            x = (x + attended)?;
            let h = candle_nn::ops::rms_norm(&x, &block.mlp_norm, self.config.rms_norm_eps as f32)?;
            let gate = candle_nn::ops::silu(&block.gate.forward(&h, route)?)?;
            let mlp = block.down.forward(&(gate * block.up.forward(&h, route)?)?, route)?;
            x = (x + mlp)?;
        }
        cache.tokens.extend_from_slice(tokens);
        let wanted = x.narrow(1, from, seq - from)?;
        let wanted = candle_nn::ops::rms_norm(&wanted, &self.norm, self.config.rms_norm_eps as f32)?;
        self.output.forward(&wanted)?.squeeze(0)?.to_dtype(DType::F32)
    }

    fn attention(
        &self,
        block: &Block,
        x: &Tensor,
        cache: &mut Option<LayerCache>,
        at: &Positions,
        route: &Route,
    ) -> candle_core::Result<Tensor> {
        let Positions { past, mask, cos, sin } = *at;
        let c = &self.config;
        let (batch, seq, _) = x.dims3()?;
        let heads = |t: Tensor, n: usize| t.reshape((batch, seq, n, c.head_dim))?.transpose(1, 2)?.contiguous();
        let q = heads(block.q.forward(x, route)?, c.num_heads)?;
        let k = heads(block.k.forward(x, route)?, c.num_kv_heads)?;
        let v = heads(block.v.forward(x, route)?, c.num_kv_heads)?;
        let (q, k) = match c.rope {
            RopeLayout::Halves => {
                (candle_nn::rotary_emb::rope(&q, cos, sin)?, candle_nn::rotary_emb::rope(&k, cos, sin)?)
            }
            RopeLayout::Interleaved => {
                (candle_nn::rotary_emb::rope_i(&q, cos, sin)?, candle_nn::rotary_emb::rope_i(&k, cos, sin)?)
            }
        };
        let (k, v) = append(cache, &k, &v, past, c.max_position)?;
        // A few rows (a decode step, a verify pass of drafted tokens) take the decode kernel row by
        // row, so each row's result is bit for bit what decoding that token alone gives.
        if seq < DEQUANTIZE_FROM_ROWS
            && let Some(layer) = cache.as_ref()
        {
            let mut rows = Vec::with_capacity(seq);
            for row in 0..seq {
                let query = q.narrow(2, row, 1)?.contiguous()?;
                match attention::decode(&query, &layer.k, &layer.v, past + row + 1)? {
                    Some(out) => rows.push(out),
                    None => break,
                }
            }
            if rows.len() == seq {
                return block.o.forward(&Tensor::cat(&rows, 1)?, route);
            }
        }
        if let Some(layer) = cache.as_ref()
            && let Some(out) = attention::prefill(&q, &layer.k, &layer.v, past)?
        {
            return block.o.forward(&out, route);
        }
        // Grouped-query attention without copying K/V per head: the query heads that share a KV
        // head become extra rows of one matmul against it.
        let group = c.num_heads / c.num_kv_heads;
        let q = q.reshape((batch, c.num_kv_heads, group * seq, c.head_dim))?;
        let scores = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?;
        let scores = match seq {
            1 => scores,
            _ => {
                if mask.get().is_none() {
                    let _ = mask.set(causal_mask(seq, past, x.device())?);
                }
                let mask = mask.get().expect("set just above");
                match group {
                    1 => scores.broadcast_add(mask)?,
                    _ => scores.broadcast_add(&Tensor::cat(&vec![mask; group], 0)?)?,
                }
            }
        };
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = weights.matmul(&v)?.reshape((batch, c.num_heads, seq, c.head_dim))?.transpose(1, 2)?.reshape((
            batch,
            seq,
            c.num_heads * c.head_dim,
        ))?;
        block.o.forward(&out, route)
    }
}

/// Where the tokens of one forward pass sit: after `past` cached ones, with their RoPE rows and,
/// for more than one token, the causal mask once a layer needs it (the CPU's prefill attention
/// does not: `attention::prefill`).
#[derive(Clone, Copy)]
struct Positions<'a> {
    past: usize,
    mask: &'a std::cell::OnceCell<Tensor>,
    cos: &'a Tensor,
    sin: &'a Tensor,
}

/// `[seq, past + seq]`: 0 where a query may attend, -inf on future positions.
fn causal_mask(seq: usize, past: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..past + seq).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_slice(&mask, (seq, past + seq), device)
}

pub(crate) fn rope_tables(config: &Config, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let inv_freq: Vec<f32> = (0..config.head_dim)
        .step_by(2)
        .map(|i| 1.0 / config.rope_theta.powf(i as f32 / config.head_dim as f32))
        .collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, config.head_dim / 2), device)?;
    let positions = Tensor::arange(0u32, config.max_position as u32, device)?.to_dtype(DType::F32)?;
    let angles = positions.unsqueeze(1)?.matmul(&inv_freq)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Log-probabilities of a logits vector.
pub fn log_softmax(logits: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::log_softmax(logits, D::Minus1)
}
