//! Companies: the tenants. Each has members and an invite token new members join with.

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Tenant, json, now, required_name};
use crate::db::Db;
use crate::db::schema::companies;
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

/// The tenant's own company.
pub async fn find(db: &Db, tenant: &Tenant) -> AppResult<Company> {
    let found = crate::with_conn!(db, |conn| {
        companies::table
            .find(tenant.id())
            .select(Company::as_select())
            .first(conn)
            .await
            .optional()?
    });
    found.ok_or(AppError::NotFound("company"))
}

/// Replaces the invite token; the old one stops working at once.
pub async fn rotate_invite_token(db: &Db, tenant: &Tenant) -> AppResult<Company> {
    let token = new_invite_token();
    let updated = crate::transaction!(db, |conn| {
        let rows = diesel::update(companies::table.find(tenant.id()))
            .set((
                companies::invite_token.eq(&token),
                companies::updated_at.eq(now()),
            ))
            .execute(conn)
            .await?;
        if rows == 0 {
            return Err(AppError::NotFound("company"));
        }
        Ok(companies::table
            .find(tenant.id())
            .select(Company::as_select())
            .first(conn)
            .await?)
    })?;
    Ok(updated)
}

/// Renames the company.
pub async fn rename(db: &Db, tenant: &Tenant, name: &str) -> AppResult<Company> {
    let name = required_name("name", name, MAX_NAME_CHARS)?;
    let updated = crate::transaction!(db, |conn| {
        Ok(diesel::update(companies::table.find(tenant.id()))
            .set((companies::name.eq(&name), companies::updated_at.eq(now())))
            .returning(Company::as_returning())
            .get_result(conn)
            .await
            .optional()?)
    })?;
    updated.ok_or(AppError::NotFound("company"))
}

/// Replaces the settings document, which must be a JSON object of at most 16 KiB.
pub async fn update_settings(
    db: &Db,
    tenant: &Tenant,
    settings: &serde_json::Value,
) -> AppResult<Company> {
    let text = json::object_text("settings", settings, MAX_SETTINGS_BYTES)?;
    let updated = crate::transaction!(db, |conn| {
        Ok(diesel::update(companies::table.find(tenant.id()))
            .set((
                companies::settings.eq(&text),
                companies::updated_at.eq(now()),
            ))
            .returning(Company::as_returning())
            .get_result(conn)
            .await
            .optional()?)
    })?;
    updated.ok_or(AppError::NotFound("company"))
}
