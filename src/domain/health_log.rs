//! Health logs: the outcome of each step an executor ran, the record a workflow's health
//! is judged from.
//!
//! Logs are written by [`super::run::report_step`], which counts them on the run in the
//! same transaction; this file holds the rows, the reported outcome and the read side.

use chrono::NaiveDateTime;
use diesel::dsl;
use diesel::prelude::*;

use crate::db::Columns as _;

use super::page::{Page, PageRequest, Position, SortValue, time_key};
use super::{Tenant, new_id};
use crate::db::expr::Maybe;
use crate::db::schema::health_logs;
use crate::db::{Db, Keyset, TenantRow};
use crate::error::{AppError, AppResult};

pub const MAX_ERROR_TYPE_CHARS: usize = 200;
pub const MAX_ERROR_MESSAGE_CHARS: usize = 2_000;
pub const MAX_PAGE_URL_CHARS: usize = 2_048;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

crate::text_enum! {
    /// How a step went.
    pub enum Status {
        Success = "success",
        Failed = "failed",
        /// The recorded selectors failed, and a deterministic fallback found the element.
        HealedDeterministic = "healed_deterministic",
        /// The recorded selectors failed, and the AI found the element.
        HealedAi = "healed_ai",
    }
}

impl Status {
    /// How the element was found again, for a healed step (`Step.healingMethod`).
    pub fn healing_method(self) -> Option<&'static str> {
        match self {
            Self::HealedDeterministic => Some("deterministic"),
            Self::HealedAi => Some("ai"),
            Self::Success | Self::Failed => None,
        }
    }
}

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable, Identifiable)]
#[diesel(table_name = health_logs, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct HealthLog {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub run_id: String,
    pub step_id: Option<String>,
    /// Set by the executor so a retried report is recorded once.
    pub idempotency_key: Option<String>,
    pub status: Status,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub healing_confidence: Option<f64>,
    pub deterministic_score: Option<f64>,
    pub ai_score: Option<f64>,
    pub page_url: Option<String>,
    pub execution_time_ms: Option<i32>,
    pub created_at: NaiveDateTime,
}

impl TenantRow for HealthLog {
    type Table = health_logs::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
}

impl HealthLog {
    pub fn position(&self) -> Position {
        Position {
            key: SortValue::time(self.created_at),
            id: self.id.clone(),
        }
    }
}

/// What an executor reports about one step it ran.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub status: Status,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub healing_confidence: Option<f64>,
    pub deterministic_score: Option<f64>,
    pub ai_score: Option<f64>,
    pub page_url: Option<String>,
    pub execution_time_ms: Option<i32>,
    /// The same key on a retried report of the same run records the step once.
    pub idempotency_key: Option<String>,
    /// For a healed step: the selectors that found the element, written to the step.
    pub healed_selectors: Option<serde_json::Value>,
    /// For a healed step: how it was healed, more precisely than the status says (e.g.
    /// `text-match`); the status's `deterministic`/`ai` when absent.
    pub healing_method: Option<String>,
}

/// The longest `healingMethod` a report may name.
pub const MAX_HEALING_METHOD_CHARS: usize = 100;

impl StepOutcome {
    /// Checks the limits; `field` prefixes the names in errors (e.g. `outcome`). Blank
    /// texts are stored as absent.
    pub fn validate(self, field: &str) -> AppResult<Self> {
        let name = |f: &str| format!("{field}.{f}");
        let idempotency_key = match self.idempotency_key {
            Some(key) if key.is_empty() || key.chars().count() > MAX_IDEMPOTENCY_KEY_CHARS => {
                return Err(AppError::bad_input(
                    name("idempotencyKey"),
                    format!(
                        "{} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters long",
                        name("idempotencyKey")
                    ),
                ));
            }
            other => other,
        };
        if let Some(key) = &idempotency_key {
            super::refuse_nul(&name("idempotencyKey"), key)?;
        }
        if self.execution_time_ms.is_some_and(|ms| ms < 0) {
            return Err(AppError::bad_input(
                name("executionTimeMs"),
                format!("{} must not be negative", name("executionTimeMs")),
            ));
        }
        Ok(Self {
            status: self.status,
            error_type: bounded_text(&name("errorType"), self.error_type, MAX_ERROR_TYPE_CHARS)?,
            error_message: bounded_text(
                &name("errorMessage"),
                self.error_message,
                MAX_ERROR_MESSAGE_CHARS,
            )?,
            healing_confidence: score(&name("healingConfidence"), self.healing_confidence)?,
            deterministic_score: score(&name("deterministicScore"), self.deterministic_score)?,
            ai_score: score(&name("aiScore"), self.ai_score)?,
            page_url: bounded_text(&name("pageUrl"), self.page_url, MAX_PAGE_URL_CHARS)?
                .map(|url| url.trim().to_owned()),
            execution_time_ms: self.execution_time_ms,
            idempotency_key,
            healed_selectors: self.healed_selectors,
            healing_method: bounded_text(
                &name("healingMethod"),
                self.healing_method,
                MAX_HEALING_METHOD_CHARS,
            )?
            .map(|method| method.trim().to_owned()),
        })
    }

