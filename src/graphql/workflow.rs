//! Workflows: the list with filters and paging, one workflow with everything under it, and
//! the mutations that record, edit, archive, duplicate and delete them.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use async_graphql::parser::types::Field;
use async_graphql::resolver_utils::enum_value;
use async_graphql::{
    Context, ContextSelectionSet, Enum, ID, InputObject, MaybeUndefined, Object, Positioned, Value,
};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::guards::AdminOnly;
use super::health_log::{HealthLog, HealthLogFilterInput, logs_of};
use super::loaders::{LoadError, TenantLoader, load_error};
use super::pagination::{CountedConnection, PageArgs, SortDirection, TotalCount, connection};
use super::plain_list::{PlainConnection, PlainList, PlainObject, optional, optional_str, scalar};
use super::project::Project;
use super::run::{Run, RunStatus, runs_of_workflow, statuses as run_statuses};
use super::screenshot::{Screenshot, ScreenshotsOfWorkflow};
use super::share::{
    LinksOf, ShareLink, SharesOf, WorkflowPermission, WorkflowShare, WorkflowVisibility,
};
use super::step::{Step, StepInput, StepsOfWorkflow};
use super::user::{User, UserById};
use super::version::WorkflowVersion;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::health_log::{LogOrder, LogParent};
use crate::domain::workflow::{NewWorkflow, OrderField, WorkflowChanges};
use crate::error::{AppError, AppResult};

/// Where a workflow is in its life.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::workflow::Status")]
pub enum WorkflowStatus {
    /// Being recorded or edited; not yet run by executors.
    Draft,
    /// Uploaded and being prepared (labels, screenshots).
    Processing,
    /// Ready and healthy: executors may run it.
    Active,
    /// Runs, but a low-confidence healing asks a human to check it.
    NeedsReview,
    /// Failed several runs in a row; fix before use.
    Broken,
    /// Kept for the record; restore to draft to use again.
    Archived,
}

/// What a workflow list is sorted by; ties are always broken by id, so paging is stable.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowOrderField {
    /// When the workflow was created.
    CreatedAt,
    /// When the workflow or one of its steps last changed.
    UpdatedAt,
    /// Name, in the database's collation.
    Name,
    /// Share of successful runs.
    SuccessRate,
}

/// The order of a workflow list.
#[derive(InputObject, Debug, Clone, Copy)]
pub struct WorkflowOrder {
    /// What to sort by.
    #[graphql(default_with = "WorkflowOrderField::CreatedAt")]
    pub field: WorkflowOrderField,
    /// Which way.
    #[graphql(default_with = "SortDirection::Desc")]
    pub direction: SortDirection,
}

impl From<WorkflowOrder> for domain::workflow::WorkflowOrder {
    fn from(order: WorkflowOrder) -> Self {
        let field = match order.field {
            WorkflowOrderField::CreatedAt => OrderField::CreatedAt,
            WorkflowOrderField::UpdatedAt => OrderField::UpdatedAt,
            WorkflowOrderField::Name => OrderField::Name,
            WorkflowOrderField::SuccessRate => OrderField::SuccessRate,
        };
        Self {
            field,
            descending: order.direction == SortDirection::Desc,
        }
    }
}

/// Which workflows to list. Every condition given must hold.
#[derive(InputObject, Debug, Clone, Default)]
pub struct WorkflowFilter {
    /// Any of these statuses.
    pub status: Option<Vec<WorkflowStatus>>,
    /// Carries this tag (tags are compared lower-cased).
    pub tag: Option<String>,
    /// Name contains this text, ignoring case.
    pub search: Option<String>,
    /// Created by this member.
    pub created_by: Option<ID>,
    /// Changed at or after this time.
    pub updated_since: Option<DateTime<Utc>>,
    /// In this project.
    pub project_id: Option<ID>,
    /// Carries any (or, with `tagsMatch: ALL`, every) one of these tags: at most 20, each
    /// 1–50 characters, compared lower-cased. Empty or absent: no condition.
    pub tags: Option<Vec<String>>,
    /// How `tags` match: ANY (default) or ALL.
    #[graphql(default_with = "TagsMatch::Any")]
    pub tags_match: TagsMatch,
}

