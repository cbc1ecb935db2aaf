//! Database access for both backends: the pools, and the unit of work every query runs in.
//!
//! diesel-async has no `MultiConnection`, so [`Db`] is an enum over two pools and a unit of
//! work ([`Tx`], module `uow`) holds a connection of either; it runs each query on the one it
//! holds, so every query is written once and type-checked for both. Domain code never sees
//! a connection: it reads with [`Db::read`] and writes with [`Db::write`] /
//! [`Db::write_with_events`] (see the module docs of `uow` for the rules: tenant-scoped
//! tables, inserts that take the company from the tenant, events after commit, row locks).
//!
//! One request may hold only a few connections at a time ([`Db::for_request`]): nested
//! lists resolve concurrently, and without a share one deep query could take every pooled
//! connection while other companies' requests time out behind it.
//!
//! SQLite allows one writer at a time. Instead of letting concurrent write transactions
//! collide ("database is locked" when a deferred transaction upgrades), [`Db`] hands out
//! SQLite write connections behind a one-permit semaphore; readers are never blocked (WAL).

pub mod connect;
pub mod expr;
mod ids;
pub mod migrations;
pub mod origin;
pub mod partition;
mod replica;
pub mod report;
pub mod retention;
pub mod schema;
pub mod sql;
pub mod statistics;
pub mod text_enum;
mod uow;
pub mod visibility;

use uow::TxConn;

pub use connect::{PgConnector, SslMode};
pub use ids::TableName;
pub use origin::{Actor, Origin};
pub use replica::ReplicaStatus;
use replica::Replicas;

pub use sql::TenantStatement;
pub use uow::{
    BeforeCommit, Columns, CompanyWide, IntoWork, Keyset, Lock, NoEvents, Outbox, Scoped, Tenant,
    TenantRow, TenantTable, Tx, Unscoped, Work,
};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use diesel::SqliteConnection;
use diesel::connection::{Instrumentation, InstrumentationEvent};

use crate::metrics::METRICS;
use diesel_async::pooled_connection::deadpool::{Object, Pool, PoolError};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::sync_connection_wrapper::SyncConnectionWrapper;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::FutureExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{DatabaseArgs, DatabaseUrl};
use crate::error::{AppError, AppResult};

/// SQLite as diesel-async drives it: the sync connection on a blocking thread.
pub type SqliteConn = SyncConnectionWrapper<SqliteConnection>;

/// Per-connection settings for SQLite: WAL so readers never block the writer, enforced
/// foreign keys (off by default in SQLite!), a wait instead of an instant "busy" error,
/// and NORMAL sync, which is durable in WAL mode except across power loss.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; \
     PRAGMA busy_timeout = 5000; PRAGMA synchronous = NORMAL;";

/// Per-connection settings for PostgreSQL, visible in `pg_stat_activity`.
const POSTGRES_SETUP: &str = "SET application_name = 'stepwise'; SET TIME ZONE 'UTC';";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The connection pool, for whichever backend `DATABASE_URL` named.
#[derive(Clone)]
pub struct Db {
    pools: Pools,
    /// For a request's handle: the connections it may hold at once.
    share: Option<Arc<Semaphore>>,
    /// Where this handle's reads ([`Db::read`]) go; writes always go to the primary.
    reads: Reads,
    /// For a request's handle: who acts and from where (see [`origin`]).
    origin: Option<origin::SharedOrigin>,
}

/// Where a handle's reads go. Only query operations and subscription snapshots read from
/// a replica ([`Db::reading_from`]); a mutation, and every read inside its answer, uses
/// the primary, so what it wrote is what it shows. Without a usable replica (none
/// configured, lagging, down) replica reads go to the primary too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    Primary,
    Replica,
}

#[derive(Clone)]
enum Pools {
    Sqlite {
        pool: Pool<SqliteConn>,
        writer: Arc<Semaphore>,
        acquire_timeout: Duration,
    },
    Postgres {
        pool: Pool<AsyncPgConnection>,
        /// The primary's connector, for connections outside the pool (the event bus).
        connector: Arc<PgConnector>,
        replicas: Arc<Replicas>,
    },
}

/// A pooled connection, for a unit of work that reads.
// Lives on the stack for one query; boxing the larger variant would allocate per query.
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    Sqlite(Object<SqliteConn>, Share),
    Postgres(Object<AsyncPgConnection>, Share),
}

