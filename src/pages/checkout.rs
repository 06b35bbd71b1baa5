//! `/checkout/<token>` (docs/pages.md#the-checkout): the card form, the first charge's
//! progress, and the complete, expired, used and locked states. The handlers only
//! read the request and render: every change goes through `crate::checkout`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::csrf::{self, SameSite};
use super::{Framing, format_money, layout, message, origin_of};
use crate::app::App;
use crate::cards::{self, Brand, CardForm, Kept};
use crate::checkout::{self, Progress, Session, Summary};
use crate::error::{Error, FieldError};
use crate::gateway::{Gateway, TokenizeError};

/// What a form page shows besides the session: errors of the last submission, the
/// name typed (never the card), the decline of the last card.
#[derive(Default)]
struct FormState {
    errors: Vec<FieldError>,
    holder: String,
    declined: Option<String>,
    /// The gateway could not be reached: nothing was counted, try again.
    unavailable: bool,
}

/// The page for a failure no customer can act on; the cause is logged.
fn internal(e: Error) -> Response {
    tracing::error!(error = crate::error::chain(&e), "checkout page failed");
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

fn gone(title: &str, text: &str) -> Response {
    message(StatusCode::GONE, title, text)
}

fn locked() -> Response {
    gone(
        "This payment link is locked",
        "Too many cards were refused on this page, so it no longer accepts cards. \
         Ask the merchant for a new payment link.",
    )
}

/// Everything a checkout page needs, read once.
struct Loaded {
    session: Session,
    progress: Progress,
    summary: Summary,
    merchant_key: uuid::Uuid,
    allowed_origins: Vec<String>,
}

async fn load(app: &App, token: &str) -> Result<Option<Loaded>, Error> {
    let now = app.clock.now().await?;
    let mut tx = app.pool.begin().await?;
    let Some(found) = checkout::by_token(&mut tx, token).await? else { return Ok(None) };
    let (session, progress) = checkout::progress(&mut tx, found.id, now).await?;
    tx.commit().await?;
    let mut conn = app.pool.acquire().await?;
    let summary = checkout::summary(&mut conn, &session, now).await?;
    let merchant_key = sqlx::query_scalar!("SELECT merchant_key FROM merchants WHERE id = $1", session.merchant_id)
        .fetch_one(&mut *conn)
        .await?;
    let allowed_origins = crate::settings::get(&mut conn, session.merchant_id).await?.allowed_origins;
    Ok(Some(Loaded { session, progress, summary, merchant_key, allowed_origins }))
}

pub async fn show(State(app): State<App>, Path(token): Path<String>, headers: HeaderMap) -> Response {
    let l = match load(&app, &token).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found(),
        Err(e) => return internal(e),
    };
    let now = match app.clock.now().await {
        Ok(n) => n,
        Err(e) => return internal(e),
    };
    render(&token, &headers, l, FormState::default(), now)
}

/// The page of a loaded session in its state.
fn render(token: &str, headers: &HeaderMap, l: Loaded, form: FormState, now: DateTime<Utc>) -> Response {
    match &l.progress {
        Progress::Expired => gone("This payment link has expired", "Ask the merchant for a new payment link."),
        Progress::Locked => locked(),
        Progress::Complete => {
            let recent = l.session.completed_at.is_some_and(|t| t + checkout::SHOW_COMPLETE_FOR > now);
            if !recent {
                return gone("This payment link has already been used", "The card was saved. You can close this page.");
            }
            match l.session.return_to() {
                // Outside a frame the customer goes back to the merchant at once.
                Some(to) if !super::framed(headers) => {
                    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
                    super::secure(&mut r, Framing::Origins(&l.allowed_origins), None);
                    r
                }
                _ => complete_page(&l),
            }
        }
        Progress::Processing => processing_page(token, &l),
        Progress::Closed => gone(
            "This payment link is no longer valid",
            "The subscription it was for has ended. Ask the merchant for a new payment link.",
        ),
        Progress::Failed { declined } => {
            let text = format!(
                "{} The subscription could not be started: please contact {}.",
                decline_text(declined).trim_end_matches(" Try another card."),
                l.summary.merchant_name
            );
            message(StatusCode::OK, "Payment declined", &text)
        }
        Progress::Form { declined } => {
            let form = FormState { declined: form.declined.or(declined.clone()), ..form };
            form_page(token, headers, &l, form)
        }
    }
}

