//! More of `/dashboard` (docs/dashboard.md): checkout links, payment series, webhook
//! endpoints and their deliveries, and the sandbox ledger. The same rules as
//! `dashboard.rs`: the merchant's session, the API's domain functions
//! (`checkout::create`, `series::list`, `webhooks::endpoints`, `webhooks::deliveries`,
//! `gateway::sandbox::list_ledger`), one event per action, another merchant's ids not found.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jobs::{DeliverWebhook, Job};
use maud::html;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::dashboard::{PAGE, nav, now, posted, signed_in};
use super::format_money;
use super::signed_in::{error_page, not_found, query, redirect, when, wire};
use crate::app::App;
use crate::checkout::{self, CreateSession};
use crate::error::Error;
use crate::webhooks::deliveries::{self, DeliveryFilter};
use crate::webhooks::endpoints::{self, CreateEndpoint, RotateSecret};

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dashboard/subscriptions/{id}/checkout-link", post(checkout_link))
        .route("/dashboard/series", get(series))
        .route("/dashboard/webhooks", get(webhooks).post(create_endpoint))
        .route("/dashboard/webhooks/{id}", get(endpoint))
        .route("/dashboard/webhooks/{id}/rotate", post(rotate))
        .route("/dashboard/webhook-deliveries/{id}/retry", post(retry_delivery))
        .route("/dashboard/ledger", get(ledger))
        .route("/dashboard/settings", get(settings_page).post(save_settings))
        .route("/dashboard/plans/{id}/edit", get(edit_plan).post(save_plan))
}

#[derive(Debug, Default, Deserialize)]
struct Cursor {
    cursor: Option<String>,
    done: Option<String>,
}

fn cursor(c: Option<&str>) -> Result<Option<Uuid>, Error> {
    c.filter(|c| !c.is_empty())
        .map(|c| Uuid::parse_str(c).map_err(|_| Error::validation("cursor", "is not a cursor this page made")))
        .transpose()
}

