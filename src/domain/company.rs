//! Companies: the tenants. Each has members and an invite token new members join with.

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::Columns as _;

use super::audit::{self, Action, Target};
use super::{Tenant, json, now, required_name};
use crate::db::schema::companies;
use crate::db::{Db, IntoWork as _, NoEvents, Tx};
use crate::error::{AppError, AppResult};

pub const MAX_NAME_CHARS: usize = 200;
/// Settings are a small document of preferences, not a storage area.
pub const MAX_SETTINGS_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = companies, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Company {
    pub id: String,
    pub name: String,
    pub invite_token: String,
    /// A JSON object, stored as text.
    pub settings: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl Company {
    /// The settings document.
    pub fn settings(&self) -> AppResult<serde_json::Value> {
        json::parse("companies.settings", &self.settings)
    }
}

/// An unguessable invite token (256 random bits).
pub fn new_invite_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How many companies the database holds, across all of them (`seed --demo` fills only an
/// empty database).
pub async fn count_all(db: &Db) -> AppResult<i64> {
    let mut tx = db.read_unscoped().await?;
    let companies = tx.unscoped().companies();
    let count: Option<i64> = tx.unscoped().optional(companies.count()).await?;
    Ok(count.unwrap_or(0))
}

/// The tenant's own company.
pub async fn find(db: &Db, tenant: &Tenant) -> AppResult<Company> {
    let mut tx = db.read(tenant).await?;
    tx.optional(tx.company().select(Company::columns()))
        .await?
        .ok_or(AppError::NotFound("company"))
}

/// Replaces the invite token; the old one stops working at once.
pub async fn rotate_invite_token(db: &Db, tenant: &Tenant) -> AppResult<Company> {
    let token = new_invite_token();
    let patch = &Patch {
        invite_token: Some(&token),
        ..Patch::default()
    };
    db.write(tenant, |tx| {
        audited(tx, patch, Action::InviteTokenRotated).into_work()
    })
    .await
}

/// Renames the company.
pub async fn rename(db: &Db, tenant: &Tenant, name: &str) -> AppResult<Company> {
    let name = required_name("name", name, MAX_NAME_CHARS)?;
    let patch = &Patch {
        name: Some(&name),
        ..Patch::default()
    };
    db.write(tenant, |tx| {
        audited(tx, patch, Action::CompanyRenamed).into_work()
    })
    .await
}

/// Replaces the settings document, which must be a JSON object of at most 16 KiB.
pub async fn update_settings(
    db: &Db,
    tenant: &Tenant,
    settings: &serde_json::Value,
) -> AppResult<Company> {
    let text = json::object_text("settings", settings, MAX_SETTINGS_BYTES)?;
    let patch = &Patch {
        settings: Some(&text),
        ..Patch::default()
    };
    db.write(tenant, |tx| {
        audited(tx, patch, Action::CompanySettingsUpdated).into_work()
    })
    .await
}

/// What a change writes on the company (absent fields stay), besides a new `updated_at`.
#[derive(Default, AsChangeset)]
#[diesel(table_name = companies)]
struct Patch<'a> {
    name: Option<&'a str>,
    invite_token: Option<&'a str>,
    settings: Option<&'a str>,
}

/// [`changed`], recorded in the audit log as `action` with a summary that holds no
/// secret (invite tokens) and none of the settings' values (only which keys changed).
async fn audited(tx: &mut Tx<NoEvents>, patch: &Patch<'_>, action: Action) -> AppResult<Company> {
    let before: Company = tx
        .optional(tx.company().select(Company::columns()))
        .await?
        .ok_or(AppError::NotFound("company"))?;
    let after = changed(tx, patch).await?;
    let summary = match action {
        Action::CompanyRenamed => serde_json::json!({ "before": before.name, "after": after.name }),
        Action::CompanySettingsUpdated => {
            audit::changed_keys(&before.settings()?, &after.settings()?)
        }
        _ => serde_json::json!({}),
    };
    audit::record(tx, action, Target::company(&after.id), summary).await?;
    Ok(after)
}

/// The company after `patch`; NOT_FOUND when it no longer exists.
async fn changed(tx: &mut Tx<NoEvents>, patch: &Patch<'_>) -> AppResult<Company> {
    tx.optional(
        tx.company()
            .set((patch, companies::updated_at.eq(now())))
            .returning(Company::columns()),
    )
    .await?
    .ok_or(AppError::NotFound("company"))
}
