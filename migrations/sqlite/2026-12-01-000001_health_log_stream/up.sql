-- Every health log's place in the stream `healthLogRecorded` follows. SQLite runs one
-- write transaction at a time, so a counter advanced inside the writing transaction is in
-- commit order. (A rowid would not do: deleting the newest rows lets SQLite reuse it.)
CREATE TABLE stream_positions (
    name      TEXT PRIMARY KEY,
    position  BIGINT NOT NULL
);
ALTER TABLE health_logs ADD COLUMN commit_seq BIGINT NOT NULL DEFAULT 0;
UPDATE health_logs SET commit_seq = rowid;
INSERT INTO stream_positions (name, position)
    SELECT 'health_logs', COALESCE(MAX(commit_seq), 0) FROM health_logs;
CREATE TRIGGER health_logs_commit_seq AFTER INSERT ON health_logs FOR EACH ROW
BEGIN
    UPDATE stream_positions SET position = position + 1 WHERE name = 'health_logs';
    UPDATE health_logs
        SET commit_seq = (SELECT position FROM stream_positions WHERE name = 'health_logs')
        WHERE rowid = NEW.rowid;
END;
-- The instance-wide tail of the stream, and each company's replay.
CREATE INDEX health_logs_stream_idx ON health_logs (commit_seq, id);
CREATE INDEX health_logs_company_stream_idx ON health_logs (company_id, commit_seq, id);
