//! Sessions: `sessions`, the signed-in member's sessions on every device. (Signing in,
//! refreshing and logging out are in `account`.)

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use crate::domain;

/// One session of the signed-in member: a device or browser that signed in and keeps
/// refreshing.
pub struct Session {
    pub row: domain::session::Session,
    pub current: bool,
}

/// One session of the signed-in member: a device or browser that signed in and keeps
/// refreshing.
#[Object]
impl Session {
    /// Stable identifier (the access token's `sid` claim).
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// When the member signed in.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When the session was last used, to the minute (it is not written on every request).
    async fn last_used_at(&self) -> DateTime<Utc> {
        self.row.last_used_at.and_utc()
    }

    /// When the session ends unless it is refreshed before.
    async fn expires_at(&self) -> DateTime<Utc> {
        self.row.expires_at.and_utc()
    }

    /// The `User-Agent` of the client that signed in.
    async fn user_agent(&self) -> Option<&str> {
        self.row.user_agent.as_deref()
    }

    /// The network address the member signed in from.
    async fn client_address(&self) -> Option<&str> {
        self.row.client_address.as_deref()
    }

    /// Whether this is the session of the request asking.
    async fn current(&self) -> bool {
        self.current
    }
}

#[derive(Default)]
pub struct SessionQuery;

#[Object]
impl SessionQuery {
    /// The signed-in member's sessions that have not ended, most recently used first (at
    /// most 100: signing in beyond ends the least recently used).
    async fn sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Session>> {
        let viewer = ctx.viewer()?;
        let user_id = viewer.member_id()?;
        let current = viewer.session_id();
        let rows = domain::session::list(ctx.db(), &viewer.tenant, user_id).await?;
        Ok(rows
            .into_iter()
            .map(|row| Session {
                current: Some(row.id.as_str()) == current,
                row,
            })
            .collect())
    }
}
