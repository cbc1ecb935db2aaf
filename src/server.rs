//! Start-up and shutdown of `stepwise serve`: wire configuration, database, schema and
//! routes together, then serve until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::auth::credential::Credentials;
use crate::auth::jwt::{self, TokenKeys};
use crate::auth::rate_limit::SignInLimits;
use crate::auth::signed_url::UrlSigner;
use crate::blobs::BlobStore;
use crate::config::{DatabaseUrl, EventBusKind, ServeArgs};
use crate::crypto::password::Passwords;
use crate::crypto::secret_token::SecretTokens;
use crate::db::{Db, migrations};
use crate::domain;
use crate::domain::health::HealthRules;
use crate::events::EventBus;
use crate::events::log_stream::LogStream;
use crate::graphql::{
    self, DocumentLimits, ParsedDocuments, PersistedQueries, QueryLimits, QueueSettings,
    ScreenshotSettings, Services, StreamCursors,
};
use crate::http::{self, AppState, CorsOrigins, GraphiQL, HttpConfig, WebSocketConfig};

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(&args.database.database_url)?;
    let db = Db::connect(&args.database)?;
    if args.skip_migrations {
        tracing::info!("skipping migrations (--skip-migrations)");
    } else {
        let applied = migrations::perform(&url, migrations::Action::RunPending)
            .await
            .context("applying database migrations")?;
        for migration in &applied {
            tracing::info!(migration = %migration.name, "applied migration");
        }
        crate::domain::upkeep::complete(&db, &applied)
            .await
            .context("completing the applied migrations")?;
    }

    let secret = jwt::load_or_create_secret(&args.jwt, &url)?;
    let tokens = Arc::new(TokenKeys::new(&secret, &args.jwt)?);
    db.monitor_replicas(args.database.replica_check_interval());
    let bus_kind = args
        .event_bus
        .kind(matches!(url, DatabaseUrl::Postgres(_)))?;
    let events = match (bus_kind, db.pg_connector()) {
        (EventBusKind::Postgres, Some(connector)) => {
            EventBus::with_postgres(connector, &secret, db.clone())
        }
        (EventBusKind::Nats(servers), Some(_)) => {
            EventBus::with_nats(&servers, &args.event_bus.nats_stream, &secret, db.clone())?
        }
        _ => EventBus::new(),
    };
    tracing::info!(transport = events.status().transport, "event bus");
    let log_stream = LogStream::start(db.clone(), &events);
    if !(0.0..=1.0).contains(&args.review_below_confidence) || args.broken_after_failures < 1 {
        anyhow::bail!(
            "health thresholds: review confidence must be within 0–1 and failures at least 1"
        );
    }
    let health = HealthRules {
        broken_after_failures: args.broken_after_failures,
        review_below_confidence: args.review_below_confidence,
        run_timeout: Duration::from_secs(args.run_timeout_seconds.max(1)),
    };
    let blobs = BlobStore::open(&args.blobs, &url)?;
    tracing::info!(store = %blobs.description(), "screenshot blob store");
    let url_signer = Arc::new(UrlSigner::new(
        args.screenshots
            .screenshot_url_secret
            .as_ref()
            .map(|s| s.expose().as_bytes()),
        &secret,
        Duration::from_secs(args.screenshots.screenshot_url_ttl_seconds),
    )?);
    let screenshots = ScreenshotSettings {
        max_bytes: args.screenshots.screenshot_max_bytes,
        max_pixels: args.screenshots.screenshot_max_pixels,
        public_url: args
            .screenshots
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_owned()),
    };
    let secrets = Arc::new(SecretTokens::new(&secret));
    let refresh_ttl = i64::try_from(args.jwt.refresh_token_ttl_seconds)
        .ok()
        .filter(|s| *s > 0)
        .map(chrono::TimeDelta::seconds)
        .context("STEPWISE_REFRESH_TOKEN_TTL_SECONDS must be a positive number of seconds")?;
    let readers = Arc::new(crate::graphql::WorkflowReaders::new(db.clone()));
    let services = Services {
        credentials: Arc::new(Credentials::new(db.clone(), secrets.clone())),
        sessions: domain::session::SessionRules {
            refresh_ttl,
            tokens: secrets.clone(),
        },
        secrets,
        passwords: Arc::new(Passwords::new(
            args.sign_in.password_hash_concurrency,
            Duration::from_millis(args.sign_in.password_hash_queue_timeout_ms),
        )),
        sign_in_limits: Arc::new(SignInLimits::new(
            args.sign_in.sign_in_attempts_per_address,
            args.sign_in.sign_in_attempts_per_email,
        )),
        db,
        tokens,
        events,
        log_stream,
        stream_cursors: StreamCursors::new(
            &secret,
            Duration::from_secs(args.health_log_replay_window_seconds.max(1)),
        ),
        health,
        blobs,
        url_signer,
        screenshots,
        batch_window: Duration::from_micros(args.batch_window_us),
        request_connections: args.database.max_request_connections,
        queue: Arc::new(QueueSettings {
            max_json_bytes: args.queue.run_json_max_bytes.max(2),
            cron: domain::schedule::CronRules {
                allow_seconds: args.queue.cron_seconds_for_tests,
            },
            webhook_keys: domain::webhook::WebhookKeys::new(&secret),
            webhook_tolerance_seconds: i64::try_from(args.queue.webhook_tolerance_seconds)
                .unwrap_or(i64::MAX),
            webhook_limits: crate::auth::rate_limit::KeyedBuckets::new(
                args.queue.webhook_requests_per_minute,
            ),
            public_url: args
                .screenshots
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
        }),
        statistics: domain::statistics::StatisticsGate::new(
            args.governance.statistics_concurrency,
            Duration::from_secs(5),
        ),
        readers,
        share_link_limits: Arc::new(crate::auth::share_link_limits::ShareLinkLimits::new(
            args.share_links.share_link_reads_per_address,
        )),
    };
    if args.queue.cron_seconds_for_tests {
        tracing::warn!("cron expressions may carry a seconds field (a setting for tests)");
    }
    spawn_blob_sweep(
        services.clone(),
        Duration::from_secs(args.blobs.blob_sweep_interval_seconds.max(1)),
        Duration::from_secs(args.blobs.blob_grace_seconds),
    );
    let limits = QueryLimits {
        max_depth: args.http.max_query_depth,
        max_complexity: args.http.max_query_complexity,
        max_aliases: args.http.max_query_aliases,
        max_directives: args.http.max_query_directives,
        introspection: !args.http.disable_introspection,
    };
    let schema = limits
        .apply(graphql::schema_builder())
        .data(services.clone())
        .data(graphql::FastLists(args.http.fast_lists))
        .finish();
    let http = HttpConfig {
        cors: CorsOrigins::parse(&args.http.cors_allowed_origins)
            .context("--cors-allowed-origins")?,
        graphiql: match args.http.disable_graphiql {
            true => None,
            false => Some(Arc::new(
                GraphiQL::new(
                    &args.graphiql.graphiql_assets_url,
                    http::GRAPHQL_PATH,
                    http::GRAPHQL_WS_PATH,
                )
                .context("--graphiql-assets-url")?,
            )),
        },
        max_body_bytes: args.http.max_body_bytes,
        max_multipart_bytes: args.http.max_multipart_bytes,
        max_upload_files: args.http.max_upload_files,
        request_timeout: args.http.request_timeout(),
        client_address_header: args
            .http
            .client_address_header
            .as_deref()
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(axum::http::HeaderName::try_from)
            .transpose()
            .context("--client-address-header is not a valid header name")?,
    };
    let websocket = WebSocketConfig {
        init_timeout: Duration::from_millis(args.ws_init_timeout_ms),
        max_message_bytes: args.ws_max_message_bytes,
        max_operations: args.ws_max_operations,
        max_connections_per_user: args.ws_max_connections_per_user,
        max_anonymous_connections_per_address: args.ws_max_anonymous_connections_per_address,
        max_anonymous_operations: args.ws_max_anonymous_operations,
    };
    let allowed_queries = args
        .http
        .persisted_queries_only
        .as_deref()
        .map(PersistedQueries::read_allow_list)
        .transpose()
        .context("--persisted-queries-only")?;
    if let Some(allowed) = &allowed_queries {
        tracing::info!(
            operations = allowed.len(),
            "accepting only the listed persisted queries"
        );
    }
    let persisted_queries = Arc::new(PersistedQueries::new(
        args.http.persisted_query_cache_bytes,
        allowed_queries,
    ));
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(sweep_stale_runs(
        services.clone(),
        Duration::from_secs(args.sweep_interval_seconds.max(1)),
        shutdown.clone(),
    ));
    tokio::spawn(tend_queue(
        services.clone(),
        args.queue.tick(),
        shutdown.clone(),
    ));
    tokio::spawn(sweep_retention(
        services.clone(),
        domain::retention::SweepSettings {
            batch_size: args.governance.retention_batch_size,
            interval: Duration::from_secs(args.governance.retention_sweep_interval_seconds.max(1)),
            instance: domain::new_id(),
        },
        shutdown.clone(),
    ));
    let app = http::router(AppState {
        schema,
        services: services.clone(),
        websocket,
        http,
        limits,
        documents: Arc::new(ParsedDocuments::new(
            DocumentLimits {
                max_nesting: args.http.max_query_nesting,
                max_tokens: args.http.max_query_tokens,
            },
            args.http.parsed_query_cache_bytes,
        )),
        user_connections: Default::default(),
        anonymous_connections: Default::default(),
        shutdown,
        persisted_queries,
        sse_streams: Default::default(),
        groups: Default::default(),
    });

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, backend = ?services.db.backend(), "stepwise listening; GraphiQL at http://{address}/graphql");
    serve_connections(listener, app, args.http.header_timeout(), async move {
        shutdown_signal().await;
        // Open WebSockets close with 1001 so clients reconnect elsewhere.
        let _ = shutdown_tx.send(true);
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves `app` on `listener` until `signal`; then stops accepting, lets every connection
/// finish its in-flight request (idle ones close at once) and returns.
///
/// Not with `axum::serve`, which sets no timeouts: a client that sends its headers a byte
/// at a time (or nothing at all) held its connection, a task and a descriptor forever, and
/// 3,000 such sockets were held for as long as their clients liked. Here hyper's HTTP/1
/// connection gets a timer and a header timeout, which also closes keep-alive connections
/// that stay idle that long. The WebSocket handshake is an ordinary HTTP/1 request, so it is
/// covered too; once upgraded, the WebSocket's own init timeout takes over.
///
/// HTTP/1.1 only: `axum::serve`'s protocol sniffing also spoke cleartext HTTP/2 to a client
/// that opened with its preface (axum's `http2` feature is off, but hyper-util's was on
/// through another crate), and that sniffing has no timeout, nor has hyper's HTTP/2 server
/// a header timeout. HTTP/2 belongs to the reverse proxy in front.
async fn serve_connections(
    listener: TcpListener,
    app: axum::Router,
    header_timeout: Duration,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use tower_service::Service as _;
    // The peer address is what per-client limits (sign-in attempts) are keyed by;
    // handlers read it as `ConnectInfo<SocketAddr>`.
    let mut make_service = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    // Each connection task holds a receiver; shutdown waits until all are gone.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::watch::channel(());
    let mut signal = std::pin::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let Ok(()) = std::future::poll_fn(|cx| {
            tower_service::Service::<SocketAddr>::poll_ready(&mut make_service, cx)
        })
        .await;
        let Ok(service) = make_service.call(peer).await;
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended with an error");
                    }
                    drop(done);
                    return;
                }
                _ = stop.wait_for(|stop| *stop) => {}
            }
            connection.as_mut().graceful_shutdown();
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
}

