//! Probes for orchestrators: `/healthz` says the process is up, `/readyz` that it can serve
//! (the primary database answers), with details of what else it depends on.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{AppState, READINESS_TIMEOUT};

pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 while the primary database answers, 503 otherwise. The body says more:
///
/// ```json
/// { "status": "ready", "database": "up",
///   "replicas": [{ "name": "replica.example:5432/stepwise", "state": "lagging", "lagMs": 4200 }],
///   "eventBus": { "transport": "nats", "state": "down" } }
/// ```
///
/// A replica that is down or lags does not make the instance unready (the primary serves
/// its reads), nor does an event bus that is down: writes go on, and subscribers
/// resynchronise when it is back. Taking every instance out of a load balancer for either
/// would turn a degraded service into no service.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let services = &state.services;
    let database_up = matches!(
        tokio::time::timeout(READINESS_TIMEOUT, services.db.ping()).await,
        Ok(Ok(()))
    );
    let body = json!({
        "status": if database_up { "ready" } else { "unavailable" },
        "database": if database_up { "up" } else { "down" },
        "replicas": services.db.replica_status(),
        "eventBus": services.events.status(),
    });
    let status = if database_up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
