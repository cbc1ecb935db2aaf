//! GraphQL over WebSocket, for subscriptions (and any operation a client sends that way).
//!
//! Implements the `graphql-transport-ws` protocol exactly as graphql-ws's PROTOCOL.md
//! specifies it — including the close codes async-graphql's stock handler lacks — and the
//! legacy `graphql-ws` protocol (subscriptions-transport-ws) for older clients.
//!
//! One task owns the socket: it reads client messages, writes everything outgoing, and
//! runs the timers (init timeout, keep-alive, token expiry). Each operation runs in its
//! own task and sends its results back over a bounded channel, so a slow client slows its
//! own subscriptions (which then resynchronise from a snapshot) rather than the server.
//! What an operation runs through, from its document to its answers, is the pipeline HTTP
//! shares ([`operation`](super::operation)); this file adds only the protocol around it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::{Data, Response, ServerError};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{FromRequestParts as _, Request, State, WebSocketUpgrade};
use axum::http::HeaderValue;
use axum::response::{IntoResponse as _, Response as HttpResponse};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::{Instant, sleep_until};

use super::AppState;
use super::client_address::client_address;
use super::credentials::{CredentialWatch, Lapsed};
use super::graphql::authenticate_token;
use super::multiplex::{self, Delivery, Frame, Shared};
use super::operation::{Answer, Operation, Refused};
use crate::auth::Authentication;
use crate::auth::rate_limit::address_group;
use crate::error::{AppError, AppResult};
use crate::graphql::{OperationScope, RequestData};
use crate::metrics::{GaugeGuard, METRICS, Transport};

/// The modern protocol (graphql-ws library).
const TRANSPORT_WS: &str = "graphql-transport-ws";
/// The legacy protocol (subscriptions-transport-ws library).
const LEGACY_WS: &str = "graphql-ws";

/// Close codes of the graphql-transport-ws protocol.
mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const BAD_REQUEST: u16 = 4400;
    pub const UNAUTHORIZED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
    pub const INIT_TIMEOUT: u16 = 4408;
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    pub const TOO_MANY_INITS: u16 = 4429;
}

/// Initial read and write buffer of a socket.
const SOCKET_BUFFER_BYTES: usize = 2 * 1024;

/// Transport limits, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct WebSocketConfig {
    /// How long a client may take to send `connection_init`.
    pub init_timeout: Duration,
    /// Largest message accepted from a client.
    pub max_message_bytes: usize,
    /// Most operations one connection may run at once.
    pub max_operations: usize,
    /// Most connections one signed-in user may hold open on this instance.
    pub max_connections_per_user: usize,
    /// Most connections initialised without a token one client address may hold open on
    /// this instance.
    pub max_anonymous_connections_per_address: usize,
    /// Most operations a connection without a signed-in user may run at once.
    pub max_anonymous_operations: usize,
}

/// Open connections per key on this instance: per signed-in user ([`UserConnections`]),
/// so one account (or one leaked token) cannot hold an unbounded number of sockets and
/// subscriptions, and per client address for connections initialised without a token
/// ([`AnonymousConnections`]), which need no account at all.
pub struct ConnectionSlots<K>(Arc<Mutex<HashMap<K, usize>>>);

/// Connections per signed-in user id.
pub type UserConnections = ConnectionSlots<String>;
/// Anonymous connections per client address (IPv6: per /64).
pub type AnonymousConnections = ConnectionSlots<IpAddr>;

