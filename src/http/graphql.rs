//! GraphQL over HTTP (`POST` and `GET /graphql`), following the GraphQL-over-HTTP spec as
//! graphql-http's audit suite checks it, and GraphiQL for browsers.
//!
//! async-graphql-axum's stock extractor and response do not (they answer
//! `application/graphql-response+json` whatever the client accepts, 200 on parse errors,
//! run mutations over GET and read any content type as JSON), so requests are read and
//! answered here:
//!
//! - `Accept` picks the response type: `application/graphql-response+json`, or
//!   `application/json` (also for `*/*` and a missing header); anything else is 406.
//! - `POST` bodies must be `application/json` (UTF-8) or `multipart/form-data` (the GraphQL
//!   multipart request spec, for uploads); anything else is 415. Together with 405 for
//!   mutations over `GET` this is the CSRF defence: the bodies a cross-site form can send
//!   without a CORS preflight (`text/plain`, `application/x-www-form-urlencoded`) never
//!   reach the schema. Multipart is such a body too, but credentials only ever travel in
//!   the `Authorization` header (never cookies), which a cross-site form cannot set, so a
//!   forged multipart request acts as an anonymous caller.
//! - A request error (unparseable body or document, validation, a query limit) has no
//!   `data` entry, and is a 400 under `application/graphql-response+json` (200 under
//!   `application/json`, as the spec asks for legacy clients).
//! - Batches are refused: one request, one operation, one set of limits.
//!
//! Once read, a request runs through the pipeline WebSockets share
//! ([`operation`](super::operation)); this file adds only what HTTP says around it.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_graphql::{UploadValue, Value as ConstValue, Variables};
use axum::body::{BodyDataStream, Bytes};
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt as _};
use multer::{Constraints, Multipart, SizeLimit};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::AppState;
use super::client_address::client_address;
use super::operation::{Answer, Operation};
use crate::auth::Authentication;
use crate::crypto::secret_token::SecretKind;
use crate::error::{AppResult, ErrorCode};
use crate::graphql::{RequestData, Services};
use crate::metrics::Transport;

/// Transport settings, from configuration.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Browser origins allowed to call the API (CORS); `None` sends no CORS headers.
    pub cors: Option<CorsOrigins>,
    /// GraphiQL, served to browsers on `GET /graphql`; `None` when disabled.
    pub graphiql: Option<Arc<super::graphiql::GraphiQL>>,
    /// Largest JSON body.
    pub max_body_bytes: usize,
    /// Largest multipart body (uploads).
    pub max_multipart_bytes: usize,
    /// Most files one multipart request may upload.
    pub max_upload_files: usize,
    /// How long reading and executing one request may take.
    pub request_timeout: Duration,
    /// A header a trusted proxy writes the client's address into (see `client_address`).
    pub client_address_header: Option<axum::http::HeaderName>,
}

/// Which origins CORS lets in.
#[derive(Debug, Clone)]
pub enum CorsOrigins {
    Any,
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// From the configured list: `*` alone means any origin; an empty list turns CORS off.
    pub fn parse(origins: &[String]) -> anyhow::Result<Option<Self>> {
        let origins: Vec<&str> = origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() {
            return Ok(None);
        }
        if origins == ["*"] {
            return Ok(Some(Self::Any));
        }
        let mut list = Vec::with_capacity(origins.len());
        for origin in origins {
            // Browsers send `scheme://host[:port]` with no path; anything else never matches.
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin
                    .trim_end_matches('/')
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.contains('/'));
            if !valid || origin == "*" {
                anyhow::bail!(
                    "CORS origin {origin:?} is not of the form https://host[:port] (or `*` alone)"
                );
            }
            list.push(HeaderValue::from_str(origin.trim_end_matches('/'))?);
        }
        Ok(Some(Self::List(list)))
    }
}

/// `extensions.code` of a request that ran out of time.
const TIMEOUT_CODE: &str = "TIMEOUT";

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const APPLICATION_JSON: &str = "application/json";

