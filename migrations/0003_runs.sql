-- `marunochi run -- <cmd>`: test and build runs, the execution signal of the quality score. The
-- interactions settled since the previous run get executed / execution_success from it.
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    -- When the run was recorded; the interactions it judged carry this as their updated_at.
    recorded_at TEXT NOT NULL,
    command TEXT NOT NULL,
    directory TEXT NOT NULL,
    exit_code INTEGER,
    summary TEXT,
    interactions INTEGER NOT NULL
);
CREATE INDEX idx_runs_recorded ON runs(directory, recorded_at);
