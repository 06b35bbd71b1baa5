//! Payment series: the list, a series with its payments and events, and cancelling it
//! after a confirmation (`series::cancel`, as `POST /v1/payment-series/{id}/cancel`:
//! one `status_changed` event).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::html;
use serde::Deserialize;

use super::subscriptions::{event_table, id_of};
use super::{PAGE, Posted, Signed, now};
use crate::app::App;
use crate::events::{self, EventFilter};
use crate::pages::format_money;
use crate::pages::signed_in::{
    Answer, cursor, data_table, error_page, in_tx, notice, paged, pager, read, redirect, when, wire,
};
use crate::series::{self, SeriesStatus};

pub fn router() -> axum::Router<App> {
    use axum::routing::get;
    axum::Router::new()
        .route("/dashboard/series", get(list))
        .route("/dashboard/series/{id}", get(show))
        .route("/dashboard/series/{id}/cancel", get(confirm_cancel).post(cancel))
}

#[derive(Debug, Default, Deserialize)]
struct CursorQuery {
    cursor: Option<String>,
    done: Option<String>,
}

async fn list(State(app): State<App>, s: Signed, Query(q): Query<CursorQuery>) -> Answer {
    let now = now(&app).await?;
    let after = cursor(q.cursor.as_deref(), "cursor")?;
    let merchant_id = s.m.id;
    let rows = read(&app, async |conn| series::list(conn, merchant_id, after, PAGE as i64 + 1).await).await?;
    let (rows, next) = paged(rows, PAGE, |s| s.id.to_string());
    let main = html! {
        h1 { "Payment series" }
        @if rows.is_empty() { p { "No payment series yet." } } @else {
            (data_table("Payment series", None, &["Description", "Customer", "Currency", "Status", "Created"], html! {
                @for s in &rows {
                    tr {
                        td { a href={ "/dashboard/series/" (s.id) } { (s.description.as_deref().unwrap_or("Payment series")) } }
                        td { (s.customer_account_id) }
                        td { (s.currency) } td class="status" { (s.status.as_str()) } td { (when(s.created_at, now)) }
                    }
                }
            }))
        }
        (pager("/dashboard/series", &[], "cursor", next.as_deref()))
    };
    Ok(s.page(StatusCode::OK, "Payment series", "/dashboard/series", main))
}

/// A series: its card and status, its payments (paged), its events; cancel it.
async fn show(State(app): State<App>, s: Signed, Path(id): Path<String>, Query(q): Query<CursorQuery>) -> Answer {
    let id = id_of(&id)?;
    let now = now(&app).await?;
    let after = cursor(q.cursor.as_deref(), "cursor")?;
    let merchant_id = s.m.id;
    let (series, payments, evs) = read(&app, async |conn| {
        let series = series::get(conn, merchant_id, id).await?;
        let payments = crate::series::payments(conn, merchant_id, id, after, PAGE as i64 + 1).await?;
        let f = EventFilter { object_id: Some(id), limit: 100, ..EventFilter::default() };
        Ok((series, payments, events::list(conn, merchant_id, &f).await?))
    })
    .await?;
    let (payments, next) = paged(payments, PAGE, |t| t.id.to_string());
    let title =
        series.description.clone().unwrap_or_else(|| format!("Payment series of {}", series.customer_account_id));
    let cancelled = (q.done.as_deref() == Some("cancelled")).then_some("The payment series is cancelled.");
    let main = html! {
        p { a href="/dashboard/series" { "All payment series" } }
        h1 { (title) }
        (notice(cancelled))
        dl {
            dt { "Id" } dd { code { (series.id) } }
            dt { "Customer" } dd { (series.customer_account_id) }
            dt { "Status" } dd id="series-status" { (series.status.as_str()) }
            dt { "Currency" } dd { (series.currency) }
            dt { "Payment method" } dd { code { (series.payment_method) } }
            @if let Some(r) = &series.partner_reference { dt { "Your reference" } dd { (r) } }
            dt { "Created" } dd { (when(series.created_at, now)) }
        }
        @if series.status != SeriesStatus::Cancelled {
            div class="actions" { a class="button-link" href={ "/dashboard/series/" (id) "/cancel" } { "Cancel…" } }
        }
        h2 { "Payments" }
        @if payments.is_empty() { p { "No payment yet." } } @else {
            (data_table("Payments", Some("payments"), &["When", "Amount", "Status", "Description", "Your reference"], html! {
                @for t in &payments {
                    tr {
                        td { (when(t.created_at, now)) }
                        td class="num" { (format_money(t.amount, &t.currency)) }
                        td class="status" { (wire(&t.status)) @if let Some(d) = &t.decline_code { " (" (d) ")" } }
                        td { (t.description.as_deref().unwrap_or("")) }
                        td { (t.partner_reference.as_deref().unwrap_or("")) }
                    }
                }
            }))
        }
        (pager(&format!("/dashboard/series/{id}"), &[], "cursor", next.as_deref()))
        h2 { "Events" }
        (event_table(&evs, now, "Events of this payment series"))
    };
    Ok(s.page(StatusCode::OK, &title, "", main))
}

async fn confirm_cancel(State(app): State<App>, s: Signed, Path(id): Path<String>) -> Answer {
    let id = id_of(&id)?;
    let merchant_id = s.m.id;
    let series = read(&app, async |conn| series::get(conn, merchant_id, id).await).await?;
    let main = super::confirmation(
        &s.ctx,
        "Cancel this payment series?",
        html! {
            p { "The payment series of " strong { (series.customer_account_id) } " (" (series.currency) ") is " (series.status.as_str()) "." }
            p { "Once cancelled, no payment can be charged under it again. Payments already made stay as they are." }
        },
        &format!("/dashboard/series/{id}/cancel"),
        html! { button type="submit" class="danger primary" { "Yes, cancel the payment series" } },
        (&format!("/dashboard/series/{id}"), "No, keep the payment series"),
    );
    Ok(s.page(StatusCode::OK, "Cancel the payment series", "", main))
}

/// `series::cancel` in one transaction, only from the confirmation page.
async fn cancel(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    if p.form.get("confirm") != "yes" {
        return Ok(redirect(&format!("/dashboard/series/{id}/cancel")));
    }
    let merchant_id = p.m.id;
    in_tx(&app, async |tx| series::cancel(tx, merchant_id, id).await.map(|_| ())).await.map_err(error_page)?;
    Ok(redirect(&format!("/dashboard/series/{id}?done=cancelled")))
}
