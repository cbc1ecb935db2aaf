//! Sharing events between server instances through PostgreSQL LISTEN/NOTIFY (the default
//! transport on PostgreSQL).
//!
//! NOTIFY inside the writing transactions would serialise every commit on the database's
//! notification queue (measured here: 2,276 → 1,234 write tx/s at 32 clients). Instead
//! each instance runs one publisher task on its own connection that packs whatever events
//! are waiting into as few NOTIFYs as fit the 8,000-byte payload limit, and one listener
//! task that feeds other instances' events into the local bus. Both connections are made
//! like the pool's (`sslmode` included, `db::connect`).
//!
//! Each payload is a signed envelope of ids ([`super::wire`]) naming the instance it came
//! from, so an instance ignores its own events (already delivered locally), drops what
//! it cannot verify (counted in `stepwise_events_rejected_total`), and reads the rows the
//! ids name once per batch for all its subscribers ([`super::remote`]). Deploy with
//! `REVOKE CONNECT ON DATABASE ... FROM PUBLIC` all the same: the ids and company ids are
//! visible to any role that can LISTEN. When the listener loses its connection it
//! reconnects with backoff and then tells local subscribers to resynchronise, so a gap is
//! never silent.

use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;

use super::remote::Inbound;
use super::wire::{Sealer, pack};
use super::{Event, EventBus, EventKind, Link, Outgoing};
use crate::db::{Db, PgConnector};

const CHANNEL: &str = "stepwise_events";
/// PostgreSQL refuses payloads of 8,000 bytes or more; leave room for the envelope.
const MAX_PAYLOAD_BYTES: usize = 7_800;
/// How often an idle listener checks that its connection is still alive.
const LISTENER_HEALTH_CHECK: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl EventBus {
    /// A bus whose events also travel to (and arrive from) every other instance on the
    /// same PostgreSQL database. `secret` is the server secret every instance shares (the
    /// envelope key is derived from it); `db` reads the rows that arriving ids name.
    pub fn with_postgres(connector: Arc<PgConnector>, secret: &[u8], db: Db) -> Self {
        let (bus, outgoing, link) = Self::linked("postgres");
        let origin = crate::domain::new_id();
        let sealer = Arc::new(Sealer::new(secret));
        tokio::spawn(publish_loop(
            connector.clone(),
            origin.clone(),
            sealer.clone(),
            outgoing,
            link.clone(),
        ));
        let inbound = Inbound::new(origin, sealer, db, bus.clone());
        tokio::spawn(listen_loop(connector, inbound, bus.clone(), link));
        bus
    }
}

async fn publish_loop(
    connector: Arc<PgConnector>,
    origin: String,
    sealer: Arc<Sealer>,
    mut rx: mpsc::Receiver<Outgoing>,
    link: Arc<Link>,
) {
    let mut conn: Option<AsyncPgConnection> = None;
    let mut batch: Vec<Outgoing> = Vec::new();
    // Resyncs owed for lost events go out once the database is back, writes or not.
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            first = rx.recv() => match first {
                Some(first) => batch.push(first),
                None => return,
            },
            _ = flush.tick() => {}
        }
        // Everything already waiting goes out together: few NOTIFYs under load.
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        let last = batch.last().map_or(0, |o| o.seq);
        let resyncs = if link.is_up() {
            link.take_lost()
        } else {
            Vec::new()
        };
        let events: Vec<&Event> = resyncs
            .iter()
            .chain(batch.iter().map(|o| &*o.event))
            .collect();
        let mut sent = true;
        for sealed in pack(&origin, &sealer, events.iter().copied(), MAX_PAYLOAD_BYTES) {
            if !notify(&connector, &mut conn, &sealed.payload).await {
                sent = false;
            }
        }
        if !sent {
            link.keep_lost(&resyncs);
            for outgoing in &batch {
                link.lose(&outgoing.event);
            }
        }
        link.handed(last);
        batch.clear();
    }
}

/// Sends one NOTIFY, reconnecting once if the connection broke. Events that cannot be sent
/// are dropped with an error log; remote subscribers recover through snapshots.
async fn notify(
    connector: &PgConnector,
    conn: &mut Option<AsyncPgConnection>,
    payload: &str,
) -> bool {
    for attempt in 0..2 {
        if conn.is_none() {
            match connector.connect().await {
                Ok(fresh) => *conn = Some(fresh),
                Err(error) => {
                    tracing::error!(%error, "event publisher cannot connect to PostgreSQL");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let sent = diesel::sql_query("SELECT pg_notify($1, $2)")
            .bind::<Text, _>(CHANNEL)
            .bind::<Text, _>(payload)
            .execute(c)
            .await;
        match sent {
            Ok(_) => return true,
            Err(error) => {
                tracing::warn!(%error, attempt, "event NOTIFY failed; reconnecting");
                *conn = None;
            }
        }
    }
    tracing::error!(
        "dropped a batch of events for other instances; their subscribers will resynchronise"
    );
    false
}

async fn listen_loop(
    connector: Arc<PgConnector>,
    mut inbound: Inbound,
    bus: EventBus,
    link: Arc<Link>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let mut conn = match connect_listener(&connector).await {
            Ok(conn) => conn,
            Err(error) => {
                link.set_up(false);
                tracing::warn!(%error, ?backoff, "event listener cannot reach PostgreSQL; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        link.set_up(true);
        if connected_before {
            tracing::info!("event listener reconnected; asking subscribers to resynchronise");
            bus.deliver_remote(Event {
                company_id: None,
                kind: EventKind::Resync,
            });
        } else {
            tracing::info!("listening for events from other instances");
        }
        connected_before = true;
        receive(&mut conn, &mut inbound).await;
        link.set_up(false);
        tracing::warn!("event listener lost its PostgreSQL connection");
    }
}

async fn connect_listener(connector: &PgConnector) -> diesel::QueryResult<AsyncPgConnection> {
    let mut conn = connector
        .connect()
        .await
        .map_err(|e| diesel::result::Error::QueryBuilderError(e.into()))?;
    diesel::sql_query(format!("LISTEN {CHANNEL}"))
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// Delivers notifications until the connection fails.
async fn receive(conn: &mut AsyncPgConnection, inbound: &mut Inbound) {
    loop {
        let mut payloads = Vec::new();
        {
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            let idle = tokio::time::sleep(LISTENER_HEALTH_CHECK);
            tokio::pin!(idle);
            tokio::select! {
                item = notifications.next() => match item {
                    Some(Ok(notification)) => payloads.push(notification.payload),
                    Some(Err(_)) | None => return,
                },
                () = &mut idle => {}
            }
            // Whatever else already arrived is handled together (one read per kind).
            while let Some(Some(Ok(notification))) = notifications.next().now_or_never() {
                payloads.push(notification.payload);
                if payloads.len() >= 256 {
                    break;
                }
            }
        }
        if payloads.is_empty() {
            // Quiet for a while: make sure the connection is still there.
            if diesel::sql_query("SELECT 1").execute(conn).await.is_err() {
                return;
            }
            continue;
        }
        inbound.deliver(&payloads).await;
    }
}
