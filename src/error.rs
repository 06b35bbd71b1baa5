//! The domain error: what went wrong, in the terms of recur's own rules. It knows
//! nothing of HTTP; `api::problem` maps it to a status and a problem body.
//! Infrastructure failures keep their cause as `source()`, so a log of the error shows
//! the whole chain.

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
    /// Input refused outright rather than judged field by field: a body or query that
    /// cannot be read, or a payment method the gateway does not know.
    #[error("bad request: {detail}")]
    BadRequest { detail: String, errors: Vec<FieldError> },
    /// Well-formed input that breaks the contract's rules; lists every bad field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {detail}")]
    Conflict { detail: String, existing: Option<Uuid> },
    /// The card networks' rules forbid this attempt (docs/governor.md#refusals).
    #[error(transparent)]
    RetryRefused(crate::billing::governor::Refusal),
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// Authenticated, but this merchant may not do this (a live merchant and test clocks).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    #[error("queue error")]
    Queue(#[from] crate::queue::Error),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Validation(vec![FieldError::new(field, message)])
    }

    pub fn conflict(detail: impl Into<String>) -> Error {
        Error::Conflict { detail: detail.into(), existing: None }
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
    fn infrastructure_errors_keep_their_cause_as_source() {
        let e = Error::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.to_string(), "database error");
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert!(chain.starts_with("database error: ") && chain.contains("pool"), "{chain}");
    }
}

/// An error with its causes, "outer: inner: root", as logs and operators need it
/// (log formatters print an error value's own message only).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        // Some errors (sqlx's) already print their source in their own message.
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod chain_tests {
    #[test]
    fn a_chain_lists_every_cause_once() {
        let io = std::io::Error::other("connection reset");
        let e = crate::Error::Internal(anyhow::Error::new(io).context("load charges"));
        let text = super::chain(&e);
        assert!(text.contains("load charges"), "{text}");
        assert!(text.ends_with("connection reset"), "{text}");
        assert_eq!(text.matches("connection reset").count(), 1, "{text}");
    }
}
