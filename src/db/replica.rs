//! Read replicas (`DATABASE_READ_URL`): streaming standbys of the primary that serve the
//! reads of query operations and subscription snapshots (see [`super::Reads`]).
//!
//! A monitor task checks every replica every `--replica-check-interval-ms` on a connection
//! of its own (not the pool's, so its statements never count as served reads): how far its
//! replay is behind, and whether it answers at all. A replica is used only while its last
//! check passed and its lag is within `--replica-max-lag-ms`; otherwise, and whenever a
//! connection to it cannot be had, its reads go to the primary. `/readyz` and `/metrics`
//! show each replica's state and lag.
//!
//! Lag is what libpq-based tools measure: zero while the standby streams and has replayed
//! everything it received, otherwise the age of the last transaction it replayed. (An
//! idle primary sends no transactions, so "time since the last replayed commit" alone
//! would grow without bound on a standby that is perfectly current.)

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use diesel::sql_types::{Bool, Double, Nullable};
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::connect::PgConnector;
use crate::metrics::{METRICS, ReplicaLabels};

/// How long a read waits for a replica connection before it goes to the primary instead.
const CHECKOUT_TIMEOUT: Duration = Duration::from_millis(500);

/// Every configured replica.
pub struct Replicas {
    list: Vec<Replica>,
    next: AtomicUsize,
    max_lag: Duration,
}

pub struct Replica {
    connector: Arc<PgConnector>,
    pub(super) pool: Pool<AsyncPgConnection>,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: not used until the first check passes.
    Unknown,
    Up,
    /// Answers, but behind by more than the bound.
    Lagging,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Lagging => "lagging",
            Self::Down => "down",
        }
    }
}

#[derive(Debug, Clone)]
struct State {
    health: Health,
    lag: Option<Duration>,
    error: Option<String>,
}

/// One replica as `/readyz` reports it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    pub name: String,
    pub state: &'static str,
    pub lag_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Replicas {
    pub fn new(list: Vec<(Arc<PgConnector>, Pool<AsyncPgConnection>)>, max_lag: Duration) -> Self {
        Self {
            list: list
                .into_iter()
                .map(|(connector, pool)| Replica {
                    connector,
                    pool,
                    state: Mutex::new(State {
                        health: Health::Unknown,
                        lag: None,
                        error: None,
                    }),
                })
                .collect(),
            next: AtomicUsize::new(0),
            max_lag,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// A pooled connection to a usable replica (round robin), or `None`: the caller reads
    /// from the primary. A replica that cannot give one is marked down until its next
    /// check passes.
    pub async fn checkout(&self) -> Option<(Object<AsyncPgConnection>, &Replica)> {
        let count = self.list.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for offset in 0..count {
            let replica = &self.list[(start + offset) % count];
            if replica.health() != Health::Up {
                continue;
            }
            match tokio::time::timeout(CHECKOUT_TIMEOUT, replica.pool.get()).await {
                Ok(Ok(conn)) => return Some((conn, replica)),
                Ok(Err(error)) => replica.mark_down(error.to_string()),
                Err(_) => replica.mark_down("no connection within 500 ms".to_owned()),
            }
        }
        None
    }

    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.list
            .iter()
            .map(|replica| {
                let state = replica.lock().clone();
                ReplicaStatus {
                    name: replica.connector.name().to_owned(),
                    state: state.health.as_str(),
                    lag_ms: state
                        .lag
                        .map(|lag| u64::try_from(lag.as_millis()).unwrap_or(u64::MAX)),
                    error: state.error,
                }
            })
            .collect()
    }

    /// Checks every replica now and then every `interval`, for as long as the process runs.
    pub fn monitor(self: Arc<Self>, interval: Duration) {
        for index in 0..self.list.len() {
            let replicas = self.clone();
            tokio::spawn(async move {
                let mut conn: Option<AsyncPgConnection> = None;
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let replica = &replicas.list[index];
                    match replica.check(&mut conn).await {
                        Ok(lag) => replica.checked(lag, replicas.max_lag),
                        Err(error) => {
                            conn = None;
                            replica.mark_down(error);
                        }
                    }
                }
            });
        }
    }
}

impl Replica {
    pub fn name(&self) -> &str {
        self.connector.name()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A few plain fields replaced together; a panic cannot leave them half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn health(&self) -> Health {
        self.lock().health
    }

    fn labels(&self) -> ReplicaLabels {
        ReplicaLabels {
            replica: self.name().to_owned(),
        }
    }

    fn mark_down(&self, error: String) {
        let mut state = self.lock();
        if state.health != Health::Down {
            tracing::warn!(replica = %self.name(), %error, "read replica is down; its reads go to the primary");
        }
        state.health = Health::Down;
        state.error = Some(crate::config::redact_urls(&error));
        drop(state);
        METRICS.db_replica_up.get_or_create(&self.labels()).set(0);
    }

    fn checked(&self, lag: Duration, max_lag: Duration) {
        let health = if lag > max_lag {
            Health::Lagging
        } else {
            Health::Up
        };
        let mut state = self.lock();
        if state.health != health {
            match health {
                Health::Up => tracing::info!(replica = %self.name(), ?lag, "read replica in use"),
                _ => {
                    tracing::warn!(replica = %self.name(), ?lag, ?max_lag, "read replica lags; its reads go to the primary")
                }
            }
        }
        state.health = health;
        state.lag = Some(lag);
        state.error = None;
        drop(state);
        let labels = self.labels();
        METRICS
            .db_replica_up
            .get_or_create(&labels)
            .set(i64::from(health == Health::Up));
        METRICS
            .db_replica_lag_seconds
            .get_or_create(&labels)
            .set(lag.as_secs_f64());
    }

    /// The replica's replay lag, on the monitor's own connection.
    async fn check(&self, conn: &mut Option<AsyncPgConnection>) -> Result<Duration, String> {
        if conn.is_none() {
            let fresh = tokio::time::timeout(CHECK_TIMEOUT, self.connector.connect())
                .await
                .map_err(|_| "no connection within the check timeout".to_owned())?
                .map_err(|e| e.to_string())?;
            *conn = Some(fresh);
        }
        let Some(c) = conn.as_mut() else {
            return Err("no connection".to_owned());
        };
        let row: LagRow =
            tokio::time::timeout(CHECK_TIMEOUT, diesel::sql_query(LAG_QUERY).get_result(c))
                .await
                .map_err(|_| "the lag query did not answer within the check timeout".to_owned())?
                .map_err(|e| e.to_string())?;
        Ok(row.lag())
    }
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

const LAG_QUERY: &str = "SELECT pg_is_in_recovery() AS standby, \
     COALESCE(pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn(), false) AS replayed_all, \
     EXISTS (SELECT 1 FROM pg_stat_wal_receiver) AS streaming, \
     (EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()))::float8 \
       AS replay_age_seconds";

#[derive(diesel::QueryableByName)]
struct LagRow {
    #[diesel(sql_type = Bool)]
    standby: bool,
    #[diesel(sql_type = Bool)]
    replayed_all: bool,
    #[diesel(sql_type = Bool)]
    streaming: bool,
    #[diesel(sql_type = Nullable<Double>)]
    replay_age_seconds: Option<f64>,
}

impl LagRow {
    fn lag(&self) -> Duration {
        if !self.standby || (self.streaming && self.replayed_all) {
            return Duration::ZERO;
        }
        // Not streaming (or behind) and nothing replayed yet: as far behind as can be.
        match self.replay_age_seconds {
            Some(age) if age.is_finite() => Duration::from_secs_f64(age.max(0.0)),
            _ => Duration::MAX,
        }
    }
}
