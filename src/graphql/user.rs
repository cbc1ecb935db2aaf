//! Users: the `me` and `users` queries, the `User` type, and admins managing members.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};

use super::company::{Company, TenantCompany};
use super::context::ContextExt as _;
use super::guards::AdminOnly;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::pagination::{CountedConnection, PageArgs, TotalCount, connection};
use crate::auth::Viewer;
use crate::domain;
use crate::error::AppError;

/// A member's role inside their company.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(name = "Role", remote = "domain::user::Role")]
pub enum MemberRole {
    /// Manages the company: members, invite token, settings, destructive actions.
    Admin,
    /// Reads everything in the company and records and edits workflows.
    Regular,
}

/// A member of a company.
pub struct User {
    pub row: domain::user::User,
    pub viewer: Viewer,
}

/// A member of a company, as seen by a member of the same company.
#[Object]
impl User {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
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
    async fn role(&self) -> MemberRole {
        self.row.role.into()
    }

    /// When the account was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// The company this member belongs to.
    async fn company(&self, ctx: &Context<'_>) -> async_graphql::Result<Company> {
        // Batched: a list of members asking for their company reads it once. The request's
        // loader only serves users of its own company: sign-up, join and login answer
        // before (or regardless of) the request's token, so they read directly.
        let row = match ctx.loader() {
            Ok(loader) if loader.loader().tenant == self.viewer.tenant => {
                loader.load_one(TenantCompany).await?
            }
            _ => Some(domain::company::find(ctx.db(), &self.viewer.tenant).await?),
        }
        .ok_or(AppError::NotFound("company"))?;
        Ok(Company {
            row,
            viewer: self.viewer.clone(),
        })
    }
}

impl User {
    /// Resolves a nullable reference to a member (an author, a reader, a starter): null
    /// when that member has been removed.
    pub async fn load_opt(
        ctx: &Context<'_>,
        viewer: &Viewer,
        id: Option<&str>,
    ) -> async_graphql::Result<Option<Self>> {
        let Some(id) = id else {
            return Ok(None);
        };
        let row = ctx.loader()?.load_one(UserById(id.to_owned())).await?;
        Ok(row.map(|row| Self {
            row,
            viewer: viewer.clone(),
        }))
    }
}

/// Batch key: a member of the loader's company, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserById(pub String);

impl Loader<UserById> for TenantLoader {
    type Value = domain::user::User;
    type Error = LoadError;

    async fn load(&self, keys: &[UserById]) -> Result<HashMap<UserById, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|key| key.0.clone()).collect();
        let rows = domain::user::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (UserById(row.id.clone()), row))
            .collect())
    }
}

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        let viewer = ctx.viewer()?;
        let row = match domain::user::find(ctx.db(), &viewer.tenant, viewer.member_id()?).await {
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

    /// Every member of the signed-in user's company, in the order they joined (all at
    /// once; `members` pages and searches).
    async fn users(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<User>> {
        let viewer = ctx.viewer()?;
        let rows = domain::user::list(ctx.db(), &viewer.tenant).await?;
        Ok(rows
            .into_iter()
            .map(|row| User {
                row,
                viewer: viewer.clone(),
            })
            .collect())
    }

    /// The members of the signed-in user's company in the order they joined, a page at a
    /// time, optionally only those whose name or email contains `search`.
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "Only members whose name or email contains this text, ignoring case; at most 200 characters."
        )]
        search: Option<String>,
        #[graphql(desc = "How many members to return from the start: 0 to 100, default 20.")]
        first: Option<i32>,
        #[graphql(desc = "Return the members after this cursor.")] after: Option<String>,
        #[graphql(desc = "How many members to return from the end: 0 to 100.")] last: Option<i32>,
        #[graphql(desc = "Return the members before this cursor.")] before: Option<String>,
    ) -> async_graphql::Result<CountedConnection<User>> {
        let viewer = ctx.viewer()?;
        let db = ctx.db();
        let filter = domain::user::MemberFilter { search }.validate()?;
        let request = PageArgs {
            first,
            after,
            last,
            before,
        }
        .into_request(domain::user::ORDERING)?;
        let page = domain::user::page(db, &viewer.tenant, &filter, &request).await?;
        let total = {
            let (db, tenant) = (db.clone(), viewer.tenant.clone());
            TotalCount::new(move || {
                let (db, tenant, filter) = (db.clone(), tenant.clone(), filter.clone());
                async move { domain::user::count(&db, &tenant, &filter).await }
            })
        };
        Ok(connection(
            page,
            domain::user::ORDERING,
            domain::user::User::position,
            |row| User {
                row,
                viewer: viewer.clone(),
            },
            total,
        ))
    }
}

#[derive(Default)]
pub struct UserMutation;

#[Object]
impl UserMutation {
    /// Makes a member an admin or a regular member. A company keeps at least one admin:
    /// demoting the last one is BAD_USER_INPUT. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn change_user_role(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The member whose role changes.")] user_id: ID,
        #[graphql(desc = "The role they get.")] role: MemberRole,
    ) -> async_graphql::Result<User> {
        let viewer = ctx.viewer()?;
        let row =
            domain::user::change_role(ctx.db(), &viewer.tenant, &user_id, role.into()).await?;
        // Their old tokens stop working on this instance now, elsewhere within seconds.
        ctx.services().credentials.forget_user(&user_id);
        Ok(User {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Removes a member from the company and answers their id. Their workflows stay, with
    /// `createdBy` null. The last admin cannot be removed (BAD_USER_INPUT). Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn remove_user(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The member to remove.")] user_id: ID,
    ) -> async_graphql::Result<ID> {
        let viewer = ctx.viewer()?;
        domain::user::remove(ctx.db(), &viewer.tenant, &user_id).await?;
        ctx.services().credentials.forget_user(&user_id);
        Ok(user_id)
    }
}
