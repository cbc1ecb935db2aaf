//! Lists of plain rows resolved in one synchronous pass.
//!
//! async-graphql resolves every field of every list item as its own boxed future, collected
//! through a `FuturesUnordered` and an `IndexMap` per object: for a page of workflows with
//! their steps and screenshots that is ~2,000 futures per request, most of them returning a
//! column of a row already in memory (BENCHMARKS.md, third run). Here a list — a
//! [`PlainList`] (`Workflow.steps`) or the edges and nodes of a [`PlainConnection`]
//! (workflows, runs, health logs) — is answered by walking its selection set once per item:
//! every *plain* field (read from the row in hand, without loading, arguments, a guard or a
//! way to fail) is built on the spot, and only the others are left to their resolvers,
//! all of the list's at once, so the data loaders still batch them. A field left to its
//! resolver runs exactly as on the ordinary path (same context and path, the schema's
//! extensions around it), so its errors, their paths and `null` are the ordinary ones.
//!
//! What the ordinary path does and this one mirrors (async-graphql 7.2,
//! `resolver_utils/container.rs`): fragments and inline fragments apply when their type
//! condition is the object's type or an interface it implements; `__typename` is the
//! object's type; response keys (aliases) repeated merge like `insert_value` does (first
//! scalar wins, objects merge); a failed field is left out with its error recorded; an
//! object with no field left is `null`. `@skip` and `@include` are already applied to the
//! document before execution; any other directive left on a field sends that object down
//! the ordinary path. One difference: keys come in selection order (what the GraphQL spec
//! asks), where the ordinary path puts a field that waited after those that did not.
//!
//! Plain fields skip the per-field hooks of extensions: the schema's only extension
//! (`executor_access`) works at parse time. `--fast-lists false` turns all of this off
//! ([`FastLists`]), to compare answers or rule this path out.

use std::borrow::Cow;

use async_graphql::connection::{CursorType, Edge, EmptyFields};
use async_graphql::extensions::ResolveInfo;
use async_graphql::indexmap::IndexMap;
use async_graphql::indexmap::map::Entry as MapEntry;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::resolve_list;
use async_graphql::{
    ContainerType, ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerError,
    ServerResult, Value,
};
use futures_util::future::{BoxFuture, join_all, try_join_all};

use super::pagination::CountedConnection;

/// Whether lists answer their plain fields in one pass (`--fast-lists`, on unless the
/// schema's data says otherwise).
#[derive(Clone, Copy, Debug)]
pub struct FastLists(pub bool);

fn fast_lists(ctx: &ContextSelectionSet<'_>) -> bool {
    ctx.data_opt::<FastLists>().is_none_or(|fast| fast.0)
}

/// A GraphQL object some of whose fields can be answered from the value in hand.
pub trait PlainObject: OutputType + ContainerType {
    /// The answer to `field` (not `__typename`), or `None` when its resolver must answer.
    /// `ctx` is the selection set `field` belongs to.
    fn plain_field<'a>(
        &self,
        ctx: &ContextSelectionSet<'a>,
        field: &'a Positioned<Field>,
    ) -> Option<Value>;
}

/// A list field's items, answered in one pass where the selection allows (see the module).
/// In the schema it is exactly `[T!]!`.
pub struct PlainList<T>(pub Vec<T>);

impl<T: PlainObject + Sync> OutputType for PlainList<T> {
    fn type_name() -> Cow<'static, str> {
        <Vec<T> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<T> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<T> as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        if !fast_lists(ctx) {
            return resolve_list(ctx, field, &self.0, Some(self.0.len())).await;
        }
        resolve_items(ctx, field, self.0.iter().collect()).await
    }
}

/// A page of a connection whose nodes are [`PlainObject`]s: its edges, nodes and page info
/// answered in one pass where the selection allows, anything else (`totalCount`) by the
/// connection's own resolvers. In the schema it is exactly the connection it wraps.
pub struct PlainConnection<N: PlainObject>(pub CountedConnection<N>);

