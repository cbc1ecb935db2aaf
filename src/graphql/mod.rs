//! The GraphQL API: one file per area, merged into one schema.
//!
//! Resolvers are thin: they read the viewer from the context, call `domain::`, and wrap the
//! rows in GraphQL object types. Every object carries the [`Viewer`](crate::auth::Viewer)
//! it was loaded for, so nested fields stay inside that viewer's company.

mod account;
mod api_key;
mod audit;
mod company;
mod context;
mod documents;
pub mod executor_access;
mod guards;
mod health_log;
mod limits;
mod loaders;
mod node;
mod notification;
mod pagination;
mod persisted_queries;
mod plain_list;
mod prescan;
mod project;
mod readers;
mod retention;
mod run;
mod screenshot;
mod session;
mod share;
mod statistics;
mod step;
mod stream_cursor;
mod subscription;
mod template;
mod user;
mod user_settings;
mod version;
mod workflow;
// The run queue (issue 13).
mod queue;
mod schedule;
mod step_text;
mod webhook;

use async_graphql::{MergedObject, Schema, SchemaBuilder};

pub use context::{OperationScope, QueueSettings, RequestData, ScreenshotSettings, Services};
pub use documents::{ParsedDocuments, Unkept};
pub use limits::{QueryLimits, check_aliases, code_request_errors, limit_name, refuse_nul};
pub use persisted_queries::{PersistedQueries, Unpersisted};
pub use plain_list::FastLists;
pub use prescan::DocumentLimits;
pub use readers::WorkflowReaders;
pub use stream_cursor::StreamCursors;
pub use subscription::{StreamControl, StreamPart};

/// Everything a client can read.
#[derive(MergedObject, Default)]
pub struct Query(
    user::UserQuery,
    company::CompanyQuery,
    run::RunQuery,
    health_log::HealthLogQuery,
    notification::NotificationQuery,
    workflow::WorkflowQuery,
    step::StepQuery,
    screenshot::ScreenshotQuery,
    api_key::ApiKeyQuery,
    session::SessionQuery,
    user_settings::UserSettingsQuery,
    audit::AuditQuery,
    schedule::ScheduleQuery,
    webhook::WebhookQuery,
    node::NodeQuery,
    retention::RetentionQuery,
    statistics::StatisticsQuery,
    version::VersionQuery,
    project::ProjectQuery,
    template::TemplateQuery,
    share::ShareQuery,
);

/// Everything a client can change.
#[derive(MergedObject, Default)]
pub struct Mutation(
    account::AccountMutation,
    company::CompanyMutation,
    user::UserMutation,
    notification::NotificationMutation,
    workflow::WorkflowMutation,
    step::StepMutation,
    run::RunMutation,
    screenshot::ScreenshotMutation,
    api_key::ApiKeyMutation,
    user_settings::UserSettingsMutation,
    queue::QueueMutation,
    schedule::ScheduleMutation,
    webhook::WebhookMutation,
    step_text::StepTextMutation,
    retention::RetentionMutation,
    version::VersionMutation,
    project::ProjectMutation,
    template::TemplateMutation,
    share::ShareMutation,
);

pub type StepwiseSchema = Schema<Query, Mutation, subscription::Subscription>;

/// The schema without any runtime data: `serve` adds [`Services`], `schema` prints it.
pub fn schema_builder() -> SchemaBuilder<Query, Mutation, subscription::Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        subscription::Subscription,
    )
    // Part of the schema itself, so no transport can run an operation without it.
    .extension(executor_access::ExecutorAccess)
}

/// The SDL that `schema.graphql` must equal.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}

/// Puts `null` where a field failed.
///
/// async-graphql 7 leaves a failed nullable field out of `data` altogether, while the
/// GraphQL spec (and every client library) expects the field present with `null` and the
/// error beside it. Every transport runs responses through this before sending them.
pub fn null_failed_fields(response: &mut async_graphql::Response) {
    use async_graphql::{Name, PathSegment, Value};
    for error in &response.errors {
        let path = &error.path;
        let mut node: &mut Value = &mut response.data;
        for (index, segment) in path.iter().enumerate() {
            let last = index + 1 == path.len();
            node = match (segment, node) {
                (PathSegment::Field(name), Value::Object(fields)) => {
                    if last {
                        fields.entry(Name::new(name)).or_insert(Value::Null);
                        break;
                    }
                    match fields.get_mut(name.as_str()) {
                        Some(next) => next,
                        None => break,
                    }
                }
                (PathSegment::Index(position), Value::List(items)) if !last => {
                    match items.get_mut(*position) {
                        Some(next) => next,
                        None => break,
                    }
                }
                _ => break,
            };
        }
    }
}

/// A request-level failure (parse, validation, a limit) rather than a result with field
/// errors: no data, and no error attached to a field path.
pub fn is_request_error(response: &async_graphql::Response) -> bool {
    !response.errors.is_empty()
        && response.data == async_graphql::Value::Null
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// The operation a request would run: the only one, or the one `operationName` names.
/// `None` when the document does not parse or names no such operation (execution then
/// reports why). The parse is kept in the request, so execution does not parse again.
pub fn selected_operation(
    request: &mut async_graphql::Request,
) -> Option<&async_graphql::Positioned<async_graphql::parser::types::OperationDefinition>> {
    use async_graphql::parser::types::DocumentOperations;
    let name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name.as_str()),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}
