//! `Idempotency-Key` on POST (docs/api.md#idempotency-keys): the key is claimed in the same transaction as
//! the object it creates, so concurrent duplicates serialise on the key's row and
//! exactly one of them does the work; the others replay its stored response.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use super::problem::ApiError;
use crate::app::App;
use crate::error::{Error, FieldError, Result};

/// Keys older than this are forgotten.
const RETENTION_HOURS: i32 = 24;

pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let Some(raw) = values.next() else {
            return Ok(IdempotencyKey(None));
        };
        let bad = || Error::BadRequest {
            detail: "invalid Idempotency-Key header".into(),
            errors: vec![FieldError::new("Idempotency-Key", "must be 1 to 255 printable ASCII characters")],
        };
        // Two keys make the request ambiguous: which one would a retry be matched on?
        if values.next().is_some() {
            return Err(Error::BadRequest {
                detail: "invalid Idempotency-Key header".into(),
                errors: vec![FieldError::new("Idempotency-Key", "must be sent once")],
            }
            .into());
        }
        let key = raw.to_str().map_err(|_| bad())?;
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(bad().into());
        }
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// What a handler produced: the response and the jobs to enqueue after commit.
pub struct Outcome {
    pub status: StatusCode,
    pub body: Value,
    pub jobs: Vec<jobs::Job>,
}

impl Outcome {
    pub fn new(status: StatusCode, body: impl serde::Serialize) -> Outcome {
        Outcome { status, body: serde_json::to_value(body).unwrap_or(Value::Null), jobs: vec![] }
    }

    pub fn with_jobs(mut self, jobs: Vec<jobs::Job>) -> Outcome {
        self.jobs = jobs;
        self
    }
}

pub(crate) fn respond(status: StatusCode, body: Value, replayed: bool) -> Response {
    let mut r = (status, axum::Json(body)).into_response();
    if replayed {
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    r
}

/// Run `work` in one transaction, guarded by the idempotency key when there is one.
pub async fn run<F>(
    app: &App,
    merchant_id: Uuid,
    key: IdempotencyKey,
    route: &str,
    body: &[u8],
    work: F,
) -> super::problem::Result<Response>
where
    F: AsyncFnOnce(&mut PgConnection) -> Result<Outcome>,
{
    let a = answer(app, merchant_id, key, route, body, work).await?;
    Ok(respond(a.status, a.body, a.replayed))
}

/// What a guarded request answered: its status and body (a replay's are those the
/// first request stored), and whether it was a replay.
pub struct Answered {
    pub status: StatusCode,
    pub body: Value,
    pub replayed: bool,
}

/// `run` for callers other than an API route (the dashboard's forms): the same key
/// rules, the same transaction, the jobs enqueued after commit; the answer as data.
pub async fn answer<F>(
    app: &App,
    merchant_id: Uuid,
    key: IdempotencyKey,
    route: &str,
    body: &[u8],
    work: F,
) -> Result<Answered>
where
    F: AsyncFnOnce(&mut PgConnection) -> Result<Outcome>,
{
    let mut tx = app.pool.begin().await?;
    if let Some(k) = &key.0 {
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update([0]);
        hasher.update(body);
        let hash = hasher.finalize().to_vec();
        if let Some((status, body)) = claim(&mut tx, merchant_id, k, route, &hash).await? {
            return Ok(Answered { status, body, replayed: true });
        }
    }
    let out = work(&mut tx).await?;
    if let Some(k) = &key.0 {
        let status = out.status.as_u16() as i16;
        sqlx::query!(
            "UPDATE idempotency_keys SET response_status = $3, response_body = $4 WHERE merchant_id = $1 AND key = $2",
            merchant_id,
            k,
            status,
            out.body,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    app.enqueue(&out.jobs).await;
    Ok(Answered { status: out.status, body: out.body, replayed: false })
}

/// A claimed key: the request it was claimed for and, once that request has
/// finished, its response.
struct Claim {
    request_hash: Vec<u8>,
    response_status: Option<i16>,
    response_body: Option<Value>,
}

/// Claim the key, or return the stored response of the request that claimed it.
async fn claim(
    conn: &mut PgConnection,
    merchant_id: Uuid,
    key: &str,
    route: &str,
    hash: &[u8],
) -> Result<Option<(StatusCode, Value)>> {
    // An expired key is forgotten before it is claimed again.
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND created_at < now() - make_interval(hours => $3)",
        merchant_id,
        key,
        RETENTION_HOURS,
    )
    .execute(&mut *conn)
    .await?;
    let (method, path) = route.split_once(' ').unwrap_or(("POST", route));
    // Blocks while a concurrent request holds the same key uncommitted.
    let claimed = sqlx::query!(
        "INSERT INTO idempotency_keys (merchant_id, key, method, path, request_hash) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (merchant_id, key) DO NOTHING",
        merchant_id,
        key,
        method,
        path,
        hash,
    )
    .execute(&mut *conn)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(None);
    }
    let stored = sqlx::query_as!(
        Claim,
        "SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE merchant_id = $1 AND key = $2",
        merchant_id,
        key,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match stored {
        Some(c) if c.request_hash != hash => Err(Error::IdempotencyMismatch),
        Some(Claim { response_status: Some(status), response_body: Some(body), .. }) => {
            Ok(Some((StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK), body)))
        }
        _ => Err(Error::conflict("a request with this Idempotency-Key is still in progress; retry shortly")),
    }
}
