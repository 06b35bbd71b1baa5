//! Sessions of the merchant dashboard and the operator console (docs/dashboard.md#sessions).
//!
//! A session is made at sign-in and named by a 256-bit random token in an `HttpOnly`
//! cookie; only the token's SHA-256 is stored (as for page tokens,
//! docs/pages.md#tokens). It lasts 12 hours of wall-clock time (not the billing clock:
//! moving a test clock never signs anyone in or out) and ends earlier when revoked.
//! Each session has its own CSRF key (docs/pages.md#csrf).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::checkout::token;
use crate::error::Result;

/// How long a session lasts after sign-in.
pub const LIFETIME_SECS: i64 = 12 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Merchant,
    Operator,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Merchant => "merchant",
            Kind::Operator => "operator",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PageSession {
    pub id: Uuid,
    /// `Some` for a merchant's session, `None` for an operator's.
    pub merchant_id: Option<Uuid>,
    pub csrf_key: Vec<u8>,
    pub expires_at: DateTime<Utc>,
}

/// A new session; returns it and the raw token for the cookie (not stored).
pub async fn create(conn: &mut PgConnection, kind: Kind, merchant_id: Option<Uuid>) -> Result<(PageSession, String)> {
    let (raw, hash) = token::new_token();
    let key = token::random_key();
    let id = Uuid::now_v7();
    let expires_at = sqlx::query_scalar!(
        "INSERT INTO page_sessions (id, kind, merchant_id, token_hash, csrf_key, expires_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING expires_at",
        id,
        kind.as_str(),
        merchant_id,
        hash,
        key,
        LIFETIME_SECS as f64,
    )
    .fetch_one(conn)
    .await?;
    Ok((PageSession { id, merchant_id, csrf_key: key, expires_at }, raw))
}

/// The live session of a cookie's token, of this kind; `None` when the token is
/// malformed, unknown, expired or revoked.
pub async fn find(conn: &mut PgConnection, kind: Kind, raw: &str) -> Result<Option<PageSession>> {
    if !token::well_formed(raw) {
        return Ok(None);
    }
    let row = sqlx::query!(
        "SELECT id, merchant_id, csrf_key, expires_at FROM page_sessions
         WHERE token_hash = $1 AND kind = $2 AND revoked_at IS NULL AND expires_at > now()",
        token::hash(raw),
        kind.as_str(),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| PageSession {
        id: r.id,
        merchant_id: r.merchant_id,
        csrf_key: r.csrf_key,
        expires_at: r.expires_at,
    }))
}

/// Sign-out: this session ends now; its cookie, replayed, opens nothing.
pub async fn revoke(conn: &mut PgConnection, id: Uuid) -> Result<()> {
    sqlx::query!("UPDATE page_sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", id)
        .execute(conn)
        .await?;
    Ok(())
}

/// "Sign out everywhere": every live session of the merchant ends now. Returns how many.
pub async fn revoke_merchant(conn: &mut PgConnection, merchant_id: Uuid) -> Result<u64> {
    Ok(sqlx::query!(
        "UPDATE page_sessions SET revoked_at = now() WHERE merchant_id = $1 AND revoked_at IS NULL",
        merchant_id
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// The merchant of a dashboard session (by id, for the pages' header).
pub async fn merchant(conn: &mut PgConnection, merchant_id: Uuid) -> Result<crate::merchants::Merchant> {
    crate::merchants::by_id(conn, merchant_id).await
}
