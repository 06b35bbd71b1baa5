//! The retry governor (docs/governor.md): which declines may be retried, when, and how
//! many declined attempts the card networks tolerate per merchant × card. Pure: the rules
//! are the tables below, each naming its public source, so changing a rule is one line.

use std::fmt;

use chrono::{DateTime, TimeDelta, Utc};

/// The cycle's failure code when the governor refuses an attempt (docs/governor.md#refusals).
pub const FAILURE_CODE: &str = "retry_limit_reached";
/// The subscription's cancellation reason when the cardholder revoked the authorization.
pub const CANCEL_REASON: &str = "authorization_revoked";
/// The counter of refused attempts, labelled `rule`.
pub const METRIC: &str = "recur_retry_blocked_total";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Visa,
    Mastercard,
    /// No rule applies.
    Other,
}

impl Scheme {
    /// Case-insensitive; anything but Visa or Mastercard is `Other`.
    pub fn parse(s: &str) -> Scheme {
        match s.trim().to_ascii_lowercase().as_str() {
            "visa" => Scheme::Visa,
            "mastercard" | "mc" => Scheme::Mastercard,
            _ => Scheme::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Visa => "visa",
            Scheme::Mastercard => "mastercard",
            Scheme::Other => "other",
        }
    }
}

/// A decline as the card network reported it through the acquirer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub scheme: Scheme,
    /// The issuer's response code, e.g. `51`, `R0`, `N7`.
    pub response_code: String,
    /// Visa's decline category (1–4) when the acquirer sends one; else derived from the code.
    pub category: Option<u8>,
    /// Mastercard's merchant advice code, e.g. `03`, `24`.
    pub advice_code: Option<String>,
}

impl Network {
    /// The Visa category: the acquirer's if valid (Visa's own lists change between
    /// releases, the acquirer's copy is the newer one), else [`visa_category`].
    pub fn visa_category(&self) -> Option<u8> {
        (self.scheme == Scheme::Visa).then(|| {
            self.category.filter(|c| (1..=4).contains(c)).unwrap_or_else(|| visa_category(&self.response_code))
        })
    }

    /// The merchant advice code of a Mastercard decline, as a number (`"03"` and `"3"` alike).
    pub fn advice_code(&self) -> Option<u8> {
        (self.scheme == Scheme::Mastercard).then(|| self.advice_code.as_deref()?.trim().parse().ok()).flatten()
    }
}

/// Visa's decline categories 1–3 by response code; any other decline code is category 4
/// (generic). Source: Visa Core Rules and Visa Product and Service Rules, decline response
/// code categories, effective April 2021 (docs/governor.md#visa-categories).
pub const VISA_CATEGORIES: &[(u8, &[&str])] = &[
    // Category 1, "issuer will never approve".
    (1, &["04", "07", "12", "14", "15", "41", "43", "46", "57", "R0", "R1", "R3"]),
    // Category 2, "issuer cannot approve at this time".
    (2, &["03", "19", "51", "59", "61", "62", "65", "75", "78", "86", "91", "93", "96", "N3", "N4", "Z5"]),
    // Category 3, "issuer cannot approve with these details" (data quality).
    (3, &["54", "55", "6P", "82", "N7", "1A"]),
];

/// The Visa category of a decline response code (case-insensitive, surrounding blanks ignored).
pub fn visa_category(response_code: &str) -> u8 {
    let code = response_code.trim();
    VISA_CATEGORIES
        .iter()
        .find(|(_, codes)| codes.iter().any(|c| c.eq_ignore_ascii_case(code)))
        .map_or(4, |(category, _)| *category)
}

/// What in a decline a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    VisaCode(&'static str),
    VisaCategory(u8),
    MerchantAdvice(u8),
}

impl Signal {
    pub fn matches(self, n: &Network) -> bool {
        match self {
            Signal::VisaCode(c) => n.scheme == Scheme::Visa && n.response_code.trim().eq_ignore_ascii_case(c),
            Signal::VisaCategory(c) => n.visa_category() == Some(c),
            Signal::MerchantAdvice(m) => n.advice_code() == Some(m),
        }
    }
}

