//! Runs: one execution of a workflow by an executor, with its progress counters, and the
//! lifecycle the executors drive: start, report steps, pause, resume, finish, cancel, and
//! the sweeper that times out runs whose executor went silent.
//!
//! # Writing runs safely
//! Every write is one transaction, and its events are published only after it committed.
//! The run is locked first and the time taken after the lock (the lock order is in the
//! `domain` module docs), status checks happen under that lock, and every change adds one
//! to the run's version, so states and times follow commit order.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;

use super::health::{Figures, HealthRules, Verdict, review_notification};
use super::health_log::{HealthLog, StepOutcome, bounded_text};
use super::notification;
use super::page::{Page, PageRequest, Position, SortValue, time_key};
use super::step::StepHead;
use super::workflow::{self, Workflow};
use super::{Tenant, new_id, now};
use crate::db::schema::{health_logs, notifications, runs, steps, workflows};
use crate::db::{Backend, Db};
use crate::error::{AppError, AppResult};
use crate::events::{Event, EventBus, EventKind};

/// The longest `error` a run keeps (finish error, cancel reason).
pub const MAX_ERROR_CHARS: usize = 2_000;
/// How many stale runs one sweep times out at most; the next sweep takes the rest.
const SWEEP_BATCH: i64 = 500;

/// Names the one ordering of run lists inside cursors.
pub const ORDERING: &str = "runs:created_at:desc";

/// Where a run is in its life. Queued, running and paused runs are still going; the others
/// are finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Queued,
    Running,
    Paused,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Paused,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
            Self::TimedOut,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// Whether the run is over (succeeded, failed, cancelled or timed out).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }
}

/// Something done to a run; each is allowed from some statuses only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// An executor reports a step: queued or running runs.
    Report,
    /// The executor says it is done: running runs (a paused run must resume first).
    Finish,
    Pause,
    Resume,
    /// Stop a run that has not finished.
    Cancel,
    /// The sweeper gives up on a running run whose executor went silent.
    TimeOut,
}

impl Action {
    /// The statuses a run may be in for this action.
    pub fn allowed_from(self) -> &'static [Status] {
        use Status::*;
        match self {
            Self::Report => &[Queued, Running],
            Self::Finish | Self::Pause | Self::TimeOut => &[Running],
            Self::Resume => &[Paused],
            Self::Cancel => &[Queued, Running, Paused],
        }
    }

    pub fn allows(self, from: Status) -> bool {
        self.allowed_from().contains(&from)
    }

    fn allowed_strs(self) -> impl Iterator<Item = &'static str> {
        self.allowed_from().iter().map(|s| s.as_str())
    }

    /// The message refusing this action on a run in status `current` (as stored).
    pub fn refusal(self, current: &str) -> String {
        match (self, current) {
            (Self::Report, _) => format!("run is {current}; cannot report a step for it"),
            (Self::Finish, "paused") => {
                "run is paused; cannot finish it (resume it first)".to_owned()
            }
            (Self::Finish, _) => format!("run is {current}; cannot finish it"),
            (Self::Pause, _) => format!("run is {current}; cannot pause it"),
            (Self::Resume, _) => format!("run is {current}; cannot resume it"),
            (Self::Cancel, _) => format!("run is {current}; cannot cancel it"),
            (Self::TimeOut, _) => format!("run is {current}; cannot time it out"),
        }
    }
}

/// How an executor says a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
}

impl Outcome {
    pub fn status(self) -> Status {
        match self {
            Self::Succeeded => Status::Succeeded,
            Self::Failed => Status::Failed,
        }
    }

    fn verdict(self) -> Verdict {
        match self {
            Self::Succeeded => Verdict::Success,
            Self::Failed => Verdict::Failure,
        }
    }
}

/// What `reportStep` answers.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The run after the report (for a duplicate: as it is now).
    pub run: Run,
    /// The new log, or for a duplicate the one recorded the first time.
    pub health_log: HealthLog,
    /// The idempotency key had been seen: nothing was recorded or counted.
    pub duplicate: bool,
}

