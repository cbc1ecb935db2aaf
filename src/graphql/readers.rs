//! Who sees a workflow, for subscriptions: whether an event about a workflow may reach a
//! regular member's stream.
//!
//! Events carry rows (a run, a log, a notification), not the viewer's right to see them;
//! a stream's first state and every catch-up are read through the viewer's unit of work,
//! which already leaves restricted workflows out. For live events each stream asks here.
//! Answers are kept per workflow for [`READERS_TTL`] and shared by every subscriber of the
//! instance, so a burst of events about one workflow costs one read, not one per event
//! or per subscriber (concurrent misses wait for the same read); viewers who see the whole
//! company (admins) never ask. The instance that changes a workflow's visibility or shares
//! forgets its answer at once; other instances within the TTL, as for memberships.
//! Failing to read is answered "no": a restricted member misses an event rather than sees
//! one they may not.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::OnceCell;

use crate::db::Db;
use crate::domain::Tenant;
use crate::domain::visibility::{Readers, readers_of};

/// How long an answer is believed without reading again.
pub const READERS_TTL: Duration = Duration::from_secs(2);
/// Workflows remembered at once, bounded whatever subscribers ask about: each holds at
/// most `MAX_SHARES_PER_WORKFLOW` member ids (tens of KB at worst, bytes usually).
const CAPACITY: usize = 1_000;

/// (company, workflow) → when read, and the answer (read once by whoever asks first).
type Entry = (Instant, Arc<OnceCell<Option<Readers>>>);

pub struct WorkflowReaders {
    db: Db,
    entries: Mutex<LruCache<(String, String), Entry>>,
}

impl WorkflowReaders {
    pub fn new(db: Db) -> Self {
        let capacity = NonZeroUsize::new(CAPACITY).unwrap_or(NonZeroUsize::MIN);
        Self {
            db,
            entries: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Whether `tenant`'s viewer sees the company's workflow `workflow_id`.
    pub async fn can_view(&self, tenant: &Tenant, workflow_id: &str) -> bool {
        if tenant.restricted_to().is_none() {
            return true;
        }
        let key = (tenant.id().to_owned(), workflow_id.to_owned());
        let cell = {
            let mut entries = self.lock();
            match entries.get(&key) {
                Some((at, cell)) if at.elapsed() < READERS_TTL => cell.clone(),
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    entries.put(key.clone(), (Instant::now(), cell.clone()));
                    cell
                }
            }
        };
        let company = Tenant::new(key.0.clone());
        let read = cell
            .get_or_try_init(|| readers_of(&self.db, &company, workflow_id))
            .await;
        match read {
            Ok(Some(readers)) => readers.can_view(tenant),
            Ok(None) => false,
            Err(error) => {
                tracing::warn!(?error, workflow_id, "could not read who sees a workflow");
                // Not remembered: the next event asks again.
                self.lock().pop(&key);
                false
            }
        }
    }

    /// Forgets what is known about the workflow, after this instance changed who sees it.
    pub fn forget(&self, tenant: &Tenant, workflow_id: &str) {
        self.lock()
            .pop(&(tenant.id().to_owned(), workflow_id.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(String, String), Entry>> {
        // The cache holds no invariant a panicking holder could break half-way.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
