//! The HTTP surface: every route is listed in [`router`].

mod graphql;
mod health;
mod metrics;
mod screenshots;
mod websocket;

use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::routing::get;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::graphql::{Services, StepwiseSchema};
pub use websocket::WebSocketConfig;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub schema: StepwiseSchema,
    pub services: Services,
    pub websocket: WebSocketConfig,
    /// Becomes true when the server begins shutting down; WebSockets then close with 1001.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

pub const GRAPHQL_PATH: &str = "/graphql";
pub const GRAPHQL_WS_PATH: &str = "/graphql/ws";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(GRAPHQL_PATH, get(graphql::get_handler).post(graphql::post_handler))
        .route(GRAPHQL_WS_PATH, get(websocket::handler))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/screenshots/{id}", get(screenshots::handler))
        .layer(
            // One INFO line per request, when the response is ready.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(tower_http::LatencyUnit::Micros)),
        )
        .with_state(state)
}

/// How long `/readyz` waits for the database before answering "not ready".
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
