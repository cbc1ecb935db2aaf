//! GraphQL over Server-Sent Events (`/graphql/stream`), following the graphql-sse
//! protocol (its PROTOCOL.md) as the `graphql-sse` client speaks it, for clients behind
//! proxies that break WebSockets. Queries, mutations and subscriptions; both modes:
//!
//! - **Distinct connections**: a `POST` (or `GET`) with `Accept: text/event-stream` runs one
//!   operation and answers with an event stream of `next` events (its results; errors found
//!   before execution too, so an `EventSource` can read them) and a final `complete`.
//!   Closing the stream stops the operation.
//! - **Single connection**: `PUT` reserves a stream and answers `201` with its token; a
//!   `GET`/`POST` with `Accept: text/event-stream` and the token (header
//!   `X-GraphQL-Event-Stream-Token`, or `?token=`) opens it; operations are `POST`ed with the
//!   token and `extensions.operationId` (answered `202`, their results travel on the
//!   stream as `{id, payload}`); `DELETE ?operationId=` stops one. Every request on a
//!   reservation must come from the principal that made it; to anyone else it does not
//!   exist (404).
//!
//! The same rules as the WebSocket transport, through the same pieces: credentials from the
//! `Authorization` header, watched by the [`CredentialWatch`] WebSockets use (an expired
//! token, or a member removed or re-roled, ends the stream with an UNAUTHENTICATED error
//! and `complete` for each operation, before anything more is delivered); a stream (or
//! reservation) counts against the per-user and per-address connection limits WebSockets
//! count against; a single connection runs at most `--ws-max-operations` operations (one
//! without a token); every operation runs through the shared pipeline
//! ([`operation`](super::operation)). At shutdown streams end without `complete`, which the
//! client takes as a network failure and reconnects (elsewhere), like WebSocket's 1001.
//!
//! Keep-alives are comment lines (`:`) with no blank line after them, valid SSE that no
//! parser can take for the end of a message: earlier graphql-sse client parsers stopped
//! reading a network chunk at a `:` + blank-line ping and garbled the event after it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore as _};
use async_graphql::{Data, ErrorExtensionValues, ServerError};
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt as _, Stream, StreamExt as _};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::AppState;
use super::client_address::client_address;
use super::credentials::{CredentialWatch, Lapsed};
use super::graphql::{
    MediaType, authenticate_request, error_response, graphql_response, negotiate, read_request,
    unavailable_response,
};
use super::multiplex::{self, Delivery, Frame};
use super::operation::{Answer, Operation};
use super::websocket::ConnectionSlot;
use crate::auth::rate_limit::address_group;
use crate::auth::{Authentication, Viewer};
use crate::error::ErrorCode;
use crate::graphql::{OperationScope, RequestData};
use crate::metrics::{GaugeGuard, METRICS, Transport};

/// The header a single-connection client sends its reservation token in.
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-graphql-event-stream-token");

const EVENT_STREAM: &str = "text/event-stream";

/// How long a stream may stay silent before a keep-alive comment goes out: below the idle
/// timeouts of common proxies (60 s) and load balancers.
const KEEP_ALIVE: Duration = Duration::from_secs(12);

/// A comment line, sent first (some browsers wait for a byte of the body before they
/// report the stream open) and as the keep-alive.
const COMMENT: &[u8] = b":\n";

/// Results one single connection buffers for a client that reads slowly; beyond, its
/// operations wait (and subscriptions resynchronise from a snapshot, as over WebSocket).
const OUTGOING_BUFFER: usize = 64;

