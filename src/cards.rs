//! Card numbers as the checkout form receives them (docs/pages.md#card-handling): the
//! server's own Luhn, brand, expiry and CVC checks (the page's JavaScript only mirrors
//! them). A card lives only in the request being handled: [`Card`] prints no digits in
//! `Debug`, error messages name the field and never its value, and what may be kept
//! afterwards is [`Kept`].

use chrono::{Datelike, NaiveDate};

use crate::error::FieldError;

/// Card brands recognised by their number's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brand {
    Visa,
    Mastercard,
    Amex,
    Discover,
    Jcb,
    Diners,
}

impl Brand {
    pub fn as_str(self) -> &'static str {
        match self {
            Brand::Visa => "visa",
            Brand::Mastercard => "mastercard",
            Brand::Amex => "amex",
            Brand::Discover => "discover",
            Brand::Jcb => "jcb",
            Brand::Diners => "diners",
        }
    }

    /// As printed on the page.
    pub fn label(self) -> &'static str {
        match self {
            Brand::Visa => "Visa",
            Brand::Mastercard => "Mastercard",
            Brand::Amex => "American Express",
            Brand::Discover => "Discover",
            Brand::Jcb => "JCB",
            Brand::Diners => "Diners Club",
        }
    }

    pub fn parse(s: &str) -> Option<Brand> {
        [Brand::Visa, Brand::Mastercard, Brand::Amex, Brand::Discover, Brand::Jcb, Brand::Diners]
            .into_iter()
            .find(|b| b.as_str() == s)
    }

    /// The brand of a number (digits only), from its prefix.
    pub fn of(digits: &str) -> Option<Brand> {
        let prefix = |n: usize| digits.get(..n).and_then(|p| p.parse::<u32>().ok());
        let within = |n: usize, lo: u32, hi: u32| prefix(n).is_some_and(|p| (lo..=hi).contains(&p));
        if digits.starts_with('4') {
            Some(Brand::Visa)
        } else if within(2, 51, 55) || within(4, 2221, 2720) {
            Some(Brand::Mastercard)
        } else if within(2, 34, 34) || within(2, 37, 37) {
            Some(Brand::Amex)
        } else if within(4, 6011, 6011) || within(2, 65, 65) || within(3, 644, 649) {
            Some(Brand::Discover)
        } else if within(4, 3528, 3589) {
            Some(Brand::Jcb)
        } else if within(3, 300, 305) || within(2, 36, 36) || within(2, 38, 39) {
            Some(Brand::Diners)
        } else {
            None
        }
    }

    fn lengths(self) -> &'static [usize] {
        match self {
            Brand::Visa => &[13, 16, 19],
            Brand::Mastercard => &[16],
            Brand::Amex => &[15],
            Brand::Discover | Brand::Jcb => &[16, 17, 18, 19],
            Brand::Diners => &[14, 15, 16, 17, 18, 19],
        }
    }

    fn cvc_len(self) -> usize {
        if self == Brand::Amex { 4 } else { 3 }
    }
}

/// The Luhn checksum of a string of digits.
pub fn luhn(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        if !b.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// A card that passed the checks, for the gateway's tokenization only.
#[derive(Clone)]
pub struct Card {
    number: String,
    cvc: String,
    pub brand: Brand,
    pub exp_month: i16,
    pub exp_year: i16,
    pub holder: Option<String>,
}

impl std::fmt::Debug for Card {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Card")
            .field("brand", &self.brand)
            .field("last4", &self.last4())
            .field("exp_month", &self.exp_month)
            .field("exp_year", &self.exp_year)
            .finish_non_exhaustive()
    }
}

impl Card {
    /// The digits, for the gateway call alone.
    pub fn number(&self) -> &str {
        &self.number
    }

    pub fn cvc(&self) -> &str {
        &self.cvc
    }

    pub fn last4(&self) -> &str {
        &self.number[self.number.len() - 4..]
    }
}

