DROP TABLE template_ratings;
DROP TABLE template_screenshots;
DROP TABLE workflow_templates;
