//! Steps: the ordered actions of a workflow, with the selectors that find their element,
//! AI-written labels, human edits and self-healing history.
//!
//! `step_number` is dense (1..n) and unique per workflow. Databases check that uniqueness
//! row by row, so renumbering first lifts the affected steps out of the way by
//! [`RENUMBER_OFFSET`] and then sets their final numbers.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use serde_json::Value;

use super::json::{MAX_STEP_JSON_BYTES, object_text};
use super::screenshot::Screenshot;
use super::{Tenant, new_id, now, required_name};
use crate::db::Db;
use crate::db::schema::{screenshots, steps, workflows};
use crate::error::{AppError, AppResult};

pub const MAX_ACTION_TYPE_CHARS: usize = 50;
pub const MAX_TEXT_CHARS: usize = 2_000;
/// Larger than any step count, so lifted numbers never collide with real ones.
const RENUMBER_OFFSET: i32 = 1_000_000;

/// A step row. Split in two so that lists can load a step without its JSON documents, which
/// are most of its bytes and which a list rarely shows; field access goes through to the
/// [`StepHead`] (`step.id`, `step.workflow_id`, ...).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = steps, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
pub struct Step {
    #[diesel(embed)]
    pub head: StepHead,
    #[diesel(embed)]
    pub documents: StepDocuments,
}

impl std::ops::Deref for Step {
    type Target = StepHead;

    fn deref(&self) -> &StepHead {
        &self.head
    }
}

/// Every column of a step but its JSON documents.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = steps, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
// Every column is written explicitly: None means NULL, not "use the column default".
#[diesel(treat_none_as_default_value = false)]
pub struct StepHead {
    pub id: String,
    pub company_id: String,
    pub workflow_id: String,
    pub step_number: i32,
    pub action_type: String,
    pub screenshot_id: Option<String>,
    pub field_label: Option<String>,
    pub instruction: Option<String>,
    pub ai_confidence: Option<f64>,
    pub ai_model: Option<String>,
    pub label_edited: bool,
    pub instruction_edited: bool,
    pub edited_by: Option<String>,
    pub edited_at: Option<NaiveDateTime>,
    pub healed_at: Option<NaiveDateTime>,
    pub healing_confidence: Option<f64>,
    pub healing_method: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A step's JSON documents (stored as text; objects, checked on the way in).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = steps, check_for_backend(diesel::pg::Pg, diesel::sqlite::Sqlite))]
#[diesel(treat_none_as_default_value = false)]
pub struct StepDocuments {
    pub selectors: String,
    pub element_meta: String,
    pub page_context: String,
    pub action_data: String,
    pub dom_context: String,
    pub healed_selectors: Option<String>,
}

/// A step as recorded. JSON documents default to `{}`.
#[derive(Debug, Clone, Default)]
pub struct NewStep {
    pub action_type: String,
    pub selectors: Option<Value>,
    pub element_meta: Option<Value>,
    pub page_context: Option<Value>,
    pub action_data: Option<Value>,
    pub dom_context: Option<Value>,
    pub field_label: Option<String>,
    pub instruction: Option<String>,
    pub ai_confidence: Option<f64>,
    pub ai_model: Option<String>,
    pub screenshot_id: Option<String>,
}

/// An edit of a step; `None` leaves a field as it is, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct StepChanges {
    pub action_type: Option<String>,
    pub selectors: Option<Value>,
    pub element_meta: Option<Value>,
    pub page_context: Option<Value>,
    pub action_data: Option<Value>,
    pub dom_context: Option<Value>,
    pub field_label: Option<Option<String>>,
    pub instruction: Option<Option<String>>,
    pub ai_confidence: Option<Option<f64>>,
    pub ai_model: Option<Option<String>>,
    pub screenshot_id: Option<Option<String>>,
}

fn document(field: &str, value: Option<&Value>) -> AppResult<String> {
    match value {
        None => Ok("{}".to_owned()),
        Some(value) => object_text(field, value, MAX_STEP_JSON_BYTES),
    }
}

fn optional_text(field: &str, value: Option<String>) -> AppResult<Option<String>> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if value
        .as_ref()
        .is_some_and(|v| v.chars().count() > MAX_TEXT_CHARS)
    {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be at most {MAX_TEXT_CHARS} characters long"),
        ));
    }
    if let Some(value) = &value {
        super::refuse_nul(field, value)?;
    }
    Ok(value)
}

fn confidence(field: &str, value: Option<f64>) -> AppResult<Option<f64>> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) => Err(AppError::bad_input(
            field,
            format!("{field} must be between 0 and 1"),
        )),
        other => Ok(other),
    }
}

