//! Verifying a signed request (docs/gateway-protocol.md#signing): Standard Webhooks
//! headers over `"{id}.{timestamp}.{body}"`, one shared secret, 5 minutes of clock skew.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::webhooks::signing::sign;

/// How far a request's timestamp may be from the acquirer's clock.
pub const TOLERANCE_SECS: i64 = 5 * 60;

/// Why a request's signature is refused; the text goes to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than 5 minutes away from the acquirer's clock")]
    Stale,
    #[error("no signature in webhook-signature matches the request")]
    Mismatch,
}

/// The verified `webhook-id` of a request.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8], now: i64) -> Result<String, Refused> {
    let header = |name: &'static str| {
        headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).ok_or(Refused::Missing(name))
    };
    let id = header("webhook-id")?;
    let timestamp: i64 = header("webhook-timestamp")?.trim().parse().map_err(|_| Refused::BadTimestamp)?;
    let signatures = header("webhook-signature")?;
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(Refused::Stale);
    }
    let expected = sign(secret, id, timestamp, body).ok_or(Refused::Mismatch)?;
    // Every candidate is compared, in constant time, whatever the first ones gave.
    let matched = signatures
        .split(' ')
        .filter(|s| s.starts_with("v1,"))
        .fold(subtle::Choice::from(0), |acc, s| acc | s.as_bytes().ct_eq(expected.as_bytes()));
    if bool::from(matched) { Ok(id.to_owned()) } else { Err(Refused::Mismatch) }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::webhooks::signing::new_secret;

    fn headers(id: &str, ts: i64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_str(id).unwrap());
        h.insert("webhook-timestamp", HeaderValue::from_str(&ts.to_string()).unwrap());
        h.insert("webhook-signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    /// The worked example of docs/gateway-protocol.md#signing.
    #[test]
    fn the_documented_example_verifies() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "recur_txn_0193a5b2c4d87e6f9a0b1c2d3e4f5a6b";
        let body = concat!(
            r#"{"idempotencyKey":"recur_txn_0193a5b2c4d87e6f9a0b1c2d3e4f5a6b","amount":"10.00","currency":"EUR","#,
            r#""paymentMethod":"pm_ok","customerAccountId":"cust_42","initiator":"merchant","#,
            r#""recurring":{"sequence":2,"networkTransactionId":"483927561029384"}}"#
        );
        let sig = "v1,g4y0BkTKKcesOkuhGj3ij7o96BjfedR3pvh3r45PCp8=";
        assert_eq!(verify(secret, &headers(id, 1_764_547_200, sig), body.as_bytes(), 1_764_547_200), Ok(id.into()));
        let lookup = "v1,s2HPcKR4jK48+zCbmGj+FDqwJ4am70IAgFkVpzIQeII=";
        assert_eq!(verify(secret, &headers(id, 1_764_547_200, lookup), b"", 1_764_547_200), Ok(id.into()));
    }

    #[test]
    fn a_rotated_list_verifies_and_tampering_does_not() {
        let (secret, old) = (new_secret(), new_secret());
        let now = 1_700_000_000;
        let good = sign(&secret, "k1", now, b"{}").unwrap();
        let stale = sign(&old, "k1", now, b"{}").unwrap();
        assert_eq!(verify(&secret, &headers("k1", now, &format!("{stale} {good}")), b"{}", now), Ok("k1".into()));
        assert_eq!(verify(&secret, &headers("k1", now, &good), b"{ }", now), Err(Refused::Mismatch));
        assert_eq!(verify(&secret, &headers("k2", now, &good), b"{}", now), Err(Refused::Mismatch));
        assert_eq!(verify(&secret, &headers("k1", now, &good), b"{}", now + 301), Err(Refused::Stale));
        assert_eq!(verify(&secret, &HeaderMap::new(), b"{}", now), Err(Refused::Missing("webhook-id")));
    }
}
