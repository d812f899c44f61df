//! The rollout: a version that passed the gate is watched on the user's real requests before it
//! serves them all, and any serving version that does worse is taken out again. Entry: [`tick`],
//! run by the daemon every `check_every_secs` (and by `marunochi adapters check`).
//!
//! - **Shadow**: the daemon also generates a share of requests with the shadow version when it is
//!   otherwise idle (never shown) and keeps both answers (`shadow_samples`). Once the suggestion
//!   shown for that request is decided, both are compared with the code the user kept (character
//!   edit similarity). The shadow becomes the canary when the paired mean difference is not below
//!   `-shadow_margin` with 95% confidence (bootstrap), and is rolled back when it is surely below.
//!   What the user kept is biased toward the served answer (an accepted suggestion *is* the kept
//!   code), hence a margin rather than a win.
//! - **Canary**: serves `canary_share` of requests; outcomes carry its name in `model_version`. It
//!   becomes active when, over the same period, its acceptance and retention are not lower than the
//!   active version's (or the base model's) by more than `acceptance_drop` relative, with 80%
//!   confidence (one-sided; at 95% a 10% relative margin needs thousands of suggestions, months of
//!   one person's typing); it is rolled back when its acceptance is lower by more than that or its
//!   error rate higher by more than `error_rise` points, each significant (one-sided z-test, 5%).
//! - **Active**: the same rollback triggers against the version it replaced (that version's own
//!   record while it served); a rollback restores it.
//!
//! Every rollback records a drift event (`rollback_acceptance` or `rollback_errors`) for `stats`.

use std::fmt;

use super::{Entry, Registry, RegistryError};
use crate::config::{Config, RolloutConfig};
use crate::home::Home;
use crate::store::{DriftEvent, Stage, Store, StoreError, VersionOutcome};

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// One change a check made.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub language: String,
    pub version: String,
    pub from: Stage,
    pub to: Stage,
    pub reason: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {} -> {} ({})", self.language, self.version, self.from, self.to, self.reason)
    }
}

/// What a check did, and for each version it left in its stage, why.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub steps: Vec<Step>,
    /// `to` equals `from`; `reason` says what is missing.
    pub waiting: Vec<Step>,
}

/// What the evidence says about a version in a stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not enough evidence yet, or not conclusive: why.
    Wait(String),
    Advance(String),
    /// Rolled back; for canary and active versions also the drift event's kind, value and baseline.
    RollBack {
        reason: String,
        drift: Option<(&'static str, f64, f64)>,
    },
}

/// One check: judges the shadow samples whose suggestions were decided, then decides every
/// language's shadow, canary and active version.
pub fn tick(home: &Home, config: &Config) -> Result<Report, RolloutError> {
    let mut store = Store::open(&home.db_path())?;
    judge_shadows(&mut store)?;
    let registry = Registry::new(&home.adapters_dir(), &home.db_path());
    let settings = &config.rollout;
    let threshold = config.retention.survival_threshold;
    let entries = registry.list(None)?;
    let mut report = Report::default();
    let mut languages: Vec<&str> = entries.iter().map(|e| e.language.as_str()).collect();
    languages.dedup();
    for language in languages {
        let of = |state: Stage| entries.iter().find(|e| e.language == language && e.state == state);
        let active = of(Stage::Active);
        // At most one change per language and check: the entries above describe the state before it.
        if let Some(shadow) = of(Stage::Shadow) {
            let verdict = decide_shadow(&store.shadow_results(language, &shadow.version, &shadow.since)?, settings);
            if apply(&registry, &mut store, shadow, verdict, &mut report)? {
                continue;
            }
        }
        if let Some(canary) = of(Stage::Canary) {
            let outcomes = store.version_outcomes(language, &canary.since, threshold)?;
            let (mine, reference) = split(&outcomes, language, &canary.version, active.map(|a| a.version.as_str()));
            let verdict = decide_canary(&mine, &reference, settings);
            if apply(&registry, &mut store, canary, verdict, &mut report)? {
                continue;
            }
        }
        if let Some(active) = active
            && let Some(previous) = entries
                .iter()
                .filter(|e| e.language == language && e.state == Stage::Retired)
                .max_by(|a, b| a.since.cmp(&b.since))
        {
            let since_promotion = store.version_outcomes(language, &active.since, threshold)?;
            let everything = store.version_outcomes(language, "", threshold)?;
            let (mine, _) = split(&since_promotion, language, &active.version, None);
            let (before, _) = split(&everything, language, &previous.version, None);
            let verdict = decide_active(&mine, &before, settings);
            apply(&registry, &mut store, active, verdict, &mut report)?;
        }
    }
    Ok(report)
}

