//! Projects: named groups of workflows, their workflows and counts by status.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, ID, MaybeUndefined, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::pagination::{CountedConnection, PageArgs, TotalCount, connection};
use super::plain_list::PlainConnection;
use super::user::User;
use super::workflow::{
    Workflow, WorkflowFilter, WorkflowOrder, WorkflowStatus, workflows_connection,
};
use crate::auth::Viewer;
use crate::domain;
use crate::domain::project::ORDERING;
use crate::error::AppError;

/// Batch key: a project of the viewer's company, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectById(pub String);

impl Loader<ProjectById> for TenantLoader {
    type Value = domain::project::Project;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[ProjectById],
    ) -> Result<HashMap<ProjectById, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::project::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|p| (ProjectById(p.id.clone()), p))
            .collect())
    }
}

/// Batch key: how many of a project's workflows (that the viewer sees) are in each status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusCountsOf(pub String);

impl Loader<StatusCountsOf> for TenantLoader {
    type Value = Vec<(domain::workflow::Status, i64)>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[StatusCountsOf],
    ) -> Result<HashMap<StatusCountsOf, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let mut counts = domain::project::status_counts(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(keys
            .iter()
            .map(|k| (k.clone(), counts.remove(&k.0).unwrap_or_default()))
            .collect())
    }
}

/// A named group of workflows.
pub struct Project {
    pub row: domain::project::Project,
    pub viewer: Viewer,
}

impl Project {
    /// The viewer's project `id`, if it exists.
    pub async fn load_opt(
        ctx: &Context<'_>,
        id: Option<&str>,
    ) -> async_graphql::Result<Option<Self>> {
        let Some(id) = id else {
            return Ok(None);
        };
        let viewer = ctx.viewer()?;
        let row = ctx.loader()?.load_one(ProjectById(id.to_owned())).await?;
        Ok(row.map(|row| Self {
            row,
            viewer: viewer.clone(),
        }))
    }
}

/// How many workflows are in one status.
#[derive(SimpleObject)]
pub struct WorkflowStatusCount {
    /// The status.
    status: WorkflowStatus,
    /// How many of the workflows (that the viewer sees) are in it.
    count: i64,
}

/// A named group of workflows; a workflow belongs to at most one.
#[Object]
impl Project {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.row.name
    }

    /// What the project is for.
    async fn description(&self) -> Option<&str> {
        self.row.description.as_deref()
    }

    /// Who created it; null once they left the company.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        User::load_opt(ctx, &self.viewer, self.row.created_by.as_deref()).await
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When its name or description last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }

    /// Its workflows (those the viewer sees), filtered, sorted and paged like
    /// `workflows`; the filter's `projectId` is this project.
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
        let filter = WorkflowFilter {
            project_id: Some(ID(self.row.id.clone())),
            ..filter.unwrap_or_default()
        };
        let args = PageArgs {
            first,
            after,
            last,
            before,
        };
        workflows_connection(ctx, filter, order_by, args)
            .await
            .map(PlainConnection)
    }

    /// How many workflows it holds (that the viewer sees).
    async fn workflow_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let counts = ctx
            .loader()?
            .load_one(StatusCountsOf(self.row.id.clone()))
            .await?
            .unwrap_or_default();
        Ok(counts.iter().map(|(_, n)| n).sum())
    }

    /// How many of its workflows (that the viewer sees) are in each status; statuses
    /// without workflows are left out.
    async fn workflow_counts_by_status(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<WorkflowStatusCount>> {
        let counts = ctx
            .loader()?
            .load_one(StatusCountsOf(self.row.id.clone()))
            .await?
            .unwrap_or_default();
        Ok(counts
            .into_iter()
            .map(|(status, count)| WorkflowStatusCount {
                status: status.into(),
                count,
            })
            .collect())
    }
}

#[derive(Default)]
pub struct ProjectQuery;

#[Object]
impl ProjectQuery {
    /// The company's projects by name (Relay connection; at most 100 per page).
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn projects(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<CountedConnection<Project>> {
        let viewer = ctx.viewer()?.clone();
        let db = ctx.db().clone();
        let request = PageArgs {
            first,
            after,
            last,
            before,
        }
        .into_request(ORDERING)?;
        let page = domain::project::list(&db, &viewer.tenant, &request).await?;
        let tenant = viewer.tenant.clone();
        let total = TotalCount::new(move || {
            let (db, tenant) = (db.clone(), tenant.clone());
            async move { domain::project::count(&db, &tenant).await }
        });
        Ok(connection(
            page,
            ORDERING,
            domain::project::Project::position,
            |row| Project {
                row,
                viewer: viewer.clone(),
            },
            total,
        ))
    }

    /// One project of the company; null with NOT_FOUND if there is none with this id.
    async fn project(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Project>> {
        Ok(Some(
            Project::load_opt(ctx, Some(&id))
                .await?
                .ok_or(AppError::NotFound("project"))?,
        ))
    }
}

#[derive(Default)]
pub struct ProjectMutation;

#[Object]
impl ProjectMutation {
    /// Creates a project. Any member may.
    async fn create_project(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "1–200 characters.")] name: String,
        #[graphql(desc = "Up to 5,000 characters.")] description: Option<String>,
    ) -> async_graphql::Result<Project> {
        let viewer = ctx.viewer()?;
        let row = domain::project::create(ctx.db(), &viewer.tenant, &name, description).await?;
        Ok(Project {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Renames a project or changes its description (an explicit null clears it). Admins
    /// and its creator only.
    async fn update_project(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The project.")] id: ID,
        #[graphql(desc = "1–200 characters.")] name: Option<String>,
        #[graphql(desc = "Up to 5,000 characters; null clears it.")] description: MaybeUndefined<
            String,
        >,
    ) -> async_graphql::Result<Project> {
        let viewer = ctx.viewer()?;
        let changes = domain::project::ProjectChanges {
            name,
            description: match description {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(d) => Some(Some(d)),
            },
        };
        let row = domain::project::update(ctx.db(), &viewer.tenant, &id, changes).await?;
        Ok(Project {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Deletes a project; its workflows stay, in no project. Admins and its creator only.
    /// Returns the deleted id.
    async fn delete_project(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let viewer = ctx.viewer()?;
        domain::project::delete(ctx.db(), &viewer.tenant, &id).await?;
        Ok(id)
    }

    /// Moves a workflow into a project, or out of any (`projectId` null). Needs EDIT on
    /// the workflow.
    async fn move_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
        #[graphql(desc = "The project; null takes it out of any.")] project_id: Option<ID>,
    ) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        let row = domain::project::move_workflow(
            ctx.db(),
            &viewer.tenant,
            &workflow_id,
            project_id.as_ref().map(|id| id.0.as_str()),
        )
        .await?;
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }
}
