//! The adapter registry's tables (`adapter_versions`, `adapter_events`) and what the rollout
//! reads of each served version's suggestions.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::{NOW, Store, StoreError, TAKEN_WITH_ERRORS, classify};

text_enum! {
    /// An adapter version's state in the registry (the `state` columns).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
    #[serde(rename_all = "snake_case")]
    Stage, "adapter state" {
        Candidate = "candidate",
        Shadow = "shadow",
        Canary = "canary",
        Active = "active",
        Retired = "retired",
        RolledBack = "rolled_back",
        Removed = "removed",
    }
}

impl Stage {
    /// The stages serving reads, each a link of the same name in `adapters/<language>/`, highest
    /// first.
    pub const SERVED: [Stage; 3] = [Stage::Active, Stage::Canary, Stage::Shadow];

    /// Served through a link of its own name.
    pub fn is_served(self) -> bool {
        Stage::SERVED.contains(&self)
    }
}

/// The versions serving uses for one language, read from the links alone (no store, no writes:
/// cheap enough for an editor's status bar).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Links {
    pub active: Option<String>,
    pub canary: Option<String>,
    pub shadow: Option<String>,
}

impl Links {
    /// The links of one language's directory (`adapters/<language>/`).
    pub fn read(language_dir: &Path) -> Links {
        let linked = |stage: Stage| {
            std::fs::read_link(language_dir.join(stage.as_str()))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        };
        Links { active: linked(Stage::Active), canary: linked(Stage::Canary), shadow: linked(Stage::Shadow) }
    }

    /// Per language with any link under `adapters`, what it serves.
    pub fn all(adapters: &Path) -> BTreeMap<String, Links> {
        let mut languages = BTreeMap::new();
        for language in std::fs::read_dir(adapters).into_iter().flatten().flatten() {
            let Some(name) = language.file_name().to_str().map(str::to_owned) else { continue };
            let links = Links::read(&language.path());
            if links != Links::default() {
                languages.insert(name, links);
            }
        }
        languages
    }
}

impl Store {
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
            let from: Option<Stage> = tx
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

/// One adapter version in the registry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdapterVersion {
    pub language: String,
    pub version: String,
    pub state: Stage,
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
    pub state: Stage,
    pub base_fingerprint: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AdapterEvent {
    pub at: String,
    pub version: String,
    pub from: Option<Stage>,
    pub to: Stage,
    pub reason: String,
}
