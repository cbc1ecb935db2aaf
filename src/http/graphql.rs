//! GraphQL over HTTP (`POST` and `GET /graphql`), GraphiQL for browsers, and the WebSocket
//! endpoint for subscriptions.

use async_graphql::ParseRequestError;
use async_graphql::http::{GraphiQLSource, MultipartOptions};
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use futures_util::TryStreamExt as _;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{AppState, GRAPHQL_PATH, GRAPHQL_WS_PATH};
use crate::auth::Authentication;
use crate::error::{AppError, AppResult};
use crate::graphql::{RequestData, Services, null_failed_fields};
use crate::metrics::{self, METRICS, Transport};

/// A request body or query string that is not a GraphQL request at all.
pub struct RequestRejection(ParseRequestError);

impl From<ParseRequestError> for RequestRejection {
    fn from(error: ParseRequestError) -> Self {
        Self(error)
    }
}

impl IntoResponse for RequestRejection {
    fn into_response(self) -> Response {
        let (status, message) = match &self.0 {
            ParseRequestError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".to_owned(),
            ),
            other => (
                StatusCode::BAD_REQUEST,
                format!("malformed GraphQL request: {other}"),
            ),
        };
        let body = json!({ "errors": [{ "message": message, "extensions": { "code": "BAD_USER_INPUT" } }] });
        (status, axum::Json(body)).into_response()
    }
}

pub async fn post_handler(State(state): State<AppState>, request: Request) -> Response {
    execute(&state, request).await
}

/// A browser asking for HTML gets GraphiQL; anything else is a GraphQL request in the
/// query string.
pub async fn get_handler(State(state): State<AppState>, request: Request) -> Response {
    if wants_html(request.headers()) && request.uri().query().is_none_or(|q| !q.contains("query="))
    {
        let page = GraphiQLSource::build()
            .endpoint(GRAPHQL_PATH)
            .subscription_endpoint(GRAPHQL_WS_PATH)
            .title("Stepwise GraphiQL")
            .finish();
        return Html(page).into_response();
    }
    execute(&state, request).await
}

async fn execute(state: &AppState, request: Request) -> Response {
    let authentication = match authenticate_header(request.headers(), &state.services).await {
        Ok(authentication) => authentication,
        Err(error) => return error_response(error),
    };
    let max_file_bytes = state.services.screenshots.max_bytes;
    let graphql_request = match parse_request(request, max_file_bytes).await {
        Ok(parsed) => parsed,
        Err(rejection) => return rejection.into_response(),
    };
    let mut graphql_request =
        RequestData::new(&state.services, authentication).attach(graphql_request);
    let described = metrics::describe(&mut graphql_request);
    // Nested in the request span, so every log line of the operation has its request id.
    let span = tracing::info_span!("graphql", operation = described.0, field = %described.1);
    let started = std::time::Instant::now();
    let mut response = state.schema.execute(graphql_request).instrument(span).await;
    METRICS.record(
        metrics::labels(Transport::Http, described, &response),
        Some(started.elapsed()),
    );
    null_failed_fields(&mut response);
    GraphQLResponse::from(response).into_response()
}

/// Uploads beyond the screenshot limit by more than this are cut off by the transport
/// (413) instead of being read whole; smaller excesses reach the resolver, which answers
/// with a precise BAD_USER_INPUT.
const UPLOAD_SLACK_BYTES: usize = 1024 * 1024;

/// Parses a GraphQL request. Multipart bodies (file uploads, per the GraphQL multipart
/// request spec) are parsed with limits: async-graphql-axum's extractor would accept files
/// of any size and number.
async fn parse_request(
    request: Request,
    max_file_bytes: usize,
) -> Result<async_graphql::Request, RequestRejection> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let multipart = request.method() == Method::POST
        && content_type.as_deref().is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !multipart {
        return Ok(
            GraphQLRequest::<RequestRejection>::from_request(request, &())
                .await?
                .into_inner(),
        );
    }
    let body = request
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other)
        .into_async_read();
    let options = MultipartOptions::default()
        .max_file_size(max_file_bytes.saturating_add(UPLOAD_SLACK_BYTES))
        .max_num_files(1);
    Ok(async_graphql::http::receive_body(content_type, body, options).await?)
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `Authorization: Bearer <token>`. A header that is present but unusable makes the request
/// `Invalid`, not anonymous, so the client learns its token was refused.
async fn authenticate_header(
    headers: &HeaderMap,
    services: &Services,
) -> AppResult<Authentication> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Authentication::Anonymous);
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    match token {
        Some(token) => Ok(authenticate_token(token, services).await?.0),
        None => Ok(Authentication::Invalid),
    }
}

/// Verifies a bearer token and that it still speaks for a current member with the role it
/// claims; also says when it stops being valid (for WebSockets, which outlive a request).
pub async fn authenticate_token(
    token: &str,
    services: &Services,
) -> AppResult<(Authentication, Option<Instant>)> {
    let Some((viewer, expires)) = services.tokens.verify(token) else {
        return Ok((Authentication::Invalid, None));
    };
    if !services.memberships.confirm(&viewer).await? {
        return Ok((Authentication::Invalid, None));
    }
    let remaining = u64::try_from(expires - chrono::Utc::now().timestamp()).unwrap_or(0);
    Ok((
        Authentication::Verified(viewer),
        Some(Instant::now() + Duration::from_secs(remaining)),
    ))
}

/// A request that failed before GraphQL execution (the membership check could not reach
/// the database): a GraphQL error response with its code, and 503 so clients retry.
fn error_response(error: AppError) -> Response {
    let error = async_graphql::Error::from(error).into_server_error(async_graphql::Pos::default());
    let body = async_graphql::Response::from_errors(vec![error]);
    (StatusCode::SERVICE_UNAVAILABLE, GraphQLResponse::from(body)).into_response()
}
