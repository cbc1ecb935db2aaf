-- The audit log's own retention period: at least 30 days (an audit trail that forgets
-- within weeks is none), and the policy refuses one shorter than its run and notification
-- limits. NULL keeps the audit log forever.
ALTER TABLE retention_policies ADD COLUMN audit_max_age_days INTEGER CHECK (audit_max_age_days >= 30);
