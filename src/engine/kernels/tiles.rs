//! Q8_0 and Q4_1 weights repacked into tiles of 16 rows for AVX-512 VNNI, for decoding and
//! prefill alike. Within a tile, a block of 32 weights is 8 groups of 4 weights from each of the
//! 16 rows (one vector per group): one `vpdpbusd` against the same 4 activation bytes broadcast to
//! every lane adds 4 products to each of 16 rows' sums, and a block's 32 products stay in one i32
//! lane per row. The float work — one conversion and a multiply-add or two per block — is shared
//! by 16 rows instead of being paid per row, which is what lets 8-bit products beat the F32 gemm
//! on batched rows (`cargo bench --bench engine_speed`).
//!
//! `vpdpbusd` multiplies unsigned by signed bytes. The activations are the signed side, rounded to
//! 8 bits per block as everywhere (`quantize_block`). Q4_1 weights are unsigned already (`d·q + m`,
//! q in 0..16; the minimum's term uses the activations' exact block sums). Q8_0 weights are stored
//! with 128 added, and a block's sum starts from `-128 · Σ x`, so every integer sum is exact.

use super::{BLOCK, ROWS_PER_TASK, SharedOut, quantize_block};
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use std::ops::Range;

/// Weight rows per tile: the i32 lanes of a 512-bit vector.
pub(super) const TILE: usize = 16;
/// Activation rows that share each tile's loads in the batched kernel.
const ROWS_AT_ONCE: usize = 4;
/// Bytes of one group (4 weights of each of the tile's rows): one vector.
const GROUP: usize = TILE * 4;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Format {
    /// A tile's block is 8 groups of `w + 128`.
    Q8_0,
    /// A tile's block is 4 vectors of nibble pairs: the low nibbles are groups 0–3, the high ones
    /// groups 4–7 (byte `j` of row `l` in vector `p` is GGUF byte `4p + j` of that row's block).
    Q4_1,
}

impl Format {
    /// Bytes of one block of a tile.
    fn tile_block_bytes(self) -> usize {
        match self {
            Format::Q8_0 => TILE * BLOCK,
            Format::Q4_1 => TILE * BLOCK / 2,
        }
    }

    /// Bytes of one block of one row in GGUF.
    fn gguf_block_bytes(self) -> usize {
        match self {
            Format::Q8_0 => 2 + BLOCK,
            Format::Q4_1 => 4 + BLOCK / 2,
        }
    }
}

pub(crate) struct Tiles {
    pub(super) out_features: usize,
    pub(super) in_features: usize,
    format: Format,
    /// Tile by tile, block by block, as [`Format`] says.
    values: Vec<u8>,
    /// Tile by tile, block by block: the 16 rows' block scales.
    scales: Vec<f32>,
    /// Q4_1 only, laid out as `scales`: the 16 rows' block minimums.
    minimums: Vec<f32>,
}

impl Tiles {
    /// `None` for other formats, and when the rows do not fill whole tiles.
    pub(crate) fn from_qtensor(q: &QTensor) -> Option<candle_core::Result<Tiles>> {
        let format = match q.dtype() {
            GgmlDType::Q8_0 => Format::Q8_0,
            GgmlDType::Q4_1 => Format::Q4_1,
            _ => return None,
        };
        let (out_features, in_features) = match q.shape().dims2() {
            Ok(dims) => dims,
            Err(e) => return Some(Err(e)),
        };
        if !out_features.is_multiple_of(TILE) {
            return None;
        }
        let data = match q.data() {
            Ok(data) => data,
            Err(e) => return Some(Err(e)),
        };
        let blocks_per_row = in_features / BLOCK;
        let blocks = out_features * blocks_per_row;
        let mut tiles = Tiles {
            out_features,
            in_features,
            format,
            values: vec![0; blocks / TILE * format.tile_block_bytes()],
            scales: vec![0.0; blocks],
            minimums: vec![0.0; if format == Format::Q4_1 { blocks } else { 0 }],
        };
        let half = |bytes: &[u8]| f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        for (row, row_blocks) in data.chunks_exact(blocks_per_row * format.gguf_block_bytes()).enumerate() {
            let (tile, lane) = (row / TILE, row % TILE);
            for (b, block) in row_blocks.chunks_exact(format.gguf_block_bytes()).enumerate() {
                let at = (tile * blocks_per_row + b) * TILE;
                let values = &mut tiles.values[at / TILE * format.tile_block_bytes()..][..format.tile_block_bytes()];
                tiles.scales[at + lane] = half(block);
                let weights = match format {
                    Format::Q8_0 => &block[2..],
                    Format::Q4_1 => {
                        tiles.minimums[at + lane] = half(&block[2..]);
                        &block[4..]
                    }
                };
                for (group, four) in weights.chunks_exact(4).enumerate() {
                    let start = group * GROUP + lane * 4;
                    for (to, &w) in values[start..start + 4].iter_mut().zip(four) {
                        *to = match format {
                            Format::Q8_0 => w ^ 0x80,
                            Format::Q4_1 => w,
                        };
                    }
                }
            }
        }
        Some(Ok(tiles))
    }