    /// The healed selectors as stored on the step (a JSON object like the recorded
    /// selectors); only a healed step carries them. `field` as in [`Self::validate`].
    pub fn healed_selectors_text(&self, field: &str) -> AppResult<Option<String>> {
        let name = format!("{field}.healedSelectors");
        let Some(selectors) = &self.healed_selectors else {
            return Ok(None);
        };
        if self.status.healing_method().is_none() {
            return Err(AppError::bad_input(
                &name,
                format!(
                    "{name} may only be sent for a healed step (HEALED_DETERMINISTIC or HEALED_AI)"
                ),
            ));
        }
        super::json::object_text(&name, selectors, super::json::MAX_STEP_JSON_BYTES).map(Some)
    }

    /// The log row recording this outcome for `step_id` of a run.
    pub fn into_row(
        self,
        tenant: &Tenant,
        workflow_id: &str,
        run_id: &str,
        step_id: &str,
        at: NaiveDateTime,
    ) -> HealthLog {
        HealthLog {
            id: new_id(),
            company_id: tenant.id().to_owned(),
            workflow_id: workflow_id.to_owned(),
            run_id: run_id.to_owned(),
            step_id: Some(step_id.to_owned()),
            idempotency_key: self.idempotency_key,
            status: self.status,
            error_type: self.error_type,
            error_message: self.error_message,
            healing_confidence: self.healing_confidence,
            deterministic_score: self.deterministic_score,
            ai_score: self.ai_score,
            page_url: self.page_url,
            execution_time_ms: self.execution_time_ms,
            created_at: at,
        }
    }
}

/// A free text of at most `max_chars`; blank is absent.
pub(crate) fn bounded_text(
    field: &str,
    value: Option<String>,
    max_chars: usize,
) -> AppResult<Option<String>> {
    let value = value.filter(|v| !v.trim().is_empty());
    if value
        .as_ref()
        .is_some_and(|v| v.chars().count() > max_chars)
    {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be at most {max_chars} characters long"),
        ));
    }
    if let Some(value) = &value {
        super::refuse_nul(field, value)?;
    }
    Ok(value)
}

/// A score or confidence: within 0..1 (NaN is not).
fn score(field: &str, value: Option<f64>) -> AppResult<Option<f64>> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) => Err(AppError::bad_input(
            field,
            format!("{field} must be between 0 and 1"),
        )),
        other => Ok(other),
    }
}

/// Which health logs a list shows. Empty fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct HealthLogFilter {
    pub workflow_id: Option<String>,
    pub run_id: Option<String>,
    pub statuses: Vec<Status>,
    /// Logs created at or after this time.
    pub since: Option<NaiveDateTime>,
    /// Logs created before this time.
    pub until: Option<NaiveDateTime>,
    /// Only logs of this step.
    pub step_id: Option<String>,
}

impl HealthLogFilter {
    /// Checks the time window; `field` prefixes the names in errors (e.g. `filter`).
    pub fn validate(self, field: &str) -> AppResult<Self> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && until < since
        {
            return Err(AppError::bad_input(
                format!("{field}.until"),
                format!("{field}.until must not be before {field}.since"),
            ));
        }
        Ok(self)
    }
}

/// The order a list of health logs is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogOrder {
    /// What happened last comes first (activity feeds).
    #[default]
    NewestFirst,
    /// The order the steps were reported in (one run's timeline).
    OldestFirst,
}

impl LogOrder {
    /// Names the ordering inside cursors, so a cursor only works for the ordering it came
    /// from.
    pub fn tag(self) -> &'static str {
        match self {
            Self::NewestFirst => "health_logs:created_at:desc",
            Self::OldestFirst => "health_logs:created_at:asc",
        }
    }

    fn descending(self) -> bool {
        self == Self::NewestFirst
    }
}

