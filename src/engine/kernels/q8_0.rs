//! Q8_0 weights with a decode kernel of our own, for x86 CPUs where candle does not repack Q8_0
//! (no VNNI, or shapes its tiles do not fit — SmolLM2's and Qwen2.5-0.5B's 576 and 896 wide rows):
//! there candle's kernel hands the pool one row per call. Here four rows share each activation
//! block, and with AVX-512 VNNI two blocks go through one instruction. Scales are converted from
//! f16 once at load.

use super::{BLOCK, Q8Row, fill_rows};
#[cfg(target_arch = "x86_64")]
use super::{has_avx2, has_avx512_vnni, sum_lanes_256};
use candle_core::quantized::QTensor;
use half::f16;
use std::ops::Range;

/// Bytes per block in GGUF: f16 scale, 32 signed bytes.
const BLOCK_BYTES: usize = 34;

/// One row's block scales and weights.
type RowBlocks<'a> = (&'a [f32], &'a [i8]);

pub(crate) struct Q80Matrix {
    pub(super) out_features: usize,
    pub(super) in_features: usize,
    /// The scale of every block, row-major: a weight is `d · q`.
    scales: Vec<f32>,
    /// 32 per block.
    values: Vec<i8>,
}

impl Q80Matrix {
    pub(crate) fn from_qtensor(q: &QTensor) -> candle_core::Result<Q80Matrix> {
        let (out_features, in_features) = q.shape().dims2()?;
        let data = q.data()?;
        let blocks = data.chunks_exact(BLOCK_BYTES);
        let scales = blocks.clone().map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
        let values = blocks.flat_map(|b| b[2..].iter().map(|&v| v as i8)).collect();
        Ok(Q80Matrix { out_features, in_features, scales, values })
    }

    pub(crate) fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let blocks = rows.start * self.in_features / BLOCK..rows.end * self.in_features / BLOCK;
        let values = self.values[blocks.start * BLOCK..blocks.end * BLOCK].chunks_exact(BLOCK);
        for ((&d, q), out) in self.scales[blocks].iter().zip(values).zip(out.chunks_exact_mut(BLOCK)) {
            for (v, out) in q.iter().zip(out) {
                *out = d * *v as f32;
            }
        }
    }

    pub(crate) fn packed_bytes(&self) -> usize {
        self.scales.len() * std::mem::size_of::<f32>() + self.values.len()
    }

    /// `out[r][j] = Σ_k W[j][k] · x[r][k]` for `x` holding rows of `in_features` values; the
    /// activations are rounded to 8 bits per block on every CPU (as candle's kernel does). Each
    /// task reads its weight rows once for all of `x`'s rows.
    pub(crate) fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let blocks_per_row = self.in_features / BLOCK;
        let inputs = x.len() / self.in_features;
        let mut out = vec![0f32; inputs * self.out_features];
        #[cfg(target_arch = "x86_64")]
        let (int8, vnni) = (has_avx2(), has_avx2() && has_avx512_vnni() && blocks_per_row.is_multiple_of(2));
        let quantized: Vec<Q8Row> = x.chunks_exact(self.in_features).map(Q8Row::new).collect();
        let row_blocks = |row: usize| -> RowBlocks<'_> {
            let blocks = row * blocks_per_row..(row + 1) * blocks_per_row;
            (&self.scales[blocks.clone()], &self.values[blocks.start * BLOCK..blocks.end * BLOCK])
        };
        let one = |input: usize, row: usize| {
            let (scales, values) = row_blocks(row);
            dot_row(scales, values, &quantized[input])
        };
        #[cfg(target_arch = "x86_64")]
        let four = int8.then(|| {
            // Each pair of activation scales spread over the lanes its two blocks' products land in.
            let spread: Vec<Option<Vec<f32>>> = quantized
                .iter()
                .map(|q| {
                    vnni.then(|| q.scales.chunks_exact(2).flat_map(|s| [[s[0]; 8], [s[1]; 8]]).flatten().collect())
                })
                .collect();
            let quantized = &quantized;
            move |input: usize, row: usize| {
                let rows = std::array::from_fn(|i| row_blocks(row + i));
                match &spread[input] {
                    // SAFETY: `spread` exists only when the CPU has AVX-512 VNNI.
                    Some(scales) => unsafe { dot_4_rows_avx512_vnni(&rows, &quantized[input], scales) },
                    // SAFETY: `int8` says the CPU has AVX2 and FMA.
                    None => unsafe { dot_4_rows_avx2(&rows, &quantized[input]) },
                }
            }
        });
        #[cfg(not(target_arch = "x86_64"))]
        let four = None::<fn(usize, usize) -> [f32; 4]>;
        fill_rows(&mut out, inputs, four, one);
        out
    }
}

