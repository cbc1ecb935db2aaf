//! Apollo's automatic persisted queries: a client sends the SHA-256 hash of its document in
//! `extensions.persistedQuery` instead of the document; the first time, the server answers
//! `PersistedQueryNotFound` and the client sends both, which the server keeps by hash for
//! every later request. Every transport resolves them in the one operation pipeline
//! (`http/operation.rs`), before the document is scanned and parsed.
//!
//! What is kept, and why so:
//! - a document is kept under its hash only after the server computed that hash from the
//!   text it was sent (a client cannot file a document under another's hash), and only once
//!   its request ran without a request error (as for parsed documents: what only an
//!   attacker would send is never kept);
//! - one cache for the instance, bounded by the bytes its texts take, not only by their
//!   number: least recently used documents make room, and a document larger than
//!   [`ENTRY_SHARE`] of the budget is run but never kept;
//! - with an allow-list (`--persisted-queries-only FILE`), every operation must name a
//!   listed hash, and only listed documents are run (sent in full, or from the cache).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_graphql::{ErrorExtensionValues, ServerError, Value};
use lru::LruCache;
use sha2::{Digest as _, Sha256};

use crate::error::ErrorCode;
use crate::metrics::METRICS;

/// At most this fraction (1/n) of the budget goes to one document.
const ENTRY_SHARE: usize = 16;

/// The request extension that carries the hash.
const EXTENSION: &str = "persistedQuery";

/// The only version of the extension there is.
const VERSION: i64 = 1;

/// The message and code Apollo clients recognise to send the document again.
pub const NOT_FOUND_MESSAGE: &str = "PersistedQueryNotFound";
pub const NOT_FOUND_CODE: &str = "PERSISTED_QUERY_NOT_FOUND";

/// A document's SHA-256.
type Hash = [u8; 32];

/// The instance's persisted queries, and the allow-list when there is one.
pub struct PersistedQueries {
    cache: Mutex<Cache>,
    budget_bytes: usize,
    allowed: Option<HashSet<Hash>>,
}

struct Cache {
    entries: LruCache<Hash, Arc<str>>,
    bytes: usize,
}

/// A document sent in full with its hash, to keep once its request ran without a request
/// error (see [`PersistedQueries::keep`]).
#[must_use = "pass it to PersistedQueries::keep once the request succeeded"]
pub struct Unpersisted(Option<(Hash, Arc<str>)>);

impl PersistedQueries {
    /// A cache of at most `budget_bytes` of documents; with `allowed`, only those hashes
    /// are accepted.
    pub fn new(budget_bytes: usize, allowed: Option<HashSet<Hash>>) -> Self {
        Self {
            cache: Mutex::new(Cache {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            budget_bytes,
            allowed,
        }
    }

    /// Reads an allow-list: one lower- or upper-case hex SHA-256 per line; blank lines and
    /// lines starting with `#` are skipped. An empty list would refuse everything, so it is
    /// an error, as is any other line.
    pub fn read_allow_list(path: &Path) -> anyhow::Result<HashSet<Hash>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the persisted query list {}", path.display()))?;
        let mut hashes = HashSet::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let hash = parse_hash(line).with_context(|| {
                format!(
                    "{} line {}: not a SHA-256 in hex (64 characters)",
                    path.display(),
                    number + 1
                )
            })?;
            hashes.insert(hash);
        }
        if hashes.is_empty() {
            anyhow::bail!("the persisted query list {} holds no hash", path.display());
        }
        Ok(hashes)
    }

