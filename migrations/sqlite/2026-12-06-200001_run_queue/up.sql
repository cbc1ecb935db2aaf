-- The executor run queue (issue 13): runs that wait for an executor to claim them under a
-- lease, schedules and signed webhooks that enqueue them, retries linked to the run they
-- retry. Every new column of runs is filled by the server; runs started with startRun
-- keep the defaults (trigger_kind 'manual', no queue fields).
ALTER TABLE runs ADD COLUMN trigger_kind TEXT NOT NULL DEFAULT 'manual'
    CHECK (trigger_kind IN ('manual', 'queue', 'schedule', 'webhook', 'retry'));
ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- When a queued run becomes claimable (the schedule occurrence a scheduled run is for).
ALTER TABLE runs ADD COLUMN not_before TIMESTAMP;
ALTER TABLE runs ADD COLUMN input TEXT;
ALTER TABLE runs ADD COLUMN output TEXT;
ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN max_attempts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE runs ADD COLUMN lease_id TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at TIMESTAMP;
-- retry_of, from_step_id and trigger_id are plain references, read through the company
-- like every lookup: deleting a schedule or webhook must not rewrite every run it made,
-- and a retry lives and dies with its workflow like the run it retries.
ALTER TABLE runs ADD COLUMN retry_of TEXT;
ALTER TABLE runs ADD COLUMN from_step_id TEXT;
ALTER TABLE runs ADD COLUMN trigger_id TEXT;
-- enqueueRun's key ("api:<key>"), a webhook request's ("hook:<webhook>:<key>"), a
-- schedule occurrence's ("schedule:<schedule>:<time>"): each enqueues at most one run.
ALTER TABLE runs ADD COLUMN idempotency_key TEXT;

-- claimRun: the company's queued runs, highest priority first, then oldest.
CREATE INDEX runs_queue_idx ON runs (company_id, priority DESC, not_before, id)
    WHERE status = 'queued';
-- The lease sweeper, across companies: only leased running runs are indexed.
CREATE INDEX runs_lease_idx ON runs (lease_expires_at)
    WHERE status = 'running' AND lease_expires_at IS NOT NULL;
CREATE INDEX runs_retry_of_idx ON runs (company_id, retry_of, created_at, id)
    WHERE retry_of IS NOT NULL;
CREATE UNIQUE INDEX runs_idempotency_idx ON runs (company_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    company_id     TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id    TEXT NOT NULL,
    name           TEXT,
    cron           TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    input          TEXT,
    priority       INTEGER NOT NULL DEFAULT 0,
    enabled        BOOLEAN NOT NULL,
    -- NULL while paused; otherwise the next occurrence, which the scheduler claims by a
    -- conditional update on this very value.
    next_fire_at   TIMESTAMP,
    last_fired_at  TIMESTAMP,
    last_run_id    TEXT,
    last_error     TEXT,
    created_at     TIMESTAMP NOT NULL,
    updated_at     TIMESTAMP NOT NULL,
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX schedules_company_workflow_idx ON schedules (company_id, workflow_id, created_at, id);
CREATE INDEX schedules_workflow_idx ON schedules (workflow_id);
-- The scheduler, across companies: only enabled schedules are indexed.
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE enabled AND next_fire_at IS NOT NULL;

CREATE TABLE webhooks (
    id                          TEXT PRIMARY KEY,
    company_id                  TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id                 TEXT NOT NULL,
    name                        TEXT,
    enabled                     BOOLEAN NOT NULL,
    -- The signing secret is derived from the server secret and this salt; it is never
    -- stored. Rotating draws a new salt (the previous one may stay valid for a while).
    secret_salt                 TEXT NOT NULL,
    previous_secret_salt        TEXT,
    previous_secret_expires_at  TIMESTAMP,
    secret_rotated_at           TIMESTAMP NOT NULL,
    last_used_at                TIMESTAMP,
    created_at                  TIMESTAMP NOT NULL,
    updated_at                  TIMESTAMP NOT NULL,
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX webhooks_company_workflow_idx ON webhooks (company_id, workflow_id, created_at, id);
CREATE INDEX webhooks_workflow_idx ON webhooks (workflow_id);
