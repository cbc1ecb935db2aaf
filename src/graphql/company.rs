//! Companies: the `company` query, the `Company` type, and admins renaming the company,
//! changing its settings and rotating its invite token.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::guards::AdminOnly;
use super::loaders::{LoadError, TenantLoader, load_error};
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
    pub(crate) async fn id(&self) -> ID {
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

    /// Company-wide preferences: a JSON object of at most 16 KiB, readable by every member
    /// and changed by admins with `updateCompanySettings`.
    async fn settings(&self) -> async_graphql::Result<serde_json::Value> {
        Ok(self.row.settings()?)
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

/// Batch key: the loader's own company, so many objects asking for it read it once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantCompany;

impl Loader<TenantCompany> for TenantLoader {
    type Value = domain::company::Company;
    type Error = LoadError;

    async fn load(
        &self,
        _keys: &[TenantCompany],
    ) -> Result<HashMap<TenantCompany, Self::Value>, LoadError> {
        let row = domain::company::find(&self.db, &self.tenant)
            .await
            .map_err(load_error)?;
        Ok(HashMap::from([(TenantCompany, row)]))
    }
}

#[derive(Default)]
pub struct CompanyQuery;

#[Object]
impl CompanyQuery {
    /// The signed-in user's company.
    async fn company(&self, ctx: &Context<'_>) -> async_graphql::Result<Company> {
        let viewer = ctx.viewer()?;
        let row = domain::company::find(ctx.db(), &viewer.tenant).await?;
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
    /// Renames the company. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn rename_company(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new display name: 1 to 200 characters, trimmed.")] name: String,
    ) -> async_graphql::Result<Company> {
        let viewer = ctx.viewer()?;
        let row = domain::company::rename(ctx.db(), &viewer.tenant, &name).await?;
        Ok(Company {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Replaces the company's settings document. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn update_company_settings(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The whole new document: a JSON object of at most 16 KiB serialised.")]
        settings: serde_json::Value,
    ) -> async_graphql::Result<Company> {
        let viewer = ctx.viewer()?;
        let row = domain::company::update_settings(ctx.db(), &viewer.tenant, &settings).await?;
        Ok(Company {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Replaces the company's invite token; the old one stops working at once. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn rotate_invite_token(&self, ctx: &Context<'_>) -> async_graphql::Result<Company> {
        let viewer = ctx.viewer()?;
        let row = domain::company::rotate_invite_token(ctx.db(), &viewer.tenant).await?;
        Ok(Company {
            row,
            viewer: viewer.clone(),
        })
    }
}
