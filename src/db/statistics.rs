//! The statements behind run statistics (`domain::statistics`): counts by time bucket and
//! status, duration percentiles, step outcomes and failure types, each one aggregate
//! statement over the company's runs or health logs in a time range (optionally of one
//! workflow), so a range of 100,000 runs is summed by the database, not read into memory.
//!
//! Percentiles are PostgreSQL's `percentile_cont` (linear interpolation between the two
//! closest ranks): on PostgreSQL that aggregate itself, once per bucket and once overall
//! (`GROUPING SETS`); SQLite has no such aggregate, so there each value's rank and the
//! count per bucket (and overall) come from window functions, and the two ranks around
//! `p·(n−1)` are picked out by integer arithmetic (SQLite may lack `floor`). One sort per
//! grouping either way; measured in BENCHMARKS.md ("Statistics").

use chrono::NaiveDateTime;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamp};

use super::Backend;
use super::partition::Bind;
use super::sql::{Dialect, Statement, TenantScope, TenantStatement, sealed::Sealed};
use super::visibility::Reach;

/// The width of a time bucket; buckets start on whole UTC hours or days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Hour,
    Day,
}

/// Which rows the statistics cover: `[from, to)` by creation time, of one workflow or all.
#[derive(Debug, Clone)]
pub struct StatsRange {
    pub workflow_id: Option<String>,
    pub from: NaiveDateTime,
    pub to: NaiveDateTime,
    pub bucket: Bucket,
}

impl StatsRange {
    /// `company_id = .. [AND workflow_id = ..] AND created_at >= from AND created_at < to`
    /// for `table` aliased `alias`, and only rows of workflows the viewer may see.
    fn within(&self, s: &mut Statement, scope: &TenantScope<'_>, alias: &str) {
        s.sql(&format!("{alias}.company_id = ")).text(scope.company);
        // The condition qualifies its columns with the name it is given: the alias here.
        scope.visible(s, alias, Reach::Child);
        if let Some(workflow) = &self.workflow_id {
            s.sql(&format!(" AND {alias}.workflow_id = "))
                .text(workflow);
        }
        s.sql(&format!(" AND {alias}.created_at >= "))
            .bind(Bind::Time(self.from))
            .sql(&format!(" AND {alias}.created_at < "))
            .bind(Bind::Time(self.to));
    }

    fn bucket_of(&self, s: &Statement, column: &str) -> String {
        Dialect(s.backend()).truncate(column, self.bucket == Bucket::Day)
    }

    /// Runs per bucket and status; rows are [`StatusCount`]s.
    pub fn runs_by_status(&self) -> RunsByStatus<'_> {
        RunsByStatus(self)
    }

    /// The 50th and 95th percentile of the run durations of runs in `statuses` that have
    /// both a start and an end, per bucket and overall; rows are [`DurationRow`]s (the
    /// overall row has no bucket; no rows when there are no such runs).
    pub fn run_durations<'a>(&'a self, statuses: &'a [&'static str]) -> RunDurations<'a> {
        RunDurations {
            range: self,
            statuses,
        }
    }

    /// Health logs per bucket and status, for logs in `statuses`; rows are
    /// [`StatusCount`]s.
    pub fn step_outcomes<'a>(&'a self, statuses: &'a [&'static str]) -> StepOutcomes<'a> {
        StepOutcomes {
            range: self,
            statuses,
        }
    }

    /// The `limit` most frequent error types among health logs in `status`, most frequent
    /// first (ties by type, by code point; unclassified last among equals); rows are
    /// [`ErrorTypeCount`]s.
    pub fn failure_types(&self, status: &'static str, limit: i64) -> FailureTypes<'_> {
        FailureTypes {
            range: self,
            status,
            limit,
        }
    }
}

/// See [`StatsRange::runs_by_status`].
#[derive(Debug)]
pub struct RunsByStatus<'a>(&'a StatsRange);

impl Sealed for RunsByStatus<'_> {}

impl TenantStatement for RunsByStatus<'_> {
    fn statement(&self, scope: &TenantScope<'_>, backend: Backend) -> Statement {
        let mut s = Statement::new(backend);
        let bucket = self.0.bucket_of(&s, "r.created_at");
        s.sql(&format!(
            "SELECT {bucket} AS bucket, r.status AS status, COUNT(*) AS n FROM runs r WHERE "
        ));
        self.0.within(&mut s, scope, "r");
        s.sql(" GROUP BY 1, 2");
        s
    }
}

