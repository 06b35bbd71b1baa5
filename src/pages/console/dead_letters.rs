//! Dead letters (`recur dlq`'s code): the list (filter by queue and error text, paged),
//! one entry with its payload and its billing object's events, replay (one, the
//! selected, all matching: `dlq::replay`), drain after a dry run (`dlq::drain`), and
//! the archive (`dlq::archive`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::{Operator, OperatorPost, PAGE, queue_param, queue_select};
use crate::app::App;
use crate::dlq::{self, Filter};
use crate::error::Error;
use crate::pages::signed_in::{
    self, Answer, cursor, data_table, error_page, not_found, notice, paged, pager, query, read, redirect, when,
};

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/console/dead-letters", get(list))
        .route("/console/dead-letters/replay", post(replay))
        .route("/console/dead-letters/drain", get(drain_preview).post(drain))
        .route("/console/dead-letters/{id}", get(show))
        .route("/console/archive", get(archive))
}

/// The filter of the dead letters and of the archive: queue and error text.
#[derive(Debug, Default, Deserialize)]
struct FilterQuery {
    queue: Option<String>,
    error: Option<String>,
    /// The list's cursor (`after`) or the archive's (`before`).
    after: Option<String>,
    before: Option<String>,
    done: Option<String>,
}

impl FilterQuery {
    /// The queue's name and the error text as given (blank: none), and the filter.
    fn filter(&self) -> Result<(Option<&str>, Option<&str>, Filter), Error> {
        let queue = self.queue.as_deref().filter(|s| !s.is_empty());
        let error = self.error.as_deref().map(str::trim).filter(|s| !s.is_empty());
        let f = Filter { queue: queue_param(queue)?, error_contains: error.map(str::to_owned), failed_before: None };
        Ok((queue, error, f))
    }
}

fn filter_form(action: &str, queue: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        form method="get" action=(action) class="filters" role="search" {
            div class="field" { label for="f-queue" { "Queue" } (queue_select("f-queue", queue)) }
            div class="field" {
                label for="f-error" { "Error contains" }
                input type="text" id="f-error" name="error" value=[error];
            }
            button type="submit" { "Filter" }
        }
    }
}

async fn list(State(app): State<App>, op: Operator, Query(q): Query<FilterQuery>) -> Answer {
    let (queue, error, f) = q.filter().map_err(error_page)?;
    let after = cursor::<Uuid>(q.after.as_deref(), "after")?;
    let rows = dlq::find_after(&app.queue, &f, after, PAGE + 1).await.map_err(error_page)?;
    let (rows, next) = paged(rows, PAGE, |d| d.id.to_string());
    let now = Utc::now();
    let main = html! {
        h1 { "Dead letters" }
        (notice(q.done.as_deref()))
        (filter_form("/console/dead-letters", queue, error))
        @if rows.is_empty() { p { "No dead letter matches." } } @else {
            form method="post" action="/console/dead-letters/replay" {
                (op.0.field())
                div class="table" tabindex="0" role="region" aria-label="Dead letters" {
                    table id="dead-letters" {
                        thead { tr {
                            th scope="col" { span class="visually-hidden" { "Select" } } th scope="col" { "Id" }
                            th scope="col" { "Queue" } th scope="col" { "Attempts" } th scope="col" { "Last error" }
                            th scope="col" { "Failed" } th scope="col" { "Object" }
                        } }
                        tbody {
                            @for d in &rows {
                                tr {
                                    td { input type="checkbox" name="id" value=(d.id) id={ "sel-" (d.id) } aria-label={ "Select " (d.id) }; }
                                    td { a href={ "/console/dead-letters/" (d.id) } { code { (d.id) } } }
                                    td { (d.queue) }
                                    td class="num" { (d.attempts) }
                                    td class="error-text" { (d.last_error) }
                                    td { (when(d.failed_at, now)) }
                                    td { (d.object_type) " " code { (d.object_id) } }
                                }
                            }
                        }
                    }
                }
                div class="actions" {
                    button type="submit" name="what" value="selected" { "Replay the selected" }
                }
            }
            form method="post" action="/console/dead-letters/replay" {
                (op.0.field())
                input type="hidden" name="what" value="all";
                @if let Some(qn) = queue { input type="hidden" name="queue" value=(qn); }
                @if let Some(e) = error { input type="hidden" name="error" value=(e); }
                div class="actions" { button type="submit" { "Replay all matching" } }
            }
            p { a href={ "/console/dead-letters/drain" (query(&[("queue", queue)])) } { "Drain…" } }
        }
        (pager("/console/dead-letters", &[("queue", queue), ("error", error)], "after", next.as_deref()))
    };
    Ok(op.page(StatusCode::OK, "Dead letters", "/console/dead-letters", main))
}