/// How much a reported step adds to the run's completed, healed and failed counters.
pub fn counter_increments(status: super::health_log::Status) -> (i32, i32, i32) {
    use super::health_log::Status::*;
    match status {
        Success => (1, 0, 0),
        HealedDeterministic | HealedAi => (1, 1, 0),
        Failed => (0, 0, 1),
    }
}

#[derive(
    Debug,
    Clone,
    Queryable,
    QueryableByName,
    Selectable,
    Insertable,
    Identifiable,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = runs, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Run {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub started_by: Option<String>,
    pub status: String,
    pub steps_total: i32,
    pub steps_completed: i32,
    pub steps_failed: i32,
    pub steps_healed: i32,
    pub current_step_id: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// One more with every committed change (see the `run_versions` migration).
    pub version: i64,
}

impl Run {
    pub fn status(&self) -> AppResult<Status> {
        super::stored("run", &self.id, "status", &self.status, Status::parse)
    }

    pub fn position(&self) -> Position {
        Position {
            key: SortValue::time(self.created_at),
            id: self.id.clone(),
        }
    }
}

/// Which runs a list shows. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow_id: Option<String>,
    pub statuses: Vec<Status>,
}

/// The tenant's runs matching `filter`, with `select` as the boxed select clause.
macro_rules! filtered {
    ($tenant:expr, $filter:expr, $select:expr) => {{
        let filter: &RunFilter = $filter;
        let mut query = runs::table
            .filter(runs::company_id.eq($tenant.id().to_owned()))
            .select($select)
            .into_boxed();
        if let Some(workflow_id) = &filter.workflow_id {
            query = query.filter(runs::workflow_id.eq(workflow_id.clone()));
        }
        if !filter.statuses.is_empty() {
            query = query.filter(runs::status.eq_any(filter.statuses.iter().map(|s| s.as_str())));
        }
        query
    }};
}

/// One page of the tenant's runs, newest first.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &RunFilter,
    page: &PageRequest,
) -> AppResult<Page<Run>> {
    let rows = crate::with_conn!(db, |conn| {
        let query = filtered!(tenant, filter, Run::as_select());
        crate::keyset!(query, page, true, runs::created_at, runs::id, time_key)
            .load::<Run>(conn)
            .await?
    });
    Ok(Page::from_scan(rows, page))
}

/// How many of the tenant's runs match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &RunFilter) -> AppResult<i64> {
    Ok(crate::with_conn!(db, |conn| {
        filtered!(tenant, filter, diesel::dsl::count_star())
            .first::<i64>(conn)
            .await?
    }))
}

/// One page of runs per workflow among `workflow_ids` (the `runs` connection under a list
/// of workflows), newest first, in one statement; `statuses` empty means any.
pub async fn pages_by_workflow(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
    statuses: &[Status],
    page: &PageRequest,
) -> AppResult<std::collections::HashMap<String, Page<Run>>> {
    use crate::db::partition::{Condition, PartitionedPage, bind_all};
    let descending_scan = page.scans_backward(true);
    let mut conditions = Vec::new();
    let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    conditions.extend(Condition::any_of("status", &statuses));
    if let Some(position) = &page.cursor {
        let at = time_key(&position.key)?;
        conditions.push(Condition::after(
            "created_at",
            "id",
            at,
            &position.id,
            descending_scan,
        ));
    }
    let statement = PartitionedPage {
        table: "runs",
        parent: "workflow_id",
        key: "created_at",
        descending: descending_scan,
        limit: page.fetch_limit(),
        company_id: tenant.id().to_owned(),
        parents: workflow_ids.to_vec(),
        conditions,
    };
    let (sql, binds) = statement.sql(db.backend());
    let rows: Vec<Run> = crate::with_conn!(db, |conn| {
        bind_all(diesel::sql_query(sql).into_boxed(), binds)
            .load(conn)
            .await?
    });
    Ok(super::page::pages_by_parent(
        rows,
        workflow_ids,
        page,
        |run| run.workflow_id.as_str(),
        |a, b| {
            let order = (a.created_at, &a.id).cmp(&(b.created_at, &b.id));
            if descending_scan {
                order.reverse()
            } else {
                order
            }
        },
    ))
}