    pub(crate) fn quantization(&self) -> GgmlDType {
        match self.format {
            Format::Q8_0 => GgmlDType::Q8_0,
            Format::Q4_1 => GgmlDType::Q4_1,
        }
    }

    pub(crate) fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let blocks_per_row = self.in_features / BLOCK;
        for (row, out) in rows.zip(out.chunks_exact_mut(self.in_features)) {
            let (tile, lane) = (row / TILE, row % TILE);
            for (b, out) in out.chunks_exact_mut(BLOCK).enumerate() {
                let at = (tile * blocks_per_row + b) * TILE;
                let values = &self.values[at / TILE * self.format.tile_block_bytes()..];
                let d = self.scales[at + lane];
                for (k, out) in out.iter_mut().enumerate() {
                    *out = match self.format {
                        Format::Q8_0 => d * (stored(self.format, values, lane, k) - 128) as f32,
                        Format::Q4_1 => d * stored(self.format, values, lane, k) as f32 + self.minimums[at + lane],
                    };
                }
            }
        }
    }

    /// A Q4_1 row's block minimum (0 for Q8_0).
    #[cfg(test)]
    pub(super) fn minimum(&self, row: usize, block: usize) -> f32 {
        let at = ((row / TILE) * (self.in_features / BLOCK) + block) * TILE + row % TILE;
        self.minimums.get(at).copied().unwrap_or(0.0)
    }

    pub(crate) fn packed_bytes(&self) -> usize {
        self.values.len() + size_of_val(self.scales.as_slice()) + size_of_val(self.minimums.as_slice())
    }

    /// `out[r][j] = Σ_k W[j][k] · x[r][k]` for `x` holding rows of `in_features` values. Every
    /// activation row gets the same instructions whichever rows it is grouped with, so a pass of
    /// several rows gives each exactly what a decode step of that row alone gives.
    pub(crate) fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let inputs = x.len() / self.in_features;
        let mut out = vec![0f32; inputs * self.out_features];
        let activations = Activations::new(x, self.in_features, self.format);
        let rows: Vec<Row<'_>> = (0..inputs).map(|i| activations.row(i, self.in_features)).collect();
        let tiles = self.out_features / TILE;
        let target = SharedOut(out.as_mut_ptr());
        candle_core::utils::barrier_pool().execute_chunked(tiles.div_ceil(ROWS_PER_TASK / TILE), |tasks| {
            let tiles = tasks.start * ROWS_PER_TASK / TILE..(tasks.end * ROWS_PER_TASK / TILE).min(tiles);
            for tile in tiles {
                // The tile stays in cache while every activation row meets it.
                let (groups, rest) = rows.as_chunks::<ROWS_AT_ONCE>();
                for (i, group) in groups.iter().enumerate() {
                    self.write(tile, group, i * ROWS_AT_ONCE, target);
                }
                for (i, row) in rest.iter().enumerate() {
                    self.write(tile, &[*row], groups.len() * ROWS_AT_ONCE + i, target);
                }
            }
        });
        out
    }

    /// The tile's 16 outputs for activation rows `first..first + R` into `out`.
    fn write<const R: usize>(&self, tile: usize, rows: &[Row<'_>; R], first: usize, out: SharedOut) {
        let sums = tile_dot(&self.tile(tile), rows);
        for (r, sums) in sums.iter().enumerate() {
            let at = (first + r) * self.out_features + tile * TILE;
            for (lane, &sum) in sums.iter().enumerate() {
                // SAFETY: each (activation row, weight row) belongs to one tile and each tile to
                // one task; `out` holds inputs × out_features values and outlives the pool call.
                unsafe { *out.at(at + lane) = sum };
            }
        }
    }

    fn tile(&self, tile: usize) -> Tile<'_> {
        let blocks_per_row = self.in_features / BLOCK;
        let blocks = tile * blocks_per_row..(tile + 1) * blocks_per_row;
        let bytes = self.format.tile_block_bytes();
        Tile {
            format: self.format,
            values: &self.values[blocks.start * bytes..blocks.end * bytes],
            scales: &self.scales[blocks.start * TILE..blocks.end * TILE],
            minimums: match self.format {
                Format::Q8_0 => &[],
                Format::Q4_1 => &self.minimums[blocks.start * TILE..blocks.end * TILE],
            },
        }
    }
}

