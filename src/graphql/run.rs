//! Runs: the `run` and `runs` queries, the `Run` type, and the mutations executors drive a
//! run with (start, report steps, pause, resume, finish, cancel).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use async_graphql::dataloader::Loader;
use async_graphql::parser::types::Field;
use async_graphql::resolver_utils::enum_value;
use async_graphql::{
    Context, ContextSelectionSet, Enum, ID, InputObject, Object, Positioned, SimpleObject, Value,
};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::health_log::{HealthLog, StepOutcomeInput, logs_of};
use super::loaders::{LoadError, TenantLoader, load_error};
use super::pagination::{CountSource, CountedConnection, PageArgs, TotalCount, connection};
use super::plain_list::{PlainConnection, PlainObject, optional, optional_str, scalar};
use super::step::Step;
use super::user::User;
use super::version::WorkflowVersion;
use super::workflow::Workflow;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::health_log::{HealthLogFilter, LogOrder, LogParent};
use crate::domain::page::{Page, PageRequest};
use crate::domain::run::{ORDERING, RunFilter};
use crate::error::{AppError, AppResult};

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::run::Status")]
pub enum RunStatus {
    /// Waiting for an executor to pick it up.
    Queued,
    /// An executor is working through the steps.
    Running,
    /// Stopped part-way; it can continue.
    Paused,
    /// Every step was done (some possibly healed).
    Succeeded,
    /// A step could not be done.
    Failed,
    /// Stopped on request before it finished.
    Cancelled,
    /// The executor stopped reporting for too long.
    TimedOut,
}

/// How an executor says a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::run::Outcome")]
pub enum RunOutcome {
    /// Every step was done.
    Succeeded,
    /// The run could not be completed.
    Failed,
}

/// The order of the company's run list (by when runs were requested; ties by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum RunOrder {
    /// Most recently requested first.
    Newest,
    /// Earliest requested first.
    Oldest,
}

impl From<RunOrder> for domain::run::RunOrder {
    fn from(order: RunOrder) -> Self {
        match order {
            RunOrder::Newest => Self::NewestFirst,
            RunOrder::Oldest => Self::OldestFirst,
        }
    }
}

/// Which runs to list. Every condition given must hold.
#[derive(Debug, Clone, Default, InputObject)]
#[graphql(name = "RunFilter")]
pub struct RunFilterInput {
    /// Only runs of this workflow (the same as the `workflowId` argument; pass one of them).
    pub workflow_id: Option<ID>,
    /// Only runs in one of these statuses (the same as the `status` argument; pass one of
    /// them); empty or absent: any status.
    pub status: Option<Vec<RunStatus>>,
    /// Only runs started by this member.
    pub started_by: Option<ID>,
    /// Only runs that started at or after this time (queued runs have not started).
    pub started_after: Option<DateTime<Utc>>,
    /// Only runs that started before this time.
    pub started_before: Option<DateTime<Utc>>,
    /// Only runs of workflows in this project (as they are now, not when the run
    /// started). A project that does not exist or is another company's matches no runs.
    pub project_id: Option<ID>,
}

impl RunFilterInput {
    /// The domain filter, with the older top-level `workflowId` and `status` arguments
    /// folded in (each condition may be given in one place only).
    fn into_domain(
        self,
        workflow_id: Option<ID>,
        status: Option<Vec<RunStatus>>,
    ) -> AppResult<RunFilter> {
        if workflow_id.is_some() && self.workflow_id.is_some() {
            return Err(AppError::bad_input(
                "filter.workflowId",
                "pass workflowId either as an argument or in filter, not both",
            ));
        }
        if status.is_some() && self.status.is_some() {
            return Err(AppError::bad_input(
                "filter.status",
                "pass status either as an argument or in filter, not both",
            ));
        }
        let (statuses, field) = match status {
            Some(status) => (Some(status), "status"),
            None => (self.status, "filter.status"),
        };
        RunFilter {
            workflow_id: workflow_id.or(self.workflow_id).map(|id| id.0),
            statuses: domain::filter_values(field, statuses)?,
            retry_of: None,
            started_by: self.started_by.map(|id| id.0),
            started_after: self.started_after.map(super::health_log::stored_precision),
            started_before: self.started_before.map(super::health_log::stored_precision),
            project_id: self.project_id.map(|id| id.0),
        }
        .validate("filter")
    }
}

