//! Typed settings, read from command-line flags with environment-variable fallbacks.
//!
//! Every setting has a flag and an environment variable; the README's configuration table
//! lists them all. Defaults are chosen so `stepwise serve` works with no configuration.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The default cap on an image's area (`--screenshot-max-pixels`). The server never decodes
/// screenshots, but every browser that shows one does: a few kilobytes of well-compressed
/// pixels can claim gigabytes once decoded. 50 megapixels covers an 8K screen and a
/// full-page capture of a long page at 1920 pixels wide.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;

/// The public CDN GraphiQL's page loads its assets from unless configured otherwise. Its
/// URL layout (`/<package>@<version>/<file in the package>`) is the one a mirror must
/// reproduce. Kept here, with the other defaults, so configuration depends on nothing it
/// configures.
pub const DEFAULT_GRAPHIQL_ASSETS_URL: &str = "https://unpkg.com";

/// The `stepwise` command line.
#[derive(Debug, Parser)]
#[command(
    name = "stepwise",
    version,
    about = "Multi-tenant GraphQL backend for browser workflow automation"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format: `text` for people, `json` for log collectors.
    #[arg(
        long,
        env = "STEPWISE_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP server (GraphQL, GraphiQL, health checks).
    Serve(Box<ServeArgs>),
    /// Apply, revert or list database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print the GraphQL schema (SDL); `schema.graphql` is produced by this.
    Schema,
    /// Copy an SQLite database (consistently, while the server runs) and its screenshot
    /// blobs into a new backup directory.
    Backup(BackupArgs),
    /// Restore a backup made by `stepwise backup` into a new database location.
    Restore(RestoreArgs),
    /// Fill an empty database with demo data (`--demo`): a company with an admin and a
    /// member (credentials printed), workflows with steps and screenshots, runs, health
    /// logs and notifications.
    Seed(SeedArgs),
}

/// `stepwise seed --demo`: which database (and blob store) to fill.
#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    /// Demo data, the only kind there is; the database must hold no company yet.
    #[arg(long, required = true)]
    pub demo: bool,

    /// Email of the demo admin (the member gets `member@` the same domain).
    #[arg(
        long,
        env = "STEPWISE_DEMO_ADMIN_EMAIL",
        default_value = "admin@demo.example"
    )]
    pub admin_email: String,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub blobs: BlobArgs,
}

/// `stepwise backup DIR`: what to back up is the server's own database and blob settings.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The backup directory to create; it must not exist yet.
    pub destination: PathBuf,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub blobs: BlobArgs,
}