pub async fn handler(State(state): State<AppState>, request: Request) -> Response {
    let token = stream_token(&request);
    let wants_stream = accepts_event_stream(request.headers());
    let method = request.method().clone();
    match (method, wants_stream, token) {
        (Method::GET | Method::POST, true, None) => distinct(state, request).await,
        (Method::GET | Method::POST, true, Some(token)) => connect(state, request, token).await,
        (Method::GET | Method::POST, false, Some(token)) => submit(state, request, token).await,
        (Method::PUT, _, _) => reserve(state, request).await,
        (Method::DELETE, _, Some(token)) => stop(state, request, token).await,
        (Method::GET | Method::POST | Method::DELETE, _, None) => plain_error(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no event stream: send `Accept: text/event-stream`, or a reservation token".into(),
        ),
        _ => {
            let mut response = plain_error(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::BadUserInput,
                "use GET, POST, PUT or DELETE".into(),
            );
            response.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, POST, PUT, DELETE"),
            );
            response
        }
    }
}

// ---------------------------------------------------------------------------
// Distinct connections mode
// ---------------------------------------------------------------------------

async fn distinct(state: AppState, request: Request) -> Response {
    let address = address_of(&state, &request);
    let user_agent = user_agent_of(&request);
    let mut watch = CredentialWatch::idle(&state.services.credentials);
    // Listening before the token is checked: a change made meanwhile is not missed.
    watch.listen();
    let (authentication, expires_at) =
        match authenticate_request(request.headers(), &state.services).await {
            Ok(authenticated) => authenticated,
            Err(error) => return unavailable_response(error, MediaType::Json),
        };
    let slot = match take_slot(&state, &authentication, address) {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let is_get = request.method() == Method::GET;
    let graphql_request = match read_body(&state, request).await {
        Ok(graphql_request) => graphql_request,
        Err(response) => return response,
    };
    let viewer = authentication.viewer().ok().cloned();
    let (data, scope) = RequestData::new(&state.services, authentication)
        .from_address(address)
        .from_user_agent(user_agent.as_deref())
        .into_session();
    let refused = |refused| {
        futures_util::stream::once(async { Delivery::Answer(Answer::Refused(refused)) }).boxed()
    };
    let answers: BoxStream<'static, Delivery> =
        match Operation::prepare(&state, graphql_request, Transport::Sse) {
            Err(error) => refused(error),
            Ok(operation) if is_get && operation.is_mutation() => return mutation_over_get(),
            Ok(operation) => {
                let data = Arc::new(data);
                match multiplex::stream(
                    &state,
                    operation,
                    data,
                    &scope,
                    viewer.as_ref(),
                    Transport::Sse,
                ) {
                    Ok(answers) => answers,
                    Err(error) => refused(error),
                }
            }
        };
    watch.watch(viewer, expires_at);
    event_stream(distinct_events(state, answers, watch, slot))
}

/// What moves a stream on.
enum Step<T> {
    /// The server is shutting down: end without `complete`, so the client reconnects.
    ShuttingDown,
    Lapsed(Lapsed),
    Next(T),
    /// Nothing more will come.
    Done,
    KeepAlive,
}

fn distinct_events(
    state: AppState,
    mut answers: BoxStream<'static, Delivery>,
    mut watch: CredentialWatch,
    slot: Option<Slot>,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        let _slot = slot;
        let _open = GaugeGuard::hold(&METRICS.sse_streams);
        let _running = GaugeGuard::hold(&METRICS.subscriptions);
        let mut shutdown = state.shutdown.clone();
        let mut keep_alive = keep_alive();
        yield Ok(Bytes::from_static(COMMENT));
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stopping| *stopping) => Step::ShuttingDown,
                lapsed = watch.lapsed() => Step::Lapsed(lapsed),
                answer = answers.next() => answer.map_or(Step::Done, Step::Next),
                _ = keep_alive.tick() => Step::KeepAlive,
            };
            match step {
                Step::ShuttingDown => break,
                Step::Lapsed(lapsed) => {
                    yield Ok(next_event(None, &lapsed_payload(lapsed)));
                    yield Ok(complete_event(None));
                    break;
                }
                Step::Next(answer) => {
                    if let Err(lapsed) = watch.check_pending().await {
                        yield Ok(next_event(None, &lapsed_payload(lapsed)));
                        yield Ok(complete_event(None));
                        break;
                    }
                    yield Ok(delivery_event(None, answer));
                    keep_alive.reset();
                }
                Step::Done => {
                    yield Ok(complete_event(None));
                    break;
                }
                Step::KeepAlive => yield Ok(Bytes::from_static(COMMENT)),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Single connection mode
// ---------------------------------------------------------------------------

/// The reservations of this instance, by token.
#[derive(Clone, Default)]
pub struct Reservations(Arc<Mutex<HashMap<String, Arc<Reservation>>>>);

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Reservation>>> {
        // Each change is one statement: a panicking holder leaves the map consistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The reservation `token` names, if `owner` made it.
    fn find(&self, token: &str, owner: &Owner) -> Option<Arc<Reservation>> {
        self.lock()
            .get(token)
            .filter(|reservation| reservation.owner == *owner)
            .cloned()
    }

    fn remove(&self, token: &str) {
        let removed = self.lock().remove(token);
        if let Some(reservation) = removed {
            reservation.abort_all();
        }
    }
}

/// Who made a reservation: only they may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    Member(String),
    /// Without a token, from this address group (IPv6: the /64).
    Anonymous(Option<IpAddr>),
}

