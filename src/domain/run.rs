//! Runs: one execution of a workflow by an executor, with its progress counters.
//!
//! This is the read side; runs are written by the executors' mutations.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Tenant;
use super::page::{Page, PageRequest, Position, SortValue, time_key};
use crate::db::Db;
use crate::db::schema::runs;
use crate::error::{AppError, AppResult};

/// Names the one ordering of run lists inside cursors.
pub const ORDERING: &str = "runs:created_at:desc";

/// Where a run is in its life. Queued, running and paused runs are still going; the others
/// are finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Queued,
    Running,
    Paused,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::Paused,
            Self::Succeeded,
            Self::Failed,
            Self::Cancelled,
            Self::TimedOut,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

#[derive(
    Debug,
    Clone,
    Queryable,
    Selectable,
    Insertable,
    Identifiable,
    serde::Serialize,
    serde::Deserialize,
)]
#[diesel(table_name = runs, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Run {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub started_by: Option<String>,
    pub status: String,
    pub steps_total: i32,
    pub steps_completed: i32,
    pub steps_failed: i32,
    pub steps_healed: i32,
    pub current_step_id: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<NaiveDateTime>,
    pub finished_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl Run {
    pub fn status(&self) -> AppResult<Status> {
        Status::parse(&self.status).ok_or_else(|| {
            AppError::internal(anyhow::anyhow!(
                "run {} has unknown status {:?}",
                self.id,
                self.status
            ))
        })
    }

    pub fn position(&self) -> Position {
        Position {
            key: SortValue::time(self.created_at),
            id: self.id.clone(),
        }
    }
}

/// Which runs a list shows. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub workflow_id: Option<String>,
    pub statuses: Vec<Status>,
}

/// The tenant's runs matching `filter`, with `select` as the boxed select clause.
macro_rules! filtered {
    ($tenant:expr, $filter:expr, $select:expr) => {{
        let filter: &RunFilter = $filter;
        let mut query = runs::table
            .filter(runs::company_id.eq($tenant.id().to_owned()))
            .select($select)
            .into_boxed();
        if let Some(workflow_id) = &filter.workflow_id {
            query = query.filter(runs::workflow_id.eq(workflow_id.clone()));
        }
        if !filter.statuses.is_empty() {
            query = query.filter(runs::status.eq_any(filter.statuses.iter().map(|s| s.as_str())));
        }
        query
    }};
}

/// One page of the tenant's runs, newest first.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &RunFilter,
    page: &PageRequest,
) -> AppResult<Page<Run>> {
    let rows = crate::with_conn!(db, |conn| {
        let query = filtered!(tenant, filter, Run::as_select());
        crate::keyset!(query, page, true, runs::created_at, runs::id, time_key)
            .load::<Run>(conn)
            .await?
    });
    Ok(Page::from_scan(rows, page))
}

/// How many of the tenant's runs match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &RunFilter) -> AppResult<i64> {
    Ok(crate::with_conn!(db, |conn| {
        filtered!(tenant, filter, diesel::dsl::count_star())
            .first::<i64>(conn)
            .await?
    }))
}

/// A run of the tenant's company; another company's run is not found.
pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Run> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("run"))
}

/// The tenant's runs among `ids`; ids of other companies are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Run>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(crate::with_conn!(db, |conn| {
        runs::table
            .filter(runs::company_id.eq(tenant.id()))
            .filter(runs::id.eq_any(ids))
            .select(Run::as_select())
            .load(conn)
            .await?
    }))
}
