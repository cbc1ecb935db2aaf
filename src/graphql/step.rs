//! Steps: one step with its screenshot and edit history, and the mutations that add, edit,
//! delete and reorder them.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::parser::types::Field;
use async_graphql::{
    Context, ContextSelectionSet, ID, InputObject, MaybeUndefined, Object, Positioned,
    Value as GraphQLValue,
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::context::ContextExt as _;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::plain_list::{PlainObject, optional, optional_str, plain_object, scalar};
use super::screenshot::{Screenshot, ScreenshotById};
use super::user::{User, UserById};
use super::workflow::Workflow;
use crate::domain;
use crate::domain::json::parse;
use crate::domain::step::{NewStep, StepChanges, StepDocuments, StepHead};
use crate::error::AppError;

/// A step as recorded. JSON documents must be objects (up to 64 KiB each) and default to `{}`.
#[derive(InputObject)]
pub struct StepInput {
    /// What the step does: `click`, `type`, `navigate`, `select`, ... (1–50 characters).
    pub action_type: String,
    /// How to find the element (CSS, XPath, text, ...).
    pub selectors: Option<Value>,
    /// The element's tag, attributes and geometry at recording time.
    pub element_meta: Option<Value>,
    /// URL, title and viewport of the page.
    pub page_context: Option<Value>,
    /// Action parameters, e.g. the typed value.
    pub action_data: Option<Value>,
    /// Surrounding DOM, for healing.
    pub dom_context: Option<Value>,
    /// Short label of the field acted on.
    pub field_label: Option<String>,
    /// Human-readable instruction.
    pub instruction: Option<String>,
    /// Confidence of the AI that wrote the label and instruction, 0–1.
    pub ai_confidence: Option<f64>,
    /// The model that wrote the label and instruction.
    pub ai_model: Option<String>,
    /// A screenshot of this company to show with the step.
    pub screenshot_id: Option<ID>,
}

impl StepInput {
    pub fn into_domain(self) -> NewStep {
        NewStep {
            action_type: self.action_type,
            selectors: self.selectors,
            element_meta: self.element_meta,
            page_context: self.page_context,
            action_data: self.action_data,
            dom_context: self.dom_context,
            field_label: self.field_label,
            instruction: self.instruction,
            ai_confidence: self.ai_confidence,
            ai_model: self.ai_model,
            screenshot_id: self.screenshot_id.map(|id| id.0),
        }
    }
}

/// An edit of a step; omitted fields stay as they are, explicit nulls clear nullable ones.
#[derive(InputObject)]
pub struct UpdateStepInput {
    /// What the step does.
    pub action_type: Option<String>,
    /// How to find the element.
    pub selectors: Option<Value>,
    /// The element's tag, attributes and geometry.
    pub element_meta: Option<Value>,
    /// URL, title and viewport of the page.
    pub page_context: Option<Value>,
    /// Action parameters.
    pub action_data: Option<Value>,
    /// Surrounding DOM.
    pub dom_context: Option<Value>,
    /// Short label of the field acted on.
    pub field_label: MaybeUndefined<String>,
    /// Human-readable instruction.
    pub instruction: MaybeUndefined<String>,
    /// AI confidence, 0–1.
    pub ai_confidence: MaybeUndefined<f64>,
    /// The model that wrote the text.
    pub ai_model: MaybeUndefined<String>,
    /// The screenshot to show with the step.
    pub screenshot_id: MaybeUndefined<ID>,
}

fn change<T>(value: MaybeUndefined<T>) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => Some(Some(v)),
    }
}

impl UpdateStepInput {
    fn into_domain(self) -> StepChanges {
        StepChanges {
            action_type: self.action_type,
            selectors: self.selectors,
            element_meta: self.element_meta,
            page_context: self.page_context,
            action_data: self.action_data,
            dom_context: self.dom_context,
            field_label: change(self.field_label),
            instruction: change(self.instruction),
            ai_confidence: change(self.ai_confidence),
            ai_model: change(self.ai_model),
            screenshot_id: change(self.screenshot_id).map(|id| id.map(|id| id.0)),
        }
    }
}

/// Batch key: a step by id, within the viewer's company.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepById(pub String);

impl Loader<StepById> for TenantLoader {
    type Value = Step;
    type Error = LoadError;

    async fn load(&self, keys: &[StepById]) -> Result<HashMap<StepById, Self::Value>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::step::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|s| (StepById(s.id.clone()), s.into()))
            .collect())
    }
}

/// Batch key: all steps of a workflow, in order, without their documents (see
/// [`StepDocumentsOf`]). `with_screenshots` asks for each step's screenshot in the same
/// statement (the caller looked ahead and saw it selected).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepsOfWorkflow {
    pub workflow_id: String,
    pub with_screenshots: bool,
}

