//! Public share links: an unguessable token that shows one workflow read-only to anyone
//! holding it, without signing in, until it expires or is revoked.
//!
//! A token is 256 random bits (43 base64url characters) and only its SHA-256 is stored,
//! so the database alone does not give links away. An expired, revoked or unknown token
//! is answered the same way (NOT_FOUND, same message), and every use is counted
//! (`access_count`, `last_accessed_at`). Creating and revoking links is for admins and the
//! workflow's creator, like its visibility; a link keeps working whatever the workflow's
//! visibility becomes, since whoever made it chose to show the workflow.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use sha2::{Digest as _, Sha256};

use super::screenshot::Screenshot;
use super::step::StepHead;
use super::visibility::{self, Need};
use super::workflow::Workflow;
use super::{Tenant, new_id, now};
use crate::crypto::hex;
use crate::db::schema::{steps, workflow_share_links, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

/// How long a link lives when its creator does not say.
pub const DEFAULT_LIFETIME: TimeDelta = TimeDelta::days(30);
/// The longest a link may live.
pub const MAX_LIFETIME: TimeDelta = TimeDelta::days(365);
/// Links of one workflow that may be active (neither revoked nor expired) at once.
pub const MAX_ACTIVE_LINKS_PER_WORKFLOW: i64 = 100;
/// A token's length: 32 bytes in base64url without padding.
const TOKEN_CHARS: usize = 43;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = workflow_share_links, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_default_value = false)]
pub struct ShareLink {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    /// Hex SHA-256 of the token; the token itself is shown once, when created.
    pub token_hash: String,
    pub created_by: Option<String>,
    pub created_at: NaiveDateTime,
    pub expires_at: NaiveDateTime,
    pub revoked_at: Option<NaiveDateTime>,
    pub access_count: i64,
    pub last_accessed_at: Option<NaiveDateTime>,
}

impl TenantRow for ShareLink {
    type Table = workflow_share_links::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl ShareLink {
    /// Whether the link opens the workflow at `at`.
    pub fn is_active(&self, at: NaiveDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at > at
    }
}

/// A new, unguessable token (256 random bits).
fn new_token() -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore as _};
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// The one answer for a token that opens nothing, whatever the reason.
fn unknown() -> AppError {
    AppError::NotFound("share link")
}

/// Creates a link to a workflow, valid until `expires_at` (default: 30 days; at most a
/// year ahead). Answers the link and its token, which is not kept and cannot be had again.
pub async fn create(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    expires_at: Option<NaiveDateTime>,
) -> AppResult<(ShareLink, String)> {
    let at = now();
    let expires_at = expires_at.unwrap_or(at + DEFAULT_LIFETIME);
    if expires_at <= at {
        return Err(AppError::bad_input(
            "expiresAt",
            "expiresAt must be in the future",
        ));
    }
    if expires_at > at + MAX_LIFETIME {
        return Err(AppError::bad_input(
            "expiresAt",
            "expiresAt must be at most 365 days ahead",
        ));
    }
    let token = new_token();
    let link = ShareLink {
        id: new_id(),
        company_id: tenant.id().to_owned(),
        workflow_id: workflow_id.to_owned(),
        token_hash: token_hash(&token),
        created_by: tenant.user_id().map(str::to_owned),
        created_at: at,
        expires_at,
        revoked_at: None,
        access_count: 0,
        last_accessed_at: None,
    };
    let link_ref = &link;
    db.write(tenant, |tx| created(tx, link_ref).into_work())
        .await?;
    Ok((link, token))
}

async fn created(tx: &mut Tx<NoEvents>, link: &ShareLink) -> AppResult<()> {
    managed(tx, &link.workflow_id).await?;
    let active: i64 = tx
        .one(
            tx.workflow_share_links()
                .filter(workflow_share_links::workflow_id.eq(&link.workflow_id))
                .filter(workflow_share_links::revoked_at.is_null())
                .filter(workflow_share_links::expires_at.gt(link.created_at))
                .count(),
        )
        .await?;
    if active >= MAX_ACTIVE_LINKS_PER_WORKFLOW {
        return Err(AppError::bad_input(
            "workflowId",
            format!(
                "a workflow has at most {MAX_ACTIVE_LINKS_PER_WORKFLOW} active share links; revoke one first"
            ),
        ));
    }
    let mut row = link.clone();
    tx.insert(&mut row).await.map_err(|error| {
        if error.is_foreign_key_violation() {
            AppError::Unauthenticated("this account no longer exists")
        } else {
            error
        }
    })?;
    super::audit::record(
        tx,
        super::audit::Action::ShareLinkCreated,
        super::audit::Target::workflow(&link.workflow_id),
        serde_json::json!({ "linkId": link.id, "expiresAt": link.expires_at.and_utc().to_rfc3339() }),
    )
    .await
}

/// The workflow locked, after checking the viewer may manage its links.
async fn managed(tx: &mut Tx<NoEvents>, workflow_id: &str) -> AppResult<()> {
    tx.lock(Lock::NoKeyUpdate, workflows::id, workflow_id)
        .await?;
    let workflow: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or(AppError::NotFound("workflow"))?;
    visibility::check(tx, &workflow, Need::Manage).await
}