/// Matches each pending shadow sample with the suggestion shown for its request and scores both
/// answers against the code kept. Samples whose suggestion cannot be found within a day are
/// closed unjudged.
fn judge_shadows(store: &mut Store) -> Result<(), StoreError> {
    for pending in store.pending_shadows()? {
        let shown = pending.candidates.iter().find(|c| {
            crate::store::request_hash(&pending.document, &c.prompt_prefix, &c.prompt_suffix) == pending.request_hash
        });
        match shown {
            Some(shown) => {
                let kept = shown.kept.as_deref().filter(|k| !k.trim().is_empty());
                let similarities = kept.map(|kept| {
                    (
                        crate::eval::stats::edit_similarity(&pending.served_text, kept),
                        crate::eval::stats::edit_similarity(&pending.shadow_text, kept),
                    )
                });
                store.judge_shadow(pending.rowid, Some(&shown.interaction_id), similarities)?;
            }
            None if pending.expired => store.judge_shadow(pending.rowid, None, None)?,
            None => {}
        }
    }
    Ok(())
}

/// `version`'s outcomes and the reference's: `reference` version's, or the base model's when
/// `None` (a model version without `+`). Languages' outcomes come per model version.
fn split(
    outcomes: &[VersionOutcome],
    language: &str,
    version: &str,
    reference: Option<&str>,
) -> (VersionOutcome, VersionOutcome) {
    let served_by = |o: &VersionOutcome, v: Option<&str>| match v {
        Some(v) => o.model_version.ends_with(&format!("+{language}/{v}")),
        None => !o.model_version.contains('+'),
    };
    let sum = |v: Option<&str>| {
        outcomes.iter().filter(|o| served_by(o, v)).fold(VersionOutcome::default(), |mut total, o| {
            total.decided += o.decided;
            total.taken += o.taken;
            total.errors += o.errors;
            total.retention_judged += o.retention_judged;
            total.retained += o.retained;
            total
        })
    };
    (sum(Some(version)), sum(reference))
}

/// Carries out `verdict` on `entry`; whether anything changed.
fn apply(
    registry: &Registry,
    store: &mut Store,
    entry: &Entry,
    verdict: Verdict,
    report: &mut Report,
) -> Result<bool, RolloutError> {
    let step = |to: Stage, reason: String| Step {
        language: entry.language.clone(),
        version: entry.version.clone(),
        from: entry.state,
        to,
        reason,
    };
    match verdict {
        Verdict::Wait(why) => {
            report.waiting.push(step(entry.state, why));
            return Ok(false);
        }
        Verdict::Advance(reason) => {
            registry.advance(&entry.language, entry.state, &reason)?;
            let to = if entry.state == Stage::Shadow { Stage::Canary } else { Stage::Active };
            report.steps.push(step(to, reason));
        }
        Verdict::RollBack { reason, drift } => {
            report.steps.push(step(Stage::RolledBack, reason.clone()));
            if entry.state == Stage::Active {
                let restored = registry.rollback(&entry.language, &format!("automatic rollback: {reason}"))?;
                if let Some(restored) = restored {
                    report.steps.push(Step {
                        language: entry.language.clone(),
                        version: restored,
                        from: Stage::Retired,
                        to: Stage::Active,
                        reason: format!("restored: {} rolled back", entry.version),
                    });
                }
            } else {
                registry.abort(&entry.language, entry.state, &format!("automatic rollback: {reason}"))?;
            }
            if let Some((kind, value, baseline)) = drift {
                store.record_drift(&[DriftEvent {
                    week: crate::clock::iso_week(crate::clock::now_ms()),
                    language: entry.language.clone(),
                    kind: kind.to_owned(),
                    value: Some(value),
                    baseline: Some(baseline),
                }])?;
            }
        }
    }
    Ok(true)
}