/// The unsigned byte the kernel multiplies for row `lane`, weight `k` of a tile's block that
/// starts at `values`.
fn stored(format: Format, values: &[u8], lane: usize, k: usize) -> i32 {
    let group = k / 4;
    match format {
        Format::Q8_0 => values[group * GROUP + lane * 4 + k % 4] as i32,
        Format::Q4_1 => {
            let byte = values[group % 4 * GROUP + lane * 4 + k % 4];
            (if group < 4 { byte & 0x0F } else { byte >> 4 }) as i32
        }
    }
}

/// One tile's blocks.
struct Tile<'a> {
    format: Format,
    values: &'a [u8],
    scales: &'a [f32],
    minimums: &'a [f32],
}

/// Activation rows as the tile kernels read them, block by block.
struct Activations {
    values: Vec<i8>,
    scales: Vec<f32>,
    /// Q8_0 only: `-128 · Σ x` of the 8-bit values, where a block's sum starts.
    offsets: Vec<i32>,
    /// Q4_1 only: `Σ x` of the F32 values, what a block's minimum multiplies.
    sums: Vec<f32>,
}

/// One row of [`Activations`].
#[derive(Clone, Copy)]
struct Row<'a> {
    values: &'a [i8],
    scales: &'a [f32],
    offsets: &'a [i32],
    sums: &'a [f32],
}

impl Activations {
    /// Rounds `x` (rows of `in_features`) block by block on the pool's threads: done on the
    /// calling thread it left the pool spinning for a tenth of a prefill.
    fn new(x: &[f32], in_features: usize, format: Format) -> Activations {
        let blocks = x.len() / BLOCK;
        let mut values = vec![0i8; x.len()];
        let (mut scales, mut offsets, mut sums) = (vec![0f32; blocks], vec![0i32; blocks], vec![0f32; blocks]);
        let targets = (
            SharedOut(values.as_mut_ptr()),
            SharedOut(scales.as_mut_ptr()),
            SharedOut(offsets.as_mut_ptr()),
            SharedOut(sums.as_mut_ptr()),
        );
        let rows = x.len() / in_features;
        candle_core::utils::barrier_pool().execute_chunked(rows, |rows| {
            let blocks = rows.start * in_features / BLOCK..rows.end * in_features / BLOCK;
            // SAFETY: each task owns its rows' values and block figures; the buffers outlive the call.
            let out = unsafe {
                Rounded {
                    values: targets.0.slice(blocks.start * BLOCK..blocks.end * BLOCK),
                    scales: targets.1.slice(blocks.clone()),
                    offsets: targets.2.slice(blocks.clone()),
                    sums: targets.3.slice(blocks.clone()),
                }
            };
            quantize_blocks(format, &x[blocks.start * BLOCK..blocks.end * BLOCK], out);
        });
        Activations { values, scales, offsets, sums }
    }

    fn row(&self, index: usize, in_features: usize) -> Row<'_> {
        let blocks = index * in_features / BLOCK..(index + 1) * in_features / BLOCK;
        Row {
            values: &self.values[blocks.start * BLOCK..blocks.end * BLOCK],
            scales: &self.scales[blocks.clone()],
            offsets: &self.offsets[blocks.clone()],
            sums: &self.sums[blocks],
        }
    }
}

/// Where [`quantize_blocks`] writes: some rows' part of each of [`Activations`]' vectors.
struct Rounded<'a> {
    values: &'a mut [i8],
    scales: &'a mut [f32],
    offsets: &'a mut [i32],
    sums: &'a mut [f32],
}

