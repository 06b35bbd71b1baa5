//! Plans: the list (filter by tag and status), create (the form becomes the API's
//! `CreatePlan`), edit (`UpdatePlan`), activate and archive (`plans::repo`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::html;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::subscriptions::id_of;
use super::{PAGE, Posted, Signed, now};
use crate::app::App;
use crate::error::Error;
use crate::pages::format_money;
use crate::pages::signed_in::{
    Answer, Form, alert, cursor, data_table, error_page, form_problem, in_tx, not_found, notice, paged, pager, read,
    redirect, when, wire,
};
use crate::plans::{self, CreatePlan, PlanStatus};

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dashboard/plans", get(list).post(create))
        .route("/dashboard/plans/{id}/edit", get(edit).post(save))
        .route("/dashboard/plans/{id}/{action}", post(set_status))
}

/// Comma-separated tags, trimmed, without empty ones.
pub(super) fn comma_list(text: &str) -> Vec<&str> {
    text.split(',').map(str::trim).filter(|t| !t.is_empty()).collect()
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    status: Option<String>,
    tag: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

fn done_notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "The plan is created.",
        "activate" => "The plan is active.",
        "archive" => "The plan is archived.",
        "updated" => "The plan is saved.",
        _ => return None,
    })
}

async fn list(State(app): State<App>, s: Signed, Query(q): Query<ListQuery>) -> Answer {
    render(&app, &s, &q, StatusCode::OK, None).await
}

