//! The run queue: runs wait as `queued` until an executor claims one under a lease.
//!
//! - **Enqueue** ([`enqueue`], and schedules, webhooks and [`retry`] through
//!   [`insert_queued`]): a `queued` run of a runnable workflow, with its input, priority,
//!   the time it becomes claimable and how many claims it may take. A scoped idempotency
//!   key (`api:`, `hook:<id>:`, `schedule:<id>:`) makes each enqueue happen at most once:
//!   the same key answers the run it made the first time.
//! - **Claim** ([`claim`]): the oldest claimable run of the highest priority goes to one
//!   caller, atomically — `FOR UPDATE SKIP LOCKED` on PostgreSQL, the single writer on
//!   SQLite ([`Tx::next_queued_run`]) — and starts `running` under a lease: a fencing token
//!   (`lease_id`) and an expiry, renewed by [`heartbeat`].
//! - **Expiry** ([`expire_leases`], every instance, every tick): a running run whose lease
//!   lapsed goes back to the queue with its progress reset, or fails once it has been
//!   claimed `max_attempts` times. Each run is decided under its row lock with the expiry
//!   read again, so two instances never both act on it.
//!
//! A claimed run is governed by its lease, never by the run timeout (`sweeper`); pausing
//! suspends the lease until the executor's next heartbeat.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use serde_json::Value;

use super::accounting::count_run;
use super::lifecycle::{StatusChange, check_lease, run_changed, starter_gone};
use super::{Run, Status, Trigger};
use crate::db::schema::{runs, steps, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, Tx};
use crate::domain::event::{EventKind, Events};
use crate::domain::health::{HealthRules, Verdict};
use crate::domain::health_log::MAX_IDEMPOTENCY_KEY_CHARS;
use crate::domain::workflow::{self, Workflow};
use crate::domain::{Tenant, new_id, now, refuse_nul};
use crate::error::{AppError, AppResult};

/// Priorities run from -1,000 to 1,000; 0 unless given.
pub const MAX_PRIORITY: i32 = 1_000;
/// The most claims a run may be given (`maxAttempts`).
pub const MAX_ATTEMPTS: i32 = 20;
/// Claims a queued run may take unless told otherwise.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;
/// A lease lasts 1 second to 1 hour; a minute unless given.
pub const MAX_LEASE_SECONDS: i32 = 3_600;
pub const DEFAULT_LEASE_SECONDS: i32 = 60;
/// Most workflows one claim may name.
pub const MAX_CLAIM_WORKFLOWS: usize = 100;
/// How far ahead `notBefore` may be.
pub const MAX_NOT_BEFORE_DAYS: i64 = 366;
/// Expired leases one sweep handles at most; the next tick takes the rest.
const EXPIRY_BATCH: i64 = 500;
/// Queued runs a `runQueued` snapshot holds at most.
pub const SNAPSHOT_LIMIT: i64 = 100;

/// A run's input or output as stored: any JSON value, bounded (`None` stays absent).
pub fn json_document(
    field: &str,
    value: Option<&Value>,
    max_bytes: usize,
) -> AppResult<Option<String>> {
    value
        .map(|value| crate::domain::json::value_text(field, value, max_bytes))
        .transpose()
}

/// A client's idempotency key: 1 to 200 characters, no NUL.
pub fn client_key(field: &str, key: Option<String>) -> AppResult<Option<String>> {
    let Some(key) = key else {
        return Ok(None);
    };
    if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters long"),
        ));
    }
    refuse_nul(field, &key)?;
    Ok(Some(key))
}

/// What `enqueueRun` asks for.
#[derive(Debug, Clone, Default)]
pub struct Enqueue {
    pub workflow_id: String,
    pub input: Option<Value>,
    pub priority: Option<i32>,
    pub not_before: Option<NaiveDateTime>,
    pub max_attempts: Option<i32>,
    pub idempotency_key: Option<String>,
}

/// A queued run about to be inserted (by a client, a schedule, a webhook or a retry).
#[derive(Debug, Clone)]
pub(crate) struct NewQueuedRun<'a> {
    pub workflow_id: &'a str,
    pub started_by: Option<&'a str>,
    pub trigger: Trigger,
    pub trigger_id: Option<&'a str>,
    /// Validated JSON text.
    pub input: Option<String>,
    pub priority: i32,
    /// `None`: claimable at once.
    pub not_before: Option<NaiveDateTime>,
    pub max_attempts: i32,
    pub retry_of: Option<&'a str>,
    pub from_step_id: Option<&'a str>,
    /// Scoped (`api:`, `hook:<id>:`, `schedule:<id>:`).
    pub idempotency_key: Option<String>,
}