/// The answer to `reportStep`.
#[derive(SimpleObject)]
pub struct StepReport {
    /// The run after the report; for a duplicate, the run as it is now.
    pub run: Run,
    /// The recorded outcome; for a duplicate, the one recorded the first time.
    pub health_log: HealthLog,
    /// True when the idempotency key had been seen for this run: nothing was recorded or
    /// counted this time.
    pub duplicate: bool,
}

/// One execution of a workflow.
pub struct Run {
    pub row: domain::run::Run,
    pub viewer: Viewer,
}

/// The fields of a run read from its row: what a page of runs answers in one pass
/// (`plain_list.rs`). Each arm answers exactly what the resolver of the same name below
/// does.
impl PlainObject for Run {
    fn plain_field<'a>(
        &self,
        _ctx: &ContextSelectionSet<'a>,
        field: &'a Positioned<Field>,
    ) -> Option<Value> {
        let row = &self.row;
        let at = |t: &chrono::NaiveDateTime| t.and_utc();
        Some(match field.node.name.node.as_str() {
            "id" => Value::String(row.id.clone()),
            "status" => enum_value(RunStatus::from(row.status)),
            "stepsTotal" => scalar(&row.steps_total),
            "stepsCompleted" => scalar(&row.steps_completed),
            "stepsFailed" => scalar(&row.steps_failed),
            "stepsHealed" => scalar(&row.steps_healed),
            "error" => optional_str(row.error.as_deref()),
            "startedAt" => optional(row.started_at.as_ref().map(at).as_ref()),
            "finishedAt" => optional(row.finished_at.as_ref().map(at).as_ref()),
            "createdAt" => scalar(&at(&row.created_at)),
            "updatedAt" => scalar(&at(&row.updated_at)),
            "trigger" => enum_value(super::queue::RunTrigger::from(row.trigger_kind)),
            "priority" => scalar(&row.priority),
            "notBefore" => optional(row.not_before.as_ref().map(at).as_ref()),
            "attempt" => scalar(&row.attempt),
            "maxAttempts" => scalar(&row.max_attempts),
            "leaseExpiresAt" => optional(row.lease_expires_at.as_ref().map(at).as_ref()),
            _ => return None,
        })
    }
}

