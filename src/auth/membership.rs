//! Whether a verified token still speaks for a current member.
//!
//! A token is signed once and then trusted until it expires, but a member can be removed or
//! have their role changed long before that. Every authenticated request (and every open
//! WebSocket, periodically) confirms that the token's user still belongs to the token's
//! company with the token's role (asked of the domain, [`user::current_role`], within the
//! token's company). Answers are cached for [`MEMBERSHIP_TTL`] so a busy
//! client costs one lookup every few seconds, not one per request; the instance that makes
//! a change forgets its cached answer at once, other instances within the TTL.
//!
//! Forgetting also tells this instance's open WebSockets ([`Memberships::changes`]): a
//! connection of that user re-checks before it delivers anything more, so a removed or
//! demoted member's sockets close at once here instead of at their next periodic check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::auth::Viewer;
use crate::db::Db;
use crate::domain::Tenant;
use crate::domain::user::{self, Role};
use crate::error::AppResult;

/// How long a confirmed (or refused) membership is believed without asking the database.
pub const MEMBERSHIP_TTL: Duration = Duration::from_secs(2);

/// Entries beyond this trigger a sweep of expired ones, so the cache stays bounded by the
/// number of recently active users.
const SWEEP_ABOVE: usize = 10_000;

/// A user's role in a company as the database last said, or `None` if they are not (or no
/// longer) a member of it.
type Membership = Option<Role>;

/// A cached answer: when it was had, and the company it is about.
type Entry = (Instant, Tenant, Membership);

/// Changes buffered for a connection that has not looked yet. One that falls further
/// behind re-checks anyway (it cannot know whose change it missed).
const CHANGES_BUFFERED: usize = 256;

pub struct Memberships {
    db: Db,
    cache: Mutex<HashMap<String, Entry>>,
    changed: broadcast::Sender<Arc<str>>,
}

impl Memberships {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Mutex::new(HashMap::new()),
            changed: broadcast::channel(CHANGES_BUFFERED).0,
        }
    }

    /// The ids of users whose membership this instance changes from now on.
    pub fn changes(&self) -> broadcast::Receiver<Arc<str>> {
        self.changed.subscribe()
    }

    /// Whether `viewer` (built from a verified token) is still a member of their company
    /// with the role the token claims.
    pub async fn confirm(&self, viewer: &Viewer) -> AppResult<bool> {
        let membership = match self.cached(viewer) {
            Some(membership) => membership,
            None => {
                let membership =
                    user::current_role(&self.db, &viewer.tenant, &viewer.user_id).await?;
                self.remember(viewer, membership);
                membership
            }
        };
        Ok(membership == Some(viewer.role))
    }

    /// Drops what is known about `user_id`, after this instance removed them or changed
    /// their role, and tells the open connections (before returning, so before anything
    /// the caller does next can reach them).
    pub fn forget(&self, user_id: &str) {
        self.lock().remove(user_id);
        // No receivers (no open connection) is fine.
        let _ = self.changed.send(Arc::from(user_id));
    }

    /// The answer cached for the viewer's user in the viewer's company, if still fresh.
    fn cached(&self, viewer: &Viewer) -> Option<Membership> {
        let cache = self.lock();
        let (at, tenant, membership) = cache.get(&viewer.user_id)?;
        (at.elapsed() < MEMBERSHIP_TTL && *tenant == viewer.tenant).then_some(*membership)
    }

    fn remember(&self, viewer: &Viewer, membership: Membership) {
        let mut cache = self.lock();
        if cache.len() >= SWEEP_ABOVE {
            cache.retain(|_, (at, _, _)| at.elapsed() < MEMBERSHIP_TTL);
        }
        cache.insert(
            viewer.user_id.clone(),
            (Instant::now(), viewer.tenant.clone(), membership),
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
