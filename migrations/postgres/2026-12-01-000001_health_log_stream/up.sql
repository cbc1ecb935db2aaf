-- Every health log's place in the stream `healthLogRecorded` follows: the id of the
-- transaction that wrote it. Transactions do not commit in id order, so readers only take
-- logs below the oldest transaction still running (pg_snapshot_xmin): below that mark no
-- transaction can still commit, so a position once passed is never filled in later.
ALTER TABLE health_logs
    ADD COLUMN commit_seq BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
-- The instance-wide tail of the stream, and each company's replay.
CREATE INDEX health_logs_stream_idx ON health_logs (commit_seq, id);
CREATE INDEX health_logs_company_stream_idx ON health_logs (company_id, commit_seq, id);
