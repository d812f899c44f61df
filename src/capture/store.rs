//! The interaction store: `MARUNOCHI_HOME/marunochi.db`, SQLite in WAL mode, created 0600, schema
//! from `migrations/*.sql` applied in order (`PRAGMA user_version` counts them). A file that is not
//! a database, or one from a newer marunochi, is reported and left exactly as it is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::quality::StaticAnalysis;
use crate::retention::Anchor;
use rusqlite::{Connection, OptionalExtension, params};

/// The migrations, in order. Appending is the only allowed change.
const MIGRATIONS: [&str; 8] = [
    include_str!("../../migrations/0001_interactions.sql"),
    include_str!("../../migrations/0002_diagnostics.sql"),
    include_str!("../../migrations/0003_runs.sql"),
    include_str!("../../migrations/0004_test_results.sql"),
    include_str!("../../migrations/0005_retention.sql"),
    include_str!("../../migrations/0006_drift.sql"),
    include_str!("../../migrations/0007_adapters.sql"),
    include_str!("../../migrations/0008_rollout.sql"),
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {reason}; the file is left untouched (move it away to start a new store)")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{path} was written by a newer marunochi (schema {found}, this one knows {supported}); the file is left \
         untouched: upgrade marunochi"
    )]
    NewerSchema { path: PathBuf, found: i64, supported: i64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
}

/// A suggestion as first recorded, when it is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub shown_at_ms: i64,
    pub session_id: String,
    pub user_id: String,
    pub file_path: String,
    pub language: String,
    pub line: u32,
    pub character: u32,
    pub suggestion: String,
    pub suggestion_type: &'static str,
    pub model_version: String,
    pub confidence: f64,
    pub prompt_prefix: String,
    pub prompt_suffix: String,
    /// Paths of the other documents offered as context.
    pub context_files: Vec<String>,
    /// JSON array of `{path, before, after}`.
    pub recent_edits: String,
    pub document_version: i32,
}

/// The fields of a stored interaction that the capture stage itself reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub id: String,
    pub action: String,
    pub suggestion: String,
    pub model_version: String,
    pub language: String,
    pub time_to_action: Option<i64>,
    pub user_rating: Option<i64>,
    pub user_comment: Option<String>,
    pub prompt_prefix: String,
    pub final_code: Option<String>,
    pub diff: Option<String>,
    pub alternatives: Option<String>,
    pub diagnostics: Option<String>,
    pub user_id: Option<String>,
    pub shown_ms: Option<i64>,
    pub anchor: Option<String>,
}

