//! How the engine should apply a TT-LoRA update, side by side in one run: from A and B contracted
//! once (what it does: the adapter is saved as plain LoRA of the tensor train's rank) against core
//! by core (never forming A and B), on SmolLM2-135M's projection shapes at rank 5, for one decoded
//! token and a 512-token prompt. Both give the same numbers (checked here); the ratio says which
//! is faster.
//!
//! `cargo bench --bench tt_serving`

use std::time::Instant;

use candle_core::{D, Device, Tensor};

const RANK: usize = 5;

/// A projection's cores as TT-LoRA lays them out: output factors first, `[r, factor, r]`, 1 at
/// both ends.
struct Cores {
    outputs: Vec<Tensor>,
    inputs: Vec<Tensor>,
}

fn random_cores(outputs: &[usize], inputs: &[usize]) -> Cores {
    let chain = |dims: &[usize], first: usize, last: usize| -> Vec<Tensor> {
        dims.iter()
            .enumerate()
            .map(|(i, &d)| {
                let before = if i == 0 { first } else { RANK };
                let after = if i + 1 == dims.len() { last } else { RANK };
                (Tensor::randn(0f32, 1.0, (before, d, after), &Device::Cpu).unwrap() / (RANK as f64).sqrt()).unwrap()
            })
            .collect()
    };
    Cores { outputs: chain(outputs, 1, RANK), inputs: chain(inputs, RANK, 1) }
}

/// `(A [r, in], B [out, r])`.
fn contract(cores: &Cores) -> (Tensor, Tensor) {
    let chain = |cores: &[Tensor]| {
        let (first, dim, next) = cores[0].dims3().unwrap();
        let mut product = cores[0].reshape((first * dim, next)).unwrap();
        for core in &cores[1..] {
            let (before, dim, after) = core.dims3().unwrap();
            let rows = product.dim(0).unwrap();
            product = product
                .matmul(&core.reshape((before, dim * after)).unwrap())
                .unwrap()
                .reshape((rows * dim, after))
                .unwrap();
        }
        product
    };
    let b = chain(&cores.outputs);
    let a = chain(&cores.inputs).reshape((RANK, ())).unwrap();
    (a, b)
}

/// `x·Aᵀ·Bᵀ` for `x [n, in]` without forming A or B: the input cores eat `x`'s factors from the
/// last, the output cores then spread the rank over the output's factors from the last.
fn core_by_core(cores: &Cores, x: &Tensor) -> Tensor {
    let n = x.dim(0).unwrap();
    // Input side, from the last core: [n·(leading factors), factor·rank after] against the core.
    let mut t = x.clone();
    for core in cores.inputs.iter().rev() {
        let (before, dim, after) = core.dims3().unwrap();
        let flat = t.reshape((t.elem_count() / (dim * after), dim * after)).unwrap();
        t = flat.matmul(&core.reshape((before, dim * after)).unwrap().t().unwrap()).unwrap();
    }
    let mut t = t.reshape((n, RANK)).unwrap();
    // Output side: [n, r] → [n, out], one factor at a time from the last core.
    let mut width = 1;
    for core in cores.outputs.iter().rev() {
        let (before, dim, after) = core.dims3().unwrap();
        // t: [n, after, width] → [n·width, after] · [after, before·dim] → [n, width, before, dim]
        let rows = t.reshape((n, after, width)).unwrap().transpose(1, 2).unwrap().reshape((n * width, after)).unwrap();
        let core_t = core.permute((2, 0, 1)).unwrap().reshape((after, before * dim)).unwrap();
        let spread = rows.matmul(&core_t).unwrap().reshape((n, width, before, dim)).unwrap();
        t = spread.permute((0, 2, 3, 1)).unwrap().reshape((n, before, dim * width)).unwrap();
        width *= dim;
    }
    t.reshape((n, width)).unwrap()
}

fn time(mut f: impl FnMut() -> Tensor, repeats: usize) -> f64 {
    f();
    let started = Instant::now();
    for _ in 0..repeats {
        std::hint::black_box(f());
    }
    started.elapsed().as_secs_f64() / repeats as f64
}

fn main() {
    // SmolLM2-135M: 576 = 9·16·4, 192 = 12·16, 1536 = 12·16·8 (`train/tt.rs` splits them so).
    let shapes: [(&str, &[usize], &[usize]); 4] = [
        ("q/o 576→576", &[9, 16, 4], &[9, 16, 4]),
        ("k/v 576→192", &[12, 16], &[9, 16, 4]),
        ("gate/up 576→1536", &[12, 16, 8], &[9, 16, 4]),
        ("down 1536→576", &[9, 16, 4], &[12, 16, 8]),
    ];
    println!(
        "TT-LoRA r{RANK} at serving time on SmolLM2-135M's shapes ({} threads):",
        candle_core::utils::get_num_threads()
    );
    println!("  {:<18} {:>7} {:>14} {:>14} {:>8}", "projection", "tokens", "contracted µs", "core by core µs", "ratio");
    for (name, outputs, inputs) in shapes {
        let cores = random_cores(outputs, inputs);
        let (a, b) = contract(&cores);
        let (a_t, b_t) = (a.t().unwrap().contiguous().unwrap(), b.t().unwrap().contiguous().unwrap());
        let width: usize = inputs.iter().product();
        for tokens in [1, 512] {
            let x = Tensor::randn(0f32, 1.0, (tokens, width), &Device::Cpu).unwrap();
            let once = x.matmul(&a_t).unwrap().matmul(&b_t).unwrap();
            let cores_out = core_by_core(&cores, &x);
            let gap = (&once - &cores_out).unwrap().abs().unwrap().max(D::Minus1).unwrap().max(0).unwrap();
            let scale = once.abs().unwrap().max(D::Minus1).unwrap().max(0).unwrap();
            let (gap, scale) = (gap.to_scalar::<f32>().unwrap(), scale.to_scalar::<f32>().unwrap());
            assert!(gap <= 1e-4 * scale.max(1.0), "{name}: core by core differs by {gap} (scale {scale})");
            let repeats = if tokens == 1 { 2000 } else { 50 };
            let contracted = time(|| x.matmul(&a_t).unwrap().matmul(&b_t).unwrap(), repeats);
            let by_core = time(|| core_by_core(&cores, &x), repeats);
            println!(
                "  {name:<18} {tokens:>7} {:>14.1} {:>14.1} {:>7.2}x",
                contracted * 1e6,
                by_core * 1e6,
                by_core / contracted
            );
        }
    }
}