/// The request extension of Apollo's automatic persisted queries.
const PERSISTED_QUERY: &str = "persistedQuery";

/// The two response media types of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaType {
    GraphQLResponseJson,
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::GraphQLResponseJson => "application/graphql-response+json; charset=utf-8",
            Self::Json => "application/json; charset=utf-8",
        })
    }
}

pub async fn post_handler(State(state): State<AppState>, request: Request) -> Response {
    handle(&state, request).await
}

/// A browser asking for HTML gets GraphiQL (unless disabled); anything else is a GraphQL
/// request in the query string.
pub async fn get_handler(State(state): State<AppState>, request: Request) -> Response {
    if let Some(graphiql) = &state.http.graphiql
        && wants_html(request.headers())
        && request.uri().query().is_none_or(|q| !q.contains("query="))
    {
        return graphiql.response(request.headers());
    }
    handle(&state, request).await
}

async fn handle(state: &AppState, request: Request) -> Response {
    let Some(media) = negotiate(request.headers()) else {
        return error_response(
            StatusCode::NOT_ACCEPTABLE,
            MediaType::Json,
            ErrorCode::BadUserInput.as_str(),
            format!("Accept must allow {GRAPHQL_RESPONSE_JSON} or {APPLICATION_JSON}"),
        );
    };
    // Slow bodies count against the same budget as slow resolvers.
    match tokio::time::timeout(
        state.http.request_timeout,
        read_and_execute(state, request, media),
    )
    .await
    {
        Ok(response) => response,
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            media,
            TIMEOUT_CODE,
            format!(
                "the request took longer than {} ms and was cancelled",
                state.http.request_timeout.as_millis()
            ),
        ),
    }
}

async fn read_and_execute(state: &AppState, request: Request, media: MediaType) -> Response {
    let authentication = match authenticate_request(request.headers(), &state.services).await {
        Ok((authentication, _)) => authentication,
        Err(error) => return unavailable_response(error, media),
    };
    let address = client_address(
        request.headers(),
        request.extensions(),
        state.http.client_address_header.as_ref(),
    );
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_get = request.method() == Method::GET;
    let max_file_bytes = state.services.screenshots.max_bytes;
    let graphql_request = match read_request(request, &state.http, max_file_bytes).await {
        Ok(parsed) => parsed,
        Err(rejection) => return rejection.into_response(media),
    };
    let operation = match Operation::prepare(state, graphql_request, Transport::Http) {
        Ok(operation) => operation,
        Err(refused) => return graphql_response(refused.into(), media),
    };
    if is_get && operation.is_mutation() {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            ErrorCode::BadUserInput.as_str(),
            "mutations must be sent with POST".to_owned(),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let data = RequestData::new(&state.services, authentication)
        .from_address(address)
        .from_user_agent(user_agent.as_deref());
    graphql_response(operation.execute(state, data).await, media)
}

/// The member list could not be read (pool exhausted, database down): not the client's
/// fault. Answered with the error's own code (UNAVAILABLE, retryable) and its
/// `Retry-After`, like the same failure inside a resolver.
pub(super) fn unavailable_response(error: crate::error::AppError, media: MediaType) -> Response {
    let code = error.code();
    let retry_after = error
        .retry_after()
        .map(|d| (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1));
    let message = async_graphql::Error::from(error).message;
    let mut extensions = json!({ "code": code.as_str() });
    if let Some(seconds) = retry_after {
        extensions["retryAfter"] = json!(seconds);
    }
    let body = json!({ "errors": [{ "message": message, "extensions": extensions }] });
    let mut response = json_response(StatusCode::SERVICE_UNAVAILABLE, media, &body);
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

// ---------------------------------------------------------------------------
// Reading requests
// ---------------------------------------------------------------------------

/// Why a request was refused before it reached the schema.
pub(super) struct Rejection {
    status: StatusCode,
    message: String,
}

impl Rejection {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("the request body is larger than {limit} bytes (--max-body-bytes)"),
        }
    }

    pub(super) fn into_response(self, media: MediaType) -> Response {
        error_response(
            self.status,
            media,
            ErrorCode::BadUserInput.as_str(),
            self.message,
        )
    }
}

