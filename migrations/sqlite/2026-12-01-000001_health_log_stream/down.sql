DROP INDEX health_logs_company_stream_idx;
DROP INDEX health_logs_stream_idx;
DROP TRIGGER health_logs_commit_seq;
ALTER TABLE health_logs DROP COLUMN commit_seq;
DROP TABLE stream_positions;