/// A connection allowed to write; on SQLite it holds the single writer permit.
#[allow(clippy::large_enum_variant)] // as for `Conn`
pub enum WriteConn {
    Sqlite(OwnedSemaphorePermit, Object<SqliteConn>, Share),
    Postgres(Object<AsyncPgConnection>, Share),
}

/// A request's claim on one of its connections; released with the connection.
pub struct Share(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// What a unit of work holds besides its connection: SQLite's writer permit (for a write)
/// and the request's share of the pool, both released when it is dropped.
struct Held(
    #[allow(dead_code)] Option<OwnedSemaphorePermit>,
    #[allow(dead_code)] Share,
);

impl Db {
    /// Builds the pool. Connections are opened lazily, so this succeeds while the database
    /// is down; [`Db::ping`] tells whether it is reachable.
    pub fn connect(args: &DatabaseArgs) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(&args.database_url)?;
        let timeout = args.acquire_timeout();
        let size = args.pool_size.max(1);
        let pools = match url {
            DatabaseUrl::Sqlite(path) => {
                if !args.read_urls().is_empty() {
                    anyhow::bail!(
                        "DATABASE_READ_URL: read replicas are for PostgreSQL; an SQLite \
                         database has none"
                    );
                }
                create_sqlite_file(&path)?;
                warn_if_readable_by_others(&path);
                let mut config = ManagerConfig::<SqliteConn>::default();
                config.recycling_method = RecyclingMethod::Fast;
                config.custom_setup = Box::new(|url| establish_sqlite(url).boxed());
                let manager =
                    AsyncDieselConnectionManager::new_with_config(path.to_string_lossy(), config);
                let pool = Pool::builder(manager)
                    .max_size(size)
                    .wait_timeout(Some(timeout))
                    .create_timeout(Some(timeout))
                    .runtime(deadpool::Runtime::Tokio1)
                    .build()
                    .context("building the SQLite pool")?;
                Pools::Sqlite {
                    pool,
                    writer: Arc::new(Semaphore::new(1)),
                    acquire_timeout: timeout,
                }
            }
            DatabaseUrl::Postgres(url) => {
                let connector = Arc::new(PgConnector::parse(&url)?);
                let pool = postgres_pool(connector.clone(), PRIMARY, size, timeout)?;
                let mut replicas = Vec::new();
                for (index, url) in args.read_urls().iter().enumerate() {
                    let replica = Arc::new(
                        PgConnector::parse(url)
                            .with_context(|| format!("DATABASE_READ_URL entry {}", index + 1))?,
                    );
                    let label = replica.name().to_owned();
                    let pool = postgres_pool(replica.clone(), &label, size, timeout)?;
                    replicas.push((replica, pool));
                }
                let replicas = Arc::new(Replicas::new(replicas, args.replica_max_lag()));
                Pools::Postgres {
                    pool,
                    connector,
                    replicas,
                }
            }
        };
        Ok(Self {
            pools,
            share: None,
            reads: Reads::Primary,
            origin: None,
        })
    }

    /// This handle with its reads going to `reads` (same pool, same request share).
    pub fn reading_from(&self, reads: Reads) -> Self {
        Self {
            pools: self.pools.clone(),
            share: self.share.clone(),
            reads,
            origin: self.origin.clone(),
        }
    }

    /// Starts checking the read replicas' lag and reachability (`serve` only).
    pub fn monitor_replicas(&self, interval: Duration) {
        if let Pools::Postgres { replicas, .. } = &self.pools
            && !replicas.is_empty()
        {
            replicas.clone().monitor(interval);
        }
    }

    /// Each read replica's state, for `/readyz`.
    pub fn replica_status(&self) -> Vec<ReplicaStatus> {
        match &self.pools {
            Pools::Postgres { replicas, .. } => replicas.status(),
            Pools::Sqlite { .. } => Vec::new(),
        }
    }

    /// How connections to the primary PostgreSQL are made (`None` on SQLite).
    pub fn pg_connector(&self) -> Option<Arc<PgConnector>> {
        match &self.pools {
            Pools::Postgres { connector, .. } => Some(connector.clone()),
            Pools::Sqlite { .. } => None,
        }
    }

    /// A handle for one request (or one WebSocket connection) that holds at most
    /// `max_connections` pooled connections at once; further queries of the same request
    /// wait for one of its own to come back, never for other requests' connections.
    pub fn for_request(&self, max_connections: usize) -> Self {
        Self {
            pools: self.pools.clone(),
            share: Some(Arc::new(Semaphore::new(max_connections.max(1)))),
            reads: self.reads,
            origin: self.origin.clone(),
        }
    }

    /// This handle, for work done on behalf of `origin`: every unit of work made through
    /// it knows who acts and from where ([`Tx::origin`]).
    pub fn with_origin(&self, origin: Origin) -> Self {
        Self {
            pools: self.pools.clone(),
            share: self.share.clone(),
            reads: self.reads,
            origin: Some(Arc::new(origin)),
        }
    }

    fn acquire_timeout(&self) -> Duration {
        match &self.pools {
            Pools::Sqlite {
                acquire_timeout, ..
            } => *acquire_timeout,
            Pools::Postgres { pool, .. } => pool.timeouts().wait.unwrap_or(POOL_RETRY_AFTER),
        }
    }

    /// Waits for this handle's share of the pool, if it has one.
    async fn share(&self) -> AppResult<Share> {
        let Some(share) = &self.share else {
            return Ok(Share(None));
        };
        match tokio::time::timeout(self.acquire_timeout(), share.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Share(Some(permit))),
            // The semaphore is never closed; a timeout means this request's own queries
            // kept every connection it may hold busy for the whole wait.
            Ok(Err(_)) | Err(_) => Err(AppError::Unavailable {
                message: "this request is waiting on too many database queries of its own; \
                          ask for less at once",
                retry_after: POOL_RETRY_AFTER,
            }),
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pools {
            Pools::Sqlite { .. } => Backend::Sqlite,
            Pools::Postgres { .. } => Backend::Postgres,
        }
    }

    /// Connections in the pool and how many of them are idle.
    pub fn pool_status(&self) -> (usize, usize) {
        let status = match &self.pools {
            Pools::Sqlite { pool, .. } => pool.status(),
            Pools::Postgres { pool, .. } => pool.status(),
        };
        (status.size, status.available)
    }

    /// A connection for reads (and single-statement writes that cannot conflict).
    pub async fn conn(&self) -> AppResult<Conn> {
        let share = self.share().await?;
        Ok(match &self.pools {
            Pools::Sqlite { pool, .. } => {
                Conn::Sqlite(pool.get().await.map_err(pool_error)?, share)
            }
            Pools::Postgres { pool, replicas, .. } => {
                if self.reads == Reads::Replica
                    && let Some((conn, _)) = replicas.checkout().await
                {
                    return Ok(Conn::Postgres(conn, share));
                }
                Conn::Postgres(pool.get().await.map_err(pool_error)?, share)
            }
        })
    }

    /// A connection for a write transaction.
    pub async fn write_conn(&self) -> AppResult<WriteConn> {
        let share = self.share().await?;
        Ok(match &self.pools {
            Pools::Sqlite {
                pool,
                writer,
                acquire_timeout,
            } => {
                let permit = tokio::time::timeout(*acquire_timeout, writer.clone().acquire_owned())
                    .await
                    .map_err(|_| {
                        tracing::warn!("timed out waiting for the SQLite writer");
                        AppError::Unavailable {
                            message: "the database is busy; try again shortly",
                            retry_after: POOL_RETRY_AFTER,
                        }
                    })?
                    .map_err(AppError::internal)?;
                WriteConn::Sqlite(permit, pool.get().await.map_err(pool_error)?, share)
            }
            Pools::Postgres { pool, .. } => {
                WriteConn::Postgres(pool.get().await.map_err(pool_error)?, share)
            }
        })
    }

    /// A unit of work reading the tenant's data, on a pooled connection outside any
    /// transaction; the connection goes back to the pool when it is dropped.
    ///
    /// ```text
    /// let mut tx = db.read(&tenant).await?;
    /// let runs: Vec<Run> = tx.load(tx.runs().filter(..).select(Run::columns())).await?;
    /// ```
    pub async fn read(&self, tenant: &Tenant) -> AppResult<Tx<NoEvents>> {
        Ok(match self.conn().await? {
            Conn::Sqlite(pooled, share) => Tx::new(
                TxConn::Sqlite(pooled),
                Held(None, share),
                tenant.clone(),
                self.origin.clone(),
            ),
            Conn::Postgres(pooled, share) => Tx::new(
                TxConn::Postgres(pooled),
                Held(None, share),
                tenant.clone(),
                self.origin.clone(),
            ),
        })
    }

    /// Reads across companies (sign-in by email, sweepers, events from other instances):
    /// a unit of work for no company, whose tables are reached through
    /// [`Tx::unscoped`]. Explicit on purpose; grep for `unscoped`.
    pub async fn read_unscoped(&self) -> AppResult<Tx<NoEvents>> {
        self.read(&Tenant::nobody()).await
    }

    /// Runs `work` as one transaction for the tenant: committed when it answers `Ok`,
    /// rolled back on `Err`.
    ///
    /// ```text
    /// db.write(&tenant, |tx| rename(tx, workflow_id, &name).into_work()).await
    /// ```
    ///
    /// `work` is usually a domain function taking the unit of work first; `into_work`
    /// boxes its future (see [`Work`] for why). On SQLite it runs as the single writer
    /// (`BEGIN IMMEDIATE`). On PostgreSQL a transaction aborted by a deadlock or a
    /// serialization failure changed nothing and runs again, up to
    /// [`CONTENTION_RETRIES`] times after a short randomised pause; past that the caller
    /// gets the retryable UNAVAILABLE. `work` may therefore run more than once: it must
    /// do nothing outside the database.
    pub async fn write<'o, T, F>(&self, tenant: &Tenant, work: F) -> AppResult<T>
    where
        F: for<'t> FnMut(&'t mut Tx<NoEvents>) -> Work<'o, 't, T>,
    {
        self.transact(tenant, None, work).await
    }

    /// [`Db::write`] for a unit of work that publishes events: those of the attempt that
    /// committed go to `outbox` after the commit; a rollback publishes nothing.
    pub async fn write_with_events<'o, T, E: Send, F>(
        &self,
        tenant: &Tenant,
        outbox: &dyn Outbox<E>,
        work: F,
    ) -> AppResult<T>
    where
        F: for<'t> FnMut(&'t mut Tx<E>) -> Work<'o, 't, T>,
    {
        self.transact(tenant, Some(outbox), work).await
    }

    /// A write across companies (data migrations): `work` reaches tables only through
    /// [`Tx::unscoped`].
    pub async fn write_unscoped<'o, T, F>(&self, work: F) -> AppResult<T>
    where
        F: for<'t> FnMut(&'t mut Tx<NoEvents>) -> Work<'o, 't, T>,
    {
        self.transact(&Tenant::nobody(), None, work).await
    }

    async fn transact<'o, T, E: Send, F>(
        &self,
        tenant: &Tenant,
        outbox: Option<&dyn Outbox<E>>,
        mut work: F,
    ) -> AppResult<T>
    where
        F: for<'t> FnMut(&'t mut Tx<E>) -> Work<'o, 't, T>,
    {
        let mut tx = match self.write_conn().await? {
            WriteConn::Sqlite(permit, pooled, share) => Tx::new(
                TxConn::Sqlite(pooled),
                Held(Some(permit), share),
                tenant.clone(),
                self.origin.clone(),
            ),
            WriteConn::Postgres(pooled, share) => Tx::new(
                TxConn::Postgres(pooled),
                Held(None, share),
                tenant.clone(),
                self.origin.clone(),
            ),
        };
        let mut attempt = 0u32;
        loop {
            begin(tx.conn()).await?;
            tx.start_attempt();
            let mut result = work(&mut tx).run().await;
            // What the body registered to do before the commit, in the same transaction.
            while result.is_ok() {
                let Some(before_commit) = tx.next_before_commit() else {
                    break;
                };
                if let Err(error) = before_commit(&mut tx).run().await {
                    result = Err(error);
                }
            }
            let events = tx.take_events();
            let publishes = result.is_ok() && !events.is_empty();
            match finish(tx.conn(), tenant, result, events, outbox).await {
                // Only PostgreSQL aborts a transaction for contention; SQLite's single
                // writer never collides.
                Err(AppError::Contention(_)) if attempt < CONTENTION_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(contention_pause(attempt)).await;
                }
                other => {
                    // Answered only once its events have left for the other instances
                    // (or the bus is down), with the connection already back in the pool.
                    if let (Ok(_), true, Some(outbox)) = (&other, publishes, outbox) {
                        drop(tx);
                        outbox.handed_over().await;
                    }
                    return other;
                }
            }
        }
    }

    /// Runs `statement`, a whole write in one statement (a data-modifying CTE such as
    /// [`report::StepReport`]), for the tenant, on its own: PostgreSQL runs a single
    /// statement atomically, so no BEGIN and COMMIT are sent and the write costs one round
    /// trip. The statement is prepared once per connection and reused (see
    /// [`sql::Prepared`]). Like [`Db::write`], an attempt aborted by a deadlock or a
    /// serialization failure changed nothing and runs again, then answers UNAVAILABLE.
    ///
    /// No events are recorded here: the caller publishes what the answer says happened,
    /// after this returns (the statement has committed by then).
    pub async fn write_statement<R>(
        &self,
        tenant: &Tenant,
        statement: &impl TenantStatement,
    ) -> AppResult<Vec<R>>
    where
        R: diesel::QueryableByName<diesel::pg::Pg>
            + diesel::QueryableByName<diesel::sqlite::Sqlite>
            + Send
            + 'static,
    {
        use diesel_async::RunQueryDsl as _;
        let scope = sql::TenantScope {
            company: tenant.id(),
            member: tenant.restricted_to(),
        };
        let backend = self.backend();
        let mut attempt = 0u32;
        // Held for every attempt: SQLite's writer permit, and the request's share.
        let mut conn = self.write_conn().await?;
        loop {
            let query = statement.statement(&scope, backend).into_prepared();
            let result: Result<Vec<R>, diesel::result::Error> = match &mut conn {
                WriteConn::Postgres(pooled, _) => {
                    let c: &mut AsyncPgConnection = pooled;
                    query.load(c).await
                }
                WriteConn::Sqlite(_, pooled, _) => {
                    let c: &mut SqliteConn = pooled;
                    query.load(c).await
                }
            };
            match result.map_err(AppError::from) {
                Err(AppError::Contention(_)) if attempt < CONTENTION_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(contention_pause(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Whether the database answers a trivial query (`/readyz`).
    pub async fn ping(&self) -> AppResult<()> {
        self.read_unscoped().await?.ping().await
    }
}

/// Creates the SQLite database file, readable and writable by its owner only (0600), if
/// it does not exist yet. Left to SQLite it would get the process's default mode (usually
/// 0644, world-readable), and so would its `-wal` and `-shm` files, which SQLite creates
/// with the main file's mode. An existing file keeps the mode it has: an operator may have
/// chosen one. (Setting the umask instead would need `unsafe`, which this crate forbids.)
pub fn create_sqlite_file(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        // An empty file is an empty SQLite database.
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error)
            .with_context(|| format!("creating the SQLite database file {}", path.display())),
    }
}

/// Tells the operator when an existing database file (made before files were created
/// owner-only, or by hand) can be read by other users of the machine.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(metadata) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "the SQLite database file is accessible to other users; consider `chmod 600` \
                 (new -wal/-shm files copy its mode)"
            );
        }
    }
}

