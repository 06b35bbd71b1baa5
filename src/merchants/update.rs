//! The body of `PATCH /admin/merchants/{merchantKey}` (docs/api.md#admin-api):
//! `{gateway?, rateLimits?}`, at least one. Read by hand rather than with serde: serde's
//! type errors quote the value given (a gateway secret sent in the wrong place would
//! come back in the problem), and it stops at the first bad field. Fields of the wrong
//! type or unknown make a 400, broken rules a 422; either way every bad field is listed
//! (docs/api.md#errors).

use serde_json::Value;

use super::gateway::{self, Choice};
use super::limits::{self, Patch};
use crate::error::{Error, FieldError, Result};
use crate::validate::Errors;

/// What the operator asked to change; `None`: left as it is.
#[derive(Debug)]
pub struct Update {
    pub gateway: Option<Choice>,
    pub rate_limits: Option<Patch>,
}

pub fn parse(body: &Value) -> Result<Update> {
    let mut shape = Errors::new();
    let mut rules = Errors::new();
    let mut update = Update { gateway: None, rate_limits: None };
    let mut complete = true;
    match body {
        Value::Object(root) => {
            gateway::unknown_fields(&mut shape, root, "", &["gateway", "rateLimits"]);
            if !root.contains_key("gateway") && !root.contains_key("rateLimits") {
                rules.push(FieldError::new("body", "give gateway, rateLimits or both"));
            }
            if let Some(g) = root.get("gateway") {
                update.gateway = gateway::parse_field(&mut shape, &mut rules, g);
                complete &= update.gateway.is_some();
            }
            if let Some(l) = root.get("rateLimits") {
                update.rate_limits = limits::parse(&mut shape, &mut rules, l);
                complete &= update.rate_limits.is_some();
            }
        }
        _ => shape.push(FieldError::new("body", "must be a JSON object")),
    }
    if !shape.is_empty() {
        shape.extend(rules);
        return Err(Error::BadRequest { detail: "the body does not match the expected shape".into(), errors: shape });
    }
    if !rules.is_empty() || !complete {
        return Err(Error::Validation(rules));
    }
    Ok(update)
}
