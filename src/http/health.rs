//! Probes for orchestrators: `/healthz` says the process is up, `/readyz` that it can serve
//! (the database answers).

use axum::extract::State;
use axum::http::StatusCode;

use super::{AppState, READINESS_TIMEOUT};

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(READINESS_TIMEOUT, state.services.db.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        Ok(Err(_)) | Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
    }
}
