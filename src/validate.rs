//! Field checks shared by every request type. Each pushes onto a list, so one
//! response names every bad field (docs/guarantees.md#bad-input).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::FieldError;

pub type Errors = Vec<FieldError>;

pub fn text(errors: &mut Errors, field: &str, value: &str, min: usize, max: usize) {
    let n = value.chars().count();
    if n < min || n > max {
        errors.push(FieldError::new(field, format!("must be {min} to {max} characters")));
    } else if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        errors.push(FieldError::new(field, "must not contain control characters"));
    }
}

pub fn opt_text(errors: &mut Errors, field: &str, value: Option<&str>, max: usize) {
    if let Some(v) = value {
        text(errors, field, v, 0, max);
    }
}

pub fn metadata(errors: &mut Errors, field: &str, value: &Value) {
    match value {
        Value::Object(map) => {
            if map.len() > 50 {
                errors.push(FieldError::new(field, "must have at most 50 keys"));
            }
            if value.to_string().len() > 16 * 1024 {
                errors.push(FieldError::new(field, "must be at most 16 KiB of JSON"));
            }
            if has_nul(value) {
                // Valid JSON, but Postgres jsonb cannot store U+0000.
                errors.push(FieldError::new(field, "must not contain the character U+0000"));
            }
        }
        _ => errors.push(FieldError::new(field, "must be a JSON object")),
    }
}

/// Does any string or key of `value` contain U+0000?
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

pub fn tags(errors: &mut Errors, field: &str, tags: &[String]) {
    if tags.len() > 20 {
        errors.push(FieldError::new(field, "must have at most 20 tags"));
    }
    for (i, t) in tags.iter().enumerate() {
        let n = t.chars().count();
        if n == 0 || n > 64 || t.chars().any(char::is_control) {
            errors.push(FieldError::new(format!("{field}[{i}]"), "must be 1 to 64 printable characters"));
        }
    }
}

pub fn retry_schedule(errors: &mut Errors, field: &str, hours: &[i32]) {
    if hours.len() > 10 {
        errors.push(FieldError::new(field, "must have at most 10 retries"));
    }
    if hours.iter().any(|h| !(1..=720).contains(h)) {
        errors.push(FieldError::new(field, "each delay must be between 1 and 720 hours"));
    }
}

/// The latest instant a request may name (9000-01-01T00:00:00Z): the periods, trials
/// and retries computed from it stay within year 9999, the last year an RFC 3339 time
/// (and so every time in JSON) can be written with.
pub fn latest_instant() -> DateTime<Utc> {
    DateTime::from_timestamp(221_845_392_000, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub fn instant(errors: &mut Errors, field: &str, value: Option<DateTime<Utc>>) {
    if value.is_some_and(|t| t >= latest_instant()) {
        errors.push(FieldError::new(field, "must be before 9000-01-01T00:00:00Z"));
    }
}

pub fn range(errors: &mut Errors, field: &str, value: i64, min: i64, max: i64) {
    if value < min || value > max {
        errors.push(FieldError::new(field, format!("must be between {min} and {max}")));
    }
}

/// For PATCH bodies: distinguishes an absent field (`None`) from `null` (`Some(None)`).
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

pub fn finish(errors: Errors) -> crate::Result<()> {
    if errors.is_empty() { Ok(()) } else { Err(crate::Error::Validation(errors)) }
}
