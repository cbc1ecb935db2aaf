//! Sharing events between server instances through NATS JetStream
//! (`STEPWISE_EVENT_BUS=nats://host:4222`).
//!
//! NOTIFY takes a database-wide lock at commit and wakes every listener for every event;
//! a broker takes that work off PostgreSQL. Nothing is sent through the database on the
//! write path: each instance's publisher packs committed events into signed envelopes
//! ([`super::wire`], the same as over NOTIFY) and publishes them, one subject per company
//! (`<stream>.<company id>`), to a JetStream stream (created when missing: file storage,
//! kept 15 minutes, at most 256 MiB). A write is answered once JetStream has stored its
//! events (see [`super::Outbox::handed_over`]), so an answered write reaches every instance
//! even if its own dies right after.
//!
//! Each instance reads the stream through an ephemeral ordered consumer of its own,
//! starting at the stream's end when it starts. After a disconnection the consumer resumes
//! after the last message it received, so what other instances published meanwhile still
//! arrives; an envelope received twice is delivered once (envelope ids,
//! [`super::remote`]). Envelopes the instance itself published are skipped (already
//! delivered locally).
//!
//! While NATS is unreachable, writes go on: their events are counted as lost
//! (`stepwise_events_lost_total`), `/readyz` says the bus is down, and when the link is
//! back every local subscriber resynchronises (snapshots; `healthLogRecorded` reads the
//! commit-ordered table anyway), and the instance publishes a resync for every company
//! whose events it could not send, so subscribers on the other instances do the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;

use super::remote::Inbound;
use super::wire::{Sealer, pack};
use super::{Event, EventBus, EventKind, Link, Outgoing};
use crate::config::redact_urls;
use crate::db::Db;
use crate::metrics::METRICS;

/// Largest envelope published (NATS's default message limit is 1 MiB).
const MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// How long a publish waits for JetStream's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the stream keeps events: enough for an instance to resume after a
/// disconnection; a longer gap is covered by resynchronising.
const STREAM_MAX_AGE: Duration = Duration::from_secs(15 * 60);
const STREAM_MAX_BYTES: i64 = 256 * 1024 * 1024;
/// Within this window JetStream stores an envelope published twice (a retry) once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl EventBus {
    /// A bus whose events travel to (and arrive from) every other instance through the
    /// JetStream stream `stream` on the NATS servers `servers` (comma-separated URLs).
    /// Connecting happens in the background, so the server starts while NATS is down.
    pub fn with_nats(servers: &str, stream: &str, secret: &[u8], db: Db) -> anyhow::Result<Self> {
        let addresses = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<async_nats::ServerAddr>().map_err(|e| {
                    anyhow::anyhow!(
                        "STEPWISE_EVENT_BUS: {:?} is not a NATS URL: {e}",
                        redact_urls(s)
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if addresses.is_empty() {
            anyhow::bail!("STEPWISE_EVENT_BUS names no NATS server");
        }
        let (bus, outgoing, link) = Self::linked("nats");
        let origin = crate::domain::new_id();
        let sealer = Arc::new(Sealer::new(secret));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let options = async_nats::ConnectOptions::new()
            .name("stepwise")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let events_tx = events_tx.clone();
                async move {
                    let _ = events_tx.send(event);
                }
            });
        let inbound = Inbound::new(origin.clone(), sealer.clone(), db, bus.clone());
        let stream = stream.to_owned();
        let servers_text = redact_urls(servers);
        let bus_for_task = bus.clone();
        tokio::spawn(async move {
            let client = match options.connect(addresses).await {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!(%error, servers = %servers_text, "cannot set up the NATS client; events stay on this instance");
                    return;
                }
            };
            let js = jetstream::new(client.clone());
            tokio::spawn(publish_loop(
                js.clone(),
                client.clone(),
                stream.clone(),
                origin,
                sealer,
                outgoing,
                link.clone(),
            ));
            consume(js, client, stream, inbound, bus_for_task, link, events_rx).await;
        });
        Ok(bus)
    }
}

fn stream_config(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.*")],
        max_age: STREAM_MAX_AGE,
        max_bytes: STREAM_MAX_BYTES,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// A company's subject; `None` for an id that is not a single subject token (never one
/// of ours: company ids are UUIDs).
fn subject(stream: &str, company: &str) -> Option<String> {
    let token_ok = !company.is_empty()
        && company.len() <= 64
        && company
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    token_ok.then(|| format!("{stream}.{company}"))
}

fn connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

async fn publish_loop(
    js: jetstream::Context,
    client: async_nats::Client,
    stream: String,
    origin: String,
    sealer: Arc<Sealer>,
    mut rx: mpsc::Receiver<Outgoing>,
    link: Arc<Link>,
) {
    let mut batch: Vec<Outgoing> = Vec::new();
    // Resyncs owed for lost events go out once the link is back, writes or not.
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            first = rx.recv() => match first {
                Some(first) => batch.push(first),
                None => return,
            },
            _ = flush.tick() => {}
        }
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        let last = batch.last().map_or(0, |o| o.seq);
        if !link.is_up() || !connected(&client) {
            // Nobody waits for a bus that is down: the writes were answered already.
            for outgoing in &batch {
                link.lose(&outgoing.event);
            }
        } else {
            // Resyncs for what was lost before go first, each on its company's subject.
            let resyncs = link.take_lost();
            let mut by_company: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
            for event in resyncs.iter().chain(batch.iter().map(|o| &*o.event)) {
                if let Some(company) = event.company_id.as_deref() {
                    by_company.entry(company).or_default().push(event);
                }
            }
            for (company, events) in by_company {
                let Some(subject) = subject(&stream, company) else {
                    continue;
                };
                for sealed in pack(&origin, &sealer, events.iter().copied(), MAX_ENVELOPE_BYTES) {
                    if let Err(error) = publish(&js, &subject, sealed.id, sealed.payload).await {
                        tracing::warn!(%error, "an event envelope was not stored by JetStream");
                        for event in &events {
                            link.lose(event);
                        }
                        break;
                    }
                }
            }
        }
        link.handed(last);
        batch.clear();
    }
}

