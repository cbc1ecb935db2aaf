//! Template parameters: named `{{placeholders}}` in a template's step texts and JSON
//! documents, each typed (STRING, NUMBER, BOOLEAN, SECRET) with a default and a required
//! flag, and their substitution when a template is instantiated.
//!
//! Substitution keeps JSON valid and typed: a JSON string that is exactly one placeholder
//! becomes the value itself (a NUMBER placeholder becomes a number, a BOOLEAN one a
//! boolean); a placeholder inside longer text is replaced by the value's text. Everything
//! is bounded before work proportional to it starts: the number of parameters, name and
//! value sizes, and every substituted text and document against the limits of a step, with
//! the work stopped as soon as a result would pass them.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{AppError, AppResult};

/// Most parameters a template declares (and values an instantiation may send).
pub const MAX_PARAMETERS: usize = 50;
/// Longest parameter name.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest parameter description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// Largest text value (STRING, SECRET) in bytes.
pub const MAX_VALUE_BYTES: usize = 4_096;

crate::text_enum! {
    /// What a parameter's value is.
    pub enum ParameterType {
        String = "string",
        Number = "number",
        Boolean = "boolean",
        /// A string never shown back (no default; clients mask it).
        Secret = "secret",
    }
}

/// A parameter as declared when publishing.
#[derive(Debug, Clone)]
pub struct ParameterInput {
    pub name: String,
    pub kind: ParameterType,
    pub description: Option<String>,
    pub default: Option<Value>,
    pub required: bool,
}

/// A declared parameter, as a template keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    pub required: bool,
}

impl Parameter {
    pub fn kind(&self) -> ParameterType {
        ParameterType::parse(&self.kind).unwrap_or(ParameterType::String)
    }
}

/// Whether `name` can be a parameter: a letter or `_`, then letters, digits or `_`.
fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_NAME_CHARS
}

/// Checks a value against a parameter's type; `field` names it in errors.
fn check_value(field: &str, kind: ParameterType, value: &Value) -> AppResult<()> {
    let wrong = |expected: &str| AppError::bad_input(field, format!("{field} must be {expected}"));
    match (kind, value) {
        (ParameterType::String | ParameterType::Secret, Value::String(text)) => {
            if text.len() > MAX_VALUE_BYTES {
                return Err(AppError::bad_input(
                    field,
                    format!("{field} must be at most {MAX_VALUE_BYTES} bytes"),
                ));
            }
            crate::domain::refuse_nul(field, text)
        }
        (ParameterType::String | ParameterType::Secret, _) => Err(wrong("a string")),
        (ParameterType::Number, Value::Number(_)) => Ok(()),
        (ParameterType::Number, _) => Err(wrong("a number")),
        (ParameterType::Boolean, Value::Bool(_)) => Ok(()),
        (ParameterType::Boolean, _) => Err(wrong("a boolean")),
    }
}

/// Validates the declared parameters (count first), naming the one at fault.
pub fn declare(inputs: Vec<ParameterInput>) -> AppResult<Vec<Parameter>> {
    if inputs.len() > MAX_PARAMETERS {
        return Err(AppError::bad_input(
            "parameters",
            format!("a template has at most {MAX_PARAMETERS} parameters"),
        ));
    }
    let mut names = BTreeSet::new();
    let mut declared = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let field = |f: &str| format!("parameters[{index}].{f}");
        if !is_name(&input.name) {
            return Err(AppError::bad_input(
                field("name"),
                format!(
                    "{}: a parameter name is 1 to {MAX_NAME_CHARS} letters, digits or _, not starting with a digit",
                    field("name")
                ),
            ));
        }
        if !names.insert(input.name.clone()) {
            return Err(AppError::bad_input(
                field("name"),
                format!("parameter {} is declared twice", input.name),
            ));
        }
        let description = input
            .description
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        if let Some(text) = &description {
            if text.chars().count() > MAX_DESCRIPTION_CHARS {
                return Err(AppError::bad_input(
                    field("description"),
                    format!(
                        "{} must be at most {MAX_DESCRIPTION_CHARS} characters long",
                        field("description")
                    ),
                ));
            }
            crate::domain::refuse_nul(&field("description"), text)?;
        }
        let default = input.default.filter(|d| !d.is_null());
        if let Some(value) = &default {
            if input.kind == ParameterType::Secret {
                return Err(AppError::bad_input(
                    field("default"),
                    format!("parameter {}: a SECRET has no default", input.name),
                ));
            }
            if input.required {
                return Err(AppError::bad_input(
                    field("default"),
                    format!(
                        "parameter {}: a required parameter has no default",
                        input.name
                    ),
                ));
            }
            check_value(&field("default"), input.kind, value)?;
        }
        declared.push(Parameter {
            name: input.name,
            kind: input.kind.as_str().to_owned(),
            description,
            default,
            required: input.required,
        });
    }
    Ok(declared)
}

