-- Test counts of a run when they are known (pytest's cache, JUnit XML reports): JSON
-- {"tests", "failures", "errors", "skipped", "failed": [names]}. The interactions a run judges get
-- the same JSON in their test_results column (the tests dimension of the quality score).
ALTER TABLE runs ADD COLUMN test_results TEXT;
