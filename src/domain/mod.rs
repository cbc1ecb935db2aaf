//! The business of Stepwise, one file per entity: rows, input rules, and the queries that
//! read and write them. Nothing here knows about GraphQL or HTTP.
//!
//! Every function touching tenant-owned data takes a [`Tenant`] first. A `Tenant` can only
//! come from a verified token or from the company a sign-up just created, and no client
//! input can choose one. Queries run in a unit of work for that tenant
//! ([`Db::read`](crate::db::Db::read), [`Db::write`](crate::db::Db::write)), where a tenant
//! table is reachable only already filtered by its company: a query that forgets the
//! tenant does not compile. Writes are plain `async fn`s over the unit of work
//! (`fn body(tx: &mut Tx<EventKind>, ..)`), composed inside one transaction; their events
//! ([`event`]) leave after commit. The rules are in `src/db/uow.rs`.
//!
//! # Writing under concurrency
//! SQLite runs one write transaction at a time; PostgreSQL runs them side by side under
//! READ COMMITTED. So that no write path can deadlock another or decide from a read that
//! changes under it, every write transaction locks rows in one order:
//!
//! **company → retention policy → run → workflow → project → step → screenshot → template**
//!
//! (a workflow's versions, step snapshots, shares and public links are written under
//! their workflow's lock and need none of their own.)
//!
//! and reads what a decision depends on only after the lock that protects it:
//! - a report locks its run first (and reads it in the same statement), a finish, pause,
//!   resume, cancel or time-out locks the run and then, to count it, its workflow;
//! - every step edit first marks its workflow as updated (which locks it), then reads
//!   step numbers; an upload takes the company lock, then the workflow, then the step;
//! - deleting a workflow locks the company, the workflow's runs, the workflow, then its
//!   screenshots, and only then reads which other steps still show them; anything that
//!   adds a reference to a screenshot share-locks it first (duplicating share-locks the
//!   source workflow), so the deletion either waits for that reference and keeps the
//!   screenshot, or has removed it and the reference is refused as NOT_FOUND;
//! - the run queue (issue 13): a claim locks the run it takes (`SKIP LOCKED`, so
//!   claimers never wait for each other), a heartbeat or lease expiry locks its run, and
//!   an expired run that fails then locks its workflow to count it. Inserting a new run
//!   (enqueue, webhook, schedule, retry) locks no existing run; its foreign key takes a
//!   key-share lock on the workflow. Schedules and webhooks come after their workflow:
//!   **workflow → schedule** (a firing share-locks the workflow, then claims the schedule
//!   row), **workflow → webhook** (a delivery inserts its run, then stamps the hook);
//!   deleting a workflow locks it before its schedules and hooks go with it.
//! - a retention batch takes its company's policy row (renewing its claim), then the runs
//!   it removes in id order, then their health logs (see [`retention`]).
//! - putting a workflow in a project (moving, creating, instantiating) share-locks the
//!   project after the workflow; deleting a project locks its workflows, then itself;
//! - a change of a workflow's definition writes its version before the commit, under the
//!   workflow lock the edit took first; the version number is read under it;
//! - instantiating a template takes the company lock (when it brings screenshots), writes
//!   the workflow, then bumps the template's usage count last.
//!
//! Accounts have their own order, after the company: **company → user → session → its
//! refresh tokens**, and **company → API key**: creating a key takes the company lock (the
//! per-company cap), revoking one locks the key; a refresh locks its session before it
//! reads or rotates the session's tokens, and logouts and password changes delete sessions
//! (taking the same locks) after the user row they change.
//!
//! Time is taken after the locks it orders by (a run's `updated_at` and its reports'
//! `created_at` follow commit order), and state subscribers compare carries a version that
//! only grows (`runs.version`). Should PostgreSQL still abort a transaction (deadlock,
//! serialization failure), the unit of work runs it again a few times and then answers
//! the retryable UNAVAILABLE — never INTERNAL.

pub mod account;
pub mod api_key;
pub mod audit;
pub mod company;
pub mod event;
pub mod health;
pub mod health_log;
pub mod json;
pub mod node;
pub mod notification;
pub mod page;
pub mod project;
pub mod retention;
pub mod run;
pub mod screenshot;
pub mod session;
pub mod share_link;
pub mod statistics;
pub mod step;
pub mod template;
pub mod upkeep;
pub mod user;
pub mod user_settings;
pub mod version;
pub mod visibility;
pub mod workflow;
// The run queue's companions (issue 13).
pub mod schedule;
pub mod step_text;
pub mod webhook;

use std::collections::HashSet;
use std::hash::Hash;

use chrono::{NaiveDateTime, SubsecRound as _, Utc};

use crate::error::{AppError, AppResult};

/// Most values a list filter (e.g. "any of these statuses") may carry as sent. There are
/// fewer distinct values than this; the bound is checked before anything proportional to
/// the list runs, so a megabyte of repeated values costs nothing.
pub const MAX_FILTER_VALUES: usize = 32;

pub use crate::db::Tenant;

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

/// A filter's list of values as a client sent it (`None`: no filter): its length is checked
/// first, then it is converted and de-duplicated with a set (first occurrence kept), so it
/// reaches SQL as at most one bind parameter per distinct value.
pub fn filter_values<S, T>(field: &str, values: Option<Vec<S>>) -> AppResult<Vec<T>>
where
    S: Into<T>,
    T: Copy + Eq + Hash,
{
    let values = values.unwrap_or_default();
    if values.len() > MAX_FILTER_VALUES {
        return Err(AppError::bad_input(
            field,
            format!("{field} may list at most {MAX_FILTER_VALUES} values"),
        ));
    }
    let mut seen = HashSet::with_capacity(values.len());
    Ok(values
        .into_iter()
        .map(Into::into)
        .filter(|value| seen.insert(*value))
        .collect())
}

/// Refuses text containing NUL. PostgreSQL cannot store it in a text column (it answered
/// INTERNAL) while SQLite kept it, so both backends refuse it up front, naming the field.
pub fn refuse_nul(field: &str, value: &str) -> AppResult<()> {
    if value.contains('\0') {
        return Err(AppError::bad_input(
            field,
            format!("{field} must not contain NUL characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_bounded_then_deduplicated() {
        let values: AppResult<Vec<u8>> = filter_values("status", Some(vec![3u8, 1, 3, 3, 1]));
        assert_eq!(values.ok(), Some(vec![3, 1]));
        let none: AppResult<Vec<u8>> = filter_values("status", None::<Vec<u8>>);
        assert_eq!(none.ok(), Some(Vec::new()));
        let huge: AppResult<Vec<u8>> = filter_values("status", Some(vec![1u8; 100_000]));
        assert!(matches!(huge, Err(AppError::BadUserInput { .. })));
    }
}
