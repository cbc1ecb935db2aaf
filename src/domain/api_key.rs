//! API keys: how executors (the browser extension, agents) authenticate without a person's
//! account. An admin creates a named key with a role (today only the least-privilege
//! `executor`), optionally expiring; its secret is shown once and kept only as a keyed hash
//! ([`crate::crypto::secret_token`]). Keys are revoked, never deleted.
//!
//! Whether a key still works (not revoked, not expired) is asked on every request through
//! the credential check in `auth`, which caches the answer for a couple of seconds.
//! `last_used_at` is not written per request: the check reads it with the key's status,
//! and only when it is older than [`LAST_USED_PRECISION`] does it write it, with a
//! conditional update (so several instances seeing the same stale value write it about once).

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::json;

use crate::db::Columns as _;

use super::audit::{self, Action, Target};
use super::{Tenant, new_id, now, required_name};
use crate::crypto::secret_token::{SecretKind, SecretTokens};
use crate::db::schema::api_keys;
use crate::db::{Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

pub const MAX_NAME_CHARS: usize = 100;
/// Keys a company may hold that are neither revoked nor expired.
pub const MAX_ACTIVE_KEYS: i64 = 100;
/// Keys `apiKeys(includeRevoked: true)` lists at most (newest first).
pub const MAX_LISTED: i64 = 200;
/// How stale `last_used_at` may be before a use writes it again.
pub const LAST_USED_PRECISION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

crate::text_enum! {
    /// What a key may do.
    pub enum Role {
        /// Runs workflows: reads workflows and steps, starts, reports and finishes runs,
        /// uploads screenshots. Nothing else (see `graphql::executor_access`).
        Executor = "executor",
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct ApiKey {
    pub id: String,
    pub company_id: String,
    pub name: String,
    pub role: Role,
    pub prefix: String,
    pub secret_hash: String,
    pub created_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: Option<NaiveDateTime>,
    pub revoked_at: Option<NaiveDateTime>,
    pub revoked_by: Option<String>,
    pub last_used_at: Option<NaiveDateTime>,
}

impl TenantRow for ApiKey {
    type Table = api_keys::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl ApiKey {
    /// Neither revoked nor expired at `at`.
    pub fn is_active_at(&self, at: NaiveDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expires| expires > at)
    }
}

/// What an admin asks for.
pub struct NewKey {
    pub name: String,
    pub role: Role,
    pub expires_at: Option<NaiveDateTime>,
}

/// Creates a key; answers it with its secret, which is never available again.
pub async fn create(
    db: &Db,
    tenant: &Tenant,
    tokens: &SecretTokens,
    creator: &str,
    new: NewKey,
) -> AppResult<(ApiKey, String)> {
    let name = required_name("name", &new.name, MAX_NAME_CHARS)?;
    let at = now();
    if new.expires_at.is_some_and(|expires| expires <= at) {
        return Err(AppError::bad_input(
            "expiresAt",
            "expiresAt must be in the future",
        ));
    }
    let minted = tokens.mint(SecretKind::ApiKey);
    let key = ApiKey {
        id: new_id(),
        company_id: tenant.id().to_owned(),
        name,
        role: new.role,
        prefix: minted.visible_prefix,
        secret_hash: minted.hash,
        created_by: Some(creator.to_owned()),
        created_at: at,
        expires_at: new.expires_at,
        revoked_at: None,
        revoked_by: None,
        last_used_at: None,
    };
    let key = &key;
    let created = db.write(tenant, |tx| created(tx, key).into_work()).await?;
    Ok((created, minted.secret))
}

async fn created(tx: &mut Tx<NoEvents>, key: &ApiKey) -> AppResult<ApiKey> {
    // Two creations at once must not both pass the cap: the company row orders them.
    tx.lock_company(Lock::NoKeyUpdate).await?;
    let at = now();
    let active: i64 = tx
        .one(
            tx.api_keys()
                .filter(api_keys::revoked_at.is_null())
                .filter(
                    api_keys::expires_at
                        .is_null()
                        .or(api_keys::expires_at.gt(at)),
                )
                .count(),
        )
        .await?;
    if active >= MAX_ACTIVE_KEYS {
        return Err(AppError::Conflict(format!(
            "a company holds at most {MAX_ACTIVE_KEYS} active API keys; revoke one first"
        )));
    }
    let mut row = key.clone();
    tx.insert(&mut row).await.map_err(|error| {
        if error.is_foreign_key_violation() {
            AppError::Unauthenticated("this account no longer exists")
        } else {
            error
        }
    })?;
    audit::record(
        tx,
        Action::ApiKeyCreated,
        Target::api_key(&row.id),
        json!({
            "name": row.name,
            "role": row.role.as_str(),
            "prefix": row.prefix,
            "expiresAt": row.expires_at.map(|at| at.and_utc().to_rfc3339()),
        }),
    )
    .await?;
    Ok(row)
}

/// Revokes a key: it stops working at once on this instance and within seconds on the
/// others. Revoking a revoked key changes nothing (and records nothing).
pub async fn revoke(db: &Db, tenant: &Tenant, key_id: &str, revoker: &str) -> AppResult<ApiKey> {
    db.write(tenant, |tx| revoked(tx, key_id, revoker).into_work())
        .await
}

async fn revoked(tx: &mut Tx<NoEvents>, key_id: &str, revoker: &str) -> AppResult<ApiKey> {
    tx.lock(Lock::NoKeyUpdate, api_keys::id, key_id).await?;
    let key: ApiKey = tx
        .optional(
            tx.api_keys()
                .filter(api_keys::id.eq(key_id))
                .select(ApiKey::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("API key"))?;
    if key.revoked_at.is_some() {
        return Ok(key);
    }
    let key: ApiKey = tx
        .one(
            tx.api_keys()
                .filter(api_keys::id.eq(key_id))
                .set((
                    api_keys::revoked_at.eq(now()),
                    api_keys::revoked_by.eq(revoker),
                ))
                .returning(ApiKey::columns()),
        )
        .await?;
    audit::record(
        tx,
        Action::ApiKeyRevoked,
        Target::api_key(&key.id),
        json!({ "name": key.name, "prefix": key.prefix }),
    )
    .await?;
    Ok(key)
}

/// The company's keys, newest first: the active ones, or every one (at most
/// [`MAX_LISTED`]).
pub async fn list(db: &Db, tenant: &Tenant, include_revoked: bool) -> AppResult<Vec<ApiKey>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.api_keys()
            .filter_maybe((!include_revoked).then(|| api_keys::revoked_at.is_null()))
            .order((api_keys::created_at.desc(), api_keys::id.desc()))
            .select(ApiKey::columns())
            .limit(MAX_LISTED),
    )
    .await
}

/// The tenant's keys among `ids`, revoked and expired ones too (others are absent).
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<ApiKey>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.api_keys()
            .filter(api_keys::id.eq_any(ids))
            .select(ApiKey::columns()),
    )
    .await
}