/// `stepwise restore DIR --database-url sqlite://NEW [--blob-store DIR]`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// A directory made by `stepwise backup`.
    pub backup: PathBuf,

    /// Replace an existing database file (and add to an existing blob directory) instead of
    /// refusing.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub blobs: BlobArgs,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Run,
    /// Revert the most recent migration (or all of them with `--all`).
    Revert {
        #[arg(long)]
        all: bool,
    },
    /// List every migration as `applied` or `pending`.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port (logged at start).
    #[arg(long, env = "STEPWISE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Do not apply pending migrations at start (for deployments that migrate separately).
    #[arg(long, env = "STEPWISE_SKIP_MIGRATIONS")]
    pub skip_migrations: bool,

    /// How long a WebSocket client may take to send `connection_init`, in milliseconds.
    #[arg(long, env = "STEPWISE_WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,

    /// Largest WebSocket message accepted from a client, in bytes.
    #[arg(long, env = "STEPWISE_WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub ws_max_message_bytes: usize,

    /// Most operations (subscriptions) one WebSocket connection may run at once.
    #[arg(long, env = "STEPWISE_WS_MAX_OPERATIONS", default_value_t = 100)]
    pub ws_max_operations: usize,

    /// Most WebSocket connections one signed-in user may hold open on one instance
    /// (closed with 1013 beyond it).
    #[arg(
        long,
        env = "STEPWISE_WS_MAX_CONNECTIONS_PER_USER",
        default_value_t = 100
    )]
    pub ws_max_connections_per_user: usize,

    /// Most WebSocket connections initialised without a token one client address may hold
    /// open on one instance (closed with 1013 beyond it). IPv6 addresses count per /64.
    #[arg(
        long,
        env = "STEPWISE_WS_MAX_ANONYMOUS_CONNECTIONS_PER_ADDRESS",
        default_value_t = 20
    )]
    pub ws_max_anonymous_connections_per_address: usize,

    /// Most operations a WebSocket connection without a signed-in user may run at once
    /// (sign-ins; more are answered with RATE_LIMITED).
    #[arg(
        long,
        env = "STEPWISE_WS_MAX_ANONYMOUS_OPERATIONS",
        default_value_t = 1
    )]
    pub ws_max_anonymous_operations: usize,

    #[command(flatten)]
    pub sign_in: SignInArgs,

    /// How long, in microseconds, a request's batch loader collects the keys of one level
    /// of nested fields (a page's steps, their screenshots...) before querying them all
    /// at once. Longer windows batch more reliably on a busy machine, at that much latency
    /// per nesting level.
    #[arg(long, env = "STEPWISE_BATCH_WINDOW_US", default_value_t = 1_000)]
    pub batch_window_us: u64,

    /// Failed runs in a row that mark a workflow broken.
    #[arg(long, env = "STEPWISE_BROKEN_AFTER_FAILURES", default_value_t = 3)]
    pub broken_after_failures: i32,

    /// Healing confidence below which a healed step puts its workflow up for review (0–1).
    #[arg(long, env = "STEPWISE_REVIEW_BELOW_CONFIDENCE", default_value_t = 0.7)]
    pub review_below_confidence: f64,

    /// Seconds a running run may go without a step report before it is marked timed out.
    #[arg(long, env = "STEPWISE_RUN_TIMEOUT_SECONDS", default_value_t = 600)]
    pub run_timeout_seconds: u64,

    /// How far back, in seconds, a `healthLogRecorded` subscription may resume with
    /// `after`: a resume replays from the database, so the window bounds that work. Older
    /// cursors are refused; the client subscribes afresh and pages `healthLogs` instead.
    #[arg(
        long,
        env = "STEPWISE_HEALTH_LOG_REPLAY_WINDOW_SECONDS",
        default_value_t = 86_400
    )]
    pub health_log_replay_window_seconds: u64,

    /// How often the sweeper looks for timed-out runs, in seconds.
    #[arg(long, env = "STEPWISE_SWEEP_INTERVAL_SECONDS", default_value_t = 30)]
    pub sweep_interval_seconds: u64,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub event_bus: EventBusArgs,

    #[command(flatten)]
    pub jwt: JwtArgs,

    #[command(flatten)]
    pub blobs: BlobArgs,

    #[command(flatten)]
    pub screenshots: ScreenshotArgs,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub graphiql: GraphiQLArgs,

    #[command(flatten)]
    pub queue: QueueArgs,

    #[command(flatten)]
    pub governance: GovernanceArgs,

    #[command(flatten)]
    pub share_links: ShareLinkArgs,
}

/// Public share links, read without signing in.
#[derive(Debug, Clone, Args)]
pub struct ShareLinkArgs {
    /// `sharedWorkflow` reads one client address may make per minute, in a burst or spread
    /// out (each is also a write: the link's access count); beyond: RATE_LIMITED. 0 turns
    /// the limit off.
    #[arg(
        long,
        env = "STEPWISE_SHARE_LINK_READS_PER_ADDRESS",
        default_value_t = 60
    )]
    pub share_link_reads_per_address: u32,
}

/// The run queue: leases, schedules and webhooks (issue 13).
#[derive(Debug, Clone, Args)]
pub struct QueueArgs {
    /// How often each instance fires due schedules and re-queues runs whose lease expired,
    /// in milliseconds. A lease is noticed at most this late; a schedule fires at most this
    /// late.
    #[arg(long, env = "STEPWISE_QUEUE_TICK_MS", default_value_t = 1_000)]
    pub queue_tick_ms: u64,

    /// Largest run `input` or `output` (and webhook body), in bytes of JSON.
    #[arg(long, env = "STEPWISE_RUN_JSON_MAX_BYTES", default_value_t = 64 * 1024)]
    pub run_json_max_bytes: usize,