/// See [`StatsRange::run_durations`].
#[derive(Debug)]
pub struct RunDurations<'a> {
    range: &'a StatsRange,
    statuses: &'a [&'static str],
}

/// The interpolated `p`th percentile (0–100) of `ms` over rows ranked `rank` (0-based)
/// among `count`, as an aggregate over those rows.
fn percentile(rank: &str, count: &str, p: u32) -> String {
    let position = format!("({p} * ({count} - 1))");
    let lower = format!("MAX(CASE WHEN {rank} = {position} / 100 THEN ms END)");
    let upper = format!("MAX(CASE WHEN {rank} = {position} / 100 + 1 THEN ms END)");
    format!(
        "CAST({lower} + (COALESCE({upper}, {lower}) - {lower}) * ({position} % 100) / 100.0 \
         AS DOUBLE PRECISION)"
    )
}

impl Sealed for RunDurations<'_> {}

impl TenantStatement for RunDurations<'_> {
    fn statement(&self, scope: &TenantScope<'_>, backend: Backend) -> Statement {
        let mut s = Statement::new(backend);
        let bucket = self.range.bucket_of(&s, "r.created_at");
        let ms = Dialect(backend).milliseconds_between("r.started_at", "r.finished_at");
        s.sql(&format!(
            "WITH d AS (SELECT {bucket} AS bucket, {ms} AS ms FROM runs r WHERE "
        ));
        self.range.within(&mut s, scope, "r");
        s.sql(" AND r.status IN (")
            .texts(self.statuses)
            .sql(") AND r.started_at IS NOT NULL AND r.finished_at IS NOT NULL)");
        if backend == Backend::Postgres {
            // The overall row is the empty grouping set's: no bucket (there even without
            // runs, with no percentiles).
            s.sql(
                " SELECT bucket, COUNT(*) AS runs, \
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50, \
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) AS p95 \
                 FROM d GROUP BY GROUPING SETS ((bucket), ())",
            );
            return s;
        }
        s.sql(
            ", ranked AS (SELECT bucket, ms, \
               ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY ms) - 1 AS bucket_rank, \
               COUNT(*) OVER (PARTITION BY bucket) AS bucket_count, \
               ROW_NUMBER() OVER (ORDER BY ms) - 1 AS overall_rank, \
               COUNT(*) OVER () AS overall_count FROM d) ",
        );
        s.sql(&format!(
            "SELECT bucket, bucket_count AS runs, {} AS p50, {} AS p95 FROM ranked \
             GROUP BY bucket, bucket_count \
             UNION ALL \
             SELECT NULL, overall_count, {} , {} FROM ranked GROUP BY overall_count",
            percentile("bucket_rank", "bucket_count", 50),
            percentile("bucket_rank", "bucket_count", 95),
            percentile("overall_rank", "overall_count", 50),
            percentile("overall_rank", "overall_count", 95),
        ));
        s
    }
}

/// See [`StatsRange::step_outcomes`].
#[derive(Debug)]
pub struct StepOutcomes<'a> {
    range: &'a StatsRange,
    statuses: &'a [&'static str],
}

impl Sealed for StepOutcomes<'_> {}

impl TenantStatement for StepOutcomes<'_> {
    fn statement(&self, scope: &TenantScope<'_>, backend: Backend) -> Statement {
        let mut s = Statement::new(backend);
        let bucket = self.range.bucket_of(&s, "h.created_at");
        s.sql(&format!(
            "SELECT {bucket} AS bucket, h.status AS status, COUNT(*) AS n \
             FROM health_logs h WHERE "
        ));
        self.range.within(&mut s, scope, "h");
        s.sql(" AND h.status IN (")
            .texts(self.statuses)
            .sql(") GROUP BY 1, 2");
        s
    }
}

/// See [`StatsRange::failure_types`].
#[derive(Debug)]
pub struct FailureTypes<'a> {
    range: &'a StatsRange,
    status: &'static str,
    limit: i64,
}

impl Sealed for FailureTypes<'_> {}

