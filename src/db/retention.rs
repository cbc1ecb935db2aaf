//! The retention sweep's selections: which of a company's runs a policy removes (see
//! `domain::retention` for the rules), a batch at a time or counted for a preview.
//!
//! A run goes when it was created before the age cutoff, or when its workflow has at least
//! `keep_newest` newer runs; only finished runs ever go. The per-workflow boundary (the
//! `keep_newest`-th newest run of each workflow) is found by one index walk per workflow,
//! so a batch costs the company's workflows times `keep_newest` index steps plus the batch,
//! never a numbering of every run.

use chrono::NaiveDateTime;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text};

use super::Backend;
use super::partition::Bind;
use super::sql::{Statement, TenantScope, TenantStatement, sealed::Sealed};

/// The runs a policy removes. Build it with [`ExpiredRuns::new`].
#[derive(Debug, Clone)]
pub struct ExpiredRuns {
    /// The statuses a run may be removed in (the finished ones).
    finished: Vec<&'static str>,
    /// Runs created before this go.
    created_before: Option<NaiveDateTime>,
    /// Each workflow keeps this many of its newest runs (of any status).
    keep_newest: Option<i64>,
}

impl ExpiredRuns {
    /// `None` when neither rule is set (nothing goes) or no status may go.
    pub fn new(
        finished: Vec<&'static str>,
        created_before: Option<NaiveDateTime>,
        keep_newest: Option<i64>,
    ) -> Option<Self> {
        let keep_newest = keep_newest.map(|k| k.max(1));
        (!finished.is_empty() && (created_before.is_some() || keep_newest.is_some())).then_some(
            Self {
                finished,
                created_before,
                keep_newest,
            },
        )
    }

    /// The ids of up to `limit` runs that go, oldest first.
    pub fn batch(&self, limit: i64) -> ExpiredRunBatch<'_> {
        ExpiredRunBatch {
            runs: self,
            limit: limit.max(1),
        }
    }

    /// How many runs go, and how many health logs go with them.
    pub fn counts(&self) -> ExpiredRunCounts<'_> {
        ExpiredRunCounts(self)
    }

    /// `kth` (each workflow's `keep_newest`-th newest run) and `boundary` (its position),
    /// as common table expressions, when the count rule is set; true if written.
    fn boundary(&self, s: &mut Statement, company: &str) -> bool {
        let Some(keep) = self.keep_newest else {
            return false;
        };
        s.sql(
            "kth AS MATERIALIZED (SELECT w.id AS workflow_id, \
               (SELECT k.id FROM runs k WHERE k.company_id = ",
        )
        .text(company)
        .sql(
            " AND k.workflow_id = w.id \
               ORDER BY k.created_at DESC, k.id DESC LIMIT 1 OFFSET ",
        )
        .bind(Bind::Int(keep - 1))
        .sql(") AS run_id FROM workflows w WHERE w.company_id = ")
        .text(company)
        .sql(
            "), boundary AS MATERIALIZED (SELECT kth.workflow_id, b.created_at, b.id \
               FROM kth JOIN runs b ON b.company_id = ",
        )
        .text(company)
        .sql(" AND b.id = kth.run_id)");
        true
    }

    fn finished_condition(&self, s: &mut Statement) {
        s.sql("r.status IN (").texts(&self.finished).sql(")");
    }
}

/// See [`ExpiredRuns::batch`]; rows are [`RunId`]s.
#[derive(Debug)]
pub struct ExpiredRunBatch<'a> {
    runs: &'a ExpiredRuns,
    limit: i64,
}

impl Sealed for ExpiredRunBatch<'_> {}

