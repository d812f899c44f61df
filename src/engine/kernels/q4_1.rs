//! Q4_1 weights with a decode kernel of our own. candle's CPU kernel for Q4_1 is its scalar
//! fallback (SmolLM2-135M decoded at ~25 tok/s with it). Here each block's scale and minimum are
//! converted from f16 once at load; with AVX2 the products run on 8-bit activations, with AVX-512
//! VNNI two blocks per instruction; without AVX2 the F32 activations are multiplied directly.

use super::{BLOCK, Q8Row, fill_rows, has_avx2};
#[cfg(target_arch = "x86_64")]
use super::{has_avx512_vnni, sum_lanes_128, sum_lanes_256};
use candle_core::quantized::QTensor;
use half::f16;
use std::ops::Range;

/// Bytes per block in GGUF: f16 scale, f16 minimum, 16 bytes of nibbles.
const BLOCK_BYTES: usize = 20;

/// One row's block scales and nibbles.
type RowBlocks<'a> = (&'a [[f32; 2]], &'a [u8]);

pub(crate) struct Q41Matrix {
    pub(super) out_features: usize,
    pub(super) in_features: usize,
    /// `(d, m)` of every block, row-major: a weight is `d · q + m`.
    pub(super) scales: Vec<[f32; 2]>,
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
            .map(|b| [f16::from_le_bytes([b[0], b[1]]).to_f32(), f16::from_le_bytes([b[2], b[3]]).to_f32()])
            .collect();
        let nibbles = blocks.flat_map(|b| b[4..].iter().copied()).collect();
        Ok(Q41Matrix { out_features, in_features, scales, nibbles })
    }

    pub(crate) fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let blocks = rows.start * self.in_features / BLOCK..rows.end * self.in_features / BLOCK;
        let nibbles = self.nibbles[blocks.start * BLOCK / 2..blocks.end * BLOCK / 2].chunks_exact(BLOCK / 2);
        for ((&[d, m], bytes), out) in self.scales[blocks].iter().zip(nibbles).zip(out.chunks_exact_mut(BLOCK)) {
            let (low, high) = out.split_at_mut(BLOCK / 2);
            for ((b, low), high) in bytes.iter().zip(low).zip(high) {
                *low = d * (b & 0x0F) as f32 + m;
                *high = d * (b >> 4) as f32 + m;
            }
        }
    }

    pub(crate) fn packed_bytes(&self) -> usize {
        self.scales.len() * std::mem::size_of::<[f32; 2]>() + self.nibbles.len()
    }

    /// `out[r][j] = Σ_k W[j][k] · x[r][k]` for `x` holding rows of `in_features` values. Each
    /// task reads its weight rows once for all of `x`'s rows (a verify pass of several drafted
    /// tokens costs little more than one decode step).
    pub(crate) fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let blocks_per_row = self.in_features / BLOCK;
        let inputs = x.len() / self.in_features;
        let mut out = vec![0f32; inputs * self.out_features];
        let int8 = has_avx2();
        #[cfg(target_arch = "x86_64")]
        let vnni = int8 && has_avx512_vnni();
        // Σ W·x = Σ_blocks (d·Σ q·x + m·Σ x): the block sums of x serve every row.
        let block_sums: Vec<Vec<f32>> = x
            .chunks_exact(self.in_features)
            .map(|xs| xs.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect())
            .collect();
        let quantized: Vec<Option<Q8Row>> =
            x.chunks_exact(self.in_features).map(|xs| int8.then(|| Q8Row::new(xs))).collect();
        #[cfg(target_arch = "x86_64")]
        let paired: Vec<Option<Q8Pairs>> = quantized
            .iter()
            .zip(&block_sums)
            .map(|(q, sums)| {
                q.as_ref().filter(|_| vnni && blocks_per_row.is_multiple_of(2)).map(|q| Q8Pairs::new(q, sums))
            })
            .collect();
        let row_blocks = |row: usize| -> RowBlocks<'_> {
            let blocks = row * blocks_per_row..(row + 1) * blocks_per_row;
            (&self.scales[blocks.clone()], &self.nibbles[blocks.start * BLOCK / 2..blocks.end * BLOCK / 2])
        };
        let one = |input: usize, row: usize| {
            let (scales, nibbles) = row_blocks(row);
            match &quantized[input] {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `quantized` exists only when the CPU has AVX2 and FMA.
                Some(q) => unsafe { dot_row_q8_avx2(scales, nibbles, q, &block_sums[input]) },
                _ => dot_row(scales, nibbles, &x[input * self.in_features..][..self.in_features], &block_sums[input]),
            }
        };
        #[cfg(target_arch = "x86_64")]
        let four = int8.then(|| {
            let (quantized, paired, block_sums) = (&quantized, &paired, &block_sums);
            move |input: usize, row: usize| {
                let rows = std::array::from_fn(|i| row_blocks(row + i));
                match (&paired[input], &quantized[input]) {
                    // SAFETY: `paired` exists only when the CPU has AVX-512 VNNI.
                    (Some(pairs), _) => unsafe { dot_4_rows_avx512_vnni(&rows, pairs) },
                    // SAFETY: `quantized` exists only when the CPU has AVX2 and FMA.
                    (None, Some(q)) => unsafe { dot_4_rows_q8_avx2(&rows, q, &block_sums[input]) },
                    (None, None) => unreachable!("four-row kernels run only where rows are quantized"),
                }
            }
        });
        #[cfg(not(target_arch = "x86_64"))]
        let four = None::<fn(usize, usize) -> [f32; 4]>;
        fill_rows(&mut out, inputs, four, one);
        out
    }
}

