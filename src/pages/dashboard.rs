//! `/dashboard` (docs/dashboard.md): the merchant's pages. A merchant signs in with
//! its merchantKey and secret (checked as the API checks them, `merchants::authenticate`)
//! and gets a 12-hour session. Handlers read forms and render; every change goes
//! through the same domain functions as the API (`subscriptions::lifecycle`,
//! `billing::retry`, `plans::repo`), in one transaction, with the same events (actor
//! `merchant`). Everything is scoped to the session's merchant: another merchant's id
//! is "not found", exactly as in the API.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::format_money;
use super::signed_in::{self, Ctx, DASHBOARD, Form, error_page, form_ok, not_found, query, redirect, when, wire};
use crate::app::App;
use crate::billing::{cycles, retry};
use crate::error::Error;
use crate::events::{self, EventFilter};
use crate::merchants::Merchant;
use crate::page_sessions::{self, Kind};
use crate::plans::{self, CreatePlan, PlanStatus};
use crate::subscriptions::{SubscriptionStatus as S, lifecycle, repo};

/// Rows on one page of a list.
pub(super) const PAGE: i64 = 25;

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/sign-in", get(sign_in_form).post(sign_in))
        .route("/dashboard/sign-out", post(sign_out))
        .route("/dashboard/subscriptions", get(subscriptions))
        .route("/dashboard/subscriptions/{id}", get(subscription))
        .route("/dashboard/subscriptions/{id}/cancel", get(confirm_cancel).post(cancel))
        .route("/dashboard/subscriptions/{id}/{action}", post(act))
        .route("/dashboard/billing-cycles/{id}/retry", post(retry_cycle))
        .route("/dashboard/plans", get(plans_page).post(create_plan))
        .route("/dashboard/plans/{id}/{action}", post(plan_action))
        .route("/dashboard/events", get(events_page))
        .merge(super::dashboard_more::router())
}

/// The signed-in merchant, or the page to show instead (the sign-in page for a GET).
pub(super) async fn signed_in(app: &App, headers: &HeaderMap) -> Result<(Ctx, Merchant), Response> {
    let session = match DASHBOARD.session(app, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(redirect(&DASHBOARD.sign_in_path())),
        Err(e) => return Err(error_page(e)),
    };
    let Some(merchant_id) = session.merchant_id else { return Err(redirect(&DASHBOARD.sign_in_path())) };
    let merchant = async {
        let mut conn = app.pool.acquire().await?;
        page_sessions::merchant(&mut conn, merchant_id).await
    }
    .await
    .map_err(error_page)?;
    Ok((Ctx::new(session, headers), merchant))
}

/// A signed-in form POST whose CSRF token is this session's.
pub(super) async fn posted(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<(Ctx, Merchant, Form), Response> {
    let form = Form::parse(body);
    let (ctx, m) = match signed_in(app, headers).await {
        Ok(found) => found,
        // A POST without a live session changes nothing and says so.
        Err(r) if r.status() == StatusCode::SEE_OTHER => {
            return Err(super::message(
                StatusCode::FORBIDDEN,
                "You are signed out",
                "Sign in again to the dashboard, then repeat what you were doing.",
            ));
        }
        Err(r) => return Err(r),
    };
    if !form_ok(app, &ctx.session, &form, headers) {
        return Err(signed_in::expired_form());
    }
    Ok((ctx, m, form))
}

pub(super) fn nav(ctx: &Ctx, m: &Merchant, current: &str) -> Markup {
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
                @if m.sandbox { (link("/dashboard/ledger", "Sandbox ledger")) }
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

pub(super) async fn now(app: &App) -> Result<DateTime<Utc>, Response> {
    app.clock.now().await.map_err(error_page)
}

async fn home(State(app): State<App>, headers: HeaderMap) -> Response {
    match signed_in(&app, &headers).await {
        Ok(_) => redirect("/dashboard/subscriptions"),
        Err(r) => r,
    }
}

// ---- signing in and out -----------------------------------------------------------

fn sign_in_page(status: StatusCode, headers: &HeaderMap, problem: Option<&str>) -> Response {
    // No session yet: the form's token is bound to the browser's nonce cookie only
    // (double submit), and the browser must say the form is recur's own.
    let (nonce, fresh) = super::csrf::nonce(headers);
    let csrf = super::csrf::token(SIGN_IN_KEY, &nonce);
    let body = super::layout(
        "Sign in – recur dashboard",
        html! {
            h1 { "Sign in to the dashboard" }
            @if let Some(p) = problem { div class="alert" role="alert" { p { (p) } } }
            form method="post" action="/dashboard/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                div class="field" {
                    label for="key" { "Merchant key" }
                    input type="text" id="key" name="merchant_key" autocomplete="username" spellcheck="false" required;
                }
                div class="field" {
                    label for="secret" { "Secret" }
                    input type="password" id="secret" name="secret" autocomplete="current-password" required;
                }
                button type="submit" class="primary" { "Sign in" }
            }
            p class="fineprint" { "The key and secret are the ones the operator gave you for the API." }
        },
        &[],
    );
    let mut r = super::html(status, body, super::Framing::Nobody, None);
    if fresh {
        r.headers_mut().append(header::SET_COOKIE, super::csrf::set_cookie(&nonce, super::csrf::SameSite::Strict));
    }
    r
}

