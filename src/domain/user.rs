//! Users: the members of a company, each an admin or a regular member.

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;

use crate::db::Columns as _;

use super::page::{Page, PageRequest, Position, SortValue, time_key};
use serde_json::json;

use super::audit::{self, Action, Target};
use super::{Tenant, now};
use crate::db::expr::Maybe;
use crate::db::schema::users;
use crate::db::{Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

/// Names the one ordering of member lists inside cursors: the order they joined.
pub const ORDERING: &str = "users:created_at:asc";

/// The longest member search accepted (a name is at most [`MAX_NAME_CHARS`]).
pub const MAX_SEARCH_CHARS: usize = 200;

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
    /// The name case-folded by [`search_key`], what member search compares against.
    /// Whatever writes `name` writes this too.
    pub search_name: String,
}

/// The case-folded form of a member's name that search compares: Unicode lower-casing,
/// done here because SQLite's `lower()` folds ASCII only.
pub fn search_key(name: &str) -> String {
    name.to_lowercase()
}

impl User {
    pub fn position(&self) -> Position {
        Position {
            key: SortValue::time(self.created_at),
            id: self.id.clone(),
        }
    }
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

/// Which members a list shows.
#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    /// Name or email contains this text, ignoring case.
    pub search: Option<String>,
}

/// The condition of a [`MemberFilter`].
type Matching = Maybe<
    dsl::Or<
        dsl::Escape<dsl::Like<users::search_name, String>>,
        dsl::Escape<dsl::Like<users::email, String>>,
    >,
>;

impl MemberFilter {
    /// Checks the search text; blank is no search.
    pub fn validate(self) -> AppResult<Self> {
        let search = self
            .search
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if search
            .as_ref()
            .is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS)
        {
            return Err(AppError::bad_input(
                "search",
                format!("search must be at most {MAX_SEARCH_CHARS} characters long"),
            ));
        }
        Ok(Self { search })
    }

    fn condition(&self) -> Matching {
        Maybe::from_option(self.search.as_deref().map(|search| {
            // Emails are stored lower-cased, names folded: one folded pattern fits both.
            let pattern = format!("%{}%", super::workflow::like_literal(&search_key(search)));
            users::search_name
                .like(pattern.clone())
                .escape('\\')
                .or(users::email.like(pattern).escape('\\'))
        }))
    }
}

/// One page of the company's members matching `filter`, in the order they joined.
pub async fn page(
    db: &Db,
    tenant: &Tenant,
    filter: &MemberFilter,
    page: &PageRequest,
) -> AppResult<Page<User>> {
    let keyset = page.keyset(false, time_key)?;
    let mut tx = db.read(tenant).await?;
    let rows = tx
        .load(
            tx.users()
                .filter(filter.condition())
                .select(User::columns())
                .keyset(users::created_at, users::id, keyset),
        )
        .await?;
    Ok(Page::from_scan(rows, page))
}

/// How many of the company's members match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &MemberFilter) -> AppResult<i64> {
    let mut tx = db.read(tenant).await?;
    tx.one(tx.users().filter(filter.condition()).count()).await
}

/// Folds every member's name for search where the stored fold differs (after the
/// migration that added `users.search_name`), a batch at a time, across companies.
pub async fn refold_search_names(db: &Db) -> AppResult<usize> {
    const BATCH: i64 = 1_000;
    let mut after = String::new();
    let mut changed = 0;
    loop {
        let rows: Vec<(String, String, String)> = {
            let mut tx = db.read_unscoped().await?;
            let mut all = tx.unscoped();
            all.load(
                all.users()
                    .filter(users::id.gt(&after))
                    .order(users::id.asc())
                    .limit(BATCH)
                    .select((users::id, users::name, users::search_name)),
            )
            .await?
        };
        let Some((last, _, _)) = rows.last() else {
            return Ok(changed);
        };
        after = last.clone();
        let stale: Vec<(String, String)> = rows
            .into_iter()
            .filter(|(_, name, folded)| search_key(name) != *folded)
            .map(|(id, name, _)| (id, search_key(&name)))
            .collect();
        changed += stale.len();
        let stale = &stale;
        db.write_unscoped(|tx| refolded(tx, stale).into_work())
            .await?;
    }
}

/// Writes the folded names of one batch, across companies (see [`refold_search_names`]).
async fn refolded(tx: &mut Tx<NoEvents>, stale: &[(String, String)]) -> AppResult<()> {
    let mut all = tx.unscoped();
    for (id, folded) in stale {
        all.execute(
            all.users()
                .filter(users::id.eq(id))
                .set(users::search_name.eq(folded)),
        )
        .await?;
    }
    Ok(())
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