/// Shadow → canary when its answers are, with 95% confidence, at most `shadow_margin` less similar
/// to the kept code than the served ones; rolled back when surely more.
pub fn decide_shadow(pairs: &[(f64, f64)], settings: &RolloutConfig) -> Verdict {
    if pairs.len() < settings.shadow_min_samples.max(1) {
        return Verdict::Wait(format!("{} of {} shadow samples judged", pairs.len(), settings.shadow_min_samples));
    }
    let diffs: Vec<f64> = pairs.iter().map(|(served, shadow)| shadow - served).collect();
    let (low, high) = crate::eval::stats::bootstrap_interval(&diffs, 2000, 17);
    let summary = format!(
        "shadow similarity to the kept code {:.2} vs {:.2} served, difference 95% CI [{low:+.3}, {high:+.3}] on {} samples",
        crate::eval::stats::mean(&pairs.iter().map(|p| p.1).collect::<Vec<_>>()),
        crate::eval::stats::mean(&pairs.iter().map(|p| p.0).collect::<Vec<_>>()),
        pairs.len()
    );
    if low > -settings.shadow_margin {
        Verdict::Advance(summary)
    } else if high < -settings.shadow_margin {
        Verdict::RollBack { reason: format!("worse in shadow: {summary}"), drift: None }
    } else {
        Verdict::Wait(summary)
    }
}

/// Canary → active when not worse than `reference` in acceptance and retention; rolled back on
/// the seed's triggers.
pub fn decide_canary(canary: &VersionOutcome, reference: &VersionOutcome, settings: &RolloutConfig) -> Verdict {
    if let Some(verdict) = triggers(canary, reference, settings) {
        return verdict;
    }
    if canary.decided < settings.canary_min_suggestions || reference.decided < MIN_REFERENCE {
        return Verdict::Wait(format!(
            "{} of {} decided canary suggestions ({} of {MIN_REFERENCE} for the reference)",
            canary.decided, settings.canary_min_suggestions, reference.decided
        ));
    }
    let (acceptance, baseline) = (rate(canary.taken, canary.decided), rate(reference.taken, reference.decided));
    if !not_worse(acceptance, canary.decided, baseline, reference.decided, settings.acceptance_drop * baseline) {
        return Verdict::Wait(format!(
            "acceptance {} vs {}: not yet shown not worse",
            percent(acceptance),
            percent(baseline)
        ));
    }
    if canary.retention_judged < MIN_RETENTION || reference.retention_judged < MIN_RETENTION {
        return Verdict::Wait(format!(
            "retention: {} and {} of {MIN_RETENTION} checks",
            canary.retention_judged, reference.retention_judged
        ));
    }
    let (kept, kept_before) =
        (rate(canary.retained, canary.retention_judged), rate(reference.retained, reference.retention_judged));
    let retention_margin = settings.acceptance_drop * kept_before;
    if !not_worse(kept, canary.retention_judged, kept_before, reference.retention_judged, retention_margin) {
        return Verdict::Wait(format!(
            "retention {} vs {}: not yet shown not worse",
            percent(kept),
            percent(kept_before)
        ));
    }
    Verdict::Advance(format!(
        "not worse on {} suggestions: acceptance {} vs {}, retention {} vs {}",
        canary.decided,
        percent(acceptance),
        percent(baseline),
        percent(kept),
        percent(kept_before)
    ))
}

/// An active version stays unless the triggers fire against the version it replaced.
pub fn decide_active(active: &VersionOutcome, previous: &VersionOutcome, settings: &RolloutConfig) -> Verdict {
    triggers(active, previous, settings).unwrap_or_else(|| Verdict::Wait("no trigger fired".into()))
}