/// The placeholders (`{{name}}`) in `text`, as byte ranges and names, in order.
fn placeholders(text: &str) -> Vec<(usize, usize, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("{{").map(|i| i + from) {
        let name_start = start + 2;
        match text[name_start..].find("}}").map(|i| i + name_start) {
            Some(end) if is_name(&text[name_start..end]) => {
                found.push((start, end + 2, &text[name_start..end]));
                from = end + 2;
            }
            _ => from = name_start,
        }
    }
    found
}

/// Adds the placeholder names found in `text` to `names`.
pub fn collect_names(text: &str, names: &mut BTreeSet<String>) {
    for (_, _, name) in placeholders(text) {
        names.insert(name.to_owned());
    }
}

/// Adds the placeholder names found in the strings of a JSON document to `names`.
pub fn collect_json_names(value: &Value, names: &mut BTreeSet<String>) {
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        match value {
            Value::String(text) => collect_names(text, names),
            Value::Array(items) => pending.extend(items),
            Value::Object(fields) => pending.extend(fields.values()),
            _ => {}
        }
    }
}

/// The values an instantiation substitutes, checked against the declarations.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Each declared parameter's value (its default when none was sent; `None` when it
    /// has neither and is optional).
    by_name: HashMap<String, Option<Value>>,
}

