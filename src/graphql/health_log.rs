//! Health logs: the `healthLogs` query, the `HealthLog` type, its filter, and the step
//! outcome executors report (`reportStep` lives with the other run mutations).

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::parser::types::Field;
use async_graphql::resolver_utils::enum_value;
use async_graphql::{
    Context, ContextSelectionSet, Enum, ID, InputObject, Object, Positioned, Value,
};
use chrono::{DateTime, NaiveDateTime, SubsecRound as _, TimeDelta, Utc};
use futures_util::future::BoxFuture;

use super::context::ContextExt as _;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::pagination::{CountSource, CountedConnection, PageArgs, TotalCount, connection};
use super::plain_list::{PlainConnection, PlainObject, optional, optional_str, scalar};
use super::run::{Run, RunById, group_by_page};
use super::step::Step;
use super::workflow::Workflow;
use crate::auth::Viewer;
use crate::domain;
use crate::domain::health_log::{HealthLogFilter, LogOrder, LogParent};
use crate::domain::page::{Page, PageRequest};
use crate::error::{AppError, AppResult};

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[graphql(remote = "domain::health_log::Status")]
pub enum HealthLogStatus {
    /// The recorded selectors found the element and the action worked.
    Success,
    /// The step could not be done.
    Failed,
    /// The recorded selectors failed; a deterministic fallback found the element.
    HealedDeterministic,
    /// The recorded selectors failed; the AI found the element.
    HealedAi,
}

/// Narrows a list of health logs. Every field is optional; the ones given must all match.
#[derive(Debug, Clone, Default, InputObject)]
#[graphql(name = "HealthLogFilter")]
pub struct HealthLogFilterInput {
    /// Only logs of this workflow.
    pub workflow_id: Option<ID>,
    /// Only logs of this run.
    pub run_id: Option<ID>,
    /// Only logs in one of these statuses; empty or absent: any status.
    pub status: Option<Vec<HealthLogStatus>>,
    /// Only logs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only logs created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only logs of this step.
    pub step_id: Option<ID>,
}

impl HealthLogFilterInput {
    /// The domain filter; `until` before `since` is BAD_USER_INPUT (`filter.until`).
    pub fn into_domain(self) -> AppResult<domain::health_log::HealthLogFilter> {
        domain::health_log::HealthLogFilter {
            workflow_id: self.workflow_id.map(|id| id.0),
            run_id: self.run_id.map(|id| id.0),
            statuses: domain::filter_values("filter.status", self.status)?,
            since: self.since.map(stored_precision),
            until: self.until.map(stored_precision),
            step_id: self.step_id.map(|id| id.0),
        }
        .validate("filter")
    }
}

/// What an executor reports about one step it ran.
#[derive(Debug, Clone, InputObject)]
pub struct StepOutcomeInput {
    /// How the step went.
    pub status: HealthLogStatus,
    /// The kind of failure, e.g. `element_not_found`; at most 200 characters.
    pub error_type: Option<String>,
    /// What went wrong, in the executor's words; at most 2,000 characters.
    pub error_message: Option<String>,
    /// How sure the healing was of the element it chose, from 0 to 1. A healed step below
    /// the review threshold (default 0.7) puts an active workflow up for review.
    pub healing_confidence: Option<f64>,
    /// The deterministic fallback's score for the element it chose, from 0 to 1.
    pub deterministic_score: Option<f64>,
    /// The AI's score for the element it chose, from 0 to 1.
    pub ai_score: Option<f64>,
    /// The page the step ran on; at most 2,048 characters.
    pub page_url: Option<String>,
    /// How long the step took, in milliseconds (0 or more).
    pub execution_time_ms: Option<i32>,
    /// 1 to 200 characters chosen by the executor. A retried report carrying the same key
    /// for the same run is recorded and counted once. Include the run's `attempt` in it:
    /// a run re-queued after an expired lease is reported afresh by its next executor.
    pub idempotency_key: Option<String>,
    /// For a healed step (HEALED_DETERMINISTIC or HEALED_AI): the selectors that found the
    /// element, a JSON object of at most 64 KiB. Stored on the step (`Step.healedSelectors`)
    /// in the same transaction as the report; refused for other statuses.
    pub healed_selectors: Option<serde_json::Value>,
    /// For a healed step: how it was healed, e.g. `text-match` or a model's name; at most
    /// 100 characters. Stored as `Step.healingMethod`; `deterministic` or `ai` (from the
    /// status) when absent.
    pub healing_method: Option<String>,
}

