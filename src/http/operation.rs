//! One GraphQL operation, from the request a transport has read to the answer it sends.
//! Every transport (HTTP, WebSocket, and any later one) runs its operations through here,
//! so a limit, a metric or a rule about answers written here holds for all of them:
//!
//! 1. [`Operation::prepare`]: an automatic persisted query gets its document by hash
//!    (and an allow-list refuses anything else); the document is scanned against the
//!    document limits and parsed, or taken from the cache of parsed documents; what it
//!    asks for is noted for the metrics.
//! 2. [`Operation::execute`] (one answer: queries and mutations) or [`Operation::stream`]
//!    (a transport that can carry many: subscriptions too): the limits the schema does not
//!    enforce itself (aliases) are checked, the operation runs with the per-request data
//!    the transport gives, and it is counted once, by transport, type, root field and
//!    outcome.
//! 3. Its [`Answer`] is shaped the way every client expects: a request error carries a code
//!    and no data, a failed field is `null` with its error beside it.
//!
//! What stays in a transport is its own: reading and framing, status codes, headers and
//! content types, close codes, per-connection limits, and refusing what only it refuses
//! (mutations over HTTP `GET`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_graphql::parser::types::{OperationType, Selection};
use async_graphql::{Data, Response, ServerError};
use futures_util::{Stream, StreamExt as _};
use tracing::Instrument as _;

use super::AppState;
use crate::db::Reads;
use crate::graphql::{
    OperationScope, ParsedDocuments, PersistedQueries, RequestData, StreamControl, Unkept,
    Unpersisted, check_aliases, code_request_errors, is_request_error, null_failed_fields,
    refuse_nul, selected_operation,
};
use crate::metrics::{METRICS, OperationLabels, Outcome, Transport};

/// A request whose document has been read, on its way to being run.
pub struct Operation {
    request: async_graphql::Request,
    first: FirstAnswer,
}

/// What an operation answers.
// The executed response is the common case and is moved once; boxing it would cost an
// allocation per answer to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
pub enum Answer {
    Refused(Refused),
    /// Executed: the data, with `null` where a field failed, and those fields' errors.
    Executed(Response),
}

/// A request error: refused before anything ran (the document, validation, a limit). Its
/// errors each carry a code, and there is no data to send, not even `null`.
// Boxed: a response is large, and a refusal travels in the `Err` of every step.
pub struct Refused(Box<Response>);

impl Refused {
    fn new(mut response: Response) -> Self {
        code_request_errors(&mut response.errors);
        Self(Box::new(response))
    }

    pub fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Refused> for Answer {
    fn from(refused: Refused) -> Self {
        Self::Refused(refused)
    }
}

impl Answer {
    fn shape(response: Response) -> Self {
        if is_request_error(&response) {
            Self::Refused(Refused::new(response))
        } else {
            Self::executed(response)
        }
    }

    fn executed(mut response: Response) -> Self {
        null_failed_fields(&mut response);
        Self::Executed(response)
    }
}

impl Operation {
    /// Reads the document of `request`, which arrived over `transport`. An `Err` is the
    /// request error to answer with (a document limit, or the parse error), already counted;
    /// nothing is run then.
    pub fn prepare(
        state: &AppState,
        mut request: async_graphql::Request,
        transport: Transport,
    ) -> Result<Self, Refused> {
        let persisted = match state.persisted_queries.resolve(&mut request) {
            Ok(persisted) => persisted,
            Err(error) => return Err(refuse(transport, &Description::unknown(), error)),
        };
        if let Err(error) = refuse_nul(&request) {
            return Err(refuse(transport, &Description::unknown(), error));
        }
        // Before anything reads the document: this is where it is checked and parsed.
        let unkept = match state.documents.prepare(&mut request) {
            Ok(unkept) => unkept,
            Err(error) => return Err(refuse(transport, &Description::unknown(), error)),
        };
        let description = Description::of(&mut request);
        Ok(Self {
            request,
            first: FirstAnswer {
                transport,
                description,
                unkept,
                persisted,
                counted: true,
            },
        })
    }

    /// Not counted in the operation metrics: a shared subscription's group runs on behalf
    /// of subscribers each counted already.
    pub fn uncounted(mut self) -> Self {
        self.first.counted = false;
        self
    }

