-- The core of Stepwise. Every tenant-owned row carries company_id, and children reference
-- their parent by (company_id, id) so the database itself refuses a row that points into
-- another company.

CREATE TABLE companies (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    invite_token  TEXT NOT NULL UNIQUE,
    settings      TEXT NOT NULL DEFAULT '{}',
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    company_id     TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    email          TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'regular')),
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL
);
CREATE INDEX users_company_idx ON users (company_id, created_at);

CREATE TABLE workflows (
    id                    TEXT PRIMARY KEY,
    company_id            TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    created_by            TEXT REFERENCES users (id) ON DELETE SET NULL,
    name                  TEXT NOT NULL,
    description           TEXT,
    status                TEXT NOT NULL DEFAULT 'draft' CHECK (status IN
                              ('draft', 'processing', 'active', 'needs_review', 'broken', 'archived')),
    success_rate          REAL NOT NULL DEFAULT 0,
    total_uses            INTEGER NOT NULL DEFAULT 0,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    last_success_at       TIMESTAMP,
    last_failure_at       TIMESTAMP,
    tags                  TEXT NOT NULL DEFAULT '[]',
    created_at            TIMESTAMP NOT NULL,
    updated_at            TIMESTAMP NOT NULL,
    UNIQUE (company_id, id)
);
CREATE INDEX workflows_company_created_idx ON workflows (company_id, created_at, id);
CREATE INDEX workflows_company_updated_idx ON workflows (company_id, updated_at, id);
CREATE INDEX workflows_company_status_idx ON workflows (company_id, status);
CREATE INDEX workflows_created_by_idx ON workflows (created_by);

CREATE TABLE screenshots (
    id            TEXT PRIMARY KEY,
    company_id    TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id   TEXT NOT NULL,
    hash          TEXT NOT NULL,
    storage_key   TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    created_at    TIMESTAMP NOT NULL,
    -- De-duplication is per company: the same bytes in two companies are two rows.
    UNIQUE (company_id, hash),
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX screenshots_workflow_idx ON screenshots (workflow_id);

CREATE TABLE steps (
    id                  TEXT PRIMARY KEY,
    company_id          TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id         TEXT NOT NULL,
    step_number         INTEGER NOT NULL CHECK (step_number > 0),
    action_type         TEXT NOT NULL,
    selectors           TEXT NOT NULL DEFAULT '{}',
    element_meta        TEXT NOT NULL DEFAULT '{}',
    page_context        TEXT NOT NULL DEFAULT '{}',
    action_data         TEXT NOT NULL DEFAULT '{}',
    dom_context         TEXT NOT NULL DEFAULT '{}',
    screenshot_id       TEXT REFERENCES screenshots (id) ON DELETE SET NULL,
    field_label         TEXT,
    instruction         TEXT,
    ai_confidence       REAL,
    ai_model            TEXT,
    label_edited        BOOLEAN NOT NULL DEFAULT 0,
    instruction_edited  BOOLEAN NOT NULL DEFAULT 0,
    edited_by           TEXT REFERENCES users (id) ON DELETE SET NULL,
    edited_at           TIMESTAMP,
    healed_selectors    TEXT,
    healed_at           TIMESTAMP,
    healing_confidence  REAL,
    healing_method      TEXT,
    created_at          TIMESTAMP NOT NULL,
    updated_at          TIMESTAMP NOT NULL,
    UNIQUE (workflow_id, step_number),
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX steps_screenshot_idx ON steps (screenshot_id);
CREATE INDEX steps_edited_by_idx ON steps (edited_by);

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    company_id       TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id      TEXT NOT NULL,
    started_by       TEXT REFERENCES users (id) ON DELETE SET NULL,
    status           TEXT NOT NULL CHECK (status IN
                         ('queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled', 'timed_out')),
    steps_total      INTEGER NOT NULL DEFAULT 0,
    steps_completed  INTEGER NOT NULL DEFAULT 0,
    steps_failed     INTEGER NOT NULL DEFAULT 0,
    steps_healed     INTEGER NOT NULL DEFAULT 0,
    current_step_id  TEXT REFERENCES steps (id) ON DELETE SET NULL,
    error            TEXT,
    started_at       TIMESTAMP,
    finished_at      TIMESTAMP,
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL,
    UNIQUE (company_id, id),
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX runs_company_workflow_idx ON runs (company_id, workflow_id, created_at, id);
CREATE INDEX runs_company_status_idx ON runs (company_id, status, updated_at);
CREATE INDEX runs_workflow_idx ON runs (workflow_id);
CREATE INDEX runs_started_by_idx ON runs (started_by);
CREATE INDEX runs_current_step_idx ON runs (current_step_id);

CREATE TABLE health_logs (
    id                   TEXT PRIMARY KEY,
    company_id           TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id          TEXT NOT NULL,
    run_id               TEXT NOT NULL,
    step_id              TEXT REFERENCES steps (id) ON DELETE SET NULL,
    -- A retried report carries the same key and must not be counted twice.
    idempotency_key      TEXT,
    status               TEXT NOT NULL CHECK (status IN
                             ('success', 'failed', 'healed_deterministic', 'healed_ai')),
    error_type           TEXT,
    error_message        TEXT,
    healing_confidence   REAL,
    deterministic_score  REAL,
    ai_score             REAL,
    page_url             TEXT,
    execution_time_ms    INTEGER,
    created_at           TIMESTAMP NOT NULL,
    UNIQUE (run_id, idempotency_key),
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE,
    FOREIGN KEY (company_id, run_id) REFERENCES runs (company_id, id) ON DELETE CASCADE
);
CREATE INDEX health_logs_company_workflow_idx ON health_logs (company_id, workflow_id, created_at, id);
CREATE INDEX health_logs_company_created_idx ON health_logs (company_id, created_at, id);
CREATE INDEX health_logs_run_idx ON health_logs (run_id, created_at, id);
CREATE INDEX health_logs_company_status_idx ON health_logs (company_id, status);
CREATE INDEX health_logs_workflow_idx ON health_logs (workflow_id);
CREATE INDEX health_logs_step_idx ON health_logs (step_id);

CREATE TABLE notifications (
    id           TEXT PRIMARY KEY,
    company_id   TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id  TEXT,
    kind         TEXT NOT NULL,
    severity     TEXT NOT NULL CHECK (severity IN ('info', 'warning', 'error')),
    title        TEXT NOT NULL,
    message      TEXT NOT NULL,
    read         BOOLEAN NOT NULL DEFAULT 0,
    read_at      TIMESTAMP,
    read_by      TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at   TIMESTAMP NOT NULL,
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX notifications_inbox_idx ON notifications (company_id, read, created_at, id);
CREATE INDEX notifications_company_created_idx ON notifications (company_id, created_at, id);
CREATE INDEX notifications_workflow_idx ON notifications (workflow_id);
CREATE INDEX notifications_read_by_idx ON notifications (read_by);
