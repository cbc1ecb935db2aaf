//! Runs: one execution of a workflow by an executor, with its progress counters.
//!
//! One file per concern: the status lifecycle people and executors drive
//! ([`lifecycle`]: start, pause, resume, finish, cancel), step reports ([`report`]), how a
//! finished run counts for its workflow's health ([`accounting`]) and the sweeper that
//! times out runs whose executor went silent ([`sweeper`]). This file holds the row, the
//! transition table and the reads.
//!
//! # Writing runs safely
//! Every write is one unit of work whose events leave after commit. The run is locked
//! first and the time taken after the lock (the lock order is in the `domain` module
//! docs), status checks happen under that lock, and every change adds one to the run's
//! version, so states and times follow commit order. On PostgreSQL a step report is the
//! same unit of work written as one statement (`db::report` explains why it keeps these
//! rules): one round trip per report.

mod accounting;
mod lifecycle;
pub mod queue;
mod report;
mod sweeper;

use std::collections::HashMap;

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;

use crate::db::Columns as _;

use super::page::{Page, PageRequest, Position, SortValue, time_key};
use super::{Tenant, health::Verdict};
use crate::db::expr::Maybe;
use crate::db::partition::{Condition, PartitionedPage};
use crate::db::schema::{runs, workflows};
use crate::db::{Db, TenantRow};
use crate::error::{AppError, AppResult};

pub use lifecycle::{Finish, cancel, finish, pause, resume, start};
pub use report::{StepReport, report_step};
pub use sweeper::time_out_stale_runs;

/// The longest `error` a run keeps (finish error, cancel reason).
pub const MAX_ERROR_CHARS: usize = 2_000;

/// Names the ordering of run lists nested under a workflow (newest first) inside cursors.
pub const ORDERING: &str = "runs:created_at:desc";

/// The order of the company's run list: by creation time, ties broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunOrder {
    #[default]
    NewestFirst,
    OldestFirst,
}

impl RunOrder {
    /// Names the ordering inside cursors, so a cursor only works for the ordering it came
    /// from.
    pub fn tag(self) -> &'static str {
        match self {
            Self::NewestFirst => ORDERING,
            Self::OldestFirst => "runs:created_at:asc",
        }
    }

    fn descending(self) -> bool {
        self == Self::NewestFirst
    }
}

crate::text_enum! {
    /// What made a run: a person starting it at once, or the queue (enqueued by a client,
    /// fired by a schedule, posted to a webhook, or retrying an earlier run).
    pub enum Trigger {
        Manual = "manual",
        Queue = "queue",
        Schedule = "schedule",
        Webhook = "webhook",
        Retry = "retry",
    }
}

crate::text_enum! {
    /// Where a run is in its life. Queued, running and paused runs are still going; the
    /// others are finished.
    pub enum Status {
        Queued = "queued",
        Running = "running",
        Paused = "paused",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
        TimedOut = "timed_out",
    }
}

impl Status {
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

    /// The message refusing this action on a run in status `current`.
    pub fn refusal(self, current: Status) -> String {
        let current = current.as_str();
        match self {
            Self::Report => format!("run is {current}; cannot report a step for it"),
            Self::Finish if current == Status::Paused.as_str() => {
                "run is paused; cannot finish it (resume it first)".to_owned()
            }
            Self::Finish => format!("run is {current}; cannot finish it"),
            Self::Pause => format!("run is {current}; cannot pause it"),
            Self::Resume => format!("run is {current}; cannot resume it"),
            Self::Cancel => format!("run is {current}; cannot cancel it"),
            Self::TimeOut => format!("run is {current}; cannot time it out"),
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

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable, Identifiable)]
#[diesel(table_name = runs, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Run {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub started_by: Option<String>,
    pub status: Status,
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
    /// What made the run (the `run_queue` migration adds this and what follows).
    pub trigger_kind: Trigger,
    /// Claimed before runs of lower priority.
    pub priority: i32,
    /// A queued run is claimable from then on (for a scheduled run: its occurrence).
    pub not_before: Option<NaiveDateTime>,
    /// JSON text handed to the executor.
    pub input: Option<String>,
    /// JSON text the executor finished with.
    pub output: Option<String>,
    /// How many times the run was claimed.
    pub attempt: i32,
    /// Claims allowed before an expired lease fails the run.
    pub max_attempts: i32,
    /// The current claim's fencing token: only its holder may renew the lease.
    pub lease_id: Option<String>,
    /// When the current claim lapses unless renewed; NULL while no lease runs.
    pub lease_expires_at: Option<NaiveDateTime>,
    /// The run this one retries.
    pub retry_of: Option<String>,
    /// Where a retry starts: a step of the workflow (from the first when absent).
    pub from_step_id: Option<String>,
    /// The schedule or webhook that made the run.
    pub trigger_id: Option<String>,
    /// The scoped key that makes enqueueing idempotent (see `queue`).
    pub idempotency_key: Option<String>,
    /// The number of the workflow version the run ran (none for runs started before
    /// workflows had versions).
    pub workflow_version: Option<i32>,
}