/// A failed accept: a connection reset before it was accepted is nothing; anything else
/// (out of file descriptors above all) is logged and waited out briefly rather than spun on.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept connections; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The run-timeout sweeper, until shutdown. Every instance runs one; each stale run is
/// claimed by a conditional update, so instances never time out a run twice.
async fn sweep_stale_runs(
    services: Services,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        match domain::run::time_out_stale_runs(&services.db, &services.events, &services.health)
            .await
        {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "timed out runs with no recent step report"),
            // A database outage: the next tick tries again.
            Err(error) => tracing::warn!(error = ?error, "run timeout sweep failed"),
        }
    }
}

/// The run queue's upkeep, until shutdown: fires due schedules and re-queues (or fails)
/// runs whose lease expired, every `every`. Every instance runs it; each firing and each
/// expiry is claimed by one instance (see `domain::schedule`, `domain::run::queue`).
async fn tend_queue(
    services: Services,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        match domain::schedule::fire_due(&services.db, &services.events, services.queue.cron).await
        {
            Ok(0) => {}
            Ok(count) => tracing::debug!(count, "fired schedules"),
            // A database outage: the next tick tries again.
            Err(error) => tracing::warn!(error = ?error, "firing schedules failed"),
        }
        match domain::run::queue::expire_leases(&services.db, &services.events, &services.health)
            .await
        {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "re-queued or failed runs whose lease expired"),
            Err(error) => tracing::warn!(error = ?error, "lease expiry sweep failed"),
        }
    }
}