/// The key whose secret hashes to `secret_hash`, in whichever company holds it. Unscoped on
/// purpose: the secret is what tells which company is calling.
pub async fn by_secret_hash(db: &Db, secret_hash: &str) -> AppResult<Option<ApiKey>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.optional(
        all.api_keys()
            .filter(api_keys::secret_hash.eq(secret_hash))
            .select(ApiKey::columns())
            .limit(1),
    )
    .await
}

/// A key of the tenant's, as the credential check reads it (`None`: no such key).
pub async fn find(db: &Db, tenant: &Tenant, key_id: &str) -> AppResult<Option<ApiKey>> {
    let mut tx = db.read(tenant).await?;
    tx.optional(
        tx.api_keys()
            .filter(api_keys::id.eq(key_id))
            .select(ApiKey::columns()),
    )
    .await
}

/// Records that the key was used now, unless a use within [`LAST_USED_PRECISION`] was
/// already recorded (by this instance or another).
pub async fn touch(db: &Db, tenant: &Tenant, key_id: &str) -> AppResult<()> {
    db.write(tenant, |tx| touched(tx, key_id).into_work()).await
}

async fn touched(tx: &mut Tx<NoEvents>, key_id: &str) -> AppResult<()> {
    let at = now();
    tx.execute(
        tx.api_keys()
            .filter(api_keys::id.eq(key_id))
            .filter(
                api_keys::last_used_at
                    .is_null()
                    .or(api_keys::last_used_at.lt(at - LAST_USED_PRECISION)),
            )
            .set(api_keys::last_used_at.eq(at)),
    )
    .await?;
    Ok(())
}
