//! The acquirer's ledger in its own Postgres database: charges unique on idempotency
//! key, attempt counters per cycle, minted tokens (docs/gateway-protocol.md#idempotency).

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use chrono::Datelike;
use rand::Rng;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use super::cards::{Behaviour, Scheme};
use super::charges::{Answer, ChargeRequest, Network, Outcome, outcome};
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

/// One charge of a group-committed batch: its request and the behaviour its token names.
pub struct Pending {
    pub req: ChargeRequest,
    pub behaviour: Behaviour,
}

/// Charge a batch in one statement, one commit (answers are sent only after it).
/// Returns, per item in order, the charge recorded for its key and whether this item
/// recorded it. Repeated keys within the batch share their first item's single row;
/// a key already recorded (or recorded first by a concurrent batch: the insert waits
/// for its commit) gets the first answer, read back. Not for `RecoverAfter`, whose
/// answer depends on its cycle's count (see [`charge`]).
pub async fn charge_batch(pool: &PgPool, items: &[Pending]) -> anyhow::Result<Vec<(Stored, bool)>> {
    // The first item of each key is the one that may record it.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (i, p) in items.iter().enumerate() {
        first.entry(p.req.idempotency_key.as_str()).or_insert(i);
    }
    // Inserted in key order: concurrent batches sharing keys wait on each other in one
    // order, never deadlock.
    let mut order: Vec<usize> = first.values().copied().collect();
    order.sort_by(|&a, &b| items[a].req.idempotency_key.cmp(&items[b].req.idempotency_key));
    let answers: HashMap<usize, Answer> =
        order.iter().map(|&i| (i, answer(&outcome(&items[i].behaviour, 1)))).collect();
    let n = order.len();
    let (mut keys, mut refs, mut amounts, mut currencies, mut methods, mut customers, mut initiators) =
        (Vec::with_capacity(n), vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut sequences, mut recurring_ids, mut schemes, mut statuses, mut codes, mut categories) =
        (Vec::with_capacity(n), vec![], vec![], vec![], vec![], vec![]);
    let (mut advices, mut declines, mut network_ids) = (Vec::with_capacity(n), vec![], vec![]);
    for &i in &order {
        let (r, a) = (&items[i].req, &answers[&i]);
        keys.push(r.idempotency_key.clone());
        refs.push(a.reference.clone());
        amounts.push(r.amount);
        currencies.push(r.currency.clone());
        methods.push(r.payment_method.clone());
        customers.push(r.customer_account_id.clone());
        initiators.push(r.initiator.clone());
        sequences.push(r.sequence);
        recurring_ids.push(r.network_transaction_id.clone());
        schemes.push(a.network.scheme.to_owned());
        statuses.push(a.status.to_owned());
        codes.push(a.network.response_code.clone());
        categories.push(a.network.category);
        advices.push(a.network.advice_code.clone());
        declines.push(a.decline_code.clone());
        network_ids.push(a.network_transaction_id.clone());
    }
    let inserted: HashSet<String> = sqlx::query_scalar!(
        r#"INSERT INTO acquirer_charges
             (idempotency_key, reference, amount, currency, payment_method, customer_account_id, initiator,
              recurring_sequence, recurring_network_transaction_id, scheme, status, response_code, category,
              advice_code, decline_code, network_transaction_id)
           SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::text[], $5::text[], $6::text[],
                                $7::text[], $8::int4[], $9::text[], $10::text[], $11::text[], $12::text[],
                                $13::int2[], $14::text[], $15::text[], $16::text[])
           ON CONFLICT (idempotency_key) DO NOTHING
           RETURNING idempotency_key"#,
        &keys,
        &refs,
        &amounts,
        &currencies,
        &methods,
        &customers,
        &initiators,
        &sequences as &[Option<i32>],
        &recurring_ids as &[Option<String>],
        &schemes,
        &statuses,
        &codes,
        &categories as &[Option<i16>],
        &advices as &[Option<String>],
        &declines as &[Option<String>],
        &network_ids,
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    // Keys recorded before (or by a concurrent batch, now committed): their first answers.
    let lost: Vec<String> = keys.iter().filter(|k| !inserted.contains(*k)).cloned().collect();
    let mut recorded = if lost.is_empty() { HashMap::new() } else { find_many(pool, &lost).await? };
    for (i, answer) in answers {
        let r = &items[i].req;
        if inserted.contains(&r.idempotency_key) {
            let stored = Stored {
                amount: r.amount,
                currency: r.currency.clone(),
                payment_method: r.payment_method.clone(),
                answer,
            };
            recorded.insert(r.idempotency_key.clone(), stored);
        }
    }
    items
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let key = p.req.idempotency_key.as_str();
            let stored = recorded.get(key).cloned().context("acquirer ledger: a conflicting charge was not found")?;
            Ok((stored, first[key] == i && inserted.contains(key)))
        })
        .collect()
}

/// The recorded charges of these keys: one primary-key lookup per key. As
/// `idempotency_key = ANY($1)` the statement's generic plan, made on the fresh ledger,
/// was a sequential scan testing every row against every key, kept as the ledger grew;
/// `OFFSET 0` keeps the lookup from being flattened back into such a join.
async fn find_many(pool: &PgPool, keys: &[String]) -> Result<HashMap<String, Stored>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT idempotency_key AS "idempotency_key!", amount AS "amount!", currency AS "currency!",
                  payment_method AS "payment_method!", scheme AS "scheme!", status AS "status!",
                  response_code AS "response_code!", category, advice_code, decline_code, reference AS "reference!",
                  network_transaction_id AS "network_transaction_id!"
           FROM unnest($1::text[]) AS k(key)
           CROSS JOIN LATERAL (SELECT * FROM acquirer_charges WHERE idempotency_key = k.key OFFSET 0) c"#,
        keys
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let stored = Stored {
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
            };
            (r.idempotency_key, stored)
        })
        .collect())
}

pub async fn find(pool: &PgPool, key: &str) -> Result<Option<Stored>, sqlx::Error> {
    Ok(find_many(pool, &[key.to_owned()]).await?.remove(key))
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
    let answer = answer(&outcome(behaviour, attempt));
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

/// A new answer for an outcome: a fresh reference and network transaction id.
fn answer(o: &Outcome) -> Answer {
    Answer {
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
    }
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
