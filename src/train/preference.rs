//! The preference losses of the stages after SFT, as functions of sequence log-likelihoods only:
//! each returns the batch loss and `dL/dπ` for every policy log-likelihood `π`, which the trainer
//! turns into parameter gradients (`model.rs` computes `∇π` per sequence). `Δ = π − π_ref`, the
//! log-ratio against the reference (the adapter as SFT left it).
//!
//! - **KTO** (TRL's form): desirable `1 − σ(β(Δ − z₀))`, undesirable `1 − σ(β(z₀ − Δ))`, where
//!   `z₀ = max(0, mean Δ)` over *mismatched* pairs (a completion scored after another example's
//!   prompt) estimates the KL term; it is a constant for the gradient. Weighted mean over the batch.
//! - **DPO**: `−log σ(β((π_c − π_ref,c) − (π_r − π_ref,r)))`, mean over the pairs.
//! - **Reward** (RLOO on logged outcomes): each item is a suggestion the user was shown and the
//!   reward of what became of it. The advantage is the reward less the mean of the stage's other
//!   items' rewards (leave-one-out). Each prompt has one suggestion, so the baseline is taken over
//!   the stage's items, not the batch: a batch of equal outcomes (mostly rejections) would
//!   otherwise teach nothing. The suggestions were sampled by an earlier model, so the step is
//!   PPO's clipped surrogate against the reference: `−min(ρA, clip(ρ, 1 − ε, 1 + ε)A)` with `ρ`
//!   the per-token likelihood ratio `exp((π − π_ref) / T)`. An item stops pulling once its ratio
//!   left the trust region in its advantage's direction, so a rejected suggestion is pushed down
//!   only so far. Mean over the batch.

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

/// One item of a reward batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RewardTerm {
    /// Its reward less the baseline ([`advantages`]).
    pub(crate) advantage: f64,
    /// `π − π_ref` of the whole completion.
    pub(crate) delta: f64,
    /// The completion's length in tokens (`T`).
    pub(crate) tokens: usize,
}

/// Each item's leave-one-out advantage: its reward less the mean of the others'.
pub(crate) fn advantages(rewards: &[f64]) -> Vec<f64> {
    let n = rewards.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let sum: f64 = rewards.iter().sum();
    rewards.iter().map(|r| r - (sum - r) / (n - 1) as f64).collect()
}

/// The reward batch loss and `dL/dπ` of each item, `clip` being `ε`.
pub(crate) fn reward(terms: &[RewardTerm], clip: f64) -> (f64, Vec<f64>) {
    let n = terms.len() as f64;
    let mut loss = 0.0;
    let coeffs = terms
        .iter()
        .map(|t| {
            let advantage = t.advantage;
            let tokens = t.tokens.max(1) as f64;
            let ratio = (t.delta / tokens).exp();
            let clipped = ratio.clamp(1.0 - clip, 1.0 + clip);
            let (unclipped, bounded) = (ratio * advantage, clipped * advantage);
            loss -= unclipped.min(bounded) / n;
            // The clipped branch is a constant: no gradient once it is the smaller.
            if unclipped <= bounded { -advantage * ratio / tokens / n } else { 0.0 }
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
    fn reward_advantages_leave_each_item_out_of_its_own_baseline() {
        let a = advantages(&[1.0, -0.5, 0.25, 0.25]);
        close(a[0], 1.0 - 0.0 / 3.0);
        close(a[1], -0.5 - 1.5 / 3.0);
        close(a[2], 0.25 - 0.75 / 3.0);
        assert_eq!(advantages(&[0.7]), [0.0], "one item has no baseline");
        assert!(advantages(&[0.3, 0.3, 0.3]).iter().all(|a| a.abs() < 1e-12), "equal rewards teach nothing");
    }

    #[test]
    fn the_reward_loss_is_reinforce_at_the_start_and_stops_outside_the_trust_region() {
        let term = |advantage: f64, delta: f64| RewardTerm { advantage, delta, tokens: 10 };
        // At the reference (ratio 1): REINFORCE, per token.
        let (loss, coeffs) = reward(&[term(2.0, 0.0), term(-2.0, 0.0)], 0.2);
        close(loss, -(2.0 - 2.0) / 2.0);
        close(coeffs[0], -2.0 / 10.0 / 2.0);
        close(coeffs[1], 2.0 / 10.0 / 2.0);
        // Pushed past the region in the advantage's direction: no more pull.
        let (_, coeffs) = reward(&[term(2.0, 10.0 * 0.3), term(-2.0, -10.0 * 0.3)], 0.2);
        assert_eq!(coeffs, [0.0, 0.0]);
        // Past it against the advantage: still pulled back.
        let (_, coeffs) = reward(&[term(2.0, -10.0 * 0.3), term(-2.0, 10.0 * 0.3)], 0.2);
        assert!(coeffs[0] < 0.0 && coeffs[1] > 0.0, "{coeffs:?}");
        // Inside the region the coefficient is the loss's derivative.
        let terms = [term(0.9, 0.4), term(-0.3, -0.2), term(0.1, 0.05), term(0.0, 0.1)];
        let (_, coeffs) = reward(&terms, 0.2);
        let h = 1e-6;
        for i in 0..4 {
            let (mut up, mut down) = (terms, terms);
            up[i].delta += h;
            down[i].delta -= h;
            close((reward(&up, 0.2).0 - reward(&down, 0.2).0) / (2.0 * h), coeffs[i]);
        }
    }

    #[test]
    fn the_kl_estimate_is_a_non_negative_mean() {
        close(kl_estimate(&[0.2, 0.4]), 0.3);
        close(kl_estimate(&[-0.2, -0.4]), 0.0);
        close(kl_estimate(&[]), 0.0);
    }
}