    /// How far a webhook request's signed timestamp may be from the server's clock, in
    /// seconds; older (replayed) or future requests are refused with 401.
    #[arg(
        long,
        env = "STEPWISE_WEBHOOK_TOLERANCE_SECONDS",
        default_value_t = 300
    )]
    pub webhook_tolerance_seconds: u64,

    /// Requests one webhook URL takes per minute on one instance, in a burst or spread out;
    /// beyond: 429 with `Retry-After`. 0 turns the limit off.
    #[arg(
        long,
        env = "STEPWISE_WEBHOOK_REQUESTS_PER_MINUTE",
        default_value_t = 60
    )]
    pub webhook_requests_per_minute: u32,

    /// FOR TESTS: cron expressions may carry a sixth, leading seconds field (`*/2 * * * *
    /// *` fires every two seconds), so a test sees schedules fire without waiting minutes.
    /// Never set it in production: schedules created with a seconds field stop (with
    /// `lastError`) once it is off again.
    #[arg(long, env = "STEPWISE_CRON_SECONDS_FOR_TESTS")]
    pub cron_seconds_for_tests: bool,
}

impl QueueArgs {
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.queue_tick_ms.max(10))
    }
}

/// GraphiQL, the in-browser IDE on `GET /graphql` (turned off by `--disable-graphiql`).
#[derive(Debug, Clone, Args)]
pub struct GraphiQLArgs {
    /// Base URL GraphiQL's page loads its pinned scripts and stylesheet from, laid out as
    /// `<base>/<npm package>@<version>/<file>` (the public CDN's layout). Point it at a mirror
    /// of those files where browsers cannot reach the internet; the page's integrity hashes
    /// and Content-Security-Policy follow it.
    #[arg(
        long,
        env = "STEPWISE_GRAPHIQL_ASSETS_URL",
        default_value = DEFAULT_GRAPHIQL_ASSETS_URL
    )]
    pub graphiql_assets_url: String,
}

/// What signing in (`login`, `signup`, `joinCompany`) may cost: password hashes are
/// deliberately slow and memory-hard (19 MiB each), so they run a bounded number at a
/// time, and attempts are limited per client and per account.
#[derive(Debug, Clone, Args)]
pub struct SignInArgs {
    /// Password hashes (or checks) run at once; 0 means two per available core. Each
    /// holds 19 MiB while it runs.
    #[arg(long, env = "STEPWISE_PASSWORD_HASH_CONCURRENCY", default_value_t = 0)]
    pub password_hash_concurrency: usize,

    /// How long a sign-in waits for a hashing slot, in milliseconds, before it is answered
    /// with UNAVAILABLE (retry after a second).
    #[arg(
        long,
        env = "STEPWISE_PASSWORD_HASH_QUEUE_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub password_hash_queue_timeout_ms: u64,

    /// Sign-in attempts (login, signup, joinCompany) one client address may make per
    /// minute, in a burst or spread out; beyond: RATE_LIMITED. 0 turns the limit off.
    #[arg(
        long,
        env = "STEPWISE_SIGN_IN_ATTEMPTS_PER_ADDRESS",
        default_value_t = 30
    )]
    pub sign_in_attempts_per_address: u32,

    /// Sign-in attempts per minute for one email address, from any client; beyond:
    /// RATE_LIMITED. 0 turns the limit off.
    #[arg(long, env = "STEPWISE_SIGN_IN_ATTEMPTS_PER_EMAIL", default_value_t = 5)]
    pub sign_in_attempts_per_email: u32,
}

