//! Relay object identification: the `Node` interface every entity with an id implements,
//! and `node(id:)` / `nodes(ids:)` to refetch any object of the viewer's company by its id.
//!
//! Ids stay as they are (UUIDv7 strings, unique across every table): `domain::node` finds
//! which table holds an id with one primary-key probe per table, in one statement, and the
//! objects of each kind are then loaded together by the same lookup (batch loader or
//! domain query) their ordinary field uses, with the same rule on top: API keys and audit
//! entries for admins only, sessions only the caller's own, public links only for those
//! who manage the workflow, restricted workflows' versions and shares only for those who
//! see it, other companies' templates only as the public catalogue shows them. Anything
//! the viewer may not read is answered exactly like a missing id: `null` with NOT_FOUND.
//! (EXECUTOR API keys cannot ask at all: `node` is not on their allow-list.)
//!
//! Adding an entity: a variant in [`Node`], an arm in [`load_kind`], and its line in
//! `domain::node::KINDS`.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, ID, Interface, Object, PathSegment, ServerError};
use futures_util::future::join_all;

use super::api_key::ApiKey;
use super::audit::AuditEntry;
use super::company::{Company, TenantCompany};
use super::context::ContextExt as _;
use super::health_log::{HealthLog, HealthLogById};
use super::notification::{Notification, NotificationById};
use super::project::{Project, ProjectById};
use super::run::{Run, RunById};
use super::schedule::{Schedule, ScheduleById};
use super::screenshot::{Screenshot, ScreenshotById};
use super::session::Session;
use super::share::{ShareLink, WorkflowShare};
use super::step::Step;
use super::template::{TemplateScreenshot, TemplateScreenshotById, WorkflowTemplate};
use super::user::{User, UserById};
use super::version::WorkflowVersion;
use super::webhook::{Webhook, WebhookById};
use super::workflow::{Workflow, WorkflowById};
use crate::auth::Viewer;
use crate::domain;
use crate::domain::node::Kind;
use crate::error::AppError;

/// Most ids one `nodes` call may ask for.
pub const MAX_NODES: usize = 100;

/// An object with a stable, globally unique id, which `node(id:)` finds again (Relay's
/// object identification).
#[derive(Interface)]
#[graphql(field(
    name = "id",
    ty = "ID",
    desc = "Stable identifier, unique across every kind of object: `node(id:)` finds the \
            object again."
))]
pub enum Node {
    Company(Company),
    User(User),
    Workflow(Workflow),
    Step(Step),
    Screenshot(Screenshot),
    Run(Run),
    HealthLog(HealthLog),
    Notification(Notification),
    ApiKey(ApiKey),
    Session(Session),
    AuditEntry(AuditEntry),
    Schedule(Schedule),
    Webhook(Webhook),
    WorkflowVersion(WorkflowVersion),
    Project(Project),
    WorkflowShare(WorkflowShare),
    ShareLink(ShareLink),
    WorkflowTemplate(WorkflowTemplate),
    TemplateScreenshot(TemplateScreenshot),
}

#[derive(Default)]
pub struct NodeQuery;

#[Object]
impl NodeQuery {
    /// Any object of the viewer's company by its id (Relay's refetch); null with NOT_FOUND
    /// when there is none (another company's ids too).
    async fn node(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The object's id.")] id: ID,
    ) -> async_graphql::Result<Option<Node>> {
        let mut found = load_all(ctx, std::slice::from_ref(&id.0)).await?;
        match found.remove(&id.0) {
            Some(node) => Ok(Some(node)),
            None => Err(AppError::NotFound("node").into()),
        }
    }

    /// Objects of the viewer's company by their ids, in the order asked (at most 100);
    /// each id with no object is null, with a NOT_FOUND error at its index.
    #[graphql(complexity = "ids.len() * child_complexity")]
    async fn nodes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The objects' ids, at most 100.")] ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<Option<Node>>> {
        if ids.len() > MAX_NODES {
            return Err(AppError::bad_input(
                "ids",
                format!("at most {MAX_NODES} ids may be asked for at once"),
            )
            .into());
        }
        let wanted: Vec<String> = ids.iter().map(|id| id.0.clone()).collect();
        let mut found = load_all(ctx, &wanted).await?;
        let mut nodes = Vec::with_capacity(ids.len());
        for (index, id) in wanted.iter().enumerate() {
            // An id asked for twice is answered twice; only the last use can take it.
            let node = if wanted[index + 1..].contains(id) {
                match found.get(id) {
                    Some(_) => load_all(ctx, std::slice::from_ref(id)).await?.remove(id),
                    None => None,
                }
            } else {
                found.remove(id)
            };
            if node.is_none() {
                ctx.add_error(not_found_at(ctx, index));
            }
            nodes.push(node);
        }
        Ok(nodes)
    }
}

