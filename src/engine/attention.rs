//! Attention on the CPU, read straight from the KV cache buffers: for one new token (decoding),
//! and for a chunk of prompt tokens (prefill).
//!
//! Through candle this step is a handful of tiny matmuls per layer, each split over the rayon threads
//! by the gemm crate: at a 1k-token context that cost SmolLM2 13 ms per token with two threads but
//! only 6 ms with one, the thread hand-offs costing more than the arithmetic. Here the heads are
//! shared out once per layer, over the spinning pool our matmul kernels use (rayon's threads would
//! compete with its spinning workers for the cores: 55–61 → 62–65 tok/s at a 515-token context),
//! and each head's scores, softmax and weighted sum of values run in one pass over contiguous memory.

use super::kernels::prefill::gemm_one_thread;
use candle_core::{DType, Storage, Tensor};
use std::cell::RefCell;

/// The first `len` positions of a contiguous F32 cache buffer `[1, kv_heads, capacity, head_dim]`.
struct Buffer<'a> {
    data: &'a [f32],
    capacity: usize,
}

/// A query tensor's values, and the cache buffers' data, when all are contiguous F32 on the CPU.
fn cpu_buffers<R>(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    f: impl FnOnce(Vec<f32>, Buffer<'_>, Buffer<'_>) -> candle_core::Result<R>,
) -> candle_core::Result<Option<R>> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
        return Ok(None);
    }
    let (_, kv_heads, capacity, head_dim) = k.dims4()?;
    let query: Vec<f32> = q.flatten_all()?.to_vec1()?;
    let (k_storage, k_layout) = k.storage_and_layout();
    let (v_storage, v_layout) = v.storage_and_layout();
    let (Storage::Cpu(k_cpu), Storage::Cpu(v_cpu)) = (&*k_storage, &*v_storage) else { return Ok(None) };
    if !k_layout.is_contiguous() || !v_layout.is_contiguous() {
        return Ok(None);
    }
    let span = kv_heads * capacity * head_dim;
    let keys = Buffer { data: &k_cpu.as_slice::<f32>()?[k_layout.start_offset()..][..span], capacity };
    let values = Buffer { data: &v_cpu.as_slice::<f32>()?[v_layout.start_offset()..][..span], capacity };
    f(query, keys, values).map(Some)
}

/// `softmax(q·Kᵀ/√d)·V` for one query row per head. `q`: `[1, heads, 1, head_dim]`; `k`, `v`: the
/// cache buffers `[1, kv_heads, capacity, head_dim]` (contiguous, F32), of which the first `len`
/// positions are valid. Returns `[1, 1, heads · head_dim]`. `None` when the tensors are not laid out
/// that way (another device or dtype): the caller takes the general path.
pub(crate) fn decode(q: &Tensor, k: &Tensor, v: &Tensor, len: usize) -> candle_core::Result<Option<Tensor>> {
    let (_, heads, _, head_dim) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    cpu_buffers(q, k, v, |query, keys, values| {
        let group = heads / kv_heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut out = vec![0f32; heads * head_dim];
        super::kernels::for_each_chunk(&mut out, head_dim, |head, out| {
            let kv = (head / group) * keys.capacity * head_dim;
            let keys = &keys.data[kv..kv + len * head_dim];
            let values = &values.data[kv..kv + len * head_dim];
            let query = &query[head * head_dim..(head + 1) * head_dim];
            one_head(query, keys, values, scale, out);
        });
        Tensor::from_vec(out, (1, 1, heads * head_dim), q.device())
    })
}

/// Query rows per task of [`prefill`]: the block's scores (rows × context) stay in the core's cache
/// between the two products, where candle's matmul → mask → softmax → matmul wrote and read
/// whole `[heads, rows, context]` tensors (at a 2k context, attention was half of a prefill).
const QUERY_ROWS: usize = 32;

