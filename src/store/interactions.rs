//! The `interactions` table: a suggestion shown, what became of it, and what later stages read back.

use rusqlite::{OptionalExtension, params};

use super::{Anchor, CHECKS, NOW, Store, StoreError, classify};
use crate::redact::redact;

text_enum! {
    /// What became of a suggestion (the `action` column). `Shown` until the classifier decides.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    Action, "action" {
        #[default]
        Shown = "shown",
        Accepted = "accepted",
        Partial = "partial",
        Corrected = "corrected",
        Rejected = "rejected",
        Ignored = "ignored",
    }
}

impl Action {
    /// The user kept the code, whole, in part or corrected.
    pub fn taken(self) -> bool {
        matches!(self, Action::Accepted | Action::Partial | Action::Corrected)
    }
}

/// What the classifier decided about one suggestion, as `Batch::outcome` writes it (redacting
/// its texts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decided<'a> {
    pub id: &'a str,
    /// The document's URI: its name picks the redaction rules.
    pub document: &'a str,
    pub action: Action,
    pub time_to_action_ms: Option<i64>,
    pub final_code: Option<&'a str>,
    pub diff: Option<&'a str>,
    pub typed_instead: Option<&'a str>,
    /// (LSP severity, message) of the language server's diagnostics inside taken code.
    pub diagnostics: Vec<(u8, &'a str)>,
    pub shown_ms: Option<i64>,
    /// Taken: the bytes of the document holding the final code when it settled.
    pub region: Option<std::ops::Range<usize>>,
    /// Where the taken code lives (when its document was known).
    pub anchor: Option<&'a Anchor>,
    /// The static analysis of taken code, as the JSON the quality stage reads back.
    pub analysis: Option<String>,
}

/// What the quality score is computed from (one stored interaction).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inputs {
    pub action: Action,
    /// `None`: never executed as far as we know.
    pub execution_success: Option<bool>,
    pub tests: Option<TestCounts>,
    /// Syntax errors (tree-sitter) in the final code; `None` without a grammar for its language.
    pub syntax_errors: Option<usize>,
    /// The language server's errors (severity 1) inside the final code when it settled.
    pub server_errors: usize,
    /// An external linter's findings in the final code (ruff), when one ran.
    pub linter_errors: usize,
    /// Cyclomatic complexity of the function around the code; `None` without a grammar.
    pub complexity: Option<usize>,
    pub retention_7d: Option<bool>,
    pub retention_30d: Option<bool>,
    /// Explicit feedback: −1, 0 or 1.
    pub user_rating: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TestCounts {
    pub tests: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
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
    /// The context sources that offered something (`serving::Suggestion::sources`).
    pub context_sources: Vec<String>,
    /// JSON array of `{path, before, after}`.
    pub recent_edits: String,
    pub document_version: i32,
}

/// The fields of a stored interaction that the capture stage itself reads back.
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub id: String,
    pub action: Action,
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

impl Store {
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

