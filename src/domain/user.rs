//! Users: the members of a company, each an admin or a regular member.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::{Tenant, now};
use crate::auth::Role;
use crate::db::schema::users;
use crate::db::{Backend, Db};
use crate::error::{AppError, AppResult};

pub const MAX_NAME_CHARS: usize = 200;
/// RFC 5321's limit on a forward path.
const MAX_EMAIL_CHARS: usize = 254;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct User {
    pub id: String,
    pub company_id: String,
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub role: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl User {
    pub fn role(&self) -> AppResult<Role> {
        super::stored("user", &self.id, "role", &self.role, Role::parse)
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
    let found = crate::with_conn!(db, |conn| {
        users::table
            .filter(users::company_id.eq(tenant.id()))
            .filter(users::id.eq(id))
            .select(User::as_select())
            .first(conn)
            .await
            .optional()?
    });
    found.ok_or(AppError::NotFound("user"))
}

/// Several members at once (batch loading); ids of other companies are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<User>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(crate::with_conn!(db, |conn| {
        users::table
            .filter(users::company_id.eq(tenant.id()))
            .filter(users::id.eq_any(ids))
            .select(User::as_select())
            .load(conn)
            .await?
    }))
}

/// The company's members, longest-standing first.
pub async fn list(db: &Db, tenant: &Tenant) -> AppResult<Vec<User>> {
    Ok(crate::with_conn!(db, |conn| {
        users::table
            .filter(users::company_id.eq(tenant.id()))
            .order((users::created_at.asc(), users::id.asc()))
            .select(User::as_select())
            .load(conn)
            .await?
    }))
}

/// Inside a write transaction: the member `$user_id` of `$tenant` (or NOT_FOUND) and how
/// many admins the company has. Two admins demoting or removing each other at once must not
/// both succeed, so on PostgreSQL the admin rows stay locked until the transaction ends
/// (SQLite already runs one writer at a time). A macro because the body is compiled once
/// per backend connection type.
macro_rules! member_and_admin_count {
    ($conn:ident, $backend:expr, $tenant:expr, $user_id:expr) => {{
        if $backend == Backend::Postgres {
            diesel::sql_query(LOCK_ADMINS)
                .bind::<diesel::sql_types::Text, _>($tenant.id())
                .execute($conn)
                .await?;
        }
        let user: User = users::table
            .filter(users::company_id.eq($tenant.id()))
            .filter(users::id.eq($user_id))
            .select(User::as_select())
            .first($conn)
            .await
            .optional()?
            .ok_or(AppError::NotFound("user"))?;
        let admins: i64 = users::table
            .filter(users::company_id.eq($tenant.id()))
            .filter(users::role.eq(Role::Admin.as_str()))
            .count()
            .get_result($conn)
            .await?;
        (user, admins)
    }};
}

/// Locks the company's admin rows (PostgreSQL only: diesel's `for_update` does not compile
/// for SQLite). Locking in id order keeps two such transactions from deadlocking.
const LOCK_ADMINS: &str =
    "SELECT id FROM users WHERE company_id = $1 AND role = 'admin' ORDER BY id FOR UPDATE";

/// Gives a member another role. A company always keeps at least one admin, so demoting
/// the last one is refused.
pub async fn change_role(db: &Db, tenant: &Tenant, user_id: &str, role: Role) -> AppResult<User> {
    let backend = db.backend();
    crate::transaction!(db, |conn| {
        let (user, admins) = member_and_admin_count!(conn, backend, tenant, user_id);
        let current = user.role()?;
        if current == role {
            return Ok(user);
        }
        if current == Role::Admin && admins <= 1 {
            return Err(AppError::bad_input(
                "role",
                "the company's last admin cannot be demoted; make another member admin first",
            ));
        }
        Ok(diesel::update(users::table.find(&user.id))
            .set((users::role.eq(role.as_str()), users::updated_at.eq(now())))
            .returning(User::as_returning())
            .get_result(conn)
            .await?)
    })
}

/// Removes a member from the company. What they recorded stays, with the author cleared
/// (the foreign keys set it to NULL). The last admin cannot be removed.
pub async fn remove(db: &Db, tenant: &Tenant, user_id: &str) -> AppResult<()> {
    let backend = db.backend();
    crate::transaction!(db, |conn| {
        let (user, admins) = member_and_admin_count!(conn, backend, tenant, user_id);
        if user.role()? == Role::Admin && admins <= 1 {
            return Err(AppError::bad_input(
                "userId",
                "the company's last admin cannot be removed; make another member admin first",
            ));
        }
        diesel::delete(users::table.find(&user.id))
            .execute(conn)
            .await?;
        Ok(())
    })
}

/// Looks up an account by normalised email, before anyone is signed in (login).
pub(crate) async fn find_by_email(db: &Db, email: &str) -> AppResult<Option<User>> {
    Ok(crate::with_conn!(db, |conn| {
        users::table
            .filter(users::email.eq(email))
            .select(User::as_select())
            .first(conn)
            .await
            .optional()?
    }))
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