/// Fewer decided suggestions than this say nothing about the reference's rates.
const MIN_REFERENCE: usize = crate::quality::drift::MIN_SAMPLE;
const MIN_RETENTION: usize = 5;
/// One-sided 95%: rollbacks.
const Z: f64 = 1.645;
/// One-sided 80%: promotion from canary (see the module's documentation).
const Z_PROMOTE: f64 = 0.842;

/// The seed's rollback triggers: acceptance lower by more than `acceptance_drop` (relative) or
/// error rate higher by more than `error_rise` (points), each significant.
fn triggers(mine: &VersionOutcome, reference: &VersionOutcome, settings: &RolloutConfig) -> Option<Verdict> {
    if mine.decided < settings.canary_min_suggestions || reference.decided < MIN_REFERENCE {
        return None;
    }
    let (acceptance, baseline) = (rate(mine.taken, mine.decided), rate(reference.taken, reference.decided));
    if acceptance < baseline * (1.0 - settings.acceptance_drop)
        && significantly_lower(acceptance, mine.decided, baseline, reference.decided)
    {
        return Some(Verdict::RollBack {
            reason: format!(
                "acceptance {} vs {} on {} suggestions",
                percent(acceptance),
                percent(baseline),
                mine.decided
            ),
            drift: Some(("rollback_acceptance", acceptance, baseline)),
        });
    }
    if mine.taken >= MIN_REFERENCE && reference.taken >= MIN_REFERENCE {
        let (errors, errors_before) = (rate(mine.errors, mine.taken), rate(reference.errors, reference.taken));
        if errors > errors_before + settings.error_rise
            && significantly_lower(errors_before, reference.taken, errors, mine.taken)
        {
            return Some(Verdict::RollBack {
                reason: format!("error rate {} vs {}", percent(errors), percent(errors_before)),
                drift: Some(("rollback_errors", errors, errors_before)),
            });
        }
    }
    None
}

fn rate(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// One-sided two-proportion z-test (pooled): is `a` (of `n_a`) lower than `b` (of `n_b`)?
fn significantly_lower(a: f64, n_a: usize, b: f64, n_b: usize) -> bool {
    let pooled = (a * n_a as f64 + b * n_b as f64) / (n_a + n_b) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n_a as f64 + 1.0 / n_b as f64)).sqrt();
    if se == 0.0 { a < b } else { (b - a) / se > Z }
}