pub(super) async fn read_request(
    request: Request,
    config: &HttpConfig,
    max_file_bytes: usize,
) -> Result<async_graphql::Request, Rejection> {
    if request.method() == Method::GET {
        return read_query_string(request.uri());
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        APPLICATION_JSON => {
            // JSON is UTF-8 by definition (RFC 8259); a body that says otherwise is refused
            // rather than misread.
            let charset_ok = parts.all(|param| match param.split_once('=') {
                Some((key, value)) if key.trim().eq_ignore_ascii_case("charset") => {
                    value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
                }
                _ => true,
            });
            if !charset_ok {
                return Err(unsupported_media_type());
            }
            read_json(request, config.max_body_bytes).await
        }
        "multipart/form-data" => {
            let limits = MultipartLimits {
                body: config.max_multipart_bytes,
                json: config.max_body_bytes,
                file: max_file_bytes.saturating_add(UPLOAD_SLACK_BYTES),
                files: config.max_upload_files,
            };
            read_multipart(request, &content_type, limits).await
        }
        _ => Err(unsupported_media_type()),
    }
}

fn unsupported_media_type() -> Rejection {
    Rejection {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        message: format!("POST bodies must be {APPLICATION_JSON} (UTF-8) or multipart/form-data"),
    }
}

/// The parameters of a GET request, each a string (variables and extensions hold JSON).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryParameters {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// `GET /graphql?query=...&operationName=...&variables=<JSON>&extensions=<JSON>`.
/// (async-graphql's `parse_query_string` reads `operation_name` rather than the spec's
/// `operationName`, so it is not used.)
fn read_query_string(uri: &Uri) -> Result<async_graphql::Request, Rejection> {
    let Query(parameters) = Query::<QueryParameters>::try_from_uri(uri)
        .map_err(|e| Rejection::bad_request(format!("malformed query string: {e}")))?;
    let mut fields = Map::new();
    if let Some(query) = parameters.query.filter(|q| !q.trim().is_empty()) {
        fields.insert("query".to_owned(), Value::String(query));
    }
    if let Some(name) = parameters.operation_name.filter(|n| !n.is_empty()) {
        fields.insert("operationName".to_owned(), Value::String(name));
    }
    for (name, raw) in [
        ("variables", parameters.variables),
        ("extensions", parameters.extensions),
    ] {
        if let Some(raw) = raw.filter(|r| !r.trim().is_empty()) {
            let value = serde_json::from_str(&raw)
                .map_err(|e| Rejection::bad_request(format!("`{name}` is not valid JSON: {e}")))?;
            fields.insert(name.to_owned(), value);
        }
    }
    json_request(fields)
}

async fn read_json(request: Request, limit: usize) -> Result<async_graphql::Request, Rejection> {
    // The route's `DefaultBodyLimit` (= `limit`) bounds what this buffers.
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Rejection::too_large(limit)
            } else {
                Rejection::bad_request(format!("could not read the request body: {rejection}"))
            }
        })?;
    if body.is_empty() {
        return Err(Rejection::bad_request("the request body is empty"));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Rejection::bad_request(format!("the request body is not valid JSON: {e}")))?;
    match value {
        Value::Object(fields) => json_request(fields),
        Value::Array(_) => Err(batch_refused()),
        _ => Err(Rejection::bad_request(
            "the request body must be a JSON object",
        )),
    }
}

fn batch_refused() -> Rejection {
    Rejection::bad_request("batched requests are not supported; send one operation per request")
}

