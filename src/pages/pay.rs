//! `/pay/<token>` (docs/payment-links.md#the-page): a billing cycle's payment link.
//! The amount due, the merchant, the period and the checkout's card form; paying opens
//! a `payment_link` attempt through `crate::paylinks` and the engine charges it. The
//! page then follows the cycle: processing, paid ("already paid" for anyone who opens
//! the link afterwards), declined (the form again), expired (410).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::checkout::{CardFormArgs, card_form};
use super::csrf::{self, SameSite};
use super::{Framing, format_money, layout, message};
use crate::app::App;
use crate::billing::retry;
use crate::cards::{self, CardForm};
use crate::error::{Error, FieldError};
use crate::gateway::{ChargeOutcome, Gateway, TokenizeError};
use crate::paylinks::{self, Due, Link, PayState};

fn internal(e: Error) -> Response {
    tracing::error!(error = crate::error::chain(&e), "payment link page failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "We could not load this page. Please try again in a moment.",
    )
}

fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Link not found",
        "This payment link does not exist. Check that you copied the whole address.",
    )
}

async fn load(app: &App, token: &str) -> Result<Option<(Link, Due, PayState)>, Error> {
    // The deployment's clock is read before a connection is held (the manual clock
    // reads Postgres itself); a test clock's time is read on the snapshot.
    let deployment_now = app.clock.now().await?;
    let mut conn = crate::db::snapshot(&app.pool).await?;
    let Some(link) = paylinks::by_token(&mut conn, token).await? else { return Ok(None) };
    let now =
        paylinks::frozen_time(&mut conn, link.merchant_id, link.billing_cycle_id).await?.unwrap_or(deployment_now);
    let (due, state) = paylinks::state(&mut conn, &link, now).await?;
    Ok(Some((link, due, state)))
}

pub async fn show(State(app): State<App>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    match load(&app, &token).await {
        Ok(Some((link, due, state))) => render(&token, &headers, &link, &due, state, Form::default()),
        Ok(None) => not_found(),
        Err(e) => internal(e),
    }
}

/// The last submission, shown back with the form.
#[derive(Default)]
struct Form {
    errors: Vec<FieldError>,
    holder: String,
    unavailable: bool,
    /// Why the payment could not be opened (another payment won the race).
    conflict: Option<String>,
}

fn period(due: &Due) -> String {
    format!("{} – {}", due.period_start.format("%-d %B %Y"), due.period_end.format("%-d %B %Y"))
}

