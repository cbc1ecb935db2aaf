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

/// Refuses text containing NUL anywhere in a request: in a variable (values and object
/// keys, at any depth) or as an escape (`\u0000`, `\u{0}`) in the document. PostgreSQL
/// cannot store or compare text with NUL (it answered INTERNAL) while SQLite took it, so
/// both backends refuse it here, once, before anything runs: no argument of this API has
/// a use for it. A raw NUL byte in the document is already a syntax error.
pub fn refuse_nul(request: &async_graphql::Request) -> Result<(), ServerError> {
    fn holds_nul(value: &async_graphql::Value) -> bool {
        use async_graphql::Value;
        match value {
            Value::String(text) => text.contains('\0'),
            Value::Enum(name) => name.contains('\0'),
            Value::List(items) => items.iter().any(holds_nul),
            Value::Object(fields) => fields
                .iter()
                .any(|(key, value)| key.contains('\0') || holds_nul(value)),
            Value::Null | Value::Number(_) | Value::Boolean(_) | Value::Binary(_) => false,
        }
    }
    let field = request
        .variables
        .iter()
        .find(|(_, value)| holds_nul(value))
        .map(|(name, _)| name.to_string())
        .or_else(|| has_nul_escape(&request.query).then(|| "query".to_owned()));
    let Some(field) = field else {
        return Ok(());
    };
    let mut error = ServerError::new(format!("{field} must not contain NUL characters"), None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::BadUserInput.as_str());
    extensions.set("field", field);
    error.extensions = Some(extensions);
    Err(error)
}

/// Whether `document` has a `\u` escape naming U+0000 (`\u0000` or `\u{0}`, any number of
/// zeros). Outside strings such text is a syntax error or a comment either way.
fn has_nul_escape(document: &str) -> bool {
    document.match_indices("\\u").any(|(at, _)| {
        let rest = &document[at + 2..];
        let digits = match rest.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => &braced[..end],
                None => return false,
            },
            None => rest.get(..4).unwrap_or_default(),
        };
        !digits.is_empty() && digits.bytes().all(|b| b == b'0')
    })
}

#[cfg(test)]
mod nul_tests {
    use super::*;

    #[test]
    fn nul_escapes_are_found_in_both_spellings() {
        assert!(has_nul_escape(r#"{ a(x: "\u0000") }"#));
        assert!(has_nul_escape(r#"{ a(x: "ab\u{0}") }"#));
        assert!(has_nul_escape(r#"{ a(x: "\u{000}") }"#));
        assert!(!has_nul_escape(r#"{ a(x: "\u0041\u00e9\u{1F600}") }"#));
        assert!(!has_nul_escape(r#"{ a(x: "\u00") }"#));
    }

    #[test]
    fn nul_in_any_variable_is_refused_naming_it() {
        let request = async_graphql::Request::new("query($f: F) { a(f: $f) }").variables(
            async_graphql::Variables::from_json(
                serde_json::json!({ "f": { "tags": ["ok", "bad\u{0}"] } }),
            ),
        );
        let refused = refuse_nul(&request).err();
        assert_eq!(
            refused.map(|e| e.message),
            Some("f must not contain NUL characters".to_owned())
        );
        let clean = async_graphql::Request::new("{ a }");
        assert!(refuse_nul(&clean).is_ok());
    }
}
