-- The SQLite twin of seed-postgres.sql: 100,000 runs and 500,000 health logs in each of two
-- companies over the 30 days before now. Replace :company_a and :company_b first, e.g.
-- sed "s/:company_a/'<id>'/; s/:company_b/'<id>'/" bench/statistics/seed-sqlite.sql | sqlite3 stepwise.db
BEGIN;
WITH RECURSIVE w(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM w WHERE i < 19),
     c(id) AS (VALUES (:company_a), (:company_b))
INSERT INTO workflows (id, company_id, name, status, created_at, updated_at, search_name)
SELECT c.id || '-wf-' || w.i, c.id, 'Bench workflow ' || w.i, 'active',
       strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now'),
       'bench workflow ' || w.i
FROM c, w;

WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99999),
     c(id) AS (VALUES (:company_a), (:company_b)),
     r AS (SELECT c.id AS company, n.i AS i,
                  strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (n.i * 25.92) || ' seconds') AS at,
                  CASE WHEN n.i % 20 < 14 THEN 'succeeded' WHEN n.i % 20 < 17 THEN 'failed'
                       WHEN n.i % 20 = 17 THEN 'cancelled' WHEN n.i % 20 = 18 THEN 'timed_out'
                       WHEN n.i % 40 = 19 THEN 'running' ELSE 'queued' END AS status
           FROM c, n)
INSERT INTO runs (id, company_id, workflow_id, status, steps_total, steps_completed, steps_failed,
                  steps_healed, started_at, finished_at, created_at, updated_at)
SELECT company || '-run-' || printf('%06d', i), company, company || '-wf-' || (i % 20), status,
       5, 5, 0, 0,
       CASE WHEN status = 'queued' THEN NULL ELSE at END,
       CASE WHEN status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
            THEN strftime('%Y-%m-%d %H:%M:%f', at, '+' || (((i * 7919) % 120000) / 1000.0) || ' seconds') END,
       at, at
FROM r;

WITH RECURSIVE j(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM j WHERE k < 4)
INSERT INTO health_logs (id, company_id, workflow_id, run_id, status, error_type, execution_time_ms,
                         created_at)
SELECT r.id || '-log-' || j.k, r.company_id, r.workflow_id, r.id,
       CASE WHEN (r.rowid * 7 + j.k) % 20 < 16 THEN 'success'
            WHEN (r.rowid * 7 + j.k) % 20 < 18 THEN 'healed_deterministic'
            WHEN (r.rowid * 7 + j.k) % 20 = 18 THEN 'healed_ai' ELSE 'failed' END,
       CASE WHEN (r.rowid * 7 + j.k) % 20 = 19 THEN 'error_type_' || ((r.rowid + j.k) % 8) END,
       100, strftime('%Y-%m-%d %H:%M:%f', r.created_at, '+' || (j.k * 2) || ' seconds')
FROM runs r, j
WHERE r.company_id IN (:company_a, :company_b);
COMMIT;
ANALYZE;
