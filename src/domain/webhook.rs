//! Webhooks: an outside system queues a run of a workflow with a signed `POST
//! /hooks/{id}` whose JSON body becomes the run's input.
//!
//! **Secrets.** A hook's signing secret must be known to the server to check signatures,
//! so it cannot be kept as a hash; it is not kept at all. It is derived, when needed, as
//! HMAC-SHA256 under a key derived from the server secret, of the hook's id and a random
//! salt stored in the row ([`WebhookKeys::secret`]); the row alone reveals nothing.
//! Rotating draws a new salt; the previous one may stay valid for a grace period so the
//! sender can switch without dropping deliveries. (Changing `JWT_SECRET` changes every
//! hook's secret: rotate the hooks' secrets after it.)
//!
//! **Signatures.** `Stepwise-Signature: t=<unix seconds>,v1=<hex>`, where the hex is
//! HMAC-SHA256 under the secret of `<t>.<raw body>`. The timestamp is signed too, so it
//! cannot be moved forward; requests whose `t` is further than the tolerance from now
//! are refused. Several `v1=` values may be sent (one per secret during a rotation); one
//! matching is enough. Comparison is constant-time.
//!
//! **Ids** are random (UUID v4, 122 random bits), not time-ordered like other ids: the
//! endpoint answers an unknown hook and a bad signature differently (404, 401), so ids
//! must be unguessable for that difference to reveal nothing.

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use chrono::{NaiveDateTime, TimeDelta};
use diesel::prelude::*;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::event::{EventKind, Events};
use super::run::queue::{DEFAULT_MAX_ATTEMPTS, NewQueuedRun, insert_queued};
use super::run::{Run, Trigger};
use super::{Tenant, now, refuse_nul};
use crate::crypto::hex;
use crate::crypto::mac::MacKey;
use crate::db::schema::{webhooks, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

/// Webhooks one workflow may have.
pub const MAX_PER_WORKFLOW: i64 = 20;
pub const MAX_NAME_CHARS: usize = 200;
/// The longest grace period of a rotated secret.
pub const MAX_PREVIOUS_SECRET_SECONDS: i32 = 7 * 24 * 3_600;
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "stepwise-signature";
/// `v1=` values a signature header may carry.
const MAX_SIGNATURES: usize = 8;
/// Label of the key hook secrets are derived under.
const KEY_LABEL: &str = "stepwise webhook signing secret v1";
/// What every secret starts with, so one found in a log or a repository is recognisable.
const SECRET_PREFIX: &str = "whsec_";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable, Identifiable)]
#[diesel(table_name = webhooks, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_default_value = false)]
pub struct Webhook {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub name: Option<String>,
    pub enabled: bool,
    pub secret_salt: String,
    pub previous_secret_salt: Option<String>,
    pub previous_secret_expires_at: Option<NaiveDateTime>,
    pub secret_rotated_at: NaiveDateTime,
    pub last_used_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

impl TenantRow for Webhook {
    type Table = webhooks::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

/// Derives hooks' signing secrets; one per instance, from the server secret every
/// instance shares.
pub struct WebhookKeys {
    key: MacKey,
}

impl WebhookKeys {
    pub fn new(server_secret: &[u8]) -> Self {
        Self {
            key: MacKey::derive(server_secret, KEY_LABEL),
        }
    }

    /// The secret of hook `id` under `salt`.
    pub fn secret(&self, id: &str, salt: &str) -> String {
        format!(
            "{SECRET_PREFIX}{}",
            hex(&self.key.tag(format!("{id}:{salt}").as_bytes()))
        )
    }
}

impl std::fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookKeys(***)")
    }
}

/// 128 random bits, hex.
fn new_salt() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// A random (v4) UUID: see the module docs.
fn new_hook_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn name(value: Option<String>) -> AppResult<Option<String>> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if let Some(value) = &value {
        if value.chars().count() > MAX_NAME_CHARS {
            return Err(AppError::bad_input(
                "name",
                format!("name must be at most {MAX_NAME_CHARS} characters long"),
            ));
        }
        refuse_nul("name", value)?;
    }
    Ok(value)
}

/// A hook together with its secret, shown this once.
#[derive(Debug, Clone)]
pub struct WithSecret {
    pub webhook: Webhook,
    pub secret: String,
}

