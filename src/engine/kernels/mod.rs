//! Our own CPU kernels for the GGUF formats whose candle kernels are slow here: Q4_1 (candle has
//! only its scalar fallback) and Q8_0 (its plain kernel runs one row at a time). With AVX-512 VNNI
//! both are repacked into 16-row tiles (`tiles.rs`) that serve decoding and prefill chunks alike;
//! elsewhere `q4_1.rs` and `q8_0.rs` decode on the file's row layout and prefill dequantizes for
//! an F32 gemm (`prefill.rs`). What they share lives here: the activations rounded to 8 bits per
//! block, the CPU feature checks, and the split of output rows over candle's spinning thread pool.

pub(crate) mod prefill;
mod q4_1;
mod q8_0;
pub(crate) mod speed;
mod tiles;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use half::f16;
use q4_1::Q41Matrix;
use q8_0::Q80Matrix;
use tiles::Tiles;

/// A weight matrix in a format we have our own decode kernel for.
pub(crate) enum Matrix {
    Q41(Q41Matrix),
    Q80(Q80Matrix),
    Tiles(Tiles),
}

impl Matrix {
    /// Ours for Q4_1 and Q8_0 weights: 16-row [`Tiles`] on x86 CPUs with AVX-512 VNNI (whole tiles
    /// of rows), else the file's rows for Q4_1 on any CPU and for Q8_0 on x86 with AVX2; `None`
    /// leaves the weight to candle (its NEON kernels on ARM).
    pub(crate) fn for_qtensor(q: &QTensor) -> Option<candle_core::Result<Matrix>> {
        if !q.device().is_cpu() {
            return None;
        }
        if vnni_tiles()
            && let Some(tiles) = Tiles::from_qtensor(q)
        {
            return Some(tiles.map(Matrix::Tiles));
        }
        match q.dtype() {
            GgmlDType::Q4_1 => Some(Q41Matrix::from_qtensor(q).map(Matrix::Q41)),
            GgmlDType::Q8_0 => {
                // candle repacks Q8_0 only with VNNI, where the weights whose shapes its tiles fit
                // (whole 16-row tiles) are ours in `Tiles` above.
                let rows = cfg!(target_arch = "x86_64") && has_avx2();
                rows.then(|| Q80Matrix::from_qtensor(q).map(Matrix::Q80))
            }
            _ => None,
        }
    }

    /// `out[r][j] = Σ_k W[j][k] · x[r][k]` for `x` holding rows of the matrix's input width.
    pub(crate) fn matmul(&self, x: &[f32]) -> Vec<f32> {
        match self {
            Matrix::Q41(m) => m.matmul(x),
            Matrix::Q80(m) => m.matmul(x),
            Matrix::Tiles(m) => m.matmul(x),
        }
    }

    /// Whether [`Matrix::matmul`] is the fastest way to multiply many rows too (8-bit products in
    /// [`Tiles`]); the other formats dequantize for an F32 gemm (`prefill::matmul`).
    pub(crate) fn batches_in_int8(&self) -> bool {
        matches!(self, Matrix::Tiles(_))
    }

