-- 100,000 runs (and 500,000 health logs) in each of two companies, over the 30 days before
-- now, for measuring `companyStats` / `workflowStats` (BENCHMARKS.md, "Statistics").
-- psql -v company_a=<id> -v company_b=<id> -f bench/statistics/seed-postgres.sql
-- Both companies must exist (sign them up through the API first).
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO workflows (id, company_id, name, status, created_at, updated_at, search_name)
SELECT c.id || '-wf-' || w, c.id, 'Bench workflow ' || w, 'active', now(), now(), 'bench workflow ' || w
FROM (VALUES (:'company_a'), (:'company_b')) AS c(id), generate_series(0, 19) AS w;

INSERT INTO runs (id, company_id, workflow_id, status, steps_total, steps_completed, steps_failed,
                  steps_healed, started_at, finished_at, created_at, updated_at)
SELECT c.id || '-run-' || lpad(i::text, 6, '0'), c.id, c.id || '-wf-' || (i % 20),
       s.status, 5, 5, 0, 0,
       CASE WHEN s.status = 'queued' THEN NULL ELSE t.at END,
       CASE WHEN s.status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
            THEN t.at + ((i * 7919) % 120000) * interval '1 millisecond' END,
       t.at, t.at
FROM (VALUES (:'company_a'), (:'company_b')) AS c(id),
     generate_series(0, 99999) AS i,
     LATERAL (SELECT (now() AT TIME ZONE 'utc') - (i * interval '25.92 seconds') AS at) AS t,
     LATERAL (SELECT CASE
        WHEN i % 20 < 14 THEN 'succeeded' WHEN i % 20 < 17 THEN 'failed'
        WHEN i % 20 = 17 THEN 'cancelled' WHEN i % 20 = 18 THEN 'timed_out'
        WHEN i % 40 = 19 THEN 'running' ELSE 'queued' END AS status) AS s;

INSERT INTO health_logs (id, company_id, workflow_id, run_id, status, error_type, execution_time_ms,
                         created_at)
SELECT r.id || '-log-' || j, r.company_id, r.workflow_id, r.id,
       CASE WHEN (n * 7 + j) % 20 < 16 THEN 'success' WHEN (n * 7 + j) % 20 < 18 THEN 'healed_deterministic'
            WHEN (n * 7 + j) % 20 = 18 THEN 'healed_ai' ELSE 'failed' END,
       CASE WHEN (n * 7 + j) % 20 = 19 THEN 'error_type_' || ((n + j) % 8) END,
       100, r.created_at + j * interval '2 seconds'
FROM (SELECT id, company_id, workflow_id, created_at, row_number() OVER () AS n FROM runs
      WHERE company_id IN (:'company_a', :'company_b')) AS r,
     generate_series(0, 4) AS j;
COMMIT;
VACUUM ANALYZE runs;
VACUUM ANALYZE health_logs;
