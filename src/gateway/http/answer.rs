//! Reading the acquirer's answer (docs/gateway-protocol.md#the-answer) into recur's
//! `ChargeOutcome`, and the one table from network decline data to `DeclineCode`.

use serde::Deserialize;

use crate::billing::governor;
use crate::gateway::{ChargeOutcome, DeclineCode};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    status: String,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    decline_code: Option<String>,
    #[serde(default)]
    network: Network,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub response_code: Option<String>,
    #[serde(default)]
    pub category: Option<u8>,
    #[serde(default)]
    pub advice_code: Option<String>,
}

impl Answer {
    /// None when the answer is neither a readable approval nor a decline: the outcome
    /// is then unknown, never a decline.
    pub fn outcome(self) -> Option<ChargeOutcome> {
        match self.status.as_str() {
            "approved" => {
                self.reference.filter(|r| !r.is_empty()).map(|reference| ChargeOutcome::Approved { reference })
            }
            "declined" => Some(ChargeOutcome::Declined {
                code: decline_code(self.decline_code.as_deref(), &self.network),
                network: self.network.governed(),
            }),
            _ => None,
        }
    }
}

impl Network {
    /// The network data the retry governor reads, when the answer names a scheme and a code.
    fn governed(&self) -> Option<governor::Network> {
        let scheme = governor::Scheme::parse(self.scheme.as_deref()?);
        let response_code = self.response_code.clone().filter(|c| !c.trim().is_empty())?;
        Some(governor::Network {
            scheme,
            response_code,
            category: self.category,
            advice_code: self.advice_code.clone(),
        })
    }
}

/// The `DeclineCode` of a decline. Signals that forbid a retry come first (a revoked
/// authorization, Mastercard advice 03 "do not try again" and 21 "payment
/// cancelled"), then the readable names recur shares with the acquirer, then Visa's
/// category or Mastercard's advice code, then the generic soft `DoNotHonor`.
pub fn decline_code(name: Option<&str>, network: &Network) -> DeclineCode {
    use DeclineCode::*;
    match (name, network.category, network.advice_code.as_deref()) {
        (_, _, Some("03" | "21")) | (Some("authorization_revoked"), _, _) => InvalidAccount,
        (Some("insufficient_funds"), _, _) => InsufficientFunds,
        (Some("do_not_honor"), _, _) => DoNotHonor,
        (Some("expired_card"), _, _) => ExpiredCard,
        (Some("stolen_card"), _, _) => StolenCard,
        (Some("invalid_account"), _, _) => InvalidAccount,
        (_, Some(1), _) => InvalidAccount,
        (_, Some(2), _) | (_, _, Some("02" | "24" | "25" | "26" | "27" | "28" | "29" | "30")) => TryAgainLater,
        _ => DoNotHonor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(category: Option<u8>, advice: Option<&str>) -> Network {
        Network { category, advice_code: advice.map(str::to_owned), ..Network::default() }
    }

    #[test]
    fn decline_codes_map_by_name_then_network_data() {
        use DeclineCode::*;
        // (declineCode, Visa category, Mastercard advice code, recur's code)
        type Case = (Option<&'static str>, Option<u8>, Option<&'static str>, DeclineCode);
        let cases: &[Case] = &[
            (Some("insufficient_funds"), Some(2), None, InsufficientFunds),
            (Some("do_not_honor"), Some(4), None, DoNotHonor),
            (Some("expired_card"), Some(3), None, ExpiredCard),
            (Some("stolen_card"), Some(1), None, StolenCard),
            (Some("invalid_account"), Some(1), None, InvalidAccount),
            (Some("authorization_revoked"), Some(1), None, InvalidAccount),
            (Some("lost_card"), Some(1), None, InvalidAccount),
            (Some("declined_96"), Some(2), None, TryAgainLater),
            (Some("declined_N7"), Some(3), None, DoNotHonor),
            (Some("declined_62"), Some(4), None, DoNotHonor),
            // Mastercard: advice codes 03/21 forbid a retry whatever the name says.
            (Some("do_not_honor"), None, Some("21"), InvalidAccount),
            (Some("invalid_account"), None, Some("03"), InvalidAccount),
            (Some("insufficient_funds"), None, Some("24"), InsufficientFunds),
            (Some("declined_91"), None, Some("02"), TryAgainLater),
            (Some("declined_91"), None, Some("30"), TryAgainLater),
            (Some("declined_91"), None, Some("01"), DoNotHonor),
            (None, None, None, DoNotHonor),
        ];
        for &(name, category, advice, want) in cases {
            assert_eq!(decline_code(name, &net(category, advice)), want, "{name:?} {category:?} {advice:?}");
        }
        assert!(!decline_code(Some("authorization_revoked"), &net(Some(1), None)).is_soft());
        assert!(decline_code(Some("declined_96"), &net(Some(2), None)).is_soft());
    }

    #[test]
    fn answers_read_into_outcomes() {
        let a: Answer = serde_json::from_str(
            r#"{"status":"declined","reference":"ch_1","declineCode":"insufficient_funds",
                "network":{"scheme":"visa","responseCode":"51","category":2},"networkTransactionId":"3"}"#,
        )
        .unwrap();
        let visa_51 = governor::Network {
            scheme: governor::Scheme::Visa,
            response_code: "51".into(),
            category: Some(2),
            advice_code: None,
        };
        assert_eq!(
            a.outcome(),
            Some(ChargeOutcome::Declined { code: DeclineCode::InsufficientFunds, network: Some(visa_51) })
        );
        let a: Answer = serde_json::from_str(r#"{"status":"approved","reference":"ch_2","declineCode":null}"#).unwrap();
        assert_eq!(a.outcome(), Some(ChargeOutcome::Approved { reference: "ch_2".into() }));
        let a: Answer = serde_json::from_str(r#"{"status":"approved","reference":""}"#).unwrap();
        assert_eq!(a.outcome(), None);
        let a: Answer = serde_json::from_str(r#"{"status":"pending","reference":"ch_3"}"#).unwrap();
        assert_eq!(a.outcome(), None);
    }
}
