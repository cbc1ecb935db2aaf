//! Step reports: an executor says how one step of a queued or running run went. The
//! report is recorded as a health log and counted on the run in one unit of work; a
//! healed step also records the healing on the step and may send an active workflow to
//! review.

use diesel::prelude::*;

use crate::db::Columns as _;

use super::lifecycle::run_changed;
use super::{Action, Run, Status};
use crate::db::schema::{health_logs, runs, steps, workflows};
use crate::db::{Db, IntoWork as _, Lock, Tx};
use crate::domain::event::EventKind;
use crate::domain::event::Events;
use crate::domain::health::{HealthRules, review_notification};
use crate::domain::health_log::{self, HealthLog, StepOutcome};
use crate::domain::notification;
use crate::domain::step::StepHead;
use crate::domain::workflow::{self, Workflow};
use crate::domain::{Tenant, now};
use crate::error::{AppError, AppResult};

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
pub fn counter_increments(status: health_log::Status) -> (i32, i32, i32) {
    use health_log::Status::*;
    match status {
        Success => (1, 0, 0),
        HealedDeterministic | HealedAi => (1, 1, 0),
        Failed => (0, 0, 1),
    }
}

/// The step was deleted between the read and the insert that references it: answered as
/// if it had never been found (SQLite's writer never lets this happen; both must agree).
fn step_gone(error: AppError) -> AppError {
    if error.is_foreign_key_violation() {
        AppError::NotFound("step")
    } else {
        error
    }
}

/// Records the outcome of one step of a queued or running run and counts it on the run.
///
/// A healed step also records the healing on the step; healed with a confidence below
/// the review threshold, it moves an active workflow to needs_review with a warning.
/// A report whose idempotency key this run has seen is answered with the original log
/// and the current run, and changes nothing.
///
/// A healed report's `healedSelectors` (and method and confidence) are written to the step
/// in the same transaction. With `lease_id`, the run's current lease must be that one
/// (CONFLICT otherwise: the executor's claim lapsed).
#[allow(clippy::too_many_arguments)] // the report, its run and step, and the lease
pub async fn report_step(
    db: &Db,
    events: &Events,
    rules: &HealthRules,
    tenant: &Tenant,
    run_id: &str,
    step_id: &str,
    outcome: StepOutcome,
    lease_id: Option<&str>,
) -> AppResult<StepReport> {
    let outcome = outcome.validate("outcome")?;
    let healed_selectors = outcome.healed_selectors_text("outcome")?;
    let review = rules.needs_review(outcome.status, outcome.healing_confidence);
    let report = Report {
        outcome: &outcome,
        healed_selectors: healed_selectors.as_deref(),
        lease_id,
        review,
    };
    let report = &report;
    db.write_with_events(tenant, events, |tx| {
        reported(tx, run_id, step_id, report).into_work()
    })
    .await
}

/// A validated report and what it entails.
struct Report<'a> {
    outcome: &'a StepOutcome,
    /// JSON text, for a healed step.
    healed_selectors: Option<&'a str>,
    lease_id: Option<&'a str>,
    review: bool,
}