impl NewStep {
    /// Validates the step and builds its row. `field` prefixes error field names
    /// (`steps[3]`, `input`).
    pub fn into_row(
        self,
        tenant: &Tenant,
        workflow_id: &str,
        number: i32,
        at: NaiveDateTime,
    ) -> AppResult<Step> {
        self.into_row_named(
            &format!("steps[{}]", number - 1),
            tenant,
            workflow_id,
            number,
            at,
        )
    }

    pub fn into_row_named(
        self,
        field: &str,
        tenant: &Tenant,
        workflow_id: &str,
        number: i32,
        at: NaiveDateTime,
    ) -> AppResult<Step> {
        let name = |f: &str| format!("{field}.{f}");
        Ok(Step {
            head: StepHead {
                id: new_id(),
                company_id: tenant.id().to_owned(),
                workflow_id: workflow_id.to_owned(),
                step_number: number,
                action_type: required_name(
                    &name("actionType"),
                    &self.action_type,
                    MAX_ACTION_TYPE_CHARS,
                )?,
                screenshot_id: self.screenshot_id,
                field_label: optional_text(&name("fieldLabel"), self.field_label)?,
                instruction: optional_text(&name("instruction"), self.instruction)?,
                ai_confidence: confidence(&name("aiConfidence"), self.ai_confidence)?,
                ai_model: optional_text(&name("aiModel"), self.ai_model)?,
                label_edited: false,
                instruction_edited: false,
                edited_by: None,
                edited_at: None,
                healed_at: None,
                healing_confidence: None,
                healing_method: None,
                created_at: at,
                updated_at: at,
            },
            documents: StepDocuments {
                selectors: document(&name("selectors"), self.selectors.as_ref())?,
                element_meta: document(&name("elementMeta"), self.element_meta.as_ref())?,
                page_context: document(&name("pageContext"), self.page_context.as_ref())?,
                action_data: document(&name("actionData"), self.action_data.as_ref())?,
                dom_context: document(&name("domContext"), self.dom_context.as_ref())?,
                healed_selectors: None,
            },
        })
    }
}

/// Inside a transaction: fails with NOT_FOUND unless every id is a screenshot of the tenant.
/// On PostgreSQL the screenshots are share-locked until commit, so a workflow deletion
/// deciding which of its screenshots other steps still show waits for this reference
/// (and sees it), or has already removed them (and this check finds them missing).
macro_rules! check_screenshots {
    ($conn:ident, $backend:expr, $tenant:expr, $ids:expr) => {{
        let ids: &[String] = $ids;
        if !ids.is_empty() {
            let mut wanted = ids.to_vec();
            wanted.sort();
            wanted.dedup();
            let lock = format!(
                "SELECT id FROM screenshots WHERE company_id = $1 AND id IN ({}) ORDER BY id \
                 FOR SHARE",
                $crate::db::placeholders(2, wanted.len())
            );
            let binds = std::iter::once($tenant.id().to_owned()).chain(wanted.iter().cloned());
            $crate::lock_rows!($conn, $backend, lock; binds);
            let found: i64 = $crate::db::schema::screenshots::table
                .filter($crate::db::schema::screenshots::company_id.eq($tenant.id()))
                .filter($crate::db::schema::screenshots::id.eq_any(&wanted))
                .count()
                .get_result($conn)
                .await?;
            if usize::try_from(found).ok() != Some(wanted.len()) {
                return Err($crate::error::AppError::NotFound("screenshot"));
            }
        }
    }};
}
pub(crate) use check_screenshots;

/// Inside a transaction: inserts step rows. One statement per row, because diesel-async
/// cannot run SQLite multi-row inserts; inside one transaction that costs little.
macro_rules! insert_all {
    ($conn:expr, $rows:expr) => {{
        let rows: &[Step] = $rows;
        for row in rows {
            diesel::insert_into($crate::db::schema::steps::table)
                .values(row)
                .execute($conn)
                .await?;
        }
    }};
}
pub(crate) use insert_all;

/// Inside a transaction: the tenant's workflow, or NOT_FOUND; marks it as updated.
macro_rules! touch_workflow {
    ($conn:expr, $tenant:expr, $workflow_id:expr) => {{
        let touched = diesel::update(
            workflows::table
                .filter(workflows::company_id.eq($tenant.id()))
                .filter(workflows::id.eq($workflow_id)),
        )
        .set(workflows::updated_at.eq(now()))
        .execute($conn)
        .await?;
        if touched == 0 {
            return Err(AppError::NotFound("workflow"));
        }
    }};
}