/// The condition of a [`HealthLogFilter`].
type Matching = dsl::And<
    dsl::And<
        dsl::And<
            dsl::And<
                dsl::And<
                    Maybe<dsl::Eq<health_logs::workflow_id, String>>,
                    Maybe<dsl::Eq<health_logs::run_id, String>>,
                >,
                Maybe<dsl::EqAny<health_logs::status, Vec<Status>>>,
            >,
            Maybe<dsl::GtEq<health_logs::created_at, NaiveDateTime>>,
        >,
        Maybe<dsl::Lt<health_logs::created_at, NaiveDateTime>>,
    >,
    Maybe<dsl::Eq<health_logs::step_id, String>>,
>;

impl HealthLogFilter {
    fn condition(&self) -> Matching {
        let workflow = self
            .workflow_id
            .clone()
            .map(|id| health_logs::workflow_id.eq(id));
        let run = self.run_id.clone().map(|id| health_logs::run_id.eq(id));
        Maybe::from_option(workflow)
            .and(Maybe::from_option(run))
            .and(Maybe::when(!self.statuses.is_empty(), || {
                health_logs::status.eq_any(self.statuses.clone())
            }))
            .and(Maybe::from_option(
                self.since.map(|since| health_logs::created_at.ge(since)),
            ))
            .and(Maybe::from_option(
                self.until.map(|until| health_logs::created_at.lt(until)),
            ))
            .and(Maybe::from_option(
                self.step_id.clone().map(|id| health_logs::step_id.eq(id)),
            ))
    }
}

/// The tenant's health logs among `ids`; ids of other companies are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<HealthLog>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.health_logs()
            .filter(health_logs::id.eq_any(ids))
            .select(HealthLog::columns()),
    )
    .await
}

/// One page of the tenant's health logs in `order`.
pub async fn list(
    db: &Db,
    tenant: &Tenant,
    filter: &HealthLogFilter,
    order: LogOrder,
    page: &PageRequest,
) -> AppResult<Page<HealthLog>> {
    let keyset = page.keyset(order.descending(), time_key)?;
    let mut tx = db.read(tenant).await?;
    let rows = tx
        .load(
            tx.health_logs()
                .filter(filter.condition())
                .select(HealthLog::columns())
                .keyset(health_logs::created_at, health_logs::id, keyset),
        )
        .await?;
    Ok(Page::from_scan(rows, page))
}

/// What a list of logs nested under a list hangs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogParent {
    Workflow,
    Run,
}

impl LogParent {
    fn column(self) -> &'static str {
        match self {
            Self::Workflow => "workflow_id",
            Self::Run => "run_id",
        }
    }
}

/// One page of logs per parent among `parents` (a `healthLogs` connection under a list of
/// workflows or runs), in `order`, in one statement. `filter` applies to every parent; its
/// field for the parent's own column is ignored.
pub async fn pages_by_parent(
    db: &Db,
    tenant: &Tenant,
    parent: LogParent,
    parents: &[String],
    filter: &HealthLogFilter,
    order: LogOrder,
    page: &PageRequest,
) -> AppResult<std::collections::HashMap<String, Page<HealthLog>>> {
    use crate::db::partition::{Condition, PartitionedPage};
    let descending_scan = page.scans_backward(order.descending());
    let mut conditions = filter_conditions(parent, filter);
    if let Some(position) = &page.cursor {
        let at = time_key(&position.key)?;
        conditions.push(Condition::after(
            "created_at",
            "id",
            at,
            &position.id,
            descending_scan,
        ));
    }
    let statement = PartitionedPage {
        table: "health_logs",
        parent: parent.column(),
        key: "created_at",
        descending: descending_scan,
        limit: page.fetch_limit(),
        parents: parents.to_vec(),
        conditions,
    };
    let rows: Vec<HealthLog> = db.read(tenant).await?.partitioned_pages(&statement).await?;
    Ok(super::page::pages_by_parent(
        rows,
        parents,
        page,
        |log| match parent {
            LogParent::Workflow => log.workflow_id.as_str(),
            LogParent::Run => log.run_id.as_str(),
        },
        |a, b| {
            let order = (a.created_at, &a.id).cmp(&(b.created_at, &b.id));
            if descending_scan {
                order.reverse()
            } else {
                order
            }
        },
    ))
}

