//! Accounts: `signup`, `joinCompany` and `login`, each opening a session; `refreshSession`,
//! `logout` and `logoutEverywhere`; and what a member changes about their own account
//! (`changePassword`, `updateProfile`).
//!
//! Sign-ins (and `changePassword`, which checks a password) cost a password hash and say
//! something worth guessing at, so each counts as a sign-in attempt of the client address
//! and of the email before anything else runs; a successful `login` gives its attempt back.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::company::Company;
use super::context::ContextExt as _;
use super::user::User;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::account::{Credentials, SignedIn};
use crate::domain::session::Refresh;
use crate::error::AppError;

/// Longest refresh token worth looking at; real ones are 55 characters.
const MAX_REFRESH_TOKEN_CHARS: usize = 128;

/// A session: the access token to send as `Authorization: Bearer <token>` (or in the
/// WebSocket `connection_init` payload as `{"token": ...}`), the refresh token that renews
/// it, and who it is for.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// The access token: short-lived (15 minutes by default); renew it with
    /// `refreshSession` before `expiresAt`.
    token: String,
    /// When the access token stops being accepted.
    expires_at: DateTime<Utc>,
    /// The refresh token: pass it to `refreshSession` for a new pair. Each can be used once;
    /// using one twice ends the session. Keep it secret, and only on the device it was
    /// issued to.
    refresh_token: String,
    /// When the refresh token (and the session, unless refreshed) expires.
    refresh_token_expires_at: DateTime<Utc>,
    /// The signed-in user.
    user: User,
    /// The user's company.
    company: Company,
}

/// The answer to a sign-in or refresh: a fresh access token for the session just opened
/// or renewed.
fn session_payload(ctx: &Context<'_>, signed_in: SignedIn) -> async_graphql::Result<AuthPayload> {
    let services = ctx.services();
    for ended in &signed_in.session.ended {
        services.credentials.forget(ended);
    }
    let session = &signed_in.session.session;
    let viewer = Viewer::of_member(&signed_in.user, &session.id);
    let issued = services
        .tokens
        .issue(
            &signed_in.user.id,
            &viewer.tenant,
            signed_in.user.role,
            &session.id,
        )
        .map_err(AppError::Internal)?;
    Ok(AuthPayload {
        token: issued.token,
        expires_at: issued.expires_at,
        refresh_token: signed_in.session.refresh_token,
        refresh_token_expires_at: session.expires_at.and_utc(),
        user: User {
            row: signed_in.user,
            viewer: viewer.clone(),
        },
        company: Company {
            row: signed_in.company,
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
        let signed_in = domain::account::signup(
            ctx.db(),
            &services.passwords,
            &services.sessions,
            &company_name,
            credentials,
        )
        .await?;
        session_payload(ctx, signed_in)
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
        let signed_in = domain::account::join(
            ctx.db(),
            &services.passwords,
            &services.sessions,
            &invite_token,
            credentials,
        )
        .await?;
        session_payload(ctx, signed_in)
    }

    /// Signs in, opening a new session. A wrong email and a wrong password give the same
    /// UNAUTHENTICATED error. Failed attempts are limited per client address and per email
    /// (RATE_LIMITED, with `extensions.retryAfter` in seconds), the same for known and
    /// unknown emails.
    async fn login(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account's email.")] email: String,
        #[graphql(desc = "The account's password.")] password: String,
    ) -> async_graphql::Result<AuthPayload> {
        let services = ctx.services();
        let address = ctx.client_address();
        services.sign_in_limits.check(address, &email)?;
        let signed_in = domain::account::log_in(
            ctx.db(),
            &services.passwords,
            &services.sessions,
            &email,
            password,
        )
        .await?;
        services.sign_in_limits.refund(address, &email);
        session_payload(ctx, signed_in)
    }

    /// Trades a refresh token for a new access token and a new refresh token; the one sent
    /// stops working. A refresh token used a second time (copied, or sent twice) ends its
    /// whole session: every token of it is refused from then on. An unknown, used or
    /// expired refresh token is UNAUTHENTICATED.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The `refreshToken` of the last `AuthPayload` of the session.")]
        refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let services = ctx.services();
        let refused = || AppError::Unauthenticated("invalid, used or expired refresh token");
        if refresh_token.len() > MAX_REFRESH_TOKEN_CHARS {
            return Err(refused().into());
        }
        match domain::session::refresh(ctx.db(), &services.sessions, refresh_token.trim()).await? {
            Refresh::Rotated(rotated) => {
                let rotated = *rotated;
                session_payload(
                    ctx,
                    SignedIn {
                        company: rotated.company,
                        user: rotated.user,
                        session: rotated.opened,
                    },
                )
            }
            Refresh::Refused { ended } => {
                if let Some(session) = ended {
                    services.credentials.forget(&session);
                }
                Err(refused().into())
            }
        }
    }

    /// Ends the viewer's session: its access and refresh tokens stop working (at once on
    /// this server, within seconds on the others). Answers true.
    async fn logout(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        let user_id = viewer.member_id()?;
        let Some(session_id) = viewer.session_id() else {
            return Err(AppError::Forbidden("only a signed-in member may do this").into());
        };
        domain::session::end(ctx.db(), &viewer.tenant, user_id, session_id).await?;
        ctx.services().credentials.forget(session_id);
        Ok(true)
    }

    /// Ends every session of the viewer, this one included, on every device; answers how
    /// many were ended.
    async fn logout_everywhere(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let viewer = ctx.viewer()?;
        let user_id = viewer.member_id()?;
        let ended = domain::session::end_all(ctx.db(), &viewer.tenant, user_id).await?;
        ctx.services().credentials.forget_user(user_id);
        Ok(i32::try_from(ended.len()).unwrap_or(i32::MAX))
    }

    /// Changes the viewer's password. The current password must be given
    /// (BAD_USER_INPUT on `currentPassword` otherwise); every other session of the viewer
    /// is ended, this one stays. Counts as a sign-in attempt. Answers how many sessions
    /// were ended.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The password the account has now.")] current_password: String,
        #[graphql(desc = "The new password: 8 to 256 characters.")] new_password: String,
    ) -> async_graphql::Result<i32> {
        let viewer = ctx.viewer()?;
        let user_id = viewer.member_id()?;
        let Some(session_id) = viewer.session_id() else {
            return Err(AppError::Forbidden("only a signed-in member may do this").into());
        };
        let services = ctx.services();
        let me = domain::user::find(ctx.db(), &viewer.tenant, user_id).await?;
        services
            .sign_in_limits
            .check(ctx.client_address(), &me.email)?;
        let ended = domain::account::change_password(
            ctx.db(),
            &services.passwords,
            &viewer.tenant,
            user_id,
            session_id,
            current_password,
            new_password,
        )
        .await?;
        for session in &ended {
            services.credentials.forget(session);
        }
        Ok(i32::try_from(ended.len()).unwrap_or(i32::MAX))
    }

    /// Changes the viewer's display name and/or login email. An email another account
    /// uses is CONFLICT. Omitted fields stay as they are.
    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new display name: 1 to 200 characters.")] name: Option<String>,
        #[graphql(desc = "The new login email.")] email: Option<String>,
    ) -> async_graphql::Result<User> {
        let viewer = ctx.viewer()?;
        let user_id = viewer.member_id()?;
        let row = domain::account::update_profile(
            ctx.db(),
            &viewer.tenant,
            user_id,
            name.as_deref(),
            email.as_deref(),
        )
        .await?;
        Ok(User {
            row,
            viewer: viewer.clone(),
        })
    }
}
