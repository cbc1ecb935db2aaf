DROP INDEX workflows_company_project_idx;
ALTER TABLE workflows DROP COLUMN project_id;
DROP TABLE projects;
