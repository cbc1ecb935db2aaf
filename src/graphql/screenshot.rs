//! Screenshots: the images shown with steps.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::parser::types::Field;
use async_graphql::{Context, ContextSelectionSet, ID, Object, Positioned, Upload, Value};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::context::Services;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::plain_list::{PlainObject, scalar};
use super::workflow::Workflow;
use crate::domain;
use crate::error::AppError;

/// Batch key: a screenshot by id, within the viewer's company.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScreenshotById(pub String);

impl Loader<ScreenshotById> for TenantLoader {
    type Value = Arc<domain::screenshot::Screenshot>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[ScreenshotById],
    ) -> Result<HashMap<ScreenshotById, Self::Value>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::screenshot::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|s| (ScreenshotById(s.id.clone()), Arc::new(s)))
            .collect())
    }
}

/// Batch key: the screenshots recorded for a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScreenshotsOfWorkflow(pub String);

impl Loader<ScreenshotsOfWorkflow> for TenantLoader {
    type Value = Vec<domain::screenshot::Screenshot>;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[ScreenshotsOfWorkflow],
    ) -> Result<HashMap<ScreenshotsOfWorkflow, Self::Value>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
        let rows = domain::screenshot::of_workflows(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        let mut grouped: HashMap<ScreenshotsOfWorkflow, Self::Value> =
            keys.iter().map(|k| (k.clone(), Vec::new())).collect();
        for row in rows {
            grouped
                .entry(ScreenshotsOfWorkflow(row.workflow_id.clone()))
                .or_default()
                .push(row);
        }
        Ok(grouped)
    }
}

/// An image recorded with a step. The same bytes are stored once per company.
#[derive(Clone)]
pub struct Screenshot {
    pub row: Arc<domain::screenshot::Screenshot>,
}

impl From<Arc<domain::screenshot::Screenshot>> for Screenshot {
    fn from(row: Arc<domain::screenshot::Screenshot>) -> Self {
        Self { row }
    }
}

impl From<domain::screenshot::Screenshot> for Screenshot {
    fn from(row: domain::screenshot::Screenshot) -> Self {
        Arc::new(row).into()
    }
}

/// Every field but `workflow` (a lookup): what a step list answers in one pass. Each arm
/// answers exactly what the resolver of the same name below does.
impl PlainObject for Screenshot {
    fn plain_field<'a>(
        &self,
        ctx: &ContextSelectionSet<'a>,
        field: &'a Positioned<Field>,
    ) -> Option<Value> {
        let row = &*self.row;
        Some(match field.node.name.node.as_str() {
            "id" => Value::String(row.id.clone()),
            "hash" => Value::String(row.hash.clone()),
            "contentType" => Value::String(row.content_type.clone()),
            "sizeBytes" => scalar(&row.size_bytes),
            "width" => scalar(&row.width),
            "height" => scalar(&row.height),
            "createdAt" => scalar(&row.created_at.and_utc()),
            "url" => Value::String(sign_url(
                ctx.data::<Services>().ok()?,
                &row.company_id,
                &row.id,
            )),
            _ => return None,
        })
    }
}

// The fields `PlainObject for Screenshot` answers (above) bypass these resolvers inside a
// list: giving one of them a guard, arguments or a lookup means removing its arm there.
/// An image recorded with a step. The same bytes are stored once per company.
#[Object]
impl Screenshot {
    /// Stable identifier.
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow it was recorded for.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// Hex SHA-256 of the image bytes.
    async fn hash(&self) -> &str {
        &self.row.hash
    }

    /// `image/png`, `image/jpeg` or `image/webp`.
    async fn content_type(&self) -> &str {
        &self.row.content_type
    }

    /// Size of the image in bytes.
    async fn size_bytes(&self) -> i64 {
        self.row.size_bytes
    }

    /// Width in pixels.
    async fn width(&self) -> i32 {
        self.row.width
    }

    /// Height in pixels.
    async fn height(&self) -> i32 {
        self.row.height
    }

    /// When it was uploaded.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// A short-lived signed URL that serves the image to anyone holding it (for `<img src>`,
    /// which cannot send a token). It expires after a few minutes (server setting), so ask
    /// for it when showing the image rather than storing it.
    async fn url(&self, ctx: &Context<'_>) -> String {
        signed_url(ctx, &self.row.company_id, &self.row.id)
    }
}

/// A short-lived signed URL serving image `id` (a screenshot, or a template's copy of
/// one) of `company_id` through `GET /screenshots/{id}`.
pub fn signed_url(ctx: &Context<'_>, company_id: &str, id: &str) -> String {
    sign_url(ctx.services(), company_id, id)
}

fn sign_url(services: &Services, company_id: &str, id: &str) -> String {
    let (expires, signature) = services
        .url_signer
        .sign(company_id, id, Utc::now().timestamp());
    format!(
        "{}/screenshots/{id}?expires={expires}&signature={signature}",
        services.screenshots.public_url.as_deref().unwrap_or(""),
    )
}

#[derive(Default)]
pub struct ScreenshotQuery;

#[Object]
impl ScreenshotQuery {
    /// One screenshot of the company; null with NOT_FOUND if there is none with this id.
    async fn screenshot(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Screenshot>> {
        let row = ctx
            .loader()?
            .load_one(ScreenshotById(id.0))
            .await?
            .ok_or(AppError::NotFound("screenshot"))?;
        Ok(Some(row.into()))
    }
}

#[derive(Default)]
pub struct ScreenshotMutation;

#[Object]
impl ScreenshotMutation {
    /// Uploads a screenshot for a workflow (GraphQL multipart request). PNG, JPEG and WebP
    /// are accepted, recognised by content; the size limit is a server setting (5 MB by
    /// default). Uploading bytes the company already has returns the existing screenshot.
    /// With `stepId`, the screenshot is also shown on that step of the workflow, replacing
    /// any previous one.
    async fn upload_screenshot(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow the screenshot was recorded for.")] workflow_id: ID,
        #[graphql(desc = "A step of that workflow to show the screenshot on.")] step_id: Option<ID>,
        #[graphql(desc = "The image file.")] file: Upload,
    ) -> async_graphql::Result<Screenshot> {
        let viewer = ctx.viewer()?;
        let services = ctx.services();
        let file = file
            .value(ctx)
            .map_err(|_| AppError::bad_input("file", "file is not an uploaded file"))?;
        let row = domain::screenshot::upload(
            ctx.db(),
            &services.blobs,
            &viewer.tenant,
            &workflow_id,
            step_id.as_ref().map(|id| id.0.as_str()),
            file.content,
            domain::screenshot::ImageLimits {
                max_bytes: services.screenshots.max_bytes,
                max_pixels: services.screenshots.max_pixels,
            },
        )
        .await?;
        Ok(row.into())
    }
}