/// A checkout session for the subscription, as `POST /v1/checkout-sessions`: the
/// link is shown on this answer only (its token is not stored).
async fn checkout_link(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let (ctx, m, _form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let now = match now(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let made = async {
        let req = serde_json::from_value::<CreateSession>(json!({"subscriptionId": id}))
            .map_err(|e| Error::Internal(e.into()))?
            .validate()?;
        let mut tx = app.pool.begin().await?;
        let (s, token) = checkout::create(&mut tx, m.id, req, now).await.map_err(|e| match e {
            // The API names the field; here the subscription is the page's own.
            Error::Validation(_) => Error::NotFound("subscription"),
            other => other,
        })?;
        tx.commit().await?;
        Ok::<_, Error>((s, token))
    }
    .await;
    let (s, token) = match made {
        Ok(m) => m,
        Err(e) => return error_page(e),
    };
    let url = format!("{}/checkout/{token}", app.public_url);
    let main = html! {
        p { a href={ "/dashboard/subscriptions/" (id) } { "Back to the subscription" } }
        h1 { "Checkout link" }
        div class="notice" role="status" {
            p { "Send this link to the customer. It is shown only now, and works until " (when(s.expires_at, now)) "." }
            p class="secret" id="checkout-url" { (url) }
        }
    };
    ctx.page(StatusCode::CREATED, "Checkout link – recur dashboard", nav(&ctx, &m, ""), main)
}

async fn series(State(app): State<App>, headers: HeaderMap, Query(q): Query<Cursor>) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = match now(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let rows = async {
        let after = cursor(q.cursor.as_deref())?;
        let mut conn = app.pool.acquire().await?;
        crate::series::list(&mut conn, m.id, after, PAGE + 1).await
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
        h1 { "Payment series" }
        @if rows.is_empty() { p { "No payment series yet." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Payment series" {
                table {
                    thead { tr { th scope="col" { "Id" } th scope="col" { "Customer" } th scope="col" { "Description" } th scope="col" { "Currency" } th scope="col" { "Status" } th scope="col" { "Created" } } }
                    tbody {
                        @for s in &rows {
                            tr {
                                td { code { (s.id) } } td { (s.customer_account_id) } td { (s.description.as_deref().unwrap_or("")) }
                                td { (s.currency) } td { (s.status.as_str()) } td { (when(s.created_at, now)) }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" { a href={ "/dashboard/series" (query(&[("cursor", Some(c))])) } { "Next page" } }
        }
    };
    ctx.page(StatusCode::OK, "Payment series – recur dashboard", nav(&ctx, &m, "/dashboard/series"), main)
}

async fn webhooks(State(app): State<App>, headers: HeaderMap) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    render_webhooks(&app, &ctx, &m, StatusCode::OK, None, None).await
}

async fn render_webhooks(
    app: &App,
    ctx: &super::signed_in::Ctx,
    m: &crate::merchants::Merchant,
    status: StatusCode,
    created: Option<&endpoints::Endpoint>,
    problem: Option<String>,
) -> Response {
    let now = match now(app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let rows = async {
        let mut conn = app.pool.acquire().await?;
        endpoints::list(&mut conn, m.id).await
    }
    .await;
    let rows = match rows {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let main = html! {
        h1 { "Webhook endpoints" }
        @if let Some(e) = created {
            div class="notice" role="status" {
                p { "Endpoint created. Its signing secret is shown only now:" }
                p class="secret" id="endpoint-secret" { (e.secret) }
            }
        }
        @if let Some(p) = &problem { div class="alert" role="alert" { p { (p) } } }
        @if rows.is_empty() { p { "No endpoint yet." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Webhook endpoints" {
                table {
                    thead { tr { th scope="col" { "URL" } th scope="col" { "Events" } th scope="col" { "Status" } th scope="col" { "Last success" } } }
                    tbody {
                        @for e in &rows {
                            tr {
                                td { a href={ "/dashboard/webhooks/" (e.id) } { (e.url) } }
                                td { (e.event_types.join(", ")) }
                                td { (wire(&e.status)) @if let Some(r) = &e.disabled_reason { " (" (r) ")" } }
                                td { @if let Some(t) = e.last_success_at { (when(t, now)) } @else { "never" } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "New endpoint" }
        form method="post" action="/dashboard/webhooks" {
            (ctx.field())
            div class="field" { label for="w-url" { "URL" } input type="text" inputmode="url" id="w-url" name="url" required; }
            div class="field" {
                label for="w-types" { "Event types (comma-separated; empty for all)" }
                input type="text" id="w-types" name="event_types";
            }
            button type="submit" class="primary" { "Create endpoint" }
        }
    };
    ctx.page(status, "Webhooks – recur dashboard", nav(ctx, m, "/dashboard/webhooks"), main)
}

/// `endpoints::create`, as `POST /v1/webhook-endpoints` (one `created` event).
async fn create_endpoint(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, m, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let types: Vec<String> =
        form.get("event_types").split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect();
    let made = async {
        let req = CreateEndpoint {
            url: form.get("url").trim().to_owned(),
            event_types: (!types.is_empty()).then_some(types),
            description: None,
            metadata: None,
        };
        let mut tx = app.pool.begin().await?;
        let e = endpoints::create(&mut tx, m.id, m.sandbox, req).await?;
        tx.commit().await?;
        Ok::<_, Error>(e)
    }
    .await;
    match made {
        Ok(e) => render_webhooks(&app, &ctx, &m, StatusCode::CREATED, Some(&e), None).await,
        Err(Error::Validation(errors)) => {
            let text = errors.iter().map(|e| format!("{}: {}.", e.field, e.message)).collect::<Vec<_>>().join(" ");
            render_webhooks(&app, &ctx, &m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(text)).await
        }
        Err(e) => error_page(e),
    }
}

async fn endpoint(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<Cursor>,
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
        let after = cursor(q.cursor.as_deref())?;
        let mut conn = app.pool.acquire().await?;
        let e = endpoints::get(&mut conn, m.id, id).await?;
        let f = DeliveryFilter { status: None, kind: None, after, limit: PAGE + 1 };
        let ds = deliveries::list(&mut conn, m.id, id, &f).await?;
        Ok::<_, Error>((e, ds))
    }
    .await;
    let (e, mut ds) = match loaded {
        Ok(l) => l,
        Err(err) => return error_page(err),
    };
    let more = ds.len() as i64 > PAGE;
    ds.truncate(PAGE as usize);
    let next = more.then(|| ds.last().map(|d| d.id.to_string())).flatten();
    let notice = match q.done.as_deref() {
        Some("retry") => Some("The delivery will be sent again now."),
        _ => None,
    };
    let main = html! {
        p { a href="/dashboard/webhooks" { "All endpoints" } }
        h1 { "Endpoint " (e.url) }
        @if let Some(n) = notice { div class="notice" role="status" { p { (n) } } }
        dl {
            dt { "Status" } dd { (wire(&e.status)) }
            dt { "Events" } dd { (e.event_types.join(", ")) }
            dt { "Created" } dd { (when(e.created_at, now)) }
        }
        form method="post" action={ "/dashboard/webhooks/" (id) "/rotate" } {
            (ctx.field())
            button type="submit" { "Rotate the signing secret" }
        }
        h2 { "Deliveries" }
        @if ds.is_empty() { p { "No delivery yet." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Deliveries" {
                table {
                    thead { tr { th scope="col" { "Event" } th scope="col" { "Status" } th scope="col" { "Attempts" } th scope="col" { "Last answer" } th scope="col" { "Created" } th scope="col" { span class="visually-hidden" { "Action" } } } }
                    tbody {
                        @for d in &ds {
                            tr {
                                td { (d.kind) } td { (wire(&d.status)) } td class="num" { (d.attempts) }
                                td { @if let Some(c) = d.last_status_code { (c) " " } (d.last_error.as_deref().unwrap_or("")) }
                                td { (when(d.created_at, now)) }
                                td {
                                    form method="post" action={ "/dashboard/webhook-deliveries/" (d.id) "/retry" } {
                                        (ctx.field())
                                        button type="submit" { "Send again" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" { a href={ "/dashboard/webhooks/" (id) (query(&[("cursor", Some(c))])) } { "Next page" } }
        }
    };
    ctx.page(StatusCode::OK, "Webhook endpoint – recur dashboard", nav(&ctx, &m, ""), main)
}

/// `endpoints::rotate`, as `POST /v1/webhook-endpoints/{id}/rotate-secret`: the new
/// secret is shown on this answer only; the old one keeps signing for a day.
async fn rotate(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let (ctx, m, _form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let done = async {
        let mut tx = app.pool.begin().await?;
        let e = endpoints::rotate(&mut tx, m.id, id, RotateSecret { expires_in_seconds: None }).await?;
        tx.commit().await?;
        Ok::<_, Error>(e)
    }
    .await;
    let e = match done {
        Ok(e) => e,
        Err(err) => return error_page(err),
    };
    let main = html! {
        p { a href={ "/dashboard/webhooks/" (id) } { "Back to the endpoint" } }
        h1 { "New signing secret" }
        div class="notice" role="status" {
            p { "The new secret, shown only now. The previous one keeps signing for 24 hours." }
            p class="secret" id="endpoint-secret" { (e.secret) }
        }
    };
    ctx.page(StatusCode::OK, "New signing secret – recur dashboard", nav(&ctx, &m, ""), main)
}

/// `deliveries::retry_now`, as `POST /v1/webhook-deliveries/{id}/retry`.
async fn retry_delivery(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let (_ctx, m, _form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let done = async {
        let mut tx = app.pool.begin().await?;
        let d = deliveries::retry_now(&mut tx, m.id, id, app.lease_secs).await?;
        tx.commit().await?;
        Ok::<_, Error>(d)
    }
    .await;
    match done {
        Ok(d) => {
            app.enqueue(&[Job::DeliverWebhook(DeliverWebhook { delivery_id: d.id, attempt: 0 })]).await;
            redirect(&format!("/dashboard/webhooks/{}?done=retry", d.endpoint_id))
        }
        Err(e) => error_page(e),
    }
}

/// The sandbox gateway's ledger of this merchant's charges (sandbox merchants only).
async fn ledger(State(app): State<App>, headers: HeaderMap, Query(q): Query<Cursor>) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !m.sandbox {
        return not_found();
    }
    let now = match now(&app).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    let rows = async {
        let after = cursor(q.cursor.as_deref())?;
        crate::gateway::sandbox::list_ledger(&app.pool, Some(m.merchant_key), None, after, PAGE + 1).await
    }
    .await;
    let mut rows = match rows {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let next = more.then(|| rows.last().map(|r| r.id.to_string())).flatten();
    let main = html! {
        h1 { "Sandbox ledger" }
        p { "Every charge the sandbox gateway approved for you: what a real acquirer would have settled." }
        @if rows.is_empty() { p { "No charge yet." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Sandbox ledger" {
                table id="ledger" {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Customer" } th scope="col" { "Amount" } th scope="col" { "Payment method" } th scope="col" { "Reference" } } }
                    tbody {
                        @for r in &rows {
                            tr {
                                td { (when(r.created_at, now)) } td { (r.customer_account_id) }
                                td class="num" { (format_money(r.amount, &r.currency)) } td { (r.payment_method) } td { code { (r.reference) } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" { a href={ "/dashboard/ledger" (query(&[("cursor", Some(c))])) } { "Next page" } }
        }
    };
    ctx.page(StatusCode::OK, "Sandbox ledger – recur dashboard", nav(&ctx, &m, "/dashboard/ledger"), main)
}

// ---- portal settings ----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct Done {
    done: Option<String>,
}

/// The portal's actions and the checkout's allowed origins (`GET`/`PATCH /v1/settings`).
async fn settings_page(State(app): State<App>, headers: HeaderMap, Query(q): Query<Done>) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    render_settings(&app, &ctx, &m, StatusCode::OK, q.done.is_some().then_some("The settings are saved."), None).await
}

async fn render_settings(
    app: &App,
    ctx: &super::signed_in::Ctx,
    m: &crate::merchants::Merchant,
    status: StatusCode,
    notice: Option<&str>,
    problem: Option<String>,
) -> Response {
    let loaded = async {
        let mut conn = app.pool.acquire().await?;
        let settings = crate::settings::get(&mut conn, m.id).await?;
        let f = crate::plans::repo::PlanFilter {
            status: Some(crate::plans::PlanStatus::Active),
            tag: None,
            after: None,
            limit: 100,
        };
        let plans = crate::plans::repo::list(&mut conn, m.id, &f).await?;
        Ok::<_, Error>((settings, plans))
    }
    .await;
    let (st, plans) = match loaded {
        Ok(l) => l,
        Err(e) => return error_page(e),
    };
    let p = &st.portal;
    let check = |name: &str, on: bool, text: &str| {
        html! {
            div class="field" {
                label for={ "s-" (name) } { input type="checkbox" id={ "s-" (name) } name=(name) value="1" checked[on]; " " (text) }
            }
        }
    };
    let main = html! {
        h1 { "Portal and checkout settings" }
        @if let Some(n) = notice { div class="notice" role="status" { p { (n) } } }
        @if let Some(p) = &problem { div class="alert" role="alert" { p { (p) } } }
        form method="post" action="/dashboard/settings" {
            (ctx.field())
            fieldset {
                legend { "What customers may do in the portal" }
                (check("pause", p.pause, "Pause and resume"))
                (check("cancel", p.cancel, "Cancel now"))
                (check("cancel_at_period_end", p.cancel_at_period_end, "Cancel at the end of the period"))
                (check("update_authorized_limit", p.update_authorized_limit, "Change the authorized limit"))
                (check("update_payment_method", p.update_payment_method, "Replace the card"))
                (check("switch_plan", p.switch_plan, "Switch plan, to one of:"))
                @for plan in &plans {
                    div class="field" {
                        label for={ "plan-" (plan.id) } {
                            input type="checkbox" id={ "plan-" (plan.id) } name="switchable_plan" value=(plan.id)
                                checked[p.switchable_plan_ids.contains(&plan.id)];
                            " " (plan.name) " (" (format_money(plan.amount, &plan.currency)) ")"
                        }
                    }
                }
            }
            div class="field" {
                label for="s-origins" { "Sites that may embed the checkout (one origin a line, e.g. https://shop.example)" }
                textarea id="s-origins" name="allowed_origins" rows="3" { (st.allowed_origins.join("\n")) }
            }
            button type="submit" class="primary" { "Save settings" }
        }
    };
    ctx.page(status, "Settings – recur dashboard", nav(ctx, m, "/dashboard/settings"), main)
}

/// `settings::update`, as `PATCH /v1/settings` with every field (one `updated` event).
async fn save_settings(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, m, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let on = |name: &str| form.get(name) == "1";
    let origins: Vec<&str> = form.get("allowed_origins").lines().map(str::trim).filter(|o| !o.is_empty()).collect();
    let plans: Vec<&str> = form.all("switchable_plan");
    let req = json!({
        "allowedOrigins": origins,
        "portal": {
            "pause": on("pause"), "cancel": on("cancel"), "cancelAtPeriodEnd": on("cancel_at_period_end"),
            "switchPlan": on("switch_plan"), "switchablePlanIds": plans,
            "updateAuthorizedLimit": on("update_authorized_limit"), "updatePaymentMethod": on("update_payment_method"),
        },
    });
    let done = async {
        let req = serde_json::from_value::<crate::settings::UpdateSettings>(req)
            .map_err(|_| Error::validation("portal.switchablePlanIds", "must be plans of yours"))?;
        let mut tx = app.pool.begin().await?;
        crate::settings::update(&mut tx, m.id, req).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    match done {
        Ok(()) => redirect("/dashboard/settings?done=saved"),
        Err(Error::Validation(errors)) => {
            let text = errors.iter().map(|e| format!("{}: {}.", e.field, e.message)).collect::<Vec<_>>().join(" ");
            render_settings(&app, &ctx, &m, StatusCode::UNPROCESSABLE_ENTITY, None, Some(text)).await
        }
        Err(e) => error_page(e),
    }
}

// ---- editing a plan ------------------------------------------------------------------

async fn edit_plan(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let (ctx, m) = match signed_in(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    render_plan_form(&app, &ctx, &m, id, StatusCode::OK, None).await
}

async fn render_plan_form(
    app: &App,
    ctx: &super::signed_in::Ctx,
    m: &crate::merchants::Merchant,
    id: Uuid,
    status: StatusCode,
    problem: Option<String>,
) -> Response {
    let plan = async {
        let mut conn = app.pool.acquire().await?;
        crate::plans::repo::get(&mut conn, m.id, id).await
    }
    .await;
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return error_page(e),
    };
    let main = html! {
        p { a href="/dashboard/plans" { "All plans" } }
        h1 { "Edit " (plan.name) }
        p { "Subscriptions already on the plan keep their price; a change applies to new subscriptions." }
        @if let Some(p) = &problem { div class="alert" role="alert" { p { (p) } } }
        form method="post" action={ "/dashboard/plans/" (id) "/edit" } {
            (ctx.field())
            div class="field" { label for="e-name" { "Name" } input type="text" id="e-name" name="name" required value=(plan.name); }
            div class="field" {
                label for="e-description" { "Description" }
                input type="text" id="e-description" name="description" value=(plan.description.as_deref().unwrap_or(""));
            }
            @if plan.status == crate::plans::PlanStatus::Draft {
                div class="field" {
                    label for="e-amount" { "Amount (" (plan.currency) ")" }
                    input type="text" inputmode="decimal" id="e-amount" name="amount" required
                        value=(crate::money::format_amount(plan.amount, &plan.currency));
                }
            } @else {
                p { "Price: " (format_money(plan.amount, &plan.currency)) " (fixed once the plan is active)." }
            }
            div class="field" { label for="e-tags" { "Tags (comma-separated)" } input type="text" id="e-tags" name="tags" value=(plan.tags.join(", ")); }
            button type="submit" class="primary" { "Save plan" }
        }
    };
    ctx.page(status, "Edit plan – recur dashboard", nav(ctx, m, ""), main)
}

/// `plans::repo::update`, as `PATCH /v1/plans/{id}` (one `updated` event; the API's
/// checks: only a draft's amount may change).
async fn save_plan(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>, body: Bytes) -> Response {
    let (ctx, m, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let tags: Vec<&str> = form.get("tags").split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    let description = form.opt("description");
    let mut req = json!({
        "name": form.get("name"),
        "description": description,
        "tags": tags,
    });
    // Only a draft's form has the amount (the API refuses changing an active plan's).
    if let Some(amount) = form.opt("amount") {
        req["amount"] = json!(amount);
    }
    let done = async {
        let changes = serde_json::from_value::<crate::plans::UpdatePlan>(req)
            .map_err(|e| Error::validation("plan", e.to_string()))?
            .validate()?;
        let mut tx = app.pool.begin().await?;
        crate::plans::repo::update(&mut tx, m.id, id, changes).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    match done {
        Ok(()) => redirect("/dashboard/plans?done=updated"),
        Err(Error::Validation(errors)) => {
            let text = errors.iter().map(|e| format!("{}: {}.", e.field, e.message)).collect::<Vec<_>>().join(" ");
            render_plan_form(&app, &ctx, &m, id, StatusCode::UNPROCESSABLE_ENTITY, Some(text)).await
        }
        Err(e) => error_page(e),
    }
}
