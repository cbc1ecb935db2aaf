//! Notifications: what the platform tells a company's members (a workflow broke, healing
//! needed review, ...). They belong to the company, not to one member: reading one marks
//! it read for everybody, remembering who read it first.

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;

use crate::db::Columns as _;

use super::page::{Page, PageRequest, Position, SortValue, time_key};
use super::{Tenant, new_id, now};
use crate::db::expr::Maybe;
use crate::db::schema::notifications;
use crate::db::{Db, IntoWork as _, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

/// Names the one ordering of notification lists inside cursors.
pub const ORDERING: &str = "notifications:created_at:desc";

crate::text_enum! {
    /// How urgent a notification is.
    pub enum Severity {
        Info = "info",
        Warning = "warning",
        Error = "error",
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable, Identifiable)]
#[diesel(table_name = notifications, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Notification {
    pub id: String,
    pub company_id: String,
    pub workflow_id: Option<String>,
    pub kind: String,
    pub severity: Severity,
    pub title: String,
    pub message: String,
    pub read: bool,
    pub read_at: Option<NaiveDateTime>,
    pub read_by: Option<String>,
    pub created_at: NaiveDateTime,
}

impl TenantRow for Notification {
    type Table = notifications::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl Notification {
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

/// The row for a new, unread notification. Callers insert it inside the unit of work that
/// caused it (`tx.insert(&mut row)`), so the alert and its cause are committed together or
/// not at all.
pub fn new_row(tenant: &Tenant, new: NewNotification) -> Notification {
    Notification {
        id: new_id(),
        company_id: tenant.id().to_owned(),
        workflow_id: new.workflow_id,
        kind: new.kind,
        severity: new.severity,
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
    /// Only notifications about this workflow.
    pub workflow_id: Option<String>,
}

/// The condition of a [`NotificationFilter`].
type Matching = dsl::And<
    dsl::And<
        Maybe<dsl::Eq<notifications::read, bool>>,
        Maybe<dsl::Eq<notifications::severity, Severity>>,
    >,
    Maybe<dsl::Eq<notifications::workflow_id, String>>,
>;

impl NotificationFilter {
    fn condition(&self) -> Matching {
        Maybe::when(self.unread_only, || notifications::read.eq(false))
            .and(Maybe::from_option(
                self.severity
                    .map(|severity| notifications::severity.eq(severity)),
            ))
            .and(Maybe::from_option(
                self.workflow_id
                    .clone()
                    .map(|id| notifications::workflow_id.eq(id)),
            ))
    }
}

/// The tenant's notifications among `ids`; ids of other companies are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Notification>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.notifications()
            .filter(notifications::id.eq_any(ids))
            .select(Notification::columns()),
    )
    .await
}

/// One page of the tenant's notifications, newest first.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &NotificationFilter,
    page: &PageRequest,
) -> AppResult<Page<Notification>> {
    let keyset = page.keyset(true, time_key)?;
    let mut tx = db.read(tenant).await?;
    let rows = tx
        .load(
            tx.notifications()
                .filter(filter.condition())
                .select(Notification::columns())
                .keyset(notifications::created_at, notifications::id, keyset),
        )
        .await?;
    Ok(Page::from_scan(rows, page))
}

/// How many of the tenant's notifications match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &NotificationFilter) -> AppResult<i64> {
    let mut tx = db.read(tenant).await?;
    tx.one(tx.notifications().filter(filter.condition()).count())
        .await
}

/// Marks one notification read by `reader`. Marking it again changes nothing: the first
/// reader and time are kept.
pub async fn mark_read(
    db: &Db,
    tenant: &Tenant,
    id: &str,
    reader: &str,
) -> AppResult<Notification> {
    db.write(tenant, |tx| marked_read(tx, id, reader).into_work())
        .await
}

async fn marked_read(tx: &mut Tx<NoEvents>, id: &str, reader: &str) -> AppResult<Notification> {
    tx.execute(
        tx.notifications()
            .filter(notifications::id.eq(id))
            .filter(notifications::read.eq(false))
            .set(read_by(reader)),
    )
    .await
    .map_err(reader_gone)?;
    tx.optional(
        tx.notifications()
            .filter(notifications::id.eq(id))
            .select(Notification::columns()),
    )
    .await?
    .ok_or(AppError::NotFound("notification"))
}

/// Marks every unread notification of the company read by `reader`; answers how many
/// changed.
pub async fn mark_all_read(db: &Db, tenant: &Tenant, reader: &str) -> AppResult<usize> {
    db.write(tenant, |tx| marked_all_read(tx, reader).into_work())
        .await
}

async fn marked_all_read(tx: &mut Tx<NoEvents>, reader: &str) -> AppResult<usize> {
    tx.execute(
        tx.notifications()
            .filter(notifications::read.eq(false))
            .set(read_by(reader)),
    )
    .await
    .map_err(reader_gone)
}

/// What reading a notification writes.
type Reading<'a> = (
    dsl::Eq<notifications::read, bool>,
    dsl::Eq<notifications::read_at, NaiveDateTime>,
    dsl::Eq<notifications::read_by, &'a str>,
);

/// Read now, by `reader`.
fn read_by(reader: &str) -> Reading<'_> {
    (
        notifications::read.eq(true),
        notifications::read_at.eq(now()),
        notifications::read_by.eq(reader),
    )
}

/// `read_by` references the reader's account; a token outliving its removed account is
/// answered like `me` answers it, not as a server error.
fn reader_gone(error: AppError) -> AppError {
    if error.is_foreign_key_violation() {
        AppError::Unauthenticated("this account no longer exists")
    } else {
        error
    }
}

pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<()> {
    db.write(tenant, |tx| deleted(tx, id).into_work()).await
}

async fn deleted(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<()> {
    let deleted = tx
        .execute(tx.notifications().filter(notifications::id.eq(id)).delete())
        .await?;
    if deleted == 0 {
        Err(AppError::NotFound("notification"))
    } else {
        Ok(())
    }
}

/// Notification rows by id in *any* company, for events arriving from another instance: the
/// event names its company, and the caller drops rows of any other. Unscoped on purpose.
pub(crate) async fn for_events(db: &Db, ids: &[String]) -> AppResult<Vec<Notification>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.load(
        all.notifications()
            .filter(notifications::id.eq_any(ids))
            .select(Notification::columns()),
    )
    .await
}

crate::text_enum! {
    /// The kinds of notification the platform raises (`Notification.kind`), which members
    /// can mute in their settings. Kinds raised later are added here.
    #[allow(clippy::enum_variant_names)]
    pub enum Kind {
        /// A workflow failed too many runs in a row (`health::KIND_BROKEN`).
        WorkflowBroken = "workflow_broken",
        /// A broken workflow succeeded again (`health::KIND_RECOVERED`).
        WorkflowRecovered = "workflow_recovered",
        /// A healing was not confident enough (`health::KIND_NEEDS_REVIEW`).
        WorkflowNeedsReview = "workflow_needs_review",
    }
}

#[cfg(test)]
mod kind_tests {
    use super::Kind;
    use crate::domain::health;

    #[test]
    fn kinds_name_what_the_health_rules_raise() {
        for raised in [
            health::KIND_BROKEN,
            health::KIND_RECOVERED,
            health::KIND_NEEDS_REVIEW,
        ] {
            assert!(Kind::parse(raised).is_some(), "{raised}");
        }
    }
}
