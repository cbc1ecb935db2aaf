//! Relay-style connections over [`domain::page`](crate::domain::page): argument checks,
//! opaque cursors, and a lazily computed `totalCount`.
//!
//! A cursor is base64url(JSON of the keyset position plus the list's ordering tag). It is
//! opaque to clients; anything that does not decode to a position of the same ordering is
//! BAD_USER_INPUT, never a server error.

use std::future::Future;
use std::sync::Arc;

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Object, OutputType};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::domain::page::{
    DEFAULT_PAGE_SIZE, Direction, MAX_PAGE_SIZE, Page, PageRequest, Position,
};
use crate::error::{AppError, AppResult};

/// The longest cursor we bother decoding; real ones are far shorter.
const MAX_CURSOR_CHARS: usize = 512;

#[derive(Serialize, Deserialize)]
struct CursorBody {
    /// The ordering the cursor was issued for (e.g. `workflows:name`).
    o: String,
    #[serde(flatten)]
    position: Position,
}

/// Encodes `position` as an opaque cursor for the list ordering named `ordering`.
pub fn encode_cursor(ordering: &str, position: Position) -> String {
    let body = CursorBody {
        o: ordering.to_owned(),
        position,
    };
    // Serialising plain data cannot fail; an empty cursor would only fail to decode later.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).unwrap_or_default())
}

fn decode_cursor(argument: &str, ordering: &str, raw: &str) -> AppResult<Position> {
    let invalid = || {
        AppError::bad_input(
            argument,
            format!("{argument} is not a valid cursor for this list"),
        )
    };
    if raw.len() > MAX_CURSOR_CHARS {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| invalid())?;
    let body: CursorBody = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if body.o != ordering {
        return Err(AppError::bad_input(
            argument,
            format!(
                "{argument} belongs to a different list or ordering; restart paging without it"
            ),
        ));
    }
    Ok(body.position)
}

/// Which way a list is sorted.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortDirection {
    /// Smallest (oldest, A–Z) first.
    Asc,
    /// Largest (newest, Z–A) first.
    Desc,
}

/// The four Relay arguments as a client sent them.
#[derive(Debug, Default, Clone)]
pub struct PageArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
}

impl PageArgs {
    pub fn forward(first: Option<i32>, after: Option<String>) -> Self {
        Self {
            first,
            after,
            last: None,
            before: None,
        }
    }

    /// Checks the arguments and decodes the cursor for the list ordering `ordering`.
    pub fn into_request(self, ordering: &str) -> AppResult<PageRequest> {
        let size = |argument: &str, value: i32| -> AppResult<usize> {
            usize::try_from(value)
                .ok()
                .filter(|n| *n <= MAX_PAGE_SIZE)
                .ok_or_else(|| {
                    AppError::bad_input(
                        argument,
                        format!("{argument} must be between 0 and {MAX_PAGE_SIZE}"),
                    )
                })
        };
        match (self.first, self.last) {
            (Some(_), Some(_)) => Err(AppError::bad_input(
                "last",
                "pass either first or last, not both",
            )),
            (_, Some(last)) => {
                if self.after.is_some() {
                    return Err(AppError::bad_input(
                        "after",
                        "after pages forward; use it with first, not last",
                    ));
                }
                Ok(PageRequest {
                    direction: Direction::Backward,
                    limit: size("last", last)?,
                    cursor: self
                        .before
                        .as_deref()
                        .map(|c| decode_cursor("before", ordering, c))
                        .transpose()?,
                })
            }
            (first, None) => {
                if self.before.is_some() && first.is_some() {
                    return Err(AppError::bad_input(
                        "before",
                        "before pages backward; use it with last, not first",
                    ));
                }
                if let Some(before) = self.before {
                    // `before` alone: the page just before the cursor, default size.
                    return Ok(PageRequest {
                        direction: Direction::Backward,
                        limit: DEFAULT_PAGE_SIZE,
                        cursor: Some(decode_cursor("before", ordering, &before)?),
                    });
                }
                Ok(PageRequest {
                    direction: Direction::Forward,
                    limit: first
                        .map(|f| size("first", f))
                        .transpose()?
                        .unwrap_or(DEFAULT_PAGE_SIZE),
                    cursor: self
                        .after
                        .as_deref()
                        .map(|c| decode_cursor("after", ordering, c))
                        .transpose()?,
                })
            }
        }
    }
}

/// `totalCount` of a connection, counted only when a client asks for it: by its own
/// query, or through the request's batch loader when the connection sits under a list
/// (one `GROUP BY` for every parent instead of a `COUNT(*)` each).
pub struct TotalCount(Arc<dyn CountSource>);

/// Where a `totalCount` comes from.
pub trait CountSource: Send + Sync {
    fn count<'a>(&'a self, ctx: &'a Context<'_>) -> BoxFuture<'a, async_graphql::Result<i64>>;
}

struct QueryCount<F>(F);

impl<F> CountSource for QueryCount<F>
where
    F: Fn() -> BoxFuture<'static, AppResult<i64>> + Send + Sync,
{
    fn count<'a>(&'a self, _: &'a Context<'_>) -> BoxFuture<'a, async_graphql::Result<i64>> {
        Box::pin(async move { Ok((self.0)().await?) })
    }
}

