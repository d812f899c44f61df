//! Tensor-train factors of a low-rank update (TT-LoRA): a projection's `ΔW [out, in]`, read as a
//! tensor of shape `[m₁…m_k, n₁…n_l]` (`out = Πmᵢ`, `in = Πnⱼ`), is a chain of small cores
//! `[r, dim, r]` (1 at both ends). Contracting the output cores gives `B [out, r]`, the input
//! cores `A [r, in]`, so `ΔW = B·A` is a rank-r LoRA update whose factors cost
//! `Σ r·dim·r` numbers instead of `r·(in + out)`. Training builds A and B from the cores for
//! every update and sends their gradients back to the cores (`core_grads`), so the model's
//! forward and backward passes stay those of plain LoRA.

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;

/// The largest dimension of one core: dims are split into factors no larger than this (a prime
/// factor above it stays whole).
const MAX_FACTOR: usize = 16;

/// The cores of one projection: their dims, output side first, and the rank between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) outputs: Vec<usize>,
    pub(crate) inputs: Vec<usize>,
    pub(crate) rank: usize,
}

impl Layout {
    pub(crate) fn new(input: usize, output: usize, rank: usize) -> Layout {
        Layout { outputs: factors(output), inputs: factors(input), rank }
    }

    /// Every core's shape `[rank before, dim, rank after]`, output cores first.
    pub(crate) fn shapes(&self) -> Vec<[usize; 3]> {
        let r = self.rank;
        let chain = |dims: &[usize], first: usize, last: usize| -> Vec<[usize; 3]> {
            let n = dims.len();
            dims.iter()
                .enumerate()
                .map(|(i, &d)| [if i == 0 { first } else { r }, d, if i + 1 == n { last } else { r }])
                .collect()
        };
        let mut shapes = chain(&self.outputs, 1, r);
        shapes.extend(chain(&self.inputs, r, 1));
        shapes
    }
}

/// `n` as a product of factors no larger than [`MAX_FACTOR`], as few as first-fit packing of its
/// prime factors (largest first) gives; `[1]` for 1.
fn factors(n: usize) -> Vec<usize> {
    let mut primes = Vec::new();
    let (mut rest, mut p) = (n, 2);
    while rest > 1 {
        if rest % p == 0 {
            primes.push(p);
            rest /= p;
        } else {
            p += 1;
        }
    }
    primes.sort_unstable_by(|a, b| b.cmp(a));
    let mut bins: Vec<usize> = Vec::new();
    for prime in primes {
        match bins.iter_mut().find(|bin| **bin * prime <= MAX_FACTOR) {
            Some(bin) => *bin *= prime,
            None => bins.push(prime),
        }
    }
    if bins.is_empty() { vec![1] } else { bins }
}

/// Fresh cores that contract to LoRA's start: A's entries uniform in ±`a_bound` (the first input
/// core carries that scale, the later ones keep it by having variance 1/r), B exactly zero (its
/// first core is zero), so training starts from the base model.
pub(crate) fn init(layout: &Layout, a_bound: f64, rng: &mut impl Rng) -> candle_core::Result<Vec<Var>> {
    let outputs = layout.outputs.len();
    let unit = (3.0 / layout.rank as f64).sqrt();
    layout
        .shapes()
        .into_iter()
        .enumerate()
        .map(|(i, shape)| {
            let count = shape.iter().product();
            let bound = match i {
                0 => return Var::zeros(&shape, DType::F32, &Device::Cpu),
                i if i == outputs => a_bound,
                _ => unit,
            };
            let values: Vec<f32> = (0..count).map(|_| rng.random_range(-bound..bound) as f32).collect();
            Var::from_vec(values, &shape, &Device::Cpu)
        })
        .collect()
}

/// `(A [r, in], B [out, r])` from the cores (differentiable: backprop reaches `Var` cores).
pub(crate) fn contract(layout: &Layout, cores: &[Tensor]) -> candle_core::Result<(Tensor, Tensor)> {
    let (output_cores, input_cores) = cores.split_at(layout.outputs.len());
    let chain = |cores: &[Tensor]| -> candle_core::Result<Tensor> {
        let [first, dim, next] = dims(&cores[0])?;
        let mut product = cores[0].reshape((first * dim, next))?;
        for core in &cores[1..] {
            let [before, dim, after] = dims(core)?;
            let rows = product.dim(0)?;
            product = product.matmul(&core.reshape((before, dim * after))?)?.reshape((rows * dim, after))?;
        }
        Ok(product)
    };
    let b = chain(output_cores)?;
    let a = chain(input_cores)?.reshape((layout.rank, ()))?;
    Ok((a, b))
}