impl TenantStatement for ExpiredRunBatch<'_> {
    fn statement(&self, scope: &TenantScope<'_>, backend: Backend) -> Statement {
        let company = scope.company;
        let runs = self.runs;
        let mut s = Statement::new(backend);
        if runs.keep_newest.is_some() {
            s.sql("WITH ");
            runs.boundary(&mut s, company);
            s.sql(" ");
        }
        s.sql("SELECT id FROM (");
        let mut arms = 0;
        if let Some(before) = runs.created_before {
            // Oldest first along (company_id, created_at, id): stops after the batch.
            s.sql(
                "SELECT id, created_at FROM (SELECT r.id, r.created_at FROM runs r \
                 WHERE r.company_id = ",
            )
            .text(company)
            .sql(" AND ");
            runs.finished_condition(&mut s);
            s.sql(" AND r.created_at < ")
                .bind(Bind::Time(before))
                .sql(" ORDER BY r.created_at, r.id LIMIT ")
                .bind(Bind::Int(self.limit))
                .sql(") AS by_age");
            arms += 1;
        }
        if runs.keep_newest.is_some() {
            if arms > 0 {
                s.sql(" UNION ");
            }
            // Each workflow's runs below its boundary, along (company_id, workflow_id,
            // created_at, id).
            s.sql(
                "SELECT id, created_at FROM (SELECT r.id, r.created_at FROM boundary \
                 JOIN runs r ON r.company_id = ",
            )
            .text(company)
            .sql(
                " AND r.workflow_id = boundary.workflow_id \
                 AND (r.created_at, r.id) < (boundary.created_at, boundary.id) WHERE ",
            );
            runs.finished_condition(&mut s);
            s.sql(" LIMIT ")
                .bind(Bind::Int(self.limit))
                .sql(") AS by_count");
        }
        s.sql(") AS expired ORDER BY created_at, id LIMIT ")
            .bind(Bind::Int(self.limit));
        s
    }
}

/// See [`ExpiredRuns::counts`]; the one row is [`ExpiredCounts`].
#[derive(Debug)]
pub struct ExpiredRunCounts<'a>(&'a ExpiredRuns);

impl Sealed for ExpiredRunCounts<'_> {}

impl TenantStatement for ExpiredRunCounts<'_> {
    fn statement(&self, scope: &TenantScope<'_>, backend: Backend) -> Statement {
        let company = scope.company;
        let runs = self.0;
        let mut s = Statement::new(backend);
        s.sql("WITH ");
        if runs.boundary(&mut s, company) {
            s.sql(", ");
        }
        s.sql("expired AS MATERIALIZED (SELECT r.id FROM runs r ");
        if runs.keep_newest.is_some() {
            s.sql("LEFT JOIN boundary ON boundary.workflow_id = r.workflow_id ");
        }
        s.sql("WHERE r.company_id = ").text(company).sql(" AND ");
        runs.finished_condition(&mut s);
        s.sql(" AND (");
        if let Some(before) = runs.created_before {
            s.sql("r.created_at < ").bind(Bind::Time(before));
            if runs.keep_newest.is_some() {
                s.sql(" OR ");
            }
        }
        if runs.keep_newest.is_some() {
            s.sql(
                "(boundary.id IS NOT NULL \
                 AND (r.created_at, r.id) < (boundary.created_at, boundary.id))",
            );
        }
        s.sql(
            ")) SELECT (SELECT COUNT(*) FROM expired) AS runs, \
             (SELECT COUNT(*) FROM health_logs h WHERE h.company_id = ",
        )
        .text(company)
        .sql(" AND h.run_id IN (SELECT id FROM expired)) AS health_logs");
        s
    }
}

/// A run's id.
#[derive(Debug, Clone, QueryableByName)]
pub struct RunId {
    #[diesel(sql_type = Text)]
    pub id: String,
}

/// What a policy removes from runs now.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct ExpiredCounts {
    #[diesel(sql_type = BigInt)]
    pub runs: i64,
    #[diesel(sql_type = BigInt)]
    pub health_logs: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> NaiveDateTime {
        chrono::DateTime::from_timestamp(0, 0)
            .unwrap_or_default()
            .naive_utc()
    }

    #[test]
    fn nothing_expires_without_a_rule() {
        assert!(ExpiredRuns::new(vec!["succeeded"], None, None).is_none());
        assert!(ExpiredRuns::new(vec![], Some(at()), None).is_none());
    }

    #[test]
    fn every_table_is_read_within_the_company() {
        let Some(runs) = ExpiredRuns::new(vec!["succeeded", "failed"], Some(at()), Some(3)) else {
            panic!("a rule is set");
        };
        for (sql, binds) in [
            runs.batch(10)
                .statement(
                    &TenantScope {
                        company: "c",
                        member: None,
                    },
                    Backend::Postgres,
                )
                .into_parts(),
            runs.counts()
                .statement(
                    &TenantScope {
                        company: "c",
                        member: None,
                    },
                    Backend::Postgres,
                )
                .into_parts(),
        ] {
            let tables = sql.matches("FROM runs").count()
                + sql.matches("JOIN runs").count()
                + sql.matches("FROM workflows").count()
                + sql.matches("FROM health_logs").count();
            let companies = binds
                .iter()
                .filter(|b| matches!(b, Bind::Text(t) if t == "c"))
                .count();
            assert_eq!(tables, companies, "{sql}");
        }
    }
}