impl Owner {
    fn of(authentication: &Authentication, address: Option<IpAddr>) -> Option<Self> {
        match authentication {
            Authentication::Verified(viewer) => {
                Some(Self::Member(viewer.principal_id().to_owned()))
            }
            Authentication::Anonymous => Some(Self::Anonymous(address.map(address_group))),
            Authentication::Invalid => None,
        }
    }
}

struct Reservation {
    owner: Owner,
    /// Who runs the operations, when signed in (shared subscriptions group by it).
    viewer: Option<Viewer>,
    /// The operations' session: who runs them, from where.
    data: Arc<Data>,
    /// Each operation's database handle and batch loader.
    scope: OperationScope,
    /// Where operations send their results; the stream holds the receiver.
    outgoing: mpsc::Sender<Outgoing>,
    inner: Mutex<ReservationState>,
    /// Held while the reservation lives, for the connection limits.
    _slot: Option<Slot>,
}

struct ReservationState {
    /// Taken when the stream opens: only one stream per reservation, ever.
    receiver: Option<mpsc::Receiver<Outgoing>>,
    operations: HashMap<String, AbortHandle>,
    /// The reservation is gone: nothing may start on it any more.
    closed: bool,
}

// Like the WebSocket's: the answer is the common case and moves once through the channel.
#[allow(clippy::large_enum_variant)]
enum Outgoing {
    Next(String, Delivery),
    Complete(String),
}

impl Reservation {
    fn state(&self) -> std::sync::MutexGuard<'_, ReservationState> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops every operation, and any submitted later.
    fn abort_all(&self) {
        let mut inner = self.state();
        inner.closed = true;
        for (_, operation) in inner.operations.drain() {
            operation.abort();
        }
    }
}