impl<K> Clone for ConnectionSlots<K> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<K> Default for ConnectionSlots<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<K: Hash + Eq + Clone> ConnectionSlots<K> {
    /// A slot for one more connection of `key`, or `None` at the limit.
    pub(super) fn take(&self, key: &K, max: usize) -> Option<ConnectionSlot<K>> {
        let mut counts = self.lock();
        let count = counts.entry(key.clone()).or_insert(0);
        if *count >= max {
            if *count == 0 {
                counts.remove(key);
            }
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            registry: self.clone(),
            key: key.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        // Counts stay consistent under a panic: each change is one statement.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One counted connection; the count drops with it.
pub(super) struct ConnectionSlot<K: Hash + Eq + Clone> {
    registry: ConnectionSlots<K>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for ConnectionSlot<K> {
    fn drop(&mut self) {
        let mut counts = self.registry.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    TransportWs,
    Legacy,
}

pub async fn handler(State(state): State<AppState>, request: Request) -> HttpResponse {
    let (mut parts, _body) = request.into_parts();
    let address = client_address(
        &parts.headers,
        &parts.extensions,
        state.http.client_address_header.as_ref(),
    );
    let user_agent = parts
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let config = state.websocket;
    // Subscribers mostly sit idle, and the socket library's default 128 KiB read buffer
    // would make each one cost that much (S1 measured 141 KiB per idle subscriber): small
    // buffers grow only for a large message.
    let mut upgrade = upgrade
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(SOCKET_BUFFER_BYTES)
        .max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_message_bytes);
    // The client's order of preference decides; unknown names are skipped.
    let protocol = upgrade.requested_protocols().find_map(|value| {
        value
            .to_str()
            .ok()
            .into_iter()
            .flat_map(|v| v.split(','))
            .find_map(|name| match name.trim() {
                TRANSPORT_WS => Some(Protocol::TransportWs),
                LEGACY_WS => Some(Protocol::Legacy),
                _ => None,
            })
    });
    if let Some(protocol) = protocol {
        let name = match protocol {
            Protocol::TransportWs => TRANSPORT_WS,
            Protocol::Legacy => LEGACY_WS,
        };
        upgrade.set_selected_protocol(HeaderValue::from_static(name));
    }
    upgrade.on_upgrade(move |socket| async move {
        match protocol {
            Some(protocol) => {
                Connection::new(state, socket, protocol, address, user_agent)
                    .run()
                    .await
            }
            None => {
                let mut socket = socket;
                let _ = socket
                    .send(close_message(
                        close::SUBPROTOCOL_NOT_ACCEPTABLE,
                        "Subprotocol not acceptable",
                    ))
                    .await;
            }
        }
    })
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

fn text(value: Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

/// What an operation task reports back to the connection. Small, because the channel
/// that carries it allocates its first block of slots with the connection: the response
/// is boxed.
enum Outgoing {
    Next(String, Box<Response>),
    /// An answer resolved once for the operation's group, sent as it was serialised.
    Shared(String, Arc<Shared>),
    Error(String, Vec<ServerError>),
    Complete(String),
}

impl Outgoing {
    fn refused(id: String, refused: Refused) -> Self {
        Self::Error(id, refused.into_response().errors)
    }
}

/// A client message of either protocol.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)] // accepted and ignored, as the protocol says
        payload: Option<Value>,
    },
    /// graphql-transport-ws
    Subscribe {
        id: String,
        payload: OperationPayload,
    },
    /// legacy
    Start {
        id: String,
        payload: OperationPayload,
    },
    /// graphql-transport-ws: the client stops an operation.
    Complete { id: String },
    /// legacy
    Stop { id: String },
    /// legacy
    ConnectionTerminate,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OperationPayload {
    query: String,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Value>,
    /// Request extensions, e.g. an automatic persisted query's hash.
    #[serde(default)]
    extensions: Option<serde_json::Map<String, Value>>,
}

enum Phase {
    AwaitingInit {
        deadline: Instant,
    },
    Ready {
        data: Arc<Data>,
        scope: OperationScope,
    },
}

struct Connection {
    state: AppState,
    socket: WebSocket,
    protocol: Protocol,
    phase: Phase,
    operations: HashMap<String, AbortHandle>,
    outgoing_tx: mpsc::Sender<Outgoing>,
    outgoing_rx: mpsc::Receiver<Outgoing>,
    /// The credentials of `connection_init`: their expiry and the viewer's membership,
    /// re-checked while the connection stays open, so a removed or re-roled member is cut
    /// off within seconds (on this instance before anything more is delivered).
    watch: CredentialWatch,
    /// Where the client connects from (when known).
    address: Option<IpAddr>,
    /// The client's `User-Agent` (when sent).
    user_agent: Option<String>,
    /// Held while the connection is open, for the per-user connection limit.
    _slot: Option<ConnectionSlot<String>>,
    /// Held by a connection initialised without a token, for the per-address limit.
    _anonymous_slot: Option<ConnectionSlot<IpAddr>>,
}

/// Why the connection ends.
struct Closing(u16, String);

impl Connection {
    fn new(
        state: AppState,
        socket: WebSocket,
        protocol: Protocol,
        address: Option<IpAddr>,
        user_agent: Option<String>,
    ) -> Self {
        let (outgoing_tx, outgoing_rx) = mpsc::channel(64);
        let deadline = Instant::now() + state.websocket.init_timeout;
        let watch = CredentialWatch::idle(&state.services.credentials);
        Self {
            state,
            socket,
            protocol,
            phase: Phase::AwaitingInit { deadline },
            operations: HashMap::new(),
            outgoing_tx,
            outgoing_rx,
            watch,
            address,
            user_agent,
            _slot: None,
            _anonymous_slot: None,
        }
    }

    async fn run(mut self) {
        let _open = GaugeGuard::hold(&METRICS.websocket_connections);
        let closing = self.serve().await;
        for (_, operation) in self.operations.drain() {
            operation.abort();
        }
        if let Some(Closing(code, reason)) = closing {
            let _ = self.socket.send(close_message(code, &reason)).await;
        }
    }

    /// Serves until the connection ends; `Some` when we are the side closing it.
    async fn serve(&mut self) -> Option<Closing> {
        let mut keep_alive = tokio::time::interval(Duration::from_secs(15));
        let far_future = Instant::now() + Duration::from_secs(60 * 60 * 24 * 365);
        let mut shutdown = self.state.shutdown.clone();
        loop {
            if *shutdown.borrow_and_update() {
                return Some(Closing(close::GOING_AWAY, "server shutting down".into()));
            }
            let init_deadline = match self.phase {
                Phase::AwaitingInit { deadline } => deadline,
                Phase::Ready { .. } => far_future,
            };
            let step = tokio::select! {
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(error)) => return receive_failure(error),
                    None => return None,
                },
                Some(outgoing) = self.outgoing_rx.recv() => self.on_outgoing(outgoing).await,
                () = sleep_until(init_deadline) => {
                    Err(Closing(close::INIT_TIMEOUT, "Connection initialisation timeout".into()))
                }
                lapsed = self.watch.lapsed() => Err(lapsed_closing(lapsed)),
                // Checked at the top of the loop; a dropped sender also means shutdown.
                changed = shutdown.changed() => match changed {
                    Ok(()) => Ok(()),
                    Err(_) => Err(Closing(close::GOING_AWAY, "server shutting down".into())),
                },
                _ = keep_alive.tick(), if self.protocol == Protocol::Legacy && matches!(self.phase, Phase::Ready { .. }) => {
                    self.send(json!({ "type": "ka" })).await
                }
            };
            if let Err(closing) = step {
                return Some(closing);
            }
        }
    }

    async fn send(&mut self, message: Value) -> Result<(), Closing> {
        // A failed send means the client is gone; end quietly.
        self.socket
            .send(text(message))
            .await
            .map_err(|_| Closing(close::NORMAL, String::new()))
    }

    async fn on_message(&mut self, message: Message) -> Result<(), Closing> {
        let raw = match message {
            Message::Text(raw) => raw,
            Message::Binary(_) => {
                return Err(invalid("binary messages are not part of the protocol"));
            }
            // The socket library answers pings and completes the close handshake itself.
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            // Complete the closing handshake by echoing the client's code.
            Message::Close(frame) => {
                return Err(Closing(
                    frame.map_or(close::NORMAL, |f| f.code),
                    String::new(),
                ));
            }
        };
        let message: ClientMessage = serde_json::from_str(raw.as_str())
            .map_err(|e| invalid(&format!("invalid message: {e}")))?;
        match (message, self.protocol) {
            (ClientMessage::ConnectionInit { payload }, _) => self.on_init(payload).await,
            (ClientMessage::Ping { payload }, Protocol::TransportWs) => {
                let mut pong = json!({ "type": "pong" });
                if let Some(payload) = payload {
                    pong["payload"] = payload;
                }
                self.send(pong).await
            }
            (ClientMessage::Pong { .. }, Protocol::TransportWs) => Ok(()),
            (ClientMessage::Subscribe { id, payload }, Protocol::TransportWs)
            | (ClientMessage::Start { id, payload }, Protocol::Legacy) => {
                self.on_subscribe(id, payload).await
            }
            (ClientMessage::Complete { id }, Protocol::TransportWs)
            | (ClientMessage::Stop { id }, Protocol::Legacy) => {
                if let Some(operation) = self.operations.remove(&id) {
                    operation.abort();
                }
                Ok(())
            }
            (ClientMessage::ConnectionTerminate, Protocol::Legacy) => {
                Err(Closing(close::NORMAL, String::new()))
            }
            _ => Err(invalid("message type not part of the negotiated protocol")),
        }
    }

    async fn on_init(&mut self, payload: Option<Value>) -> Result<(), Closing> {
        if matches!(self.phase, Phase::Ready { .. }) {
            return Err(Closing(
                close::TOO_MANY_INITS,
                "Too many initialisation requests".into(),
            ));
        }
        let payload = payload.unwrap_or(Value::Null);
        if !(payload.is_null() || payload.is_object()) {
            return Err(invalid("connection_init payload must be an object"));
        }
        // Listening before the token is checked: a change made meanwhile is not missed.
        self.watch.listen();
        let (authentication, expires_at) = authenticate_init_payload(&payload, &self.state)
            .await
            .map_err(|error| {
            tracing::error!(error = ?error, "cannot check the WebSocket's membership");
            // Pool exhausted or database unreachable: retryable, like UNAVAILABLE.
            if error.code() == crate::error::ErrorCode::Unavailable {
                Closing(
                    close::TRY_AGAIN_LATER,
                    "Try again later: the database is busy".into(),
                )
            } else {
                Closing(close::INTERNAL_ERROR, "Internal error".into())
            }
        })?;
        if let Authentication::Invalid = authentication {
            if self.protocol == Protocol::Legacy {
                let error = json!({ "type": "connection_error", "payload": { "message": "invalid or expired token" } });
                let _ = self.send(error).await;
            }
            return Err(Closing(close::FORBIDDEN, "Forbidden".into()));
        }
        if let Authentication::Verified(viewer) = &authentication {
            let limit = self.state.websocket.max_connections_per_user;
            let Some(slot) = self
                .state
                .user_connections
                .take(&viewer.principal_id().to_owned(), limit)
            else {
                return Err(Closing(
                    close::TRY_AGAIN_LATER,
                    format!("Too many connections: at most {limit} per user"),
                ));
            };
            self._slot = Some(slot);
            self.watch.watch(Some(viewer.clone()), expires_at);
        } else {
            // Nobody to re-check.
            self.watch.watch(None, None);
            // A connection without an account counts against its client address, so one
            // client cannot open sockets without end to run sign-ins on. (Before
            // `connection_init` a socket can run nothing; the init timeout bounds that.)
            if let Some(address) = self.address {
                let limit = self.state.websocket.max_anonymous_connections_per_address;
                let slot = self
                    .state
                    .anonymous_connections
                    .take(&address_group(address), limit);
                let Some(slot) = slot else {
                    return Err(Closing(
                        close::TRY_AGAIN_LATER,
                        format!(
                            "Too many connections without a token from this address: at most {limit}"
                        ),
                    ));
                };
                self._anonymous_slot = Some(slot);
            }
        }
        let (data, scope) = RequestData::new(&self.state.services, authentication)
            .from_address(self.address)
            .from_user_agent(self.user_agent.as_deref())
            .into_session();
        self.phase = Phase::Ready {
            data: Arc::new(data),
            scope,
        };
        self.send(json!({ "type": "connection_ack" })).await
    }

    async fn on_subscribe(&mut self, id: String, payload: OperationPayload) -> Result<(), Closing> {
        let Phase::Ready { data, scope } = &self.phase else {
            return Err(Closing(close::UNAUTHORIZED, "Unauthorized".into()));
        };
        if self.operations.contains_key(&id) {
            return Err(Closing(
                close::SUBSCRIBER_EXISTS,
                format!("Subscriber for {id} already exists"),
            ));
        }
        let config = self.state.websocket;
        let (limit, whose) = if self.watch.viewer().is_some() {
            (config.max_operations, "one connection")
        } else {
            // Without an account the only useful operations are sign-ins, one at a time.
            (
                config.max_anonymous_operations,
                "a connection without a token",
            )
        };
        if self.operations.len() >= limit {
            let mut error = coded(AppError::RateLimited {
                retry_after: Duration::from_secs(1),
            });
            error.message = format!("at most {limit} operations may run at once on {whose}");
            return self.on_outgoing(Outgoing::Error(id, vec![error])).await;
        }
        let mut request = async_graphql::Request::new(payload.query);
        if let Some(name) = payload.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = payload.variables {
            request = request.variables(async_graphql::Variables::from_json(variables));
        }
        if let Some(extensions) = payload.extensions {
            for (key, value) in extensions {
                match async_graphql::Value::from_json(value) {
                    Ok(value) => {
                        request.extensions.0.insert(key, value);
                    }
                    Err(_) => return Err(invalid("invalid extensions")),
                }
            }
        }
        let operation = match Operation::prepare(&self.state, request, Transport::Websocket) {
            Ok(operation) => operation,
            Err(refused) => return self.on_outgoing(Outgoing::refused(id, refused)).await,
        };
        let viewer = self.watch.viewer();
        let answers = multiplex::stream(
            &self.state,
            operation,
            Arc::clone(data),
            scope,
            viewer,
            Transport::Websocket,
        );
        let mut answers = match answers {
            Ok(answers) => answers,
            Err(refused) => return self.on_outgoing(Outgoing::refused(id, refused)).await,
        };
        let tx = self.outgoing_tx.clone();
        let operation_id = id.clone();
        let task = tokio::spawn(async move {
            let _running = GaugeGuard::hold(&METRICS.subscriptions);
            while let Some(answer) = answers.next().await {
                let outgoing = match answer {
                    // Parse and validation failures get an `error` message and no `complete`.
                    Delivery::Answer(Answer::Refused(refused)) => {
                        let _ = tx.send(Outgoing::refused(operation_id, refused)).await;
                        return;
                    }
                    Delivery::Answer(Answer::Executed(response)) => {
                        Outgoing::Next(operation_id.clone(), Box::new(response))
                    }
                    Delivery::Shared(shared) => Outgoing::Shared(operation_id.clone(), shared),
                };
                if tx.send(outgoing).await.is_err() {
                    return;
                }
            }
            let _ = tx.send(Outgoing::Complete(operation_id)).await;
        });
        self.operations.insert(id, task.abort_handle());
        Ok(())
    }

    async fn on_outgoing(&mut self, outgoing: Outgoing) -> Result<(), Closing> {
        if let Outgoing::Next(..) | Outgoing::Shared(..) = outgoing {
            self.watch.check_pending().await.map_err(lapsed_closing)?;
        }
        let message = match (outgoing, self.protocol) {
            (Outgoing::Shared(id, shared), protocol) => {
                if !self.operations.contains_key(&id) {
                    return Ok(()); // stopped by the client meanwhile
                }
                let frame = if protocol == Protocol::TransportWs {
                    Frame::WsNext
                } else {
                    Frame::WsData
                };
                // The payload is serde_json's output and the frame adds ASCII: UTF-8.
                let framed = Utf8Bytes::try_from(shared.framed(frame, Some(&id)))
                    .map_err(|_| Closing(close::INTERNAL_ERROR, "Internal error".into()))?;
                return self
                    .socket
                    .send(Message::Text(framed))
                    .await
                    .map_err(|_| Closing(close::NORMAL, String::new()));
            }
            (Outgoing::Next(id, response), protocol) => {
                if !self.operations.contains_key(&id) {
                    return Ok(()); // stopped by the client meanwhile
                }
                let kind = if protocol == Protocol::TransportWs {
                    "next"
                } else {
                    "data"
                };
                json!({ "type": kind, "id": id, "payload": response })
            }
            (Outgoing::Error(id, errors), _) => {
                self.operations.remove(&id);
                json!({ "type": "error", "id": id, "payload": errors })
            }
            (Outgoing::Complete(id), _) => {
                if self.operations.remove(&id).is_none() {
                    return Ok(());
                }
                json!({ "type": "complete", "id": id })
            }
        };
        self.send(message).await
    }
}

/// The close of a connection whose credentials stopped holding.
fn lapsed_closing(lapsed: Lapsed) -> Closing {
    Closing(close::FORBIDDEN, format!("Forbidden: {}", lapsed.message()))
}

/// A server error carrying the code (and retry hint) of `error`.
fn coded(error: AppError) -> ServerError {
    let error = async_graphql::Error::from(error);
    let mut server_error = ServerError::new(error.message, None);
    server_error.extensions = error.extensions;
    server_error
}

fn invalid(reason: &str) -> Closing {
    Closing(close::BAD_REQUEST, reason.chars().take(120).collect())
}

/// Why reading from the socket failed: a message over the size limit is answered with
/// 1009; otherwise the client went away or the socket broke and nothing is left to say.
fn receive_failure(error: axum::Error) -> Option<Closing> {
    match error.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => {
            Some(Closing(close::MESSAGE_TOO_BIG, "Message too big".into()))
        }
        _ => None,
    }
}

/// The `connection_init` payload: `{"token": "..."}` or, as many clients send it,
/// `{"Authorization": "Bearer ..."}`. No token at all is an anonymous connection.
async fn authenticate_init_payload(
    payload: &Value,
    state: &AppState,
) -> AppResult<(Authentication, Option<Instant>)> {
    let token = payload.get("token").and_then(Value::as_str).or_else(|| {
        ["Authorization", "authorization"]
            .iter()
            .find_map(|key| payload.get(*key).and_then(Value::as_str))
            .map(|v| v.trim().strip_prefix("Bearer ").unwrap_or(v).trim())
    });
    match token {
        None => Ok((Authentication::Anonymous, None)),
        Some(token) => authenticate_token(token, &state.services).await,
    }
}
