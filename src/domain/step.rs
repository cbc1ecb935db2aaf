//! Steps: the ordered actions of a workflow, with the selectors that find their element,
//! AI-written labels, human edits and self-healing history.
//!
//! `step_number` is dense (1..n) and unique per workflow. Databases check that uniqueness
//! row by row, so renumbering first lifts the affected steps out of the way by
//! [`RENUMBER_OFFSET`] and then sets their final numbers.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde_json::Value;

use super::json::{MAX_STEP_JSON_BYTES, object_text};
use super::screenshot::Screenshot;
use super::visibility::{self, Need};
use super::{Tenant, new_id, now, required_name, version};
use crate::db::schema::{screenshots, steps, workflows};
use crate::db::{Columns as _, Db, IntoWork as _, Lock, NoEvents, TenantRow, Tx};
use crate::error::{AppError, AppResult};

pub const MAX_ACTION_TYPE_CHARS: usize = 50;
pub const MAX_TEXT_CHARS: usize = 2_000;
/// Larger than any step count, so lifted numbers never collide with real ones.
pub(crate) const RENUMBER_OFFSET: i32 = 1_000_000;

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

impl TenantRow for Step {
    type Table = steps::table;

    fn set_company_id(&mut self, company_id: &str) {
        self.head.set_company_id(company_id);
    }
}

impl TenantRow for StepHead {
    type Table = steps::table;

    fn set_company_id(&mut self, company_id: &str) {
        company_id.clone_into(&mut self.company_id);
    }
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

/// Fails with NOT_FOUND unless every id is a screenshot of the tenant. On PostgreSQL the
/// screenshots are share-locked until commit, so a workflow deletion deciding which of its
/// screenshots other steps still show waits for this reference (and sees it), or has
/// already removed them (and this check finds them missing).
pub(crate) async fn check_screenshots<E: Send>(tx: &mut Tx<E>, ids: &[String]) -> AppResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut wanted = ids.to_vec();
    wanted.sort();
    wanted.dedup();
    tx.lock_rows(Lock::Share, screenshots::id, &wanted).await?;
    let found: i64 = tx
        .one(
            tx.screenshots()
                .filter(screenshots::id.eq_any(&wanted))
                .count(),
        )
        .await?;
    if usize::try_from(found).ok() != Some(wanted.len()) {
        return Err(AppError::NotFound("screenshot"));
    }
    Ok(())
}

/// The tenant's workflow `workflow_id` marked as updated at `at` (which locks its row until
/// commit), or NOT_FOUND.
pub(crate) async fn touch_workflow<E: Send>(
    tx: &mut Tx<E>,
    workflow_id: &str,
    at: NaiveDateTime,
) -> AppResult<()> {
    let touched = tx
        .execute(
            tx.workflows()
                .filter(workflows::id.eq(workflow_id))
                .set(workflows::updated_at.eq(at)),
        )
        .await?;
    if touched == 0 {
        return Err(AppError::NotFound("workflow"));
    }
    Ok(())
}

/// The first statement of an edit of the tenant's step `step_id`: marks its workflow as
/// updated, which locks the workflow row until commit. Every step edit of a workflow takes
/// that lock before it reads a step number, so on PostgreSQL too they run one after another
/// and numbering stays dense (see the lock order in `domain`). NOT_FOUND when there is no
/// such step.
async fn touch_workflow_of_step<E: Send>(tx: &mut Tx<E>, step_id: &str) -> AppResult<()> {
    let workflow_of_step = tx
        .steps()
        .filter(steps::id.eq(step_id))
        .select(steps::workflow_id)
        .into_subquery();
    let touched = tx
        .execute(
            tx.workflows()
                .filter(workflows::id.eq_any(workflow_of_step))
                .set(workflows::updated_at.eq(now())),
        )
        .await?;
    if touched == 0 {
        return Err(AppError::NotFound("step"));
    }
    Ok(())
}

/// The tenant's step, or NOT_FOUND.
async fn load_step<E: Send>(tx: &mut Tx<E>, id: &str) -> AppResult<Step> {
    tx.optional(tx.steps().filter(steps::id.eq(id)).select(Step::columns()))
        .await?
        .ok_or(AppError::NotFound("step"))
}

