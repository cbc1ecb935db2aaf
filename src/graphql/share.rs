//! Who sees a workflow: its visibility (COMPANY or RESTRICTED), the members it is shared
//! with, and public share links, including `sharedWorkflow`, the read-only view of a
//! workflow that needs no sign-in.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::context::ContextExt as _;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::user::User;
use super::workflow::Workflow;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::json::parse;
use crate::domain::visibility::Access;
use crate::error::AppError;

/// Who sees a workflow.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::visibility::Visibility")]
pub enum WorkflowVisibility {
    /// Every member of the company (the default).
    Company,
    /// Admins, its creator and the members it is shared with; to everyone else it does
    /// not exist (NOT_FOUND), with everything under it.
    Restricted,
}

/// What a member may do with a workflow; each includes the ones before.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::visibility::Permission")]
pub enum WorkflowPermission {
    /// See it and everything under it.
    View,
    /// Also start and drive its runs.
    Run,
    /// Also change its definition, status and project.
    Edit,
}

/// Batch key: what the viewer may do with a workflow they see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessOf(pub String);

impl Loader<AccessOf> for TenantLoader {
    type Value = Access;
    type Error = LoadError;

    async fn load(&self, keys: &[AccessOf]) -> Result<HashMap<AccessOf, Access>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::workflow::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        let access = domain::visibility::access_of(&self.db, &self.tenant, &rows)
            .await
            .map_err(load_error)?;
        Ok(access
            .into_iter()
            .map(|(id, access)| (AccessOf(id), access))
            .collect())
    }
}

/// What the viewer may do with the workflow `id` they see.
pub async fn access(ctx: &Context<'_>, id: &str) -> async_graphql::Result<Access> {
    Ok(ctx
        .loader()?
        .load_one(AccessOf(id.to_owned()))
        .await?
        .ok_or(AppError::NotFound("workflow"))?)
}

/// Batch key: the shares of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SharesOf(pub String);

impl Loader<SharesOf> for TenantLoader {
    type Value = Vec<domain::visibility::Share>;
    type Error = LoadError;

    async fn load(&self, keys: &[SharesOf]) -> Result<HashMap<SharesOf, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::visibility::shares_of(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        let mut grouped: HashMap<SharesOf, Self::Value> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for row in rows {
            grouped
                .entry(SharesOf(row.workflow_id.clone()))
                .or_default()
                .push(row);
        }
        Ok(grouped)
    }
}

/// Batch key: the public links of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinksOf(pub String);

impl Loader<LinksOf> for TenantLoader {
    type Value = Vec<domain::share_link::ShareLink>;
    type Error = LoadError;

    async fn load(&self, keys: &[LinksOf]) -> Result<HashMap<LinksOf, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::share_link::of_workflows(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        let mut grouped: HashMap<LinksOf, Self::Value> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for row in rows {
            grouped
                .entry(LinksOf(row.workflow_id.clone()))
                .or_default()
                .push(row);
        }
        Ok(grouped)
    }
}

/// A member a restricted workflow is shared with, and what they may do with it.
pub struct WorkflowShare {
    pub row: domain::visibility::Share,
    pub viewer: Viewer,
}

/// A member a restricted workflow is shared with, and what they may do with it.
#[Object]
impl WorkflowShare {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow shared.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// The member it is shared with.
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        Ok(User::load_opt(ctx, &self.viewer, Some(&self.row.user_id))
            .await?
            .ok_or(AppError::NotFound("user"))?)
    }

    /// What they may do with it.
    async fn permission(&self) -> WorkflowPermission {
        self.row.permission.into()
    }

    /// Who shared it; null once they left the company.
    async fn shared_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        User::load_opt(ctx, &self.viewer, self.row.created_by.as_deref()).await
    }

    /// When it was first shared with them.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When the permission last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }
}

/// A public link to a workflow (its token is shown once, when it is created).
pub struct ShareLink {
    pub row: domain::share_link::ShareLink,
    pub viewer: Viewer,
}

