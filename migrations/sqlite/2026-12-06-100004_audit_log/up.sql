-- Who did what, written in the same transaction as the action. Append-only through the
-- API. No foreign keys on actor or target: an entry outlives the member, key or workflow
-- it names (the actor's label is kept as it was).
CREATE TABLE audit_log (
    id              TEXT PRIMARY KEY,
    company_id      TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    created_at      TIMESTAMP NOT NULL,
    actor_type      TEXT NOT NULL CHECK (actor_type IN ('user', 'api_key', 'anonymous', 'system')),
    actor_id        TEXT,
    actor_label     TEXT,
    action          TEXT NOT NULL,
    target_type     TEXT,
    target_id       TEXT,
    client_address  TEXT,
    user_agent      TEXT,
    summary         TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_company_created_idx ON audit_log (company_id, created_at, id);
CREATE INDEX audit_log_company_actor_idx ON audit_log (company_id, actor_id, created_at, id);
CREATE INDEX audit_log_company_action_idx ON audit_log (company_id, action, created_at, id);
CREATE INDEX audit_log_company_target_idx ON audit_log (company_id, target_id, created_at, id);