pub(crate) fn priority(value: Option<i32>) -> AppResult<i32> {
    let priority = value.unwrap_or(0);
    if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        return Err(AppError::bad_input(
            "priority",
            format!("priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}"),
        ));
    }
    Ok(priority)
}

fn max_attempts(value: Option<i32>) -> AppResult<i32> {
    let attempts = value.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS).contains(&attempts) {
        return Err(AppError::bad_input(
            "maxAttempts",
            format!("maxAttempts must be between 1 and {MAX_ATTEMPTS}"),
        ));
    }
    Ok(attempts)
}

fn lease_seconds(value: Option<i32>) -> AppResult<i32> {
    let seconds = value.unwrap_or(DEFAULT_LEASE_SECONDS);
    if !(1..=MAX_LEASE_SECONDS).contains(&seconds) {
        return Err(AppError::bad_input(
            "leaseSeconds",
            format!("leaseSeconds must be between 1 and {MAX_LEASE_SECONDS}"),
        ));
    }
    Ok(seconds)
}

/// Queues a run of an ACTIVE or NEEDS_REVIEW workflow for an executor to claim. A repeated
/// idempotency key answers the run it queued the first time, whatever else was sent.
pub async fn enqueue(
    db: &Db,
    events: &Events,
    tenant: &Tenant,
    requested_by: Option<&str>,
    request: Enqueue,
    max_json_bytes: usize,
) -> AppResult<Run> {
    let input = json_document("input", request.input.as_ref(), max_json_bytes)?;
    let priority = priority(request.priority)?;
    let max_attempts = max_attempts(request.max_attempts)?;
    let key = client_key("idempotencyKey", request.idempotency_key)?.map(|k| format!("api:{k}"));
    let at = now();
    if let Some(not_before) = request.not_before
        && not_before > at + TimeDelta::days(MAX_NOT_BEFORE_DAYS)
    {
        return Err(AppError::bad_input(
            "notBefore",
            format!("notBefore must be within {MAX_NOT_BEFORE_DAYS} days"),
        ));
    }
    // A time in the past means "now": it must not jump the queue ahead of runs waiting.
    let not_before = request.not_before.filter(|t| *t > at);
    let new = NewQueuedRun {
        workflow_id: &request.workflow_id,
        started_by: requested_by,
        trigger: Trigger::Queue,
        trigger_id: None,
        input,
        priority,
        not_before,
        max_attempts,
        retry_of: None,
        from_step_id: None,
        idempotency_key: key,
    };
    let new = &new;
    let (run, _) = db
        .write_with_events(tenant, events, |tx| insert_queued(tx, new).into_work())
        .await?;
    Ok(run)
}

/// The tenant's workflow if runs of it may be queued now (ACTIVE or NEEDS_REVIEW);
/// NOT_FOUND, or BAD_USER_INPUT on `workflowId` naming its status.
pub(crate) async fn runnable_workflow<E: Send>(
    tx: &mut Tx<E>,
    workflow_id: &str,
) -> AppResult<Workflow> {
    let workflow: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    if !matches!(
        workflow.status,
        workflow::Status::Active | workflow::Status::NeedsReview
    ) {
        return Err(AppError::bad_input(
            "workflowId",
            format!(
                "workflow is {}; only active or needs_review workflows can be run",
                workflow.status.as_str()
            ),
        ));
    }
    Ok(workflow)
}

/// The tenant's run enqueued with the scoped idempotency key `key`, if any.
async fn run_with_key<E: Send>(tx: &mut Tx<E>, key: &str) -> AppResult<Option<Run>> {
    tx.optional(
        tx.runs()
            .filter(runs::idempotency_key.eq(key))
            .select(Run::columns()),
    )
    .await
}

/// How many steps a run of `workflow_id` has to do: all of them, or for a retry those
/// from `from_step_id` on (all when that step is gone).
async fn steps_to_do<E: Send>(
    tx: &mut Tx<E>,
    workflow_id: &str,
    from_step_id: Option<&str>,
) -> AppResult<i32> {
    let from: Option<i32> = match from_step_id {
        Some(id) => {
            tx.optional(
                tx.steps()
                    .filter(steps::id.eq(id))
                    .filter(steps::workflow_id.eq(workflow_id))
                    .select(steps::step_number),
            )
            .await?
        }
        None => None,
    };
    let count: i64 = tx
        .one(
            tx.steps()
                .filter(steps::workflow_id.eq(workflow_id))
                .filter(steps::step_number.ge(from.unwrap_or(1)))
                .count(),
        )
        .await?;
    Ok(i32::try_from(count).unwrap_or(i32::MAX))
}

