//! The instance's tail of the health-log stream, which `healthLogRecorded` subscribers
//! follow.
//!
//! Step reports are delivered in commit order, each exactly once, also to a client that
//! disconnects and resumes with `after`. Publishing after commit cannot give that order
//! (two transactions commit in one order and publish in the other), so the stream is the
//! table itself: every log has a position assigned in commit order
//! ([`StreamPosition`]), and one task per instance reads what is new, in position order,
//! and hands it to every local subscriber of the log's company. Events on the bus only
//! wake the task up early; it also looks on its own every [`IDLE_POLL`], so a lost
//! notification delays a log, never loses it.
//!
//! One read per instance per batch of reports, whatever the number of subscribers (not
//! one per subscriber per report). While nobody on this instance subscribes, the task only
//! moves its position forward.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{EventBus, EventKind};
use crate::db::Db;
use crate::domain::health_log::{self, StreamPosition, StreamScope, StreamedLog};

/// How long an idle tail waits before it looks anyway.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Logs read per query; a burst is read in several.
const BATCH: i64 = 500;
/// How many logs a subscriber may fall behind before it catches up from the database.
const CAPACITY: usize = 1_024;
/// A report announced on the bus but not yet readable (an older transaction still runs on
/// PostgreSQL) is looked for again after this, doubling up to [`IDLE_POLL`].
const FIRST_RETRY: Duration = Duration::from_millis(5);
/// Announced reports not seen after this long are forgotten (their workflow was deleted,
/// or the database dropped them): the idle poll still finds anything real.
const FORGET_ANNOUNCED_AFTER: Duration = Duration::from_secs(30);
/// Bounds the announced-but-unseen set under a flood of reports.
const MAX_ANNOUNCED: usize = 10_000;

/// Cheap to clone; every clone follows the same tail.
#[derive(Clone)]
pub struct LogStream {
    inner: Arc<Inner>,
}

struct Inner {
    sender: broadcast::Sender<Arc<StreamedLog>>,
    /// The position of the last log handed out. Held while sending, so a subscriber that
    /// reads it while subscribing has either received a log or has it behind its start.
    position: Mutex<Option<StreamPosition>>,
}

impl LogStream {
    /// Starts the tail on this instance's database, woken by the instance's bus.
    pub fn start(db: Db, bus: &EventBus) -> Self {
        let stream = Self {
            inner: Arc::new(Inner {
                sender: broadcast::channel(CAPACITY).0,
                position: Mutex::new(None),
            }),
        };
        tokio::spawn(stream.clone().follow(db, bus.subscribe()));
        stream
    }

    /// A receiver of every log handed out from now on, and the position they all come
    /// after (`None`: from the first log ever recorded).
    pub fn subscribe(
        &self,
    ) -> (
        broadcast::Receiver<Arc<StreamedLog>>,
        Option<StreamPosition>,
    ) {
        let position = self.lock();
        let receiver = self.inner.sender.subscribe();
        (receiver, position.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StreamPosition>> {
        // The position is one value replaced whole; a panic cannot leave it half-written.
        self.inner
            .position
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn follow(self, db: Db, mut events: broadcast::Receiver<Arc<super::Event>>) {
        let mut started = false;
        let mut announced: HashMap<String, Instant> = HashMap::new();
        let mut retry = FIRST_RETRY;
        loop {
            if !started {
                match health_log::stream_head(&db).await {
                    Ok(head) => {
                        *self.lock() = head;
                        started = true;
                    }
                    Err(_) => tracing::warn!("health log stream cannot read its start; retrying"),
                }
            } else if let Err(error) = self.catch_up(&db, &mut announced).await {
                tracing::warn!(?error, "health log stream cannot read new logs; retrying");
            }
            let now = Instant::now();
            announced.retain(|_, at| now.duration_since(*at) < FORGET_ANNOUNCED_AFTER);
            let wait = if announced.is_empty() && started {
                retry = FIRST_RETRY;
                IDLE_POLL
            } else {
                let wait = retry;
                retry = (retry * 2).min(IDLE_POLL);
                wait
            };
            tokio::select! {
                heard = events.recv() => match heard {
                    Ok(event) => {
                        if let EventKind::HealthLogRecorded { health_log_id } = &event.kind
                            && announced.len() < MAX_ANNOUNCED
                        {
                            announced.insert(health_log_id.clone(), Instant::now());
                        }
                        retry = FIRST_RETRY;
                    }
                    // Missed wake-ups only mean reading now.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Reads and hands out everything new; with nobody subscribed, only moves the
    /// position to the newest log.
    async fn catch_up(
        &self,
        db: &Db,
        announced: &mut HashMap<String, Instant>,
    ) -> crate::error::AppResult<()> {
        loop {
            if self.inner.sender.receiver_count() == 0 {
                let head = health_log::stream_head(db).await?;
                let mut position = self.lock();
                // A subscriber that came meanwhile starts from the old position and must be
                // handed what lies between: leave it to the next round.
                if self.inner.sender.receiver_count() == 0 {
                    *position = head;
                    announced.clear();
                    return Ok(());
                }
                drop(position);
            }
            let from = self.lock().clone();
            let logs =
                health_log::stream_after(db, StreamScope::AllCompanies, from.as_ref(), BATCH)
                    .await?;
            let complete = logs.len() < usize::try_from(BATCH).unwrap_or(usize::MAX);
            for log in logs {
                announced.remove(&log.log.id);
                let mut position = self.lock();
                *position = Some(log.position.clone());
                // No receivers is fine: they all left meanwhile.
                let _ = self.inner.sender.send(Arc::new(log));
            }
            if complete {
                return Ok(());
            }
        }
    }
}
