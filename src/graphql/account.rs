//! Accounts: `signup`, `joinCompany` and `login`, each answering with a session token.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::company::Company;
use super::context::ContextExt as _;
use super::user::User;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::account::Credentials;
use crate::error::AppError;

/// A session: the token to send as `Authorization: Bearer <token>` (or in the WebSocket
/// `connection_init` payload as `{"token": ...}`), and who it is for.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// The bearer token.
    token: String,
    /// When the token stops being accepted; log in again after that.
    expires_at: DateTime<Utc>,
    /// The signed-in user.
    user: User,
    /// The user's company.
    company: Company,
}

fn session(
    ctx: &Context<'_>,
    company: domain::company::Company,
    user: domain::user::User,
) -> async_graphql::Result<AuthPayload> {
    let viewer = Viewer::of_member(&user)?;
    let issued = ctx
        .services()
        .tokens
        .issue(&viewer.user_id, &viewer.tenant, viewer.role)
        .map_err(AppError::Internal)?;
    Ok(AuthPayload {
        token: issued.token,
        expires_at: issued.expires_at,
        user: User {
            row: user,
            viewer: viewer.clone(),
        },
        company: Company {
            row: company,
            viewer,
        },
    })
}

#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Creates a company and its first admin, and signs the admin in.
    async fn signup(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new company's display name.")] company_name: String,
        #[graphql(desc = "The admin's display name.")] name: String,
        #[graphql(desc = "The admin's login email; must not belong to another account.")]
        email: String,
        #[graphql(desc = "At least 8 characters.")] password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let credentials = Credentials {
            name,
            email,
            password,
        };
        let (company, user) = domain::account::signup(ctx.db(), &company_name, credentials).await?;
        session(ctx, company, user)
    }

    /// Joins the company whose invite token is given, as a regular member, and signs in.
    async fn join_company(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token an admin shared (`Company.inviteToken`).")]
        invite_token: String,
        #[graphql(desc = "The new member's display name.")] name: String,
        #[graphql(desc = "The new member's login email; must not belong to another account.")]
        email: String,
        #[graphql(desc = "At least 8 characters.")] password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let credentials = Credentials {
            name,
            email,
            password,
        };
        let (company, user) = domain::account::join(ctx.db(), &invite_token, credentials).await?;
        session(ctx, company, user)
    }

    /// Signs in. A wrong email and a wrong password give the same UNAUTHENTICATED error.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let db = ctx.db();
        let user = domain::account::authenticate(db, &email, password).await?;
        let viewer = Viewer::of_member(&user)?;
        let company = domain::company::find(db, &viewer.tenant).await?;
        session(ctx, company, user)
    }
}
