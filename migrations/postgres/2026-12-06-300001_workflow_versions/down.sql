DROP TABLE workflow_versions;
DROP TABLE workflow_step_snapshots;
ALTER TABLE runs DROP COLUMN workflow_version;
ALTER TABLE workflows DROP COLUMN current_version;
