-- Restricted workflows and their shares, and public share links.
--
-- A RESTRICTED workflow is seen only by admins, its creator and the members it is shared
-- with; the unit of work adds that condition to every read of a workflow-reaching table
-- for a regular member (src/db/visibility.rs), which is what the share index serves.
ALTER TABLE workflows ADD COLUMN visibility TEXT NOT NULL DEFAULT 'company'
    CHECK (visibility IN ('company', 'restricted'));

CREATE TABLE workflow_shares (
    id           TEXT PRIMARY KEY,
    company_id   TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id  TEXT NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permission   TEXT NOT NULL CHECK (permission IN ('view', 'run', 'edit')),
    created_by   TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    UNIQUE (company_id, workflow_id, user_id),
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX workflow_shares_user_idx ON workflow_shares (company_id, user_id);
CREATE INDEX workflow_shares_user_fk_idx ON workflow_shares (user_id);
CREATE INDEX workflow_shares_created_by_idx ON workflow_shares (created_by);

-- A public link stores only the SHA-256 of its token. The anonymous read path finds a
-- link by that hash alone (it has no company to start from), hence the global unique
-- index; everything else about links is reached through the company first.
CREATE TABLE workflow_share_links (
    id                TEXT PRIMARY KEY,
    company_id        TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    workflow_id       TEXT NOT NULL,
    token_hash        TEXT NOT NULL UNIQUE,
    created_by        TEXT REFERENCES users (id) ON DELETE SET NULL,
    created_at        TIMESTAMP NOT NULL,
    expires_at        TIMESTAMP NOT NULL,
    revoked_at        TIMESTAMP,
    access_count      BIGINT NOT NULL DEFAULT 0,
    last_accessed_at  TIMESTAMP,
    FOREIGN KEY (company_id, workflow_id) REFERENCES workflows (company_id, id) ON DELETE CASCADE
);
CREATE INDEX workflow_share_links_workflow_idx
    ON workflow_share_links (company_id, workflow_id, created_at, id);
CREATE INDEX workflow_share_links_created_by_idx ON workflow_share_links (created_by);