    /// Gives `request` its document when it names one by hash; checks a document sent with
    /// its hash; under an allow-list, refuses everything else. An `Err` is the request
    /// error to answer with.
    pub fn resolve(
        &self,
        request: &mut async_graphql::Request,
    ) -> Result<Unpersisted, ServerError> {
        let Some(extension) = request.extensions.get(EXTENSION) else {
            if self.allowed.is_some() {
                return Err(not_allowed());
            }
            return Ok(Unpersisted(None));
        };
        let hash = read_extension(extension)?;
        if let Some(allowed) = &self.allowed
            && !allowed.contains(&hash)
        {
            return Err(not_allowed());
        }
        if request.query.is_empty() {
            let text = self
                .lock()
                .and_then(|mut cache| cache.entries.get(&hash).cloned());
            return match text {
                Some(text) => {
                    request.query = text.to_string();
                    Ok(Unpersisted(None))
                }
                None => Err(coded(NOT_FOUND_MESSAGE.to_owned(), NOT_FOUND_CODE)),
            };
        }
        let computed: Hash = Sha256::digest(request.query.as_bytes()).into();
        if computed != hash {
            return Err(bad_input(
                "provided sha does not match query".to_owned(),
                "extensions.persistedQuery.sha256Hash",
            ));
        }
        if self
            .lock()
            .is_some_and(|cache| cache.entries.contains(&hash))
            || entry_bytes(request.query.len()) > self.budget_bytes / ENTRY_SHARE
        {
            return Ok(Unpersisted(None));
        }
        Ok(Unpersisted(Some((hash, Arc::from(request.query.as_str())))))
    }

    /// Keeps a document [`resolve`](Self::resolve) checked, now that its request ran
    /// without a request error; least recently used documents make room for it.
    pub fn keep(&self, unpersisted: Unpersisted) {
        let Some((hash, text)) = unpersisted.0 else {
            return;
        };
        let Some(mut cache) = self.lock() else {
            return;
        };
        let cache = &mut *cache;
        let added = entry_bytes(text.len());
        if let Some(replaced) = cache.entries.put(hash, text) {
            cache.bytes = cache.bytes.saturating_sub(entry_bytes(replaced.len()));
        }
        cache.bytes = cache.bytes.saturating_add(added);
        while cache.bytes > self.budget_bytes {
            let Some((_, evicted)) = cache.entries.pop_lru() else {
                break;
            };
            cache.bytes = cache.bytes.saturating_sub(entry_bytes(evicted.len()));
        }
        METRICS.persisted_queries.set(gauge(cache.entries.len()));
        METRICS.persisted_queries_bytes.set(gauge(cache.bytes));
    }

    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Cache>> {
        // A poisoned lock only means another request panicked mid-update; answering
        // "not kept" is always correct (the client sends the document again).
        self.cache.lock().ok()
    }
}