    /// The decided interactions changed since they were last scored, with the score's inputs.
    pub fn unscored(&self) -> Result<Vec<(String, Inputs)>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT id, {INPUT_COLUMNS} FROM interactions WHERE action != 'shown' AND scored_at IS NOT updated_at"
            ))
            .map_err(failed)?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, inputs_at(row, 1)?)));
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// Stores quality scores (id, total, the dimensions as JSON); a row scored is not scored again
    /// until it changes.
    pub fn set_scores(&mut self, scores: &[(String, f64, String)]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let failed = |e| classify(&path, e);
        let tx = self.conn.transaction().map_err(failed)?;
        for (id, total, dimensions) in scores {
            let mut update = tx
                .prepare_cached(
                    "UPDATE interactions SET quality_score = ?2, quality_dimensions = ?3, scored_at = updated_at
                     WHERE id = ?1",
                )
                .map_err(failed)?;
            update.execute(params![id, total, dimensions]).map_err(failed)?;
        }
        tx.commit().map_err(failed)
    }

    /// Every answered suggestion (not shown only, not ignored) with what curation needs, oldest
    /// first.
    pub fn curation_rows(&self) -> Result<Vec<CurationRow>, StoreError> {
        self.rows_where("action NOT IN ('shown', 'ignored')")
    }

    /// The suggestions that were shown and ignored, as [`Store::curation_rows`] gives the others:
    /// only the reward stage learns from them.
    pub fn ignored_rows(&self) -> Result<Vec<CurationRow>, StoreError> {
        self.rows_where("action = 'ignored'")
    }

    fn rows_where(&self, condition: &str) -> Result<Vec<CurationRow>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT id, timestamp, coalesce(language, ''), action, coalesce(suggestion, ''), final_code,
                        coalesce(prompt_prefix, ''), coalesce(prompt_suffix, ''), quality_score,
                        executed = 1 AND execution_success = 0, user_rating, user_comment,
                        json_extract(alternatives, '$.typed_instead'), json_extract(static_analysis, '$.complexity'),
                        {INPUT_COLUMNS}
                 FROM interactions WHERE {condition} ORDER BY timestamp, id"
            ))
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
                inputs: inputs_at(row, 14)?,
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// The code the user took (as they kept it), best quality first and newest first among equals:
    /// the few-shot examples' pool. At most `limit` rows per language.
    pub fn taken_code(&self, limit: usize) -> Result<Vec<TakenCode>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, language, file_path, prompt_prefix, code, quality_score FROM (
                     SELECT id, coalesce(language, '') AS language, coalesce(file_path, '') AS file_path,
                            coalesce(prompt_prefix, '') AS prompt_prefix,
                            coalesce(final_code, suggestion, '') AS code, quality_score,
                            row_number() OVER (PARTITION BY language
                                               ORDER BY quality_score DESC, timestamp DESC, id) AS place
                     FROM interactions
                     WHERE action IN ('accepted', 'partial', 'corrected') AND quality_score IS NOT NULL)
                 WHERE place <= ?1 ORDER BY language, place",
            )
            .map_err(failed)?;
        let rows = statement.query_map([limit as i64], |row| {
            Ok(TakenCode {
                id: row.get(0)?,
                language: row.get(1)?,
                file_path: row.get(2)?,
                prefix: row.get(3)?,
                code: row.get(4)?,
                quality: row.get(5)?,
            })
        });
        rows.and_then(Iterator::collect).map_err(failed)
    }

    /// The newest `limit` decided suggestions, oldest first, with what was known before each was
    /// shown and what the user did: what the stay-silent filter learns from.
    pub fn shown_outcomes(&self, limit: usize) -> Result<Vec<ShownOutcome>, StoreError> {
        let failed = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT * FROM (
                     SELECT CAST((julianday(timestamp) - 2440587.5) * 86400000 AS INTEGER) AS at_ms,
                            coalesce(language, ''), action, coalesce(suggestion, ''),
                            coalesce(suggestion_type, 'inline'), coalesce(confidence_score, 0),
                            substr(coalesce(prompt_prefix, ''), -200), substr(coalesce(prompt_suffix, ''), 1, 200),
                            coalesce(context_sources, '[]'), final_code
                     FROM interactions WHERE action NOT IN ('shown')
                     ORDER BY timestamp DESC, id DESC LIMIT ?1)
                 ORDER BY at_ms, 1",
            )
            .map_err(failed)?;
        let rows = statement.query_map([limit as i64], |row| {
            let sources: String = row.get(8)?;
            Ok(ShownOutcome {
                at_ms: row.get(0)?,
                language: row.get(1)?,
                action: row.get(2)?,
                suggestion: row.get(3)?,
                kind: row.get(4)?,
                confidence: row.get(5)?,
                prefix_tail: row.get(6)?,
                suffix_head: row.get(7)?,
                sources: serde_json::from_str(&sources).unwrap_or_default(),
                final_code: row.get(9)?,
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
}

/// The score's inputs from the columns `action, executed, execution_success, test_results,
/// static_analysis, diagnostics, retention_7d, retention_30d, user_rating`, the first at `at`.
fn inputs_at(row: &rusqlite::Row, at: usize) -> rusqlite::Result<Inputs> {
    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        Ok(row.get::<_, Option<String>>(at + i)?.and_then(|text| serde_json::from_str(&text).ok()))
    };
    let executed: Option<bool> = row.get(at + 1)?;
    let tests = json(3)?.map(|t| {
        let count = |key: &str| t[key].as_u64().unwrap_or(0) as usize;
        TestCounts {
            tests: count("tests"),
            failures: count("failures"),
            errors: count("errors"),
            skipped: count("skipped"),
        }
    });
    let analysis = json(4)?;
    let server_errors = json(5)?.and_then(|d| d.as_array().cloned()).unwrap_or_default();
    Ok(Inputs {
        action: row.get(at)?,
        execution_success: if executed == Some(true) { row.get(at + 2)? } else { None },
        tests,
        syntax_errors: analysis.as_ref().and_then(|a| a["syntax_errors"].as_u64()).map(|n| n as usize),
        server_errors: server_errors.iter().filter(|d| d["severity"] == 1).count(),
        linter_errors: analysis.as_ref().and_then(|a| a.pointer("/lint/errors")?.as_u64()).unwrap_or(0) as usize,
        complexity: analysis.as_ref().and_then(|a| a["complexity"].as_u64()).map(|n| n as usize),
        retention_7d: row.get(at + 6)?,
        retention_30d: row.get(at + 7)?,
        user_rating: row.get(at + 8)?,
    })
}

/// The columns [`inputs_at`] reads, in its order.
const INPUT_COLUMNS: &str = "action, executed, execution_success, test_results, static_analysis, diagnostics,
                        retention_7d, retention_30d, user_rating";

/// A decided suggestion as curation sees it (text already redacted when it was stored).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CurationRow {
    pub id: String,
    /// RFC 3339, when it was shown.
    pub timestamp: String,
    pub language: String,
    pub action: Action,
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
    /// What its quality score was computed from (curation's selection rules read them).
    pub inputs: Inputs,
}

/// A decided suggestion as the stay-silent filter sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShownOutcome {
    /// When it was shown, milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub language: String,
    pub action: Action,
    pub suggestion: String,
    /// `inline` or `completion`.
    pub kind: String,
    pub confidence: f64,
    /// The last 200 characters before the cursor, the first 200 after it.
    pub prefix_tail: String,
    pub suffix_head: String,
    pub sources: Vec<String>,
    pub final_code: Option<String>,
}

