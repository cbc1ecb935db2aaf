//! Parsed documents, kept by query text. Clients send the same few operations over and over
//! with different variables, and parsing is the single largest cost of a small mutation
//! (a third of `reportStep`'s server instructions in the W1 profile, BENCHMARKS.md).
//!
//! Every document is checked by [`prescan`](super::prescan) before it is parsed (both
//! transports come through here), so no parse can overflow the stack or allocate more
//! than the token limit allows.
//!
//! What is kept, and why so: a document is kept only after its request ran without a
//! request error (it parsed, validated and passed every limit), so documents that only an
//! attacker would send — invalid ones, or ones over a limit — are never kept. And the cache
//! is bounded by an estimate of the memory its documents hold, not by their number or
//! their text: a 16 KiB document of one-letter fields parses into ~1.8 MB, so a count or a
//! text length says nothing about memory (1,000 such documents once took a server from
//! 28 MB to 1.86 GB). A document estimated at more than [`ENTRY_SHARE`] of the budget is
//! parsed every time instead, so one large operation cannot evict all the others.

use std::mem::size_of;
use std::sync::Mutex;

use async_graphql::parser::types::{
    BaseType, Directive, DocumentOperations, ExecutableDocument, Field, FragmentDefinition,
    OperationDefinition, Selection, SelectionSet, Type, VariableDefinition,
};
use async_graphql::{Name, Positioned, ServerError};
use async_graphql_value::{ConstValue, Value};
use lru::LruCache;

use super::prescan::DocumentLimits;
use crate::metrics::METRICS;

/// At most this fraction (1/n) of the budget goes to one document.
const ENTRY_SHARE: usize = 16;

/// The most recently used parsed documents of this instance, within a memory budget.
pub struct ParsedDocuments {
    cache: Mutex<Cache>,
    limits: DocumentLimits,
    budget_bytes: usize,
}

struct Cache {
    entries: LruCache<String, Entry>,
    bytes: usize,
}

struct Entry {
    document: ExecutableDocument,
    bytes: usize,
}

/// A document parsed for one request and not kept yet: [`ParsedDocuments::keep`] keeps it
/// once the request has run without a request error.
#[must_use = "pass it to ParsedDocuments::keep once the request succeeded"]
pub struct Unkept(Option<(String, Entry)>);