/// How many runs each workflow among `workflow_ids` has (with `statuses`, if any).
pub async fn counts_by_workflow(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
    statuses: &[Status],
) -> AppResult<std::collections::HashMap<String, i64>> {
    let rows: Vec<(String, i64)> = crate::with_conn!(db, |conn| {
        let mut query = runs::table
            .filter(runs::company_id.eq(tenant.id().to_owned()))
            .filter(runs::workflow_id.eq_any(workflow_ids.to_vec()))
            .group_by(runs::workflow_id)
            .select((runs::workflow_id, diesel::dsl::count_star()))
            .into_boxed();
        if !statuses.is_empty() {
            query = query.filter(runs::status.eq_any(statuses.iter().map(|s| s.as_str())));
        }
        query.load(conn).await?
    });
    Ok(rows.into_iter().collect())
}

/// A run of the tenant's company; another company's run is not found.
pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Run> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("run"))
}

/// The tenant's runs among `ids`; ids of other companies are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Run>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(crate::with_conn!(db, |conn| {
        runs::table
            .filter(runs::company_id.eq(tenant.id()))
            .filter(runs::id.eq_any(ids))
            .select(Run::as_select())
            .load(conn)
            .await?
    }))
}

/// Inside a write transaction: the tenant's run `$id` after the changes `$changes` (an
/// expression that may use the time `$at`), applied only when its status allows `$action`
/// (decided by the UPDATE itself, so racing requests cannot both pass). Otherwise returns
/// NOT_FOUND, or BAD_USER_INPUT naming the current status.
///
/// The run is locked first and the time taken after: a writer that waited for the lock
/// stamps a later time than the one it waited for, so `updated_at` follows commit order.
macro_rules! transition {
    ($conn:ident, $backend:expr, $tenant:expr, $id:expr, $action:expr, |$at:ident| $changes:expr) => {{
        let action: Action = $action;
        crate::lock_rows!($conn, $backend, LOCK_RUN, $id, $tenant.id());
        let $at = now();
        let updated: Option<Run> = diesel::update(
            runs::table
                .filter(runs::company_id.eq($tenant.id()))
                .filter(runs::id.eq($id))
                .filter(runs::status.eq_any(action.allowed_strs())),
        )
        .set($changes)
        .returning(Run::as_returning())
        .get_result($conn)
        .await
        .optional()?;
        match updated {
            Some(run) => run,
            None => {
                let current: Option<String> = runs::table
                    .filter(runs::company_id.eq($tenant.id()))
                    .filter(runs::id.eq($id))
                    .select(runs::status)
                    .first($conn)
                    .await
                    .optional()?;
                return Err(match current {
                    None => AppError::NotFound("run"),
                    Some(current) => AppError::bad_input("runId", action.refusal(&current)),
                });
            }
        }
    }};
}

/// Locks the tenant's run `$1`/`$2` (PostgreSQL; see the lock order in the module docs).
/// `NO KEY UPDATE` is what an UPDATE of the row takes anyway: it does not block the
/// foreign-key checks of logs being inserted for the run.
const LOCK_RUN: &str = "SELECT id FROM runs WHERE id = $1 AND company_id = $2 FOR NO KEY UPDATE";

/// Locks and reads the tenant's run `$1`/`$2` in one statement (PostgreSQL).
const LOCK_AND_READ_RUN: &str =
    "SELECT * FROM runs WHERE id = $1 AND company_id = $2 FOR NO KEY UPDATE";

/// Locks the tenant's workflow `$1`/`$2` (PostgreSQL), after its run.
const LOCK_WORKFLOW: &str =
    "SELECT id FROM workflows WHERE id = $1 AND company_id = $2 FOR NO KEY UPDATE";

/// The figures a counted run writes back to its workflow.
#[derive(AsChangeset)]
#[diesel(table_name = workflows)]
struct HealthPatch {
    status: Option<String>,
    success_rate: f64,
    total_uses: i32,
    consecutive_failures: i32,
    last_success_at: Option<NaiveDateTime>,
    last_failure_at: Option<NaiveDateTime>,
    updated_at: Option<NaiveDateTime>,
}