/// Revokes a link: from now on its token is answered like an unknown one. Revoking again
/// changes nothing.
pub async fn revoke(db: &Db, tenant: &Tenant, id: &str) -> AppResult<ShareLink> {
    db.write(tenant, |tx| revoked(tx, id).into_work()).await
}

async fn revoked(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<ShareLink> {
    let workflow_id: String = tx
        .optional(
            tx.workflow_share_links()
                .filter(workflow_share_links::id.eq(id))
                .select(workflow_share_links::workflow_id),
        )
        .await?
        .ok_or(AppError::NotFound("share link"))?;
    managed(tx, &workflow_id).await?;
    let revoked = tx
        .execute(
            tx.workflow_share_links()
                .filter(workflow_share_links::id.eq(id))
                .filter(workflow_share_links::revoked_at.is_null())
                .set(workflow_share_links::revoked_at.eq(now())),
        )
        .await?;
    if revoked > 0 {
        super::audit::record(
            tx,
            super::audit::Action::ShareLinkRevoked,
            super::audit::Target::workflow(&workflow_id),
            serde_json::json!({ "linkId": id }),
        )
        .await?;
    }
    tx.one(
        tx.workflow_share_links()
            .filter(workflow_share_links::id.eq(id))
            .select(ShareLink::columns()),
    )
    .await
}

/// The links of the given workflows the tenant sees, newest first.
pub async fn of_workflows(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
) -> AppResult<Vec<ShareLink>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.workflow_share_links()
            .filter(workflow_share_links::workflow_id.eq_any(workflow_ids))
            .order((
                workflow_share_links::created_at.desc(),
                workflow_share_links::id.desc(),
            ))
            .select(ShareLink::columns()),
    )
    .await
}

/// The tenant's links among `ids`.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<ShareLink>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.workflow_share_links()
            .filter(workflow_share_links::id.eq_any(ids))
            .select(ShareLink::columns()),
    )
    .await
}

/// What a link shows: the workflow and its steps (each with its page context and
/// screenshot), read-only.
#[derive(Debug, Clone)]
pub struct SharedView {
    pub link: ShareLink,
    pub workflow: Workflow,
    pub steps: Vec<SharedStep>,
}

#[derive(Debug, Clone)]
pub struct SharedStep {
    pub head: StepHead,
    /// The step's `page_context` document (URL, title of the page).
    pub page_context: String,
    pub screenshot: Option<Screenshot>,
}

/// Opens the workflow behind `token` for anyone holding it, and counts the access. An
/// unknown, expired or revoked token is NOT_FOUND, all alike.
pub async fn open(db: &Db, token: &str) -> AppResult<SharedView> {
    let well_formed = token.len() == TOKEN_CHARS
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !well_formed {
        return Err(unknown());
    }
    let hash = token_hash(token);
    // The one read that starts from no company: a link is found by its token alone.
    let link: ShareLink = {
        let mut tx = db.read_unscoped().await?;
        let mut all = tx.unscoped();
        all.optional(
            all.workflow_share_links()
                .filter(workflow_share_links::token_hash.eq(&hash))
                .select(ShareLink::columns()),
        )
        .await?
        .ok_or_else(unknown)?
    };
    if !link.is_active(now()) {
        return Err(unknown());
    }
    // From here on, the link's own company (a row read from the database).
    let tenant = Tenant::new(link.company_id.clone());
    let link_id = link.id.as_str();
    let link = db
        .write(&tenant, |tx| accessed(tx, link_id).into_work())
        .await?;
    let mut tx = db.read(&tenant).await?;
    let workflow: Workflow = tx
        .optional(
            tx.workflows()
                .filter(workflows::id.eq(&link.workflow_id))
                .select(Workflow::columns()),
        )
        .await?
        .ok_or_else(unknown)?;
    let rows: Vec<(StepHead, String, Option<Screenshot>)> = tx
        .load(
            tx.steps_with_screenshots()
                .filter(steps::workflow_id.eq(&workflow.id))
                .order(steps::step_number.asc())
                .select((
                    StepHead::columns(),
                    steps::page_context,
                    Option::<Screenshot>::columns(),
                )),
        )
        .await?;
    Ok(SharedView {
        link,
        workflow,
        steps: rows
            .into_iter()
            .map(|(head, page_context, screenshot)| SharedStep {
                head,
                page_context,
                screenshot,
            })
            .collect(),
    })
}

/// Counts one use of a link still active at the time of the write; NOT_FOUND when it was
/// revoked or expired meanwhile.
async fn accessed(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<ShareLink> {
    let at = now();
    tx.optional(
        tx.workflow_share_links()
            .filter(workflow_share_links::id.eq(id))
            .filter(workflow_share_links::revoked_at.is_null())
            .filter(workflow_share_links::expires_at.gt(at))
            .set((
                workflow_share_links::access_count.eq(workflow_share_links::access_count + 1),
                workflow_share_links::last_accessed_at.eq(at),
            ))
            .returning(ShareLink::columns()),
    )
    .await?
    .ok_or_else(unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_stored_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), TOKEN_CHARS);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }
}
