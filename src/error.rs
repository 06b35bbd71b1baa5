//! The one application error type. Every failure a request can meet maps to an
//! RFC 9457 problem body; database, Redis and gateway texts are logged, never sent.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { field: field.into(), message: message.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The body or query could not be read at all (malformed JSON, wrong type, unknown field).
    #[error("bad request: {detail}")]
    BadRequest { detail: String, errors: Vec<FieldError> },
    /// Well-formed input that breaks the contract's rules; lists every bad field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("missing or invalid credentials")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {detail}")]
    Conflict { detail: String, existing: Option<Uuid> },
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("redis error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Validation(vec![FieldError::new(field, message)])
    }

    pub fn conflict(detail: impl Into<String>) -> Error {
        Error::Conflict { detail: detail.into(), existing: None }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Validation(_) | Error::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Forbidden => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_) | Error::Redis(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The problem body a client sees. Internal causes are reduced to a generic text.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (slug, title, detail, errors) = match self {
            Error::BadRequest { detail, errors } => ("bad-request", "Bad request", detail.clone(), errors.clone()),
            Error::Validation(errors) => {
                ("validation", "Validation failed", "one or more fields are invalid".to_owned(), errors.clone())
            }
            Error::Forbidden => (
                "forbidden",
                "Forbidden",
                "missing or invalid credentials: send HTTP Basic merchantKey:secret and X-API-KEY".to_owned(),
                vec![],
            ),
            Error::NotFound(what) => ("not-found", "Not found", format!("{what} not found"), vec![]),
            Error::Conflict { detail, .. } => ("conflict", "Conflict", detail.clone(), vec![]),
            Error::IdempotencyMismatch => (
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was used with a different request".to_owned(),
                vec![],
            ),
            Error::PayloadTooLarge => {
                ("payload-too-large", "Payload too large", "the request body exceeds the limit".to_owned(), vec![])
            }
            Error::Unavailable(what) => ("unavailable", "Service unavailable", what.clone(), vec![]),
            Error::Database(_) | Error::Redis(_) | Error::Internal(_) => {
                ("internal", "Internal error", "an internal error occurred; it has been logged".to_owned(), vec![])
            }
        };
        Problem {
            kind: format!("https://recur.dev/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
            existing_id: match self {
                Error::Conflict { existing, .. } => *existing,
                _ => None,
            },
        }
    }
}

/// RFC 9457 problem details.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// On a 409 for a duplicate partnerReference: the object that already has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing_id: Option<Uuid>,
}

impl Problem {
    pub fn into_response_with(self, status: StatusCode) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        self.problem().into_response_with(status)
    }
}

/// Is this a unique violation of the named constraint?
pub fn is_unique_violation(err: &sqlx::Error, constraint: &str) -> bool {
    match err {
        sqlx::Error::Database(db) => db.code().as_deref() == Some("23505") && db.constraint() == Some(constraint),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = Error::Internal(anyhow::anyhow!("password=hunter2 at 10.0.0.1"));
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("hunter2"));
    }

    #[test]
    fn validation_lists_fields() {
        let e = Error::Validation(vec![
            FieldError::new("amount", "must be positive"),
            FieldError::new("currency", "unknown currency"),
        ]);
        let v = serde_json::to_value(e.problem()).unwrap();
        assert_eq!(v["status"], 422);
        assert_eq!(v["errors"][1]["field"], "currency");
    }
}