/// Inserts a queued run (or finds the one its idempotency key already made: `true`).
/// The workflow must be runnable; the run's event is published with the unit of work.
pub(crate) async fn insert_queued(
    tx: &mut Tx<EventKind>,
    new: &NewQueuedRun<'_>,
) -> AppResult<(Run, bool)> {
    if let Some(key) = &new.idempotency_key
        && let Some(run) = run_with_key(tx, key).await?
    {
        return Ok((run, true));
    }
    let workflow = runnable_workflow(tx, new.workflow_id).await?;
    let steps_total = steps_to_do(tx, &workflow.id, new.from_step_id).await?;
    let at = now();
    let mut run = Run {
        id: new_id(),
        company_id: String::new(),
        workflow_id: workflow.id.clone(),
        started_by: new.started_by.map(str::to_owned),
        status: Status::Queued,
        steps_total,
        steps_completed: 0,
        steps_failed: 0,
        steps_healed: 0,
        current_step_id: None,
        error: None,
        started_at: None,
        finished_at: None,
        created_at: at,
        updated_at: at,
        version: 1,
        trigger_kind: new.trigger,
        priority: new.priority,
        not_before: Some(new.not_before.unwrap_or(at)),
        input: new.input.clone(),
        output: None,
        attempt: 0,
        max_attempts: new.max_attempts,
        lease_id: None,
        lease_expires_at: None,
        retry_of: new.retry_of.map(str::to_owned),
        from_step_id: new.from_step_id.map(str::to_owned),
        trigger_id: new.trigger_id.map(str::to_owned),
        idempotency_key: new.idempotency_key.clone(),
    };
    // A concurrent enqueue with the same key may have got in since the lookup: its insert
    // wins (PostgreSQL waits for it to commit) and this one answers its run.
    let inserted = tx
        .insert_with(&mut run, |insert| insert.on_conflict_do_nothing())
        .await
        .map_err(starter_gone)?;
    if inserted == 0 {
        let key = new.idempotency_key.as_deref().unwrap_or_default();
        let original = run_with_key(tx, key).await?.ok_or_else(|| {
            AppError::internal(anyhow::anyhow!(
                "a queued run was neither inserted nor found by its key"
            ))
        })?;
        return Ok((original, true));
    }
    tx.publish(run_changed(&run, None));
    Ok((run, false))
}

/// A run handed to one executor: the run (now `running`) and the lease it holds.
#[derive(Debug, Clone)]
pub struct Lease {
    pub run: Run,
    /// Pass to `heartbeatRun` (and optionally `reportStep`/`finishRun`): the proof that
    /// this executor still holds the run.
    pub lease_id: String,
}

/// Hands the next claimable run (of one of `workflow_ids`, any when empty) to the caller
/// under a lease of `lease_seconds`; `None` when nothing is claimable. Safe under any
/// number of concurrent claimers on any number of instances: each run goes to one.
pub async fn claim(
    db: &Db,
    events: &Events,
    tenant: &Tenant,
    workflow_ids: Option<Vec<String>>,
    lease: Option<i32>,
) -> AppResult<Option<Lease>> {
    let workflow_ids = workflow_ids.unwrap_or_default();
    if workflow_ids.len() > MAX_CLAIM_WORKFLOWS {
        return Err(AppError::bad_input(
            "workflowIds",
            format!("workflowIds may list at most {MAX_CLAIM_WORKFLOWS} workflows"),
        ));
    }
    let mut workflow_ids = workflow_ids;
    workflow_ids.sort_unstable();
    workflow_ids.dedup();
    let seconds = lease_seconds(lease)?;
    let workflow_ids = &workflow_ids;
    db.write_with_events(tenant, events, |tx| {
        claimed(tx, workflow_ids, seconds).into_work()
    })
    .await
}

