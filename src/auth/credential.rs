//! Whether a credential still speaks for someone: the one check every authenticated request
//! (and every open WebSocket, periodically) makes, for both kinds of principal.
//!
//! - A member's access token is signed once and trusted until it expires, but its session
//!   can end (logout, logout everywhere, a password change, a reused refresh token) and
//!   the member can be removed or have their role changed long before that. The check asks
//!   the domain ([`session::standing`]) whether the token's session still exists for the
//!   token's user in the token's company, and the user's role now.
//! - An API key is recognised by its keyed hash ([`api_key::by_secret_hash`]; what a key
//!   is — id, company, role — never changes, so that answer is kept in a bounded LRU), and
//!   then checked like a session: not revoked, not expired ([`api_key::find`]).
//!
//! Answers are cached for [`CREDENTIAL_TTL`] per credential, so a busy client costs one
//! lookup every few seconds, not one per request; the instance that ends a session,
//! revokes a key or changes a member forgets its cached answers at once, other instances
//! within the TTL. An expiry is compared with the clock on every use, not cached.
//!
//! Forgetting also tells this instance's open WebSockets ([`Credentials::changes`]): a
//! connection whose viewer the change concerns re-checks before it delivers anything more,
//! so an ended session's or revoked key's sockets close (4403) at once here instead of at
//! their next periodic check (the other instances' at theirs, every couple of seconds).
//!
//! A lapsed cache entry is looked up once however many callers want it at that moment:
//! thousands of open WebSockets of one credential re-check on their own timers, and
//! without the per-credential gate every one of them that came due while a lookup was in
//! flight would start its own, queueing for the pool behind each other.
//!
//! `last_used_at` (sessions and keys) is read with the standing; when it is older than a
//! minute, a background task writes it with a conditional update. So a credential in use
//! is written about once a minute whatever its request rate, never per request.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use lru::LruCache;
use tokio::sync::broadcast;

use crate::auth::{Principal, Role, Viewer};
use crate::crypto::secret_token::{SecretKind, SecretTokens};
use crate::db::Db;
use crate::domain::{Tenant, api_key, now, session};
use crate::error::AppResult;
use crate::metrics::METRICS;

/// How long a confirmed (or refused) credential is believed without asking the database.
pub const CREDENTIAL_TTL: Duration = Duration::from_secs(2);

/// Entries beyond this trigger a sweep of expired ones, so the cache stays bounded by the
/// number of recently active credentials.
const SWEEP_ABOVE: usize = 10_000;

/// Keys remembered by secret hash (what a key is never changes).
const KNOWN_KEYS: usize = 10_000;

/// Changes buffered for a connection that has not looked yet. One that falls further
/// behind re-checks anyway (it cannot know whose change it missed).
const CHANGES_BUFFERED: usize = 256;

/// What the database last said about a credential: the role it acts with and until when
/// (`None`: no end), or `None` when it no longer speaks for anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Standing {
    role: Role,
    until: Option<NaiveDateTime>,
}

struct Entry {
    at: Instant,
    tenant: Tenant,
    /// The member of a session, to forget every session of a member at once.
    user_id: Option<String>,
    standing: Option<Standing>,
}

/// A recognised API key: its id, company and role.
#[derive(Clone)]
struct KnownKey {
    key_id: String,
    tenant: Tenant,
    role: Role,
}

/// A credential that passed: until when it may be used (`None`: until it is ended).
#[derive(Debug, Clone, Copy)]
pub struct Valid {
    pub until: Option<NaiveDateTime>,
}

pub struct Credentials {
    db: Db,
    secrets: Arc<SecretTokens>,
    cache: Mutex<HashMap<String, Entry>>,
    keys: Mutex<LruCache<String, KnownKey>>,
    /// One gate per credential being looked up right now (single flight); removed by the
    /// last holder.
    lookups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    changed: broadcast::Sender<Arc<str>>,
}

impl Credentials {
    pub fn new(db: Db, secrets: Arc<SecretTokens>) -> Self {
        let capacity = NonZeroUsize::new(KNOWN_KEYS).unwrap_or(NonZeroUsize::MIN);
        Self {
            db,
            secrets,
            cache: Mutex::new(HashMap::new()),
            keys: Mutex::new(LruCache::new(capacity)),
            lookups: Mutex::new(HashMap::new()),
            changed: broadcast::channel(CHANGES_BUFFERED).0,
        }
    }

    /// The ids (users, sessions, keys) whose credentials this instance changes from now on.
    pub fn changes(&self) -> broadcast::Receiver<Arc<str>> {
        self.changed.subscribe()
    }

    /// Whether `viewer` (built from a verified token or a recognised key) still speaks for
    /// a principal with its role; `Some` with until when.
    pub async fn check(&self, viewer: &Viewer) -> AppResult<Option<Valid>> {
        let standing = match self.cached(viewer) {
            Some(standing) => standing,
            None => self.look_up_once(viewer).await?,
        };
        let at = now();
        Ok(standing
            .filter(|s| s.role == viewer.role && s.until.is_none_or(|until| until > at))
            .map(|s| Valid { until: s.until }))
    }

    /// [`Credentials::check`] as a yes or no.
    pub async fn confirm(&self, viewer: &Viewer) -> AppResult<bool> {
        Ok(self.check(viewer).await?.is_some())
    }