/// A [`Q8Row`] laid out for the AVX-512 kernel, two blocks per 64 bytes in the order the weights
/// unpack to (`[x0[..16], x1[..16], x0[16..], x1[16..]]` for blocks 0 and 1), with each pair's
/// scales spread to match the product lanes (`[s0 ×4, s1 ×4, s0 ×4, s1 ×4]`) and its block sums
/// as `[0, Σx0, 0, Σx1]` (against `[d0, m0, d1, m1]` they give the minimum terms).
#[cfg(target_arch = "x86_64")]
struct Q8Pairs {
    values: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<f32>,
}

#[cfg(target_arch = "x86_64")]
impl Q8Pairs {
    fn new(row: &Q8Row, block_sums: &[f32]) -> Q8Pairs {
        let pairs = row.scales.len() / 2;
        let (mut values, mut scales, mut sums) =
            (Vec::with_capacity(pairs * 64), Vec::with_capacity(pairs * 16), Vec::with_capacity(pairs * 4));
        for p in 0..pairs {
            let (x0, x1) = (&row.values[2 * p * BLOCK..][..BLOCK], &row.values[(2 * p + 1) * BLOCK..][..BLOCK]);
            for half in [&x0[..16], &x1[..16], &x0[16..], &x1[16..]] {
                values.extend_from_slice(half);
            }
            let (s0, s1) = (row.scales[2 * p], row.scales[2 * p + 1]);
            for s in [s0, s1, s0, s1] {
                scales.extend_from_slice(&[s; 4]);
            }
            sums.extend_from_slice(&[0.0, block_sums[2 * p], 0.0, block_sums[2 * p + 1]]);
        }
        Q8Pairs { values, scales, sums }
    }
}

/// [`dot_4_rows_q8_avx2`] with AVX-512 VNNI, two blocks per step.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
fn dot_4_rows_avx512_vnni(rows: &[RowBlocks<'_>; 4], x: &Q8Pairs) -> [f32; 4] {
    use std::arch::x86_64::*;
    let low_mask = _mm256_set1_epi8(0x0F);
    // Lanes of [d0, m0, d1, m1] → [d0 ×4, d1 ×4, d0 ×4, d1 ×4].
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut minimums = [_mm_setzero_ps(); 4];
    for p in 0..x.sums.len() / 4 {
        // SAFETY: pair p has 64 activation bytes, 16 scale floats and 4 sums; every row has blocks
        // 2p and 2p + 1 (16 nibble bytes and one (d, m) pair each); unaligned loads.
        let (xq, x_scale, sums) = unsafe {
            (
                _mm512_loadu_si512(x.values.as_ptr().add(p * 64).cast()),
                _mm512_loadu_ps(x.scales.as_ptr().add(p * 16)),
                _mm_loadu_ps(x.sums.as_ptr().add(p * 4)),
            )
        };
        for (r, (scales, nibbles)) in rows.iter().enumerate() {
            // SAFETY: as above; `[f32; 2]` pairs are two adjacent f32s.
            let (packed, dm) = unsafe {
                (
                    _mm256_loadu_si256(nibbles.as_ptr().add(p * BLOCK).cast()),
                    _mm_loadu_ps(scales.as_ptr().add(2 * p).cast()),
                )
            };
            let low = _mm256_and_si256(packed, low_mask);
            let high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_mask);
            let weights = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
            let products = _mm512_dpbusd_epi32(_mm512_setzero_si512(), weights, xq);
            let d = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(dm));
            acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, x_scale), _mm512_cvtepi32_ps(products), acc[r]);
            minimums[r] = _mm_fmadd_ps(dm, sums, minimums[r]);
        }
    }
    std::array::from_fn(|r| _mm512_reduce_add_ps(acc[r]) + sum_lanes_128(minimums[r]))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_row_q8_avx2(scales: &[[f32; 2]], nibbles: &[u8], x: &Q8Row, block_sums: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let low_mask = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    let mut minimums = 0f32;
    for (b, &[d, m]) in scales.iter().enumerate() {
        // SAFETY: block b has 16 bytes of nibbles and 32 activation bytes (the slices were cut to
        // whole blocks); unaligned loads.
        let (packed, xq) = unsafe {
            (
                _mm_loadu_si128(nibbles.as_ptr().add(b * BLOCK / 2).cast()),
                _mm256_loadu_si256(x.values.as_ptr().add(b * BLOCK).cast()),
            )
        };
        // Byte i holds weight i (low nibble) and weight i + 16 (high): [low | high] is weights 0..32.
        let low = _mm_and_si128(packed, low_mask);
        let high = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
        let weights = _mm256_set_m128i(high, low);
        // u8 × i8 pairs summed to i16 (at most 2 · 15 · 127, no saturation), then to i32.
        let products = _mm256_madd_epi16(_mm256_maddubs_epi16(weights, xq), ones);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * x.scales[b]), _mm256_cvtepi32_ps(products), acc);
        minimums += m * block_sums[b];
    }
    sum_lanes_256(acc) + minimums
}

