//! What the dashboard and the console share (docs/dashboard.md): the session cookie,
//! the signed-in page context with its CSRF token, form reading, redirects, the error
//! pages, and the formats of times and amounts.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::csrf::{self, SameSite};
use super::{Framing, app_layout};
use crate::app::App;
use crate::error::Error;
use crate::page_sessions::{self, Kind, PageSession};

/// Which side of recur a page belongs to: its cookie's name and path, its sign-in page.
#[derive(Clone, Copy)]
pub struct Area {
    pub kind: Kind,
    pub cookie: &'static str,
    pub path: &'static str,
}

pub const DASHBOARD: Area = Area { kind: Kind::Merchant, cookie: "recur_dashboard", path: "/dashboard" };
pub const CONSOLE: Area = Area { kind: Kind::Operator, cookie: "recur_console", path: "/console" };

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
}

impl Area {
    /// The session cookie: only sent to this area's pages, never to scripts, never
    /// cross-site, gone after 12 hours even if the browser keeps running.
    pub fn set_cookie(&self, raw: &str) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}={raw}; Path={}; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
            self.cookie,
            self.path,
            page_sessions::LIFETIME_SECS
        ))
        .expect("a token is URL-safe base64")
    }

    pub fn clear_cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{}=; Path={}; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
            self.cookie, self.path
        ))
        .expect("ASCII")
    }

    /// The live session named by the request's cookie.
    pub async fn session(&self, app: &App, headers: &HeaderMap) -> Result<Option<PageSession>, Error> {
        let Some(raw) = cookie_value(headers, self.cookie) else { return Ok(None) };
        let mut conn = app.pool.acquire().await?;
        page_sessions::find(&mut conn, self.kind, &raw).await
    }

    pub fn sign_in_path(&self) -> String {
        format!("{}/sign-in", self.path)
    }
}

/// A signed-in request: its session and the CSRF token its forms carry.
pub struct Ctx {
    pub session: PageSession,
    pub csrf: String,
    nonce: String,
    fresh_nonce: bool,
}

impl Ctx {
    pub fn new(session: PageSession, headers: &HeaderMap) -> Ctx {
        let (nonce, fresh_nonce) = csrf::nonce(headers);
        let csrf = csrf::token(&session.csrf_key, &nonce);
        Ctx { session, csrf, nonce, fresh_nonce }
    }

    /// A whole page with the security headers and, when the browser had none, the
    /// CSRF cookie.
    pub fn page(&self, status: StatusCode, title: &str, nav: Markup, main: Markup) -> Response {
        self.page_with(status, title, nav, main, &[])
    }

    /// [`Ctx::page`] with recur's own scripts (`/assets/...`).
    pub fn page_with(&self, status: StatusCode, title: &str, nav: Markup, main: Markup, scripts: &[&str]) -> Response {
        let body = app_layout(title, nav, main, scripts);
        let mut r = super::html(status, body, Framing::Nobody, None);
        if self.fresh_nonce {
            r.headers_mut().append(header::SET_COOKIE, csrf::set_cookie(&self.nonce, SameSite::Strict));
        }
        r
    }

    /// The hidden field every form carries.
    pub fn field(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.csrf); }
    }
}

/// A form's fields, in order; a name may repeat (checkboxes).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    pub fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }

    /// A field given and not blank.
    pub fn opt(&self, name: &str) -> Option<&str> {
        Some(self.get(name).trim()).filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// Whether a signed-in POST may act: its session's CSRF token, as every page form
/// (docs/pages.md#csrf).
pub fn form_ok(app: &App, session: &PageSession, form: &Form, headers: &HeaderMap) -> bool {
    csrf::verify(&session.csrf_key, form.get("csrf"), headers, &app.public_url)
}

/// 303 to `path` (after a form), with the pages' headers.
pub fn redirect(path: &str) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, path.to_owned())]).into_response();
    super::secure(&mut r, Framing::Nobody, None);
    r
}

pub fn expired_form() -> Response {
    super::message(StatusCode::FORBIDDEN, "This form has expired", "Reload the page and try again.")
}

pub fn not_found() -> Response {
    super::message(StatusCode::NOT_FOUND, "Not found", "There is nothing here, or it is not yours to see.")
}

/// The page of a domain error: 404, 409 and 422 say what went wrong; anything else
/// is logged and answers a plain 500 page.
pub fn error_page(e: Error) -> Response {
    match e {
        Error::NotFound(_) => not_found(),
        Error::Validation(errors) | Error::BadRequest { errors, .. } => super::message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Please correct the form",
            &errors.iter().map(|e| format!("{}: {}.", e.field, e.message)).collect::<Vec<_>>().join(" "),
        ),
        Error::Conflict { detail, .. } => {
            super::message(StatusCode::CONFLICT, "This cannot be done now", &format!("{detail}."))
        }
        Error::RetryRefused(r) => {
            super::message(StatusCode::CONFLICT, "The card networks' rules refuse this retry", &r.to_string())
        }
        Error::Unavailable(detail) => {
            super::message(StatusCode::SERVICE_UNAVAILABLE, "Not possible right now", &format!("{detail}."))
        }
        other => {
            tracing::error!(error = crate::error::chain(&other), "page failed");
            super::message(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Please try again in a moment.")
        }
    }
}

/// A time in UTC with how long ago (or how far ahead) it is: "2026-12-01 14:05 UTC (3 h ago)".
pub fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) } " " span class="muted" { "(" (relative(t, now)) ")" } }
}

pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let (n, ahead) = (secs.unsigned_abs(), secs < 0);
    let span = match n {
        0..60 => return "just now".to_owned(),
        60..3600 => format!("{} min", n / 60),
        3600..86_400 => format!("{} h", n / 3600),
        _ => format!("{} d", n / 86_400),
    };
    if ahead { format!("in {span}") } else { format!("{span} ago") }
}

/// Wire names of enums (`past_due`), as the API writes them.
pub fn wire<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// A query string from pairs, skipping empty values.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            s.append_pair(k, v);
        }
    }
    let q = s.finish();
    if q.is_empty() { q } else { format!("?{q}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z").unwrap().to_utc();
        assert_eq!(relative(now, now), "just now");
        assert_eq!(relative(now - chrono::Duration::minutes(5), now), "5 min ago");
        assert_eq!(relative(now + chrono::Duration::hours(3), now), "in 3 h");
        assert_eq!(relative(now - chrono::Duration::days(40), now), "40 d ago");
    }

    #[test]
    fn forms_keep_repeated_fields() {
        let f = Form::parse(b"id=a&id=b&q=+x+&csrf=t");
        assert_eq!(f.all("id"), ["a", "b"]);
        assert_eq!(f.opt("q"), Some("x"));
        assert_eq!(f.opt("none"), None);
    }

    #[test]
    fn queries_skip_empty_values() {
        assert_eq!(query(&[("a", Some("1 2")), ("b", Some("")), ("c", None)]), "?a=1+2");
        assert_eq!(query(&[]), "");
    }
}
