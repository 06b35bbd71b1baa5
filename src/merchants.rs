//! Merchants, their API credentials, their choice of gateway (`gateway`) and their
//! own request rates (`limits`); `update` reads the operator's changes.

pub mod gateway;
pub mod limits;
pub mod update;

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: Uuid,
    pub name: String,
    pub merchant_key: Uuid,
    pub sandbox: bool,
    pub created_at: DateTime<Utc>,
    /// The merchant's own `/v1` rates; `None`: the process defaults.
    pub rate_limits: limits::MerchantRates,
}

/// Shown once, at creation: the secret is stored only as a hash.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    pub merchant_id: Uuid,
    pub name: String,
    pub merchant_key: Uuid,
    pub secret: String,
    pub sandbox: bool,
}

/// A merchant as the operator sees it (`GET /admin/merchants/{merchantKey}`): never
/// its API secret, nor its gateway's.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MerchantView {
    pub merchant_id: Uuid,
    pub name: String,
    pub merchant_key: Uuid,
    pub sandbox: bool,
    pub created_at: DateTime<Utc>,
    /// The merchant's own gateway; `null`: the process default (`RECUR_GATEWAY`).
    pub gateway: Option<GatewayView>,
    /// The merchant's own `/v1` rates (docs/operations.md#rate-limits).
    pub rate_limits: limits::RateLimitsView,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayView {
    /// `sandbox` or `http`.
    pub kind: String,
    /// The acquirer's base URL (`http` only).
    pub base_url: Option<String>,
    /// Whether a signing secret is stored (encrypted; it is never returned).
    pub secret_set: bool,
    pub updated_at: DateTime<Utc>,
}

fn hash(secret: &str) -> Vec<u8> {
    secret_hash(secret).to_vec()
}

/// What is stored of a secret, and compared: its SHA-256.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

pub async fn create(pool: &PgPool, name: &str, sandbox: bool) -> Result<Credentials> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err(Error::validation("name", "must be 1 to 255 characters, none of them control characters"));
    }
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!("sk_{}", hex::encode(raw));
    let id = Uuid::now_v7();
    let merchant_key = Uuid::now_v7();
    sqlx::query!(
        "INSERT INTO merchants (id, name, merchant_key, secret_hash, sandbox) VALUES ($1, $2, $3, $4, $5)",
        id,
        name,
        merchant_key,
        hash(&secret),
        sandbox,
    )
    .execute(pool)
    .await?;
    Ok(Credentials { merchant_id: id, name: name.to_owned(), merchant_key, secret, sandbox })
}

/// The merchant whose key and secret these are; `None` when they name none.
pub async fn authenticate(pool: &PgPool, merchant_key: Uuid, secret: &str) -> Result<Option<Merchant>> {
    authenticate_hash(pool, merchant_key, &secret_hash(secret)).await
}

/// [`authenticate`] with the presented secret's [`secret_hash`] (compared in constant
/// time). The merchant's own rates come with it: no other query is needed to limit it.
pub async fn authenticate_hash(pool: &PgPool, merchant_key: Uuid, presented: &[u8; 32]) -> Result<Option<Merchant>> {
    let row = sqlx::query!(
        "SELECT id, name, merchant_key, sandbox, created_at, secret_hash,
             rate_limit_reads_per_second, rate_limit_reads_burst, rate_limit_writes_per_second, rate_limit_writes_burst
         FROM merchants WHERE merchant_key = $1",
        merchant_key,
    )
    .fetch_optional(pool)
    .await?;
    // The hash is computed even when the key is unknown, so timing does not reveal which keys exist.
    Ok(row.filter(|r| bool::from(presented.as_slice().ct_eq(&r.secret_hash))).map(|r| Merchant {
        id: r.id,
        name: r.name,
        merchant_key: r.merchant_key,
        sandbox: r.sandbox,
        created_at: r.created_at,
        rate_limits: limits::MerchantRates {
            reads: limits::stored(r.rate_limit_reads_per_second, r.rate_limit_reads_burst),
            writes: limits::stored(r.rate_limit_writes_per_second, r.rate_limit_writes_burst),
        },
    }))
}