impl TotalCount {
    pub fn new<F, Fut>(count: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AppResult<i64>> + Send + 'static,
    {
        let boxed = move || -> BoxFuture<'static, AppResult<i64>> { Box::pin(count()) };
        Self(Arc::new(QueryCount(boxed)))
    }

    /// A count the request's batch loader answers (see [`CountSource`]).
    pub fn from_source(source: impl CountSource + 'static) -> Self {
        Self(Arc::new(source))
    }
}

/// What `totalCount` adds to an operation's complexity: a `COUNT(*)` reads every matching
/// row's index entry, far more work than any field of a row already loaded. Like the rest of
/// a connection's selection it is paid once per item the page may hold (the complexity
/// hook cannot tell `totalCount` from `edges`), so the price errs on the safe side.
pub const COUNT_COMPLEXITY: usize = 25;

/// What every connection adds to an operation's complexity on top of its items: the round
/// trip to the database that loads its page. Under a list, it is paid once per parent.
pub const ROUND_TRIP_COMPLEXITY: usize = 20;

#[Object]
impl TotalCount {
    /// How many items the whole list holds (all pages, with the same filter).
    #[graphql(complexity = "COUNT_COMPLEXITY")]
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        self.0.count(ctx).await
    }
}

/// A connection whose edges carry opaque cursors.
pub type CountedConnection<N> = Connection<String, N, TotalCount>;

/// Builds a connection from a page, the ordering tag and how to find each node's position.
pub fn connection<T, N: OutputType>(
    page: Page<T>,
    ordering: &str,
    position_of: impl Fn(&T) -> Position,
    into_node: impl Fn(T) -> N,
    total: TotalCount,
) -> CountedConnection<N> {
    let mut connection =
        Connection::with_additional_fields(page.has_previous_page, page.has_next_page, total);
    connection.edges = page
        .items
        .into_iter()
        .map(|item| Edge::new(encode_cursor(ordering, position_of(&item)), into_node(item)))
        .collect();
    connection
}

/// Complexity of a connection field (`#[graphql(complexity = ...)]`): the field itself, the
/// database round trip that loads the page ([`ROUND_TRIP_COMPLEXITY`]), and its selection
/// once per item the page may hold, so `first: 100` costs five times `first: 20` and nested
/// connections multiply. Out-of-range sizes are priced at the most a page can hold: the
/// resolver refuses them anyway, and the price must not be cheaper.
pub fn page_complexity(first: Option<i32>, last: Option<i32>, child_complexity: usize) -> usize {
    let size = |n: Option<i32>| {
        n.map(|n| usize::try_from(n).map_or(MAX_PAGE_SIZE, |n| n.min(MAX_PAGE_SIZE)))
    };
    let items = match (size(first), size(last)) {
        (None, None) => DEFAULT_PAGE_SIZE,
        (Some(n), None) | (None, Some(n)) => n,
        (Some(a), Some(b)) => a.max(b),
    };
    // An empty page still resolves `pageInfo` and `totalCount` once.
    (1 + ROUND_TRIP_COMPLEXITY).saturating_add(items.max(1).saturating_mul(child_complexity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::page::SortValue;

    fn position() -> Position {
        Position {
            key: SortValue::Text("b".into()),
            id: "7".into(),
        }
    }

    #[test]
    fn cursors_round_trip_only_for_their_own_ordering() {
        let cursor = encode_cursor("workflows:name", position());
        let args = PageArgs::forward(Some(2), Some(cursor.clone()));
        assert_eq!(
            args.into_request("workflows:name")
                .ok()
                .and_then(|r| r.cursor),
            Some(position())
        );
        assert!(
            PageArgs::forward(Some(2), Some(cursor))
                .into_request("workflows:created_at")
                .is_err()
        );
    }

    #[test]
    fn forged_cursors_and_bad_sizes_are_user_errors() {
        for bad in ["", "%%%", "bm90IGpzb24", &"A".repeat(600)] {
            let result = PageArgs::forward(None, Some(bad.to_owned())).into_request("x");
            assert!(
                matches!(result, Err(AppError::BadUserInput { .. })),
                "{bad:?}"
            );
        }
        assert!(
            PageArgs::forward(Some(101), None)
                .into_request("x")
                .is_err()
        );
        assert!(PageArgs::forward(Some(-1), None).into_request("x").is_err());
        let both = PageArgs {
            first: Some(1),
            last: Some(1),
            ..Default::default()
        };
        assert!(both.into_request("x").is_err());
    }

    #[test]
    fn page_cost_follows_the_requested_size() {
        let trip = 1 + ROUND_TRIP_COMPLEXITY;
        assert_eq!(page_complexity(None, None, 3), trip + 20 * 3);
        assert_eq!(page_complexity(Some(100), None, 3), trip + 100 * 3);
        assert_eq!(page_complexity(None, Some(5), 3), trip + 5 * 3);
        assert_eq!(page_complexity(Some(0), None, 3), trip + 3);
        // Sizes the resolver refuses are priced at the maximum, never below.
        assert_eq!(page_complexity(Some(-1), None, 3), trip + 100 * 3);
        assert_eq!(page_complexity(Some(i32::MAX), None, 3), trip + 100 * 3);
        assert_eq!(page_complexity(Some(2), Some(50), 1), trip + 50);
        assert_eq!(page_complexity(None, None, usize::MAX), usize::MAX);
    }
}
