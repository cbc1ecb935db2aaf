//! Limits on what one operation may ask for, so a single request cannot tie up the server.
//!
//! They live on the schema, so they hold for every transport (HTTP and WebSocket) alike.
//! async-graphql enforces depth, complexity, parser recursion and directives per field;
//! aliases are counted by [`check_aliases`], which both transports call before execution.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Positioned, SchemaBuilder, ServerError};

use crate::error::ErrorCode;

/// The limits, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Deepest selection nesting (`{ a { b { c } } }` is 3).
    pub max_depth: usize,
    /// Highest total cost; every field costs 1, and a connection field's selection is paid
    /// once per item it may return (`first`/`last`).
    pub max_complexity: usize,
    /// Most aliased fields in one document.
    pub max_aliases: usize,
    /// Most directives on a single field.
    pub max_directives: usize,
    /// Whether `__schema` / `__type` may be queried.
    pub introspection: bool,
}

impl QueryLimits {
    pub fn apply<Q, M, S>(&self, builder: SchemaBuilder<Q, M, S>) -> SchemaBuilder<Q, M, S> {
        let builder = builder
            .limit_depth(self.max_depth)
            .limit_complexity(self.max_complexity)
            // The parser's own nesting guard (fragments and inline fragments count too) runs
            // before validation; keep it above the depth limit so that one reports first.
            .limit_recursive_depth(self.max_depth.saturating_mul(2).max(32))
            .limit_directives(self.max_directives);
        if self.introspection {
            builder
        } else {
            builder.disable_introspection()
        }
    }
}

/// Which limit a request error reports, from the messages of the pinned async-graphql
/// (which gives its limit errors no code); `None` for every other request error.
pub fn limit_name(message: &str) -> Option<&'static str> {
    if message.starts_with("Query is nested too deep") {
        Some("depth")
    } else if message.starts_with("Query is too complex") {
        Some("complexity")
    } else if message.starts_with("The recursion depth of the query") {
        Some("recursion")
    } else if message.starts_with("The number of directives on the field") {
        Some("directives")
    } else if message.starts_with(ALIAS_MESSAGE) {
        Some("aliases")
    } else {
        None
    }
}

const ALIAS_MESSAGE: &str = "Too many aliases";

/// Gives request errors (parse, validation, limits), which async-graphql leaves without a
/// code, the BAD_USER_INPUT code every error our clients see carries, and names the limit
/// when one was hit. Both transports call it.
pub fn code_request_errors(errors: &mut [ServerError]) {
    for error in errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::BadUserInput.as_str());
            if let Some(limit) = limit_name(&error.message) {
                extensions.set("limit", limit);
            }
        }
    }
}

/// Refuses a document with more than `max` aliases. Called by each transport before
/// execution rather than from a schema extension: with any extension installed,
/// async-graphql sends every field through its slower instrumented resolve path.
/// A document that does not parse passes; execution reports the parse error.
pub fn check_aliases(request: &mut async_graphql::Request, max: usize) -> Result<(), ServerError> {
    let Ok(document) = request.parsed_query() else {
        return Ok(());
    };
    let aliases = count_aliases(document);
    if aliases <= max {
        return Ok(());
    }
    let mut error = ServerError::new(
        format!("{ALIAS_MESSAGE}: {aliases} in the document, at most {max} allowed"),
        None,
    );
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::BadUserInput.as_str());
    extensions.set("limit", "aliases");
    error.extensions = Some(extensions);
    Err(error)
}

/// Aliased fields written in the document (operations and fragments, each counted once:
/// fragment reuse multiplies cost, which the complexity limit already accounts for).
fn count_aliases(document: &ExecutableDocument) -> usize {
    fn in_set(set: &Positioned<SelectionSet>) -> usize {
        set.node
            .items
            .iter()
            .map(|selection| match &selection.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + in_set(&field.node.selection_set)
                }
                Selection::InlineFragment(fragment) => in_set(&fragment.node.selection_set),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    let operations: usize = document
        .operations
        .iter()
        .map(|(_, operation)| in_set(&operation.node.selection_set))
        .sum();
    let fragments: usize = document
        .fragments
        .values()
        .map(|fragment| in_set(&fragment.node.selection_set))
        .sum();
    operations + fragments
}
