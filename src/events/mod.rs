//! Domain events and their delivery to subscribers.
//!
//! Writes publish events *after* their transaction commits. Every server instance has one
//! in-process [`EventBus`] (a tokio broadcast channel) that its subscriptions listen to.
//! On PostgreSQL the bus is also bridged to every other instance through LISTEN/NOTIFY
//! ([`postgres`]), so a subscriber on any instance sees every write on any instance.
//!
//! In-process events carry the rows subscribers show, so a subscriber never reads the
//! database per event. Between instances only ids travel, in signed envelopes ([`wire`]);
//! the receiving instance reads the rows once and hands them to all its subscribers.
//!
//! Delivery is at most once: an instance that crashes between commit and NOTIFY, or a
//! subscriber too slow to keep up, can miss an event. Subscriptions are built for that:
//! a subscriber that lagged, or whose instance lost its LISTEN connection, receives a
//! [`EventKind::Resync`] and answers with a fresh snapshot read from the database. Step
//! reports do not depend on the bus at all: [`log_stream`] follows them in the database in
//! commit order, and the bus only wakes it up.

pub mod log_stream;
pub mod postgres;
pub mod wire;

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::db::Outbox;
use crate::domain::Tenant;
pub use crate::domain::event::{Event, EventKind};
use crate::metrics::METRICS;

/// How many events a subscriber may fall behind before it must resynchronise.
const BUS_CAPACITY: usize = 4_096;

/// The in-process event bus, shared by everything in one server instance.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Arc<Event>>,
    /// Towards the PostgreSQL NOTIFY publisher, when there is one.
    remote: Option<mpsc::UnboundedSender<Arc<Event>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        Self {
            local: broadcast::channel(BUS_CAPACITY).0,
            remote: None,
        }
    }

    /// Publishes committed events to local subscribers and, on PostgreSQL, to the other
    /// instances.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            METRICS.events_published.inc();
            let event = Arc::new(event);
            if let Some(remote) = &self.remote {
                // Only fails once the publisher task is gone (shutdown).
                let _ = remote.send(event.clone());
            }
            // No receivers is fine: nobody is subscribed right now.
            let _ = self.local.send(event);
        }
    }

    /// Delivers events that arrived from another instance to local subscribers only.
    pub(crate) fn deliver_remote(&self, event: Event) {
        METRICS.events_received_remote.inc();
        let _ = self.local.send(Arc::new(event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.local.subscribe()
    }

    /// Local subscribers, for `/metrics`.
    pub fn subscriber_count(&self) -> usize {
        self.local.receiver_count()
    }
}

/// Units of work hand their committed events to the bus.
impl Outbox<EventKind> for EventBus {
    fn publish(&self, tenant: &Tenant, events: Vec<EventKind>) {
        EventBus::publish(
            self,
            events.into_iter().map(|kind| Event::new(tenant, kind)),
        );
    }
}
