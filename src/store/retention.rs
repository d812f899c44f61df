//! The `retention_checks` table and the anchors of taken code.

use std::path::{Path, PathBuf};

use rusqlite::params;

use super::{NOW, Store, StoreError, classify};
use crate::syntax::Scope;

/// The checks scheduled for each taken suggestion: label and delay after acceptance in ms.
pub const CHECKS: &[(&str, i64)] = &[
    ("30s", 30_000),
    ("2m", 120_000),
    ("5m", 300_000),
    ("10m", 600_000),
    ("7d", 7 * 86_400_000),
    ("30d", 30 * 86_400_000),
];

/// Where settled code lives: its file, bytes and the named units around it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub path: PathBuf,
    /// The workspace root it belongs to: where moved code is looked for.
    pub root: Option<PathBuf>,
    pub start: usize,
    pub end: usize,
    /// Outermost first; empty at top level or for a language without a grammar.
    pub scopes: Vec<Scope>,
    /// How many normalized tokens the code has, and a hash of them (hex): the code's identity
    /// whatever its layout.
    #[serde(default)]
    pub tokens: usize,
    #[serde(default)]
    pub fingerprint: String,
}

impl Store {
    /// The retention checks due by `now_ms` and not done yet, oldest first.
    pub fn due_checks(&self, now_ms: i64) -> Result<Vec<DueCheck>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT c.interaction_id, c.label, i.file_path, coalesce(i.language, ''), coalesce(i.final_code, ''),
                        i.anchor
                 FROM retention_checks c JOIN interactions i ON i.id = c.interaction_id
                 WHERE c.checked_ms IS NULL AND c.due_ms <= ?1 ORDER BY c.due_ms",
            )
            .map_err(failed)?;
        let rows = statement.query_map([now_ms], |row| {
            let anchor: Option<String> = row.get(5)?;
            Ok(DueCheck {
                interaction_id: row.get(0)?,
                label: row.get(1)?,
                file_path: row.get(2)?,
                language: row.get(3)?,
                final_code: row.get(4)?,
                // A bare region (no document was known when it settled) is no anchor.
                anchor: anchor.and_then(|a| serde_json::from_str(&a).ok()),
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Stores the results of retention checks; the 7 d and 30 d ones set the seed's
    /// `retention_7d` / `retention_30d`.
    pub fn record_checks(&mut self, results: &[CheckResult]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let failed = |e| classify(&path, e);
        let tx = self.conn.transaction().map_err(failed)?;
        for result in results {
            let mut check = tx
                .prepare_cached(
                    "UPDATE retention_checks SET checked_ms = ?3, survival = ?4, found_in = ?5
                     WHERE interaction_id = ?1 AND label = ?2",
                )
                .map_err(failed)?;
            check
                .execute(params![
                    result.interaction_id,
                    result.label,
                    result.checked_ms,
                    result.survival,
                    result.found_in
                ])
                .map_err(failed)?;
            let column = match result.label.as_str() {
                "7d" => "retention_7d",
                "30d" => "retention_30d",
                _ => continue,
            };
            let mut kept = tx
                .prepare_cached(&format!("UPDATE interactions SET {column} = ?2, updated_at = {NOW} WHERE id = ?1"))
                .map_err(failed)?;
            kept.execute(params![result.interaction_id, result.kept]).map_err(failed)?;
        }
        tx.commit().map_err(failed)
    }

    /// The retention checks of one interaction, in schedule order.
    pub fn retention(&self, id: &str) -> Result<Vec<RetentionCheck>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare("SELECT label, survival, found_in FROM retention_checks WHERE interaction_id = ?1 ORDER BY due_ms")
            .map_err(failed)?;
        let rows = statement.query_map([id], |row| {
            Ok(RetentionCheck { label: row.get(0)?, survival: row.get(1)?, found_in: row.get(2)? })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// `from` (a file or directory) was renamed to `to`: the anchors of code still being checked
    /// follow it. Returns how many moved.
    pub fn renamed(&mut self, from: &Path, to: &Path) -> Result<usize, StoreError> {
        let (from, to) = (from.to_string_lossy(), to.to_string_lossy());
        self.conn
            .execute(
                "UPDATE interactions
                 SET anchor = json_set(anchor, '$.path', ?2 || substr(json_extract(anchor, '$.path'), length(?1) + 1))
                 WHERE id IN (SELECT interaction_id FROM retention_checks WHERE checked_ms IS NULL)
                   AND json_valid(anchor)
                   AND (json_extract(anchor, '$.path') = ?1
                        OR substr(json_extract(anchor, '$.path'), 1, length(?1) + 1) = ?1 || '/')",
                params![from, to],
            )
            .map_err(|e| classify(&self.path, e))
    }

    /// Per language and retention check: mean survival and how many were judged.
    pub fn retention_curve(&self) -> Result<Vec<(String, String, f64, usize)>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT coalesce(i.language, ''), c.label, avg(c.survival), count(c.survival)
                 FROM retention_checks c JOIN interactions i ON i.id = c.interaction_id
                 WHERE c.survival IS NOT NULL GROUP BY 1, 2 ORDER BY 1",
            )
            .map_err(failed)?;
        let rows =
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get::<_, i64>(3)? as usize)));
        rows.and_then(Iterator::collect).map_err(failed)
    }
}

/// A retention check that is due, with what it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct DueCheck {
    pub interaction_id: String,
    pub label: String,
    /// The document URI.
    pub file_path: String,
    pub language: String,
    pub final_code: String,
    pub anchor: Option<Anchor>,
}

/// A scheduled retention check as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionCheck {
    pub label: String,
    /// `None`: not checked yet, or the file could not be judged.
    pub survival: Option<f64>,
    pub found_in: Option<String>,
}

/// The result of one retention check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    pub interaction_id: String,
    pub label: String,
    pub checked_ms: i64,
    /// `None` when the file could not be judged.
    pub survival: Option<f64>,
    pub found_in: Option<String>,
    pub kept: Option<bool>,
}
