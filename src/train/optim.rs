//! AdamW with a cosine learning-rate schedule after a linear warmup, and global gradient-norm
//! clipping: the defaults of PEFT/TRL recipes. Ours rather than candle-nn's `AdamW` because a
//! checkpoint must hold the moment estimates, which candle-nn keeps private.

use candle_core::{Tensor, Var};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hyper {
    pub(crate) lr: f64,
    pub(crate) beta1: f64,
    pub(crate) beta2: f64,
    pub(crate) eps: f64,
    pub(crate) weight_decay: f64,
    pub(crate) max_grad_norm: f64,
}

/// First and second moment estimates of every parameter, in the parameters' order.
pub(crate) struct AdamW {
    pub(crate) hyper: Hyper,
    pub(crate) m: Vec<Tensor>,
    pub(crate) v: Vec<Tensor>,
}

impl AdamW {
    pub(crate) fn new(hyper: Hyper, params: &[Var]) -> candle_core::Result<AdamW> {
        let zeros = || params.iter().map(|p| p.as_tensor().zeros_like()).collect::<candle_core::Result<Vec<_>>>();
        Ok(AdamW { hyper, m: zeros()?, v: zeros()? })
    }

    /// Update number `step` (counted from 1) with learning rate `lr`. Returns the gradient norm
    /// before clipping.
    pub(crate) fn step(&mut self, params: &[Var], grads: &[Tensor], step: usize, lr: f64) -> candle_core::Result<f64> {
        let h = self.hyper;
        let norm = grads
            .iter()
            .map(|g| g.sqr()?.sum_all()?.to_scalar::<f32>().map(f64::from))
            .sum::<candle_core::Result<f64>>()?
            .sqrt();
        let clip = if h.max_grad_norm > 0.0 && norm > h.max_grad_norm { h.max_grad_norm / (norm + 1e-6) } else { 1.0 };
        let (bias1, bias2) = (1.0 - h.beta1.powi(step as i32), 1.0 - h.beta2.powi(step as i32));
        for (i, (param, grad)) in params.iter().zip(grads).enumerate() {
            let grad = (grad * clip)?;
            self.m[i] = ((&self.m[i] * h.beta1)? + (&grad * (1.0 - h.beta1))?)?;
            self.v[i] = ((&self.v[i] * h.beta2)? + (grad.sqr()? * (1.0 - h.beta2))?)?;
            let update = ((&self.m[i] / bias1)? / ((&self.v[i] / bias2)?.sqrt()? + h.eps)?)?;
            let decayed = (param.as_tensor() * (1.0 - lr * h.weight_decay))?;
            param.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(norm)
    }
}

/// Updates of warmup at the start of a schedule `steps` long: `ratio` of them, at least one.
pub(crate) fn warmup(steps: usize, ratio: f64) -> usize {
    ((steps as f64 * ratio).round() as usize).max(1)
}

/// The learning rate of update `step` (from 0) of `total`: linear warmup over `warmup` updates,
/// then a cosine decay to zero.
pub(crate) fn cosine_lr(base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    base * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// The learning rate of update `step` (from 0) of a cool-down of `total` updates: linear warmup
/// over `warmup` updates to `peak`, then a straight line to zero (`checks::Cooldown`).
pub(crate) fn cooldown_lr(peak: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    peak * total.saturating_sub(step) as f64 / total.saturating_sub(warmup).max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(cosine_lr(1.0, 0, 100, 10), 0.1);
        assert_eq!(cosine_lr(1.0, 9, 100, 10), 1.0);
        assert_eq!(cosine_lr(1.0, 10, 100, 10), 1.0);
        assert!((cosine_lr(1.0, 55, 100, 10) - 0.5).abs() < 1e-12);
        assert!(cosine_lr(1.0, 100, 100, 10).abs() < 1e-12);
    }

    #[test]
    fn a_cooldown_warms_up_then_falls_in_a_straight_line_to_zero() {
        let rates: Vec<f64> = (0..10).map(|step| cooldown_lr(1.0, step, 10, 2)).collect();
        assert_eq!(&rates[..3], &[0.5, 1.0, 1.0]);
        assert!(rates.windows(2).skip(2).all(|w| w[1] < w[0]), "{rates:?}");
        assert!((rates[9] - 0.125).abs() < 1e-12, "the last update still moves: {rates:?}");
        assert_eq!(cooldown_lr(1.0, 10, 10, 2), 0.0);
    }

    #[test]
    fn first_step_moves_each_weight_by_the_learning_rate_against_its_gradient() {
        // With bias correction the first Adam update is lr · sign(g) (up to eps).
        let p = Var::from_slice(&[1f32, -2.0, 3.0], 3, &Device::Cpu).unwrap();
        let hyper = Hyper { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, max_grad_norm: 0.0 };
        let mut adam = AdamW::new(hyper, std::slice::from_ref(&p)).unwrap();
        let g = Tensor::new(&[0.5f32, -4.0, 0.0], &Device::Cpu).unwrap();
        adam.step(std::slice::from_ref(&p), &[g], 1, 0.1).unwrap();
        let got = p.as_tensor().to_vec1::<f32>().unwrap();
        for (got, want) in got.iter().zip([0.9f32, -1.9, 3.0]) {
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let p = Var::from_slice(&[0f32, 0.0], 2, &Device::Cpu).unwrap();
        let hyper = Hyper { lr: 0.1, beta1: 0.0, beta2: 0.0, eps: 0.0, weight_decay: 0.0, max_grad_norm: 1.0 };
        let mut adam = AdamW::new(hyper, std::slice::from_ref(&p)).unwrap();
        let norm =
            adam.step(std::slice::from_ref(&p), &[Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap()], 1, 0.1).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        // β1 = β2 = 0: m / √v = sign(g) whatever the scale, so check the moments instead.
        let m = adam.m[0].to_vec1::<f32>().unwrap();
        assert!((m[0] - 0.6).abs() < 1e-5 && (m[1] - 0.8).abs() < 1e-5, "{m:?}");
    }
}
