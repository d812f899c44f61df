-- The language server's diagnostics inside accepted code when it settled (the static signal of the
-- quality score): a JSON array of {"severity", "message"}.
ALTER TABLE interactions ADD COLUMN diagnostics TEXT;