impl Loader<StepsOfWorkflow> for TenantLoader {
    type Value = Vec<Step>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[StepsOfWorkflow],
    ) -> Result<HashMap<StepsOfWorkflow, Self::Value>, Self::Error> {
        let mut ids: Vec<String> = keys.iter().map(|k| k.workflow_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        // One statement for the whole batch: if any key wants screenshots, all get them.
        let steps: Vec<Step> = if keys.iter().any(|k| k.with_screenshots) {
            domain::step::heads_of_workflows_with_screenshots(&self.db, &self.tenant, &ids)
                .await
                .map_err(load_error)?
                .into_iter()
                .map(|(head, screenshot)| Step {
                    screenshot: Some(screenshot.map(Screenshot::from)),
                    ..Step::without_documents(head)
                })
                .collect()
        } else {
            domain::step::heads_of_workflows(&self.db, &self.tenant, &ids)
                .await
                .map_err(load_error)?
                .into_iter()
                .map(Step::without_documents)
                .collect()
        };
        let mut by_workflow: HashMap<&str, Vec<Step>> = HashMap::with_capacity(ids.len());
        for step in &steps {
            by_workflow
                .entry(step.row.workflow_id.as_str())
                .or_default()
                .push(step.clone());
        }
        Ok(keys
            .iter()
            .map(|key| {
                let steps = by_workflow
                    .get(key.workflow_id.as_str())
                    .cloned()
                    .unwrap_or_default();
                (key.clone(), steps)
            })
            .collect())
    }
}

/// Batch key: the JSON documents of a step loaded without them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StepDocumentsOf(pub String);

impl Loader<StepDocumentsOf> for TenantLoader {
    type Value = Arc<StepDocuments>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[StepDocumentsOf],
    ) -> Result<HashMap<StepDocumentsOf, Self::Value>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::step::documents_of(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|(id, documents)| (StepDocumentsOf(id), Arc::new(documents)))
            .collect())
    }
}

/// The GraphQL fields of [`Step`] read from its documents.
const DOCUMENT_FIELDS: [&str; 6] = [
    "selectors",
    "elementMeta",
    "pageContext",
    "actionData",
    "domContext",
    "healedSelectors",
];

/// One action of a workflow. Parts are shared (`Arc`): the batch loader hands the same
/// steps to every resolver that asked, without copying them.
#[derive(Clone)]
pub struct Step {
    pub row: Arc<StepHead>,
    /// `None` when the step came from a list, which loads documents only when asked.
    documents: Option<Arc<StepDocuments>>,
    /// `Some` when the step was loaded together with its screenshot (see
    /// [`StepsOfWorkflow`]), so `screenshot` resolves without another lookup.
    screenshot: Option<Option<Screenshot>>,
}

impl From<domain::step::Step> for Step {
    fn from(row: domain::step::Step) -> Self {
        Self {
            row: Arc::new(row.head),
            documents: Some(Arc::new(row.documents)),
            screenshot: None,
        }
    }
}

impl Step {
    fn without_documents(head: StepHead) -> Self {
        Self {
            row: Arc::new(head),
            documents: None,
            screenshot: None,
        }
    }

    async fn load(ctx: &Context<'_>, id: &str) -> async_graphql::Result<Self> {
        Ok(Self::load_optional(ctx, Some(id))
            .await?
            .ok_or(AppError::NotFound("step"))?)
    }

    /// A step that may have been deleted since it was referenced (a run's current step, a
    /// health log's step): null then, not an error.
    pub async fn load_optional(
        ctx: &Context<'_>,
        id: Option<&str>,
    ) -> async_graphql::Result<Option<Self>> {
        let Some(id) = id else {
            return Ok(None);
        };
        ctx.loader()?.load_one(StepById(id.to_owned())).await
    }

    /// The steps of a workflow for `Workflow.steps`. Looks ahead at what the query selects:
    /// screenshots are joined into the steps' statement, and documents, when selected, are
    /// fetched for the whole list at once rather than step by step.
    pub async fn of_workflow(
        ctx: &Context<'_>,
        workflow_id: &str,
    ) -> async_graphql::Result<Vec<Self>> {
        let selection = ctx.look_ahead();
        let key = StepsOfWorkflow {
            workflow_id: workflow_id.to_owned(),
            with_screenshots: selection.field("screenshot").exists(),
        };
        let loader = ctx.loader()?;
        let mut steps = loader.load_one(key).await?.unwrap_or_default();
        if DOCUMENT_FIELDS.iter().any(|f| selection.field(f).exists()) {
            let mut documents = loader
                .load_many(steps.iter().map(|s| StepDocumentsOf(s.row.id.clone())))
                .await?;
            for step in &mut steps {
                step.documents = documents.remove(&StepDocumentsOf(step.row.id.clone()));
            }
        }
        Ok(steps)
    }

