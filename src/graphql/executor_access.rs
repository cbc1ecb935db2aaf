//! What an EXECUTOR API key may ask for: the fields in [`EXECUTOR_FIELDS`], nothing else.
//!
//! # Deny by default, in one place
//! An executor (the browser extension, an agent) runs workflows: it reads workflows, their
//! steps and screenshots, starts a run, reports each step, finishes the run, uploads
//! screenshots and watches its run. It has no business with members, the company's
//! settings, invites, editing workflows, notifications, API keys or the audit log. Rather
//! than guard each of those (and every field anyone adds later), an executor's operation
//! is checked against one allow-list of `Type.field` entries, and any field not on it
//! refuses the whole operation with FORBIDDEN before anything runs. A field added to the
//! schema tomorrow is therefore denied to executors until someone adds it here, and
//! `tests/api_keys.rs` walks the whole schema by introspection to prove it.
//!
//! # Where the check runs, and what it costs
//! The check is a schema extension's `parse_query` hook: once per operation, on the parsed
//! document (fresh or from the parsed-document cache), before validation and execution. It
//! walks each selection set once with its parent type from the schema registry — every
//! field, inline fragment and fragment definition (each fragment once, with its type
//! condition, however often it is spread, so fragment "bombs" cost nothing extra) — so its
//! cost is proportional to the document (bounded by the token limit), never to the data
//! resolved. For every other caller it costs one lookup of the request's authentication.
//!
//! A per-field hook (async-graphql's `resolve` extension) would run for every field of
//! every response — a first page of workflows resolves some 2,000 fields — and checking in
//! `ctx.viewer()` would miss the fields that never call it: object types carry their
//! viewer into nested fields (`Run.startedBy` resolves a `User` whose fields read only the
//! row). Checking the document covers every field whatever its resolver does.
//!
//! Introspection (`__schema`, `__type`, `__typename` and the fields of the `__` types) is
//! allowed: it describes the public schema (`schema.graphql`), not a company's data.
//!
//! # Adding a field
//! One line in [`EXECUTOR_FIELDS`], e.g. `"Mutation.claimRun",`. Its result type's fields
//! must be listed too for the executor to read them.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{
    ExecutableDocument, OperationType, Selection, SelectionSet, TypeCondition,
};
use async_graphql::registry::{MetaTypeName, Registry};
use async_graphql::{ServerError, ServerResult, Variables};

use crate::auth::Authentication;
use crate::error::ErrorCode;

/// Everything an EXECUTOR may select: `Type.field`, output types only.
pub const EXECUTOR_FIELDS: &[&str] = &[
    // Finding and reading what to run.
    "Query.workflows",
    "Query.workflow",
    "Query.step",
    "Query.screenshot",
    "Query.run",
    "WorkflowConnection.edges",
    "WorkflowConnection.nodes",
    "WorkflowConnection.pageInfo",
    "WorkflowConnection.totalCount",
    "WorkflowEdge.node",
    "WorkflowEdge.cursor",
    "PageInfo.hasNextPage",
    "PageInfo.hasPreviousPage",
    "PageInfo.startCursor",
    "PageInfo.endCursor",
    "Workflow.id",
    "Workflow.name",
    "Workflow.description",
    "Workflow.status",
    "Workflow.tags",
    "Workflow.updatedAt",
    "Workflow.steps",
    "Workflow.stepCount",
    "Workflow.screenshots",
    "Step.id",
    "Step.workflow",
    "Step.stepNumber",
    "Step.actionType",
    "Step.selectors",
    "Step.elementMeta",
    "Step.pageContext",
    "Step.actionData",
    "Step.domContext",
    "Step.screenshot",
    "Step.fieldLabel",
    "Step.instruction",
    "Step.aiConfidence",
    "Step.aiModel",
    "Step.healedSelectors",
    "Step.healedAt",
    "Step.healingConfidence",
    "Step.healingMethod",
    "Step.updatedAt",
    "Screenshot.id",
    "Screenshot.workflow",
    "Screenshot.hash",
    "Screenshot.contentType",
    "Screenshot.sizeBytes",
    "Screenshot.width",
    "Screenshot.height",
    "Screenshot.createdAt",
    "Screenshot.url",
    // Running: start, report, finish, upload, watch.
    "Mutation.startRun",
    "Mutation.reportStep",
    "Mutation.finishRun",
    "Mutation.uploadScreenshot",
    "Subscription.runUpdated",
    "Run.id",
    "Run.workflow",
    "Run.status",
    "Run.stepsTotal",
    "Run.stepsCompleted",
    "Run.stepsFailed",
    "Run.stepsHealed",
    "Run.currentStep",
    "Run.error",
    "Run.startedAt",
    "Run.finishedAt",
    "Run.createdAt",
    "Run.updatedAt",
    "StepReport.run",
    "StepReport.healthLog",
    "StepReport.duplicate",
    "RunUpdate.run",
    "RunUpdate.healthLog",
    "HealthLog.id",
    "HealthLog.run",
    "HealthLog.step",
    "HealthLog.workflow",
    "HealthLog.status",
    "HealthLog.errorType",
    "HealthLog.errorMessage",
    "HealthLog.healingConfidence",
    "HealthLog.deterministicScore",
    "HealthLog.aiScore",
    "HealthLog.pageUrl",
    "HealthLog.executionTimeMs",
    "HealthLog.createdAt",
    // The run queue: wait for work, claim it, keep the lease, finish, retry.
    "Query.runs",
    "RunConnection.edges",
    "RunConnection.nodes",
    "RunConnection.pageInfo",
    "RunConnection.totalCount",
    "RunEdge.node",
    "RunEdge.cursor",
    "Mutation.enqueueRun",
    "Mutation.claimRun",
    "Mutation.heartbeatRun",
    "Mutation.pauseRun",
    "Mutation.resumeRun",
    "Mutation.retryRun",
    "Subscription.runQueued",
    "RunLease.leaseId",
    "RunLease.expiresAt",
    "RunLease.run",
    "Run.trigger",
    "Run.priority",
    "Run.notBefore",
    "Run.input",
    "Run.output",
    "Run.attempt",
    "Run.maxAttempts",
    "Run.leaseExpiresAt",
    "Run.retryOf",
    "Run.retries",
    "Run.fromStep",
    // AI-written labels and instructions: only ever fills text no person has written.
    "Mutation.suggestStepText",
    "StepTextSuggestion.step",
    "StepTextSuggestion.applied",
    "StepTextSuggestion.skipped",
];

