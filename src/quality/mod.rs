//! The quality score of an interaction: the seed's five dimensions (the README's quality score), each stored,
//! the total clamped to 0–100. Entries: [`score`] (pure: inputs in, score out) and [`rescore`]
//! (every decided interaction whose inputs changed since it was last scored).
//!
//! | dimension | points | from |
//! |---|---|---|
//! | execution | 30 success, 0 failure, 15 unknown | `marunochi run`, test reports |
//! | tests | pass rate × 15 + coverage × 10 | test reports (coverage is not measured yet: 0) |
//! | static | lint 10 − 2 per error, complexity 10 if CC < 10 else max(0, 20 − CC) | tree-sitter, the language server, ruff |
//! | retention | 7 if kept at 7 d, 8 if kept at 30 d | retention checks |
//! | feedback | ±10 explicit; else +5 taken, −5 rejected | `marunochi.feedback`, the outcome |

pub mod drift;
pub mod lint;
pub mod stats;

use crate::store::{Action, Store, StoreError};
pub use crate::store::{Inputs, TestCounts};

/// Static analysis of settled code as stored: tree-sitter's (when the language has a grammar) and
/// an external linter's (when one is installed).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct StaticAnalysis {
    #[serde(flatten)]
    pub syntax: Option<crate::syntax::Analysis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lint: Option<lint::Lint>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Score {
    pub execution: f64,
    pub tests: f64,
    #[serde(rename = "static")]
    pub static_analysis: f64,
    pub retention: f64,
    pub feedback: f64,
    pub total: f64,
    pub band: Band,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Band {
    Excellent,
    Good,
    Acceptable,
    Poor,
    Bad,
}

impl Band {
    /// Excellent ≥ 90 (few-shot context material), good ≥ 70 (training), acceptable ≥ 50
    /// (monitored), poor ≥ 30, bad below (investigate).
    pub fn of(total: f64) -> Band {
        match total {
            t if t >= 90.0 => Band::Excellent,
            t if t >= 70.0 => Band::Good,
            t if t >= 50.0 => Band::Acceptable,
            t if t >= 30.0 => Band::Poor,
            _ => Band::Bad,
        }
    }
}

pub fn score(inputs: &Inputs) -> Score {
    let execution = match inputs.execution_success {
        Some(true) => 30.0,
        Some(false) => 0.0,
        None => 15.0,
    };
    let tests = inputs.tests.filter(|t| t.tests > t.skipped).map_or(0.0, |t| {
        let ran = (t.tests - t.skipped) as f64;
        let passed = ran - (t.failures + t.errors) as f64;
        (passed.max(0.0) / ran) * 15.0
    });
    let errors = inputs.syntax_errors.unwrap_or(0) + inputs.server_errors + inputs.linter_errors;
    let lint = (10.0 - 2.0 * errors as f64).max(0.0);
    let complexity = match inputs.complexity {
        Some(cc) if cc >= 10 => (20.0 - cc as f64).max(0.0),
        _ => 10.0,
    };
    let retention = match inputs.retention_7d {
        Some(true) => 7.0,
        _ => 0.0,
    } + match inputs.retention_30d {
        Some(true) => 8.0,
        _ => 0.0,
    };
    let feedback = match inputs.user_rating {
        Some(rating) => 10.0 * rating.clamp(-1, 1) as f64,
        None => match inputs.action {
            action if action.taken() => 5.0,
            Action::Rejected => -5.0,
            _ => 0.0,
        },
    };
    let static_analysis = lint + complexity;
    let total = (execution + tests + static_analysis + retention + feedback).clamp(0.0, 100.0);
    Score { execution, tests, static_analysis, retention, feedback, total, band: Band::of(total) }
}

/// The score over the signals actually observed, renormalised to 0–100: a dimension nothing was
/// measured for (no run seen, no test report, no grammar, no retention check yet) counts neither
/// for nor against. The seed's score gives an unknown run 15 of 30 and absent tests 0 of 25, so
/// code from a user who never runs tests where we see it tops out at 55 and never reaches the
/// training bar; this one does when what was seen is good (README: which code is trained on).
pub fn observed(inputs: &Inputs) -> f64 {
    let score = score(inputs);
    let ran = inputs.tests.is_some_and(|t| t.tests > t.skipped);
    let kept_max = inputs.retention_7d.map_or(0.0, |_| 7.0) + inputs.retention_30d.map_or(0.0, |_| 8.0);
    let parts = [
        (inputs.execution_success.is_some(), score.execution, 30.0),
        // Coverage is not measured: the pass rate's 15 is all there is to get.
        (ran, score.tests, 15.0),
        (inputs.syntax_errors.is_some(), score.static_analysis, 20.0),
        (kept_max > 0.0, score.retention, kept_max),
        (true, score.feedback.max(0.0), 10.0),
    ];
    let (got, max) = parts.iter().filter(|p| p.0).fold((0.0, 0.0), |(got, max), p| (got + p.1, max + p.2));
    // A bad rating or a rejection takes points off (the feedback dimension is −10 to +10).
    let penalty = score.feedback.min(0.0);
    (100.0 * (got + penalty) / max).clamp(0.0, 100.0)
}

/// Why a taken suggestion's final code was admitted as a training example, the first rule that
/// holds in this order (README: which code is trained on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// The seed's score is at least the bar.
    Score,
    /// The score over what was observed is at least the bar.
    Observed,
    /// Still there after 7 or 30 days.
    Retained,
    /// The user corrected it: the final code is theirs.
    Corrected,
}

