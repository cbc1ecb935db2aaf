ALTER TABLE workflows DROP COLUMN search_name;
