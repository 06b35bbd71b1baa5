//! Money: ISO 4217 currencies with their minor units, and amounts as exact decimals.
//! Amounts go out as strings ("9.99") and come in as a string or a JSON number.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Active ISO 4217 codes whose minor unit is not 2.
const MINOR_UNITS_EXCEPTIONS: &[(&str, u32)] = &[
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("ISK", 0),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("PYG", 0),
    ("RWF", 0),
    ("UGX", 0),
    ("UYI", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("BHD", 3),
    ("IQD", 3),
    ("JOD", 3),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("TND", 3),
    ("CLF", 4),
    ("UYW", 4),
];

/// Active ISO 4217 codes with two minor units.
const TWO_DECIMALS: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BMD", "BND",
    "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHE", "CHF", "CHW", "CNY", "COP", "COU",
    "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS",
    "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR",
    "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU",
    "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS",
    "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD",
    "USN", "UZS", "VED", "VES", "WST", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG",
];

/// The largest amount accepted for one charge, in major units.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// An ISO 4217 currency code, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(code: &str) -> Option<Currency> {
        let known = MINOR_UNITS_EXCEPTIONS.iter().any(|(c, _)| *c == code) || TWO_DECIMALS.contains(&code);
        if !known {
            return None;
        }
        let b = code.as_bytes();
        Some(Currency([b[0], b[1], b[2]]))
    }

    pub fn code(&self) -> &str {
        // Only ASCII codes from the tables above are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    pub fn minor_units(&self) -> u32 {
        MINOR_UNITS_EXCEPTIONS.iter().find(|(c, _)| *c == self.code()).map(|(_, n)| *n).unwrap_or(2)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

/// An amount as the client sent it: a JSON string or number, kept as text until it
/// is checked against a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmountInput(pub String);

impl<'de> Deserialize<'de> for AmountInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a Value, so that a missing field is still reported as missing.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(AmountInput(s)),
            serde_json::Value::Number(n) => Ok(AmountInput(n.to_string())),
            _ => Err(serde::de::Error::custom("expected a decimal string or number")),
        }
    }
}

impl utoipa::PartialSchema for AmountInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^\d+(\.\d+)?$")))
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .description(Some("A positive amount, as a decimal string or a number"))
            .into()
    }
}
impl utoipa::ToSchema for AmountInput {}

/// Parse a positive amount whose scale fits the currency's minor units.
pub fn parse_amount(raw: &str, currency: Option<Currency>) -> Result<Decimal, String> {
    let text = raw.trim();
    let valid_shape = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.matches('.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.');
    if !valid_shape {
        return Err("must be a positive decimal number such as \"9.99\"".into());
    }
    let value = Decimal::from_str(text).map_err(|_| "is not a valid decimal number".to_owned())?;
    if value <= Decimal::ZERO {
        return Err("must be greater than zero".into());
    }
    if value > Decimal::from(MAX_AMOUNT) {
        return Err(format!("must not exceed {MAX_AMOUNT}"));
    }
    if let Some(cur) = currency {
        let scale = value.normalize().scale();
        if scale > cur.minor_units() {
            return Err(format!("has {scale} decimal places but {} allows {}", cur.code(), cur.minor_units()));
        }
    }
    Ok(value)
}

/// Render an amount with exactly the currency's minor units ("9.90", "100", "1.500").
pub fn format_amount(value: Decimal, currency: &str) -> String {
    let units = Currency::parse(currency).map(|c| c.minor_units()).unwrap_or(2);
    let mut v = value.round_dp(units);
    v.rescale(units);
    v.to_string()
}

/// Serialize a Decimal as a JSON string.
pub fn serialize_amount<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.normalize().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Option<Currency> {
        Currency::parse("EUR")
    }

    #[test]
    fn currencies_and_minor_units() {
        assert_eq!(Currency::parse("EUR").unwrap().minor_units(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        assert!(Currency::parse("eur").is_none());
        assert!(Currency::parse("XXX").is_none());
        assert!(Currency::parse("EU").is_none());
        assert!(Currency::parse("EURO").is_none());
    }

    #[test]
    fn amounts_respect_scale() {
        assert_eq!(parse_amount("9.99", eur()).unwrap().to_string(), "9.99");
        assert_eq!(parse_amount("10.50", eur()).unwrap().to_string(), "10.50");
        assert!(parse_amount("9.999", eur()).is_err());
        assert!(parse_amount("100.5", Currency::parse("JPY")).is_err());
        assert!(parse_amount("100", Currency::parse("JPY")).is_ok());
        assert!(parse_amount("1.234", Currency::parse("KWD")).is_ok());
        // Trailing zeros do not count against the scale.
        assert!(parse_amount("100.00", Currency::parse("JPY")).is_ok());
    }

    #[test]
    fn bad_amounts_are_rejected() {
        for bad in ["", "-1", "0", "0.00", "abc", "1e5", "1.2.3", ".5", "5.", " ", "NaN", "+3"] {
            assert!(parse_amount(bad, eur()).is_err(), "{bad:?} accepted");
        }
        assert!(parse_amount("1000000000001", eur()).is_err());
    }

    #[test]
    fn amounts_format_with_minor_units() {
        assert_eq!(format_amount(Decimal::from_str("9.9").unwrap(), "EUR"), "9.90");
        assert_eq!(format_amount(Decimal::from(100), "JPY"), "100");
        assert_eq!(format_amount(Decimal::from_str("1.5").unwrap(), "KWD"), "1.500");
    }

    #[test]
    fn amount_input_accepts_string_or_number() {
        let a: AmountInput = serde_json::from_str("\"9.99\"").unwrap();
        assert_eq!(a.0, "9.99");
        let b: AmountInput = serde_json::from_str("9.99").unwrap();
        assert_eq!(parse_amount(&b.0, eur()).unwrap().to_string(), "9.99");
        assert!(serde_json::from_str::<AmountInput>("true").is_err());
        assert!(serde_json::from_str::<AmountInput>("[1]").is_err());
    }

    proptest! {
        #[test]
        fn any_minor_amount_round_trips(cents in 1i64..100_000_000_000, units in 0u32..4) {
            let cur = match units { 0 => "JPY", 1 | 2 => "EUR", _ => "KWD" };
            let c = Currency::parse(cur).unwrap();
            let d = Decimal::new(cents, c.minor_units());
            let text = format_amount(d, cur);
            prop_assert_eq!(parse_amount(&text, Some(c)).unwrap(), d);
        }

        #[test]
        fn too_many_decimals_always_rejected(whole in 0i64..1_000_000, extra in 1u32..6) {
            let c = Currency::parse("EUR").unwrap();
            let text = format!("{whole}.{}1", "0".repeat(1 + extra as usize));
            prop_assert!(parse_amount(&text, Some(c)).is_err());
        }
    }
}
