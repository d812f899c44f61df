//! The `runs` table: test and build runs, and the taken code each judges.

use rusqlite::params;

use super::{NOW, Store, StoreError, below, classify};
use crate::redact::redact;

impl Store {
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
        // The command line and the output may hold secrets (`API_KEY=… make test`).
        let (command, summary) = (redact(&run.command, ""), redact(&run.summary, ""));
        let error = (!success).then_some(summary.as_str());
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
                command,
                run.directory,
                run.exit_code,
                summary,
                marked as i64,
                tests
            ],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        Ok(marked)
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
    /// The last lines of its output (redacted when stored).
    pub summary: String,
    /// Test counts, when the run left a report that says them.
    pub tests: Option<TestResults>,
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
