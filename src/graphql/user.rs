//! Users: the `me` query and the `User` type.

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::company::Company;
use super::context::ContextExt as _;
use crate::auth::{Role, Viewer};
use crate::domain;
use crate::error::AppError;

/// A member of a company.
pub struct User {
    pub row: domain::user::User,
    pub viewer: Viewer,
}

/// A member of a company, as seen by a member of the same company.
#[Object]
impl User {
    /// Stable identifier.
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// Login email, trimmed and lower-cased.
    async fn email(&self) -> &str {
        &self.row.email
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.row.name
    }

    /// What this member may do in their company.
    async fn role(&self) -> async_graphql::Result<Role> {
        Ok(self.row.role()?)
    }

    /// When the account was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// The company this member belongs to.
    async fn company(&self, ctx: &Context<'_>) -> async_graphql::Result<Company> {
        let row = domain::company::find(&ctx.services().db, &self.viewer.tenant).await?;
        Ok(Company {
            row,
            viewer: self.viewer.clone(),
        })
    }
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let viewer = ctx.viewer()?;
        let row =
            match domain::user::find(&ctx.services().db, &viewer.tenant, &viewer.user_id).await {
                Err(AppError::NotFound(_)) => {
                    return Err(AppError::Unauthenticated("this account no longer exists").into());
                }
                other => other?,
            };
        Ok(User {
            row,
            viewer: viewer.clone(),
        })
    }
}