/// A connection could not be had: every one is busy (timeout) or the database does not
/// answer. Neither is the client's fault nor a bug, and nothing was done, so the client is
/// told to retry (UNAVAILABLE, 503 over HTTP) and the detail goes to the log.
fn pool_error(error: PoolError) -> AppError {
    tracing::warn!(error = %error, "no database connection for a request");
    AppError::Unavailable {
        message: "the database is busy or unreachable; try again shortly",
        retry_after: POOL_RETRY_AFTER,
    }
}

/// What a client that found the pool exhausted is told to wait.
const POOL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Counts every statement a connection starts, in total and per database server.
fn count_statements(server: &str) -> impl Instrumentation + use<> {
    let per_server = METRICS
        .db_server_statements
        .get_or_create(&crate::metrics::ServerLabels {
            server: server.to_owned(),
        })
        .clone();
    move |event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { .. } = event {
            METRICS.db_statements.inc();
            per_server.inc();
        }
    }
}

/// The `server` label of the primary's statements.
const PRIMARY: &str = "primary";

/// A pool of connections made by `connector`; `server` labels their statements.
fn postgres_pool(
    connector: Arc<PgConnector>,
    server: &str,
    size: usize,
    timeout: Duration,
) -> anyhow::Result<Pool<AsyncPgConnection>> {
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    // A `SELECT 1` before every checkout would double the round trips of a
    // one-statement request. A connection that broke (database restarted) is
    // marked broken by its first failing query and then dropped by the pool.
    config.recycling_method = RecyclingMethod::Fast;
    let server = server.to_owned();
    config.custom_setup = Box::new(move |_url| {
        let (connector, server) = (connector.clone(), server.clone());
        async move { establish_postgres(&connector, &server).await }.boxed()
    });
    // The URL is the connector's business; the manager only hands it to `custom_setup`.
    let manager = AsyncDieselConnectionManager::new_with_config(String::new(), config);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .context("building the PostgreSQL pool")
}