async fn show(State(app): State<App>, op: Operator, Path(id): Path<String>) -> Answer {
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let d = dlq::get(&app.queue, id).await.map_err(error_page)?;
    let evs = read(&app, async |conn| crate::events::for_object(conn, d.object_id, 100).await).await?;
    let now = Utc::now();
    let payload = serde_json::to_string_pretty(&d.job).unwrap_or_default();
    let main = html! {
        p { a href="/console/dead-letters" { "All dead letters" } }
        h1 { "Dead letter " code { (d.id) } }
        dl {
            dt { "Queue" } dd { (d.queue) }
            dt { "Attempts" } dd { (d.attempts) }
            dt { "Failed" } dd { (when(d.failed_at, now)) }
            dt { "Last error" } dd class="error-text" { (d.last_error) }
            dt { "Billing object" } dd { (d.object_type) " " code { (d.object_id) } }
        }
        form method="post" action="/console/dead-letters/replay" {
            (op.0.field())
            input type="hidden" name="what" value="selected";
            input type="hidden" name="id" value=(d.id);
            button type="submit" class="primary" { "Replay this job" }
        }
        h2 { "Payload" }
        pre { (payload) }
        h2 { "Events of the " (d.object_type) }
        @if evs.is_empty() { p { "No events." } } @else {
            (data_table("Events of the billing object", None, &["When", "Event", "Actor", "Data"], html! {
                @for e in &evs {
                    tr { td { (when(e.created_at, now)) } td { (e.kind) } td { (signed_in::wire(&e.actor)) } td { code { (e.data.to_string()) } } }
                }
            }))
        }
    };
    Ok(op.page(StatusCode::OK, "Dead letter", "", main))
}

/// Replay one, the selected, or every match of a filter: `dlq::replay` for each
/// (attempts reset, an event by the operator per replay).
async fn replay(State(app): State<App>, OperatorPost(_, form): OperatorPost) -> Answer {
    let targets = async {
        match form.get("what") {
            "all" => {
                let f = Filter {
                    queue: queue_param(form.opt("queue"))?,
                    error_contains: form.opt("error").map(str::to_owned),
                    failed_before: None,
                };
                dlq::find(&app.queue, &f, usize::MAX).await
            }
            _ => {
                let ids = form.all("id");
                if ids.is_empty() {
                    return Err(Error::validation("id", "select at least one dead letter"));
                }
                let mut found = Vec::new();
                for id in ids {
                    let id = Uuid::parse_str(id).map_err(|_| Error::NotFound("dead letter"))?;
                    found.push(dlq::get(&app.queue, id).await?);
                }
                Ok(found)
            }
        }
    }
    .await
    .map_err(error_page)?;
    let now = app.clock.now().await.map_err(error_page)?;
    let (mut replayed, mut superseded) = (0, 0);
    for d in &targets {
        match dlq::replay(&app.pool, &app.queue, d, now, app.lease_secs).await {
            Ok(dlq::Replayed::Requeued) => replayed += 1,
            Ok(dlq::Replayed::Superseded) => superseded += 1,
            // Replayed meanwhile by someone else: nothing left to do for it.
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(error_page(e)),
        }
    }
    let text = format!("Replayed {replayed} dead letter(s); {superseded} superseded by a later attempt.");
    Ok(redirect(&format!("/console/dead-letters{}", query(&[("done", Some(&text))]))))
}

#[derive(Debug, Default, Deserialize)]
struct DrainQuery {
    queue: Option<String>,
    older_than_minutes: Option<String>,
}

fn drain_filter(queue: Option<&str>, older_than_minutes: Option<&str>, at: DateTime<Utc>) -> Result<Filter, Error> {
    let minutes = older_than_minutes
        .filter(|m| !m.trim().is_empty())
        .map(|m| m.trim().parse::<i64>().map_err(|_| Error::validation("older_than_minutes", "must be a whole number")))
        .transpose()?
        .unwrap_or(0)
        .clamp(0, 100 * 366 * 24 * 60);
    Ok(Filter {
        queue: queue_param(queue)?,
        error_contains: None,
        failed_before: Some(at - chrono::Duration::minutes(minutes)),
    })
}

