//! Q4_1 weights with a decode kernel of our own. candle's CPU kernel for Q4_1 is its scalar
//! fallback (SmolLM2-135M decoded at ~25 tok/s with it). Here each block's scale and minimum are
//! converted from f16 once at load, the F32 activations are multiplied directly (no 8-bit rounding of
//! them, unlike candle's and llama.cpp's kernels) and the rows are split over the rayon threads.

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use half::f16;
use rayon::prelude::*;

/// Weights per block; bytes per block in GGUF: f16 scale, f16 minimum, 16 bytes of nibbles.
const BLOCK: usize = 32;
const BLOCK_BYTES: usize = 20;
/// Output rows per rayon task: enough work to amortise the scheduling.
const ROWS_PER_TASK: usize = 32;

pub(crate) struct Q41Matrix {
    out_features: usize,
    in_features: usize,
    /// `(d, m)` of every block, row-major: a weight is `d · q + m`.
    scales: Vec<(f32, f32)>,
    /// 16 bytes per block; byte i holds weight i in its low nibble and weight i + 16 in its high one.
    nibbles: Vec<u8>,
}

impl Q41Matrix {
    pub(crate) fn from_qtensor(q: &QTensor) -> candle_core::Result<Q41Matrix> {
        let (out_features, in_features) = q.shape().dims2()?;
        let data = q.data()?;
        let blocks = data.chunks_exact(BLOCK_BYTES);
        let scales = blocks
            .clone()
            .map(|b| (f16::from_le_bytes([b[0], b[1]]).to_f32(), f16::from_le_bytes([b[2], b[3]]).to_f32()))
            .collect();
        let nibbles = blocks.flat_map(|b| b[4..].iter().copied()).collect();
        Ok(Q41Matrix { out_features, in_features, scales, nibbles })
    }

    /// The weights as an F32 `[out, in]` tensor (for batched prefill matmuls).
    pub(crate) fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        let mut w = Vec::with_capacity(self.out_features * self.in_features);
        for (&(d, m), bytes) in self.scales.iter().zip(self.nibbles.chunks_exact(BLOCK / 2)) {
            w.extend(bytes.iter().map(|b| d * (b & 0x0F) as f32 + m));
            w.extend(bytes.iter().map(|b| d * (b >> 4) as f32 + m));
        }
        Tensor::from_vec(w, (self.out_features, self.in_features), device)
    }

    pub(crate) fn out_features(&self) -> usize {
        self.out_features
    }

    /// `out[r][j] = Σ_k W[j][k] · x[r][k]` for `x` holding rows of `in_features` values.
    pub(crate) fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let blocks_per_row = self.in_features / BLOCK;
        let rows = x.len() / self.in_features;
        let mut out = vec![0f32; rows * self.out_features];
        for (xs, out) in x.chunks_exact(self.in_features).zip(out.chunks_exact_mut(self.out_features)) {
            // Σ W·x = Σ_blocks (d·Σ q·x + m·Σ x): the block sums of x serve every row.
            let block_sums: Vec<f32> = xs.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect();
            out.par_chunks_mut(ROWS_PER_TASK).enumerate().for_each(|(task, out)| {
                for (i, y) in out.iter_mut().enumerate() {
                    let row = task * ROWS_PER_TASK + i;
                    let blocks = row * blocks_per_row..(row + 1) * blocks_per_row;
                    let scales = &self.scales[blocks.clone()];
                    let nibbles = &self.nibbles[blocks.start * BLOCK / 2..blocks.end * BLOCK / 2];
                    *y = dot(scales, nibbles, xs, &block_sums);
                }
            });
        }
        out
    }
}

/// One output value, with the AVX2/FMA build of the same code where the CPU has them (the portable
/// build only gets SSE2, too narrow for the nibble unpacking to vectorize well).
fn dot(scales: &[(f32, f32)], nibbles: &[u8], xs: &[f32], block_sums: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function is compiled for (checked above).
        return unsafe { dot_row_avx2(scales, nibbles, xs, block_sums) };
    }
    dot_row(scales, nibbles, xs, block_sums)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_row_avx2(scales: &[(f32, f32)], nibbles: &[u8], xs: &[f32], block_sums: &[f32]) -> f32 {
    dot_row(scales, nibbles, xs, block_sums)
}

#[inline(always)]
fn dot_row(scales: &[(f32, f32)], nibbles: &[u8], xs: &[f32], block_sums: &[f32]) -> f32 {
    // Sixteen independent accumulators across all blocks, reduced once at the end: a per-block sum
    // would serialise the additions and keep the loop scalar.
    let mut lanes = [0f32; BLOCK / 2];
    let mut minimums = 0f32;
    for (((&(d, m), bytes), x), sum) in
        scales.iter().zip(nibbles.chunks_exact(BLOCK / 2)).zip(xs.chunks_exact(BLOCK)).zip(block_sums)
    {
        let (low, high) = x.split_at(BLOCK / 2);
        for i in 0..BLOCK / 2 {
            lanes[i] += d * ((bytes[i] & 0x0F) as f32 * low[i] + (bytes[i] >> 4) as f32 * high[i]);
        }
        minimums += m * sum;
    }
    lanes.iter().sum::<f32>() + minimums
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;

    #[test]
    fn matmul_and_dequantize_equal_candles_dequantized_weights() {
        let device = Device::Cpu;
        let (out_features, in_features, rows) = (96, 256, 3);
        let w = Tensor::randn(0f32, 0.5, (out_features, in_features), &device).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let matrix = Q41Matrix::from_qtensor(&q).unwrap();
        let reference = q.dequantize(&device).unwrap();
        let ours = matrix.dequantize(&device).unwrap();
        let same: Vec<f32> = (reference - &ours).unwrap().abs().unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert!(same.iter().all(|d| *d < 1e-6));
        let x = Tensor::randn(0f32, 1.0, (rows, in_features), &device).unwrap();
        let expected: Vec<f32> = x.matmul(&ours.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let got = matrix.matmul(&x.flatten_all().unwrap().to_vec1().unwrap());
        let diff = expected.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "max abs diff {diff}");
    }
}