pub struct Store {
    path: PathBuf,
    conn: Connection,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let sqlite = |source| StoreError::Sqlite { path: path.to_owned(), source };
        if let Some(dir) = path.parent() {
            crate::home::create_private_dir(dir).map_err(|source| StoreError::Io { path: dir.into(), source })?;
        }
        // Created private before SQLite opens it; an existing file keeps its bytes.
        crate::home::open_private_append(path).map_err(|source| StoreError::Io { path: path.into(), source })?;
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        let version: i64 =
            conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|e| classify(path, e))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::NewerSchema { path: path.to_owned(), found: version, supported });
        }
        conn.pragma_update(None, "journal_mode", "WAL").map_err(|e| classify(path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite)?;
        let mut store = Store { path: path.to_owned(), conn };
        store.migrate(version)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.conn.transaction().map_err(|e| classify(&self.path, e))?;
            tx.execute_batch(sql).map_err(|e| classify(&self.path, e))?;
            tx.pragma_update(None, "user_version", index as i64 + 1).map_err(|e| classify(&self.path, e))?;
            tx.commit().map_err(|e| classify(&self.path, e))?;
        }
        Ok(())
    }

    /// Runs `f` in one transaction (the writer batches whatever has queued up).
    pub fn batch(&mut self, f: impl FnOnce(&Batch) -> Result<(), rusqlite::Error>) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| classify(&self.path, e))?;
        f(&Batch { tx: &tx }).map_err(|e| classify(&self.path, e))?;
        tx.commit().map_err(|e| classify(&self.path, e))
    }

    pub fn interaction(&self, id: &str) -> Result<Option<Interaction>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, action, suggestion, model_version, language, time_to_action, user_rating, user_comment,
                        prompt_prefix, final_code, diff, alternatives, diagnostics, user_id, shown_ms, anchor
                 FROM interactions WHERE id = ?1",
                [id],
                |row| {
                    Ok(Interaction {
                        id: row.get(0)?,
                        action: row.get(1)?,
                        suggestion: row.get(2)?,
                        model_version: row.get(3)?,
                        language: row.get(4)?,
                        time_to_action: row.get(5)?,
                        user_rating: row.get(6)?,
                        user_comment: row.get(7)?,
                        prompt_prefix: row.get(8)?,
                        final_code: row.get(9)?,
                        diff: row.get(10)?,
                        alternatives: row.get(11)?,
                        diagnostics: row.get(12)?,
                        user_id: row.get(13)?,
                        shown_ms: row.get(14)?,
                        anchor: row.get(15)?,
                    })
                },
            )
            .optional()
            .map_err(|e| classify(&self.path, e))
    }

    pub fn count(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT count(*) FROM interactions", [], |row| row.get(0))
            .map_err(|e| classify(&self.path, e))
    }

    /// Every interaction as one JSON object per line, oldest first; returns how many.
    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<usize, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self.conn.prepare("SELECT * FROM interactions ORDER BY timestamp, id").map_err(failed)?;
        let columns: Vec<String> = statement.column_names().map(str::to_owned).collect();
        let mut rows = statement.query([]).map_err(failed)?;
        let mut count = 0;
        while let Some(row) = rows.next().map_err(failed)? {
            let mut object = serde_json::Map::new();
            for (index, name) in columns.iter().enumerate() {
                use rusqlite::types::ValueRef;
                let value = match row.get_ref(index).map_err(failed)? {
                    ValueRef::Null => serde_json::Value::Null,
                    ValueRef::Integer(i) => i.into(),
                    ValueRef::Real(f) => f.into(),
                    ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned().into(),
                };
                object.insert(name.clone(), value);
            }
            writeln!(out, "{}", serde_json::Value::Object(object))
                .map_err(|source| StoreError::Io { path: "the export output".into(), source })?;
            count += 1;
        }
        Ok(count)
    }

    /// Deletes the interactions `what` selects, so that they are gone from the disk too (secure
    /// delete, WAL checkpointed and truncated); returns how many.
    pub fn forget(&self, what: &Forget) -> Result<usize, StoreError> {
        let failed = |e| classify(&self.path, e);
        self.conn.pragma_update(None, "secure_delete", true).map_err(failed)?;
        let deleted = match what {
            Forget::All => self.conn.execute("DELETE FROM interactions", []),
            Forget::File(uri) => self.conn.execute(
                "DELETE FROM interactions WHERE file_path = ?1 OR file_path LIKE ?2 ESCAPE '\\'",
                params![uri, below(uri)],
            ),
            Forget::Before(date) => self.conn.execute("DELETE FROM interactions WHERE timestamp < ?1", [date]),
        }
        .map_err(failed)?;
        // The rollout's shadow samples hold the same documents' code.
        match what {
            Forget::All => self.conn.execute("DELETE FROM shadow_samples", []),
            Forget::File(uri) => self.conn.execute(
                "DELETE FROM shadow_samples WHERE document = ?1 OR document LIKE ?2 ESCAPE '\\'",
                params![uri, below(uri)],
            ),
            Forget::Before(date) => self.conn.execute("DELETE FROM shadow_samples WHERE at < ?1", [date]),
        }
        .map_err(failed)?;
        self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(failed)?;
        Ok(deleted)
    }

    /// Records a finished `marunochi run` and marks the interactions it judges: those accepted
    /// (wholly, partly or corrected) in files under `run.directory` since the previous run there.
    /// Returns how many were marked.
    pub fn record_run(&mut self, run: &Run) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let failed = |e| classify(&path, e);
        let tx = self.conn.transaction().map_err(failed)?;
        let since: Option<String> = tx
            .query_row("SELECT max(recorded_at) FROM runs WHERE directory = ?1", [&run.directory], |row| row.get(0))
            .map_err(failed)?;
        // One timestamp for the whole record: rows judged now carry it, so the next run skips them
        // unless they change again.
        let now: String = tx.query_row(&format!("SELECT {NOW}"), [], |row| row.get(0)).map_err(failed)?;
        let directory = below(&format!("file://{}", run.directory));
        let success = run.exit_code == Some(0);
        let error = (!success).then_some(run.summary.as_str());
        let tests = run.tests.as_ref().map(|t| serde_json::to_string(t).unwrap_or_default());
        let marked = tx
            .execute(
                "UPDATE interactions SET executed = 1, execution_success = ?1, error_message = ?2, updated_at = ?5,
                    test_results = coalesce(?6, test_results)
                 WHERE action IN ('accepted', 'partial', 'corrected') AND file_path LIKE ?3 ESCAPE '\\'
                   AND updated_at > coalesce(?4, '')",
                params![success, error, directory, since, now, tests],
            )
            .map_err(failed)?;
        tx.execute(
            "INSERT INTO runs (started_at, finished_at, recorded_at, command, directory, exit_code, summary,
                               interactions, test_results)
             VALUES (strftime('%Y-%m-%dT%H:%M:%fZ', ?1 / 1000.0, 'unixepoch'),
                     strftime('%Y-%m-%dT%H:%M:%fZ', ?2 / 1000.0, 'unixepoch'), ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                run.started_at_ms,
                run.finished_at_ms,
                now,
                run.command,
                run.directory,
                run.exit_code,
                run.summary,
                marked as i64,
                tests
            ],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(marked)
    }

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

    /// The decided interactions changed since they were last scored, with the score's inputs.
    pub fn unscored(&self) -> Result<Vec<(String, crate::quality::Inputs)>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, action, executed, execution_success, test_results, static_analysis, diagnostics,
                        retention_7d, retention_30d, user_rating
                 FROM interactions WHERE action != 'shown' AND scored_at IS NOT updated_at",
            )
            .map_err(failed)?;
        let rows = statement.query_map([], |row| {
            let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
                Ok(row.get::<_, Option<String>>(i)?.and_then(|text| serde_json::from_str(&text).ok()))
            };
            let executed: Option<bool> = row.get(2)?;
            let tests = json(4)?.map(|t| {
                let count = |key: &str| t[key].as_u64().unwrap_or(0) as usize;
                crate::quality::TestCounts {
                    tests: count("tests"),
                    failures: count("failures"),
                    errors: count("errors"),
                    skipped: count("skipped"),
                }
            });
            let analysis = json(5)?;
            let server_errors = json(6)?.and_then(|d| d.as_array().cloned()).unwrap_or_default();
            Ok((
                row.get(0)?,
                crate::quality::Inputs {
                    action: row.get(1)?,
                    execution_success: if executed == Some(true) { row.get(3)? } else { None },
                    tests,
                    syntax_errors: analysis.as_ref().and_then(|a| a["syntax_errors"].as_u64()).map(|n| n as usize),
                    server_errors: server_errors.iter().filter(|d| d["severity"] == 1).count(),
                    linter_errors: analysis.as_ref().and_then(|a| a.pointer("/lint/errors")?.as_u64()).unwrap_or(0)
                        as usize,
                    complexity: analysis.as_ref().and_then(|a| a["complexity"].as_u64()).map(|n| n as usize),
                    retention_7d: row.get(7)?,
                    retention_30d: row.get(8)?,
                    user_rating: row.get(9)?,
                },
            ))
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Stores quality scores; a row scored is not scored again until it changes.
    pub fn set_scores(&mut self, scores: &[(String, crate::quality::Score)]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let failed = |e| classify(&path, e);
        let tx = self.conn.transaction().map_err(failed)?;
        for (id, score) in scores {
            let mut update = tx
                .prepare_cached(
                    "UPDATE interactions SET quality_score = ?2, quality_dimensions = ?3, scored_at = updated_at
                     WHERE id = ?1",
                )
                .map_err(failed)?;
            update
                .execute(params![id, score.total, serde_json::to_string(score).unwrap_or_default()])
                .map_err(failed)?;
        }
        tx.commit().map_err(failed)
    }

    /// Every decided suggestion with what curation needs, oldest first.
    pub fn curation_rows(&self) -> Result<Vec<CurationRow>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, timestamp, coalesce(language, ''), action, coalesce(suggestion, ''), final_code,
                        coalesce(prompt_prefix, ''), coalesce(prompt_suffix, ''), quality_score,
                        executed = 1 AND execution_success = 0, user_rating, user_comment,
                        json_extract(alternatives, '$.typed_instead'), json_extract(static_analysis, '$.complexity')
                 FROM interactions WHERE action NOT IN ('shown', 'ignored') ORDER BY timestamp, id",
            )
            .map_err(failed)?;
        let rows = statement.query_map([], |row| {
            Ok(CurationRow {
                id: row.get(0)?,
                timestamp: row.get(1)?,
                language: row.get(2)?,
                action: row.get(3)?,
                suggestion: row.get(4)?,
                final_code: row.get(5)?,
                prefix: row.get(6)?,
                suffix: row.get(7)?,
                quality: row.get(8)?,
                execution_failed: row.get::<_, Option<bool>>(9)?.unwrap_or(false),
                rating: row.get(10)?,
                comment: row.get(11)?,
                typed_instead: row.get(12)?,
                complexity: row.get::<_, Option<i64>>(13)?.map(|c| c as usize),
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Every (language, document URI) the user got suggestions in.
    pub fn worked_files(&self) -> Result<Vec<(String, String)>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT DISTINCT coalesce(language, ''), file_path FROM interactions WHERE file_path IS NOT NULL
                 ORDER BY 1, 2",
            )
            .map_err(failed)?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)));
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

    /// The registry's rows for `language` (every language with `None`), oldest version first.
    pub fn adapter_versions(&self, language: Option<&str>) -> Result<Vec<AdapterVersion>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT language, version, state, base_fingerprint, created_at, updated_at, gate_passed, gate_report
                 FROM adapter_versions WHERE ?1 IS NULL OR language = ?1
                 ORDER BY language, CAST(substr(version, 2) AS INTEGER)",
            )
            .map_err(failed)?;
        let rows = statement.query_map([language], |row| {
            Ok(AdapterVersion {
                language: row.get(0)?,
                version: row.get(1)?,
                state: row.get(2)?,
                base_fingerprint: row.get(3)?,
                created_at: row.get(4)?,
                updated_at: row.get(5)?,
                gate_passed: row.get(6)?,
                gate_report: row.get(7)?,
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Applies registry state changes in one transaction, each recorded as an event with its
    /// reason: `(language, version, new state, base fingerprint for a new row, reason)`.
    pub fn set_adapter_states(&mut self, changes: &[AdapterChange]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let failed = |e| classify(&path, e);
        let tx = self.conn.transaction().map_err(failed)?;
        for c in changes {
            let from: Option<String> = tx
                .query_row(
                    "SELECT state FROM adapter_versions WHERE language = ?1 AND version = ?2",
                    params![c.language, c.version],
                    |row| row.get(0),
                )
                .optional()
                .map_err(failed)?;
            tx.execute(
                &format!(
                    "INSERT INTO adapter_versions (language, version, state, base_fingerprint, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, {NOW}, {NOW})
                     ON CONFLICT (language, version) DO UPDATE SET state = ?3, updated_at = {NOW}"
                ),
                params![c.language, c.version, c.state, c.base_fingerprint],
            )
            .map_err(failed)?;
            tx.execute(
                &format!(
                    "INSERT INTO adapter_events (at, language, version, from_state, to_state, reason)
                     VALUES ({NOW}, ?1, ?2, ?3, ?4, ?5)"
                ),
                params![c.language, c.version, from, c.state, c.reason],
            )
            .map_err(failed)?;
        }
        tx.commit().map_err(failed)
    }

    /// Records the eval gate's verdict on a version (registering it as a candidate if new).
    pub fn set_adapter_gate(
        &mut self,
        language: &str,
        version: &str,
        passed: bool,
        report: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO adapter_versions (language, version, state, gate_passed, gate_report, created_at, updated_at)
                     VALUES (?1, ?2, 'candidate', ?3, ?4, {NOW}, {NOW})
                     ON CONFLICT (language, version) DO UPDATE SET gate_passed = ?3, gate_report = ?4, updated_at = {NOW}"
                ),
                params![language, version, passed, report],
            )
            .map(|_| ())
            .map_err(|e| classify(&self.path, e))
    }

    /// The registry's history for `language`: (time, version, from, to, reason), oldest first.
    pub fn adapter_events(&self, language: &str) -> Result<Vec<AdapterEvent>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT at, version, from_state, to_state, reason FROM adapter_events WHERE language = ?1
                 ORDER BY rowid",
            )
            .map_err(failed)?;
        let rows = statement.query_map([language], |row| {
            Ok(AdapterEvent {
                at: row.get(0)?,
                version: row.get(1)?,
                from: row.get(2)?,
                to: row.get(3)?,
                reason: row.get(4)?,
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Keeps a shadow generation until the suggestion shown for the same request is decided.
    pub fn record_shadow(&mut self, s: &ShadowSample) -> Result<(), StoreError> {
        self.conn
            .execute(
                &format!(
                    "INSERT INTO shadow_samples (at, language, version, document, request_hash, served_model_version,
                        served_text, shadow_text)
                     VALUES ({NOW}, ?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    s.language,
                    s.version,
                    s.document,
                    s.request_hash,
                    s.served_model_version,
                    s.served_text,
                    s.shadow_text
                ],
            )
            .map(|_| ())
            .map_err(|e| classify(&self.path, e))
    }

    /// Shadow samples not judged yet, each with the decided suggestions that may be the one shown
    /// for its request: same document and served model, shown at most two minutes before.
    pub fn pending_shadows(&self) -> Result<Vec<PendingShadow>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT s.rowid, s.at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-1 day'), s.request_hash, s.served_text, s.shadow_text, i.id, i.action,
                        CASE WHEN i.action = 'rejected' THEN json_extract(i.alternatives, '$.typed_instead')
                             WHEN i.action IN ('accepted', 'partial', 'corrected') THEN coalesce(i.final_code, i.suggestion)
                        END,
                        coalesce(i.prompt_prefix, ''), coalesce(i.prompt_suffix, '')
                 FROM shadow_samples s LEFT JOIN interactions i
                   ON i.file_path = s.document AND i.model_version = s.served_model_version AND i.action != 'shown'
                  AND i.timestamp BETWEEN strftime('%Y-%m-%dT%H:%M:%fZ', s.at, '-120 seconds')
                                      AND strftime('%Y-%m-%dT%H:%M:%fZ', s.at, '+5 seconds')
                 WHERE s.judged_at IS NULL ORDER BY s.rowid",
            )
            .map_err(failed)?;
        let mut rows = statement.query([]).map_err(failed)?;
        let mut pending: Vec<PendingShadow> = Vec::new();
        while let Some(row) = rows.next().map_err(failed)? {
            let rowid: i64 = row.get(0).map_err(failed)?;
            if pending.last().is_none_or(|p| p.rowid != rowid) {
                pending.push(PendingShadow {
                    rowid,
                    expired: row.get(1).map_err(failed)?,
                    request_hash: row.get(2).map_err(failed)?,
                    served_text: row.get(3).map_err(failed)?,
                    shadow_text: row.get(4).map_err(failed)?,
                    candidates: Vec::new(),
                });
            }
            if let Some(id) = row.get::<_, Option<String>>(5).map_err(failed)? {
                let candidate = ShownFor {
                    interaction_id: id,
                    action: row.get(6).map_err(failed)?,
                    kept: row.get(7).map_err(failed)?,
                    prompt_prefix: row.get(8).map_err(failed)?,
                    prompt_suffix: row.get(9).map_err(failed)?,
                };
                pending.last_mut().expect("pushed above").candidates.push(candidate);
            }
        }
        Ok(pending)
    }

    /// Closes a shadow sample: matched to `interaction_id` with both similarities to the kept
    /// code, or given up (all `None`).
    pub fn judge_shadow(
        &mut self,
        rowid: i64,
        interaction_id: Option<&str>,
        similarities: Option<(f64, f64)>,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                &format!(
                    "UPDATE shadow_samples SET interaction_id = ?2, served_similarity = ?3, shadow_similarity = ?4,
                        judged_at = {NOW} WHERE rowid = ?1"
                ),
                params![rowid, interaction_id, similarities.map(|s| s.0), similarities.map(|s| s.1)],
            )
            .map(|_| ())
            .map_err(|e| classify(&self.path, e))
    }

    /// The judged shadow samples of one version taken since `since` (its current shadow stage):
    /// (served similarity, shadow similarity).
    pub fn shadow_results(&self, language: &str, version: &str, since: &str) -> Result<Vec<(f64, f64)>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT served_similarity, shadow_similarity FROM shadow_samples
                 WHERE language = ?1 AND version = ?2 AND at >= ?3 AND shadow_similarity IS NOT NULL ORDER BY rowid",
            )
            .map_err(failed)?;
        let rows = statement.query_map(params![language, version, since], |row| Ok((row.get(0)?, row.get(1)?)));
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// What became of `language`'s suggestions shown since `since` (RFC 3339), per model version:
    /// decided, taken, taken with an error signal, and retention (taken code whose latest judged
    /// check found at least `survival_threshold` of it).
    pub fn version_outcomes(
        &self,
        language: &str,
        since: &str,
        survival_threshold: f64,
    ) -> Result<Vec<VersionOutcome>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT coalesce(model_version, ''), count(*), sum(action IN ('accepted', 'partial', 'corrected')),
                        count(CASE WHEN {TAKEN_WITH_ERRORS} THEN 1 END), count(survival), sum(survival >= ?3)
                 FROM (SELECT *, (SELECT c.survival FROM retention_checks c
                                  WHERE c.interaction_id = interactions.id AND c.survival IS NOT NULL
                                  ORDER BY c.due_ms DESC LIMIT 1) AS survival
                       FROM interactions WHERE language = ?1 AND timestamp >= ?2 AND action != 'shown')
                 GROUP BY 1 ORDER BY 1"
            ))
            .map_err(failed)?;
        let rows = statement.query_map(params![language, since, survival_threshold], |row| {
            let count = |i: usize| row.get::<_, Option<i64>>(i).map(|n| n.unwrap_or(0) as usize);
            Ok(VersionOutcome {
                model_version: row.get(0)?,
                decided: count(1)?,
                taken: count(2)?,
                errors: count(3)?,
                retention_judged: count(4)?,
                retained: count(5)?,
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Today's suggestions (local calendar day) per language: (shown, decided, taken).
    pub fn today(&self) -> Result<Vec<(String, usize, usize, usize)>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT coalesce(language, ''), count(*), sum(action != 'shown'),
                        sum(action IN ('accepted', 'partial', 'corrected'))
                 FROM interactions WHERE timestamp >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', 'localtime', 'start of day', 'utc')
                 GROUP BY 1 ORDER BY 1",
            )
            .map_err(failed)?;
        let rows = statement.query_map([], |row| {
            let count = |i: usize| row.get::<_, Option<i64>>(i).map(|n| n.unwrap_or(0) as usize);
            Ok((row.get(0)?, count(1)?, count(2)?, count(3)?))
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// `PRAGMA integrity_check`: `ok`, or what is wrong.
    pub fn integrity(&self) -> Result<String, StoreError> {
        self.conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).map_err(|e| classify(&self.path, e))
    }
}

/// A finished test or build run (`marunochi run -- <cmd>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub command: String,
    /// The absolute directory it ran in: interactions in files below it are judged by it.
    pub directory: String,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    /// `None` when it was killed by a signal.
    pub exit_code: Option<i32>,
    /// The last lines of its output (redacted).
    pub summary: String,
    /// Test counts, when the run left a report that says them.
    pub tests: Option<TestResults>,
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

/// A decided suggestion as curation sees it (text already redacted when it was stored).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CurationRow {
    pub id: String,
    /// RFC 3339, when it was shown.
    pub timestamp: String,
    pub language: String,
    pub action: String,
    pub suggestion: String,
    pub final_code: Option<String>,
    pub prefix: String,
    pub suffix: String,
    pub quality: Option<f64>,
    pub execution_failed: bool,
    pub rating: Option<i64>,
    pub comment: Option<String>,
    /// Rejected: what the user typed instead.
    pub typed_instead: Option<String>,
    /// Cyclomatic complexity of the function around the code, when known.
    pub complexity: Option<usize>,
}

/// A shadow generation (rollout): what the candidate would have suggested for a request the
/// served adapter answered.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSample {
    pub language: String,
    pub version: String,
    pub document: String,
    /// sha256 of the request's prefix, NUL, suffix (the shown row's prompt_prefix/suffix).
    pub request_hash: String,
    pub served_model_version: String,
    pub served_text: String,
    pub shadow_text: String,
}

/// A shadow sample waiting for its suggestion's fate.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingShadow {
    pub rowid: i64,
    /// Older than a day: its suggestion will not be found any more.
    pub expired: bool,
    pub request_hash: String,
    pub served_text: String,
    pub shadow_text: String,
    pub candidates: Vec<ShownFor>,
}

