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

/// A signed-in POST's form, if it carries its session's CSRF token; else the
/// "This form has expired" page (403), and nothing changes.
pub fn checked_form(app: &App, session: &PageSession, headers: &HeaderMap, body: &[u8]) -> Result<Form, Response> {
    let form = Form::parse(body);
    if form_ok(app, session, &form, headers) { Ok(form) } else { Err(expired_form()) }
}

/// A signed-in POST of `area`: `signed` is the area's check of its session (a redirect
/// to the sign-in page means there is none: the POST changes nothing and says so,
/// 403), then the form is read and must carry its session's CSRF token.
pub async fn post_form<T>(
    app: &App,
    area: &Area,
    signed: Result<T, Response>,
    session: impl Fn(&T) -> &PageSession,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(T, Form), Response> {
    let signed = match signed {
        Ok(s) => s,
        Err(r) if r.status() == StatusCode::SEE_OTHER => return Err(signed_out(area)),
        Err(r) => return Err(r),
    };
    let body = axum::body::to_bytes(body, 256 * 1024)
        .await
        .map_err(|_| super::message(StatusCode::PAYLOAD_TOO_LARGE, "Too large", "This form is too large."))?;
    let form = checked_form(app, session(&signed), headers, &body)?;
    Ok((signed, form))
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
        Error::Validation(errors) | Error::BadRequest { errors, .. } => {
            super::message(StatusCode::UNPROCESSABLE_ENTITY, "Please correct the form", &problem_text(&errors))
        }
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

// ---- what every handler of both areas does ------------------------------------------

/// What a page handler answers: its page, or the page to show instead (an error page,
/// the sign-in page, a redirect). Handlers use `?` on both.
pub type Answer = Result<Response, Response>;

/// Read through the API's domain functions on one pooled connection.
pub async fn read<T>(
    app: &App,
    f: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, Error>,
) -> Result<T, Response> {
    async {
        let mut conn = app.pool.acquire().await?;
        f(&mut conn).await
    }
    .await
    .map_err(error_page)
}

/// Change through the API's domain functions in one transaction, committed.
pub async fn in_tx<T>(app: &App, f: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, Error>) -> Result<T, Error> {
    let mut tx = app.pool.begin().await?;
    let out = f(&mut tx).await?;
    tx.commit().await?;
    Ok(out)
}

/// A list's cursor from the query string (`field` names it in the error).
pub fn cursor<T: std::str::FromStr>(given: Option<&str>, field: &str) -> Result<Option<T>, Response> {
    given
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| c.parse::<T>().map_err(|_| error_page(Error::validation(field, "is not a cursor this page made"))))
        .transpose()
}

/// One page of `rows` fetched with one row more than `page`: the page, and the cursor
/// of the next one if there is more.
pub fn paged<T>(mut rows: Vec<T>, page: usize, key: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let more = rows.len() > page;
    rows.truncate(page);
    let next = if more { rows.last().map(key) } else { None };
    (rows, next)
}

/// The "Next page" link of a list: `path` with the filters and `cursor_name=next`.
pub fn pager(path: &str, filters: &[(&str, Option<&str>)], cursor_name: &str, next: Option<&str>) -> Markup {
    let Some(next) = next else { return html! {} };
    let mut pairs = filters.to_vec();
    pairs.push((cursor_name, Some(next)));
    html! { nav class="pager" aria-label="Pages" { a href={ (path) (query(&pairs)) } { "Next page" } } }
}

/// A table in a region of its own that scrolls sideways at 360 px and is reached by
/// keyboard: its label, its `id` (for links and tests), its column headers (one in
/// brackets, `"[Action]"`, is for screen readers only) and its rows.
pub fn data_table(label: &str, id: Option<&str>, columns: &[&str], rows: Markup) -> Markup {
    html! {
        div class="table" tabindex="0" role="region" aria-label=(label) {
            table id=[id] {
                thead { tr { @for c in columns {
                    @if let Some(hidden) = c.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
                        th scope="col" { span class="visually-hidden" { (hidden) } }
                    } @else {
                        th scope="col" { (c) }
                    }
                } } }
                tbody { (rows) }
            }
        }
    }
}

/// What was done (after a redirect), or nothing.
pub fn notice(text: Option<&str>) -> Markup {
    html! { @if let Some(n) = text { div class="notice" role="status" { p { (n) } } } }
}

/// What is wrong with a form, or nothing.
pub fn alert(text: Option<&str>) -> Markup {
    html! { @if let Some(p) = text { div class="alert" role="alert" { p { (p) } } } }
}

/// A form's problem as the page shows it ("field: message."): `Ok` for a refusal of
/// the form's content (422), the error itself for anything else.
pub fn form_problem(e: Error) -> Result<String, Error> {
    match e {
        Error::Validation(errors) | Error::BadRequest { errors, .. } => Ok(problem_text(&errors)),
        other => Err(other),
    }
}

/// Each field's problem, named as the API names the field: "url: must be https."
fn problem_text(errors: &[crate::error::FieldError]) -> String {
    errors.iter().map(|e| format!("{}: {}.", e.field, e.message)).collect::<Vec<_>>().join(" ")
}

