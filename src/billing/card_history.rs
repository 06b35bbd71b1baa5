//! A card's network declines at one merchant, newest first: what the retry governor
//! reads before any attempt on that card (docs/governor.md#limits). One query for one
//! card or a batch of them, on the partial index of network declines.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::governor::{self, Counts, Network, Refusal, Scheme};
use super::transactions::TransactionKind;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardHistory {
    /// The card's latest network decline at this merchant.
    pub last: Option<Network>,
    /// When its latest declines were recorded, newest first (as many as the longest
    /// limit needs).
    pub declined_at: Vec<DateTime<Utc>>,
}

impl CardHistory {
    /// Whether an attempt of `kind` may be made at `now`: a retry (scheduled or manual)
    /// after a decline that is never retried is refused, and any attempt over a card
    /// network's count of declines.
    pub fn check(&self, kind: TransactionKind, now: DateTime<Utc>) -> Result<(), Refusal> {
        let Some(last) = &self.last else { return Ok(()) };
        let counts = Counts::tally(now, self.declined_at.iter().copied());
        match kind {
            TransactionKind::Retry | TransactionKind::ManualRetry => governor::may_retry(last, &counts),
            TransactionKind::Scheduled
            | TransactionKind::PaymentSeries
            | TransactionKind::Proration
            | TransactionKind::PaymentLink => governor::may_attempt(last.scheme, &counts),
        }
    }
}

/// How many declines to read per card: enough for every limit to be reached.
fn depth() -> i64 {
    governor::LIMITS.iter().map(|l| i64::from(l.max)).max().unwrap_or(0)
}

/// The history of each (merchant, payment method), in the order given.
pub async fn load(conn: &mut PgConnection, cards: &[(Uuid, String)]) -> sqlx::Result<Vec<CardHistory>> {
    if cards.is_empty() {
        return Ok(vec![]);
    }
    let (merchants, methods): (Vec<Uuid>, Vec<String>) = cards.iter().cloned().unzip();
    let rows = sqlx::query!(
        r#"SELECT u.i AS "i!", last.network_scheme AS "scheme?", last.network_code AS "code?",
                last.network_category AS "category?", last.network_advice AS "advice?",
                ARRAY(SELECT d.settled_at FROM transactions d
                      WHERE d.merchant_id = u.m AND d.payment_method = u.pm AND d.status = 'declined'
                        AND d.network_scheme IS NOT NULL AND d.settled_at IS NOT NULL
                      ORDER BY d.settled_at DESC LIMIT $3) AS "declined_at!: Vec<DateTime<Utc>>"
         FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(m, pm, i)
         LEFT JOIN LATERAL (
            SELECT d.network_scheme, d.network_code, d.network_category, d.network_advice FROM transactions d
            WHERE d.merchant_id = u.m AND d.payment_method = u.pm AND d.status = 'declined'
              AND d.network_scheme IS NOT NULL AND d.settled_at IS NOT NULL
            ORDER BY d.settled_at DESC LIMIT 1) last ON true
         ORDER BY u.i"#,
        &merchants,
        &methods,
        depth(),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| CardHistory {
            last: r.scheme.zip(r.code).map(|(scheme, code)| Network {
                scheme: Scheme::parse(&scheme),
                response_code: code,
                category: r.category.and_then(|c| u8::try_from(c).ok()),
                advice_code: r.advice,
            }),
            declined_at: r.declined_at,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn history(code: &str, scheme: Scheme, n: i64, now: DateTime<Utc>, apart: TimeDelta) -> CardHistory {
        CardHistory {
            last: Some(Network { scheme, response_code: code.into(), category: None, advice_code: None }),
            declined_at: (0..n).map(|i| now - apart * i as i32).collect(),
        }
    }

    #[test]
    fn a_never_retried_decline_stops_retries_but_not_the_next_cycle() {
        let now = Utc::now();
        let h = history("43", Scheme::Visa, 1, now, TimeDelta::hours(1));
        assert_eq!(h.check(TransactionKind::Retry, now).unwrap_err().rule(), "visa_category_1");
        assert_eq!(h.check(TransactionKind::ManualRetry, now).unwrap_err().rule(), "visa_category_1");
        assert!(h.check(TransactionKind::Scheduled, now).is_ok());
        assert!(h.check(TransactionKind::PaymentSeries, now).is_ok());
    }

    #[test]
    fn the_limits_count_declines_in_their_window() {
        let now = Utc::now();
        let fifteen = history("05", Scheme::Visa, 15, now, TimeDelta::days(1));
        for kind in [TransactionKind::Scheduled, TransactionKind::Retry, TransactionKind::PaymentSeries] {
            assert_eq!(fifteen.check(kind, now).unwrap_err().rule(), "visa_15_in_30_days");
        }
        // The oldest of the fifteen leaves the 30-day window two weeks later.
        assert!(fifteen.check(TransactionKind::Scheduled, now + TimeDelta::days(16)).is_ok());
        assert!(history("05", Scheme::Visa, 14, now, TimeDelta::days(1)).check(TransactionKind::Retry, now).is_ok());
        let ten = history("05", Scheme::Mastercard, 10, now, TimeDelta::minutes(1));
        assert_eq!(ten.check(TransactionKind::Scheduled, now).unwrap_err().rule(), "mastercard_10_in_24_hours");
        assert!(ten.check(TransactionKind::Scheduled, now + TimeDelta::hours(24)).is_ok());
        assert!(CardHistory::default().check(TransactionKind::ManualRetry, now).is_ok());
        assert!(
            history("05", Scheme::Other, 35, now, TimeDelta::minutes(1)).check(TransactionKind::Retry, now).is_ok()
        );
    }
}
