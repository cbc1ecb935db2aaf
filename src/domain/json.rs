//! JSON documents kept in text columns (selectors, page context, settings, ...).
//!
//! Where the model expects an object, anything else is refused, and every document has a
//! size cap so one request cannot store megabytes in a row.
//!
//! Nesting is capped on the way in as well: serde_json refuses to read documents nested
//! deeper than 128 levels, so a deeper one written as an inline GraphQL literal (which
//! does not pass through serde_json's reader) used to be stored and then failed every read
//! of its row with INTERNAL. The cap is well below the reader's and matches the nesting
//! the transport allows in a document.

use serde_json::Value;

use crate::error::{AppError, AppResult};

/// The cap for step documents (selectors, DOM context, ...).
pub const MAX_STEP_JSON_BYTES: usize = 64 * 1024;
/// Deepest nesting of arrays and objects a stored document may have (`{}` is 1 level).
pub const MAX_JSON_DEPTH: usize = 64;

/// Serialises `value` for storage after checking it is an object no larger than `max_bytes`.
pub fn object_text(field: &str, value: &Value, max_bytes: usize) -> AppResult<String> {
    if !value.is_object() {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be a JSON object"),
        ));
    }
    if exceeds_depth(value, MAX_JSON_DEPTH) {
        return Err(AppError::bad_input(
            field,
            format!("{field} must not nest arrays and objects deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    let text = value.to_string();
    if text.len() > max_bytes {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be at most {} KiB of JSON", max_bytes / 1024),
        ));
    }
    Ok(text)
}

/// Serialises any JSON value (a run's input or output: an object, a list, even a bare
/// number) for storage after checking its nesting and that it is no larger than
/// `max_bytes`.
pub fn value_text(field: &str, value: &Value, max_bytes: usize) -> AppResult<String> {
    if exceeds_depth(value, MAX_JSON_DEPTH) {
        return Err(AppError::bad_input(
            field,
            format!("{field} must not nest arrays and objects deeper than {MAX_JSON_DEPTH} levels"),
        ));
    }
    let text = value.to_string();
    if text.len() > max_bytes {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be at most {max_bytes} bytes of JSON"),
        ));
    }
    Ok(text)
}

/// Whether `value` nests arrays and objects deeper than `max` levels. Iterative, so a
/// hostile depth cannot exhaust the stack here; stops at the first level too deep.
pub(crate) fn exceeds_depth(value: &Value, max: usize) -> bool {
    let mut pending: Vec<(&Value, usize)> = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        if (value.is_array() || value.is_object()) && depth > max {
            return true;
        }
        match value {
            Value::Array(items) => pending.extend(items.iter().map(|child| (child, depth + 1))),
            Value::Object(fields) => {
                pending.extend(fields.values().map(|child| (child, depth + 1)));
            }
            _ => {}
        }
    }
    false
}

/// Reads a stored document back. Stored text was validated on the way in; if it is somehow
/// not JSON, that is our bug, reported as INTERNAL.
pub fn parse(column: &str, text: &str) -> AppResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| AppError::internal(anyhow::anyhow!("column {column} holds invalid JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_bounded_objects_are_stored() {
        assert_eq!(
            object_text("s", &json!({"a": 1}), 100).ok().as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert!(object_text("s", &json!([1]), 100).is_err());
        assert!(object_text("s", &json!("x"), 100).is_err());
        assert!(object_text("s", &json!({"a": "x".repeat(200)}), 100).is_err());
    }

    /// `{"a": {"a": ... {} ...}}`, `levels` objects deep.
    fn nested(levels: usize) -> Value {
        let mut value = json!({});
        for _ in 1..levels {
            value = json!({ "a": value });
        }
        value
    }

    #[test]
    fn nesting_is_capped_below_what_serde_json_can_read_back() {
        assert!(!exceeds_depth(&json!(1), 0));
        assert!(!exceeds_depth(&json!({}), 1));
        assert!(exceeds_depth(&json!({"a": []}), 1));
        assert!(!exceeds_depth(&json!({"a": [1, {"b": 2}]}), 3));
        assert!(exceeds_depth(&json!({"a": [1, {"b": []}]}), 3));

        let deepest = nested(MAX_JSON_DEPTH);
        let stored = object_text("s", &deepest, MAX_STEP_JSON_BYTES);
        let text = stored.as_deref().unwrap_or_default();
        assert!(
            parse("s", text).is_ok(),
            "the deepest accepted document reads back"
        );
        assert!(object_text("s", &nested(MAX_JSON_DEPTH + 1), MAX_STEP_JSON_BYTES).is_err());
        // Deeper than serde_json reads: refused on the way in, never stored.
        let mut too_deep = json!({});
        for _ in 0..200 {
            too_deep = json!({ "a": [too_deep] });
        }
        assert!(object_text("s", &too_deep, MAX_STEP_JSON_BYTES).is_err());
    }
}
