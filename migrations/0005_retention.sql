-- Retention: does accepted code survive? One row per scheduled check of an accepted, partly
-- accepted or corrected suggestion (30 s, 2 m, 5 m, 10 m, 7 d, 30 d after acceptance).
CREATE TABLE retention_checks (
    interaction_id TEXT NOT NULL,
    label TEXT NOT NULL,              -- 30s, 2m, 5m, 10m, 7d, 30d
    due_ms INTEGER NOT NULL,          -- ms since the Unix epoch
    checked_ms INTEGER,               -- NULL until checked
    survival REAL,                    -- 0..1: 1 - token edit distance / tokens, at the best match
    found_in TEXT,                    -- the file the code was found in (another one when it moved)
    PRIMARY KEY (interaction_id, label)
) WITHOUT ROWID;
CREATE INDEX idx_retention_due ON retention_checks(checked_ms, due_ms);

-- Forgetting an interaction forgets its checks.
CREATE TRIGGER forget_retention_checks AFTER DELETE ON interactions BEGIN
    DELETE FROM retention_checks WHERE interaction_id = old.id;
END;

-- Tree-sitter analysis of the final code when it settled: JSON {"syntax_errors", "complexity",
-- "scopes"}; the static dimension of the quality score.
ALTER TABLE interactions ADD COLUMN static_analysis TEXT;
-- When the quality score was last computed (rows updated since are scored again).
ALTER TABLE interactions ADD COLUMN scored_at TEXT;
-- Finds them without scanning every row.
CREATE INDEX idx_unscored ON interactions(action) WHERE scored_at IS NOT updated_at;