impl Values {
    /// Checks the values sent (a JSON object of name → value, or nothing) against the
    /// declared parameters: unknown names, missing required ones and wrong types are
    /// BAD_USER_INPUT naming the parameter (`parameters.<name>`).
    pub fn check(declared: &[Parameter], sent: Option<Value>) -> AppResult<Self> {
        let sent = match sent {
            None | Some(Value::Null) => serde_json::Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Err(AppError::bad_input(
                    "parameters",
                    "parameters must be a JSON object of parameter names and values",
                ));
            }
        };
        if sent.len() > MAX_PARAMETERS {
            return Err(AppError::bad_input(
                "parameters",
                format!("at most {MAX_PARAMETERS} parameters may be sent"),
            ));
        }
        let known: HashMap<&str, &Parameter> =
            declared.iter().map(|p| (p.name.as_str(), p)).collect();
        for name in sent.keys() {
            if !known.contains_key(name.as_str()) {
                let shown: String = name.chars().take(MAX_NAME_CHARS).collect();
                return Err(AppError::bad_input(
                    format!("parameters.{shown}"),
                    format!("the template has no parameter {shown}"),
                ));
            }
        }
        let mut by_name = HashMap::with_capacity(declared.len());
        for parameter in declared {
            let field = format!("parameters.{}", parameter.name);
            let value = match sent.get(&parameter.name).filter(|v| !v.is_null()) {
                Some(value) => {
                    check_value(&field, parameter.kind(), value)?;
                    Some(value.clone())
                }
                None if parameter.required => {
                    return Err(AppError::bad_input(
                        field,
                        format!("parameter {} is required", parameter.name),
                    ));
                }
                None => parameter.default.clone(),
            };
            by_name.insert(parameter.name.clone(), value);
        }
        Ok(Self { by_name })
    }

    /// The text a value reads as inside longer text.
    fn text_of(value: Option<&Value>) -> String {
        match value {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        }
    }

    /// `text` with its placeholders replaced, or an error naming `field` once the result
    /// would be longer than `max_bytes` (checked as it grows).
    pub fn substitute_text(&self, field: &str, text: &str, max_bytes: usize) -> AppResult<String> {
        let mut out = String::with_capacity(text.len().min(max_bytes));
        let mut from = 0;
        for (start, end, name) in placeholders(text) {
            out.push_str(&text[from..start]);
            match self.by_name.get(name) {
                Some(value) => out.push_str(&Self::text_of(value.as_ref())),
                // Not a declared parameter: left as written.
                None => out.push_str(&text[start..end]),
            }
            from = end;
            if out.len() > max_bytes {
                return Err(too_large(field));
            }
        }
        out.push_str(&text[from..]);
        if out.len() > max_bytes {
            return Err(too_large(field));
        }
        Ok(out)
    }

    /// A JSON document with its placeholders replaced: a string that is exactly one
    /// placeholder becomes the value (typed), others get the values' text. Fails naming
    /// `field` once the strings would add up to more than `max_bytes`.
    pub fn substitute_json(
        &self,
        field: &str,
        value: &Value,
        max_bytes: usize,
    ) -> AppResult<Value> {
        let mut budget = max_bytes;
        self.substitute_value(field, value, &mut budget)
    }

    fn substitute_value(&self, field: &str, value: &Value, budget: &mut usize) -> AppResult<Value> {
        fn spend(field: &str, budget: &mut usize, bytes: usize) -> AppResult<()> {
            *budget = budget.checked_sub(bytes).ok_or_else(|| too_large(field))?;
            Ok(())
        }
        Ok(match value {
            Value::String(text) => {
                let found = placeholders(text);
                if let [(0, end, name)] = found.as_slice()
                    && *end == text.len()
                    && let Some(replacement) = self.by_name.get(*name)
                {
                    let replacement = replacement.clone().unwrap_or(Value::Null);
                    let bytes = match &replacement {
                        Value::String(s) => s.len(),
                        _ => 8,
                    };
                    spend(field, budget, bytes)?;
                    replacement
                } else if found.is_empty() {
                    spend(field, budget, text.len())?;
                    value.clone()
                } else {
                    let substituted = self.substitute_text(field, text, *budget)?;
                    spend(field, budget, substituted.len())?;
                    Value::String(substituted)
                }
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    out.push(self.substitute_value(field, item, budget)?);
                }
                Value::Array(out)
            }
            Value::Object(fields) => {
                let mut out = serde_json::Map::with_capacity(fields.len());
                for (key, item) in fields {
                    spend(field, budget, key.len())?;
                    out.insert(key.clone(), self.substitute_value(field, item, budget)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }
}

fn too_large(field: &str) -> AppError {
    AppError::bad_input(
        "parameters",
        format!("with these parameters, {field} would be larger than a step allows"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(name: &str, kind: ParameterType, required: bool, default: Option<Value>) -> Parameter {
        Parameter {
            name: name.into(),
            kind: kind.as_str().into(),
            description: None,
            default,
            required,
        }
    }

    fn field_of<T: std::fmt::Debug>(result: AppResult<T>) -> Option<String> {
        match result {
            Err(AppError::BadUserInput { field, .. }) => field,
            other => panic!("expected BAD_USER_INPUT, got {other:?}"),
        }
    }

    #[test]
    fn placeholders_are_names_between_double_braces() {
        let found: Vec<&str> = placeholders("{{a}} {{ b }} {{c_1}}{{1x}} {{d}")
            .into_iter()
            .map(|(_, _, n)| n)
            .collect();
        assert_eq!(found, ["a", "c_1"]);
    }

    #[test]
    fn whole_string_placeholders_become_typed_values() {
        let declared = vec![
            param("count", ParameterType::Number, true, None),
            param("on", ParameterType::Boolean, false, Some(json!(true))),
            param("email", ParameterType::String, true, None),
        ];
        let values = Values::check(&declared, Some(json!({ "count": 3, "email": "a@b.test" })))
            .ok()
            .unwrap_or_default();
        let doc = json!({ "n": "{{count}}", "flag": "{{on}}", "to": "mail {{email}} x{{count}}", "keep": "{{other}}" });
        let out = values.substitute_json("actionData", &doc, 64 * 1024).ok();
        assert_eq!(
            out,
            Some(json!({ "n": 3, "flag": true, "to": "mail a@b.test x3", "keep": "{{other}}" }))
        );
    }

    #[test]
    fn wrong_missing_and_unknown_values_name_the_parameter() {
        let declared = vec![param("count", ParameterType::Number, true, None)];
        assert_eq!(
            field_of(Values::check(&declared, Some(json!({ "count": "3" })))).as_deref(),
            Some("parameters.count")
        );
        assert_eq!(
            field_of(Values::check(&declared, None)).as_deref(),
            Some("parameters.count")
        );
        assert_eq!(
            field_of(Values::check(
                &declared,
                Some(json!({ "count": 1, "x": 1 }))
            ))
            .as_deref(),
            Some("parameters.x")
        );
    }

    #[test]
    fn declarations_are_bounded_and_checked() {
        let input = |name: &str, kind, default: Option<Value>, required| ParameterInput {
            name: name.into(),
            kind,
            description: None,
            default,
            required,
        };
        assert!(
            declare(
                (0..51)
                    .map(|i| input(&format!("p{i}"), ParameterType::String, None, false))
                    .collect()
            )
            .is_err()
        );
        assert_eq!(
            field_of(declare(vec![input(
                "1x",
                ParameterType::String,
                None,
                false
            )]))
            .as_deref(),
            Some("parameters[0].name")
        );
        assert_eq!(
            field_of(declare(vec![input(
                "n",
                ParameterType::Number,
                Some(json!("x")),
                false
            )]))
            .as_deref(),
            Some("parameters[0].default")
        );
        assert!(
            declare(vec![input(
                "s",
                ParameterType::Secret,
                Some(json!("x")),
                false
            )])
            .is_err()
        );
        assert!(
            declare(vec![input(
                "n",
                ParameterType::Number,
                Some(json!(2)),
                false
            )])
            .is_ok()
        );
    }

    #[test]
    fn substitution_stops_at_the_limit() {
        let declared = vec![param("big", ParameterType::String, true, None)];
        let values = Values::check(&declared, Some(json!({ "big": "x".repeat(4_000) })))
            .ok()
            .unwrap_or_default();
        let text = "{{big}}".repeat(1_000);
        assert!(values.substitute_text("instruction", &text, 2_000).is_err());
        let doc = json!({ "a": vec!["{{big}}"; 100] });
        assert!(
            values
                .substitute_json("selectors", &doc, 64 * 1024)
                .is_err()
        );
        assert!(
            values
                .substitute_json("selectors", &json!({ "a": "{{big}}" }), 64 * 1024)
                .is_ok()
        );
    }
}
