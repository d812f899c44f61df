-- Functions the user wrote, mined from their own git repositories (`marunochi data mine`): training
-- data and a time-split held-out set from day one. Each row is one version of one function as a
-- commit left it, redacted like every other text the store keeps.
CREATE TABLE git_functions (
    id TEXT PRIMARY KEY,            -- sha256 of (repository, commit, path, name): mining twice adds nothing
    repository TEXT NOT NULL,       -- the repository's directory
    commit_hash TEXT NOT NULL,
    authored_at TEXT NOT NULL,      -- RFC 3339, the commit's author time
    language TEXT NOT NULL,
    file_path TEXT NOT NULL,        -- file:// URI of the file in the repository (what `data forget` matches)
    name TEXT NOT NULL,             -- outermost first, dotted (`Cache.get`)
    prefix TEXT NOT NULL,           -- the file before the body, its last lines
    suffix TEXT NOT NULL,           -- the file after the body, its first lines
    body TEXT NOT NULL,
    previous_body TEXT,             -- the body before this commit changed it (same signature)
    mined_at TEXT NOT NULL
);
CREATE INDEX git_functions_by_time ON git_functions (language, authored_at);