fn filter_conditions(
    parent: LogParent,
    filter: &HealthLogFilter,
) -> Vec<crate::db::partition::Condition> {
    use crate::db::partition::Condition;
    let mut conditions = Vec::new();
    if parent != LogParent::Workflow
        && let Some(workflow_id) = &filter.workflow_id
    {
        conditions.push(Condition::equals("workflow_id", workflow_id));
    }
    if parent != LogParent::Run
        && let Some(run_id) = &filter.run_id
    {
        conditions.push(Condition::equals("run_id", run_id));
    }
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    conditions.extend(Condition::any_of("status", &statuses));
    if let Some(since) = filter.since {
        conditions.push(Condition::time("created_at", ">=", since));
    }
    if let Some(until) = filter.until {
        conditions.push(Condition::time("created_at", "<", until));
    }
    if let Some(step_id) = &filter.step_id {
        conditions.push(Condition::equals("step_id", step_id));
    }
    conditions
}

/// How many logs matching `filter` each parent among `parents` has.
pub async fn counts_by_parent(
    db: &Db,
    tenant: &Tenant,
    parent: LogParent,
    parents: &[String],
    filter: &HealthLogFilter,
) -> AppResult<std::collections::HashMap<String, i64>> {
    let mut filter = filter.clone();
    match parent {
        LogParent::Workflow => filter.workflow_id = None,
        LogParent::Run => filter.run_id = None,
    }
    let mut tx = db.read(tenant).await?;
    let matching = tx.health_logs().filter(filter.condition());
    // One grouping per parent column: the same query, grouped by another column.
    let rows: Vec<(String, i64)> = match parent {
        LogParent::Workflow => {
            let parent = health_logs::workflow_id;
            tx.load(
                matching
                    .filter(parent.eq_any(parents))
                    .group_by(parent)
                    .select((parent, dsl::count_star())),
            )
            .await?
        }
        LogParent::Run => {
            let parent = health_logs::run_id;
            tx.load(
                matching
                    .filter(parent.eq_any(parents))
                    .group_by(parent)
                    .select((parent, dsl::count_star())),
            )
            .await?
        }
    };
    Ok(rows.into_iter().collect())
}

/// How many of the tenant's health logs match `filter`.
pub async fn count(db: &Db, tenant: &Tenant, filter: &HealthLogFilter) -> AppResult<i64> {
    let mut tx = db.read(tenant).await?;
    tx.one(tx.health_logs().filter(filter.condition()).count())
        .await
}

/// A log's place in the commit-ordered stream that `healthLogRecorded` follows: the
/// position its transaction got (`commit_seq`), then its id. Positions are only read below
/// the point where no transaction can still commit (see the migration
/// `health_log_stream`), so a stream that passed a position never finds a log before it
/// later: resuming after a position misses nothing and repeats nothing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct StreamPosition {
    pub seq: i64,
    pub id: String,
}

/// Whose logs a stream read covers.
#[derive(Debug, Clone, Copy)]
pub enum StreamScope<'a> {
    /// One company's logs, optionally of one workflow (a subscriber's replay).
    Company {
        tenant: &'a Tenant,
        workflow_id: Option<&'a str>,
    },
    /// Every company's logs: the instance's tail of the stream, which hands each log to
    /// the subscribers of its own company only. Unscoped on purpose.
    AllCompanies,
}

/// A log read from the stream, with its position.
#[derive(Debug, Clone)]
pub struct StreamedLog {
    pub position: StreamPosition,
    pub log: HealthLog,
}

/// Up to `limit` logs after `after` (from the start when `None`) in stream order, only
/// those below the commit fence.
pub async fn stream_after(
    db: &Db,
    scope: StreamScope<'_>,
    after: Option<&StreamPosition>,
    limit: i64,
) -> AppResult<Vec<StreamedLog>> {
    let page = Keyset {
        backward: false,
        after: after.map(|position| (position.seq, position.id.clone())),
        limit,
    };
    let rows: Vec<(HealthLog, i64)> = match scope {
        StreamScope::Company {
            tenant,
            workflow_id,
        } => {
            let mut tx = db.read(tenant).await?;
            let of_workflow = workflow_id.map(|id| health_logs::workflow_id.eq(id.to_owned()));
            tx.load(
                tx.health_logs()
                    .filter_maybe(of_workflow)
                    .filter(tx.commit_fence(health_logs::commit_seq))
                    .select((HealthLog::columns(), health_logs::commit_seq))
                    .keyset(health_logs::commit_seq, health_logs::id, page),
            )
            .await?
        }
        // The instance's tail hands each log to its own company's subscribers only.
        StreamScope::AllCompanies => {
            let mut tx = db.read_unscoped().await?;
            let mut all = tx.unscoped();
            all.load(
                all.health_logs()
                    .filter(all.commit_fence(health_logs::commit_seq))
                    .select((HealthLog::columns(), health_logs::commit_seq))
                    .keyset(health_logs::commit_seq, health_logs::id, page),
            )
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(log, seq)| StreamedLog {
            position: StreamPosition {
                seq,
                id: log.id.clone(),
            },
            log,
        })
        .collect())
}