/// The dry run: what a drain would archive, and a button to do it.
async fn drain_preview(State(app): State<App>, op: Operator, Query(q): Query<DrainQuery>) -> Answer {
    let now = Utc::now();
    let queue = q.queue.as_deref().filter(|s| !s.is_empty());
    let older = q.older_than_minutes.as_deref().filter(|s| !s.trim().is_empty());
    let f = drain_filter(queue, older, now).map_err(error_page)?;
    let would = dlq::drain(&app.pool, &app.queue, &f, true).await.map_err(error_page)?;
    let main = html! {
        h1 { "Drain dead letters" }
        p { "Draining removes dead letters from Redis and keeps each one in the archive (Postgres). They are no longer replayed from here." }
        form method="get" action="/console/dead-letters/drain" class="filters" {
            div class="field" { label for="d-queue" { "Queue" } (queue_select("d-queue", queue)) }
            div class="field" {
                label for="d-older" { "Failed at least this many minutes ago" }
                input type="text" inputmode="numeric" id="d-older" name="older_than_minutes" value=[older];
            }
            button type="submit" { "Dry run" }
        }
        h2 { "Dry run: " span id="would-drain" { (would.len()) } " dead letter(s) would be drained" }
        @if !would.is_empty() {
            ul { @for d in would.iter().take(PAGE) { li { code { (d.id) } " " (d.queue) ": " (d.last_error) } } }
            @if would.len() > PAGE { p { "… and " (would.len() - PAGE) " more." } }
            form method="post" action="/console/dead-letters/drain" {
                (op.0.field())
                @if let Some(qn) = queue { input type="hidden" name="queue" value=(qn); }
                @if let Some(o) = older { input type="hidden" name="older_than_minutes" value=(o); }
                // Only what the dry run saw: entries dead-lettered after it stay.
                input type="hidden" name="at" value=(now.to_rfc3339());
                input type="hidden" name="confirm" value="yes";
                button type="submit" class="danger primary" { "Drain these " (would.len()) " dead letter(s)" }
            }
        }
    };
    Ok(op.page(StatusCode::OK, "Drain", "", main))
}

async fn drain(State(app): State<App>, OperatorPost(_, form): OperatorPost) -> Answer {
    if form.get("confirm") != "yes" {
        return Ok(redirect("/console/dead-letters/drain"));
    }
    let Ok(at) = DateTime::parse_from_rfc3339(form.get("at")).map(|t| t.to_utc()) else {
        return Err(error_page(Error::validation("at", "run the dry run first")));
    };
    let f = drain_filter(form.opt("queue"), form.opt("older_than_minutes"), at).map_err(error_page)?;
    let drained = dlq::drain(&app.pool, &app.queue, &f, false).await.map_err(error_page)?;
    let text = format!("Drained {} dead letter(s) into the archive.", drained.len());
    Ok(redirect(&format!("/console/archive{}", query(&[("done", Some(&text))]))))
}

async fn archive(State(app): State<App>, op: Operator, Query(q): Query<FilterQuery>) -> Answer {
    let (queue, error, f) = q.filter().map_err(error_page)?;
    let before = cursor::<Uuid>(q.before.as_deref(), "before")?;
    let rows = dlq::archive(&app.pool, &f, before, PAGE as i64 + 1).await.map_err(error_page)?;
    let (rows, next) = paged(rows, PAGE, |d| d.id.to_string());
    let now = Utc::now();
    let main = html! {
        h1 { "Archive" }
        (notice(q.done.as_deref()))
        p { "Dead letters drained from Redis, newest first. Draining never destroys a job's record." }
        (filter_form("/console/archive", queue, error))
        @if rows.is_empty() { p { "Nothing archived matches." } } @else {
            (data_table("Archived dead letters", Some("archive"), &["Id", "Queue", "Attempts", "Last error", "Failed", "Drained", "Object"], html! {
                @for d in &rows {
                    tr {
                        td { code { (d.id) } } td { (d.queue) } td class="num" { (d.attempts) }
                        td { (d.last_error) } td { (when(d.failed_at, now)) } td { (when(d.drained_at, now)) }
                        td { (d.object_type) " " code { (d.object_id) } }
                    }
                }
            }))
        }
        (pager("/console/archive", &[("queue", queue), ("error", error)], "before", next.as_deref()))
    };
    Ok(op.page(StatusCode::OK, "Archive", "/console/archive", main))
}
