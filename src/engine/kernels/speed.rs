//! The figures behind [`super::candle_repacks`] and the choice of kernels, side by side: the
//! kernels `Matrix::for_qtensor` picks on this CPU against candle's on the same weights, per
//! format, for one row (decode) and 256 rows (a prefill chunk). Run by `cargo bench --bench kernel_speed`.

use super::{Matrix, candle_repacks, prefill};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::time::Instant;

fn millis(iterations: usize, f: &dyn Fn()) -> f64 {
    f();
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1000.0 / iterations as f64
}

pub(crate) fn against_candle() -> candle_core::Result<()> {
    let device = Device::Cpu;
    // Qwen2.5-Coder-1.5B's MLP (candle's tiles fit) and SmolLM2's (they do not).
    for (n, k) in [(8960, 1536), (1536, 8960), (1536, 576)] {
        let w = Tensor::randn(0f32, 0.5, (n, k), &device)?;
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4_1, GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q4_0] {
            if !k.is_multiple_of(dtype.block_size()) {
                continue;
            }
            let q = QTensor::quantize(&w, dtype)?;
            let candle = QMatMul::from_qtensor(QTensor::quantize(&w, dtype)?)?;
            let own = Matrix::for_qtensor(&q).transpose()?;
            for rows in [1, 256] {
                let x = Tensor::randn(0f32, 1.0, (rows, k), &device)?;
                let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
                let iterations = if rows == 1 { 60 } else { 3 };
                let theirs = millis(iterations, &|| drop(candle.forward(&x)));
                let ours = match (&own, rows) {
                    (Some(matrix), 1) => millis(iterations, &|| drop(matrix.matmul(&xs))),
                    (Some(matrix), _) if matrix.batches_in_int8() => millis(iterations, &|| drop(matrix.matmul(&xs))),
                    (Some(matrix), _) => {
                        millis(iterations, &|| drop(prefill::matmul(&xs, prefill::Packed::Own(matrix))))
                    }
                    (None, 1) => continue,
                    (None, _) => millis(iterations, &|| drop(prefill::matmul(&xs, prefill::Packed::Candle(&q)))),
                };
                let repacked = if own.is_none() && candle_repacks(dtype, rows, n, k) {
                    " (candle repacks: candle's is used)"
                } else {
                    ""
                };
                println!(
                    "{n:>5}x{k:<5} {dtype:?} rows {rows:>3}: candle {theirs:8.3} ms, ours {ours:8.3} ms → candle/ours {:.2}{repacked}",
                    theirs / ours
                );
            }
        }
    }
    Ok(())
}
