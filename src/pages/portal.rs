//! `/portal/<token>` (docs/pages.md#the-portal): a customer's subscriptions with one
//! merchant, their charge history, and the actions the merchant offers. The handlers
//! read forms and render; every change goes through `crate::portal`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use maud::{Markup, html};
use uuid::Uuid;

use super::checkout::card_label;
use super::csrf::{self, SameSite};
use super::{Framing, format_money, layout, message};
use crate::app::App;
use crate::billing::calendar::Interval;
use crate::error::Error;
use crate::portal::{self, Action, CANCEL_REASONS, CustomerSession, Overview};
use crate::subscriptions::SubscriptionStatus as S;

fn internal(e: Error) -> Response {
    tracing::error!(error = crate::error::chain(&e), "portal page failed");
    message(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Please try again in a moment.")
}

fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Link not found",
        "This link does not exist. Ask the merchant for a new link to manage your subscriptions.",
    )
}

fn expired() -> Response {
    message(
        StatusCode::GONE,
        "This link has expired",
        "For your security, links to manage your subscriptions work for a short time. Ask the merchant for a new one.",
    )
}

/// The session of a token, still valid.
async fn session(app: &App, token: &str) -> Result<Result<(CustomerSession, DateTime<Utc>), Response>, Error> {
    let now = app.clock.now().await?;
    let mut conn = app.pool.acquire().await?;
    Ok(match portal::by_token(&mut conn, token).await? {
        None => Err(not_found()),
        Some(s) if s.expires_at <= now => Err(expired()),
        Some(s) => Ok((s, now)),
    })
}

/// What the last action did, shown once after its redirect (`?done=`).
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "pause" => "Your subscription is paused.",
        "resume" => "Your subscription is active again.",
        "cancel" => "Your subscription is cancelled.",
        "cancel_at_period_end" => "Your subscription will end when the current period ends.",
        "authorized_limit" => "Your authorized limit is saved.",
        "switch_plan" => "Your new plan starts when the current period ends.",
        "card" => "Your new card is saved.",
        _ => return None,
    })
}

pub async fn show(
    State(app): State<App>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (s, now) = match session(&app, &token).await {
        Ok(Ok(found)) => found,
        Ok(Err(page)) => return page,
        Err(e) => return internal(e),
    };
    let done = if q.contains_key("checkout_session") { Some("card") } else { q.get("done").map(String::as_str) };
    render(&app, &token, &headers, &s, now, StatusCode::OK, done.and_then(notice), None).await
}

#[allow(clippy::too_many_arguments)]
async fn render(
    app: &App,
    token: &str,
    headers: &HeaderMap,
    s: &CustomerSession,
    now: DateTime<Utc>,
    status: StatusCode,
    notice: Option<&str>,
    problem: Option<String>,
) -> Response {
    let overview = async {
        let mut conn = app.pool.acquire().await?;
        portal::overview(&mut conn, s).await
    }
    .await;
    let o = match overview {
        Ok(o) => o,
        Err(e) => return internal(e),
    };
    let (nonce, fresh) = csrf::nonce(headers);
    let csrf_token = csrf::token(&s.csrf_key, &nonce);
    let body = layout(
        &format!("Your subscriptions – {}", o.merchant_name),
        html! {
            h1 { "Your subscriptions with " (o.merchant_name) }
            @if let Some(n) = notice { div class="notice" role="status" { p { (n) } } }
            @if let Some(p) = &problem { div class="alert" role="alert" { p { (p) } } }
            @if o.subscriptions.is_empty() { p { "You have no subscriptions." } }
            @for sub in &o.subscriptions { (subscription(token, &csrf_token, &o, sub, now)) }
            @if let Some(back) = &s.return_url {
                p { a href=(back) { "Back to " (o.merchant_name) } }
            }
        },
        &[],
    );
    let mut r = super::html(status, body, Framing::Nobody, None);
    if fresh {
        r.headers_mut().append(header::SET_COOKIE, csrf::set_cookie(&nonce, SameSite::Strict));
    }
    r
}

fn every(i: &Interval) -> String {
    use crate::billing::calendar::IntervalUnit::*;
    let unit = match i.unit {
        Day => "day",
        Week => "week",
        Month => "month",
        Year => "year",
    };
    if i.count == 1 { format!("every {unit}") } else { format!("every {} {unit}s", i.count) }
}

fn status_label(s: S) -> &'static str {
    match s {
        S::Pending => "Waiting for a card",
        S::Trialing => "Free trial",
        S::Active => "Active",
        S::PastDue => "Payment overdue",
        S::Paused => "Paused",
        S::Cancelled => "Cancelled",
        S::Completed => "Ended",
    }
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%-d %B %Y").to_string()
}