impl ParsedDocuments {
    /// A cache of at most about `budget_bytes` of parsed documents, each document checked
    /// against `limits` before it is parsed.
    pub fn new(limits: DocumentLimits, budget_bytes: usize) -> Self {
        Self {
            cache: Mutex::new(Cache {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            limits,
            budget_bytes,
        }
    }

    /// Gives `request` its parsed document: the kept one when this text ran before,
    /// otherwise the text is scanned against the document limits and parsed. An `Err` is
    /// the request error to answer with (a limit, or the parse error); the request must not
    /// be executed then.
    pub fn prepare(&self, request: &mut async_graphql::Request) -> Result<Unkept, ServerError> {
        // A poisoned lock only means another request panicked mid-update of the cache;
        // parsing without it is always correct.
        if let Ok(mut cache) = self.cache.lock()
            && let Some(entry) = cache.entries.get(request.query.as_str())
        {
            request.set_parsed_query(entry.document.clone());
            return Ok(Unkept(None));
        }
        self.limits.check(&request.query)?;
        let text_len = request.query.len();
        let document = request.parsed_query()?;
        let bytes = estimate(document, text_len);
        if bytes > self.budget_bytes / ENTRY_SHARE {
            return Ok(Unkept(None));
        }
        let entry = Entry {
            document: document.clone(),
            bytes,
        };
        Ok(Unkept(Some((request.query.clone(), entry))))
    }

    /// Keeps a document [`prepare`](Self::prepare) parsed, now that its request ran without
    /// a request error; the least recently used documents make room for it.
    pub fn keep(&self, unkept: Unkept) {
        let Some((text, entry)) = unkept.0 else {
            return;
        };
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let cache = &mut *cache;
        let added = entry.bytes;
        // A concurrent request may have kept the same text meanwhile.
        if let Some(replaced) = cache.entries.put(text, entry) {
            cache.bytes = cache.bytes.saturating_sub(replaced.bytes);
        }
        cache.bytes = cache.bytes.saturating_add(added);
        while cache.bytes > self.budget_bytes {
            let Some((_, evicted)) = cache.entries.pop_lru() else {
                break;
            };
            cache.bytes = cache.bytes.saturating_sub(evicted.bytes);
        }
        METRICS.parsed_documents.set(gauge(cache.entries.len()));
        METRICS.parsed_documents_bytes.set(gauge(cache.bytes));
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// The memory estimate
// ---------------------------------------------------------------------------

/// What one heap allocation of `bytes` costs: rounded up to the allocator's 16-byte
/// granularity, at least one granule.
fn allocation(bytes: usize) -> usize {
    bytes.max(1).div_ceil(16) * 16
}

/// The heap memory a kept document holds: every node's own size (the `Vec`s and maps that
/// hold them are exactly as long as a clone makes them), one allocation per name, string,
/// list and map, and the query text the entry is kept under. Names are `Arc<str>`s shared
/// between the parsed document and its kept clone, so counting them here counts them once.
fn estimate(document: &ExecutableDocument, text_len: usize) -> usize {
    // The LRU node (key, entry, two links) and its slot in the LRU's hash table.
    let mut bytes = allocation(text_len)
        + allocation(size_of::<String>() + size_of::<Entry>() + 2 * size_of::<usize>())
        + 2 * size_of::<usize>();
    match &document.operations {
        DocumentOperations::Single(operation) => bytes += operation_bytes(&operation.node),
        DocumentOperations::Multiple(operations) => {
            bytes += map_bytes::<Positioned<OperationDefinition>>(operations.len());
            for (name, operation) in operations {
                bytes += name_bytes(name) + operation_bytes(&operation.node);
            }
        }
    }
    bytes += map_bytes::<Positioned<FragmentDefinition>>(document.fragments.len());
    for (name, fragment) in &document.fragments {
        let fragment = &fragment.node;
        bytes += name_bytes(name)
            + name_bytes(&fragment.type_condition.node.on.node)
            + directives_bytes(&fragment.directives)
            + selection_set_bytes(&fragment.selection_set.node);
    }
    bytes
}

/// A hash map of `len` entries keyed by name (hashbrown: the entries plus a control byte
/// each, at a load factor of up to 7/8).
fn map_bytes<V>(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let entry = size_of::<Name>() + size_of::<V>() + 1;
    allocation(entry * len * 8 / 7 + entry)
}

fn vec_bytes<T>(items: &[T]) -> usize {
    if items.is_empty() {
        0
    } else {
        allocation(std::mem::size_of_val(items))
    }
}

fn name_bytes(name: &Name) -> usize {
    // Arc<str>: two reference counts and the text.
    allocation(2 * size_of::<usize>() + name.len())
}

fn operation_bytes(operation: &OperationDefinition) -> usize {
    vec_bytes(&operation.variable_definitions)
        + operation
            .variable_definitions
            .iter()
            .map(|definition| variable_bytes(&definition.node))
            .sum::<usize>()
        + directives_bytes(&operation.directives)
        + selection_set_bytes(&operation.selection_set.node)
}

fn variable_bytes(definition: &VariableDefinition) -> usize {
    name_bytes(&definition.name.node)
        + type_bytes(&definition.var_type.node)
        + directives_bytes(&definition.directives)
        + definition
            .default_value
            .as_ref()
            .map_or(0, |value| const_value_bytes(&value.node))
}

fn type_bytes(ty: &Type) -> usize {
    match &ty.base {
        BaseType::Named(name) => name_bytes(name),
        BaseType::List(inner) => allocation(size_of::<Type>()) + type_bytes(inner),
    }
}

fn directives_bytes(directives: &[Positioned<Directive>]) -> usize {
    vec_bytes(directives)
        + directives
            .iter()
            .map(|directive| {
                name_bytes(&directive.node.name.node) + arguments_bytes(&directive.node.arguments)
            })
            .sum::<usize>()
}

fn arguments_bytes(arguments: &[(Positioned<Name>, Positioned<Value>)]) -> usize {
    vec_bytes(arguments)
        + arguments
            .iter()
            .map(|(name, value)| name_bytes(&name.node) + value_bytes(&value.node))
            .sum::<usize>()
}

fn selection_set_bytes(set: &SelectionSet) -> usize {
    vec_bytes(&set.items)
        + set
            .items
            .iter()
            .map(|selection| match &selection.node {
                Selection::Field(field) => field_bytes(&field.node),
                Selection::FragmentSpread(spread) => {
                    name_bytes(&spread.node.fragment_name.node)
                        + directives_bytes(&spread.node.directives)
                }
                Selection::InlineFragment(fragment) => {
                    fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(0, |condition| name_bytes(&condition.node.on.node))
                        + directives_bytes(&fragment.node.directives)
                        + selection_set_bytes(&fragment.node.selection_set.node)
                }
            })
            .sum::<usize>()
}

fn field_bytes(field: &Field) -> usize {
    field
        .alias
        .as_ref()
        .map_or(0, |alias| name_bytes(&alias.node))
        + name_bytes(&field.name.node)
        + arguments_bytes(&field.arguments)
        + directives_bytes(&field.directives)
        + selection_set_bytes(&field.selection_set.node)
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Variable(name) | Value::Enum(name) => name_bytes(name),
        Value::String(text) => allocation(text.len()),
        Value::Binary(bytes) => allocation(bytes.len()),
        Value::List(items) => vec_bytes(items) + items.iter().map(value_bytes).sum::<usize>(),
        Value::Object(fields) => {
            object_bytes::<Value>(fields.len())
                + fields
                    .iter()
                    .map(|(name, value)| name_bytes(name) + value_bytes(value))
                    .sum::<usize>()
        }
        Value::Null | Value::Number(_) | Value::Boolean(_) => 0,
    }
}

fn const_value_bytes(value: &ConstValue) -> usize {
    match value {
        ConstValue::Enum(name) => name_bytes(name),
        ConstValue::String(text) => allocation(text.len()),
        ConstValue::Binary(bytes) => allocation(bytes.len()),
        ConstValue::List(items) => {
            vec_bytes(items) + items.iter().map(const_value_bytes).sum::<usize>()
        }
        ConstValue::Object(fields) => {
            object_bytes::<ConstValue>(fields.len())
                + fields
                    .iter()
                    .map(|(name, value)| name_bytes(name) + const_value_bytes(value))
                    .sum::<usize>()
        }
        ConstValue::Null | ConstValue::Number(_) | ConstValue::Boolean(_) => 0,
    }
}

/// An `IndexMap` of `len` entries: the entries (key, value, hash) and the index table.
fn object_bytes<V>(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    allocation((size_of::<Name>() + size_of::<V>() + size_of::<u64>()) * len)
        + allocation((size_of::<usize>() + 1) * len * 8 / 7 + 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DocumentLimits = DocumentLimits {
        max_nesting: 64,
        max_tokens: 10_000,
    };

    fn documents(budget_bytes: usize) -> ParsedDocuments {
        ParsedDocuments::new(LIMITS, budget_bytes)
    }

    /// Prepares `query` and, as when its request succeeded, keeps the document.
    fn run(documents: &ParsedDocuments, query: &str) {
        match documents.prepare(&mut async_graphql::Request::new(query)) {
            Ok(unkept) => documents.keep(unkept),
            Err(error) => panic!("{query}: {error:?}"),
        }
    }

    fn kept(documents: &ParsedDocuments) -> (usize, usize) {
        let cache = documents.cache.lock().unwrap_or_else(|e| e.into_inner());
        (cache.entries.len(), cache.bytes)
    }

    #[test]
    fn a_kept_document_is_served_instead_of_parsing_again() {
        let documents = documents(1 << 20);
        let query = "query($id: ID!) { workflow(id: $id) { id steps { id } } }";
        run(&documents, query);
        let mut fresh = async_graphql::Request::new(query);
        let Ok(parsed) = fresh.parsed_query() else {
            panic!("the query parses");
        };
        let expected = format!("{parsed:?}");
        // Swap the kept document's text for one that cannot parse: only the cache can make
        // the request come out with a document now.
        {
            let mut cache = documents.cache.lock().unwrap_or_else(|e| e.into_inner());
            let Some(kept) = cache.entries.pop(query) else {
                panic!("the parsed document was not kept");
            };
            cache.entries.put("{ not parsed".to_owned(), kept);
        }
        let mut served = async_graphql::Request::new("{ not parsed");
        assert!(documents.prepare(&mut served).is_ok());
        let Ok(document) = served.parsed_query() else {
            panic!("the kept document was not served");
        };
        assert_eq!(format!("{document:?}"), expected);
    }

    #[test]
    fn nothing_is_kept_until_the_request_succeeded() {
        let documents = documents(1 << 20);
        // Parsed, but its request was a request error (say, invalid): never kept.
        let unkept = documents.prepare(&mut async_graphql::Request::new("{ nope }"));
        assert!(unkept.is_ok());
        drop(unkept);
        assert_eq!(kept(&documents).0, 0);
        // Refused before parsing: nothing to keep, and the refusal is the answer.
        let deep = format!("{{ a(x: {}{}) }}", "[".repeat(100), "]".repeat(100));
        let Err(error) = documents.prepare(&mut async_graphql::Request::new(deep)) else {
            panic!("a too deep document was accepted");
        };
        assert!(error.message.contains("nests"), "{error:?}");
        let Err(error) = documents.prepare(&mut async_graphql::Request::new("{ broken")) else {
            panic!("an unparsable document was accepted");
        };
        assert!(
            !error.locations.is_empty(),
            "the parse error says where: {error:?}"
        );
        assert_eq!(kept(&documents).0, 0);
    }

    #[test]
    fn the_cache_stays_within_its_memory_budget() {
        let budget = 1 << 20;
        let documents = documents(budget);
        // Each ~20 KB parsed: a few dozen fit, a thousand do not.
        for i in 0..1_000 {
            let query = format!("{{ {} }} # {i}", "__typename ".repeat(80));
            run(&documents, &query);
        }
        let (entries, bytes) = kept(&documents);
        assert!(bytes <= budget, "{bytes} bytes kept, budget {budget}");
        assert!(entries > 20 && entries < 1_000, "{entries} entries");
        // The most recent ones are those kept.
        let cache = documents.cache.lock().unwrap_or_else(|e| e.into_inner());
        let latest = format!("{{ {} }} # 999", "__typename ".repeat(80));
        assert!(cache.entries.contains(latest.as_str()));
    }

    #[test]
    fn a_document_too_large_for_its_share_is_parsed_every_time() {
        let documents = documents(64 * 1024);
        let large = format!("{{ {} }}", "__typename ".repeat(2_000));
        run(&documents, &large);
        assert_eq!(kept(&documents), (0, 0));
        run(&documents, "{ __typename }");
        assert_eq!(kept(&documents).0, 1);
    }

    #[test]
    fn the_estimate_follows_the_size_of_the_document() {
        let estimate_of = |query: &str| {
            let mut request = async_graphql::Request::new(query);
            let Ok(document) = request.parsed_query() else {
                panic!("{query} parses");
            };
            estimate(document, query.len())
        };
        // About the ~225 bytes per one-letter field measured for the issue (7,990 fields of
        // a 16 KiB document parsed into ~1.8 MB).
        let fields = estimate_of(&format!("{{ {} }}", "a ".repeat(7_990)));
        assert!(
            (1_400_000..2_600_000).contains(&fields),
            "{fields} bytes for 7,990 fields"
        );
        let small = estimate_of("query($id: ID!) { workflow(id: $id) { id name } }");
        assert!((500..4_000).contains(&small), "{small} bytes");
        let values = estimate_of(
            "{ a(x: [1, 2, {b: \"text\", c: [ENUM, $v]}]) @skip(if: false) ...F } \
             fragment F on Query { ... on Query { b } }",
        );
        assert!(values > small, "{values} bytes");
    }
}
