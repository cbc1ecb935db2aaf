//! Health logs: the outcome of each step an executor ran, the record a workflow's health
//! is judged from.
//!
//! This is the read side; logs are written as executors report steps.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Tenant;
use super::page::{Page, PageRequest, Position, SortValue, time_key};
use crate::db::Db;
use crate::db::schema::health_logs;
use crate::error::{AppError, AppResult};

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Success,
    Failed,
    /// The recorded selectors failed, and a deterministic fallback found the element.
    HealedDeterministic,
    /// The recorded selectors failed, and the AI found the element.
    HealedAi,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::HealedDeterministic => "healed_deterministic",
            Self::HealedAi => "healed_ai",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Success,
            Self::Failed,
            Self::HealedDeterministic,
            Self::HealedAi,
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
#[diesel(table_name = health_logs, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct HealthLog {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub run_id: String,
    pub step_id: Option<String>,
    /// Set by the executor so a retried report is recorded once.
    pub idempotency_key: Option<String>,
    pub status: String,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub healing_confidence: Option<f64>,
    pub deterministic_score: Option<f64>,
    pub ai_score: Option<f64>,
    pub page_url: Option<String>,
    pub execution_time_ms: Option<i32>,
    pub created_at: NaiveDateTime,
}

impl HealthLog {
    pub fn status(&self) -> AppResult<Status> {
        Status::parse(&self.status).ok_or_else(|| {
            AppError::internal(anyhow::anyhow!(
                "health log {} has unknown status {:?}",
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

/// Which health logs a list shows. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct HealthLogFilter {
    pub workflow_id: Option<String>,
    pub run_id: Option<String>,
    pub statuses: Vec<Status>,
    /// Logs created at or after this time.
    pub since: Option<NaiveDateTime>,
    /// Logs created before this time.
    pub until: Option<NaiveDateTime>,
}

impl HealthLogFilter {
    /// Checks the time window; `field` prefixes the names in errors (e.g. `filter`).
    pub fn validate(self, field: &str) -> AppResult<Self> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until < since
        {
            return Err(AppError::bad_input(
                format!("{field}.until"),
                format!("{field}.until must not be before {field}.since"),
            ));
        }
        Ok(self)
    }
}

/// The order a list of health logs is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogOrder {
    /// What happened last comes first (activity feeds).
    #[default]
    NewestFirst,
    /// The order the steps were reported in (one run's timeline).
    OldestFirst,
}

impl LogOrder {
    /// Names the ordering inside cursors, so a cursor only works for the ordering it came
    /// from.
    pub fn tag(self) -> &'static str {
        match self {
            Self::NewestFirst => "health_logs:created_at:desc",
            Self::OldestFirst => "health_logs:created_at:asc",
        }
    }

    fn descending(self) -> bool {
        self == Self::NewestFirst
    }
}

/// The tenant's health logs matching `filter`, with `select` as the boxed select clause.
macro_rules! filtered {
    ($tenant:expr, $filter:expr, $select:expr) => {{
        let filter: &HealthLogFilter = $filter;
        let mut query = health_logs::table
            .filter(health_logs::company_id.eq($tenant.id().to_owned()))
            .select($select)
            .into_boxed();
        if let Some(workflow_id) = &filter.workflow_id {
            query = query.filter(health_logs::workflow_id.eq(workflow_id.clone()));
        }
        if let Some(run_id) = &filter.run_id {
            query = query.filter(health_logs::run_id.eq(run_id.clone()));
        }
        if !filter.statuses.is_empty() {
            query = query
                .filter(health_logs::status.eq_any(filter.statuses.iter().map(|s| s.as_str())));
        }
        if let Some(since) = filter.since {
            query = query.filter(health_logs::created_at.ge(since));
        }
        if let Some(until) = filter.until {
            query = query.filter(health_logs::created_at.lt(until));
        }
        query
    }};
}

/// One page of the tenant's health logs in `order`.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &HealthLogFilter,
    order: LogOrder,
    page: &PageRequest,
) -> AppResult<Page<HealthLog>> {
    let rows = crate::with_conn!(db, |conn| {
        let query = filtered!(tenant, filter, HealthLog::as_select());
        crate::keyset!(
            query,
            page,
            order.descending(),
            health_logs::created_at,
            health_logs::id,
            time_key
        )
        .load::<HealthLog>(conn)
        .await?
    });
    Ok(Page::from_scan(rows, page))
}

/// How many of the tenant's health logs match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &HealthLogFilter) -> AppResult<i64> {
    Ok(crate::with_conn!(db, |conn| {
        filtered!(tenant, filter, diesel::dsl::count_star())
            .first::<i64>(conn)
            .await?
    }))
}
