//! Paired statistics for the gate: the same held-out examples scored by two models, compared
//! example by example.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Two-sided exact sign test: the probability, with no real difference, of a split at least as
/// lopsided as `wins` : `losses` (ties are dropped, as the test prescribes).
pub fn sign_test(wins: usize, losses: usize) -> f64 {
    let n = wins + losses;
    if n == 0 {
        return 1.0;
    }
    let k = wins.min(losses);
    // P(X ≤ k) for X ~ Binomial(n, ½), doubled, capped at 1.
    let mut coefficient = 1.0f64;
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            coefficient *= (n - i + 1) as f64 / i as f64;
        }
        tail += coefficient;
    }
    (2.0 * tail * 0.5f64.powi(n as i32)).min(1.0)
}

/// A 95% percentile-bootstrap interval of the mean of `diffs` (resampled `rounds` times from a fixed
/// seed, so a report is reproducible).
pub fn bootstrap_interval(diffs: &[f64], rounds: usize, seed: u64) -> (f64, f64) {
    if diffs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..rounds)
        .map(|_| (0..diffs.len()).map(|_| diffs[rng.random_range(0..diffs.len())]).sum::<f64>() / diffs.len() as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (rounds - 1) as f64).round() as usize).min(rounds - 1)];
    (at(0.025), at(0.975))
}

/// Character edit similarity, 0 to 1 (what the gate and the shadow comparison report).
pub fn edit_similarity(a: &str, b: &str) -> f64 {
    f64::from(similar::TextDiff::from_chars(a, b).ratio())
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_matches_the_binomial_by_hand() {
        // 6 : 0 → 2 · (1/2)^6 = 0.03125; 5 : 1 → 2 · 7/64 = 0.21875; 8 : 2 → 2 · 56/1024.
        assert!((sign_test(6, 0) - 0.03125).abs() < 1e-12);
        assert!((sign_test(1, 5) - 0.21875).abs() < 1e-12);
        assert!((sign_test(8, 2) - 0.109375).abs() < 1e-12);
        assert_eq!(sign_test(3, 3), 1.0);
        assert_eq!(sign_test(0, 0), 1.0);
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_is_reproducible() {
        let diffs = [0.5, 0.7, 0.2, 0.9, 0.4, 0.6, 0.3, 0.8];
        let (low, high) = bootstrap_interval(&diffs, 2000, 1);
        assert!(low > 0.3 && low < 0.55 && high > 0.55 && high < 0.8, "{low} {high}");
        assert_eq!((low, high), bootstrap_interval(&diffs, 2000, 1));
        let (low, _) = bootstrap_interval(&[0.5, -0.4, 0.1, -0.3], 2000, 1);
        assert!(low < 0.0);
        assert!((mean(&diffs) - 0.55).abs() < 1e-12);
    }
}
