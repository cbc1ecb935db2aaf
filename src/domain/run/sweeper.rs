//! The sweeper: times out running runs whose executor went silent, a failure for their
//! workflows' health. Every instance runs it.

use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;

use super::Status;
use super::accounting::count_run;
use super::lifecycle::{run_changed, time_out};
use crate::db::schema::runs;
use crate::db::{Db, IntoWork as _, Tx};
use crate::domain::event::EventKind;
use crate::domain::event::Events;
use crate::domain::health::{HealthRules, Verdict};
use crate::domain::{Tenant, now};
use crate::error::{AppError, AppResult};

/// How many stale runs one sweep times out at most; the next sweep takes the rest.
const SWEEP_BATCH: i64 = 500;

/// Marks running runs with no report for longer than the run timeout as timed out.
/// Answers how many it timed out.
///
/// Safe to run on several instances at once: each run is timed out by a conditional
/// update in its own unit of work, so only one instance wins it, and only the winner
/// counts it and publishes events. A run that got a report meanwhile is left alone.
pub async fn time_out_stale_runs(
    db: &Db,
    events: &Events,
    rules: &HealthRules,
) -> AppResult<usize> {
    let timeout = TimeDelta::from_std(rules.run_timeout).map_err(AppError::internal)?;
    let Some(cutoff) = now().checked_sub_signed(timeout) else {
        return Ok(0);
    };
    // The sweeper acts for no viewer: one read across companies finds the stale runs,
    // then each is handled as its own company's.
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let stale: Vec<(String, String)> = all
        .load(
            all.runs()
                .filter(runs::status.eq(Status::Running))
                // A claimed run's lease governs it (see `queue::expire_leases`).
                .filter(runs::lease_expires_at.is_null())
                .filter(runs::updated_at.lt(cutoff))
                .order((runs::updated_at.asc(), runs::id.asc()))
                .limit(SWEEP_BATCH)
                .select((runs::id, runs::company_id)),
        )
        .await?;
    drop(tx);
    let message = format!("no step report for {} seconds", rules.run_timeout.as_secs());
    let mut timed_out = 0;
    for (run_id, company_id) in stale {
        let tenant = Tenant::new(company_id);
        let outcome = db
            .write_with_events(&tenant, events, |tx| {
                timed_out_run(tx, rules, &run_id, cutoff, &message).into_work()
            })
            .await;
        match outcome {
            Ok(true) => timed_out += 1,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(run_id = %run_id, ?error, "could not time out a stale run");
            }
        }
    }
    Ok(timed_out)
}

/// Times out one run if it is still running and stale; `false` when another instance or a
/// report got there first.
async fn timed_out_run(
    tx: &mut Tx<EventKind>,
    rules: &HealthRules,
    run_id: &str,
    cutoff: NaiveDateTime,
    message: &str,
) -> AppResult<bool> {
    let Some(run) = time_out(tx, run_id, cutoff, message).await? else {
        return Ok(false);
    };
    tx.publish(run_changed(&run, None));
    count_run(tx, &run.workflow_id, Verdict::Failure, rules).await?;
    Ok(true)
}
