//! Attention for one new token (decoding) on the CPU, read straight from the KV cache buffers.
//!
//! Through candle this step is a handful of tiny matmuls per layer, each split over the rayon threads
//! by the gemm crate: at a 1k-token context that cost SmolLM2 13 ms per token with two threads but
//! only 6 ms with one, the thread hand-offs costing more than the arithmetic. Here the heads are
//! shared out once per layer, over the spinning pool our matmul kernels use (rayon's threads would
//! compete with its spinning workers for the cores: 55–61 → 62–65 tok/s at a 515-token context),
//! and each head's scores, softmax and weighted sum of values run in one pass over contiguous memory.

use candle_core::{DType, Storage, Tensor};

/// `softmax(q·Kᵀ/√d)·V` for one query row per head. `q`: `[1, heads, 1, head_dim]`; `k`, `v`: the
/// cache buffers `[1, kv_heads, capacity, head_dim]` (contiguous, F32), of which the first `len`
/// positions are valid. Returns `[1, 1, heads · head_dim]`. `None` when the tensors are not laid out
/// that way (another device or dtype): the caller takes the general path.
pub(crate) fn decode(q: &Tensor, k: &Tensor, v: &Tensor, len: usize) -> candle_core::Result<Option<Tensor>> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
        return Ok(None);
    }
    let (_, heads, _, head_dim) = q.dims4()?;
    let (_, kv_heads, capacity, _) = k.dims4()?;
    let query: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_storage, &*v_storage) else { return Ok(None) };
    if !k_layout.is_contiguous() || !v_layout.is_contiguous() {
        return Ok(None);
    }
    let span = kv_heads * capacity * head_dim;
    let keys = &k_cpu.as_slice::<f32>()?[k_layout.start_offset()..][..span];
    let values = &v_cpu.as_slice::<f32>()?[v_layout.start_offset()..][..span];
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mut out = vec![0f32; heads * head_dim];
    super::kernels::for_each_chunk(&mut out, head_dim, |head, out| {
        let kv = (head / group) * capacity * head_dim;
        let keys = &keys[kv..kv + len * head_dim];
        let values = &values[kv..kv + len * head_dim];
        let query = &query[head * head_dim..(head + 1) * head_dim];
        one_head(query, keys, values, scale, out);
    });
    drop((k_storage, v_storage));
    Tensor::from_vec(out, (1, 1, heads * head_dim), q.device()).map(Some)
}

fn one_head(query: &[f32], keys: &[f32], values: &[f32], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::has_avx2() {
        // SAFETY: the CPU supports the features the function is compiled for (checked above).
        return unsafe { one_head_avx2(query, keys, values, scale, out) };
    }
    one_head_portable(query, keys, values, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn one_head_avx2(query: &[f32], keys: &[f32], values: &[f32], scale: f32, out: &mut [f32]) {
    one_head_portable(query, keys, values, scale, out)
}

#[inline(always)]
fn one_head_portable(query: &[f32], keys: &[f32], values: &[f32], scale: f32, out: &mut [f32]) {
    let head_dim = query.len();
    // Plain loops, not iterator chains ending in `collect`: those can end up outside this function
    // and miss its AVX2 build.
    let mut scores = vec![0f32; keys.len() / head_dim];
    for (score, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
        *score = dot(query, key) * scale;
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0f32;
    for s in &mut scores {
        *s = (*s - max).exp();
        total += *s;
    }
    out.fill(0.0);
    for (weight, value) in scores.iter().zip(values.chunks_exact(head_dim)) {
        for (o, v) in out.iter_mut().zip(value) {
            *o += weight * v;
        }
    }
    let norm = 1.0 / total;
    out.iter_mut().for_each(|o| *o *= norm);
}

/// Eight independent partial sums, so the compiler can keep them in one vector register.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn equals_the_tensor_computation() {
        let device = Device::Cpu;
        let (heads, kv_heads, capacity, head_dim, len) = (6, 2, 40, 16, 29);
        let q = Tensor::randn(0f32, 1.0, (1, heads, 1, head_dim), &device).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, kv_heads, capacity, head_dim), &device).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, kv_heads, capacity, head_dim), &device).unwrap();
        let ours: Vec<f32> = decode(&q, &k, &v, len).unwrap().unwrap().flatten_all().unwrap().to_vec1().unwrap();

        let group = heads / kv_heads;
        let (k, v) = (k.narrow(2, 0, len).unwrap(), v.narrow(2, 0, len).unwrap());
        let q = q.reshape((1, kv_heads, group, head_dim)).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap();
        let weights = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let expected: Vec<f32> = weights.matmul(&v).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let diff = ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "max abs diff {diff}");
    }
}
