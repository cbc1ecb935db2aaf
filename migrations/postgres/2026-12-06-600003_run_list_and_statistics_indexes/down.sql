DROP INDEX runs_company_created_idx;
