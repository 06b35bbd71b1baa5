//! Payment gateways. recur talks to a gateway only through `Gateway`; the sandbox is
//! a real implementation of it with its own ledger; `http` calls an acquirer over the
//! network (docs/gateway-protocol.md).

pub mod http;
pub mod registry;
pub mod sandbox;

use futures::future::BoxFuture;
use rust_decimal::Decimal;
use uuid::Uuid;

pub use crate::billing::governor::{Network, Scheme};

/// One charge request. `idempotency_key` is derived from the transaction id: the
/// gateway must return the first result for a key it has seen and charge nothing new.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub merchant_key: Uuid,
    pub amount: Decimal,
    pub currency: String,
    pub customer_account_id: String,
    pub payment_method: String,
    /// What the charge is for (a billing cycle or a series transaction); the sandbox
    /// counts attempts per scope for `pm_sandbox_recover_after_N`.
    pub scope: Uuid,
    /// The billing cycle's number, for a subscription's charge (the protocol's
    /// `recurring.sequence`); `None` for a payment-series charge.
    pub sequence: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved {
        reference: String,
    },
    /// `network`: the card network's own answer, when the gateway reports one (the
    /// retry governor reads it: docs/governor.md).
    Declined {
        code: DeclineCode,
        network: Option<Network>,
    },
}

impl ChargeOutcome {
    /// A decline without network data (the sandbox's).
    pub fn declined(code: DeclineCode) -> ChargeOutcome {
        ChargeOutcome::Declined { code, network: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclineCode {
    InsufficientFunds,
    DoNotHonor,
    TryAgainLater,
    ExpiredCard,
    StolenCard,
    InvalidAccount,
}

impl DeclineCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineCode::InsufficientFunds => "insufficient_funds",
            DeclineCode::DoNotHonor => "do_not_honor",
            DeclineCode::TryAgainLater => "try_again_later",
            DeclineCode::ExpiredCard => "expired_card",
            DeclineCode::StolenCard => "stolen_card",
            DeclineCode::InvalidAccount => "invalid_account",
        }
    }

    /// Soft declines are worth retrying later (docs/states.md#dunning); hard ones are not.
    pub fn is_soft(self) -> bool {
        matches!(self, DeclineCode::InsufficientFunds | DeclineCode::DoNotHonor | DeclineCode::TryAgainLater)
    }
}

/// A technical failure: the outcome is unknown, the call may be repeated with the
/// same idempotency key.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("gateway timeout")]
    Timeout,
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway is down for now (its circuit breaker is open): the charge waits this
    /// long and goes again with the same idempotency key, without using up an attempt.
    #[error("gateway unavailable: circuit open")]
    CircuitOpen(std::time::Duration),
}

/// Why a card could not be tokenized.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenizeError {
    /// The gateway will not take this card (a number the sandbox does not know, a card
    /// the acquirer refuses): the customer may try another. The text is for the
    /// customer and never quotes the card.
    #[error("card refused: {0}")]
    Refused(String),
    /// No answer: the card may be tried again later.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

pub trait Gateway: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Whether a payment-method token can ever be charged for this merchant (checked
    /// at creation); an error when the merchant's gateway cannot be told.
    fn accepts_payment_method(&self, merchant_key: Uuid, token: &str) -> BoxFuture<'_, Result<bool, GatewayError>>;

    fn charge(&self, req: ChargeRequest) -> BoxFuture<'_, Result<ChargeOutcome, GatewayError>>;

    /// Exchange a card for a payment-method token this gateway can charge
    /// (docs/pages.md#card-handling). The card goes to the gateway and nowhere else.
    /// Gateways that cannot tokenize answer `Unavailable`.
    fn tokenize<'a>(
        &'a self,
        merchant_key: Uuid,
        customer_account_id: &'a str,
        card: &'a crate::cards::Card,
    ) -> BoxFuture<'a, Result<String, TokenizeError>> {
        let _ = (merchant_key, customer_account_id, card);
        Box::pin(futures::future::ready(Err(TokenizeError::Gateway(GatewayError::Unavailable(format!(
            "the {} gateway cannot tokenize cards",
            self.name()
        ))))))
    }

    /// The result already recorded for a key, if any (used before a manual retry of an
    /// `error` cycle, whose last call may have gone through).
    fn lookup(
        &self,
        merchant_key: Uuid,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<ChargeOutcome>, GatewayError>>;
}