/// One output value, in portable integer arithmetic.
fn dot_row(scales: &[f32], values: &[i8], x: &Q8Row) -> f32 {
    let blocks = scales.iter().zip(values.chunks_exact(BLOCK)).zip(x.scales.iter().zip(x.values.chunks_exact(BLOCK)));
    blocks
        .map(|((d, w), (s, xq))| d * s * w.iter().zip(xq).map(|(&a, &b)| a as i32 * b as i32).sum::<i32>() as f32)
        .sum()
}

/// Four rows at once on AVX2. `maddubs` multiplies unsigned by signed bytes, so the weights' signs
/// move onto the activations (`|w| · sign(w)·x`, as llama.cpp does); pairs of products then stay
/// within i16 (2 · 128 · 127).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_4_rows_avx2(rows: &[RowBlocks<'_>; 4], x: &Q8Row) -> [f32; 4] {
    use std::arch::x86_64::*;
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    for (b, &x_scale) in x.scales.iter().enumerate() {
        // SAFETY: every row has a block b (the slices were cut to whole rows of blocks) and x has
        // 32 bytes per block; unaligned loads.
        let xq = unsafe { _mm256_loadu_si256(x.values.as_ptr().add(b * BLOCK).cast()) };
        for (r, (scales, values)) in rows.iter().enumerate() {
            // SAFETY: as above.
            let w = unsafe { _mm256_loadu_si256(values.as_ptr().add(b * BLOCK).cast()) };
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xq, w));
            let products = _mm256_madd_epi16(pairs, ones);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scales[b] * x_scale), _mm256_cvtepi32_ps(products), acc[r]);
        }
    }
    std::array::from_fn(|r| sum_lanes_256(acc[r]))
}

/// [`dot_4_rows_avx2`] with AVX-512 VNNI, two blocks per step: `vpdpbusd` sums four u8 × i8
/// products straight into i32 lanes, 0..8 for the first block and 8..16 for the second.
/// `x_scales` holds each pair of activation scales as `[s0 ×8, s1 ×8]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn dot_4_rows_avx512_vnni(rows: &[RowBlocks<'_>; 4], x: &Q8Row, x_scales: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    let zero = _mm512_setzero_si512();
    let mut acc = [_mm512_setzero_ps(); 4];
    for p in 0..x.scales.len() / 2 {
        // SAFETY: pair p is blocks 2p and 2p + 1: 64 bytes of x, 16 spread scales, and in every
        // row 64 weight bytes and two scales; unaligned loads.
        let (xq, x_scale) = unsafe {
            (_mm512_loadu_si512(x.values.as_ptr().add(p * 64).cast()), _mm512_loadu_ps(x_scales.as_ptr().add(p * 16)))
        };
        for (r, (scales, values)) in rows.iter().enumerate() {
            // SAFETY: as above.
            let (w, d) = unsafe {
                (
                    _mm512_loadu_si512(values.as_ptr().add(p * 64).cast()),
                    _mm_castsi128_ps(_mm_loadl_epi64(scales.as_ptr().add(2 * p).cast())),
                )
            };
            let signed_x = _mm512_mask_sub_epi8(xq, _mm512_movepi8_mask(w), zero, xq);
            let products = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(w), signed_x);
            let d = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d));
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, x_scale), _mm512_cvtepi32_ps(products), acc[r]);
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::{Device, Tensor};

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_simd_kernels_equal_the_portable_one() {
        if !has_avx2() {
            eprintln!("no AVX2 on this CPU: nothing to compare");
            return;
        }
        // 576 inputs (18 blocks, SmolLM2's width); weights include -128, the one value whose
        // magnitude does not fit i8.
        let w = Tensor::randn(0f32, 0.5, (4, 576), &Device::Cpu).unwrap();
        let mut matrix = Q80Matrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
        matrix.values[7] = -128;
        let xs: Vec<f32> = Tensor::randn(0f32, 1.0, 576, &Device::Cpu).unwrap().to_vec1().unwrap();
        let x = Q8Row::new(&xs);
        let blocks = 576 / BLOCK;
        let rows: [RowBlocks<'_>; 4] = std::array::from_fn(|r| {
            (&matrix.scales[r * blocks..][..blocks], &matrix.values[r * blocks * BLOCK..][..blocks * BLOCK])
        });
        let portable: [f32; 4] = std::array::from_fn(|r| dot_row(rows[r].0, rows[r].1, &x));
        let close = |a: [f32; 4], what: &str| {
            for (a, b) in a.iter().zip(&portable) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{what}: {a} vs portable {b}");
            }
        };
        // SAFETY: AVX2 and FMA were checked above.
        close(unsafe { dot_4_rows_avx2(&rows, &x) }, "AVX2");
        if has_avx512_vnni() {
            let spread: Vec<f32> = x.scales.chunks_exact(2).flat_map(|s| [[s[0]; 8], [s[1]; 8]]).flatten().collect();
            // SAFETY: AVX-512 VNNI was checked just above.
            close(unsafe { dot_4_rows_avx512_vnni(&rows, &x, &spread) }, "AVX-512 VNNI");
        }
    }
}