/// Inside a write transaction, after a run finished (its row locked): locks its workflow,
/// counts the run for the workflow's health, applies the status change the rules make, and
/// inserts its notification. Evaluates to the events to publish after commit.
macro_rules! count_run {
    ($conn:ident, $backend:expr, $tenant:expr, $workflow_id:expr, $verdict:expr, $rules:expr) => {{
        crate::lock_rows!($conn, $backend, LOCK_WORKFLOW, $workflow_id, $tenant.id());
        let workflow: Workflow = workflows::table
            .filter(workflows::company_id.eq($tenant.id()))
            .filter(workflows::id.eq($workflow_id))
            .select(Workflow::as_select())
            .first($conn)
            .await?;
        let before = Figures::of(&workflow)?;
        let update = $rules.count_run(&before, $verdict);
        let at = now();
        let succeeded = update.verdict == Verdict::Success;
        let patch = HealthPatch {
            status: update.transition.map(|t| t.status().as_str().to_owned()),
            success_rate: update.figures.success_rate,
            total_uses: update.figures.total_uses,
            consecutive_failures: update.figures.consecutive_failures,
            last_success_at: succeeded.then_some(at),
            last_failure_at: (!succeeded).then_some(at),
            // Like a human edit, a status change is a change of the workflow; new figures
            // alone are not.
            updated_at: update.transition.map(|_| at),
        };
        let updated: Workflow = diesel::update(workflows::table.find(&workflow.id))
            .set(&patch)
            .returning(Workflow::as_returning())
            .get_result($conn)
            .await?;
        let mut kinds = Vec::new();
        if let Some(transition) = update.transition {
            let row = notification::new_row(
                $tenant,
                transition.notification(&workflow, update.figures.consecutive_failures),
            );
            diesel::insert_into(notifications::table)
                .values(&row)
                .execute($conn)
                .await?;
            kinds.push(EventKind::WorkflowStatusChanged {
                workflow: Box::new(updated),
                previous: workflow.status.clone(),
            });
            kinds.push(EventKind::NotificationCreated {
                notification: Box::new(row),
            });
        }
        kinds
    }};
}

fn publish(events: &EventBus, tenant: &Tenant, kinds: Vec<EventKind>) {
    events.publish(kinds.into_iter().map(|kind| Event::new(tenant, kind)));
}

fn run_changed(run: &Run, health_log: Option<&HealthLog>) -> EventKind {
    EventKind::RunChanged {
        run: Box::new(run.clone()),
        health_log: health_log.map(|log| Box::new(log.clone())),
    }
}

/// The step was deleted between the read and the insert that references it: answered as
/// if it had never been found (SQLite's writer never lets this happen; both must agree).
fn step_gone(error: DieselError) -> AppError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
            AppError::NotFound("step")
        }
        other => other.into(),
    }
}

/// `started_by` references the viewer's account; a token outliving its removed account is
/// answered as `me` answers it, not as a server error.
fn starter_gone(error: DieselError) -> AppError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
            AppError::Unauthenticated("this account no longer exists")
        }
        other => other.into(),
    }
}

/// Starts a run of an active (or needs-review) workflow for `started_by`: RUNNING from the
/// start, with as many steps to do as the workflow has now.
pub async fn start(
    db: &Db,
    events: &EventBus,
    tenant: &Tenant,
    started_by: &str,
    workflow_id: &str,
) -> AppResult<Run> {
    let run = crate::transaction!(db, |conn| {
        let workflow: Workflow = workflows::table
            .filter(workflows::company_id.eq(tenant.id()))
            .filter(workflows::id.eq(workflow_id))
            .select(Workflow::as_select())
            .first(conn)
            .await
            .optional()?
            .ok_or(AppError::NotFound("workflow"))?;
        let status = workflow.status()?;
        if !matches!(
            status,
            workflow::Status::Active | workflow::Status::NeedsReview
        ) {
            return Err(AppError::bad_input(
                "workflowId",
                format!(
                    "workflow is {}; only active or needs_review workflows can be run",
                    status.as_str()
                ),
            ));
        }
        let steps_total: i64 = steps::table
            .filter(steps::company_id.eq(tenant.id()))
            .filter(steps::workflow_id.eq(&workflow.id))
            .count()
            .get_result(conn)
            .await?;
        let at = now();
        let run = Run {
            id: new_id(),
            company_id: tenant.id().to_owned(),
            workflow_id: workflow.id.clone(),
            started_by: Some(started_by.to_owned()),
            status: Status::Running.as_str().to_owned(),
            steps_total: i32::try_from(steps_total).unwrap_or(i32::MAX),
            steps_completed: 0,
            steps_failed: 0,
            steps_healed: 0,
            current_step_id: None,
            error: None,
            started_at: Some(at),
            finished_at: None,
            created_at: at,
            updated_at: at,
            version: 1,
        };
        diesel::insert_into(runs::table)
            .values(&run)
            .execute(conn)
            .await
            .map_err(starter_gone)?;
        Ok(run)
    })?;
    publish(events, tenant, vec![run_changed(&run, None)]);
    Ok(run)
}

