//! The audit log: `auditLog` for admins. There is no mutation: entries cannot be edited
//! or deleted through the API.

use async_graphql::{Context, Enum, ID, InputObject, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::guards::AdminOnly;
use super::pagination::{CountedConnection, PageArgs, TotalCount, connection};
use crate::domain;
use crate::domain::audit::{AuditFilter, ORDERING};

/// What was done (see the README's audit log section for what each records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::audit::Action")]
pub enum AuditAction {
    /// A member signed in.
    SignInSucceeded,
    /// A sign-in with a known email failed (wrong password).
    SignInFailed,
    /// A company was created with its first admin.
    SignedUp,
    /// A member joined with the invite token.
    MemberJoined,
    /// An admin changed a member's role.
    MemberRoleChanged,
    /// An admin removed a member.
    MemberRemoved,
    /// An admin replaced the invite token.
    InviteTokenRotated,
    /// An admin renamed the company.
    CompanyRenamed,
    /// An admin changed the company's settings.
    CompanySettingsUpdated,
    /// An admin created an API key.
    ApiKeyCreated,
    /// An admin revoked an API key.
    ApiKeyRevoked,
    /// An admin deleted a workflow.
    WorkflowDeleted,
    /// A member changed their password (their other sessions ended).
    PasswordChanged,
    /// A member changed their name or email.
    ProfileUpdated,
    /// A member ended their session.
    LoggedOut,
    /// A member ended all their sessions.
    LoggedOutEverywhere,
    /// A used refresh token came back, and its session was ended.
    RefreshTokenReused,
    /// An admin changed the company's retention policy.
    RetentionPolicyUpdated,
    /// A workflow version was restored.
    WorkflowVersionRestored,
    /// A workflow was made COMPANY-visible or RESTRICTED.
    WorkflowVisibilityChanged,
    /// A workflow was shared with a member (or their permission changed).
    WorkflowShared,
    /// A workflow stopped being shared with a member.
    WorkflowUnshared,
    /// A public link to a workflow was made.
    ShareLinkCreated,
    /// A public link to a workflow was revoked.
    ShareLinkRevoked,
    /// A workflow version was published as a template.
    TemplatePublished,
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::audit::ActorType")]
pub enum AuditActorType {
    /// A member (`actorId` is their user id).
    User,
    /// An API key (`actorId` is the key's id).
    ApiKey,
    /// Nobody signed in (a failed sign-in, a reused refresh token).
    Anonymous,
    /// The server itself.
    System,
}

/// What an action was done to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::audit::TargetType")]
pub enum AuditTargetType {
    /// The company (`targetId` is its id).
    Company,
    /// A member.
    User,
    /// An API key.
    ApiKey,
    /// A workflow.
    Workflow,
    /// A member's session.
    Session,
}

/// One recorded action.
pub struct AuditEntry(pub domain::audit::AuditEntry);

/// One recorded action: who, what, to what, when and from where.
#[Object]
impl AuditEntry {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// When it happened.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at.and_utc()
    }

    /// What was done.
    async fn action(&self) -> AuditAction {
        self.0.action.into()
    }

    /// Who acted.
    async fn actor_type(&self) -> AuditActorType {
        self.0.actor_type.into()
    }

    /// The member's or key's id; null for anonymous and system actors.
    async fn actor_id(&self) -> Option<ID> {
        self.0.actor_id.clone().map(ID)
    }

    /// The actor as they were called then (a member's email, a key's name and prefix).
    async fn actor_label(&self) -> Option<&str> {
        self.0.actor_label.as_deref()
    }

    /// What kind of thing it was done to.
    async fn target_type(&self) -> Option<AuditTargetType> {
        self.0.target_type.map(Into::into)
    }

    /// The id of what it was done to (it may no longer exist).
    async fn target_id(&self) -> Option<ID> {
        self.0.target_id.clone().map(ID)
    }

    /// The network address of the client.
    async fn client_address(&self) -> Option<&str> {
        self.0.client_address.as_deref()
    }

    /// The `User-Agent` of the client.
    async fn user_agent(&self) -> Option<&str> {
        self.0.user_agent.as_deref()
    }

    /// A small JSON object of what changed (before/after values, names); never secrets.
    async fn summary(&self) -> async_graphql::Result<serde_json::Value> {
        Ok(self.0.summary()?)
    }
}

/// Which entries to list. Every condition given must hold.
#[derive(InputObject, Default)]
pub struct AuditLogFilter {
    /// Only actions by this member or key.
    actor_id: Option<ID>,
    /// Only this action.
    action: Option<AuditAction>,
    /// Only actions on this member, key, workflow, session or company.
    target_id: Option<ID>,
    /// Only entries at or after this time.
    from: Option<DateTime<Utc>>,
    /// Only entries before this time.
    to: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// The company's audit log, newest first. Admins only.
    #[graphql(
        guard = "AdminOnly",
        complexity = "super::pagination::page_complexity(first, None, child_complexity)"
    )]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which entries; absent: all.")] filter: Option<AuditLogFilter>,
        #[graphql(desc = "How many entries to return: 0 to 100, default 20.")] first: Option<i32>,
        #[graphql(desc = "Return the entries after this cursor.")] after: Option<String>,
    ) -> async_graphql::Result<CountedConnection<AuditEntry>> {
        let viewer = ctx.viewer()?;
        let filter = filter.unwrap_or_default();
        let filter = AuditFilter {
            actor_id: filter.actor_id.map(|id| id.0),
            action: filter.action.map(Into::into),
            target_id: filter.target_id.map(|id| id.0),
            from: filter.from.map(|at| at.naive_utc()),
            to: filter.to.map(|at| at.naive_utc()),
        };
        let request = PageArgs::forward(first, after).into_request(ORDERING)?;
        let page = domain::audit::list(ctx.db(), &viewer.tenant, &filter, &request).await?;
        let total = {
            let (db, tenant) = (ctx.db().clone(), viewer.tenant.clone());
            TotalCount::new(move || {
                let (db, tenant, filter) = (db.clone(), tenant.clone(), filter.clone());
                async move { domain::audit::count(&db, &tenant, &filter).await }
            })
        };
        Ok(connection(
            page,
            ORDERING,
            domain::audit::AuditEntry::position,
            AuditEntry,
            total,
        ))
    }
}