/// The HTTP surface: what browsers may do, how big and how long a request may be, and how
/// much one GraphQL operation may ask for.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Origins allowed to call the API from a browser (CORS), comma-separated, e.g.
    /// `https://app.example.com,https://admin.example.com`; `*` allows any origin. Empty
    /// (the default): no CORS headers, so browsers refuse cross-origin calls.
    #[arg(long, env = "STEPWISE_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub cors_allowed_origins: Vec<String>,

    /// Do not serve GraphiQL (for production).
    #[arg(long, env = "STEPWISE_DISABLE_GRAPHIQL")]
    pub disable_graphiql: bool,

    /// Refuse introspection (`__schema`, `__type`) queries (for production).
    #[arg(long, env = "STEPWISE_DISABLE_INTROSPECTION")]
    pub disable_introspection: bool,

    /// Largest JSON request body, in bytes (larger: 413).
    #[arg(long, env = "STEPWISE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest `multipart/form-data` request body (file uploads), in bytes (larger: 413).
    #[arg(long, env = "STEPWISE_MAX_MULTIPART_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_multipart_bytes: usize,

    /// How long one GraphQL request may run, in milliseconds, before it is cancelled and
    /// answered with a TIMEOUT error.
    #[arg(long, env = "STEPWISE_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// Deepest selection nesting an operation may have.
    #[arg(long, env = "STEPWISE_MAX_QUERY_DEPTH", default_value_t = 16)]
    pub max_query_depth: usize,

    /// Highest complexity an operation may have: each field costs 1, and a connection's
    /// selection is paid once per item requested (`first`/`last`, default 20). The default
    /// admits two nested full pages (100 × 100 items of ~25 fields, what a workflow detail
    /// view asks for) and refuses a third level.
    #[arg(long, env = "STEPWISE_MAX_QUERY_COMPLEXITY", default_value_t = 250_000)]
    pub max_query_complexity: usize,

    /// Most aliased fields one document may contain.
    #[arg(long, env = "STEPWISE_MAX_QUERY_ALIASES", default_value_t = 50)]
    pub max_query_aliases: usize,

    /// Most directives one field may carry.
    #[arg(long, env = "STEPWISE_MAX_QUERY_DIRECTIVES", default_value_t = 10)]
    pub max_query_directives: usize,

    /// A header in which a trusted reverse proxy passes the client's address (e.g.
    /// `X-Forwarded-For`; the rightmost entry is used). Per-client limits then count that
    /// address instead of the proxy's. Only set it when every request comes through such a
    /// proxy: clients can send the header themselves.
    #[arg(long, env = "STEPWISE_CLIENT_ADDRESS_HEADER")]
    pub client_address_header: Option<String>,
    /// Deepest nesting of brackets (`{`, `[`, `(` together) a document may have, checked on
    /// its text before it is parsed: the parser recurses once per level, and a few thousand
    /// levels overflow its stack. 64 is four times the deepest real operation (the
    /// selection depth limit is 16; GraphiQL's introspection query nests 10).
    #[arg(long, env = "STEPWISE_MAX_QUERY_NESTING", default_value_t = 64)]
    pub max_query_nesting: usize,

    /// Most lexical tokens (names, punctuation, values) a document may have, checked before
    /// it is parsed: parsing takes about 200 bytes per token, so this bounds the memory one
    /// request's parse can take (~2 MB by default). GraphiQL's introspection query has 184
    /// tokens and the test suite's whole-company snapshot 340.
    #[arg(long, env = "STEPWISE_MAX_QUERY_TOKENS", default_value_t = 10_000)]
    pub max_query_tokens: usize,

    /// Memory, in bytes, that parsed documents kept for reuse may take (an estimate from
    /// their nodes). Only documents whose requests ran without a request error are kept,
    /// each at most 1/16 of this.
    #[arg(long, env = "STEPWISE_PARSED_QUERY_CACHE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub parsed_query_cache_bytes: usize,

    /// Most files one multipart request may upload (the schema takes one per
    /// `uploadScreenshot`).
    #[arg(long, env = "STEPWISE_MAX_UPLOAD_FILES", default_value_t = 1)]
    pub max_upload_files: usize,

    /// How long a client may take to send a request's headers, in milliseconds, counted
    /// from when its connection opens or its previous response was sent. hyper runs one
    /// timer for both, so it is also how long an idle keep-alive connection stays open.
    /// Behind a load balancer that keeps idle connections to the server longer than this
    /// (AWS ALB: 60 s), raise it above the balancer's idle timeout.
    #[arg(
        long,
        env = "STEPWISE_HTTP_HEADER_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub http_header_timeout_ms: u64,

    /// Memory, in bytes, that the documents of automatic persisted queries kept by their
    /// hash may take (their text and bookkeeping). Least recently used ones make room; a
    /// document larger than 1/16 of this runs but is never kept.
    #[arg(
        long,
        env = "STEPWISE_PERSISTED_QUERY_CACHE_BYTES",
        default_value_t = 8 * 1024 * 1024
    )]
    pub persisted_query_cache_bytes: usize,

    /// Accept only automatic persisted queries whose SHA-256 is listed in this file (one hex
    /// hash per line; `#` comments), on every transport: any other operation is refused
    /// with FORBIDDEN.
    #[arg(long, env = "STEPWISE_PERSISTED_QUERIES_ONLY")]
    pub persisted_queries_only: Option<PathBuf>,

    /// Answer the plain fields of listed workflows, runs, health logs, steps and
    /// screenshots in one pass (`graphql/plain_list.rs`). `false` sends every list down
    /// async-graphql's ordinary path: slower, the same answers; for ruling the fast path out
    /// when something looks wrong.
    #[arg(
        long,
        env = "STEPWISE_FAST_LISTS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub fast_lists: bool,
}