/// Publishes one envelope and waits for JetStream to store it.
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    id: String,
    payload: String,
) -> Result<(), String> {
    let message = jetstream::message::PublishMessage::build()
        .payload(payload.into())
        .message_id(id);
    let sent = tokio::time::timeout(PUBLISH_TIMEOUT, async {
        js.send_publish(subject.to_owned(), message)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    match sent {
        Ok(Ok(_ack)) => Ok(()),
        Ok(Err(error)) => Err(error),
        Err(_) => Err("no acknowledgement within 2 s".to_owned()),
    }
}

/// Keeps this instance's consumer of the stream going for as long as the process runs,
/// and the link's state current.
async fn consume(
    js: jetstream::Context,
    client: async_nats::Client,
    stream_name: String,
    mut inbound: Inbound,
    bus: EventBus,
    link: Arc<Link>,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut started_before = false;
    loop {
        let (messages, created, start) = match open(&js, &stream_name).await {
            Ok(opened) => opened,
            Err(error) => {
                link.set_up(false);
                tracing::warn!(%error, ?backoff, "cannot open the JetStream event stream; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        link.set_up(connected(&client));
        if started_before {
            // Whatever was published while there was no consumer is gone for this
            // instance: its subscribers re-read their state.
            resync_everyone(&bus);
        } else {
            tracing::info!(stream = %stream_name, "receiving events from other instances through NATS JetStream");
        }
        started_before = true;
        let mut messages = std::pin::pin!(messages);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(Ok(message)) => {
                        let mut payloads = Vec::new();
                        take(&message, start, &mut payloads);
                        // Whatever else already arrived is handled together.
                        while payloads.len() < 256 {
                            match messages.next().now_or_never() {
                                Some(Some(Ok(more))) => take(&more, start, &mut payloads),
                                _ => break,
                            }
                        }
                        if !payloads.is_empty() {
                            inbound.deliver(&payloads).await;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the JetStream consumer reported an error");
                    }
                    None => {
                        tracing::warn!("the JetStream consumer ended; opening a new one");
                        break;
                    }
                },
                event = events.recv() => match event {
                    Some(async_nats::Event::Disconnected) => link.set_up(false),
                    Some(async_nats::Event::Connected) => {
                        // The stream may be new (NATS restarted without its storage): then
                        // the consumer's position means nothing and a fresh one is needed.
                        match js.get_or_create_stream(stream_config(&stream_name)).await {
                            Ok(mut stream) => {
                                let same = stream.info().await.is_ok_and(|info| info.created.to_string() == created);
                                if !same {
                                    tracing::warn!("the JetStream event stream was recreated; opening a new consumer");
                                    break;
                                }
                            }
                            Err(error) => {
                                tracing::warn!(%error, "the JetStream event stream is unavailable");
                                break;
                            }
                        }
                        link.set_up(true);
                        // The consumer resumes after its last message, but events the
                        // other side could not publish meanwhile are not in the stream.
                        resync_everyone(&bus);
                    }
                    Some(other) => tracing::debug!(event = %other, "NATS client event"),
                    // The client is gone; nothing more will be heard.
                    None => return,
                },
            }
        }
        link.set_up(false);
    }
}

/// The stream (created when missing), an ordered consumer starting after its current
/// end, the stream's creation time and that end.
async fn open(
    js: &jetstream::Context,
    name: &str,
) -> Result<(consumer::push::Ordered, String, u64), String> {
    let mut stream = js
        .get_or_create_stream(stream_config(name))
        .await
        .map_err(|e| e.to_string())?;
    let info = stream.info().await.map_err(|e| e.to_string())?;
    let (created, last) = (info.created.to_string(), info.state.last_sequence);
    let consumer = stream
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: js.client().new_inbox(),
            filter_subject: format!("{name}.*"),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: last + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let messages = consumer.messages().await.map_err(|e| e.to_string())?;
    Ok((messages, created, last))
}

/// Adds a message's payload, unless it is older than the consumer's start (an ordered
/// consumer recreated before it received anything starts from the stream's beginning).
fn take(message: &jetstream::Message, start: u64, payloads: &mut Vec<String>) {
    if message
        .info()
        .is_ok_and(|info| info.stream_sequence <= start)
    {
        return;
    }
    match std::str::from_utf8(&message.payload) {
        Ok(text) => payloads.push(text.to_owned()),
        Err(_) => {
            METRICS.reject_event("unsigned");
            tracing::warn!("dropped an event message that is not text");
        }
    }
}

fn resync_everyone(bus: &EventBus) {
    bus.deliver_remote(Event {
        company_id: None,
        kind: EventKind::Resync,
    });
}

#[cfg(test)]
mod tests {
    use super::subject;

    #[test]
    fn subjects_are_one_token_per_company() {
        assert_eq!(
            subject("stepwise_events", "0190f000-0000-7000-8000-000000000000").as_deref(),
            Some("stepwise_events.0190f000-0000-7000-8000-000000000000")
        );
        assert_eq!(subject("s", "a.b"), None);
        assert_eq!(subject("s", ">"), None);
        assert_eq!(subject("s", ""), None);
    }
}