fn what_is_bought(s: &Summary) -> Markup {
    html! {
        section class="summary" aria-labelledby="summary-title" {
            h2 id="summary-title" class="visually-hidden" { "Order summary" }
            @if let Some(d) = &s.description { p class="description" { (d) } }
            @if let (Some((amount, currency)), Some(interval)) = (&s.amount, &s.interval) {
                p class="price" {
                    strong { (format_money(*amount, currency)) } " " (every(interval))
                }
            }
            @if let Some(days) = s.trial_days { p { (days) "-day free trial" } }
            @if let Some(at) = s.first_charge_at {
                p { "First charge: " (at.format("%-d %B %Y")) }
            }
            @if let Some(card) = &s.current_card {
                p { "Card on file: " (card_label(card)) ". The card you enter replaces it." }
            }
        }
    }
}

pub(crate) fn every(i: &crate::billing::calendar::Interval) -> String {
    use crate::billing::calendar::IntervalUnit::*;
    let unit = match i.unit {
        Day => "day",
        Week => "week",
        Month => "month",
        Year => "year",
    };
    if i.count == 1 { format!("every {unit}") } else { format!("every {} {unit}s", i.count) }
}

pub fn card_label(c: &Kept) -> String {
    let brand = match Brand::parse(&c.brand) {
        Some(b) => b.label(),
        None => c.brand.as_str(),
    };
    format!("{brand} ending in {} (expires {:02}/{})", c.last4, c.exp_month, c.exp_year % 100)
}

pub(crate) fn decline_text(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "Your card was declined: insufficient funds. Try another card.",
        "expired_card" => "Your card was declined: it has expired. Try another card.",
        "stolen_card" | "invalid_account" => "Your card was declined. Try another card.",
        "do_not_honor" => "Your bank declined the payment. Try another card, or contact your bank.",
        _ => "Your card was declined. Try another card.",
    }
}

fn submit_label(s: &Summary) -> String {
    match (&s.amount, s.first_charge_at, s.trial_days) {
        (_, Some(_), Some(_)) => "Start trial".to_owned(),
        (Some((amount, currency)), Some(_), None) => format!("Pay {}", format_money(*amount, currency)),
        _ => "Save card".to_owned(),
    }
}

fn form_page(token: &str, headers: &HeaderMap, l: &Loaded, form: FormState) -> Response {
    let (nonce, fresh) = csrf::nonce(headers);
    let csrf_token = csrf::token(&l.session.csrf_key, &nonce);
    let s = &l.summary;
    let status = if form.errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    let body = layout(
        &format!("Pay {}", s.merchant_name),
        html! {
            h1 { (s.merchant_name) }
            (what_is_bought(s))
            (card_form(CardFormArgs {
                action: &format!("/checkout/{token}"),
                csrf: &csrf_token,
                errors: &form.errors,
                holder: &form.holder,
                declined: form.declined.as_deref(),
                unavailable: form.unavailable,
                submit: &submit_label(s),
                merchant_name: &s.merchant_name,
            }))
        },
        &["/assets/checkout.js"],
    );
    let form_to = l.session.return_url.as_deref().and_then(origin_of);
    let mut r = super::html(status, body, Framing::Origins(&l.allowed_origins), form_to.as_deref());
    if fresh {
        r.headers_mut().append(header::SET_COOKIE, csrf::set_cookie(&nonce, SameSite::None));
    }
    r
}

/// What the card form shows besides its fields.
pub(crate) struct CardFormArgs<'a> {
    /// Where the form posts (the page itself).
    pub action: &'a str,
    pub csrf: &'a str,
    /// Errors of the last submission, each linked from the summary.
    pub errors: &'a [FieldError],
    /// The name typed last (never the card's fields).
    pub holder: &'a str,
    /// The decline code of the last card.
    pub declined: Option<&'a str>,
    /// The gateway could not be reached: nothing was counted, try again.
    pub unavailable: bool,
    pub submit: &'a str,
    pub merchant_name: &'a str,
}

