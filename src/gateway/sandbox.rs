//! The sandbox gateway (docs/architecture.md#the-sandbox-gateway): payment-method tokens decide outcomes, and every
//! approved charge lands in the `sandbox_charges` ledger, unique on idempotency key.
//! Ledger writes are group-committed so the sandbox is never the bottleneck.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use rand::Rng;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{ChargeOutcome, ChargeRequest, DeclineCode, Gateway, GatewayError, TokenizeError};
use crate::batch::Batcher;

/// What a token makes the sandbox do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Approve,
    Decline(DeclineCode),
    RecoverAfter(u32),
    Timeout,
    Flaky(u32),
}

pub fn behaviour(token: &str) -> Option<Behaviour> {
    let rest = token.strip_prefix("pm_sandbox_")?;
    Some(match rest {
        "ok" => Behaviour::Approve,
        "insufficient_funds" => Behaviour::Decline(DeclineCode::InsufficientFunds),
        "do_not_honor" => Behaviour::Decline(DeclineCode::DoNotHonor),
        "expired_card" => Behaviour::Decline(DeclineCode::ExpiredCard),
        "stolen_card" => Behaviour::Decline(DeclineCode::StolenCard),
        "timeout" => Behaviour::Timeout,
        _ => {
            let number = |prefix: &str, range: std::ops::RangeInclusive<u32>| {
                rest.strip_prefix(prefix)
                    .filter(|n| !n.starts_with('0') && n.len() <= 2)
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|n| range.contains(n))
            };
            if let Some(n) = number("recover_after_", 1..=9) {
                Behaviour::RecoverAfter(n)
            } else if let Some(p) = number("flaky_", 1..=99) {
                Behaviour::Flaky(p)
            } else {
                return None;
            }
        }
    })
}

/// The sandbox's test card numbers and the token each tokenizes to
/// (docs/pages.md#test-cards). Any other number is refused on the form.
pub const TEST_CARDS: &[(&str, &str)] = &[
    ("4242424242424242", "pm_sandbox_ok"),
    ("4000000000009995", "pm_sandbox_insufficient_funds"),
    ("4000000000000002", "pm_sandbox_do_not_honor"),
    ("4000000000000069", "pm_sandbox_expired_card"),
    ("4000000000009979", "pm_sandbox_stolen_card"),
];

/// The token of a sandbox test card number (digits only).
pub fn token_of(number: &str) -> Option<&'static str> {
    TEST_CARDS.iter().find(|(n, _)| *n == number).map(|(_, t)| *t)
}

struct LedgerEntry {
    req: ChargeRequest,
}

pub struct Sandbox {
    pool: PgPool,
    latency: Duration,
    ledger: Batcher<LedgerEntry, String>,
}

impl Sandbox {
    pub fn new(pool: PgPool, latency: Duration) -> Sandbox {
        let p = pool.clone();
        let ledger = Batcher::spawn("sandbox_ledger", 1000, 4, move |entries: Vec<LedgerEntry>| {
            let pool = p.clone();
            async move { write_ledger(&pool, entries).await }
        });
        Sandbox { pool, latency, ledger }
    }

    async fn approve(&self, req: ChargeRequest) -> Result<ChargeOutcome, GatewayError> {
        let reference = self
            .ledger
            .submit(LedgerEntry { req })
            .await
            .map_err(|e| GatewayError::Unavailable(format!("sandbox ledger: {e}")))?;
        Ok(ChargeOutcome::Approved { reference })
    }

