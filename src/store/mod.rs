//! The interaction store: `MARUNOCHI_HOME/marunochi.db`, SQLite in WAL mode, created 0600, schema
//! from `migrations/*.sql` applied in order (`PRAGMA user_version` counts them). A file that is not
//! a database, or one from a newer marunochi, is reported and left exactly as it is.

/// An enum stored as text in a column: the enum, `ALL`, `as_str`, `Display`, `FromStr` and SQLite's
/// `ToSql`/`FromSql`, from one list of variants and their names, so the names live in one place.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(text: &str) -> Result<$name, String> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text).ok_or_else(|| format!(concat!("unknown ", $what, " {:?}"), text))
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<$name> {
                value.as_str()?.parse().map_err(|e: String| rusqlite::types::FromSqlError::Other(e.into()))
            }
        }
    };
}

mod git;
mod interactions;
mod metrics;
mod registry;
mod retention;
mod runs;
mod shadow;

pub use git::GitFunction;
pub use interactions::{
    Action, Batch, CurationRow, Decided, Inputs, Interaction, Shown, ShownOutcome, TakenCode, TestCounts,
};
pub use metrics::{DriftEvent, SourceMetrics, WeekMetrics};
pub use registry::{AdapterChange, AdapterEvent, AdapterVersion, Links, Stage, VersionOutcome};
pub use retention::{Anchor, CHECKS, CheckResult, DueCheck, RetentionCheck};
pub use runs::{Run, TestResults};
pub use shadow::{PendingShadow, ShadowSample, ShownFor, request_hash};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