/// Inside a transaction: the tenant's log of run `$run_id` with idempotency key `$key`.
macro_rules! log_with_key {
    ($conn:ident, $tenant:expr, $run_id:expr, $key:expr) => {
        health_logs::table
            .filter(health_logs::company_id.eq($tenant.id()))
            .filter(health_logs::run_id.eq($run_id))
            .filter(health_logs::idempotency_key.eq($key))
            .select(HealthLog::as_select())
            .first::<HealthLog>($conn)
            .await
            .optional()?
    };
}

enum Reported {
    New(Run, HealthLog, Vec<EventKind>),
    Duplicate(Run, HealthLog),
}

/// Records the outcome of one step of a queued or running run and counts it on the run.
///
/// A healed step also records the healing on the step; healed with a confidence below
/// the review threshold, it moves an active workflow to needs_review with a warning.
/// A report whose idempotency key this run has seen is answered with the original log
/// and the current run, and changes nothing.
pub async fn report_step(
    db: &Db,
    events: &EventBus,
    rules: &HealthRules,
    tenant: &Tenant,
    run_id: &str,
    step_id: &str,
    outcome: StepOutcome,
) -> AppResult<StepReport> {
    let outcome = outcome.validate("outcome")?;
    let review = rules.needs_review(outcome.status, outcome.healing_confidence);
    let (completed, healed, failed) = counter_increments(outcome.status);
    let backend = db.backend();
    let reported = crate::transaction!(db, |conn| {
        // The run first (the lock order of the module docs), and locked: everything below
        // reads it as it stays until commit.
        let run: Option<Run> = if backend == Backend::Postgres {
            diesel::sql_query(LOCK_AND_READ_RUN)
                .bind::<diesel::sql_types::Text, _>(run_id)
                .bind::<diesel::sql_types::Text, _>(tenant.id())
                .get_result(conn)
                .await
                .optional()?
        } else {
            runs::table
                .filter(runs::company_id.eq(tenant.id()))
                .filter(runs::id.eq(run_id))
                .select(Run::as_select())
                .first(conn)
                .await
                .optional()?
        };
        let run = run.ok_or(AppError::NotFound("run"))?;
        if let Some(key) = &outcome.idempotency_key
            && let Some(original) = log_with_key!(conn, tenant, &run.id, key)
        {
            return Ok(Reported::Duplicate(run, original));
        }
        // Fails early with the right message; the conditional update below decides.
        if !Action::Report.allows(run.status()?) {
            return Err(AppError::bad_input(
                "runId",
                Action::Report.refusal(&run.status),
            ));
        }
        // The documents are not needed here: only the head is read.
        let step: StepHead = steps::table
            .filter(steps::company_id.eq(tenant.id()))
            .filter(steps::id.eq(step_id))
            .select(StepHead::as_select())
            .first(conn)
            .await
            .optional()?
            .ok_or(AppError::NotFound("step"))?;
        if step.workflow_id != run.workflow_id {
            return Err(AppError::bad_input(
                "stepId",
                "the step belongs to another workflow than the run",
            ));
        }
        let at = now();
        let log = outcome
            .clone()
            .into_row(tenant, &run.workflow_id, &run.id, &step.id, at);
        // A concurrent report with the same key may have got in since the lookup; its
        // insert then wins (PostgreSQL waits for it to commit) and this one is the retry.
        let inserted = diesel::insert_into(health_logs::table)
            .values(&log)
            .on_conflict_do_nothing()
            .execute(conn)
            .await
            .map_err(step_gone)?;
        if inserted == 0 {
            let key = outcome.idempotency_key.as_deref().unwrap_or_default();
            let original = log_with_key!(conn, tenant, &run.id, key).ok_or_else(|| {
                AppError::internal(anyhow::anyhow!(
                    "health log of run {} was neither inserted nor found",
                    run.id
                ))
            })?;
            let run: Run = runs::table
                .find(&run.id)
                .select(Run::as_select())
                .first(conn)
                .await?;
            return Ok(Reported::Duplicate(run, original));
        }
        let mut kinds = Vec::new();
        if let Some(method) = outcome.status.healing_method() {
            // The workflow before the step: the lock order of the module docs.
            if review {
                let moved: Option<Workflow> = diesel::update(
                    workflows::table
                        .filter(workflows::company_id.eq(tenant.id()))
                        .filter(workflows::id.eq(&run.workflow_id))
                        .filter(workflows::status.eq(workflow::Status::Active.as_str())),
                )
                .set((
                    workflows::status.eq(workflow::Status::NeedsReview.as_str()),
                    workflows::updated_at.eq(at),
                ))
                .returning(Workflow::as_returning())
                .get_result(conn)
                .await
                .optional()?;
                if let Some(workflow) = moved {
                    let row = notification::new_row(
                        tenant,
                        review_notification(
                            &workflow,
                            step.step_number,
                            method,
                            outcome.healing_confidence.unwrap_or_default(),
                        ),
                    );
                    diesel::insert_into(notifications::table)
                        .values(&row)
                        .execute(conn)
                        .await?;
                    kinds.push(EventKind::WorkflowStatusChanged {
                        workflow: Box::new(workflow),
                        previous: workflow::Status::Active.as_str().to_owned(),
                    });
                    kinds.push(EventKind::NotificationCreated {
                        notification: Box::new(row),
                    });
                }
            }
            diesel::update(steps::table.find(&step.id))
                .set((
                    steps::healed_at.eq(Some(at)),
                    steps::healing_confidence.eq(outcome.healing_confidence),
                    steps::healing_method.eq(Some(method)),
                ))
                .execute(conn)
                .await?;
        }
        // An executor reporting on a queued run has started it. The run is locked and its
        // status was checked above, so the update is unconditional.
        let starts =
            (run.status == Status::Queued.as_str()).then_some(runs::started_at.eq(Some(at)));
        let run: Run = diesel::update(runs::table.find(&run.id))
            .set((
                runs::status.eq(Status::Running.as_str()),
                runs::steps_completed.eq(runs::steps_completed + completed),
                runs::steps_healed.eq(runs::steps_healed + healed),
                runs::steps_failed.eq(runs::steps_failed + failed),
                runs::current_step_id.eq(Some(step.id.clone())),
                runs::updated_at.eq(at),
                runs::version.eq(runs::version + 1),
                starts,
            ))
            .returning(Run::as_returning())
            .get_result(conn)
            .await?;
        Ok(Reported::New(run, log, kinds))
    })?;
    Ok(match reported {
        Reported::Duplicate(run, health_log) => StepReport {
            run,
            health_log,
            duplicate: true,
        },
        Reported::New(run, health_log, kinds) => {
            let mut all = vec![
                run_changed(&run, Some(&health_log)),
                EventKind::HealthLogRecorded {
                    health_log_id: health_log.id.clone(),
                },
            ];
            all.extend(kinds);
            publish(events, tenant, all);
            StepReport {
                run,
                health_log,
                duplicate: false,
            }
        }
    })
}