/// A decided suggestion that may be the one shown for a shadow sample's request.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownFor {
    pub interaction_id: String,
    pub action: String,
    /// The code the user kept: the final code when taken, what they typed instead when rejected.
    pub kept: Option<String>,
    pub prompt_prefix: String,
    pub prompt_suffix: String,
}

/// One model version's record over a period (rollout decisions).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VersionOutcome {
    pub model_version: String,
    pub decided: usize,
    pub taken: usize,
    pub errors: usize,
    pub retention_judged: usize,
    pub retained: usize,
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

/// One adapter version in the registry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdapterVersion {
    pub language: String,
    pub version: String,
    pub state: String,
    pub base_fingerprint: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub gate_passed: Option<bool>,
    pub gate_report: Option<String>,
}

/// A registry state change to record.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterChange {
    pub language: String,
    pub version: String,
    pub state: String,
    pub base_fingerprint: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdapterEvent {
    pub at: String,
    pub version: String,
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
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

/// What a test report says: counts, and which tests failed.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct TestResults {
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
    pub failed: Vec<String>,
}

/// Which interactions `forget` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    All,
    /// A document URI (`file:///…`), or a directory URI: everything below it.
    File(String),
    /// Shown before this RFC 3339 time or date (`2026-11-01`, `2026-11-01T12:00:00Z`).
    Before(String),
}

