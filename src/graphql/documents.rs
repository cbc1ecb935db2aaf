//! Parsed documents, kept by query text. Clients send the same few operations over and over
//! with different variables, and parsing is the single largest cost of a small mutation
//! (a third of `reportStep`'s server instructions in the W1 profile, BENCHMARKS.md).

use std::num::NonZeroUsize;
use std::sync::Mutex;

use async_graphql::parser::types::ExecutableDocument;
use lru::LruCache;

/// Longer documents are parsed every time rather than kept: they are rare, and keeping them
/// would let a client fill memory with a few large queries.
const MAX_CACHED_QUERY_BYTES: usize = 16 * 1024;

/// The most recently used parsed documents of this instance, at most `capacity` of them.
pub struct ParsedDocuments {
    cache: Mutex<LruCache<String, ExecutableDocument>>,
}

impl ParsedDocuments {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }

    /// Gives `request` its parsed document: the kept one when this text was parsed before,
    /// otherwise it is parsed now (and kept if it parsed). A document that does not parse is
    /// left for execution to report.
    pub fn prepare(&self, request: &mut async_graphql::Request) {
        if request.query.len() > MAX_CACHED_QUERY_BYTES {
            return;
        }
        // A poisoned lock only means another request panicked mid-update of the cache;
        // parsing without it is always correct.
        if let Ok(mut cache) = self.cache.lock()
            && let Some(document) = cache.get(request.query.as_str())
        {
            request.set_parsed_query(document.clone());
            return;
        }
        let Ok(document) = request.parsed_query() else {
            return;
        };
        let document = document.clone();
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(request.query.clone(), document);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(capacity: usize) -> ParsedDocuments {
        ParsedDocuments::new(capacity)
    }

    #[test]
    fn a_kept_document_is_served_instead_of_parsing_again() {
        let documents = documents(4);
        let query = "query($id: ID!) { workflow(id: $id) { id steps { id } } }";
        documents.prepare(&mut async_graphql::Request::new(query));
        let mut fresh = async_graphql::Request::new(query);
        let Ok(parsed) = fresh.parsed_query() else {
            panic!("the query parses");
        };
        let expected = format!("{parsed:?}");
        // Swap the kept document's text for one that cannot parse: only the cache can make
        // the request come out with a document now.
        {
            let mut cache = documents.cache.lock().unwrap_or_else(|e| e.into_inner());
            let Some(kept) = cache.pop(query) else {
                panic!("the parsed document was not kept");
            };
            cache.put("{ not parsed".to_owned(), kept);
        }
        let mut served = async_graphql::Request::new("{ not parsed");
        documents.prepare(&mut served);
        let Ok(document) = served.parsed_query() else {
            panic!("the kept document was not served");
        };
        assert_eq!(format!("{document:?}"), expected);
    }

    #[test]
    fn documents_that_do_not_parse_or_are_too_long_are_not_kept() {
        let documents = documents(4);
        documents.prepare(&mut async_graphql::Request::new("{ broken"));
        let long = format!("{{ __typename {} }}", "a: __typename ".repeat(2_000));
        documents.prepare(&mut async_graphql::Request::new(long));
        assert_eq!(documents.cache.lock().map(|c| c.len()).unwrap_or(99), 0);
    }

    #[test]
    fn only_the_most_recent_documents_are_kept() {
        let documents = documents(2);
        for query in [
            "{ a: __typename }",
            "{ b: __typename }",
            "{ c: __typename }",
        ] {
            documents.prepare(&mut async_graphql::Request::new(query));
        }
        let cache = documents.cache.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains("{ a: __typename }"));
    }
}
