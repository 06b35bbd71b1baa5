//! A charge request and the acquirer's answer (docs/gateway-protocol.md#post-v1charges),
//! and the answer a behaviour gives.

use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value};

use super::cards::{self, Behaviour, Scheme};
use crate::error::FieldError;
use crate::money::{Currency, parse_amount};

/// A validated charge request.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    pub idempotency_key: String,
    pub amount: Decimal,
    pub currency: String,
    pub payment_method: String,
    pub customer_account_id: String,
    pub initiator: String,
    /// `recurring.sequence`; the cycle of a charge without `recurring` is 0.
    pub sequence: Option<i32>,
    pub network_transaction_id: Option<String>,
}

// The simulator's OpenAPI document (openapi.rs) takes its schema from this type.
/// The answer to a charge, as stored and as sent (docs/gateway-protocol.md#the-answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// A decline is an answer (200), not an error.
    #[schema(schema_with = status_schema)]
    pub status: &'static str,
    /// The acquirer's id of the charge, approved or declined.
    pub reference: String,
    /// Null when approved; else a readable name (`insufficient_funds`, `declined_<responseCode>`, …).
    #[schema(required = true)]
    pub decline_code: Option<String>,
    pub network: Network,
    /// The network's id of this transaction: Visa 15 digits; Mastercard the Banknet
    /// reference and the settlement date (MMDD).
    pub network_transaction_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[schema(schema_with = scheme_schema)]
    pub scheme: &'static str,
    /// `00` approved, else the decline's two characters (`51`, `R1`, `N7`, …).
    pub response_code: String,
    /// Visa declines only: Visa's decline category.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 1, maximum = 4)]
    pub category: Option<i16>,
    /// Mastercard declines only, when the issuer gave one: the Merchant Advice Code.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, pattern = "^[0-9]{2}$")]
    pub advice_code: Option<String>,
}

/// The `&'static str` fields take only these values.
fn status_schema() -> utoipa::openapi::Object {
    string_of(["approved", "declined"])
}

pub(super) fn scheme_schema() -> utoipa::openapi::Object {
    string_of([Scheme::Visa, Scheme::Mastercard].map(Scheme::as_str))
}

fn string_of(values: [&str; 2]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values))
        .build()
}

/// An outcome before it has a reference and a network transaction id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub scheme: Scheme,
    pub approved: bool,
    pub response_code: String,
    pub category: Option<i16>,
    pub advice_code: Option<String>,
}

impl Outcome {
    pub fn approved(scheme: Scheme) -> Outcome {
        Outcome { scheme, approved: true, response_code: "00".into(), category: None, advice_code: None }
    }

    pub fn visa_decline(code: &str) -> Outcome {
        Outcome {
            scheme: Scheme::Visa,
            approved: false,
            response_code: code.to_owned(),
            category: Some(i16::from(cards::visa_category(code))),
            advice_code: None,
        }
    }

    pub fn decline_code(&self) -> Option<String> {
        (!self.approved).then(|| cards::decline_name(&self.response_code))
    }
}

/// The outcome of a behaviour; `attempt` is the charge's rank in its cycle (1 for the
/// first), needed by `RecoverAfter` only.
pub fn outcome(behaviour: &Behaviour, attempt: u32) -> Outcome {
    match behaviour {
        Behaviour::Approve(scheme) => Outcome::approved(*scheme),
        Behaviour::VisaDecline(code) => Outcome::visa_decline(code),
        Behaviour::MastercardDecline { code, advice } => Outcome {
            scheme: Scheme::Mastercard,
            approved: false,
            response_code: code.clone(),
            category: None,
            advice_code: Some(advice.clone()),
        },
        Behaviour::RecoverAfter(n) if attempt <= *n => Outcome::visa_decline("51"),
        Behaviour::RecoverAfter(_) => Outcome::approved(Scheme::Visa),
        Behaviour::Unknown => Outcome::visa_decline("14"),
    }
}

