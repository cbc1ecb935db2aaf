-- Name search compares against a case-folded copy of the name that the server writes
-- (Unicode lower-casing in Rust), so both backends find "Émile" for "émile". Existing rows
-- are folded by the server right after this migration.
ALTER TABLE workflows ADD COLUMN search_name TEXT NOT NULL DEFAULT '';
UPDATE workflows SET search_name = lower(name);
-- Names sort by code point, as SQLite's BINARY collation sorts UTF-8, whatever the
-- database's locale: the same list in the same order on both backends.
ALTER TABLE workflows ALTER COLUMN name TYPE TEXT COLLATE "C";
