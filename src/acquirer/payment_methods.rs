//! Tokenizing a card (docs/gateway-protocol.md#post-v1payment-methods): validation, the
//! scheme of a number, and the behaviour of the test card numbers. The card number and
//! cvc live only in the request being handled: they are never stored, logged or echoed
//! (error messages name the field, never its value).

use chrono::Datelike;
use serde::Serialize;
use serde_json::{Map, Value};

use super::cards::Scheme;
use crate::error::FieldError;

/// A card accepted for tokenization (the number reduced to what may be kept).
#[derive(Debug, Clone)]
pub struct Card {
    pub scheme: Scheme,
    pub last4: String,
    pub exp_month: i16,
    pub exp_year: i16,
    pub customer_account_id: Option<String>,
    /// The behaviour token the number maps to (docs/gateway-protocol.md#test-card-numbers).
    pub behaviour: &'static str,
}

/// The answer to a tokenization: the token, and what may be kept of the card.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Minted {
    /// `<behaviour token>__<random>`: charge with it as `paymentMethod`.
    pub token: String,
    #[schema(schema_with = super::charges::scheme_schema)]
    pub scheme: &'static str,
    pub last4: String,
    pub exp_month: i16,
    pub exp_year: i16,
}

impl Minted {
    pub fn new(token: String, card: &Card) -> Minted {
        Minted {
            token,
            scheme: card.scheme.as_str(),
            last4: card.last4.clone(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
        }
    }
}

/// Test card numbers and the token behaviour each one gets. Any other valid number
/// approves on its scheme.
pub const TEST_CARDS: &[(&str, &str)] = &[
    ("4242424242424242", "pm_ok"),
    ("4000056655665556", "pm_ok"),
    ("5555555555554444", "pm_mc_ok"),
    ("2223003122003222", "pm_mc_ok"),
    ("5200828282828210", "pm_mc_ok"),
    ("4000000000000002", "pm_visa_decline_05"),
    ("4000000000009995", "pm_visa_decline_51"),
    ("4000000000009987", "pm_visa_decline_41"),
    ("4000000000009979", "pm_visa_decline_43"),
    ("4000000000000069", "pm_visa_decline_54"),
    ("4000000000000127", "pm_visa_decline_N7"),
    ("4000000000000119", "pm_visa_decline_96"),
    ("4000000000000317", "pm_visa_decline_R1"),
    ("4000000000000325", "pm_visa_decline_R0"),
    ("4000000000000416", "pm_recover_after_1"),
    ("4000000000000424", "pm_recover_after_2"),
    ("4000000000000432", "pm_recover_after_3"),
    ("5100000000000511", "pm_mc_decline_51_mac_24"),
    ("5100000000000149", "pm_mc_decline_14_mac_03"),
    ("5100000000000057", "pm_mc_decline_05_mac_21"),
    ("2221000000000215", "pm_mc_decline_54_mac_01"),
];

/// Validate a tokenization request; every bad field is named.
pub fn parse(body: &Map<String, Value>, today: chrono::NaiveDate) -> Result<Card, Vec<FieldError>> {
    let mut errors = Vec::new();
    let number = match body.get("cardNumber") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("cardNumber", "is required"));
            None
        }
        Some(Value::String(s)) => {
            // Spaces between digit groups are allowed, as printed on a card.
            let digits: String = s.chars().filter(|c| *c != ' ').collect();
            match check_number(&digits) {
                Ok(scheme) => Some((digits, scheme)),
                Err(message) => {
                    errors.push(FieldError::new("cardNumber", message));
                    None
                }
            }
        }
        Some(_) => {
            errors.push(FieldError::new("cardNumber", "must be a string of digits"));
            None
        }
    };
    let month = integer(body, "expMonth", 1, 12, &mut errors);
    let year = integer(body, "expYear", 2000, 2099, &mut errors);
    if let (Some(m), Some(y)) = (month, year) {
        let now = (today.year() as i64, today.month() as i64);
        if y < now.0 {
            errors.push(FieldError::new("expYear", "the card has expired"));
        } else if (y, m) < now {
            errors.push(FieldError::new("expMonth", "the card has expired"));
        }
    }
    match body.get("cvc") {
        None | Some(Value::Null) => errors.push(FieldError::new("cvc", "is required")),
        Some(Value::String(s)) if (3..=4).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) => {}
        Some(_) => errors.push(FieldError::new("cvc", "must be a string of 3 or 4 digits")),
    }
    let customer_account_id = match body.get("customerAccountId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 255 && !s.contains('\0') => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new("customerAccountId", "must be a non-empty string of at most 255 characters"));
            None
        }
    };
    match (number, month, year) {
        (Some((digits, scheme)), Some(m), Some(y)) if errors.is_empty() => Ok(Card {
            scheme,
            last4: digits[digits.len() - 4..].to_owned(),
            exp_month: m as i16,
            exp_year: y as i16,
            customer_account_id,
            behaviour: behaviour_of(&digits, scheme),
        }),
        _ => Err(errors),
    }
}

fn integer(body: &Map<String, Value>, field: &str, min: i64, max: i64, errors: &mut Vec<FieldError>) -> Option<i64> {
    match body.get(field) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
        Some(Value::Number(n)) if n.as_i64().is_some_and(|v| (min..=max).contains(&v)) => n.as_i64(),
        Some(_) => {
            errors.push(FieldError::new(field, format!("must be an integer from {min} to {max}")));
            None
        }
    }
}

/// The scheme of a valid card number, or why it is not one.
pub fn check_number(digits: &str) -> Result<Scheme, &'static str> {
    if !(12..=19).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("must be 12 to 19 digits");
    }
    if !luhn(digits) {
        return Err("fails the Luhn check");
    }
    scheme_of(digits).ok_or("is not a Visa or Mastercard number")
}

/// 4… is Visa; 51–55 and 2221–2720 are Mastercard.
pub fn scheme_of(digits: &str) -> Option<Scheme> {
    let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
    if digits.starts_with('4') {
        Some(Scheme::Visa)
    } else if prefix(2).is_some_and(|p| (51..=55).contains(&p)) || prefix(4).is_some_and(|p| (2221..=2720).contains(&p))
    {
        Some(Scheme::Mastercard)
    } else {
        None
    }
}

pub fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn behaviour_of(digits: &str, scheme: Scheme) -> &'static str {
    TEST_CARDS.iter().find(|(n, _)| *n == digits).map_or(
        match scheme {
            Scheme::Visa => "pm_ok",
            Scheme::Mastercard => "pm_mc_ok",
        },
        |(_, b)| *b,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_are_valid_and_on_their_scheme() {
        for (number, behaviour) in TEST_CARDS {
            let scheme = check_number(number).unwrap_or_else(|e| panic!("{number}: {e}"));
            let on_mc = behaviour.starts_with("pm_mc_");
            assert_eq!(scheme == Scheme::Mastercard, on_mc, "{number} → {behaviour}");
            assert_ne!(super::super::cards::behaviour(behaviour), super::super::cards::Behaviour::Unknown);
        }
    }

    #[test]
    fn schemes_by_prefix() {
        assert_eq!(scheme_of("2221000000000009"), Some(Scheme::Mastercard));
        assert_eq!(scheme_of("2720990000000000"), Some(Scheme::Mastercard));
        assert_eq!(scheme_of("2721000000000000"), None);
        assert_eq!(scheme_of("5600000000000000"), None);
        assert_eq!(check_number("378282246310005"), Err("is not a Visa or Mastercard number"));
        assert_eq!(check_number("4242424242424241"), Err("fails the Luhn check"));
    }
}