impl<N: PlainObject + Sync> OutputType for PlainConnection<N> {
    fn type_name() -> Cow<'static, str> {
        <CountedConnection<N> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <CountedConnection<N> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <CountedConnection<N> as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let connection = &self.0;
        if !fast_lists(ctx) {
            return connection.resolve(ctx, field).await;
        }
        let own_type = connection.introspection_type_name();
        let mut entries = Vec::new();
        let walked = walk(
            ctx,
            &ctx.item.node,
            &own_type,
            &mut |field| {
                Some(match field.node.name.node.as_str() {
                    "edges" => Entry::Edges(field),
                    "nodes" => Entry::Nodes(field),
                    "pageInfo" => Entry::Ready(page_info(ctx, field, connection)?),
                    _ => Entry::Resolver(field),
                })
            },
            &mut entries,
        );
        if walked.is_none() {
            return connection.resolve(ctx, field).await;
        }
        let parts: Vec<BoxFuture<'_, ServerResult<Value>>> = entries
            .iter()
            .filter_map(|(_, entry)| match entry {
                Entry::Resolver(field) => Some(resolve_field(connection, ctx, field)),
                Entry::Edges(field) => {
                    Some(Box::pin(edges(connection, ctx, field)) as BoxFuture<_>)
                }
                Entry::Nodes(field) => {
                    Some(Box::pin(nodes(connection, ctx, field)) as BoxFuture<_>)
                }
                Entry::Ready(_) | Entry::Node(..) | Entry::Waiting => None,
            })
            .collect();
        let resolved = join_all(parts).await;
        Ok(assemble(ctx, entries, resolved))
    }
}

/// `item` answered for the selection set of `ctx`, or `None` when some selected field needs
/// its resolver.
pub fn plain_object<'a, T: PlainObject>(item: &T, ctx: &ContextSelectionSet<'a>) -> Option<Value> {
    let entries = shape(item, ctx)?;
    if waits(&entries) {
        return None;
    }
    Some(assemble(ctx, entries, Vec::new()))
}

/// One response key of an object being answered.
enum Entry<'a> {
    /// Answered from the value in hand.
    Ready(Value),
    /// Left to the object's own resolver.
    Resolver(&'a Positioned<Field>),
    /// A connection's `edges`: each edge answered in one pass where it can be.
    Edges(&'a Positioned<Field>),
    /// A connection's `nodes`: a list like [`PlainList`]'s.
    Nodes(&'a Positioned<Field>),
    /// An edge's `node` with fields left to their resolvers.
    Node(&'a Positioned<Field>, Entries<'a>),
    /// Taken out to be resolved (what a `Node` becomes once its future is made).
    Waiting,
}

/// An object's response keys in selection order.
type Entries<'a> = Vec<(Name, Entry<'a>)>;

fn waits(entries: &Entries<'_>) -> bool {
    entries
        .iter()
        .any(|(_, entry)| !matches!(entry, Entry::Ready(_)))
}

/// Walks the selection set `set` of an object of type `object`, asking `answer` for each
/// field but `__typename`. `None` when the object must take the ordinary path (a directive
/// left on a field, an unknown fragment, or `answer` said so).
fn walk<'a>(
    ctx: &ContextSelectionSet<'a>,
    set: &'a SelectionSet,
    object: &str,
    answer: &mut dyn FnMut(&'a Positioned<Field>) -> Option<Entry<'a>>,
    entries: &mut Entries<'a>,
) -> Option<()> {
    for selection in &set.items {
        let (condition, nested) = match &selection.node {
            Selection::Field(field) => {
                if !field.node.directives.is_empty() {
                    return None;
                }
                let entry = if field.node.name.node == "__typename" {
                    Entry::Ready(Value::String(object.to_owned()))
                } else {
                    answer(field)?
                };
                entries.push((field.node.response_key().node.clone(), entry));
                continue;
            }
            Selection::FragmentSpread(spread) => {
                // An unknown fragment is the ordinary path's error to report.
                let fragment = ctx
                    .query_env
                    .fragments
                    .get(&spread.node.fragment_name.node)?;
                (
                    Some(fragment.node.type_condition.node.on.node.as_str()),
                    &fragment.node.selection_set,
                )
            }
            Selection::InlineFragment(fragment) => (
                fragment
                    .node
                    .type_condition
                    .as_ref()
                    .map(|condition| condition.node.on.node.as_str()),
                &fragment.node.selection_set,
            ),
        };
        if applies(ctx, object, condition) {
            walk(ctx, &nested.node, object, answer, entries)?;
        }
    }
    Some(())
}

/// Whether a fragment with `condition` applies to an object of type `object`: no
/// condition, its own type, or an interface it implements.
fn applies(ctx: &ContextSelectionSet<'_>, object: &str, condition: Option<&str>) -> bool {
    let Some(condition) = condition else {
        return true;
    };
    object == condition
        || ctx
            .schema_env
            .registry
            .implements
            .get(object)
            .is_some_and(|interfaces| interfaces.contains(condition))
}

/// What the walk makes of `item`: plain fields answered, the others left to its resolver.
fn shape<'a, T: PlainObject>(item: &T, ctx: &ContextSelectionSet<'a>) -> Option<Entries<'a>> {
    let mut entries = Vec::new();
    walk(
        ctx,
        &ctx.item.node,
        &item.introspection_type_name(),
        &mut |field| {
            Some(match item.plain_field(ctx, field) {
                Some(value) => Entry::Ready(value),
                None => Entry::Resolver(field),
            })
        },
        &mut entries,
    )?;
    Some(entries)
}