/// The sign-in forms' MAC key: not a secret (there is no session yet); the cookie
/// and the browser's Fetch Metadata are what protect them (docs/dashboard.md#sessions).
pub const SIGN_IN_KEY: &[u8] = b"recur sign-in form";

/// What a sign-in page shows: its title, a heading, the form's fields and action, and
/// a line under the form.
pub struct SignIn {
    pub title: &'static str,
    pub action: &'static str,
    pub heading: &'static str,
    pub fields: Markup,
    pub after: Markup,
}

impl SignIn {
    /// The page (no session yet): the form's token is bound to the browser's nonce
    /// cookie only (double submit), and the browser must say the form is recur's own.
    pub fn page(self, status: StatusCode, headers: &HeaderMap, problem: Option<&str>) -> Response {
        let (nonce, fresh) = csrf::nonce(headers);
        let token = csrf::token(SIGN_IN_KEY, &nonce);
        let page = super::layout(
            self.title,
            html! {
                h1 { (self.heading) }
                (alert(problem))
                form method="post" action=(self.action) {
                    input type="hidden" name="csrf" value=(token);
                    (self.fields)
                    button type="submit" class="primary" { "Sign in" }
                }
                (self.after)
            },
            &[],
        );
        let mut r = super::html(status, page, Framing::Nobody, None);
        if fresh {
            r.headers_mut().append(header::SET_COOKIE, csrf::set_cookie(&nonce, SameSite::Strict));
        }
        r
    }
}

/// Whether a sign-in form's CSRF token is good (there is no session yet).
pub fn sign_in_form_ok(app: &App, form: &Form, headers: &HeaderMap) -> bool {
    csrf::verify(SIGN_IN_KEY, form.get("csrf"), headers, &app.public_url)
}

/// A POST of a signed-in area without a live session: it changes nothing, and says so.
pub fn signed_out(area: &Area) -> Response {
    let again = match area.kind {
        Kind::Merchant => "Sign in again to the dashboard, then repeat what you were doing.",
        Kind::Operator => "Sign in to the console again.",
    };
    super::message(StatusCode::FORBIDDEN, "You are signed out", again)
}

/// A sign-in refused for too many failures (docs/dashboard.md#sessions): the API's
/// 429, as a page, with its `Retry-After`.
pub fn too_many_sign_ins(refusal: &Response) -> Response {
    let secs = refusal
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    let mut r = super::message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        &format!("Too many failed sign-ins. Please wait {secs} seconds, then try again."),
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// A sign-in's request as the API's limits see it: its client address
/// (`RECUR_CLIENT_ADDRESS_HEADER` or the peer), its headers and its form.
pub struct SignInRequest {
    pub address: String,
    pub headers: HeaderMap,
    pub form: Form,
}

impl axum::extract::FromRequest<App> for SignInRequest {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, app: &App) -> Result<Self, Self::Rejection> {
        let address = app.limits.client_address(&req);
        let headers = req.headers().clone();
        let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
            .await
            .map_err(|_| super::message(StatusCode::PAYLOAD_TOO_LARGE, "Too large", "This form is too large."))?;
        Ok(SignInRequest { address, headers, form: Form::parse(&body) })
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
    fn a_page_is_one_row_short_of_what_was_fetched() {
        let (rows, next) = paged((1..=26).collect::<Vec<i32>>(), 25, |n| n.to_string());
        assert_eq!((rows.len(), next.as_deref()), (25, Some("25")));
        let (rows, next) = paged(vec![1, 2], 25, |n: &i32| n.to_string());
        assert_eq!((rows.len(), next), (2, None));
        let link = pager("/x", &[("q", Some("a b")), ("e", None)], "after", Some("9")).into_string();
        assert_eq!(link, r#"<nav class="pager" aria-label="Pages"><a href="/x?q=a+b&amp;after=9">Next page</a></nav>"#);
        assert_eq!(pager("/x", &[], "after", None).into_string(), "");
    }

    #[test]
    fn a_bracketed_column_is_for_screen_readers() {
        let t = data_table("T", Some("t"), &["Name", "[Action]"], html! { tr {} }).into_string();
        assert!(t.contains(r#"<th scope="col">Name</th>"#), "{t}");
        assert!(t.contains(r#"<span class="visually-hidden">Action</span>"#), "{t}");
        assert!(t.contains(r#"role="region" aria-label="T""#) && t.contains(r#"<table id="t">"#), "{t}");
    }

    #[test]
    fn a_form_problem_names_each_field() {
        let e = Error::validation("frozenTime", "is required");
        assert_eq!(form_problem(e).unwrap(), "frozenTime: is required.");
        assert!(form_problem(Error::NotFound("plan")).is_err());
    }

    #[test]
    fn queries_skip_empty_values() {
        assert_eq!(query(&[("a", Some("1 2")), ("b", Some("")), ("c", None)]), "?a=1+2");
        assert_eq!(query(&[]), "");
    }
}