async fn render(app: &App, s: &Signed, q: &ListQuery, code: StatusCode, problem: Option<(String, &Form)>) -> Answer {
    let now = now(app).await?;
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let status_filter = status
        .map(|s| {
            serde_json::from_value::<PlanStatus>(json!(s))
                .map_err(|_| error_page(Error::validation("status", "is not a plan status")))
        })
        .transpose()?;
    let tag = q.tag.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let f = plans::repo::PlanFilter {
        status: status_filter,
        tag: tag.map(str::to_owned),
        after: cursor(q.cursor.as_deref(), "cursor")?,
        limit: PAGE as i64 + 1,
    };
    let merchant_id = s.m.id;
    let rows = read(app, async |conn| plans::repo::list(conn, merchant_id, &f).await).await?;
    let (rows, next) = paged(rows, PAGE, |p| p.id.to_string());
    let filled = |name: &str| problem.as_ref().and_then(|(_, f)| f.opt(name)).map(str::to_owned);
    let plan_action = |id: Uuid, name: &str, text: &str| {
        html! {
            form method="post" action={ "/dashboard/plans/" (id) "/" (name) } class="inline" {
                (s.ctx.field())
                button type="submit" { (text) }
            }
        }
    };
    let main = html! {
        h1 { "Plans" }
        (notice(done_notice(q.done.as_deref())))
        form method="get" action="/dashboard/plans" class="filters" role="search" {
            div class="field" {
                label for="tag" { "Tag" }
                input type="text" id="tag" name="tag" value=[tag];
            }
            div class="field" {
                label for="plan-status" { "Status" }
                select id="plan-status" name="status" {
                    option value="" { "Any" }
                    @for st in ["draft", "active", "archived"] { option value=(st) selected[status == Some(st)] { (st) } }
                }
            }
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() { p { "No plan matches." } } @else {
            (data_table("Plans", None, &["Name", "Price", "Tags", "Status", "Created", "[Actions]"], html! {
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
            }))
        }
        (pager("/dashboard/plans", &[("tag", tag), ("status", status)], "cursor", next.as_deref()))
        h2 id="new" { "New plan" }
        (alert(problem.as_ref().map(|(p, _)| p.as_str())))
        form method="post" action="/dashboard/plans" {
            (s.ctx.field())
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
    Ok(s.page(code, "Plans", "/dashboard/plans", main))
}

/// The form as the API's `CreatePlan`, so it passes the same checks.
fn plan_request(form: &Form) -> Result<CreatePlan, Error> {
    let int = |name: &str| -> Result<Option<i64>, Error> {
        form.opt(name)
            .map(|v| v.parse::<i64>().map_err(|_| Error::validation(name, "must be a whole number")))
            .transpose()
    };
    let body = json!({
        "name": form.get("name"),
        "amount": form.get("amount").trim(),
        "currency": form.get("currency").trim().to_uppercase(),
        "interval": {"unit": form.get("interval_unit"), "count": int("interval_count")?.unwrap_or(1)},
        "trialDays": int("trial_days")?,
        "tags": comma_list(form.get("tags")),
        "status": if form.get("status") == "active" { "active" } else { "draft" },
    });
    serde_json::from_value::<CreatePlan>(body).map_err(|e| Error::validation("plan", e.to_string()))
}

async fn create(State(app): State<App>, p: Posted) -> Answer {
    let merchant_id = p.m.id;
    let made = in_tx(&app, async |tx| {
        let valid = plan_request(&p.form)?.validate()?;
        plans::repo::insert(tx, merchant_id, valid).await
    })
    .await;
    let Err(e) = made else { return Ok(redirect("/dashboard/plans?done=created")) };
    let text = form_problem(e).map_err(error_page)?;
    let (s, form) = p.signed();
    render(&app, &s, &ListQuery::default(), StatusCode::UNPROCESSABLE_ENTITY, Some((text, &form))).await
}

async fn set_status(State(app): State<App>, Path((id, action)): Path<(String, String)>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    let to = match action.as_str() {
        "activate" => PlanStatus::Active,
        "archive" => PlanStatus::Archived,
        _ => return Err(not_found()),
    };
    let merchant_id = p.m.id;
    in_tx(&app, async |tx| plans::repo::set_status(tx, merchant_id, id, to).await.map(|_| ()))
        .await
        .map_err(error_page)?;
    Ok(redirect(&format!("/dashboard/plans?done={action}")))
}

async fn edit(State(app): State<App>, s: Signed, Path(id): Path<String>) -> Answer {
    render_edit(&app, &s, id_of(&id)?, StatusCode::OK, None).await
}

async fn render_edit(app: &App, s: &Signed, id: Uuid, code: StatusCode, problem: Option<String>) -> Answer {
    let merchant_id = s.m.id;
    let plan = read(app, async |conn| plans::repo::get(conn, merchant_id, id).await).await?;
    let main = html! {
        p { a href="/dashboard/plans" { "All plans" } }
        h1 { "Edit " (plan.name) }
        p { "Subscriptions already on the plan keep their price; a change applies to new subscriptions." }
        (alert(problem.as_deref()))
        form method="post" action={ "/dashboard/plans/" (id) "/edit" } {
            (s.ctx.field())
            div class="field" { label for="e-name" { "Name" } input type="text" id="e-name" name="name" required value=(plan.name); }
            div class="field" {
                label for="e-description" { "Description" }
                input type="text" id="e-description" name="description" value=(plan.description.as_deref().unwrap_or(""));
            }
            @if plan.status == PlanStatus::Draft {
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
    Ok(s.page(code, "Edit plan", "", main))
}

/// `plans::repo::update`, as `PATCH /v1/plans/{id}` (one `updated` event; the API's
/// checks: only a draft's amount may change).
async fn save(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    let id = id_of(&id)?;
    let form = &p.form;
    let mut req = json!({
        "name": form.get("name"),
        "description": form.opt("description"),
        "tags": comma_list(form.get("tags")),
    });
    // Only a draft's form has the amount (the API refuses changing an active plan's).
    if let Some(amount) = form.opt("amount") {
        req["amount"] = json!(amount);
    }
    let merchant_id = p.m.id;
    let done = in_tx(&app, async |tx| {
        let changes = serde_json::from_value::<plans::UpdatePlan>(req)
            .map_err(|e| Error::validation("plan", e.to_string()))?
            .validate()?;
        plans::repo::update(tx, merchant_id, id, changes).await.map(|_| ())
    })
    .await;
    let Err(e) = done else { return Ok(redirect("/dashboard/plans?done=updated")) };
    let text = form_problem(e).map_err(error_page)?;
    let (s, _) = p.signed();
    render_edit(&app, &s, id, StatusCode::UNPROCESSABLE_ENTITY, Some(text)).await
}