/// The retention sweeper, until shutdown. Every instance runs one; each company is claimed
/// by one instance at a time (see `domain::retention`). The first sweep runs one interval
/// after start, not during start-up.
async fn sweep_retention(
    services: Services,
    settings: domain::retention::SweepSettings,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let every = settings.interval;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        let stopping = shutdown.clone();
        let stop = move || *stopping.borrow();
        match domain::retention::sweep(&services.db, &settings, &stop).await {
            Ok(swept) if swept.batches == 0 => {}
            Ok(swept) => tracing::info!(
                passes = swept.passes,
                batches = swept.batches,
                runs = swept.runs,
                health_logs = swept.health_logs,
                notifications = swept.notifications,
                "retention sweep removed expired rows"
            ),
            // A database outage: the next tick tries again.
            Err(error) => tracing::warn!(error = ?error, "retention sweep failed"),
        }
    }
}

/// Removes blobs that no screenshot references (left by a crash or a failed insert after
/// the blob write, or by a deleted company) every `interval`, once they are older than
/// `grace`. The first sweep runs one interval after start, not during start-up.
fn spawn_blob_sweep(services: Services, interval: Duration, grace: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match domain::screenshot::sweep_blobs(&services.db, &services.blobs, grace).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "removed unreferenced screenshot blobs"),
                Err(crate::error::AppError::Internal(error)) => {
                    tracing::warn!(?error, "blob sweep failed; retrying next interval")
                }
                Err(_) => tracing::warn!("blob sweep failed; retrying next interval"),
            }
        }
    });
}

/// Resolves on Ctrl-C or SIGTERM: stop accepting, let in-flight requests finish.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
