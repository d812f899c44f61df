//! Q8_0 weights repacked into tiles of 16 rows for AVX-512 VNNI, for decoding and prefill alike.
//! Within a tile, each block of 32 weights is stored as 8 groups of 4 bytes from each of the 16
//! rows (64 bytes, one vector): one `vpdpbusd` against the same 4 activation bytes broadcast to
//! every lane then adds 4 products to each of 16 rows' sums, and a block's 32 products stay in one
//! i32 lane per row. The float work — one conversion and one multiply-add per block — is shared by
//! 16 rows instead of being paid per row, which is what lets 8-bit products beat the F32 gemm on
//! batched rows (`cargo bench --bench engine_speed`, SmolLM2 Q8_0 prefill).
//!
//! `vpdpbusd` multiplies unsigned by signed bytes. The activations are rounded to 8 bits per block
//! as everywhere (`quantize_block`) and stored with 128 added (`x + 128` fits a byte); the tile keeps
//! `-128 · Σ w` for each row and block, and a block's sum starts from it, so every block's integer
//! sum is exact.

use super::{BLOCK, ROWS_PER_TASK, SharedOut, quantize_block};
use candle_core::quantized::QTensor;
use half::f16;
use std::ops::Range;

/// Weight rows per tile: the i32 lanes of a 512-bit vector.
pub(super) const TILE: usize = 16;
/// Activation rows that share each tile's loads in the batched kernel.
const ROWS_AT_ONCE: usize = 4;
/// Bytes per block in GGUF: f16 scale, 32 signed bytes.
const BLOCK_BYTES: usize = 34;
/// Bytes per block of a tile.
const TILE_BLOCK: usize = TILE * BLOCK;

pub(crate) struct Q80Tiles {
    pub(super) out_features: usize,
    pub(super) in_features: usize,
    /// Tile by tile, block by block: 8 groups of [16 rows × 4 bytes].
    values: Vec<i8>,
    /// Tile by tile, block by block: the 16 rows' block scales.
    scales: Vec<f32>,
    /// Tile by tile, block by block: `-128 · Σ w` of each of the 16 rows' block.
    offsets: Vec<i32>,
}

impl Q80Tiles {
    /// `None` when the rows do not fill whole tiles.
    pub(crate) fn from_qtensor(q: &QTensor) -> Option<candle_core::Result<Q80Tiles>> {
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
        let (mut values, mut scales, mut offsets) = (vec![0i8; blocks * BLOCK], vec![0f32; blocks], vec![0i32; blocks]);
        for (row, row_blocks) in data.chunks_exact(blocks_per_row * BLOCK_BYTES).enumerate() {
            let (tile, lane) = (row / TILE, row % TILE);
            for (b, block) in row_blocks.chunks_exact(BLOCK_BYTES).enumerate() {
                let at = (tile * blocks_per_row + b) * TILE;
                scales[at + lane] = f16::from_le_bytes([block[0], block[1]]).to_f32();
                let weights = &block[2..];
                offsets[at + lane] = -128 * weights.iter().map(|&w| w as i8 as i32).sum::<i32>();
                for (group, four) in weights.chunks_exact(4).enumerate() {
                    let start = at * BLOCK + group * TILE * 4 + lane * 4;
                    for (to, &w) in values[start..start + 4].iter_mut().zip(four) {
                        *to = w as i8;
                    }
                }
            }
        }
        Some(Ok(Q80Tiles { out_features, in_features, values, scales, offsets }))
    }

    pub(crate) fn dequantize_rows(&self, rows: Range<usize>, out: &mut [f32]) {
        let blocks_per_row = self.in_features / BLOCK;
        for (row, out) in rows.zip(out.chunks_exact_mut(self.in_features)) {
            let (tile, lane) = (row / TILE, row % TILE);
            for (b, out) in out.chunks_exact_mut(BLOCK).enumerate() {
                let at = (tile * blocks_per_row + b) * TILE;
                let d = self.scales[at + lane];
                for (k, out) in out.iter_mut().enumerate() {
                    *out = d * self.values[at * BLOCK + k / 4 * TILE * 4 + lane * 4 + k % 4] as f32;
                }
            }
        }
    }

    pub(crate) fn packed_bytes(&self) -> usize {
        self.values.len() + size_of_val(self.scales.as_slice()) + size_of_val(self.offsets.as_slice())
    }

