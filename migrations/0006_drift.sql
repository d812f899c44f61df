-- Drift events for the scheduler (the training issue consumes them): computed from the weekly
-- metrics per language, one row per (week, language, kind) however often they are recomputed.
CREATE TABLE drift_events (
    week TEXT NOT NULL,               -- ISO year and week, 2026-W48
    language TEXT NOT NULL,
    kind TEXT NOT NULL,               -- acceptance_drop, error_rise, new_language, emergency, quality_drop
    value REAL,                       -- this week's figure
    baseline REAL,                    -- what it is compared with
    detected_at TEXT NOT NULL,
    PRIMARY KEY (week, language, kind)
) WITHOUT ROWID;