// The fields `PlainObject for Run` answers (above) bypass these resolvers inside a page of
// runs: giving one of them a guard, arguments or a lookup means removing its arm there.
/// One execution of a workflow by an executor, with its progress.
#[Object]
impl Run {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow being run.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// Who started the run; null when it was started by the system or that member was
    /// removed.
    async fn started_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        User::load_opt(ctx, &self.viewer, self.row.started_by.as_deref()).await
    }

    /// Where the run is in its life.
    async fn status(&self) -> async_graphql::Result<RunStatus> {
        Ok(self.row.status.into())
    }

    /// How many steps the run has to do.
    async fn steps_total(&self) -> i32 {
        self.row.steps_total
    }

    /// How many steps are done, healed ones included.
    async fn steps_completed(&self) -> i32 {
        self.row.steps_completed
    }

    /// How many steps failed.
    async fn steps_failed(&self) -> i32 {
        self.row.steps_failed
    }

    /// How many steps needed healing (their recorded selectors no longer matched).
    async fn steps_healed(&self) -> i32 {
        self.row.steps_healed
    }

    /// The step being executed now; null before the first and after the last, or when
    /// that step was deleted.
    async fn current_step(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Step>> {
        Step::load_optional(ctx, self.row.current_step_id.as_deref()).await
    }

    /// Why the run failed, when it did.
    async fn error(&self) -> Option<&str> {
        self.row.error.as_deref()
    }

    /// When an executor began; null while queued.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.row.started_at.map(|at| at.and_utc())
    }

    /// When the run ended, whatever the outcome; null while it is going.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.row.finished_at.map(|at| at.and_utc())
    }

    /// When the run was requested.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When anything about the run last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }

    /// The version of the workflow the run ran; null for runs started before workflows
    /// had versions.
    async fn version(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<WorkflowVersion>> {
        let Some(number) = self.row.workflow_version else {
            return Ok(None);
        };
        WorkflowVersion::load(ctx, &self.row.workflow_id, number).await
    }

    /// The outcome of each step, oldest first: the order the steps were reported in.
    #[graphql(complexity = "super::pagination::page_complexity(first, None, child_complexity)")]
    async fn health_logs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many logs to return: 0 to 100, default 20.")] first: Option<i32>,
        #[graphql(desc = "Return the logs after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<PlainConnection<HealthLog>> {
        logs_of(
            ctx,
            LogParent::Run,
            &self.row.id,
            HealthLogFilter::default(),
            LogOrder::OldestFirst,
            PageArgs::forward(first, after),
        )
        .await
        .map(PlainConnection)
    }

    /// What made the run: MANUAL (`startRun`), QUEUE (`enqueueRun`), SCHEDULE, WEBHOOK or
    /// RETRY (`retryRun`).
    async fn trigger(&self) -> super::queue::RunTrigger {
        self.row.trigger_kind.into()
    }

    /// Queued runs of higher priority are claimed first (-1,000 to 1,000).
    async fn priority(&self) -> i32 {
        self.row.priority
    }

    /// When a queued run became (or becomes) claimable; for a scheduled run, the
    /// occurrence it was queued for. Null for runs never queued.
    async fn not_before(&self) -> Option<DateTime<Utc>> {
        self.row.not_before.map(|at| at.and_utc())
    }

    /// What the run was queued with (a webhook's JSON body, a schedule's or enqueuer's
    /// input); null when none.
    async fn input(&self) -> async_graphql::Result<Option<serde_json::Value>> {
        Ok(self
            .row
            .input
            .as_deref()
            .map(|text| domain::json::parse("input", text))
            .transpose()?)
    }

    /// What the executor finished the run with (`finishRun(output:)`); null when none.
    async fn output(&self) -> async_graphql::Result<Option<serde_json::Value>> {
        Ok(self
            .row
            .output
            .as_deref()
            .map(|text| domain::json::parse("output", text))
            .transpose()?)
    }

    /// How many times the run was claimed (0 while it waits for its first claim).
    async fn attempt(&self) -> i32 {
        self.row.attempt
    }

    /// Claims the run may take: once a lease of its last attempt expires, the run fails.
    async fn max_attempts(&self) -> i32 {
        self.row.max_attempts
    }

    /// When the current claim lapses unless its executor sends a heartbeat; null when no
    /// lease runs (never claimed, paused, or over).
    async fn lease_expires_at(&self) -> Option<DateTime<Utc>> {
        self.row.lease_expires_at.map(|at| at.and_utc())
    }

    /// The run this one retries (`retryRun`); null otherwise.
    async fn retry_of(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Run>> {
        let Some(id) = &self.row.retry_of else {
            return Ok(None);
        };
        let row = ctx.loader()?.load_one(RunById(id.clone())).await?;
        Ok(row.map(|row| Run {
            row,
            viewer: self.viewer.clone(),
        }))
    }

    /// The runs retrying this one, newest first.
    #[graphql(complexity = "super::pagination::page_complexity(first, None, child_complexity)")]
    async fn retries(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many runs to return: 0 to 100, default 20.")] first: Option<i32>,
        #[graphql(desc = "Return the runs after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<PlainConnection<Run>> {
        let filter = RunFilter {
            retry_of: Some(self.row.id.clone()),
            ..RunFilter::default()
        };
        runs_connection(
            ctx,
            filter,
            domain::run::RunOrder::NewestFirst,
            PageArgs::forward(first, after),
        )
        .await
        .map(PlainConnection)
    }

    /// Where a retry starts: this step of the workflow and the ones after it. Null for
    /// other runs, for a retry from the first step, or when that step was deleted since
    /// (the executor then starts from the first).
    #[allow(clippy::wrong_self_convention)] // `Run.fromStep`, not a conversion
    async fn from_step(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Step>> {
        Step::load_optional(ctx, self.row.from_step_id.as_deref()).await
    }

    /// The schedule that queued the run; null for other triggers or once it was deleted.
    async fn schedule(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::schedule::Schedule>> {
        if self.row.trigger_kind != domain::run::Trigger::Schedule {
            return Ok(None);
        }
        super::schedule::Schedule::load_optional(ctx, self.row.trigger_id.as_deref()).await
    }

    /// The webhook whose request queued the run; null for other triggers or once it was
    /// deleted.
    async fn webhook(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<super::webhook::Webhook>> {
        if self.row.trigger_kind != domain::run::Trigger::Webhook {
            return Ok(None);
        }
        super::webhook::Webhook::load_optional(ctx, self.row.trigger_id.as_deref()).await
    }
}

/// Batch key: a run of the loader's company, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunById(pub String);

impl Loader<RunById> for TenantLoader {
    type Value = domain::run::Run;
    type Error = LoadError;

    async fn load(&self, keys: &[RunById]) -> Result<HashMap<RunById, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|key| key.0.clone()).collect();
        let rows = domain::run::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (RunById(row.id.clone()), row))
            .collect())
    }
}