/// NOT_FOUND at `nodes[index]`.
fn not_found_at(ctx: &Context<'_>, index: usize) -> ServerError {
    let mut error =
        async_graphql::Error::from(AppError::NotFound("node")).into_server_error(ctx.item.pos);
    if let Some(path) = ctx.path_node.as_ref() {
        error.path = path
            .to_string_vec()
            .into_iter()
            .map(PathSegment::Field)
            .collect();
    }
    error.path.push(PathSegment::Index(index));
    error
}

/// The objects of the viewer's company among `ids`, by id.
async fn load_all(
    ctx: &Context<'_>,
    ids: &[String],
) -> async_graphql::Result<HashMap<String, Node>> {
    let viewer = ctx.viewer()?;
    let mut unique: Vec<String> = ids.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let company = viewer.tenant.id();
    let others: Vec<String> = unique.iter().filter(|id| *id != company).cloned().collect();
    let kinds = domain::node::kinds_of(ctx.db(), &viewer.tenant, &others).await?;
    let mut found = HashMap::new();
    if unique.iter().any(|id| id == company) {
        let row = ctx.loader()?.load_one(TenantCompany).await?;
        if let Some(row) = row {
            let node = Node::Company(Company {
                row,
                viewer: viewer.clone(),
            });
            found.insert(company.to_owned(), node);
        }
    }
    // One lookup per kind: the objects of a kind are read in one statement.
    let mut by_kind: HashMap<Kind, Vec<String>> = HashMap::new();
    for (id, kind) in kinds {
        by_kind.entry(kind).or_default().push(id);
    }
    let loads = by_kind
        .into_iter()
        .map(|(kind, ids)| async move { load_kind(ctx, viewer, kind, ids).await });
    for loaded in join_all(loads).await {
        found.extend(loaded?);
    }
    Ok(found)
}

