ALTER TABLE retention_policies DROP COLUMN audit_max_age_days;
