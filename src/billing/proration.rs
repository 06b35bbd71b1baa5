//! Proration of a change of amount inside a billing period (docs/amendments.md#proration).
//!
//! Pure: the amount charged now for moving from `old` to `new` at instant `at` of the
//! period `[start, end)` is
//!
//! ```text
//! (new − old) × seconds_left / period_seconds
//! ```
//!
//! computed in decimal (no floating point) and rounded **once**, at the end, to the
//! currency's minor unit, half away from zero. `seconds_left` counts the whole seconds
//! from `at` to `end` (the partial second the change falls in is not charged); both
//! counts are clamped to the period, so a change at or after the period's end charges 0.

use chrono::{DateTime, Utc};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::money::Currency;

/// What a change costs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proration {
    /// Rounded to the currency's minor unit; negative for a downgrade.
    pub amount: Decimal,
    /// Whole seconds of the period left at the change.
    pub seconds_left: i64,
    /// Whole seconds of the period.
    pub period_seconds: i64,
}

/// The proration of `old → new` at `at` in the period `[start, end)`.
pub fn prorate(
    old: Decimal,
    new: Decimal,
    currency: Currency,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Proration {
    let period_seconds = (end - start).num_seconds().max(0);
    let seconds_left = (end - at).num_seconds().clamp(0, period_seconds);
    let amount = if period_seconds == 0 {
        Decimal::ZERO
    } else {
        // Multiply before dividing: the only inexact step is the one division, whose
        // 28 significant digits are far below the minor unit rounded to next.
        let exact = (new - old) * Decimal::from(seconds_left) / Decimal::from(period_seconds);
        exact.round_dp_with_strategy(currency.minor_units(), RoundingStrategy::MidpointAwayFromZero)
    };
    Proration { amount: amount.normalize(), seconds_left, period_seconds }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn the_worked_example_of_the_docs() {
        // April has 30 days (2 592 000 s); 10 days and 6 hours left (885 600 s):
        // 20.00 × 885600 / 2592000 = 6.8333… → 6.83.
        let p = prorate(
            Decimal::new(1000, 2),
            Decimal::new(3000, 2),
            eur(),
            at("2027-04-01T00:00:00Z"),
            at("2027-05-01T00:00:00Z"),
            at("2027-04-20T18:00:00Z"),
        );
        assert_eq!((p.seconds_left, p.period_seconds), (885_600, 2_592_000));
        assert_eq!(p.amount, Decimal::new(683, 2));
    }

    #[test]
    fn rounds_once_half_away_from_zero_to_the_minor_unit() {
        let start = at("2027-01-01T00:00:00Z");
        let end = start + Duration::seconds(4);
        let mid = start + Duration::seconds(2);
        // 0.01 × 2 / 4 = 0.005 → 0.01; JPY has no minor unit: 1 × 2 / 4 = 0.5 → 1.
        assert_eq!(prorate(Decimal::ZERO, Decimal::new(1, 2), eur(), start, end, mid).amount, Decimal::new(1, 2));
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(prorate(Decimal::ZERO, Decimal::ONE, jpy, start, end, mid).amount, Decimal::ONE);
        // KWD keeps three decimals.
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(
            prorate(Decimal::ZERO, Decimal::new(1, 3), kwd, start, end, mid).amount,
            Decimal::new(1, 3),
            "0.0005 rounds up to 0.001"
        );
        // A downgrade is negative, symmetric.
        assert_eq!(prorate(Decimal::new(1, 2), Decimal::ZERO, eur(), start, end, mid).amount, Decimal::new(-1, 2));
    }

    #[test]
    fn nothing_is_left_at_or_after_the_end_and_everything_before_the_start() {
        let (s, e) = (at("2027-01-01T00:00:00Z"), at("2027-02-01T00:00:00Z"));
        let (old, new) = (Decimal::new(10, 0), Decimal::new(25, 0));
        assert_eq!(prorate(old, new, eur(), s, e, e).amount, Decimal::ZERO);
        assert_eq!(prorate(old, new, eur(), s, e, e + Duration::days(3)).amount, Decimal::ZERO);
        assert_eq!(prorate(old, new, eur(), s, e, s - Duration::days(3)).amount, Decimal::new(15, 0));
        // The partial second of the change is not charged.
        let p = prorate(old, new, eur(), s, e, e - Duration::milliseconds(1500));
        assert_eq!(p.seconds_left, 1);
    }

    fn currency() -> impl Strategy<Value = Currency> {
        prop_oneof![Just("EUR"), Just("JPY"), Just("KWD"), Just("USD")].prop_map(|c| Currency::parse(c).unwrap())
    }

    proptest! {
        /// Against an independent computation in integers: the proration in minor
        /// units is within half a unit of the exact rational value
        /// `diff_minor × left / period`, and never negative for an upgrade.
        #[test]
        fn within_half_a_minor_unit_of_the_exact_value(
            cur in currency(),
            old_minor in 1i64..100_000_000_000,
            new_minor in 1i64..100_000_000_000,
            start_secs in 0i64..4_000_000_000,
            period in 1i64..(5 * 366 * 86_400),
            into_ms in 0i64..(6 * 366 * 86_400_000),
        ) {
            let units = cur.minor_units();
            let start = Utc.timestamp_opt(start_secs, 0).unwrap();
            let end = start + Duration::seconds(period);
            let change = start + Duration::milliseconds(into_ms);
            let (old, new) = (Decimal::new(old_minor, units), Decimal::new(new_minor, units));
            let p = prorate(old, new, cur, start, end, change);
            let left = ((end - change).num_seconds()).clamp(0, period) as i128;
            prop_assert_eq!(p.seconds_left as i128, left);
            // |charged × period − diff × left| ≤ period / 2, all in minor units.
            let charged = p.amount * Decimal::from(10i64.pow(units));
            prop_assert!(charged.fract().is_zero(), "{} is not whole minor units", p.amount);
            let charged: i128 = charged.try_into().unwrap();
            let exact_num = (new_minor - old_minor) as i128 * left;
            let err2 = 2 * (charged * period as i128 - exact_num).abs();
            prop_assert!(err2 <= period as i128, "{} vs {}/{}", charged, exact_num, period);
            if new_minor >= old_minor {
                prop_assert!(p.amount >= Decimal::ZERO);
            }
            prop_assert!(p.amount.abs() <= (new - old).abs());
        }
    }
}
