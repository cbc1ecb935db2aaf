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
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
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
/// Taken from the client when it sends one, generated otherwise.
const REQUEST_ID: &str = "x-request-id";
pub const GRAPHQL_WS_PATH: &str = "/graphql/ws";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(GRAPHQL_PATH, get(graphql::get_handler).post(graphql::post_handler))
        .route(GRAPHQL_WS_PATH, get(websocket::handler))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/screenshots/{id}", get(screenshots::handler))
        // Layers run bottom-up on the way in: the id is set first, so the span can show it,
        // and it is echoed in the response so a client can quote it in a bug report.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            // One INFO line per request, when the response is ready.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let id = request
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(tower_http::LatencyUnit::Micros)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// How long `/readyz` waits for the database before answering "not ready".
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);
