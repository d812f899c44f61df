-- Which context sources offered something to each suggestion's prompt (a JSON array of names:
-- "snippets", "own_examples", "open_files", "recent_edits"), so `stats` can report acceptance per source.
ALTER TABLE interactions ADD COLUMN context_sources TEXT NOT NULL DEFAULT '[]';