/// How a list of tags filters workflows.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagsMatch {
    /// Workflows carrying at least one of the tags.
    #[default]
    Any,
    /// Workflows carrying every one of the tags.
    All,
}

impl WorkflowFilter {
    /// The domain filter; an overlong status list is BAD_USER_INPUT (`filter.status`), bad
    /// tags too (`filter.tags`).
    fn into_domain(self) -> AppResult<domain::workflow::WorkflowFilter> {
        let tags =
            domain::workflow::normalize_tags(self.tags.unwrap_or_default()).map_err(|error| {
                match error {
                    AppError::BadUserInput { message, .. } => {
                        AppError::bad_input("filter.tags", message)
                    }
                    other => other,
                }
            })?;
        Ok(domain::workflow::WorkflowFilter {
            statuses: domain::filter_values("filter.status", self.status)?,
            tag: self.tag,
            search: self.search,
            created_by: self.created_by.map(|id| id.0),
            // Rounded up to the stored microseconds, so both backends compare the same value.
            updated_since: self.updated_since.map(super::health_log::stored_precision),
            project_id: self.project_id.map(|id| id.0),
            tags,
            tags_match: match self.tags_match {
                TagsMatch::Any => domain::workflow::TagsMatch::Any,
                TagsMatch::All => domain::workflow::TagsMatch::All,
            },
        })
    }
}

/// A workflow as a recorder uploads it.
#[derive(InputObject)]
pub struct CreateWorkflowInput {
    /// 1–200 characters.
    pub name: String,
    /// Up to 5,000 characters.
    pub description: Option<String>,
    /// Up to 20 tags of 1–50 characters; stored lower-cased, duplicates dropped.
    pub tags: Option<Vec<String>>,
    /// DRAFT (default), PROCESSING or ACTIVE.
    pub status: Option<WorkflowStatus>,
    /// The steps in order (up to 500); numbered 1..n.
    pub steps: Option<Vec<StepInput>>,
    /// A project of the company to put it in.
    pub project_id: Option<ID>,
}

/// An edit of a workflow; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateWorkflowInput {
    /// 1–200 characters.
    pub name: Option<String>,
    /// Up to 5,000 characters; an explicit null clears it.
    pub description: MaybeUndefined<String>,
    /// Replaces all tags.
    pub tags: Option<Vec<String>>,
    /// The new status; only legal transitions are accepted (an archived workflow returns
    /// to DRAFT before anything else).
    pub status: Option<WorkflowStatus>,
}

/// Batch key: a workflow by id, within the viewer's company.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkflowById(pub String);

impl Loader<WorkflowById> for TenantLoader {
    type Value = domain::workflow::Workflow;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[WorkflowById],
    ) -> Result<HashMap<WorkflowById, Self::Value>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::workflow::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|w| (WorkflowById(w.id.clone()), w))
            .collect())
    }
}

/// A recorded browser automation: ordered steps, their screenshots, its runs and health.
pub struct Workflow {
    pub row: domain::workflow::Workflow,
    pub viewer: Viewer,
}

impl Workflow {
    /// The viewer's workflow `id`, or NOT_FOUND (also for another company's id).
    pub async fn load(ctx: &Context<'_>, id: &str) -> async_graphql::Result<Self> {
        let viewer = ctx.viewer()?;
        let row = ctx
            .loader()?
            .load_one(WorkflowById(id.to_owned()))
            .await?
            .ok_or(AppError::NotFound("workflow"))?;
        Ok(Self {
            row,
            viewer: viewer.clone(),
        })
    }
}