/// The sign-in forms' MAC key: not a secret (there is no session yet); the cookie
/// and the browser's Fetch Metadata are what protect them (docs/dashboard.md#sessions).
pub(super) const SIGN_IN_KEY: &[u8] = b"recur sign-in form";

async fn sign_in_form(headers: HeaderMap) -> Response {
    sign_in_page(StatusCode::OK, &headers, None)
}

async fn sign_in(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if !super::csrf::verify(SIGN_IN_KEY, form.get("csrf"), &headers, &app.public_url) {
        return signed_in::expired_form();
    }
    let refused = || {
        sign_in_page(StatusCode::UNAUTHORIZED, &headers, Some("That merchant key and secret do not match. Try again."))
    };
    let Ok(key) = Uuid::parse_str(form.get("merchant_key").trim()) else { return refused() };
    let merchant = match crate::merchants::authenticate(&app.pool, key, form.get("secret")).await {
        Ok(Some(m)) => m,
        Ok(None) => return refused(),
        Err(e) => return error_page(e),
    };
    let made = async {
        let mut conn = app.pool.acquire().await?;
        page_sessions::create(&mut conn, Kind::Merchant, Some(merchant.id)).await
    }
    .await;
    match made {
        Ok((_, raw)) => {
            let mut r = redirect("/dashboard/subscriptions");
            r.headers_mut().append(header::SET_COOKIE, DASHBOARD.set_cookie(&raw));
            r
        }
        Err(e) => error_page(e),
    }
}

async fn sign_out(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, m, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let done = async {
        let mut conn = app.pool.acquire().await?;
        if form.get("everywhere") == "1" {
            page_sessions::revoke_merchant(&mut conn, m.id).await.map(|_| ())
        } else {
            page_sessions::revoke(&mut conn, ctx.session.id).await
        }
    }
    .await;
    match done {
        Ok(()) => {
            let mut r = redirect(&DASHBOARD.sign_in_path());
            r.headers_mut().append(header::SET_COOKIE, DASHBOARD.clear_cookie());
            r
        }
        Err(e) => error_page(e),
    }
}

// ---- subscriptions ----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct SubscriptionQuery {
    status: Option<String>,
    customer: Option<String>,
    cursor: Option<String>,
}

const STATUSES: [S; 7] = [S::Pending, S::Trialing, S::Active, S::PastDue, S::Paused, S::Cancelled, S::Completed];

