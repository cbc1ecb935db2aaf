//! Sessions of members: what a sign-in opens, a refresh keeps alive, and a logout ends.
//!
//! A sign-in opens a session and hands out two things: a short-lived access token (a JSON
//! Web Token naming the session, issued by `auth`) and an opaque refresh token (minted here,
//! stored only as a keyed hash in `refresh_tokens`). `refresh` trades a refresh token for a
//! new pair: the presented token is marked rotated and stops working. A rotated token that
//! comes back has been copied (the client and a thief both hold it, and one of them already
//! used it), so the whole session is ended: every token of it, and every access token
//! naming it within seconds (the credential check in `auth` sees the session gone).
//!
//! Two refreshes racing with the same token are the same case and end the session, as the
//! strict reading of rotation asks: a client must not refresh twice with one token.
//!
//! A session expires [`SessionRules::refresh_ttl`] after its last refresh. Ended sessions
//! are deleted with their tokens; rotated tokens are kept for reuse detection for one
//! refresh lifetime and pruned at the next rotation after that. A member holds at most
//! [`MAX_SESSIONS_PER_USER`] sessions: signing in beyond that ends the least recently used.
//!
//! Lock order (see `domain`): company → user → session → its refresh tokens.

use std::sync::Arc;

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::json;

use crate::db::Columns as _;