/// A decline after which the card is never retried; `cancel` also cancels the subscription
/// with [`CANCEL_REASON`]. The first matching row names the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stop {
    pub on: Signal,
    pub cancel: bool,
    pub rule: &'static str,
}

/// docs/governor.md#never-retried and #revocations.
pub const STOPS: &[Stop] = &[
    // Visa Core Rules / Visa Product and Service Rules: R0 stop payment order, R1 revocation of
    // authorization order, R3 revocation of all authorizations order (category 1).
    Stop { on: Signal::VisaCode("R0"), cancel: true, rule: "authorization_revoked" },
    Stop { on: Signal::VisaCode("R1"), cancel: true, rule: "authorization_revoked" },
    Stop { on: Signal::VisaCode("R3"), cancel: true, rule: "authorization_revoked" },
    // Mastercard Transaction Processing Rules, merchant advice code 21: payment cancellation.
    Stop { on: Signal::MerchantAdvice(21), cancel: true, rule: "mastercard_mac_21" },
    // Visa excessive reattempts rule (April 2021): a category 1 decline is never reattempted.
    Stop { on: Signal::VisaCategory(1), cancel: false, rule: "visa_category_1" },
    // Mastercard merchant advice code 03: do not try again.
    Stop { on: Signal::MerchantAdvice(3), cancel: false, rule: "mastercard_mac_03" },
    // Mastercard merchant advice code 01: updated information needed, so not with the same card data.
    Stop { on: Signal::MerchantAdvice(1), cancel: false, rule: "mastercard_mac_01" },
];

/// A merchant advice code that names the delay before the next retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdviceDelay {
    pub advice_code: u8,
    pub after: TimeDelta,
    pub rule: &'static str,
}

/// Mastercard Transaction Processing Rules, merchant advice codes 24–30 ("retry after …")
/// (docs/governor.md#delays). MAC 02 (try again later) keeps the merchant's schedule.
pub const ADVICE_DELAYS: &[AdviceDelay] = &[
    AdviceDelay { advice_code: 24, after: TimeDelta::hours(1), rule: "mastercard_mac_24" },
    AdviceDelay { advice_code: 25, after: TimeDelta::hours(24), rule: "mastercard_mac_25" },
    AdviceDelay { advice_code: 26, after: TimeDelta::days(2), rule: "mastercard_mac_26" },
    AdviceDelay { advice_code: 27, after: TimeDelta::days(4), rule: "mastercard_mac_27" },
    AdviceDelay { advice_code: 28, after: TimeDelta::days(6), rule: "mastercard_mac_28" },
    AdviceDelay { advice_code: 29, after: TimeDelta::days(8), rule: "mastercard_mac_29" },
    AdviceDelay { advice_code: 30, after: TimeDelta::days(10), rule: "mastercard_mac_30" },
];

/// A rolling window over which declined attempts are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Hours24,
    Days30,
}

impl Window {
    /// Every window the limits may use: the counts the caller must supply ([`Counts`]).
    pub const ALL: [Window; 2] = [Window::Hours24, Window::Days30];

    pub const fn duration(self) -> TimeDelta {
        match self {
            Window::Hours24 => TimeDelta::hours(24),
            Window::Days30 => TimeDelta::days(30),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Window::Hours24 => "24 hours",
            Window::Days30 => "30 days",
        }
    }

    /// The longest window: how far back the caller must look.
    pub fn lookback() -> TimeDelta {
        Window::ALL.iter().map(|w| w.duration()).max().unwrap_or_default()
    }
}

/// At most `max` declined attempts per merchant × card in `window`; one more is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub scheme: Scheme,
    pub max: u32,
    pub window: Window,
    pub rule: &'static str,
}

/// docs/governor.md#limits.
pub const LIMITS: &[Limit] = &[
    // Visa Core Rules / Visa Product and Service Rules, excessive reattempts (April 2021).
    Limit { scheme: Scheme::Visa, max: 15, window: Window::Days30, rule: "visa_15_in_30_days" },
    // Mastercard Transaction Processing Rules, excessive retries (Transaction Processing Excellence).
    Limit { scheme: Scheme::Mastercard, max: 10, window: Window::Hours24, rule: "mastercard_10_in_24_hours" },
    Limit { scheme: Scheme::Mastercard, max: 35, window: Window::Days30, rule: "mastercard_35_in_30_days" },
];