    /// `recover_after_N`: the first N distinct attempts of a scope decline softly.
    async fn recover_after(&self, req: ChargeRequest, n: u32) -> Result<ChargeOutcome, GatewayError> {
        let db = |e: sqlx::Error| GatewayError::Unavailable(format!("sandbox: {e}"));
        if let Some(found) = self.find(&req.idempotency_key).await? {
            return Ok(found);
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Serialise attempts of one scope so the count is exact.
        let scope = req.scope.to_string();
        let attempt_scope = format!("{}:{}", req.scope, req.idempotency_key);
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtext($1))", scope).execute(&mut *tx).await.map_err(db)?;
        let declined =
            sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM sandbox_attempts WHERE scope LIKE $1 || ':%'"#, scope)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        let seen = sqlx::query_scalar!("SELECT attempts FROM sandbox_attempts WHERE scope = $1", attempt_scope)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if seen.is_some() {
            return Ok(ChargeOutcome::declined(DeclineCode::InsufficientFunds));
        }
        if (declined as u32) < n {
            sqlx::query!("INSERT INTO sandbox_attempts (scope, attempts) VALUES ($1, 1)", attempt_scope)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(ChargeOutcome::declined(DeclineCode::InsufficientFunds));
        }
        tx.commit().await.map_err(db)?;
        self.approve(req).await
    }

    async fn find(&self, key: &str) -> Result<Option<ChargeOutcome>, GatewayError> {
        let reference = sqlx::query_scalar!("SELECT reference FROM sandbox_charges WHERE idempotency_key = $1", key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| GatewayError::Unavailable(format!("sandbox: {e}")))?;
        Ok(reference.map(|reference| ChargeOutcome::Approved { reference }))
    }
}

/// Insert approved charges; a key already in the ledger keeps its first entry.
async fn write_ledger(pool: &PgPool, entries: Vec<LedgerEntry>) -> anyhow::Result<Vec<String>> {
    let n = entries.len();
    let mut ids = Vec::with_capacity(n);
    let mut keys = Vec::with_capacity(n);
    let mut merchants = Vec::with_capacity(n);
    let mut amounts: Vec<Decimal> = Vec::with_capacity(n);
    let mut currencies = Vec::with_capacity(n);
    let mut customers = Vec::with_capacity(n);
    let mut methods = Vec::with_capacity(n);
    let mut refs = Vec::with_capacity(n);
    // Inserted in key order: two batches sharing keys (two workers charging duplicates
    // of one job) then wait on each other in one order, never deadlock.
    let mut sorted: Vec<&LedgerEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.req.idempotency_key.cmp(&b.req.idempotency_key));
    for e in sorted {
        let id = Uuid::now_v7();
        ids.push(id);
        keys.push(e.req.idempotency_key.clone());
        merchants.push(e.req.merchant_key);
        amounts.push(e.req.amount);
        currencies.push(e.req.currency.clone());
        customers.push(e.req.customer_account_id.clone());
        methods.push(e.req.payment_method.clone());
        refs.push(format!("sbx_{}", id.simple()));
    }
    sqlx::query!(
        "INSERT INTO sandbox_charges (id, idempotency_key, merchant_key, amount, currency, customer_account_id, payment_method, reference)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::numeric[], $5::text[], $6::text[], $7::text[], $8::text[])
         ON CONFLICT (idempotency_key) DO NOTHING",
        &ids,
        &keys,
        &merchants,
        &amounts,
        &currencies,
        &customers,
        &methods,
        &refs,
    )
    .execute(pool)
    .await?;
    let stored =
        sqlx::query!("SELECT idempotency_key, reference FROM sandbox_charges WHERE idempotency_key = ANY($1)", &keys)
            .fetch_all(pool)
            .await?;
    let by_key: std::collections::HashMap<String, String> =
        stored.into_iter().map(|r| (r.idempotency_key, r.reference)).collect();
    entries
        .iter()
        .map(|e| &e.req.idempotency_key)
        .map(|k| by_key.get(k).cloned().ok_or_else(|| anyhow::anyhow!("ledger entry missing after insert")))
        .collect()
}

