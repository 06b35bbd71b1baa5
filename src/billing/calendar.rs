//! The billing calendar (docs/states.md#the-billing-calendar). Every due date is computed from the anchor, never
//! from the previous due date, so month ends clamp without drifting:
//! Jan 31 → Feb 28/29 → Mar 31 → Apr 30.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "interval_unit", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum IntervalUnit {
    Day,
    Week,
    Month,
    Year,
}

impl IntervalUnit {
    /// The allowed range of `count` for this unit (docs/states.md#the-billing-calendar).
    pub fn count_range(self) -> std::ops::RangeInclusive<i32> {
        match self {
            IntervalUnit::Day => 1..=365,
            IntervalUnit::Week => 1..=52,
            IntervalUnit::Month => 1..=24,
            IntervalUnit::Year => 1..=5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interval {
    pub unit: IntervalUnit,
    pub count: i32,
}

impl Interval {
    pub fn validate(&self) -> Result<(), String> {
        let range = self.unit.count_range();
        if range.contains(&self.count) {
            Ok(())
        } else {
            Err(format!("count for unit {:?} must be between {} and {}", self.unit, range.start(), range.end())
                .to_lowercase())
        }
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    NaiveDate::from_ymd_opt(ny, nm, 1).and_then(|d| d.pred_opt()).map(|d| d.day()).unwrap_or(28)
}

/// `anchor` plus `months` calendar months, the day clamped to the target month's end.
pub fn add_months(anchor: DateTime<Utc>, months: i64) -> DateTime<Utc> {
    let total = anchor.year() as i64 * 12 + anchor.month0() as i64 + months;
    let year = total.div_euclid(12) as i32;
    let month = total.rem_euclid(12) as u32 + 1;
    let day = anchor.day().min(days_in_month(year, month));
    let date = NaiveDate::from_ymd_opt(year, month, day).unwrap_or(anchor.date_naive());
    Utc.from_utc_datetime(&date.and_time(anchor.time()))
}

/// `anchor` plus `n` whole intervals.
pub fn add_intervals(anchor: DateTime<Utc>, interval: Interval, n: i64) -> DateTime<Utc> {
    let count = interval.count as i64;
    match interval.unit {
        IntervalUnit::Day => anchor + Duration::days(count * n),
        IntervalUnit::Week => anchor + Duration::weeks(count * n),
        IntervalUnit::Month => add_months(anchor, count * n),
        IntervalUnit::Year => add_months(anchor, 12 * count * n),
    }
}

/// A subscription's position on its calendar: cycle `n` starts at
/// `anchor + (n - anchor_sequence) × interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    pub anchor: DateTime<Utc>,
    pub anchor_sequence: i32,
    pub interval: Interval,
}

impl Calendar {
    /// When period `sequence` starts (its scheduled due date).
    pub fn period_start(&self, sequence: i32) -> DateTime<Utc> {
        add_intervals(self.anchor, self.interval, (sequence - self.anchor_sequence) as i64)
    }

    /// When period `sequence` ends (the next one's start).
    pub fn period_end(&self, sequence: i32) -> DateTime<Utc> {
        self.period_start(sequence + 1)
    }

    /// Re-anchored so that cycle 1 is charged at once when its anchor is already
    /// past: the current period is the one containing `now`, later cycles follow
    /// the original anchor and missed periods are not back-charged (docs/states.md#the-billing-calendar).
    pub fn starting(anchor: DateTime<Utc>, interval: Interval, now: DateTime<Utc>) -> Calendar {
        // Smallest k >= 1 with anchor + k intervals > now; cycle 2 falls there.
        let mut k: i64 = 1;
        if anchor < now {
            // Jump close with an estimate, then walk: cheap even for old start dates.
            let approx = approx_interval_seconds(interval);
            k = (((now - anchor).num_seconds() / approx).max(1)) - 1;
            k = k.max(1);
            while add_intervals(anchor, interval, k) <= now {
                k += 1;
            }
            while k > 1 && add_intervals(anchor, interval, k - 1) > now {
                k -= 1;
            }
        }
        Calendar { anchor, anchor_sequence: 2 - k as i32, interval }
    }
}

fn approx_interval_seconds(interval: Interval) -> i64 {
    let day = 86_400i64;
    let c = interval.count as i64;
    match interval.unit {
        IntervalUnit::Day => day * c,
        IntervalUnit::Week => 7 * day * c,
        IntervalUnit::Month => 28 * day * c,
        IntervalUnit::Year => 365 * day * c,
    }
}

/// The anchor instant for a start time: moved to `charge_hour:00` UTC of that day
/// when a charge hour is set.
pub fn anchor_at(start: DateTime<Utc>, charge_hour: Option<i16>) -> DateTime<Utc> {
    match charge_hour {
        Some(h) => start
            .with_hour(h.clamp(0, 23) as u32)
            .and_then(|t| t.with_minute(0))
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(start),
        None => start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn monthly() -> Interval {
        Interval { unit: IntervalUnit::Month, count: 1 }
    }

    #[test]
    fn month_end_clamps_from_the_anchor() {
        let cal = Calendar { anchor: at("2027-01-31T10:00:00Z"), anchor_sequence: 1, interval: monthly() };
        let due: Vec<_> = (1..=5).map(|n| cal.period_start(n).date_naive().to_string()).collect();
        assert_eq!(due, ["2027-01-31", "2027-02-28", "2027-03-31", "2027-04-30", "2027-05-31"]);
        let leap = Calendar { anchor: at("2028-01-31T10:00:00Z"), anchor_sequence: 1, interval: monthly() };
        assert_eq!(leap.period_start(2).date_naive().to_string(), "2028-02-29");
        assert_eq!(leap.period_start(2).time(), at("2028-01-31T10:00:00Z").time());
    }

    #[test]
    fn feb_29_yearly_anchor() {
        let y = Interval { unit: IntervalUnit::Year, count: 1 };
        let cal = Calendar { anchor: at("2028-02-29T00:00:00Z"), anchor_sequence: 1, interval: y };
        let due: Vec<_> = (1..=5).map(|n| cal.period_start(n).date_naive().to_string()).collect();
        assert_eq!(due, ["2028-02-29", "2029-02-28", "2030-02-28", "2031-02-28", "2032-02-29"]);
    }

    #[test]
    fn days_and_weeks() {
        let d = Interval { unit: IntervalUnit::Day, count: 10 };
        let cal = Calendar { anchor: at("2027-12-25T08:00:00Z"), anchor_sequence: 1, interval: d };
        assert_eq!(cal.period_start(2), at("2028-01-04T08:00:00Z"));
        let w = Interval { unit: IntervalUnit::Week, count: 2 };
        let cal = Calendar { anchor: at("2027-12-25T08:00:00Z"), anchor_sequence: 1, interval: w };
        assert_eq!(cal.period_start(3), at("2028-01-22T08:00:00Z"));
        assert_eq!(cal.period_end(1), cal.period_start(2));
    }

    #[test]
    fn charge_hour_moves_the_anchor_within_the_day() {
        assert_eq!(anchor_at(at("2027-03-05T17:42:11Z"), Some(9)), at("2027-03-05T09:00:00Z"));
        assert_eq!(anchor_at(at("2027-03-05T17:42:11Z"), None), at("2027-03-05T17:42:11Z"));
    }

    #[test]
    fn past_start_charges_now_without_back_charging() {
        let now = at("2027-03-15T12:00:00Z");
        let cal = Calendar::starting(at("2027-01-31T10:00:00Z"), monthly(), now);
        // Cycle 1 covers the period containing now; cycle 2 is the next anchor date.
        assert_eq!(cal.period_start(1), at("2027-02-28T10:00:00Z"));
        assert_eq!(cal.period_start(2), at("2027-03-31T10:00:00Z"));
        assert_eq!(cal.period_start(3), at("2027-04-30T10:00:00Z"));
        // A future start is untouched.
        let future = Calendar::starting(at("2027-04-01T00:00:00Z"), monthly(), now);
        assert_eq!(future.anchor_sequence, 1);
    }

    #[test]
    fn interval_ranges() {
        assert!(Interval { unit: IntervalUnit::Day, count: 365 }.validate().is_ok());
        assert!(Interval { unit: IntervalUnit::Day, count: 366 }.validate().is_err());
        assert!(Interval { unit: IntervalUnit::Week, count: 53 }.validate().is_err());
        assert!(Interval { unit: IntervalUnit::Month, count: 0 }.validate().is_err());
        assert!(Interval { unit: IntervalUnit::Year, count: 6 }.validate().is_err());
    }

    /// Reference: walk the calendar month by month with plain arithmetic.
    fn reference_monthly(y: i32, m: u32, d: u32, months: i64) -> NaiveDate {
        let idx = y as i64 * 12 + (m as i64 - 1) + months;
        let (ty, tm) = (idx.div_euclid(12) as i32, idx.rem_euclid(12) as u32 + 1);
        let mut day = d;
        while NaiveDate::from_ymd_opt(ty, tm, day).is_none() {
            day -= 1;
        }
        NaiveDate::from_ymd_opt(ty, tm, day).unwrap()
    }

    fn unit_strategy() -> impl Strategy<Value = Interval> {
        prop_oneof![
            (1i32..=365).prop_map(|count| Interval { unit: IntervalUnit::Day, count }),
            (1i32..=52).prop_map(|count| Interval { unit: IntervalUnit::Week, count }),
            (1i32..=24).prop_map(|count| Interval { unit: IntervalUnit::Month, count }),
            (1i32..=5).prop_map(|count| Interval { unit: IntervalUnit::Year, count }),
        ]
    }

    proptest! {
        #[test]
        fn due_dates_match_reference(
            y in 1990i32..2100, m in 1u32..=12, d in 1u32..=31, h in 0u32..24,
            interval in unit_strategy(), n in 0i64..400,
        ) {
            let day = d.min(days_in_month(y, m));
            let anchor = Utc.with_ymd_and_hms(y, m, day, h, 0, 0).unwrap();
            let got = add_intervals(anchor, interval, n);
            let expected = match interval.unit {
                IntervalUnit::Day => anchor.date_naive() + Duration::days(interval.count as i64 * n),
                IntervalUnit::Week => anchor.date_naive() + Duration::days(7 * interval.count as i64 * n),
                IntervalUnit::Month => reference_monthly(y, m, day, interval.count as i64 * n),
                IntervalUnit::Year => reference_monthly(y, m, day, 12 * interval.count as i64 * n),
            };
            prop_assert_eq!(got.date_naive(), expected);
            prop_assert_eq!(got.hour(), h);
        }

        #[test]
        fn periods_are_contiguous_and_increasing(
            secs in 0i64..4_000_000_000, interval in unit_strategy(), seq in -50i32..50, n in 1i32..200,
        ) {
            let anchor = Utc.timestamp_opt(secs, 0).unwrap();
            let cal = Calendar { anchor, anchor_sequence: seq, interval };
            prop_assert_eq!(cal.period_end(n), cal.period_start(n + 1));
            prop_assert!(cal.period_start(n) < cal.period_end(n));
        }

        #[test]
        fn starting_puts_now_in_cycle_one(
            secs in 0i64..3_000_000_000, lag in 0i64..400_000_000, interval in unit_strategy(),
        ) {
            let anchor = Utc.timestamp_opt(secs, 0).unwrap();
            let now = anchor + Duration::seconds(lag);
            let cal = Calendar::starting(anchor, interval, now);
            prop_assert!(cal.period_start(2) > now);
            prop_assert!(cal.period_start(1) <= now);
            prop_assert!(cal.period_start(1) >= anchor);
        }
    }
}