/// Inside a transaction: the first statement of an edit of the tenant's step `$step_id`:
/// marks its workflow as updated, which locks the workflow row until commit. Every step
/// edit of a workflow takes that lock before it reads a step number, so on PostgreSQL too
/// they run one after another and numbering stays dense (see the lock order in `domain`).
/// NOT_FOUND when there is no such step.
macro_rules! touch_workflow_of_step {
    ($conn:expr, $tenant:expr, $step_id:expr) => {{
        let workflow_of_step = steps::table
            .filter(steps::company_id.eq($tenant.id()))
            .filter(steps::id.eq($step_id))
            .select(steps::workflow_id);
        let touched = diesel::update(
            workflows::table
                .filter(workflows::company_id.eq($tenant.id()))
                .filter(workflows::id.eq_any(workflow_of_step)),
        )
        .set(workflows::updated_at.eq(now()))
        .execute($conn)
        .await?;
        if touched == 0 {
            return Err(AppError::NotFound("step"));
        }
    }};
}

/// Inside a transaction: the tenant's step, or NOT_FOUND.
macro_rules! load_step {
    ($conn:expr, $tenant:expr, $id:expr) => {
        steps::table
            .filter(steps::company_id.eq($tenant.id()))
            .filter(steps::id.eq($id))
            .select(Step::as_select())
            .first::<Step>($conn)
            .await
            .optional()?
            .ok_or(AppError::NotFound("step"))?
    };
}

/// Inside a transaction: moves the steps of `workflow_id` numbered `from..` by `delta`.
macro_rules! shift_steps {
    ($conn:expr, $workflow_id:expr, $from:expr, $delta:expr) => {{
        let affected = steps::table
            .filter(steps::workflow_id.eq($workflow_id))
            .filter(steps::step_number.ge($from));
        diesel::update(affected)
            .set(steps::step_number.eq(steps::step_number + RENUMBER_OFFSET))
            .execute($conn)
            .await?;
        diesel::update(
            steps::table
                .filter(steps::workflow_id.eq($workflow_id))
                .filter(steps::step_number.ge(RENUMBER_OFFSET)),
        )
        .set(steps::step_number.eq(steps::step_number - RENUMBER_OFFSET + $delta))
        .execute($conn)
        .await?;
    }};
}

/// How many steps the tenant's workflow `workflow_id` has.
pub async fn count_of_workflow<E: Send>(
    tx: &mut crate::db::Tx<E>,
    workflow_id: &str,
) -> AppResult<i64> {
    tx.one(
        tx.steps()
            .filter(steps::workflow_id.eq(workflow_id))
            .count(),
    )
    .await
}

pub async fn find(db: &Db, tenant: &Tenant, id: &str) -> AppResult<Step> {
    find_many(db, tenant, &[id.to_owned()])
        .await?
        .pop()
        .ok_or(AppError::NotFound("step"))
}

/// The tenant's steps among `ids`; other companies' ids are silently absent.
pub async fn find_many(db: &Db, tenant: &Tenant, ids: &[String]) -> AppResult<Vec<Step>> {
    Ok(crate::with_conn!(db, |conn| {
        steps::table
            .filter(steps::company_id.eq(tenant.id()))
            .filter(steps::id.eq_any(ids))
            .select(Step::as_select())
            .load(conn)
            .await?
    }))
}

/// The steps of the given workflows without their documents, each workflow's in step order:
/// what a list of workflows with their steps needs.
pub async fn heads_of_workflows(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
) -> AppResult<Vec<StepHead>> {
    Ok(crate::with_conn!(db, |conn| {
        steps::table
            .filter(steps::company_id.eq(tenant.id()))
            .filter(steps::workflow_id.eq_any(workflow_ids))
            .order((steps::workflow_id.asc(), steps::step_number.asc()))
            .select(StepHead::as_select())
            .load(conn)
            .await?
    }))
}

/// [`heads_of_workflows`] with each step's screenshot joined in: one statement where a page
/// of workflows showing their steps' screenshots would otherwise need a second. The join is
/// within the company, like every lookup.
pub async fn heads_of_workflows_with_screenshots(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
) -> AppResult<Vec<(StepHead, Option<Screenshot>)>> {
    Ok(crate::with_conn!(db, |conn| {
        steps::table
            .left_join(
                screenshots::table.on(screenshots::id
                    .nullable()
                    .eq(steps::screenshot_id)
                    .and(screenshots::company_id.eq(steps::company_id))),
            )
            .filter(steps::company_id.eq(tenant.id()))
            .filter(steps::workflow_id.eq_any(workflow_ids))
            .order((steps::workflow_id.asc(), steps::step_number.asc()))
            .select((StepHead::as_select(), Option::<Screenshot>::as_select()))
            .load(conn)
            .await?
    }))
}

