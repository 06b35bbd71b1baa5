//! CSRF protection of the pages' forms (docs/pages.md#csrf).
//!
//! Every form carries `csrf = <nonce>.<HMAC-SHA256(session key, nonce)>`, where the
//! nonce is also the browser's `recur_csrf` cookie (`HttpOnly; Secure; SameSite`) and
//! the key is the page session's own (random, stored with the session). A POST passes
//! when the MAC matches this session's key and either the cookie matches the nonce
//! (double submit) or, when the browser sent no cookie (a checkout framed by a site
//! that blocks third-party cookies), the browser itself says the request comes from
//! recur's own page (`Sec-Fetch-Site: same-origin`, or `Origin` equal to
//! `RECUR_PUBLIC_URL`'s). A request a browser marks as cross-site never passes.

use axum::http::{HeaderMap, HeaderValue, header};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "recur_csrf";

/// How the cookie may travel: a checkout must work inside the merchant's iframe
/// (`None`); the portal is never framed (`Strict`).
#[derive(Debug, Clone, Copy)]
pub enum SameSite {
    None,
    Strict,
}

/// The browser's nonce from its cookie, when it sent a well-formed one.
pub fn cookie_nonce(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| crate::checkout::token::well_formed(v))
}

/// The nonce for a page: the browser's, or a new one (then the response sets it).
pub fn nonce(headers: &HeaderMap) -> (String, bool) {
    match cookie_nonce(headers) {
        Some(n) => (n, false),
        None => (crate::checkout::token::new_token().0, true),
    }
}

fn mac(key: &[u8], nonce: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(b"recur-page-form\0");
    m.update(nonce.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The form field's value for a page rendered with `nonce`.
pub fn token(key: &[u8], nonce: &str) -> String {
    format!("{nonce}.{}", hex::encode(mac(key, nonce)))
}

pub fn set_cookie(nonce: &str, same_site: SameSite) -> HeaderValue {
    let same_site = match same_site {
        SameSite::None => "None",
        SameSite::Strict => "Strict",
    };
    HeaderValue::from_str(&format!("{COOKIE}={nonce}; Path=/; HttpOnly; Secure; SameSite={same_site}"))
        .expect("a nonce is URL-safe base64")
}

/// Whether a form POST may act (see the module's rules).
pub fn verify(key: &[u8], field: &str, headers: &HeaderMap, public_url: &str) -> bool {
    let Some((nonce, given)) = field.split_once('.') else { return false };
    let Ok(given) = hex::decode(given) else { return false };
    if !bool::from(given.ct_eq(&mac(key, nonce))) {
        return false;
    }
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    match cookie_nonce(headers) {
        Some(cookie) => bool::from(cookie.as_bytes().ct_eq(nonce.as_bytes())),
        None => {
            let own = url::Url::parse(public_url).map(|u| u.origin().ascii_serialization()).ok();
            let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
            fetch_site == Some("same-origin") || (origin.is_some() && origin == own.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://pay.example";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_cookie_must_match_the_form() {
        let key = b"k".repeat(32);
        let (nonce, _) = nonce(&HeaderMap::new());
        let t = token(&key, &nonce);
        let cookie = format!("{COOKIE}={nonce}");
        assert!(verify(&key, &t, &headers(&[("cookie", &cookie)]), URL));
        let (other, _) = super::nonce(&HeaderMap::new());
        let wrong = format!("a=b; {COOKIE}={other}");
        assert!(!verify(&key, &t, &headers(&[("cookie", &wrong)]), URL));
        // Another session's key.
        assert!(!verify(&b"x".repeat(32), &t, &headers(&[("cookie", &cookie)]), URL));
        assert!(!verify(&key, "garbage", &headers(&[("cookie", &cookie)]), URL));
    }

    #[test]
    fn without_a_cookie_only_the_browsers_same_origin_word_passes() {
        let key = b"k".repeat(32);
        let (nonce, _) = nonce(&HeaderMap::new());
        let t = token(&key, &nonce);
        assert!(!verify(&key, &t, &HeaderMap::new(), URL));
        assert!(verify(&key, &t, &headers(&[("sec-fetch-site", "same-origin")]), URL));
        assert!(verify(&key, &t, &headers(&[("origin", URL)]), URL));
        assert!(!verify(&key, &t, &headers(&[("origin", "https://evil.example")]), URL));
        let cookie = format!("{COOKIE}={nonce}");
        assert!(!verify(&key, &t, &headers(&[("cookie", &cookie), ("sec-fetch-site", "cross-site")]), URL));
    }
}
