//! Workflow versions: the `WorkflowVersion` type (reached through `Workflow.versions`,
//! `Workflow.version` and `Run.version`), the diff between two versions, and restoring
//! one.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::context::ContextExt as _;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::pagination::{CountedConnection, PageArgs, TotalCount, connection};
use super::screenshot::{Screenshot, ScreenshotById};
use super::user::User;
use super::workflow::Workflow;
use crate::domain;
use crate::domain::json::parse;
use crate::domain::version::ORDERING;
use crate::error::AppError;

/// Batch key: version `number` of a workflow (`Run.version` under a list of runs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionOf {
    pub workflow_id: String,
    pub number: i32,
}

impl Loader<VersionOf> for TenantLoader {
    type Value = Arc<domain::version::Version>;
    type Error = LoadError;

    async fn load(&self, keys: &[VersionOf]) -> Result<HashMap<VersionOf, Self::Value>, LoadError> {
        let pairs: Vec<(String, i32)> = keys
            .iter()
            .map(|k| (k.workflow_id.clone(), k.number))
            .collect();
        let rows = domain::version::find_many(&self.db, &self.tenant, &pairs)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|v| {
                let key = VersionOf {
                    workflow_id: v.workflow_id.clone(),
                    number: v.number,
                };
                (key, Arc::new(v))
            })
            .collect())
    }
}

/// Batch key: the steps of a version (already loaded).
#[derive(Debug, Clone)]
pub struct VersionStepsOf(pub Arc<domain::version::Version>);

impl PartialEq for VersionStepsOf {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for VersionStepsOf {}

impl std::hash::Hash for VersionStepsOf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl Loader<VersionStepsOf> for TenantLoader {
    type Value = Vec<domain::version::VersionStep>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[VersionStepsOf],
    ) -> Result<HashMap<VersionStepsOf, Self::Value>, LoadError> {
        let versions: Vec<domain::version::Version> = keys.iter().map(|k| (*k.0).clone()).collect();
        let mut steps = domain::version::steps_of(&self.db, &self.tenant, &versions)
            .await
            .map_err(load_error)?;
        Ok(keys
            .iter()
            .map(|k| (k.clone(), steps.remove(&k.0.id).unwrap_or_default()))
            .collect())
    }
}

/// An immutable version of a workflow's definition.
pub struct WorkflowVersion {
    pub row: Arc<domain::version::Version>,
}

impl WorkflowVersion {
    /// Version `number` of the viewer's workflow, if it exists.
    pub async fn load(
        ctx: &Context<'_>,
        workflow_id: &str,
        number: i32,
    ) -> async_graphql::Result<Option<Self>> {
        let key = VersionOf {
            workflow_id: workflow_id.to_owned(),
            number,
        };
        Ok(ctx.loader()?.load_one(key).await?.map(|row| Self { row }))
    }

    /// The versions of the viewer's workflow, newest first.
    pub async fn of_workflow(
        ctx: &Context<'_>,
        workflow_id: &str,
        args: PageArgs,
    ) -> async_graphql::Result<CountedConnection<Self>> {
        let viewer = ctx.viewer()?;
        let db = ctx.db().clone();
        let request = args.into_request(ORDERING)?;
        let page = domain::version::list(&db, &viewer.tenant, workflow_id, &request).await?;
        let (tenant, workflow_id) = (viewer.tenant.clone(), workflow_id.to_owned());
        let total = TotalCount::new(move || {
            let (db, tenant, workflow_id) = (db.clone(), tenant.clone(), workflow_id.clone());
            async move { domain::version::count(&db, &tenant, &workflow_id).await }
        });
        Ok(connection(
            page,
            ORDERING,
            domain::version::Version::position,
            |row| Self { row: Arc::new(row) },
            total,
        ))
    }
}

/// An immutable version of a workflow's definition: its name, description, tags and
/// steps as they were, who made the change, when, and a short summary of it.
#[Object]
impl WorkflowVersion {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// 1 for the first version, then one more for each change.
    async fn number(&self) -> i32 {
        self.row.number
    }

