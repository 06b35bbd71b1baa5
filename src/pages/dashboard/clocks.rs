//! Test clocks of sandbox merchants (docs/api.md#test-clocks): the list, create one
//! (`test_clocks::create`, as `POST /v1/test-clocks`), a clock with the subscriptions
//! that follow it, and "advance to" (`test_clocks::advance` then
//! `scheduler::enqueue_clock`, exactly as `POST /v1/test-clocks/{id}/advance`: forward
//! only, and the work the move made due is enqueued before the answer). A live
//! merchant has no test clocks: these pages are not in its navigation and answer 404.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::subscriptions::{self, id_of};
use super::{PAGE, Posted, Signed, now};
use crate::app::App;
use crate::error::Error;
use crate::merchants::Merchant;
use crate::pages::signed_in::{
    Answer, Form, alert, cursor, data_table, error_page, in_tx, not_found, notice, paged, pager, read, redirect, when,
};
use crate::scheduler::{self, SchedulerOptions};
use crate::subscriptions::repo;
use crate::test_clocks::{self, CreateTestClock, TestClock};

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/dashboard/test-clocks", get(list).post(create))
        .route("/dashboard/test-clocks/{id}", get(show))
        .route("/dashboard/test-clocks/{id}/advance", post(advance))
}

/// Test clocks are for sandbox merchants only: any other is "not found" here.
fn sandbox_only(m: &Merchant) -> Result<(), Response> {
    if m.sandbox { Ok(()) } else { Err(not_found()) }
}

/// A `datetime-local` field's value (or an RFC 3339 instant), read as UTC.
fn instant(field: &str, text: &str) -> Result<DateTime<Utc>, Error> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::validation(field, "is required"));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.to_utc());
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| t.and_utc())
        .ok_or_else(|| Error::validation(field, "must be a date and time in UTC, such as 2026-12-01T14:05"))
}

/// An instant as a `datetime-local` field's value (UTC, to the second).
fn field_value(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    cursor: Option<String>,
}

async fn list(State(app): State<App>, s: Signed, Query(q): Query<ListQuery>) -> Answer {
    sandbox_only(&s.m)?;
    render_list(&app, &s, q.cursor.as_deref(), StatusCode::OK, None).await
}

async fn render_list(
    app: &App,
    s: &Signed,
    after: Option<&str>,
    code: StatusCode,
    problem: Option<(String, &Form)>,
) -> Answer {
    let now = now(app).await?;
    let after = cursor(after, "cursor")?;
    let merchant_id = s.m.id;
    let (rows, counts) = read(app, async |conn| {
        let rows = test_clocks::list(conn, merchant_id, after, PAGE as i64 + 1).await?;
        let ids: Vec<Uuid> = rows.iter().map(|c| c.id).collect();
        Ok((rows, test_clocks::subscription_counts(conn, merchant_id, &ids).await?))
    })
    .await?;
    let (rows, next) = paged(rows, PAGE, |c| c.id.to_string());
    let filled = |name: &str| problem.as_ref().and_then(|(_, f)| f.opt(name)).map(str::to_owned);
    let main = html! {
        h1 { "Test clocks" }
        p { "A test clock is a time of your own that subscriptions created on it follow instead of the real one. Move it forward to see renewals, retries and trial ends happen now." }
        @if rows.is_empty() { p { "No test clock yet." } } @else {
            (data_table("Test clocks", Some("clocks"), &["Name", "Frozen at", "Status", "Subscriptions", "Created"], html! {
                @for c in &rows {
                    @let (running, all) = counts.get(&c.id).copied().unwrap_or((0, 0));
                    tr {
                        td { a href={ "/dashboard/test-clocks/" (c.id) } { (name_of(c)) } }
                        td { (when(c.frozen_time, now)) }
                        td class="status" { (status(running)) }
                        td class="num" { (all) }
                        td { (when(c.created_at, now)) }
                    }
                }
            }))
        }
        (pager("/dashboard/test-clocks", &[], "cursor", next.as_deref()))
        h2 id="new" { "New test clock" }
        (alert(problem.as_ref().map(|(p, _)| p.as_str())))
        form method="post" action="/dashboard/test-clocks" {
            (s.ctx.field())
            div class="field" { label for="c-name" { "Name (optional)" } input type="text" id="c-name" name="name" value=[filled("name")]; }
            div class="field" {
                label for="c-frozen" { "Starts at (UTC)" }
                input type="datetime-local" step="1" id="c-frozen" name="frozen_time" required
                    value=(filled("frozen_time").unwrap_or_else(|| field_value(now)));
            }
            button type="submit" class="primary" { "Create test clock" }
        }
    };
    Ok(s.page(code, "Test clocks", "/dashboard/test-clocks", main))
}

fn name_of(c: &TestClock) -> String {
    c.name.clone().unwrap_or_else(|| format!("Clock {}", &c.id.to_string()[..8]))
}

/// A clock with running subscriptions is swept by the scheduler (`test_clocks::live`).
fn status(running: i64) -> String {
    match running {
        0 => "idle".to_owned(),
        1 => "running: 1 subscription".to_owned(),
        n => format!("running: {n} subscriptions"),
    }
}

