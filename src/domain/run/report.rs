//! Step reports: an executor says how one step of a queued or running run went. The
//! report is recorded as a health log and counted on the run in one unit of work; a
//! healed step also records the healing on the step and may send an active workflow to
//! review.

use diesel::prelude::*;
use diesel::sql_types::{Double, Integer, Nullable, Text, Timestamp};

use crate::db::Columns as _;
use crate::db::report::Verdict;

use super::lifecycle::run_changed;
use super::{Action, Run, Status};
use crate::db::schema::{health_logs, runs, steps, workflows};
use crate::db::{Backend, Db, IntoWork as _, Lock, Tx};
use crate::domain::event::EventKind;
use crate::domain::event::Events;
use crate::domain::health::{HealthRules, review_notification};
use crate::domain::health_log::{self, HealthLog, StepOutcome};
use crate::domain::notification;
use crate::domain::step::StepHead;
use crate::domain::workflow::{self, Workflow};
use crate::domain::{Tenant, new_id, now};
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
    // On PostgreSQL a report is one statement (`db::report`). A healing that may send
    // the workflow to review takes the transaction: its notification's text is written
    // here from the workflow, and it is rare (once per workflow until it is reviewed).
    // SQLite's single writer always does.
    if db.backend() == Backend::Postgres && !review {
        return report_in_one_statement(db, events, tenant, run_id, step_id, report).await;
    }
    let report = &report;
    db.write_with_events(tenant, events, |tx| {
        reported(tx, run_id, step_id, report).into_work()
    })
    .await
}

/// What the report statement answers (`db::report`): its verdict, the run, and the log
/// under `log_`-prefixed names.
#[derive(QueryableByName)]
struct Answered {
    #[diesel(sql_type = Text)]
    verdict: Verdict,
    #[diesel(embed)]
    run: Run,
    #[diesel(sql_type = Nullable<Text>)]
    log_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    log_company_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    log_workflow_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    log_run_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    log_step_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    log_idempotency_key: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    log_status: Option<health_log::Status>,
    #[diesel(sql_type = Nullable<Text>)]
    log_error_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    log_error_message: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    log_healing_confidence: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    log_deterministic_score: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    log_ai_score: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    log_page_url: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    log_execution_time_ms: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamp>)]
    log_created_at: Option<chrono::NaiveDateTime>,
}

impl Answered {
    /// The log the answer carries: the new one, or the original of a duplicate.
    fn log(&mut self) -> Option<HealthLog> {
        Some(HealthLog {
            id: self.log_id.take()?,
            company_id: self.log_company_id.take()?,
            workflow_id: self.log_workflow_id.take()?,
            run_id: self.log_run_id.take()?,
            step_id: self.log_step_id.take(),
            idempotency_key: self.log_idempotency_key.take(),
            status: self.log_status?,
            error_type: self.log_error_type.take(),
            error_message: self.log_error_message.take(),
            healing_confidence: self.log_healing_confidence,
            deterministic_score: self.log_deterministic_score,
            ai_score: self.log_ai_score,
            page_url: self.log_page_url.take(),
            execution_time_ms: self.log_execution_time_ms,
            created_at: self.log_created_at?,
        })
    }
}

/// [`report_step`] as one statement on PostgreSQL: the same checks in the same order,
/// the same writes, answers and events (see `db::report` for why it is the same).
async fn report_in_one_statement(
    db: &Db,
    events: &Events,
    tenant: &Tenant,
    run_id: &str,
    step_id: &str,
    report: Report<'_>,
) -> AppResult<StepReport> {
    let outcome = report.outcome;
    let log_id = new_id();
    let statement = crate::db::report::StepReport {
        run_id,
        step_id,
        lease_id: report.lease_id,
        log_id: &log_id,
        idempotency_key: outcome.idempotency_key.as_deref(),
        status: outcome.status.as_str(),
        error_type: outcome.error_type.as_deref(),
        error_message: outcome.error_message.as_deref(),
        healing_confidence: outcome.healing_confidence,
        deterministic_score: outcome.deterministic_score,
        ai_score: outcome.ai_score,
        page_url: outcome.page_url.as_deref(),
        execution_time_ms: outcome.execution_time_ms,
        at: now(),
        increments: counter_increments(outcome.status),
        healing_method: outcome
            .status
            .healing_method()
            .map(|kind| outcome.healing_method.as_deref().unwrap_or(kind)),
        healed_selectors: report.healed_selectors,
    };
    let answer: Option<Answered> = db
        .write_statement(tenant, &statement)
        .await
        .map_err(step_gone)?
        .into_iter()
        .next();
    let mut answer = answer.ok_or(AppError::NotFound("run"))?;
    let log = answer.log();
    let run = answer.run;
    match answer.verdict {
        Verdict::Forbidden => Err(crate::domain::visibility::Need::Run.refusal()),
        Verdict::LeaseLost => Err(super::lifecycle::lease_lost()),
        Verdict::RunOver => Err(AppError::bad_input(
            "runId",
            Action::Report.refusal(run.status),
        )),
        Verdict::NoStep => Err(AppError::NotFound("step")),
        Verdict::OtherWorkflow => Err(AppError::bad_input(
            "stepId",
            "the step belongs to another workflow than the run",
        )),
        Verdict::Duplicate => {
            let original = log.ok_or_else(|| {
                AppError::internal(anyhow::anyhow!(
                    "the report statement found a duplicate of run {} without its log",
                    run.id
                ))
            })?;
            Ok(duplicate(run, original))
        }
        Verdict::Counted => {
            let Some(log) = log else {
                // A report with the same key committed after the statement's snapshot
                // was taken: nothing was written, and it is the original.
                return raced(db, tenant, &run.id, outcome).await;
            };
            events.publish(
                tenant,
                vec![
                    run_changed(&run, Some(&log)),
                    EventKind::HealthLogRecorded {
                        health_log_id: log.id.clone(),
                    },
                ],
            );
            // Answered once the events have left for the other instances, as any write.
            events.handed_over().await;
            Ok(StepReport {
                run,
                health_log: log,
                duplicate: false,
            })
        }
    }
}

/// The answer to a report whose key a concurrent report recorded first: that report's
/// log and the run as it is now.
async fn raced(
    db: &Db,
    tenant: &Tenant,
    run_id: &str,
    outcome: &StepOutcome,
) -> AppResult<StepReport> {
    let key = outcome.idempotency_key.as_deref().unwrap_or_default();
    let mut tx = db.read(tenant).await?;
    let original = log_with_key(&mut tx, run_id, key).await?.ok_or_else(|| {
        AppError::internal(anyhow::anyhow!(
            "health log of run {run_id} was neither inserted nor found"
        ))
    })?;
    let run: Run = tx
        .one(tx.runs().filter(runs::id.eq(run_id)).select(Run::columns()))
        .await?;
    Ok(duplicate(run, original))
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
    crate::domain::visibility::require(tx, &run.workflow_id, crate::domain::visibility::Need::Run)
        .await?;
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
async fn log_with_key<E: Send>(
    tx: &mut Tx<E>,
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
