//! Templates: publishing a workflow version with typed parameters, the catalogue of the
//! company's and every company's PUBLIC templates, instantiating, rating, unpublishing.
//!
//! A template of another company shows what the template itself holds and nothing of its
//! publisher: `createdBy`, `sourceWorkflow` and `sourceVersion` are null there, and its
//! screenshots (when included) are copies with ids of their own.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::context::ContextExt as _;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::pagination::{CountedConnection, PageArgs, TotalCount, connection};
use super::user::User;
use super::workflow::{Workflow, WorkflowById};
use crate::domain;
use crate::domain::template::parameters::{ParameterInput, ParameterType};
use crate::domain::template::{Instantiation, ORDERING, Publication, Scope};
use crate::error::AppError;

/// Who may read and use a template.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "domain::template::TemplateVisibility")]
pub enum TemplateVisibility {
    /// The publisher's company.
    Company,
    /// Every company: the template is in the public catalogue.
    Public,
}

/// What a template parameter's value is.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "ParameterType")]
pub enum TemplateParameterType {
    /// Text (at most 4 KiB).
    String,
    /// A JSON number.
    Number,
    /// true or false.
    Boolean,
    /// Text never shown back: it has no default, and clients should mask it.
    Secret,
}

/// Which templates a list shows.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TemplateScope {
    /// The company's own templates and the public catalogue.
    #[default]
    All,
    /// Only the company's own templates (any visibility, published or not).
    Company,
    /// Only the public catalogue: published PUBLIC templates of every company.
    Catalogue,
}

/// Which templates to list. Every condition given must hold.
#[derive(InputObject, Debug, Clone, Default)]
pub struct TemplateFilter {
    /// Own templates, the catalogue, or both (default).
    pub scope: Option<TemplateScope>,
    /// Name contains this text, ignoring case.
    pub search: Option<String>,
    /// Carries this tag.
    pub tag: Option<String>,
}

/// A parameter a template declares.
#[derive(InputObject, Debug, Clone)]
pub struct TemplateParameterInput {
    /// The name its placeholders use (`{{name}}`): 1–64 letters, digits or `_`, not
    /// starting with a digit.
    pub name: String,
    /// What its value is.
    #[graphql(name = "type")]
    pub kind: TemplateParameterType,
    /// What to enter, for the person instantiating (up to 500 characters).
    pub description: Option<String>,
    /// The value used when none is given (not for SECRET or required parameters).
    pub default: Option<Value>,
    /// Whether a value must be given.
    #[graphql(default = false)]
    pub required: bool,
}

/// A parameter a template declares.
#[derive(SimpleObject)]
pub struct TemplateParameter {
    /// The name its placeholders use (`{{name}}`).
    name: String,
    /// What its value is.
    #[graphql(name = "type")]
    kind: TemplateParameterType,
    /// What to enter.
    description: Option<String>,
    /// The value used when none is given.
    default: Option<Value>,
    /// Whether a value must be given.
    required: bool,
}

/// Batch key: a template's steps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateStepsOf(pub String);

impl Loader<TemplateStepsOf> for TenantLoader {
    type Value = Vec<domain::template::TemplateStep>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[TemplateStepsOf],
    ) -> Result<HashMap<TemplateStepsOf, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let steps = domain::template::steps_of(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(steps
            .into_iter()
            .map(|(id, steps)| (TemplateStepsOf(id), steps))
            .collect())
    }
}

/// Batch key: a template's ratings (average and count).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RatingsOf(pub String);

impl Loader<RatingsOf> for TenantLoader {
    type Value = (f64, i64);
    type Error = LoadError;

    async fn load(&self, keys: &[RatingsOf]) -> Result<HashMap<RatingsOf, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let ratings = domain::template::ratings_of(&self.db, &ids)
            .await
            .map_err(load_error)?;
        Ok(ratings
            .into_iter()
            .map(|(id, rating)| (RatingsOf(id), rating))
            .collect())
    }
}

/// Batch key: the viewer's own rating of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MyRatingOf(pub String);

impl Loader<MyRatingOf> for TenantLoader {
    type Value = i32;
    type Error = LoadError;

    async fn load(&self, keys: &[MyRatingOf]) -> Result<HashMap<MyRatingOf, i32>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let ratings = domain::template::my_ratings(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(ratings
            .into_iter()
            .map(|(id, stars)| (MyRatingOf(id), stars))
            .collect())
    }
}

/// Batch key: a screenshot a template the viewer may read includes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateScreenshotById(pub String);

impl Loader<TemplateScreenshotById> for TenantLoader {
    type Value = domain::template::TemplateScreenshot;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[TemplateScreenshotById],
    ) -> Result<HashMap<TemplateScreenshotById, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::template::screenshots_of(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (TemplateScreenshotById(row.id.clone()), row))
            .collect())
    }
}

