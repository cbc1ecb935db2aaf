//! Subscribers sharing one resolution per event.
//!
//! Thousands of clients often watch the same thing the same way: the same subscription
//! text and variables, for the same company, role and person. Resolving each event through
//! GraphQL once per subscriber would repeat the same work and write the same JSON
//! thousands of times. Such subscribers form a *group* on this instance: the group runs
//! the operation once, as the first subscriber's authorisation, serialises each answer
//! once, and every subscriber sends those same bytes, framed with its own operation id.
//!
//! Who may share is deliberately narrow ([`GroupKey`]): the document, operation name,
//! variables and extensions must be identical, and so must the company, the role and the
//! principal (the member or the API key) — a regular member's view of restricted workflows
//! and a member's preferences are theirs alone. Only fields whose streams know their parts
//! share ([`StreamControl::shares`]); anything else runs whole for each subscriber.
//!
//! What stays per subscriber:
//! - its beginning (the *head*, run through GraphQL for it alone): validation and its own
//!   errors, and the snapshot a field sends first (`runUpdated`). The head joins the group
//!   before it reads its snapshot, so what commits in between reaches it through the group;
//!   answers the snapshot already covers (a run version not newer) are skipped;
//! - its credentials, watched by its connection (a revoked one is closed with its own
//!   code, the group goes on for the others);
//! - falling behind: a subscriber more than [`GROUP_BUFFER`] answers behind its group
//!   leaves it and goes on alone, beginning with the catch-up a lagging stream does;
//! - its id and framing (the framed message is kept for the few ids a group's
//!   subscribers use, so subscribers with the same id share even that).
//!
//! A group lives while it has subscribers: the last one to leave stops it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::Data;
use axum::body::Bytes;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use super::AppState;
use super::operation::{Answer, Operation, Refused};
use crate::auth::{Authentication, Role, Viewer};
use crate::domain;
use crate::graphql::{OperationScope, RequestData, StreamControl, StreamPart};
use crate::metrics::{GaugeGuard, METRICS, Transport};

/// Answers a group keeps for subscribers that read slowly; one further behind leaves the
/// group. Allocated whole when a group starts, so kept small: one-subscriber groups are
/// common (each watching its own run).
const GROUP_BUFFER: usize = 64;

/// Distinct ids whose framed messages a shared answer keeps.
const FRAMED_IDS: usize = 4;

/// What a subscriber's stream hands its transport.
// Like `Answer` itself: the answer is moved once, boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Delivery {
    /// An answer resolved for this subscriber alone.
    Answer(Answer),
    /// An answer resolved once for the subscriber's group.
    Shared(Arc<Shared>),
}

/// How a transport frames a shared answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// graphql-transport-ws `next`.
    WsNext,
    /// Legacy graphql-ws `data`.
    WsData,
    /// graphql-sse `next` event.
    SseNext,
}

/// One answer of a group, serialised once.
pub struct Shared {
    /// The response as JSON.
    payload: Bytes,
    /// `runUpdated`: the run version it shows.
    version: Option<i64>,
    /// Framed messages already made, by frame and id.
    framed: Mutex<Vec<(Frame, Option<String>, Bytes)>>,
}

impl Shared {
    fn new(payload: Bytes, version: Option<i64>) -> Self {
        Self {
            payload,
            version,
            framed: Mutex::new(Vec::new()),
        }
    }

    /// The message for operation `id` (none: graphql-sse's distinct connections), made
    /// once per frame and id.
    pub fn framed(&self, frame: Frame, id: Option<&str>) -> Bytes {
        let mut framed = self
            .framed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, _, bytes)) = framed
            .iter()
            .find(|(f, i, _)| *f == frame && i.as_deref() == id)
        {
            return bytes.clone();
        }
        let bytes = self.frame(frame, id);
        if framed.len() < FRAMED_IDS {
            framed.push((frame, id.map(str::to_owned), bytes.clone()));
        }
        bytes
    }

    fn frame(&self, frame: Frame, id: Option<&str>) -> Bytes {
        let payload = &self.payload[..];
        let id = id.map(|id| serde_json::Value::from(id).to_string());
        let mut out = Vec::with_capacity(payload.len() + 64);
        match frame {
            Frame::WsNext | Frame::WsData => {
                let kind: &[u8] = if frame == Frame::WsNext {
                    b"next"
                } else {
                    b"data"
                };
                out.extend_from_slice(b"{\"type\":\"");
                out.extend_from_slice(kind);
                out.extend_from_slice(b"\",\"id\":");
                out.extend_from_slice(id.as_deref().unwrap_or("null").as_bytes());
                out.extend_from_slice(b",\"payload\":");
                out.extend_from_slice(payload);
                out.push(b'}');
            }
            Frame::SseNext => {
                out.extend_from_slice(b"event: next\ndata: ");
                match id {
                    Some(id) => {
                        out.extend_from_slice(b"{\"id\":");
                        out.extend_from_slice(id.as_bytes());
                        out.extend_from_slice(b",\"payload\":");
                        out.extend_from_slice(payload);
                        out.push(b'}');
                    }
                    None => out.extend_from_slice(payload),
                }
                out.extend_from_slice(b"\n\n");
            }
        }
        Bytes::from(out)
    }
}

