//! The billing-cycle state machine (docs/states.md#billing-cycles).
//!
//! The allowed transitions are the table `TRANSITIONS`; `apply` is the one function
//! that writes a cycle's status, always with its `status_changed` event, for rows the
//! caller has locked in the lock order (`super::locks`). A transition also releases
//! the cycle's lease (docs/architecture.md#the-lease).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::cycles::CycleStatus::{self, *};
use crate::error::Result;
use crate::events::{Actor, NewEvent};

/// Why a cycle moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A charge of the cycle was approved: the money moved, whatever the cycle's state.
    Approved,
    /// A charge was declined: dunning decides retrying or failed.
    Declined,
    /// The charge's job ran out of attempts (dead-lettered).
    DeadLettered,
    /// The merchant retried a failed or errored cycle.
    ManualRetry,
    /// An operator replayed the dead letter of an errored cycle.
    Replayed,
    /// The gateway confirmed that an errored attempt went through.
    Reconciled,
    /// Its subscription was cancelled.
    SubscriptionCancelled,
    /// A customer paid its payment link: the attempt is open (docs/payment-links.md).
    LinkPayment,
    /// Its payment link expired unpaid (`failureCode: link_expired`).
    LinkExpired,
}

/// (cause, from, to): every move a cycle can make.
pub const TRANSITIONS: &[(Cause, &[CycleStatus], &[CycleStatus])] = &[
    (Cause::Approved, &[Pending, Retrying, Failed, Error, Cancelled, Succeeded], &[Succeeded]),
    (Cause::Declined, &[Pending, Retrying], &[Retrying, Failed]),
    (Cause::DeadLettered, &[Pending, Retrying], &[Error]),
    (Cause::ManualRetry, &[Failed, Error], &[Retrying]),
    (Cause::Replayed, &[Error], &[Pending, Retrying]),
    (Cause::Reconciled, &[Error], &[Succeeded]),
    (Cause::SubscriptionCancelled, &[Pending, Retrying], &[Cancelled]),
    (Cause::LinkPayment, &[Failed, Error], &[Retrying]),
    (Cause::LinkExpired, &[Pending], &[Failed]),
];

/// Whether `cause` may move a cycle from `from` to `to`.
pub fn permits(cause: Cause, from: CycleStatus, to: CycleStatus) -> bool {
    TRANSITIONS.iter().any(|(c, f, t)| *c == cause && f.contains(&from) && t.contains(&to))
}

/// The states `cause` may move a cycle out of.
pub fn sources(cause: Cause) -> Vec<CycleStatus> {
    TRANSITIONS.iter().filter(|(c, _, _)| *c == cause).flat_map(|(_, f, _)| f.iter().copied()).collect()
}

/// One move of a locked cycle.
#[derive(Debug, Clone)]
pub struct Move {
    pub id: Uuid,
    pub merchant_id: Uuid,
    pub cause: Cause,
    pub from: CycleStatus,
    pub to: CycleStatus,
    pub next_retry_at: Option<DateTime<Utc>>,
    /// `Some(code)` sets the failure code (`Some(None)` clears it); `None` keeps it.
    pub failure_code: Option<Option<String>>,
    /// The cycle's attempt count after the move, when it opens one.
    pub attempts: Option<i32>,
    /// When a charge of the cycle settled (sets first_attempt_at, failed_at).
    pub settled_at: Option<DateTime<Utc>>,
    pub actor: Actor,
    /// Fields added to the `status_changed` event beside from and to.
    pub extra: Value,
}

impl Move {
    pub fn new(cycle: &super::locks::LockedCycle, cause: Cause, to: CycleStatus, actor: Actor) -> Move {
        Move {
            id: cycle.id,
            merchant_id: cycle.merchant_id,
            cause,
            from: cycle.status,
            to,
            next_retry_at: None,
            failure_code: None,
            attempts: None,
            settled_at: None,
            actor,
            extra: json!({}),
        }
    }

    pub fn extra(mut self, extra: Value) -> Move {
        self.extra = extra;
        self
    }
}