impl TenantRow for Run {
    type Table = runs::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl Run {
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
    /// Only the retries of this run.
    pub retry_of: Option<String>,
    /// Started by this member.
    pub started_by: Option<String>,
    /// Started at or after this time (runs not started yet have no start time).
    pub started_after: Option<NaiveDateTime>,
    /// Started before this time.
    pub started_before: Option<NaiveDateTime>,
    /// Only runs of workflows in this project. Matched against the workflows the unit of
    /// work sees, so another company's project (or a restricted workflow in it) matches
    /// nothing rather than failing: a list never tells which project ids exist.
    pub project_id: Option<String>,
}

impl RunFilter {
    /// Checks the time window; `field` prefixes the names in errors (e.g. `filter`).
    pub fn validate(self, field: &str) -> AppResult<Self> {
        if let (Some(after), Some(before)) = (self.started_after, self.started_before)
            && before < after
        {
            return Err(AppError::bad_input(
                format!("{field}.startedBefore"),
                format!("{field}.startedBefore must not be before {field}.startedAfter"),
            ));
        }
        Ok(self)
    }
}

/// The condition of a [`RunFilter`].
type Matching = dsl::And<
    dsl::And<
        dsl::And<
            dsl::And<
                dsl::And<
                    Maybe<dsl::Eq<runs::workflow_id, String>>,
                    Maybe<dsl::EqAny<runs::status, Vec<Status>>>,
                >,
                Maybe<dsl::Eq<runs::retry_of, String>>,
            >,
            Maybe<dsl::Eq<runs::started_by, String>>,
        >,
        Maybe<dsl::GtEq<runs::started_at, NaiveDateTime>>,
    >,
    Maybe<dsl::Lt<runs::started_at, NaiveDateTime>>,
>;

impl RunFilter {
    fn condition(&self) -> Matching {
        Maybe::from_option(self.workflow_id.clone().map(|id| runs::workflow_id.eq(id)))
            .and(Maybe::when(!self.statuses.is_empty(), || {
                runs::status.eq_any(self.statuses.clone())
            }))
            .and(Maybe::from_option(
                self.retry_of.clone().map(|id| runs::retry_of.eq(id)),
            ))
            .and(Maybe::from_option(
                self.started_by
                    .clone()
                    .map(|user| runs::started_by.eq(user)),
            ))
            .and(Maybe::from_option(
                self.started_after.map(|at| runs::started_at.ge(at)),
            ))
            .and(Maybe::from_option(
                self.started_before.map(|at| runs::started_at.lt(at)),
            ))
    }
}

/// One page of the tenant's runs in `order`.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &RunFilter,
    order: RunOrder,
    page: &PageRequest,
) -> AppResult<Page<Run>> {
    let keyset = page.keyset(order.descending(), time_key)?;
    let mut tx = db.read(tenant).await?;
    let in_project = filter.project_id.clone().map(|project| {
        runs::workflow_id.eq_any(
            tx.workflows()
                .filter(workflows::project_id.eq(project))
                .select(workflows::id)
                .into_subquery(),
        )
    });
    let rows = tx
        .load(
            tx.runs()
                .filter(filter.condition())
                .filter_maybe(in_project)
                .select(Run::columns())
                .keyset(runs::created_at, runs::id, keyset),
        )
        .await?;
    Ok(Page::from_scan(rows, page))
}

/// How many of the tenant's runs match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &RunFilter) -> AppResult<i64> {
    let mut tx = db.read(tenant).await?;
    let in_project = filter.project_id.clone().map(|project| {
        runs::workflow_id.eq_any(
            tx.workflows()
                .filter(workflows::project_id.eq(project))
                .select(workflows::id)
                .into_subquery(),
        )
    });
    tx.one(
        tx.runs()
            .filter(filter.condition())
            .filter_maybe(in_project)
            .count(),
    )
    .await
}

/// One page of runs per workflow among `workflow_ids` (the `runs` connection under a list
/// of workflows), newest first, in one statement; `statuses` empty means any.
pub async fn pages_by_workflow(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
    statuses: &[Status],
    page: &PageRequest,
) -> AppResult<HashMap<String, Page<Run>>> {
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
        parents: workflow_ids.to_vec(),
        conditions,
    };
    let rows: Vec<Run> = db.read(tenant).await?.partitioned_pages(&statement).await?;
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
) -> AppResult<HashMap<String, i64>> {
    let filter = RunFilter {
        statuses: statuses.to_vec(),
        ..RunFilter::default()
    };
    let mut tx = db.read(tenant).await?;
    let rows: Vec<(String, i64)> = tx
        .load(
            tx.runs()
                .filter(runs::workflow_id.eq_any(workflow_ids))
                .filter(filter.condition())
                .group_by(runs::workflow_id)
                .select((runs::workflow_id, dsl::count_star())),
        )
        .await?;
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
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.runs()
            .filter(runs::id.eq_any(ids))
            .select(Run::columns()),
    )
    .await
}

/// Run rows by id in *any* company, for events arriving from another instance: the event
/// names its company, and the caller drops rows of any other. Unscoped on purpose.
pub(crate) async fn for_events(db: &Db, ids: &[String]) -> AppResult<Vec<Run>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.load(
        all.runs()
            .filter(runs::id.eq_any(ids))
            .select(Run::columns()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(action: Action) -> Vec<Status> {
        Status::ALL
            .iter()
            .copied()
            .filter(|s| action.allows(*s))
            .collect()
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
        for status in Status::ALL.iter().filter(|s| s.is_finished()) {
            for action in [
                Action::Report,
                Action::Finish,
                Action::Pause,
                Action::Resume,
                Action::Cancel,
                Action::TimeOut,
            ] {
                assert!(!action.allows(*status), "{action:?} from {status:?}");
            }
        }
    }

    #[test]
    fn refusals_name_the_current_status() {
        assert_eq!(
            Action::Pause.refusal(Status::Succeeded),
            "run is succeeded; cannot pause it"
        );
        assert!(
            Action::Finish
                .refusal(Status::Paused)
                .contains("resume it first")
        );
        assert!(
            Action::Report
                .refusal(Status::TimedOut)
                .contains("timed_out")
        );
    }
}
