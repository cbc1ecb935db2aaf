//! JSON documents kept in text columns (selectors, page context, settings, ...).
//!
//! Where the model expects an object, anything else is refused, and every document has a
//! size cap so one request cannot store megabytes in a row.

use serde_json::Value;

use crate::error::{AppError, AppResult};

/// The cap for step documents (selectors, DOM context, ...).
pub const MAX_STEP_JSON_BYTES: usize = 64 * 1024;

/// Serialises `value` for storage after checking it is an object no larger than `max_bytes`.
pub fn object_text(field: &str, value: &Value, max_bytes: usize) -> AppResult<String> {
    if !value.is_object() {
        return Err(AppError::bad_input(
            field,
            format!("{field} must be a JSON object"),
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
}