/// The card form of every page that takes a card (the checkout, payment links):
/// name, number, expiry, security code, the error summary and the decline.
pub(crate) fn card_form(a: CardFormArgs<'_>) -> Markup {
    let error_of = |field: &str| a.errors.iter().find(|e| e.field == field).map(|e| e.message.clone());
    let field = |id: &str, label: &str, hint: Option<&str>, input: Input<'_>| {
        let error = error_of(id);
        let described = [hint.map(|_| format!("{id}-hint")), error.as_ref().map(|_| format!("{id}-error"))]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        let described = (!described.is_empty()).then_some(described);
        html! {
            div class={ "field" @if error.is_some() { " invalid" } } {
                label for=(id) { (label) }
                @if let Some(h) = hint { span class="hint" id={ (id) "-hint" } { (h) } }
                @if let Some(e) = &error { span class="error" id={ (id) "-error" } { (e) } }
                input type="text" id=(id) name=(id) inputmode=[input.inputmode] autocomplete=(input.autocomplete)
                    maxlength=(input.maxlength) value=[input.value] required[input.required]
                    aria-describedby=[described] aria-invalid=[error.as_ref().map(|_| "true")];
            }
        }
    };
    html! {
        @if !a.errors.is_empty() {
            div class="alert" role="alert" aria-labelledby="problem-title" {
                h2 id="problem-title" { "Check your card details" }
                ul { @for e in a.errors { li { a href={ "#" (e.field) } { (e.message) } } } }
            }
        }
        @if let Some(code) = a.declined {
            div class="alert" role="alert" { p { (decline_text(code)) } }
        }
        @if a.unavailable {
            div class="alert" role="alert" {
                p { "We could not reach the payment processor. Your card was not charged; please try again." }
            }
        }
        form method="post" action=(a.action) novalidate id="card-form" {
            input type="hidden" name="csrf" value=(a.csrf);
            (field("name", "Name on card", None, Input {
                inputmode: None, autocomplete: "cc-name", maxlength: 200, value: Some(a.holder), required: false,
            }))
            (field("number", "Card number", None, Input {
                inputmode: Some("numeric"), autocomplete: "cc-number", maxlength: 23, value: None, required: true,
            }))
            p id="brand" class="brand" aria-live="polite" {}
            div class="row" {
                (field("expiry", "Expiry date", Some("MM/YY"), Input {
                    inputmode: Some("numeric"), autocomplete: "cc-exp", maxlength: 7, value: None, required: true,
                }))
                (field("cvc", "Security code", Some("3 or 4 digits"), Input {
                    inputmode: Some("numeric"), autocomplete: "cc-csc", maxlength: 4, value: None, required: true,
                }))
            }
            button type="submit" class="primary" { (a.submit) }
        }
        p class="fineprint" {
            "Your card goes straight to the payment processor: " (a.merchant_name)
            " never sees its number."
        }
    }
}

/// A text input of the card form. Only the name is ever filled back in: the card's
/// fields are never echoed.
struct Input<'a> {
    inputmode: Option<&'static str>,
    autocomplete: &'static str,
    maxlength: u32,
    value: Option<&'a str>,
    required: bool,
}

fn processing_page(token: &str, l: &Loaded) -> Response {
    let body = layout(
        &format!("Processing – {}", l.summary.merchant_name),
        html! {
            (super::layout::refresh_without_js(2))
            h1 { (l.summary.merchant_name) }
            div role="status" data-poll={ "/checkout/" (token) "/status" } {
                h2 { "Processing your payment…" }
                p { "This takes a few seconds. Please keep this page open." }
            }
        },
        &["/assets/checkout.js"],
    );
    super::html(StatusCode::OK, body, Framing::Origins(&l.allowed_origins), None)
}

fn complete_page(l: &Loaded) -> Response {
    let s = &l.session;
    let card = s.card();
    let result = serde_json::json!({
        "source": "recur-checkout",
        "status": "complete",
        "checkoutSessionId": s.id,
        "subscriptionId": s.subscription_id,
        "paymentSeriesId": s.payment_series_id,
        "paymentMethod": card.as_ref().map(|c| serde_json::json!({"brand": c.brand, "last4": c.last4})),
    });
    let origins = serde_json::to_string(&l.allowed_origins).unwrap_or_else(|_| "[]".into());
    let body = layout(
        &format!("Done – {}", l.summary.merchant_name),
        html! {
            h1 { (l.summary.merchant_name) }
            div role="status" data-result=(result.to_string()) data-origins=(origins) {
                h2 { @if s.awaiting_sequence.is_some() { "Payment complete" } @else { "Card saved" } }
                @if let Some(c) = &card { p { (card_label(c)) } }
            }
            @if let Some(to) = s.return_to() {
                p { a class="button" href=(to) target="_top" { "Return to " (l.summary.merchant_name) } }
            }
        },
        &["/assets/checkout.js"],
    );
    super::html(StatusCode::OK, body, Framing::Origins(&l.allowed_origins), None)
}

