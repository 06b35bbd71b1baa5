//! `/dashboard` (docs/dashboard.md): the merchant's pages. A merchant signs in with
//! its merchantKey and secret (checked as the API checks them, with the API's limits
//! on failures) and gets a 12-hour session. Handlers read forms and render; every
//! change goes through the same domain functions as the API, in one transaction, with
//! the same events (actor `merchant`). Everything is scoped to the session's merchant:
//! another merchant's id is "not found", exactly as in the API.
//!
//! One file a domain: `subscriptions`, `plans`, `series`, `webhooks`, `clocks` (test
//! clocks of sandbox merchants), `account` (events, settings, the sandbox ledger).

mod account;
mod clocks;
mod plans;
mod series;
mod subscriptions;
mod webhooks;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::signed_in::{self, Answer, Ctx, DASHBOARD, Form, SignIn, SignInRequest, error_page, redirect};
use crate::app::App;
use crate::merchants::Merchant;
use crate::page_sessions::{self, Kind};

/// Rows on one page of a list.
pub(super) const PAGE: usize = 25;

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/sign-in", get(sign_in_form).post(sign_in))
        .route("/dashboard/sign-out", post(sign_out))
        .merge(subscriptions::router())
        .merge(plans::router())
        .merge(series::router())
        .merge(webhooks::router())
        .merge(clocks::router())
        .merge(account::router())
}

/// A signed-in merchant's request: its session (with the forms' CSRF token) and its
/// merchant. Without a live session a GET is sent to the sign-in page.
pub(super) struct Signed {
    pub ctx: Ctx,
    pub m: Merchant,
}

impl FromRequestParts<App> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let session = match DASHBOARD.session(app, &parts.headers).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(redirect(&DASHBOARD.sign_in_path())),
            Err(e) => return Err(error_page(e)),
        };
        let Some(merchant_id) = session.merchant_id else { return Err(redirect(&DASHBOARD.sign_in_path())) };
        let m = signed_in::read(app, async |conn| page_sessions::merchant(conn, merchant_id).await).await?;
        Ok(Signed { ctx: Ctx::new(session, &parts.headers), m })
    }
}

/// A signed-in form POST whose CSRF token is this session's. Without a live session
/// it changes nothing and says so (403); without its token, "This form has expired".
pub(super) struct Posted {
    pub ctx: Ctx,
    pub m: Merchant,
    pub form: Form,
}

impl FromRequest<App> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, app: &App) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, app).await;
        let (s, form) = signed_in::post_form(app, &DASHBOARD, signed, |s| &s.ctx.session, &parts.headers, body).await?;
        Ok(Posted { ctx: s.ctx, m: s.m, form })
    }
}

impl Signed {
    /// A whole page of the dashboard, `current` marked in the navigation.
    pub fn page(&self, status: StatusCode, title: &str, current: &str, main: Markup) -> Response {
        self.ctx.page(status, &format!("{title} – recur dashboard"), nav(&self.ctx, &self.m, current), main)
    }
}

impl Posted {
    pub fn signed(self) -> (Signed, Form) {
        (Signed { ctx: self.ctx, m: self.m }, self.form)
    }
}

fn nav(ctx: &Ctx, m: &Merchant, current: &str) -> Markup {
    let link = |href: &str, text: &str| {
        html! { li { a href=(href) aria-current=[(href == current).then_some("page")] { (text) } } }
    };
    html! {
        nav aria-label="Dashboard" {
            ul {
                (link("/dashboard/subscriptions", "Subscriptions"))
                (link("/dashboard/plans", "Plans"))
                (link("/dashboard/series", "Payment series"))
                (link("/dashboard/events", "Events"))
                (link("/dashboard/webhooks", "Webhooks"))
                (link("/dashboard/settings", "Settings"))
                @if m.sandbox {
                    (link("/dashboard/test-clocks", "Test clocks"))
                    (link("/dashboard/ledger", "Sandbox ledger"))
                }
                li class="who" { (m.name) @if m.sandbox { " (sandbox)" } }
                li {
                    form method="post" action="/dashboard/sign-out" {
                        (ctx.field())
                        button type="submit" { "Sign out" }
                    }
                }
                li {
                    form method="post" action="/dashboard/sign-out" {
                        (ctx.field())
                        input type="hidden" name="everywhere" value="1";
                        button type="submit" { "Sign out everywhere" }
                    }
                }
            }
        }
    }
}