/// The memory one kept document takes: its text (an `Arc<str>` allocation with two
/// counts), the hash key, and the LRU's node and table slot.
fn entry_bytes(text_len: usize) -> usize {
    const OVERHEAD: usize = 2 * size_of::<usize>() // Arc counts
        + size_of::<Hash>() + size_of::<Arc<str>>() + 2 * size_of::<usize>() // node
        + 2 * size_of::<usize>(); // table slot
    (text_len + OVERHEAD).div_ceil(16) * 16
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `{"version": 1, "sha256Hash": "<64 hex>"}`.
fn read_extension(extension: &Value) -> Result<Hash, ServerError> {
    let Value::Object(fields) = extension else {
        return Err(bad_input(
            "`persistedQuery` must be an object".to_owned(),
            "extensions.persistedQuery",
        ));
    };
    let version = match fields.get("version") {
        Some(Value::Number(number)) => number.as_i64(),
        _ => None,
    };
    if version != Some(VERSION) {
        return Err(bad_input(
            format!("unsupported persisted query version (only {VERSION} is supported)"),
            "extensions.persistedQuery.version",
        ));
    }
    match fields.get("sha256Hash") {
        Some(Value::String(hex)) => parse_hash(hex).ok_or_else(|| {
            bad_input(
                "`sha256Hash` must be a SHA-256 in hex (64 characters)".to_owned(),
                "extensions.persistedQuery.sha256Hash",
            )
        }),
        _ => Err(bad_input(
            "missing `sha256Hash`".to_owned(),
            "extensions.persistedQuery.sha256Hash",
        )),
    }
}

fn parse_hash(hex: &str) -> Option<Hash> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (byte, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(hash)
}

fn not_allowed() -> ServerError {
    coded(
        "only persisted operations on this server's list are accepted (--persisted-queries-only)"
            .to_owned(),
        ErrorCode::Forbidden.as_str(),
    )
}

fn bad_input(message: String, field: &str) -> ServerError {
    let mut error = coded(message, ErrorCode::BadUserInput.as_str());
    if let Some(extensions) = error.extensions.as_mut() {
        extensions.set("field", field);
    }
    error
}

fn coded(message: String, code: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> String {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn request(query: &str, hash: &str) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(query);
        let extension = serde_json::json!({ "version": 1, "sha256Hash": hash });
        if let Ok(value) = Value::from_json(extension) {
            request.extensions.0.insert(EXTENSION.to_owned(), value);
        }
        request
    }

    fn code(error: &ServerError) -> Option<String> {
        match error.extensions.as_ref()?.get("code")? {
            Value::String(code) => Some(code.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_hash_is_served_only_after_its_document_ran() {
        let queries = PersistedQueries::new(1 << 20, None);
        let query = "{ me { id } }";
        let Err(error) = queries.resolve(&mut request("", &hex(query))) else {
            panic!("an unknown hash was served");
        };
        assert_eq!(error.message, NOT_FOUND_MESSAGE);
        assert_eq!(code(&error).as_deref(), Some(NOT_FOUND_CODE));
        let Ok(unpersisted) = queries.resolve(&mut request(query, &hex(query))) else {
            panic!("a document with its own hash was refused");
        };
        // Not kept before its request succeeded.
        drop(unpersisted);
        assert!(queries.resolve(&mut request("", &hex(query))).is_err());
        let Ok(unpersisted) = queries.resolve(&mut request(query, &hex(query))) else {
            panic!("refused");
        };
        queries.keep(unpersisted);
        let mut by_hash = request("", &hex(query));
        assert!(queries.resolve(&mut by_hash).is_ok());
        assert_eq!(by_hash.query, query);
    }

    #[test]
    fn a_document_cannot_be_filed_under_another_hash() {
        let queries = PersistedQueries::new(1 << 20, None);
        let Err(error) = queries.resolve(&mut request("{ me { id } }", &hex("{ users { id } }")))
        else {
            panic!("a mismatched hash was accepted");
        };
        assert_eq!(code(&error).as_deref(), Some("BAD_USER_INPUT"));
        for bad in ["", "zz", &"g".repeat(64), &"a".repeat(63)] {
            assert!(queries.resolve(&mut request("", bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_cache_stays_within_its_byte_budget() {
        let budget = 64 * 1024;
        let queries = PersistedQueries::new(budget, None);
        for i in 0..1_000 {
            let query = format!("{{ me {{ id }} }} # {i} {}", "x".repeat(2_000));
            match queries.resolve(&mut request(&query, &hex(&query))) {
                Ok(unpersisted) => queries.keep(unpersisted),
                Err(error) => panic!("{error:?}"),
            }
        }
        let cache = queries.cache.lock().unwrap_or_else(|e| e.into_inner());
        assert!(cache.bytes <= budget, "{} > {budget}", cache.bytes);
        assert!(cache.entries.len() > 10 && cache.entries.len() < 40);
        // One larger than 1/16 of the budget runs but is never kept.
        drop(cache);
        let big = format!("{{ me {{ id }} }} # {}", "x".repeat(budget / 8));
        let Ok(Unpersisted(kept)) = queries.resolve(&mut request(&big, &hex(&big))) else {
            panic!("refused");
        };
        assert!(kept.is_none());
    }

    #[test]
    fn an_allow_list_refuses_everything_else() {
        let query = "{ me { id } }";
        let Some(allowed) = parse_hash(&hex(query)) else {
            panic!("hex");
        };
        let queries = PersistedQueries::new(1 << 20, Some(HashSet::from([allowed])));
        let plain = queries.resolve(&mut async_graphql::Request::new(query));
        assert_eq!(
            plain.err().and_then(|e| code(&e)).as_deref(),
            Some("FORBIDDEN")
        );
        let other = "{ users { id } }";
        let unlisted = queries.resolve(&mut request(other, &hex(other)));
        assert_eq!(
            unlisted.err().and_then(|e| code(&e)).as_deref(),
            Some("FORBIDDEN")
        );
        assert!(queries.resolve(&mut request(query, &hex(query))).is_ok());
    }
}