static ALLOWED: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| EXECUTOR_FIELDS.iter().copied().collect());

/// Whether an executor may select `field` of `parent`.
pub fn executor_may_select(parent: &str, field: &str) -> bool {
    if parent.starts_with("__") || field.starts_with("__") {
        return true;
    }
    let mut key = String::with_capacity(parent.len() + field.len() + 1);
    key.push_str(parent);
    key.push('.');
    key.push_str(field);
    ALLOWED.contains(key.as_str())
}

/// The extension that applies [`EXECUTOR_FIELDS`] to every operation of an executor.
pub struct ExecutorAccess;

/// One shared instance: the hook keeps no per-request state.
static INSTANCE: LazyLock<Arc<ExecutorAccessHook>> = LazyLock::new(|| Arc::new(ExecutorAccessHook));

impl ExtensionFactory for ExecutorAccess {
    fn create(&self) -> Arc<dyn Extension> {
        INSTANCE.clone()
    }
}

struct ExecutorAccessHook;

#[async_graphql::async_trait::async_trait]
impl Extension for ExecutorAccessHook {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let is_executor = matches!(
            ctx.data_opt::<Authentication>(),
            Some(Authentication::Verified(viewer)) if viewer.is_executor()
        );
        if is_executor && let Some(denied) = first_denied(&ctx.schema_env.registry, &document) {
            let mut error = ServerError::new(
                format!(
                    "API keys with the EXECUTOR role may not use {denied}; \
                     the operation was not run"
                ),
                None,
            );
            let mut extensions = async_graphql::ErrorExtensionValues::default();
            extensions.set("code", ErrorCode::Forbidden.as_str());
            error.extensions = Some(extensions);
            return Err(error);
        }
        Ok(document)
    }
}

/// The first field of `document` (as `Type.field`) an executor may not select, if any.
/// Fields the schema does not have are left to validation.
pub fn first_denied(registry: &Registry, document: &ExecutableDocument) -> Option<String> {
    for (_, operation) in document.operations.iter() {
        let root = match operation.node.ty {
            OperationType::Query => Some(registry.query_type.as_str()),
            OperationType::Mutation => registry.mutation_type.as_deref(),
            OperationType::Subscription => registry.subscription_type.as_deref(),
        };
        if let Some(root) = root
            && let Some(denied) = walk(registry, root, &operation.node.selection_set.node)
        {
            return Some(denied);
        }
    }
    // Each fragment once, against its own type condition: spreads need no second look.
    for fragment in document.fragments.values() {
        let TypeCondition { on } = &fragment.node.type_condition.node;
        if let Some(denied) = walk(
            registry,
            on.node.as_str(),
            &fragment.node.selection_set.node,
        ) {
            return Some(denied);
        }
    }
    None
}

fn walk(registry: &Registry, parent: &str, selections: &SelectionSet) -> Option<String> {
    for selection in &selections.items {
        match &selection.node {
            Selection::Field(field) => {
                let name = field.node.name.node.as_str();
                let Some(meta) = registry
                    .types
                    .get(parent)
                    .and_then(|t| t.field_by_name(name))
                else {
                    continue;
                };
                if !executor_may_select(parent, name) {
                    return Some(format!("{parent}.{name}"));
                }
                let child = MetaTypeName::concrete_typename(&meta.ty);
                if let Some(denied) = walk(registry, child, &field.node.selection_set.node) {
                    return Some(denied);
                }
            }
            Selection::InlineFragment(fragment) => {
                let on = fragment
                    .node
                    .type_condition
                    .as_ref()
                    .map_or(parent, |condition| condition.node.on.node.as_str());
                if let Some(denied) = walk(registry, on, &fragment.node.selection_set.node) {
                    return Some(denied);
                }
            }
            Selection::FragmentSpread(_) => {}
        }
    }
    None
}
