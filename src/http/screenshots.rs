//! `GET /screenshots/{id}?expires=..&signature=..`: serves a screenshot's bytes to whoever
//! holds a URL minted by `Screenshot.url` (see [`crate::auth::signed_url`]).
//!
//! Every refusal — missing or malformed parameters, an unknown id, another company's id, a
//! wrong signature, an expired URL — is the same 403, so the endpoint tells a prober
//! nothing about which screenshots exist.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::domain;

pub async fn handler(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let services = &state.services;
    let Ok(Query(params)) = query else {
        return forbidden();
    };
    let (Some(expires), Some(signature)) = (
        params.get("expires").and_then(|e| e.parse::<i64>().ok()),
        params.get("signature"),
    ) else {
        return forbidden();
    };
    let row = match domain::screenshot::find_for_signed_url(&services.db, &id).await {
        Ok(Some(row)) => row,
        Ok(None) => return forbidden(),
        Err(error) => return internal(error),
    };
    let now = chrono::Utc::now().timestamp();
    if let Err(refusal) =
        services
            .url_signer
            .verify(&row.company_id, &row.id, expires, signature, now)
    {
        tracing::debug!(screenshot_id = %row.id, ?refusal, "refused a screenshot URL");
        return forbidden();
    }

    // The bytes behind an id never change (content-addressed), so the hash is a perfect
    // ETag and the response may be cached for as long as the URL stays valid.
    let etag = format!("\"{}\"", row.hash);
    let mut response_headers = HeaderMap::new();
    let max_age = (expires - now).max(0);
    let cache_control = format!("private, max-age={max_age}, immutable");
    for (name, value) in [
        (header::ETAG, etag.as_str()),
        (header::CACHE_CONTROL, cache_control.as_str()),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            response_headers.insert(name, value);
        }
    }
    if if_none_match(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }

    let stream = match services.blobs.read(&row.storage_key).await {
        Ok(Some(stream)) => stream,
        Ok(None) => {
            tracing::error!(screenshot_id = %row.id, key = %row.storage_key, "screenshot row without its blob");
            return (StatusCode::NOT_FOUND, "screenshot bytes not found").into_response();
        }
        Err(error) => return internal(error),
    };
    // Stored content types come from our own magic-byte check; still, never let a browser
    // sniff or run anything from this origin.
    if let Ok(value) = HeaderValue::from_str(&row.content_type) {
        response_headers.insert(header::CONTENT_TYPE, value);
    }
    response_headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response_headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if let Ok(length) = HeaderValue::from_str(&row.size_bytes.to_string()) {
        response_headers.insert(header::CONTENT_LENGTH, length);
    }
    (response_headers, Body::from_stream(stream)).into_response()
}

/// Whether `If-None-Match` names this ETag (or `*`); weak comparison, as RFC 9110 asks.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == etag)
}

fn forbidden() -> Response {
    (StatusCode::FORBIDDEN, "invalid or expired screenshot URL").into_response()
}

fn internal(error: crate::error::AppError) -> Response {
    if let crate::error::AppError::Internal(detail) = &error {
        tracing::error!(error = ?detail, "serving a screenshot failed");
    }
    (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(if_none_match(&headers, "\"abc\""));
        assert!(!if_none_match(&headers, "\"abd\""));
        assert!(!if_none_match(&HeaderMap::new(), "\"abc\""));
    }
}
