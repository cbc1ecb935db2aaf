DROP TABLE workflow_share_links;
DROP TABLE workflow_shares;
ALTER TABLE workflows DROP COLUMN visibility;
