DROP TABLE notifications;
DROP TABLE health_logs;
DROP TABLE runs;
DROP TABLE steps;
DROP TABLE screenshots;
DROP TABLE workflows;
DROP TABLE users;
DROP TABLE companies;
