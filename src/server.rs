//! Start-up and shutdown of `stepwise serve`: wire configuration, database, schema and
//! routes together, then serve until SIGTERM or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::auth::jwt::{self, TokenKeys};
use crate::config::{DatabaseUrl, ServeArgs};
use crate::db::{Db, migrations};
use crate::domain::health::HealthRules;
use crate::events::EventBus;
use crate::graphql::QueryLimits;
use crate::graphql::{self, Services};
use crate::http::{self, AppState, CorsOrigins, HttpConfig, WebSocketConfig};

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let url = DatabaseUrl::parse(&args.database.database_url)?;
    if args.skip_migrations {
        tracing::info!("skipping migrations (--skip-migrations)");
    } else {
        let applied = migrations::perform(&url, migrations::Action::RunPending)
            .await
            .context("applying database migrations")?;
        for migration in &applied {
            tracing::info!(migration = %migration.name, "applied migration");
        }
    }

    let secret = jwt::load_or_create_secret(&args.jwt, &url)?;
    let tokens = Arc::new(TokenKeys::new(&secret, &args.jwt)?);
    let db = Db::connect(&args.database)?;
    let events = match &url {
        DatabaseUrl::Postgres(url) => EventBus::with_postgres(url.clone()),
        DatabaseUrl::Sqlite(_) => EventBus::new(),
    };
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
    let services = Services {
        db,
        tokens,
        events,
        health,
    };
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
        .finish();
    let http = HttpConfig {
        cors: CorsOrigins::parse(&args.http.cors_allowed_origins)
            .context("--cors-allowed-origins")?,
        graphiql: !args.http.disable_graphiql,
        max_body_bytes: args.http.max_body_bytes,
        max_multipart_bytes: args.http.max_multipart_bytes,
        request_timeout: args.http.request_timeout(),
    };
    let websocket = WebSocketConfig {
        init_timeout: Duration::from_millis(args.ws_init_timeout_ms),
        max_message_bytes: args.ws_max_message_bytes,
        max_operations: args.ws_max_operations,
    };
    let (shutdown_tx, shutdown) = tokio::sync::watch::channel(false);
    let app = http::router(AppState {
        schema,
        services: services.clone(),
        websocket,
        http,
        shutdown,
    });

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, backend = ?services.db.backend(), "stepwise listening; GraphiQL at http://{address}/graphql");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Open WebSockets close with 1001 so clients reconnect elsewhere.
            let _ = shutdown_tx.send(true);
        })
        .await
        .context("serving HTTP")?;
    tracing::info!("stopped");
    Ok(())
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