    /// Whether the operation the request selects is a mutation (`false` when the document
    /// names no operation it has; execution reports that).
    pub fn is_mutation(&self) -> bool {
        self.first.description.kind == Some(OperationType::Mutation)
    }

    /// Whether subscribers of this operation may share one resolution per event: a
    /// subscription of one root field whose stream knows its parts
    /// ([`StreamControl::shares`]), with no directive on it.
    pub fn is_shareable(&self) -> bool {
        self.first.description.shareable
    }

    /// What, besides the authorisation, decides this operation's answers: its document,
    /// the operation it selects, its variables and its extensions. Subscribers share only
    /// when all of it is the same.
    pub fn sharing_text(&self) -> String {
        let request = &self.request;
        let variables = serde_json::to_string(&request.variables).unwrap_or_default();
        let extensions = serde_json::to_string(&request.extensions).unwrap_or_default();
        // Lengths first: no two different combinations read the same.
        let name = request.operation_name.as_deref().unwrap_or("");
        format!(
            "{}:{}:{}:{}:{}{}{}{}",
            request.query.len(),
            name.len(),
            variables.len(),
            extensions.len(),
            request.query,
            name,
            variables,
            extensions
        )
    }

    /// The same request again, read afresh: for the group a shared subscription runs, and
    /// for a subscriber that leaves its group.
    pub fn request_copy(&self) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(self.request.query.clone());
        request.operation_name = self.request.operation_name.clone();
        request.variables = self.request.variables.clone();
        request.extensions = self.request.extensions.clone();
        request
    }

    /// Adds per-request data (a shared subscription's [`StreamControl`]).
    pub fn with_data<D: std::any::Any + Send + Sync>(mut self, data: D) -> Self {
        self.request = self.request.data(data);
        self
    }

    /// Where the operation's reads go: a query's and a subscription's snapshots may come
    /// from a read replica; a mutation, and everything its answer reads, from the primary
    /// (what it wrote is what it shows).
    fn reads(&self) -> Reads {
        match self.first.description.kind {
            Some(OperationType::Query | OperationType::Subscription) => Reads::Replica,
            Some(OperationType::Mutation) | None => Reads::Primary,
        }
    }

    /// Runs the operation for its one answer, with `data` (who is calling, from where)
    /// attached to it. A subscription is refused with a request error: one answer cannot
    /// carry it.
    pub async fn execute(mut self, state: &AppState, data: RequestData) -> Answer {
        if let Err(refused) = self.check_limits(state) {
            return refused.into();
        }
        let reads = self.reads();
        // Nested in the transport's span, so every log line of the operation has its
        // request id.
        let description = &self.first.description;
        let span = tracing::info_span!(
            "graphql",
            operation = description.operation(),
            field = %description.field
        );
        let started = Instant::now();
        let response = state
            .schema
            .execute(data.attach(self.request, reads))
            .instrument(span)
            .await;
        self.first
            .answer(&state.caches(), response, Some(started.elapsed()))
    }

    /// Runs the operation as a stream of answers, with the connection's `session` data:
    /// one answer for a query or mutation, one per event for a subscription. An `Err` is a
    /// request error found before anything ran, already counted. Otherwise only the first
    /// answer can be a request error, and nothing follows it.
    ///
    /// Counted when the first answer is ready, without a duration: a subscription's
    /// lifetime is not a latency. Nor does it get a span: an idle subscriber would hold one
    /// open for hours.
    pub fn stream(
        mut self,
        state: &AppState,
        session: Arc<Data>,
        scope: &OperationScope,
    ) -> Result<impl Stream<Item = Answer> + Send + Unpin + 'static, Refused> {
        self.check_limits(state)?;
        let reads = self.reads();
        let request = scope.attach(self.request, reads);
        let responses = state
            .schema
            .execute_stream_with_session_data(request, session);
        let caches = state.caches();
        let subscription = self.first.description.kind == Some(OperationType::Subscription);
        let mut first = Some(self.first);
        Ok(Box::pin(async_stream::stream! {
            let mut responses = responses;
            while let Some(response) = responses.next().await {
                if subscription {
                    METRICS.subscription_resolutions.inc();
                }
                yield match first.take() {
                    Some(first) => first.answer(&caches, response, None),
                    None => Answer::executed(response),
                };
            }
            // A shared subscriber's head can end without an answer: it ran, and is
            // counted (and its document kept) like one that answered.
            if let Some(first) = first {
                let _ = first.answer(&caches, Response::default(), None);
            }
        }))
    }

    /// The limits async-graphql does not check itself (depth, complexity, recursion and
    /// directives live on the schema).
    fn check_limits(&mut self, state: &AppState) -> Result<(), Refused> {
        check_aliases(&mut self.request, state.limits.max_aliases)
            .map_err(|error| refuse(self.first.transport, &self.first.description, error))
    }
}