    /// The workflow it is a version of.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// Who made the change; null for changes made by the server (or once they left).
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let viewer = ctx.viewer()?;
        User::load_opt(ctx, viewer, self.row.created_by.as_deref()).await
    }

    /// When the change was committed.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// What changed, e.g. "edited step 3; changed name".
    async fn summary(&self) -> &str {
        &self.row.summary
    }

    /// The version this one restored, when it was made by `restoreWorkflowVersion`.
    async fn restored_from(&self) -> Option<i32> {
        self.row.restored_from
    }

    /// The workflow's name then.
    async fn name(&self) -> &str {
        &self.row.name
    }

    /// The workflow's description then.
    async fn description(&self) -> Option<&str> {
        self.row.description.as_deref()
    }

    /// The workflow's tags then.
    async fn tags(&self) -> async_graphql::Result<Vec<String>> {
        Ok(self.row.tags()?)
    }

    /// How many steps it had.
    async fn step_count(&self) -> async_graphql::Result<i32> {
        Ok(i32::try_from(self.row.step_refs()?.len()).unwrap_or(i32::MAX))
    }

    /// Its steps then, in order.
    async fn steps(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<VersionStep>> {
        let steps = ctx
            .loader()?
            .load_one(VersionStepsOf(self.row.clone()))
            .await?
            .unwrap_or_default();
        Ok(steps.into_iter().map(|row| VersionStep { row }).collect())
    }
}

/// One step of a workflow version.
pub struct VersionStep {
    pub row: domain::version::VersionStep,
}

/// One step of a workflow version, as it was then.
#[Object]
impl VersionStep {
    /// The step's id (the same step in every version, and in the workflow while it has it).
    async fn step_id(&self) -> ID {
        ID(self.row.step_id.clone())
    }

    /// Its position then, 1..n.
    async fn step_number(&self) -> i32 {
        self.row.number
    }

    /// What the step did.
    async fn action_type(&self) -> &str {
        &self.row.snapshot.action_type
    }

    /// How to find the element.
    async fn selectors(&self) -> async_graphql::Result<Value> {
        Ok(parse("selectors", &self.row.snapshot.selectors)?)
    }

    /// The element's tag, attributes and geometry at recording time.
    async fn element_meta(&self) -> async_graphql::Result<Value> {
        Ok(parse("element_meta", &self.row.snapshot.element_meta)?)
    }

    /// URL, title and viewport of the page.
    async fn page_context(&self) -> async_graphql::Result<Value> {
        Ok(parse("page_context", &self.row.snapshot.page_context)?)
    }

    /// Action parameters.
    async fn action_data(&self) -> async_graphql::Result<Value> {
        Ok(parse("action_data", &self.row.snapshot.action_data)?)
    }

    /// Surrounding DOM.
    async fn dom_context(&self) -> async_graphql::Result<Value> {
        Ok(parse("dom_context", &self.row.snapshot.dom_context)?)
    }

    /// Short label of the field acted on.
    async fn field_label(&self) -> Option<&str> {
        self.row.snapshot.field_label.as_deref()
    }

    /// Human-readable instruction.
    async fn instruction(&self) -> Option<&str> {
        self.row.snapshot.instruction.as_deref()
    }

    /// Confidence of the AI that wrote the label and instruction, 0–1.
    async fn ai_confidence(&self) -> Option<f64> {
        self.row.snapshot.ai_confidence
    }

    /// The model that wrote the label and instruction.
    async fn ai_model(&self) -> Option<&str> {
        self.row.snapshot.ai_model.as_deref()
    }

    /// A person had changed the AI-written label.
    async fn label_edited(&self) -> bool {
        self.row.snapshot.label_edited
    }

    /// A person had changed the AI-written instruction.
    async fn instruction_edited(&self) -> bool {
        self.row.snapshot.instruction_edited
    }

