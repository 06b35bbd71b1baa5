//! What a payment-method token makes the simulator answer (docs/gateway-protocol.md#tokens),
//! and the network data of a decline: Visa's decline categories and readable names.

/// A card network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Visa,
    Mastercard,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Visa => "visa",
            Scheme::Mastercard => "mastercard",
        }
    }

    pub fn parse(s: &str) -> Option<Scheme> {
        match s {
            "visa" => Some(Scheme::Visa),
            "mastercard" => Some(Scheme::Mastercard),
            _ => None,
        }
    }
}

/// What a token does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    Approve(Scheme),
    /// Declined on Visa with this response code.
    VisaDecline(String),
    /// Declined on Mastercard with this response code and merchant advice code.
    MastercardDecline {
        code: String,
        advice: String,
    },
    /// Soft-declines (Visa 51) the first n attempts of each cycle, then approves.
    RecoverAfter(u32),
    /// Not a token this acquirer issued: declined 14 (invalid account).
    Unknown,
}

/// Minted tokens are `<behaviour token>__<random>`: the part before `__` decides.
pub const MINTED_SEPARATOR: &str = "__";

/// The behaviour a token names (before any minted suffix).
pub fn behaviour(token: &str) -> Behaviour {
    let token = token.split_once(MINTED_SEPARATOR).map_or(token, |(b, _)| b);
    match token {
        "pm_ok" => return Behaviour::Approve(Scheme::Visa),
        "pm_mc_ok" => return Behaviour::Approve(Scheme::Mastercard),
        _ => {}
    }
    if let Some(code) = token.strip_prefix("pm_visa_decline_").filter(|c| is_response_code(c)) {
        return Behaviour::VisaDecline(code.to_owned());
    }
    if let Some((code, advice)) = token.strip_prefix("pm_mc_decline_").and_then(|r| r.split_once("_mac_"))
        && is_response_code(code)
        && advice.len() == 2
        && advice.bytes().all(|b| b.is_ascii_digit())
    {
        return Behaviour::MastercardDecline { code: code.to_owned(), advice: advice.to_owned() };
    }
    if let Some(n) = token.strip_prefix("pm_recover_after_")
        && n.len() == 1
        && let Some(n @ 1..=9) = n.parse::<u32>().ok()
    {
        return Behaviour::RecoverAfter(n);
    }
    Behaviour::Unknown
}

/// A decline's response code: two characters, digits or capitals, and not `00` (approved).
fn is_response_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) && code != "00"
}

/// The Visa decline category (1–4) of a response code: the simulator answers with the
/// same table recur's retry governor reads (docs/governor.md#visa-categories).
pub use crate::billing::governor::visa_category;

/// Readable names of the common response codes (both networks use them alike).
const DECLINE_NAMES: &[(&str, &str)] = &[
    ("05", "do_not_honor"),
    ("14", "invalid_account"),
    ("41", "lost_card"),
    ("43", "stolen_card"),
    ("51", "insufficient_funds"),
    ("54", "expired_card"),
    ("R0", "authorization_revoked"),
    ("R1", "authorization_revoked"),
    ("R3", "authorization_revoked"),
];

/// The `declineCode` of an answer: a readable name, else `declined_<code>`.
pub fn decline_name(code: &str) -> String {
    DECLINE_NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("declined_{code}"), |(_, name)| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_behaviour() {
        assert_eq!(behaviour("pm_ok"), Behaviour::Approve(Scheme::Visa));
        assert_eq!(behaviour("pm_mc_ok__0193abcd"), Behaviour::Approve(Scheme::Mastercard));
        assert_eq!(behaviour("pm_visa_decline_R1"), Behaviour::VisaDecline("R1".into()));
        assert_eq!(
            behaviour("pm_mc_decline_51_mac_24"),
            Behaviour::MastercardDecline { code: "51".into(), advice: "24".into() }
        );
        assert_eq!(behaviour("pm_recover_after_3"), Behaviour::RecoverAfter(3));
        for bad in [
            "pm_recover_after_0",
            "pm_recover_after_10",
            "pm_visa_decline_00",
            "pm_visa_decline_5",
            "pm_visa_decline_r1",
            "pm_mc_decline_51_mac_2",
            "pm_mc_decline_51",
            "pm_sandbox_ok",
            "",
        ] {
            assert_eq!(behaviour(bad), Behaviour::Unknown, "{bad}");
        }
    }

    #[test]
    fn visa_categories_and_names() {
        assert_eq!(["R1", "51", "54", "05", "XY"].map(visa_category), [1, 2, 3, 4, 4]);
        assert_eq!(decline_name("51"), "insufficient_funds");
        assert_eq!(decline_name("R3"), "authorization_revoked");
        assert_eq!(decline_name("96"), "declined_96");
    }
}
