//! Keyset pagination shared by every list: a page is asked for as "`limit` rows after (or
//! before) this position", where a position is the sort key plus the id that breaks ties.
//! Rows inserted between two page requests therefore never shift or repeat what a client
//! already saw.

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: usize = 100;
pub const DEFAULT_PAGE_SIZE: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `first` / `after`: rows following the cursor in the requested order.
    Forward,
    /// `last` / `before`: rows preceding the cursor, still returned in the requested order.
    Backward,
}

/// A sort-key value as stored in a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortValue {
    /// A timestamp, as microseconds since the epoch (the precision both backends keep).
    Time(i64),
    Text(String),
    Float(f64),
    /// A whole number (a version number).
    Int(i64),
}

impl SortValue {
    pub fn time(at: NaiveDateTime) -> Self {
        Self::Time(at.and_utc().timestamp_micros())
    }

    pub fn as_time(&self) -> Option<NaiveDateTime> {
        match self {
            Self::Time(micros) => {
                chrono::DateTime::from_timestamp_micros(*micros).map(|t| t.naive_utc())
            }
            _ => None,
        }
    }
}

/// Where a page starts: the sort key of the last row seen and its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub key: SortValue,
    pub id: String,
}

/// A validated page request.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub direction: Direction,
    pub limit: usize,
    pub cursor: Option<Position>,
}

impl PageRequest {
    pub fn first(limit: usize) -> Self {
        Self {
            direction: Direction::Forward,
            limit,
            cursor: None,
        }
    }

    /// Rows to fetch: one more than asked, to learn whether another page exists.
    pub fn fetch_limit(&self) -> i64 {
        i64::try_from(self.limit)
            .unwrap_or(i64::MAX)
            .saturating_add(1)
    }

    /// The page as the database reads it, for a list sorted `descending` by a key that
    /// `value` reads out of a cursor.
    pub fn keyset<V>(
        &self,
        descending: bool,
        value: impl Fn(&SortValue) -> crate::error::AppResult<V>,
    ) -> crate::error::AppResult<crate::db::Keyset<V>> {
        let after = match &self.cursor {
            Some(position) => Some((value(&position.key)?, position.id.clone())),
            None => None,
        };
        Ok(crate::db::Keyset {
            backward: self.scans_backward(descending),
            after,
            limit: self.fetch_limit(),
        })
    }

    /// Whether the query must scan in the reverse of the requested order.
    pub fn scans_backward(&self, descending: bool) -> bool {
        (self.direction == Direction::Backward) != descending
    }
}

/// One page of rows, in the requested order.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
    pub has_previous_page: bool,
}

impl<T> Page<T> {
    /// Builds a page from rows fetched with [`PageRequest::fetch_limit`], in scan order.
    pub fn from_scan(mut rows: Vec<T>, request: &PageRequest) -> Self {
        let more = rows.len() > request.limit;
        rows.truncate(request.limit);
        let has_cursor = request.cursor.is_some();
        match request.direction {
            Direction::Forward => Self {
                items: rows,
                has_next_page: more,
                has_previous_page: has_cursor,
            },
            Direction::Backward => {
                rows.reverse();
                Self {
                    items: rows,
                    has_next_page: has_cursor,
                    has_previous_page: more,
                }
            }
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            has_next_page: self.has_next_page,
            has_previous_page: self.has_previous_page,
        }
    }
}

/// Splits rows read one page per parent into each parent's page; parents without rows get
/// an empty page. `scan_order` compares two rows of one parent in the order they were
/// scanned (the statement does not promise to return them in it).
pub fn pages_by_parent<T>(
    rows: Vec<T>,
    parents: &[String],
    request: &PageRequest,
    parent_of: impl Fn(&T) -> &str,
    scan_order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> std::collections::HashMap<String, Page<T>> {
    let mut grouped: std::collections::HashMap<String, Vec<T>> =
        parents.iter().map(|p| (p.clone(), Vec::new())).collect();
    for row in rows {
        if let Some(rows) = grouped.get_mut(parent_of(&row)) {
            rows.push(row);
        }
    }
    grouped
        .into_iter()
        .map(|(parent, mut rows)| {
            rows.sort_by(&scan_order);
            (parent, Page::from_scan(rows, request))
        })
        .collect()
}

/// The cursor key as a timestamp (for [`PageRequest::keyset`]).
pub fn time_key(key: &SortValue) -> crate::error::AppResult<NaiveDateTime> {
    key.as_time().ok_or_else(cursor_mismatch)
}

/// The cursor key as text (for [`PageRequest::keyset`]).
pub fn text_key(key: &SortValue) -> crate::error::AppResult<String> {
    match key {
        SortValue::Text(text) => Ok(text.clone()),
        _ => Err(cursor_mismatch()),
    }
}

/// The cursor key as a number (for [`PageRequest::keyset`]).
pub fn float_key(key: &SortValue) -> crate::error::AppResult<f64> {
    match key {
        SortValue::Float(value) if value.is_finite() => Ok(*value),
        _ => Err(cursor_mismatch()),
    }
}

/// The cursor key as a 32-bit whole number (for [`PageRequest::keyset`]).
pub fn int_key(key: &SortValue) -> crate::error::AppResult<i32> {
    match key {
        SortValue::Int(value) => i32::try_from(*value).map_err(|_| cursor_mismatch()),
        _ => Err(cursor_mismatch()),
    }
}

/// The error a cursor from another list or ordering gets.
pub fn cursor_mismatch() -> crate::error::AppError {
    crate::error::AppError::bad_input(
        "after",
        "the cursor does not belong to this list or ordering",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(direction: Direction, limit: usize, cursor: bool) -> PageRequest {
        let cursor = cursor.then(|| Position {
            key: SortValue::Text("x".into()),
            id: "1".into(),
        });
        PageRequest {
            direction,
            limit,
            cursor,
        }
    }

    #[test]
    fn forward_pages_report_more_rows_and_a_previous_page() {
        let page = Page::from_scan(vec![1, 2, 3], &request(Direction::Forward, 2, true));
        assert_eq!(page.items, vec![1, 2]);
        assert!(page.has_next_page && page.has_previous_page);
    }

    #[test]
    fn backward_pages_come_back_in_requested_order() {
        let page = Page::from_scan(vec![5, 4, 3], &request(Direction::Backward, 2, false));
        assert_eq!(page.items, vec![4, 5]);
        assert!(page.has_previous_page && !page.has_next_page);
    }

    #[test]
    fn timestamps_survive_the_cursor_round_trip() {
        let at = crate::domain::now();
        assert_eq!(SortValue::time(at).as_time(), Some(at));
    }
}
