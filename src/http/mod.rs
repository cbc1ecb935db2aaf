//! The HTTP surface: every route is listed in [`router`].

mod client_address;
mod credentials;
mod graphiql;
mod graphql;
mod health;
mod hooks;
mod metrics;
pub mod multiplex;
mod operation;
mod screenshots;
mod sse;
mod websocket;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Request, header};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::graphql::{ParsedDocuments, PersistedQueries, QueryLimits, Services, StepwiseSchema};
pub use graphiql::GraphiQL;
pub use graphql::{CorsOrigins, HttpConfig};
pub use sse::Reservations;
pub use websocket::{AnonymousConnections, UserConnections, WebSocketConfig};

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub schema: StepwiseSchema,
    pub services: Services,
    pub websocket: WebSocketConfig,
    pub http: HttpConfig,
    /// Open WebSockets per user, shared by every connection of this instance.
    pub user_connections: UserConnections,
    /// Open WebSockets not (yet) signed in, per client address.
    pub anonymous_connections: AnonymousConnections,
    /// Limits checked by the transports themselves (the rest live on the schema).
    pub limits: QueryLimits,
    /// Recently parsed operations, shared by both transports.
    pub documents: Arc<ParsedDocuments>,
    /// Becomes true when the server begins shutting down; WebSockets then close with 1001.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Automatic persisted queries by hash (and the allow-list), shared by every transport.
    pub persisted_queries: Arc<PersistedQueries>,
    /// Event streams of graphql-sse's single connection mode, by their reservation token.
    pub sse_streams: sse::Reservations,
    /// Subscribers sharing one resolution per event, by operation and authorisation.
    pub groups: Arc<multiplex::Groups>,
}

pub const GRAPHQL_PATH: &str = "/graphql";
/// Taken from the client when it sends one, generated otherwise.
const REQUEST_ID: &str = "x-request-id";
pub const GRAPHQL_WS_PATH: &str = "/graphql/ws";
/// GraphQL over Server-Sent Events (the graphql-sse protocol).
pub const GRAPHQL_SSE_PATH: &str = "/graphql/stream";

pub fn router(state: AppState) -> Router {
    let cors = state.http.cors.clone().map(cors_layer);
    let graphql = get(graphql::get_handler)
        .post(graphql::post_handler)
        // Bounds JSON bodies; multipart bodies are counted by the handler against their own
        // (larger) limit.
        .layer(DefaultBodyLimit::max(state.http.max_body_bytes));
    let router = Router::new()
        .route(GRAPHQL_PATH, graphql)
        .route(GRAPHQL_WS_PATH, get(websocket::handler))
        .route(
            GRAPHQL_SSE_PATH,
            axum::routing::any(sse::handler)
                .layer(DefaultBodyLimit::max(state.http.max_body_bytes)),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/screenshots/{id}", get(screenshots::handler))
        .route("/hooks/{id}", post(hooks::handler))
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
        // Outermost, so an id the client sent is dropped before it is kept (and logged).
        .layer(axum::middleware::map_request(drop_unsafe_request_id))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Longest request id taken from a client.
const MAX_REQUEST_ID_LEN: usize = 64;

/// Keeps a client's `x-request-id` only when it is one `[A-Za-z0-9._-]{1,64}` value;
/// otherwise the header is dropped and a fresh id is generated. The id is written into
/// every log line of the request, and in the text format a space, `}` or control character
/// in it would let a client forge fields or whole lines.
async fn drop_unsafe_request_id(
    mut request: Request<axum::body::Body>,
) -> Request<axum::body::Body> {
    let headers = request.headers_mut();
    let mut ids = headers.get_all(REQUEST_ID).iter();
    let safe = match (ids.next(), ids.next()) {
        (None, _) => return request,
        (Some(id), None) => is_safe_request_id(id.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !safe {
        headers.remove(REQUEST_ID);
    }
    request
}

fn is_safe_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// CORS for the configured origins. No credentials mode: tokens travel in the
/// `Authorization` header, never in cookies.
fn cors_layer(origins: CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            sse::TOKEN_HEADER,
        ])
        .max_age(Duration::from_secs(600))
}

/// How long `/readyz` waits for the database before answering "not ready".
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::is_safe_request_id;

    #[test]
    fn only_plain_short_request_ids_are_kept() {
        for id in ["trace-me-42", "a", "A.b_c-9", &"x".repeat(64)] {
            assert!(is_safe_request_id(id.as_bytes()), "{id}");
        }
        for id in [
            "",
            &"x".repeat(65),
            "a b",
            "a}",
            "a\u{1b}[31m",
            "a\nb",
            "a=b",
            "é",
            "a/b",
        ] {
            assert!(!is_safe_request_id(id.as_bytes()), "{id:?}");
        }
    }
}
