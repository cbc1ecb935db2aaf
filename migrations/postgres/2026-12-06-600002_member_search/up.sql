-- Member search (`members(search:)`) compares against a case-folded copy of the name that
-- the server writes (Unicode lower-casing in Rust), as workflow search does, so both
-- backends find "Émile" for "émile". Existing rows are folded by the server right after
-- this migration.
ALTER TABLE users ADD COLUMN search_name TEXT NOT NULL DEFAULT '';
UPDATE users SET search_name = lower(name);