fn render(token: &str, headers: &HeaderMap, link: &Link, due: &Due, state: PayState, form: Form) -> Response {
    let amount = format_money(due.amount, &due.currency);
    match state {
        PayState::Paid => {
            let body = layout(
                &format!("Paid – {}", due.merchant_name),
                html! {
                    h1 { (due.merchant_name) }
                    div role="status" {
                        h2 { "Already paid" }
                        p { (amount) " for " (period(due)) " has been paid. Thank you." }
                    }
                },
                &[],
            );
            super::html(StatusCode::OK, body, Framing::Nobody, None)
        }
        PayState::Expired => message(
            StatusCode::GONE,
            "This payment link has expired",
            &format!("Ask {} for a new payment link.", due.merchant_name),
        ),
        PayState::Closed => message(
            StatusCode::GONE,
            "This payment link is no longer valid",
            &format!("The subscription it was for has ended. Contact {}.", due.merchant_name),
        ),
        PayState::Processing => {
            let body = layout(
                &format!("Processing – {}", due.merchant_name),
                html! {
                    (super::layout::refresh_without_js(2))
                    h1 { (due.merchant_name) }
                    @if let Some(c) = &form.conflict {
                        div class="alert" role="alert" { p { (c) } }
                    }
                    div role="status" data-poll={ "/pay/" (token) "/status" } {
                        h2 { "Processing your payment…" }
                        p { "This takes a few seconds. Please keep this page open." }
                    }
                },
                &["/assets/checkout.js"],
            );
            let status = if form.conflict.is_some() { StatusCode::CONFLICT } else { StatusCode::OK };
            super::html(status, body, Framing::Nobody, None)
        }
        PayState::Payable { declined } => {
            let (nonce, fresh) = csrf::nonce(headers);
            let csrf_token = csrf::token(&link.csrf_key, &nonce);
            let status = if form.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
            let body = layout(
                &format!("Pay {}", due.merchant_name),
                html! {
                    h1 { (due.merchant_name) }
                    section class="summary" aria-labelledby="summary-title" {
                        h2 id="summary-title" class="visually-hidden" { "Amount due" }
                        @if let Some(d) = &due.description { p class="description" { (d) } }
                        p class="price" { "Amount due: " strong { (amount) } }
                        p { "Period: " (period(due)) }
                        p { "Pay by " (link.expires_at.format("%-d %B %Y, %H:%M UTC")) }
                    }
                    (card_form(CardFormArgs {
                        action: &format!("/pay/{token}"),
                        csrf: &csrf_token,
                        errors: &form.errors,
                        holder: &form.holder,
                        declined: declined.as_deref(),
                        unavailable: form.unavailable,
                        submit: &format!("Pay {amount}"),
                        merchant_name: &due.merchant_name,
                    }))
                },
                &["/assets/checkout.js"],
            );
            let mut r = super::html(status, body, Framing::Nobody, None);
            if fresh {
                r.headers_mut().append(header::SET_COOKIE, csrf::set_cookie(&nonce, SameSite::Strict));
            }
            r
        }
    }
}

/// The page's progress for its script: `{state}`.
pub async fn status(State(app): State<App>, Path(token): Path<String>) -> Response {
    let state = load(&app, &token).await.map(|found| {
        found.map(|(_, _, s)| match s {
            PayState::Payable { .. } => "form",
            PayState::Processing => "processing",
            PayState::Paid => "paid",
            PayState::Expired => "expired",
            PayState::Closed => "closed",
        })
    });
    super::poll_answer(state, "payment link")
}

