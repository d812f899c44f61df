//! Batched rows (prefill chunks): `x · Wᵀ` for a quantized weight as one F32 gemm, the fastest
//! CPU path for many rows. The weight is dequantized by the pool's threads into a buffer the
//! calling thread keeps between calls: dequantizing into a fresh tensor on one thread, as candle's
//! `QTensor::dequantize` does, took a third of a 0.5B model's prefill (page faults on every
//! allocation included) and did not get faster with more cores.

use super::{Matrix, ROWS_PER_TASK, SharedOut};
use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0,
};
use candle_core::quantized::{GgmlDType, GgmlType, QTensor};
use half::{bf16, f16};
use std::cell::RefCell;
use std::ops::Range;

thread_local! {
    /// The dequantized weight; grows to the largest matrix a thread multiplies, then stays.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Weights above this many floats (384 MiB) get a buffer of their own for the call instead: the
/// projections of models up to 14B fit, a vocabulary head (scored over many rows by `eval`) would
/// hold 2 GiB for good.
const KEEP_AT_MOST: usize = 96 << 20;

/// A quantized weight whose rows can be dequantized in parallel.
pub(crate) enum Packed<'a> {
    Own(&'a Matrix),
    Candle(&'a QTensor),
}

impl Packed<'_> {
    /// Whether [`matmul`] handles this weight (CPU storage in a block format we can read).
    pub(crate) fn supported(&self) -> bool {
        match self {
            Packed::Own(_) => true,
            Packed::Candle(q) => q.device().is_cpu() && candle_rows(q.dtype()).is_some(),
        }
    }
}

/// `out[r][j] = Σ_k W[j][k] · x[r][k]` for `x` holding rows of `in_features` values, for a weight
/// that is [`Packed::supported`].
pub(crate) fn matmul(x: &[f32], weight: Packed<'_>) -> candle_core::Result<Vec<f32>> {
    let (out_features, in_features, data) = match weight {
        Packed::Own(matrix) => (matrix.out_features(), matrix.in_features(), None),
        Packed::Candle(q) if weight.supported() => {
            let (out_features, in_features) = q.shape().dims2()?;
            (out_features, in_features, Some(q.data()?))
        }
        Packed::Candle(q) => candle_core::bail!("no batched kernel for {:?} weights on {:?}", q.dtype(), q.device()),
    };
    let shape = Shape { rows: x.len() / in_features, out_features, in_features };
    let mut out = vec![0f32; shape.rows * out_features];
    let size = out_features * in_features;
    // A call from inside another (no caller makes one) gets a buffer of its own too.
    SCRATCH.with(|kept| match kept.try_borrow_mut() {
        Ok(mut kept) if size <= KEEP_AT_MOST => multiply(shape, x, &weight, data.as_deref(), &mut kept, &mut out),
        _ => multiply(shape, x, &weight, data.as_deref(), &mut Vec::new(), &mut out),
    });
    Ok(out)
}

#[derive(Clone, Copy)]
struct Shape {
    rows: usize,
    out_features: usize,
    in_features: usize,
}

/// Output columns one gemm call of the pool computes: wide enough that repacking `x` for each call
/// is small next to the work, narrow enough that two cores share a 576-wide projection evenly.
const COLUMNS_PER_TASK: usize = 128;

/// Dequantizes the weight into `scratch` (grown as needed) on the pool's threads, then
/// `out := x · Wᵀ` as single-threaded gemm calls over blocks of output columns on the same pool:
/// gemm's own rayon threads would wake a second set of workers beside the pool's spinning ones,
/// and on two cores that cost a quarter of SmolLM2's prefill (`cargo bench --bench engine_speed`).
fn multiply(
    shape: Shape,
    x: &[f32],
    weight: &Packed<'_>,
    data: Option<&[u8]>,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) {
    let Shape { rows, out_features, in_features } = shape;
    if scratch.len() < out_features * in_features {
        scratch.resize(out_features * in_features, 0.0);
    }
    let target = SharedOut(scratch.as_mut_ptr());
    candle_core::utils::barrier_pool().execute_chunked(out_features.div_ceil(ROWS_PER_TASK), |tasks| {
        for task in tasks {
            let rows = task * ROWS_PER_TASK..((task + 1) * ROWS_PER_TASK).min(out_features);
            // SAFETY: each task owns its rows of the scratch buffer, which holds them all.
            let out = unsafe { target.slice(rows.start * in_features..rows.end * in_features) };
            match (weight, data) {
                (Packed::Own(matrix), _) => matrix.dequantize_rows(rows, out),
                (Packed::Candle(q), Some(data)) => {
                    let read = candle_rows(q.dtype()).expect("checked by supported()");
                    read(data, in_features, rows, out)
                }
                (Packed::Candle(_), None) => unreachable!("candle weights come with their data"),
            }
        }
    });
    let (target, weights) = (SharedOut(out.as_mut_ptr()), scratch.as_slice());
    candle_core::utils::barrier_pool().execute_chunked(out_features.div_ceil(COLUMNS_PER_TASK), |tasks| {
        let columns = tasks.start * COLUMNS_PER_TASK..(tasks.end * COLUMNS_PER_TASK).min(out_features);
        let block = &weights[columns.start * in_features..columns.end * in_features];
        // SAFETY: dst starts at column `columns.start` of `out` (rows × out_features, row-major;
        // this task alone writes those columns, and `out` outlives the call), x is `rows ×
        // in_features` (row-major), and `block` holds the weight rows of those columns
        // (row-major, read as Wᵀ by swapping its strides); dst := x·Wᵀ.
        unsafe {
            gemm_one_thread(
                (rows, columns.len(), in_features),
                (target.at(columns.start), out_features),
                (x.as_ptr(), in_features),
                (block.as_ptr(), in_features as isize, 1),
                1.0,
            )
        }
    });
}

/// `dst := scale · lhs · rhs` (dst is not read) as one single-threaded call of the `gemm` crate:
/// `m × k` by `k × n`. dst and lhs are row-major with the given row strides; rhs is given by its
/// (column, row) strides, so a row-major matrix can be read transposed.
///
/// # Safety
/// Every pointer covers its matrix under its strides, and no one else uses dst meanwhile.
pub(crate) unsafe fn gemm_one_thread(
    (m, n, k): (usize, usize, usize),
    (dst, dst_row_stride): (*mut f32, usize),
    (lhs, lhs_row_stride): (*const f32, usize),
    (rhs, rhs_column_stride, rhs_row_stride): (*const f32, isize, isize),
    scale: f32,
) {
    // SAFETY: as the caller promises.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            false,
            lhs,
            1,
            lhs_row_stride as isize,
            rhs,
            rhs_column_stride,
            rhs_row_stride,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Dequantizes rows of a candle weight (raw bytes, rows of `in_features`) into `out`.
type ReadRows = fn(&[u8], usize, Range<usize>, &mut [f32]);

fn candle_rows(dtype: GgmlDType) -> Option<ReadRows> {
    Some(match dtype {
        GgmlDType::F32 => read_rows::<f32>,
        GgmlDType::F16 => read_rows::<f16>,
        GgmlDType::BF16 => read_rows::<bf16>,
        GgmlDType::Q4_0 => read_rows::<BlockQ4_0>,
        GgmlDType::Q4_1 => read_rows::<BlockQ4_1>,
        GgmlDType::Q5_0 => read_rows::<BlockQ5_0>,
        GgmlDType::Q5_1 => read_rows::<BlockQ5_1>,
        GgmlDType::Q8_0 => read_rows::<BlockQ8_0>,
        GgmlDType::Q2K => read_rows::<BlockQ2K>,
        GgmlDType::Q3K => read_rows::<BlockQ3K>,
        GgmlDType::Q4K => read_rows::<BlockQ4K>,
        GgmlDType::Q5K => read_rows::<BlockQ5K>,
        GgmlDType::Q6K => read_rows::<BlockQ6K>,
        _ => return None,
    })
}

fn read_rows<T: GgmlType>(data: &[u8], in_features: usize, rows: Range<usize>, out: &mut [f32]) {
    let per_row = in_features / T::BLCK_SIZE;
    // candle 0.11 keeps a CPU QTensor as a Vec of its block type, so this holds; a storage that
    // did not (memory-mapped files, say) must stop here rather than be misread.
    assert!(
        data.as_ptr().cast::<T>().is_aligned() && data.len().is_multiple_of(size_of::<T>()),
        "candle's {:?} storage is not a whole, aligned array of blocks",
        T::DTYPE
    );
    // SAFETY: aligned and whole blocks (checked above); `data` borrows the storage.
    let blocks = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<T>(), data.len() / size_of::<T>()) };
    T::to_float(&blocks[rows.start * per_row..rows.end * per_row], out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Every block format against candle's own dequantize + matmul, with rows and columns enough
    /// to span several pool tasks and a last task that is cut short.
    #[test]
    fn equals_candles_dequantized_matmul_in_every_format() {
        let device = Device::Cpu;
        let (out_features, in_features, rows) = (2 * COLUMNS_PER_TASK + 44, 512, 9);
        let w = Tensor::randn(0f32, 0.5, (out_features, in_features), &device).unwrap();
        let x = Tensor::randn(0f32, 1.0, (rows, in_features), &device).unwrap();
        let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
        use GgmlDType::*;
        for dtype in [F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let expected: Vec<f32> = x
                .matmul(&q.dequantize(&device).unwrap().t().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let check = |got: Vec<f32>, what: &str| {
                for (g, e) in got.iter().zip(&expected) {
                    assert!((g - e).abs() <= 1e-4 * e.abs().max(1.0), "{dtype:?} {what}: {g} vs {e}");
                }
            };
            assert!(Packed::Candle(&q).supported(), "{dtype:?}");
            check(matmul(&xs, Packed::Candle(&q)).unwrap(), "candle");
            if let Some(own) = Matrix::for_qtensor(&q) {
                check(matmul(&xs, Packed::Own(&own.unwrap())).unwrap(), "ours");
            }
        }
    }
}