/// Ends a running run as succeeded or failed and counts it for the workflow's health
/// (which may mark the workflow broken, or recovered).
pub async fn finish(
    db: &Db,
    events: &EventBus,
    rules: &HealthRules,
    tenant: &Tenant,
    run_id: &str,
    outcome: Outcome,
    error: Option<String>,
) -> AppResult<Run> {
    let error = bounded_text("error", error, MAX_ERROR_CHARS)?;
    let backend = db.backend();
    let (run, kinds) = crate::transaction!(db, |conn| {
        let run = transition!(conn, backend, tenant, run_id, Action::Finish, |at| (
            runs::status.eq(outcome.status().as_str()),
            runs::error.eq(error.clone()),
            runs::finished_at.eq(Some(at)),
            runs::updated_at.eq(at),
            runs::version.eq(runs::version + 1),
        ));
        let kinds = count_run!(
            conn,
            backend,
            tenant,
            &run.workflow_id,
            outcome.verdict(),
            rules
        );
        Ok((run, kinds))
    })?;
    let mut all = vec![run_changed(&run, None)];
    all.extend(kinds);
    publish(events, tenant, all);
    Ok(run)
}

/// Pauses a running run; the sweeper leaves paused runs alone.
pub async fn pause(db: &Db, events: &EventBus, tenant: &Tenant, run_id: &str) -> AppResult<Run> {
    pause_or_resume(db, events, tenant, run_id, Action::Pause, Status::Paused).await
}