    async fn documents(&self, ctx: &Context<'_>) -> async_graphql::Result<Arc<StepDocuments>> {
        if let Some(documents) = &self.documents {
            return Ok(documents.clone());
        }
        // Deleted between the list's statement and this one.
        Ok(ctx
            .loader()?
            .load_one(StepDocumentsOf(self.row.id.clone()))
            .await?
            .ok_or(AppError::NotFound("step"))?)
    }
}

/// The fields of a step read from its head (and its screenshot, when the list loaded it
/// joined): what `Workflow.steps` answers in one pass. Each arm answers exactly what the
/// resolver of the same name below does.
impl PlainObject for Step {
    fn plain_field<'a>(
        &self,
        ctx: &ContextSelectionSet<'a>,
        field: &'a Positioned<Field>,
    ) -> Option<GraphQLValue> {
        let row = &*self.row;
        let at = |t: &chrono::NaiveDateTime| t.and_utc();
        Some(match field.node.name.node.as_str() {
            "id" => GraphQLValue::String(row.id.clone()),
            "stepNumber" => scalar(&row.step_number),
            "actionType" => GraphQLValue::String(row.action_type.clone()),
            "fieldLabel" => optional_str(row.field_label.as_deref()),
            "instruction" => optional_str(row.instruction.as_deref()),
            "aiConfidence" => optional(row.ai_confidence.as_ref()),
            "aiModel" => optional_str(row.ai_model.as_deref()),
            "labelEdited" => scalar(&row.label_edited),
            "instructionEdited" => scalar(&row.instruction_edited),
            "editedAt" => optional(row.edited_at.as_ref().map(at).as_ref()),
            "healedAt" => optional(row.healed_at.as_ref().map(at).as_ref()),
            "healingConfidence" => optional(row.healing_confidence.as_ref()),
            "healingMethod" => optional_str(row.healing_method.as_deref()),
            "createdAt" => scalar(&at(&row.created_at)),
            "updatedAt" => scalar(&at(&row.updated_at)),
            // Only when loaded with the list; otherwise it is a lookup.
            "screenshot" => match self.screenshot.as_ref()? {
                None => GraphQLValue::Null,
                Some(screenshot) => plain_object(
                    screenshot,
                    &ctx.with_selection_set(&field.node.selection_set),
                )?,
            },
            _ => return None,
        })
    }
}

// The fields `PlainObject for Step` answers (above) bypass these resolvers inside a step
// list: giving one of them a guard, arguments or a lookup means removing its arm there.
/// One action of a workflow: what to do, where, and what the AI and people said about it.
#[Object]
impl Step {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow this step belongs to.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// Position in the workflow, 1..n without gaps.
    async fn step_number(&self) -> i32 {
        self.row.step_number
    }

    /// What the step does: `click`, `type`, `navigate`, ...
    async fn action_type(&self) -> &str {
        &self.row.action_type
    }

    /// How to find the element.
    async fn selectors(&self, ctx: &Context<'_>) -> async_graphql::Result<Value> {
        Ok(parse("selectors", &self.documents(ctx).await?.selectors)?)
    }

    /// The element's tag, attributes and geometry at recording time.
    async fn element_meta(&self, ctx: &Context<'_>) -> async_graphql::Result<Value> {
        Ok(parse(
            "element_meta",
            &self.documents(ctx).await?.element_meta,
        )?)
    }

    /// URL, title and viewport of the page.
    async fn page_context(&self, ctx: &Context<'_>) -> async_graphql::Result<Value> {
        Ok(parse(
            "page_context",
            &self.documents(ctx).await?.page_context,
        )?)
    }

    /// Action parameters, e.g. the typed value.
    async fn action_data(&self, ctx: &Context<'_>) -> async_graphql::Result<Value> {
        Ok(parse(
            "action_data",
            &self.documents(ctx).await?.action_data,
        )?)
    }

    /// Surrounding DOM, for healing.
    async fn dom_context(&self, ctx: &Context<'_>) -> async_graphql::Result<Value> {
        Ok(parse(
            "dom_context",
            &self.documents(ctx).await?.dom_context,
        )?)
    }