/// [`dot_row_q8_avx2`] for four rows at once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_4_rows_q8_avx2(rows: &[RowBlocks<'_>; 4], x: &Q8Row, block_sums: &[f32]) -> [f32; 4] {
    use std::arch::x86_64::*;
    let low_mask = _mm_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut minimums = [0f32; 4];
    for (b, (&x_scale, &sum)) in x.scales.iter().zip(block_sums).enumerate() {
        // SAFETY: every row has a block b (the slices were cut to whole rows of blocks) and x has
        // 32 bytes per block; unaligned loads.
        let xq = unsafe { _mm256_loadu_si256(x.values.as_ptr().add(b * BLOCK).cast()) };
        for (r, (scales, nibbles)) in rows.iter().enumerate() {
            let [d, m] = scales[b];
            // SAFETY: as above.
            let packed = unsafe { _mm_loadu_si128(nibbles.as_ptr().add(b * BLOCK / 2).cast()) };
            let low = _mm_and_si128(packed, low_mask);
            let high = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
            let products = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set_m128i(high, low), xq), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * x_scale), _mm256_cvtepi32_ps(products), acc[r]);
            minimums[r] += m * sum;
        }
    }
    std::array::from_fn(|r| sum_lanes_256(acc[r]) + minimums[r])
}

/// One output value in F32 (CPUs without AVX2).
fn dot_row(scales: &[[f32; 2]], nibbles: &[u8], xs: &[f32], block_sums: &[f32]) -> f32 {
    // Sixteen independent accumulators across all blocks, reduced once at the end: a per-block sum
    // would serialise the additions and keep the loop scalar.
    let mut lanes = [0f32; BLOCK / 2];
    let mut minimums = 0f32;
    for (((&[d, m], bytes), x), sum) in
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
    use candle_core::{Device, Tensor};

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx512_kernel_equals_the_avx2_one() {
        if !has_avx512_vnni() {
            eprintln!("no AVX-512 VNNI on this CPU: nothing to compare");
            return;
        }
        let device = Device::Cpu;
        let (out_features, in_features) = (4, 576);
        let w = Tensor::randn(0f32, 0.5, (out_features, in_features), &device).unwrap();
        let matrix = Q41Matrix::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q4_1).unwrap()).unwrap();
        let xs: Vec<f32> = Tensor::randn(0f32, 1.0, in_features, &device).unwrap().to_vec1().unwrap();
        let sums: Vec<f32> = xs.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect();
        let q = Q8Row::new(&xs);
        let blocks = in_features / BLOCK;
        let rows: [RowBlocks<'_>; 4] = std::array::from_fn(|r| {
            (&matrix.scales[r * blocks..][..blocks], &matrix.nibbles[r * blocks * BLOCK / 2..][..blocks * BLOCK / 2])
        });
        // SAFETY: both feature sets were checked above.
        let (avx2, avx512) =
            unsafe { (dot_4_rows_q8_avx2(&rows, &q, &sums), dot_4_rows_avx512_vnni(&rows, &Q8Pairs::new(&q, &sums))) };
        for (a, b) in avx2.iter().zip(&avx512) {
            assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{avx2:?} vs {avx512:?}");
        }
    }

    /// The F32 path (CPUs without AVX2) against candle's dequantized weights.
    #[test]
    fn the_f32_row_equals_candles_dequantized_weights() {
        let device = Device::Cpu;
        let (out_features, in_features) = (6, 256);
        let w = Tensor::randn(0f32, 0.5, (out_features, in_features), &device).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4_1).unwrap();
        let matrix = Q41Matrix::from_qtensor(&q).unwrap();
        let xs: Vec<f32> = Tensor::randn(0f32, 1.0, in_features, &device).unwrap().to_vec1().unwrap();
        let x = Tensor::from_slice(&xs, (1, in_features), &device).unwrap();
        let expected: Vec<f32> =
            x.matmul(&q.dequantize(&device).unwrap().t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let sums: Vec<f32> = xs.chunks_exact(BLOCK).map(|b| b.iter().sum()).collect();
        let blocks = in_features / BLOCK;
        for (row, want) in expected.iter().enumerate() {
            let scales = &matrix.scales[row * blocks..(row + 1) * blocks];
            let nibbles = &matrix.nibbles[row * blocks * BLOCK / 2..(row + 1) * blocks * BLOCK / 2];
            let exact = dot_row(scales, nibbles, &xs, &sums);
            assert!((exact - want).abs() < 1e-4, "row {row}: {exact} vs {want}");
        }
    }
}