/// The deployment's billing clock (a subscription on a test clock reads its own).
pub(super) async fn now(app: &App) -> Result<DateTime<Utc>, Response> {
    app.clock.now().await.map_err(error_page)
}

async fn home(_: Signed) -> Response {
    redirect("/dashboard/subscriptions")
}

// ---- signing in and out -----------------------------------------------------------

fn sign_in_page(status: StatusCode, headers: &HeaderMap, problem: Option<&str>) -> Response {
    SignIn {
        title: "Sign in – recur dashboard",
        action: "/dashboard/sign-in",
        heading: "Sign in to the dashboard",
        fields: html! {
            div class="field" {
                label for="key" { "Merchant key" }
                input type="text" id="key" name="merchant_key" autocomplete="username" spellcheck="false" required;
            }
            div class="field" {
                label for="secret" { "Secret" }
                input type="password" id="secret" name="secret" autocomplete="current-password" required;
            }
        },
        after: html! { p class="fineprint" { "The key and secret are the ones the operator gave you for the API." } },
    }
    .page(status, headers, problem)
}

async fn sign_in_form(headers: HeaderMap) -> Response {
    sign_in_page(StatusCode::OK, &headers, None)
}

/// The key and secret checked as the API checks its Basic credentials
/// (`api::auth::authenticate`): the same rule, the same cache, and the same limits on
/// failures per merchantKey and per client address (docs/dashboard.md#sessions).
async fn sign_in(State(app): State<App>, req: SignInRequest) -> Answer {
    let SignInRequest { address, headers, form } = req;
    if !signed_in::sign_in_form_ok(&app, &form, &headers) {
        return Err(signed_in::expired_form());
    }
    let key = form.get("merchant_key").trim();
    let basic =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{key}:{}", form.get("secret")));
    let mut as_api = HeaderMap::new();
    for (name, value) in [("authorization", format!("Basic {basic}")), ("x-api-key", key.to_owned())] {
        if let Ok(v) = value.parse() {
            as_api.insert(name, v);
        }
    }
    let merchant = match crate::api::auth::authenticate(&app, &as_api, &address).await {
        Ok(m) => m,
        Err(refusal) if refusal.status() == StatusCode::TOO_MANY_REQUESTS => {
            return Err(signed_in::too_many_sign_ins(&refusal));
        }
        Err(refusal) if refusal.status() == StatusCode::FORBIDDEN => {
            let text = "That merchant key and secret do not match. Try again.";
            return Err(sign_in_page(StatusCode::UNAUTHORIZED, &headers, Some(text)));
        }
        Err(refusal) => return Err(refusal),
    };
    let (_, raw) =
        signed_in::read(&app, async |conn| page_sessions::create(conn, Kind::Merchant, Some(merchant.id)).await)
            .await?;
    let mut r = redirect("/dashboard/subscriptions");
    r.headers_mut().append(header::SET_COOKIE, DASHBOARD.set_cookie(&raw));
    Ok(r)
}

async fn sign_out(State(app): State<App>, p: Posted) -> Answer {
    let (id, merchant_id) = (p.ctx.session.id, p.m.id);
    let everywhere = p.form.get("everywhere") == "1";
    signed_in::read(&app, async |conn| {
        if everywhere {
            page_sessions::revoke_merchant(conn, merchant_id).await.map(|_| ())
        } else {
            page_sessions::revoke(conn, id).await
        }
    })
    .await?;
    let mut r = redirect(&DASHBOARD.sign_in_path());
    r.headers_mut().append(header::SET_COOKIE, DASHBOARD.clear_cookie());
    Ok(r)
}

/// A "…?" page before a destructive action: what it does, a button that does it
/// (the form carries `confirm=yes`), and a link back that does nothing.
pub(super) fn confirmation(
    ctx: &Ctx,
    question: &str,
    body: Markup,
    action: &str,
    buttons: Markup,
    back: (&str, &str),
) -> Markup {
    html! {
        h1 { (question) }
        (body)
        form method="post" action=(action) {
            (ctx.field())
            input type="hidden" name="confirm" value="yes";
            div class="actions" { (buttons) }
        }
        p { a href=(back.0) { (back.1) } }
    }
}