/// The first charge's progress for the page's script: `{state}`.
pub async fn status(State(app): State<App>, Path(token): Path<String>) -> Response {
    let now = match app.clock.now().await {
        Ok(n) => n,
        Err(e) => return internal(e),
    };
    let found = async {
        let mut tx = app.pool.begin().await?;
        let Some(s) = checkout::by_token(&mut tx, &token).await? else { return Ok::<_, Error>(None) };
        let p = checkout::progress(&mut tx, s.id, now).await?;
        tx.commit().await?;
        Ok(Some(p))
    }
    .await;
    let state = found.map(|found| {
        found.map(|(_, p)| match p {
            Progress::Form { .. } => "form",
            Progress::Processing => "processing",
            Progress::Failed { .. } => "failed",
            Progress::Closed => "closed",
            Progress::Complete => "complete",
            Progress::Expired => "expired",
            Progress::Locked => "locked",
        })
    });
    super::poll_answer(state, "checkout")
}

pub async fn submit(State(app): State<App>, Path(token): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(fields) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return message(StatusCode::BAD_REQUEST, "The form could not be read", "Reload the page and try again.");
    };
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or("");
    let l = match load(&app, &token).await {
        Ok(Some(l)) => l,
        Ok(None) => return not_found(),
        Err(e) => return internal(e),
    };
    if !csrf::verify(&l.session.csrf_key, get("csrf"), &headers, &app.public_url) {
        return message(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "For your security the form could not be accepted. Reload the page and enter your card again.",
        );
    }
    let back = || {
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, format!("/checkout/{token}"))]).into_response();
        super::secure(&mut r, Framing::Nobody, None);
        r
    };
    if !matches!(l.progress, Progress::Form { .. }) {
        return back();
    }
    let now = match app.clock.now().await {
        Ok(n) => n,
        Err(e) => return internal(e),
    };
    let form = CardForm { holder: get("name"), number: get("number"), expiry: get("expiry"), cvc: get("cvc") };
    let holder = form.holder.trim().chars().take(200).collect::<String>();
    let refused = async |l: Loaded, reason: &str, errors: Vec<FieldError>| -> Response {
        let counted = async {
            let mut tx = app.pool.begin().await?;
            let s = checkout::refuse(&mut tx, l.session.id, reason).await?;
            tx.commit().await?;
            Ok::<_, Error>(s)
        }
        .await;
        match counted {
            Ok(s) if s.status == checkout::StoredStatus::Locked => locked(),
            Ok(session) => {
                let l = Loaded { session, ..l };
                render(&token, &headers, l, FormState { errors, holder: holder.clone(), ..Default::default() }, now)
            }
            Err(e) => internal(e),
        }
    };
    let card = match cards::check(&form, now.date_naive()) {
        Ok(c) => c,
        Err(errors) => return refused(l, cards::refusal_reason(&errors), errors).await,
    };
    let token_of_card = app.gateway.tokenize(l.merchant_key, &l.summary.customer_account_id, &card).await;
    let pm = match token_of_card {
        Ok(pm) => pm,
        Err(TokenizeError::Refused(why)) => {
            return refused(l, "refused_by_gateway", vec![FieldError::new("number", why)]).await;
        }
        Err(TokenizeError::Gateway(e)) => {
            tracing::warn!(error = %e, session = %l.session.id, "tokenizing a card failed");
            let mut r = render(&token, &headers, l, FormState { holder, unavailable: true, ..Default::default() }, now);
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            return r;
        }
    };
    let kept = Kept::of(&card);
    drop(card);
    let attached = async {
        let mut tx = app.pool.begin().await?;
        let a = checkout::attach(&mut tx, l.session.id, &pm, &kept, app.lease_secs, now).await?;
        tx.commit().await?;
        Ok::<_, Error>(a)
    }
    .await;
    match attached {
        Ok(a) => {
            app.enqueue(&a.jobs).await;
            back()
        }
        // The session moved on meanwhile (another tab, expiry): show where it stands.
        Err(Error::Conflict { detail, .. }) => {
            tracing::info!(session = %l.session.id, detail, "a card was not attached");
            back()
        }
        Err(e) => internal(e),
    }
}
