-- Name search compares against a case-folded copy of the name that the server writes
-- (Unicode lower-casing in Rust; SQLite's lower() folds ASCII only), so both backends find
-- "Émile" for "émile". Existing rows are folded by the server right after this migration.
-- (Names already sort by code point here: BINARY collation over UTF-8.)
ALTER TABLE workflows ADD COLUMN search_name TEXT NOT NULL DEFAULT '';
UPDATE workflows SET search_name = lower(name);