/// Moves the steps of `workflow_id` numbered `from..` by `delta`.
async fn shift_steps<E: Send>(
    tx: &mut Tx<E>,
    workflow_id: &str,
    from: i32,
    delta: i32,
) -> AppResult<()> {
    tx.execute(
        tx.steps()
            .filter(steps::workflow_id.eq(workflow_id))
            .filter(steps::step_number.ge(from))
            .set(steps::step_number.eq(steps::step_number + RENUMBER_OFFSET)),
    )
    .await?;
    tx.execute(
        tx.steps()
            .filter(steps::workflow_id.eq(workflow_id))
            .filter(steps::step_number.ge(RENUMBER_OFFSET))
            .set(steps::step_number.eq(steps::step_number - RENUMBER_OFFSET + delta)),
    )
    .await?;
    Ok(())
}

/// How many steps the tenant's workflow `workflow_id` has.
pub async fn count_of_workflow<E: Send>(tx: &mut Tx<E>, workflow_id: &str) -> AppResult<i64> {
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
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.steps()
            .filter(steps::id.eq_any(ids))
            .select(Step::columns()),
    )
    .await
}

/// The steps of the given workflows without their documents, each workflow's in step order:
/// what a list of workflows with their steps needs.
pub async fn heads_of_workflows(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
) -> AppResult<Vec<StepHead>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.steps()
            .filter(steps::workflow_id.eq_any(workflow_ids))
            .order((steps::workflow_id.asc(), steps::step_number.asc()))
            .select(StepHead::columns()),
    )
    .await
}

/// [`heads_of_workflows`] with each step's screenshot joined in: one statement where a page
/// of workflows showing their steps' screenshots would otherwise need a second. The join is
/// within the company, like every lookup.
pub async fn heads_of_workflows_with_screenshots(
    db: &Db,
    tenant: &Tenant,
    workflow_ids: &[String],
) -> AppResult<Vec<(StepHead, Option<Screenshot>)>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.steps_with_screenshots()
            .filter(steps::workflow_id.eq_any(workflow_ids))
            .order((steps::workflow_id.asc(), steps::step_number.asc()))
            .select((StepHead::columns(), Option::<Screenshot>::columns())),
    )
    .await
}

/// The documents of the given steps, by step id: for lists that loaded only the heads.
pub async fn documents_of(
    db: &Db,
    tenant: &Tenant,
    step_ids: &[String],
) -> AppResult<Vec<(String, StepDocuments)>> {
    let mut tx = db.read(tenant).await?;
    tx.load(
        tx.steps()
            .filter(steps::id.eq_any(step_ids))
            .select((steps::id, StepDocuments::columns())),
    )
    .await
}

/// The steps of one workflow, in order (after a change that renumbered them).
async fn of_workflow<E: Send>(tx: &mut Tx<E>, workflow_id: &str) -> AppResult<Vec<Step>> {
    tx.load(
        tx.steps()
            .filter(steps::workflow_id.eq(workflow_id))
            .order(steps::step_number.asc())
            .select(Step::columns()),
    )
    .await
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
    // Numbered for real inside the unit of work, once the step count is known.
    let row = new.into_row_named("input", tenant, workflow_id, 1, at)?;
    let row = &row;
    db.write(tenant, |tx| {
        added(tx, workflow_id, row, position).into_work()
    })
    .await
}