/// Batch key: one page of a workflow's runs (`Workflow.runs` under a list of workflows).
/// Keys asking for the same page of different workflows are read in one statement.
#[derive(Debug, Clone)]
pub struct RunsOfWorkflow {
    pub workflow_id: String,
    pub page: Arc<RunPage>,
}

/// What page of runs [`RunsOfWorkflow`] asks for.
#[derive(Debug)]
pub struct RunPage {
    statuses: Vec<domain::run::Status>,
    request: PageRequest,
    /// Equal for equal pages: the batch groups keys by it.
    fingerprint: String,
}

impl RunPage {
    pub fn new(statuses: Vec<domain::run::Status>, request: PageRequest) -> Self {
        let fingerprint = format!("{statuses:?}{request:?}");
        Self {
            statuses,
            request,
            fingerprint,
        }
    }
}

impl PartialEq for RunsOfWorkflow {
    fn eq(&self, other: &Self) -> bool {
        self.workflow_id == other.workflow_id && self.page.fingerprint == other.page.fingerprint
    }
}

impl Eq for RunsOfWorkflow {}

impl std::hash::Hash for RunsOfWorkflow {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.workflow_id.hash(state);
        self.page.fingerprint.hash(state);
    }
}

impl Loader<RunsOfWorkflow> for TenantLoader {
    type Value = Page<domain::run::Run>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[RunsOfWorkflow],
    ) -> Result<HashMap<RunsOfWorkflow, Self::Value>, LoadError> {
        let mut found = HashMap::with_capacity(keys.len());
        for group in group_by_page(keys, |k| k.page.fingerprint.as_str()) {
            let page = &group[0].page;
            let ids: Vec<String> = group.iter().map(|k| k.workflow_id.clone()).collect();
            let mut pages = domain::run::pages_by_workflow(
                &self.db,
                &self.tenant,
                &ids,
                &page.statuses,
                &page.request,
            )
            .await
            .map_err(load_error)?;
            for key in group {
                if let Some(page) = pages.remove(&key.workflow_id) {
                    found.insert(key.clone(), page);
                }
            }
        }
        Ok(found)
    }
}

/// Batch key: how many runs (in `statuses`, if any) a workflow has.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunCountOfWorkflow {
    pub workflow_id: String,
    pub statuses: Vec<domain::run::Status>,
}

impl Loader<RunCountOfWorkflow> for TenantLoader {
    type Value = i64;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[RunCountOfWorkflow],
    ) -> Result<HashMap<RunCountOfWorkflow, i64>, LoadError> {
        let mut found = HashMap::with_capacity(keys.len());
        let mut groups: HashMap<&[domain::run::Status], Vec<String>> = HashMap::new();
        for key in keys {
            groups
                .entry(key.statuses.as_slice())
                .or_default()
                .push(key.workflow_id.clone());
        }
        for (statuses, ids) in groups {
            let counts = domain::run::counts_by_workflow(&self.db, &self.tenant, &ids, statuses)
                .await
                .map_err(load_error)?;
            for id in ids {
                let count = counts.get(&id).copied().unwrap_or(0);
                let key = RunCountOfWorkflow {
                    workflow_id: id,
                    statuses: statuses.to_vec(),
                };
                found.insert(key, count);
            }
        }
        Ok(found)
    }
}

impl CountSource for RunCountOfWorkflow {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, async_graphql::Result<i64>> {
        Box::pin(async move { Ok(ctx.loader()?.load_one(self.clone()).await?.unwrap_or(0)) })
    }
}

/// Groups batch keys that ask for the same page (one statement per group).
pub fn group_by_page<K>(keys: &[K], page: impl Fn(&K) -> &str) -> Vec<Vec<&K>> {
    let mut groups: Vec<Vec<&K>> = Vec::new();
    for key in keys {
        match groups.iter_mut().find(|g| page(g[0]) == page(key)) {
            Some(group) => group.push(key),
            None => groups.push(vec![key]),
        }
    }
    groups
}