/// `PUT`: reserves a stream, answering its token.
async fn reserve(state: AppState, request: Request) -> Response {
    let address = address_of(&state, &request);
    let user_agent = user_agent_of(&request);
    let authentication = match authenticate_request(request.headers(), &state.services).await {
        Ok((authentication, _)) => authentication,
        Err(error) => return unavailable_response(error, MediaType::Json),
    };
    let Some(owner) = Owner::of(&authentication, address) else {
        return plain_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "invalid or expired token".into(),
        );
    };
    let slot = match take_slot(&state, &authentication, address) {
        Ok(slot) => slot,
        Err(response) => return response,
    };
    let viewer = authentication.viewer().ok().cloned();
    let (data, scope) = RequestData::new(&state.services, authentication)
        .from_address(address)
        .from_user_agent(user_agent.as_deref())
        .into_session();
    let (outgoing, receiver) = mpsc::channel(OUTGOING_BUFFER);
    let token = new_token();
    let reservation = Arc::new(Reservation {
        owner,
        viewer,
        data: Arc::new(data),
        scope,
        outgoing,
        inner: Mutex::new(ReservationState {
            receiver: Some(receiver),
            operations: HashMap::new(),
            closed: false,
        }),
        _slot: slot,
    });
    state
        .sse_streams
        .lock()
        .insert(token.clone(), Arc::clone(&reservation));
    // A reservation nobody connects to is dropped like a WebSocket that never initialises.
    let reservations = state.sse_streams.clone();
    let pending = token.clone();
    let timeout = state.websocket.init_timeout;
    tokio::spawn(async move {
        tokio::time::sleep(timeout).await;
        let unopened = reservation.state().receiver.is_some();
        if unopened {
            reservations.remove(&pending);
        }
    });
    let mut response = (StatusCode::CREATED, token).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `GET`/`POST` with `Accept: text/event-stream` and a token: opens the reserved stream.
async fn connect(state: AppState, request: Request, token: String) -> Response {
    let address = address_of(&state, &request);
    let mut watch = CredentialWatch::idle(&state.services.credentials);
    watch.listen();
    let (authentication, expires_at) =
        match authenticate_request(request.headers(), &state.services).await {
            Ok(authenticated) => authenticated,
            Err(error) => return unavailable_response(error, MediaType::Json),
        };
    let Some(reservation) = Owner::of(&authentication, address)
        .and_then(|owner| state.sse_streams.find(&token, &owner))
    else {
        return stream_not_found();
    };
    let Some(receiver) = reservation.state().receiver.take() else {
        return plain_error(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "the stream of this reservation is already open".into(),
        );
    };
    watch.watch(authentication.viewer().ok().cloned(), expires_at);
    let closing = RemoveOnDrop {
        reservations: state.sse_streams.clone(),
        token,
    };
    event_stream(single_events(state, reservation, receiver, watch, closing))
}

/// Removes a reservation (stopping its operations) when its stream ends, however it ends.
struct RemoveOnDrop {
    reservations: Reservations,
    token: String,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.reservations.remove(&self.token);
    }
}

fn single_events(
    state: AppState,
    reservation: Arc<Reservation>,
    mut receiver: mpsc::Receiver<Outgoing>,
    mut watch: CredentialWatch,
    closing: RemoveOnDrop,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        let _closing = closing;
        let _open = GaugeGuard::hold(&METRICS.sse_streams);
        let mut shutdown = state.shutdown.clone();
        let mut keep_alive = keep_alive();
        yield Ok(Bytes::from_static(COMMENT));
        loop {
            let step = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stopping| *stopping) => Step::ShuttingDown,
                lapsed = watch.lapsed() => Step::Lapsed(lapsed),
                outgoing = receiver.recv() => outgoing.map_or(Step::Done, Step::Next),
                _ = keep_alive.tick() => Step::KeepAlive,
            };
            let lapsed = match step {
                Step::ShuttingDown | Step::Done => break,
                Step::KeepAlive => {
                    yield Ok(Bytes::from_static(COMMENT));
                    continue;
                }
                Step::Lapsed(lapsed) => lapsed,
                Step::Next(Outgoing::Complete(id)) => {
                    // Unknown when stopped by the client meanwhile: it expects nothing more.
                    let known = reservation.state().operations.remove(&id).is_some();
                    if known {
                        yield Ok(complete_event(Some(&id)));
                    }
                    continue;
                }
                Step::Next(Outgoing::Next(id, answer)) => match watch.check_pending().await {
                    Ok(()) => {
                        let known = reservation.state().operations.contains_key(&id);
                        if known {
                            yield Ok(delivery_event(Some(&id), answer));
                            keep_alive.reset();
                        }
                        continue;
                    }
                    Err(lapsed) => lapsed,
                },
            };
            // The credentials stopped holding: every operation ends with the reason.
            let ids: Vec<String> = {
                let mut inner = reservation.state();
                let ids = inner.operations.keys().cloned().collect();
                for (_, operation) in inner.operations.drain() {
                    operation.abort();
                }
                ids
            };
            for id in ids {
                yield Ok(next_event(Some(&id), &lapsed_payload(lapsed)));
                yield Ok(complete_event(Some(&id)));
            }
            break;
        }
    }
}

