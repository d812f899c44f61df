//! The seed's drift triggers, from the weekly metrics per language: acceptance down 10 points on
//! the trailing month, error rate up 15 points, a new language, an emergency when acceptance is
//! under 50%, and the weekly trend alert when mean quality drops more than 10% on the week before.
//! Recorded once per week, language and kind, for the scheduler.

use crate::store::{DriftEvent, Store, StoreError, WeekMetrics};

/// Weeks compared with ("the trailing month").
const TRAILING_WEEKS: usize = 4;
/// Fewer decided suggestions than this in a week say nothing about a rate.
pub const MIN_SAMPLE: usize = 10;

/// Every trigger that fires in `metrics` (sorted by language, then week).
pub fn detect(metrics: &[WeekMetrics]) -> Vec<DriftEvent> {
    let mut events = Vec::new();
    for (i, week) in metrics.iter().enumerate() {
        let earlier: Vec<&WeekMetrics> =
            metrics[..i].iter().rev().take_while(|w| w.language == week.language).collect();
        let event = |kind: &str, value: f64, baseline: Option<f64>| DriftEvent {
            week: week.week.clone(),
            language: week.language.clone(),
            kind: kind.to_owned(),
            value: Some(value),
            baseline,
        };
        if earlier.is_empty() {
            events.push(event("new_language", week.decided as f64, None));
        }
        let trailing: Vec<&WeekMetrics> = earlier.iter().take(TRAILING_WEEKS).copied().collect();
        let pooled = |part: fn(&WeekMetrics) -> usize, whole: fn(&WeekMetrics) -> usize| {
            let whole_sum: usize = trailing.iter().map(|w| whole(w)).sum();
            (whole_sum >= MIN_SAMPLE).then(|| trailing.iter().map(|w| part(w)).sum::<usize>() as f64 / whole_sum as f64)
        };
        if week.decided >= MIN_SAMPLE {
            let acceptance = week.taken() as f64 / week.decided as f64;
            if acceptance < 0.5 {
                events.push(event("emergency", acceptance, None));
            }
            if let Some(baseline) = pooled(WeekMetrics::taken, |w| w.decided)
                && acceptance <= baseline - 0.10
            {
                events.push(event("acceptance_drop", acceptance, Some(baseline)));
            }
        }
        if week.taken() >= MIN_SAMPLE {
            let error_rate = week.errors as f64 / week.taken() as f64;
            if let Some(baseline) = pooled(|w| w.errors, WeekMetrics::taken)
                && error_rate >= baseline + 0.15
            {
                events.push(event("error_rise", error_rate, Some(baseline)));
            }
        }
        if let (Some(quality), Some(previous)) = (week.mean_quality, earlier.first().and_then(|w| w.mean_quality))
            && previous > 0.0
            && quality < previous * 0.9
        {
            events.push(event("quality_drop", quality, Some(previous)));
        }
    }
    events
}

/// Detects drift in the store's metrics and records the events not recorded before; returns them.
pub fn update(store: &mut Store) -> Result<usize, StoreError> {
    let events = detect(&store.weekly_metrics()?);
    store.record_drift(&events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn week(language: &str, week: &str, decided: usize, taken: usize, errors: usize, quality: f64) -> WeekMetrics {
        WeekMetrics {
            language: language.into(),
            week: week.into(),
            decided,
            accepted: taken,
            rejected: decided - taken,
            errors,
            mean_quality: Some(quality),
            ..WeekMetrics::default()
        }
    }

    fn kinds(events: &[DriftEvent], at: &str) -> Vec<String> {
        events.iter().filter(|e| e.week == at).map(|e| format!("{}:{}", e.language, e.kind)).collect()
    }

    #[test]
    fn each_trigger_fires_at_its_edge_and_not_before() {
        let metrics = vec![
            week("python", "2026-W40", 20, 16, 1, 60.0),
            week("python", "2026-W41", 20, 16, 1, 60.0),
            // Acceptance 70% vs 80%: exactly 10 points down; errors 25% vs 6.25%: up 18.75 points.
            week("python", "2026-W42", 20, 14, 4, 54.5),
            // Quality 49 vs 54.5: down 10.1%; acceptance 45%: an emergency.
            week("python", "2026-W43", 20, 9, 1, 49.0),
            // Too few to judge rates.
            week("python", "2026-W44", 5, 0, 0, 49.0),
            week("rust", "2026-W44", 12, 10, 0, 70.0),
        ];
        let events = detect(&metrics);
        assert_eq!(kinds(&events, "2026-W40"), ["python:new_language"]);
        assert!(kinds(&events, "2026-W41").is_empty());
        assert_eq!(kinds(&events, "2026-W42"), ["python:acceptance_drop", "python:error_rise"]);
        assert_eq!(kinds(&events, "2026-W43"), ["python:emergency", "python:acceptance_drop", "python:quality_drop"]);
        assert_eq!(kinds(&events, "2026-W44"), ["rust:new_language"]);
        let drop = events.iter().find(|e| e.kind == "acceptance_drop").unwrap();
        assert_eq!((drop.value, drop.baseline), (Some(0.7), Some(0.8)));
    }
}
