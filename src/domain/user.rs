//! Users: the members of a company, each an admin or a regular member.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::Columns as _;

use serde_json::json;

use super::audit::{self, Action, Target};
use super::{Tenant, now};
use crate::db::schema::users;
use crate::db::{Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

pub const MAX_NAME_CHARS: usize = 200;
/// RFC 5321's limit on a forward path.
const MAX_EMAIL_CHARS: usize = 254;

crate::text_enum! {
    /// A member's role inside their company.
    pub enum Role {
        /// Manages the company: members, invite token, settings, destructive actions.
        Admin = "admin",
        /// Reads everything in the company and records and edits workflows.
        Regular = "regular",
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct User {
    pub id: String,
    pub company_id: String,
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub role: Role,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl TenantRow for User {
    type Table = users::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// Emails are compared case-insensitively: stored trimmed and lower-cased.
pub fn normalize_email(raw: &str) -> AppResult<String> {
    let email = raw.trim().to_lowercase();
    let invalid = || {
        AppError::bad_input(
            "email",
            "email must be a valid address like name@example.com",
        )
    };
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let well_formed = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if well_formed {
        Ok(email)
    } else {
        Err(invalid())
    }
}

/// A member of the tenant's company. Another company's user is simply not found.
pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<User> {
    let mut tx = db.read(tenant).await?;
    tx.optional(tx.users().filter(users::id.eq(id)).select(User::columns()))
        .await?
        .ok_or(AppError::NotFound("user"))
}

/// Several members at once (batch loading); ids of other companies are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<User>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.users()
            .filter(users::id.eq_any(ids))
            .select(User::columns()),
    )
    .await
}

/// The company's members, longest-standing first.
pub async fn list(db: &Db, tenant: &Tenant) -> AppResult<Vec<User>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.users()
            .order((users::created_at.asc(), users::id.asc()))
            .select(User::columns()),
    )
    .await
}

/// The role `user_id` has in the tenant's company, or `None` when they are not (or no
/// longer) one of its members: whether a verified token still speaks for a member.
pub async fn current_role(db: &Db, tenant: &Tenant, user_id: &str) -> AppResult<Option<Role>> {
    let mut tx = db.read(tenant).await?;
    tx.optional(tx.users().filter(users::id.eq(user_id)).select(users::role))
        .await
}

/// Inside a write unit of work: the member `user_id` (or NOT_FOUND) and how many admins the
/// company has. Two admins demoting or removing each other at once must not both succeed,
/// so the company's admin rows are locked first, in id order, until the unit of work ends
/// (PostgreSQL; SQLite already runs one writer at a time).
async fn member_and_admin_count(tx: &mut Tx<NoEvents>, user_id: &str) -> AppResult<(User, i64)> {
    tx.lock_rows(Lock::Update, users::role, &[Role::Admin.as_str()])
        .await?;
    let user: User = tx
        .optional(
            tx.users()
                .filter(users::id.eq(user_id))
                .select(User::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("user"))?;
    let admins: i64 = tx
        .one(tx.users().filter(users::role.eq(Role::Admin)).count())
        .await?;
    Ok((user, admins))
}

/// Gives a member another role. A company always keeps at least one admin, so demoting
/// the last one is refused.
pub async fn change_role(db: &Db, tenant: &Tenant, user_id: &str, role: Role) -> AppResult<User> {
    db.write(tenant, |tx| role_changed(tx, user_id, role).into_work())
        .await
}

async fn role_changed(tx: &mut Tx<NoEvents>, user_id: &str, role: Role) -> AppResult<User> {
    let (user, admins) = member_and_admin_count(tx, user_id).await?;
    if user.role == role {
        return Ok(user);
    }
    if user.role == Role::Admin && admins <= 1 {
        return Err(AppError::bad_input(
            "role",
            "the company's last admin cannot be demoted; make another member admin first",
        ));
    }
    let changed: User = tx
        .one(
            tx.users()
                .filter(users::id.eq(&user.id))
                .set((users::role.eq(role), users::updated_at.eq(now())))
                .returning(User::columns()),
        )
        .await?;
    audit::record(
        tx,
        Action::MemberRoleChanged,
        Target::user(&user.id),
        json!({ "email": user.email, "before": user.role.as_str(), "after": role.as_str() }),
    )
    .await?;
    Ok(changed)
}

/// Removes a member from the company. What they recorded stays, with the author cleared
/// (the foreign keys set it to NULL). The last admin cannot be removed.
pub async fn remove(db: &Db, tenant: &Tenant, user_id: &str) -> AppResult<()> {
    db.write(tenant, |tx| removed(tx, user_id).into_work())
        .await
}

async fn removed(tx: &mut Tx<NoEvents>, user_id: &str) -> AppResult<()> {
    let (user, admins) = member_and_admin_count(tx, user_id).await?;
    if user.role == Role::Admin && admins <= 1 {
        return Err(AppError::bad_input(
            "userId",
            "the company's last admin cannot be removed; make another member admin first",
        ));
    }
    // Recorded first: the entry's actor may be the member removing themselves.
    audit::record(
        tx,
        Action::MemberRemoved,
        Target::user(&user.id),
        json!({ "email": user.email, "role": user.role.as_str() }),
    )
    .await?;
    tx.execute(tx.users().filter(users::id.eq(&user.id)).delete())
        .await?;
    Ok(())
}

/// Looks up an account by normalised email, before anyone is signed in (login). Unscoped
/// on purpose: the email is what tells which company the person belongs to.
pub(crate) async fn find_by_email(db: &Db, email: &str) -> AppResult<Option<User>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.optional(
        all.users()
            .filter(users::email.eq(email))
            .select(User::columns())
            .limit(1),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails_are_normalised_and_validated() {
        assert_eq!(
            normalize_email("  Alice@Example.COM ").ok().as_deref(),
            Some("alice@example.com")
        );
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a b@example.com",
            "a@b@c.com",
            "a@.com",
            "a@x..com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
