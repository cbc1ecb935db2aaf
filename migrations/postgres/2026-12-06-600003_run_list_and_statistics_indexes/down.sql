CREATE INDEX health_logs_company_status_idx ON health_logs (company_id, status);
DROP INDEX health_logs_company_outcome_idx;
DROP INDEX runs_company_created_idx;
