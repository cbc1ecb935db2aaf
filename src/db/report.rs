//! A step report in one statement (PostgreSQL): what `domain::run::report` does in a
//! transaction of several statements — lock and read the run, check who may report and
//! the lease, look for the report's idempotency key, check the run's status, read the
//! step, insert the health log, write a healing back to the step, count the report on the
//! run — written as one data-modifying CTE that runs on its own, outside an explicit
//! transaction. PostgreSQL runs a single statement atomically, so it needs no
//! BEGIN/COMMIT. A report was 6 statements in a transaction (7 for a member, 7–8 with a
//! healing; 9–12 round trips, as the inserts and updates were prepared anew each time)
//! and is now one statement, prepared once per connection: one round trip.
//!
//! # Why this is the same as the transaction
//! - **Order.** Every write depends on `run` through the rows it is fed from, so the run
//!   is locked before anything is written, and the step (`healed`) only after the run:
//!   the lock order of the `domain` docs (run → step). A report that sends its workflow
//!   to review is not written here: it takes the transactional path (its notification's
//!   text is made in Rust from the workflow).
//! - **What the checks read.** After waiting for a concurrent writer of the run, `FOR NO
//!   KEY UPDATE` hands back the run as that writer committed it (READ COMMITTED re-reads
//!   a locked row), so the status and lease checks see the latest run, as the
//!   transactional path does. The other reads (the step, an earlier log with the same
//!   key) use the statement's snapshot, taken before that wait. A same-key report that
//!   committed in between is therefore not seen by `original`, but the insert's unique
//!   index sees it (`ON CONFLICT DO NOTHING` waits for it and then does nothing); every
//!   later write hangs off the inserted row, so nothing is counted, and the answer says
//!   `counted` without a log: the caller reads the original. A step deleted in between
//!   fails the insert's foreign key, as in the transaction.
//! - **Time.** The time is the caller's clock, but never before the run's last change
//!   (`GREATEST` with the locked run's `updated_at`): a report that waited for the lock
//!   still stamps the run and its log no earlier than the change it waited for, so
//!   `updated_at` follows commit order as when the time is taken after the lock.
//! - **Answers.** The statement answers one row — the verdict, the run (as counted, or as
//!   locked when nothing was counted) and the log (the new one, or the original of a
//!   duplicate) under `log_`-prefixed names — or none when the viewer has no such run.

use chrono::NaiveDateTime;

use super::Backend;
use super::partition::Bind;
use super::sql::{Statement, TenantScope, TenantStatement, sealed::Sealed};
use super::visibility::{self, Reach};

crate::text_enum! {
    /// What the report statement decided, in the order the transactional path checks.
    pub enum Verdict {
        /// A member who sees the workflow but may not run it (FORBIDDEN).
        Forbidden = "forbidden",
        /// The lease given is not the run's (CONFLICT).
        LeaseLost = "lease_lost",
        /// The run has a log with this idempotency key: nothing was written.
        Duplicate = "duplicate",
        /// The run is not queued or running (BAD_USER_INPUT).
        RunOver = "run_over",
        /// No such step for this viewer (NOT_FOUND).
        NoStep = "no_step",
        /// The step belongs to another workflow than the run (BAD_USER_INPUT).
        OtherWorkflow = "other_workflow",
        /// Recorded and counted — unless the answer has no log: then a concurrent report
        /// with the same key got in first and nothing was written.
        Counted = "counted",
    }
}