/// The documents of the given steps, by step id: for lists that loaded only the heads.
pub async fn documents_of(
    db: &Db,
    tenant: &Tenant,
    step_ids: &[String],
) -> AppResult<Vec<(String, StepDocuments)>> {
    Ok(crate::with_conn!(db, |conn| {
        steps::table
            .filter(steps::company_id.eq(tenant.id()))
            .filter(steps::id.eq_any(step_ids))
            .select((steps::id, StepDocuments::as_select()))
            .load(conn)
            .await?
    }))
}

/// The steps of one workflow, in order (after a change that renumbered them).
async fn of_workflow(db: &Db, tenant: &Tenant, workflow_id: &str) -> AppResult<Vec<Step>> {
    Ok(crate::with_conn!(db, |conn| {
        steps::table
            .filter(steps::company_id.eq(tenant.id()))
            .filter(steps::workflow_id.eq(workflow_id))
            .order(steps::step_number.asc())
            .select(Step::as_select())
            .load(conn)
            .await?
    }))
}

/// Inserts a step at 1-based `position` (default: after the last), shifting later steps.
pub async fn add(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    new: NewStep,
    position: Option<i32>,
) -> AppResult<Step> {
    let at = now();
    // Numbered for real inside the transaction, once the step count is known.
    let mut row = new.into_row_named("input", tenant, workflow_id, 1, at)?;
    let backend = db.backend();
    crate::transaction!(db, |conn| {
        touch_workflow!(conn, tenant, workflow_id);
        let count: i64 = steps::table
            .filter(steps::workflow_id.eq(workflow_id))
            .count()
            .get_result(conn)
            .await?;
        let count = i32::try_from(count).map_err(AppError::internal)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= super::workflow::MAX_STEPS {
            return Err(AppError::bad_input(
                "workflowId",
                format!(
                    "a workflow has at most {} steps",
                    super::workflow::MAX_STEPS
                ),
            ));
        }
        let number = position.unwrap_or(count + 1);
        if !(1..=count + 1).contains(&number) {
            return Err(AppError::bad_input(
                "position",
                format!("position must be between 1 and {}", count + 1),
            ));
        }
        check_screenshots!(conn, backend, tenant, row.screenshot_id.as_slice());
        shift_steps!(conn, workflow_id, number, 1);
        row.head.step_number = number;
        diesel::insert_into(steps::table)
            .values(&row)
            .execute(conn)
            .await?;
        Ok(())
    })?;
    Ok(row)
}

#[derive(AsChangeset)]
#[diesel(table_name = steps)]
struct StepPatch {
    action_type: Option<String>,
    selectors: Option<String>,
    element_meta: Option<String>,
    page_context: Option<String>,
    action_data: Option<String>,
    dom_context: Option<String>,
    field_label: Option<Option<String>>,
    instruction: Option<Option<String>>,
    ai_confidence: Option<Option<f64>>,
    ai_model: Option<Option<String>>,
    screenshot_id: Option<Option<String>>,
    label_edited: Option<bool>,
    instruction_edited: Option<bool>,
    edited_by: Option<Option<String>>,
    edited_at: Option<Option<NaiveDateTime>>,
    updated_at: NaiveDateTime,
}