/// The migrations, in order. Appending is the only allowed change.
const MIGRATIONS: [&str; 10] = [
    include_str!("../../migrations/0001_interactions.sql"),
    include_str!("../../migrations/0002_diagnostics.sql"),
    include_str!("../../migrations/0003_runs.sql"),
    include_str!("../../migrations/0004_test_results.sql"),
    include_str!("../../migrations/0005_retention.sql"),
    include_str!("../../migrations/0006_drift.sql"),
    include_str!("../../migrations/0007_adapters.sql"),
    include_str!("../../migrations/0008_rollout.sql"),
    include_str!("../../migrations/0009_context_sources.sql"),
    include_str!("../../migrations/0010_git_functions.sql"),
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
        let mut conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        // Every transaction here writes, most after reading: a deferred one that reads first cannot
        // wait for another process's write to end (SQLite answers "database is locked" at once),
        // one that takes the write lock up front waits out the busy timeout.
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        let version: i64 =
            conn.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(|e| classify(path, e))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::NewerSchema { path: path.to_owned(), found: version, supported });
        }
        wal(&conn).map_err(|e| classify(path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite)?;
        let mut store = Store { path: path.to_owned(), conn };
        if version < supported {
            store.migrate()?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies the migrations this file lacks, under the write lock taken up front (as every
    /// transaction here takes it): another process
    /// opening the same file at the same moment waits, then finds the version it left and applies
    /// nothing twice.
    fn migrate(&mut self) -> Result<(), StoreError> {
        let failed = |e| classify(&self.path, e);
        let tx = self.conn.transaction().map_err(failed)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0)).map_err(failed)?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::NewerSchema { path: self.path.clone(), found: version, supported });
        }
        for sql in MIGRATIONS.iter().skip(version as usize) {
            tx.execute_batch(sql).map_err(failed)?;
        }
        tx.pragma_update(None, "user_version", supported).map_err(failed)?;
        tx.commit().map_err(failed)
    }

    /// Runs `f` in one transaction (the writer batches whatever has queued up).
    pub fn batch(&mut self, f: impl FnOnce(&Batch) -> Result<(), rusqlite::Error>) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(|e| classify(&self.path, e))?;
        f(&Batch { tx: &tx }).map_err(|e| classify(&self.path, e))?;
        tx.commit().map_err(|e| classify(&self.path, e))
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

    /// Deletes the interactions `what` selects and what holds their text (shadow samples of the
    /// same documents, the output of runs that judged them), so that they are gone from the disk
    /// too: secure delete, then `VACUUM` and the WAL checkpointed and truncated. A document is
    /// matched by the path its URI names (percent-escapes decoded, case as the file system has it).
    pub fn forget(&mut self, what: &Forget) -> Result<Forgotten, StoreError> {
        let path = self.path.clone();
        let failed = |e| classify(&path, e);
        self.conn.pragma_update(None, "secure_delete", true).map_err(failed)?;
        let tx = self.conn.transaction().map_err(failed)?;
        let mut mined = 0;
        let deleted = match what {
            Forget::All => {
                tx.execute("DELETE FROM shadow_samples", []).map_err(failed)?;
                tx.execute("DELETE FROM runs", []).map_err(failed)?;
                mined = tx.execute("DELETE FROM git_functions", []).map_err(failed)?;
                tx.execute("DELETE FROM interactions", []).map_err(failed)?
            }
            Forget::File(forgotten) => {
                let inside = |uri: &str| crate::uri::to_path(uri).is_some_and(|p| p.starts_with(forgotten));
                let mut deleted = 0;
                for (table, key, column) in [
                    ("interactions", "id", "file_path"),
                    ("shadow_samples", "rowid", "document"),
                    ("runs", "rowid", "'file://' || directory"),
                    ("git_functions", "id", "file_path"),
                ] {
                    let select = format!("SELECT {key}, {column} FROM {table}");
                    let mut statement = tx.prepare(&select).map_err(failed)?;
                    let rows = statement
                        .query_map([], |row| {
                            Ok((row.get::<_, rusqlite::types::Value>(0)?, row.get::<_, Option<String>>(1)?))
                        })
                        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                        .map_err(failed)?;
                    // A run judged the file when it ran in a directory above it.
                    let matches = |uri: &str| {
                        if table == "runs" {
                            crate::uri::to_path(uri).is_some_and(|dir| forgotten.starts_with(dir) || inside(uri))
                        } else {
                            inside(uri)
                        }
                    };
                    let delete = format!("DELETE FROM {table} WHERE {key} = ?1");
                    for (id, _) in rows.iter().filter(|(_, uri)| uri.as_deref().is_some_and(matches)) {
                        let n = tx.execute(&delete, [id]).map_err(failed)?;
                        match table {
                            "interactions" => deleted += n,
                            "git_functions" => mined += n,
                            _ => {}
                        }
                    }
                }
                scrub_mentions(&tx, forgotten).map_err(failed)?;
                deleted
            }
            Forget::Before(date) => {
                tx.execute("DELETE FROM shadow_samples WHERE at < ?1", [date]).map_err(failed)?;
                tx.execute("DELETE FROM runs WHERE started_at < ?1", [date]).map_err(failed)?;
                mined = tx.execute("DELETE FROM git_functions WHERE authored_at < ?1", [date]).map_err(failed)?;
                tx.execute("DELETE FROM interactions WHERE timestamp < ?1", [date]).map_err(failed)?
            }
        };
        tx.commit().map_err(failed)?;
        // Pages that held the rows are rewritten, and the WAL that saw them emptied.
        self.conn.execute_batch("VACUUM").map_err(failed)?;
        let busy: i64 = self.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0)).map_err(failed)?;
        Ok(Forgotten { interactions: deleted, git_functions: mined, wal_emptied: busy == 0 })
    }

    /// `PRAGMA integrity_check`: `ok`, or what is wrong.
    pub fn integrity(&self) -> Result<String, StoreError> {
        self.conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).map_err(|e| classify(&self.path, e))
    }
}