/// Declined attempts already recorded for this merchant × card, one count per [`Window`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub last_24h: u32,
    pub last_30d: u32,
}

impl Counts {
    pub fn get(&self, window: Window) -> u32 {
        match window {
            Window::Hours24 => self.last_24h,
            Window::Days30 => self.last_30d,
        }
    }

    /// The counts at `now` from the times the declines were recorded. A decline counts while
    /// it is less than the window old (the SQL twin: `settled_at > now - window`); a time
    /// after `now` (another clock ahead of ours) counts too.
    pub fn tally(now: DateTime<Utc>, declined_at: impl IntoIterator<Item = DateTime<Utc>>) -> Counts {
        let mut counts = Counts::default();
        for at in declined_at {
            let within = |w: Window| u32::from(at > now - w.duration());
            counts.last_24h += within(Window::Hours24);
            counts.last_30d += within(Window::Days30);
        }
        counts
    }
}

/// When the next attempt may follow a decline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The merchant's retry schedule decides.
    Schedule,
    Never,
    /// This delay replaces the schedule's step for the next retry.
    After(TimeDelta),
}

/// What a decline means for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterDecline {
    pub retry: Retry,
    /// Cancel the subscription with [`CANCEL_REASON`].
    pub cancel_subscription: bool,
    /// The rule that changed the schedule, if any.
    pub rule: Option<&'static str>,
}

impl AfterDecline {
    /// When the next retry is due, given the schedule's step after the attempt declined at `at`
    /// (`None` when the schedule is used up or recur would not retry this decline anyway).
    /// A merchant advice delay replaces the step; it never adds a retry.
    pub fn next_retry_at(&self, at: DateTime<Utc>, step: Option<TimeDelta>) -> Option<DateTime<Utc>> {
        let step = step?;
        match self.retry {
            Retry::Schedule => Some(at + step),
            Retry::Never => None,
            Retry::After(delay) => Some(at + delay),
        }
    }
}

/// What the network's answer to a declined attempt means for the next one.
pub fn after_decline(n: &Network) -> AfterDecline {
    // Any revocation cancels, whichever row names the rule.
    let cancel_subscription = STOPS.iter().any(|s| s.cancel && s.on.matches(n));
    if let Some(stop) = STOPS.iter().find(|s| s.on.matches(n)) {
        return AfterDecline { retry: Retry::Never, cancel_subscription, rule: Some(stop.rule) };
    }
    match n.advice_code().and_then(|m| ADVICE_DELAYS.iter().find(|d| d.advice_code == m)) {
        Some(d) => AfterDecline { retry: Retry::After(d.after), cancel_subscription, rule: Some(d.rule) },
        None => AfterDecline { retry: Retry::Schedule, cancel_subscription, rule: None },
    }
}