/// The fields of a workflow read from its row: what a page of workflows answers in one
/// pass (`plain_list.rs`). Each arm answers exactly what the resolver of the same name
/// below does.
impl PlainObject for Workflow {
    fn plain_field<'a>(
        &self,
        _ctx: &ContextSelectionSet<'a>,
        field: &'a Positioned<Field>,
    ) -> Option<Value> {
        let row = &self.row;
        let at = |t: &chrono::NaiveDateTime| t.and_utc();
        Some(match field.node.name.node.as_str() {
            "id" => Value::String(row.id.clone()),
            "name" => Value::String(row.name.clone()),
            "description" => optional_str(row.description.as_deref()),
            "status" => enum_value(WorkflowStatus::from(row.status)),
            "successRate" => scalar(&row.success_rate),
            "totalUses" => scalar(&row.total_uses),
            "consecutiveFailures" => scalar(&row.consecutive_failures),
            "lastSuccessAt" => optional(row.last_success_at.as_ref().map(at).as_ref()),
            "lastFailureAt" => optional(row.last_failure_at.as_ref().map(at).as_ref()),
            "createdAt" => scalar(&at(&row.created_at)),
            "updatedAt" => scalar(&at(&row.updated_at)),
            "visibility" => enum_value(WorkflowVisibility::from(row.visibility)),
            "currentVersion" => scalar(&row.current_version),
            _ => return None,
        })
    }
}