impl HttpArgs {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.http_header_timeout_ms.max(1))
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://FILE`, a plain file path, or `postgres://user@host:port/db`.
    // The URL may carry a password: `--help` must not print the environment's value.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://stepwise.db",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 10)]
    pub pool_size: usize,

    /// How long a request waits for a free connection before failing, in milliseconds.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000)]
    pub acquire_timeout_ms: u64,

    /// Most pooled connections one GraphQL request (or one WebSocket connection) holds at
    /// once; its other queries wait for these, so one heavy request cannot take the pool
    /// from everyone else.
    #[arg(long, env = "STEPWISE_MAX_REQUEST_CONNECTIONS", default_value_t = 3)]
    pub max_request_connections: usize,

    /// Read replicas of the PostgreSQL primary, comma-separated `postgres://` URLs (each
    /// with its own `sslmode`): query operations and subscription snapshots read from
    /// them; mutations use the primary. Each gets a pool of `--pool-size` connections.
    // May carry passwords, like DATABASE_URL.
    #[arg(
        long,
        env = "DATABASE_READ_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub database_read_url: Vec<String>,

    /// A replica whose replay is further behind the primary than this, in milliseconds,
    /// is not read from until it catches up.
    #[arg(long, env = "STEPWISE_REPLICA_MAX_LAG_MS", default_value_t = 1_000)]
    pub replica_max_lag_ms: u64,

    /// How often each replica's lag and reachability are checked, in milliseconds.
    #[arg(
        long,
        env = "STEPWISE_REPLICA_CHECK_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub replica_check_interval_ms: u64,
}

impl DatabaseArgs {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    /// The replica URLs given, blanks left out.
    pub fn read_urls(&self) -> Vec<String> {
        self.database_read_url
            .iter()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect()
    }

    pub fn replica_max_lag(&self) -> Duration {
        Duration::from_millis(self.replica_max_lag_ms)
    }

    pub fn replica_check_interval(&self) -> Duration {
        Duration::from_millis(self.replica_check_interval_ms.max(50))
    }
}

/// How events travel between instances (`STEPWISE_EVENT_BUS`).
#[derive(Debug, Clone, Args)]
pub struct EventBusArgs {
    /// `nats://host:4222` (several comma-separated, `tls://` for TLS, credentials as
    /// `nats://user:password@host`) for NATS JetStream; `postgres` for LISTEN/NOTIFY on
    /// the database; `local` for none (one instance). Default: `postgres` on PostgreSQL,
    /// `local` on SQLite.
    // A NATS URL may carry a password.
    #[arg(long, env = "STEPWISE_EVENT_BUS", hide_env_values = true)]
    pub event_bus: Option<String>,

    /// Name of the JetStream stream events are kept in (created when missing); its
    /// subjects are `<name>.<company id>`. Instances that share events use the same one.
    #[arg(long, env = "STEPWISE_NATS_STREAM", default_value = "stepwise_events")]
    pub nats_stream: String,
}