    /// The weights as an F32 `[out, in]` tensor (for batched prefill matmuls).
    pub(crate) fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        let (out_features, in_features) = (self.out_features(), self.in_features());
        let mut w = vec![0f32; out_features * in_features];
        self.dequantize_rows(0..out_features, &mut w);
        Tensor::from_vec(w, (out_features, in_features), device)
    }

    pub(crate) fn quantization(&self) -> GgmlDType {
        match self {
            Matrix::Q41(_) => GgmlDType::Q4_1,
            Matrix::Q80(_) => GgmlDType::Q8_0,
            Matrix::Tiles(m) => m.quantization(),
        }
    }

    pub(crate) fn packed_bytes(&self) -> usize {
        match self {
            Matrix::Q41(m) => m.packed_bytes(),
            Matrix::Q80(m) => m.packed_bytes(),
            Matrix::Tiles(m) => m.packed_bytes(),
        }
    }

    pub(crate) fn out_features(&self) -> usize {
        match self {
            Matrix::Q41(m) => m.out_features,
            Matrix::Q80(m) => m.out_features,
            Matrix::Tiles(m) => m.out_features,
        }
    }

    fn in_features(&self) -> usize {
        match self {
            Matrix::Q41(m) => m.in_features,
            Matrix::Q80(m) => m.in_features,
            Matrix::Tiles(m) => m.in_features,
        }
    }

    /// Weight rows `rows` in F32 into `out` (`rows.len() × in_features`).
    fn dequantize_rows(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        match self {
            Matrix::Q41(m) => m.dequantize_rows(rows, out),
            Matrix::Q80(m) => m.dequantize_rows(rows, out),
            Matrix::Tiles(m) => m.dequantize_rows(rows, out),
        }
    }
}

/// Weights per block, in both formats.
const BLOCK: usize = 32;
/// Output rows per pool task: enough work to amortise the hand-off.
const ROWS_PER_TASK: usize = 32;

/// Whether the CPU has AVX2 and FMA, which our fast kernels are built for.
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether candle 0.11 multiplies `rows` activation rows by this CPU weight through its repacked
/// x86 tiles (its `repack_x86::select`: 16-row tiles of VNNI or AVX2 integer products, AMX for
/// Q4_K from 32 rows). Those match our decode kernel (Q8_0) and beat our dequantize + F32 gemm
/// prefill (`cargo bench --bench kernel_speed`, AVX-512 VNNI + AMX machine, Qwen2.5-1.5B's MLP
/// shapes, 256 rows: Q4_K 14–19 vs 35–39 ms, Q6_K 21–28 vs 34–42, Q8_0 18–23 vs 33–38), so where
/// they apply the weight is left to candle; elsewhere ours are 2.6–24× faster than candle's plain
/// kernels.
pub(crate) fn candle_repacks(dtype: GgmlDType, rows: usize, out_features: usize, in_features: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let vnni = (std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni"))
            || (std::is_x86_feature_detected!("avxvnni") && std::is_x86_feature_detected!("avx2"));
        let shape = out_features.is_multiple_of(16) && in_features.is_multiple_of(256);
        shape
            && (vnni || has_avx2())
            && match dtype {
                GgmlDType::Q4K => true,
                GgmlDType::Q6K => rows > 1,
                GgmlDType::Q8_0 => vnni,
                _ => false,
            }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dtype, rows, out_features, in_features);
        false
    }
}

/// Whether Q4_1 and Q8_0 weights are repacked into [`Tiles`], whose kernel needs AVX-512 VNNI.
fn vnni_tiles() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx512_vnni();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AVX-512 with VNNI (`vpdpbusd`: u8 × i8 products summed into i32 in one
/// instruction, 64 bytes wide — two blocks at once).
#[cfg(target_arch = "x86_64")]
fn has_avx512_vnni() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// One activation row rounded to 8 bits per block of 32 (a scale per block), as llama.cpp and
/// candle do for their quantized kernels: the products then run on integer SIMD, twice the width
/// of float FMAs. The scales are rounded to f16 as in their Q8_0 blocks, so that with Q8_0 weights
/// our decoding computes exactly what theirs does (tests/engine.rs compares with candle).
struct Q8Row {
    values: Vec<i8>,
    scales: Vec<f32>,
}

impl Q8Row {
    fn new(xs: &[f32]) -> Q8Row {
        let mut values = vec![0; xs.len()];
        let mut scales = vec![0.0; xs.len() / BLOCK];
        for ((block, values), scale) in xs.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK)).zip(&mut scales) {
            *scale = quantize_block(block.try_into().expect("whole blocks"), values.try_into().expect("whole blocks"));
        }
        Q8Row { values, scales }
    }
}

