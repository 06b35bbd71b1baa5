//! A merchant's choice of gateway (docs/gateway-protocol.md#per-merchant-gateways):
//! the process default (`RECUR_GATEWAY`), the sandbox, or an acquirer over http with
//! the merchant's own signing secret, which is stored only encrypted (`crate::secrets`)
//! and never read back except to build that merchant's gateway.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use url::Url;
use uuid::Uuid;

use crate::config::Secret;
use crate::error::{Error, FieldError, Result};
use crate::secrets::SecretKey;
use crate::validate::Errors;

/// A checked `gateway` of `PATCH /admin/merchants/{merchantKey}`.
#[derive(Debug)]
pub enum Choice {
    /// `null`: the process default.
    Default,
    Sandbox,
    Http {
        base_url: Url,
        secret: Secret,
    },
}

impl Choice {
    /// The stored `gateway_kind`; `None` for the default.
    pub fn kind(&self) -> Option<&'static str> {
        match self {
            Choice::Default => None,
            Choice::Sandbox => Some("sandbox"),
            Choice::Http { .. } => Some("http"),
        }
    }
}

/// Read `gateway` of the body (`merchants::update` reads the rest): an object
/// `{kind, baseUrl, secret}`, or null for the process default. `None` when it is
/// invalid; every bad field is then in `shape` (400) or `rules` (422).
pub fn parse_field(shape: &mut Errors, rules: &mut Errors, value: &Value) -> Option<Choice> {
    match value {
        Value::Null => Some(Choice::Default),
        Value::Object(g) => gateway(shape, rules, g),
        _ => {
            shape.push(FieldError::new("gateway", "must be an object or null"));
            None
        }
    }
}

pub(super) fn unknown_fields(shape: &mut Errors, object: &Map<String, Value>, prefix: &str, known: &[&str]) {
    for name in object.keys().filter(|k| !known.contains(&k.as_str())) {
        let shown = if name.is_empty() { "\"\"" } else { name.as_str() };
        shape.push(FieldError::new(format!("{prefix}{shown}"), "is not a field of this object"));
    }
}

/// A string field, `None` when absent or null; another type is a shape error.
fn string<'a>(shape: &mut Errors, g: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    match g.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            shape.push(FieldError::new(format!("gateway.{name}"), "must be a string"));
            None
        }
    }
}

fn gateway(shape: &mut Errors, rules: &mut Errors, g: &Map<String, Value>) -> Option<Choice> {
    unknown_fields(shape, g, "gateway.", &["kind", "baseUrl", "secret"]);
    let given = |name: &str| g.get(name).is_some_and(|v| !v.is_null());
    let kind = string(shape, g, "kind");
    let base_url = string(shape, g, "baseUrl");
    let secret = string(shape, g, "secret");
    match kind {
        Some("sandbox") => {
            for name in ["baseUrl", "secret"] {
                if given(name) {
                    rules.push(FieldError::new(format!("gateway.{name}"), "must not be given for the sandbox"));
                }
            }
            Some(Choice::Sandbox)
        }
        Some("http") => {
            let url = match base_url {
                Some(u) => check_url(rules, u),
                None if given("baseUrl") => None,
                None => {
                    rules.push(FieldError::new("gateway.baseUrl", "is required for an http gateway"));
                    None
                }
            };
            let secret = match secret {
                Some(s) => check_secret(rules, s),
                None if given("secret") => None,
                None => {
                    rules.push(FieldError::new("gateway.secret", "is required for an http gateway"));
                    None
                }
            };
            Some(Choice::Http { base_url: url?, secret: secret? })
        }
        Some(_) => {
            rules.push(FieldError::new("gateway.kind", "must be sandbox or http"));
            None
        }
        None if given("kind") => None,
        None => {
            rules.push(FieldError::new("gateway.kind", "is required: sandbox or http"));
            None
        }
    }
}

fn check_url(rules: &mut Errors, text: &str) -> Option<Url> {
    const FIELD: &str = "gateway.baseUrl";
    let mut bad = |message: &str| rules.push(FieldError::new(FIELD, message));
    if text.len() > 2048 {
        bad("must be at most 2048 characters");
        return None;
    }
    let url = match Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base() && u.host().is_some() => u,
        _ => {
            bad("must be an absolute http or https URL");
            return None;
        }
    };
    let mut ok = true;
    if !url.username().is_empty() || url.password().is_some() {
        bad("must not hold credentials: requests are signed with the secret");
        ok = false;
    }
    if url.query().is_some() {
        bad("must not have a query");
        ok = false;
    }
    if url.fragment().is_some() {
        bad("must not have a fragment");
        ok = false;
    }
    ok.then_some(url)
}

fn check_secret(rules: &mut Errors, text: &str) -> Option<Secret> {
    const FIELD: &str = "gateway.secret";
    if text.is_empty() {
        rules.push(FieldError::new(FIELD, "must not be empty"));
        return None;
    }
    if text.len() > 1024 || !crate::gateway::http::valid_secret(text) {
        rules.push(FieldError::new(
            FIELD,
            "must be whsec_ followed by base64, at most 1024 characters (docs/gateway-protocol.md#signing)",
        ));
        return None;
    }
    Some(Secret::from(text.to_owned()))
}