/// A public link to a workflow: anyone holding its token reads the workflow with
/// `sharedWorkflow`, without signing in, until it expires or is revoked.
#[Object]
impl ShareLink {
    /// Stable identifier (not the token).
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow it shows.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// Who made it; null once they left the company.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        User::load_opt(ctx, &self.viewer, self.row.created_by.as_deref()).await
    }

    /// When it was made.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When it stops working.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.row.expires_at.and_utc()
    }

    /// When it was revoked; null while it is not.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.row.revoked_at.map(|at| at.and_utc())
    }

    /// Whether its token opens the workflow now (neither expired nor revoked).
    async fn active(&self) -> bool {
        self.row.is_active(domain::now())
    }

    /// How many times its token opened the workflow.
    async fn access_count(&self) -> i64 {
        self.row.access_count
    }

    /// When its token last opened the workflow.
    async fn last_accessed_at(&self) -> Option<DateTime<Utc>> {
        self.row.last_accessed_at.map(|at| at.and_utc())
    }
}

/// A new public link and its token.
pub struct CreatedShareLink {
    token: String,
    link: ShareLink,
}

/// A new public link and its token.
#[Object]
impl CreatedShareLink {
    /// The token to pass to `sharedWorkflow`. Shown only now: it is not kept, only its
    /// hash is.
    async fn token(&self) -> &str {
        &self.token
    }

    /// The link.
    async fn link(&self) -> &ShareLink {
        &self.link
    }
}

/// A workflow as a public link shows it: read-only, with nothing else of its company.
pub struct SharedWorkflow {
    view: domain::share_link::SharedView,
}

/// A workflow as a public link shows it: read-only, with nothing else of its company.
#[Object]
impl SharedWorkflow {
    /// Display name.
    async fn name(&self) -> &str {
        &self.view.workflow.name
    }

    /// What the workflow does.
    async fn description(&self) -> Option<&str> {
        self.view.workflow.description.as_deref()
    }

    /// Its tags.
    async fn tags(&self) -> async_graphql::Result<Vec<String>> {
        Ok(self.view.workflow.tags()?)
    }

    /// How many steps it has.
    async fn step_count(&self) -> i32 {
        i32::try_from(self.view.steps.len()).unwrap_or(i32::MAX)
    }

    /// Its steps, in order.
    async fn steps(&self) -> Vec<SharedStep> {
        self.view
            .steps
            .iter()
            .map(|step| SharedStep { step: step.clone() })
            .collect()
    }

    /// When the link stops working.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.view.link.expires_at.and_utc()
    }
}

/// One step of a shared workflow.
pub struct SharedStep {
    step: domain::share_link::SharedStep,
}

/// One step of a shared workflow: what it does, where, and its screenshot.
#[Object]
impl SharedStep {
    /// Position in the workflow, 1..n.
    async fn step_number(&self) -> i32 {
        self.step.head.step_number
    }

    /// What the step does: `click`, `type`, `navigate`, ...
    async fn action_type(&self) -> &str {
        &self.step.head.action_type
    }

    /// Short label of the field acted on.
    async fn field_label(&self) -> Option<&str> {
        self.step.head.field_label.as_deref()
    }

    /// Human-readable instruction.
    async fn instruction(&self) -> Option<&str> {
        self.step.head.instruction.as_deref()
    }

    /// URL, title and viewport of the page.
    async fn page_context(&self) -> async_graphql::Result<Value> {
        Ok(parse("page_context", &self.step.page_context)?)
    }

    /// The screenshot shown with the step.
    async fn screenshot(&self) -> Option<SharedScreenshot> {
        self.step
            .screenshot
            .clone()
            .map(|row| SharedScreenshot { row })
    }
}

/// A screenshot of a shared workflow, served through a short-lived signed URL.
pub struct SharedScreenshot {
    row: domain::screenshot::Screenshot,
}

/// A screenshot of a shared workflow, served through a short-lived signed URL.
#[Object]
impl SharedScreenshot {
    /// `image/png`, `image/jpeg` or `image/webp`.
    async fn content_type(&self) -> &str {
        &self.row.content_type
    }