    /// The screenshot the step showed; null when it had none (or it no longer exists).
    async fn screenshot(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Screenshot>> {
        let Some(id) = &self.row.snapshot.screenshot_id else {
            return Ok(None);
        };
        let row = ctx.loader()?.load_one(ScreenshotById(id.clone())).await?;
        Ok(row.map(Screenshot::from))
    }
}

/// How two versions of a workflow differ.
pub struct WorkflowVersionDiff {
    diff: domain::version::VersionDiff,
}

/// How version `to` of a workflow differs from version `from`.
#[Object]
impl WorkflowVersionDiff {
    /// The older side.
    async fn from(&self) -> WorkflowVersion {
        WorkflowVersion {
            row: Arc::new(self.diff.from.clone()),
        }
    }

    /// The newer side.
    async fn to(&self) -> WorkflowVersion {
        WorkflowVersion {
            row: Arc::new(self.diff.to.clone()),
        }
    }

    /// The workflow's own fields that differ: `name`, `description`, `tags`.
    async fn changed_fields(&self) -> Vec<&str> {
        self.diff.changed_fields.clone()
    }

    /// Steps `to` has and `from` had not.
    async fn added(&self) -> Vec<VersionStep> {
        self.diff
            .added
            .iter()
            .map(|row| VersionStep { row: row.clone() })
            .collect()
    }

    /// Steps `from` had and `to` has not.
    async fn removed(&self) -> Vec<VersionStep> {
        self.diff
            .removed
            .iter()
            .map(|row| VersionStep { row: row.clone() })
            .collect()
    }

    /// Steps both have that differ.
    async fn changed(&self) -> Vec<StepDiff> {
        self.diff
            .changed
            .iter()
            .map(|change| StepDiff {
                change: change.clone(),
            })
            .collect()
    }
}

/// A step both versions have, and how it differs.
pub struct StepDiff {
    change: domain::version::StepDiff,
}

/// A step both versions have, and how it differs.
#[Object]
impl StepDiff {
    /// The step's id.
    async fn step_id(&self) -> ID {
        ID(self.change.to.step_id.clone())
    }

    /// The fields that differ, as `VersionStep` names them (`stepNumber` when it moved,
    /// `screenshot` when it shows another one).
    async fn changed_fields(&self) -> Vec<&str> {
        self.change.fields.clone()
    }

    /// The step in the older version.
    async fn from(&self) -> VersionStep {
        VersionStep {
            row: self.change.from.clone(),
        }
    }

    /// The step in the newer version.
    async fn to(&self) -> VersionStep {
        VersionStep {
            row: self.change.to.clone(),
        }
    }
}

#[derive(Default)]
pub struct VersionQuery;

#[Object]
impl VersionQuery {
    /// How version `to` of a workflow differs from version `from` (either may be the
    /// older). NOT_FOUND for a workflow the viewer does not see; BAD_USER_INPUT naming
    /// `from` or `to` for a number the workflow has no version of.
    async fn workflow_version_diff(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
        #[graphql(desc = "The version compared from.")] from: i32,
        #[graphql(desc = "The version compared to.")] to: i32,
    ) -> async_graphql::Result<Option<WorkflowVersionDiff>> {
        let viewer = ctx.viewer()?;
        // Its existence first: an unknown workflow is NOT_FOUND whatever the numbers.
        Workflow::load(ctx, &workflow_id).await?;
        let diff = domain::version::diff(ctx.db(), &viewer.tenant, &workflow_id, from, to).await?;
        Ok(Some(WorkflowVersionDiff { diff }))
    }
}

#[derive(Default)]
pub struct VersionMutation;

#[Object]
impl VersionMutation {
    /// Restores a version: the workflow's name, description, tags and steps become what
    /// they were then, recorded as a new version (runs keep the version they ran;
    /// screenshots stay and are shown again). Needs EDIT on the workflow.
    async fn restore_workflow_version(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
        #[graphql(desc = "The version to restore.")] number: i32,
    ) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        Workflow::load(ctx, &workflow_id).await?;
        let row = domain::version::restore(ctx.db(), &viewer.tenant, &workflow_id, number)
            .await
            .map_err(|error| match error {
                AppError::NotFound("version") => AppError::bad_input(
                    "number",
                    format!("number: this workflow has no version {number}"),
                ),
                other => other,
            })?;
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }
}