/// Removes, from the rows that stay, what they say about the files under `forgotten`: their
/// recent edits (text of those files) and their names among the context documents. Both name
/// files relative to the workspace, which is not stored: a name counts as forgotten when it
/// lands there from any directory above the row's own file (more may go, never less).
fn scrub_mentions(tx: &rusqlite::Transaction, forgotten: &Path) -> rusqlite::Result<()> {
    let mut select = tx.prepare("SELECT id, file_path, recent_edits, context_files FROM interactions")?;
    let rows: Vec<(String, String, String, String)> = select
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))?
        .collect::<Result<_, _>>()?;
    for (id, file, edits, context) in rows {
        let own = crate::uri::to_path(&file).unwrap_or_default();
        let mentioned = |name: &str| {
            let relative = crate::uri::decode(name);
            own.ancestors().any(|dir| dir.join(&relative).starts_with(forgotten))
        };
        let keep = |list: &str, name: fn(&serde_json::Value) -> Option<&str>| {
            let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(list) else {
                return None;
            };
            let kept: Vec<_> = items.iter().filter(|item| !name(item).is_some_and(mentioned)).cloned().collect();
            (kept.len() != items.len()).then(|| serde_json::Value::Array(kept).to_string())
        };
        if let Some(edits) = keep(&edits, |edit| edit["path"].as_str()) {
            tx.execute("UPDATE interactions SET recent_edits = ?2 WHERE id = ?1", [&id, &edits])?;
        }
        if let Some(context) = keep(&context, serde_json::Value::as_str) {
            tx.execute("UPDATE interactions SET context_files = ?2 WHERE id = ?1", [&id, &context])?;
        }
    }
    Ok(())
}

/// What `forget` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forgotten {
    pub interactions: usize,
    /// Functions mined from git history (`Store::add_git_functions`).
    pub git_functions: usize,
    /// `false`: another process had the store open, so the WAL could not be emptied; it is the
    /// next time nobody else has it open.
    pub wal_emptied: bool,
}

/// Which interactions `forget` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forget {
    All,
    /// A file, or a directory: everything below it.
    File(PathBuf),
    /// Shown before this RFC 3339 time or date (`2026-11-01`, `2026-11-01T12:00:00Z`).
    Before(String),
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// A taken suggestion with an error signal: a failed run, a language-server error, a syntax or
/// lint error (drift's error rate and the rollout's).
const TAKEN_WITH_ERRORS: &str = "action IN ('accepted', 'partial', 'corrected')
    AND (execution_success = 0 OR diagnostics LIKE '%\"severity\":1%'
         OR coalesce(json_extract(static_analysis, '$.syntax_errors'), 0) > 0
         OR coalesce(json_extract(static_analysis, '$.lint.errors'), 0) > 0)";