/// The object's value from its entries; each entry that is not ready takes the next of
/// `resolved`, in order. Like the ordinary path, a failed field is left out and its error
/// recorded, and an object with no field is `null`.
fn assemble(
    ctx: &ContextSelectionSet<'_>,
    entries: Entries<'_>,
    resolved: Vec<ServerResult<Value>>,
) -> Value {
    let mut resolved = resolved.into_iter();
    let mut fields = IndexMap::with_capacity(entries.len());
    for (name, entry) in entries {
        let value = match entry {
            Entry::Ready(value) => value,
            _ => match resolved.next() {
                Some(Ok(value)) => value,
                Some(Err(error)) => {
                    ctx.add_error(error);
                    continue;
                }
                None => continue,
            },
        };
        insert_value(&mut fields, name, value);
    }
    if fields.is_empty() {
        Value::Null
    } else {
        Value::Object(fields)
    }
}

/// `item`'s value once the fields left to its resolver are resolved, concurrently.
async fn finish<T: ContainerType + Sync>(
    item: &T,
    ctx: &ContextSelectionSet<'_>,
    entries: Entries<'_>,
) -> Value {
    let parts: Vec<_> = entries
        .iter()
        .filter_map(|(_, entry)| match entry {
            Entry::Resolver(field) => Some(resolve_field(item, ctx, field)),
            _ => None,
        })
        .collect();
    let resolved = if parts.is_empty() {
        Vec::new()
    } else {
        join_all(parts).await
    };
    assemble(ctx, entries, resolved)
}

/// One field of `item` through its resolver, as `Fields::add_set` runs it: under the field's
/// own context (so errors carry its path) and inside the schema's extensions.
fn resolve_field<'b, T: ContainerType + Sync + ?Sized>(
    item: &'b T,
    ctx: &'b ContextSelectionSet<'b>,
    field: &'b Positioned<Field>,
) -> BoxFuture<'b, ServerResult<Value>> {
    Box::pin(async move {
        let ctx_field = ctx.with_field(field);
        let parent_type = T::type_name();
        let return_type = ctx
            .schema_env
            .registry
            .types
            .get(parent_type.as_ref())
            .and_then(|ty| ty.field_by_name(field.node.name.node.as_str()))
            .map(|meta| meta.ty.as_str());
        let (Some(return_type), Some(path_node)) = (return_type, ctx_field.path_node.as_ref())
        else {
            return Err(ServerError::new(
                format!(
                    r#"Cannot query field "{}" on type "{}"."#,
                    field.node.response_key().node,
                    parent_type
                ),
                Some(field.pos),
            ));
        };
        let info = ResolveInfo {
            path_node,
            parent_type: &parent_type,
            return_type,
            name: field.node.name.node.as_str(),
            alias: field.node.alias.as_ref().map(|alias| alias.node.as_str()),
            // Workflows, runs and their children never appear under `__schema`/`__type`.
            is_for_introspection: false,
            field: &field.node,
        };
        let resolve = item.resolve_field(&ctx_field);
        futures_util::pin_mut!(resolve);
        Ok(ctx
            .query_env
            .extensions
            .resolve(info, &mut resolve)
            .await?
            .unwrap_or_default())
    })
}