/// One block of activations rounded to 8 bits (`values`); returns the block's scale. Inlined, so
/// that a caller built for wider vectors vectorizes it for them.
#[inline(always)]
fn quantize_block(block: &[f32; BLOCK], values: &mut [i8; BLOCK]) -> f32 {
    // `>` rather than `f32::max` (which also skips NaN) so that the compiler vectorizes it.
    let max = block.iter().fold(0f32, |m, x| if x.abs() > m { x.abs() } else { m });
    let scale = max / 127.0;
    let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (value, x) in values.iter_mut().zip(block) {
        *value = round_half_away(x * inverse) as i8;
    }
    f16::from_f32(scale).to_f32()
}

/// `v.round()` for |v| ≤ 127 (half away from zero, as candle and llama.cpp round), in arithmetic
/// the compiler vectorizes: `f32::round` is a libm call per value, which made rounding the
/// activations a sixth of a Q8_0 prefill.
fn round_half_away(v: f32) -> i32 {
    let whole = v as i32;
    // Exact: |v| < 2²³, so `v - whole` has no rounding.
    let fraction = v - whole as f32;
    whole + i32::from(fraction >= 0.5) - i32::from(fraction <= -0.5)
}

/// Fills `out` (`inputs` rows of one value per weight row; `f(input, row)`) on candle's spinning
/// pool, which its own quantized matmuls use too: a decode step makes ~200 of these calls, and
/// waking rayon's sleeping workers for each costs more than the smaller ones take. Rows go four at
/// a time through `four` when given (four independent accumulator chains, each activation block
/// loaded once for all four), the rest through `one`.
fn fill_rows<Four, One>(out: &mut [f32], inputs: usize, four: Option<Four>, one: One)
where
    Four: Fn(usize, usize) -> [f32; 4] + Sync,
    One: Fn(usize, usize) -> f32 + Sync,
{
    let rows = out.len() / inputs.max(1);
    let target = SharedOut(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(rows.div_ceil(ROWS_PER_TASK), |tasks| {
        for task in tasks {
            let end = ((task + 1) * ROWS_PER_TASK).min(rows);
            // The task's weight rows stay in cache while every input row meets them.
            for input in 0..inputs {
                let base = input * rows;
                let mut row = task * ROWS_PER_TASK;
                if let Some(four) = &four {
                    while row + 4 <= end {
                        for (i, value) in four(input, row).into_iter().enumerate() {
                            // SAFETY: as below.
                            unsafe { *target.at(base + row + i) = value };
                        }
                        row += 4;
                    }
                }
                for row in row..end {
                    // SAFETY: every (input, row) belongs to exactly one task, and `out` outlives the
                    // call (execute_chunked returns when every task is done).
                    unsafe { *target.at(base + row) = one(input, row) };
                }
            }
        }
    });
}

/// Runs `f(i, chunk)` for every `chunk_len`-long chunk of `out` on candle's spinning pool: the pool
/// our matmuls use, so a decode step never wakes a second set of threads (rayon's, whose workers
/// then compete for the cores with the pool's spinning ones).
pub(crate) fn for_each_chunk<F>(out: &mut [f32], chunk_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    let chunks = out.len() / chunk_len;
    let target = SharedOut(out.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(chunks, |range| {
        for i in range {
            // SAFETY: each chunk index belongs to exactly one task, and `out` outlives the call.
            f(i, unsafe { target.slice(i * chunk_len..(i + 1) * chunk_len) })
        }
    });
}

/// A buffer being filled by the pool's workers, each writing only its own part.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut<T = f32>(pub(crate) *mut T);

// SAFETY: workers write disjoint elements (see `fill_rows`).
unsafe impl<T> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    pub(crate) fn at(self, index: usize) -> *mut T {
        // SAFETY (callers): `index` is within the row the pointer came from.
        self.0.wrapping_add(index)
    }

    /// # Safety
    /// `range` lies within the buffer the pointer came from, and no one else uses it meanwhile.
    unsafe fn slice<'a>(self, range: std::ops::Range<usize>) -> &'a mut [T] {
        // SAFETY: as the caller promises.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(range.start), range.len()) }
    }
}

/// The sum of a vector's eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sum_lanes_256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum_lanes_128(halves)
}

