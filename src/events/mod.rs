//! Domain events and their delivery to subscribers.
//!
//! Writes publish events *after* their transaction commits. Every server instance has one
//! in-process [`EventBus`] (a tokio broadcast channel) that its subscriptions listen to.
//! With several instances the bus is also linked to every other instance, so a subscriber
//! on any instance sees every write on any instance, through one of two transports:
//! PostgreSQL LISTEN/NOTIFY ([`postgres`], the default on PostgreSQL) or NATS JetStream
//! ([`nats`], `STEPWISE_EVENT_BUS=nats://...`). On SQLite there is one instance and no
//! link.
//!
//! In-process events carry the rows subscribers show, so a subscriber never reads the
//! database per event. Between instances only ids travel, in signed, versioned envelopes
//! ([`wire`]); the receiving instance reads the rows once and hands them to all its
//! subscribers ([`remote`]). A transport only moves envelopes: a new event kind changes
//! `wire.rs` and `remote.rs`, never a transport.
//!
//! A write is answered once its events have left the instance ([`Outbox::handed_over`]):
//! NOTIFY sent, or stored by JetStream. So an answered write reaches every other instance
//! even if its own instance dies right after answering. While the link is down, writes are
//! not held up: their events are counted as lost and, once the link is back, the companies
//! concerned are told to resynchronise.
//!
//! Delivery is otherwise at most once: a subscriber too slow to keep up, or an instance
//! that lost its link, can miss an event. Subscriptions are built for that: they receive
//! an [`EventKind::Resync`] and answer with a fresh snapshot read from the database. Step
//! reports do not depend on the bus at all: [`log_stream`] follows them in the database in
//! commit order, and the bus only wakes it up.

pub mod log_stream;
pub mod nats;
pub mod postgres;
mod remote;
pub mod wire;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, mpsc, watch};

use crate::db::Outbox;
use crate::domain::Tenant;
pub use crate::domain::event::{Event, EventKind};
use crate::metrics::METRICS;

/// How many events a subscriber may fall behind before it must resynchronise.
const BUS_CAPACITY: usize = 4_096;

/// Events waiting to leave for the other instances; beyond this, new ones are dropped
/// (counted in `stepwise_events_lost_total`) and their companies resynchronised later.
const OUTBOUND_CAPACITY: usize = 65_536;
/// Companies remembered as having lost events, to be resynchronised; beyond this the
/// rest are dropped from the list (logged).
const MAX_LOST_COMPANIES: usize = 10_000;
/// The longest a write's answer waits for its events to leave the instance.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(1);

/// The in-process event bus, shared by everything in one server instance.
#[derive(Clone)]
pub struct EventBus {
    local: broadcast::Sender<Arc<Event>>,
    /// The link to the other instances, when there is one.
    remote: Option<Arc<Remote>>,
}

/// The sending half of the link to the other instances.
struct Remote {
    outbound: mpsc::Sender<Outgoing>,
    link: Arc<Link>,
}

/// A committed event on its way out, numbered in publishing order.
pub(crate) struct Outgoing {
    seq: u64,
    event: Arc<Event>,
}

/// The state of the link to the other instances, shared by the bus and its transport's
/// tasks.
pub(crate) struct Link {
    transport: &'static str,
    up: AtomicBool,
    /// The number of the last event handed to the transport's publisher.
    published: AtomicU64,
    /// The number of the last event the publisher is done with (sent, or given up).
    handed: watch::Sender<u64>,
    /// Companies whose events could not be sent.
    lost: Mutex<HashSet<String>>,
}