/// The objects of one kind among `ids` the viewer may read, through the lookup (and the
/// rule) their ordinary field uses; the others are left out, as if they did not exist.
async fn load_kind(
    ctx: &Context<'_>,
    viewer: &Viewer,
    kind: Kind,
    ids: Vec<String>,
) -> async_graphql::Result<Vec<(String, Node)>> {
    let loader = ctx.loader()?;
    let db = ctx.db();
    let tenant = &viewer.tenant;
    let viewer = viewer.clone();
    let nodes: Vec<(String, Node)> = match kind {
        Kind::User => loader
            .load_many(ids.into_iter().map(UserById))
            .await?
            .into_iter()
            .map(|(key, row)| {
                let viewer = viewer.clone();
                (key.0, Node::User(User { row, viewer }))
            })
            .collect(),
        Kind::Workflow => loader
            .load_many(ids.into_iter().map(WorkflowById))
            .await?
            .into_iter()
            .map(|(key, row)| {
                let viewer = viewer.clone();
                (key.0, Node::Workflow(Workflow { row, viewer }))
            })
            .collect(),
        Kind::Step => {
            // Side by side, so the request's batch loader reads them in one statement.
            let loads = ids.into_iter().map(|id| async move {
                let step = Step::load_optional(ctx, Some(&id)).await;
                step.map(|step| step.map(|step| (id, Node::Step(step))))
            });
            let mut nodes = Vec::new();
            for loaded in join_all(loads).await {
                nodes.extend(loaded?);
            }
            nodes
        }
        Kind::Screenshot => loader
            .load_many(ids.into_iter().map(ScreenshotById))
            .await?
            .into_iter()
            .map(|(key, row)| (key.0, Node::Screenshot(row.into())))
            .collect(),
        Kind::Run => loader
            .load_many(ids.into_iter().map(RunById))
            .await?
            .into_iter()
            .map(|(key, row)| {
                let viewer = viewer.clone();
                (key.0, Node::Run(Run { row, viewer }))
            })
            .collect(),
        Kind::HealthLog => loader
            .load_many(ids.into_iter().map(HealthLogById))
            .await?
            .into_iter()
            .map(|(key, row)| {
                let viewer = viewer.clone();
                (key.0, Node::HealthLog(HealthLog { row, viewer }))
            })
            .collect(),
        Kind::Notification => loader
            .load_many(ids.into_iter().map(NotificationById))
            .await?
            .into_iter()
            .map(|(key, row)| {
                let viewer = viewer.clone();
                (key.0, Node::Notification(Notification { row, viewer }))
            })
            .collect(),
        // `apiKeys` and `auditLog` are admins' only.
        Kind::ApiKey if viewer.is_admin() => domain::api_key::find_many(db, tenant, &ids)
            .await?
            .into_iter()
            .map(|row| {
                let viewer = viewer.clone();
                (row.id.clone(), Node::ApiKey(ApiKey { row, viewer }))
            })
            .collect(),
        Kind::AuditEntry if viewer.is_admin() => domain::audit::find_many(db, tenant, &ids)
            .await?
            .into_iter()
            .map(|row| (row.id.clone(), Node::AuditEntry(AuditEntry(row))))
            .collect(),
        Kind::ApiKey | Kind::AuditEntry => Vec::new(),
        // `sessions` lists only the caller's own, and only those that have not ended.
        Kind::Session => match viewer.user_id() {
            Some(user_id) => domain::session::find_many_of(db, tenant, user_id, &ids)
                .await?
                .into_iter()
                .map(|row| {
                    let current = Some(row.id.as_str()) == viewer.session_id();
                    (row.id.clone(), Node::Session(Session { row, current }))
                })
                .collect(),
            None => Vec::new(),
        },
        Kind::Schedule => loader
            .load_many(ids.into_iter().map(ScheduleById))
            .await?
            .into_iter()
            .map(|(key, row)| {
                let viewer = viewer.clone();
                (key.0, Node::Schedule(Schedule { row, viewer }))
            })
            .collect(),
        Kind::Webhook => loader
            .load_many(ids.into_iter().map(WebhookById))
            .await?
            .into_iter()
            .map(|(key, row)| (key.0, Node::Webhook(Webhook { row })))
            .collect(),
        Kind::Version => domain::version::find_by_ids(db, tenant, &ids)
            .await?
            .into_iter()
            .map(|row| {
                let id = row.id.clone();
                let row = Arc::new(row);
                (id, Node::WorkflowVersion(WorkflowVersion { row }))
            })
            .collect(),
        Kind::Project => loader
            .load_many(ids.into_iter().map(ProjectById))
            .await?
            .into_iter()
            .map(|(key, row)| {
                let viewer = viewer.clone();
                (key.0, Node::Project(Project { row, viewer }))
            })
            .collect(),
        Kind::Share => domain::visibility::find_shares(db, tenant, &ids)
            .await?
            .into_iter()
            .map(|row| {
                let viewer = viewer.clone();
                (
                    row.id.clone(),
                    Node::WorkflowShare(WorkflowShare { row, viewer }),
                )
            })
            .collect(),
        // `Workflow.shareLinks` shows a workflow's links only to those who manage it.
        Kind::ShareLink => {
            let rows = domain::share_link::find_many(db, tenant, &ids).await?;
            let checks = rows.into_iter().map(|row| async move {
                let access = super::share::access(ctx, &row.workflow_id).await;
                access.map(|access| access.can_manage().then_some(row))
            });
            let mut nodes = Vec::new();
            for checked in join_all(checks).await {
                if let Some(row) = checked? {
                    let viewer = viewer.clone();
                    nodes.push((row.id.clone(), Node::ShareLink(ShareLink { row, viewer })));
                }
            }
            nodes
        }
        Kind::Template => domain::template::find_many(db, tenant, &ids)
            .await?
            .into_iter()
            .map(|row| {
                let id = row.id.clone();
                let row = Arc::new(row);
                (id, Node::WorkflowTemplate(WorkflowTemplate { row }))
            })
            .collect(),
        Kind::TemplateScreenshot => loader
            .load_many(ids.into_iter().map(TemplateScreenshotById))
            .await?
            .into_iter()
            .map(|(key, row)| (key.0, Node::TemplateScreenshot(TemplateScreenshot { row })))
            .collect(),
    };
    Ok(nodes)
}
