//! The acquirer's ledger in its own Postgres database: charges unique on idempotency
//! key, attempt counters per cycle, minted tokens (docs/gateway-protocol.md#idempotency).

use chrono::Datelike;
use rand::Rng;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::cards::{Behaviour, Scheme};
use super::charges::{Answer, ChargeRequest, Network, outcome};
use super::payment_methods::Card;

/// A stored charge: what identifies its request, and its answer.
#[derive(Debug, Clone)]
pub struct Stored {
    pub amount: Decimal,
    pub currency: String,
    pub payment_method: String,
    pub answer: Answer,
}

impl Stored {
    /// Does `req` repeat the request this charge was recorded for?
    pub fn same_request(&self, req: &ChargeRequest) -> bool {
        self.amount == req.amount && self.currency == req.currency && self.payment_method == req.payment_method
    }
}

/// Apply the acquirer's migrations, tracked in a table of their own so they never mix
/// with recur's should both share a database.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut migrator = sqlx::migrate!("./acquirer/migrations");
    migrator.dangerous_set_table_name("_acquirer_migrations");
    anyhow::Context::context(migrator.run(pool).await, "applying the acquirer's migrations failed")
}

pub async fn find(pool: &PgPool, key: &str) -> Result<Option<Stored>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT amount, currency, payment_method, scheme, status, response_code, category, advice_code,
                  decline_code, reference, network_transaction_id
           FROM acquirer_charges WHERE idempotency_key = $1"#,
        key
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| Stored {
        amount: r.amount,
        currency: r.currency,
        payment_method: r.payment_method,
        answer: Answer {
            status: if r.status == "approved" { "approved" } else { "declined" },
            reference: r.reference,
            decline_code: r.decline_code,
            network: Network {
                scheme: Scheme::parse(&r.scheme).unwrap_or(Scheme::Visa).as_str(),
                response_code: r.response_code,
                category: r.category,
                advice_code: r.advice_code,
            },
            network_transaction_id: r.network_transaction_id,
        },
    }))
}

/// Charge `req` once. Returns the charge recorded for its key and whether this call
/// recorded it (false: another request with the key was first; its answer is returned).
///
/// Two requests with one key race on the primary key: `ON CONFLICT DO NOTHING` makes
/// the second wait for the first's commit and insert nothing, then it reads the first
/// row back. A `RecoverAfter` charge first bumps its cycle's counter in the same
/// transaction (the row lock orders the cycle's attempts), and a charge that loses the
/// race rolls its bump back, so the counter counts distinct keys exactly.
pub async fn charge(pool: &PgPool, req: &ChargeRequest, behaviour: &Behaviour) -> Result<(Stored, bool), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let attempt = match behaviour {
        Behaviour::RecoverAfter(_) => sqlx::query_scalar!(
            r#"INSERT INTO acquirer_cycle_attempts (payment_method, customer_account_id, sequence, attempts)
               VALUES ($1, $2, $3, 1)
               ON CONFLICT (payment_method, customer_account_id, sequence)
               DO UPDATE SET attempts = acquirer_cycle_attempts.attempts + 1
               RETURNING attempts"#,
            req.payment_method,
            req.customer_account_id,
            req.sequence.unwrap_or(0),
        )
        .fetch_one(&mut *tx)
        .await?
        .max(1) as u32,
        _ => 1,
    };
    let o = outcome(behaviour, attempt);
    let answer = Answer {
        status: if o.approved { "approved" } else { "declined" },
        reference: format!("ch_{}", Uuid::now_v7().simple()),
        decline_code: o.decline_code(),
        network: Network {
            scheme: o.scheme.as_str(),
            response_code: o.response_code.clone(),
            category: o.category,
            advice_code: o.advice_code.clone(),
        },
        network_transaction_id: network_transaction_id(o.scheme),
    };
    let inserted = sqlx::query!(
        r#"INSERT INTO acquirer_charges
             (idempotency_key, reference, amount, currency, payment_method, customer_account_id, initiator,
              recurring_sequence, recurring_network_transaction_id, scheme, status, response_code, category,
              advice_code, decline_code, network_transaction_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           ON CONFLICT (idempotency_key) DO NOTHING"#,
        req.idempotency_key,
        answer.reference,
        req.amount,
        req.currency,
        req.payment_method,
        req.customer_account_id,
        req.initiator,
        req.sequence,
        req.network_transaction_id,
        answer.network.scheme,
        answer.status,
        answer.network.response_code,
        answer.network.category,
        answer.network.advice_code,
        answer.decline_code,
        answer.network_transaction_id,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if inserted {
        tx.commit().await?;
        let stored = Stored {
            amount: req.amount,
            currency: req.currency.clone(),
            payment_method: req.payment_method.clone(),
            answer,
        };
        return Ok((stored, true));
    }
    tx.rollback().await?;
    // The conflicting row is committed (the insert waited for it): read it back.
    let first = find(pool, &req.idempotency_key).await?.ok_or(sqlx::Error::RowNotFound)?;
    Ok((first, false))
}

/// Was this minted token issued here?
pub async fn token_exists(pool: &PgPool, token: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM acquirer_tokens WHERE token = $1) AS "exists!""#, token)
        .fetch_one(pool)
        .await
}

/// Mint and store a token for a card: its behaviour token, `__`, a random part.
pub async fn mint_token(pool: &PgPool, card: &Card) -> Result<String, sqlx::Error> {
    let token = format!("{}{}{}", card.behaviour, super::cards::MINTED_SEPARATOR, Uuid::new_v4().simple());
    sqlx::query!(
        r#"INSERT INTO acquirer_tokens (token, scheme, last4, exp_month, exp_year, customer_account_id)
           VALUES ($1, $2, $3, $4, $5, $6)"#,
        token,
        card.scheme.as_str(),
        card.last4,
        card.exp_month,
        card.exp_year,
        card.customer_account_id,
    )
    .execute(pool)
    .await?;
    Ok(token)
}

pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT 1 AS "alive!""#).fetch_one(pool).await.map(|_| ())
}

/// A network's id for the transaction: Visa's 15 digits; Mastercard's 9-character
/// Banknet reference followed by the settlement date (MMDD).
fn network_transaction_id(scheme: Scheme) -> String {
    let mut rng = rand::rng();
    match scheme {
        Scheme::Visa => (0..15).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect(),
        Scheme::Mastercard => {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
            let banknet: String = (0..9).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
            let today = chrono::Utc::now().date_naive();
            format!("{banknet}{:02}{:02}", today.month(), today.day())
        }
    }
}