/// Creates an enabled webhook for the tenant's workflow `workflow_id`.
pub async fn create(
    db: &Db,
    tenant: &Tenant,
    keys: &WebhookKeys,
    workflow_id: &str,
    hook_name: Option<String>,
) -> AppResult<WithSecret> {
    let at = now();
    let row = Webhook {
        id: new_hook_id(),
        company_id: tenant.id().to_owned(),
        workflow_id: workflow_id.to_owned(),
        name: name(hook_name)?,
        enabled: true,
        secret_salt: new_salt(),
        previous_secret_salt: None,
        previous_secret_expires_at: None,
        secret_rotated_at: at,
        last_used_at: None,
        created_at: at,
        updated_at: at,
    };
    let row = &row;
    let webhook = db.write(tenant, |tx| created(tx, row).into_work()).await?;
    let secret = keys.secret(&webhook.id, &webhook.secret_salt);
    Ok(WithSecret { webhook, secret })
}

async fn created(tx: &mut Tx<NoEvents>, row: &Webhook) -> AppResult<Webhook> {
    // The workflow first (the lock order): it stays while its hooks are counted.
    tx.lock(Lock::Share, workflows::id, &row.workflow_id)
        .await?;
    let exists: i64 = tx
        .one(
            tx.workflows()
                .filter(workflows::id.eq(&row.workflow_id))
                .count(),
        )
        .await?;
    if exists == 0 {
        return Err(AppError::NotFound("workflow"));
    }
    let count: i64 = tx
        .one(
            tx.webhooks()
                .filter(webhooks::workflow_id.eq(&row.workflow_id))
                .count(),
        )
        .await?;
    if count >= MAX_PER_WORKFLOW {
        return Err(AppError::bad_input(
            "workflowId",
            format!("a workflow has at most {MAX_PER_WORKFLOW} webhooks"),
        ));
    }
    let mut row = row.clone();
    tx.insert(&mut row).await?;
    Ok(row)
}

/// Renames, enables or disables a webhook (`None`: unchanged). A disabled hook answers
/// like one that does not exist.
pub async fn update(
    db: &Db,
    tenant: &Tenant,
    id: &str,
    hook_name: Option<Option<String>>,
    enabled: Option<bool>,
) -> AppResult<Webhook> {
    #[derive(AsChangeset)]
    #[diesel(table_name = webhooks)]
    struct Patch {
        name: Option<Option<String>>,
        enabled: Option<bool>,
        updated_at: NaiveDateTime,
    }
    let patch = Patch {
        name: hook_name.map(name).transpose()?,
        enabled,
        updated_at: now(),
    };
    let patch = &patch;
    db.write(tenant, |tx| {
        async move {
            tx.optional(
                tx.webhooks()
                    .filter(webhooks::id.eq(id))
                    .set(patch)
                    .returning(Webhook::columns()),
            )
            .await?
            .ok_or(AppError::NotFound("webhook"))
        }
        .into_work()
    })
    .await
}

/// Gives a webhook a new secret, shown this once. The previous one keeps working for
/// `keep_previous_seconds` (0: it stops at once), so the sender can switch over.
pub async fn rotate(
    db: &Db,
    tenant: &Tenant,
    keys: &WebhookKeys,
    id: &str,
    keep_previous_seconds: Option<i32>,
) -> AppResult<WithSecret> {
    let keep = keep_previous_seconds.unwrap_or(0);
    if !(0..=MAX_PREVIOUS_SECRET_SECONDS).contains(&keep) {
        return Err(AppError::bad_input(
            "keepPreviousSeconds",
            format!("keepPreviousSeconds must be between 0 and {MAX_PREVIOUS_SECRET_SECONDS}"),
        ));
    }
    let salt = new_salt();
    let salt = &salt;
    let webhook = db
        .write(tenant, |tx| rotated(tx, id, salt, keep).into_work())
        .await?;
    let secret = keys.secret(&webhook.id, &webhook.secret_salt);
    Ok(WithSecret { webhook, secret })
}

