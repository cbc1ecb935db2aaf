//! The run's status lifecycle: started for a workflow, paused and resumed, finished by its
//! executor, cancelled by a person. Each change is one unit of work that locks the run
//! before it takes the time, decides by a conditional update (so two racing requests
//! cannot both pass) and adds one to the run's version.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::Columns as _;

use super::accounting::count_run;
use super::{Action, MAX_ERROR_CHARS, Outcome, Run, Status};
use crate::db::schema::{runs, workflows};
use crate::db::{Db, IntoWork as _, Lock, Tx};
use crate::domain::event::EventKind;
use crate::domain::event::Events;
use crate::domain::health::HealthRules;
use crate::domain::health_log::bounded_text;
use crate::domain::visibility::{self, Need};
use crate::domain::workflow::{self, Workflow};
use crate::domain::{Tenant, new_id, now};
use crate::error::{AppError, AppResult};

/// What a status change writes on the run, besides one more version.
#[derive(AsChangeset)]
#[diesel(table_name = runs)]
pub(super) struct StatusChange {
    status: Status,
    error: Option<Option<String>>,
    finished_at: Option<Option<NaiveDateTime>>,
    updated_at: NaiveDateTime,
    output: Option<Option<String>>,
    lease_id: Option<Option<String>>,
    lease_expires_at: Option<Option<NaiveDateTime>>,
}

impl StatusChange {
    fn to(status: Status, at: NaiveDateTime) -> Self {
        Self {
            status,
            error: None,
            finished_at: None,
            updated_at: at,
            output: None,
            lease_id: None,
            lease_expires_at: None,
        }
    }

    /// The run ends now, with `error` as its error (`None` clears it); its lease ends
    /// with it.
    pub(super) fn finishing(status: Status, error: Option<String>, at: NaiveDateTime) -> Self {
        Self {
            status,
            error: Some(error),
            finished_at: Some(Some(at)),
            updated_at: at,
            output: None,
            lease_id: Some(None),
            lease_expires_at: Some(None),
        }
    }

    fn with_output(mut self, output: Option<String>) -> Self {
        self.output = Some(output);
        self
    }

    /// A paused run's lease stops running: the sweeper must not re-queue a run its
    /// executor paused on purpose (see `queue`).
    fn suspending_lease(mut self) -> Self {
        self.lease_expires_at = Some(None);
        self
    }
}

/// Refuses with CONFLICT when `lease_id` is given and is not the run's current lease: the
/// caller's claim lapsed (the run was re-queued, possibly claimed by another executor, or
/// ended). Call with the run locked.
pub(super) fn check_lease(run: &Run, lease_id: Option<&str>) -> AppResult<()> {
    match lease_id {
        Some(lease) if run.lease_id.as_deref() != Some(lease) => Err(lease_lost()),
        _ => Ok(()),
    }
}

/// The answer to an executor whose lease is no longer the run's.
pub(super) fn lease_lost() -> AppError {
    AppError::Conflict(
        "this lease is no longer the run's: it expired and the run was re-queued, or the run \
         ended; stop working on it"
            .to_owned(),
    )
}

/// The tenant's run, read and locked (see [`transition`]), or NOT_FOUND.
async fn locked_run(tx: &mut Tx<EventKind>, run_id: &str) -> AppResult<Run> {
    tx.lock_and_read(Lock::NoKeyUpdate, runs::id, run_id)
        .await?
        .ok_or(AppError::NotFound("run"))
}

/// The tenant's run `run_id` after `change` (made with the time taken after the lock),
/// applied only when its status allows `action`. Otherwise NOT_FOUND, or BAD_USER_INPUT
/// naming the current status.
///
/// The run is locked first and the time taken after: a writer that waited for the lock
/// stamps a later time than the one it waited for, so `updated_at` follows commit order.
async fn transition(
    tx: &mut Tx<EventKind>,
    run_id: &str,
    action: Action,
    change: impl FnOnce(NaiveDateTime) -> StatusChange,
) -> AppResult<Run> {
    tx.lock(Lock::NoKeyUpdate, runs::id, run_id).await?;
    require_run_permission(tx, run_id).await?;
    let change = change(now());
    let updated: Option<Run> = tx
        .optional(
            tx.runs()
                .filter(runs::id.eq(run_id))
                .filter(runs::status.eq_any(action.allowed_from()))
                .set((change, runs::version.eq(runs::version + 1)))
                .returning(Run::columns()),
        )
        .await?;
    if let Some(run) = updated {
        return Ok(run);
    }
    let current: Option<Status> = tx
        .optional(tx.runs().filter(runs::id.eq(run_id)).select(runs::status))
        .await?;
    Err(match current {
        None => AppError::NotFound("run"),
        Some(current) => AppError::bad_input("runId", action.refusal(current)),
    })
}