async fn establish_sqlite(path: &str) -> diesel::ConnectionResult<SqliteConn> {
    let mut conn = SqliteConn::establish(path).await?;
    conn.batch_execute(SQLITE_PRAGMAS)
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    // Counted from here on: session set-up is not a statement any request asked for.
    conn.set_instrumentation(count_statements(PRIMARY));
    Ok(conn)
}

async fn establish_postgres(
    connector: &PgConnector,
    server: &str,
) -> diesel::ConnectionResult<AsyncPgConnection> {
    let mut conn = connector.connect().await?;
    conn.batch_execute(POSTGRES_SETUP)
        .await
        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
    // Counted from here on: session set-up is not a statement any request asked for.
    conn.set_instrumentation(count_statements(server));
    Ok(conn)
}

/// `$1, $2, ...` for `count` PostgreSQL placeholders starting at `first`.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Begins a transaction on a unit of work's connection.
///
/// SQLite: BEGIN IMMEDIATE takes the write lock up front. A deferred transaction that
/// reads first and then writes must upgrade its lock, and SQLite does not wait
/// (busy_timeout) for that upgrade: another process holding the lock (a second server,
/// the CLI, a backup) would fail the write at once with "database is locked". Within this
/// process the writer semaphore already serialises writers.
async fn begin(conn: &mut TxConn) -> AppResult<()> {
    use diesel_async::{AnsiTransactionManager, TransactionManager};
    match conn {
        TxConn::Sqlite(pooled) => {
            let conn: &mut SqliteConn = pooled;
            conn.spawn_blocking(|inner| {
                diesel::connection::AnsiTransactionManager::begin_transaction_sql(
                    inner,
                    "BEGIN IMMEDIATE",
                )
            })
            .await?;
        }
        TxConn::Postgres(pooled) => {
            let conn: &mut AsyncPgConnection = pooled;
            <AnsiTransactionManager as TransactionManager<AsyncPgConnection>>::begin_transaction(
                conn,
            )
            .await?;
        }
    }
    Ok(())
}