async fn rotated(tx: &mut Tx<NoEvents>, id: &str, salt: &str, keep: i32) -> AppResult<Webhook> {
    let current: Webhook = tx
        .lock_and_read(Lock::NoKeyUpdate, webhooks::id, id)
        .await?
        .ok_or(AppError::NotFound("webhook"))?;
    let at = now();
    let (previous, until) = if keep > 0 {
        (
            Some(current.secret_salt.clone()),
            Some(at + TimeDelta::seconds(keep.into())),
        )
    } else {
        (None, None)
    };
    tx.one(
        tx.webhooks()
            .filter(webhooks::id.eq(&current.id))
            .set((
                webhooks::secret_salt.eq(salt),
                webhooks::previous_secret_salt.eq(previous),
                webhooks::previous_secret_expires_at.eq(until),
                webhooks::secret_rotated_at.eq(at),
                webhooks::updated_at.eq(at),
            ))
            .returning(Webhook::columns()),
    )
    .await
}

/// Deletes a webhook: its URL stops working at once; the runs it queued stay.
pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<()> {
    db.write(tenant, |tx| {
        async move {
            let removed = tx
                .execute(tx.webhooks().filter(webhooks::id.eq(id)).delete())
                .await?;
            if removed == 0 {
                return Err(AppError::NotFound("webhook"));
            }
            Ok(())
        }
        .into_work()
    })
    .await
}

/// The tenant's webhooks among `ids`; other companies' ids are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Webhook>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.webhooks()
            .filter(webhooks::id.eq_any(ids))
            .select(Webhook::columns()),
    )
    .await
}

pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Webhook> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("webhook"))
}

/// The webhooks of the tenant's workflow `workflow_id`, oldest first.
pub async fn of_workflow(db: &Db, tenant: &Tenant, workflow_id: &str) -> AppResult<Vec<Webhook>> {
    let mut tx = db.read(tenant).await?;
    let exists: i64 = tx
        .one(tx.workflows().filter(workflows::id.eq(workflow_id)).count())
        .await?;
    if exists == 0 {
        return Err(AppError::NotFound("workflow"));
    }
    tx.load(
        tx.webhooks()
            .filter(webhooks::workflow_id.eq(workflow_id))
            .order((webhooks::created_at.asc(), webhooks::id.asc()))
            .limit(MAX_PER_WORKFLOW)
            .select(Webhook::columns()),
    )
    .await
}

/// The enabled hook `id` of any company, for a delivery to it; `None` for an unknown,
/// malformed or disabled id alike. Unscoped on purpose: the caller is anonymous, and
/// the hook names its company.
pub async fn for_delivery(db: &Db, id: &str) -> AppResult<Option<Webhook>> {
    if uuid::Uuid::try_parse(id).is_err() {
        return Ok(None);
    }
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.optional(
        all.webhooks()
            .filter(webhooks::id.eq(id))
            .filter(webhooks::enabled.eq(true))
            .select(Webhook::columns()),
    )
    .await
}

/// Why a signature was refused (logged, never told to the sender beyond "401").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Missing,
    Malformed,
    /// `t` further from now than the tolerance.
    Stale,
    Mismatch,
}

/// A parsed `Stepwise-Signature` header.
#[derive(Debug)]
struct SignatureHeader {
    timestamp: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            "v1" => {
                if signatures.len() == MAX_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                signatures.push(unhex32(value).ok_or(SignatureError::Malformed)?);
            }
            // Other schemes are for other versions of this format: ignored.
            _ => {}
        }
    }
    match (timestamp, signatures.is_empty()) {
        (Some(timestamp), false) => Ok(SignatureHeader {
            timestamp,
            signatures,
        }),
        _ => Err(SignatureError::Malformed),
    }
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The signature of `body` sent at `timestamp` under `secret` (what a sender computes).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// Checks a delivery's signature header against the hook's current secret (and its
/// previous one during a rotation's grace period). Answers the first matching `v1`
/// value, hex: a delivery without an `Idempotency-Key` is de-duplicated by it.
pub fn verify(
    keys: &WebhookKeys,
    hook: &Webhook,
    header: Option<&str>,
    body: &[u8],
    now_unix: i64,
    tolerance_seconds: i64,
) -> Result<String, SignatureError> {
    let header = parse_header(header.ok_or(SignatureError::Missing)?)?;
    if (now_unix - header.timestamp).abs() > tolerance_seconds {
        return Err(SignatureError::Stale);
    }
    let mut secrets = vec![keys.secret(&hook.id, &hook.secret_salt)];
    if let (Some(salt), Some(until)) = (&hook.previous_secret_salt, hook.previous_secret_expires_at)
        && until > now()
    {
        secrets.push(keys.secret(&hook.id, salt));
    }
    for secret in &secrets {
        for signature in &header.signatures {
            let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
                continue;
            };
            mac.update(header.timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            // Constant-time comparison.
            if mac.verify_slice(signature).is_ok() {
                return Ok(hex(signature));
            }
        }
    }
    Err(SignatureError::Mismatch)
}