    /// The viewer an API key speaks for, when it is a key this server minted that is
    /// neither revoked nor expired, with until when it may be used.
    pub async fn api_key(&self, presented: &str) -> AppResult<Option<(Viewer, Valid)>> {
        let Some(hash) = self.secrets.recognise(SecretKind::ApiKey, presented) else {
            return Ok(None);
        };
        let known = self.lock_keys().get(&hash).cloned();
        let known = match known {
            Some(known) => known,
            None => {
                let Some(row) = api_key::by_secret_hash(&self.db, &hash).await? else {
                    return Ok(None);
                };
                let known = KnownKey {
                    key_id: row.id.clone(),
                    tenant: Tenant::new(row.company_id.clone()),
                    role: Role::of_api_key(row.role),
                };
                self.lock_keys().put(hash, known.clone());
                known
            }
        };
        let viewer = Viewer {
            tenant: known.tenant,
            role: known.role,
            principal: Principal::ApiKey {
                key_id: known.key_id,
            },
        };
        Ok(self.check(&viewer).await?.map(|valid| (viewer, valid)))
    }

    /// Drops what is known about every session of `user_id`, after this instance removed
    /// them or changed their role, and tells the open connections (before returning, so
    /// before anything the caller does next can reach them).
    pub fn forget_user(&self, user_id: &str) {
        self.lock()
            .retain(|_, entry| entry.user_id.as_deref() != Some(user_id));
        self.announce(user_id);
    }

    /// Drops what is known about a session or an API key (by id), after this instance
    /// ended or revoked it, and tells the open connections.
    pub fn forget(&self, credential_id: &str) {
        self.lock().remove(credential_id);
        self.announce(credential_id);
    }

    fn announce(&self, id: &str) {
        // No receivers (no open connection) is fine.
        let _ = self.changed.send(Arc::from(id));
    }

    /// Looks the credential up unless a caller that held the gate before us just did.
    async fn look_up_once(&self, viewer: &Viewer) -> AppResult<Option<Standing>> {
        let id = viewer.credential_id();
        let gate = {
            let mut lookups = lock(&self.lookups);
            Arc::clone(lookups.entry(id.to_owned()).or_default())
        };
        let looked_up = {
            let _turn = gate.lock().await;
            match self.cached(viewer) {
                Some(standing) => Ok(standing),
                None => self.look_up(viewer).await.inspect(|standing| {
                    self.remember(viewer, *standing);
                }),
            }
        };
        let mut lookups = lock(&self.lookups);
        // Cloned only under this lock: two references (the map's and ours) mean nobody
        // else waits at the gate.
        if Arc::strong_count(&gate) == 2 {
            lookups.remove(id);
        }
        looked_up
    }

    async fn look_up(&self, viewer: &Viewer) -> AppResult<Option<Standing>> {
        METRICS.credential_lookups.inc();
        let stale_before = now() - session::LAST_USED_PRECISION;
        match &viewer.principal {
            Principal::Member {
                user_id,
                session_id,
            } => {
                let standing =
                    session::standing(&self.db, &viewer.tenant, user_id, session_id).await?;
                if let Some(standing) = &standing
                    && standing.last_used_at < stale_before
                {
                    self.touch(viewer.tenant.clone(), Principal::clone(&viewer.principal));
                }
                Ok(standing.map(|s| Standing {
                    role: Role::of_user(s.role),
                    until: Some(s.expires_at),
                }))
            }
            Principal::ApiKey { key_id } => {
                let key = api_key::find(&self.db, &viewer.tenant, key_id).await?;
                let Some(key) = key.filter(|key| key.revoked_at.is_none()) else {
                    return Ok(None);
                };
                if key.last_used_at.is_none_or(|at| at < stale_before) {
                    self.touch(viewer.tenant.clone(), Principal::clone(&viewer.principal));
                }
                Ok(Some(Standing {
                    role: Role::of_api_key(key.role),
                    until: key.expires_at,
                }))
            }
        }
    }

    /// Writes `last_used_at` in the background: the request does not wait for it, and a
    /// failure (the database busy) only leaves the time a little older.
    fn touch(&self, tenant: Tenant, principal: Principal) {
        let db = self.db.clone();
        tokio::spawn(async move {
            let result = match &principal {
                Principal::Member { session_id, .. } => {
                    session::touch(&db, &tenant, session_id).await
                }
                Principal::ApiKey { key_id } => api_key::touch(&db, &tenant, key_id).await,
            };
            if let Err(error) = result {
                tracing::debug!(error = ?error, "could not record a credential's last use");
            }
        });
    }

    /// The standing cached for the viewer's credential in the viewer's company, if fresh.
    fn cached(&self, viewer: &Viewer) -> Option<Option<Standing>> {
        let cache = self.lock();
        let entry = cache.get(viewer.credential_id())?;
        (entry.at.elapsed() < CREDENTIAL_TTL && entry.tenant == viewer.tenant)
            .then_some(entry.standing)
    }

    fn remember(&self, viewer: &Viewer, standing: Option<Standing>) {
        let mut cache = self.lock();
        if cache.len() >= SWEEP_ABOVE {
            cache.retain(|_, entry| entry.at.elapsed() < CREDENTIAL_TTL);
        }
        cache.insert(
            viewer.credential_id().to_owned(),
            Entry {
                at: Instant::now(),
                tenant: viewer.tenant.clone(),
                user_id: viewer.user_id().map(str::to_owned),
                standing,
            },
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        lock(&self.cache)
    }

    fn lock_keys(&self) -> std::sync::MutexGuard<'_, LruCache<String, KnownKey>> {
        lock(&self.keys)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold no invariant a panicking holder could break half-way.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
