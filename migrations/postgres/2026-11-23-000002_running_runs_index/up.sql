-- The run-timeout sweeper looks for running runs of every company by last report time;
-- only running runs are indexed, so the index stays as small as the work in flight.
CREATE INDEX runs_running_updated_idx ON runs (updated_at) WHERE status = 'running';
