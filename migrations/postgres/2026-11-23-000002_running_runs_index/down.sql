DROP INDEX runs_running_updated_idx;