/// The runs connection of one workflow under a list: its page and count come from the
/// request's batch loader.
pub async fn runs_of_workflow(
    ctx: &Context<'_>,
    workflow_id: &str,
    statuses: Vec<domain::run::Status>,
    args: PageArgs,
) -> async_graphql::Result<CountedConnection<Run>> {
    let viewer = ctx.viewer()?;
    let request = args.into_request(ORDERING)?;
    let key = RunsOfWorkflow {
        workflow_id: workflow_id.to_owned(),
        page: Arc::new(RunPage::new(statuses.clone(), request.clone())),
    };
    let page = ctx
        .loader()?
        .load_one(key)
        .await?
        .unwrap_or_else(|| Page::from_scan(Vec::new(), &request));
    let total = TotalCount::from_source(RunCountOfWorkflow {
        workflow_id: workflow_id.to_owned(),
        statuses,
    });
    Ok(connection(
        page,
        ORDERING,
        domain::run::Run::position,
        |row| Run {
            row,
            viewer: viewer.clone(),
        },
        total,
    ))
}

/// A page of the viewer's runs matching `filter` in `order` (the root `runs`).
pub async fn runs_connection(
    ctx: &Context<'_>,
    filter: RunFilter,
    order: domain::run::RunOrder,
    args: PageArgs,
) -> async_graphql::Result<CountedConnection<Run>> {
    let viewer = ctx.viewer()?;
    let db = ctx.db();
    let request = args.into_request(order.tag())?;
    let page = domain::run::list(db, &viewer.tenant, &filter, order, &request).await?;
    let total = {
        let (db, tenant) = (db.clone(), viewer.tenant.clone());
        TotalCount::new(move || {
            let (db, tenant, filter) = (db.clone(), tenant.clone(), filter.clone());
            async move { domain::run::count(&db, &tenant, &filter).await }
        })
    };
    Ok(connection(
        page,
        order.tag(),
        domain::run::Run::position,
        |row| Run {
            row,
            viewer: viewer.clone(),
        },
        total,
    ))
}

/// The domain filter for a list of run statuses as a client sent it (bounded, distinct).
pub fn statuses(status: Option<Vec<RunStatus>>) -> AppResult<Vec<domain::run::Status>> {
    domain::filter_values("status", status)
}

#[derive(Default)]
pub struct RunQuery;

#[Object]
impl RunQuery {
    /// A run of the viewer's company; null with NOT_FOUND when there is no such run.
    async fn run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run's id.")] id: ID,
    ) -> async_graphql::Result<Option<Run>> {
        let viewer = ctx.viewer()?;
        let row = domain::run::find(ctx.db(), &viewer.tenant, &id).await?;
        Ok(Some(Run {
            row,
            viewer: viewer.clone(),
        }))
    }

    /// The company's runs, filtered, newest (or oldest) first.
    #[allow(clippy::too_many_arguments)] // the Relay arguments plus filters and order
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only runs of this workflow (also `filter.workflowId`).")]
        workflow_id: Option<ID>,
        #[graphql(
            desc = "Only runs in one of these statuses; empty or absent: any status (also `filter.status`)."
        )]
        status: Option<Vec<RunStatus>>,
        #[graphql(desc = "Which runs; absent: all.")] filter: Option<RunFilterInput>,
        #[graphql(
            desc = "NEWEST (default) or OLDEST first, by when the runs were requested.",
            default_with = "RunOrder::Newest"
        )]
        order: RunOrder,
        #[graphql(desc = "How many runs to return from the start: 0 to 100, default 20.")]
        first: Option<i32>,
        #[graphql(desc = "Return the runs after this cursor.")] after: Option<String>,
        #[graphql(desc = "How many runs to return from the end: 0 to 100.")] last: Option<i32>,
        #[graphql(desc = "Return the runs before this cursor.")] before: Option<String>,
    ) -> async_graphql::Result<PlainConnection<Run>> {
        let filter = filter
            .unwrap_or_default()
            .into_domain(workflow_id, status)?;
        let args = PageArgs {
            first,
            after,
            last,
            before,
        };
        runs_connection(ctx, filter, order.into(), args)
            .await
            .map(PlainConnection)
    }
}