/// A reusable workflow definition with typed parameters.
pub struct WorkflowTemplate {
    pub row: Arc<domain::template::Template>,
}

impl WorkflowTemplate {
    fn own(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        Ok(self.row.is_own(&ctx.viewer()?.tenant))
    }
}

/// A reusable workflow definition with typed parameters, published from a workflow
/// version to the company or to every company.
#[Object]
impl WorkflowTemplate {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// Display name.
    async fn name(&self) -> &str {
        &self.row.name
    }

    /// What the template does.
    async fn description(&self) -> Option<&str> {
        self.row.description.as_deref()
    }

    /// Lower-cased tags.
    async fn tags(&self) -> async_graphql::Result<Vec<String>> {
        Ok(self.row.tags()?)
    }

    /// Who may read and use it.
    async fn visibility(&self) -> TemplateVisibility {
        self.row.visibility.into()
    }

    /// False once unpublished: it is then out of the catalogue and cannot be used.
    async fn published(&self) -> bool {
        self.row.published
    }

    /// Whether the viewer's company published it.
    async fn is_own(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        self.own(ctx)
    }

    /// The parameters its placeholders take.
    async fn parameters(&self) -> async_graphql::Result<Vec<TemplateParameter>> {
        Ok(self
            .row
            .parameters()?
            .into_iter()
            .map(|p| TemplateParameter {
                kind: p.kind().into(),
                name: p.name,
                description: p.description,
                default: p.default,
                required: p.required,
            })
            .collect())
    }

    /// How many steps it has.
    async fn step_count(&self) -> i32 {
        self.row.step_count
    }

    /// Its steps, with their `{{placeholders}}`.
    async fn steps(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TemplateStep>> {
        let steps = ctx
            .loader()?
            .load_one(TemplateStepsOf(self.row.id.clone()))
            .await?
            .unwrap_or_default();
        Ok(steps
            .into_iter()
            .zip(1..)
            .map(|(step, number)| TemplateStep { step, number })
            .collect())
    }

    /// Whether the publisher included the steps' screenshots.
    async fn includes_screenshots(&self) -> bool {
        self.row.includes_screenshots
    }

    /// How many workflows were made from it.
    async fn usage_count(&self) -> i64 {
        self.row.usage_count
    }

    /// Average rating (1–5 stars); null before the first.
    async fn rating_average(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<f64>> {
        let rating = ctx
            .loader()?
            .load_one(RatingsOf(self.row.id.clone()))
            .await?;
        Ok(rating.map(|(average, _)| average))
    }

    /// How many members rated it.
    async fn rating_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let rating = ctx
            .loader()?
            .load_one(RatingsOf(self.row.id.clone()))
            .await?;
        Ok(rating.map_or(0, |(_, count)| count))
    }

    /// The viewer's own rating; null if they did not rate it.
    async fn viewer_rating(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i32>> {
        ctx.loader()?
            .load_one(MyRatingOf(self.row.id.clone()))
            .await
    }

    /// When it was published.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When it last changed (unpublished).
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }

    /// Who published it; null for another company's template (or once they left).
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        if !self.own(ctx)? {
            return Ok(None);
        }
        let viewer = ctx.viewer()?;
        User::load_opt(ctx, viewer, self.row.created_by.as_deref()).await
    }

    /// The workflow it was published from; null for another company's template, or when
    /// that workflow is gone or not visible to the viewer.
    async fn source_workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Workflow>> {
        if !self.own(ctx)? {
            return Ok(None);
        }
        let Some(id) = &self.row.source_workflow_id else {
            return Ok(None);
        };
        let viewer = ctx.viewer()?;
        let row = ctx.loader()?.load_one(WorkflowById(id.clone())).await?;
        Ok(row.map(|row| Workflow {
            row,
            viewer: viewer.clone(),
        }))
    }

    /// The version of that workflow it snapshots; null whenever `sourceWorkflow` is.
    async fn source_version(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i32>> {
        if !self.own(ctx)? {
            return Ok(None);
        }
        let Some(id) = &self.row.source_workflow_id else {
            return Ok(None);
        };
        let visible = ctx.loader()?.load_one(WorkflowById(id.clone())).await?;
        Ok(self.row.source_version.filter(|_| visible.is_some()))
    }
}

/// One step of a template.
pub struct TemplateStep {
    step: domain::template::TemplateStep,
    number: i32,
}

/// One step of a template, with its `{{placeholders}}`.
#[Object]
impl TemplateStep {
    /// Position, 1..n.
    async fn step_number(&self) -> i32 {
        self.number
    }

