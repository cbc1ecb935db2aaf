DROP INDEX workflows_company_project_idx;
ALTER TABLE workflows DROP CONSTRAINT workflows_project_fk;
ALTER TABLE workflows DROP COLUMN project_id;
DROP TABLE projects;