// The fields `PlainObject for Workflow` answers (above) bypass these resolvers inside a page
// of workflows: giving one of them a guard, arguments or a lookup means removing its arm
// there.
/// A recorded browser automation: ordered steps, their screenshots, its runs and health.
#[Object]
impl Workflow {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.row.name
    }

    /// What the workflow does, in the author's words.
    async fn description(&self) -> Option<&str> {
        self.row.description.as_deref()
    }

    /// Where the workflow is in its life.
    async fn status(&self) -> WorkflowStatus {
        self.row.status.into()
    }

    /// Lower-cased tags for grouping and filtering.
    async fn tags(&self) -> async_graphql::Result<Vec<String>> {
        Ok(self.row.tags()?)
    }

    /// Share of finished runs that succeeded, 0–1.
    async fn success_rate(&self) -> f64 {
        self.row.success_rate
    }

    /// How many runs have finished.
    async fn total_uses(&self) -> i32 {
        self.row.total_uses
    }

    /// Failed runs since the last success.
    async fn consecutive_failures(&self) -> i32 {
        self.row.consecutive_failures
    }

    /// When a run last succeeded.
    async fn last_success_at(&self) -> Option<DateTime<Utc>> {
        self.row.last_success_at.map(|t| t.and_utc())
    }

    /// When a run last failed.
    async fn last_failure_at(&self) -> Option<DateTime<Utc>> {
        self.row.last_failure_at.map(|t| t.and_utc())
    }

    /// When the workflow was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When the workflow or one of its steps last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }

    /// The member who recorded it; null once they left the company.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let Some(id) = &self.row.created_by else {
            return Ok(None);
        };
        let row = ctx.loader()?.load_one(UserById(id.clone())).await?;
        Ok(row.map(|row| User {
            row,
            viewer: self.viewer.clone(),
        }))
    }

    /// The steps, ordered by `stepNumber`.
    async fn steps(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<Step>> {
        Ok(PlainList(Step::of_workflow(ctx, &self.row.id).await?))
    }

    /// How many steps the workflow has.
    async fn step_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let key = StepsOfWorkflow {
            workflow_id: self.row.id.clone(),
            with_screenshots: false,
        };
        let rows = ctx.loader()?.load_one(key).await?.unwrap_or_default();
        Ok(i32::try_from(rows.len()).unwrap_or(i32::MAX))
    }

    /// Screenshots recorded for this workflow, oldest first.
    async fn screenshots(&self, ctx: &Context<'_>) -> async_graphql::Result<PlainList<Screenshot>> {
        let rows = ctx
            .loader()?
            .load_one(ScreenshotsOfWorkflow(self.row.id.clone()))
            .await?
            .unwrap_or_default();
        Ok(PlainList(rows.into_iter().map(Screenshot::from).collect()))
    }

    /// Runs of this workflow, newest first.
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn runs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only runs in one of these statuses.")] status: Option<Vec<RunStatus>>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<PlainConnection<Run>> {
        runs_of_workflow(
            ctx,
            &self.row.id,
            run_statuses(status)?,
            PageArgs {
                first,
                after,
                last,
                before,
            },
        )
        .await
        .map(PlainConnection)
    }

    /// What executors reported for this workflow's steps, newest first.
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn health_logs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Narrows the list; its workflowId is ignored here.")] filter: Option<
            HealthLogFilterInput,
        >,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<PlainConnection<HealthLog>> {
        let filter = filter.unwrap_or_default().into_domain()?;
        logs_of(
            ctx,
            LogParent::Workflow,
            &self.row.id,
            filter,
            LogOrder::NewestFirst,
            PageArgs {
                first,
                after,
                last,
                before,
            },
        )
        .await
        .map(PlainConnection)
    }

    /// Who sees it: COMPANY (every member) or RESTRICTED (admins, its creator and the
    /// members it is shared with).
    async fn visibility(&self) -> WorkflowVisibility {
        self.row.visibility.into()
    }

    /// What the viewer may do with it (admins and its creator: EDIT, and manage it).
    async fn viewer_permission(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<WorkflowPermission> {
        Ok(super::share::access(ctx, &self.row.id)
            .await?
            .permission()
            .into())
    }

    /// Whether the viewer may change who sees it (visibility, shares, public links):
    /// admins and its creator.
    async fn viewer_can_manage(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        Ok(super::share::access(ctx, &self.row.id).await?.can_manage())
    }

    /// The members it is shared with (what matters while it is RESTRICTED).
    async fn shares(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WorkflowShare>> {
        let rows = ctx
            .loader()?
            .load_one(SharesOf(self.row.id.clone()))
            .await?
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|row| WorkflowShare {
                row,
                viewer: self.viewer.clone(),
            })
            .collect())
    }

    /// Its public links, newest first; only admins and its creator see them (an empty
    /// list for everyone else).
    async fn share_links(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ShareLink>> {
        if !super::share::access(ctx, &self.row.id).await?.can_manage() {
            return Ok(Vec::new());
        }
        let rows = ctx
            .loader()?
            .load_one(LinksOf(self.row.id.clone()))
            .await?
            .unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(|row| ShareLink {
                row,
                viewer: self.viewer.clone(),
            })
            .collect())
    }

    /// The project it belongs to; null when it is in none.
    async fn project(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Project>> {
        Project::load_opt(ctx, self.row.project_id.as_deref()).await
    }

    /// The number of its newest version (every change of its name, description, tags or
    /// steps makes one).
    async fn current_version(&self) -> i32 {
        self.row.current_version
    }

    /// Its versions, newest first.
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn versions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<CountedConnection<WorkflowVersion>> {
        let args = PageArgs {
            first,
            after,
            last,
            before,
        };
        WorkflowVersion::of_workflow(ctx, &self.row.id, args).await
    }

    /// One of its versions; null with NOT_FOUND when it has no version of that number.
    async fn version(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The version number.")] number: i32,
    ) -> async_graphql::Result<Option<WorkflowVersion>> {
        Ok(Some(
            WorkflowVersion::load(ctx, &self.row.id, number)
                .await?
                .ok_or(AppError::NotFound("version"))?,
        ))
    }
}

/// A page of the workflows the viewer sees matching `filter` (`workflows`,
/// `Project.workflows`).
pub async fn workflows_connection(
    ctx: &Context<'_>,
    filter: WorkflowFilter,
    order_by: Option<WorkflowOrder>,
    args: PageArgs,
) -> async_graphql::Result<CountedConnection<Workflow>> {
    let viewer = ctx.viewer()?.clone();
    let db = ctx.db().clone();
    let order: domain::workflow::WorkflowOrder = order_by
        .unwrap_or(WorkflowOrder {
            field: WorkflowOrderField::CreatedAt,
            direction: SortDirection::Desc,
        })
        .into();
    let filter = filter.into_domain()?;
    let request = args.into_request(order.tag())?;
    let page = domain::workflow::list(&db, &viewer.tenant, &filter, order, &request).await?;
    let tenant = viewer.tenant.clone();
    let total = TotalCount::new(move || {
        let (db, tenant, filter) = (db.clone(), tenant.clone(), filter.clone());
        async move { domain::workflow::count(&db, &tenant, &filter).await }
    });
    Ok(connection(
        page,
        order.tag(),
        |w| order.position(w),
        |row| Workflow {
            row,
            viewer: viewer.clone(),
        },
        total,
    ))
}

