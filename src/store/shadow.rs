//! The `shadow_samples` table: what a candidate adapter would have suggested (rollout).

use rusqlite::params;
use sha2::{Digest, Sha256};

use super::{NOW, Store, StoreError, classify};
use crate::redact::redact;

/// The key under which a shadow sample finds the suggestion shown for the same request: over the
/// window as stored (redacted with the rules of `document`), so the two sides compute it alike.
pub fn request_hash(document: &str, prefix: &str, suffix: &str) -> String {
    let (prefix, suffix) = (redact(prefix, document), redact(suffix, document));
    let mut hasher = Sha256::new();
    hasher.update(prefix.as_bytes());
    hasher.update([0]);
    hasher.update(suffix.as_bytes());
    format!("{:x}", hasher.finalize())
}

impl Store {
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
                    redact(&s.served_text, &s.document),
                    redact(&s.shadow_text, &s.document)
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
                        coalesce(i.prompt_prefix, ''), coalesce(i.prompt_suffix, ''), s.document
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
                    document: row.get(10).map_err(failed)?,
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
    /// The document's URI (the candidates' too).
    pub document: String,
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