/// `POST` (or `GET`) with a token: runs an operation whose results go to the stream.
async fn submit(state: AppState, request: Request, token: String) -> Response {
    let Some(media) = negotiate(request.headers()) else {
        return plain_error(
            StatusCode::NOT_ACCEPTABLE,
            ErrorCode::BadUserInput,
            "Accept must allow application/json".into(),
        );
    };
    let address = address_of(&state, &request);
    let Some(reservation) =
        authorised_reservation(&state, request.headers(), address, &token).await
    else {
        return stream_not_found();
    };
    let is_get = request.method() == Method::GET;
    let graphql_request = match read_body(&state, request).await {
        Ok(graphql_request) => graphql_request,
        Err(response) => return response,
    };
    let id = match graphql_request.extensions.get("operationId") {
        Some(async_graphql::Value::String(id)) if !id.is_empty() && id.len() <= 128 => id.clone(),
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                media,
                ErrorCode::BadUserInput.as_str(),
                "`extensions.operationId` (1 to 128 characters) is required on a single \
                 connection"
                    .into(),
            );
        }
    };
    let limit = match reservation.owner {
        Owner::Member(_) => state.websocket.max_operations,
        Owner::Anonymous(_) => state.websocket.max_anonymous_operations,
    };
    {
        let inner = reservation.state();
        if inner.operations.contains_key(&id) {
            return error_response(
                StatusCode::CONFLICT,
                media,
                ErrorCode::Conflict.as_str(),
                format!("an operation with id {id:?} is already running"),
            );
        }
        if inner.operations.len() >= limit {
            return rate_limited(format!(
                "at most {limit} operations may run at once on one event stream"
            ));
        }
    }
    let operation = match Operation::prepare(&state, graphql_request, Transport::Sse) {
        Ok(operation) => operation,
        Err(refused) => return request_error(refused.into(), media),
    };
    if is_get && operation.is_mutation() {
        return mutation_over_get();
    }
    let answers = multiplex::stream(
        &state,
        operation,
        Arc::clone(&reservation.data),
        &reservation.scope,
        reservation.viewer.as_ref(),
        Transport::Sse,
    );
    let mut answers = match answers {
        Ok(answers) => answers,
        Err(refused) => return request_error(refused.into(), media),
    };
    // Validation runs in the executor's first step, before any resolver: a request error
    // is ready at once and is answered here, as the protocol asks (GraphQL over HTTP).
    let (first, ended) = match answers.next().now_or_never() {
        Some(Some(Delivery::Answer(Answer::Refused(refused)))) => {
            return request_error(refused.into(), media);
        }
        Some(Some(answer)) => (Some(answer), false),
        Some(None) => (None, true),
        None => (None, false),
    };
    let tx = reservation.outgoing.clone();
    let operation_id = id.clone();
    let task = tokio::spawn(async move {
        let _running = GaugeGuard::hold(&METRICS.subscriptions);
        if let Some(answer) = first
            && tx
                .send(Outgoing::Next(operation_id.clone(), answer))
                .await
                .is_err()
        {
            return;
        }
        while !ended && let Some(answer) = answers.next().await {
            if tx
                .send(Outgoing::Next(operation_id.clone(), answer))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send(Outgoing::Complete(operation_id)).await;
    });
    {
        let mut inner = reservation.state();
        // The stream may have closed (and stopped everything) while this one was prepared.
        if inner.closed {
            task.abort();
            return stream_not_found();
        }
        inner.operations.insert(id, task.abort_handle());
    }
    StatusCode::ACCEPTED.into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopParameters {
    operation_id: Option<String>,
}

/// `DELETE ?operationId=`: stops an operation of the stream.
async fn stop(state: AppState, request: Request, token: String) -> Response {
    let address = address_of(&state, &request);
    let Some(reservation) =
        authorised_reservation(&state, request.headers(), address, &token).await
    else {
        return stream_not_found();
    };
    let id = Query::<StopParameters>::try_from_uri(request.uri())
        .ok()
        .and_then(|Query(parameters)| parameters.operation_id)
        .filter(|id| !id.is_empty());
    let Some(id) = id else {
        return plain_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadUserInput,
            "`operationId` is missing".into(),
        );
    };
    let stopped = reservation.state().operations.remove(&id);
    if let Some(operation) = stopped {
        operation.abort();
    }
    StatusCode::OK.into_response()
}