/// The newest position below the commit fence: where a tail that starts now begins.
/// `None` while no log was ever recorded. Across companies: the instance's tail is.
pub async fn stream_head(db: &Db) -> AppResult<Option<StreamPosition>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    let head: Option<(i64, String)> = all
        .optional(
            all.health_logs()
                .filter(all.commit_fence(health_logs::commit_seq))
                .order((health_logs::commit_seq.desc(), health_logs::id.desc()))
                .limit(1)
                .select((health_logs::commit_seq, health_logs::id)),
        )
        .await?;
    Ok(head.map(|(seq, id)| StreamPosition { seq, id }))
}

/// HealthLog rows by id in *any* company, for events arriving from another instance: the
/// event names its company, and the caller drops rows of any other. Unscoped on purpose.
pub(crate) async fn for_events(db: &Db, ids: &[String]) -> AppResult<Vec<HealthLog>> {
    let mut tx = db.read_unscoped().await?;
    let mut all = tx.unscoped();
    all.load(
        all.health_logs()
            .filter(health_logs::id.eq_any(ids))
            .select(HealthLog::columns()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> StepOutcome {
        StepOutcome {
            status: Status::HealedAi,
            error_type: None,
            error_message: None,
            healing_confidence: Some(0.5),
            deterministic_score: None,
            ai_score: Some(1.0),
            page_url: Some(" https://example.com/a ".to_owned()),
            execution_time_ms: Some(0),
            idempotency_key: Some("k".to_owned()),
            healed_selectors: None,
            healing_method: None,
        }
    }

    fn field_of(result: AppResult<StepOutcome>) -> Option<String> {
        match result {
            Err(AppError::BadUserInput { field, .. }) => field,
            _ => None,
        }
    }

    #[test]
    fn a_valid_outcome_is_kept() {
        let checked = outcome().validate("outcome").ok();
        assert_eq!(
            checked.as_ref().and_then(|o| o.page_url.as_deref()),
            Some("https://example.com/a")
        );
        assert_eq!(
            checked.and_then(|o| o.idempotency_key),
            Some("k".to_owned())
        );
    }

    #[test]
    fn outcomes_out_of_bounds_are_refused_by_field() {
        let cases: Vec<(StepOutcome, &str)> = vec![
            (
                StepOutcome {
                    healing_confidence: Some(1.5),
                    ..outcome()
                },
                "outcome.healingConfidence",
            ),
            (
                StepOutcome {
                    ai_score: Some(f64::NAN),
                    ..outcome()
                },
                "outcome.aiScore",
            ),
            (
                StepOutcome {
                    deterministic_score: Some(-0.1),
                    ..outcome()
                },
                "outcome.deterministicScore",
            ),
            (
                StepOutcome {
                    execution_time_ms: Some(-1),
                    ..outcome()
                },
                "outcome.executionTimeMs",
            ),
            (
                StepOutcome {
                    idempotency_key: Some(String::new()),
                    ..outcome()
                },
                "outcome.idempotencyKey",
            ),
            (
                StepOutcome {
                    idempotency_key: Some("k".repeat(201)),
                    ..outcome()
                },
                "outcome.idempotencyKey",
            ),
            (
                StepOutcome {
                    error_message: Some("e".repeat(2_001)),
                    ..outcome()
                },
                "outcome.errorMessage",
            ),
            (
                StepOutcome {
                    page_url: Some("u".repeat(2_049)),
                    ..outcome()
                },
                "outcome.pageUrl",
            ),
        ];
        for (bad, field) in cases {
            assert_eq!(field_of(bad.validate("outcome")).as_deref(), Some(field));
        }
    }

    #[test]
    fn only_healed_steps_have_a_healing_method() {
        assert_eq!(Status::HealedAi.healing_method(), Some("ai"));
        assert_eq!(
            Status::HealedDeterministic.healing_method(),
            Some("deterministic")
        );
        assert_eq!(Status::Success.healing_method(), None);
        assert_eq!(Status::Failed.healing_method(), None);
    }
}