/// Ends a transaction: commits and publishes its events when `result` is `Ok`, rolls back
/// otherwise (a failed rollback leaves the connection marked broken, and the pool drops it).
async fn finish<T, E>(
    conn: &mut TxConn,
    tenant: &Tenant,
    result: AppResult<T>,
    events: Vec<E>,
    outbox: Option<&dyn Outbox<E>>,
) -> AppResult<T> {
    match result {
        Ok(value) => {
            end(conn, true).await?;
            if let Some(outbox) = outbox
                && !events.is_empty()
            {
                outbox.publish(tenant, events);
            }
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = end(conn, false).await {
                tracing::warn!(error = ?rollback, "rolling back a failed unit of work failed");
            }
            Err(error)
        }
    }
}

async fn end(conn: &mut TxConn, commit: bool) -> AppResult<()> {
    match conn {
        TxConn::Sqlite(pooled) => end_on(&mut **pooled, commit).await,
        TxConn::Postgres(pooled) => end_on(&mut **pooled, commit).await,
    }
}

async fn end_on<C: AsyncConnection>(conn: &mut C, commit: bool) -> AppResult<()> {
    use diesel_async::TransactionManager as _;
    if commit {
        C::TransactionManager::commit_transaction(conn).await?;
    } else {
        C::TransactionManager::rollback_transaction(conn).await?;
    }
    Ok(())
}

/// How many times a transaction aborted by a deadlock or serialization failure is run
/// again before its caller is told to retry.
pub const CONTENTION_RETRIES: u32 = 5;

/// The pause before retry `attempt` (1-based): doubling from ~4 ms, with jitter so the
/// transactions that collided do not collide again in step.
pub fn contention_pause(attempt: u32) -> Duration {
    let base = 4u64 << attempt.min(6);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    ) % base;
    Duration::from_millis(base + jitter)
}
