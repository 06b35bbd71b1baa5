//! Merchants: the list (paged) and creating one (`merchants::create`, as
//! `POST /admin/merchants`: its secret shown on that answer only).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use chrono::Utc;
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::{Operator, OperatorPost, PAGE};
use crate::app::App;
use crate::merchants::Credentials;
use crate::pages::signed_in::{Answer, alert, cursor, data_table, error_page, form_problem, paged, pager, when};

pub fn router() -> axum::Router<App> {
    axum::Router::new().route("/console/merchants", axum::routing::get(list).post(create))
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    after: Option<String>,
}

async fn list(State(app): State<App>, op: Operator, Query(q): Query<ListQuery>) -> Answer {
    render(&app, &op, q.after.as_deref(), StatusCode::OK, None, None).await
}

async fn render(
    app: &App,
    op: &Operator,
    after: Option<&str>,
    status: StatusCode,
    created: Option<&Credentials>,
    problem: Option<String>,
) -> Answer {
    let after = cursor::<Uuid>(after, "after")?;
    let rows = crate::merchants::list(&app.pool, after, PAGE as i64 + 1).await.map_err(error_page)?;
    let (rows, next) = paged(rows, PAGE, |m| m.id.to_string());
    let now = Utc::now();
    let main = html! {
        h1 { "Merchants" }
        @if let Some(c) = created {
            div class="notice" role="status" id="created" {
                p { "Merchant " strong { (c.name) } " created. Give it these credentials now: the secret is shown only this once." }
                dl {
                    dt { "Merchant key" } dd class="secret" id="new-key" { (c.merchant_key) }
                    dt { "Secret" } dd class="secret" id="new-secret" { (c.secret) }
                }
            }
        }
        (alert(problem.as_deref()))
        h2 { "New merchant" }
        form method="post" action="/console/merchants" {
            (op.0.field())
            div class="field" { label for="m-name" { "Name" } input type="text" id="m-name" name="name" required; }
            div class="field" {
                label for="m-sandbox" { input type="checkbox" id="m-sandbox" name="sandbox" value="1"; " Sandbox (test cards only)" }
            }
            button type="submit" class="primary" { "Create merchant" }
        }
        h2 { "All merchants" }
        (data_table("Merchants", Some("merchants"), &["Name", "Merchant key", "Sandbox", "Created"], html! {
            @for m in &rows {
                tr { td { (m.name) } td { code { (m.merchant_key) } } td { @if m.sandbox { "yes" } @else { "no" } } td { (when(m.created_at, now)) } }
            }
        }))
        (pager("/console/merchants", &[], "after", next.as_deref()))
    };
    Ok(op.page(status, "Merchants", "/console/merchants", main))
}

/// `merchants::create`, as `POST /admin/merchants`: the answer shows the secret once
/// (it is not a redirect, so no URL leads back to it).
async fn create(State(app): State<App>, OperatorPost(op, form): OperatorPost) -> Answer {
    match crate::merchants::create(&app.pool, form.get("name"), form.get("sandbox") == "1").await {
        Ok(c) => render(&app, &op, None, StatusCode::CREATED, Some(&c), None).await,
        Err(e) => {
            let text = form_problem(e).map_err(error_page)?;
            render(&app, &op, None, StatusCode::UNPROCESSABLE_ENTITY, None, Some(text)).await
        }
    }
}
