//! Companies: the `company` query, the `Company` type and invite-token rotation.

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::guards::AdminOnly;
use crate::auth::Viewer;
use crate::domain;
use crate::error::AppError;

/// A tenant: a company and everything its members record.
pub struct Company {
    pub row: domain::company::Company,
    pub viewer: Viewer,
}

/// A tenant: a company and everything its members record. Nothing of one company is
/// ever visible to another.
#[Object]
impl Company {
    /// Stable identifier.
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.row.name
    }

    /// The token new members join with (`joinCompany`). Admins only: for anyone else it is
    /// null, with a FORBIDDEN error.
    async fn invite_token(&self) -> async_graphql::Result<Option<&str>> {
        if self.viewer.is_admin() {
            Ok(Some(&self.row.invite_token))
        } else {
            Err(AppError::Forbidden("only company admins may read the invite token").into())
        }
    }

    /// When the company signed up.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When the company's name, settings or invite token last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }
}

#[derive(Default)]
pub struct CompanyQuery;

#[Object]
impl CompanyQuery {
    /// The signed-in user's company.
    async fn company(&self, ctx: &Context<'_>) -> async_graphql::Result<Company> {
        let viewer = ctx.viewer()?;
        let row = domain::company::find(&ctx.services().db, &viewer.tenant).await?;
        Ok(Company {
            row,
            viewer: viewer.clone(),
        })
    }
}

#[derive(Default)]
pub struct CompanyMutation;

#[Object]
impl CompanyMutation {
    /// Replaces the company's invite token; the old one stops working at once. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn rotate_invite_token(&self, ctx: &Context<'_>) -> async_graphql::Result<Company> {
        let viewer = ctx.viewer()?;
        let row = domain::company::rotate_invite_token(&ctx.services().db, &viewer.tenant).await?;
        Ok(Company {
            row,
            viewer: viewer.clone(),
        })
    }
}
