//! What a gateway outcome does to a cycle and its subscription (docs/states.md#dunning). Pure, so
//! every rule is unit-tested without a database.

use chrono::{DateTime, Duration, Utc};

use super::cycles::CycleStatus;
use super::governor::{self, AfterDecline, Network, Retry};
use super::transactions::{TransactionKind, TransactionStatus};
use crate::gateway::DeclineCode;
use crate::subscriptions::SubscriptionStatus;

/// A settled attempt, as the engine records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Approved {
        reference: String,
    },
    /// `code` is the gateway's decline code, or `over_authorized_limit`; `network` the
    /// card network's answer when the gateway reported one.
    Declined {
        code: String,
        soft: bool,
        network: Option<Network>,
    },
    /// Never sent: the retry governor refused the attempt under `rule`
    /// (docs/governor.md#refusals). Recorded as a decline with [`governor::FAILURE_CODE`].
    Refused {
        rule: &'static str,
    },
}

impl Settled {
    pub fn declined(code: DeclineCode) -> Settled {
        Settled::network_declined(code, None)
    }

    pub fn network_declined(code: DeclineCode, network: Option<Network>) -> Settled {
        Settled::Declined { code: code.as_str().to_owned(), soft: code.is_soft(), network }
    }

    pub fn transaction_status(&self) -> TransactionStatus {
        match self {
            Settled::Approved { .. } => TransactionStatus::Succeeded,
            Settled::Declined { .. } | Settled::Refused { .. } => TransactionStatus::Declined,
        }
    }