fn dims(core: &Tensor) -> candle_core::Result<[usize; 3]> {
    let (a, d, b) = core.dims3()?;
    Ok([a, d, b])
}

/// The gradients of the cores, given those of A and B: one small backward pass through the
/// contraction (`Σ A ⊙ ∂A + Σ B ⊙ ∂B` has exactly the cores' gradients).
pub(crate) fn core_grads(
    layout: &Layout,
    cores: &[Var],
    grad_a: &Tensor,
    grad_b: &Tensor,
) -> candle_core::Result<Vec<Tensor>> {
    let tensors: Vec<Tensor> = cores.iter().map(|c| c.as_tensor().clone()).collect();
    let (a, b) = contract(layout, &tensors)?;
    let total = ((a * grad_a)?.sum_all()? + (b * grad_b)?.sum_all()?)?;
    let step = total.backward()?;
    cores.iter().map(|c| step.get(c.as_tensor()).cloned().map_or_else(|| c.as_tensor().zeros_like(), Ok)).collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::train::gradcheck::assert_gradients_match;

    #[test]
    fn dims_split_into_small_factors_whose_product_is_the_dim() {
        for (n, expected) in [
            (576, vec![9, 16, 4]),
            (1536, vec![12, 16, 8]),
            (4864, vec![19, 16, 16]),
            (896, vec![14, 16, 4]),
            (64, vec![16, 4]),
            (7, vec![7]),
            (1, vec![1]),
        ] {
            assert_eq!(factors(n), expected, "{n}");
            assert_eq!(factors(n).iter().product::<usize>(), n);
        }
    }

    #[test]
    fn a_576_square_projection_at_rank_5_has_under_a_fifteenth_of_lora_r16s_parameters() {
        let layout = Layout::new(576, 576, 5);
        // [1,9,5] [5,16,5] [5,4,5] then [5,9,5] [5,16,5] [5,4,1]
        let parameters: usize = layout.shapes().iter().map(|[a, d, b]| a * d * b).sum();
        assert_eq!(parameters, 45 + 400 + 100 + 225 + 400 + 20);
        assert!(parameters * 15 < 16 * (576 + 576));
    }

    #[test]
    fn fresh_cores_contract_to_a_zero_b_and_an_a_of_loras_scale() {
        let layout = Layout::new(64, 48, 4);
        let cores = init(&layout, 0.125, &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
        let tensors: Vec<Tensor> = cores.iter().map(|c| c.as_tensor().clone()).collect();
        let (a, b) = contract(&layout, &tensors).unwrap();
        assert_eq!((a.dims(), b.dims()), (&[4, 64][..], &[48, 4][..]));
        assert_eq!(b.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        // Uniform in ±0.125 has variance 0.125²/3; the contraction keeps it (roughly, 256 values).
        let variance = a.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        let expected = 0.125f64.powi(2) / 3.0;
        assert!(variance > expected / 3.0 && variance < expected * 3.0, "{variance} vs {expected}");
    }

    #[test]
    fn core_gradients_match_finite_differences() {
        // 200 = 10·10·2 and 48 = 12·4: chains of several cores on both sides.
        let layout = Layout::new(200, 48, 3);
        assert_eq!((layout.inputs.len(), layout.outputs.len()), (3, 2));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let random = |shape: &[usize], rng: &mut ChaCha8Rng| {
            let values: Vec<f64> = (0..shape.iter().product()).map(|_| rng.random_range(-1.0..1.0)).collect();
            Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
        };
        // Every core random (the zero first core of `init` would hide the other cores' gradients).
        let cores: Vec<Var> = layout.shapes().iter().map(|s| Var::from_tensor(&random(s, &mut rng)).unwrap()).collect();
        let (grad_a, grad_b) = (random(&[3, 200], &mut rng), random(&[48, 3], &mut rng));
        let grads = core_grads(&layout, &cores, &grad_a, &grad_b).unwrap();
        let objective = |index: usize, value: &Tensor| {
            let mut tensors: Vec<Tensor> = cores.iter().map(|c| c.as_tensor().clone()).collect();
            tensors[index] = value.clone();
            let (a, b) = contract(&layout, &tensors).unwrap();
            let total =
                ((a * &grad_a).unwrap().sum_all().unwrap() + (b * &grad_b).unwrap().sum_all().unwrap()).unwrap();
            total.to_scalar::<f64>().unwrap()
        };
        for (index, (core, grad)) in cores.iter().zip(&grads).enumerate() {
            assert_gradients_match(core, grad, |value| objective(index, value));
        }
    }
}