    /// What the step does.
    async fn action_type(&self) -> &str {
        &self.step.action_type
    }

    /// Short label of the field acted on.
    async fn field_label(&self) -> Option<&str> {
        self.step.field_label.as_deref()
    }

    /// Human-readable instruction.
    async fn instruction(&self) -> Option<&str> {
        self.step.instruction.as_deref()
    }

    /// Confidence of the AI that wrote the label and instruction, 0–1.
    async fn ai_confidence(&self) -> Option<f64> {
        self.step.ai_confidence
    }

    /// The model that wrote the label and instruction.
    async fn ai_model(&self) -> Option<&str> {
        self.step.ai_model.as_deref()
    }

    /// How to find the element.
    async fn selectors(&self) -> &Value {
        &self.step.selectors
    }

    /// The element's tag, attributes and geometry at recording time.
    async fn element_meta(&self) -> &Value {
        &self.step.element_meta
    }

    /// URL, title and viewport of the page.
    async fn page_context(&self) -> &Value {
        &self.step.page_context
    }

    /// Action parameters.
    async fn action_data(&self) -> &Value {
        &self.step.action_data
    }

    /// Surrounding DOM.
    async fn dom_context(&self) -> &Value {
        &self.step.dom_context
    }

    /// The step's screenshot, when the publisher included screenshots.
    async fn screenshot(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<TemplateScreenshot>> {
        let Some(id) = &self.step.screenshot else {
            return Ok(None);
        };
        let row = ctx
            .loader()?
            .load_one(TemplateScreenshotById(id.clone()))
            .await?;
        Ok(row.map(|row| TemplateScreenshot { row }))
    }
}

/// A screenshot a template includes, served through a short-lived signed URL.
pub struct TemplateScreenshot {
    pub row: domain::template::TemplateScreenshot,
}

/// A screenshot a template includes (a copy with an id of its own), served through a
/// short-lived signed URL.
#[Object]
impl TemplateScreenshot {
    /// Stable identifier (the template's own, not the publisher's screenshot's).
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// `image/png`, `image/jpeg` or `image/webp`.
    async fn content_type(&self) -> &str {
        &self.row.content_type
    }

    /// Width in pixels.
    async fn width(&self) -> i32 {
        self.row.width
    }

    /// Height in pixels.
    async fn height(&self) -> i32 {
        self.row.height
    }

    /// A signed URL serving the image for a few minutes (ask again rather than store it).
    async fn url(&self, ctx: &Context<'_>) -> String {
        super::screenshot::signed_url(ctx, &self.row.company_id, &self.row.id)
    }
}

#[derive(Default)]
pub struct TemplateQuery;

#[Object]
impl TemplateQuery {
    /// The company's templates and the public catalogue (published PUBLIC templates of
    /// every company), newest first, filtered by scope, name and tag.
    #[graphql(complexity = "super::pagination::page_complexity(first, last, child_complexity)")]
    async fn templates(
        &self,
        ctx: &Context<'_>,
        filter: Option<TemplateFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<CountedConnection<WorkflowTemplate>> {
        let viewer = ctx.viewer()?.clone();
        let db = ctx.db().clone();
        let filter = filter.unwrap_or_default();
        let filter = domain::template::TemplateFilter {
            scope: match filter.scope.unwrap_or_default() {
                TemplateScope::All => Scope::All,
                TemplateScope::Company => Scope::Company,
                TemplateScope::Catalogue => Scope::Catalogue,
            },
            search: filter.search,
            tag: filter.tag,
        };
        let request = PageArgs {
            first,
            after,
            last,
            before,
        }
        .into_request(ORDERING)?;
        let page = domain::template::catalogue(&db, &viewer.tenant, &filter, &request).await?;
        let tenant = viewer.tenant.clone();
        let total = TotalCount::new(move || {
            let (db, tenant, filter) = (db.clone(), tenant.clone(), filter.clone());
            async move { domain::template::count(&db, &tenant, &filter).await }
        });
        Ok(connection(
            page,
            ORDERING,
            domain::template::Template::position,
            |row| WorkflowTemplate { row: Arc::new(row) },
            total,
        ))
    }

    /// A template of the company or of the public catalogue; null with NOT_FOUND for
    /// anything else (another company's COMPANY or unpublished template included).
    async fn template(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<WorkflowTemplate>> {
        let viewer = ctx.viewer()?;
        let row = domain::template::find(ctx.db(), &viewer.tenant, &id).await?;
        Ok(Some(WorkflowTemplate { row: Arc::new(row) }))
    }
}

#[derive(Default)]
pub struct TemplateMutation;

#[Object]
impl TemplateMutation {
    /// Publishes a version of a workflow (default: its newest) as a template. Every
    /// `{{placeholder}}` in its step texts and documents must be a declared parameter. A
    /// COMPANY template needs EDIT on the workflow; a PUBLIC one (the catalogue of every
    /// company) needs to be an admin or the workflow's creator.
    #[allow(clippy::too_many_arguments)]
    async fn publish_template(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow to publish.")] workflow_id: ID,
        #[graphql(desc = "1–200 characters.")] name: String,
        #[graphql(desc = "Up to 5,000 characters.")] description: Option<String>,
        #[graphql(desc = "Its parameters (at most 50).")] parameters: Option<
            Vec<TemplateParameterInput>,
        >,
        #[graphql(desc = "Who may read and use it.")] visibility: TemplateVisibility,
        #[graphql(desc = "Up to 20 tags.")] tags: Option<Vec<String>>,
        #[graphql(desc = "The workflow version to publish; its newest when absent.")]
        version: Option<i32>,
        #[graphql(
            desc = "Include the steps' screenshots (copies, served through their own signed URLs); false by default."
        )]
        include_screenshots: Option<bool>,
    ) -> async_graphql::Result<WorkflowTemplate> {
        let viewer = ctx.viewer()?;
        let parameters = parameters.unwrap_or_default();
        // Bounded before anything is done per parameter.
        if parameters.len() > domain::template::parameters::MAX_PARAMETERS {
            return Err(AppError::bad_input(
                "parameters",
                format!(
                    "a template has at most {} parameters",
                    domain::template::parameters::MAX_PARAMETERS
                ),
            )
            .into());
        }
        let publication = Publication {
            workflow_id: workflow_id.0,
            version,
            name,
            description,
            tags: tags.unwrap_or_default(),
            parameters: parameters
                .into_iter()
                .map(|p| ParameterInput {
                    name: p.name,
                    kind: p.kind.into(),
                    description: p.description,
                    default: p.default,
                    required: p.required,
                })
                .collect(),
            visibility: visibility.into(),
            include_screenshots: include_screenshots.unwrap_or(false),
        };
        let row = domain::template::publish(ctx.db(), &viewer.tenant, publication).await?;
        Ok(WorkflowTemplate { row: Arc::new(row) })
    }

