//! Subscriptions: the list (search by customer, filter by status), a subscription with
//! its cycles, attempts and events, and its actions: pause, resume, cancel after a
//! confirmation (`subscriptions::lifecycle`), retry a failed cycle (`billing::retry`),
//! a checkout link (`checkout::create`); and "New subscription", a form that
//! `POST /v1/subscriptions`'s own code creates (`api::subscriptions::create_subscription`). A subscription on a test clock is acted on at
//! its clock's time, as the API does (`test_clocks::now_for_subscription`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{PAGE, Posted, Signed, now};
use crate::api::idempotency::IdempotencyKey;
use crate::app::App;
use crate::billing::{cycles, retry};
use crate::checkout::{self, CreateSession};
use crate::error::{Error, FieldError};
use crate::events::{self, EventFilter};
use crate::pages::format_money;
use crate::pages::signed_in::{
    Answer, Form, alert, cursor, data_table, error_page, in_tx, not_found, notice, paged, pager, query, read, redirect,
    when, wire,
};
use crate::plans::{self, Plan, PlanStatus};
use crate::subscriptions::{CreateSubscription, SubscriptionStatus as S, lifecycle, repo};
use crate::test_clocks::{self, TestClock};

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dashboard/subscriptions", get(list))
        .route("/dashboard/subscriptions/new", get(new_form).post(create))
        .route("/dashboard/subscriptions/{id}", get(show))
        .route("/dashboard/subscriptions/{id}/cancel", get(confirm_cancel).post(cancel))
        .route("/dashboard/subscriptions/{id}/checkout-link", post(checkout_link))
        .route("/dashboard/subscriptions/{id}/{action}", post(act))
        .route("/dashboard/billing-cycles/{id}/retry", post(retry_cycle))
}

/// A path's id; any other text is "not found", as an unknown id.
pub(super) fn id_of(text: &str) -> Result<Uuid, axum::response::Response> {
    Uuid::parse_str(text).map_err(|_| not_found())
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    status: Option<String>,
    customer: Option<String>,
    cursor: Option<String>,
}

const STATUSES: [S; 7] = [S::Pending, S::Trialing, S::Active, S::PastDue, S::Paused, S::Cancelled, S::Completed];

async fn list(State(app): State<App>, s: Signed, Query(q): Query<ListQuery>) -> Answer {
    let now = now(&app).await?;
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let status_filter = status
        .map(|s| {
            serde_json::from_value::<S>(json!(s))
                .map_err(|_| error_page(Error::validation("status", "is not a subscription status")))
        })
        .transpose()?;
    let customer = q.customer.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let f = repo::SubscriptionFilter {
        status: status_filter,
        customer_account_id: customer.map(str::to_owned),
        plan_id: None,
        after: cursor(q.cursor.as_deref(), "cursor")?,
        limit: PAGE as i64 + 1,
    };
    let merchant_id = s.m.id;
    let rows = read(&app, async |conn| repo::list(conn, merchant_id, &f).await).await?;
    let (rows, next) = paged(rows, PAGE, |s| s.id.to_string());
    let main = html! {
        h1 { "Subscriptions" }
        p { a class="button-link" href="/dashboard/subscriptions/new" { "New subscription" } }
        form method="get" action="/dashboard/subscriptions" class="filters" role="search" {
            div class="field" {
                label for="customer" { "Customer account id" }
                input type="text" id="customer" name="customer" value=[customer];
            }
            div class="field" {
                label for="status" { "Status" }
                select id="status" name="status" {
                    option value="" { "Any" }
                    @for st in STATUSES {
                        option value=(st.as_str()) selected[status == Some(st.as_str())] { (st.as_str()) }
                    }
                }
            }
            button type="submit" { "Search" }
        }
        (table(&rows, now, "Subscriptions", "No subscription matches."))
        (pager("/dashboard/subscriptions", &[("customer", customer), ("status", status)], "cursor", next.as_deref()))
    };
    Ok(s.page(StatusCode::OK, "Subscriptions", "/dashboard/subscriptions", main))
}