/// A list of plain objects under `ctx` (the list field's selection set): in one pass when
/// no item waits for a resolver, else every waiting field of every item at once.
async fn resolve_items<T: PlainObject + Sync>(
    ctx: &ContextSelectionSet<'_>,
    field: &Positioned<Field>,
    items: Vec<&T>,
) -> ServerResult<Value> {
    let shapes: Vec<Option<Entries<'_>>> = items.iter().map(|item| shape(*item, ctx)).collect();
    let shapes = match ready_list(ctx, shapes) {
        Ok(list) => return Ok(list),
        Err(shapes) => shapes,
    };
    let items =
        items
            .into_iter()
            .zip(shapes)
            .enumerate()
            .map(|(index, (item, shape))| async move {
                let ctx_item = ctx.with_index(index);
                match shape {
                    Some(entries) => Ok(finish(item, &ctx_item, entries).await),
                    // The ordinary path for this item, as `resolve_list` takes it.
                    None => OutputType::resolve(item, &ctx_item, field)
                        .await
                        .map_err(|error| ctx_item.set_error_path(error)),
                }
            });
    Ok(Value::List(try_join_all(items).await?))
}

/// The list's value when no item waits for a resolver (nor takes the ordinary path);
/// otherwise the shapes back.
fn ready_list<'a>(
    ctx: &ContextSelectionSet<'_>,
    shapes: Vec<Option<Entries<'a>>>,
) -> Result<Value, Vec<Option<Entries<'a>>>> {
    if !shapes
        .iter()
        .all(|shape| shape.as_ref().is_some_and(|entries| !waits(entries)))
    {
        return Err(shapes);
    }
    Ok(Value::List(
        shapes
            .into_iter()
            .flatten()
            .map(|entries| assemble(ctx, entries, Vec::new()))
            .collect(),
    ))
}

/// A connection's `nodes`, as `Connection::nodes` then `resolve_list` would answer it.
async fn nodes<'a, N: PlainObject + Sync>(
    connection: &CountedConnection<N>,
    ctx: &ContextSelectionSet<'a>,
    field: &'a Positioned<Field>,
) -> ServerResult<Value> {
    let ctx_field = ctx.with_field(field);
    let ctx_list = ctx_field.with_selection_set(&field.node.selection_set);
    let items = connection.edges.iter().map(|edge| &edge.node).collect();
    resolve_items(&ctx_list, field, items)
        .await
        .map_err(|error| ctx_field.set_error_path(error))
}