use super::audit::{self, Action, Target};
use super::company::Company;
use super::user::User;
use super::{Tenant, new_id, now};
use crate::crypto::secret_token::{SecretKind, SecretTokens};
use crate::db::schema::{refresh_tokens, sessions, users};
use crate::db::{Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

/// Sessions one member may hold; signing in beyond ends the least recently used.
pub const MAX_SESSIONS_PER_USER: i64 = 100;
/// How stale `last_used_at` may be before a use writes it again.
pub const LAST_USED_PRECISION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// How sessions are kept; one per process.
#[derive(Clone)]
pub struct SessionRules {
    /// How long a session lives after its last refresh (and a refresh token after its issue).
    pub refresh_ttl: chrono::TimeDelta,
    /// Mints and recognises refresh tokens.
    pub tokens: Arc<SecretTokens>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sessions, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Session {
    pub id: String,
    pub company_id: String,
    pub user_id: String,
    pub created_at: NaiveDateTime,
    pub last_used_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub user_agent: Option<String>,
    pub client_address: Option<String>,
}

impl TenantRow for Session {
    type Table = sessions::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = refresh_tokens, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
struct RefreshToken {
    token_hash: String,
    company_id: String,
    session_id: String,
    created_at: NaiveDateTime,
    rotated_at: Option<NaiveDateTime>,
}

impl TenantRow for RefreshToken {
    type Table = refresh_tokens::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// A session just opened or refreshed, with the refresh token its client gets once.
#[derive(Debug, Clone)]
pub struct Opened {
    pub session: Session,
    pub refresh_token: String,
    /// Sessions of the same member this one pushed out (over [`MAX_SESSIONS_PER_USER`],
    /// or expired), to forget in the credential cache.
    pub ended: Vec<String>,
}

/// Opens a session for `user_id` inside a sign-in's unit of work, from the unit of work's
/// client (user agent and address).
pub(crate) async fn open(
    tx: &mut Tx<NoEvents>,
    rules: &SessionRules,
    user_id: &str,
) -> AppResult<Opened> {
    let at = now();
    // Expired sessions of this member go first, then the least recently used beyond the cap.
    let mut ended: Vec<String> = tx
        .load(
            tx.sessions()
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::expires_at.le(at))
                .select(sessions::id),
        )
        .await?;
    let live: Vec<String> = tx
        .load(
            tx.sessions()
                .filter(sessions::user_id.eq(user_id))
                .filter(sessions::expires_at.gt(at))
                .order((sessions::last_used_at.desc(), sessions::id.desc()))
                .select(sessions::id),
        )
        .await?;
    let keep = usize::try_from(MAX_SESSIONS_PER_USER - 1).unwrap_or(0);
    ended.extend(live.into_iter().skip(keep));
    if !ended.is_empty() {
        tx.execute(tx.sessions().filter(sessions::id.eq_any(&ended)).delete())
            .await?;
    }
    let origin = tx.origin();
    let mut session = Session {
        id: new_id(),
        company_id: tx.tenant().id().to_owned(),
        user_id: user_id.to_owned(),
        created_at: at,
        last_used_at: at,
        expires_at: at + rules.refresh_ttl,
        user_agent: origin.user_agent.clone(),
        client_address: origin.client_address.clone(),
    };
    tx.insert(&mut session).await?;
    let refresh_token = issue_refresh_token(tx, rules, &session.id, at).await?;
    Ok(Opened {
        session,
        refresh_token,
        ended,
    })
}

async fn issue_refresh_token(
    tx: &mut Tx<NoEvents>,
    rules: &SessionRules,
    session_id: &str,
    at: NaiveDateTime,
) -> AppResult<String> {
    let minted = rules.tokens.mint(SecretKind::RefreshToken);
    let mut row = RefreshToken {
        token_hash: minted.hash,
        company_id: tx.tenant().id().to_owned(),
        session_id: session_id.to_owned(),
        created_at: at,
        rotated_at: None,
    };
    tx.insert(&mut row).await?;
    Ok(minted.secret)
}

/// What a refresh gave.
pub enum Refresh {
    /// A new refresh token (and the session to issue an access token for).
    Rotated(Box<Rotated>),
    /// Refused: unknown or expired token, or a rotated one presented again (then the
    /// session was ended, named here for the credential cache to forget).
    Refused { ended: Option<String> },
}

pub struct Rotated {
    pub opened: Opened,
    pub user: User,
    pub company: Company,
}

/// Trades a refresh token for a new one (see the module docs).
pub async fn refresh(db: &Db, rules: &SessionRules, presented: &str) -> AppResult<Refresh> {
    let Some(hash) = rules.tokens.recognise(SecretKind::RefreshToken, presented) else {
        return Ok(Refresh::Refused { ended: None });
    };
    // Unscoped on purpose: the token is what tells which company's session it is.
    let found: Option<(String, String)> = {
        let mut tx = db.read_unscoped().await?;
        let mut all = tx.unscoped();
        all.optional(
            all.refresh_tokens()
                .filter(refresh_tokens::token_hash.eq(&hash))
                .select((refresh_tokens::company_id, refresh_tokens::session_id))
                .limit(1),
        )
        .await?
    };
    let Some((company_id, session_id)) = found else {
        return Ok(Refresh::Refused { ended: None });
    };
    let tenant = Tenant::new(company_id);
    let (hash, session_id) = (&hash, &session_id);
    db.write(&tenant, |tx| {
        rotated(tx, rules, hash, session_id).into_work()
    })
    .await
}

async fn rotated(
    tx: &mut Tx<NoEvents>,
    rules: &SessionRules,
    hash: &str,
    session_id: &str,
) -> AppResult<Refresh> {
    // The session first (a concurrent refresh or logout waits here), then its token.
    tx.lock(Lock::Update, sessions::id, session_id).await?;
    let session: Option<Session> = tx
        .optional(
            tx.sessions()
                .filter(sessions::id.eq(session_id))
                .select(Session::columns()),
        )
        .await?;
    let token: Option<RefreshToken> = tx
        .optional(
            tx.refresh_tokens()
                .filter(refresh_tokens::token_hash.eq(hash))
                .select(RefreshToken::columns()),
        )
        .await?;
    let (Some(session), Some(token)) = (session, token) else {
        // Ended meanwhile.
        return Ok(Refresh::Refused { ended: None });
    };
    let at = now();
    if token.rotated_at.is_some() {
        end_sessions(tx, std::slice::from_ref(&session.id)).await?;
        audit::record(
            tx,
            Action::RefreshTokenReused,
            Target::session(&session.id),
            json!({ "userId": session.user_id }),
        )
        .await?;
        return Ok(Refresh::Refused {
            ended: Some(session.id),
        });
    }
    if session.expires_at <= at {
        end_sessions(tx, std::slice::from_ref(&session.id)).await?;
        return Ok(Refresh::Refused {
            ended: Some(session.id),
        });
    }
    tx.execute(
        tx.refresh_tokens()
            .filter(refresh_tokens::token_hash.eq(hash))
            .set(refresh_tokens::rotated_at.eq(at)),
    )
    .await?;
    // Rotated tokens older than a refresh lifetime are no longer worth recognising.
    tx.execute(
        tx.refresh_tokens()
            .filter(refresh_tokens::session_id.eq(&session.id))
            .filter(refresh_tokens::rotated_at.lt(at - rules.refresh_ttl))
            .delete(),
    )
    .await?;
    let refresh_token = issue_refresh_token(tx, rules, &session.id, at).await?;
    let session: Session = tx
        .one(
            tx.sessions()
                .filter(sessions::id.eq(&session.id))
                .set((
                    sessions::last_used_at.eq(at),
                    sessions::expires_at.eq(at + rules.refresh_ttl),
                ))
                .returning(Session::columns()),
        )
        .await?;
    let user: User = tx
        .optional(
            tx.users()
                .filter(users::id.eq(&session.user_id))
                .select(User::columns()),
        )
        .await?
        .ok_or(AppError::Unauthenticated("this account no longer exists"))?;
    let company: Company = tx
        .optional(tx.company().select(Company::columns()))
        .await?
        .ok_or(AppError::NotFound("company"))?;
    Ok(Refresh::Rotated(Box::new(Rotated {
        opened: Opened {
            session,
            refresh_token,
            ended: Vec::new(),
        },
        user,
        company,
    })))
}

/// Deletes sessions (their refresh tokens go with them).
async fn end_sessions(tx: &mut Tx<NoEvents>, ids: &[String]) -> AppResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    tx.execute(tx.sessions().filter(sessions::id.eq_any(ids)).delete())
        .await
}

/// Ends one session of `user_id` (logout). Ending one that is already gone is no error.
pub async fn end(db: &Db, tenant: &Tenant, user_id: &str, session_id: &str) -> AppResult<()> {
    db.write(tenant, |tx| ended(tx, user_id, session_id).into_work())
        .await
}

async fn ended(tx: &mut Tx<NoEvents>, user_id: &str, session_id: &str) -> AppResult<()> {
    let deleted = tx
        .execute(
            tx.sessions()
                .filter(sessions::id.eq(session_id))
                .filter(sessions::user_id.eq(user_id))
                .delete(),
        )
        .await?;
    if deleted > 0 {
        audit::record(
            tx,
            Action::LoggedOut,
            Target::session(session_id),
            json!({}),
        )
        .await?;
    }
    Ok(())
}

/// Ends every session of `user_id`; answers their ids.
pub async fn end_all(db: &Db, tenant: &Tenant, user_id: &str) -> AppResult<Vec<String>> {
    db.write(tenant, |tx| all_ended(tx, user_id).into_work())
        .await
}

async fn all_ended(tx: &mut Tx<NoEvents>, user_id: &str) -> AppResult<Vec<String>> {
    let ended = end_others(tx, user_id, None).await?;
    audit::record(
        tx,
        Action::LoggedOutEverywhere,
        Target::user(user_id),
        json!({ "sessionsEnded": ended.len() }),
    )
    .await?;
    Ok(ended)
}

/// Inside a unit of work: ends every session of `user_id` but `keep`; answers their ids.
pub(crate) async fn end_others(
    tx: &mut Tx<NoEvents>,
    user_id: &str,
    keep: Option<&str>,
) -> AppResult<Vec<String>> {
    let ids: Vec<String> = tx
        .load(
            tx.sessions()
                .filter(sessions::user_id.eq(user_id))
                .filter_maybe(keep.map(|keep| sessions::id.ne(keep.to_owned())))
                .select(sessions::id),
        )
        .await?;
    end_sessions(tx, &ids).await?;
    Ok(ids)
}

/// The member's sessions that have not expired, most recently used first.
pub async fn list(db: &Db, tenant: &Tenant, user_id: &str) -> AppResult<Vec<Session>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.sessions()
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::expires_at.gt(now()))
            .order((sessions::last_used_at.desc(), sessions::id.desc()))
            .select(Session::columns())
            .limit(MAX_SESSIONS_PER_USER),
    )
    .await
}