/// Validate a charge request; every bad field is named.
pub fn parse(body: &Map<String, Value>) -> Result<ChargeRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let idempotency_key = text(body, "idempotencyKey", &mut errors).filter(|k| {
        let ok = k.bytes().all(|b| b.is_ascii_graphic()) && !k.contains('/');
        if !ok {
            errors.push(FieldError::new("idempotencyKey", "must be printable ASCII without spaces or '/'"));
        }
        ok
    });
    let currency = match body.get("currency") {
        Some(Value::String(c)) => Currency::parse(c).or_else(|| {
            errors.push(FieldError::new("currency", "must be an ISO 4217 code such as \"EUR\""));
            None
        }),
        None | Some(Value::Null) => {
            errors.push(FieldError::new("currency", "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new("currency", "must be an ISO 4217 code such as \"EUR\""));
            None
        }
    };
    let amount = match body.get("amount") {
        Some(Value::String(a)) => parse_amount(a, currency).map_err(|m| errors.push(FieldError::new("amount", m))).ok(),
        None | Some(Value::Null) => {
            errors.push(FieldError::new("amount", "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new("amount", "must be a decimal string such as \"10.00\""));
            None
        }
    };
    let payment_method = text(body, "paymentMethod", &mut errors);
    let customer_account_id = text(body, "customerAccountId", &mut errors);
    let initiator = match body.get("initiator") {
        Some(Value::String(i)) if i == "merchant" || i == "customer" => Some(i.clone()),
        None | Some(Value::Null) => {
            errors.push(FieldError::new("initiator", "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new("initiator", "must be \"merchant\" or \"customer\""));
            None
        }
    };
    let (sequence, network_transaction_id) = recurring(body.get("recurring"), &mut errors);
    match (idempotency_key, amount, currency, payment_method, customer_account_id, initiator) {
        (
            Some(idempotency_key),
            Some(amount),
            Some(currency),
            Some(payment_method),
            Some(customer),
            Some(initiator),
        ) if errors.is_empty() => Ok(ChargeRequest {
            idempotency_key,
            amount,
            currency: currency.code().to_owned(),
            payment_method,
            customer_account_id: customer,
            initiator,
            sequence,
            network_transaction_id,
        }),
        _ => Err(errors),
    }
}

fn recurring(value: Option<&Value>, errors: &mut Vec<FieldError>) -> (Option<i32>, Option<String>) {
    let r = match value {
        None | Some(Value::Null) => return (None, None),
        Some(Value::Object(r)) => r,
        Some(_) => {
            errors.push(FieldError::new("recurring", "must be an object"));
            return (None, None);
        }
    };
    let sequence = match r.get("sequence") {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|s| (1..=i64::from(i32::MAX)).contains(&s)) => {
            n.as_i64().map(|s| s as i32)
        }
        None | Some(Value::Null) => {
            errors.push(FieldError::new("recurring.sequence", "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new("recurring.sequence", "must be an integer of at least 1"));
            None
        }
    };
    let id = match r.get("networkTransactionId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 && !s.contains('\0') => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new("recurring.networkTransactionId", "must be a string of 1 to 255 characters"));
            None
        }
    };
    (sequence, id)
}

/// A required string of 1 to 255 characters.
fn text(body: &Map<String, Value>, field: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    match body.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 && !s.contains('\0') => Some(s.clone()),
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(field, "must be a non-empty string of at most 255 characters"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let body = json!({"amount": "-1", "currency": "eur", "initiator": "bank", "recurring": {"sequence": 0}});
        let errors = parse(body.as_object().unwrap()).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "idempotencyKey",
            "amount",
            "currency",
            "paymentMethod",
            "customerAccountId",
            "initiator",
            "recurring.sequence",
        ] {
            assert!(fields.contains(&f), "{f} not in {fields:?}");
        }
    }

    #[test]
    fn recover_after_declines_then_approves() {
        let b = Behaviour::RecoverAfter(2);
        assert!(!outcome(&b, 1).approved && !outcome(&b, 2).approved && outcome(&b, 3).approved);
        assert_eq!(outcome(&b, 1).category, Some(2));
        assert_eq!(outcome(&Behaviour::Unknown, 1).response_code, "14");
    }
}
