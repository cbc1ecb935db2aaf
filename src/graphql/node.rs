//! Relay object identification: the `Node` interface every entity with an id implements,
//! and `node(id:)` / `nodes(ids:)` to refetch any object of the viewer's company by its id.
//!
//! Ids stay as they are (UUIDv7 strings, unique across every table): `domain::node` finds
//! which table holds an id with one primary-key probe per table, in one statement, and the
//! object is then loaded by the same batch loader (and so the same domain lookup) its typed
//! field uses. Another company's id is answered exactly like a missing one: `null` with
//! NOT_FOUND.
//!
//! Adding an entity: a variant in [`Node`], an arm in [`load`], and its line in
//! `domain::node::KINDS`.

use std::collections::HashMap;

use async_graphql::{Context, ID, Interface, Object, PathSegment, ServerError};
use futures_util::future::join_all;

use super::company::{Company, TenantCompany};
use super::context::ContextExt as _;
use super::health_log::{HealthLog, HealthLogById};
use super::notification::{Notification, NotificationById};
use super::run::{Run, RunById};
use super::screenshot::{Screenshot, ScreenshotById};
use super::step::Step;
use super::user::{User, UserById};
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
    // Every load goes through the request's batch loader: the objects of one kind are
    // read in one statement.
    let loads = kinds
        .into_iter()
        .map(|(id, kind)| async move { (load(ctx, viewer, &id, kind).await, id) });
    for (loaded, id) in join_all(loads).await {
        if let Some(node) = loaded? {
            found.insert(id, node);
        }
    }
    Ok(found)
}

/// One object of a known kind, through the lookup its typed field uses.
async fn load(
    ctx: &Context<'_>,
    viewer: &Viewer,
    id: &str,
    kind: Kind,
) -> async_graphql::Result<Option<Node>> {
    let loader = ctx.loader()?;
    let id = id.to_owned();
    let viewer = viewer.clone();
    Ok(match kind {
        Kind::User => loader
            .load_one(UserById(id))
            .await?
            .map(|row| Node::User(User { row, viewer })),
        Kind::Workflow => loader
            .load_one(WorkflowById(id))
            .await?
            .map(|row| Node::Workflow(Workflow { row, viewer })),
        Kind::Step => Step::load_optional(ctx, Some(&id)).await?.map(Node::Step),
        Kind::Screenshot => loader
            .load_one(ScreenshotById(id))
            .await?
            .map(|row| Node::Screenshot(row.into())),
        Kind::Run => loader
            .load_one(RunById(id))
            .await?
            .map(|row| Node::Run(Run { row, viewer })),
        Kind::HealthLog => loader
            .load_one(HealthLogById(id))
            .await?
            .map(|row| Node::HealthLog(HealthLog { row, viewer })),
        Kind::Notification => loader
            .load_one(NotificationById(id))
            .await?
            .map(|row| Node::Notification(Notification { row, viewer })),
    })
}
