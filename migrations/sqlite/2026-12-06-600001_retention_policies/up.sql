-- Each company's retention policy: how long finished runs (with their health logs) and
-- notifications are kept. NULL limits keep forever. The sweeper on every instance claims
-- a due company with a conditional update (claimed_by / claimed_until, a lease renewed by
-- every batch), so two instances never sweep one company at once; `version` grows with
-- every change of the limits, and a batch deletes only while its pass's version is still
-- the policy's.
CREATE TABLE retention_policies (
    company_id                 TEXT PRIMARY KEY REFERENCES companies (id) ON DELETE CASCADE,
    run_max_age_days           INTEGER CHECK (run_max_age_days > 0),
    runs_kept_per_workflow     INTEGER CHECK (runs_kept_per_workflow > 0),
    notification_max_age_days  INTEGER CHECK (notification_max_age_days > 0),
    version                    BIGINT NOT NULL DEFAULT 1,
    updated_at                 TIMESTAMP NOT NULL,
    next_sweep_at              TIMESTAMP NOT NULL,
    claimed_by                 TEXT,
    claimed_until              TIMESTAMP
);
-- The sweepers look for due companies across all companies (one row per company, so the
-- table's key cannot lead with the company for this question).
CREATE INDEX retention_policies_due_idx ON retention_policies (next_sweep_at);