impl StepOutcomeInput {
    pub fn into_domain(self) -> domain::health_log::StepOutcome {
        domain::health_log::StepOutcome {
            status: self.status.into(),
            error_type: self.error_type,
            error_message: self.error_message,
            healing_confidence: self.healing_confidence,
            deterministic_score: self.deterministic_score,
            ai_score: self.ai_score,
            page_url: self.page_url,
            execution_time_ms: self.execution_time_ms,
            idempotency_key: self.idempotency_key,
            healed_selectors: self.healed_selectors,
            healing_method: self.healing_method,
        }
    }
}

/// Rounds a bound up to the microseconds the databases keep. Stored times are whole
/// microseconds, so `>=` and `<` against the rounded bound answer exactly as against the
/// original, and both backends compare the same value.
pub(crate) fn stored_precision(at: DateTime<Utc>) -> NaiveDateTime {
    let at = at.naive_utc();
    let truncated = at.trunc_subsecs(6);
    if truncated == at {
        at
    } else {
        truncated
            .checked_add_signed(TimeDelta::microseconds(1))
            .unwrap_or(truncated)
    }
}

/// The outcome of one step of one run.
pub struct HealthLog {
    pub row: domain::health_log::HealthLog,
    pub viewer: Viewer,
}

/// The fields of a health log read from its row: what a page of logs answers in one pass
/// (`plain_list.rs`). Each arm answers exactly what the resolver of the same name below
/// does.
impl PlainObject for HealthLog {
    fn plain_field<'a>(
        &self,
        _ctx: &ContextSelectionSet<'a>,
        field: &'a Positioned<Field>,
    ) -> Option<Value> {
        let row = &self.row;
        Some(match field.node.name.node.as_str() {
            "id" => Value::String(row.id.clone()),
            "status" => enum_value(HealthLogStatus::from(row.status)),
            "errorType" => optional_str(row.error_type.as_deref()),
            "errorMessage" => optional_str(row.error_message.as_deref()),
            "healingConfidence" => optional(row.healing_confidence.as_ref()),
            "deterministicScore" => optional(row.deterministic_score.as_ref()),
            "aiScore" => optional(row.ai_score.as_ref()),
            "pageUrl" => optional_str(row.page_url.as_deref()),
            "executionTimeMs" => optional(row.execution_time_ms.as_ref()),
            "createdAt" => scalar(&row.created_at.and_utc()),
            _ => return None,
        })
    }
}

// The fields `PlainObject for HealthLog` answers (above) bypass these resolvers inside a
// page of logs: giving one of them a guard, arguments or a lookup means removing its arm
// there.
/// The outcome of one step of one run, as the executor reported it.
#[Object]
impl HealthLog {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow the step belongs to.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// The run that executed the step.
    async fn run(&self, ctx: &Context<'_>) -> async_graphql::Result<Run> {
        let row = ctx
            .loader()?
            .load_one(RunById(self.row.run_id.clone()))
            .await?
            .ok_or(AppError::NotFound("run"))?;
        Ok(Run {
            row,
            viewer: self.viewer.clone(),
        })
    }

