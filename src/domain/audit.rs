//! The audit log: who did what to what, when, and from where. Append-only: nothing in the
//! API edits or deletes an entry (retention, when it comes, removes old ones in bulk).
//!
//! # Recording an action
//! A write path records its action inside its own unit of work, so the entry commits with
//! the action or not at all:
//!
//! ```text
//! audit::record(tx, Action::MemberRemoved, Target::user(&user.id), json!({ "email": .. })).await?;
//! ```
//!
//! The actor, client address and user agent come from the unit of work's
//! [`Origin`](crate::db::Origin), which the request's database handle carries: no domain
//! function takes them as parameters. Where the actor is only learned inside the action (a
//! sign-in), [`record_as`] names it. The summary is a small JSON object of what changed
//! (before/after values, names): never secrets, tokens, password hashes, or documents a
//! client wrote (company settings are summarised by the keys that changed). Strings in it
//! are cut to [`MAX_SUMMARY_STRING_CHARS`]; a summary larger than [`MAX_SUMMARY_BYTES`]
//! is replaced by `{"truncated": true}`.
//!
//! # Actions recorded
//! | action | by | target | summary |
//! |---|---|---|---|
//! | `sign_in.succeeded` | the member | user | `email` |
//! | `sign_in.failed` | anonymous | user | `email` (a wrong password for a known email; an unknown email has no company, so no entry) |
//! | `account.signed_up` | the new admin | company | `companyName`, `email` |
//! | `member.joined` | the new member | user | `email` |
//! | `member.role_changed` | an admin | user | `email`, `before`, `after` |
//! | `member.removed` | an admin | user | `email`, `role` |
//! | `company.invite_token_rotated` | an admin | company | (the tokens are secrets: none) |
//! | `company.renamed` | an admin | company | `before`, `after` |
//! | `company.settings_updated` | an admin | company | `changedKeys` |
//! | `api_key.created` | an admin | API key | `name`, `role`, `prefix`, `expiresAt` |
//! | `api_key.revoked` | an admin | API key | `name`, `prefix` |
//! | `workflow.deleted` | an admin | workflow | `name` |
//! | `user.password_changed` | the member | user | `sessionsEnded` |
//! | `user.profile_updated` | the member | user | `before`, `after` (name, email) |
//! | `session.logged_out` | the member | session | — |
//! | `session.logged_out_everywhere` | the member | user | `sessionsEnded` |
//! | `session.refresh_token_reused` | anonymous | session | `userId` (the session was ended) |
//! | `company.retention_policy_updated` | an admin | company | `before`, `after` (the limits) |
//! | `workflow.version_restored` | a member with EDIT | workflow | `number` |
//! | `workflow.visibility_changed` | an admin or the creator | workflow | `before`, `after` |
//! | `workflow.shared` | an admin or the creator | workflow | `userId`, `permission` |
//! | `workflow.unshared` | an admin or the creator | workflow | `userId` |
//! | `share_link.created` | an admin or the creator | workflow | `linkId`, `expiresAt` (never the token) |
//! | `share_link.revoked` | an admin or the creator | workflow | `linkId` |
//! | `template.published` | a member with EDIT (PUBLIC: an admin or the creator) | workflow | `templateId`, `name`, `visibility`, `version` |
//!
//! New actions (schedules, webhooks, ...) are one line each in [`Action`] and in the GraphQL enum `AuditAction`, and one call where the
//! action is written.
//!
//! Floods: every action here is either an admin's or a member's deliberate change, or a
//! sign-in, and sign-ins are rate limited per client address and per email before they
//! reach the database, so no client can turn a flood of requests into unbounded writes.

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;
use serde_json::{Map, Value, json};

use crate::db::Columns as _;

use super::page::{Page, PageRequest, Position, SortValue, time_key};
use super::{Tenant, new_id, now};
use crate::db::expr::Maybe;
use crate::db::schema::{api_keys, audit_log, users};
use crate::db::{Actor, Db, TenantRow, Tx};
use crate::error::AppResult;

/// Names the one ordering of audit lists inside cursors.
pub const ORDERING: &str = "audit_log:created_at:desc";

/// Longest string kept in a summary.
pub const MAX_SUMMARY_STRING_CHARS: usize = 200;
/// Largest summary kept, serialised.
pub const MAX_SUMMARY_BYTES: usize = 4 * 1024;