/// A connection's `edges`: cursors and nodes in one pass, the nodes' waiting fields all at
/// once.
async fn edges<'a, N: PlainObject + Sync>(
    connection: &CountedConnection<N>,
    ctx: &ContextSelectionSet<'a>,
    field: &'a Positioned<Field>,
) -> ServerResult<Value> {
    let ctx_field = ctx.with_field(field);
    let ctx_list = ctx_field.with_selection_set(&field.node.selection_set);
    let ctx_list = &ctx_list;
    let shapes: Vec<Option<Entries<'_>>> = connection
        .edges
        .iter()
        .map(|edge| {
            let mut entries = Vec::new();
            walk(
                ctx_list,
                &ctx_list.item.node,
                &edge.introspection_type_name(),
                &mut |field| {
                    Some(match field.node.name.node.as_str() {
                        "cursor" => Entry::Ready(Value::String(edge.cursor.encode_cursor())),
                        "node" => {
                            let ctx_node = ctx_list.with_selection_set(&field.node.selection_set);
                            match shape(&edge.node, &ctx_node) {
                                Some(entries) if !waits(&entries) => {
                                    Entry::Ready(assemble(&ctx_node, entries, Vec::new()))
                                }
                                Some(entries) => Entry::Node(field, entries),
                                None => Entry::Resolver(field),
                            }
                        }
                        _ => Entry::Resolver(field),
                    })
                },
                &mut entries,
            )?;
            Some(entries)
        })
        .collect();
    let shapes = match ready_list(ctx_list, shapes) {
        Ok(list) => return Ok(list),
        Err(shapes) => shapes,
    };
    let edges =
        connection
            .edges
            .iter()
            .zip(shapes)
            .enumerate()
            .map(|(index, (edge, shape))| async move {
                let ctx_edge = ctx_list.with_index(index);
                let Some(mut entries) = shape else {
                    return OutputType::resolve(edge, &ctx_edge, field)
                        .await
                        .map_err(|error| ctx_edge.set_error_path(error));
                };
                let ctx_edge = &ctx_edge;
                let parts: Vec<BoxFuture<'_, ServerResult<Value>>> = entries
                    .iter_mut()
                    .filter_map(|(_, entry)| match entry {
                        Entry::Resolver(field) => Some(resolve_field(edge, ctx_edge, field)),
                        Entry::Node(..) => {
                            let Entry::Node(field, node_entries) =
                                std::mem::replace(entry, Entry::Waiting)
                            else {
                                return None;
                            };
                            Some(Box::pin(async move {
                                let ctx_field = ctx_edge.with_field(field);
                                let ctx_node =
                                    ctx_field.with_selection_set(&field.node.selection_set);
                                Ok(finish(&edge.node, &ctx_node, node_entries).await)
                            }) as BoxFuture<_>)
                        }
                        _ => None,
                    })
                    .collect();
                let resolved = join_all(parts).await;
                Ok(assemble(ctx_edge, entries, resolved))
            });
    try_join_all(edges)
        .await
        .map(Value::List)
        .map_err(|error| ctx_field.set_error_path(error))
}

/// A connection's `pageInfo`, all of whose fields are plain.
fn page_info<'a, N: PlainObject>(
    ctx: &ContextSelectionSet<'a>,
    field: &'a Positioned<Field>,
    connection: &CountedConnection<N>,
) -> Option<Value> {
    let cursor = |edge: Option<&Edge<String, N, EmptyFields>>| {
        edge.map_or(Value::Null, |edge| {
            Value::String(CursorType::encode_cursor(&edge.cursor))
        })
    };
    let mut entries = Vec::new();
    walk(
        ctx,
        &field.node.selection_set.node,
        "PageInfo",
        &mut |field| {
            Some(Entry::Ready(match field.node.name.node.as_str() {
                "hasPreviousPage" => Value::Boolean(connection.has_previous_page),
                "hasNextPage" => Value::Boolean(connection.has_next_page),
                "startCursor" => cursor(connection.edges.first()),
                "endCursor" => cursor(connection.edges.last()),
                _ => return None,
            }))
        },
        &mut entries,
    )?;
    Some(assemble(ctx, entries, Vec::new()))
}

/// async-graphql's merge of a response key seen twice (`resolver_utils::container`), with
/// one hash of the key instead of a lookup and an insert.
fn insert_value(target: &mut IndexMap<Name, Value>, name: Name, value: Value) {
    match target.entry(name) {
        MapEntry::Vacant(slot) => {
            slot.insert(value);
        }
        MapEntry::Occupied(mut previous) => match (previous.get_mut(), value) {
            (Value::Object(target), Value::Object(object)) => {
                for (key, value) in object {
                    insert_value(target, key, value);
                }
            }
            (Value::List(target), Value::List(list)) => {
                for (index, value) in list.into_iter().enumerate() {
                    if let (Some(Value::Object(target)), Value::Object(object)) =
                        (target.get_mut(index), value)
                    {
                        for (key, value) in object {
                            insert_value(target, key, value);
                        }
                    }
                }
            }
            _ => {}
        },
    }
}

/// A scalar as the ordinary path answers it.
pub fn scalar<S: ScalarType>(value: &S) -> Value {
    value.to_value()
}

/// A nullable scalar as the ordinary path answers it.
pub fn optional<S: ScalarType>(value: Option<&S>) -> Value {
    value.map_or(Value::Null, ScalarType::to_value)
}

/// A nullable string as the ordinary path answers it.
pub fn optional_str(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |s| Value::String(s.to_owned()))
}