/// Who subscribers must be to share: everything of the authorisation an answer can
/// depend on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Who {
    company: String,
    role: Role,
    /// The member or the API key: a regular member sees restricted workflows by their own
    /// shares, a member's notification preferences are theirs.
    principal: String,
    restricted: bool,
}

impl Who {
    fn of(viewer: &Viewer) -> Self {
        Self {
            company: viewer.tenant.id().to_owned(),
            role: viewer.role,
            principal: viewer.principal_id().to_owned(),
            restricted: viewer.tenant.restricted_to().is_some(),
        }
    }
}

/// What subscribers of one group have in common.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    who: Who,
    /// [`Operation::sharing_text`].
    text: String,
}

/// The groups of this instance.
#[derive(Default)]
pub struct Groups {
    groups: Mutex<HashMap<Arc<GroupKey>, Entry>>,
    next_id: AtomicU64,
}

struct Entry {
    id: u64,
    sender: broadcast::Sender<Arc<Shared>>,
    task: AbortHandle,
    operation: Arc<GroupOperation>,
}

/// The operation a group runs, kept once per group: its subscribers hold only this, and
/// one that falls behind runs it again alone (as the same principal: the same answers).
struct GroupOperation {
    state: AppState,
    viewer: Viewer,
    query: String,
    operation_name: Option<String>,
    variables: async_graphql::Variables,
    extensions: async_graphql::Extensions,
    transport: Transport,
}

impl GroupOperation {
    /// Runs the operation with `control`'s part, for the group's principal, with fresh
    /// request data.
    fn stream_shared(
        &self,
        control: Arc<StreamControl>,
    ) -> Result<BoxStream<'static, Answer>, Refused> {
        let mut request = async_graphql::Request::new(self.query.clone());
        request.operation_name = self.operation_name.clone();
        request.variables = self.variables.clone();
        request.extensions = self.extensions.clone();
        let authentication = Authentication::Verified(self.viewer.clone());
        let (data, scope) = RequestData::new(&self.state.services, authentication).into_session();
        let operation = Operation::prepare(&self.state, request, self.transport)?;
        let operation = match control.part() {
            StreamPart::Tail => operation.uncounted(),
            _ => operation,
        };
        Ok(operation
            .with_data(control)
            .stream(&self.state, Arc::new(data), &scope)?
            .boxed())
    }
}

/// A subscriber's place in a group; leaving the last place stops the group.
struct Membership {
    groups: Arc<Groups>,
    key: Arc<GroupKey>,
    id: u64,
    receiver: broadcast::Receiver<Arc<Shared>>,
    operation: Arc<GroupOperation>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        let mut groups = self.groups.lock();
        let last = groups
            .get(&self.key)
            // Our own receiver is still counted.
            .is_some_and(|entry| entry.id == self.id && entry.sender.receiver_count() <= 1);
        if last && let Some(entry) = groups.remove(&self.key) {
            entry.task.abort();
        }
    }
}