/// `test_clocks::create`, as `POST /v1/test-clocks`.
async fn create(State(app): State<App>, p: Posted) -> Answer {
    sandbox_only(&p.m)?;
    let merchant_id = p.m.id;
    let made = in_tx(&app, async |tx| {
        let req = CreateTestClock {
            frozen_time: instant("frozenTime", p.form.get("frozen_time"))?,
            name: p.form.opt("name").map(str::to_owned),
        };
        test_clocks::create(tx, merchant_id, req).await
    })
    .await;
    match made {
        Ok(c) => Ok(redirect(&format!("/dashboard/test-clocks/{}?done=created", c.id))),
        Err(e) => {
            let text = crate::pages::signed_in::form_problem(e).map_err(error_page)?;
            let (s, form) = p.signed();
            render_list(&app, &s, None, StatusCode::UNPROCESSABLE_ENTITY, Some((text, &form))).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ShowQuery {
    cursor: Option<String>,
    done: Option<String>,
}

async fn show(State(app): State<App>, s: Signed, Path(id): Path<String>, Query(q): Query<ShowQuery>) -> Answer {
    sandbox_only(&s.m)?;
    let id = id_of(&id)?;
    let done = match q.done.as_deref() {
        Some("created") => Some("The test clock is created."),
        Some("advanced") => Some("The test clock moved; what fell due is being charged."),
        _ => None,
    };
    render_clock(&app, &s, id, q.cursor.as_deref(), StatusCode::OK, done, None).await
}

async fn render_clock(
    app: &App,
    s: &Signed,
    id: Uuid,
    after: Option<&str>,
    code: StatusCode,
    done: Option<&str>,
    problem: Option<(String, &Form)>,
) -> Answer {
    let real_now = now(app).await?;
    let after = cursor(after, "cursor")?;
    let merchant_id = s.m.id;
    let (clock, subs) = read(app, async |conn| {
        let clock = test_clocks::get(conn, merchant_id, id).await?;
        let ids = test_clocks::subscription_ids(conn, merchant_id, id, after, PAGE as i64 + 1).await?;
        let mut subs = Vec::with_capacity(ids.len());
        for sub in ids {
            subs.push(repo::get(conn, merchant_id, sub).await?);
        }
        Ok((clock, subs))
    })
    .await?;
    let (subs, next) = paged(subs, PAGE, |s| s.id.to_string());
    let typed = problem.as_ref().and_then(|(_, f)| f.opt("to")).map(str::to_owned);
    let main = html! {
        p { a href="/dashboard/test-clocks" { "All test clocks" } }
        h1 { (name_of(&clock)) }
        (notice(done))
        dl {
            dt { "Id" } dd { code { (clock.id) } }
            dt { "Frozen at" } dd id="frozen-time" { (when(clock.frozen_time, real_now)) }
            dt { "Created" } dd { (when(clock.created_at, real_now)) }
        }
        h2 { "Advance" }
        p { "A test clock only moves forward. Every renewal, retry, trial end and cancellation that falls due by then is run now, once." }
        (alert(problem.as_ref().map(|(p, _)| p.as_str())))
        form method="post" action={ "/dashboard/test-clocks/" (id) "/advance" } {
            (s.ctx.field())
            div class="field" {
                label for="c-to" { "Advance to (UTC)" }
                input type="datetime-local" step="1" id="c-to" name="to" required min=(field_value(clock.frozen_time))
                    value=(typed.unwrap_or_else(|| field_value(clock.frozen_time)))
                    aria-invalid=[problem.as_ref().map(|_| "true")];
            }
            button type="submit" class="primary" { "Advance the clock" }
        }
        h2 { "Subscriptions on this clock" }
        (subscriptions::table(&subs, clock.frozen_time, "Subscriptions on this clock", "No subscription follows this clock yet: create one with this clock chosen on the New subscription form, or with the API's testClockId."))
        (pager(&format!("/dashboard/test-clocks/{id}"), &[], "cursor", next.as_deref()))
    };
    Ok(s.page(code, "Test clock", "", main))
}

/// "Advance to": `test_clocks::advance` in one transaction, then the work the move
/// made due is enqueued (`scheduler::enqueue_clock`), as the API's advance does. A
/// time before the clock's is refused on the form (409), as an unreadable one (422).
async fn advance(State(app): State<App>, Path(id): Path<String>, p: Posted) -> Answer {
    sandbox_only(&p.m)?;
    let id = id_of(&id)?;
    let merchant_id = p.m.id;
    let moved = in_tx(&app, async |tx| {
        let to = instant("to", p.form.get("to"))?;
        test_clocks::advance(tx, merchant_id, id, to).await
    })
    .await;
    let (status, text) = match moved {
        Ok(clock) => {
            let opts = SchedulerOptions { lease_secs: app.lease_secs, ..SchedulerOptions::default() };
            scheduler::enqueue_clock(&app.pool, &app.queue, &opts, id, clock.frozen_time)
                .await
                .map_err(|e| error_page(Error::Internal(e.context("enqueue the work the advance made due"))))?;
            return Ok(redirect(&format!("/dashboard/test-clocks/{id}?done=advanced")));
        }
        Err(Error::Conflict { detail, .. }) => (StatusCode::CONFLICT, format!("to: {detail}.")),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, crate::pages::signed_in::form_problem(e).map_err(error_page)?),
    };
    let (s, form) = p.signed();
    render_clock(&app, &s, id, None, status, None, Some((text, &form))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datetime_field_is_read_as_utc() {
        let t = DateTime::parse_from_rfc3339("2030-02-15T10:01:00Z").unwrap().to_utc();
        for text in ["2030-02-15T10:01", "2030-02-15T10:01:00", " 2030-02-15 10:01 ", "2030-02-15T11:01:00+01:00"] {
            assert_eq!(instant("to", text).unwrap(), t, "{text}");
        }
        assert_eq!(field_value(t), "2030-02-15T10:01:00");
        for text in ["", "next tuesday", "2030-02-30T10:00"] {
            let e = crate::pages::signed_in::form_problem(instant("to", text).unwrap_err()).unwrap();
            assert!(e.starts_with("to: "), "{e}");
        }
    }
}