/// Store a merchant's choice in the caller's transaction. A secret is sealed for the
/// merchant's id with `key`; without a key a secret is refused, never stored in clear.
pub async fn set(conn: &mut PgConnection, key: Option<&SecretKey>, merchant_key: Uuid, choice: &Choice) -> Result<()> {
    let id = sqlx::query_scalar!("SELECT id FROM merchants WHERE merchant_key = $1", merchant_key)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound("merchant"))?;
    let (base_url, sealed) = match choice {
        Choice::Default | Choice::Sandbox => (None, None),
        Choice::Http { base_url, secret } => {
            let key = key.ok_or_else(|| {
                Error::conflict(
                    "this server has no RECUR_SECRET_KEY: it cannot store a gateway secret encrypted, \
                     and never stores one in clear",
                )
            })?;
            (Some(base_url.as_str()), Some(key.seal(id, secret.expose())))
        }
    };
    sqlx::query!(
        "UPDATE merchants SET gateway_kind = $2, gateway_base_url = $3, gateway_secret_enc = $4,
             gateway_updated_at = clock_timestamp()
         WHERE id = $1",
        id,
        choice.kind(),
        base_url,
        sealed,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A merchant's stored choice, as the gateway registry builds it. No `Debug`: it
/// holds the sealed secret.
pub struct Stored {
    pub merchant_id: Uuid,
    pub kind: Option<String>,
    pub base_url: Option<String>,
    pub secret_enc: Option<Vec<u8>>,
    /// Changes with every choice; `None` if the merchant never chose.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The stored choice of a merchant; `None` for an unknown merchant key.
pub async fn stored(pool: &PgPool, merchant_key: Uuid) -> Result<Option<Stored>> {
    Ok(sqlx::query_as!(
        Stored,
        "SELECT id AS merchant_id, gateway_kind AS kind, gateway_base_url AS base_url, gateway_secret_enc AS secret_enc,
             gateway_updated_at AS updated_at
         FROM merchants WHERE merchant_key = $1",
        merchant_key,
    )
    .fetch_optional(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const SECRET: &str = "whsec_c2VjcmV0LXZhbHVl";

    fn parse(body: &Value) -> Result<Choice> {
        let update = crate::merchants::update::parse(body)?;
        Ok(update.gateway.expect("a gateway was given"))
    }

    fn fields(e: Error) -> (u16, Vec<String>, String) {
        let p = e.problem();
        let text = serde_json::to_string(&p).unwrap();
        (p.status, p.errors.into_iter().map(|f| f.field).collect(), text)
    }

    #[test]
    fn choices_that_parse() {
        assert!(matches!(parse(&json!({"gateway": null})), Ok(Choice::Default)));
        assert!(matches!(parse(&json!({"gateway": {"kind": "sandbox"}})), Ok(Choice::Sandbox)));
        assert!(matches!(parse(&json!({"gateway": {"kind": "sandbox", "baseUrl": null}})), Ok(Choice::Sandbox)));
        let Ok(Choice::Http { base_url, secret }) =
            parse(&json!({"gateway": {"kind": "http", "baseUrl": "https://acq.example:8443/base", "secret": SECRET}}))
        else {
            panic!("an http choice");
        };
        assert_eq!((base_url.as_str(), secret.expose()), ("https://acq.example:8443/base", SECRET));
    }

    #[test]
    fn every_bad_field_is_named_and_no_value_is_quoted() {
        let cases = [
            (json!({}), 422, vec!["body"]),
            (json!([]), 400, vec!["body"]),
            (json!({"gateway": SECRET}), 400, vec!["gateway"]),
            (json!({"gateway": {"kind": "paypal"}}), 422, vec!["gateway.kind"]),
            (json!({"gateway": {}}), 422, vec!["gateway.kind"]),
            (json!({"gateway": {"kind": "http"}}), 422, vec!["gateway.baseUrl", "gateway.secret"]),
            (
                json!({"gateway": {"kind": "http", "baseUrl": "ftp://x", "secret": ""}}),
                422,
                vec!["gateway.baseUrl", "gateway.secret"],
            ),
            (
                json!({"gateway": {"kind": "http", "baseUrl": "http://u:p@x/?q#f", "secret": SECRET}}),
                422,
                vec!["gateway.baseUrl", "gateway.baseUrl", "gateway.baseUrl"],
            ),
            (
                json!({"gateway": {"kind": "http", "baseUrl": "/relative", "secret": "sk_nope"}}),
                422,
                vec!["gateway.baseUrl", "gateway.secret"],
            ),
            (
                json!({"gateway": {"kind": "sandbox", "baseUrl": "http://x", "secret": SECRET}}),
                422,
                vec!["gateway.baseUrl", "gateway.secret"],
            ),
            (
                json!({"gateway": {"kind": "http", "baseUrl": 5, "secret": [SECRET], "extra": 1}, "more": true}),
                400,
                vec!["more", "gateway.extra", "gateway.baseUrl", "gateway.secret"],
            ),
            (json!({"gateway": {"kind": 7}}), 400, vec!["gateway.kind"]),
        ];
        for (body, status, expected) in cases {
            let (got_status, got, text) = fields(parse(&body).unwrap_err());
            assert_eq!((got_status, &got), (status, &expected.iter().map(|s| s.to_string()).collect()), "{body}");
            assert!(!text.contains("c2VjcmV0"), "{text}");
        }
    }
}
