//! `GET /metrics` in the Prometheus text exposition format.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let db = &state.services.db;
    let (pool_size, pool_idle) = db.pool_status();
    let body = format!(
        "# HELP stepwise_db_statements_total SQL statements started.\n\
         # TYPE stepwise_db_statements_total counter\n\
         stepwise_db_statements_total {}\n\
         # HELP stepwise_db_pool_connections Open pooled database connections.\n\
         # TYPE stepwise_db_pool_connections gauge\n\
         stepwise_db_pool_connections {pool_size}\n\
         # HELP stepwise_db_pool_idle_connections Pooled connections not in use.\n\
         # TYPE stepwise_db_pool_idle_connections gauge\n\
         stepwise_db_pool_idle_connections {pool_idle}\n",
        db.statements_executed(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