/// What recur keeps of a card: its gateway token, brand, last 4 digits and expiry
/// month and year (docs/pages.md#card-handling).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    pub brand: String,
    pub last4: String,
    pub exp_month: i16,
    pub exp_year: i16,
}

impl Kept {
    pub fn of(card: &Card) -> Kept {
        Kept {
            brand: card.brand.as_str().to_owned(),
            last4: card.last4().to_owned(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
        }
    }
}

/// The card fields of the form, as typed.
#[derive(Default)]
pub struct CardForm<'a> {
    pub holder: &'a str,
    pub number: &'a str,
    /// `MM/YY`, `MM / YY`, `MM/YYYY` or `MMYY`.
    pub expiry: &'a str,
    pub cvc: &'a str,
}

/// Why a card was refused, for events and metrics (never the card itself).
pub fn refusal_reason(errors: &[FieldError]) -> &'static str {
    match errors.first().map(|e| e.field.as_str()) {
        Some("number") => "invalid_number",
        Some("expiry") => "invalid_expiry",
        Some("cvc") => "invalid_cvc",
        _ => "invalid_card",
    }
}

/// Check a card typed on the form; every bad field is named (by its form name).
pub fn check(form: &CardForm<'_>, today: NaiveDate) -> Result<Card, Vec<FieldError>> {
    let mut errors = Vec::new();
    // Spaces and dashes between digit groups are how cards are printed and typed.
    let digits: String = form.number.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let brand = if digits.is_empty() {
        errors.push(FieldError::new("number", "Enter the card number."));
        None
    } else if !digits.bytes().all(|b| b.is_ascii_digit()) {
        errors.push(FieldError::new("number", "The card number may contain only digits."));
        None
    } else if !(12..=19).contains(&digits.len()) || !luhn(&digits) {
        errors.push(FieldError::new("number", "This card number is not valid. Check it and try again."));
        None
    } else {
        match Brand::of(&digits) {
            Some(b) if b.lengths().contains(&digits.len()) => Some(b),
            Some(_) => {
                errors.push(FieldError::new("number", "This card number is not valid. Check it and try again."));
                None
            }
            None => {
                errors.push(FieldError::new("number", "This card brand is not accepted."));
                None
            }
        }
    };
    let expiry = parse_expiry(form.expiry);
    match expiry {
        None => errors.push(FieldError::new("expiry", "Enter the expiry date as MM/YY.")),
        Some((m, y)) if (y, m) < (today.year(), today.month()) => {
            errors.push(FieldError::new("expiry", "This card has expired."))
        }
        Some((_, y)) if y > today.year() + 20 => {
            errors.push(FieldError::new("expiry", "The expiry year is too far in the future."))
        }
        Some(_) => {}
    }
    let cvc = form.cvc.trim();
    let cvc_ok = cvc.bytes().all(|b| b.is_ascii_digit())
        && match brand {
            Some(b) => cvc.len() == b.cvc_len(),
            None => (3..=4).contains(&cvc.len()),
        };
    if !cvc_ok {
        let n = brand.map_or("3 or 4", |b| if b.cvc_len() == 4 { "4" } else { "3" });
        errors.push(FieldError::new("cvc", format!("Enter the {n}-digit security code.")));
    }
    let holder = form.holder.trim();
    if holder.chars().count() > 200 || holder.chars().any(char::is_control) {
        errors.push(FieldError::new("name", "The name is too long or contains invalid characters."));
    }
    match (brand, expiry) {
        (Some(brand), Some((m, y))) if errors.is_empty() => Ok(Card {
            number: digits,
            cvc: cvc.to_owned(),
            brand,
            exp_month: m as i16,
            exp_year: y as i16,
            holder: (!holder.is_empty()).then(|| holder.to_owned()),
        }),
        _ => Err(errors),
    }
}