/// The event bus `STEPWISE_EVENT_BUS` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBusKind {
    /// In-process only.
    Local,
    /// PostgreSQL LISTEN/NOTIFY.
    Postgres,
    /// NATS JetStream at these server URLs (as given, comma-separated).
    Nats(String),
}

impl EventBusArgs {
    /// The bus to run on a database of `backend`.
    pub fn kind(&self, postgres: bool) -> anyhow::Result<EventBusKind> {
        let raw = self.event_bus.as_deref().map(str::trim).unwrap_or("");
        let kind = match raw {
            "" if postgres => EventBusKind::Postgres,
            "" | "local" => EventBusKind::Local,
            "postgres" | "notify" => EventBusKind::Postgres,
            url if url.starts_with("nats://") || url.starts_with("tls://") => {
                EventBusKind::Nats(url.to_owned())
            }
            other => anyhow::bail!(
                "STEPWISE_EVENT_BUS={:?}: use nats://host:port, postgres or local",
                redact_urls(other)
            ),
        };
        if !postgres && kind != EventBusKind::Local {
            anyhow::bail!(
                "STEPWISE_EVENT_BUS: instances on SQLite cannot share a database, so there is \
                 nothing to share events with; use PostgreSQL for several instances"
            );
        }
        if matches!(kind, EventBusKind::Nats(_)) {
            let name = &self.nats_stream;
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                anyhow::bail!("STEPWISE_NATS_STREAM={name:?}: 1–64 letters, digits, `_` or `-`");
            }
        }
        Ok(kind)
    }
}

#[derive(Debug, Clone, Args)]
pub struct JwtArgs {
    /// HMAC secret for signing tokens (at least 32 bytes). Without it, a random secret is
    /// generated once and kept in `--jwt-secret-file`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Where the generated secret is kept when `JWT_SECRET` is not set. Defaults to
    /// `<sqlite file>.jwt-secret`, or `stepwise.jwt-secret` in the working directory on Postgres.
    #[arg(long, env = "JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,

    /// Access-token lifetime in seconds (15 minutes by default); clients renew it with
    /// `refreshSession`. An ended session's tokens stop working at once whatever this is.
    #[arg(long, env = "JWT_TTL_SECONDS", default_value_t = 900)]
    pub jwt_ttl_seconds: u64,

    /// How long a session lasts after its last refresh, in seconds (30 days by default):
    /// the lifetime of a refresh token.
    #[arg(
        long,
        env = "STEPWISE_REFRESH_TOKEN_TTL_SECONDS",
        default_value_t = 30 * 86_400
    )]
    pub refresh_token_ttl_seconds: u64,

    /// `iss` claim written into and required from every token.
    #[arg(long, env = "JWT_ISSUER", default_value = "stepwise")]
    pub jwt_issuer: String,

    /// `aud` claim written into and required from every token.
    #[arg(long, env = "JWT_AUDIENCE", default_value = "stepwise")]
    pub jwt_audience: String,
}

/// Where screenshot bytes are kept (the database only holds their metadata).
#[derive(Debug, Clone, Args)]
pub struct BlobArgs {
    /// Blob store: a directory (`file:///var/lib/stepwise/blobs` or a plain path) or an
    /// S3-compatible bucket (`s3://bucket` or `s3://bucket/prefix`). Defaults to
    /// `<sqlite file>.blobs/` beside the database, or `./stepwise.blobs/` on Postgres.
    #[arg(long, env = "STEPWISE_BLOB_STORE")]
    pub blob_store: Option<String>,

    /// S3 endpoint for S3-compatible services (MinIO, Ceph, moto, R2...). `AWS_ENDPOINT_URL`
    /// is read too. An `http://` endpoint allows plain HTTP.
    #[arg(long, env = "STEPWISE_S3_ENDPOINT", hide_env_values = true)]
    pub s3_endpoint: Option<String>,

    /// S3 region (`AWS_REGION` is read too; default `us-east-1`).
    #[arg(long, env = "STEPWISE_S3_REGION")]
    pub s3_region: Option<String>,