/// The request parameters of the spec, each checked for its type (a wrong type is a 400,
/// not something to coerce). `query` may be left out only by an automatic persisted query
/// (`extensions.persistedQuery`), whose text the pipeline looks up by its hash.
fn json_request(mut fields: Map<String, Value>) -> Result<async_graphql::Request, Rejection> {
    let persisted = fields
        .get("extensions")
        .and_then(|extensions| extensions.get(PERSISTED_QUERY))
        .is_some();
    let query = match fields.remove("query") {
        Some(Value::String(query)) => query,
        None | Some(Value::Null) if persisted => String::new(),
        None | Some(Value::Null) => return Err(Rejection::bad_request("missing `query`")),
        Some(_) => return Err(Rejection::bad_request("`query` must be a string")),
    };
    let mut request = async_graphql::Request::new(query);
    match fields.remove("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name),
        Some(_) => {
            return Err(Rejection::bad_request("`operationName` must be a string"));
        }
    }
    if let Some(variables) = optional_map(&mut fields, "variables")? {
        request = request.variables(Variables::from_json(Value::Object(variables)));
    }
    if let Some(extensions) = optional_map(&mut fields, "extensions")? {
        for (key, value) in extensions {
            let value = ConstValue::from_json(value)
                .map_err(|e| Rejection::bad_request(format!("invalid `extensions`: {e}")))?;
            request.extensions.0.insert(key, value);
        }
    }
    Ok(request)
}

fn optional_map(
    fields: &mut Map<String, Value>,
    name: &str,
) -> Result<Option<Map<String, Value>>, Rejection> {
    match fields.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(Rejection::bad_request(format!(
            "`{name}` must be an object"
        ))),
    }
}

/// Uploads beyond the screenshot limit by more than this are cut off by the transport
/// (413) instead of being read whole; smaller excesses reach the resolver, which answers
/// with a precise BAD_USER_INPUT.
const UPLOAD_SLACK_BYTES: usize = 1024 * 1024;

/// What a multipart request may carry, from configuration.
struct MultipartLimits {
    /// The whole body (`--max-multipart-bytes`).
    body: usize,
    /// The `operations` and `map` parts, each (`--max-body-bytes`, as for a JSON body).
    json: usize,
    /// One file part.
    file: usize,
    /// File parts (`--max-upload-files`).
    files: usize,
}

/// The GraphQL multipart request spec (file uploads): an `operations` part, a `map` part,
/// then one part per file the map names, in that order.
///
/// Read here with multer rather than by async-graphql's reader, which buffers the
/// `operations` part up to the file limit (past `--max-body-bytes`), reads every part it is
/// sent whether the map names it or not, and reports every limit as the body's. Here each
/// part is bounded by its own limit as it streams in, a part the map does not name (or a
/// second copy of one) is refused before it is read, and a refusal names the limit that
/// applied.
async fn read_multipart(
    request: Request,
    content_type: &str,
    limits: MultipartLimits,
) -> Result<async_graphql::Request, Rejection> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.body as u64) {
        return Err(multipart_too_large(limits.body));
    }
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| Rejection::bad_request(format!("malformed multipart request: {e}")))?;
    let body = SharedBody::new(request);
    let parsed = parse_multipart(body.clone(), boundary, &limits).await;
    if parsed.is_err() {
        // The client may still be sending: read the rest (within the body limit, which it
        // could have sent anyway) so that it receives the refusal rather than a reset.
        body.drain(limits.body).await;
    }
    parsed
}

