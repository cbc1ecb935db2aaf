//! The receiving half of every transport: envelopes from other instances become local
//! events. Each envelope is verified (forged or unsigned ones are dropped and counted),
//! delivered once (envelope ids seen lately are remembered, a bounded number), and its ids
//! are read from the database once per batch for all local subscribers; an event whose
//! row is gone, or belongs to another company than the envelope claims, is dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::wire::{Envelope, Sealer, WireEvent};
use super::{Event, EventBus, EventKind};
use crate::db::Db;
use crate::domain;
use crate::metrics::METRICS;

/// A company's subscribers re-read their state at most this often on another instance's
/// request: a resync costs every subscriber of the company a query.
const REMOTE_RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Turns envelopes from other instances into local events: one per instance, fed by its
/// transport's receiving task.
pub(crate) struct Inbound {
    origin: String,
    sealer: Arc<Sealer>,
    db: Db,
    bus: EventBus,
    /// When each company's subscribers were last told to resynchronise on another
    /// instance's request.
    resyncs: HashMap<String, Instant>,
    /// Ids of the envelopes delivered lately, so a redelivered one is dropped.
    seen: RecentEnvelopes,
}

impl Inbound {
    /// `origin` is this instance's id (its own envelopes are skipped: already delivered
    /// locally); `db` reads the rows that arriving ids name.
    pub(crate) fn new(origin: String, sealer: Arc<Sealer>, db: Db, bus: EventBus) -> Self {
        Self {
            origin,
            sealer,
            db,
            bus,
            resyncs: HashMap::new(),
            seen: RecentEnvelopes::default(),
        }
    }

    /// Verifies the payloads, reads the rows their ids name (one query per kind for the
    /// whole batch), and hands the events to local subscribers in the order they came.
    pub(crate) async fn deliver(&mut self, payloads: &[String]) {
        let mut events = Vec::new();
        for payload in payloads {
            match self.sealer.open(payload) {
                Ok(Envelope { o, .. }) if o == self.origin => {}
                Ok(Envelope { i: Some(id), .. }) if !self.seen.insert(&id) => {
                    METRICS.events_duplicate.inc();
                }
                Ok(envelope) => events.extend(envelope.e),
                Err(rejection) => {
                    METRICS.reject_event(rejection.label());
                    tracing::warn!(
                        reason = rejection.label(),
                        "dropped an event notification that is not a signed envelope"
                    );
                }
            }
        }
        if events.is_empty() {
            return;
        }
        let rows = match Rows::read(&self.db, &events).await {
            Ok(rows) => rows,
            Err(error) => {
                // The database is unreachable: the events cannot be shown, so subscribers
                // of the companies involved re-read their state once it is back.
                tracing::warn!(
                    ?error,
                    "cannot read the rows of remote events; resynchronising"
                );
                let mut companies: Vec<String> = events
                    .iter()
                    .filter_map(|e| company(e).map(str::to_owned))
                    .collect();
                companies.sort();
                companies.dedup();
                for c in companies {
                    self.bus.deliver_remote(Event {
                        company_id: Some(c),
                        kind: EventKind::Resync,
                    });
                }
                return;
            }
        };
        for event in events {
            if let Some(event) = self.local_event(event, &rows) {
                self.bus.deliver_remote(event);
            }
        }
        let now = Instant::now();
        self.resyncs
            .retain(|_, at| now.duration_since(*at) < REMOTE_RESYNC_INTERVAL);
    }