async fn reported(
    tx: &mut Tx<EventKind>,
    run_id: &str,
    step_id: &str,
    report: &Report<'_>,
) -> AppResult<StepReport> {
    let (outcome, review) = (report.outcome, report.review);
    // The run first (the lock order of the module docs), read and locked in one
    // statement: everything below reads it as it stays until commit.
    let run: Run = tx
        .lock_and_read(Lock::NoKeyUpdate, runs::id, run_id)
        .await?
        .ok_or(AppError::NotFound("run"))?;
    super::lifecycle::check_lease(&run, report.lease_id)?;
    if let Some(key) = &outcome.idempotency_key
        && let Some(original) = log_with_key(tx, &run.id, key).await?
    {
        return Ok(duplicate(run, original));
    }
    if !Action::Report.allows(run.status) {
        return Err(AppError::bad_input(
            "runId",
            Action::Report.refusal(run.status),
        ));
    }
    // The documents are not needed here: only the head is read.
    let step: StepHead = tx
        .optional(
            tx.steps()
                .filter(steps::id.eq(step_id))
                .select(StepHead::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("step"))?;
    if step.workflow_id != run.workflow_id {
        return Err(AppError::bad_input(
            "stepId",
            "the step belongs to another workflow than the run",
        ));
    }
    let at = now();
    let mut log = outcome
        .clone()
        .into_row(tx.tenant(), &run.workflow_id, &run.id, &step.id, at);
    // A concurrent report with the same key may have got in since the lookup; its
    // insert then wins (PostgreSQL waits for it to commit) and this one is the retry.
    let inserted = tx
        .insert_with(&mut log, |insert| insert.on_conflict_do_nothing())
        .await
        .map_err(step_gone)?;
    if inserted == 0 {
        let key = outcome.idempotency_key.as_deref().unwrap_or_default();
        let original = log_with_key(tx, &run.id, key).await?.ok_or_else(|| {
            AppError::internal(anyhow::anyhow!(
                "health log of run {} was neither inserted nor found",
                run.id
            ))
        })?;
        let run: Run = tx
            .one(
                tx.runs()
                    .filter(runs::id.eq(&run.id))
                    .select(Run::columns()),
            )
            .await?;
        return Ok(duplicate(run, original));
    }
    let mut consequences = Vec::new();
    if let Some(kind) = outcome.status.healing_method() {
        let method = outcome.healing_method.as_deref().unwrap_or(kind);
        // The workflow before the step: the lock order of the module docs.
        if review {
            consequences = send_to_review(tx, &run, &step, outcome, method).await?;
        }
        // Selectors are kept from the last healing that sent some: a report without
        // them says nothing new about where the element is.
        let selectors = report
            .healed_selectors
            .map(|text| steps::healed_selectors.eq(Some(text.to_owned())));
        tx.execute(tx.steps().filter(steps::id.eq(&step.id)).set((
            steps::healed_at.eq(Some(at)),
            steps::healing_confidence.eq(outcome.healing_confidence),
            steps::healing_method.eq(Some(method)),
            selectors,
        )))
        .await?;
    }
    let run = count_report(tx, &run, &step, outcome.status, at).await?;
    tx.publish(run_changed(&run, Some(&log)));
    tx.publish(EventKind::HealthLogRecorded {
        health_log_id: log.id.clone(),
    });
    for consequence in consequences {
        tx.publish(consequence);
    }
    Ok(StepReport {
        run,
        health_log: log,
        duplicate: false,
    })
}

fn duplicate(run: Run, health_log: HealthLog) -> StepReport {
    StepReport {
        run,
        health_log,
        duplicate: true,
    }
}

/// The log of run `run_id` recorded with idempotency key `key`.
async fn log_with_key(
    tx: &mut Tx<EventKind>,
    run_id: &str,
    key: &str,
) -> AppResult<Option<HealthLog>> {
    tx.optional(
        tx.health_logs()
            .filter(health_logs::run_id.eq(run_id))
            .filter(health_logs::idempotency_key.eq(key))
            .select(HealthLog::columns()),
    )
    .await
}

/// A healing below the review threshold moves an active workflow to needs_review with a
/// warning; answers the events that announce it (to follow the run's own).
async fn send_to_review(
    tx: &mut Tx<EventKind>,
    run: &Run,
    step: &StepHead,
    outcome: &StepOutcome,
    method: &str,
) -> AppResult<Vec<EventKind>> {
    let moved: Option<Workflow> = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(&run.workflow_id))
                .filter(workflows::status.eq(workflow::Status::Active))
                .set((
                    workflows::status.eq(workflow::Status::NeedsReview),
                    workflows::updated_at.eq(now()),
                ))
                .returning(Workflow::columns()),
        )
        .await?;
    let Some(workflow) = moved else {
        return Ok(Vec::new());
    };
    let mut row = notification::new_row(
        tx.tenant(),
        review_notification(
            &workflow,
            step.step_number,
            method,
            outcome.healing_confidence.unwrap_or_default(),
        ),
    );
    tx.insert(&mut row).await?;
    Ok(vec![
        EventKind::WorkflowStatusChanged {
            workflow: Box::new(workflow),
            previous: workflow::Status::Active,
        },
        EventKind::NotificationCreated {
            notification: Box::new(row),
        },
    ])
}

/// Counts the report on its run (locked, its status checked): the counters, the current
/// step, one more version. An executor reporting on a queued run has started it.
async fn count_report(
    tx: &mut Tx<EventKind>,
    run: &Run,
    step: &StepHead,
    status: health_log::Status,
    at: chrono::NaiveDateTime,
) -> AppResult<Run> {
    let (completed, healed, failed) = counter_increments(status);
    let starts = (run.status == Status::Queued).then_some(runs::started_at.eq(Some(at)));
    tx.one(
        tx.runs()
            .filter(runs::id.eq(&run.id))
            .set((
                runs::status.eq(Status::Running),
                runs::steps_completed.eq(runs::steps_completed + completed),
                runs::steps_healed.eq(runs::steps_healed + healed),
                runs::steps_failed.eq(runs::steps_failed + failed),
                runs::current_step_id.eq(Some(step.id.clone())),
                runs::updated_at.eq(at),
                runs::version.eq(runs::version + 1),
                starts,
            ))
            .returning(Run::columns()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_count_as_the_contract_says() {
        use health_log::Status::*;
        assert_eq!(counter_increments(Success), (1, 0, 0));
        assert_eq!(counter_increments(HealedDeterministic), (1, 1, 0));
        assert_eq!(counter_increments(HealedAi), (1, 1, 0));
        assert_eq!(counter_increments(Failed), (0, 0, 1));
    }
}
