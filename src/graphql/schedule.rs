//! Schedules: a workflow queued on a cron expression in a time zone. Members and admins
//! manage them (a schedule only queues runs of the company's own workflows, which any
//! member may run).

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::run::{Run, RunById};
use super::workflow::Workflow;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::schedule::ScheduleInput;

/// A workflow queued on a cron expression.
pub struct Schedule {
    pub row: domain::schedule::Schedule,
    pub viewer: Viewer,
}

impl Schedule {
    /// A schedule that may have been deleted since it was referenced: null then.
    pub async fn load_optional(
        ctx: &Context<'_>,
        id: Option<&str>,
    ) -> async_graphql::Result<Option<Self>> {
        let Some(id) = id else {
            return Ok(None);
        };
        let viewer = ctx.viewer()?;
        let row = ctx.loader()?.load_one(ScheduleById(id.to_owned())).await?;
        Ok(row.map(|row| Self {
            row,
            viewer: viewer.clone(),
        }))
    }
}

/// A workflow queued on a cron expression in an IANA time zone. Each occurrence queues one
/// run (`trigger` SCHEDULE, `notBefore` the occurrence) across all instances; occurrences
/// missed while the service was down are caught up by one run, not one per occurrence.
#[Object]
impl Schedule {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow it queues.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// A name for people.
    async fn name(&self) -> Option<&str> {
        self.row.name.as_deref()
    }

    /// Five fields: minute, hour, day of month, month, day of week (0 = Sunday), in
    /// `timezone`; e.g. `30 9 * * 1-5` for 09:30 on weekdays.
    async fn cron(&self) -> &str {
        &self.row.cron
    }

    /// The IANA time zone the expression is read in (e.g. `Europe/Berlin`); daylight
    /// saving changes keep the wall-clock time.
    async fn timezone(&self) -> &str {
        &self.row.timezone
    }

    /// The input each run gets.
    async fn input(&self) -> async_graphql::Result<Option<serde_json::Value>> {
        Ok(self
            .row
            .input
            .as_deref()
            .map(|text| domain::json::parse("input", text))
            .transpose()?)
    }

    /// The priority each run gets.
    async fn priority(&self) -> i32 {
        self.row.priority
    }

    /// False while paused.
    async fn enabled(&self) -> bool {
        self.row.enabled
    }

    /// The next occurrence; null while paused or when the expression fires no more.
    async fn next_fire_at(&self) -> Option<DateTime<Utc>> {
        self.row.next_fire_at.map(|at| at.and_utc())
    }

    /// The last occurrence fired.
    async fn last_fired_at(&self) -> Option<DateTime<Utc>> {
        self.row.last_fired_at.map(|at| at.and_utc())
    }

    /// The run the last successful occurrence queued; null before the first or once it
    /// is gone.
    async fn last_run(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Run>> {
        let Some(id) = &self.row.last_run_id else {
            return Ok(None);
        };
        let row = ctx.loader()?.load_one(RunById(id.clone())).await?;
        Ok(row.map(|row| Run {
            row,
            viewer: self.viewer.clone(),
        }))
    }

    /// Why the last occurrence queued nothing (e.g. the workflow was archived); null when
    /// it queued its run.
    async fn last_error(&self) -> Option<&str> {
        self.row.last_error.as_deref()
    }

    /// When the schedule was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When a person last changed it.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }
}

/// Batch key: a schedule of the loader's company, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScheduleById(pub String);

impl Loader<ScheduleById> for TenantLoader {
    type Value = domain::schedule::Schedule;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[ScheduleById],
    ) -> Result<HashMap<ScheduleById, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|key| key.0.clone()).collect();
        let rows = domain::schedule::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (ScheduleById(row.id.clone()), row))
            .collect())
    }
}

/// A new schedule.
#[derive(InputObject)]
pub struct CreateScheduleInput {
    /// The workflow to queue.
    pub workflow_id: ID,
    /// A name for people; at most 200 characters.
    pub name: Option<String>,
    /// Five fields: minute hour day-of-month month day-of-week (e.g. `0 6 * * *`); at most
    /// 100 characters.
    pub cron: String,
    /// An IANA time zone name (e.g. `America/New_York`); default `UTC`.
    pub timezone: Option<String>,
    /// The input each run gets: any JSON value, at most 64 KiB serialised.
    pub input: Option<serde_json::Value>,
    /// The priority each run gets: -1,000 to 1,000, default 0.
    pub priority: Option<i32>,
    /// False creates it paused; default true.
    pub enabled: Option<bool>,
}