    /// The step; null when it has since been deleted from the workflow.
    async fn step(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Step>> {
        Step::load_optional(ctx, self.row.step_id.as_deref()).await
    }

    /// How the step went.
    async fn status(&self) -> HealthLogStatus {
        self.row.status.into()
    }

    /// The kind of failure, as the executor classified it (e.g. `element_not_found`).
    async fn error_type(&self) -> Option<&str> {
        self.row.error_type.as_deref()
    }

    /// What went wrong, in the executor's words.
    async fn error_message(&self) -> Option<&str> {
        self.row.error_message.as_deref()
    }

    /// How sure the healing was of the element it chose, from 0 to 1.
    async fn healing_confidence(&self) -> Option<f64> {
        self.row.healing_confidence
    }

    /// The deterministic fallback's score for the element it chose, from 0 to 1.
    async fn deterministic_score(&self) -> Option<f64> {
        self.row.deterministic_score
    }

    /// The AI's score for the element it chose, from 0 to 1.
    async fn ai_score(&self) -> Option<f64> {
        self.row.ai_score
    }

    /// The page the step ran on.
    async fn page_url(&self) -> Option<&str> {
        self.row.page_url.as_deref()
    }

    /// How long the step took, in milliseconds.
    async fn execution_time_ms(&self) -> Option<i32> {
        self.row.execution_time_ms
    }

    /// When the outcome was recorded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }
}

/// A page of the viewer's health logs matching `filter`, newest first (the root
/// `healthLogs`).
pub async fn health_logs_connection(
    ctx: &Context<'_>,
    filter: domain::health_log::HealthLogFilter,
    args: PageArgs,
) -> async_graphql::Result<CountedConnection<HealthLog>> {
    health_logs_connection_ordered(ctx, filter, LogOrder::NewestFirst, args).await
}

/// A page of the viewer's health logs matching `filter`, in `order`.
pub async fn health_logs_connection_ordered(
    ctx: &Context<'_>,
    filter: domain::health_log::HealthLogFilter,
    order: LogOrder,
    args: PageArgs,
) -> async_graphql::Result<CountedConnection<HealthLog>> {
    let viewer = ctx.viewer()?;
    let db = ctx.db();
    let request = args.into_request(order.tag())?;
    let page = domain::health_log::list(db, &viewer.tenant, &filter, order, &request).await?;
    let total = {
        let (db, tenant) = (db.clone(), viewer.tenant.clone());
        TotalCount::new(move || {
            let (db, tenant, filter) = (db.clone(), tenant.clone(), filter.clone());
            async move { domain::health_log::count(&db, &tenant, &filter).await }
        })
    };
    Ok(connection(
        page,
        order.tag(),
        domain::health_log::HealthLog::position,
        |row| HealthLog {
            row,
            viewer: viewer.clone(),
        },
        total,
    ))
}

/// Batch key: one page of the logs of a workflow or a run (`Workflow.healthLogs`,
/// `Run.healthLogs` under a list). Keys asking for the same page of different parents are
/// read in one statement.
#[derive(Debug, Clone)]
pub struct LogsOf {
    pub parent: LogParent,
    pub parent_id: String,
    pub page: Arc<LogPage>,
}

/// What page of logs [`LogsOf`] asks for.
#[derive(Debug)]
pub struct LogPage {
    filter: HealthLogFilter,
    order: LogOrder,
    request: PageRequest,
    /// Equal for equal pages: the batch groups keys by it.
    fingerprint: String,
}

impl PartialEq for LogsOf {
    fn eq(&self, other: &Self) -> bool {
        self.parent == other.parent
            && self.parent_id == other.parent_id
            && self.page.fingerprint == other.page.fingerprint
    }
}

impl Eq for LogsOf {}

impl std::hash::Hash for LogsOf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parent.hash(state);
        self.parent_id.hash(state);
        self.page.fingerprint.hash(state);
    }
}

impl Loader<LogsOf> for TenantLoader {
    type Value = Page<domain::health_log::HealthLog>;
    type Error = LoadError;

    async fn load(&self, keys: &[LogsOf]) -> Result<HashMap<LogsOf, Self::Value>, LoadError> {
        let mut found = HashMap::with_capacity(keys.len());
        let groups = group_by_page(keys, |k| k.page.fingerprint.as_str());
        for group in groups {
            let (parent, page) = (group[0].parent, &group[0].page);
            let ids: Vec<String> = group.iter().map(|k| k.parent_id.clone()).collect();
            let mut pages = domain::health_log::pages_by_parent(
                &self.db,
                &self.tenant,
                parent,
                &ids,
                &page.filter,
                page.order,
                &page.request,
            )
            .await
            .map_err(load_error)?;
            for key in group {
                if let Some(page) = pages.remove(&key.parent_id) {
                    found.insert(key.clone(), page);
                }
            }
        }
        Ok(found)
    }
}

/// Batch key: how many logs matching a filter a workflow or a run has.
#[derive(Debug, Clone)]
pub struct LogCountOf {
    pub parent: LogParent,
    pub parent_id: String,
    pub filter: Arc<HealthLogFilter>,
    fingerprint: Arc<str>,
}

impl PartialEq for LogCountOf {
    fn eq(&self, other: &Self) -> bool {
        self.parent == other.parent
            && self.parent_id == other.parent_id
            && self.fingerprint == other.fingerprint
    }
}