async fn parse_multipart(
    body: SharedBody,
    boundary: String,
    limits: &MultipartLimits,
) -> Result<async_graphql::Request, Rejection> {
    let sizes = SizeLimit::new()
        .whole_stream(limits.body as u64)
        .per_field(limits.file as u64)
        .for_field(OPERATIONS_PART, limits.json as u64)
        .for_field(MAP_PART, limits.json as u64);
    let mut multipart =
        Multipart::with_constraints(body, boundary, Constraints::new().size_limit(sizes));
    let read = |error: multer::Error| multipart_failure(error, limits);

    let operations = expect_part(&mut multipart, OPERATIONS_PART, limits).await?;
    let operations = operations.bytes().await.map_err(read)?;
    let mut graphql_request = match serde_json::from_slice::<Value>(&operations) {
        Ok(Value::Object(fields)) => json_request(fields)?,
        Ok(Value::Array(_)) => return Err(batch_refused()),
        Ok(_) => {
            return Err(Rejection::bad_request(
                "the `operations` part must be a JSON object",
            ));
        }
        Err(e) => {
            return Err(Rejection::bad_request(format!(
                "the `operations` part is not valid JSON: {e}"
            )));
        }
    };

    let map = expect_part(&mut multipart, MAP_PART, limits).await?;
    let map = map.bytes().await.map_err(read)?;
    let mut map: HashMap<String, Vec<String>> = serde_json::from_slice(&map).map_err(|e| {
        Rejection::bad_request(format!(
            "the `map` part must be a JSON object of arrays of paths: {e}"
        ))
    })?;
    if map.len() > limits.files {
        return Err(too_many_files(limits.files));
    }

    while let Some(part) = multipart.next_field().await.map_err(read)? {
        let name = part.name().unwrap_or_default().to_owned();
        // Each file once, and only files the map names: the map bounds the parts.
        let Some(paths) = map.remove(&name) else {
            return Err(Rejection::bad_request(format!(
                "the multipart part {name:?} is not named in `map` (or was sent twice)"
            )));
        };
        let filename = part.file_name().unwrap_or_default().to_owned();
        let content_type = part.content_type().map(ToString::to_string);
        let content = part.bytes().await.map_err(read)?;
        for path in paths {
            let uploads = graphql_request.uploads.len();
            graphql_request.set_upload(
                &path,
                UploadValue {
                    filename: filename.clone(),
                    content_type: content_type.clone(),
                    content: content.clone(),
                },
            );
            if graphql_request.uploads.len() == uploads {
                return Err(Rejection::bad_request(format!(
                    "`map` path {path:?} names no variable of the operation"
                )));
            }
        }
    }
    if let Some(name) = map.keys().next() {
        return Err(Rejection::bad_request(format!(
            "the file {name:?} named in `map` was not sent"
        )));
    }
    Ok(graphql_request)
}

/// A request body shared with the multipart reader, counting what it has read, so that what
/// the reader leaves when it refuses a request can still be read and discarded.
#[derive(Clone)]
struct SharedBody(Arc<Mutex<(BodyDataStream, usize)>>);

impl SharedBody {
    fn new(request: Request) -> Self {
        Self(Arc::new(Mutex::new((
            request.into_body().into_data_stream(),
            0,
        ))))
    }

    /// Reads and discards the rest of the body, until `limit` bytes have been read in all.
    async fn drain(mut self, limit: usize) {
        while self.read() < limit {
            match self.next().await {
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    }

    fn read(&self) -> usize {
        self.0.lock().map_or(usize::MAX, |body| body.1)
    }
}

impl Stream for SharedBody {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Only ever locked for one poll, never across an await.
        let Ok(mut body) = self.0.lock() else {
            return Poll::Ready(None);
        };
        let polled = body.0.poll_next_unpin(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            body.1 = body.1.saturating_add(chunk.len());
        }
        polled
    }
}

const OPERATIONS_PART: &str = "operations";
const MAP_PART: &str = "map";

/// The next part, which the spec says must be `name`.
async fn expect_part<'r>(
    multipart: &mut Multipart<'r>,
    name: &str,
    limits: &MultipartLimits,
) -> Result<multer::Field<'r>, Rejection> {
    match multipart
        .next_field()
        .await
        .map_err(|e| multipart_failure(e, limits))?
    {
        Some(part) if part.name() == Some(name) => Ok(part),
        _ => Err(Rejection::bad_request(format!(
            "malformed multipart request: the `{OPERATIONS_PART}` part must come first, then \
             `{MAP_PART}`, then the files"
        ))),
    }
}

fn multipart_failure(error: multer::Error, limits: &MultipartLimits) -> Rejection {
    match error {
        multer::Error::StreamSizeExceeded { .. } => multipart_too_large(limits.body),
        multer::Error::FieldSizeExceeded { field_name, .. } => match field_name.as_deref() {
            Some(part @ (OPERATIONS_PART | MAP_PART)) => Rejection {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the `{part}` part is larger than {} bytes (--max-body-bytes)",
                    limits.json
                ),
            },
            part => Rejection {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the file {:?} is larger than {} bytes (--screenshot-max-bytes and \
                         {UPLOAD_SLACK_BYTES} bytes of slack)",
                    part.unwrap_or_default(),
                    limits.file
                ),
            },
        },
        other => Rejection::bad_request(format!("malformed multipart request: {other}")),
    }
}