crate::text_enum! {
    /// What was done. Stored as text; add new actions at the end.
    pub enum Action {
        SignInSucceeded = "sign_in.succeeded",
        SignInFailed = "sign_in.failed",
        SignedUp = "account.signed_up",
        MemberJoined = "member.joined",
        MemberRoleChanged = "member.role_changed",
        MemberRemoved = "member.removed",
        InviteTokenRotated = "company.invite_token_rotated",
        CompanyRenamed = "company.renamed",
        CompanySettingsUpdated = "company.settings_updated",
        ApiKeyCreated = "api_key.created",
        ApiKeyRevoked = "api_key.revoked",
        WorkflowDeleted = "workflow.deleted",
        PasswordChanged = "user.password_changed",
        ProfileUpdated = "user.profile_updated",
        LoggedOut = "session.logged_out",
        LoggedOutEverywhere = "session.logged_out_everywhere",
        RefreshTokenReused = "session.refresh_token_reused",
        RetentionPolicyUpdated = "company.retention_policy_updated",
        WorkflowVersionRestored = "workflow.version_restored",
        WorkflowVisibilityChanged = "workflow.visibility_changed",
        WorkflowShared = "workflow.shared",
        WorkflowUnshared = "workflow.unshared",
        ShareLinkCreated = "share_link.created",
        ShareLinkRevoked = "share_link.revoked",
        TemplatePublished = "template.published",
    }
}

crate::text_enum! {
    /// What kind of principal acted.
    pub enum ActorType {
        User = "user",
        ApiKey = "api_key",
        Anonymous = "anonymous",
        System = "system",
    }
}

crate::text_enum! {
    /// What kind of thing an action was done to.
    pub enum TargetType {
        Company = "company",
        User = "user",
        ApiKey = "api_key",
        Workflow = "workflow",
        Session = "session",
    }
}

/// What an action was done to.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub kind: TargetType,
    pub id: &'a str,
}

impl<'a> Target<'a> {
    pub fn company(id: &'a str) -> Self {
        Self {
            kind: TargetType::Company,
            id,
        }
    }

    pub fn user(id: &'a str) -> Self {
        Self {
            kind: TargetType::User,
            id,
        }
    }

    pub fn api_key(id: &'a str) -> Self {
        Self {
            kind: TargetType::ApiKey,
            id,
        }
    }

    pub fn workflow(id: &'a str) -> Self {
        Self {
            kind: TargetType::Workflow,
            id,
        }
    }