impl Gateway for Sandbox {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn accepts_payment_method(&self, _merchant_key: Uuid, token: &str) -> BoxFuture<'_, Result<bool, GatewayError>> {
        futures::future::ready(Ok(behaviour(token).is_some())).boxed()
    }

    fn charge(&self, req: ChargeRequest) -> BoxFuture<'_, Result<ChargeOutcome, GatewayError>> {
        async move {
            // The configured latency is the floor of every call, as a real gateway's
            // round trip would be: the sandbox's own ledger write happens within it.
            let deadline = tokio::time::Instant::now() + self.latency;
            let result = match behaviour(&req.payment_method) {
                Some(Behaviour::Approve) => self.approve(req).await,
                Some(Behaviour::Decline(code)) => Ok(ChargeOutcome::declined(code)),
                Some(Behaviour::RecoverAfter(n)) => self.recover_after(req, n).await,
                Some(Behaviour::Timeout) => Err(GatewayError::Timeout),
                Some(Behaviour::Flaky(p)) => {
                    if rand::rng().random_range(0..100) < p {
                        Err(GatewayError::Unavailable("sandbox: simulated 503".into()))
                    } else {
                        self.approve(req).await
                    }
                }
                None => Ok(ChargeOutcome::declined(DeclineCode::InvalidAccount)),
            };
            tokio::time::sleep_until(deadline).await;
            result
        }
        .boxed()
    }

    fn lookup(
        &self,
        _merchant_key: Uuid,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<ChargeOutcome>, GatewayError>> {
        let key = idempotency_key.to_owned();
        async move { self.find(&key).await }.boxed()
    }

    fn tokenize<'a>(
        &'a self,
        _merchant_key: Uuid,
        _customer_account_id: &'a str,
        card: &'a crate::cards::Card,
    ) -> BoxFuture<'a, Result<String, TokenizeError>> {
        let found = token_of(card.number()).map(str::to_owned).ok_or_else(|| {
            TokenizeError::Refused("This card is not accepted in test mode: use one of the test card numbers.".into())
        });
        async move {
            tokio::time::sleep(self.latency).await;
            found
        }
        .boxed()
    }
}

/// A ledger entry as `GET /admin/sandbox/charges` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerView {
    pub id: Uuid,
    pub idempotency_key: String,
    pub merchant_key: Uuid,
    #[serde(serialize_with = "crate::money::serialize_amount")]
    #[schema(value_type = String)]
    pub amount: Decimal,
    pub currency: String,
    pub customer_account_id: String,
    pub payment_method: String,
    pub reference: String,
    pub created_at: DateTime<Utc>,
}

pub async fn list_ledger(
    pool: &PgPool,
    merchant_key: Option<Uuid>,
    customer_account_id: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> crate::Result<Vec<LedgerView>> {
    Ok(sqlx::query_as!(
        LedgerView,
        "SELECT id, idempotency_key, merchant_key, amount, currency, customer_account_id, payment_method, reference, created_at
         FROM sandbox_charges
         WHERE ($1::uuid IS NULL OR merchant_key = $1) AND ($2::text IS NULL OR customer_account_id = $2)
           AND ($3::uuid IS NULL OR id > $3)
         ORDER BY id LIMIT $4",
        merchant_key,
        customer_account_id,
        after,
        limit,
    )
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_of_the_table_and_nothing_else() {
        assert_eq!(behaviour("pm_sandbox_ok"), Some(Behaviour::Approve));
        assert_eq!(behaviour("pm_sandbox_recover_after_3"), Some(Behaviour::RecoverAfter(3)));
        assert_eq!(behaviour("pm_sandbox_flaky_5"), Some(Behaviour::Flaky(5)));
        assert_eq!(behaviour("pm_sandbox_flaky_99"), Some(Behaviour::Flaky(99)));
        assert_eq!(behaviour("pm_sandbox_timeout"), Some(Behaviour::Timeout));
        for bad in [
            "pm_sandbox_recover_after_0",
            "pm_sandbox_recover_after_10",
            "pm_sandbox_flaky_0",
            "pm_sandbox_flaky_100",
            "pm_sandbox_flaky_05",
            "pm_sandbox_",
            "pm_live_ok",
            "",
            "pm_sandbox_OK",
        ] {
            assert_eq!(behaviour(bad), None, "{bad}");
        }
        assert!(DeclineCode::InsufficientFunds.is_soft());
        for (number, token) in TEST_CARDS {
            assert!(crate::cards::luhn(number), "{number}");
            assert!(behaviour(token).is_some(), "{token}");
        }
        assert_eq!(token_of("4242424242424242"), Some("pm_sandbox_ok"));
        assert_eq!(token_of("5555555555554444"), None);
        assert!(!DeclineCode::ExpiredCard.is_soft());
    }
}
