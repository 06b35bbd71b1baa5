//! The HTTP face of errors: every failure a request can meet answers an RFC 9457
//! problem body. Internal causes are logged with their whole source chain and reduced
//! to a generic text on the wire.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, FieldError};

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// A domain error, or one only the HTTP edge can meet (credentials, body size).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] Error),
    #[error("missing or invalid credentials")]
    Forbidden,
    #[error("request body too large")]
    PayloadTooLarge,
}

/// Handlers open connections and transactions themselves.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        ApiError::Domain(e.into())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Domain(e) => status_of(e),
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The problem body a client sees.
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::Domain(e) => problem_of(e),
            ApiError::Forbidden => Problem::new(
                self.status(),
                "forbidden",
                "Forbidden",
                "missing or invalid credentials: send HTTP Basic merchantKey:secret and X-API-KEY",
            ),
            ApiError::PayloadTooLarge => Problem::new(
                self.status(),
                "payload-too-large",
                "Payload too large",
                "the request body exceeds the limit",
            ),
        }
    }
}

/// The command line reports a domain error with the text a client would see.
impl Error {
    pub fn problem(&self) -> Problem {
        problem_of(self)
    }
}

fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
        Error::Validation(_) | Error::IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::NotAllowed(_) => StatusCode::FORBIDDEN,
        Error::Conflict { .. } | Error::RetryRefused(_) => StatusCode::CONFLICT,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Database(_) | Error::Redis(_) | Error::Queue(_) | Error::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// Internal causes are reduced to a generic text.
fn problem_of(e: &Error) -> Problem {
    let status = status_of(e);
    match e {
        Error::BadRequest { detail, errors } => {
            Problem { errors: errors.clone(), ..Problem::new(status, "bad-request", "Bad request", detail) }
        }
        Error::Validation(errors) => Problem {
            errors: errors.clone(),
            ..Problem::new(status, "validation", "Validation failed", "one or more fields are invalid")
        },
        Error::NotFound(what) => Problem::new(status, "not-found", "Not found", &format!("{what} not found")),
        Error::NotAllowed(detail) => Problem::new(status, "not-allowed", "Not allowed", detail),
        Error::Conflict { detail, existing } => {
            Problem { existing_id: *existing, ..Problem::new(status, "conflict", "Conflict", detail) }
        }
        Error::RetryRefused(refusal) => Problem {
            rule: Some(refusal.rule().to_owned()),
            ..Problem::new(status, "retry-refused", "Retry refused", &refusal.to_string())
        },
        Error::IdempotencyMismatch => Problem::new(
            status,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was used with a different request",
        ),
        Error::Unavailable(what) => Problem::new(status, "unavailable", "Service unavailable", what),
        Error::Database(_) | Error::Redis(_) | Error::Queue(_) | Error::Internal(_) => {
            Problem::new(status, "internal", "Internal error", "an internal error occurred; it has been logged")
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
    /// On a 409 for an attempt the retry governor refuses: the rule (docs/governor.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl Problem {
    fn new(status: StatusCode, slug: &str, title: &str, detail: &str) -> Problem {
        Problem {
            kind: format!("https://recur.dev/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.to_owned(),
            errors: vec![],
            existing_id: None,
            rule: None,
        }
    }

    pub fn into_response_with(self, status: StatusCode) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (status, [(header::CONTENT_TYPE, "application/problem+json")], body).into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            // The whole cause chain: the log is the only place a 500's cause is kept.
            tracing::error!(error = crate::error::chain(&self), "request failed");
        }
        self.problem().into_response_with(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let e = ApiError::from(Error::Internal(anyhow::anyhow!("password=hunter2 at 10.0.0.1")));
        let p = e.problem();
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("hunter2"));
    }

    #[test]
    fn validation_lists_fields() {
        let e = ApiError::from(Error::Validation(vec![
            FieldError::new("amount", "must be positive"),
            FieldError::new("currency", "unknown currency"),
        ]));
        let v = serde_json::to_value(e.problem()).unwrap();
        assert_eq!(v["status"], 422);
        assert_eq!(v["errors"][1]["field"], "currency");
    }

    #[test]
    fn a_conflict_names_the_existing_object() {
        let id = Uuid::now_v7();
        let e = ApiError::from(Error::Conflict { detail: "taken".into(), existing: Some(id) });
        let v = serde_json::to_value(e.problem()).unwrap();
        assert_eq!((v["status"].as_u64(), v["existingId"].as_str()), (Some(409), Some(id.to_string().as_str())));
    }
}