impl TenantStatement for FailureTypes<'_> {
    fn statement(&self, scope: &TenantScope<'_>, backend: Backend) -> Statement {
        let mut s = Statement::new(backend);
        let by_code_point = Dialect(backend).by_code_point("h.error_type");
        s.sql("SELECT h.error_type AS error_type, COUNT(*) AS n FROM health_logs h WHERE ");
        self.range.within(&mut s, scope, "h");
        s.sql(" AND h.status = ")
            .text(self.status)
            .sql(&format!(
                " GROUP BY h.error_type ORDER BY n DESC, h.error_type IS NULL, {by_code_point} \
                 LIMIT "
            ))
            .bind(Bind::Int(self.limit));
        s
    }
}

/// How many rows of one status fell into one bucket.
#[derive(Debug, Clone, QueryableByName)]
pub struct StatusCount {
    #[diesel(sql_type = Timestamp)]
    pub bucket: NaiveDateTime,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Duration percentiles of one bucket (or overall: no bucket), in milliseconds.
#[derive(Debug, Clone, QueryableByName)]
pub struct DurationRow {
    #[diesel(sql_type = Nullable<Timestamp>)]
    pub bucket: Option<NaiveDateTime>,
    #[diesel(sql_type = BigInt)]
    pub runs: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub p50: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub p95: Option<f64>,
}

/// How many failed steps had one error type (`None`: unclassified).
#[derive(Debug, Clone, QueryableByName)]
pub struct ErrorTypeCount {
    #[diesel(sql_type = Nullable<Text>)]
    pub error_type: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(workflow: Option<&str>) -> StatsRange {
        let at = chrono::DateTime::from_timestamp(0, 0)
            .unwrap_or_default()
            .naive_utc();
        StatsRange {
            workflow_id: workflow.map(str::to_owned),
            from: at,
            to: at,
            bucket: Bucket::Hour,
        }
    }

    const COMPANY: TenantScope<'static> = TenantScope {
        company: "c",
        member: None,
    };

    #[test]
    fn statements_stay_within_the_company_and_workflow() {
        let range = range(Some("w"));
        let statements = [
            range.runs_by_status().statement(&COMPANY, Backend::Sqlite),
            range
                .run_durations(&["succeeded"])
                .statement(&COMPANY, Backend::Sqlite),
            range
                .step_outcomes(&["failed"])
                .statement(&COMPANY, Backend::Sqlite),
            range
                .failure_types("failed", 20)
                .statement(&COMPANY, Backend::Sqlite),
        ];
        for statement in statements {
            let (sql, binds) = statement.into_parts();
            assert!(sql.contains(".company_id = ?") && sql.contains(".workflow_id = ?"));
            assert!(matches!(&binds[0], Bind::Text(c) if c == "c"), "{sql}");
            assert!(matches!(&binds[1], Bind::Text(w) if w == "w"), "{sql}");
            assert!(!sql.contains('$'));
        }
    }

    #[test]
    fn a_limited_member_reads_only_rows_of_workflows_they_may_see() {
        let range = range(None);
        let member = TenantScope {
            company: "c",
            member: Some("u"),
        };
        let statements = [
            range.runs_by_status().statement(&member, Backend::Postgres),
            range
                .step_outcomes(&["failed"])
                .statement(&member, Backend::Postgres),
        ];
        for statement in statements {
            let (sql, binds) = statement.into_parts();
            // The condition names the statement's alias, not the table.
            assert!(
                sql.contains("\"r\".\"workflow_id\" IN")
                    || sql.contains("\"h\".\"workflow_id\" IN"),
                "{sql}"
            );
            assert!(
                binds.iter().any(|b| matches!(b, Bind::Text(u) if u == "u")),
                "{sql}"
            );
        }
        let (unlimited, _) = range
            .runs_by_status()
            .statement(&COMPANY, Backend::Postgres)
            .into_parts();
        assert!(!unlimited.contains("workflow_id\" IN"), "{unlimited}");
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let sql = percentile("i", "n", 95);
        assert!(sql.contains("(95 * (n - 1)) / 100 + 1"), "{sql}");
        assert!(sql.contains("((95 * (n - 1)) % 100) / 100.0"), "{sql}");
    }
}