/// The writes of one transaction.
pub struct Batch<'a> {
    tx: &'a rusqlite::Transaction<'a>,
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// A taken suggestion with an error signal: a failed run, a language-server error, a syntax or
/// lint error (drift's error rate and the rollout's).
const TAKEN_WITH_ERRORS: &str = "action IN ('accepted', 'partial', 'corrected')
    AND (execution_success = 0 OR diagnostics LIKE '%\"severity\":1%'
         OR coalesce(json_extract(static_analysis, '$.syntax_errors'), 0) > 0
         OR coalesce(json_extract(static_analysis, '$.lint.errors'), 0) > 0)";

impl Batch<'_> {
    pub fn shown(&self, s: &Shown) -> Result<(), rusqlite::Error> {
        let cursor = serde_json::json!({"line": s.line, "character": s.character}).to_string();
        self.tx.execute(
            &format!(
                "INSERT OR IGNORE INTO interactions (id, timestamp, session_id, file_path, language, cursor_position,
                    suggestion, suggestion_type, model_version, confidence_score, action, prompt_prefix, prompt_suffix,
                    document_version, context_files, recent_edits, user_id, created_at, updated_at)
                 VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', ?2 / 1000.0, 'unixepoch'), ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                    'shown', ?11, ?12, ?13, ?14, ?15, ?16, {NOW}, {NOW})"
            ),
            params![
                s.id,
                s.shown_at_ms,
                s.session_id,
                s.file_path,
                s.language,
                cursor,
                s.suggestion,
                s.suggestion_type,
                s.model_version,
                s.confidence,
                s.prompt_prefix,
                s.prompt_suffix,
                s.document_version,
                serde_json::to_string(&s.context_files).unwrap_or_default(),
                s.recent_edits,
                s.user_id
            ],
        )?;
        Ok(())
    }

    /// The editor reported acceptance (`marunochi.accept`) at `at_ms`.
    pub fn accepted(&self, id: &str, at_ms: i64) -> Result<(), rusqlite::Error> {
        self.tx.execute(
            &format!(
                "UPDATE interactions SET action = 'accepted',
                    time_to_action = ?2 - CAST(round((julianday(timestamp) - 2440587.5) * 86400000) AS INTEGER),
                    updated_at = {NOW}
                 WHERE id = ?1"
            ),
            params![id, at_ms],
        )?;
        Ok(())
    }

    /// What the classifier decided (see `classify.rs`); texts already redacted.
    /// What became of a suggestion. Taken code comes with its `anchor` and static `analysis`
    /// (when its document was known) and gets its retention checks scheduled.
    pub fn outcome(
        &self,
        outcome: &super::classify::Outcome,
        anchor: Option<&Anchor>,
        analysis: Option<&StaticAnalysis>,
    ) -> Result<(), rusqlite::Error> {
        let alternatives = outcome.typed_instead.as_ref().map(|t| serde_json::json!({"typed_instead": t}).to_string());
        let diagnostics = (!outcome.diagnostics.is_empty()).then(|| {
            let list: Vec<serde_json::Value> = outcome
                .diagnostics
                .iter()
                .map(|d| serde_json::json!({"severity": d.severity, "message": d.message}))
                .collect();
            serde_json::Value::Array(list).to_string()
        });
        // Where the code was when it settled; retention finds it again from there.
        let region = match anchor {
            Some(anchor) => serde_json::to_string(anchor).ok(),
            None => outcome.region.as_ref().map(|r| serde_json::json!({"start": r.start, "end": r.end}).to_string()),
        };
        let analysis = analysis.and_then(|a| serde_json::to_string(a).ok());
        self.tx.execute(
            &format!(
                "UPDATE interactions SET action = ?2, final_code = coalesce(?3, final_code), diff = ?4,
                    time_to_action = coalesce(time_to_action, ?5), alternatives = coalesce(?6, alternatives),
                    diagnostics = coalesce(?7, diagnostics), shown_ms = coalesce(?8, shown_ms),
                    anchor = coalesce(?9, anchor), static_analysis = coalesce(?10, static_analysis),
                    updated_at = {NOW}
                 WHERE id = ?1"
            ),
            params![
                outcome.id,
                outcome.action.as_str(),
                outcome.final_code,
                outcome.diff,
                outcome.time_to_action_ms,
                alternatives,
                diagnostics,
                outcome.shown_ms,
                region,
                analysis
            ],
        )?;
        if outcome.region.is_some() {
            for (label, delay_ms) in crate::retention::CHECKS {
                self.tx.execute(
                    "INSERT OR IGNORE INTO retention_checks (interaction_id, label, due_ms)
                     SELECT id, ?2, CAST(unixepoch(timestamp, 'subsec') * 1000 AS INTEGER)
                                    + coalesce(time_to_action, 0) + ?3
                     FROM interactions WHERE id = ?1",
                    params![outcome.id, label, delay_ms],
                )?;
            }
        }
        Ok(())
    }

    pub fn feedback(&self, id: &str, rating: i64, comment: Option<&str>) -> Result<(), rusqlite::Error> {
        self.tx.execute(
            &format!("UPDATE interactions SET user_rating = ?2, user_comment = ?3, updated_at = {NOW} WHERE id = ?1"),
            params![id, rating, comment],
        )?;
        Ok(())
    }
}