/// A `LIKE` pattern (backslash as the escape) for every URI below the directory `uri`.
fn below(uri: &str) -> String {
    format!("{}/%", uri.trim_end_matches('/').replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"))
}

/// Switches a file to WAL. The switch needs the file to itself and SQLite does not wait for that
/// (no busy handler), so a store another process is opening at the same moment is retried for as
/// long as the busy timeout would have waited.
fn wal(conn: &Connection) -> Result<(), rusqlite::Error> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
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
            context_sources: vec!["open_files".into()],
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
        assert_eq!(row.action, Action::Accepted);
        assert_eq!(row.time_to_action, Some(1250));
        assert_eq!((row.user_rating, row.user_comment.as_deref()), (Some(1), Some("nice")));
        drop(store);
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.count().unwrap(), 1, "reopening migrates nothing twice and keeps the rows");
        assert_eq!(store.integrity().unwrap(), "ok");

        // Acceptance per context source: a suggestion counts under each of its sources.
        let both = Shown { context_sources: vec!["snippets".into(), "open_files".into()], ..shown("b") };
        store.batch(|b| b.shown(&both)).unwrap();
        store.batch(|b| b.shown(&Shown { context_sources: Vec::new(), ..shown("c") })).unwrap();
        store.batch(|b| b.shown(&shown("d"))).unwrap();
        store.conn.execute("UPDATE interactions SET action = 'rejected' WHERE id IN ('b', 'c')", []).unwrap();
        let by_source: Vec<(String, usize, usize)> =
            store.source_metrics().unwrap().into_iter().map(|m| (m.source, m.decided, m.taken)).collect();
        assert_eq!(
            by_source,
            [("none".to_owned(), 1, 0), ("open_files".to_owned(), 2, 1), ("snippets".to_owned(), 1, 0)],
            "`d` is still only shown"
        );
    }

    /// Every write that stores text redacts it: a known secret sent through each is found
    /// nowhere in the database file or its WAL afterwards.
    #[test]
    fn no_write_path_stores_a_secret() {
        const KEY: &str = "AKIAIOSFODNN7EXAMPLE";
        const QUOTED: &str = "s3cr3t-passw0rd";
        const ENV_VALUE: &str = "verbose-mode-42";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marunochi.db");
        let mut store = Store::open(&path).unwrap();
        let edits = serde_json::json!([
            {"path": "settings.py", "before": "", "after": format!("password = \"{QUOTED}\"")},
            {"path": "deploy/.env", "before": "", "after": format!("MODE={ENV_VALUE}")},
        ]);
        let row = Shown {
            suggestion: format!("key = '{KEY}'"),
            prompt_prefix: format!("aws = '{KEY}'\n"),
            prompt_suffix: format!("# {KEY}"),
            recent_edits: edits.to_string(),
            ..shown("a")
        };
        store.batch(|b| b.shown(&row)).unwrap();
        let (code, diff, typed) = (format!("k = '{KEY}'"), format!("+k = '{KEY}'"), format!("'{KEY}'"));
        let message = format!("unknown name {KEY}");
        let decided = Decided {
            id: "a",
            document: "file:///p/a.py",
            action: Action::Corrected,
            final_code: Some(&code),
            diff: Some(&diff),
            typed_instead: Some(&typed),
            diagnostics: vec![(1, &message)],
            ..Decided::default()
        };
        store.batch(|b| b.outcome(&decided)).unwrap();
        store.batch(|b| b.feedback("a", -1, Some(&format!("it leaked {KEY}")))).unwrap();
        let run = Run {
            command: format!("AWS_KEY={KEY} pytest"),
            directory: "/p".into(),
            started_at_ms: 0,
            finished_at_ms: 1,
            exit_code: Some(1),
            summary: format!("failed: {KEY}"),
            tests: None,
        };
        store.record_run(&run).unwrap();
        let sample = ShadowSample {
            language: "python".into(),
            version: "v1".into(),
            document: "file:///p/a.py".into(),
            request_hash: "h".into(),
            served_model_version: "m".into(),
            served_text: format!("'{KEY}'"),
            shadow_text: format!("'{KEY}'"),
        };
        store.record_shadow(&sample).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend(std::fs::read(dir.path().join("marunochi.db-wal")).unwrap_or_default());
        let text = String::from_utf8_lossy(&bytes);
        for secret in [KEY, QUOTED, ENV_VALUE] {
            assert!(!text.contains(secret), "{secret} was stored");
        }
        assert!(text.contains("«redacted:aws-key»"), "the rows are there, redacted");
        drop(store);
    }

    #[test]
    fn states_round_trip_through_sqlite_and_unknown_text_is_an_error() {
        let conn = Connection::open_in_memory().unwrap();
        for &action in Action::ALL {
            let back: Action = conn.query_row("SELECT ?1", [action], |row| row.get(0)).unwrap();
            assert_eq!(back, action);
        }
        for &stage in Stage::ALL {
            let back: Stage = conn.query_row("SELECT ?1", [stage], |row| row.get(0)).unwrap();
            assert_eq!((back, back.to_string()), (stage, stage.as_str().to_owned()));
        }
        let error = conn.query_row("SELECT 'maybe'", [], |row| row.get::<_, Stage>(0)).unwrap_err();
        assert!(error.to_string().contains("unknown adapter state \"maybe\""), "{error}");
    }

    #[test]
    fn connections_opening_a_new_store_at_once_all_get_it() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let path = dir.path().join(format!("race-{round}.db"));
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Store::open(&path).map(|store| store.count().unwrap()).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for opener in openers {
                assert_eq!(opener.join().unwrap(), Ok(0), "round {round}");
            }
        }
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
