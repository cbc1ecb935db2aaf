//! Users: the members of a company, each an admin or a regular member.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Tenant;
use crate::auth::Role;
use crate::db::Db;
use crate::db::schema::users;
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
        Role::parse(&self.role).ok_or_else(|| {
            AppError::internal(anyhow::anyhow!(
                "user {} has unknown role {:?}",
                self.id,
                self.role
            ))
        })
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
