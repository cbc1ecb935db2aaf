//! GraphQL over HTTP (`POST` and `GET /graphql`), GraphiQL for browsers, and the WebSocket
//! endpoint for subscriptions.

use async_graphql::ParseRequestError;
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::extract::{FromRequest, Request, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::{AppState, GRAPHQL_PATH, GRAPHQL_WS_PATH};
use crate::auth::Authentication;
use crate::auth::jwt::TokenKeys;

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
    let authentication = authenticate_header(request.headers(), &state.services.tokens);
    let graphql_request = match GraphQLRequest::<RequestRejection>::from_request(request, &()).await
    {
        Ok(parsed) => parsed.into_inner(),
        Err(rejection) => return rejection.into_response(),
    };
    let response = state
        .schema
        .execute(graphql_request.data(authentication))
        .await;
    GraphQLResponse::from(response).into_response()
}

pub async fn websocket_handler(
    State(state): State<AppState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let tokens = state.services.tokens.clone();
            GraphQLWebSocket::new(stream, state.schema.clone(), protocol)
                .on_connection_init(move |payload| async move {
                    let mut data = async_graphql::Data::default();
                    data.insert(authenticate_init_payload(&payload, &tokens));
                    Ok(data)
                })
                .serve()
        })
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `Authorization: Bearer <token>`. A header that is present but unusable makes the request
/// `Invalid`, not anonymous, so the client learns its token was refused.
fn authenticate_header(headers: &HeaderMap, tokens: &TokenKeys) -> Authentication {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Authentication::Anonymous;
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    verify(token, tokens)
}

/// The WebSocket `connection_init` payload: `{"token": "..."}` or, as many clients send it,
/// `{"Authorization": "Bearer ..."}`.
fn authenticate_init_payload(payload: &serde_json::Value, tokens: &TokenKeys) -> Authentication {
    let token = payload.get("token").and_then(|t| t.as_str()).or_else(|| {
        ["Authorization", "authorization"]
            .iter()
            .find_map(|key| payload.get(*key).and_then(|v| v.as_str()))
            .map(|v| v.trim().strip_prefix("Bearer ").unwrap_or(v).trim())
    });
    match token {
        None => Authentication::Anonymous,
        token => verify(token, tokens),
    }
}

fn verify(token: Option<&str>, tokens: &TokenKeys) -> Authentication {
    match token.and_then(|t| tokens.verify(t)) {
        Some(viewer) => Authentication::Verified(viewer),
        None => Authentication::Invalid,
    }
}
