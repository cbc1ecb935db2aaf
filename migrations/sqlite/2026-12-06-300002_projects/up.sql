-- Projects group workflows; a workflow belongs to at most one. Deleting a project first
-- unassigns its workflows (in the same transaction). SQLite cannot add a table constraint
-- to an existing table (nor drop a column that has one), so `workflows.project_id` has no
-- foreign key here; the server only ever writes a project of the same company (the
-- PostgreSQL tree has the composite foreign key).
CREATE TABLE projects (
    id           TEXT PRIMARY KEY,
    company_id   TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT,
    created_by   TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    UNIQUE (company_id, id)
);
CREATE INDEX projects_company_name_idx ON projects (company_id, name, id);
CREATE INDEX projects_created_by_idx ON projects (created_by);

ALTER TABLE workflows ADD COLUMN project_id TEXT;
CREATE INDEX workflows_company_project_idx ON workflows (company_id, project_id, created_at, id);