/// A table of subscriptions, each linked to its page (the list, a test clock's page).
pub(super) fn table(
    rows: &[crate::subscriptions::Subscription],
    now: DateTime<Utc>,
    label: &str,
    none: &str,
) -> Markup {
    html! {
        @if rows.is_empty() { p { (none) } } @else {
            (data_table(label, None, &["Customer", "Description", "Status", "Price", "Next charge", "Created"], html! {
                @for s in rows {
                    tr {
                        td { a href={ "/dashboard/subscriptions/" (s.id) } { (s.customer_account_id) } }
                        td { (s.description.as_deref().unwrap_or("")) }
                        td { (s.status.as_str()) }
                        td class="num" { (format_money(s.amount, &s.currency)) }
                        td { @if let Some(t) = s.next_charge_at.filter(|_| !s.status.is_final()) { (when(t, now)) } }
                        td { (when(s.created_at, now)) }
                    }
                }
            }))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct DoneQuery {
    pub done: Option<String>,
}

fn done_notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "Subscription created.",
        "pause" => "The subscription is paused.",
        "resume" => "The subscription is active again.",
        "cancel" => "The subscription is cancelled.",
        "cancel_at_period_end" => "The subscription will end when the current period ends.",
        "retry" => "A new attempt to charge the cycle was started.",
        "settled" => "The gateway had approved the last attempt: it is recorded, nothing was charged again.",
        _ => return None,
    })
}

