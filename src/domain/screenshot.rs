//! Screenshots: the images recorded with steps, de-duplicated per company by SHA-256.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Tenant;
use crate::db::Db;
use crate::db::schema::screenshots;
use crate::error::{AppError, AppResult};

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Identifiable)]
#[diesel(table_name = screenshots, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Screenshot {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    /// Hex SHA-256 of the bytes; unique within a company, never across companies.
    pub hash: String,
    pub storage_key: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub width: i32,
    pub height: i32,
    pub created_at: NaiveDateTime,
}

pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Screenshot> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("screenshot"))
}

/// The tenant's screenshots among `ids`; other companies' ids are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Screenshot>> {
    Ok(crate::with_conn!(db, |conn| {
        screenshots::table
            .filter(screenshots::company_id.eq(tenant.id()))
            .filter(screenshots::id.eq_any(ids))
            .select(Screenshot::as_select())
            .load(conn)
            .await?
    }))
}

/// The screenshots recorded for the given workflows, oldest first.
pub async fn of_workflows(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
) -> AppResult<Vec<Screenshot>> {
    Ok(crate::with_conn!(db, |conn| {
        screenshots::table
            .filter(screenshots::company_id.eq(tenant.id()))
            .filter(screenshots::workflow_id.eq_any(workflow_ids))
            .order((screenshots::created_at.asc(), screenshots::id.asc()))
            .select(Screenshot::as_select())
            .load(conn)
            .await?
    }))
}
