//! How a finished run counts for its workflow's health: the figures it updates, the
//! status change the health rules make (broken, recovered) and the notification that
//! announces it — in the same unit of work as the finish.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::Columns as _;

use crate::db::schema::workflows;
use crate::db::{Lock, Tx};
use crate::domain::event::EventKind;
use crate::domain::health::{Figures, HealthRules, Verdict};
use crate::domain::notification;
use crate::domain::now;
use crate::domain::workflow::{Status as WorkflowStatus, Workflow};
use crate::error::AppResult;

/// The figures a counted run writes back to its workflow.
#[derive(AsChangeset)]
#[diesel(table_name = workflows)]
struct HealthPatch {
    status: Option<WorkflowStatus>,
    success_rate: f64,
    total_uses: i32,
    consecutive_failures: i32,
    last_success_at: Option<NaiveDateTime>,
    last_failure_at: Option<NaiveDateTime>,
    updated_at: Option<NaiveDateTime>,
}

/// After a run finished (its row locked): locks its workflow, counts the run for the
/// workflow's health, applies the status change the rules make, and raises its
/// notification; the events go out with the unit of work.
pub(super) async fn count_run(
    tx: &mut Tx<EventKind>,
    workflow_id: &str,
    verdict: Verdict,
    rules: &HealthRules,
) -> AppResult<()> {
    tx.lock(Lock::NoKeyUpdate, workflows::id, workflow_id)
        .await?;
    let workflow: Workflow = tx
        .one(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select(Workflow::columns()),
        )
        .await?;
    let before = Figures::of(&workflow);
    let update = rules.count_run(&before, verdict);
    let at = now();
    let succeeded = update.verdict == Verdict::Success;
    let patch = HealthPatch {
        status: update.transition.map(|t| t.status()),
        success_rate: update.figures.success_rate,
        total_uses: update.figures.total_uses,
        consecutive_failures: update.figures.consecutive_failures,
        last_success_at: succeeded.then_some(at),
        last_failure_at: (!succeeded).then_some(at),
        // Like a human edit, a status change is a change of the workflow; new figures
        // alone are not.
        updated_at: update.transition.map(|_| at),
    };
    let updated: Workflow = tx
        .one(
            tx.workflows()
                .filter(workflows::id.eq(&workflow.id))
                .set(&patch)
                .returning(Workflow::columns()),
        )
        .await?;
    if let Some(transition) = update.transition {
        let mut row = notification::new_row(
            tx.tenant(),
            transition.notification(&workflow, update.figures.consecutive_failures),
        );
        tx.insert(&mut row).await?;
        tx.publish(EventKind::WorkflowStatusChanged {
            workflow: Box::new(updated),
            previous: workflow.status,
        });
        tx.publish(EventKind::NotificationCreated {
            notification: Box::new(row),
        });
    }
    Ok(())
}
