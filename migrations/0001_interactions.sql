-- Every suggestion shown and what became of it: the seed's schema (research §1.2), plus what
-- marunochi needs to rebuild a training example and grade it. Applied once, in order, at open;
-- PRAGMA user_version records the last migration applied.

CREATE TABLE interactions (
    id TEXT PRIMARY KEY,              -- the suggestion id the editor saw
    timestamp TEXT NOT NULL,          -- when it was shown (RFC 3339, UTC)
    user_id TEXT,
    session_id TEXT,

    -- Context
    file_path TEXT,                   -- the document URI
    language TEXT,
    cursor_position TEXT,             -- JSON {"line", "character"} in the negotiated encoding
    context_files TEXT,               -- JSON array of paths
    recent_edits TEXT,                -- JSON array of {path, before, after}

    -- Suggestion
    suggestion TEXT,
    suggestion_type TEXT,             -- inline, completion
    model_version TEXT,
    confidence_score REAL,

    -- User action
    action TEXT,                      -- shown, accepted, partial, rejected, corrected, ignored
    final_code TEXT,
    time_to_action INTEGER,           -- milliseconds

    -- Execution
    executed INTEGER,
    execution_success INTEGER,
    error_message TEXT,
    test_results TEXT,                -- JSON

    -- Quality
    quality_score REAL,
    retention_7d INTEGER,
    retention_30d INTEGER,

    -- Feedback
    user_rating INTEGER,              -- -1, 0, 1
    user_comment TEXT,

    -- Beyond the seed
    diff TEXT,                        -- unified diff suggestion -> final code
    prompt_prefix TEXT,               -- the document window before the cursor used for the prompt
    prompt_suffix TEXT,               -- and after it
    document_version INTEGER,
    anchor TEXT,                      -- JSON: where the accepted code lives (retention)
    shown_ms INTEGER,                 -- how long it was visible
    alternatives TEXT,                -- JSON: other suggestions shown, what the user typed instead
    quality_dimensions TEXT,          -- JSON: the five scores

    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX idx_timestamp ON interactions(timestamp);
CREATE INDEX idx_language ON interactions(language);
CREATE INDEX idx_action ON interactions(action);
CREATE INDEX idx_quality ON interactions(quality_score);
