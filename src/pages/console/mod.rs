//! `/console` (docs/dashboard.md#the-operator-console): the operator's pages. The
//! operator signs in with `RECUR_ADMIN_TOKEN` (compared in constant time, failures
//! limited as the admin API's) and gets a 12-hour session. The queues of `recur
//! queues` (`queues`), the dead letters of `recur dlq` (`dead_letters`: filter, show,
//! replay, drain with a dry run first, the archive) and merchants (`merchants`),
//! through the same functions (`queue::stats`, `dlq`, `merchants`). Without an admin
//! token configured the console does not exist (404).

mod dead_letters;
mod merchants;
mod queues;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use jobs::Queue;
use maud::{Markup, html};
use subtle::ConstantTimeEq;

use super::signed_in::{self, Answer, CONSOLE, Ctx, Form, SignIn, SignInRequest, error_page, not_found, redirect};
use crate::app::App;
use crate::error::Error;
use crate::page_sessions::{self, Kind};

/// Rows on one page of a list.
const PAGE: usize = 25;

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .merge(queues::router())
        .merge(dead_letters::router())
        .merge(merchants::router())
}

/// The console exists only with an admin token.
fn enabled(app: &App) -> bool {
    app.admin_token.is_some()
}

/// A signed-in operator's request; without a live session a GET is sent to the
/// sign-in page.
struct Operator(Ctx);

impl FromRequestParts<App> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        if !enabled(app) {
            return Err(not_found());
        }
        match CONSOLE.session(app, &parts.headers).await {
            Ok(Some(s)) if s.merchant_id.is_none() => Ok(Operator(Ctx::new(s, &parts.headers))),
            Ok(_) => Err(redirect(&CONSOLE.sign_in_path())),
            Err(e) => Err(error_page(e)),
        }
    }
}

impl Operator {
    /// A whole page of the console, `current` marked in the navigation.
    fn page(&self, status: StatusCode, title: &str, current: &str, main: Markup) -> Response {
        self.page_with(status, title, current, main, &[])
    }

    fn page_with(&self, status: StatusCode, title: &str, current: &str, main: Markup, scripts: &[&str]) -> Response {
        self.0.page_with(status, &format!("{title} – recur console"), nav(&self.0, current), main, scripts)
    }
}

/// A signed-in operator's form POST whose CSRF token is this session's.
struct OperatorPost(Operator, Form);

impl FromRequest<App> for OperatorPost {
    type Rejection = Response;

    async fn from_request(req: Request, app: &App) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let op = Operator::from_request_parts(&mut parts, app).await;
        let (op, form) = signed_in::post_form(app, &CONSOLE, op, |o| &o.0.session, &parts.headers, body).await?;
        Ok(OperatorPost(op, form))
    }
}

fn nav(ctx: &Ctx, current: &str) -> Markup {
    let link = |href: &str, text: &str| {
        html! { li { a href=(href) aria-current=[(href == current).then_some("page")] { (text) } } }
    };
    html! {
        nav aria-label="Console" {
            ul {
                (link("/console", "Queues"))
                (link("/console/dead-letters", "Dead letters"))
                (link("/console/archive", "Archive"))
                (link("/console/merchants", "Merchants"))
                li class="who" { "Operator" }
                li {
                    form method="post" action="/console/sign-out" {
                        (ctx.field())
                        button type="submit" { "Sign out" }
                    }
                }
            }
        }
    }
}

fn queue_param(name: Option<&str>) -> Result<Option<Queue>, Error> {
    match name.filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(n) => Queue::parse(n).map(Some).ok_or_else(|| Error::validation("queue", "is not a queue of recur")),
    }
}

/// The queue select of the filter forms.
fn queue_select(id: &str, selected: Option<&str>) -> Markup {
    html! {
        select id=(id) name="queue" {
            option value="" { "Every queue" }
            @for q in Queue::ALL { option value=(q.name()) selected[selected == Some(q.name())] { (q.name()) } }
        }
    }
}

// ---- signing in and out -----------------------------------------------------------

fn sign_in_page(status: StatusCode, headers: &HeaderMap, problem: Option<&str>) -> Response {
    SignIn {
        title: "Sign in – recur console",
        action: "/console/sign-in",
        heading: "Operator console",
        fields: html! {
            div class="field" {
                label for="token" { "Admin token" }
                input type="password" id="token" name="token" autocomplete="current-password" required;
            }
        },
        after: html! {},
    }
    .page(status, headers, problem)
}

async fn sign_in_form(State(app): State<App>, headers: HeaderMap) -> Answer {
    if !enabled(&app) {
        return Err(not_found());
    }
    Ok(sign_in_page(StatusCode::OK, &headers, None))
}

/// The admin token, compared in constant time; a wrong one is a failed
/// authentication of the admin API's (`api::auth::failed`): counted per client
/// address with a growing delay, then 429 (docs/dashboard.md#sessions).
async fn sign_in(State(app): State<App>, req: SignInRequest) -> Answer {
    let Some(expected) = app.admin_token.clone() else { return Err(not_found()) };
    let SignInRequest { address, headers, form } = req;
    if !signed_in::sign_in_form_ok(&app, &form, &headers) {
        return Err(signed_in::expired_form());
    }
    if !bool::from(form.get("token").as_bytes().ct_eq(expected.as_bytes())) {
        let refusal = crate::api::auth::failed(&app, &address, None).await;
        if refusal.status() == StatusCode::TOO_MANY_REQUESTS {
            return Err(signed_in::too_many_sign_ins(&refusal));
        }
        return Err(sign_in_page(StatusCode::UNAUTHORIZED, &headers, Some("That is not the admin token.")));
    }
    let (_, raw) = signed_in::read(&app, async |conn| page_sessions::create(conn, Kind::Operator, None).await).await?;
    let mut r = redirect("/console");
    r.headers_mut().append(header::SET_COOKIE, CONSOLE.set_cookie(&raw));
    Ok(r)
}

async fn sign_out(State(app): State<App>, OperatorPost(op, _): OperatorPost) -> Answer {
    let id = op.0.session.id;
    signed_in::read(&app, async |conn| page_sessions::revoke(conn, id).await).await?;
    let mut r = redirect(&CONSOLE.sign_in_path());
    r.headers_mut().append(header::SET_COOKIE, CONSOLE.clear_cookie());
    Ok(r)
}
