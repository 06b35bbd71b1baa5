//! Webhook endpoints: the list, create (`endpoints::create`: the signing secret shown
//! once), an endpoint with its deliveries (send one again: `deliveries::retry_now`),
//! rotate its secret (`endpoints::rotate`), edit it (`endpoints::update`, as
//! `PATCH /v1/webhook-endpoints/{id}`) and delete it after a confirmation
//! (`endpoints::delete`, as `DELETE /v1/webhook-endpoints/{id}`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use jobs::{DeliverWebhook, Job};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::plans::comma_list;
use super::subscriptions::id_of;
use super::{PAGE, Posted, Signed, now};
use crate::app::App;
use crate::pages::signed_in::{
    Answer, Form, alert, cursor, data_table, error_page, form_problem, in_tx, notice, paged, pager, read, redirect,
    when, wire,
};
use crate::webhooks::deliveries::{self, DeliveryFilter};
use crate::webhooks::endpoints::{self, CreateEndpoint, Endpoint, EndpointStatus, RotateSecret, UpdateEndpoint};

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dashboard/webhooks", get(list).post(create))
        .route("/dashboard/webhooks/{id}", get(show))
        .route("/dashboard/webhooks/{id}/edit", get(edit).post(save))
        .route("/dashboard/webhooks/{id}/delete", get(confirm_delete).post(delete))
        .route("/dashboard/webhooks/{id}/rotate", post(rotate))
        .route("/dashboard/webhook-deliveries/{id}/retry", post(retry_delivery))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    done: Option<String>,
}

async fn list(State(app): State<App>, s: Signed, Query(q): Query<ListQuery>) -> Answer {
    let deleted = (q.done.as_deref() == Some("deleted")).then_some("The endpoint is deleted, with its deliveries.");
    render_list(&app, &s, StatusCode::OK, None, deleted, None).await
}

async fn render_list(
    app: &App,
    s: &Signed,
    code: StatusCode,
    created: Option<&Endpoint>,
    done: Option<&str>,
    problem: Option<(String, &Form)>,
) -> Answer {
    let now = now(app).await?;
    let merchant_id = s.m.id;
    let rows = read(app, async |conn| endpoints::list(conn, merchant_id).await).await?;
    let filled = |name: &str| problem.as_ref().and_then(|(_, f)| f.opt(name)).map(str::to_owned);
    let main = html! {
        h1 { "Webhook endpoints" }
        @if let Some(e) = created {
            div class="notice" role="status" {
                p { "Endpoint created. Its signing secret is shown only now:" }
                p class="secret" id="endpoint-secret" { (e.secret) }
            }
        }
        (notice(done))
        @if rows.is_empty() { p { "No endpoint yet." } } @else {
            (data_table("Webhook endpoints", Some("endpoints"), &["URL", "Events", "Status", "Description", "Last success"], html! {
                @for e in &rows {
                    tr {
                        td { a href={ "/dashboard/webhooks/" (e.id) } { (e.url) } }
                        td { (e.event_types.join(", ")) }
                        td { (wire(&e.status)) @if let Some(r) = &e.disabled_reason { " (" (r) ")" } }
                        td { (e.description.as_deref().unwrap_or("")) }
                        td { @if let Some(t) = e.last_success_at { (when(t, now)) } @else { "never" } }
                    }
                }
            }))
        }
        h2 { "New endpoint" }
        (alert(problem.as_ref().map(|(p, _)| p.as_str())))
        form method="post" action="/dashboard/webhooks" {
            (s.ctx.field())
            div class="field" { label for="w-url" { "URL" } input type="text" inputmode="url" id="w-url" name="url" required value=[filled("url")]; }
            div class="field" {
                label for="w-types" { "Event types (comma-separated; empty for all)" }
                input type="text" id="w-types" name="event_types" value=[filled("event_types")];
            }
            div class="field" {
                label for="w-description" { "Description (optional)" }
                input type="text" id="w-description" name="description" value=[filled("description")];
            }
            button type="submit" class="primary" { "Create endpoint" }
        }
    };
    Ok(s.page(code, "Webhooks", "/dashboard/webhooks", main))
}

/// The form's event types: empty means every type (`*`), as at creation.
fn event_types(form: &Form) -> Option<Vec<String>> {
    let types: Vec<String> = comma_list(form.get("event_types")).into_iter().map(str::to_owned).collect();
    (!types.is_empty()).then_some(types)
}

