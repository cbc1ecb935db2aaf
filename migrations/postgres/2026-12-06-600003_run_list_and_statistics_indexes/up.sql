-- The company's runs by creation time: the root `runs` list (newest or oldest first), the
-- retention sweep's oldest-first batches, and the statistics' time range.
CREATE INDEX runs_company_created_idx ON runs (company_id, created_at, id);
