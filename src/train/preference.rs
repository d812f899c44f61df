//! The preference losses of the stages after SFT, as functions of sequence log-likelihoods only:
//! each returns the batch loss and `dL/dπ` for every policy log-likelihood `π`, which the trainer
//! turns into parameter gradients (`model.rs` computes `∇π` per sequence). `Δ = π − π_ref`, the
//! log-ratio against the reference (the adapter as SFT left it).
//!
//! - **KTO** (TRL's form): desirable `1 − σ(β(Δ − z₀))`, undesirable `1 − σ(β(z₀ − Δ))`, where
//!   `z₀ = max(0, mean Δ)` over *mismatched* pairs (a completion scored after another example's
//!   prompt) estimates the KL term; it is a constant for the gradient. Weighted mean over the batch.
//! - **DPO**: `−log σ(β((π_c − π_ref,c) − (π_r − π_ref,r)))`, mean over the pairs.

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `z₀` from the log-ratios of mismatched pairs.
pub(crate) fn kl_estimate(mismatched: &[f64]) -> f64 {
    if mismatched.is_empty() {
        return 0.0;
    }
    (mismatched.iter().sum::<f64>() / mismatched.len() as f64).max(0.0)
}

/// One example of a KTO batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KtoTerm {
    pub(crate) delta: f64,
    pub(crate) desirable: bool,
    pub(crate) weight: f64,
}

/// The KTO batch loss and `dL/dπ` of each term.
pub(crate) fn kto(terms: &[KtoTerm], z0: f64, beta: f64) -> (f64, Vec<f64>) {
    let weight_sum: f64 = terms.iter().map(|t| t.weight).sum();
    let mut loss = 0.0;
    let coeffs = terms
        .iter()
        .map(|t| {
            let share = t.weight / weight_sum;
            let (margin, sign) = if t.desirable { (beta * (t.delta - z0), -1.0) } else { (beta * (z0 - t.delta), 1.0) };
            let s = sigmoid(margin);
            loss += share * (1.0 - s);
            share * sign * beta * s * (1.0 - s)
        })
        .collect();
    (loss, coeffs)
}

/// The DPO batch loss and `(dL/dπ_chosen, dL/dπ_rejected)` of each pair, from their log-ratios.
pub(crate) fn dpo(pairs: &[(f64, f64)], beta: f64) -> (f64, Vec<(f64, f64)>) {
    let n = pairs.len() as f64;
    let mut loss = 0.0;
    let coeffs = pairs
        .iter()
        .map(|&(chosen, rejected)| {
            let z = beta * (chosen - rejected);
            // −log σ(z) = log(1 + e^(−z)), computed stably.
            loss += (if z > 0.0 { (-z).exp().ln_1p() } else { -z + z.exp().ln_1p() }) / n;
            let pull = beta * sigmoid(-z) / n;
            (-pull, pull)
        })
        .collect();
    (loss, coeffs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn dpo_starts_at_ln_2_and_pushes_chosen_up_and_rejected_down() {
        let (loss, coeffs) = dpo(&[(0.0, 0.0)], 0.1);
        close(loss, std::f64::consts::LN_2);
        close(coeffs[0].0, -0.05);
        close(coeffs[0].1, 0.05);
        // Hand-computed: z = 0.1 · (2 − (−1)) = 0.3; −log σ(0.3) = 0.554355…; β σ(−0.3) = 0.042556…
        let (loss, coeffs) = dpo(&[(2.0, -1.0), (0.0, 0.0)], 0.1);
        close(loss, (0.554_355_244_468_527_5 + std::f64::consts::LN_2) / 2.0);
        close(coeffs[0].0, -0.042_555_748_318_834_1 / 2.0);
        close(coeffs[1].1, 0.025);
    }

    #[test]
    fn dpo_matches_finite_differences() {
        let pairs = [(0.7, -0.4), (-1.2, 0.3)];
        let (_, coeffs) = dpo(&pairs, 0.5);
        let h = 1e-6;
        for i in 0..2 {
            let mut up = pairs;
            up[i].0 += h;
            let mut down = pairs;
            down[i].0 -= h;
            close((dpo(&up, 0.5).0 - dpo(&down, 0.5).0) / (2.0 * h), coeffs[i].0);
        }
    }

    #[test]
    fn kto_rewards_desirable_and_penalises_undesirable_log_ratios() {
        let terms = [
            KtoTerm { delta: 0.0, desirable: true, weight: 1.0 },
            KtoTerm { delta: 0.0, desirable: false, weight: 3.0 },
        ];
        let (loss, coeffs) = kto(&terms, 0.0, 0.1);
        close(loss, 0.5);
        // β σ(0)(1 − σ(0)) = 0.025, times each term's share of the weight.
        close(coeffs[0], -0.025 * 0.25);
        close(coeffs[1], 0.025 * 0.75);
        let h = 1e-6;
        let moved = |d: f64| kto(&[KtoTerm { delta: 0.3 + d, desirable: false, weight: 2.0 }], 0.2, 0.7).0;
        close(
            (moved(h) - moved(-h)) / (2.0 * h),
            kto(&[KtoTerm { delta: 0.3, desirable: false, weight: 2.0 }], 0.2, 0.7).1[0],
        );
    }

    #[test]
    fn the_kl_estimate_is_a_non_negative_mean() {
        close(kl_estimate(&[0.2, 0.4]), 0.3);
        close(kl_estimate(&[-0.2, -0.4]), 0.0);
        close(kl_estimate(&[]), 0.0);
    }
}