    /// Width in pixels.
    async fn width(&self) -> i32 {
        self.row.width
    }

    /// Height in pixels.
    async fn height(&self) -> i32 {
        self.row.height
    }

    /// A signed URL serving the image for a few minutes (ask again rather than store it).
    async fn url(&self, ctx: &Context<'_>) -> String {
        super::screenshot::signed_url(ctx, &self.row.company_id, &self.row.id)
    }
}

#[derive(Default)]
pub struct ShareQuery;

#[Object]
impl ShareQuery {
    /// The workflow behind a public link's token, read-only; no sign-in needed (a token of
    /// any company, or none, is fine). An unknown, expired or revoked token is null with
    /// NOT_FOUND, all alike. Each read counts as an access of the link, and reads per
    /// client address are limited (RATE_LIMITED beyond).
    async fn shared_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token `createShareLink` answered.")] token: String,
    ) -> async_graphql::Result<Option<SharedWorkflow>> {
        ctx.services()
            .share_link_limits
            .check(ctx.client_address())?;
        let view = domain::share_link::open(ctx.db(), &token).await?;
        Ok(Some(SharedWorkflow { view }))
    }
}

#[derive(Default)]
pub struct ShareMutation;

#[Object]
impl ShareMutation {
    /// Makes a workflow COMPANY-visible or RESTRICTED. Admins and its creator only.
    async fn set_workflow_visibility(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
        #[graphql(desc = "Who sees it from now on.")] visibility: WorkflowVisibility,
    ) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        let row = domain::visibility::set_visibility(
            ctx.db(),
            &viewer.tenant,
            &workflow_id,
            visibility.into(),
        )
        .await?;
        ctx.services().readers.forget(&viewer.tenant, &row.id);
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Shares a workflow with a member of the company, or changes their permission. It
    /// matters while the workflow is RESTRICTED. Admins and the workflow's creator only.
    async fn share_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
        #[graphql(desc = "A member of the company.")] user_id: ID,
        #[graphql(desc = "What they may do with it.")] permission: WorkflowPermission,
    ) -> async_graphql::Result<WorkflowShare> {
        let viewer = ctx.viewer()?;
        let row = domain::visibility::share(
            ctx.db(),
            &viewer.tenant,
            &workflow_id,
            &user_id,
            permission.into(),
        )
        .await?;
        ctx.services()
            .readers
            .forget(&viewer.tenant, &row.workflow_id);
        Ok(WorkflowShare {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Stops sharing a workflow with a member (nothing to stop is no error). Admins and
    /// the workflow's creator only.
    async fn unshare_workflow(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
        #[graphql(desc = "The member.")] user_id: ID,
    ) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        let row =
            domain::visibility::unshare(ctx.db(), &viewer.tenant, &workflow_id, &user_id).await?;
        ctx.services().readers.forget(&viewer.tenant, &row.id);
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Makes a public link to a workflow, valid until `expiresAt` (default 30 days, at
    /// most 365). Answers its token, once. Admins and the workflow's creator only; at most
    /// 100 active links per workflow.
    async fn create_share_link(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow to show.")] workflow_id: ID,
        #[graphql(desc = "When the link stops working.")] expires_at: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<CreatedShareLink> {
        let viewer = ctx.viewer()?;
        let (row, token) = domain::share_link::create(
            ctx.db(),
            &viewer.tenant,
            &workflow_id,
            expires_at.map(super::health_log::stored_precision),
        )
        .await?;
        Ok(CreatedShareLink {
            token,
            link: ShareLink {
                row,
                viewer: viewer.clone(),
            },
        })
    }

    /// Revokes a public link: its token is answered like an unknown one from now on.
    /// Admins and the workflow's creator only.
    async fn revoke_share_link(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The link (its id, not its token).")] id: ID,
    ) -> async_graphql::Result<ShareLink> {
        let viewer = ctx.viewer()?;
        let row = domain::share_link::revoke(ctx.db(), &viewer.tenant, &id).await?;
        Ok(ShareLink {
            row,
            viewer: viewer.clone(),
        })
    }
}
