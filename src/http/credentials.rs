//! Whether the credentials a long-lived connection was opened with still hold.
//!
//! A WebSocket or an event stream (SSE) outlives the request that authenticated it, while a
//! token expires and a member can be removed or have their role changed at any moment. Both
//! transports watch their credentials through one [`CredentialWatch`], so a rule about when
//! a connection must end is written once:
//!
//! - the token's expiry ends it;
//! - the member list is asked again every [`MEMBERSHIP_RECHECK`] (just over the membership
//!   cache's lifetime, so each check sees fresh data): other instances' changes are seen
//!   within seconds;
//! - a change made on this instance ([`Memberships::changes`]) is acted on at once, and
//!   before anything more is delivered: a transport calls [`CredentialWatch::check_pending`]
//!   before each result it sends, so an event that raced the change never reaches a member
//!   who has just lost access.
//!
//! Whatever the credential check becomes (sessions, API keys), it goes through
//! [`Memberships`]: this file only decides when to ask.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::{Instant, Interval, MissedTickBehavior, sleep_until};

use crate::auth::Viewer;
use crate::auth::credential::{CREDENTIAL_TTL, Credentials};

/// How often an open connection re-checks its credential (session or API key); just over
/// the credential cache's lifetime, so each check sees fresh data.
pub const MEMBERSHIP_RECHECK: Duration = CREDENTIAL_TTL.saturating_add(Duration::from_millis(500));

/// Why a connection's credentials stopped holding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapsed {
    /// The token's lifetime ended.
    Expired,
    /// The session ended, the key was revoked, the member was removed, or their role is no
    /// longer the one the token claims.
    NoLongerMember,
}

impl Lapsed {
    /// Said to the client when its connection ends for this reason.
    pub fn message(self) -> &'static str {
        match self {
            Self::Expired => "token expired",
            Self::NoLongerMember => "the session ended, the key was revoked, or the role changed",
        }
    }
}

/// Watches the credentials of one connection.
pub struct CredentialWatch {
    memberships: Arc<Credentials>,
    viewer: Option<Viewer>,
    expires_at: Option<Instant>,
    /// Membership changes made on this instance; `None` when nobody is watched.
    changes: Option<broadcast::Receiver<Arc<str>>>,
    recheck: Interval,
    /// A check is owed (a tick passed, or a change that may be the viewer's arrived) and
    /// has not completed yet: kept across cancellations, so a check interrupted by another
    /// branch of the connection's loop is still made before the next delivery.
    recheck_due: bool,
}

impl CredentialWatch {
    /// A watch of nobody yet (a connection that has not authenticated).
    pub fn idle(memberships: &Arc<Credentials>) -> Self {
        let mut recheck = tokio::time::interval(MEMBERSHIP_RECHECK);
        recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            memberships: Arc::clone(memberships),
            viewer: None,
            expires_at: None,
            changes: None,
            recheck,
            recheck_due: false,
        }
    }

    /// Starts listening for membership changes. Called before the credentials are checked,
    /// so a change made meanwhile is not missed.
    pub fn listen(&mut self) {
        self.changes = Some(self.memberships.changes());
    }

    /// Watches `viewer` (`None`: an anonymous connection, nothing to re-check) until
    /// `expires_at`.
    pub fn watch(&mut self, viewer: Option<Viewer>, expires_at: Option<Instant>) {
        if viewer.is_none() {
            self.changes = None;
        }
        self.viewer = viewer;
        self.expires_at = expires_at;
    }

    pub fn viewer(&self) -> Option<&Viewer> {
        self.viewer.as_ref()
    }

    /// Resolves when the credentials stop holding; pending forever for an anonymous
    /// connection. Cancel-safe: a check it was making when cancelled is owed and made by
    /// the next call here or to [`check_pending`](Self::check_pending).
    pub async fn lapsed(&mut self) -> Lapsed {
        loop {
            if let Err(lapsed) = self.recheck_if_due().await {
                return lapsed;
            }
            let expiry = self.expires_at;
            tokio::select! {
                () = sleep_until_or_never(expiry) => return Lapsed::Expired,
                _ = self.recheck.tick(), if self.viewer.is_some() => self.recheck_due = true,
                changed = next_change(&mut self.changes) => self.note_change(changed),
            }
        }
    }

    /// Acts on every membership change already announced (and any check owed), so a
    /// result is never delivered past a change that ended the viewer's access.
    pub async fn check_pending(&mut self) -> Result<(), Lapsed> {
        if self.expires_at.is_some_and(|at| at <= Instant::now()) {
            return Err(Lapsed::Expired);
        }
        while let Some(changes) = self.changes.as_mut() {
            let changed = match changes.try_recv() {
                Ok(user_id) => Ok(user_id),
                Err(broadcast::error::TryRecvError::Empty) => break,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    Err(broadcast::error::RecvError::Lagged(n))
                }
                Err(broadcast::error::TryRecvError::Closed) => {
                    Err(broadcast::error::RecvError::Closed)
                }
            };
            self.note_change(changed);
        }
        self.recheck_if_due().await
    }

    /// A change on this instance: owe a check if it may be the viewer's (or changes were
    /// missed).
    fn note_change(&mut self, changed: Result<Arc<str>, broadcast::error::RecvError>) {
        let concerns_viewer = match (&changed, &self.viewer) {
            (Ok(id), Some(viewer)) => viewer.concerns(id),
            (Err(broadcast::error::RecvError::Lagged(_)), Some(_)) => true,
            (Err(broadcast::error::RecvError::Closed), _) => {
                // The registry is gone (shutting down): stop listening, keep the timer.
                self.changes = None;
                false
            }
            (_, None) => false,
        };
        self.recheck_due |= concerns_viewer;
    }

    async fn recheck_if_due(&mut self) -> Result<(), Lapsed> {
        if !self.recheck_due {
            return Ok(());
        }
        let Some(viewer) = &self.viewer else {
            self.recheck_due = false;
            return Ok(());
        };
        let confirmed = self.memberships.confirm(viewer).await;
        self.recheck_due = false;
        match confirmed {
            Ok(true) => Ok(()),
            Ok(false) => Err(Lapsed::NoLongerMember),
            // The database is unreachable: keep serving and ask again at the next tick.
            Err(error) => {
                tracing::warn!(error = ?error, "cannot re-check a connection's membership");
                Ok(())
            }
        }
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The next membership change, or never when the connection does not listen.
async fn next_change(
    changes: &mut Option<broadcast::Receiver<Arc<str>>>,
) -> Result<Arc<str>, broadcast::error::RecvError> {
    match changes {
        Some(changes) => changes.recv().await,
        None => std::future::pending().await,
    }
}
