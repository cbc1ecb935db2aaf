//! API keys: admins create, list and revoke the keys executors authenticate with.
//! What a key's role may do is in `executor_access`.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::guards::AdminOnly;
use super::user::User;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::api_key::NewKey;

/// What an API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::api_key::Role")]
pub enum ApiKeyRole {
    /// Runs workflows and nothing else: reads workflows, steps and screenshots; starts,
    /// reports, finishes and watches runs; uploads screenshots.
    Executor,
}

/// A key an executor authenticates with (`Authorization: Bearer <secret>`, or
/// `{"token": "<secret>"}` in the WebSocket `connection_init`).
pub struct ApiKey {
    pub row: domain::api_key::ApiKey,
    pub viewer: Viewer,
}

/// A key an executor authenticates with. Its secret is shown once, when it is created.
#[Object]
impl ApiKey {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// What the admin called it.
    async fn name(&self) -> &str {
        &self.row.name
    }

    /// What it may do.
    async fn role(&self) -> ApiKeyRole {
        self.row.role.into()
    }

    /// The first characters of the secret (`swk_` and eight more), to tell keys apart.
    async fn prefix(&self) -> &str {
        &self.row.prefix
    }

    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// The admin who created it; null once they left the company.
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        User::load_opt(ctx, &self.viewer, self.row.created_by.as_deref()).await
    }

    /// When it stops working by itself; null: never.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.row.expires_at.map(|at| at.and_utc())
    }

    /// When it was revoked; null while it is not.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.row.revoked_at.map(|at| at.and_utc())
    }

    /// When it was last used, to the minute; null when never.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.row.last_used_at.map(|at| at.and_utc())
    }

    /// Whether it works now: neither revoked nor expired.
    async fn active(&self) -> bool {
        self.row.is_active_at(domain::now())
    }
}

/// A new key and its secret, which is shown this once and never again.
#[derive(SimpleObject)]
pub struct CreatedApiKey {
    /// The key.
    api_key: ApiKey,
    /// The secret to give the executor. Only its hash is stored: it cannot be shown again.
    secret: String,
}

#[derive(Default)]
pub struct ApiKeyQuery;

#[Object]
impl ApiKeyQuery {
    /// The company's API keys, newest first: the active ones, or with `includeRevoked`
    /// every key (revoked and expired too; at most the newest 200). Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn api_keys(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            default_with = "Some(false)",
            desc = "Also list revoked keys (expired ones are listed anyway, as not `active`)."
        )]
        include_revoked: Option<bool>,
    ) -> async_graphql::Result<Vec<ApiKey>> {
        let viewer = ctx.viewer()?;
        // An explicit null means the same as leaving the argument out.
        let include_revoked = include_revoked.unwrap_or(false);
        let rows = domain::api_key::list(ctx.db(), &viewer.tenant, include_revoked).await?;
        Ok(rows
            .into_iter()
            .map(|row| ApiKey {
                row,
                viewer: viewer.clone(),
            })
            .collect())
    }
}

#[derive(Default)]
pub struct ApiKeyMutation;

#[Object]
impl ApiKeyMutation {
    /// Creates an API key and answers it with its secret, shown this once. A company holds
    /// at most 100 active keys (CONFLICT beyond). Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to call it, e.g. the executor's host: 1 to 100 characters.")]
        name: String,
        #[graphql(default_with = "ApiKeyRole::Executor", desc = "What it may do.")]
        role: ApiKeyRole,
        #[graphql(desc = "When it stops working by itself (in the future); null: never.")]
        expires_at: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<CreatedApiKey> {
        let viewer = ctx.viewer()?;
        let creator = viewer.member_id()?;
        let new = NewKey {
            name,
            role: role.into(),
            expires_at: expires_at.map(|at| at.naive_utc()),
        };
        let (row, secret) = domain::api_key::create(
            ctx.db(),
            &viewer.tenant,
            &ctx.services().secrets,
            creator,
            new,
        )
        .await?;
        Ok(CreatedApiKey {
            api_key: ApiKey {
                row,
                viewer: viewer.clone(),
            },
            secret,
        })
    }

    /// Revokes an API key: requests with it are refused at once on this server and within
    /// seconds on the others, and its open WebSockets are closed (4403). Revoking a revoked
    /// key changes nothing. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn revoke_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The key's id.")] id: ID,
    ) -> async_graphql::Result<ApiKey> {
        let viewer = ctx.viewer()?;
        let revoker = viewer.member_id()?;
        let row = domain::api_key::revoke(ctx.db(), &viewer.tenant, &id, revoker).await?;
        ctx.services().credentials.forget(&row.id);
        Ok(ApiKey {
            row,
            viewer: viewer.clone(),
        })
    }
}