    pub fn session(id: &'a str) -> Self {
        Self {
            kind: TargetType::Session,
            id,
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct AuditEntry {
    pub id: String,
    pub company_id: String,
    pub created_at: NaiveDateTime,
    pub actor_type: ActorType,
    pub actor_id: Option<String>,
    /// The actor as they were called when they acted (email, or key name and prefix).
    pub actor_label: Option<String>,
    pub action: Action,
    pub target_type: Option<TargetType>,
    pub target_id: Option<String>,
    pub client_address: Option<String>,
    pub user_agent: Option<String>,
    /// A JSON object, stored as text.
    pub summary: String,
}

impl TenantRow for AuditEntry {
    type Table = audit_log::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl AuditEntry {
    pub fn position(&self) -> Position {
        Position {
            key: SortValue::time(self.created_at),
            id: self.id.clone(),
        }
    }

    /// The summary document.
    pub fn summary(&self) -> AppResult<Value> {
        super::json::parse("audit_log.summary", &self.summary)
    }
}

/// Records `action` on `target`, by the unit of work's actor, from its client.
pub async fn record<E: Send>(
    tx: &mut Tx<E>,
    action: Action,
    target: Target<'_>,
    summary: Value,
) -> AppResult<()> {
    let actor = tx.origin().actor.clone();
    record_as(tx, &actor, action, target, summary).await
}

/// [`record`] by `actor`, for actions whose actor is only known once they happen (a
/// sign-in is made by nobody until it succeeds).
pub async fn record_as<E: Send>(
    tx: &mut Tx<E>,
    actor: &Actor,
    action: Action,
    target: Target<'_>,
    summary: Value,
) -> AppResult<()> {
    let (actor_type, actor_id) = match actor {
        Actor::System => (ActorType::System, None),
        Actor::Anonymous => (ActorType::Anonymous, None),
        Actor::User(id) => (ActorType::User, Some(id.clone())),
        Actor::ApiKey(id) => (ActorType::ApiKey, Some(id.clone())),
    };
    let actor_label = label(tx, actor).await?;
    let origin = tx.origin();
    let mut entry = AuditEntry {
        id: new_id(),
        company_id: tx.tenant().id().to_owned(),
        created_at: now(),
        actor_type,
        actor_id,
        actor_label,
        action,
        target_type: Some(target.kind),
        target_id: Some(target.id.to_owned()),
        client_address: origin.client_address.clone(),
        user_agent: origin.user_agent.clone(),
        summary: bounded_summary(summary),
    };
    tx.insert(&mut entry).await
}

/// How the actor is called now: a member's email, a key's name and prefix.
async fn label<E: Send>(tx: &mut Tx<E>, actor: &Actor) -> AppResult<Option<String>> {
    Ok(match actor {
        Actor::System | Actor::Anonymous => None,
        Actor::User(id) => {
            tx.optional(tx.users().filter(users::id.eq(id)).select(users::email))
                .await?
        }
        Actor::ApiKey(id) => tx
            .optional(
                tx.api_keys()
                    .filter(api_keys::id.eq(id))
                    .select((api_keys::name, api_keys::prefix)),
            )
            .await?
            .map(|(name, prefix): (String, String)| format!("{name} ({prefix}…)")),
    })
}

/// The summary as stored: an object, strings cut short, bounded in size.
fn bounded_summary(summary: Value) -> String {
    fn cut(value: Value) -> Value {
        match value {
            Value::String(s) if s.chars().count() > MAX_SUMMARY_STRING_CHARS => {
                Value::String(s.chars().take(MAX_SUMMARY_STRING_CHARS).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(cut).collect()),
            Value::Object(fields) => {
                Value::Object(fields.into_iter().map(|(k, v)| (k, cut(v))).collect())
            }
            other => other,
        }
    }
    let summary = match summary {
        Value::Object(fields) => cut(Value::Object(fields)),
        Value::Null => Value::Object(Map::new()),
        other => json!({ "value": cut(other) }),
    };
    let text = summary.to_string();
    if text.len() > MAX_SUMMARY_BYTES {
        json!({ "truncated": true }).to_string()
    } else {
        text
    }
}

/// Which entries a list shows; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: Option<String>,
    pub action: Option<Action>,
    pub target_id: Option<String>,
    /// At or after.
    pub from: Option<NaiveDateTime>,
    /// Before.
    pub to: Option<NaiveDateTime>,
}

/// The condition of an [`AuditFilter`].
type Matching = dsl::And<
    dsl::And<
        dsl::And<
            dsl::And<
                Maybe<dsl::Eq<audit_log::actor_id, String>>,
                Maybe<dsl::Eq<audit_log::action, Action>>,
            >,
            Maybe<dsl::Eq<audit_log::target_id, String>>,
        >,
        Maybe<dsl::GtEq<audit_log::created_at, NaiveDateTime>>,
    >,
    Maybe<dsl::Lt<audit_log::created_at, NaiveDateTime>>,
>;

impl AuditFilter {
    fn condition(&self) -> Matching {
        Maybe::from_option(self.actor_id.clone().map(|id| audit_log::actor_id.eq(id)))
            .and(Maybe::from_option(
                self.action.map(|action| audit_log::action.eq(action)),
            ))
            .and(Maybe::from_option(
                self.target_id.clone().map(|id| audit_log::target_id.eq(id)),
            ))
            .and(Maybe::from_option(
                self.from.map(|at| audit_log::created_at.ge(at)),
            ))
            .and(Maybe::from_option(
                self.to.map(|at| audit_log::created_at.lt(at)),
            ))
    }
}

/// One page of the tenant's audit log, newest first.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &AuditFilter,
    page: &PageRequest,
) -> AppResult<Page<AuditEntry>> {
    let keyset = page.keyset(true, time_key)?;
    let mut tx = db.read(tenant).await?;
    let rows = tx
        .load(
            tx.audit_log()
                .filter(filter.condition())
                .select(AuditEntry::columns())
                .keyset(audit_log::created_at, audit_log::id, keyset),
        )
        .await?;
    Ok(Page::from_scan(rows, page))
}

/// The tenant's entries among `ids` (others are absent).
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<AuditEntry>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.audit_log()
            .filter(audit_log::id.eq_any(ids))
            .select(AuditEntry::columns()),
    )
    .await
}

/// How many of the tenant's entries match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &AuditFilter) -> AppResult<i64> {
    let mut tx = db.read(tenant).await?;
    tx.one(tx.audit_log().filter(filter.condition()).count())
        .await
}

/// The summary of a settings document's change: which top-level keys were added, removed
/// or changed (their values are the company's own data, not the log's).
pub fn changed_keys(before: &Value, after: &Value) -> Value {
    let empty = Map::new();
    let before = before.as_object().unwrap_or(&empty);
    let after = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .collect();
    keys.sort();
    keys.dedup();
    json!({ "changedKeys": keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_objects_with_short_strings_and_a_size_bound() {
        let long = "x".repeat(1_000);
        let stored: Value = serde_json::from_str(&bounded_summary(json!({ "name": long, "n": 1 })))
            .unwrap_or_default();
        assert_eq!(
            stored["name"].as_str().map(str::len),
            Some(MAX_SUMMARY_STRING_CHARS)
        );
        assert_eq!(stored["n"], 1);
        assert_eq!(bounded_summary(Value::Null), "{}");
        let huge = json!({ "keys": vec!["k".repeat(150); 100] });
        assert_eq!(bounded_summary(huge), r#"{"truncated":true}"#);
    }

    #[test]
    fn settings_changes_name_keys_not_values() {
        let before = json!({ "a": 1, "b": "secret", "c": true });
        let after = json!({ "a": 1, "b": "other secret", "d": null });
        assert_eq!(
            changed_keys(&before, &after),
            json!({ "changedKeys": ["b", "c", "d"] })
        );
    }
}