/// Edits a step. A human changing the label or instruction is recorded (`edited_by`,
/// `edited_at`); where that text came from an AI model, the `*_edited` flag marks it as
/// human-owned so regeneration must not overwrite it.
pub async fn update(
    db: &Db,
    tenant: &Tenant,
    editor_id: &str,
    id: &str,
    changes: StepChanges,
) -> AppResult<Step> {
    let field = |f: &str| format!("input.{f}");
    let action_type = changes
        .action_type
        .map(|a| required_name(&field("actionType"), &a, MAX_ACTION_TYPE_CHARS))
        .transpose()?;
    let doc = |f: &str, v: Option<Value>| {
        v.map(|v| object_text(&field(f), &v, MAX_STEP_JSON_BYTES))
            .transpose()
    };
    let selectors = doc("selectors", changes.selectors)?;
    let element_meta = doc("elementMeta", changes.element_meta)?;
    let page_context = doc("pageContext", changes.page_context)?;
    let action_data = doc("actionData", changes.action_data)?;
    let dom_context = doc("domContext", changes.dom_context)?;
    let field_label = changes
        .field_label
        .map(|v| optional_text(&field("fieldLabel"), v))
        .transpose()?;
    let instruction = changes
        .instruction
        .map(|v| optional_text(&field("instruction"), v))
        .transpose()?;
    let ai_confidence = changes
        .ai_confidence
        .map(|v| confidence(&field("aiConfidence"), v))
        .transpose()?;
    let ai_model = changes
        .ai_model
        .map(|v| optional_text(&field("aiModel"), v))
        .transpose()?;
    let screenshot_id = changes.screenshot_id;
    let backend = db.backend();
    crate::transaction!(db, |conn| {
        touch_workflow_of_step!(conn, tenant, id);
        let current = load_step!(conn, tenant, id);
        if let Some(Some(screenshot)) = &screenshot_id {
            check_screenshots!(conn, backend, tenant, std::slice::from_ref(screenshot));
        }
        let label_changed = field_label
            .as_ref()
            .is_some_and(|l| *l != current.field_label);
        let instruction_changed = instruction
            .as_ref()
            .is_some_and(|i| *i != current.instruction);
        let ai_written = current.ai_model.is_some();
        let at = now();
        let edited = label_changed || instruction_changed;
        let patch = StepPatch {
            action_type: action_type.clone(),
            selectors: selectors.clone(),
            element_meta: element_meta.clone(),
            page_context: page_context.clone(),
            action_data: action_data.clone(),
            dom_context: dom_context.clone(),
            field_label: field_label.clone(),
            instruction: instruction.clone(),
            ai_confidence,
            ai_model: ai_model.clone(),
            screenshot_id: screenshot_id.clone(),
            label_edited: (label_changed && ai_written).then_some(true),
            instruction_edited: (instruction_changed && ai_written).then_some(true),
            edited_by: edited.then(|| Some(editor_id.to_owned())),
            edited_at: edited.then_some(Some(at)),
            updated_at: at,
        };
        let updated = diesel::update(steps::table.find(&current.id))
            .set(&patch)
            .returning(Step::as_returning())
            .get_result(conn)
            .await?;
        Ok(updated)
    })
}

/// Deletes a step; the steps after it move up so numbering stays 1..n.
pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<()> {
    crate::transaction!(db, |conn| {
        // The workflow first: the number read next cannot change until commit.
        touch_workflow_of_step!(conn, tenant, id);
        let current = load_step!(conn, tenant, id);
        diesel::delete(steps::table.find(&current.id))
            .execute(conn)
            .await?;
        shift_steps!(conn, &current.workflow_id, current.step_number + 1, -1);
        Ok(())
    })
}

/// Renumbers a workflow's steps in the order of `step_ids`, which must name each of its
/// steps exactly once.
pub async fn reorder(
    db: &Db,
    tenant: &Tenant,
    workflow_id: &str,
    step_ids: &[String],
) -> AppResult<Vec<Step>> {
    // Bounded and duplicate-free before the list is copied, sorted or sent to the database.
    if step_ids.len() > super::workflow::MAX_STEPS {
        return Err(AppError::bad_input(
            "stepIds",
            format!(
                "a workflow has at most {} steps",
                super::workflow::MAX_STEPS
            ),
        ));
    }
    let mut distinct = std::collections::HashSet::with_capacity(step_ids.len());
    if !step_ids.iter().all(|id| distinct.insert(id.as_str())) {
        return Err(AppError::bad_input(
            "stepIds",
            "stepIds must list every step of the workflow exactly once",
        ));
    }
    crate::transaction!(db, |conn| {
        touch_workflow!(conn, tenant, workflow_id);
        let mut current: Vec<String> = steps::table
            .filter(steps::workflow_id.eq(workflow_id))
            .select(steps::id)
            .load(conn)
            .await?;
        let mut requested = step_ids.to_vec();
        current.sort();
        requested.sort();
        if current != requested {
            return Err(AppError::bad_input(
                "stepIds",
                "stepIds must list every step of the workflow exactly once",
            ));
        }
        diesel::update(steps::table.filter(steps::workflow_id.eq(workflow_id)))
            .set(steps::step_number.eq(steps::step_number + RENUMBER_OFFSET))
            .execute(conn)
            .await?;
        for (id, number) in step_ids.iter().zip(1..) {
            diesel::update(steps::table.find(id))
                .set(steps::step_number.eq(number))
                .execute(conn)
                .await?;
        }
        Ok(())
    })?;
    of_workflow(db, tenant, workflow_id).await
}
