//! The business of Stepwise, one file per entity: rows, input rules, and the queries that
//! read and write them. Nothing here knows about GraphQL or HTTP.
//!
//! Every function touching tenant-owned data takes a [`Tenant`] first. A `Tenant` can only
//! come from a verified token or from the company a sign-up just created, so a query that
//! forgets the tenant does not compile, and no client input can choose one.

pub mod account;
pub mod company;
pub mod health;
pub mod health_log;
pub mod json;
pub mod notification;
pub mod page;
pub mod run;
pub mod screenshot;
pub mod step;
pub mod user;
pub mod workflow;

use chrono::{NaiveDateTime, SubsecRound as _, Utc};

use crate::error::{AppError, AppResult};

/// The company whose data a request may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(String);

impl Tenant {
    /// Only for a `company_id` claim of a token whose signature was verified.
    pub(crate) fn from_verified_token(company_id: String) -> Self {
        Self(company_id)
    }

    /// The company of a user row read from the database (sign-up, join, login).
    pub(crate) fn of_member(user: &user::User) -> Self {
        Self(user.company_id.clone())
    }

    pub fn id(&self) -> &str {
        &self.0
    }
}

/// A new, time-ordered id (UUIDv7): indexes stay append-mostly and ids sort by creation.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The current time in UTC at the precision both backends store (microseconds), so a value
/// read back equals the value written.
pub fn now() -> NaiveDateTime {
    Utc::now().naive_utc().trunc_subsecs(6)
}

/// Trims `value` and checks it is a non-empty, bounded, single-line name.
pub fn required_name(
    field: &str,
    value: &str,
    max_chars: usize,
) -> crate::error::AppResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(crate::error::AppError::bad_input(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if value.chars().count() > max_chars {
        return Err(crate::error::AppError::bad_input(
            field,
            format!("{field} must be at most {max_chars} characters long"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(crate::error::AppError::bad_input(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(value.to_owned())
}

/// An enum column read back from the database (`status`, `role`, ...). A value the code does
/// not know means the data is corrupt, not that the client erred: INTERNAL, with the row
/// named in the log.
pub(crate) fn stored<T>(
    entity: &str,
    id: &str,
    column: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> AppResult<T> {
    parse(raw).ok_or_else(|| {
        AppError::internal(anyhow::anyhow!(
            "{entity} {id} has unknown {column} {raw:?}"
        ))
    })
}