/// Non-inferiority: the one-sided 80% lower bound of `a - b` is above `-margin`.
fn not_worse(a: f64, n_a: usize, b: f64, n_b: usize, margin: f64) -> bool {
    let se = (a * (1.0 - a) / n_a as f64 + b * (1.0 - b) / n_b as f64).sqrt();
    a - b - Z_PROMOTE * se > -margin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(decided: usize, taken: usize, errors: usize, judged: usize, retained: usize) -> VersionOutcome {
        VersionOutcome { model_version: String::new(), decided, taken, errors, retention_judged: judged, retained }
    }

    fn settings() -> RolloutConfig {
        RolloutConfig { shadow_min_samples: 10, canary_min_suggestions: 30, ..RolloutConfig::default() }
    }

    #[test]
    fn the_z_tests_match_hand_computed_values() {
        // 30/100 vs 50/100: pooled 0.4, se = sqrt(0.24 * 0.02) = 0.0693, z = 2.89 > 1.645.
        assert!(significantly_lower(0.3, 100, 0.5, 100));
        // 45/100 vs 50/100: z = 0.05 / 0.0707 = 0.71.
        assert!(!significantly_lower(0.45, 100, 0.5, 100));
        // 0.6 vs 0.6 on 100 each: se = sqrt(0.0048) = 0.0693, 80% lower bound -0.058: within 0.06,
        // not within 0.05.
        assert!(not_worse(0.6, 100, 0.6, 100, 0.06));
        assert!(!not_worse(0.6, 100, 0.6, 100, 0.05));
    }

    #[test]
    fn shadow_needs_enough_samples_then_goes_by_the_interval() {
        let close: Vec<(f64, f64)> = (0..20).map(|i| (0.9, 0.88 + 0.002 * (i % 3) as f64)).collect();
        assert!(matches!(decide_shadow(&close[..5], &settings()), Verdict::Wait(w) if w.contains("5 of 10")));
        assert!(matches!(decide_shadow(&close, &settings()), Verdict::Advance(_)));
        let far: Vec<(f64, f64)> = (0..20).map(|i| (0.9, 0.3 + 0.01 * (i % 5) as f64)).collect();
        assert!(matches!(decide_shadow(&far, &settings()), Verdict::RollBack { drift: None, .. }));
        let noisy: Vec<(f64, f64)> = (0..20).map(|i| (0.9, if i % 2 == 0 { 1.0 } else { 0.5 })).collect();
        assert!(matches!(decide_shadow(&noisy, &settings()), Verdict::Wait(_)));
    }

    #[test]
    fn canary_is_promoted_when_not_worse_and_rolled_back_on_either_trigger() {
        let reference = outcome(200, 120, 10, 100, 80);
        let good = outcome(60, 38, 2, 30, 25);
        assert!(matches!(decide_canary(&good, &reference, &settings()), Verdict::Advance(_)));
        // Too few decided: wait, however good.
        assert!(matches!(decide_canary(&outcome(20, 20, 0, 20, 20), &reference, &settings()), Verdict::Wait(_)));
        // Retention not judged enough yet: wait.
        assert!(
            matches!(decide_canary(&outcome(60, 38, 2, 2, 2), &reference, &settings()), Verdict::Wait(w) if w.contains("retention"))
        );
        // 30% vs 60% accepted: more than 10% relative lower, significant.
        let dropped = decide_canary(&outcome(60, 18, 1, 10, 8), &reference, &settings());
        assert!(
            matches!(&dropped, Verdict::RollBack { drift: Some(("rollback_acceptance", a, b)), .. } if (*a - 0.3).abs() < 1e-9 && (*b - 0.6).abs() < 1e-9),
            "{dropped:?}"
        );
        // 54% vs 60%: 10% relative exactly is not "more than"; and not significant anyway.
        assert!(matches!(decide_canary(&outcome(50, 27, 1, 10, 8), &reference, &settings()), Verdict::Wait(_)));
        // Errors 15/38 = 39% vs 10/120 = 8%: +31 points, significant.
        let errors = decide_canary(&outcome(60, 38, 15, 30, 25), &reference, &settings());
        assert!(matches!(errors, Verdict::RollBack { drift: Some(("rollback_errors", ..)), .. }), "{errors:?}");
    }

    #[test]
    fn an_active_version_is_rolled_back_only_on_a_trigger() {
        let previous = outcome(300, 210, 20, 0, 0);
        assert!(matches!(decide_active(&outcome(100, 68, 5, 0, 0), &previous, &settings()), Verdict::Wait(_)));
        assert!(matches!(
            decide_active(&outcome(100, 45, 5, 0, 0), &previous, &settings()),
            Verdict::RollBack { drift: Some(("rollback_acceptance", ..)), .. }
        ));
        assert!(matches!(decide_active(&outcome(10, 0, 0, 0, 0), &previous, &settings()), Verdict::Wait(_)));
    }

    #[test]
    fn outcomes_split_by_the_version_that_served_them() {
        let row = |model_version: &str, decided| VersionOutcome {
            model_version: model_version.into(),
            decided,
            ..VersionOutcome::default()
        };
        let outcomes = [row("m", 3), row("m+python/v1", 5), row("m+python/v2", 7), row("m+python/v12", 11)];
        let (mine, reference) = split(&outcomes, "python", "v2", Some("v1"));
        assert_eq!((mine.decided, reference.decided), (7, 5));
        let (_, base) = split(&outcomes, "python", "v1", None);
        assert_eq!(base.decided, 3);
    }
}