    /// `out[r][j] = Σ_k W[j][k] · x[r][k]` for `x` holding rows of `in_features` values. Every
    /// activation row gets the same instructions whichever rows it is grouped with, so a pass of
    /// several rows gives each exactly what a decode step of that row alone gives.
    pub(crate) fn matmul(&self, x: &[f32]) -> Vec<f32> {
        let inputs = x.len() / self.in_features;
        let mut out = vec![0f32; inputs * self.out_features];
        let activations = Activations::new(x, self.in_features);
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
        let blocks_per_row = self.in_features / BLOCK;
        let blocks = tile * blocks_per_row..(tile + 1) * blocks_per_row;
        let part = TileBlocks {
            values: &self.values[blocks.start * TILE_BLOCK..blocks.end * TILE_BLOCK],
            scales: &self.scales[blocks.start * TILE..blocks.end * TILE],
            offsets: &self.offsets[blocks.start * TILE..blocks.end * TILE],
        };
        let sums = tile_dot(&part, rows);
        for (r, sums) in sums.iter().enumerate() {
            let at = (first + r) * self.out_features + tile * TILE;
            for (lane, &sum) in sums.iter().enumerate() {
                // SAFETY: each (activation row, weight row) belongs to one tile and each tile to
                // one task; `out` holds inputs × out_features values and outlives the pool call.
                unsafe { *out.at(at + lane) = sum };
            }
        }
    }
}

/// One tile's blocks.
struct TileBlocks<'a> {
    values: &'a [i8],
    scales: &'a [f32],
    offsets: &'a [i32],
}

/// Activation rows as the tile kernel reads them: 8-bit values plus 128, and the block scales.
struct Activations {
    values: Vec<u8>,
    scales: Vec<f32>,
}

/// One row of [`Activations`].
#[derive(Clone, Copy)]
struct Row<'a> {
    values: &'a [u8],
    scales: &'a [f32],
}

impl Activations {
    /// Rounds `x` (rows of `in_features`) block by block on the pool's threads: done on the
    /// calling thread it left the pool spinning for a tenth of a prefill.
    fn new(x: &[f32], in_features: usize) -> Activations {
        let mut values = vec![0u8; x.len()];
        let mut scales = vec![0f32; x.len() / BLOCK];
        let (value_out, scale_out) = (SharedOut(values.as_mut_ptr()), SharedOut(scales.as_mut_ptr()));
        let rows = x.len() / in_features;
        candle_core::utils::barrier_pool().execute_chunked(rows, |rows| {
            let blocks = rows.start * in_features / BLOCK..rows.end * in_features / BLOCK;
            // SAFETY: each task owns its rows' bytes and scales; both buffers outlive the call.
            let (values, scales) =
                unsafe { (value_out.slice(blocks.start * BLOCK..blocks.end * BLOCK), scale_out.slice(blocks.clone())) };
            let xs = &x[blocks.start * BLOCK..blocks.end * BLOCK];
            for ((block, values), scale) in xs.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK)).zip(scales) {
                let mut rounded = [0i8; BLOCK];
                *scale = quantize_block(block.try_into().expect("whole blocks"), &mut rounded);
                for (to, v) in values.iter_mut().zip(rounded) {
                    *to = (v as u8) ^ 0x80;
                }
            }
        });
        Activations { values, scales }
    }

    fn row(&self, index: usize, in_features: usize) -> Row<'_> {
        let blocks = in_features / BLOCK;
        Row {
            values: &self.values[index * in_features..(index + 1) * in_features],
            scales: &self.scales[index * blocks..(index + 1) * blocks],
        }
    }
}

fn tile_dot<const R: usize>(tile: &TileBlocks<'_>, rows: &[Row<'_>; R]) -> [[f32; TILE]; R] {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx512_vnni() {
        // SAFETY: the CPU has AVX-512 VNNI (checked just above).
        return unsafe { tile_dot_avx512_vnni(tile, rows) };
    }
    tile_dot_portable(tile, rows)
}