    /// The local form of a remote event, or `None` when its rows are gone (deleted since)
    /// or belong to another company than the event claims.
    fn local_event(&mut self, event: WireEvent, rows: &Rows) -> Option<Event> {
        let owned = |row_company: &str, c: &str| row_company == c;
        let (c, kind) = match event {
            WireEvent::Run { c, run, log } => {
                let run = rows.runs.get(&run).filter(|r| owned(&r.company_id, &c))?;
                let health_log = log
                    .and_then(|id| rows.logs.get(&id))
                    .filter(|l| owned(&l.company_id, &c));
                let kind = EventKind::RunChanged {
                    run: Box::new(run.clone()),
                    health_log: health_log.map(|l| Box::new(l.clone())),
                };
                (c, kind)
            }
            WireEvent::Log { c, log } => (c, EventKind::HealthLogRecorded { health_log_id: log }),
            WireEvent::Notification { c, notification } => {
                let row = rows
                    .notifications
                    .get(&notification)
                    .filter(|n| owned(&n.company_id, &c))?;
                let kind = EventKind::NotificationCreated {
                    notification: Box::new(row.clone()),
                };
                (c, kind)
            }
            WireEvent::WorkflowStatus {
                c,
                workflow,
                previous,
            } => {
                let row = rows
                    .workflows
                    .get(&workflow)
                    .filter(|w| owned(&w.company_id, &c))?;
                let kind = EventKind::WorkflowStatusChanged {
                    workflow: Box::new(row.clone()),
                    previous,
                };
                (c, kind)
            }
            WireEvent::Resync { c } => {
                let now = Instant::now();
                let recent = self
                    .resyncs
                    .get(&c)
                    .is_some_and(|at| now.duration_since(*at) < REMOTE_RESYNC_INTERVAL);
                if recent {
                    return None;
                }
                self.resyncs.insert(c.clone(), now);
                (c, EventKind::Resync)
            }
            WireEvent::Unknown => return None,
        };
        Some(Event {
            company_id: Some(c),
            kind,
        })
    }
}

fn company(event: &WireEvent) -> Option<&str> {
    match event {
        WireEvent::Run { c, .. }
        | WireEvent::Log { c, .. }
        | WireEvent::Notification { c, .. }
        | WireEvent::WorkflowStatus { c, .. }
        | WireEvent::Resync { c } => Some(c),
        WireEvent::Unknown => None,
    }
}

/// The rows a batch of remote events names, read once for every local subscriber.
#[derive(Default)]
struct Rows {
    runs: HashMap<String, domain::run::Run>,
    logs: HashMap<String, domain::health_log::HealthLog>,
    notifications: HashMap<String, domain::notification::Notification>,
    workflows: HashMap<String, domain::workflow::Workflow>,
}

impl Rows {
    async fn read(db: &Db, events: &[WireEvent]) -> crate::error::AppResult<Self> {
        let (mut runs, mut logs, mut notifications, mut workflows) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for event in events {
            match event {
                WireEvent::Run { run, log, .. } => {
                    runs.push(run.clone());
                    logs.extend(log.clone());
                }
                WireEvent::Notification { notification, .. } => {
                    notifications.push(notification.clone())
                }
                WireEvent::WorkflowStatus { workflow, .. } => workflows.push(workflow.clone()),
                WireEvent::Log { .. } | WireEvent::Resync { .. } | WireEvent::Unknown => {}
            }
        }
        let mut rows = Self::default();
        if !runs.is_empty() {
            rows.runs = by_id(domain::run::for_events(db, &runs).await?, |r| &r.id);
        }
        if !logs.is_empty() {
            rows.logs = by_id(domain::health_log::for_events(db, &logs).await?, |l| &l.id);
        }
        if !notifications.is_empty() {
            let found = domain::notification::for_events(db, &notifications).await?;
            rows.notifications = by_id(found, |n| &n.id);
        }
        if !workflows.is_empty() {
            rows.workflows = by_id(domain::workflow::for_events(db, &workflows).await?, |w| {
                &w.id
            });
        }
        Ok(rows)
    }
}

fn by_id<T>(rows: Vec<T>, id: impl Fn(&T) -> &String) -> HashMap<String, T> {
    rows.into_iter()
        .map(|row| (id(&row).clone(), row))
        .collect()
}

/// The envelope ids delivered lately. Bounded: a redelivery comes soon after the first
/// delivery (JetStream redelivers within seconds), so the newest ids are the ones to keep.
#[derive(Default)]
struct RecentEnvelopes {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentEnvelopes {
    const CAPACITY: usize = 16_384;

    /// Records an id; false when it was seen already.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        // Ids are UUIDs; anything longer is not ours, and is not kept.
        if id.len() > 64 {
            return true;
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        if self.order.len() > Self::CAPACITY
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::RecentEnvelopes;

    #[test]
    fn redelivered_envelopes_are_recognised_within_a_bounded_memory() {
        let mut seen = RecentEnvelopes::default();
        assert!(seen.insert("a"));
        assert!(!seen.insert("a"));
        for i in 0..40_000 {
            seen.insert(&i.to_string());
        }
        assert!(seen.ids.len() <= RecentEnvelopes::CAPACITY);
        assert!(seen.insert("a"), "the oldest ids are forgotten");
    }
}
