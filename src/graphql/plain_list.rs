//! Lists of plain rows resolved in one synchronous pass.
//!
//! async-graphql resolves every field of every list item as its own boxed future, collected
//! through a `FuturesUnordered` and an `IndexMap` per object: for a page of workflows with
//! their steps and screenshots that is ~2,000 futures per request, most of them returning a
//! column of a row already in memory (BENCHMARKS.md, third run). [`PlainList`] answers such a
//! list by walking the field's selection set once per item and building the values
//! directly — when every selected field is *plain*: read from the row in hand, without
//! loading, arguments, a guard or a way to fail. If any selected field is not (or an item
//! lacks what a plain answer needs), the whole list takes async-graphql's ordinary path, so
//! errors, their paths and `null` propagation are exactly the ordinary ones.
//!
//! What the ordinary path does and this one mirrors (async-graphql 7.2,
//! `resolver_utils/container.rs`): fragments and inline fragments apply when their type
//! condition is the object's type or an interface it implements; `__typename` is the
//! object's type; response keys (aliases) repeated merge like `insert_value` does (first
//! scalar wins, objects merge); an object with no selected field is `null`. `@skip` and
//! `@include` are already applied to the document before execution; any other directive
//! left on a field sends the list down the ordinary path.
//!
//! The schema's only extension hooks parsing (`executor_access`), not field resolution; an
//! extension with a per-field `resolve` hook would not see the fields answered here.

use std::borrow::Cow;

use async_graphql::indexmap::IndexMap;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::resolve_list;
use async_graphql::{
    ContainerType, ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerResult,
    Value,
};

/// A GraphQL object some of whose fields can be answered from the value in hand.
pub trait PlainObject: OutputType + ContainerType {
    /// The answer to `field` (not `__typename`), or `None` when it needs the ordinary path.
    /// `ctx` is the selection set `field` belongs to.
    fn plain_field<'a>(
        &self,
        ctx: &ContextSelectionSet<'a>,
        field: &'a Positioned<Field>,
    ) -> Option<Value>;
}

/// A list field's items, answered in one pass when the selection allows (see the module).
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
        let plain: Option<Vec<Value>> = self.0.iter().map(|item| plain_object(item, ctx)).collect();
        match plain {
            Some(items) => Ok(Value::List(items)),
            None => resolve_list(ctx, field, &self.0, Some(self.0.len())).await,
        }
    }
}

/// `item` answered for the selection set of `ctx`, or `None` when some selected field is
/// not plain.
pub fn plain_object<'a, T: PlainObject>(item: &T, ctx: &ContextSelectionSet<'a>) -> Option<Value> {
    let mut fields = IndexMap::new();
    collect(item, ctx, &ctx.item.node, &mut fields)?;
    Some(if fields.is_empty() {
        Value::Null
    } else {
        Value::Object(fields)
    })
}

fn collect<'a, T: PlainObject>(
    item: &T,
    ctx: &ContextSelectionSet<'a>,
    set: &'a SelectionSet,
    fields: &mut IndexMap<Name, Value>,
) -> Option<()> {
    for selection in &set.items {
        let (condition, nested) = match &selection.node {
            Selection::Field(field) => {
                if !field.node.directives.is_empty() {
                    return None;
                }
                let value = if field.node.name.node == "__typename" {
                    Value::String(item.introspection_type_name().into_owned())
                } else {
                    item.plain_field(ctx, field)?
                };
                insert_value(fields, field.node.response_key().node.clone(), value);
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
        if applies(item, ctx, condition) {
            collect(item, &ctx.with_selection_set(nested), &nested.node, fields)?;
        }
    }
    Some(())
}

/// Whether a fragment with `condition` applies to `item`, an object: no condition, its own
/// type, or an interface it implements.
fn applies<T: PlainObject>(
    item: &T,
    ctx: &ContextSelectionSet<'_>,
    condition: Option<&str>,
) -> bool {
    let Some(condition) = condition else {
        return true;
    };
    let own = item.introspection_type_name();
    own == condition
        || T::type_name() == condition
        || ctx
            .schema_env
            .registry
            .implements
            .get(own.as_ref())
            .is_some_and(|interfaces| interfaces.contains(condition))
}

/// async-graphql's merge of a response key seen twice (`resolver_utils::container`).
fn insert_value(target: &mut IndexMap<Name, Value>, name: Name, value: Value) {
    if let Some(previous) = target.get_mut(&name) {
        match (previous, value) {
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
        }
    } else {
        target.insert(name, value);
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