    pub fn outcome_label(&self) -> &'static str {
        match self {
            Settled::Approved { .. } => "succeeded",
            Settled::Declined { .. } => "declined",
            Settled::Refused { .. } => "refused",
        }
    }

    /// The transaction's `decline_code`.
    pub fn decline_code(&self) -> Option<&str> {
        match self {
            Settled::Approved { .. } => None,
            Settled::Declined { code, .. } => Some(code),
            Settled::Refused { .. } => Some(governor::FAILURE_CODE),
        }
    }

    /// The network's answer, for a network decline.
    pub fn network(&self) -> Option<&Network> {
        match self {
            Settled::Declined { network, .. } => network.as_ref(),
            _ => None,
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
    /// The governor's rule that decided this change, if one did (docs/governor.md).
    pub rule: Option<&'static str>,
    /// The cardholder revoked the authorization: cancel the subscription
    /// ([`governor::CANCEL_REASON`]).
    pub cancel_subscription: bool,
}

/// The cycle after attempt `attempt` (1 = the scheduled charge) settled at `at`.
/// Soft declines wait `retry_schedule_hours[attempt - 1]` from this attempt, unless the
/// network's answer says otherwise (the retry governor: never, or after the delay a
/// Mastercard advice code names); when the schedule is used up, on a hard decline, after
/// a manual retry or a refusal, the cycle fails.
pub fn after(
    kind: TransactionKind,
    attempt: i32,
    retry_schedule_hours: &[i32],
    outcome: &Settled,
    at: DateTime<Utc>,
) -> CycleChange {
    let failed = |code: &str, rule| CycleChange {
        status: CycleStatus::Failed,
        next_retry_at: None,
        failure_code: Some(code.to_owned()),
        subscription: SubscriptionStatus::PastDue,
        rule,
        cancel_subscription: false,
    };
    match outcome {
        Settled::Approved { .. } => CycleChange {
            status: CycleStatus::Succeeded,
            next_retry_at: None,
            failure_code: None,
            subscription: SubscriptionStatus::Active,
            rule: None,
            cancel_subscription: false,
        },
        Settled::Refused { rule } => failed(governor::FAILURE_CODE, Some(rule)),
        Settled::Declined { code, soft, network } => {
            let governed = network.as_ref().map_or(
                AfterDecline { retry: Retry::Schedule, cancel_subscription: false, rule: None },
                governor::after_decline,
            );
            // Only recur's own attempts follow the schedule: a merchant's manual retry, a
            // proration charge and a customer's link payment fail at once (a link stays
            // payable meanwhile).
            let scheduled = !matches!(
                kind,
                TransactionKind::ManualRetry | TransactionKind::Proration | TransactionKind::PaymentLink
            );
            let step = usize::try_from(attempt - 1)
                .ok()
                .and_then(|i| retry_schedule_hours.get(i))
                .filter(|_| *soft && scheduled)
                .map(|hours| Duration::hours(i64::from(*hours)));
            let change = match governed.next_retry_at(at, step) {
                Some(next) => CycleChange {
                    status: CycleStatus::Retrying,
                    next_retry_at: Some(next),
                    failure_code: Some(code.clone()),
                    subscription: SubscriptionStatus::PastDue,
                    rule: governed.rule,
                    cancel_subscription: false,
                },
                None => failed(code, governed.rule),
            };
            CycleChange { cancel_subscription: governed.cancel_subscription, ..change }
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
        assert_eq!(after(TransactionKind::Proration, 1, &[24, 24], &soft(), t0()).status, CycleStatus::Failed);
        let limit = Settled::Declined { code: "over_authorized_limit".into(), soft: false, network: None };
        assert_eq!(
            after(TransactionKind::Scheduled, 1, &[24], &limit, t0()).failure_code.as_deref(),
            Some("over_authorized_limit")
        );
    }

    fn network(scheme: governor::Scheme, code: &str, advice: Option<&str>) -> Option<Network> {
        Some(Network { scheme, response_code: code.into(), category: None, advice_code: advice.map(str::to_owned) })
    }

    #[test]
    fn the_network_answer_overrides_the_schedule() {
        use governor::Scheme::{Mastercard, Visa};
        let sched = [24, 72];
        let soft = |n| Settled::network_declined(DeclineCode::TryAgainLater, n);
        // Visa 51 (category 2): the merchant's schedule.
        let c = after(TransactionKind::Scheduled, 1, &sched, &soft(network(Visa, "51", None)), t0());
        assert_eq!(
            (c.status, c.next_retry_at, c.rule),
            (CycleStatus::Retrying, Some(t0() + Duration::hours(24)), None)
        );
        // Mastercard advice 25: retry after 24 h whatever the schedule says.
        let c = after(TransactionKind::Retry, 2, &sched, &soft(network(Mastercard, "91", Some("25"))), t0());
        assert_eq!(c.next_retry_at, Some(t0() + Duration::hours(24)));
        assert_eq!(c.rule, Some("mastercard_mac_25"));
        // ...but never adds a retry the schedule does not have.
        let c = after(TransactionKind::Retry, 3, &sched, &soft(network(Mastercard, "91", Some("25"))), t0());
        assert_eq!(c.status, CycleStatus::Failed);
        // A soft code with a category 1 answer is never retried; R1 also cancels.
        let c = after(TransactionKind::Scheduled, 1, &sched, &soft(network(Visa, "43", None)), t0());
        assert_eq!((c.status, c.rule, c.cancel_subscription), (CycleStatus::Failed, Some("visa_category_1"), false));
        let c = after(TransactionKind::Scheduled, 1, &sched, &soft(network(Visa, "R1", None)), t0());
        assert_eq!(
            (c.status, c.rule, c.cancel_subscription),
            (CycleStatus::Failed, Some("authorization_revoked"), true)
        );
        let c = after(TransactionKind::Scheduled, 1, &sched, &soft(network(Mastercard, "05", Some("21"))), t0());
        assert!(c.cancel_subscription);
        // A refusal fails the cycle with the governor's code and rule.
        let c = after(TransactionKind::Retry, 2, &sched, &Settled::Refused { rule: "visa_15_in_30_days" }, t0());
        assert_eq!(c.status, CycleStatus::Failed);
        assert_eq!(c.failure_code.as_deref(), Some(governor::FAILURE_CODE));
        assert_eq!(c.rule, Some("visa_15_in_30_days"));
    }
}