async fn claimed(
    tx: &mut Tx<EventKind>,
    workflow_ids: &[String],
    seconds: i32,
) -> AppResult<Option<Lease>> {
    let Some(run_id) = tx.next_queued_run(workflow_ids, now()).await? else {
        return Ok(None);
    };
    let run: Run = tx
        .one(
            tx.runs()
                .filter(runs::id.eq(&run_id))
                .select(Run::columns()),
        )
        .await?;
    // The workflow's steps as they are now: a retry runs the current definition.
    let steps_total = steps_to_do(tx, &run.workflow_id, run.from_step_id.as_deref()).await?;
    let at = now();
    let lease_id = new_id();
    let claimed: Option<Run> = tx
        .optional(
            tx.runs()
                .filter(runs::id.eq(&run.id))
                .filter(runs::status.eq(Status::Queued))
                .set((
                    runs::status.eq(Status::Running),
                    runs::steps_total.eq(steps_total),
                    runs::attempt.eq(runs::attempt + 1),
                    runs::lease_id.eq(Some(lease_id.clone())),
                    runs::lease_expires_at.eq(Some(at + TimeDelta::seconds(seconds.into()))),
                    runs::started_at.eq(Some(at)),
                    runs::updated_at.eq(at),
                    runs::version.eq(runs::version + 1),
                ))
                .returning(Run::columns()),
        )
        .await?;
    let Some(run) = claimed else {
        return Ok(None);
    };
    tx.publish(run_changed(&run, None));
    Ok(Some(Lease { run, lease_id }))
}

/// Renews the lease `lease_id` on the tenant's run for `lease_seconds` from now. CONFLICT
/// when that lease is no longer the run's (it lapsed and the run was re-queued, or the
/// run ended). A heartbeat is not a change of the run: no event, no new version.
pub async fn heartbeat(
    db: &Db,
    tenant: &Tenant,
    run_id: &str,
    lease_id: &str,
    lease: Option<i32>,
) -> AppResult<Lease> {
    let seconds = lease_seconds(lease)?;
    db.write(tenant, |tx| {
        renewed(tx, run_id, lease_id, seconds).into_work()
    })
    .await
}

async fn renewed<E: Send>(
    tx: &mut Tx<E>,
    run_id: &str,
    lease_id: &str,
    seconds: i32,
) -> AppResult<Lease> {
    let run: Run = tx
        .lock_and_read(Lock::NoKeyUpdate, runs::id, run_id)
        .await?
        .ok_or(AppError::NotFound("run"))?;
    check_lease(&run, Some(lease_id))?;
    if !matches!(run.status, Status::Running | Status::Paused) {
        return Err(AppError::Conflict(format!(
            "run is {}; its lease has ended",
            run.status.as_str()
        )));
    }
    // A paused run's lease stays suspended until it runs again.
    let expires =
        (run.status == Status::Running).then(|| now() + TimeDelta::seconds(seconds.into()));
    let run: Run = tx
        .one(
            tx.runs()
                .filter(runs::id.eq(&run.id))
                .set(runs::lease_expires_at.eq(expires))
                .returning(Run::columns()),
        )
        .await?;
    Ok(Lease {
        run,
        lease_id: lease_id.to_owned(),
    })
}

/// Re-queues (or, past `max_attempts`, fails) running runs whose lease lapsed. Every
/// instance runs it; each run is decided in its own unit of work under its row lock, with
/// the expiry read again there, so only one instance acts on it. Answers how many runs
/// it re-queued or failed.
pub async fn expire_leases(db: &Db, events: &Events, rules: &HealthRules) -> AppResult<usize> {
    let cutoff = now();
    // The sweep acts for no viewer: one read across companies finds the lapsed leases,
    // then each run is handled as its own company's.
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let lapsed: Vec<(String, String)> = all
        .load(
            all.runs()
                .filter(runs::status.eq(Status::Running))
                .filter(runs::lease_expires_at.lt(cutoff))
                .order((runs::lease_expires_at.asc(), runs::id.asc()))
                .limit(EXPIRY_BATCH)
                .select((runs::id, runs::company_id)),
        )
        .await?;
    drop(tx);
    let mut handled = 0;
    for (run_id, company_id) in lapsed {
        let tenant = Tenant::new(company_id);
        let outcome = db
            .write_with_events(&tenant, events, |tx| {
                lapsed_run(tx, rules, &run_id).into_work()
            })
            .await;
        match outcome {
            Ok(true) => handled += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(run_id = %run_id, ?error, "could not expire a run's lease");
            }
        }
    }
    Ok(handled)
}