impl Groups {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<GroupKey>, Entry>> {
        // Each change is one statement: a panicking holder leaves the map consistent.
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Groups running now, for tests and metrics.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no group runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Joins the group of `key`, starting it when there is none.
    fn join(
        self: &Arc<Self>,
        state: &AppState,
        key: &Arc<GroupKey>,
        viewer: &Viewer,
        request: async_graphql::Request,
        transport: Transport,
    ) -> Membership {
        let mut groups = self.lock();
        if let Some(entry) = groups.get(key) {
            return Membership {
                groups: Arc::clone(self),
                key: Arc::clone(key),
                id: entry.id,
                receiver: entry.sender.subscribe(),
                operation: Arc::clone(&entry.operation),
            };
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = broadcast::channel(GROUP_BUFFER);
        let operation = Arc::new(GroupOperation {
            state: state.clone(),
            viewer: viewer.clone(),
            query: request.query,
            operation_name: request.operation_name,
            variables: request.variables,
            extensions: request.extensions,
            transport,
        });
        // Listening to the bus now, before the joining head reads its snapshot: what
        // commits after that reaches the group.
        let control = StreamControl::new(StreamPart::Tail, None)
            .with_events(state.services.events.subscribe());
        let task = tokio::spawn(run_group(
            Arc::clone(self),
            Arc::clone(key),
            id,
            sender.clone(),
            Arc::clone(&operation),
            control,
        ));
        groups.insert(
            Arc::clone(key),
            Entry {
                id,
                sender,
                task: task.abort_handle(),
                operation: Arc::clone(&operation),
            },
        );
        Membership {
            groups: Arc::clone(self),
            key: Arc::clone(key),
            id,
            receiver,
            operation,
        }
    }
}

/// Runs a group's operation once for all its subscribers, until it ends or is stopped.
async fn run_group(
    groups: Arc<Groups>,
    key: Arc<GroupKey>,
    id: u64,
    sender: broadcast::Sender<Arc<Shared>>,
    operation: Arc<GroupOperation>,
    control: StreamControl,
) {
    let _running = GaugeGuard::hold(&METRICS.subscription_groups);
    let control = Arc::new(control);
    let answers = operation.stream_shared(Arc::clone(&control)).ok();
    drop(operation);
    if let Some(mut answers) = answers {
        while let Some(answer) = answers.next().await {
            // Every subscriber's head ran the same document: it is valid.
            let Answer::Executed(response) = answer else {
                break;
            };
            let payload = match serde_json::to_vec(&response) {
                Ok(payload) => Bytes::from(payload),
                Err(error) => {
                    tracing::error!(%error, "could not serialise a shared subscription answer");
                    break;
                }
            };
            // No receiver: the last subscriber is leaving and stops the group.
            let _ = sender.send(Arc::new(Shared::new(payload, control.version())));
        }
    }
    // Ended (a finished run): no one joins any more; subscribers read what is left, then
    // complete.
    let mut entries = groups.lock();
    if entries.get(&key).is_some_and(|entry| entry.id == id) {
        entries.remove(&key);
    }
}

/// Runs `operation` for one subscriber with the connection's `session` data: in a group
/// when it can share ([`Operation::is_shareable`]) and `viewer` is signed in, alone
/// otherwise. An `Err` is a request error found before anything ran.
pub fn stream(
    state: &AppState,
    operation: Operation,
    session: Arc<Data>,
    scope: &OperationScope,
    viewer: Option<&Viewer>,
    transport: Transport,
) -> Result<BoxStream<'static, Delivery>, Refused> {
    let Some(viewer) = viewer.filter(|_| operation.is_shareable()) else {
        return Ok(operation
            .stream(state, session, scope)?
            .map(Delivery::Answer)
            .boxed());
    };
    let key = Arc::new(GroupKey {
        who: Who::of(viewer),
        text: operation.sharing_text(),
    });
    let joined_at = domain::now();
    let membership: Arc<Mutex<Option<Membership>>> = Arc::default();
    let joiner: Box<dyn FnOnce() + Send> = {
        let groups = Arc::clone(&state.groups);
        let state = state.clone();
        let viewer = viewer.clone();
        let membership = Arc::clone(&membership);
        let request = operation.request_copy();
        Box::new(move || {
            let joined = groups.join(&state, &key, &viewer, request, transport);
            *membership
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(joined);
        })
    };
    let control = Arc::new(StreamControl::new(StreamPart::Head, Some(joiner)));
    let mut head = operation
        .with_data(Arc::clone(&control))
        .stream(state, session, scope)?;
    Ok(async_stream::stream! {
        let mut failed = false;
        while let Some(answer) = head.next().await {
            failed |= match &answer {
                Answer::Refused(_) => true,
                Answer::Executed(response) => {
                    !response.errors.is_empty() && response.data == async_graphql::Value::Null
                }
            };
            yield Delivery::Answer(answer);
        }
        drop(head);
        let joined = membership
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        // Not joined: the head refused or failed; a finished run: nothing follows.
        let Some(mut membership) = joined.filter(|_| !failed && !control.finished()) else {
            return;
        };
        let mut sent_version = control.version();
        drop(control);
        loop {
            match membership.receiver.recv().await {
                Ok(shared) => {
                    if let (Some(sent), Some(version)) = (sent_version, shared.version) {
                        if version <= sent {
                            continue;
                        }
                        sent_version = Some(version);
                    }
                    METRICS.subscription_shared_deliveries.inc();
                    yield Delivery::Shared(shared);
                }
                Err(RecvError::Closed) => return,
                Err(RecvError::Lagged(_)) => break,
            }
        }
        // Fell behind the group: alone from here, beginning with a catch-up.
        let operation = Arc::clone(&membership.operation);
        drop(membership);
        let control = StreamControl::new(StreamPart::CatchUpFirst { since: joined_at }, None);
        let answers = operation.stream_shared(Arc::new(control));
        drop(operation);
        match answers {
            Ok(mut answers) => {
                while let Some(answer) = answers.next().await {
                    yield Delivery::Answer(answer);
                }
            }
            Err(refused) => yield Delivery::Answer(Answer::Refused(refused)),
        }
    }
    .boxed())
}
