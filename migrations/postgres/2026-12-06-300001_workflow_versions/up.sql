-- Workflow versions: every change of a workflow's definition is kept as an immutable
-- version. A version lists its steps as (step id, snapshot hash) pairs; a snapshot holds
-- one step's definition and is stored once per workflow however many versions show it,
-- so an edit of one step of a large workflow stores that step again, not the workflow.
ALTER TABLE workflows ADD COLUMN current_version INTEGER NOT NULL DEFAULT 0;
-- The workflow version a run ran (null for runs started before versions existed).
ALTER TABLE runs ADD COLUMN workflow_version INTEGER;

CREATE TABLE workflow_step_snapshots (
    company_id          TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id         TEXT NOT NULL,
    hash                TEXT NOT NULL,
    action_type         TEXT NOT NULL,
    selectors           TEXT NOT NULL,
    element_meta        TEXT NOT NULL,
    page_context        TEXT NOT NULL,
    action_data         TEXT NOT NULL,
    dom_context         TEXT NOT NULL,
    -- No foreign key: a version keeps naming the screenshot it showed (workflow deletion
    -- keeps screenshots that other workflows' versions name, see domain::workflow).
    screenshot_id       TEXT,
    field_label         TEXT,
    instruction         TEXT,
    ai_confidence       DOUBLE PRECISION,
    ai_model            TEXT,
    label_edited        BOOLEAN NOT NULL,
    instruction_edited  BOOLEAN NOT NULL,
    created_at          TIMESTAMP NOT NULL,
    PRIMARY KEY (company_id, workflow_id, hash),
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX workflow_step_snapshots_screenshot_idx
    ON workflow_step_snapshots (company_id, screenshot_id);

CREATE TABLE workflow_versions (
    id             TEXT PRIMARY KEY,
    company_id     TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id    TEXT NOT NULL,
    number         INTEGER NOT NULL CHECK (number > 0),
    name           TEXT NOT NULL,
    description    TEXT,
    tags           TEXT NOT NULL,
    -- JSON array of [step id, snapshot hash] in step order.
    steps          TEXT NOT NULL,
    summary        TEXT NOT NULL,
    restored_from  INTEGER,
    created_by     TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at     TIMESTAMP NOT NULL,
    UNIQUE (company_id, workflow_id, number),
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX workflow_versions_created_by_idx ON workflow_versions (created_by);