#[derive(Default)]
pub struct RunMutation;

#[Object]
impl RunMutation {
    /// Starts a run of an ACTIVE or NEEDS_REVIEW workflow, started by the viewer: RUNNING
    /// at once, with `stepsTotal` the workflow's step count.
    async fn start_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow to run.")] workflow_id: ID,
    ) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let row = domain::run::start(
            ctx.db(),
            &services.events,
            &viewer.tenant,
            viewer.user_id(),
            &workflow_id,
        )
        .await?;
        Ok(Run {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Records the outcome of one step of a QUEUED or RUNNING run and counts it on the run.
    /// A healed step records its healing on the step; healed with a confidence below the
    /// review threshold, it moves an ACTIVE workflow to NEEDS_REVIEW.
    async fn report_step(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run the step was executed in.")] run_id: ID,
        #[graphql(desc = "The step, a step of the run's workflow.")] step_id: ID,
        #[graphql(desc = "How the step went.")] outcome: StepOutcomeInput,
        #[graphql(
            desc = "For a claimed run: the lease `claimRun` gave. When it is no longer the \
                    run's (it expired and the run was re-queued), the report is refused \
                    with CONFLICT and nothing is recorded."
        )]
        lease_id: Option<ID>,
    ) -> async_graphql::Result<StepReport> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let report = domain::run::report_step(
            ctx.db(),
            &services.events,
            &services.health,
            &viewer.tenant,
            &run_id,
            &step_id,
            outcome.into_domain(),
            lease_id.as_ref().map(|id| id.as_str()),
        )
        .await?;
        Ok(StepReport {
            run: Run {
                row: report.run,
                viewer: viewer.clone(),
            },
            health_log: HealthLog {
                row: report.health_log,
                viewer: viewer.clone(),
            },
            duplicate: report.duplicate,
        })
    }

    /// Ends a RUNNING run (a PAUSED one must be resumed first) and counts it for the
    /// workflow's health: too many failures in a row mark it BROKEN, a success of a BROKEN
    /// workflow makes it ACTIVE again.
    async fn finish_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run to finish.")] run_id: ID,
        #[graphql(desc = "How the run ended.")] status: RunOutcome,
        #[graphql(desc = "Why it failed; at most 2,000 characters.")] error: Option<String>,
        #[graphql(
            desc = "What the run produced: any JSON value, at most 64 KiB serialised \
                    (`--run-json-max-bytes`); `Run.output`."
        )]
        output: Option<serde_json::Value>,
        #[graphql(
            desc = "For a claimed run: the lease `claimRun` gave; CONFLICT when it is no \
                    longer the run's. Finishing ends the lease."
        )]
        lease_id: Option<ID>,
    ) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let request = domain::run::Finish {
            outcome: status.into(),
            error,
            output,
            lease_id: lease_id.map(|id| id.0),
        };
        let row = domain::run::finish(
            ctx.db(),
            &services.events,
            &services.health,
            &viewer.tenant,
            &run_id,
            request,
            services.queue.max_json_bytes,
        )
        .await?;
        Ok(Run {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Pauses a RUNNING run. A paused run is never timed out, and a claimed run's lease
    /// stops running (the next `heartbeatRun` after resuming starts it again).
    async fn pause_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run to pause.")] run_id: ID,
    ) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let row = domain::run::pause(ctx.db(), &services.events, &viewer.tenant, &run_id).await?;
        Ok(Run {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Resumes a PAUSED run; its timeout counts from now.
    async fn resume_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run to resume.")] run_id: ID,
    ) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let row = domain::run::resume(ctx.db(), &services.events, &viewer.tenant, &run_id).await?;
        Ok(Run {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Cancels a QUEUED, RUNNING or PAUSED run. Cancelled runs do not count for the
    /// workflow's health.
    async fn cancel_run(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The run to cancel.")] run_id: ID,
        #[graphql(
            desc = "Why it was cancelled, kept as the run's error; at most 2,000 characters."
        )]
        reason: Option<String>,
    ) -> async_graphql::Result<Run> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let row = domain::run::cancel(ctx.db(), &services.events, &viewer.tenant, &run_id, reason)
            .await?;
        Ok(Run {
            row,
            viewer: viewer.clone(),
        })
    }
}
