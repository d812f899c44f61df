-- The adapter registry (eval/deploy): every trained version per language and where it stands.
-- adapters/<language>/active (a link) is what serving uses; these rows follow it and keep the
-- history, reconciled with the link whenever the registry is used.
CREATE TABLE adapter_versions (
    language TEXT NOT NULL,
    version TEXT NOT NULL,                -- v<N>, the directory under adapters/<language>/
    state TEXT NOT NULL,                  -- candidate, shadow, canary, active, retired, rolled_back, removed
    base_fingerprint TEXT,
    gate_passed INTEGER,                  -- the eval gate's verdict (1/0), NULL before it ran
    gate_report TEXT,                     -- its one-line summaries (held-out; forgetting)
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (language, version)
) WITHOUT ROWID;

CREATE TABLE adapter_events (
    at TEXT NOT NULL,
    language TEXT NOT NULL,
    version TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL
);
