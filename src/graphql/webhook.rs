//! Webhooks: signed `POST /hooks/{id}` requests queue a run of a workflow. Admins create,
//! change, rotate and delete them (a hook mints a credential that lets an outside system
//! act in the company); members may see them, never their secrets.

use std::collections::HashMap;

use async_graphql::dataloader::Loader;
use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};

use super::context::ContextExt as _;
use super::guards::AdminOnly;
use super::loaders::{LoadError, TenantLoader, load_error};
use super::workflow::Workflow;
use crate::domain;

/// A URL an outside system posts signed JSON to, each request queueing a run.
pub struct Webhook {
    pub row: domain::webhook::Webhook,
}

impl Webhook {
    /// A webhook that may have been deleted since it was referenced: null then.
    pub async fn load_optional(
        ctx: &Context<'_>,
        id: Option<&str>,
    ) -> async_graphql::Result<Option<Self>> {
        let Some(id) = id else {
            return Ok(None);
        };
        let row = ctx.loader()?.load_one(WebhookById(id.to_owned())).await?;
        Ok(row.map(|row| Self { row }))
    }
}

/// A URL an outside system posts signed JSON to: `POST <url>` with `Content-Type:
/// application/json` and `Stepwise-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>" under the secret>` answers 202 with the queued run's id. An
/// `Idempotency-Key` header makes retries queue one run.
#[Object]
impl Webhook {
    /// Stable identifier (random: the URL cannot be guessed).
    pub(crate) async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }

    /// The workflow each request queues a run of.
    async fn workflow(&self, ctx: &Context<'_>) -> async_graphql::Result<Workflow> {
        Workflow::load(ctx, &self.row.workflow_id).await
    }

    /// A name for people.
    async fn name(&self) -> Option<&str> {
        self.row.name.as_deref()
    }

    /// Where to post: `/hooks/<id>`, behind `--public-url` when it is set.
    async fn url(&self, ctx: &Context<'_>) -> String {
        let base = ctx.services().queue.public_url.as_deref().unwrap_or("");
        format!("{base}/hooks/{}", self.row.id)
    }

    /// False while disabled: requests are then answered 404, like an unknown hook.
    async fn enabled(&self) -> bool {
        self.row.enabled
    }

    /// When the current secret was issued.
    async fn secret_rotated_at(&self) -> DateTime<Utc> {
        self.row.secret_rotated_at.and_utc()
    }

    /// Until when the secret before the last rotation is still accepted; null when it is
    /// not.
    async fn previous_secret_expires_at(&self) -> Option<DateTime<Utc>> {
        self.row
            .previous_secret_expires_at
            .filter(|until| *until > domain::now())
            .map(|at| at.and_utc())
    }

    /// When a request last queued a run.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.row.last_used_at.map(|at| at.and_utc())
    }

    /// When the webhook was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at.and_utc()
    }

    /// When it was last changed (renamed, enabled or disabled, rotated).
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at.and_utc()
    }
}

/// A webhook with its signing secret, shown only in the answer that created or rotated it.
pub struct WebhookWithSecret {
    with_secret: domain::webhook::WithSecret,
}

/// A webhook with its signing secret, shown only in this answer: keep it now. The server
/// cannot show it again (rotate to get a new one).
#[Object]
impl WebhookWithSecret {
    /// The webhook.
    async fn webhook(&self) -> Webhook {
        Webhook {
            row: self.with_secret.webhook.clone(),
        }
    }

    /// The signing secret (`whsec_…`): the HMAC-SHA256 key of `Stepwise-Signature`.
    async fn secret(&self) -> &str {
        &self.with_secret.secret
    }
}

/// Batch key: a webhook of the loader's company, by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebhookById(pub String);

impl Loader<WebhookById> for TenantLoader {
    type Value = domain::webhook::Webhook;
    type Error = LoadError;

    async fn load(
        &self,
        keys: &[WebhookById],
    ) -> Result<HashMap<WebhookById, Self::Value>, LoadError> {
        let ids: Vec<String> = keys.iter().map(|key| key.0.clone()).collect();
        let rows = domain::webhook::find_many(&self.db, &self.tenant, &ids)
            .await
            .map_err(load_error)?;
        Ok(rows
            .into_iter()
            .map(|row| (WebhookById(row.id.clone()), row))
            .collect())
    }
}

/// A change of a webhook; omitted fields stay as they are.
#[derive(InputObject)]
pub struct UpdateWebhookInput {
    /// A name for people; null clears it.
    pub name: MaybeUndefined<String>,
    /// False disables the URL (404 like an unknown hook) until it is enabled again.
    pub enabled: Option<bool>,
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    /// A webhook of the viewer's company; null with NOT_FOUND when there is no such
    /// webhook.
    async fn webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The webhook's id.")] id: ID,
    ) -> async_graphql::Result<Option<Webhook>> {
        let viewer = ctx.viewer()?;
        let row = domain::webhook::find(ctx.db(), &viewer.tenant, &id).await?;
        Ok(Some(Webhook { row }))
    }

    /// A workflow's webhooks, oldest first (at most 20 per workflow).
    async fn webhooks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow.")] workflow_id: ID,
    ) -> async_graphql::Result<Vec<Webhook>> {
        let viewer = ctx.viewer()?;
        let rows = domain::webhook::of_workflow(ctx.db(), &viewer.tenant, &workflow_id).await?;
        Ok(rows.into_iter().map(|row| Webhook { row }).collect())
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    /// Creates an enabled webhook for a workflow (at most 20 per workflow) and shows its
    /// signing secret, this once. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn create_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The workflow each request queues a run of.")] workflow_id: ID,
        #[graphql(desc = "A name for people; at most 200 characters.")] name: Option<String>,
    ) -> async_graphql::Result<WebhookWithSecret> {
        let viewer = ctx.viewer()?;
        let keys = &ctx.services().queue.webhook_keys;
        let with_secret =
            domain::webhook::create(ctx.db(), &viewer.tenant, keys, &workflow_id, name).await?;
        Ok(WebhookWithSecret { with_secret })
    }

    /// Renames, disables or enables a webhook. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn update_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The webhook.")] id: ID,
        #[graphql(desc = "What to change.")] input: UpdateWebhookInput,
    ) -> async_graphql::Result<Webhook> {
        let viewer = ctx.viewer()?;
        let name = match input.name {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(name) => Some(Some(name)),
        };
        let row =
            domain::webhook::update(ctx.db(), &viewer.tenant, &id, name, input.enabled).await?;
        Ok(Webhook { row })
    }

    /// Gives a webhook a new signing secret, shown this once. The old secret stops working
    /// at once, or after `keepPreviousSeconds` so the sender can switch over. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn rotate_webhook_secret(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The webhook.")] id: ID,
        #[graphql(
            desc = "How long the old secret stays valid: 0 (default) to 604,800 seconds (a week)."
        )]
        keep_previous_seconds: Option<i32>,
    ) -> async_graphql::Result<WebhookWithSecret> {
        let viewer = ctx.viewer()?;
        let keys = &ctx.services().queue.webhook_keys;
        let with_secret =
            domain::webhook::rotate(ctx.db(), &viewer.tenant, keys, &id, keep_previous_seconds)
                .await?;
        Ok(WebhookWithSecret { with_secret })
    }

    /// Deletes a webhook: its URL answers 404 from now on; the runs it queued stay. True
    /// when it was deleted. Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn delete_webhook(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The webhook.")] id: ID,
    ) -> async_graphql::Result<bool> {
        let viewer = ctx.viewer()?;
        domain::webhook::delete(ctx.db(), &viewer.tenant, &id).await?;
        Ok(true)
    }
}
