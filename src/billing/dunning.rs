//! What a gateway outcome does to a cycle and its subscription (docs/states.md#dunning). Pure, so
//! every rule is unit-tested without a database.

use chrono::{DateTime, Duration, Utc};

use super::cycles::CycleStatus;
use super::transactions::{TransactionKind, TransactionStatus};
use crate::gateway::DeclineCode;
use crate::subscriptions::SubscriptionStatus;

/// A settled attempt, as the engine records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Approved {
        reference: String,
    },
    /// `code` is the gateway's decline code, or `over_authorized_limit`.
    Declined {
        code: String,
        soft: bool,
    },
}

impl Settled {
    pub fn declined(code: DeclineCode) -> Settled {
        Settled::Declined { code: code.as_str().to_owned(), soft: code.is_soft() }
    }

    pub fn transaction_status(&self) -> TransactionStatus {
        match self {
            Settled::Approved { .. } => TransactionStatus::Succeeded,
            Settled::Declined { .. } => TransactionStatus::Declined,
        }
    }

    pub fn outcome_label(&self) -> &'static str {
        match self {
            Settled::Approved { .. } => "succeeded",
            Settled::Declined { .. } => "declined",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleChange {
    pub status: CycleStatus,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    /// The subscription's status after this outcome (only applied to active/past_due ones).
    pub subscription: SubscriptionStatus,
}

/// The cycle after attempt `attempt` (1 = the scheduled charge) settled at `at`.
/// Soft declines wait `retry_schedule_hours[attempt - 1]` from this attempt; when the
/// schedule is used up, or on a hard decline, or after a manual retry, the cycle fails.
pub fn after(
    kind: TransactionKind,
    attempt: i32,
    retry_schedule_hours: &[i32],
    outcome: &Settled,
    at: DateTime<Utc>,
) -> CycleChange {
    match outcome {
        Settled::Approved { .. } => CycleChange {
            status: CycleStatus::Succeeded,
            next_retry_at: None,
            failure_code: None,
            subscription: SubscriptionStatus::Active,
        },
        Settled::Declined { code, soft } => {
            let scheduled = kind != TransactionKind::ManualRetry;
            let delay = usize::try_from(attempt - 1).ok().and_then(|i| retry_schedule_hours.get(i));
            match (soft, scheduled, delay) {
                (true, true, Some(hours)) => CycleChange {
                    status: CycleStatus::Retrying,
                    next_retry_at: Some(at + Duration::hours(*hours as i64)),
                    failure_code: Some(code.clone()),
                    subscription: SubscriptionStatus::PastDue,
                },
                _ => CycleChange {
                    status: CycleStatus::Failed,
                    next_retry_at: None,
                    failure_code: Some(code.clone()),
                    subscription: SubscriptionStatus::PastDue,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2027-01-31T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn soft() -> Settled {
        Settled::declined(DeclineCode::InsufficientFunds)
    }

    #[test]
    fn approval_settles_the_cycle() {
        let c = after(TransactionKind::Scheduled, 1, &[24], &Settled::Approved { reference: "r".into() }, t0());
        assert_eq!(c.status, CycleStatus::Succeeded);
        assert_eq!(c.subscription, SubscriptionStatus::Active);
    }

    #[test]
    fn soft_declines_follow_the_schedule_then_fail() {
        let sched = [24, 72, 120];
        let c1 = after(TransactionKind::Scheduled, 1, &sched, &soft(), t0());
        assert_eq!(c1.status, CycleStatus::Retrying);
        assert_eq!(c1.next_retry_at, Some(t0() + Duration::hours(24)));
        assert_eq!(c1.subscription, SubscriptionStatus::PastDue);
        let c3 = after(TransactionKind::Retry, 3, &sched, &soft(), t0());
        assert_eq!(c3.next_retry_at, Some(t0() + Duration::hours(120)));
        let c4 = after(TransactionKind::Retry, 4, &sched, &soft(), t0());
        assert_eq!(c4.status, CycleStatus::Failed);
        assert_eq!(c4.failure_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(after(TransactionKind::Scheduled, 1, &[], &soft(), t0()).status, CycleStatus::Failed);
    }

    #[test]
    fn hard_declines_and_manual_retries_fail_at_once() {
        let hard = Settled::declined(DeclineCode::ExpiredCard);
        assert_eq!(after(TransactionKind::Scheduled, 1, &[24], &hard, t0()).status, CycleStatus::Failed);
        assert_eq!(after(TransactionKind::ManualRetry, 2, &[24, 24], &soft(), t0()).status, CycleStatus::Failed);
        let limit = Settled::Declined { code: "over_authorized_limit".into(), soft: false };
        assert_eq!(
            after(TransactionKind::Scheduled, 1, &[24], &limit, t0()).failure_code.as_deref(),
            Some("over_authorized_limit")
        );
    }
}
