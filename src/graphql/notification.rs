//! Notifications: the company's inbox, reading it and clearing it.

use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::guards::AdminOnly;
use super::pagination::{CountedConnection, PageArgs, TotalCount, connection};
use super::user::User;
use super::workflow::{Workflow, WorkflowById};
use crate::auth::Viewer;
use crate::domain;
use crate::domain::notification::{NotificationFilter, ORDERING};

/// How urgent a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::notification::Severity")]
pub enum NotificationSeverity {
    /// For the record; nothing to do.
    Info,
    /// Worth a look soon (e.g. a workflow needed healing).
    Warning,
    /// Something is broken and needs attention.
    Error,
}

/// A message for the company's members.
pub struct Notification {
    pub row: domain::notification::Notification,
    pub viewer: Viewer,
}

/// A message for the company's members. It is shared: once anyone reads it, it is read for
/// everybody.
#[Object]
impl Notification {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow it is about; null when it is about none.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Workflow>> {
        let Some(id) = &self.row.workflow_id else {
            return Ok(None);
        };
        let row = ctx.loader()?.load_one(WorkflowById(id.clone())).await?;
        Ok(row.map(|row| Workflow {
            row,
            viewer: self.viewer.clone(),
        }))
    }

    /// A machine-readable reason, e.g. `workflow_broken`, for clients to pick an icon or an
    /// action by.
    async fn kind(&self) -> &str {
        &self.row.kind
    }

    /// How urgent it is.
    async fn severity(&self) -> NotificationSeverity {
        self.row.severity.into()
    }

    /// A one-line summary.
    async fn title(&self) -> &str {
        &self.row.title
    }

    /// The full text.
    async fn message(&self) -> &str {
        &self.row.message
    }

    /// Whether anyone has read it.
    async fn read(&self) -> bool {
        self.row.read
    }

    /// When it was first read.
    async fn read_at(&self) -> Option<DateTime<Utc>> {
        self.row.read_at.map(|at| at.and_utc())
    }

    /// Who read it first; null when unread or that member was removed.
    async fn read_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        User::load_opt(ctx, &self.viewer, self.row.read_by.as_deref()).await
    }

    /// When it was raised.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }
}

fn notification(row: domain::notification::Notification, viewer: &Viewer) -> Notification {
    Notification {
        row,
        viewer: viewer.clone(),
    }
}

#[derive(Default)]
pub struct NotificationQuery;

#[Object]
impl NotificationQuery {
    /// The company's notifications, newest first.
    #[allow(clippy::too_many_arguments)] // the Relay arguments plus three filters
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default_with = "Some(false)",
            desc = "Only notifications nobody has read yet."
        )]
        unread_only: Option<bool>,
        #[graphql(desc = "Only this severity.")] severity: Option<NotificationSeverity>,
        #[graphql(desc = "Only notifications about this workflow.")] workflow_id: Option<ID>,
        #[graphql(desc = "How many to return from the start: 0 to 100, default 20.")] first: Option<
            i32,
        >,
        #[graphql(desc = "Return the notifications after this cursor.")] after: Option<String>,
        #[graphql(desc = "How many to return from the end: 0 to 100.")] last: Option<i32>,
        #[graphql(desc = "Return the notifications before this cursor.")] before: Option<String>,
    ) -> async_graphql::Result<CountedConnection<Notification>> {
        let viewer = ctx.viewer()?;
        let db = ctx.db();
        let filter = NotificationFilter {
            // An explicit null means the same as leaving the argument out.
            unread_only: unread_only.unwrap_or(false),
            severity: severity.map(Into::into),
            workflow_id: workflow_id.map(|id| id.0),
        };
        let request = PageArgs {
            first,
            after,
            last,
            before,
        }
        .into_request(ORDERING)?;
        let page = domain::notification::list(db, &viewer.tenant, &filter, &request).await?;
        let total = {
            let (db, tenant) = (db.clone(), viewer.tenant.clone());
            TotalCount::new(move || {
                let (db, tenant, filter) = (db.clone(), tenant.clone(), filter.clone());
                async move { domain::notification::count(&db, &tenant, &filter).await }
            })
        };
        Ok(connection(
            page,
            ORDERING,
            domain::notification::Notification::position,
            |row| notification(row, viewer),
            total,
        ))
    }

    /// How many of the company's notifications nobody has read yet.
    async fn unread_notification_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let viewer = ctx.viewer()?;
        let filter = NotificationFilter {
            unread_only: true,
            ..NotificationFilter::default()
        };
        let count = domain::notification::count(ctx.db(), &viewer.tenant, &filter).await?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

#[derive(Default)]
pub struct NotificationMutation;

#[Object]
impl NotificationMutation {
    /// Marks a notification read by the viewer. Marking it again changes nothing: the first
    /// reader and time are kept.
    async fn mark_notification_read(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The notification's id.")] id: ID,
    ) -> async_graphql::Result<Notification> {
        let viewer = ctx.viewer()?;
        let row =
            domain::notification::mark_read(ctx.db(), &viewer.tenant, &id, viewer.member_id()?)
                .await?;
        Ok(notification(row, viewer))
    }

    /// Marks every unread notification of the company read by the viewer; answers how many
    /// that was.
    async fn mark_all_notifications_read(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let viewer = ctx.viewer()?;
        let marked =
            domain::notification::mark_all_read(ctx.db(), &viewer.tenant, viewer.member_id()?)
                .await?;
        Ok(i32::try_from(marked).unwrap_or(i32::MAX))
    }

    /// Deletes a notification for everybody and answers its id. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn delete_notification(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The notification's id.")] id: ID,
    ) -> async_graphql::Result<ID> {
        let viewer = ctx.viewer()?;
        domain::notification::delete(ctx.db(), &viewer.tenant, &id).await?;
        Ok(id)
    }
}

/// Batch key: a notification of the loader's company, by id (`node`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NotificationById(pub String);

impl async_graphql::dataloader::Loader<NotificationById> for super::loaders::TenantLoader {
    type Value = domain::notification::Notification;
    type Error = super::loaders::LoadError;

    async fn load(
        &self,
        keys: &[NotificationById],
    ) -> Result<std::collections::HashMap<NotificationById, Self::Value>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|key| key.0.clone()).collect();
        let rows = domain::notification::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(super::loaders::load_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (NotificationById(row.id.clone()), row))
            .collect())
    }
}
