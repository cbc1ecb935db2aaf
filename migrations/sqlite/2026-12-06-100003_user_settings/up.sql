-- A member's own preferences. No row means the defaults (UTC, `en`, every notification).
-- The notification lists are JSON arrays of stored enum texts, validated by the server.
CREATE TABLE user_settings (
    user_id                   TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    company_id                TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    time_zone                 TEXT NOT NULL,
    locale                    TEXT NOT NULL,
    notification_severities   TEXT NOT NULL,
    muted_notification_kinds  TEXT NOT NULL,
    updated_at                TIMESTAMP NOT NULL
);
CREATE INDEX user_settings_company_idx ON user_settings (company_id, user_id);
