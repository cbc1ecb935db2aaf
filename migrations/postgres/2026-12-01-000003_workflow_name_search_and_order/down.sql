ALTER TABLE workflows ALTER COLUMN name TYPE TEXT COLLATE "default";
ALTER TABLE workflows DROP COLUMN search_name;