/// What is settled by an operation's first (or only) response: whether its document is
/// kept, and how the operation is counted.
struct FirstAnswer {
    transport: Transport,
    description: Description,
    unkept: Unkept,
    persisted: Unpersisted,
    /// See [`Operation::uncounted`].
    counted: bool,
}

/// The instance's caches of documents, which keep what an operation brought once it ran.
pub struct Caches {
    documents: Arc<ParsedDocuments>,
    persisted_queries: Arc<PersistedQueries>,
}

impl AppState {
    fn caches(&self) -> Caches {
        Caches {
            documents: Arc::clone(&self.documents),
            persisted_queries: Arc::clone(&self.persisted_queries),
        }
    }
}

impl FirstAnswer {
    fn answer(self, caches: &Caches, response: Response, elapsed: Option<Duration>) -> Answer {
        // Only a document that ran without a request error is kept (see documents.rs and
        // persisted_queries.rs): what only an attacker would send never takes up a cache.
        if !is_request_error(&response) {
            caches.documents.keep(self.unkept);
            caches.persisted_queries.keep(self.persisted);
        }
        if self.counted {
            METRICS.record(self.description.labels(self.transport, &response), elapsed);
        }
        Answer::shape(response)
    }
}

/// Counts and answers a request error found before execution.
fn refuse(transport: Transport, description: &Description, error: ServerError) -> Refused {
    let response = Response::from_errors(vec![error]);
    METRICS.record(description.labels(transport, &response), None);
    Refused::new(response)
}

/// What a request asks for, for its metric labels and its span: the operation type and
/// first root field of the operation it selects. Read from the parsed document the request
/// keeps, so nothing is parsed twice.
struct Description {
    /// `None` when the document did not parse or names no operation it has.
    kind: Option<OperationType>,
    /// `unknown` when it selects no field (or there is no operation).
    field: String,
    /// See [`Operation::is_shareable`].
    shareable: bool,
}

impl Description {
    fn unknown() -> Self {
        Self {
            kind: None,
            field: UNKNOWN.to_owned(),
            shareable: false,
        }
    }

    fn of(request: &mut async_graphql::Request) -> Self {
        let Some(operation) = selected_operation(request) else {
            return Self::unknown();
        };
        let field = operation
            .node
            .selection_set
            .node
            .items
            .iter()
            .find_map(|item| match &item.node {
                Selection::Field(field) => Some(field.node.name.node.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| UNKNOWN.to_owned());
        let items = &operation.node.selection_set.node.items;
        let shareable = operation.node.ty == OperationType::Subscription
            && operation.node.directives.is_empty()
            && matches!(
                items.as_slice(),
                [item] if matches!(&item.node, Selection::Field(f)
                    if f.node.directives.is_empty() && StreamControl::shares(&f.node.name.node))
            );
        Self {
            kind: Some(operation.node.ty),
            field,
            shareable,
        }
    }

    fn operation(&self) -> &'static str {
        match self.kind {
            Some(OperationType::Query) => "query",
            Some(OperationType::Mutation) => "mutation",
            Some(OperationType::Subscription) => "subscription",
            None => UNKNOWN,
        }
    }

    /// The labels of a finished operation. The root field only counts when the request was
    /// valid: only then is it known to be one of the schema's fields, so a client cannot
    /// grow the number of series with made-up names.
    fn labels(&self, transport: Transport, response: &Response) -> OperationLabels {
        let refused = is_request_error(response);
        let outcome = if refused {
            Outcome::RequestError
        } else if response.errors.is_empty() {
            Outcome::Ok
        } else {
            Outcome::FieldError
        };
        OperationLabels {
            transport,
            operation: self.operation(),
            field: if refused { UNKNOWN } else { &self.field }.to_owned(),
            outcome,
        }
    }
}

/// The label of what is not known (or not known to be ours).
const UNKNOWN: &str = "unknown";