/// For a member who sees only some workflows: fails unless they may run the workflow of
/// the run (FORBIDDEN when they only view it). A run they do not see is left to the
/// caller's own query, which does not find it.
pub(super) async fn require_run_permission(tx: &mut Tx<EventKind>, run_id: &str) -> AppResult<()> {
    if tx.tenant().restricted_to().is_none() {
        return Ok(());
    }
    let workflow_id: Option<String> = tx
        .optional(
            tx.runs()
                .filter(runs::id.eq(run_id))
                .select(runs::workflow_id),
        )
        .await?;
    match workflow_id {
        Some(workflow_id) => visibility::require(tx, &workflow_id, Need::Run).await,
        None => Ok(()),
    }
}

pub(super) fn run_changed(
    run: &Run,
    health_log: Option<&crate::domain::health_log::HealthLog>,
) -> EventKind {
    EventKind::RunChanged {
        run: Box::new(run.clone()),
        health_log: health_log.map(|log| Box::new(log.clone())),
    }
}

/// `started_by` references the viewer's account; a token outliving its removed account is
/// answered as `me` answers it, not as a server error.
pub(super) fn starter_gone(error: AppError) -> AppError {
    if error.is_foreign_key_violation() {
        AppError::Unauthenticated("this account no longer exists")
    } else {
        error
    }
}

/// Starts a run of an active (or needs-review) workflow for `started_by` (a member; `None`
/// for an API key or the system): RUNNING from the start, with as many steps to do as the
/// workflow has now.
pub async fn start(
    db: &Db,
    events: &Events,
    tenant: &Tenant,
    started_by: Option<&str>,
    workflow_id: &str,
) -> AppResult<Run> {
    db.write_with_events(tenant, events, |tx| {
        started(tx, started_by, workflow_id).into_work()
    })
    .await
}

async fn started(
    tx: &mut Tx<EventKind>,
    started_by: Option<&str>,
    workflow_id: &str,
) -> AppResult<Run> {
    let workflow: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    visibility::check(tx, &workflow, Need::Run).await?;
    let status = workflow.status;
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
    let steps_total = crate::domain::step::count_of_workflow(tx, &workflow.id).await?;
    let at = now();
    let mut run = Run {
        id: new_id(),
        company_id: String::new(),
        workflow_id: workflow.id.clone(),
        started_by: started_by.map(str::to_owned),
        status: Status::Running,
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
        trigger_kind: super::Trigger::Manual,
        priority: 0,
        not_before: None,
        input: None,
        output: None,
        attempt: 0,
        max_attempts: 1,
        lease_id: None,
        lease_expires_at: None,
        retry_of: None,
        from_step_id: None,
        trigger_id: None,
        idempotency_key: None,
        workflow_version: (workflow.current_version > 0).then_some(workflow.current_version),
    };
    tx.insert(&mut run).await.map_err(starter_gone)?;
    tx.publish(run_changed(&run, None));
    Ok(run)
}

/// How an executor ends a run: the outcome, why it failed, what it produced, and (for a
/// claimed run) the lease it holds.
#[derive(Debug, Clone)]
pub struct Finish {
    pub outcome: Outcome,
    pub error: Option<String>,
    /// Any JSON value, at most the queue's JSON limit once serialised.
    pub output: Option<serde_json::Value>,
    /// When given, the run's current lease must be this one (CONFLICT otherwise).
    pub lease_id: Option<String>,
}

/// Ends a running run as succeeded or failed and counts it for the workflow's health
/// (which may mark the workflow broken, or recovered).
pub async fn finish(
    db: &Db,
    events: &Events,
    rules: &HealthRules,
    tenant: &Tenant,
    run_id: &str,
    request: Finish,
    max_json_bytes: usize,
) -> AppResult<Run> {
    let error = bounded_text("error", request.error, MAX_ERROR_CHARS)?;
    let error = error.as_deref();
    let output = super::queue::json_document("output", request.output.as_ref(), max_json_bytes)?;
    let output = output.as_deref();
    let (outcome, lease) = (request.outcome, request.lease_id.as_deref());
    db.write_with_events(tenant, events, |tx| {
        finished(tx, rules, run_id, outcome, error, output, lease).into_work()
    })
    .await
}