/// `endpoints::create`, as `POST /v1/webhook-endpoints` (one `created` event).
async fn create(State(app): State<App>, p: Posted) -> Answer {
    let req = CreateEndpoint {
        url: p.form.get("url").trim().to_owned(),
        event_types: event_types(&p.form),
        description: p.form.opt("description").map(str::to_owned),
        metadata: None,
    };
    let (merchant_id, sandbox) = (p.m.id, p.m.sandbox);
    let made = in_tx(&app, async |tx| endpoints::create(tx, merchant_id, sandbox, req).await).await;
    let (s, form) = p.signed();
    match made {
        Ok(e) => render_list(&app, &s, StatusCode::CREATED, Some(&e), None, None).await,
        Err(e) => {
            let text = form_problem(e).map_err(error_page)?;
            render_list(&app, &s, StatusCode::UNPROCESSABLE_ENTITY, None, None, Some((text, &form))).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ShowQuery {
    cursor: Option<String>,
    done: Option<String>,
}

async fn show(State(app): State<App>, s: Signed, Path(id): Path<String>, Query(q): Query<ShowQuery>) -> Answer {
    let id = id_of(&id)?;
    let now = now(&app).await?;
    let after = cursor(q.cursor.as_deref(), "cursor")?;
    let merchant_id = s.m.id;
    let (e, ds) = read(&app, async |conn| {
        let e = endpoints::get(conn, merchant_id, id).await?;
        let f = DeliveryFilter { status: None, kind: None, after, limit: PAGE as i64 + 1 };
        Ok((e, deliveries::list(conn, merchant_id, id, &f).await?))
    })
    .await?;
    let (ds, next) = paged(ds, PAGE, |d| d.id.to_string());
    let done = match q.done.as_deref() {
        Some("retry") => Some("The delivery will be sent again now."),
        Some("updated") => Some("The endpoint is saved."),
        _ => None,
    };
    let ctx = &s.ctx;
    let main = html! {
        p { a href="/dashboard/webhooks" { "All endpoints" } }
        h1 { "Endpoint " (e.url) }
        (notice(done))
        dl {
            dt { "Status" } dd id="endpoint-status" { (wire(&e.status)) @if let Some(r) = &e.disabled_reason { " (" (r) ")" } }
            dt { "Events" } dd { (e.event_types.join(", ")) }
            @if let Some(d) = &e.description { dt { "Description" } dd { (d) } }
            dt { "Created" } dd { (when(e.created_at, now)) }
        }
        div class="actions" {
            a class="button-link" href={ "/dashboard/webhooks/" (id) "/edit" } { "Edit" }
            form method="post" action={ "/dashboard/webhooks/" (id) "/rotate" } {
                (ctx.field())
                button type="submit" { "Rotate the signing secret" }
            }
            a class="button-link" href={ "/dashboard/webhooks/" (id) "/delete" } { "Delete…" }
        }
        h2 { "Deliveries" }
        @if ds.is_empty() { p { "No delivery yet." } } @else {
            (data_table("Deliveries", None, &["Event", "Status", "Attempts", "Last answer", "Created", "[Action]"], html! {
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
            }))
        }
        (pager(&format!("/dashboard/webhooks/{id}"), &[], "cursor", next.as_deref()))
    };
    Ok(s.page(StatusCode::OK, "Webhook endpoint", "", main))
}

async fn edit(State(app): State<App>, s: Signed, Path(id): Path<String>) -> Answer {
    render_edit(&app, &s, id_of(&id)?, StatusCode::OK, None).await
}

/// The endpoint's form: its URL, event types, enabled or disabled, description; on a
/// refused form, what was typed and what is wrong.
async fn render_edit(app: &App, s: &Signed, id: Uuid, code: StatusCode, problem: Option<(String, &Form)>) -> Answer {
    let merchant_id = s.m.id;
    let e = read(app, async |conn| endpoints::get(conn, merchant_id, id).await).await?;
    let typed = |name: &str| problem.as_ref().map(|(_, f)| f.get(name).to_owned());
    let url = typed("url").unwrap_or_else(|| e.url.clone());
    let types = typed("event_types").unwrap_or_else(|| e.event_types.join(", "));
    let description = typed("description").unwrap_or_else(|| e.description.clone().unwrap_or_default());
    let enabled = match typed("status") {
        Some(s) => s == "enabled",
        None => e.status == EndpointStatus::Enabled,
    };
    let main = html! {
        p { a href={ "/dashboard/webhooks/" (id) } { "Back to the endpoint" } }
        h1 { "Edit endpoint " (e.url) }
        (alert(problem.as_ref().map(|(p, _)| p.as_str())))
        form method="post" action={ "/dashboard/webhooks/" (id) "/edit" } {
            (s.ctx.field())
            div class="field" { label for="w-url" { "URL" } input type="text" inputmode="url" id="w-url" name="url" required value=(url); }
            div class="field" {
                label for="w-types" { "Event types (comma-separated; empty for all)" }
                input type="text" id="w-types" name="event_types" value=(types);
            }
            div class="field" {
                label for="w-status" { "Status" }
                select id="w-status" name="status" {
                    option value="enabled" selected[enabled] { "enabled" }
                    option value="disabled" selected[!enabled] { "disabled" }
                }
            }
            div class="field" {
                label for="w-description" { "Description (optional)" }
                input type="text" id="w-description" name="description" value=(description);
            }
            button type="submit" class="primary" { "Save endpoint" }
        }
    };
    Ok(s.page(code, "Edit webhook endpoint", "", main))
}

/// `endpoints::update` with every field of the form, as `PATCH /v1/webhook-endpoints/{id}`:
/// an `updated` event if the URL, types or description changed, a `status_changed`
/// event if it was enabled or disabled.
async fn save(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    let form = &p.form;
    let status = match form.get("status") {
        "disabled" => EndpointStatus::Disabled,
        _ => EndpointStatus::Enabled,
    };
    let req = UpdateEndpoint {
        url: Some(form.get("url").trim().to_owned()),
        event_types: Some(event_types(form).unwrap_or_else(|| vec!["*".to_owned()])),
        status: Some(status),
        description: Some(form.opt("description").map(str::to_owned)),
        metadata: None,
    };
    let (merchant_id, sandbox) = (p.m.id, p.m.sandbox);
    let done = in_tx(&app, async |tx| endpoints::update(tx, merchant_id, sandbox, id, req).await.map(|_| ())).await;
    let Err(e) = done else { return Ok(redirect(&format!("/dashboard/webhooks/{id}?done=updated"))) };
    let text = form_problem(e).map_err(error_page)?;
    let (s, form) = p.signed();
    render_edit(&app, &s, id, StatusCode::UNPROCESSABLE_ENTITY, Some((text, &form))).await
}

async fn confirm_delete(State(app): State<App>, s: Signed, Path(id): Path<String>) -> Answer {
    let id = id_of(&id)?;
    let merchant_id = s.m.id;
    let e = read(&app, async |conn| endpoints::get(conn, merchant_id, id).await).await?;
    let main = super::confirmation(
        &s.ctx,
        "Delete this webhook endpoint?",
        html! {
            p { "Events will no longer be sent to " strong { (e.url) } ". Its deliveries are deleted with it; this cannot be undone." }
        },
        &format!("/dashboard/webhooks/{id}/delete"),
        html! { button type="submit" class="danger primary" { "Yes, delete the endpoint" } },
        (&format!("/dashboard/webhooks/{id}"), "No, keep the endpoint"),
    );
    Ok(s.page(StatusCode::OK, "Delete the webhook endpoint", "", main))
}

/// `endpoints::delete` (one `deleted` event), only from the confirmation page.
async fn delete(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    if p.form.get("confirm") != "yes" {
        return Ok(redirect(&format!("/dashboard/webhooks/{id}/delete")));
    }
    let merchant_id = p.m.id;
    in_tx(&app, async |tx| endpoints::delete(tx, merchant_id, id).await.map(|_| ())).await.map_err(error_page)?;
    Ok(redirect("/dashboard/webhooks?done=deleted"))
}

/// `endpoints::rotate`, as `POST /v1/webhook-endpoints/{id}/rotate-secret`: the new
/// secret is shown on this answer only; the old one keeps signing for a day.
async fn rotate(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    let merchant_id = p.m.id;
    let e =
        in_tx(&app, async |tx| endpoints::rotate(tx, merchant_id, id, RotateSecret { expires_in_seconds: None }).await)
            .await
            .map_err(error_page)?;
    let main = html! {
        p { a href={ "/dashboard/webhooks/" (id) } { "Back to the endpoint" } }
        h1 { "New signing secret" }
        div class="notice" role="status" {
            p { "The new secret, shown only now. The previous one keeps signing for 24 hours." }
            p class="secret" id="endpoint-secret" { (e.secret) }
        }
    };
    let (s, _) = p.signed();
    Ok(s.page(StatusCode::OK, "New signing secret", "", main))
}

/// `deliveries::retry_now`, as `POST /v1/webhook-deliveries/{id}/retry`.
async fn retry_delivery(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    let merchant_id = p.m.id;
    let d = in_tx(&app, async |tx| deliveries::retry_now(tx, merchant_id, id, app.lease_secs).await)
        .await
        .map_err(error_page)?;
    app.enqueue(&[Job::DeliverWebhook(DeliverWebhook { delivery_id: d.id, attempt: 0 })]).await;
    Ok(redirect(&format!("/dashboard/webhooks/{}?done=retry", d.endpoint_id)))
}