/// The sum of a vector's four lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sum_lanes_128(v: std::arch::x86_64::__m128) -> f32 {
    use std::arch::x86_64::*;
    let pairs = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_the_activations_is_rounding_half_away_from_zero() {
        let mut v = -127.0f32;
        while v <= 127.0 {
            for v in [v, v.next_up(), v.next_down()] {
                assert_eq!(round_half_away(v), v.round() as i32, "{v}");
            }
            v += 0.25;
        }
        for v in [0.49999997f32, -0.49999997, 126.5, -126.5, 1e-30, -0.0] {
            assert_eq!(round_half_away(v), v.round() as i32, "{v}");
        }
    }

    /// How far an activation can move when rounded to 8 bits, in steps of its block's
    /// `max |x| / 127`: half a step, plus 127 times the scale's f16 rounding (2⁻¹¹ relative).
    const ROUNDING_IN_STEPS: f32 = 0.5 + 127.0 / 2048.0;

    /// Both formats against candle's dequantized weights: the dequantization exactly, the decode
    /// kernels within the 8-bit rounding of the activations. Each x moves by at most
    /// ROUNDING_IN_STEPS of its block's step, and only the part of a weight above its block's
    /// minimum (Q4_1) multiplies it (the minimum term uses exact sums): that bounds every output.
    /// 98 weight rows: whole groups of four, and two left over for the one-row code; 112: whole
    /// tiles of 16 (on a CPU with AVX-512 VNNI). 6 activation rows: a group of four and two
    /// alone in the tile kernel.
    #[test]
    fn matmul_and_dequantize_equal_candles_dequantized_weights() {
        let device = Device::Cpu;
        let (in_features, rows) = (256, 6);
        let x = Tensor::randn(0f32, 1.0, (rows, in_features), &device).unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        use GgmlDType::{Q4_1, Q8_0};
        for (dtype, out_features) in [(Q4_1, 98), (Q4_1, 112), (Q8_0, 98), (Q8_0, 112)] {
            let w = Tensor::randn(0f32, 0.5, (out_features, in_features), &device).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let matrix = Matrix::for_qtensor(&q).expect("ours").unwrap();
            let ours = matrix.dequantize(&device).unwrap();
            let diff: f32 = (q.dequantize(&device).unwrap() - &ours)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(diff < 1e-6, "{dtype:?}: dequantized weights differ by {diff}");
            let expected: Vec<f32> = x.matmul(&ours.t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = matrix.matmul(&xs);
            let weights: Vec<f32> = ours.flatten_all().unwrap().to_vec1().unwrap();
            let minimum = |j: usize, k: usize| match &matrix {
                Matrix::Q41(m) => m.scales[(j * in_features + k) / BLOCK][1],
                Matrix::Tiles(m) => m.minimum(j, k / BLOCK),
                Matrix::Q80(_) => 0.0,
            };
            for (index, (want, got)) in expected.iter().zip(&got).enumerate() {
                let (r, j) = (index / out_features, index % out_features);
                let x = &xs[r * in_features..(r + 1) * in_features];
                let bound: f32 = (0..in_features)
                    .map(|k| {
                        let step = x[k / BLOCK * BLOCK..][..BLOCK].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                        (weights[j * in_features + k] - minimum(j, k)).abs() * step * ROUNDING_IN_STEPS
                    })
                    .sum();
                assert!(
                    (want - got).abs() <= bound * 1.01 + 1e-4,
                    "{dtype:?} output {index}: {got} vs {want} ({bound})"
                );
            }
        }
    }
}