    /// Creates a new DRAFT workflow in the viewer's company from a template of the company
    /// or of the catalogue, with the parameter values substituted (`parameters`: a JSON
    /// object of name → value). A missing required value or one of the wrong type is
    /// BAD_USER_INPUT naming the parameter (`parameters.<name>`).
    async fn instantiate_template(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The template.")] template_id: ID,
        #[graphql(desc = "Parameter values by name.")] parameters: Option<Value>,
        #[graphql(desc = "The new workflow's name; the template's when absent.")] name: Option<
            String,
        >,
        #[graphql(desc = "A project of the company to put it in.")] project_id: Option<ID>,
    ) -> async_graphql::Result<Workflow> {
        let viewer = ctx.viewer()?;
        let row = domain::template::instantiate(
            ctx.db(),
            &viewer.tenant,
            Instantiation {
                template_id: template_id.0,
                parameters,
                name,
                project_id: project_id.map(|id| id.0),
            },
        )
        .await?;
        Ok(Workflow {
            row,
            viewer: viewer.clone(),
        })
    }

    /// Rates a template the viewer may read, 1–5 stars (again: replaces their rating).
    async fn rate_template(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The template.")] template_id: ID,
        #[graphql(desc = "1 to 5.")] stars: i32,
    ) -> async_graphql::Result<WorkflowTemplate> {
        let viewer = ctx.viewer()?;
        let row = domain::template::rate(ctx.db(), &viewer.tenant, &template_id, stars).await?;
        Ok(WorkflowTemplate { row: Arc::new(row) })
    }

    /// Takes one of the company's templates out of the catalogue and out of use. Admins
    /// and its publisher only.
    async fn unpublish_template(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The template.")] id: ID,
    ) -> async_graphql::Result<WorkflowTemplate> {
        let viewer = ctx.viewer()?;
        let row = domain::template::unpublish(ctx.db(), &viewer.tenant, &id).await?;
        Ok(WorkflowTemplate { row: Arc::new(row) })
    }

    /// Deletes one of the company's templates with its ratings. Admins and its publisher
    /// only. Returns the deleted id.
    async fn delete_template(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The template.")] id: ID,
    ) -> async_graphql::Result<ID> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let released = domain::template::delete(&services.db, &viewer.tenant, &id).await?;
        // After the commit: bytes no screenshot or template names any more may go.
        domain::screenshot::release_blobs(&services.db, &services.blobs, &viewer.tenant, &released)
            .await;
        Ok(id)
    }
}
