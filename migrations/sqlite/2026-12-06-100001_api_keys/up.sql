-- API keys: how executors (a browser extension, agents) authenticate. The secret is shown
-- once and kept only as a keyed hash (`secret_hash`, unique: it is how a presented key is
-- found); `prefix` is its first characters, to tell keys apart in lists. Keys are revoked,
-- never deleted, so the audit log's references stay meaningful.
CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    company_id    TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('executor')),
    prefix        TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    created_by    TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at    TIMESTAMP NOT NULL,
    expires_at    TIMESTAMP,
    revoked_at    TIMESTAMP,
    revoked_by    TEXT REFERENCES users (id) ON DELETE SET NULL,
    last_used_at  TIMESTAMP,
    UNIQUE (company_id, id)
);
CREATE INDEX api_keys_company_created_idx ON api_keys (company_id, created_at, id);
CREATE INDEX api_keys_created_by_idx ON api_keys (created_by);
CREATE INDEX api_keys_revoked_by_idx ON api_keys (revoked_by);