/// One lapsed lease: back to the queue with its progress reset, or failed (and counted
/// for the workflow's health) once its claims are used up. `false` when the run was
/// renewed, finished or handled by another instance meanwhile.
async fn lapsed_run(tx: &mut Tx<EventKind>, rules: &HealthRules, run_id: &str) -> AppResult<bool> {
    let Some(run) = tx
        .lock_and_read::<Run, _>(Lock::NoKeyUpdate, runs::id, run_id)
        .await?
    else {
        return Ok(false);
    };
    let at = now();
    let lapsed = run.status == Status::Running && run.lease_expires_at.is_some_and(|t| t < at);
    if !lapsed {
        return Ok(false);
    }
    if run.attempt < run.max_attempts {
        let note = format!(
            "the lease of attempt {} of {} expired without a heartbeat; re-queued",
            run.attempt, run.max_attempts
        );
        let run: Run = tx
            .one(
                tx.runs()
                    .filter(runs::id.eq(&run.id))
                    .set((
                        runs::status.eq(Status::Queued),
                        runs::lease_id.eq(None::<String>),
                        runs::lease_expires_at.eq(None::<NaiveDateTime>),
                        runs::not_before.eq(Some(at)),
                        runs::steps_completed.eq(0),
                        runs::steps_failed.eq(0),
                        runs::steps_healed.eq(0),
                        runs::current_step_id.eq(None::<String>),
                        runs::started_at.eq(None::<NaiveDateTime>),
                        runs::error.eq(Some(note)),
                        runs::updated_at.eq(at),
                        runs::version.eq(runs::version + 1),
                    ))
                    .returning(Run::columns()),
            )
            .await?;
        tx.publish(run_changed(&run, None));
        return Ok(true);
    }
    let error = format!(
        "the lease of attempt {} of {} expired without a heartbeat, and maxAttempts ({}) is \
         reached: the executor stopped responding",
        run.attempt, run.max_attempts, run.max_attempts
    );
    let change = StatusChange::finishing(Status::Failed, Some(error), at);
    let run: Run = tx
        .one(
            tx.runs()
                .filter(runs::id.eq(&run.id))
                .set((change, runs::version.eq(runs::version + 1)))
                .returning(Run::columns()),
        )
        .await?;
    tx.publish(run_changed(&run, None));
    count_run(tx, &run.workflow_id, Verdict::Failure, rules).await?;
    Ok(true)
}

/// Queues a new run retrying the tenant's finished run `run_id` on its workflow's current
/// steps (from `from_step` on, a step of that workflow, or from the first): same input,
/// priority and `maxAttempts`, linked by `retry_of`.
pub async fn retry(
    db: &Db,
    events: &Events,
    tenant: &Tenant,
    requested_by: Option<&str>,
    run_id: &str,
    from_step: Option<&str>,
) -> AppResult<Run> {
    db.write_with_events(tenant, events, |tx| {
        retried(tx, requested_by, run_id, from_step).into_work()
    })
    .await
}

async fn retried(
    tx: &mut Tx<EventKind>,
    requested_by: Option<&str>,
    run_id: &str,
    from_step: Option<&str>,
) -> AppResult<Run> {
    let original: Run = tx
        .optional(tx.runs().filter(runs::id.eq(run_id)).select(Run::columns()))
        .await?
        .ok_or(AppError::NotFound("run"))?;
    if !original.status.is_finished() {
        return Err(AppError::bad_input(
            "runId",
            format!(
                "run is {}; only a finished run can be retried (cancel it first)",
                original.status.as_str()
            ),
        ));
    }
    if let Some(step_id) = from_step {
        let workflow_of_step: String = tx
            .optional(
                tx.steps()
                    .filter(steps::id.eq(step_id))
                    .select(steps::workflow_id),
            )
            .await?
            .ok_or(AppError::NotFound("step"))?;
        if workflow_of_step != original.workflow_id {
            return Err(AppError::bad_input(
                "fromStep",
                "fromStep must be a step of the run's workflow",
            ));
        }
    }
    let new = NewQueuedRun {
        workflow_id: &original.workflow_id,
        started_by: requested_by,
        trigger: Trigger::Retry,
        trigger_id: None,
        input: original.input.clone(),
        priority: original.priority,
        not_before: None,
        max_attempts: original.max_attempts.max(1),
        retry_of: Some(&original.id),
        from_step_id: from_step,
        idempotency_key: None,
    };
    Ok(insert_queued(tx, &new).await?.0)
}

/// The tenant's queued runs (of `workflow_ids`, any when empty) in claim order, at most
/// [`SNAPSHOT_LIMIT`]: what a `runQueued` subscriber is told first, and again after
/// catching up.
pub async fn queued(db: &Db, tenant: &Tenant, workflow_ids: &[String]) -> AppResult<Vec<Run>> {
    let mut tx = db.read(tenant).await?;
    let filter = crate::db::expr::Maybe::when(!workflow_ids.is_empty(), || {
        runs::workflow_id.eq_any(workflow_ids.to_vec())
    });
    tx.load(
        tx.runs()
            .filter(runs::status.eq(Status::Queued))
            .filter(filter)
            .order((
                runs::priority.desc(),
                runs::not_before.asc(),
                runs::id.asc(),
            ))
            .limit(SNAPSHOT_LIMIT)
            .select(Run::columns()),
    )
    .await
}
