-- Projects group workflows; a workflow belongs to at most one. Deleting a project first
-- unassigns its workflows (in the same transaction), so the reference needs no action.
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
ALTER TABLE workflows ADD CONSTRAINT workflows_project_fk
    FOREIGN KEY (company_id, project_id) REFERENCES projects (company_id, id);
CREATE INDEX workflows_company_project_idx ON workflows (company_id, project_id, created_at, id);
