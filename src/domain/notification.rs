//! Notifications: what the platform tells a company's members (a workflow broke, healing
//! needed review, ...). They belong to the company, not to one member: reading one marks
//! it read for everybody, remembering who read it first.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::RunQueryDsl;

use super::page::{Page, PageRequest, Position, SortValue, time_key};
use super::{Tenant, new_id, now};
use crate::db::Db;
use crate::db::schema::notifications;
use crate::error::{AppError, AppResult};

/// Names the one ordering of notification lists inside cursors.
pub const ORDERING: &str = "notifications:created_at:desc";

/// How urgent a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Info, Self::Warning, Self::Error]
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
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Notification {
    pub id: String,
    pub company_id: String,
    pub workflow_id: Option<String>,
    pub kind: String,
    pub severity: String,
    pub title: String,
    pub message: String,
    pub read: bool,
    pub read_at: Option<NaiveDateTime>,
    pub read_by: Option<String>,
    pub created_at: NaiveDateTime,
}

impl crate::db::TenantRow for Notification {
    type Table = notifications::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl Notification {
    pub fn severity(&self) -> AppResult<Severity> {
        super::stored(
            "notification",
            &self.id,
            "severity",
            &self.severity,
            Severity::parse,
        )
    }

    pub fn position(&self) -> Position {
        Position {
            key: SortValue::time(self.created_at),
            id: self.id.clone(),
        }
    }
}

/// What raises a notification; see [`new_row`].
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// The workflow it is about, if any (it must belong to the same company).
    pub workflow_id: Option<String>,
    /// A machine-readable reason, e.g. `workflow_broken`.
    pub kind: String,
    pub severity: Severity,
    pub title: String,
    pub message: String,
}

/// The row for a new, unread notification. Callers insert it inside the transaction that
/// caused it (`diesel::insert_into(notifications::table).values(&row)`), so the alert and
/// its cause are committed together or not at all.
pub fn new_row(tenant: &Tenant, new: NewNotification) -> Notification {
    Notification {
        id: new_id(),
        company_id: tenant.id().to_owned(),
        workflow_id: new.workflow_id,
        kind: new.kind,
        severity: new.severity.as_str().to_owned(),
        title: new.title,
        message: new.message,
        read: false,
        read_at: None,
        read_by: None,
        created_at: now(),
    }
}

/// Which notifications a list shows.
#[derive(Debug, Clone, Default)]
pub struct NotificationFilter {
    pub unread_only: bool,
    pub severity: Option<Severity>,
}

/// The tenant's notifications matching `filter`, with `select` as the boxed select clause.
macro_rules! filtered {
    ($tenant:expr, $filter:expr, $select:expr) => {{
        let filter: &NotificationFilter = $filter;
        let mut query = notifications::table
            .filter(notifications::company_id.eq($tenant.id().to_owned()))
            .select($select)
            .into_boxed();
        if filter.unread_only {
            query = query.filter(notifications::read.eq(false));
        }
        if let Some(severity) = filter.severity {
            query = query.filter(notifications::severity.eq(severity.as_str()));
        }
        query
    }};
}

/// One page of the tenant's notifications, newest first.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &NotificationFilter,
    page: &PageRequest,
) -> AppResult<Page<Notification>> {
    let rows = crate::with_conn!(db, |conn| {
        let query = filtered!(tenant, filter, Notification::as_select());
        crate::keyset!(
            query,
            page,
            true,
            notifications::created_at,
            notifications::id,
            time_key
        )
        .load::<Notification>(conn)
        .await?
    });
    Ok(Page::from_scan(rows, page))
}

/// How many of the tenant's notifications match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &NotificationFilter) -> AppResult<i64> {
    Ok(crate::with_conn!(db, |conn| {
        filtered!(tenant, filter, diesel::dsl::count_star())
            .first::<i64>(conn)
            .await?
    }))
}

/// Marks one notification read by `reader`. Marking it again changes nothing: the first
/// reader and time are kept.
pub async fn mark_read(
    db: &Db,
    tenant: &Tenant,
    id: &str,
    reader: &str,
) -> AppResult<Notification> {
    crate::transaction!(db, |conn| {
        diesel::update(
            notifications::table
                .filter(notifications::company_id.eq(tenant.id()))
                .filter(notifications::id.eq(id))
                .filter(notifications::read.eq(false)),
        )
        .set((
            notifications::read.eq(true),
            notifications::read_at.eq(now()),
            notifications::read_by.eq(reader),
        ))
        .execute(conn)
        .await
        .map_err(reader_gone)?;
        notifications::table
            .filter(notifications::company_id.eq(tenant.id()))
            .filter(notifications::id.eq(id))
            .select(Notification::as_select())
            .first(conn)
            .await
            .optional()?
            .ok_or(AppError::NotFound("notification"))
    })
}

/// Marks every unread notification of the company read by `reader`; answers how many
/// changed.
pub async fn mark_all_read(db: &Db, tenant: &Tenant, reader: &str) -> AppResult<usize> {
    crate::transaction!(db, |conn| {
        diesel::update(
            notifications::table
                .filter(notifications::company_id.eq(tenant.id()))
                .filter(notifications::read.eq(false)),
        )
        .set((
            notifications::read.eq(true),
            notifications::read_at.eq(now()),
            notifications::read_by.eq(reader),
        ))
        .execute(conn)
        .await
        .map_err(reader_gone)
    })
}

/// `read_by` references the reader's account; a token outliving its removed account is
/// answered like `me` answers it, not as a server error.
fn reader_gone(error: DieselError) -> AppError {
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _) => {
            AppError::Unauthenticated("this account no longer exists")
        }
        other => other.into(),
    }
}

pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<()> {
    crate::transaction!(db, |conn| {
        let deleted = diesel::delete(
            notifications::table
                .filter(notifications::company_id.eq(tenant.id()))
                .filter(notifications::id.eq(id)),
        )
        .execute(conn)
        .await?;
        if deleted == 0 {
            Err(AppError::NotFound("notification"))
        } else {
            Ok(())
        }
    })
}
/// Notification rows by id in *any* company, for events arriving from another instance: the event
/// names its company, and the caller drops rows of any other. Unscoped on purpose.
pub(crate) async fn for_events(db: &Db, ids: &[String]) -> AppResult<Vec<Notification>> {
    Ok(crate::with_conn!(db, |conn| {
        notifications::table
            .filter(notifications::id.eq_any(ids))
            .select(Notification::as_select())
            .load(conn)
            .await?
    }))
}
