-- The company's runs by creation time: the root `runs` list (newest or oldest first), the
-- retention sweep's oldest-first batches, and the statistics' time range. The statistics
-- read status and times from the index alone (an index-only scan on PostgreSQL, a covering
-- index on SQLite): 100,000 runs are counted without touching the table.
CREATE INDEX runs_company_created_idx ON runs (company_id, created_at, id, status, started_at, finished_at);
-- Step outcomes by company, status and time, with the error type: the statistics' healed
-- and failed steps and failures by type read the index alone, and the `healthLogs` status
-- filter walks it in time order. It replaces (company_id, status), which it starts with.
CREATE INDEX health_logs_company_outcome_idx ON health_logs (company_id, status, created_at, error_type);
DROP INDEX health_logs_company_status_idx;