impl Eq for LogCountOf {}

impl std::hash::Hash for LogCountOf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parent.hash(state);
        self.parent_id.hash(state);
        self.fingerprint.hash(state);
    }
}

impl Loader<LogCountOf> for TenantLoader {
    type Value = i64;
    type Error = LoadError;

    async fn load(&self, keys: &[LogCountOf]) -> Result<HashMap<LogCountOf, i64>, LoadError> {
        let mut found = HashMap::with_capacity(keys.len());
        let groups = group_by_page(keys, |k| k.fingerprint.as_ref());
        for group in groups {
            let (parent, filter) = (group[0].parent, &group[0].filter);
            let ids: Vec<String> = group.iter().map(|k| k.parent_id.clone()).collect();
            let counts =
                domain::health_log::counts_by_parent(&self.db, &self.tenant, parent, &ids, filter)
                    .await
                    .map_err(load_error)?;
            for key in group {
                found.insert(
                    key.clone(),
                    counts.get(&key.parent_id).copied().unwrap_or(0),
                );
            }
        }
        Ok(found)
    }
}

impl CountSource for LogCountOf {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, async_graphql::Result<i64>> {
        Box::pin(async move { Ok(ctx.loader()?.load_one(self.clone()).await?.unwrap_or(0)) })
    }
}

/// The logs connection of one workflow or run under a list: its page and count come from
/// the request's batch loader.
pub async fn logs_of(
    ctx: &Context<'_>,
    parent: LogParent,
    parent_id: &str,
    filter: HealthLogFilter,
    order: LogOrder,
    args: PageArgs,
) -> async_graphql::Result<CountedConnection<HealthLog>> {
    let viewer = ctx.viewer()?;
    let request = args.into_request(order.tag())?;
    // The parent's own column is the partition, not a filter.
    let mut filter = filter;
    match parent {
        LogParent::Workflow => filter.workflow_id = None,
        LogParent::Run => filter.run_id = None,
    }
    let fingerprint = format!("{parent:?}{filter:?}");
    let page = LogPage {
        fingerprint: format!("{fingerprint}{order:?}{request:?}"),
        filter: filter.clone(),
        order,
        request: request.clone(),
    };
    let key = LogsOf {
        parent,
        parent_id: parent_id.to_owned(),
        page: Arc::new(page),
    };
    let page = ctx
        .loader()?
        .load_one(key)
        .await?
        .unwrap_or_else(|| Page::from_scan(Vec::new(), &request));
    let total = TotalCount::from_source(LogCountOf {
        parent,
        parent_id: parent_id.to_owned(),
        filter: Arc::new(filter),
        fingerprint: fingerprint.into(),
    });
    Ok(connection(
        page,
        order.tag(),
        domain::health_log::HealthLog::position,
        |row| HealthLog {
            row,
            viewer: viewer.clone(),
        },
        total,
    ))
}

#[derive(Default)]
pub struct HealthLogQuery;

#[Object]
impl HealthLogQuery {
    /// The company's health logs, newest first.
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn health_logs(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Which logs; absent: all.")] filter: Option<HealthLogFilterInput>,
        #[graphql(desc = "How many logs to return from the start: 0 to 100, default 20.")]
        first: Option<i32>,
        #[graphql(desc = "Return the logs after this cursor.")] after: Option<String>,
        #[graphql(desc = "How many logs to return from the end: 0 to 100.")] last: Option<i32>,
        #[graphql(desc = "Return the logs before this cursor.")] before: Option<String>,
    ) -> async_graphql::Result<PlainConnection<HealthLog>> {
        let filter = filter.unwrap_or_default().into_domain()?;
        let args = PageArgs {
            first,
            after,
            last,
            before,
        };
        health_logs_connection(ctx, filter, args)
            .await
            .map(PlainConnection)
    }
}

/// Batch key: a health log of the loader's company, by id (`node`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthLogById(pub String);

impl Loader<HealthLogById> for TenantLoader {
    type Value = domain::health_log::HealthLog;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[HealthLogById],
    ) -> Result<HashMap<HealthLogById, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|key| key.0.clone()).collect();
        let rows = domain::health_log::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (HealthLogById(row.id.clone()), row))
            .collect())
    }
}
