//! Request extractors whose every rejection is the application's problem body:
//! malformed JSON, wrong types, unknown fields, bad ids and oversized bodies
//! answer 4xx, never 500, and name the field at fault.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::problem::ApiError;
use crate::error::{Error, FieldError};

/// The raw body, kept for idempotency hashing; parse it with [`parse`].
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(rej) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(_) => {
                Err(Error::BadRequest { detail: "the request body could not be read".into(), errors: vec![] }.into())
            }
        }
    }
}

/// Parse a JSON body. An empty body parses as `{}` for actions whose fields are optional.
pub fn parse<T: DeserializeOwned>(bytes: &[u8], empty_ok: bool) -> Result<T, Error> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        if !empty_ok {
            return Err(Error::BadRequest { detail: "a JSON body is required".into(), errors: vec![] });
        }
        b"{}"
    } else {
        bytes
    };
    let de = &mut serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = clean_serde_message(&inner.to_string());
        let field = field_of(&path, &message, "body");
        Error::BadRequest {
            detail: if inner.is_syntax() || inner.is_eof() {
                "the body is not valid JSON".into()
            } else {
                "the body does not match the expected shape".into()
            },
            errors: vec![FieldError::new(field, message)],
        }
    })?;
    Ok(value)
}

/// The field an error is about: its path, or for an unknown or missing field (reported
/// on the enclosing object) that field's name under the path; `whole` for the root.
fn field_of(path: &str, message: &str, whole: &str) -> String {
    let root = path == "." || path.is_empty();
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name);
    let field = match (named, root) {
        // An unknown field's path already ends with it; a missing one's does not.
        (Some(name), false) if path.rsplit('.').next() != Some(name) => format!("{path}.{name}"),
        (Some(name), true) => name.to_owned(),
        (_, true) => whole.to_owned(),
        (_, false) => path.to_owned(),
    };
    named_field(&field)
}

/// An empty key (`{"": 1}`, `?=1`) would leave a field unnamed: show it as `""`.
fn named_field(field: &str) -> String {
    field.split('.').map(|s| if s.is_empty() { "\"\"" } else { s }).collect::<Vec<_>>().join(".")
}

/// serde's messages end with " at line 1 column 17"; the field already locates it.
fn clean_serde_message(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Query string, strictly typed; unknown parameters are rejected.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        // Postgres text cannot hold U+0000: refuse it here rather than fail the query.
        if let Some((name, _)) =
            url::form_urlencoded::parse(q.as_bytes()).find(|(k, v)| k.contains('\0') || v.contains('\0'))
        {
            return Err(Error::BadRequest {
                detail: "invalid query parameters".into(),
                errors: vec![FieldError::new(
                    named_field(&name.replace('\0', "")),
                    "must not contain the character U+0000",
                )],
            }
            .into());
        }
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            Error::BadRequest {
                detail: "invalid query parameters".into(),
                errors: vec![FieldError::new(field_of(&path, &message, "query"), message)],
            }
            .into()
        })
    }
}

/// A `{id}` path segment that must be a UUID.
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bad =
            || Error::BadRequest { detail: "invalid id".into(), errors: vec![FieldError::new("id", "must be a UUID")] };
        // Not even text (percent-encoded invalid UTF-8): not a UUID either.
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await.map_err(|_| bad())?;
        Uuid::parse_str(&raw).map(Id).map_err(|_| bad().into())
    }
}

/// `?limit=&cursor=` checks shared by every list.
pub fn limit(limit: Option<i64>) -> Result<i64, Error> {
    let l = limit.unwrap_or(20);
    if !(1..=100).contains(&l) {
        return Err(Error::BadRequest {
            detail: "invalid query parameters".into(),
            errors: vec![FieldError::new("limit", "must be between 1 and 100")],
        });
    }
    Ok(l)
}

pub fn cursor(cursor: Option<&str>) -> Result<Option<Uuid>, Error> {
    cursor
        .map(|c| {
            Uuid::parse_str(c).map_err(|_| Error::BadRequest {
                detail: "invalid query parameters".into(),
                errors: vec![FieldError::new("cursor", "is not a cursor this API returned")],
            })
        })
        .transpose()
}

/// A page of a list: `{data, nextCursor}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` were fetched with `limit + 1`; the extra row only says there is more.
    pub fn new<R>(mut rows: Vec<R>, limit: i64, cursor_of: impl Fn(&R) -> String, view: impl Fn(&R) -> T) -> Page<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(&cursor_of) } else { None };
        Page { data: rows.iter().map(view).collect(), next_cursor }
    }
}

/// The body of an action that takes no fields: empty or `{}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}