/// One step report, its values as validated by `domain::run::report`.
#[derive(Debug, Clone)]
pub struct StepReport<'a> {
    pub run_id: &'a str,
    pub step_id: &'a str,
    /// The lease the executor holds, if it claimed the run.
    pub lease_id: Option<&'a str>,
    /// The new log's id.
    pub log_id: &'a str,
    pub idempotency_key: Option<&'a str>,
    /// The log's status, as stored.
    pub status: &'a str,
    pub error_type: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub healing_confidence: Option<f64>,
    pub deterministic_score: Option<f64>,
    pub ai_score: Option<f64>,
    pub page_url: Option<&'a str>,
    pub execution_time_ms: Option<i32>,
    /// Now, by the caller's clock (see the module docs: never before the run's last change).
    pub at: NaiveDateTime,
    /// What the report adds to the run's completed, healed and failed counters.
    pub increments: (i32, i32, i32),
    /// For a healed step: how it was healed, written to the step with the time and the
    /// confidence; `None` leaves the step alone.
    pub healing_method: Option<&'a str>,
    /// For a healed step that sent them: the selectors (JSON text) that found the element.
    pub healed_selectors: Option<&'a str>,
}

impl Sealed for StepReport<'_> {}

impl TenantStatement for StepReport<'_> {
    fn statement(&self, scope: &TenantScope<'_>, backend: Backend) -> Statement {
        let text = |value: &str| Bind::Text(value.to_owned());
        let opt = |value: Option<&str>| Bind::OptText(value.map(str::to_owned));
        let mut s = Statement::new(backend);
        // The run, read and locked first: every write below is fed from it. A member who
        // may not see its workflow has no such run (NOT_FOUND, no row at all).
        s.sql("WITH run AS MATERIALIZED (SELECT * FROM runs WHERE runs.company_id = ")
            .text(scope.company)
            .sql(" AND runs.id = ")
            .text(self.run_id);
        scope.visible(&mut s, "runs", Reach::Child);
        s.sql(" FOR NO KEY UPDATE), ");
        // The log this run recorded under the report's key: the report is a retry.
        s.sql(
            "original AS (SELECT health_logs.* FROM health_logs, run \
             WHERE health_logs.company_id = run.company_id \
             AND health_logs.run_id = run.id AND health_logs.idempotency_key = ",
        )
        .bind(opt(self.idempotency_key))
        .sql("), ");
        // The step, as the viewer sees steps.
        s.sql("step AS (SELECT steps.workflow_id FROM steps WHERE steps.company_id = ")
            .text(scope.company)
            .sql(" AND steps.id = ")
            .text(self.step_id);
        scope.visible(&mut s, "steps", Reach::Child);
        s.sql("), ");
        // The decision, one check after the other as the transactional path makes them,
        // and the time the report is stamped with.
        s.sql("verdict AS MATERIALIZED (SELECT CASE WHEN NOT ");
        match scope.member {
            // A member who sees the workflow may still not be allowed to run it.
            Some(_) => {
                s.sql("(");
                scope.condition(&mut s, visibility::runnable_workflow("run.workflow_id"));
                s.sql(")");
            }
            None => {
                s.sql("TRUE");
            }
        }
        s.sql(" THEN 'forbidden' WHEN ")
            .bind(opt(self.lease_id))
            .sql("::text IS NOT NULL AND run.lease_id IS DISTINCT FROM ")
            .bind(opt(self.lease_id))
            .sql(
                " THEN 'lease_lost' \
                 WHEN EXISTS (SELECT 1 FROM original) THEN 'duplicate' \
                 WHEN run.status NOT IN ('queued', 'running') THEN 'run_over' \
                 WHEN NOT EXISTS (SELECT 1 FROM step) THEN 'no_step' \
                 WHEN (SELECT step.workflow_id FROM step) <> run.workflow_id \
                 THEN 'other_workflow' \
                 ELSE 'counted' END AS verdict, GREATEST(",
            )
            .bind(Bind::Time(self.at))
            .sql(", run.updated_at) AS at FROM run), ");
        // The health log, only for a report that counts; the unique (run, key) index
        // turns a same-key report that got in since the snapshot into no row.
        s.sql(
            "logged AS (INSERT INTO health_logs (id, company_id, workflow_id, run_id, \
             step_id, idempotency_key, status, error_type, error_message, \
             healing_confidence, deterministic_score, ai_score, page_url, \
             execution_time_ms, created_at) SELECT ",
        )
        .bind(text(self.log_id))
        .sql(", run.company_id, run.workflow_id, run.id, ")
        .bind(text(self.step_id))
        .sql(", ")
        .bind(opt(self.idempotency_key))
        .sql(", ")
        .bind(text(self.status))
        .sql(", ")
        .bind(opt(self.error_type))
        .sql(", ")
        .bind(opt(self.error_message))
        .sql(", ")
        .bind(Bind::OptDouble(self.healing_confidence))
        .sql(", ")
        .bind(Bind::OptDouble(self.deterministic_score))
        .sql(", ")
        .bind(Bind::OptDouble(self.ai_score))
        .sql(", ")
        .bind(opt(self.page_url))
        .sql(", ")
        .bind(Bind::OptInt(self.execution_time_ms))
        .sql(
            ", verdict.at FROM run, verdict WHERE verdict.verdict = 'counted' \
             ON CONFLICT DO NOTHING RETURNING *), ",
        );
        // A healing is written back to the step (after the run: the lock order), only
        // once the log is in. Selectors stay from the last healing that sent some.
        s.sql("healed AS (UPDATE steps SET healed_at = logged.created_at, healing_confidence = ")
            .bind(Bind::OptDouble(self.healing_confidence))
            .sql(", healing_method = ")
            .bind(opt(self.healing_method))
            .sql(", healed_selectors = COALESCE(")
            .bind(opt(self.healed_selectors))
            .sql(
                ", steps.healed_selectors) FROM logged WHERE steps.company_id = logged.company_id \
                 AND steps.id = logged.step_id AND ",
            )
            .bind(opt(self.healing_method))
            .sql("::text IS NOT NULL RETURNING steps.id), ");
        // The report counted on the run, only once the log is in: counters, current step,
        // one more version; a queued run starts now.
        let (completed, healed, failed) = self.increments;
        s.sql(
            "counted AS (UPDATE runs SET status = 'running', \
             steps_completed = runs.steps_completed + ",
        )
        .bind(Bind::OptInt(Some(completed)))
        .sql(", steps_healed = runs.steps_healed + ")
        .bind(Bind::OptInt(Some(healed)))
        .sql(", steps_failed = runs.steps_failed + ")
        .bind(Bind::OptInt(Some(failed)))
        .sql(
            ", current_step_id = logged.step_id, updated_at = logged.created_at, \
             version = runs.version + 1, started_at = CASE WHEN runs.status = 'queued' \
             THEN logged.created_at ELSE runs.started_at END \
             FROM logged WHERE runs.company_id = logged.company_id AND runs.id = logged.run_id \
             RETURNING runs.*) ",
        );
        // The answer: the verdict, the run as it is now (counted, or as locked) and the
        // log (new, or the original of a duplicate). `healed` is not read: PostgreSQL
        // runs a data-modifying CTE to completion whether or not it is read.
        s.sql(
            "SELECT verdict.verdict, now_run.*, \
             log.id AS log_id, log.company_id AS log_company_id, \
             log.workflow_id AS log_workflow_id, log.run_id AS log_run_id, \
             log.step_id AS log_step_id, log.idempotency_key AS log_idempotency_key, \
             log.status AS log_status, log.error_type AS log_error_type, \
             log.error_message AS log_error_message, \
             log.healing_confidence AS log_healing_confidence, \
             log.deterministic_score AS log_deterministic_score, \
             log.ai_score AS log_ai_score, log.page_url AS log_page_url, \
             log.execution_time_ms AS log_execution_time_ms, \
             log.created_at AS log_created_at \
             FROM verdict \
             CROSS JOIN (SELECT * FROM counted \
               UNION ALL SELECT * FROM run WHERE NOT EXISTS (SELECT 1 FROM counted)) now_run \
             LEFT JOIN (SELECT * FROM logged UNION ALL SELECT * FROM original) log ON TRUE",
        );
        s
    }
}