/// The operator's view of a merchant. The sealed secret stays in Postgres: only
/// whether there is one is read.
pub async fn view(pool: &PgPool, merchant_key: Uuid) -> Result<MerchantView> {
    let r = sqlx::query!(
        r#"SELECT id, name, merchant_key, sandbox, created_at, gateway_kind, gateway_base_url,
               gateway_secret_enc IS NOT NULL AS "secret_set!", gateway_updated_at,
               rate_limit_reads_per_second, rate_limit_reads_burst, rate_limit_writes_per_second, rate_limit_writes_burst
           FROM merchants WHERE merchant_key = $1"#,
        merchant_key,
    )
    .fetch_optional(pool)
    .await?
    .ok_or(Error::NotFound("merchant"))?;
    let gateway = match (r.gateway_kind, r.gateway_updated_at) {
        (Some(kind), Some(updated_at)) => {
            Some(GatewayView { kind, base_url: r.gateway_base_url, secret_set: r.secret_set, updated_at })
        }
        _ => None,
    };
    Ok(MerchantView {
        merchant_id: r.id,
        name: r.name,
        merchant_key: r.merchant_key,
        sandbox: r.sandbox,
        created_at: r.created_at,
        gateway,
        rate_limits: limits::MerchantRates {
            reads: limits::stored(r.rate_limit_reads_per_second, r.rate_limit_reads_burst),
            writes: limits::stored(r.rate_limit_writes_per_second, r.rate_limit_writes_burst),
        }
        .view(),
    })
}

/// A merchant by its id (a dashboard session names its merchant by id).
pub async fn by_id(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<Merchant> {
    let r = sqlx::query_as!(
        MerchantRow,
        "SELECT id, name, merchant_key, sandbox, created_at,
             rate_limit_reads_per_second, rate_limit_reads_burst, rate_limit_writes_per_second, rate_limit_writes_burst
         FROM merchants WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("merchant"))?;
    Ok(r.into())
}

/// Merchants by id (oldest first), after the cursor `after`: the operator console's list.
pub async fn list(pool: &PgPool, after: Option<Uuid>, limit: i64) -> Result<Vec<Merchant>> {
    let rows = sqlx::query_as!(
        MerchantRow,
        "SELECT id, name, merchant_key, sandbox, created_at,
             rate_limit_reads_per_second, rate_limit_reads_burst, rate_limit_writes_per_second, rate_limit_writes_burst
         FROM merchants WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
        after,
        limit,
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Merchant::from).collect())
}

/// A merchants row as `by_id` and `list` read it.
struct MerchantRow {
    id: Uuid,
    name: String,
    merchant_key: Uuid,
    sandbox: bool,
    created_at: chrono::DateTime<chrono::Utc>,
    rate_limit_reads_per_second: Option<i32>,
    rate_limit_reads_burst: Option<i32>,
    rate_limit_writes_per_second: Option<i32>,
    rate_limit_writes_burst: Option<i32>,
}

impl From<MerchantRow> for Merchant {
    fn from(r: MerchantRow) -> Merchant {
        Merchant {
            id: r.id,
            name: r.name,
            merchant_key: r.merchant_key,
            sandbox: r.sandbox,
            created_at: r.created_at,
            rate_limits: rates(
                r.rate_limit_reads_per_second,
                r.rate_limit_reads_burst,
                r.rate_limit_writes_per_second,
                r.rate_limit_writes_burst,
            ),
        }
    }
}

/// A merchant's stored rates (NULL columns: the process defaults).
fn rates(
    reads_per_second: Option<i32>,
    reads_burst: Option<i32>,
    writes_per_second: Option<i32>,
    writes_burst: Option<i32>,
) -> limits::MerchantRates {
    limits::MerchantRates {
        reads: limits::stored(reads_per_second, reads_burst),
        writes: limits::stored(writes_per_second, writes_burst),
    }
}