pub async fn submit(State(app): State<App>, Path(token): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(fields) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return message(StatusCode::BAD_REQUEST, "The form could not be read", "Reload the page and try again.");
    };
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let (link, due, state) = match load(&app, &token).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found(),
        Err(e) => return internal(e),
    };
    if !csrf::verify(&link.csrf_key, get("csrf"), &headers, &app.public_url) {
        return message(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "For your security the form could not be accepted. Reload the page and enter your card again.",
        );
    }
    let back = || {
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, format!("/pay/{token}"))]).into_response();
        super::secure(&mut r, Framing::Nobody, None);
        r
    };
    match state {
        PayState::Payable { .. } => {}
        // Another payment of the cycle is in flight (another tab, a merchant's retry):
        // this card is not charged, and the page says so.
        PayState::Processing => {
            let text = "Another payment of this bill is being processed: your card was not charged.".to_owned();
            let mut r =
                render(&token, &headers, &link, &due, state, Form { conflict: Some(text), ..Default::default() });
            *r.status_mut() = StatusCode::CONFLICT;
            return r;
        }
        // Paid or expired meanwhile: the page says which.
        _ => return render(&token, &headers, &link, &due, state, Form::default()),
    }
    let now = match async {
        let deployment_now = app.clock.now().await?;
        let mut conn = app.pool.acquire().await?;
        Ok::<_, Error>(
            paylinks::frozen_time(&mut conn, link.merchant_id, link.billing_cycle_id).await?.unwrap_or(deployment_now),
        )
    }
    .await
    {
        Ok(n) => n,
        Err(e) => return internal(e),
    };
    let form = CardForm { holder: get("name"), number: get("number"), expiry: get("expiry"), cvc: get("cvc") };
    let holder = form.holder.trim().chars().take(200).collect::<String>();
    let card = match cards::check(&form, now.date_naive()) {
        Ok(c) => c,
        Err(errors) => {
            let f = Form { errors, holder, ..Default::default() };
            return render(&token, &headers, &link, &due, state, f);
        }
    };
    let pm = match app.gateway.tokenize(due.merchant_key, &due.customer_account_id, &card).await {
        Ok(pm) => pm,
        Err(TokenizeError::Refused(why)) => {
            let f = Form { errors: vec![FieldError::new("number", why)], holder, ..Default::default() };
            return render(&token, &headers, &link, &due, state, f);
        }
        Err(TokenizeError::Gateway(e)) => {
            tracing::warn!(error = %e, link = %link.id, "tokenizing a card failed");
            let mut r =
                render(&token, &headers, &link, &due, state, Form { holder, unavailable: true, ..Default::default() });
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
    };
    drop(card);
    // An errored attempt of the cycle may have gone through: ask the gateway before
    // anything is charged again (docs/payment-links.md#one-charge-per-cycle).
    let errored_checked = match reconcile(&app, &due).await {
        Ok(Reconciled::Paid) => return back(),
        Ok(Reconciled::Checked(t)) => t,
        Err(()) => {
            let mut r =
                render(&token, &headers, &link, &due, state, Form { holder, unavailable: true, ..Default::default() });
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
    };
    let opened = async {
        let mut tx = app.pool.begin().await?;
        let o = paylinks::open_payment(&mut tx, link.id, &pm, errored_checked, app.lease_secs, now).await?;
        tx.commit().await?;
        Ok::<_, Error>(o)
    }
    .await;
    match opened {
        Ok(o) => {
            app.enqueue(&[o.job]).await;
            back()
        }
        // Another payment of the cycle won (another tab, a merchant's retry, a replay):
        // say so plainly, with the cycle's state now.
        Err(Error::Conflict { detail, .. }) => {
            tracing::info!(link = %link.id, detail, "a link payment was not opened");
            match load(&app, &token).await {
                Ok(Some((link, due, state))) => {
                    let text = match &state {
                        PayState::Paid => "This bill was already paid: your card was not charged.".to_owned(),
                        _ => format!(
                            "Another payment of this bill is being processed: your card was not charged. ({detail})"
                        ),
                    };
                    let mut r = render(
                        &token,
                        &headers,
                        &link,
                        &due,
                        state,
                        Form { conflict: Some(text), ..Default::default() },
                    );
                    *r.status_mut() = StatusCode::CONFLICT;
                    r
                }
                Ok(None) => not_found(),
                Err(e) => internal(e),
            }
        }
        Err(e) => internal(e),
    }
}

enum Reconciled {
    /// The errored attempt went through: recorded, the cycle is paid.
    Paid,
    /// The errored attempt asked about (none: nothing to ask).
    Checked(Option<uuid::Uuid>),
}

async fn reconcile(app: &App, due: &Due) -> Result<Reconciled, ()> {
    let merchant_id = async {
        let mut conn = app.pool.acquire().await?;
        let m = sqlx::query_scalar!("SELECT merchant_id FROM billing_cycles WHERE id = $1", due.cycle_id)
            .fetch_one(&mut *conn)
            .await?;
        let e = retry::errored_attempt(&mut conn, m, due.cycle_id).await?;
        Ok::<_, Error>(e)
    }
    .await;
    let Ok(errored) = merchant_id else { return Err(()) };
    let Some((txn, key)) = errored else { return Ok(Reconciled::Checked(None)) };
    match app.gateway.lookup(due.merchant_key, &key).await {
        Ok(Some(ChargeOutcome::Approved { reference })) => {
            let settled = async {
                let mut tx = app.pool.begin().await?;
                retry::settle_errored(&mut tx, txn, &reference).await?;
                tx.commit().await?;
                Ok::<_, Error>(())
            }
            .await;
            settled.map(|_| Reconciled::Paid).map_err(|_| ())
        }
        Ok(_) => Ok(Reconciled::Checked(Some(txn))),
        Err(_) => Err(()),
    }
}