/// Code the user took, with the text before it (stored redacted).
#[derive(Debug, Clone, PartialEq)]
pub struct TakenCode {
    pub id: String,
    pub language: String,
    /// The document's URI.
    pub file_path: String,
    pub prefix: String,
    pub code: String,
    pub quality: f64,
}

/// The writes of one transaction.
pub struct Batch<'a> {
    pub(super) tx: &'a rusqlite::Transaction<'a>,
}

impl Batch<'_> {
    /// Every text is redacted here, the one way in for them (the document's path picks the rules).
    pub fn shown(&self, s: &Shown) -> Result<(), rusqlite::Error> {
        let cursor = serde_json::json!({"line": s.line, "character": s.character}).to_string();
        let clean = |text: &str| redact(text, &s.file_path);
        self.tx.execute(
            &format!(
                "INSERT OR IGNORE INTO interactions (id, timestamp, session_id, file_path, language, cursor_position,
                    suggestion, suggestion_type, model_version, confidence_score, action, prompt_prefix, prompt_suffix,
                    document_version, context_files, recent_edits, user_id, context_sources, created_at, updated_at)
                 VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', ?2 / 1000.0, 'unixepoch'), ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                    'shown', ?11, ?12, ?13, ?14, ?15, ?16, ?17, {NOW}, {NOW})"
            ),
            params![
                s.id,
                s.shown_at_ms,
                s.session_id,
                s.file_path,
                s.language,
                cursor,
                clean(&s.suggestion),
                s.suggestion_type,
                s.model_version,
                s.confidence,
                clean(&s.prompt_prefix),
                clean(&s.prompt_suffix),
                s.document_version,
                serde_json::to_string(&s.context_files).unwrap_or_default(),
                redacted_edits(&s.recent_edits),
                s.user_id,
                serde_json::to_string(&s.context_sources).unwrap_or_default(),
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

    /// What became of a suggestion. Taken code comes with its anchor and static analysis (when
    /// its document was known) and gets its retention checks scheduled.
    pub fn outcome(&self, outcome: &Decided) -> Result<(), rusqlite::Error> {
        let clean = |text: &str| redact(text, outcome.document);
        let alternatives = outcome.typed_instead.map(|t| serde_json::json!({"typed_instead": clean(t)}).to_string());
        let diagnostics = (!outcome.diagnostics.is_empty()).then(|| {
            let list: Vec<serde_json::Value> = outcome
                .diagnostics
                .iter()
                .map(|(severity, message)| serde_json::json!({"severity": severity, "message": clean(message)}))
                .collect();
            serde_json::Value::Array(list).to_string()
        });
        // Where the code was when it settled; retention finds it again from there.
        let region = match outcome.anchor {
            Some(anchor) => serde_json::to_string(anchor).ok(),
            None => outcome.region.as_ref().map(|r| serde_json::json!({"start": r.start, "end": r.end}).to_string()),
        };
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
                outcome.action,
                outcome.final_code.map(clean),
                outcome.diff.map(clean),
                outcome.time_to_action_ms,
                alternatives,
                diagnostics,
                outcome.shown_ms,
                region,
                outcome.analysis
            ],
        )?;
        if outcome.region.is_some() {
            for (label, delay_ms) in CHECKS {
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
            params![id, rating, comment.map(|c| redact(c, ""))],
        )?;
        Ok(())
    }
}

/// Recent edits (a JSON array of `{path, before, after}`), each redacted with the rules of its own
/// file (an edit in `.env` loses its values) before it is serialised; anything else as plain text.
fn redacted_edits(json: &str) -> String {
    let Ok(serde_json::Value::Array(mut edits)) = serde_json::from_str(json) else { return redact(json, "") };
    for edit in &mut edits {
        let path = edit["path"].as_str().unwrap_or_default().to_owned();
        for field in ["before", "after"] {
            if let Some(text) = edit[field].as_str() {
                edit[field] = redact(text, &path).into();
            }
        }
    }
    serde_json::Value::Array(edits).to_string()
}