/// Every block of `xs` rounded to 8 bits, with the figure [`Activations`] keeps per block for
/// `format`.
fn quantize_blocks(format: Format, xs: &[f32], out: Rounded<'_>) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512_vnni() {
        // SAFETY: the CPU has AVX-512 (checked just above).
        return unsafe { quantize_blocks_avx512(format, xs, out) };
    }
    quantize_blocks_portable(format, xs, out)
}

/// [`quantize_blocks`] built for AVX-512, where the compiler vectorizes it (built for the baseline
/// CPU it took a tenth of a prefill).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
fn quantize_blocks_avx512(format: Format, xs: &[f32], out: Rounded<'_>) {
    quantize_blocks_portable(format, xs, out)
}

#[inline(always)]
fn quantize_blocks_portable(format: Format, xs: &[f32], out: Rounded<'_>) {
    let Rounded { values, scales, offsets, sums } = out;
    let blocks = xs.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK));
    for (b, (block, values)) in blocks.enumerate() {
        let (block, values): (&[f32; BLOCK], &mut [i8; BLOCK]) =
            (block.try_into().expect("whole blocks"), values.try_into().expect("whole blocks"));
        scales[b] = quantize_block(block, values);
        match format {
            Format::Q8_0 => offsets[b] = -128 * values.iter().map(|&v| v as i32).sum::<i32>(),
            Format::Q4_1 => {
                // Sixteen partial sums, which vectorize; one running sum would not.
                let mut lanes = [0f32; 16];
                for half in block.chunks_exact(16) {
                    for (lane, x) in lanes.iter_mut().zip(half) {
                        *lane += x;
                    }
                }
                sums[b] = lanes.iter().sum();
            }
        }
    }
}

fn tile_dot<const R: usize>(tile: &Tile<'_>, rows: &[Row<'_>; R]) -> [[f32; TILE]; R] {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512_vnni() {
        // SAFETY: the CPU has AVX-512 VNNI (checked just above).
        return unsafe {
            match tile.format {
                Format::Q8_0 => tile_dot_avx512_vnni::<R, false>(tile, rows),
                Format::Q4_1 => tile_dot_avx512_vnni::<R, true>(tile, rows),
            }
        };
    }
    tile_dot_portable(tile, rows)
}