/// Resumes a paused run; its timeout counts from now.
pub async fn resume(db: &Db, events: &EventBus, tenant: &Tenant, run_id: &str) -> AppResult<Run> {
    pause_or_resume(db, events, tenant, run_id, Action::Resume, Status::Running).await
}

/// Pause and resume: a status change that does not count for health but restarts the
/// timeout clock.
async fn pause_or_resume(
    db: &Db,
    events: &EventBus,
    tenant: &Tenant,
    run_id: &str,
    action: Action,
    status: Status,
) -> AppResult<Run> {
    let backend = db.backend();
    let run = crate::transaction!(db, |conn| {
        Ok(transition!(conn, backend, tenant, run_id, action, |at| (
            runs::status.eq(status.as_str()),
            runs::updated_at.eq(at),
            runs::version.eq(runs::version + 1),
        )))
    })?;
    publish(events, tenant, vec![run_changed(&run, None)]);
    Ok(run)
}

/// Cancels a run that has not finished, keeping `reason` as its error. Cancelled runs do
/// not count for the workflow's health.
pub async fn cancel(
    db: &Db,
    events: &EventBus,
    tenant: &Tenant,
    run_id: &str,
    reason: Option<String>,
) -> AppResult<Run> {
    let reason = bounded_text("reason", reason, MAX_ERROR_CHARS)?;
    let backend = db.backend();
    let run = crate::transaction!(db, |conn| {
        Ok(transition!(
            conn,
            backend,
            tenant,
            run_id,
            Action::Cancel,
            |at| (
                runs::status.eq(Status::Cancelled.as_str()),
                runs::error.eq(reason.clone()),
                runs::finished_at.eq(Some(at)),
                runs::updated_at.eq(at),
                runs::version.eq(runs::version + 1),
            )
        ))
    })?;
    publish(events, tenant, vec![run_changed(&run, None)]);
    Ok(run)
}

/// The sweeper: marks running runs with no report for longer than the run timeout as
/// timed out (a failure for their workflows' health). Answers how many it timed out.
///
/// Safe to run on several instances at once: each run is timed out by a conditional
/// update in its own transaction, so only one instance wins it, and only the winner
/// counts it and publishes events. A run that got a report meanwhile is left alone.
pub async fn time_out_stale_runs(
    db: &Db,
    events: &EventBus,
    rules: &HealthRules,
) -> AppResult<usize> {
    let timeout = TimeDelta::from_std(rules.run_timeout).map_err(AppError::internal)?;
    let Some(cutoff) = now().checked_sub_signed(timeout) else {
        return Ok(0);
    };
    let stale: Vec<(String, String)> = crate::with_conn!(db, |conn| {
        runs::table
            .filter(runs::status.eq(Status::Running.as_str()))
            .filter(runs::updated_at.lt(cutoff))
            .order((runs::updated_at.asc(), runs::id.asc()))
            .limit(SWEEP_BATCH)
            .select((runs::id, runs::company_id))
            .load(conn)
            .await?
    });
    let message = format!("no step report for {} seconds", rules.run_timeout.as_secs());
    let mut timed_out = 0;
    for (run_id, company_id) in stale {
        // The sweeper acts for no viewer: each run is handled as its own company's.
        let tenant = Tenant(company_id);
        match time_out(db, rules, &tenant, &run_id, cutoff, &message).await {
            Ok(Some((run, kinds))) => {
                timed_out += 1;
                let mut all = vec![run_changed(&run, None)];
                all.extend(kinds);
                publish(events, &tenant, all);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(run_id = %run_id, ?error, "could not time out a stale run");
            }
        }
    }
    Ok(timed_out)
}

