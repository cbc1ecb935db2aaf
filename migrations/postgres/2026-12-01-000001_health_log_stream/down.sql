DROP INDEX health_logs_company_stream_idx;
DROP INDEX health_logs_stream_idx;
ALTER TABLE health_logs DROP COLUMN commit_seq;