fn subscription(token: &str, csrf: &str, o: &Overview, v: &portal::SubscriptionOverview, now: DateTime<Utc>) -> Markup {
    let sub = &v.subscription;
    let id = sub.id;
    let title = sub.description.clone().or_else(|| v.plan_name.clone()).unwrap_or_else(|| "Subscription".into());
    let p = &o.settings;
    let live = !sub.status.is_final();
    let can_pause = p.pause && matches!(sub.status, S::Active | S::PastDue | S::Trialing);
    let can_resume = p.pause && sub.status == S::Paused;
    let can_cancel = live && (p.cancel || (p.cancel_at_period_end && sub.cancel_at.is_none()));
    let switch_to: Vec<&crate::plans::Plan> = o
        .switchable
        .iter()
        .filter(|plan| Some(plan.id) != sub.plan_id)
        .filter(|_| matches!(sub.status, S::Active | S::PastDue | S::Trialing) && sub.cancel_at.is_none())
        .collect();
    let form = |action: &str, inner: Markup| {
        html! {
            form method="post" action={ "/portal/" (token) } class="action" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="subscription" value=(id);
                input type="hidden" name="action" value=(action);
                (inner)
            }
        }
    };
    html! {
        section class="subscription" aria-labelledby={ "s-" (id) } {
            h2 id={ "s-" (id) } { (title) }
            dl {
                dt { "Status" } dd { (status_label(sub.status)) }
                dt { "Price" } dd { (format_money(sub.amount, &sub.currency)) " " (every(&sub.interval())) }
                @if let Some(next) = sub.next_charge_at.filter(|_| live) {
                    dt { "Next charge" } dd { (date(next)) ", " (format_money(sub.amount, &sub.currency)) }
                }
                @if let Some(t) = sub.trial_end_at.filter(|_| sub.status == S::Trialing) {
                    dt { "Trial ends" } dd { (date(t)) }
                }
                @if let Some(r) = sub.resume_at { dt { "Resumes" } dd { (date(r)) } }
                @if let Some(c) = sub.cancel_at.filter(|_| live) { dt { "Ends" } dd { (date(c)) } }
                dt { "Payment method" }
                dd { @match (sub.card(), &sub.payment_method) {
                    (Some(c), _) => { (card_label(&c)) }
                    (None, Some(_)) => { "Card on file" }
                    (None, None) => { "None yet" }
                } }
                dt { "Authorized limit" }
                dd { @match sub.authorized_limit {
                    Some(l) => { (format_money(l, &sub.currency)) " per charge" }
                    None => { "No limit" }
                } }
            }
            @if live {
                h3 { "Manage" }
                @if can_pause {
                    (form("pause", html! {
                        label for={ "resume-" (id) } { "Resume on (optional)" }
                        input type="date" id={ "resume-" (id) } name="resume_on"
                            min=((now.date_naive() + chrono::Days::new(1)).format("%Y-%m-%d").to_string());
                        button type="submit" { "Pause subscription" }
                    }))
                }
                @if can_resume { (form("resume", html! { button type="submit" { "Resume subscription" } })) }
                @if can_cancel {
                    form method="post" action={ "/portal/" (token) } class="action" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="subscription" value=(id);
                        label for={ "reason-" (id) } { "Why are you cancelling?" }
                        select id={ "reason-" (id) } name="reason" required {
                            option value="" { "Choose a reason" }
                            @for (value, text) in CANCEL_REASONS { option value=(value) { (text) } }
                        }
                        @if p.cancel_at_period_end && sub.cancel_at.is_none() {
                            button type="submit" name="action" value="cancel_at_period_end" { "Cancel at the end of the period" }
                        }
                        @if p.cancel { button type="submit" name="action" value="cancel" { "Cancel now" } }
                    }
                }
                @if p.update_authorized_limit {
                    (form("authorized_limit", html! {
                        label for={ "limit-" (id) } { "Authorized limit per charge (" (sub.currency) ", empty for none)" }
                        input type="text" inputmode="decimal" id={ "limit-" (id) } name="amount"
                            value=[sub.authorized_limit.map(|l| crate::money::format_amount(l, &sub.currency))];
                        button type="submit" { "Save limit" }
                    }))
                }
                @if !switch_to.is_empty() {
                    (form("switch_plan", html! {
                        label for={ "plan-" (id) } { "Switch to" }
                        select id={ "plan-" (id) } name="plan" {
                            @for plan in &switch_to {
                                option value=(plan.id) {
                                    (plan.name) " – " (format_money(plan.amount, &plan.currency)) " " (every(&plan.interval()))
                                }
                            }
                        }
                        button type="submit" { "Switch plan" }
                    }))
                }
                @if portal::replaces_cards(p) {
                    (form("replace_card", html! { button type="submit" { "Replace card" } }))
                }
            }
            h3 { "Charge history" }
            @if v.cycles.is_empty() { p { "No charges yet." } } @else {
                // Scrolls sideways on a narrow screen: focusable, so a keyboard can scroll it.
                div class="table" tabindex="0" role="region" aria-label={ "Charge history of " (title) } {
                    table {
                        caption class="visually-hidden" { "Charges of " (title) }
                        thead { tr { th scope="col" { "Period" } th scope="col" { "Amount" } th scope="col" { "Status" } th scope="col" { "Attempts" } } }
                        tbody {
                            @for c in &v.cycles {
                                tr {
                                    td { (date(c.period_start)) }
                                    td { (c.amount) " " (c.currency) }
                                    td { (serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                                    td {
                                        @for t in &c.transactions {
                                            span class="attempt" {
                                                (date(t.created_at)) ": "
                                                (serde_json::to_value(t.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
                                                @if let Some(d) = &t.decline_code { " (" (d) ")" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn submit(State(app): State<App>, Path(token): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(fields) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return message(StatusCode::BAD_REQUEST, "The form could not be read", "Reload the page and try again.");
    };
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let (s, now) = match session(&app, &token).await {
        Ok(Ok(found)) => found,
        Ok(Err(page)) => return page,
        Err(e) => return internal(e),
    };
    if !csrf::verify(&s.csrf_key, get("csrf"), &headers, &app.public_url) {
        return message(StatusCode::FORBIDDEN, "This form has expired", "Reload the page and try again.");
    }
    let Ok(sub_id) = Uuid::parse_str(get("subscription")) else { return not_found() };
    let settings = async {
        let mut conn = app.pool.acquire().await?;
        Ok::<_, Error>(crate::settings::get(&mut conn, s.merchant_id).await?.portal)
    }
    .await;
    let settings = match settings {
        Ok(p) => p,
        Err(e) => return internal(e),
    };
    let not_offered =
        || message(StatusCode::FORBIDDEN, "This action is not available", "The merchant does not offer it here.");
    let to = |path: String| {
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, path)]).into_response();
        super::secure(&mut r, Framing::Nobody, None);
        r
    };
    let action = match get("action") {
        "replace_card" => {
            if !portal::replaces_cards(&settings) {
                return not_offered();
            }
            // A new checkout session: drawn from the merchant's checkout-session bucket.
            let draw = crate::api::limits::merchant_draw(
                &app.limits,
                crate::ratelimit::Bucket::CheckoutSessions,
                s.merchant_id,
            );
            let outcome = app.limits.limiter.check(std::slice::from_ref(&draw)).await;
            if !outcome.allowed() {
                return crate::api::limits::page_refused(&outcome);
            }
            let portal_url = format!("{}/portal/{token}", app.public_url);
            let made = async {
                let mut tx = app.pool.begin().await?;
                let raw = portal::replace_card(&mut tx, &s, &settings, sub_id, portal_url, now).await?;
                tx.commit().await?;
                Ok::<_, Error>(raw)
            }
            .await;
            return match made {
                Ok(raw) => to(format!("/checkout/{raw}")),
                Err(e) => failed(&app, &token, &headers, &s, now, e).await,
            };
        }
        "pause" => Action::Pause {
            resume_on: Some(get("resume_on"))
                .filter(|d| !d.is_empty())
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
        },
        "resume" => Action::Resume,
        "cancel" => Action::Cancel { at_period_end: false, reason: get("reason").to_owned() },
        "cancel_at_period_end" => Action::Cancel { at_period_end: true, reason: get("reason").to_owned() },
        "authorized_limit" => Action::AuthorizedLimit { amount: Some(get("amount").to_owned()) },
        "switch_plan" => match Uuid::parse_str(get("plan")) {
            Ok(plan_id) => Action::SwitchPlan { plan_id },
            Err(_) => return not_offered(),
        },
        _ => return not_offered(),
    };
    if get("action") == "pause" && !get("resume_on").is_empty() && matches!(action, Action::Pause { resume_on: None }) {
        let e = Error::validation("resume_on", "Enter the resume date as a date.");
        return failed(&app, &token, &headers, &s, now, e).await;
    }
    if !action.enabled(&settings) {
        return not_offered();
    }
    let name = action.name();
    let done = async {
        let mut tx = app.pool.begin().await?;
        let jobs = portal::act(&mut tx, &s, &settings, sub_id, action, app.lease_secs, now).await?;
        tx.commit().await?;
        Ok::<_, Error>(jobs)
    }
    .await;
    match done {
        Ok(jobs) => {
            app.enqueue(&jobs).await;
            to(format!("/portal/{token}?done={name}"))
        }
        Err(e) => failed(&app, &token, &headers, &s, now, e).await,
    }
}

/// The portal again with what went wrong (a 4xx), or the error page.
async fn failed(
    app: &App,
    token: &str,
    headers: &HeaderMap,
    s: &CustomerSession,
    now: DateTime<Utc>,
    e: Error,
) -> Response {
    let (status, text) = match e {
        Error::NotFound(_) => return not_found(),
        Error::Validation(errors) | Error::BadRequest { errors, .. } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            errors.into_iter().map(|e| friendly(&e.field, &e.message)).collect::<Vec<_>>().join(" "),
        ),
        Error::Conflict { detail, .. } => (StatusCode::CONFLICT, format!("This cannot be done now: {detail}.")),
        other => return internal(other),
    };
    render(app, token, headers, s, now, status, None, Some(text)).await
}

fn friendly(field: &str, message: &str) -> String {
    match field {
        "authorizedLimit" => format!("The authorized limit {message}."),
        "reason" => "Choose why you are cancelling.".to_owned(),
        "resumeAt" | "resume_on" => "The resume date must be in the future.".to_owned(),
        _ => format!("{field} {message}."),
    }
}