/// Write moves the caller checked with `permits` on rows it holds locked, and add
/// their events to `evs`. A move to the same state writes its fields but no event.
pub async fn apply(conn: &mut PgConnection, moves: &[Move], evs: &mut Vec<NewEvent>) -> Result<()> {
    if moves.is_empty() {
        return Ok(());
    }
    let n = moves.len();
    let (mut ids, mut st, mut nr) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut set_fc, mut fc, mut att, mut at) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for m in moves {
        if !permits(m.cause, m.from, m.to) {
            return Err(crate::Error::Internal(anyhow::anyhow!(
                "billing cycle {} cannot move from {:?} to {:?} ({:?})",
                m.id,
                m.from,
                m.to,
                m.cause
            )));
        }
        ids.push(m.id);
        st.push(m.to);
        nr.push(m.next_retry_at);
        set_fc.push(m.failure_code.is_some());
        fc.push(m.failure_code.clone().flatten());
        att.push(m.attempts);
        at.push(m.settled_at);
        if m.from != m.to {
            let mut data = json!({"from": m.from, "to": m.to});
            if let (Value::Object(d), Value::Object(x)) = (&mut data, &m.extra) {
                d.extend(x.clone());
            }
            evs.push(NewEvent::new(m.merchant_id, "billing_cycle", m.id, "status_changed", data, m.actor));
        }
        if m.cause == Cause::Declined && m.to == Retrying {
            evs.push(NewEvent::new(
                m.merchant_id,
                "billing_cycle",
                m.id,
                "retry_scheduled",
                json!({"nextRetryAt": m.next_retry_at}),
                m.actor,
            ));
        }
    }
    sqlx::query!(
        "UPDATE billing_cycles c SET status = u.st, next_retry_at = u.nr,
            failure_code = CASE WHEN u.set_fc THEN u.fc ELSE c.failure_code END,
            attempts = COALESCE(u.att, c.attempts),
            failed_at = CASE WHEN u.st = 'failed' AND u.at IS NOT NULL THEN u.at ELSE c.failed_at END,
            first_attempt_at = COALESCE(c.first_attempt_at, u.at),
            enqueued_until = NULL
         FROM unnest($1::uuid[], $2::cycle_status[], $3::timestamptz[], $4::bool[], $5::text[], $6::int[], $7::timestamptz[])
            AS u(id, st, nr, set_fc, fc, att, at)
         WHERE c.id = u.id",
        &ids,
        &st as _,
        &nr as &[Option<DateTime<Utc>>],
        &set_fc,
        &fc as &[Option<String>],
        &att as &[Option<i32>],
        &at as &[Option<DateTime<Utc>>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Cancel every open cycle of a subscription whose row the caller holds locked.
pub async fn cancel_open(
    conn: &mut PgConnection,
    subscription_id: Uuid,
    actor: Actor,
    evs: &mut Vec<NewEvent>,
) -> Result<()> {
    let open = super::locks::open_cycles_of(conn, subscription_id).await?;
    let moves: Vec<Move> = open
        .iter()
        .map(|c| {
            Move::new(c, Cause::SubscriptionCancelled, Cancelled, actor)
                .extra(json!({"reason": "subscription_cancelled"}))
        })
        .collect();
    apply(conn, &moves, evs).await
}

/// Move the next retry of a `retrying` cycle (held locked by the caller) to `at`;
/// its status stays. Used when a customer gives a new card (docs/pages.md#the-checkout).
pub async fn retry_at(conn: &mut PgConnection, cycle_id: Uuid, at: DateTime<Utc>) -> Result<()> {
    sqlx::query!("UPDATE billing_cycles SET next_retry_at = $2 WHERE id = $1 AND status = 'retrying'", cycle_id, at)
        .execute(conn)
        .await?;
    Ok(())
}

/// Open attempt `attempts` of a locked `retrying` cycle (a scheduled retry): not a
/// status change, but it takes the cycle's lease off as a transition does.
pub async fn open_attempt(conn: &mut PgConnection, cycle_id: Uuid, attempts: i32) -> Result<()> {
    sqlx::query!(
        "UPDATE billing_cycles SET attempts = $2, next_retry_at = NULL, enqueued_until = NULL WHERE id = $1",
        cycle_id,
        attempts
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_moves_are_permitted() {
        assert!(permits(Cause::Approved, Cancelled, Succeeded));
        assert!(permits(Cause::Declined, Pending, Retrying));
        assert!(!permits(Cause::Declined, Cancelled, Failed));
        assert!(!permits(Cause::ManualRetry, Retrying, Retrying));
        assert!(!permits(Cause::Replayed, Failed, Pending));
        assert!(!permits(Cause::SubscriptionCancelled, Succeeded, Cancelled));
    }

    #[test]
    fn every_final_state_is_left_only_by_an_approval_or_an_operator() {
        for (cause, from, _) in TRANSITIONS {
            if from.contains(&Succeeded) || from.contains(&Cancelled) {
                assert_eq!(*cause, Cause::Approved);
            }
        }
        assert_eq!(sources(Cause::Reconciled), vec![Error]);
    }
}