/// Times out one run if it is still running and stale; `None` when another instance or a
/// report got there first.
async fn time_out(
    db: &Db,
    rules: &HealthRules,
    tenant: &Tenant,
    run_id: &str,
    cutoff: NaiveDateTime,
    message: &str,
) -> AppResult<Option<(Run, Vec<EventKind>)>> {
    let backend = db.backend();
    crate::transaction!(db, |conn| {
        crate::lock_rows!(conn, backend, LOCK_RUN, run_id, tenant.id());
        let at = now();
        let updated: Option<Run> = diesel::update(
            runs::table
                .filter(runs::company_id.eq(tenant.id()))
                .filter(runs::id.eq(run_id))
                .filter(runs::status.eq_any(Action::TimeOut.allowed_strs()))
                .filter(runs::updated_at.lt(cutoff)),
        )
        .set((
            runs::status.eq(Status::TimedOut.as_str()),
            runs::error.eq(message),
            runs::finished_at.eq(Some(at)),
            runs::updated_at.eq(at),
            runs::version.eq(runs::version + 1),
        ))
        .returning(Run::as_returning())
        .get_result(conn)
        .await
        .optional()?;
        let Some(run) = updated else {
            return Ok(None);
        };
        let kinds = count_run!(
            conn,
            backend,
            tenant,
            &run.workflow_id,
            Verdict::Failure,
            rules
        );
        Ok(Some((run, kinds)))
    })
}

/// Run rows by id in *any* company, for events arriving from another instance: the event
/// names its company, and the caller drops rows of any other. Unscoped on purpose.
pub(crate) async fn for_events(db: &Db, ids: &[String]) -> AppResult<Vec<Run>> {
    Ok(crate::with_conn!(db, |conn| {
        runs::table
            .filter(runs::id.eq_any(ids))
            .select(Run::as_select())
            .load(conn)
            .await?
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Status; 7] = [
        Status::Queued,
        Status::Running,
        Status::Paused,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::TimedOut,
    ];

    fn allowed(action: Action) -> Vec<Status> {
        ALL.into_iter().filter(|s| action.allows(*s)).collect()
    }

    #[test]
    fn the_transition_table() {
        use Status::*;
        assert_eq!(allowed(Action::Report), [Queued, Running]);
        assert_eq!(allowed(Action::Finish), [Running]);
        assert_eq!(allowed(Action::Pause), [Running]);
        assert_eq!(allowed(Action::Resume), [Paused]);
        assert_eq!(allowed(Action::Cancel), [Queued, Running, Paused]);
        assert_eq!(allowed(Action::TimeOut), [Running]);
    }

    #[test]
    fn finished_runs_accept_nothing() {
        for status in ALL.into_iter().filter(|s| s.is_finished()) {
            for action in [
                Action::Report,
                Action::Finish,
                Action::Pause,
                Action::Resume,
                Action::Cancel,
                Action::TimeOut,
            ] {
                assert!(!action.allows(status), "{action:?} from {status:?}");
            }
        }
    }

    #[test]
    fn refusals_name_the_current_status() {
        assert_eq!(
            Action::Pause.refusal("succeeded"),
            "run is succeeded; cannot pause it"
        );
        assert!(Action::Finish.refusal("paused").contains("resume it first"));
        assert!(Action::Report.refusal("timed_out").contains("timed_out"));
    }

    #[test]
    fn statuses_round_trip() {
        for status in ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("nope"), None);
    }

    #[test]
    fn reports_count_as_the_contract_says() {
        use super::super::health_log::Status::*;
        assert_eq!(counter_increments(Success), (1, 0, 0));
        assert_eq!(counter_increments(HealedDeterministic), (1, 1, 0));
        assert_eq!(counter_increments(HealedAi), (1, 1, 0));
        assert_eq!(counter_increments(Failed), (0, 0, 1));
    }
}