/// A run queued by a delivery: the run, and whether its key had queued it before.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub run: Run,
    pub duplicate: bool,
}

/// Queues the run of a verified delivery to `hook` in the hook's company: `input` is the
/// body (JSON text, checked), `key` the sender's `Idempotency-Key` or else the signature.
/// BAD_USER_INPUT when the workflow is not runnable now.
pub async fn deliver(
    db: &Db,
    events: &Events,
    hook: &Webhook,
    input: String,
    key: &str,
) -> AppResult<Delivered> {
    let tenant = Tenant::new(hook.company_id.clone());
    let scoped = format!("hook:{}:{key}", hook.id);
    let (input, scoped) = (&input, &scoped);
    db.write_with_events(&tenant, events, |tx| {
        delivered(tx, hook, input, scoped).into_work()
    })
    .await
}

async fn delivered(
    tx: &mut Tx<EventKind>,
    hook: &Webhook,
    input: &str,
    key: &str,
) -> AppResult<Delivered> {
    let new = NewQueuedRun {
        workflow_id: &hook.workflow_id,
        started_by: None,
        trigger: Trigger::Webhook,
        trigger_id: Some(&hook.id),
        input: Some(input.to_owned()),
        priority: 0,
        not_before: None,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        retry_of: None,
        from_step_id: None,
        idempotency_key: Some(key.to_owned()),
    };
    let (run, duplicate) = insert_queued(tx, &new).await?;
    if !duplicate {
        tx.execute(
            tx.webhooks()
                .filter(webhooks::id.eq(&hook.id))
                .set(webhooks::last_used_at.eq(Some(now()))),
        )
        .await?;
    }
    Ok(Delivered { run, duplicate })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(salt: &str) -> Webhook {
        let at = now();
        Webhook {
            id: "5f0c7f2e-7a53-4a3e-9d55-8f0a1f1b2c3d".into(),
            company_id: "acme".into(),
            workflow_id: "w".into(),
            name: None,
            enabled: true,
            secret_salt: salt.into(),
            previous_secret_salt: None,
            previous_secret_expires_at: None,
            secret_rotated_at: at,
            last_used_at: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn signatures_verify_only_with_the_secret_and_a_fresh_timestamp() {
        let keys = WebhookKeys::new(b"server secret");
        let hook = hook("salt-1");
        let secret = keys.secret(&hook.id, &hook.secret_salt);
        assert!(secret.starts_with("whsec_"));
        let body = br#"{"order":42}"#;
        let t = 1_700_000_000;
        let good = format!("t={t},v1={}", sign(&secret, t, body));
        assert!(verify(&keys, &hook, Some(&good), body, t + 10, 300).is_ok());
        // Another body, another time, another secret, another server: refused.
        assert_eq!(
            verify(&keys, &hook, Some(&good), br#"{"order":43}"#, t, 300),
            Err(SignatureError::Mismatch)
        );
        let moved = format!("t={},v1={}", t + 1, sign(&secret, t, body));
        assert_eq!(
            verify(&keys, &hook, Some(&moved), body, t, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&keys, &hook, Some(&good), body, t + 301, 300),
            Err(SignatureError::Stale)
        );
        let other = WebhookKeys::new(b"another server");
        assert_eq!(
            verify(&other, &hook, Some(&good), body, t, 300),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "garbage", "t=1,v1=zz"] {
            assert_eq!(
                verify(&keys, &hook, Some(bad), body, t, 300),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(&keys, &hook, None, body, t, 300),
            Err(SignatureError::Missing)
        );
        // One of several values matching is enough (a sender mid-rotation).
        let two = format!("t={t},v1={},v1={}", "0".repeat(64), sign(&secret, t, body));
        assert!(verify(&keys, &hook, Some(&two), body, t, 300).is_ok());
    }
}