/// Why an attempt must not be made (docs/governor.md#refusals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The card's latest decline is never retried (a [`STOPS`] row).
    Never { rule: &'static str },
    /// The card already has `limit.max` declined attempts in `limit.window`.
    Limit(&'static Limit),
}

/// Every rule a [`Refusal`] can name, once each: the `rule` labels of [`METRIC`].
pub fn refusal_rules() -> Vec<&'static str> {
    let mut rules: Vec<&'static str> = STOPS.iter().map(|s| s.rule).chain(LIMITS.iter().map(|l| l.rule)).collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

impl Refusal {
    pub fn rule(&self) -> &'static str {
        match self {
            Refusal::Never { rule } => rule,
            Refusal::Limit(l) => l.rule,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Never { rule } => {
                write!(f, "retry refused by rule {rule}: the card's last decline is never retried")
            }
            Refusal::Limit(l) => write!(
                f,
                "retry refused by rule {}: {} declined attempts on this card in {}",
                l.rule,
                l.max,
                l.window.label()
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Whether any attempt (scheduled, retry, manual or series charge) on a card may be made,
/// given the declines already counted for this merchant × card.
pub fn may_attempt(scheme: Scheme, counts: &Counts) -> Result<(), Refusal> {
    match LIMITS.iter().find(|l| l.scheme == scheme && counts.get(l.window) >= l.max) {
        Some(limit) => Err(Refusal::Limit(limit)),
        None => Ok(()),
    }
}

/// Whether a retry (scheduled or manual) after `last`, the cycle's latest decline, may be made.
pub fn may_retry(last: &Network, counts: &Counts) -> Result<(), Refusal> {
    match STOPS.iter().find(|s| s.on.matches(last)) {
        Some(stop) => Err(Refusal::Never { rule: stop.rule }),
        None => may_attempt(last.scheme, counts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn visa(code: &str) -> Network {
        Network { scheme: Scheme::Visa, response_code: code.into(), category: None, advice_code: None }
    }

    fn mastercard(mac: &str) -> Network {
        Network {
            scheme: Scheme::Mastercard,
            response_code: "05".into(),
            category: None,
            advice_code: Some(mac.into()),
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2027-01-31T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn counts(last_24h: u32, last_30d: u32) -> Counts {
        Counts { last_24h, last_30d }
    }

    #[test]
    fn schemes_parse() {
        assert_eq!(Scheme::parse(" VISA "), Scheme::Visa);
        assert_eq!(Scheme::parse("Mastercard"), Scheme::Mastercard);
        assert_eq!(Scheme::parse("mc"), Scheme::Mastercard);
        assert_eq!(Scheme::parse("amex"), Scheme::Other);
        assert_eq!(Scheme::parse(""), Scheme::Other);
    }

    #[test]
    fn visa_categories() {
        for code in ["04", "07", "12", "14", "15", "41", "43", "46", "57", "R0", "R1", "R3", "r1"] {
            assert_eq!(visa_category(code), 1, "{code}");
        }
        for code in ["03", "19", "51", "59", "61", "62", "65", "75", "78", "86", "91", "93", "96", "N3", "N4", "Z5"] {
            assert_eq!(visa_category(code), 2, "{code}");
        }
        for code in ["54", "55", "6P", "6p", "82", "N7", " N7 "] {
            assert_eq!(visa_category(code), 3, "{code}");
        }
        for code in ["05", "01", "99", "XYZ", ""] {
            assert_eq!(visa_category(code), 4, "{code}");
        }
    }

    #[test]
    fn the_acquirers_category_wins_when_valid() {
        let sent = |category| Network { category: Some(category), ..visa("05") };
        assert_eq!(after_decline(&sent(1)).retry, Retry::Never);
        assert_eq!(after_decline(&sent(2)).retry, Retry::Schedule);
        // Out of range: derived from the code instead.
        assert_eq!(sent(9).visa_category(), Some(4));
        assert_eq!(Network { category: Some(2), ..visa("51") }.visa_category(), Some(2));
    }

    #[test]
    fn category_1_is_never_retried() {
        for code in VISA_CATEGORIES[0].1 {
            let d = after_decline(&visa(code));
            assert_eq!(d.retry, Retry::Never, "{code}");
            assert!(d.rule.is_some());
        }
        assert_eq!(after_decline(&visa("14")).rule, Some("visa_category_1"));
        assert!(!after_decline(&visa("14")).cancel_subscription);
    }

    #[test]
    fn revocations_cancel_and_are_never_retried() {
        for code in ["R0", "R1", "R3"] {
            let d = after_decline(&visa(code));
            assert_eq!(
                d,
                AfterDecline { retry: Retry::Never, cancel_subscription: true, rule: Some("authorization_revoked") }
            );
        }
        let d = after_decline(&mastercard("21"));
        assert_eq!(d, AfterDecline { retry: Retry::Never, cancel_subscription: true, rule: Some("mastercard_mac_21") });
        // An acquirer's category does not hide a revocation.
        let d = after_decline(&Network { category: Some(2), ..visa("R1") });
        assert!(d.cancel_subscription);
        assert_eq!(d.retry, Retry::Never);
    }

    #[test]
    fn merchant_advice_codes() {
        let never = |mac: &str, rule| {
            let d = after_decline(&mastercard(mac));
            assert_eq!(d, AfterDecline { retry: Retry::Never, cancel_subscription: false, rule: Some(rule) }, "{mac}");
        };
        never("03", "mastercard_mac_03");
        never("3", "mastercard_mac_03");
        never("01", "mastercard_mac_01");
        for mac in ["02", "22", "99", "x"] {
            assert_eq!(after_decline(&mastercard(mac)).retry, Retry::Schedule, "{mac}");
        }
        let delays = [
            ("24", TimeDelta::hours(1)),
            ("25", TimeDelta::hours(24)),
            ("26", TimeDelta::hours(48)),
            ("27", TimeDelta::hours(96)),
            ("28", TimeDelta::hours(144)),
            ("29", TimeDelta::hours(192)),
            ("30", TimeDelta::hours(240)),
        ];
        for (mac, delay) in delays {
            let d = after_decline(&mastercard(mac));
            assert_eq!(d.retry, Retry::After(delay), "{mac}");
            assert_eq!(d.rule.map(|r| r.ends_with(mac)), Some(true));
        }
    }

    #[test]
    fn signals_belong_to_their_scheme() {
        // A Visa decline with an advice code, a Mastercard one with a Visa revocation code.
        let v = Network { advice_code: Some("03".into()), ..visa("51") };
        assert_eq!(after_decline(&v).retry, Retry::Schedule);
        let m = Network { response_code: "R0".into(), advice_code: None, ..mastercard("") };
        assert_eq!(after_decline(&m), AfterDecline { retry: Retry::Schedule, cancel_subscription: false, rule: None });
        let o = Network { scheme: Scheme::Other, ..mastercard("03") };
        assert_eq!(after_decline(&o).retry, Retry::Schedule);
    }

    #[test]
    fn next_retry_replaces_the_step_and_never_adds_one() {
        let step = Some(TimeDelta::hours(72));
        assert_eq!(after_decline(&visa("51")).next_retry_at(t0(), step), Some(t0() + TimeDelta::hours(72)));
        assert_eq!(after_decline(&mastercard("24")).next_retry_at(t0(), step), Some(t0() + TimeDelta::hours(1)));
        assert_eq!(after_decline(&mastercard("24")).next_retry_at(t0(), None), None);
        assert_eq!(after_decline(&mastercard("03")).next_retry_at(t0(), step), None);
    }

    #[test]
    fn limits_at_their_edges() {
        assert_eq!(may_attempt(Scheme::Visa, &counts(14, 14)), Ok(()));
        assert_eq!(may_attempt(Scheme::Visa, &counts(15, 15)).unwrap_err().rule(), "visa_15_in_30_days");
        assert_eq!(may_attempt(Scheme::Mastercard, &counts(9, 34)), Ok(()));
        assert_eq!(may_attempt(Scheme::Mastercard, &counts(10, 10)).unwrap_err().rule(), "mastercard_10_in_24_hours");
        assert_eq!(may_attempt(Scheme::Mastercard, &counts(0, 35)).unwrap_err().rule(), "mastercard_35_in_30_days");
        assert_eq!(may_attempt(Scheme::Other, &counts(u32::MAX, u32::MAX)), Ok(()));
        let refusal = may_attempt(Scheme::Mastercard, &counts(10, 10)).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "retry refused by rule mastercard_10_in_24_hours: 10 declined attempts on this card in 24 hours"
        );
    }

    #[test]
    fn may_retry_checks_the_last_decline_then_the_limits() {
        assert_eq!(may_retry(&mastercard("03"), &counts(0, 0)), Err(Refusal::Never { rule: "mastercard_mac_03" }));
        assert_eq!(may_retry(&visa("51"), &counts(0, 15)).unwrap_err().rule(), "visa_15_in_30_days");
        assert_eq!(may_retry(&visa("51"), &counts(0, 14)), Ok(()));
    }

    #[test]
    fn tally_uses_rolling_windows() {
        let ago = |h: i64| t0() - TimeDelta::hours(h);
        let c = Counts::tally(t0(), [ago(0), ago(23), ago(24), ago(25), ago(24 * 30 - 1), ago(24 * 30), ago(-1)]);
        assert_eq!(c, counts(3, 6));
    }

    #[test]
    fn the_tables_are_consistent() {
        let mut rules: Vec<&str> = LIMITS.iter().map(|l| l.rule).collect();
        rules.extend(ADVICE_DELAYS.iter().map(|d| d.rule));
        rules.extend(STOPS.iter().filter(|s| s.rule != "authorization_revoked").map(|s| s.rule));
        rules.push("authorization_revoked");
        let mut unique = rules.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), rules.len(), "rule names are unique");
        assert!(rules.iter().all(|r| r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
        assert!(LIMITS.iter().all(|l| l.max > 0 && Window::ALL.contains(&l.window)));
        assert_eq!(Window::lookback(), TimeDelta::days(30));
        let codes: Vec<&str> = VISA_CATEGORIES.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        let mut distinct = codes.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), codes.len(), "a code is in one category");
    }

    fn scheme() -> impl Strategy<Value = Scheme> {
        prop_oneof![Just(Scheme::Visa), Just(Scheme::Mastercard), Just(Scheme::Other)]
    }

    proptest! {
        #[test]
        fn refusal_is_monotonic(s in scheme(), a in 0u32..100, b in 0u32..100, da in 0u32..3, db in 0u32..3) {
            let (day, month) = (a.min(b), a.max(b));
            if may_attempt(s, &counts(day, month)).is_err() {
                prop_assert!(may_attempt(s, &counts(day + da, month + da + db)).is_err());
            }
        }

        #[test]
        fn refused_exactly_at_a_limit(s in scheme(), day in 0u32..60, extra in 0u32..60) {
            let c = counts(day, day + extra);
            let hit = LIMITS.iter().find(|l| l.scheme == s && c.get(l.window) >= l.max);
            prop_assert_eq!(may_attempt(s, &c).err(), hit.map(Refusal::Limit));
            prop_assert!(s != Scheme::Other || may_attempt(s, &c).is_ok());
        }

        #[test]
        fn nth_attempt_in_a_burst(s in scheme(), n in 0u32..60) {
            // n declines within the last hour: the (n+1)th attempt.
            let declines = (0..n).map(|i| t0() - TimeDelta::minutes(i64::from(i % 60)));
            let allowed = may_attempt(s, &Counts::tally(t0(), declines)).is_ok();
            let expected = match s {
                Scheme::Visa => n < 15,
                Scheme::Mastercard => n < 10,
                Scheme::Other => true,
            };
            prop_assert_eq!(allowed, expected);
        }

        #[test]
        fn spread_over_days_mastercard_stops_at_35(n in 0u32..80) {
            // Six declines a day, at most 10 in any 24 hours: only the 30-day limit bites.
            let declines = (0..n).map(|i| t0() - TimeDelta::hours(i64::from(i) * 4));
            let c = Counts::tally(t0(), declines);
            prop_assert!(c.last_24h <= 6);
            let r = may_attempt(Scheme::Mastercard, &c);
            prop_assert_eq!(r.is_ok(), n < 35);
            if n >= 35 {
                prop_assert_eq!(r.unwrap_err().rule(), "mastercard_35_in_30_days");
            }
        }

        #[test]
        fn any_category_1_code_is_never_retried(i in 0usize..12, lower in any::<bool>(), mac in proptest::option::of("[0-9]{2}")) {
            let code = VISA_CATEGORIES[0].1[i % VISA_CATEGORIES[0].1.len()];
            let code = if lower { code.to_ascii_lowercase() } else { code.to_owned() };
            let n = Network { advice_code: mac, ..visa(&code) };
            prop_assert_eq!(after_decline(&n).retry, Retry::Never);
            prop_assert!(may_retry(&n, &Counts::default()).is_err());
        }

        #[test]
        fn unknown_visa_codes_are_category_4(code in "[A-Z0-9]{2}") {
            let listed = VISA_CATEGORIES.iter().any(|(_, codes)| codes.contains(&code.as_str()));
            prop_assume!(!listed);
            prop_assert_eq!(visa_category(&code), 4);
            prop_assert_eq!(after_decline(&visa(&code)).retry, Retry::Schedule);
        }

        #[test]
        fn other_schemes_are_never_governed(code in "[A-Z0-9]{2}", mac in proptest::option::of("[0-9]{2}"), n in any::<u32>()) {
            let net = Network { scheme: Scheme::Other, response_code: code, category: Some(1), advice_code: mac };
            prop_assert_eq!(after_decline(&net), AfterDecline { retry: Retry::Schedule, cancel_subscription: false, rule: None });
            prop_assert_eq!(may_retry(&net, &counts(n, n)), Ok(()));
        }
    }
}