/// The sessions among `ids` that are `user_id`'s and have not ended: what [`list`] could
/// show them; anyone else's are absent, as if they did not exist.
pub async fn find_many_of(
    db: &Db,
    tenant: &Tenant,
    user_id: &str,
    ids: &[String],
) -> AppResult<Vec<Session>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.sessions()
            .filter(sessions::user_id.eq(user_id))
            .filter(sessions::id.eq_any(ids))
            .filter(sessions::expires_at.gt(now()))
            .select(Session::columns()),
    )
    .await
}

/// What the credential check needs to know of a session: whether it exists for this
/// member, until when, when it was last used, and the member's role now.
#[derive(Debug, Clone)]
pub struct Standing {
    pub role: super::user::Role,
    pub expires_at: NaiveDateTime,
    pub last_used_at: NaiveDateTime,
}

/// The standing of `session_id` of `user_id` in the tenant's company, or `None` when the
/// session ended or the member is gone.
pub async fn standing(
    db: &Db,
    tenant: &Tenant,
    user_id: &str,
    session_id: &str,
) -> AppResult<Option<Standing>> {
    let mut tx = db.read(tenant).await?;
    let session: Option<(NaiveDateTime, NaiveDateTime)> = tx
        .optional(
            tx.sessions()
                .filter(sessions::id.eq(session_id))
                .filter(sessions::user_id.eq(user_id))
                .select((sessions::expires_at, sessions::last_used_at)),
        )
        .await?;
    let Some((expires_at, last_used_at)) = session else {
        return Ok(None);
    };
    let role = tx
        .optional(tx.users().filter(users::id.eq(user_id)).select(users::role))
        .await?;
    Ok(role.map(|role| Standing {
        role,
        expires_at,
        last_used_at,
    }))
}

/// Records that the session was used now, unless a use within [`LAST_USED_PRECISION`]
/// was already recorded.
pub async fn touch(db: &Db, tenant: &Tenant, session_id: &str) -> AppResult<()> {
    db.write(tenant, |tx| touched(tx, session_id).into_work())
        .await
}

async fn touched(tx: &mut Tx<NoEvents>, session_id: &str) -> AppResult<()> {
    let at = now();
    tx.execute(
        tx.sessions()
            .filter(sessions::id.eq(session_id))
            .filter(sessions::last_used_at.lt(at - LAST_USED_PRECISION))
            .set(sessions::last_used_at.eq(at)),
    )
    .await?;
    Ok(())
}
