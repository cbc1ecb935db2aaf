-- Every committed change of a run adds one to its version. Writers change a run under its
-- row lock, so versions follow commit order; subscribers order a run's states by version
-- (never by time, which is taken before commit and can run backwards between writers).
ALTER TABLE runs ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