/// (month, four-digit year) of an expiry as typed.
fn parse_expiry(raw: &str) -> Option<(u32, i32)> {
    let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    let (m, y) = match compact.split_once('/') {
        Some((m, y)) => (m.to_owned(), y.to_owned()),
        None if compact.len() == 4 || compact.len() == 6 => (compact[..2].to_owned(), compact[2..].to_owned()),
        None => return None,
    };
    if !(1..=2).contains(&m.len()) || !m.bytes().all(|b| b.is_ascii_digit()) || !y.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month: u32 = m.parse().ok().filter(|m| (1..=12).contains(m))?;
    let year: i32 = match y.len() {
        2 => 2000 + y.parse::<i32>().ok()?,
        4 => y.parse().ok().filter(|y| (2000..=2099).contains(y))?,
        _ => return None,
    };
    Some((month, year))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap()
    }

    fn form<'a>(number: &'a str, expiry: &'a str, cvc: &'a str) -> CardForm<'a> {
        CardForm { holder: "Ada Lovelace", number, expiry, cvc }
    }

    fn fields(r: Result<Card, Vec<FieldError>>) -> Vec<String> {
        r.err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn luhn_accepts_test_cards_and_refuses_a_changed_digit() {
        for n in ["4242424242424242", "4000000000009995", "5555555555554444", "378282246310005"] {
            assert!(luhn(n), "{n}");
        }
        assert!(!luhn("4242424242424241"));
        assert!(!luhn(""));
        assert!(!luhn("42a2"));
    }

    #[test]
    fn brands_come_from_prefixes() {
        assert_eq!(Brand::of("4242424242424242"), Some(Brand::Visa));
        assert_eq!(Brand::of("2223003122003222"), Some(Brand::Mastercard));
        assert_eq!(Brand::of("5105105105105100"), Some(Brand::Mastercard));
        assert_eq!(Brand::of("378282246310005"), Some(Brand::Amex));
        assert_eq!(Brand::of("6011111111111117"), Some(Brand::Discover));
        assert_eq!(Brand::of("9999999999999995"), None);
    }

    #[test]
    fn a_good_card_keeps_only_what_may_be_kept() {
        let card = check(&form("4242 4242 4242 4242", "12 / 30", "123"), today()).unwrap();
        assert_eq!((card.brand, card.exp_month, card.exp_year), (Brand::Visa, 12, 2030));
        let kept = Kept::of(&card);
        assert_eq!(kept.last4, "4242");
        let debug = format!("{card:?}");
        assert!(!debug.contains("424242") && !debug.contains("123"), "{debug}");
    }

    #[test]
    fn every_bad_field_is_named_without_its_value() {
        let r = check(&form("4242424242424241", "13/30", "12"), today());
        let errors = r.unwrap_err();
        assert_eq!(errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["number", "expiry", "cvc"]);
        assert!(errors.iter().all(|e| !e.message.contains("4241")));
    }

    #[test]
    fn expiry_is_valid_through_its_month() {
        assert!(check(&form("4242424242424242", "12/26", "123"), today()).is_ok());
        assert_eq!(fields(check(&form("4242424242424242", "11/26", "123"), today())), ["expiry"]);
        assert_eq!(fields(check(&form("4242424242424242", "01/2025", "123"), today())), ["expiry"]);
        assert!(check(&form("4242424242424242", "0130", "123"), today()).is_ok());
        assert_eq!(fields(check(&form("4242424242424242", "1/3", "123"), today())), ["expiry"]);
    }

    #[test]
    fn amex_needs_four_cvc_digits() {
        assert_eq!(fields(check(&form("378282246310005", "12/30", "123"), today())), ["cvc"]);
        assert!(check(&form("378282246310005", "12/30", "1234"), today()).is_ok());
    }

    #[test]
    fn unknown_brands_and_wrong_lengths_are_refused() {
        assert_eq!(fields(check(&form("9999999999999995", "12/30", "123"), today())), ["number"]);
        // Luhn-valid Mastercard prefix with 15 digits.
        assert_eq!(fields(check(&form("555555555555558", "12/30", "123"), today())), ["number"]);
        assert_eq!(fields(check(&form("", "12/30", "123"), today())), ["number"]);
    }
}
