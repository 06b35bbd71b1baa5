//! The merchant's account: its events (`events::list`), the portal and checkout
//! settings (`settings::update`, as `PATCH /v1/settings`), and for sandbox merchants
//! the sandbox gateway's ledger (`gateway::sandbox::list_ledger`).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use maud::html;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::subscriptions::event_table;
use super::{PAGE, Posted, Signed, now};
use crate::app::App;
use crate::error::Error;
use crate::events::{self, EventFilter};
use crate::pages::format_money;
use crate::pages::signed_in::{
    Answer, alert, cursor, data_table, error_page, form_problem, in_tx, not_found, notice, paged, pager, read,
    redirect, when,
};
use crate::plans::{PlanStatus, repo::PlanFilter};

pub fn router() -> axum::Router<App> {
    use axum::routing::get;
    axum::Router::new()
        .route("/dashboard/events", get(events_page))
        .route("/dashboard/settings", get(settings_page).post(save_settings))
        .route("/dashboard/ledger", get(ledger))
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

async fn events_page(State(app): State<App>, s: Signed, Query(q): Query<EventQuery>) -> Answer {
    let now = now(&app).await?;
    let kind = q.kind.as_deref().map(str::trim).filter(|k| !k.is_empty());
    let object = q.object_id.as_deref().map(str::trim).filter(|o| !o.is_empty());
    let object_id = object
        .map(|o| Uuid::parse_str(o).map_err(|_| error_page(Error::validation("objectId", "must be an id"))))
        .transpose()?;
    let f = EventFilter {
        object_type: None,
        object_id,
        kind: kind.map(str::to_owned),
        after_seq: cursor(q.cursor.as_deref(), "cursor")?,
        limit: PAGE as i64 + 1,
    };
    let merchant_id = s.m.id;
    let rows = read(&app, async |conn| events::list(conn, merchant_id, &f).await).await?;
    let (rows, next) = paged(rows, PAGE, |e| e.seq.to_string());
    let main = html! {
        h1 { "Events" }
        form method="get" action="/dashboard/events" class="filters" role="search" {
            div class="field" { label for="e-type" { "Event type" } input type="text" id="e-type" name="type" value=[kind]; }
            div class="field" { label for="e-object" { "Object id" } input type="text" id="e-object" name="objectId" value=[object]; }
            button type="submit" { "Filter" }
        }
        (event_table(&rows, now, "Events"))
        (pager("/dashboard/events", &[("type", kind), ("objectId", object)], "cursor", next.as_deref()))
    };
    Ok(s.page(StatusCode::OK, "Events", "/dashboard/events", main))
}

// ---- portal settings ----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct Done {
    done: Option<String>,
}

/// The portal's actions and the checkout's allowed origins (`GET`/`PATCH /v1/settings`).
async fn settings_page(State(app): State<App>, s: Signed, Query(q): Query<Done>) -> Answer {
    render_settings(&app, &s, StatusCode::OK, q.done.is_some().then_some("The settings are saved."), None).await
}

async fn render_settings(
    app: &App,
    s: &Signed,
    code: StatusCode,
    done: Option<&str>,
    problem: Option<String>,
) -> Answer {
    let merchant_id = s.m.id;
    let (st, plans) = read(app, async |conn| {
        let settings = crate::settings::get(conn, merchant_id).await?;
        let f = PlanFilter { status: Some(PlanStatus::Active), tag: None, after: None, limit: 100 };
        Ok((settings, crate::plans::repo::list(conn, merchant_id, &f).await?))
    })
    .await?;
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
        (notice(done))
        (alert(problem.as_deref()))
        form method="post" action="/dashboard/settings" {
            (s.ctx.field())
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
    Ok(s.page(code, "Settings", "/dashboard/settings", main))
}

/// `settings::update`, as `PATCH /v1/settings` with every field (one `updated` event).
async fn save_settings(State(app): State<App>, p: Posted) -> Answer {
    let form = &p.form;
    let on = |name: &str| form.get(name) == "1";
    let origins: Vec<&str> = form.get("allowed_origins").lines().map(str::trim).filter(|o| !o.is_empty()).collect();
    let req = json!({
        "allowedOrigins": origins,
        "portal": {
            "pause": on("pause"), "cancel": on("cancel"), "cancelAtPeriodEnd": on("cancel_at_period_end"),
            "switchPlan": on("switch_plan"), "switchablePlanIds": form.all("switchable_plan"),
            "updateAuthorizedLimit": on("update_authorized_limit"), "updatePaymentMethod": on("update_payment_method"),
        },
    });
    let merchant_id = p.m.id;
    let done = in_tx(&app, async |tx| {
        let req = serde_json::from_value::<crate::settings::UpdateSettings>(req)
            .map_err(|_| Error::validation("portal.switchablePlanIds", "must be plans of yours"))?;
        crate::settings::update(tx, merchant_id, req).await.map(|_| ())
    })
    .await;
    let Err(e) = done else { return Ok(redirect("/dashboard/settings?done=saved")) };
    let text = form_problem(e).map_err(error_page)?;
    let (s, _) = p.signed();
    render_settings(&app, &s, StatusCode::UNPROCESSABLE_ENTITY, None, Some(text)).await
}

// ---- the sandbox ledger ---------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct CursorQuery {
    cursor: Option<String>,
}

/// The sandbox gateway's ledger of this merchant's charges (sandbox merchants only).
async fn ledger(State(app): State<App>, s: Signed, Query(q): Query<CursorQuery>) -> Answer {
    if !s.m.sandbox {
        return Err(not_found());
    }
    let now = now(&app).await?;
    let after = cursor(q.cursor.as_deref(), "cursor")?;
    let rows = crate::gateway::sandbox::list_ledger(&app.pool, Some(s.m.merchant_key), None, after, PAGE as i64 + 1)
        .await
        .map_err(error_page)?;
    let (rows, next) = paged(rows, PAGE, |r| r.id.to_string());
    let main = html! {
        h1 { "Sandbox ledger" }
        p { "Every charge the sandbox gateway approved for you: what a real acquirer would have settled." }
        @if rows.is_empty() { p { "No charge yet." } } @else {
            (data_table("Sandbox ledger", Some("ledger"), &["When", "Customer", "Amount", "Payment method", "Reference"], html! {
                @for r in &rows {
                    tr {
                        td { (when(r.created_at, now)) } td { (r.customer_account_id) }
                        td class="num" { (format_money(r.amount, &r.currency)) } td { (r.payment_method) } td { code { (r.reference) } }
                    }
                }
            }))
        }
        (pager("/dashboard/ledger", &[], "cursor", next.as_deref()))
    };
    Ok(s.page(StatusCode::OK, "Sandbox ledger", "/dashboard/ledger", main))
}
