//! Accounts: `signup`, `joinCompany` and `login`, each answering with a session token.
//!
//! Each costs a password hash and says something worth guessing at, so each counts as a
//! sign-in attempt of the client address and of the email before anything else runs.

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
    let viewer = Viewer::of_member(&user);
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
    /// Creates a company and its first admin, and signs the admin in. An email that already
    /// has an account is CONFLICT. Counts as a sign-in attempt (RATE_LIMITED beyond the
    /// server's limits; UNAVAILABLE when too many sign-ins are being checked at once).
    async fn signup(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new company's display name.")] company_name: String,
        #[graphql(desc = "The admin's display name.")] name: String,
        #[graphql(desc = "The admin's login email; must not belong to another account.")]
        email: String,
        #[graphql(desc = "At least 8 characters.")] password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let services = ctx.services();
        services
            .sign_in_limits
            .check(ctx.client_address(), &email)?;
        let credentials = Credentials {
            name,
            email,
            password,
        };
        let (company, user) =
            domain::account::signup(ctx.db(), &services.passwords, &company_name, credentials)
                .await?;
        session(ctx, company, user)
    }

    /// Joins the company whose invite token is given, as a regular member, and signs in.
    /// Counts as a sign-in attempt, like `signup`.
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
        let services = ctx.services();
        services
            .sign_in_limits
            .check(ctx.client_address(), &email)?;
        let credentials = Credentials {
            name,
            email,
            password,
        };
        let (company, user) =
            domain::account::join(ctx.db(), &services.passwords, &invite_token, credentials)
                .await?;
        session(ctx, company, user)
    }

    /// Signs in. A wrong email and a wrong password give the same UNAUTHENTICATED error.
    /// Attempts are limited per client address and per email (RATE_LIMITED, with
    /// `extensions.retryAfter` in seconds).
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let services = ctx.services();
        services
            .sign_in_limits
            .check(ctx.client_address(), &email)?;
        let db = ctx.db();
        let user = domain::account::authenticate(db, &services.passwords, &email, password).await?;
        let viewer = Viewer::of_member(&user);
        let company = domain::company::find(db, &viewer.tenant).await?;
        session(ctx, company, user)
    }
}