fn multipart_too_large(limit: usize) -> Rejection {
    Rejection {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "the multipart request body is larger than {limit} bytes (--max-multipart-bytes)"
        ),
    }
}

fn too_many_files(limit: usize) -> Rejection {
    Rejection::bad_request(format!(
        "at most {limit} file(s) may be uploaded in one request (--max-upload-files)"
    ))
}

// ---------------------------------------------------------------------------
// Answering
// ---------------------------------------------------------------------------

/// The response media type the client accepts best, `application/json` when it states no
/// preference, or `None` when it accepts neither (406).
pub(super) fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let ranges: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|range| !range.is_empty())
        .collect();
    if ranges.is_empty() {
        return Some(MediaType::Json);
    }
    let mut best: Option<(f32, MediaType)> = None;
    for range in ranges {
        let mut parts = range.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|param| param.split_once('='))
            .find(|(key, _)| key.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, q)| q.trim().parse::<f32>().unwrap_or(0.0));
        if quality <= 0.0 || quality.is_nan() {
            continue;
        }
        let media = match essence.as_str() {
            GRAPHQL_RESPONSE_JSON => MediaType::GraphQLResponseJson,
            APPLICATION_JSON | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        // Highest quality wins; on a tie, the client's first choice.
        if best.is_none_or(|(q, _)| quality > q) {
            best = Some((quality, media));
        }
    }
    best.map(|(_, media)| media)
}

pub(super) fn error_response(
    status: StatusCode,
    media: MediaType,
    code: &str,
    message: String,
) -> Response {
    let body = json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    json_response(status, media, &body)
}

fn json_response(status: StatusCode, media: MediaType, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    response
}

/// What a request error answers: its errors (and extensions), no `data`.
#[derive(serde::Serialize)]
struct RequestErrorBody<'a> {
    errors: &'a [async_graphql::ServerError],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extensions: &'a BTreeMap<String, ConstValue>,
}