/// The kernel's arithmetic in portable code: exact integer block sums, then per block
/// `acc += sum · (d_w · d_x)`. Tiles are built only where the CPU has VNNI; this serves
/// other CPUs reading a tile all the same and is what the tests hold the vector code to.
fn tile_dot_portable<const R: usize>(tile: &TileBlocks<'_>, rows: &[Row<'_>; R]) -> [[f32; TILE]; R] {
    let mut out = [[0f32; TILE]; R];
    for (b, ((values, scales), offsets)) in tile
        .values
        .chunks_exact(TILE_BLOCK)
        .zip(tile.scales.chunks_exact(TILE))
        .zip(tile.offsets.chunks_exact(TILE))
        .enumerate()
    {
        for (row, out) in rows.iter().zip(&mut out) {
            let x = &row.values[b * BLOCK..(b + 1) * BLOCK];
            for lane in 0..TILE {
                let sum: i32 = offsets[lane]
                    + (0..BLOCK).map(|k| x[k] as i32 * values[k / 4 * TILE * 4 + lane * 4 + k % 4] as i32).sum::<i32>();
                out[lane] = (sum as f32).mul_add(scales[lane] * row.scales[b], out[lane]);
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_dot_avx512_vnni<const R: usize>(tile: &TileBlocks<'_>, rows: &[Row<'_>; R]) -> [[f32; TILE]; R] {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..tile.scales.len() / TILE {
        // SAFETY: block b of the tile is 512 bytes of values, 16 scales and 16 offsets; every
        // activation row has 32 bytes for it; unaligned loads.
        unsafe {
            let values = tile.values.as_ptr().add(b * TILE_BLOCK);
            let weights: [__m512i; BLOCK / 4] = std::array::from_fn(|g| _mm512_loadu_si512(values.add(g * 64).cast()));
            let scales = _mm512_loadu_ps(tile.scales.as_ptr().add(b * TILE));
            let offsets = _mm512_loadu_si512(tile.offsets.as_ptr().add(b * TILE).cast());
            for (row, acc) in rows.iter().zip(&mut acc) {
                let x = row.values.as_ptr().add(b * BLOCK).cast::<i32>();
                let mut sum = offsets;
                for (g, w) in weights.iter().enumerate() {
                    sum = _mm512_dpbusd_epi32(sum, _mm512_set1_epi32(x.add(g).read_unaligned()), *w);
                }
                let scale = _mm512_mul_ps(scales, _mm512_set1_ps(*row.scales.get_unchecked(b)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
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
    use candle_core::quantized::GgmlDType;
    use candle_core::{Device, Tensor};

    fn tiles(out_features: usize, in_features: usize) -> Q80Tiles {
        let w = Tensor::randn(0f32, 0.5, (out_features, in_features), &Device::Cpu).unwrap();
        Q80Tiles::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap().unwrap()
    }

    fn inputs(rows: usize, in_features: usize) -> Vec<f32> {
        Tensor::randn(0f32, 1.0, rows * in_features, &Device::Cpu).unwrap().to_vec1().unwrap()
    }

    /// The vector kernel equals the portable one bit for bit, for one row and for a group, with a
    /// weight of -128 (the value the row layout's sign trick cannot take).
    #[test]
    fn the_vnni_kernel_equals_the_portable_one() {
        let mut matrix = tiles(TILE, 576);
        matrix.values[7] = -128;
        let xs = inputs(ROWS_AT_ONCE, 576);
        let activations = Activations::new(&xs, 576);
        let group: [Row<'_>; ROWS_AT_ONCE] = std::array::from_fn(|i| activations.row(i, 576));
        let part = TileBlocks { values: &matrix.values, scales: &matrix.scales, offsets: &matrix.offsets };
        let portable = tile_dot_portable(&part, &group);
        assert_eq!(tile_dot(&part, &group), portable);
        assert_eq!(tile_dot(&part, &[group[2]])[0], portable[2]);
    }

    /// A row's outputs do not depend on the rows it is multiplied with: what lets a verify pass of
    /// drafted tokens reproduce decoding exactly.
    #[test]
    fn each_row_comes_out_as_if_alone() {
        let matrix = tiles(3 * TILE, 256);
        let xs = inputs(2 * ROWS_AT_ONCE + 3, 256);
        let together = matrix.matmul(&xs);
        for (row, x) in xs.chunks_exact(256).enumerate() {
            assert_eq!(matrix.matmul(x), together[row * 3 * TILE..(row + 1) * 3 * TILE], "row {row}");
        }
    }

    #[test]
    fn rows_that_do_not_fill_tiles_are_left_to_the_row_layout() {
        let w = Tensor::randn(0f32, 0.5, (TILE + 4, 64), &Device::Cpu).unwrap();
        assert!(Q80Tiles::from_qtensor(&QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).is_none());
    }
}