async fn subscriptions(State(app): State<App>, headers: HeaderMap, Query(q): Query<SubscriptionQuery>) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = match now(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let status_filter = match status.map(|s| serde_json::from_value::<S>(json!(s))) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return error_page(Error::validation("status", "is not a subscription status")),
        None => None,
    };
    let customer = q.customer.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let after = q.cursor.as_deref().filter(|c| !c.is_empty()).map(Uuid::parse_str);
    let after = match after {
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return error_page(Error::validation("cursor", "is not a cursor this page made")),
        None => None,
    };
    let f = repo::SubscriptionFilter {
        status: status_filter,
        customer_account_id: customer.map(str::to_owned),
        plan_id: None,
        after,
        limit: PAGE + 1,
    };
    let rows = async {
        let mut conn = app.pool.acquire().await?;
        repo::list(&mut conn, m.id, &f).await
    }
    .await;
    let mut rows = match rows {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let next = more.then(|| rows.last().map(|s| s.id.to_string())).flatten();
    let main = html! {
        h1 { "Subscriptions" }
        form method="get" action="/dashboard/subscriptions" class="filters" role="search" {
            div class="field" {
                label for="customer" { "Customer account id" }
                input type="text" id="customer" name="customer" value=[customer];
            }
            div class="field" {
                label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" { "Any" }
                    @for s in STATUSES {
                        option value=(s.as_str()) selected[status == Some(s.as_str())] { (s.as_str()) }
                    }
                }
            }
            button type="submit" { "Search" }
        }
        @if rows.is_empty() { p { "No subscription matches." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Subscriptions" {
                table {
                    thead { tr {
                        th scope="col" { "Customer" } th scope="col" { "Description" } th scope="col" { "Status" }
                        th scope="col" { "Price" } th scope="col" { "Next charge" } th scope="col" { "Created" }
                    } }
                    tbody {
                        @for s in &rows {
                            tr {
                                td { a href={ "/dashboard/subscriptions/" (s.id) } { (s.customer_account_id) } }
                                td { (s.description.as_deref().unwrap_or("")) }
                                td { (s.status.as_str()) }
                                td class="num" { (format_money(s.amount, &s.currency)) }
                                td { @if let Some(t) = s.next_charge_at.filter(|_| !s.status.is_final()) { (when(t, now)) } }
                                td { (when(s.created_at, now)) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" {
                a href={ "/dashboard/subscriptions" (query(&[("customer", customer), ("status", status), ("cursor", Some(c))])) } { "Next page" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Subscriptions – recur dashboard", nav(&ctx, &m, "/dashboard/subscriptions"), main)
}

#[derive(Debug, Default, Deserialize)]
struct DoneQuery {
    done: Option<String>,
}

fn done_notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "pause" => "The subscription is paused.",
        "resume" => "The subscription is active again.",
        "cancel" => "The subscription is cancelled.",
        "cancel_at_period_end" => "The subscription will end when the current period ends.",
        "retry" => "A new attempt to charge the cycle was started.",
        "settled" => "The gateway had approved the last attempt: it is recorded, nothing was charged again.",
        "created" => "The plan is created.",
        "activate" => "The plan is active.",
        "archive" => "The plan is archived.",
        "updated" => "The plan is saved.",
        _ => return None,
    })
}

async fn subscription(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let now = match now(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let loaded = async {
        let mut conn = app.pool.acquire().await?;
        let s = repo::get(&mut conn, m.id, id).await?;
        let list = cycles::list(&mut conn, id, None, 100).await?;
        let views = cycles::with_transactions(&mut conn, &list).await?;
        let evs =
            events::list(&mut conn, m.id, &EventFilter { object_id: Some(id), limit: 100, ..EventFilter::default() })
                .await?;
        Ok::<_, Error>((s, views, evs))
    }
    .await;
    let (s, cycle_views, evs) = match loaded {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    let title = s.description.clone().unwrap_or_else(|| format!("Subscription of {}", s.customer_account_id));
    let action = |name: &str, text: &str| {
        html! {
            form method="post" action={ "/dashboard/subscriptions/" (id) "/" (name) } {
                (ctx.field())
                button type="submit" { (text) }
            }
        }
    };
    let live = !s.status.is_final();
    let main = html! {
        p { a href="/dashboard/subscriptions" { "All subscriptions" } }
        h1 { (title) }
        @if let Some(n) = done_notice(q.done.as_deref()) { div class="notice" role="status" { p { (n) } } }
        dl {
            dt { "Id" } dd { code { (s.id) } }
            dt { "Customer" } dd { (s.customer_account_id) }
            dt { "Status" } dd { (s.status.as_str()) }
            dt { "Price" } dd { (format_money(s.amount, &s.currency)) " every " (s.interval_count) " " (wire(&s.interval_unit)) }
            @if let Some(t) = s.next_charge_at.filter(|_| live) { dt { "Next charge" } dd { (when(t, now)) } }
            @if let (Some(a), Some(b)) = (s.current_period_start, s.current_period_end) {
                dt { "Current period" } dd { (when(a, now)) " to " (when(b, now)) }
            }
            @if let Some(t) = s.cancel_at.filter(|_| live) { dt { "Ends" } dd { (when(t, now)) } }
            @if let Some(t) = s.resume_at { dt { "Resumes" } dd { (when(t, now)) } }
            @if let Some(r) = &s.cancellation_reason { dt { "Cancellation reason" } dd { (r) } }
            dt { "Payment method" }
            dd { @match (&s.payment_method_brand, &s.payment_method_last4, &s.payment_method) {
                (Some(b), Some(l), _) => { (b) " ending " (l) }
                (_, _, Some(_)) => { "On file" }
                _ => { "None yet" }
            } }
            dt { "Created" } dd { (when(s.created_at, now)) }
        }
        @if live {
            h2 { "Actions" }
            div class="actions" {
                @if matches!(s.status, S::Active | S::PastDue | S::Trialing) { (action("pause", "Pause")) }
                @if s.status == S::Paused { (action("resume", "Resume")) }
                a class="button-link" href={ "/dashboard/subscriptions/" (id) "/cancel" } { "Cancel…" }
            }
            h2 { "Checkout link" }
            p { @if s.status == S::Pending { "Send the customer a link to give the first card; the subscription starts when they pay." }
                @else { "Send the customer a link to replace the card on file." } }
            form method="post" action={ "/dashboard/subscriptions/" (id) "/checkout-link" } {
                (ctx.field())
                button type="submit" { "Create a checkout link" }
            }
        }
        h2 { "Billing cycles" }
        @if cycle_views.is_empty() { p { "No cycle yet." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Billing cycles" {
                table {
                    thead { tr {
                        th scope="col" { "Cycle" } th scope="col" { "Period" } th scope="col" { "Amount" }
                        th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { span class="visually-hidden" { "Action" } }
                    } }
                    tbody {
                        @for c in cycle_views.iter().rev() {
                            tr id={ "cycle-" (c.sequence) } {
                                td { (c.sequence) }
                                td { (c.period_start.format("%Y-%m-%d")) " – " (c.period_end.format("%Y-%m-%d")) }
                                td class="num" { (c.amount) " " (c.currency) }
                                td class="status" { (wire(&c.status)) @if let Some(f) = &c.failure_code { " (" (f) ")" } }
                                td {
                                    @for t in &c.transactions {
                                        span class="attempt" {
                                            (wire(&t.kind)) " " (wire(&t.status))
                                            @if let Some(d) = &t.decline_code { " (" (d) ")" }
                                            ", " (when(t.created_at, now))
                                        }
                                    }
                                }
                                td {
                                    @if matches!(wire(&c.status).as_str(), "failed" | "error") {
                                        form method="post" action={ "/dashboard/billing-cycles/" (c.id) "/retry" } {
                                            (ctx.field())
                                            button type="submit" { "Retry cycle " (c.sequence) " now" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Events" }
        (event_table(&evs, now, "Events of this subscription"))
        p { a href={ "/dashboard/events" (query(&[("objectId", Some(&id.to_string()))])) } { "Events of this subscription only" } }
    };
    ctx.page(StatusCode::OK, &format!("{title} – recur dashboard"), nav(&ctx, &m, ""), main)
}

fn event_table(evs: &[events::Event], now: DateTime<Utc>, label: &str) -> Markup {
    html! {
        @if evs.is_empty() { p { "No events." } } @else {
            div class="table" tabindex="0" role="region" aria-label=(label) {
                table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Object" } th scope="col" { "Event" } th scope="col" { "Actor" } th scope="col" { "Data" } } }
                    tbody {
                        @for e in evs {
                            tr {
                                td { (when(e.created_at, now)) }
                                td { (e.object_type) }
                                td { (e.kind) }
                                td class="actor" { (wire(&e.actor)) }
                                td { code { (e.data.to_string()) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// "Cancel…": a page that asks before cancelling, now or at the period's end.
async fn confirm_cancel(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let s = async {
        let mut conn = app.pool.acquire().await?;
        repo::get(&mut conn, m.id, id).await
    }
    .await;
    let s = match s {
        Ok(s) => s,
        Err(e) => return error_page(e),
    };
    let main = html! {
        h1 { "Cancel this subscription?" }
        p { "The subscription of " strong { (s.customer_account_id) } " (" (format_money(s.amount, &s.currency)) ") is " (s.status.as_str()) "." }
        p { "Cancelling now stops every future charge at once. Cancelling at the end of the period lets the customer keep what they paid for." }
        form method="post" action={ "/dashboard/subscriptions/" (id) "/cancel" } {
            (ctx.field())
            input type="hidden" name="confirm" value="yes";
            div class="actions" {
                button type="submit" name="when" value="period_end" class="danger" { "Yes, cancel at the end of the period" }
                button type="submit" name="when" value="now" class="danger primary" { "Yes, cancel now" }
            }
        }
        p { a href={ "/dashboard/subscriptions/" (id) } { "No, keep the subscription" } }
    };
    ctx.page(StatusCode::OK, "Cancel the subscription – recur dashboard", nav(&ctx, &m, ""), main)
}

async fn cancel(app: State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    act(app, headers, Path((id, "cancel".to_owned())), body).await
}

/// Pause, resume, cancel: the API's lifecycle functions, as the merchant.
async fn act(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (_ctx, m, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let now = match now(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let done = match action.as_str() {
        "pause" | "resume" => action.clone(),
        "cancel" => {
            // Cancelling is only done from its confirmation page.
            if form.get("confirm") != "yes" {
                return redirect(&format!("/dashboard/subscriptions/{id}/cancel"));
            }
            if form.get("when") == "now" { "cancel".into() } else { "cancel_at_period_end".into() }
        }
        _ => return not_found(),
    };
    let changed = async {
        let mut tx = app.pool.begin().await?;
        let c = match done.as_str() {
            "pause" => lifecycle::pause(&mut tx, m.id, id, None, now).await?,
            "resume" => {
                let c = lifecycle::resume(&mut tx, m.id, id, now).await?;
                if !c.jobs.is_empty() {
                    crate::lease::stamp_subscription(&mut tx, id, app.lease_secs).await?;
                }
                c
            }
            _ => lifecycle::cancel(&mut tx, m.id, id, done == "cancel_at_period_end", now).await?,
        };
        tx.commit().await?;
        Ok::<_, Error>(c)
    }
    .await;
    match changed {
        Ok(c) => {
            app.enqueue(&c.jobs).await;
            redirect(&format!("/dashboard/subscriptions/{id}?done={done}"))
        }
        Err(e) => error_page(e),
    }
}

/// "Retry now" on a failed or errored cycle: `POST /v1/billing-cycles/{id}/retry`'s
/// domain functions, the gateway asked first about an errored attempt.
async fn retry_cycle(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let (_ctx, m, _form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let now = match now(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let done = async {
        let reconciled = {
            let mut conn = app.pool.acquire().await?;
            retry::reconcile_first(&mut conn, &app.gateway, m.merchant_key, m.id, id).await?
        };
        let mut tx = app.pool.begin().await?;
        let (cycle, job) = retry::manual_or_settle(&mut tx, m.id, id, reconciled.as_ref(), app.lease_secs, now).await?;
        tx.commit().await?;
        Ok::<_, Error>((cycle, job))
    }
    .await;
    match done {
        Ok((cycle, job)) => {
            let done = if job.is_some() { "retry" } else { "settled" };
            app.enqueue(&job.into_iter().collect::<Vec<_>>()).await;
            redirect(&format!("/dashboard/subscriptions/{}?done={done}", cycle.subscription_id))
        }
        Err(e) => error_page(e),
    }
}

// ---- plans ------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct PlanQuery {
    status: Option<String>,
    tag: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

async fn plans_page(State(app): State<App>, headers: HeaderMap, Query(q): Query<PlanQuery>) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    render_plans(&app, &ctx, &m, &q, StatusCode::OK, None).await
}

async fn render_plans(
    app: &App,
    ctx: &Ctx,
    m: &Merchant,
    q: &PlanQuery,
    status_code: StatusCode,
    problem: Option<(String, &Form)>,
) -> Response {
    let now = match now(app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let status_filter = match status.map(|s| serde_json::from_value::<PlanStatus>(json!(s))) {
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => return error_page(Error::validation("status", "is not a plan status")),
        None => None,
    };
    let tag = q.tag.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()).map(Uuid::parse_str) {
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return error_page(Error::validation("cursor", "is not a cursor this page made")),
        None => None,
    };
    let f = plans::repo::PlanFilter { status: status_filter, tag: tag.map(str::to_owned), after, limit: PAGE + 1 };
    let rows = async {
        let mut conn = app.pool.acquire().await?;
        plans::repo::list(&mut conn, m.id, &f).await
    }
    .await;
    let mut rows = match rows {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let next = more.then(|| rows.last().map(|p| p.id.to_string())).flatten();
    let filled = |name: &str| problem.as_ref().and_then(|(_, f)| f.opt(name)).map(str::to_owned);
    let plan_action = |id: Uuid, name: &str, text: &str| {
        html! {
            form method="post" action={ "/dashboard/plans/" (id) "/" (name) } class="inline" {
                (ctx.field())
                button type="submit" { (text) }
            }
        }
    };
    let main = html! {
        h1 { "Plans" }
        @if let Some(n) = done_notice(q.done.as_deref()) { div class="notice" role="status" { p { (n) } } }
        form method="get" action="/dashboard/plans" class="filters" role="search" {
            div class="field" {
                label for="tag" { "Tag" }
                input type="text" id="tag" name="tag" value=[tag];
            }
            div class="field" {
                label for="plan-status" { "Status" }
                select id="plan-status" name="status" {
                    option value="" { "Any" }
                    @for s in ["draft", "active", "archived"] { option value=(s) selected[status == Some(s)] { (s) } }
                }
            }
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() { p { "No plan matches." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Plans" {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Price" } th scope="col" { "Tags" }
                        th scope="col" { "Status" } th scope="col" { "Created" } th scope="col" { span class="visually-hidden" { "Actions" } }
                    } }
                    tbody {
                        @for p in &rows {
                            tr {
                                td { (p.name) }
                                td class="num" { (format_money(p.amount, &p.currency)) " / " (p.interval_count) " " (wire(&p.interval_unit)) }
                                td { (p.tags.join(", ")) }
                                td class="status" { (wire(&p.status)) }
                                td { (when(p.created_at, now)) }
                                td {
                                    a href={ "/dashboard/plans/" (p.id) "/edit" } { "Edit " (p.name) }
                                    " "
                                    @if p.status == PlanStatus::Draft { (plan_action(p.id, "activate", &format!("Activate {}", p.name))) }
                                    @if p.status != PlanStatus::Archived { (plan_action(p.id, "archive", &format!("Archive {}", p.name))) }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" {
                a href={ "/dashboard/plans" (query(&[("tag", tag), ("status", status), ("cursor", Some(c))])) } { "Next page" }
            }
        }
        h2 id="new" { "New plan" }
        @if let Some((p, _)) = &problem { div class="alert" role="alert" { p { (p) } } }
        form method="post" action="/dashboard/plans" {
            (ctx.field())
            div class="field" { label for="p-name" { "Name" } input type="text" id="p-name" name="name" required value=[filled("name")]; }
            div class="field" { label for="p-amount" { "Amount" } input type="text" inputmode="decimal" id="p-amount" name="amount" required value=[filled("amount")]; }
            div class="field" { label for="p-currency" { "Currency" } input type="text" id="p-currency" name="currency" required value=(filled("currency").unwrap_or_else(|| "EUR".into())); }
            div class="row" {
                div class="field" { label for="p-count" { "Every" } input type="text" inputmode="numeric" id="p-count" name="interval_count" value=(filled("interval_count").unwrap_or_else(|| "1".into())); }
                div class="field" {
                    label for="p-unit" { "Unit" }
                    select id="p-unit" name="interval_unit" {
                        @for u in ["day", "week", "month", "year"] { option value=(u) selected[filled("interval_unit").as_deref().unwrap_or("month") == u] { (u) } }
                    }
                }
            }
            div class="field" { label for="p-trial" { "Trial days (optional)" } input type="text" inputmode="numeric" id="p-trial" name="trial_days" value=[filled("trial_days")]; }
            div class="field" {
                label for="p-tags" { "Tags (comma-separated)" }
                input type="text" id="p-tags" name="tags" value=[filled("tags")];
            }
            div class="field" {
                label for="p-status" { "Status" }
                select id="p-status" name="status" {
                    option value="draft" { "draft" }
                    option value="active" selected[filled("status").as_deref() == Some("active")] { "active" }
                }
            }
            button type="submit" class="primary" { "Create plan" }
        }
    };
    ctx.page(status_code, "Plans – recur dashboard", nav(ctx, m, "/dashboard/plans"), main)
}

/// The form as the API's `CreatePlan`, so it passes the same checks.
fn plan_request(form: &Form) -> Result<CreatePlan, Error> {
    let int = |name: &str| -> Result<Option<i64>, Error> {
        form.opt(name)
            .map(|v| v.parse::<i64>().map_err(|_| Error::validation(name, "must be a whole number")))
            .transpose()
    };
    let tags: Vec<&str> = form.get("tags").split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    let body = json!({
        "name": form.get("name"),
        "amount": form.get("amount").trim(),
        "currency": form.get("currency").trim().to_uppercase(),
        "interval": {"unit": form.get("interval_unit"), "count": int("interval_count")?.unwrap_or(1)},
        "trialDays": int("trial_days")?,
        "tags": tags,
        "status": if form.get("status") == "active" { "active" } else { "draft" },
    });
    serde_json::from_value::<CreatePlan>(body).map_err(|e| Error::validation("plan", e.to_string()))
}

async fn create_plan(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, m, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let made = async {
        let valid = plan_request(&form)?.validate()?;
        let mut tx = app.pool.begin().await?;
        let plan = plans::repo::insert(&mut tx, m.id, valid).await?;
        tx.commit().await?;
        Ok::<_, Error>(plan)
    }
    .await;
    match made {
        Ok(_) => redirect("/dashboard/plans?done=created"),
        Err(Error::Validation(errors)) | Err(Error::BadRequest { errors, .. }) => {
            let text = errors.iter().map(|e| format!("{}: {}.", e.field, e.message)).collect::<Vec<_>>().join(" ");
            render_plans(&app, &ctx, &m, &PlanQuery::default(), StatusCode::UNPROCESSABLE_ENTITY, Some((text, &form)))
                .await
        }
        Err(e) => error_page(e),
    }
}

async fn plan_action(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (_ctx, m, _form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let to = match action.as_str() {
        "activate" => PlanStatus::Active,
        "archive" => PlanStatus::Archived,
        _ => return not_found(),
    };
    let done = async {
        let mut tx = app.pool.begin().await?;
        plans::repo::set_status(&mut tx, m.id, id, to).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    match done {
        Ok(()) => redirect(&format!("/dashboard/plans?done={action}")),
        Err(e) => error_page(e),
    }
}

// ---- events -----------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    object_id: Option<String>,
    cursor: Option<String>,
}

async fn events_page(State(app): State<App>, headers: HeaderMap, Query(q): Query<EventQuery>) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = match now(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let kind = q.kind.as_deref().map(str::trim).filter(|k| !k.is_empty());
    let object = q.object_id.as_deref().map(str::trim).filter(|o| !o.is_empty());
    let object_id = match object.map(Uuid::parse_str) {
        Some(Ok(o)) => Some(o),
        Some(Err(_)) => return error_page(Error::validation("objectId", "must be an id")),
        None => None,
    };
    let after_seq = match q.cursor.as_deref().filter(|c| !c.is_empty()).map(str::parse::<i64>) {
        Some(Ok(c)) => Some(c),
        Some(Err(_)) => return error_page(Error::validation("cursor", "is not a cursor this page made")),
        None => None,
    };
    let f = EventFilter { object_type: None, object_id, kind: kind.map(str::to_owned), after_seq, limit: PAGE + 1 };
    let rows = async {
        let mut conn = app.pool.acquire().await?;
        events::list(&mut conn, m.id, &f).await
    }
    .await;
    let mut rows = match rows {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let next = more.then(|| rows.last().map(|e| e.seq.to_string())).flatten();
    let main = html! {
        h1 { "Events" }
        form method="get" action="/dashboard/events" class="filters" role="search" {
            div class="field" { label for="e-type" { "Event type" } input type="text" id="e-type" name="type" value=[kind]; }
            div class="field" { label for="e-object" { "Object id" } input type="text" id="e-object" name="objectId" value=[object]; }
            button type="submit" { "Filter" }
        }
        (event_table(&rows, now, "Events"))
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" {
                a href={ "/dashboard/events" (query(&[("type", kind), ("objectId", object), ("cursor", Some(c))])) } { "Next page" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Events – recur dashboard", nav(&ctx, &m, "/dashboard/events"), main)
}
