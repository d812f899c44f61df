-- The rollout (deploy): a candidate in shadow generates beside the served adapter on a sample of
-- real requests, never shown. Each such pair waits here until the user has decided on the
-- suggestion that was shown; then both are compared with the code the user kept.
CREATE TABLE shadow_samples (
    at TEXT NOT NULL,                 -- when the shadow generation finished (RFC 3339, UTC)
    language TEXT NOT NULL,
    version TEXT NOT NULL,            -- the shadow version, v<N>
    document TEXT NOT NULL,           -- the document URI (interactions.file_path)
    request_hash TEXT NOT NULL,       -- sha256 of the request's prefix, NUL, suffix
    served_model_version TEXT NOT NULL,
    served_text TEXT NOT NULL,
    shadow_text TEXT NOT NULL,        -- empty when the shadow produced nothing worth showing
    interaction_id TEXT,              -- the suggestion shown for the same request, once matched
    served_similarity REAL,           -- similarity of each text to the code the user kept
    shadow_similarity REAL,
    judged_at TEXT                    -- NULL until judged (or given up: no match, nothing kept)
);
CREATE INDEX idx_shadow_unjudged ON shadow_samples(judged_at, language, version);
