//! `POST /hooks/{id}`: an outside system queues a run with a signed JSON body (see
//! [`crate::domain::webhook`] for secrets and signatures).
//!
//! The endpoint is anonymous and assumed hostile. In order, each step cheap before the
//! next one costs more:
//! 1. the per-hook rate limit (429): a bounded table keyed by the id in the path, whatever
//!    it is, so a flood on one URL stops before the database and a flood of random ids
//!    cannot grow it;
//! 2. `Content-Type: application/json` (415) and a declared length within the limit (413);
//! 3. the hook, enabled (404 — an unknown, malformed, disabled or deleted hook all answer
//!    the same, and ids are random, so nothing about any company shows);
//! 4. the body, read up to the limit and no further (413);
//! 5. the signature (401), before anything is written;
//! 6. the body is JSON (400) and the `Idempotency-Key` well-formed (400);
//! 7. the run is queued in the hook's company: 202 with its id (the same run again for
//!    a replayed key, or a replayed signature without a key).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::domain;
use crate::domain::webhook::SIGNATURE_HEADER;
use crate::error::AppError;

/// The longest id worth looking up (a UUID is 36 characters).
const MAX_ID_CHARS: usize = 64;
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    answer(
        status,
        json!({ "error": { "code": code, "message": message } }),
    )
}

fn not_found() -> Response {
    refusal(StatusCode::NOT_FOUND, "NOT_FOUND", "no such webhook")
}

fn too_large(limit: usize) -> Response {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        &format!("the body must be at most {limit} bytes"),
    )
}

fn unavailable(error: &AppError) -> Response {
    let seconds = error.retry_after().map_or(1, |d| d.as_secs().max(1));
    let mut response = refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "the service is busy; try again shortly",
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn failed(error: AppError) -> Response {
    match &error {
        AppError::Unavailable { .. } | AppError::Contention(_) => unavailable(&error),
        // The workflow cannot be run now (archived, broken, draft): the sender's own
        // workflow, so it may know.
        AppError::BadUserInput { message, .. } => {
            refusal(StatusCode::CONFLICT, "CONFLICT", message)
        }
        AppError::Internal(detail) => {
            tracing::error!(error = ?detail, "internal error while taking a webhook request");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "internal server error",
            )
        }
        _ => not_found(),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The sender's `Idempotency-Key`: 1 to 200 visible ASCII characters; `Err` when present
/// but not that.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ()> {
    let mut values = headers.get_all(IDEMPOTENCY_HEADER).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(IDEMPOTENCY_HEADER) {
            Err(())
        } else {
            Ok(None)
        };
    };
    let key = value.to_str().map_err(|_| ())?;
    let visible = key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if key.is_empty() || key.len() > domain::health_log::MAX_IDEMPOTENCY_KEY_CHARS || !visible {
        return Err(());
    }
    Ok(Some(key.to_owned()))
}

pub async fn handler(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let services = &state.services;
    let settings = &services.queue;
    if id.len() > MAX_ID_CHARS {
        return not_found();
    }
    if let Err(wait) = settings
        .webhook_limits
        .take(id.as_str(), std::time::Instant::now())
    {
        let mut response = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "too many requests to this webhook; try again later",
        );
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if !is_json(&headers) {
        return refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as Content-Type: application/json",
        );
    }
    let limit = settings.max_json_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large(limit);
    }
    let hook = match domain::webhook::for_delivery(&services.db, &id).await {
        Ok(Some(hook)) => hook,
        Ok(None) => return not_found(),
        Err(error) => return failed(error),
    };
    // At most `limit` bytes are ever buffered, however the body is framed.
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return too_large(limit);
    };
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    let verified = domain::webhook::verify(
        &settings.webhook_keys,
        &hook,
        signature,
        &bytes,
        chrono::Utc::now().timestamp(),
        settings.webhook_tolerance_seconds,
    );
    let signature = match verified {
        Ok(signature) => signature,
        Err(refused) => {
            tracing::debug!(webhook_id = %hook.id, ?refused, "refused a webhook signature");
            return refusal(
                StatusCode::UNAUTHORIZED,
                "UNAUTHENTICATED",
                "missing, stale or wrong Stepwise-Signature",
            );
        }
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "the body is not valid JSON",
        );
    };
    let document: serde_json::Value = match serde_json::from_str(text) {
        Ok(document) => document,
        Err(_) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "the body is not valid JSON",
            );
        }
    };
    if domain::json::exceeds_depth(&document, domain::json::MAX_JSON_DEPTH) {
        return refusal(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "the body nests arrays and objects too deeply",
        );
    }
    let key = match idempotency_key(&headers) {
        Ok(Some(key)) => format!("key:{key}"),
        // Without a key the signature is the key: a replay of the very same request
        // (within the timestamp tolerance) answers the run it queued.
        Ok(None) => format!("sig:{signature}"),
        Err(()) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "Idempotency-Key must be 1 to 200 visible ASCII characters, sent once",
            );
        }
    };
    // The body as sent: valid JSON, kept byte for byte.
    match domain::webhook::deliver(&services.db, &services.events, &hook, text.to_owned(), &key)
        .await
    {
        Ok(delivered) => answer(
            StatusCode::ACCEPTED,
            json!({ "runId": delivered.run.id, "duplicate": delivered.duplicate }),
        ),
        Err(error) => failed(error),
    }
}