#[derive(Default)]
pub struct WorkflowQuery;

#[Object]
impl WorkflowQuery {
    /// The company's workflows, filtered, sorted and paged (Relay connection; at most 100
    /// per page).
    #[allow(clippy::too_many_arguments)] // the Relay arguments plus filter and order
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn workflows(
        &self,
        ctx: &Context<'_>,
        filter: Option<WorkflowFilter>,
        order_by: Option<WorkflowOrder>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<PlainConnection<Workflow>> {
        let args = PageArgs {
            first,
            after,
            last,
            before,
        };
        workflows_connection(ctx, filter.unwrap_or_default(), order_by, args)
            .await
            .map(PlainConnection)
    }

    /// One workflow of the company; null with NOT_FOUND if there is none with this id.
    async fn workflow(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Workflow>> {
        Workflow::load(ctx, &id).await.map(Some)
    }
}

#[derive(Default)]
pub struct WorkflowMutation;

#[Object]
impl WorkflowMutation {
    /// Records a new workflow with its steps, all or nothing.
    async fn create_workflow(
        &self,
        ctx: &Context<'_>,
        input: CreateWorkflowInput,
    ) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        let steps = input
            .steps
            .unwrap_or_default()
            .into_iter()
            .map(StepInput::into_domain)
            .collect();
        let new = NewWorkflow {
            name: input.name,
            description: input.description,
            tags: input.tags.unwrap_or_default(),
            status: input.status.map(Into::into),
            steps,
            project_id: input.project_id.map(|id| id.0),
        };
        let row =
            domain::workflow::create(ctx.db(), &viewer.tenant, viewer.member_id()?, new).await?;
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Edits a workflow's name, description, tags or status.
    async fn update_workflow(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateWorkflowInput,
    ) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        let changes = WorkflowChanges {
            name: input.name,
            description: match input.description {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(d) => Some(Some(d)),
            },
            tags: input.tags,
            status: input.status.map(Into::into),
        };
        let row = domain::workflow::update(
            ctx.db(),
            &ctx.services().events,
            &viewer.tenant,
            &id,
            changes,
        )
        .await?;
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Archives a workflow: kept for the record, no longer run.
    async fn archive_workflow(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        let changes = WorkflowChanges {
            status: Some(domain::workflow::Status::Archived),
            ..Default::default()
        };
        let row = domain::workflow::update(
            ctx.db(),
            &ctx.services().events,
            &viewer.tenant,
            &id,
            changes,
        )
        .await?;
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Deletes a workflow with its steps, screenshots, runs, health logs and notifications.
    /// Admins only. Returns the deleted id.
    #[graphql(guard = "AdminOnly")]
    async fn delete_workflow(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        // Through the request's handle: the audit entry names the request's actor and client.
        let released = domain::workflow::delete(ctx.db(), &viewer.tenant, &id).await?;
        // After the commit: the rows are gone, so their blobs may go too.
        domain::screenshot::release_blobs(&services.db, &services.blobs, &viewer.tenant, &released)
            .await;
        Ok(id)
    }

    /// Copies a workflow and its steps into a new DRAFT with fresh statistics.
    async fn duplicate_workflow(
        &self,
        ctx: &Context<'_>,
        id: ID,
        #[graphql(desc = "Name of the copy; defaults to \"<name> (copy)\".")] name: Option<String>,
    ) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        let row =
            domain::workflow::duplicate(ctx.db(), &viewer.tenant, &id, viewer.member_id()?, name)
                .await?;
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }
}