/// A `LIKE` pattern (backslash as the escape) for every URI below the directory `uri`.
fn below(uri: &str) -> String {
    format!("{}/%", uri.trim_end_matches('/').replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

/// SQLite's "not a database" and "malformed" mean the file is damaged, not that we failed.
fn classify(path: &Path, error: rusqlite::Error) -> StoreError {
    use rusqlite::ffi::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            StoreError::Corrupt { path: path.to_owned(), reason: error.to_string() }
        }
        _ => StoreError::Sqlite { path: path.to_owned(), source: error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn shown(id: &str) -> Shown {
        Shown {
            id: id.into(),
            shown_at_ms: 1_764_000_000_000,
            session_id: "s".into(),
            user_id: "u".into(),
            file_path: "file:///p/a.py".into(),
            language: "python".into(),
            line: 3,
            character: 14,
            suggestion: "onacci(n - 1)".into(),
            suggestion_type: "inline",
            model_version: "m".into(),
            confidence: -0.2,
            prompt_prefix: "def f():\n    return fib".into(),
            prompt_suffix: String::new(),
            context_files: vec!["b.py".into()],
            recent_edits: "[]".into(),
            document_version: 4,
        }
    }

    #[test]
    fn a_suggestion_is_shown_accepted_and_rated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marunochi.db");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        store.batch(|b| b.shown(&shown("a"))).unwrap();
        store.batch(|b| b.accepted("a", 1_764_000_001_250)).unwrap();
        store.batch(|b| b.feedback("a", 1, Some("nice"))).unwrap();
        let row = store.interaction("a").unwrap().unwrap();
        assert_eq!(row.action, "accepted");
        assert_eq!(row.time_to_action, Some(1250));
        assert_eq!((row.user_rating, row.user_comment.as_deref()), (Some(1), Some("nice")));
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.count().unwrap(), 1, "reopening migrates nothing twice and keeps the rows");
        assert_eq!(store.integrity().unwrap(), "ok");
    }

    #[test]
    fn damaged_and_newer_files_are_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.db");
        let bytes = b"this is not a database at all, but it is somebody's file".repeat(100);
        std::fs::write(&garbage, &bytes).unwrap();
        let error = Store::open(&garbage).err().unwrap();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("garbage.db") && error.to_string().contains("untouched"), "{error}");
        assert_eq!(std::fs::read(&garbage).unwrap(), bytes);

        let newer = dir.path().join("newer.db");
        let conn = Connection::open(&newer).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let before = std::fs::read(&newer).unwrap();
        let error = Store::open(&newer).err().unwrap();
        assert!(matches!(error, StoreError::NewerSchema { found: 99, .. }), "{error}");
        assert_eq!(std::fs::read(&newer).unwrap(), before);
    }
}