/// The reservation `token` names, when the request comes from the principal that made it.
async fn authorised_reservation(
    state: &AppState,
    headers: &HeaderMap,
    address: Option<IpAddr>,
    token: &str,
) -> Option<Arc<Reservation>> {
    let (authentication, _) = authenticate_request(headers, &state.services).await.ok()?;
    let owner = Owner::of(&authentication, address)?;
    state.sse_streams.find(token, &owner)
}

// ---------------------------------------------------------------------------
// Shared pieces
// ---------------------------------------------------------------------------

/// A connection slot of either registry, held for as long as the connection lives.
#[allow(dead_code)] // held for its `Drop`, never read
enum Slot {
    Member(ConnectionSlot<String>),
    Anonymous(ConnectionSlot<IpAddr>),
}

/// A slot for one more connection of this caller (a stream or a reservation counts like a
/// WebSocket), or the 429 to answer. `None` when there is nothing to count (no address).
// The error is the response the handler returns at once; boxing it would only add a step.
#[allow(clippy::result_large_err)]
fn take_slot(
    state: &AppState,
    authentication: &Authentication,
    address: Option<IpAddr>,
) -> Result<Option<Slot>, Response> {
    let config = state.websocket;
    match authentication {
        Authentication::Verified(viewer) => {
            let limit = config.max_connections_per_user;
            match state
                .user_connections
                .take(&viewer.principal_id().to_owned(), limit)
            {
                Some(slot) => Ok(Some(Slot::Member(slot))),
                None => Err(rate_limited(format!(
                    "Too many connections: at most {limit} per user"
                ))),
            }
        }
        Authentication::Anonymous | Authentication::Invalid => {
            let Some(address) = address else {
                return Ok(None);
            };
            let limit = config.max_anonymous_connections_per_address;
            match state
                .anonymous_connections
                .take(&address_group(address), limit)
            {
                Some(slot) => Ok(Some(Slot::Anonymous(slot))),
                None => Err(rate_limited(format!(
                    "Too many connections without a token from this address: at most {limit}"
                ))),
            }
        }
    }
}

