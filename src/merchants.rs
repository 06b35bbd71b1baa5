//! Merchants and their API credentials.

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

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
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
    let row = sqlx::query!(
        "SELECT id, name, merchant_key, sandbox, created_at, secret_hash FROM merchants WHERE merchant_key = $1",
        merchant_key,
    )
    .fetch_optional(pool)
    .await?;
    // Hash even when the key is unknown, so timing does not reveal which keys exist.
    let presented = hash(secret);
    Ok(row.filter(|r| bool::from(presented.ct_eq(&r.secret_hash))).map(|r| Merchant {
        id: r.id,
        name: r.name,
        merchant_key: r.merchant_key,
        sandbox: r.sandbox,
        created_at: r.created_at,
    }))
}
