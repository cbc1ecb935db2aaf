-- Sessions of members: each sign-in opens one, and it lives as long as its refresh tokens
-- keep being rotated (`expires_at` moves forward with every refresh). Ending a session
-- deletes it, and its refresh tokens with it.
CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    company_id      TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at      TIMESTAMP NOT NULL,
    last_used_at    TIMESTAMP NOT NULL,
    expires_at      TIMESTAMP NOT NULL,
    user_agent      TEXT,
    client_address  TEXT,
    UNIQUE (company_id, id)
);
CREATE INDEX sessions_company_user_idx ON sessions (company_id, user_id, last_used_at, id);
CREATE INDEX sessions_user_idx ON sessions (user_id);

-- Every refresh token a session was given, kept as a keyed hash. A rotated token
-- (`rotated_at` set) that comes back has been copied: its whole session is ended.
CREATE TABLE refresh_tokens (
    token_hash   TEXT PRIMARY KEY,
    company_id   TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    session_id   TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    rotated_at   TIMESTAMP,
    FOREIGN KEY (company_id, session_id) REFERENCES sessions (company_id, id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (company_id, session_id, created_at);