async fn added(
    tx: &mut Tx<NoEvents>,
    workflow_id: &str,
    row: &Step,
    position: Option<i32>,
) -> AppResult<Step> {
    touch_workflow(tx, workflow_id, now()).await?;
    visibility::require(tx, workflow_id, Need::Edit).await?;
    let count = count_of_workflow(tx, workflow_id).await?;
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
    check_screenshots(tx, row.screenshot_id.as_slice()).await?;
    shift_steps(tx, workflow_id, number, 1).await?;
    let mut row = row.clone();
    row.head.step_number = number;
    tx.insert(&mut row).await?;
    version::changed(tx, workflow_id, format!("added step {number}"));
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

/// An edit of a step, validated.
struct Edit {
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
    let doc = |f: &str, v: Option<Value>| {
        v.map(|v| object_text(&field(f), &v, MAX_STEP_JSON_BYTES))
            .transpose()
    };
    let edit = Edit {
        action_type: changes
            .action_type
            .map(|a| required_name(&field("actionType"), &a, MAX_ACTION_TYPE_CHARS))
            .transpose()?,
        selectors: doc("selectors", changes.selectors)?,
        element_meta: doc("elementMeta", changes.element_meta)?,
        page_context: doc("pageContext", changes.page_context)?,
        action_data: doc("actionData", changes.action_data)?,
        dom_context: doc("domContext", changes.dom_context)?,
        field_label: changes
            .field_label
            .map(|v| optional_text(&field("fieldLabel"), v))
            .transpose()?,
        instruction: changes
            .instruction
            .map(|v| optional_text(&field("instruction"), v))
            .transpose()?,
        ai_confidence: changes
            .ai_confidence
            .map(|v| confidence(&field("aiConfidence"), v))
            .transpose()?,
        ai_model: changes
            .ai_model
            .map(|v| optional_text(&field("aiModel"), v))
            .transpose()?,
        screenshot_id: changes.screenshot_id,
    };
    let edit = &edit;
    db.write(tenant, |tx| edited(tx, editor_id, id, edit).into_work())
        .await
}

async fn edited(tx: &mut Tx<NoEvents>, editor_id: &str, id: &str, edit: &Edit) -> AppResult<Step> {
    touch_workflow_of_step(tx, id).await?;
    let current = load_step(tx, id).await?;
    visibility::require(tx, &current.workflow_id, Need::Edit).await?;
    if let Some(Some(screenshot)) = &edit.screenshot_id {
        check_screenshots(tx, std::slice::from_ref(screenshot)).await?;
    }
    let label_changed = edit
        .field_label
        .as_ref()
        .is_some_and(|l| *l != current.field_label);
    let instruction_changed = edit
        .instruction
        .as_ref()
        .is_some_and(|i| *i != current.instruction);
    let ai_written = current.ai_model.is_some();
    let at = now();
    let edited = label_changed || instruction_changed;
    let patch = StepPatch {
        action_type: edit.action_type.clone(),
        selectors: edit.selectors.clone(),
        element_meta: edit.element_meta.clone(),
        page_context: edit.page_context.clone(),
        action_data: edit.action_data.clone(),
        dom_context: edit.dom_context.clone(),
        field_label: edit.field_label.clone(),
        instruction: edit.instruction.clone(),
        ai_confidence: edit.ai_confidence,
        ai_model: edit.ai_model.clone(),
        screenshot_id: edit.screenshot_id.clone(),
        label_edited: (label_changed && ai_written).then_some(true),
        instruction_edited: (instruction_changed && ai_written).then_some(true),
        edited_by: edited.then(|| Some(editor_id.to_owned())),
        edited_at: edited.then_some(Some(at)),
        updated_at: at,
    };
    let step: Step = tx
        .one(
            tx.steps()
                .filter(steps::id.eq(&current.id))
                .set(&patch)
                .returning(Step::columns()),
        )
        .await?;
    version::changed(
        tx,
        &step.workflow_id,
        format!("edited step {}", step.step_number),
    );
    Ok(step)
}

/// Deletes a step; the steps after it move up so numbering stays 1..n.
pub async fn delete(db: &Db, tenant: &Tenant, id: &str) -> AppResult<()> {
    db.write(tenant, |tx| deleted(tx, id).into_work()).await
}

async fn deleted(tx: &mut Tx<NoEvents>, id: &str) -> AppResult<()> {
    // The workflow first: the number read next cannot change until commit.
    touch_workflow_of_step(tx, id).await?;
    let current = load_step(tx, id).await?;
    visibility::require(tx, &current.workflow_id, Need::Edit).await?;
    tx.execute(tx.steps().filter(steps::id.eq(&current.id)).delete())
        .await?;
    shift_steps(tx, &current.workflow_id, current.step_number + 1, -1).await?;
    version::changed(
        tx,
        &current.workflow_id,
        format!("deleted step {}", current.step_number),
    );
    Ok(())
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
    db.write(tenant, |tx| {
        reordered(tx, workflow_id, step_ids).into_work()
    })
    .await?;
    let mut tx = db.read(tenant).await?;
    of_workflow(&mut tx, workflow_id).await
}

async fn reordered(tx: &mut Tx<NoEvents>, workflow_id: &str, step_ids: &[String]) -> AppResult<()> {
    touch_workflow(tx, workflow_id, now()).await?;
    visibility::require(tx, workflow_id, Need::Edit).await?;
    let mut current: Vec<String> = tx
        .load(
            tx.steps()
                .filter(steps::workflow_id.eq(workflow_id))
                .select(steps::id),
        )
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
    tx.execute(
        tx.steps()
            .filter(steps::workflow_id.eq(workflow_id))
            .set(steps::step_number.eq(steps::step_number + RENUMBER_OFFSET)),
    )
    .await?;
    for (id, number) in step_ids.iter().zip(1..) {
        tx.execute(
            tx.steps()
                .filter(steps::id.eq(id))
                .set(steps::step_number.eq(number)),
        )
        .await?;
    }
    version::changed(tx, workflow_id, "reordered steps");
    Ok(())
}
