//! Weekly metrics and the `drift_events` table.

use rusqlite::params;

use super::{NOW, Store, StoreError, TAKEN_WITH_ERRORS, classify};

impl Store {
    /// Per language and ISO week: what became of the suggestions decided, errors in taken code,
    /// mean quality.
    pub fn weekly_metrics(&self) -> Result<Vec<WeekMetrics>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT coalesce(language, ''), strftime('%G-W%V', timestamp), count(*),
                        sum(action = 'accepted'), sum(action = 'partial'), sum(action = 'corrected'),
                        sum(action = 'rejected'), sum(action = 'ignored'),
                        count(CASE WHEN {TAKEN_WITH_ERRORS} THEN 1 END), avg(quality_score)
                 FROM interactions WHERE action != 'shown' GROUP BY 1, 2 ORDER BY 1, 2"
            ))
            .map_err(failed)?;
        let rows = statement.query_map([], |row| {
            let count = |i: usize| row.get::<_, i64>(i).map(|n| n as usize);
            Ok(WeekMetrics {
                language: row.get(0)?,
                week: row.get(1)?,
                decided: count(2)?,
                accepted: count(3)?,
                partial: count(4)?,
                corrected: count(5)?,
                rejected: count(6)?,
                ignored: count(7)?,
                errors: count(8)?,
                mean_quality: row.get(9)?,
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Per language and context source (`none` when the prompt had no context): suggestions
    /// decided, taken (accepted, partial or corrected), and taken code still there after 7 days
    /// among those judged.
    pub fn source_metrics(&self) -> Result<Vec<SourceMetrics>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT coalesce(language, ''), coalesce(source.value, 'none'), count(*),
                        sum(action IN ('accepted', 'partial', 'corrected')),
                        count(retention_7d), sum(retention_7d = 1)
                 FROM interactions LEFT JOIN json_each(interactions.context_sources) AS source
                 WHERE action != 'shown' GROUP BY 1, 2 ORDER BY 1, 2",
            )
            .map_err(failed)?;
        let rows = statement.query_map([], |row| {
            let count = |i: usize| row.get::<_, Option<i64>>(i).map(|n| n.unwrap_or(0) as usize);
            Ok(SourceMetrics {
                language: row.get(0)?,
                source: row.get(1)?,
                decided: count(2)?,
                taken: count(3)?,
                judged_7d: count(4)?,
                survived_7d: count(5)?,
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Per language, the few-shot pool: code taken with a score, how much of it is excellent
    /// (≥ 90), and the best score.
    pub fn example_pool(&self) -> Result<Vec<(String, usize, usize, f64)>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT coalesce(language, ''), count(*), sum(quality_score >= 90), max(quality_score)
                 FROM interactions WHERE action IN ('accepted', 'partial', 'corrected') AND quality_score IS NOT NULL
                 GROUP BY 1 ORDER BY 1",
            )
            .map_err(failed)?;
        let rows = statement.query_map([], |row| {
            Ok((row.get(0)?, row.get::<_, i64>(1)? as usize, row.get::<_, i64>(2)? as usize, row.get(3)?))
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Every quality score with its language.
    pub fn quality_scores(&self) -> Result<Vec<(String, f64)>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare("SELECT coalesce(language, ''), quality_score FROM interactions WHERE quality_score IS NOT NULL")
            .map_err(failed)?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)));
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Records drift events not recorded before; returns how many were new.
    pub fn record_drift(&mut self, events: &[DriftEvent]) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let failed = |e| classify(&path, e);
        let tx = self.conn.transaction().map_err(failed)?;
        let mut new = 0;
        for e in events {
            new += tx
                .execute(
                    &format!(
                        "INSERT OR IGNORE INTO drift_events (week, language, kind, value, baseline, detected_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, {NOW})"
                    ),
                    params![e.week, e.language, e.kind, e.value, e.baseline],
                )
                .map_err(failed)?;
        }
        tx.commit().map_err(failed)?;
        Ok(new)
    }

    /// Every drift event, oldest week first.
    pub fn drift_events(&self) -> Result<Vec<DriftEvent>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare("SELECT week, language, kind, value, baseline FROM drift_events ORDER BY week, language, kind")
            .map_err(failed)?;
        let rows = statement.query_map([], |row| {
            Ok(DriftEvent {
                week: row.get(0)?,
                language: row.get(1)?,
                kind: row.get(2)?,
                value: row.get(3)?,
                baseline: row.get(4)?,
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }
}

/// One language's week.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeekMetrics {
    pub language: String,
    /// ISO week, `2026-W48`.
    pub week: String,
    /// Suggestions whose fate is known (everything but still on screen).
    pub decided: usize,
    pub accepted: usize,
    pub partial: usize,
    pub corrected: usize,
    pub rejected: usize,
    pub ignored: usize,
    /// Taken suggestions with an error signal: a failed run, a language-server error, a syntax error.
    pub errors: usize,
    pub mean_quality: Option<f64>,
}

impl WeekMetrics {
    pub fn taken(&self) -> usize {
        self.accepted + self.partial + self.corrected
    }
}

/// A drift trigger that fired for a language in a week.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DriftEvent {
    pub week: String,
    pub language: String,
    /// acceptance_drop, error_rise, new_language, emergency, quality_drop.
    pub kind: String,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
}

/// What became of the suggestions whose prompt one context source offered something to.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceMetrics {
    pub language: String,
    /// `snippets`, `own_examples`, `open_files`, `recent_edits`, or `none`.
    pub source: String,
    pub decided: usize,
    pub taken: usize,
    pub judged_7d: usize,
    pub survived_7d: usize,
}