    /// S3 access key id (`AWS_ACCESS_KEY_ID` is read too).
    #[arg(long, env = "STEPWISE_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<Secret>,

    /// S3 secret access key (`AWS_SECRET_ACCESS_KEY` is read too).
    #[arg(long, env = "STEPWISE_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<Secret>,

    /// Address buckets as `https://bucket.endpoint/` (AWS style) instead of the path-style
    /// `https://endpoint/bucket/` that most S3-compatible servers expect.
    #[arg(long, env = "STEPWISE_S3_VIRTUAL_HOSTED_STYLE")]
    pub s3_virtual_hosted_style: bool,

    /// How often unreferenced blobs are looked for and removed, in seconds.
    #[arg(
        long,
        env = "STEPWISE_BLOB_SWEEP_INTERVAL_SECONDS",
        default_value_t = 3_600
    )]
    pub blob_sweep_interval_seconds: u64,

    /// How old an unreferenced blob must be before the sweep removes it, in seconds. Gives
    /// uploads in flight (blob written, row not yet committed) time to finish.
    #[arg(long, env = "STEPWISE_BLOB_GRACE_SECONDS", default_value_t = 3_600)]
    pub blob_grace_seconds: u64,
}

/// Screenshot uploads and the signed URLs that serve them.
#[derive(Debug, Clone, Args)]
pub struct ScreenshotArgs {
    /// Largest screenshot accepted, in bytes.
    #[arg(long, env = "STEPWISE_SCREENSHOT_MAX_BYTES", default_value_t = 5 * 1024 * 1024)]
    pub screenshot_max_bytes: usize,

    /// Largest screenshot accepted, in pixels (width × height). Browsers decode every
    /// pixel an image claims, so this bounds what one screenshot costs whoever views it.
    #[arg(
        long,
        env = "STEPWISE_SCREENSHOT_MAX_PIXELS",
        default_value_t = DEFAULT_MAX_PIXELS
    )]
    pub screenshot_max_pixels: u64,

    /// How long a `Screenshot.url` stays valid, in seconds.
    #[arg(
        long,
        env = "STEPWISE_SCREENSHOT_URL_TTL_SECONDS",
        default_value_t = 900
    )]
    pub screenshot_url_ttl_seconds: u64,

    /// HMAC key for screenshot URLs (at least 32 bytes). Without it, a key is derived from
    /// the JWT secret, so every instance sharing that secret accepts the same URLs.
    #[arg(long, env = "STEPWISE_SCREENSHOT_URL_SECRET", hide_env_values = true)]
    pub screenshot_url_secret: Option<Secret>,

    /// Public base URL of this server (e.g. `https://api.example.com`) put in front of
    /// screenshot URLs. Without it they are path-only (`/screenshots/...`).
    #[arg(long, env = "STEPWISE_PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// Retention sweeps and statistics (`retentionPolicy`, `workflowStats`, `companyStats`).
#[derive(Debug, Clone, Args)]
pub struct GovernanceArgs {
    /// How often, in seconds, this instance looks for companies whose retention sweep is
    /// due; a company is due again this long after its last complete pass (at once after
    /// its policy changed).
    #[arg(
        long,
        env = "STEPWISE_RETENTION_SWEEP_INTERVAL_SECONDS",
        default_value_t = 3_600
    )]
    pub retention_sweep_interval_seconds: u64,

    /// Rows the retention sweep removes per transaction, per table (1–10,000): smaller
    /// batches hold locks (and SQLite's single writer) for less time.
    #[arg(
        long,
        env = "STEPWISE_RETENTION_BATCH_SIZE",
        default_value_t = 500,
        value_parser = clap::value_parser!(i64).range(1..=10_000)
    )]
    pub retention_batch_size: i64,

    /// Statistics (`workflowStats`, `companyStats`) and retention previews computed at once
    /// on this instance; more wait up to five seconds, then get UNAVAILABLE.
    #[arg(long, env = "STEPWISE_STATISTICS_CONCURRENCY", default_value_t = 4)]
    pub statistics_concurrency: usize,
}

/// A value that must never reach a log line: `Debug` prints a placeholder.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Which database a URL names. The backend is chosen at run time from the scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// Path of the SQLite database file.
    Sqlite(PathBuf),
    /// A libpq-style connection URL.
    Postgres(String),
}