async fn finished(
    tx: &mut Tx<EventKind>,
    rules: &HealthRules,
    run_id: &str,
    outcome: Outcome,
    error: Option<&str>,
    output: Option<&str>,
    lease: Option<&str>,
) -> AppResult<Run> {
    if lease.is_some() {
        check_lease(&locked_run(tx, run_id).await?, lease)?;
    }
    let run = transition(tx, run_id, Action::Finish, |at| {
        StatusChange::finishing(outcome.status(), error.map(str::to_owned), at)
            .with_output(output.map(str::to_owned))
    })
    .await?;
    tx.publish(run_changed(&run, None));
    count_run(tx, &run.workflow_id, outcome.verdict(), rules).await?;
    Ok(run)
}

/// Pauses a running run; the sweepers leave paused runs alone (a claimed run's lease
/// stops running until the executor's next heartbeat).
pub async fn pause(db: &Db, events: &Events, tenant: &Tenant, run_id: &str) -> AppResult<Run> {
    db.write_with_events(tenant, events, |tx| paused(tx, run_id).into_work())
        .await
}

async fn paused(tx: &mut Tx<EventKind>, run_id: &str) -> AppResult<Run> {
    let run = transition(tx, run_id, Action::Pause, |at| {
        StatusChange::to(Status::Paused, at).suspending_lease()
    })
    .await?;
    tx.publish(run_changed(&run, None));
    Ok(run)
}

/// Resumes a paused run; its timeout counts from now.
pub async fn resume(db: &Db, events: &Events, tenant: &Tenant, run_id: &str) -> AppResult<Run> {
    db.write_with_events(tenant, events, |tx| {
        changed(tx, run_id, Action::Resume, Status::Running).into_work()
    })
    .await
}

/// Pause and resume: a status change that does not count for health but restarts the
/// timeout clock.
async fn changed(
    tx: &mut Tx<EventKind>,
    run_id: &str,
    action: Action,
    status: Status,
) -> AppResult<Run> {
    let run = transition(tx, run_id, action, |at| StatusChange::to(status, at)).await?;
    tx.publish(run_changed(&run, None));
    Ok(run)
}

/// Cancels a run that has not finished, keeping `reason` as its error. Cancelled runs do
/// not count for the workflow's health.
pub async fn cancel(
    db: &Db,
    events: &Events,
    tenant: &Tenant,
    run_id: &str,
    reason: Option<String>,
) -> AppResult<Run> {
    let reason = bounded_text("reason", reason, MAX_ERROR_CHARS)?;
    let reason = reason.as_deref();
    db.write_with_events(tenant, events, |tx| {
        cancelled(tx, run_id, reason).into_work()
    })
    .await
}

async fn cancelled(tx: &mut Tx<EventKind>, run_id: &str, reason: Option<&str>) -> AppResult<Run> {
    let run = transition(tx, run_id, Action::Cancel, |at| {
        StatusChange::finishing(Status::Cancelled, reason.map(str::to_owned), at)
    })
    .await?;
    tx.publish(run_changed(&run, None));
    Ok(run)
}

/// The time-out the sweeper applies: like [`transition`], but only for a run still stale
/// at `cutoff`; `None` when another instance or a report got there first.
pub(super) async fn time_out(
    tx: &mut Tx<EventKind>,
    run_id: &str,
    cutoff: NaiveDateTime,
    message: &str,
) -> AppResult<Option<Run>> {
    tx.lock(Lock::NoKeyUpdate, runs::id, run_id).await?;
    let change = StatusChange::finishing(Status::TimedOut, Some(message.to_owned()), now());
    tx.optional(
        tx.runs()
            .filter(runs::id.eq(run_id))
            .filter(runs::status.eq_any(Action::TimeOut.allowed_from()))
            .filter(runs::lease_expires_at.is_null())
            .filter(runs::updated_at.lt(cutoff))
            .set((change, runs::version.eq(runs::version + 1)))
            .returning(Run::columns()),
    )
    .await
}
