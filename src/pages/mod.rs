//! The pages customers see (docs/pages.md): server-rendered HTML (maud), one layout,
//! the same security headers on every page, and recur's own CSS and JavaScript,
//! compiled into the binary. No page loads anything from outside recur.

pub mod checkout;
// The dashboard's and the console's helpers answer `Result<_, Response>`: the error is
// the page to show instead (a sign-in redirect, an error page), built once a request.
#[allow(clippy::result_large_err)]
pub mod console;
pub mod csrf;
#[allow(clippy::result_large_err)]
pub mod dashboard;
mod layout;
pub mod pay;
pub mod portal;
#[allow(clippy::result_large_err)]
pub mod signed_in;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::app::App;

pub use layout::{app_layout, format_money, layout};

/// The stylesheet and scripts, served by recur itself.
pub const CSS: &str = include_str!("assets/recur.css");
pub const CHECKOUT_JS: &str = include_str!("assets/checkout.js");
/// The console's live queue table (docs/dashboard.md#queues).
pub const CONSOLE_JS: &str = include_str!("assets/console.js");
/// `Recur.mount` for merchants' pages (docs/pages.md#the-widget).
pub const WIDGET_JS: &str = include_str!("assets/widget.js");

/// Asset URLs carry the build's version, so a new release is never served a stale copy.
pub const ASSET_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The pages' routes; `app` gives the form posts their rate limits (docs/operations.md#rate-limits).
pub fn router(app: &App) -> Router<App> {
    use crate::api::limits;
    use crate::ratelimit::Bucket;
    let card_submissions =
        || axum::middleware::from_fn_with_state((app.clone(), Bucket::CardSubmissions), limits::page_posts);
    Router::new()
        .route("/assets/recur.css", get(|| async { asset(CSS, "text/css; charset=utf-8") }))
        .route("/assets/checkout.js", get(|| async { asset(CHECKOUT_JS, "text/javascript; charset=utf-8") }))
        .route("/assets/console.js", get(|| async { asset(CONSOLE_JS, "text/javascript; charset=utf-8") }))
        .route("/widget.js", get(widget))
        .route("/checkout/{token}", get(checkout::show).post(checkout::submit).route_layer(card_submissions()))
        .route("/checkout/{token}/status", get(checkout::status))
        .route("/portal/{token}", get(portal::show).post(portal::submit))
        .route("/pay/{token}", get(pay::show).post(pay::submit).route_layer(card_submissions()))
        .route("/pay/{token}/status", get(pay::status))
        .merge(dashboard::router())
        .merge(console::router())
}

/// A page's `/status` poll (docs/pages.md): `{"state": …}` for the page's script,
/// never cached; `not_found` (404) for an unknown token; no error text.
pub(crate) fn poll_answer(state: crate::error::Result<Option<&'static str>>, page: &'static str) -> Response {
    let state = match state {
        Ok(Some(state)) => state,
        Ok(None) => {
            return (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"state": "not_found"}))).into_response();
        }
        Err(e) => {
            tracing::error!(error = crate::error::chain(&e), page, "status poll failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut r = axum::Json(serde_json::json!({"state": state})).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// The widget is loaded by merchants' pages, on their origins.
async fn widget() -> Response {
    let mut r = asset(WIDGET_JS, "text/javascript; charset=utf-8");
    r.headers_mut().insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    r
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Who may frame a page (CSP `frame-ancestors`).
pub enum Framing<'a> {
    /// Nobody (the portal, error pages).
    Nobody,
    /// The merchant's allowed origins (the checkout); none listed: nobody.
    Origins(&'a [String]),
}

/// The headers every page carries (docs/pages.md#security-headers). `form_to`: an
/// origin a form's submission may end at besides recur (the checkout's returnUrl,
/// reached by redirect).
pub fn secure(res: &mut Response, framing: Framing<'_>, form_to: Option<&str>) {
    let ancestors = match framing {
        Framing::Origins(list) if !list.is_empty() => list.join(" "),
        _ => "'none'".to_owned(),
    };
    let form_action = match form_to {
        Some(o) => format!("'self' {o}"),
        None => "'self'".to_owned(),
    };
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         form-action {form_action}; base-uri 'none'; frame-ancestors {ancestors}"
    );
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The page's URL holds its token: it must never leak to another site.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
    );
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    // For browsers without CSP level 2; a list of origins has no X-Frame-Options form.
    if ancestors == "'none'" {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
}

/// An HTML page with the security headers.
pub fn html(status: StatusCode, body: maud::Markup, framing: Framing<'_>, form_to: Option<&str>) -> Response {
    let mut r = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body.into_string()).into_response();
    secure(&mut r, framing, form_to);
    r
}

/// A page that says only what went wrong (unknown link, server trouble).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let body = layout(
        title,
        maud::html! {
            h1 { (title) }
            p { (text) }
        },
        &[],
    );
    html(status, body, Framing::Nobody, None)
}

/// Whether the browser says this page is loaded in a frame (`Sec-Fetch-Dest`).
pub fn framed(headers: &HeaderMap) -> bool {
    headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok()) == Some("iframe")
}

/// The origin (`scheme://host[:port]`) of a URL.
pub fn origin_of(url: &str) -> Option<String> {
    url::Url::parse(url).ok().map(|u| u.origin().ascii_serialization()).filter(|o| o != "null")
}