impl DatabaseUrl {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        let path = match raw.strip_prefix("sqlite://") {
            Some(path) => path,
            None if raw.contains("://") => {
                anyhow::bail!(
                    "unsupported DATABASE_URL scheme in {:?}: use sqlite:// or postgres://",
                    redact_urls(raw)
                )
            }
            None => raw.strip_prefix("sqlite:").unwrap_or(raw),
        };
        if path.is_empty() {
            anyhow::bail!("DATABASE_URL names no SQLite file");
        }
        if path.contains(":memory:") || path.starts_with("file:") {
            // Every pooled connection would see its own empty database.
            anyhow::bail!("in-memory SQLite is not supported; name a file");
        }
        Ok(Self::Sqlite(PathBuf::from(path)))
    }
}

/// `text` with the credentials of every URL in it hidden: the user information of
/// `scheme://user:password@host` becomes `***`, and so does the value of any `password=`
/// parameter (libpq URLs and connection strings take one). For every message that may
/// quote a URL: start-up errors, logs.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // Over-redact rather than leak: the user information ends at the URL's last `@`, even
        // when an unescaped `/`, `?` or `#` in a password makes it look like a path or query.
        let end = after
            .find(|c: char| matches!(c, '"' | '\'' | '`') || c.is_whitespace())
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        match url.rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                out.push_str(&url[userinfo_end..]);
            }
            None => out.push_str(url),
        }
        rest = tail;
    }
    out.push_str(rest);
    redact_password_parameters(&out)
}

fn redact_password_parameters(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_lowercase().find("password=") {
        let (before, after) = rest.split_at(at + "password=".len());
        out.push_str(before);
        let end = after
            .find(|c: char| matches!(c, '&' | '"' | '\'' | '`') || c.is_whitespace())
            .unwrap_or(after.len());
        if end > 0 {
            out.push_str("***");
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::{DatabaseUrl, redact_urls};
    use std::path::PathBuf;

    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            redact_urls("connecting to postgres://app:s3cret@db.example:5432/stepwise failed"),
            "connecting to postgres://***@db.example:5432/stepwise failed"
        );
        assert_eq!(
            redact_urls("\"mysql://root:pw@h/db\" and s3://key:secret@bucket"),
            "\"mysql://***@h/db\" and s3://***@bucket"
        );
        // A password containing `@` or `:` is hidden whole.
        assert_eq!(
            redact_urls("postgres://u:p@ss:w@rd@host/db"),
            "postgres://***@host/db"
        );
        for raw in ["postgres://u:pa/ss@host/db", "postgres://u:pa#s?s@host/db"] {
            assert_eq!(redact_urls(raw), "postgres://***@host/db");
        }
        assert_eq!(
            redact_urls("postgres://host/db?sslmode=require&password=hunter2&user=u"),
            "postgres://host/db?sslmode=require&password=***&user=u"
        );
        assert_eq!(
            redact_urls("host=db user=u PASSWORD=hunter2 dbname=x"),
            "host=db user=u PASSWORD=*** dbname=x"
        );
        assert_eq!(redact_urls("sqlite://stepwise.db"), "sqlite://stepwise.db");
        assert_eq!(redact_urls("no url here"), "no url here");
    }

    #[test]
    fn database_urls_pick_the_backend_by_scheme() {
        let sqlite = |p: &str| Some(DatabaseUrl::Sqlite(PathBuf::from(p)));
        assert_eq!(
            DatabaseUrl::parse("sqlite://stepwise.db").ok(),
            sqlite("stepwise.db")
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/x.db").ok(),
            sqlite("/var/x.db")
        );
        assert_eq!(DatabaseUrl::parse("data/x.db").ok(), sqlite("data/x.db"));
        assert_eq!(
            DatabaseUrl::parse("postgres://u@h/db").ok(),
            Some(DatabaseUrl::Postgres("postgres://u@h/db".into()))
        );
        assert!(DatabaseUrl::parse("mysql://h/db").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("sqlite::memory:").is_err());
    }
}