async fn show(State(app): State<App>, s: Signed, Path(id): Path<String>, Query(q): Query<DoneQuery>) -> Answer {
    let id = id_of(&id)?;
    let merchant_id = s.m.id;
    let (sub, cycle_views, evs, now) = read(&app, async |conn| {
        let sub = repo::get(conn, merchant_id, id).await?;
        let list = cycles::list(conn, id, None, 100).await?;
        let views = cycles::with_transactions(conn, &list).await?;
        let f = EventFilter { object_id: Some(id), limit: 100, ..EventFilter::default() };
        let evs = events::list(conn, merchant_id, &f).await?;
        // Times of a subscription on a test clock are told against its clock.
        let now = test_clocks::now_for_subscription(conn, &app.clock, Some(merchant_id), id).await?;
        Ok((sub, views, evs, now))
    })
    .await?;
    let title = sub.description.clone().unwrap_or_else(|| format!("Subscription of {}", sub.customer_account_id));
    let ctx = &s.ctx;
    let action = |name: &str, text: &str| {
        html! {
            form method="post" action={ "/dashboard/subscriptions/" (id) "/" (name) } {
                (ctx.field())
                button type="submit" { (text) }
            }
        }
    };
    let live = !sub.status.is_final();
    let main = html! {
        p { a href="/dashboard/subscriptions" { "All subscriptions" } }
        h1 { (title) }
        (notice(done_notice(q.done.as_deref())))
        dl {
            dt { "Id" } dd { code { (sub.id) } }
            dt { "Customer" } dd { (sub.customer_account_id) }
            dt { "Status" } dd { (sub.status.as_str()) }
            dt { "Price" } dd { (format_money(sub.amount, &sub.currency)) " every " (sub.interval_count) " " (wire(&sub.interval_unit)) }
            @if let Some(c) = sub.test_clock_id {
                dt { "Test clock" } dd { a href={ "/dashboard/test-clocks/" (c) } { "at " (when(now, now)) } }
            }
            @if let Some(t) = sub.next_charge_at.filter(|_| live) { dt { "Next charge" } dd { (when(t, now)) } }
            @if let (Some(a), Some(b)) = (sub.current_period_start, sub.current_period_end) {
                dt { "Current period" } dd { (when(a, now)) " to " (when(b, now)) }
            }
            @if let Some(t) = sub.cancel_at.filter(|_| live) { dt { "Ends" } dd { (when(t, now)) } }
            @if let Some(t) = sub.resume_at { dt { "Resumes" } dd { (when(t, now)) } }
            @if let Some(r) = &sub.cancellation_reason { dt { "Cancellation reason" } dd { (r) } }
            dt { "Payment method" }
            dd { @match (&sub.payment_method_brand, &sub.payment_method_last4, &sub.payment_method) {
                (Some(b), Some(l), _) => { (b) " ending " (l) }
                (_, _, Some(_)) => { "On file" }
                _ => { "None yet" }
            } }
            dt { "Created" } dd { (when(sub.created_at, now)) }
        }
        @if live {
            h2 { "Actions" }
            div class="actions" {
                @if matches!(sub.status, S::Active | S::PastDue | S::Trialing) { (action("pause", "Pause")) }
                @if sub.status == S::Paused { (action("resume", "Resume")) }
                a class="button-link" href={ "/dashboard/subscriptions/" (id) "/cancel" } { "Cancel…" }
            }
            h2 { "Checkout link" }
            p { @if sub.status == S::Pending { "Send the customer a link to give the first card; the subscription starts when they pay." }
                @else { "Send the customer a link to replace the card on file." } }
            (action("checkout-link", "Create a checkout link"))
        }
        h2 { "Billing cycles" }
        @if cycle_views.is_empty() { p { "No cycle yet." } } @else {
            (data_table("Billing cycles", None, &["Cycle", "Period", "Amount", "Status", "Attempts", "[Action]"], html! {
                @for c in cycle_views.iter().rev() {
                    tr id={ "cycle-" (c.sequence) } {
                        td { (c.sequence) }
                        td { (c.period_start.format("%Y-%m-%d")) " – " (c.period_end.format("%Y-%m-%d")) }
                        td class="num" { (cycle_amount(&c.amount, &c.currency)) }
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
            }))
        }
        h2 { "Events" }
        (event_table(&evs, now, "Events of this subscription"))
        p { a href={ "/dashboard/events" (query(&[("objectId", Some(&id.to_string()))])) } { "Events of this subscription only" } }
    };
    Ok(s.page(StatusCode::OK, &title, "", main))
}

/// A cycle's amount (the API's decimal text) in its currency's format.
fn cycle_amount(amount: &str, currency: &str) -> String {
    amount
        .parse::<rust_decimal::Decimal>()
        .map_or_else(|_| format!("{amount} {currency}"), |a| format_money(a, currency))
}

/// Events with their object, type, actor and data.
pub(super) fn event_table(evs: &[events::Event], now: DateTime<Utc>, label: &str) -> Markup {
    html! {
        @if evs.is_empty() { p { "No events." } } @else {
            (data_table(label, None, &["When", "Object", "Event", "Actor", "Data"], html! {
                @for e in evs {
                    tr {
                        td { (when(e.created_at, now)) }
                        td { (e.object_type) }
                        td { (e.kind) }
                        td class="actor" { (wire(&e.actor)) }
                        td { code { (e.data.to_string()) } }
                    }
                }
            }))
        }
    }
}

/// "Cancel…": a page that asks before cancelling, now or at the period's end.
async fn confirm_cancel(State(app): State<App>, s: Signed, Path(id): Path<String>) -> Answer {
    let id = id_of(&id)?;
    let merchant_id = s.m.id;
    let sub = read(&app, async |conn| repo::get(conn, merchant_id, id).await).await?;
    let main = super::confirmation(
        &s.ctx,
        "Cancel this subscription?",
        html! {
            p { "The subscription of " strong { (sub.customer_account_id) } " (" (format_money(sub.amount, &sub.currency)) ") is " (sub.status.as_str()) "." }
            p { "Cancelling now stops every future charge at once. Cancelling at the end of the period lets the customer keep what they paid for." }
        },
        &format!("/dashboard/subscriptions/{id}/cancel"),
        html! {
            button type="submit" name="when" value="period_end" class="danger" { "Yes, cancel at the end of the period" }
            button type="submit" name="when" value="now" class="danger primary" { "Yes, cancel now" }
        },
        (&format!("/dashboard/subscriptions/{id}"), "No, keep the subscription"),
    );
    Ok(s.page(StatusCode::OK, "Cancel the subscription", "", main))
}

async fn cancel(app: State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    act(app, Path((id, "cancel".to_owned())), p).await
}

/// Pause, resume, cancel: the API's lifecycle functions, as the merchant, at the
/// subscription's time (its test clock's, if it follows one).
async fn act(State(app): State<App>, Path((id, action)): Path<(String, String)>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    let done = match action.as_str() {
        "pause" | "resume" => action.clone(),
        "cancel" => {
            // Cancelling is only done from its confirmation page.
            if p.form.get("confirm") != "yes" {
                return Ok(redirect(&format!("/dashboard/subscriptions/{id}/cancel")));
            }
            if p.form.get("when") == "now" { "cancel".into() } else { "cancel_at_period_end".into() }
        }
        _ => return Err(not_found()),
    };
    let merchant_id = p.m.id;
    let c = in_tx(&app, async |tx| {
        let now = test_clocks::now_for_subscription(tx, &app.clock, Some(merchant_id), id).await?;
        Ok(match done.as_str() {
            "pause" => lifecycle::pause(tx, merchant_id, id, None, now).await?,
            "resume" => {
                let c = lifecycle::resume(tx, merchant_id, id, now).await?;
                if !c.jobs.is_empty() {
                    crate::lease::stamp_subscription(tx, id, app.lease_secs).await?;
                }
                c
            }
            _ => lifecycle::cancel(tx, merchant_id, id, done == "cancel_at_period_end", now).await?,
        })
    })
    .await
    .map_err(error_page)?;
    app.enqueue(&c.jobs).await;
    Ok(redirect(&format!("/dashboard/subscriptions/{id}?done={done}")))
}

/// "Retry now" on a failed or errored cycle: `POST /v1/billing-cycles/{id}/retry`'s
/// domain functions, the gateway asked first about an errored attempt.
async fn retry_cycle(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    let m = &p.m;
    let reconciled =
        read(&app, async |conn| retry::reconcile_first(conn, &app.gateway, m.merchant_key, m.id, id).await).await?;
    let (cycle, job) = in_tx(&app, async |tx| {
        let now = test_clocks::now_for_cycle(tx, &app.clock, m.id, id).await?;
        retry::manual_or_settle(tx, m.id, id, reconciled.as_ref(), app.lease_secs, now).await
    })
    .await
    .map_err(error_page)?;
    let done = if job.is_some() { "retry" } else { "settled" };
    app.enqueue(&job.into_iter().collect::<Vec<_>>()).await;
    Ok(redirect(&format!("/dashboard/subscriptions/{}?done={done}", cycle.subscription_id)))
}

/// A checkout session for the subscription, as `POST /v1/checkout-sessions`: the
/// link is shown on this answer only (its token is not stored).
async fn checkout_link(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    let now = now(&app).await?;
    let merchant_id = p.m.id;
    let (session, token) = in_tx(&app, async |tx| {
        let req = serde_json::from_value::<CreateSession>(json!({"subscriptionId": id}))
            .map_err(|e| Error::Internal(e.into()))?
            .validate()?;
        checkout::create(tx, merchant_id, req, now).await.map_err(|e| match e {
            // The API names the field; here the subscription is the page's own.
            Error::Validation(_) => Error::NotFound("subscription"),
            other => other,
        })
    })
    .await
    .map_err(error_page)?;
    let url = format!("{}/checkout/{token}", app.public_url);
    let main = html! {
        p { a href={ "/dashboard/subscriptions/" (id) } { "Back to the subscription" } }
        h1 { "Checkout link" }
        div class="notice" role="status" {
            p { "Send this link to the customer. It is shown only now, and works until " (when(session.expires_at, now)) "." }
            p class="secret" id="checkout-url" { (url) }
        }
    };
    let (s, _) = p.signed();
    Ok(s.page(StatusCode::CREATED, "Checkout link", "", main))
}

// ---- a new subscription ------------------------------------------------------------

/// The route a form's idempotency key is claimed for (`idempotency_keys.path`).
const NEW_ROUTE: &str = "POST /dashboard/subscriptions/new";

/// A fresh random value for a rendered form: its submissions share one idempotency
/// key, so submitting it twice creates one subscription.
fn form_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The idempotency key of a posted form, from its hidden `form_key` (32 hex digits).
fn idempotency_key(form: &Form) -> Option<IdempotencyKey> {
    let k = form.get("form_key");
    (k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| IdempotencyKey(Some(format!("dashboard-new-subscription-{k}"))))
}

/// Rows read at a time for the form's choices.
const CHOICES: i64 = 200;

/// The merchant's active plans (the form's choices) and, for a sandbox merchant, its
/// test clocks: every one, read `CHOICES` at a time after the last id.
async fn choices(app: &App, s: &Signed) -> Result<(Vec<Plan>, Vec<TestClock>), axum::response::Response> {
    let (merchant_id, sandbox) = (s.m.id, s.m.sandbox);
    read(app, async |conn| {
        let (mut plans, mut more): (Vec<Plan>, _) = (Vec::new(), true);
        while more {
            let after = plans.last().map(|p| p.id);
            let f = plans::repo::PlanFilter { status: Some(PlanStatus::Active), tag: None, after, limit: CHOICES };
            let rows = plans::repo::list(conn, merchant_id, &f).await?;
            more = rows.len() as i64 == CHOICES;
            plans.extend(rows);
        }
        let (mut clocks, mut more): (Vec<TestClock>, _) = (Vec::new(), sandbox);
        while more {
            let after = clocks.last().map(|c| c.id);
            let rows = test_clocks::list(conn, merchant_id, after, CHOICES).await?;
            more = rows.len() as i64 == CHOICES;
            clocks.extend(rows);
        }
        Ok((plans, clocks))
    })
    .await
}

async fn new_form(State(app): State<App>, s: Signed) -> Answer {
    render_new(&app, &s, StatusCode::OK, None, None).await
}

/// The "New subscription" form; after a refusal, with its problem and what was typed
/// (`form`, whose key it keeps unless `fresh_key`).
async fn render_new(
    app: &App,
    s: &Signed,
    code: StatusCode,
    problem: Option<&str>,
    form: Option<(&Form, bool)>,
) -> Answer {
    let (plans, clocks) = choices(app, s).await?;
    let filled = |name: &str| form.and_then(|(f, _)| f.opt(name)).map(str::to_owned);
    let key = match form {
        Some((f, false)) if idempotency_key(f).is_some() => f.get("form_key").to_owned(),
        _ => form_key(),
    };
    let chosen_plan = filled("plan_id");
    let chosen_clock = filled("test_clock_id");
    let main = html! {
        p { a href="/dashboard/subscriptions" { "All subscriptions" } }
        h1 { "New subscription" }
        (alert(problem))
        @if plans.is_empty() {
            p { "A subscription needs an active plan: " a href="/dashboard/plans#new" { "create a plan" } " and activate it first." }
        } @else {
            form method="post" action="/dashboard/subscriptions/new" {
                (s.ctx.field())
                input type="hidden" name="form_key" value=(key);
                div class="field" {
                    label for="n-customer" { "Customer account id" }
                    span class="hint" id="n-customer-hint" { "Your own id for the customer." }
                    input type="text" id="n-customer" name="customer_account_id" required spellcheck="false"
                        aria-describedby="n-customer-hint" value=[filled("customer_account_id")];
                }
                div class="field" {
                    label for="n-email" { "Customer email (optional)" }
                    input type="email" id="n-email" name="email" autocomplete="off" value=[filled("email")];
                }
                div class="field" {
                    label for="n-plan" { "Plan" }
                    select id="n-plan" name="plan_id" required {
                        @for p in &plans {
                            option value=(p.id) selected[chosen_plan.as_deref() == Some(p.id.to_string().as_str())] {
                                (p.name) " – " (format_money(p.amount, &p.currency)) " every " (p.interval_count) " " (wire(&p.interval_unit))
                            }
                        }
                    }
                }
                div class="field" {
                    label for="n-pm" { "Payment method token (optional)" }
                    span class="hint" id="n-pm-hint" {
                        "A card token from your gateway. Without one the subscription waits for a card: create a checkout link from its page and send it to the customer."
                    }
                    input type="text" id="n-pm" name="payment_method" spellcheck="false" autocomplete="off"
                        aria-describedby="n-pm-hint" value=[filled("payment_method")];
                }
                @if s.m.sandbox {
                    div class="field" {
                        label for="n-clock" { "Test clock" }
                        span class="hint" id="n-clock-hint" { "The subscription follows the clock's time instead of the real one." }
                        select id="n-clock" name="test_clock_id" aria-describedby="n-clock-hint" {
                            option value="" { "None" }
                            @for c in &clocks {
                                option value=(c.id) selected[chosen_clock.as_deref() == Some(c.id.to_string().as_str())] {
                                    (c.name.clone().unwrap_or_else(|| format!("Clock {}", &c.id.to_string()[..8])))
                                }
                            }
                        }
                    }
                }
                button type="submit" class="primary" { "Create subscription" }
            }
        }
    };
    Ok(s.page(code, "New subscription", "/dashboard/subscriptions", main))
}

/// The form as the API's `CreateSubscription` and the body it stands for (hashed
/// with the idempotency key): the customer's account id is required here.
fn subscription_request(form: &Form, sandbox: bool) -> Result<(CreateSubscription, Vec<u8>), Error> {
    let mut e = Vec::new();
    let account = form.opt("customer_account_id");
    if account.is_none() {
        e.push(FieldError::new("customer.customerAccountId", "is required"));
    }
    let id = |field: &str, name: &str, missing: Option<&str>| -> Result<Option<Uuid>, FieldError> {
        match form.opt(name) {
            None => missing.map_or(Ok(None), |m| Err(FieldError::new(field, m))),
            Some(t) => Uuid::parse_str(t).map(Some).map_err(|_| FieldError::new(field, "is not one of the choices")),
        }
    };
    let plan = id("planId", "plan_id", Some("is required")).unwrap_or_else(|f| {
        e.push(f);
        None
    });
    let clock = if sandbox {
        id("testClockId", "test_clock_id", None).unwrap_or_else(|f| {
            e.push(f);
            None
        })
    } else {
        None
    };
    if !e.is_empty() {
        return Err(Error::Validation(e));
    }
    let body = json!({
        "customer": {"customerAccountId": account, "email": form.opt("email")},
        "planId": plan,
        "paymentMethod": form.opt("payment_method"),
        "testClockId": clock,
    });
    let req = serde_json::from_value::<CreateSubscription>(body.clone())
        .map_err(|e| Error::validation("subscription", e.to_string()))?;
    Ok((req, serde_json::to_vec(&body).map_err(|e| Error::Internal(e.into()))?))
}

/// "Create subscription": exactly what `POST /v1/subscriptions` does
/// (`api::subscriptions::create_subscription`: one transaction, one `created` event
/// with actor `merchant`, the first charge enqueued after commit), guarded by the
/// form's idempotency key: the same form submitted twice answers the same subscription.
async fn create(State(app): State<App>, p: Posted) -> Answer {
    let Some(key) = idempotency_key(&p.form) else { return Err(crate::pages::signed_in::expired_form()) };
    let made = async {
        let (req, body) = subscription_request(&p.form, p.m.sandbox)?;
        crate::api::subscriptions::create_subscription(&app, &p.m, key, NEW_ROUTE, &body, req).await
    }
    .await;
    let (code, text, fresh_key) = match made {
        Ok(a) => {
            let id = a.body.get("id").and_then(|v| v.as_str()).and_then(|v| Uuid::parse_str(v).ok());
            let Some(id) = id else {
                return Err(error_page(Error::Internal(anyhow::anyhow!("a created subscription without its id"))));
            };
            return Ok(redirect(&format!("/dashboard/subscriptions/{id}?done=created")));
        }
        // The form's key was used with other values (the form submitted, then changed).
        Err(Error::IdempotencyMismatch) => (
            StatusCode::CONFLICT,
            "This form already created a subscription with other values: check the subscriptions list before submitting again.".to_owned(),
            true,
        ),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, crate::pages::signed_in::form_problem(e).map_err(error_page)?, false),
    };
    let (s, form) = p.signed();
    render_new(&app, &s, code, Some(&text), Some((&form, fresh_key))).await
}