/// The client's `User-Agent`, for the sessions and the audit log of what the stream runs.
fn user_agent_of(request: &Request) -> Option<String> {
    request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn address_of(state: &AppState, request: &Request) -> Option<IpAddr> {
    client_address(
        request.headers(),
        request.extensions(),
        state.http.client_address_header.as_ref(),
    )
}

/// Reads the request's body (or query string) within the request timeout.
#[allow(clippy::result_large_err)] // the error is the response to return at once
async fn read_body(state: &AppState, request: Request) -> Result<async_graphql::Request, Response> {
    let max_file_bytes = state.services.screenshots.max_bytes;
    match tokio::time::timeout(
        state.http.request_timeout,
        read_request(request, &state.http, max_file_bytes),
    )
    .await
    {
        Ok(Ok(graphql_request)) => Ok(graphql_request),
        Ok(Err(rejection)) => Err(rejection.into_response(MediaType::Json)),
        Err(_) => Err(plain_error(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BadUserInput,
            "the request body took too long to arrive".into(),
        )),
    }
}

/// The reservation token of a request: the header, or `?token=` (for `EventSource`, which
/// cannot send headers).
fn stream_token(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(&TOKEN_HEADER) {
        return value.to_str().ok().map(str::to_owned);
    }
    #[derive(Deserialize)]
    struct TokenParameter {
        token: Option<String>,
    }
    Query::<TokenParameter>::try_from_uri(request.uri())
        .ok()
        .and_then(|Query(parameter)| parameter.token)
        .filter(|token| !token.is_empty())
}

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            range
                .split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case(EVENT_STREAM))
        })
}

/// 256 random bits, URL-safe: the reservation token is what lets its holder read the
/// stream, so it must not be guessable.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn keep_alive() -> Interval {
    let mut interval = tokio::time::interval_at(Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    interval
}

fn event_stream(
    events: impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer responses (nginx) would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// An SSE event. `data` is one line of JSON (serde_json never writes a raw newline).
fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn next_event(id: Option<&str>, payload: &str) -> Bytes {
    match id {
        None => event("next", payload),
        Some(id) => event(
            "next",
            &format!("{{\"id\":{},\"payload\":{payload}}}", json!(id)),
        ),
    }
}

fn complete_event(id: Option<&str>) -> Bytes {
    match id {
        None => event("complete", ""),
        Some(id) => event("complete", &json!({ "id": id }).to_string()),
    }
}

/// An answer as the JSON of a `next` event: a request error has no `data`, like over HTTP.
fn answer_payload(answer: Answer) -> String {
    let serialised = match answer {
        Answer::Refused(refused) => {
            let response = refused.into_response();
            serde_json::to_string(&json!({ "errors": response.errors }))
        }
        Answer::Executed(response) => serde_json::to_string(&response),
    };
    serialised.unwrap_or_else(|error| {
        tracing::error!(%error, "could not serialise a GraphQL response");
        json!({ "errors": [{ "message": "internal server error",
                              "extensions": { "code": ErrorCode::Internal.as_str() } }] })
        .to_string()
    })
}

/// The `next` event of a delivery: a shared answer as its group serialised it.
fn delivery_event(id: Option<&str>, delivery: Delivery) -> Bytes {
    match delivery {
        Delivery::Answer(answer) => next_event(id, &answer_payload(answer)),
        Delivery::Shared(shared) => shared.framed(Frame::SseNext, id),
    }
}

fn lapsed_payload(lapsed: Lapsed) -> String {
    let mut error = ServerError::new(lapsed.message(), None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::Unauthenticated.as_str());
    error.extensions = Some(extensions);
    json!({ "errors": [error] }).to_string()
}

/// A request error of an operation submitted to a single connection: its errors as GraphQL
/// over HTTP answers them, always with 400 (the client expects 202; a 200 would read as
/// success to anyone but the client).
fn request_error(answer: Answer, media: MediaType) -> Response {
    let mut response = graphql_response(answer, media);
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

fn plain_error(status: StatusCode, code: ErrorCode, message: String) -> Response {
    error_response(status, MediaType::Json, code.as_str(), message)
}

fn stream_not_found() -> Response {
    plain_error(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such event stream reservation".into(),
    )
}

fn mutation_over_get() -> Response {
    let mut response = plain_error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::BadUserInput,
        "mutations must be sent with POST".into(),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

/// 429 with `Retry-After`: the graphql-sse client retries it with back-off.
fn rate_limited(message: String) -> Response {
    let body = json!({ "errors": [{ "message": message,
        "extensions": { "code": ErrorCode::RateLimited.as_str(), "retryAfter": 1 } }] });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}