impl Link {
    fn new(transport: &'static str) -> Self {
        METRICS.event_bus_up.set(0);
        Self {
            transport,
            up: AtomicBool::new(false),
            published: AtomicU64::new(0),
            handed: watch::channel(0).0,
            lost: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    /// Records whether the transport can carry events right now.
    pub(crate) fn set_up(&self, up: bool) {
        let was = self.up.swap(up, Ordering::SeqCst);
        METRICS.event_bus_up.set(i64::from(up));
        if was != up {
            if up {
                tracing::info!(transport = self.transport, "event bus link is up");
            } else {
                tracing::warn!(
                    transport = self.transport,
                    "event bus link is down; writes go on, subscribers elsewhere resynchronise \
                     when it is back"
                );
            }
        }
    }

    /// The publisher is done with every event up to `seq`.
    pub(crate) fn handed(&self, seq: u64) {
        self.handed.send_if_modified(|handed| {
            let moved = seq > *handed;
            *handed = (*handed).max(seq);
            moved
        });
    }

    /// `event` could not be sent: its company resynchronises once the link is back.
    pub(crate) fn lose(&self, event: &Event) {
        METRICS.events_lost.inc();
        let Some(company) = &event.company_id else {
            return;
        };
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        if lost.len() < MAX_LOST_COMPANIES {
            lost.insert(company.clone());
        } else if !lost.contains(company) {
            tracing::error!(
                company = %company,
                "too many companies lost events at once; this one is not resynchronised"
            );
        }
    }

    /// The companies that lost events since the last call, as resync events to send.
    pub(crate) fn take_lost(&self) -> Vec<Event> {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.drain()
            .map(|company| Event {
                company_id: Some(company),
                kind: EventKind::Resync,
            })
            .collect()
    }

    /// Puts resyncs that could not be sent back on the list.
    pub(crate) fn keep_lost(&self, events: &[Event]) {
        for event in events {
            self.lose(event);
        }
    }
}

/// The state of the event bus, for `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BusStatus {
    /// `local`, `postgres` or `nats`.
    pub transport: &'static str,
    /// `up`, or `down` while the link to the other instances is broken (this instance
    /// still serves reads and writes; subscribers resynchronise when it is back).
    pub state: &'static str,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus for this instance alone.
    pub fn new() -> Self {
        METRICS.event_bus_up.set(1);
        Self {
            local: broadcast::channel(BUS_CAPACITY).0,
            remote: None,
        }
    }

    /// A bus linked to other instances by a transport: the transport's publisher receives
    /// what `publish` sends out, and the link reports its state.
    pub(crate) fn linked(transport: &'static str) -> (Self, mpsc::Receiver<Outgoing>, Arc<Link>) {
        let link = Arc::new(Link::new(transport));
        let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        let bus = Self {
            local: broadcast::channel(BUS_CAPACITY).0,
            remote: Some(Arc::new(Remote {
                outbound,
                link: link.clone(),
            })),
        };
        (bus, receiver, link)
    }

    /// Publishes committed events to local subscribers and to the other instances.
    pub fn publish(&self, events: impl IntoIterator<Item = Event>) {
        for event in events {
            METRICS.events_published.inc();
            let event = Arc::new(event);
            if let Some(remote) = &self.remote {
                let seq = remote.link.published.fetch_add(1, Ordering::SeqCst) + 1;
                let outgoing = Outgoing {
                    seq,
                    event: event.clone(),
                };
                if let Err(mpsc::error::TrySendError::Full(outgoing)) =
                    remote.outbound.try_send(outgoing)
                {
                    remote.link.lose(&outgoing.event);
                }
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

    /// The transport and whether its link is up.
    pub fn status(&self) -> BusStatus {
        match &self.remote {
            None => BusStatus {
                transport: "local",
                state: "up",
            },
            Some(remote) => BusStatus {
                transport: remote.link.transport,
                state: if remote.link.is_up() { "up" } else { "down" },
            },
        }
    }

    /// Waits until every event published so far has left for the other instances, at most
    /// [`HANDOVER_TIMEOUT`], and not at all while the link is down.
    async fn wait_handed_over(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        let target = remote.link.published.load(Ordering::SeqCst);
        if !remote.link.is_up() {
            return;
        }
        let mut handed = remote.link.handed.subscribe();
        let done = handed.wait_for(|handed| *handed >= target);
        if tokio::time::timeout(HANDOVER_TIMEOUT, done).await.is_err() {
            tracing::debug!("a write's events did not leave within the handover timeout");
        }
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

    fn handed_over(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.wait_handed_over())
    }
}