impl Rule {
    pub const ALL: &[Rule] = &[Rule::Score, Rule::Observed, Rule::Retained, Rule::Corrected];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Score => "score",
            Rule::Observed => "observed",
            Rule::Retained => "retained",
            Rule::Corrected => "corrected",
        }
    }
}

/// Which rule admits a decided suggestion as training data, if any. Rejected and ignored ones, a
/// bad rating and a failed run are never admitted; `seed_only` keeps to the seed's score alone.
pub fn admit(inputs: &Inputs, bar: f64, seed_only: bool) -> Option<Rule> {
    let vetoed = inputs.user_rating.is_some_and(|r| r < 0) || inputs.execution_success == Some(false);
    if !inputs.action.taken() || inputs.action == Action::Partial {
        return None;
    }
    if score(inputs).total >= bar {
        return Some(Rule::Score);
    }
    if seed_only || vetoed {
        return None;
    }
    if observed(inputs) >= bar {
        Some(Rule::Observed)
    } else if inputs.retention_7d == Some(true) || inputs.retention_30d == Some(true) {
        Some(Rule::Retained)
    } else if inputs.action == Action::Corrected {
        Some(Rule::Corrected)
    } else {
        None
    }
}

/// Scores every decided interaction whose inputs changed since it was last scored; returns how
/// many.
pub fn rescore(store: &mut Store) -> Result<usize, StoreError> {
    let pending = store.unscored()?;
    let scores: Vec<(String, f64, String)> = pending
        .into_iter()
        .map(|(id, inputs)| {
            let score = score(&inputs);
            (id, score.total, serde_json::to_string(&score).unwrap_or_default())
        })
        .collect();
    store.set_scores(&scores)?;
    Ok(scores.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken() -> Inputs {
        Inputs { action: Action::Accepted, syntax_errors: Some(0), complexity: Some(3), ..Inputs::default() }
    }

    #[test]
    fn design_arithmetic_an_accepted_kept_clean_snippet_without_runs_scores_55() {
        let inputs = Inputs { retention_7d: Some(true), retention_30d: Some(true), ..taken() };
        let s = score(&inputs);
        assert_eq!(
            (s.execution, s.tests, s.static_analysis, s.retention, s.feedback, s.total),
            (15.0, 0.0, 20.0, 15.0, 5.0, 55.0)
        );
        assert_eq!(s.band, Band::Acceptable);
    }

    #[test]
    fn each_dimension() {
        // Execution.
        assert_eq!(score(&Inputs { execution_success: Some(true), ..taken() }).execution, 30.0);
        assert_eq!(score(&Inputs { execution_success: Some(false), ..taken() }).execution, 0.0);
        // Tests: pass rate over the tests that ran.
        let counts = TestCounts { tests: 10, failures: 1, errors: 1, skipped: 2 };
        assert_eq!(score(&Inputs { tests: Some(counts), ..taken() }).tests, 15.0 * 6.0 / 8.0);
        let all_skipped = TestCounts { tests: 2, skipped: 2, ..TestCounts::default() };
        assert_eq!(score(&Inputs { tests: Some(all_skipped), ..taken() }).tests, 0.0);
        // Static: 2 per error, complexity from 10 on.
        assert_eq!(score(&Inputs { syntax_errors: Some(1), server_errors: 2, ..taken() }).static_analysis, 4.0 + 10.0);
        assert_eq!(score(&Inputs { linter_errors: 1, ..taken() }).static_analysis, 8.0 + 10.0);
        assert_eq!(score(&Inputs { syntax_errors: Some(9), ..taken() }).static_analysis, 0.0 + 10.0);
        for (cc, points) in [(9, 10.0), (10, 10.0), (12, 8.0), (20, 0.0), (35, 0.0)] {
            assert_eq!(score(&Inputs { complexity: Some(cc), ..taken() }).static_analysis, 10.0 + points, "CC {cc}");
        }
        // Retention.
        assert_eq!(score(&Inputs { retention_7d: Some(true), retention_30d: Some(false), ..taken() }).retention, 7.0);
        assert_eq!(score(&Inputs { retention_7d: Some(false), retention_30d: Some(true), ..taken() }).retention, 8.0);
        // Feedback: explicit wins over implicit.
        assert_eq!(score(&Inputs { user_rating: Some(-1), ..taken() }).feedback, -10.0);
        assert_eq!(score(&Inputs { user_rating: Some(1), action: Action::Rejected, ..taken() }).feedback, 10.0);
        assert_eq!(score(&Inputs { action: Action::Rejected, ..taken() }).feedback, -5.0);
        assert_eq!(score(&Inputs { action: Action::Ignored, ..taken() }).feedback, 0.0);
    }

    #[test]
    fn observed_counts_only_what_was_seen_and_admit_takes_the_first_rule_that_holds() {
        // Taken, clean, nothing else known: static 20/20 + feedback 5/10.
        let fresh = taken();
        assert!((observed(&fresh) - 100.0 * 25.0 / 30.0).abs() < 1e-9);
        assert_eq!(score(&fresh).total, 40.0, "the seed's score keeps it far below 70");
        assert_eq!(admit(&fresh, 70.0, false), Some(Rule::Observed));
        assert_eq!(admit(&fresh, 70.0, true), None, "the seed's rule alone admits nothing");
        // Deleted within a week: 25 of 37.
        let lost = Inputs { retention_7d: Some(false), ..taken() };
        assert!((observed(&lost) - 100.0 * 25.0 / 37.0).abs() < 1e-9);
        assert_eq!(admit(&lost, 70.0, false), None);
        // Kept, but messy: retention admits it.
        let messy = Inputs { linter_errors: 5, retention_7d: Some(true), ..taken() };
        assert_eq!(admit(&messy, 90.0, false), Some(Rule::Retained));
        // A correction is the user's own code.
        let corrected = Inputs { action: Action::Corrected, linter_errors: 5, ..taken() };
        assert_eq!(admit(&corrected, 90.0, false), Some(Rule::Corrected));
        // Run and passing: the seed's score gets there by itself.
        let tested = Inputs {
            execution_success: Some(true),
            tests: Some(TestCounts { tests: 3, ..TestCounts::default() }),
            retention_7d: Some(true),
            ..taken()
        };
        assert_eq!(admit(&tested, 70.0, false), Some(Rule::Score));
        assert_eq!(observed(&tested), 100.0 * 77.0 / 82.0);
        // Never: a failed run, a bad rating, a rejection, a partial take.
        for never in [
            Inputs { execution_success: Some(false), retention_7d: Some(true), ..taken() },
            Inputs { user_rating: Some(-1), action: Action::Corrected, ..taken() },
            Inputs { action: Action::Rejected, ..taken() },
            Inputs { action: Action::Partial, ..taken() },
        ] {
            assert_eq!(admit(&never, 70.0, false), None, "{never:?}");
        }
        assert_eq!(observed(&Inputs { user_rating: Some(-1), ..taken() }), 100.0 * 10.0 / 30.0);
    }

    #[test]
    fn totals_are_clamped_and_banded_at_the_edges() {
        let best = Inputs {
            execution_success: Some(true),
            tests: Some(TestCounts { tests: 4, ..TestCounts::default() }),
            retention_7d: Some(true),
            retention_30d: Some(true),
            user_rating: Some(1),
            ..taken()
        };
        assert_eq!(score(&best).total, 90.0, "coverage is not measured: 90 is the best there is");
        let worst = Inputs {
            execution_success: Some(false),
            syntax_errors: Some(5),
            complexity: Some(30),
            user_rating: Some(-1),
            ..taken()
        };
        assert_eq!(score(&worst).total, 0.0, "−10 is clamped to 0");
        for (total, band) in [
            (100.0, Band::Excellent),
            (90.0, Band::Excellent),
            (89.9, Band::Good),
            (70.0, Band::Good),
            (69.9, Band::Acceptable),
            (50.0, Band::Acceptable),
            (49.9, Band::Poor),
            (30.0, Band::Poor),
            (29.9, Band::Bad),
            (0.0, Band::Bad),
        ] {
            assert_eq!(Band::of(total), band, "{total}");
        }
    }
}