/// The kernels' arithmetic in portable code: exact integer block sums, then per block
/// `acc += sum · (d_w · d_x)` (and `acc += m · Σ x` for Q4_1). Tiles are built only where the CPU
/// has VNNI; this serves other CPUs reading a tile all the same, and is what the tests hold the
/// vector code to.
fn tile_dot_portable<const R: usize>(tile: &Tile<'_>, rows: &[Row<'_>; R]) -> [[f32; TILE]; R] {
    let mut out = [[0f32; TILE]; R];
    let bytes = tile.format.tile_block_bytes();
    for (b, values) in tile.values.chunks_exact(bytes).enumerate() {
        for (row, out) in rows.iter().zip(&mut out) {
            let x = &row.values[b * BLOCK..(b + 1) * BLOCK];
            for (lane, out) in out.iter_mut().enumerate() {
                let start = if tile.format == Format::Q8_0 { row.offsets[b] } else { 0 };
                let sum: i32 =
                    start + (0..BLOCK).map(|k| stored(tile.format, values, lane, k) * x[k] as i32).sum::<i32>();
                *out = (sum as f32).mul_add(tile.scales[b * TILE + lane] * row.scales[b], *out);
                if tile.format == Format::Q4_1 {
                    *out = tile.minimums[b * TILE + lane].mul_add(row.sums[b], *out);
                }
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_dot_avx512_vnni<const R: usize, const Q4_1: bool>(tile: &Tile<'_>, rows: &[Row<'_>; R]) -> [[f32; TILE]; R] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); R];
    let bytes = tile.format.tile_block_bytes();
    let low = _mm512_set1_epi8(0x0F);
    for b in 0..tile.scales.len() / TILE {
        // SAFETY: block b of the tile is `bytes` bytes of values, 16 scales (and 16 minimums for
        // Q4_1); every activation row has 32 values and one of each figure for it; unaligned loads.
        unsafe {
            let values = tile.values.as_ptr().add(b * bytes);
            let weights: [__m512i; BLOCK / 4] = if Q4_1 {
                let packed: [__m512i; 4] = std::array::from_fn(|p| _mm512_loadu_si512(values.add(p * GROUP).cast()));
                std::array::from_fn(|g| match g {
                    0..4 => _mm512_and_si512(packed[g], low),
                    _ => _mm512_and_si512(_mm512_srli_epi16(packed[g - 4], 4), low),
                })
            } else {
                std::array::from_fn(|g| _mm512_loadu_si512(values.add(g * GROUP).cast()))
            };
            let scales = _mm512_loadu_ps(tile.scales.as_ptr().add(b * TILE));
            for (row, acc) in rows.iter().zip(&mut acc) {
                let x = row.values.as_ptr().add(b * BLOCK).cast::<i32>();
                let mut sum = _mm512_set1_epi32(if Q4_1 { 0 } else { *row.offsets.get_unchecked(b) });
                for (g, w) in weights.iter().enumerate() {
                    sum = _mm512_dpbusd_epi32(sum, *w, _mm512_set1_epi32(x.add(g).read_unaligned()));
                }
                let scale = _mm512_mul_ps(scales, _mm512_set1_ps(*row.scales.get_unchecked(b)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
                if Q4_1 {
                    let minimums = _mm512_loadu_ps(tile.minimums.as_ptr().add(b * TILE));
                    *acc = _mm512_fmadd_ps(minimums, _mm512_set1_ps(*row.sums.get_unchecked(b)), *acc);
                }
            }
        }
    }
    acc.map(|acc| {
        let mut lanes = [0f32; TILE];
        // SAFETY: 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        lanes
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn tiles(dtype: GgmlDType, out_features: usize, in_features: usize) -> Tiles {
        let w = Tensor::randn(0f32, 0.5, (out_features, in_features), &Device::Cpu).unwrap();
        Tiles::from_qtensor(&QTensor::quantize(&w, dtype).unwrap()).unwrap().unwrap()
    }

    fn inputs(rows: usize, in_features: usize) -> Vec<f32> {
        Tensor::randn(0f32, 1.0, rows * in_features, &Device::Cpu).unwrap().to_vec1().unwrap()
    }

    /// The vector kernel equals the portable one bit for bit, for one row and for a group, in both
    /// formats; for Q8_0 with weights of -128 and 127 (stored as 0 and 255).
    #[test]
    fn the_vnni_kernel_equals_the_portable_one() {
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let mut matrix = tiles(dtype, TILE, 576);
            if dtype == GgmlDType::Q8_0 {
                (matrix.values[7], matrix.values[8]) = (0, 255);
            }
            let xs = inputs(ROWS_AT_ONCE, 576);
            let activations = Activations::new(&xs, 576, matrix.format);
            let group: [Row<'_>; ROWS_AT_ONCE] = std::array::from_fn(|i| activations.row(i, 576));
            let portable = tile_dot_portable(&matrix.tile(0), &group);
            assert_eq!(tile_dot(&matrix.tile(0), &group), portable, "{dtype:?}");
            assert_eq!(tile_dot(&matrix.tile(0), &[group[2]])[0], portable[2], "{dtype:?}");
        }
    }

    /// A row's outputs do not depend on the rows it is multiplied with: what lets a verify pass of
    /// drafted tokens reproduce decoding exactly.
    #[test]
    fn each_row_comes_out_as_if_alone() {
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let matrix = tiles(dtype, 3 * TILE, 256);
            let xs = inputs(2 * ROWS_AT_ONCE + 3, 256);
            let together = matrix.matmul(&xs);
            for (row, x) in xs.chunks_exact(256).enumerate() {
                assert_eq!(matrix.matmul(x), together[row * 3 * TILE..(row + 1) * 3 * TILE], "{dtype:?} row {row}");
            }
        }
    }

    #[test]
    fn other_formats_and_rows_that_do_not_fill_tiles_are_left_to_the_row_layout() {
        let w = Tensor::randn(0f32, 0.5, (TILE + 4, 64), &Device::Cpu).unwrap();
        assert!(Tiles::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).is_none());
        let w = Tensor::randn(0f32, 0.5, (TILE, 64), &Device::Cpu).unwrap();
        assert!(Tiles::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q4_0).unwrap()).is_none());
    }
}