    /// The screenshot shown with the step.
    async fn screenshot(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Screenshot>> {
        if let Some(loaded) = &self.screenshot {
            return Ok(loaded.clone());
        }
        let Some(id) = &self.row.screenshot_id else {
            return Ok(None);
        };
        let row = ctx.loader()?.load_one(ScreenshotById(id.clone())).await?;
        Ok(row.map(Screenshot::from))
    }

    /// Short label of the field acted on.
    async fn field_label(&self) -> Option<&str> {
        self.row.field_label.as_deref()
    }

    /// Human-readable instruction.
    async fn instruction(&self) -> Option<&str> {
        self.row.instruction.as_deref()
    }

    /// Confidence of the AI that wrote the label and instruction, 0–1.
    async fn ai_confidence(&self) -> Option<f64> {
        self.row.ai_confidence
    }

    /// The model that wrote the label and instruction.
    async fn ai_model(&self) -> Option<&str> {
        self.row.ai_model.as_deref()
    }

    /// A person changed the AI-written label; regeneration leaves it alone.
    async fn label_edited(&self) -> bool {
        self.row.label_edited
    }

    /// A person changed the AI-written instruction; regeneration leaves it alone.
    async fn instruction_edited(&self) -> bool {
        self.row.instruction_edited
    }

    /// Who last changed the label or instruction; null once they left the company.
    async fn edited_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let Some(id) = &self.row.edited_by else {
            return Ok(None);
        };
        let viewer = ctx.viewer()?;
        let row = ctx.loader()?.load_one(UserById(id.clone())).await?;
        Ok(row.map(|row| User {
            row,
            viewer: viewer.clone(),
        }))
    }

    /// When a person last changed the label or instruction.
    async fn edited_at(&self) -> Option<DateTime<Utc>> {
        self.row.edited_at.map(|t| t.and_utc())
    }

    /// Selectors found by self-healing after the recorded ones stopped matching.
    async fn healed_selectors(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Value>> {
        Ok(self
            .documents(ctx)
            .await?
            .healed_selectors
            .as_deref()
            .map(|s| parse("healed_selectors", s))
            .transpose()?)
    }

    /// When the step was last healed.
    async fn healed_at(&self) -> Option<DateTime<Utc>> {
        self.row.healed_at.map(|t| t.and_utc())
    }

    /// Confidence of the last healing, 0–1.
    async fn healing_confidence(&self) -> Option<f64> {
        self.row.healing_confidence
    }

    /// How the step was last healed (`deterministic` or `ai`).
    async fn healing_method(&self) -> Option<&str> {
        self.row.healing_method.as_deref()
    }

    /// When the step was recorded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When the step last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }
}

#[derive(Default)]
pub struct StepQuery;

#[Object]
impl StepQuery {
    /// One step of the company; null with NOT_FOUND if there is none with this id.
    async fn step(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Step>> {
        Step::load(ctx, &id).await.map(Some)
    }
}

#[derive(Default)]
pub struct StepMutation;

#[Object]
impl StepMutation {
    /// Adds a step to a workflow.
    async fn add_step(
        &self,
        ctx: &Context<'_>,
        workflow_id: ID,
        input: StepInput,
        #[graphql(
            desc = "1-based step number to insert at; later steps move down. Default: after the last."
        )]
        position: Option<i32>,
    ) -> async_graphql::Result<Step> {
        let viewer = ctx.viewer()?;
        let row = domain::step::add(
            ctx.db(),
            &viewer.tenant,
            &workflow_id,
            input.into_domain(),
            position,
        )
        .await?;
        Ok(row.into())
    }

    /// Edits a step. Changing the label or instruction records who did it and when.
    async fn update_step(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateStepInput,
    ) -> async_graphql::Result<Step> {
        let viewer = ctx.viewer()?;
        let db = ctx.db();
        let row = domain::step::update(
            db,
            &viewer.tenant,
            viewer.member_id()?,
            &id,
            input.into_domain(),
        )
        .await?;
        Ok(row.into())
    }

    /// Deletes a step; later steps move up. Returns the deleted id.
    async fn delete_step(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let viewer = ctx.viewer()?;
        domain::step::delete(ctx.db(), &viewer.tenant, &id).await?;
        Ok(id)
    }

    /// Puts a workflow's steps in the given order (every step exactly once) and returns
    /// them renumbered 1..n.
    async fn reorder_steps(
        &self,
        ctx: &Context<'_>,
        workflow_id: ID,
        step_ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<Step>> {
        let viewer = ctx.viewer()?;
        let ids: Vec<String> = step_ids.into_iter().map(|id| id.0).collect();
        let rows = domain::step::reorder(ctx.db(), &viewer.tenant, &workflow_id, &ids).await?;
        Ok(rows.into_iter().map(Step::from).collect())
    }
}