/// A change of a schedule; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateScheduleInput {
    /// A name for people; null clears it.
    pub name: MaybeUndefined<String>,
    /// A new cron expression; the next occurrence moves.
    pub cron: Option<String>,
    /// A new time zone; the next occurrence moves.
    pub timezone: Option<String>,
    /// The input each run gets; null clears it.
    pub input: MaybeUndefined<serde_json::Value>,
    /// The priority each run gets.
    pub priority: Option<i32>,
}

fn change<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

#[derive(Default)]
pub struct ScheduleQuery;

#[Object]
impl ScheduleQuery {
    /// A schedule of the viewer's company; null with NOT_FOUND when there is no such
    /// schedule.
    async fn schedule(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The schedule's id.")] id: ID,
    ) -> async_graphql::Result<Option<Schedule>> {
        let viewer = ctx.viewer()?;
        let row = domain::schedule::find(ctx.db(), &viewer.tenant, &id).await?;
        Ok(Some(Schedule {
            row,
            viewer: viewer.clone(),
        }))
    }

    /// A workflow's schedules, oldest first (at most 20 per workflow).
    async fn schedules(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
    ) -> async_graphql::Result<Vec<Schedule>> {
        let viewer = ctx.viewer()?;
        let rows = domain::schedule::of_workflow(ctx.db(), &viewer.tenant, &workflow_id).await?;
        Ok(rows
            .into_iter()
            .map(|row| Schedule {
                row,
                viewer: viewer.clone(),
            })
            .collect())
    }
}

#[derive(Default)]
pub struct ScheduleMutation;

impl ScheduleMutation {
    fn wrap(viewer: &Viewer, row: domain::schedule::Schedule) -> Schedule {
        Schedule {
            row,
            viewer: viewer.clone(),
        }
    }
}

#[Object]
impl ScheduleMutation {
    /// Creates a schedule of a workflow (at most 20 per workflow). An invalid `cron` or
    /// `timezone` is BAD_USER_INPUT naming the field. Occurrences while the workflow is not
    /// ACTIVE or NEEDS_REVIEW queue nothing (`lastError` says why).
    async fn create_schedule(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The schedule.")] input: CreateScheduleInput,
    ) -> async_graphql::Result<Schedule> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let changes = ScheduleInput {
            name: Some(input.name),
            cron: Some(input.cron),
            timezone: input.timezone,
            input: Some(input.input),
            priority: input.priority,
        };
        let row = domain::schedule::create(
            ctx.db(),
            &viewer.tenant,
            services.queue.cron,
            &input.workflow_id,
            changes,
            input.enabled.unwrap_or(true),
            services.queue.max_json_bytes,
        )
        .await?;
        Ok(Self::wrap(viewer, row))
    }

    /// Changes a schedule; a new `cron` or `timezone` moves its next occurrence.
    async fn update_schedule(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The schedule.")] id: ID,
        #[graphql(desc = "What to change.")] input: UpdateScheduleInput,
    ) -> async_graphql::Result<Schedule> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let changes = ScheduleInput {
            name: change(input.name),
            cron: input.cron,
            timezone: input.timezone,
            input: change(input.input),
            priority: input.priority,
        };
        let row = domain::schedule::update(
            ctx.db(),
            &viewer.tenant,
            services.queue.cron,
            &id,
            changes,
            services.queue.max_json_bytes,
        )
        .await?;
        Ok(Self::wrap(viewer, row))
    }

    /// Pauses a schedule: no runs until it is resumed.
    async fn pause_schedule(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The schedule.")] id: ID,
    ) -> async_graphql::Result<Schedule> {
        let viewer = ctx.viewer()?;
        let cron = ctx.services().queue.cron;
        let row = domain::schedule::set_enabled(ctx.db(), &viewer.tenant, cron, &id, false).await?;
        Ok(Self::wrap(viewer, row))
    }

    /// Resumes a paused schedule from its next occurrence after now (what it missed while
    /// paused is not caught up).
    async fn resume_schedule(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The schedule.")] id: ID,
    ) -> async_graphql::Result<Schedule> {
        let viewer = ctx.viewer()?;
        let cron = ctx.services().queue.cron;
        let row = domain::schedule::set_enabled(ctx.db(), &viewer.tenant, cron, &id, true).await?;
        Ok(Self::wrap(viewer, row))
    }

    /// Deletes a schedule; the runs it queued stay. True when it was deleted.
    async fn delete_schedule(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The schedule.")] id: ID,
    ) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        domain::schedule::delete(ctx.db(), &viewer.tenant, &id).await?;
        Ok(true)
    }
}
