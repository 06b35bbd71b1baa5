//! Subscriptions: the list (search by customer, filter by status), a subscription with
//! its cycles, attempts and events, and its actions: pause, resume, cancel after a
//! confirmation (`subscriptions::lifecycle`), retry a failed cycle (`billing::retry`),
//! a checkout link (`checkout::create`). A subscription on a test clock is acted on at
//! its clock's time, as the API does (`test_clocks::now_for_subscription`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{PAGE, Posted, Signed, now};
use crate::app::App;
use crate::billing::{cycles, retry};
use crate::checkout::{self, CreateSession};
use crate::error::Error;
use crate::events::{self, EventFilter};
use crate::pages::format_money;
use crate::pages::signed_in::{
    Answer, cursor, data_table, error_page, in_tx, not_found, notice, paged, pager, query, read, redirect, when, wire,
};
use crate::subscriptions::{SubscriptionStatus as S, lifecycle, repo};
use crate::test_clocks;

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dashboard/subscriptions", get(list))
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