pub(super) fn graphql_response(answer: Answer, media: MediaType) -> Response {
    let (response, request_error) = match answer {
        Answer::Refused(refused) => (refused.into_response(), true),
        Answer::Executed(response) => (response, false),
    };
    // Serialised straight to bytes: a page of workflows with their steps is ~100 KB, and
    // an intermediate serde_json::Value tree would double the work.
    let serialised = if request_error {
        // The spec: a request error has no `data` entry at all (not even null).
        serde_json::to_vec(&RequestErrorBody {
            errors: &response.errors,
            extensions: &response.extensions,
        })
    } else {
        serde_json::to_vec(&response)
    };
    let body = match serialised {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "could not serialise a GraphQL response");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                media,
                ErrorCode::Internal.as_str(),
                "internal server error".to_owned(),
            );
        }
    };
    let retry = (!request_error && response.data == ConstValue::Null)
        .then(|| retryable_failure(&response.errors))
        .flatten();
    let status = match (request_error, media, retry) {
        (true, MediaType::GraphQLResponseJson, _) => StatusCode::BAD_REQUEST,
        (false, _, Some((status, _))) => status,
        // Legacy clients expect 200 for anything that is a GraphQL response.
        (true, MediaType::Json, _) | (false, _, None) => StatusCode::OK,
    };
    let mut http = (status, body).into_response();
    if let Some((_, seconds)) = retry {
        http.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    http.headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    if response.is_ok()
        && let Some(cache_control) = response.cache_control.value()
        && let Ok(value) = HeaderValue::from_str(&cache_control)
    {
        http.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    http.headers_mut().extend(response.http_headers);
    http
}

/// When nothing could be answered because the server is busy (UNAVAILABLE: 503) or the
/// client made too many attempts (RATE_LIMITED: 429), HTTP says so too, with the
/// `Retry-After` the errors carry, so proxies and client libraries back off on their own.
fn retryable_failure(errors: &[async_graphql::ServerError]) -> Option<(StatusCode, u64)> {
    errors.iter().find_map(|error| {
        let extensions = error.extensions.as_ref()?;
        let status = match extensions.get("code")? {
            ConstValue::String(code) if code == ErrorCode::RateLimited.as_str() => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ConstValue::String(code) if code == ErrorCode::Unavailable.as_str() => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => return None,
        };
        let seconds = match extensions.get("retryAfter") {
            Some(ConstValue::Number(n)) => n.as_u64().unwrap_or(1),
            _ => 1,
        };
        Some((status, seconds))
    })
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

/// `Authorization: Bearer <token>`. A header that is present but unusable makes the request
/// `Invalid`, not anonymous, so the client learns its token was refused. Also says when the
/// credentials stop being valid (for event streams, which outlive a request).
pub(super) async fn authenticate_request(
    headers: &HeaderMap,
    services: &Services,
) -> AppResult<(Authentication, Option<Instant>)> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok((Authentication::Anonymous, None));
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    match token {
        Some(token) => authenticate_token(token, services).await,
        None => Ok((Authentication::Invalid, None)),
    }
}

/// Verifies a bearer credential — an access token, or an API key (told apart by their
/// shape) — and that it still speaks for someone with the role it claims (session not
/// ended, member still there, key not revoked or expired); also says when it stops being
/// valid (for WebSockets, which outlive a request).
pub async fn authenticate_token(
    token: &str,
    services: &Services,
) -> AppResult<(Authentication, Option<Instant>)> {
    if SecretKind::ApiKey.is_shaped(token) {
        return Ok(match services.credentials.api_key(token).await? {
            Some((viewer, valid)) => (
                Authentication::Verified(viewer),
                valid.until.map(instant_of),
            ),
            None => (Authentication::Invalid, None),
        });
    }
    let Some((viewer, expires)) = services.tokens.verify(token) else {
        return Ok((Authentication::Invalid, None));
    };
    let Some(valid) = services.credentials.check(&viewer).await? else {
        return Ok((Authentication::Invalid, None));
    };
    // The token's own expiry, or the session's if that comes first.
    let token_expiry = Instant::now()
        + Duration::from_secs(u64::try_from(expires - chrono::Utc::now().timestamp()).unwrap_or(0));
    let expiry = valid
        .until
        .map_or(token_expiry, |until| instant_of(until).min(token_expiry));
    Ok((Authentication::Verified(viewer), Some(expiry)))
}

/// The monotonic instant of a wall-clock time (now, if it has passed).
fn instant_of(at: chrono::NaiveDateTime) -> Instant {
    let left = (at - crate::domain::now())
        .to_std()
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

#[cfg(test)]
mod tests {
    use super::{MediaType, negotiate};
    use axum::http::{HeaderMap, HeaderValue, header};

    fn accept(value: &str) -> Option<MediaType> {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(header::ACCEPT, value);
        }
        negotiate(&headers)
    }

    #[test]
    fn accept_picks_the_response_type() {
        use MediaType::{GraphQLResponseJson as Gql, Json};
        assert_eq!(negotiate(&HeaderMap::new()), Some(Json));
        assert_eq!(accept("application/graphql-response+json"), Some(Gql));
        assert_eq!(accept("application/json"), Some(Json));
        assert_eq!(accept("*/*"), Some(Json));
        assert_eq!(
            accept("application/graphql-response+json, application/json;q=0.9"),
            Some(Gql)
        );
        assert_eq!(
            accept("application/json;q=0.5, application/graphql-response+json;q=0.8"),
            Some(Gql)
        );
        assert_eq!(accept("text/html,*/*;q=0.8"), Some(Json));
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("application/json;q=0"), None);
        assert_eq!(accept("application/xml"), None);
    }
}