thread_local! {
    /// A task's scores; grows to the longest block a thread has scored, then stays.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Causal `softmax(q·Kᵀ/√d)·V` for a chunk of `seq` new tokens after `past` cached ones. `q`:
/// `[1, heads, seq, head_dim]`; `k`, `v`: the cache buffers, which already hold the chunk's keys
/// and values. Returns `[1, seq, heads · head_dim]`, or `None` as [`decode`] does.
pub(crate) fn prefill(q: &Tensor, k: &Tensor, v: &Tensor, past: usize) -> candle_core::Result<Option<Tensor>> {
    let (_, heads, seq, head_dim) = q.dims4()?;
    let kv_heads = k.dim(1)?;
    cpu_buffers(q, k, v, |query, keys, values| {
        let group = heads / kv_heads;
        let blocks = seq.div_ceil(QUERY_ROWS);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut out = vec![0f32; seq * heads * head_dim];
        let target = super::kernels::SharedOut(out.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(heads * blocks, |tasks| {
            for task in tasks {
                let (head, block) = (task / blocks, task % blocks);
                let rows = block * QUERY_ROWS..((block + 1) * QUERY_ROWS).min(seq);
                // Every row of the block sees at most the keys up to its last row.
                let len = past + rows.end;
                let kv = (head / group) * keys.capacity * head_dim;
                let rows_query = &query[(head * seq + rows.start) * head_dim..(head * seq + rows.end) * head_dim];
                SCORES.with(|scores| {
                    let mut scores = scores.borrow_mut();
                    if scores.len() < rows.len() * len {
                        scores.resize(rows.len() * len, 0.0);
                    }
                    let scores = &mut scores[..rows.len() * len];
                    let keys = &keys.data[kv..kv + len * head_dim];
                    let values = &values.data[kv..kv + len * head_dim];
                    // SAFETY: row r of the block, head `head`, is `head_dim` values at
                    // ((rows.start + r) · heads + head) · head_dim of `out` (seq × heads × head_dim),
                    // written by this task alone; `out` outlives the pool call.
                    let out = target.at((rows.start * heads + head) * head_dim);
                    unsafe {
                        causal_block(
                            Block { query: rows_query, keys, values, head_dim, scale, first: past + rows.start },
                            scores,
                            out,
                            heads * head_dim,
                        )
                    }
                });
            }
        });
        Tensor::from_vec(out, (1, seq, heads * head_dim), q.device())
    })
}

/// One head's block of query rows against the keys and values before them.
struct Block<'a> {
    /// Row-major, `head_dim` per row.
    query: &'a [f32],
    /// The keys and values at positions `0..len`, `head_dim` per position.
    keys: &'a [f32],
    values: &'a [f32],
    head_dim: usize,
    scale: f32,
    /// The position of the block's first row.
    first: usize,
}

/// Writes the block's attention outputs, row r at `out + r · out_stride`.
///
/// # Safety
/// `out` points at `rows` rows of `head_dim` writable values `out_stride` apart, used by no one else.
unsafe fn causal_block(block: Block<'_>, scores: &mut [f32], out: *mut f32, out_stride: usize) {
    let Block { query, keys, values, head_dim, scale, first } = block;
    let (rows, len) = (query.len() / head_dim, keys.len() / head_dim);
    // SAFETY: scores is rows × len (row-major); the query is rows × head_dim and the keys
    // len × head_dim, both row-major, the keys read as Kᵀ by swapping their strides;
    // scores := scale · Q·Kᵀ.
    unsafe {
        gemm_one_thread(
            (rows, len, head_dim),
            (scores.as_mut_ptr(), len),
            (query.as_ptr(), head_dim),
            (keys.as_ptr(), head_dim as isize, 1),
            scale,
        )
    };
    for (r, row) in scores.chunks_exact_mut(len).enumerate() {
        // Position first + r sees keys 0..=first + r; the rest of the row is the future.
        let (seen, future) = row.split_at_mut(first + r + 1);
        future.fill(0.0);
        let max = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for s in seen.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        let norm = 1.0 / total;
        seen.iter_mut().for_each(|s| *s *= norm);
    }
    // SAFETY: as the caller promises for `out`; scores is rows × len and the values len × head_dim,
    // both row-major; out := P·V.
    unsafe {
        gemm_one_thread(
            (rows, head_dim, len),
            (out, out_stride),
            (scores.as_ptr(), len),
            (values.as_ptr(), 1, head_dim as isize),
            1.0,
        )
    };
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

    /// A chunk after cached positions, in blocks of query rows with a short last one, against
    /// the masked tensor computation the transformer used before.
    #[test]
    fn a_prefill_chunk_equals_the_masked_tensor_computation() {
        let device = Device::Cpu;
        let (heads, kv_heads, capacity, head_dim, past, seq) = (6, 2, 128, 16, 23, QUERY_ROWS + 9);
        let q = Tensor::randn(0f32, 1.0, (1, heads, seq, head_dim), &device).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, kv_heads, capacity, head_dim), &device).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, kv_heads, capacity, head_dim), &device).unwrap();
        let ours: Vec<f32> = prefill(&q, &k, &v, past).unwrap().unwrap().flatten_all().unwrap().to_vec1().unwrap();

        let len = past + seq;
        let group = heads / kv_heads;
        let (k, v) = (k.narrow(2, 0, len).unwrap(), v.narrow(2, 0, len).unwrap());
        let q = q.reshape((1, kv_heads, group * seq, head_dim)).unwrap();
        let mask: Vec<f32> = (0..group * seq)
            .flat_map(|row| (0..len).map(move |j| if j > past + row % seq { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (group * seq, len), &device).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap();
        let weights = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&mask).unwrap()).unwrap();
        let expected: Vec<f32> = weights
            .matmul(&v)
            .unwrap()
            .reshape((1, heads, seq, head_dim))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let diff = ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "max abs diff {diff}");
    }
}
