-- Templates: a snapshot of a workflow version with typed parameters, published to the
-- company or to every company (PUBLIC). A template holds its whole definition, so it
-- outlives the workflow it came from (`source_workflow_id` is a plain note, no key).
CREATE TABLE workflow_templates (
    id                    TEXT PRIMARY KEY,
    company_id            TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    name                  TEXT NOT NULL,
    search_name           TEXT NOT NULL,
    description           TEXT,
    tags                  TEXT NOT NULL,
    visibility            TEXT NOT NULL CHECK (visibility IN ('company', 'public')),
    published             BOOLEAN NOT NULL,
    parameters            TEXT NOT NULL,
    steps                 TEXT NOT NULL,
    step_count            INTEGER NOT NULL,
    includes_screenshots  BOOLEAN NOT NULL,
    source_workflow_id    TEXT,
    source_version        INTEGER,
    created_by            TEXT REFERENCES users (id) ON DELETE SET NULL,
    usage_count           BIGINT NOT NULL DEFAULT 0,
    created_at            TIMESTAMP NOT NULL,
    updated_at            TIMESTAMP NOT NULL
);
CREATE INDEX workflow_templates_company_idx ON workflow_templates (company_id, created_at, id);
-- The catalogue every company reads: published PUBLIC templates, newest first.
CREATE INDEX workflow_templates_catalogue_idx
    ON workflow_templates (visibility, published, created_at, id);
CREATE INDEX workflow_templates_created_by_idx ON workflow_templates (created_by);

-- The screenshots a publisher chose to include: copies of the screenshot rows (the blob
-- stays where it is, and counts as referenced while a template names it).
CREATE TABLE template_screenshots (
    id            TEXT PRIMARY KEY,
    company_id    TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    template_id   TEXT NOT NULL REFERENCES workflow_templates (id) ON DELETE CASCADE,
    hash          TEXT NOT NULL,
    storage_key   TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    created_at    TIMESTAMP NOT NULL
);
CREATE INDEX template_screenshots_template_idx ON template_screenshots (company_id, template_id);
CREATE INDEX template_screenshots_key_idx ON template_screenshots (company_id, storage_key);
CREATE INDEX template_screenshots_template_fk_idx ON template_screenshots (template_id);

-- One rating per member and template; the row belongs to the rater's company. Averages
-- are read across companies by template (the primary key), by design.
CREATE TABLE template_ratings (
    company_id   TEXT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    template_id  TEXT NOT NULL REFERENCES workflow_templates (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stars        INTEGER NOT NULL CHECK (stars BETWEEN 1 AND 5),
    created_at   TIMESTAMP NOT NULL,
    updated_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (template_id, user_id)
);
CREATE INDEX template_ratings_company_idx ON template_ratings (company_id, user_id);
CREATE INDEX template_ratings_user_idx ON template_ratings (user_id);
