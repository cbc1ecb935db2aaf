//! `GET /metrics` in the OpenMetrics text format (which Prometheus scrapes natively).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::METRICS;

pub async fn metrics(State(state): State<AppState>) -> Response {
    // Pool figures are read at scrape time rather than tracked on every checkout.
    let (pool_size, pool_idle) = state.services.db.pool_status();
    METRICS
        .db_pool_connections
        .set(i64::try_from(pool_size).unwrap_or(i64::MAX));
    METRICS
        .db_pool_idle
        .set(i64::try_from(pool_idle).unwrap_or(i64::MAX));
    match METRICS.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
