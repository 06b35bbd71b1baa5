//! `/console` (docs/dashboard.md#the-operator-console): the operator's pages. The
//! operator signs in with `RECUR_ADMIN_TOKEN` (compared in constant time, as the admin
//! API does) and gets a 12-hour session. The queues of `recur queues`, the dead
//! letters of `recur dlq` (filter, show, replay, drain with a dry run first, the
//! archive) and merchants, through the same functions (`queue::stats`, `dlq`,
//! `merchants`). Without an admin token configured the console does not exist (404).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};
use jobs::Queue;
use maud::{Markup, html};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::signed_in::{self, CONSOLE, Ctx, Form, error_page, form_ok, not_found, query, redirect, when};
use crate::app::App;
use crate::dlq::{self, Filter};
use crate::error::Error;
use crate::page_sessions::{self, Kind};
use crate::queue::stats;

/// Rows on one page of a list.
const PAGE: usize = 25;

pub fn router() -> axum::Router<App> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/console", get(home))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/dead-letters", get(dead_letters))
        .route("/console/dead-letters/replay", post(replay))
        .route("/console/dead-letters/drain", get(drain_preview).post(drain))
        .route("/console/dead-letters/{id}", get(dead_letter))
        .route("/console/archive", get(archive))
        .route("/console/merchants", get(merchants).post(create_merchant))
}

/// The console exists only with an admin token.
fn enabled(app: &App) -> bool {
    app.admin_token.is_some()
}

async fn signed_in(app: &App, headers: &HeaderMap) -> Result<Ctx, Response> {
    if !enabled(app) {
        return Err(not_found());
    }
    match CONSOLE.session(app, headers).await {
        Ok(Some(s)) if s.merchant_id.is_none() => Ok(Ctx::new(s, headers)),
        Ok(_) => Err(redirect(&CONSOLE.sign_in_path())),
        Err(e) => Err(error_page(e)),
    }
}

async fn posted(app: &App, headers: &HeaderMap, body: &[u8]) -> Result<(Ctx, Form), Response> {
    let form = Form::parse(body);
    let ctx = match signed_in(app, headers).await {
        Ok(c) => c,
        Err(r) if r.status() != StatusCode::SEE_OTHER => return Err(r),
        Err(_) => {
            return Err(super::message(StatusCode::FORBIDDEN, "You are signed out", "Sign in to the console again."));
        }
    };
    if !form_ok(app, &ctx.session, &form, headers) {
        return Err(signed_in::expired_form());
    }
    Ok((ctx, form))
}

fn nav(ctx: &Ctx, current: &str) -> Markup {
    let link = |href: &str, text: &str| {
        html! { li { a href=(href) aria-current=[(href == current).then_some("page")] { (text) } } }
    };
    html! {
        nav aria-label="Console" {
            ul {
                (link("/console", "Queues"))
                (link("/console/dead-letters", "Dead letters"))
                (link("/console/archive", "Archive"))
                (link("/console/merchants", "Merchants"))
                li class="who" { "Operator" }
                li {
                    form method="post" action="/console/sign-out" {
                        (ctx.field())
                        button type="submit" { "Sign out" }
                    }
                }
            }
        }
    }
}

fn queue_param(name: Option<&str>) -> Result<Option<Queue>, Error> {
    match name.filter(|n| !n.is_empty()) {
        None => Ok(None),
        Some(n) => Queue::parse(n).map(Some).ok_or_else(|| Error::validation("queue", "is not a queue of recur")),
    }
}

// ---- signing in and out -----------------------------------------------------------

fn sign_in_page(status: StatusCode, headers: &HeaderMap, problem: Option<&str>) -> Response {
    let (nonce, fresh) = super::csrf::nonce(headers);
    let csrf = super::csrf::token(super::dashboard::SIGN_IN_KEY, &nonce);
    let body = super::layout(
        "Sign in – recur console",
        html! {
            h1 { "Operator console" }
            @if let Some(p) = problem { div class="alert" role="alert" { p { (p) } } }
            form method="post" action="/console/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                div class="field" {
                    label for="token" { "Admin token" }
                    input type="password" id="token" name="token" autocomplete="current-password" required;
                }
                button type="submit" class="primary" { "Sign in" }
            }
        },
        &[],
    );
    let mut r = super::html(status, body, super::Framing::Nobody, None);
    if fresh {
        r.headers_mut().append(header::SET_COOKIE, super::csrf::set_cookie(&nonce, super::csrf::SameSite::Strict));
    }
    r
}

async fn sign_in_form(State(app): State<App>, headers: HeaderMap) -> Response {
    if !enabled(&app) {
        return not_found();
    }
    sign_in_page(StatusCode::OK, &headers, None)
}

async fn sign_in(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(expected) = &app.admin_token else { return not_found() };
    let form = Form::parse(&body);
    if !super::csrf::verify(super::dashboard::SIGN_IN_KEY, form.get("csrf"), &headers, &app.public_url) {
        return signed_in::expired_form();
    }
    if !bool::from(form.get("token").as_bytes().ct_eq(expected.as_bytes())) {
        return sign_in_page(StatusCode::UNAUTHORIZED, &headers, Some("That is not the admin token."));
    }
    let made = async {
        let mut conn = app.pool.acquire().await?;
        page_sessions::create(&mut conn, Kind::Operator, None).await
    }
    .await;
    match made {
        Ok((_, raw)) => {
            let mut r = redirect("/console");
            r.headers_mut().append(header::SET_COOKIE, CONSOLE.set_cookie(&raw));
            r
        }
        Err(e) => error_page(e),
    }
}

async fn sign_out(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, _) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let done = async {
        let mut conn = app.pool.acquire().await?;
        page_sessions::revoke(&mut conn, ctx.session.id).await
    }
    .await;
    match done {
        Ok(()) => {
            let mut r = redirect(&CONSOLE.sign_in_path());
            r.headers_mut().append(header::SET_COOKIE, CONSOLE.clear_cookie());
            r
        }
        Err(e) => error_page(e),
    }
}

// ---- queues -----------------------------------------------------------------------

/// Queue depths over the last 15 minutes, sampled by this process (docs/dashboard.md#queues).
pub mod samples {
    use std::collections::VecDeque;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use chrono::{DateTime, Utc};

    use crate::queue::Enqueuer;

    /// One sample: waiting (pending + scheduled + running) and dead, over every queue.
    #[derive(Debug, Clone, Copy)]
    pub struct Sample {
        pub at: DateTime<Utc>,
        pub waiting: u64,
        pub dead: u64,
    }

    pub const EVERY: Duration = Duration::from_secs(10);
    pub const KEEP: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

    static SAMPLES: Mutex<VecDeque<Sample>> = Mutex::new(VecDeque::new());
    static STARTED: OnceLock<()> = OnceLock::new();

    pub fn record(s: Sample) {
        let mut all = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
        all.push_back(s);
        while all.front().is_some_and(|f| s.at - f.at > KEEP) {
            all.pop_front();
        }
    }

    pub fn recent() -> Vec<Sample> {
        SAMPLES.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// Start sampling every 10 seconds, once per process, when the console is first
    /// opened: a process nobody watches spends nothing on it.
    pub fn start(q: &Enqueuer) {
        STARTED.get_or_init(|| {
            let q = q.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(all) = crate::queue::stats::all(&q).await {
                        record(of(&all, Utc::now()));
                    }
                    tokio::time::sleep(EVERY).await;
                }
            });
        });
    }

    pub fn of(all: &[crate::queue::stats::QueueStats], at: DateTime<Utc>) -> Sample {
        Sample {
            at,
            waiting: all.iter().map(|s| s.pending + s.scheduled + s.running).sum(),
            dead: all.iter().map(|s| s.dead).sum(),
        }
    }
}

/// An inline SVG line chart of the samples (no script, no outside asset).
fn chart(points: &[samples::Sample], now: DateTime<Utc>) -> Markup {
    let (w, h, pad) = (600.0_f64, 160.0_f64, 24.0_f64);
    let max = points.iter().map(|p| p.waiting.max(p.dead)).max().unwrap_or(0).max(1) as f64;
    let span = samples::KEEP.num_seconds() as f64;
    let x = |t: DateTime<Utc>| pad + (w - 2.0 * pad) * (1.0 - ((now - t).num_seconds() as f64 / span).clamp(0.0, 1.0));
    let y = |v: u64| h - pad - (h - 2.0 * pad) * (v as f64 / max);
    let line = |f: &dyn Fn(&samples::Sample) -> u64| {
        points.iter().map(|p| format!("{:.1},{:.1}", x(p.at), y(f(p)))).collect::<Vec<_>>().join(" ")
    };
    let last = points.last();
    let summary = match last {
        Some(l) => format!(
            "Over the last 15 minutes ({} samples): now {} jobs waiting or running and {} dead; at most {}.",
            points.len(),
            l.waiting,
            l.dead,
            max as u64
        ),
        None => "No sample yet: the first is taken now, then every 10 seconds.".to_owned(),
    };
    html! {
        figure {
            svg class="chart" viewBox={ "0 0 " (w) " " (h) } role="img" aria-label=(summary) {
                line class="axis" x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) {}
                line class="axis" x1=(pad) y1=(pad) x2=(pad) y2=(h - pad) {}
                text x=(pad) y=(pad - 6.0) { (max as u64) }
                text x=(pad) y=(h - 6.0) { "−15 min" }
                text x=(w - pad - 20.0) y=(h - 6.0) { "now" }
                polyline class="depth" points=(line(&|p| p.waiting)) {}
                polyline class="done" points=(line(&|p| p.dead)) {}
                @if let Some(l) = last { circle cx=(format!("{:.1}", x(l.at))) cy=(format!("{:.1}", y(l.waiting))) r="3" {} }
            }
            figcaption { (summary) " Solid: waiting or running; dashed: dead letters." }
        }
    }
}

async fn home(State(app): State<App>, headers: HeaderMap) -> Response {
    let ctx = match signed_in(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    samples::start(&app.queue);
    let all = match stats::all(&app.queue).await {
        Ok(a) => a,
        Err(e) => return error_page(e),
    };
    let now = Utc::now();
    let mut points = samples::recent();
    if points.last().is_none_or(|p| now - p.at > chrono::TimeDelta::seconds(1)) {
        let s = samples::of(&all, now);
        samples::record(s);
        points.push(s);
    }
    let workers = all.iter().map(|s| s.workers).max().unwrap_or(0);
    let main = html! {
        h1 { "Queues" }
        p { a href="/console" { "Refresh" } " " span id="live-status" class="muted" role="status" {} }
        div id="live" {
        p { "Workers alive: " strong id="workers" { (workers) } " " span class="muted" { "(as of " (when(now, now)) ")" } }
        div class="table" tabindex="0" role="region" aria-label="Queues" {
            table id="queues" {
                thead { tr {
                    th scope="col" { "Queue" } th scope="col" { "Pending" } th scope="col" { "Scheduled" }
                    th scope="col" { "Running" } th scope="col" { "Dead" } th scope="col" { "Workers" }
                } }
                tbody {
                    @for s in &all {
                        tr {
                            th scope="row" { (s.queue) }
                            td class="num" { (s.pending) } td class="num" { (s.scheduled) } td class="num" { (s.running) }
                            td class="num" {
                                @if s.dead > 0 { a href={ "/console/dead-letters" (query(&[("queue", Some(&s.queue))])) } { (s.dead) } }
                                @else { (s.dead) }
                            }
                            td class="num" { (s.workers) }
                        }
                    }
                }
            }
        }
        h2 { "The last 15 minutes" }
        (chart(&points, now))
        }
    };
    ctx.page_with(StatusCode::OK, "Queues – recur console", nav(&ctx, "/console"), main, &["/assets/console.js"])
}

// ---- dead letters -----------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct DlqQuery {
    queue: Option<String>,
    error: Option<String>,
    after: Option<String>,
    done: Option<String>,
}

fn filter_form(action: &str, queue: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        form method="get" action=(action) class="filters" role="search" {
            div class="field" {
                label for="f-queue" { "Queue" }
                select id="f-queue" name="queue" {
                    option value="" { "Every queue" }
                    @for q in Queue::ALL { option value=(q.name()) selected[queue == Some(q.name())] { (q.name()) } }
                }
            }
            div class="field" {
                label for="f-error" { "Error contains" }
                input type="text" id="f-error" name="error" value=[error];
            }
            button type="submit" { "Filter" }
        }
    }
}

async fn dead_letters(State(app): State<App>, headers: HeaderMap, Query(q): Query<DlqQuery>) -> Response {
    let ctx = match signed_in(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let queue_name = q.queue.as_deref().filter(|s| !s.is_empty());
    let error = q.error.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let queue = match queue_param(queue_name) {
        Ok(q) => q,
        Err(e) => return error_page(e),
    };
    let after = match q.after.as_deref().filter(|s| !s.is_empty()).map(Uuid::parse_str) {
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return error_page(Error::validation("after", "is not a cursor this page made")),
        None => None,
    };
    let f = Filter { queue, error_contains: error.map(str::to_owned), failed_before: None };
    let mut rows = match dlq::find_after(&app.queue, &f, after, PAGE + 1).await {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let next = more.then(|| rows.last().map(|d| d.id.to_string())).flatten();
    let now = Utc::now();
    let notice = q.done.as_deref().map(|d| d.to_owned());
    let main = html! {
        h1 { "Dead letters" }
        @if let Some(n) = &notice { div class="notice" role="status" { p { (n) } } }
        (filter_form("/console/dead-letters", queue_name, error))
        @if rows.is_empty() { p { "No dead letter matches." } } @else {
            form method="post" action="/console/dead-letters/replay" {
                (ctx.field())
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
                (ctx.field())
                input type="hidden" name="what" value="all";
                @if let Some(qn) = queue_name { input type="hidden" name="queue" value=(qn); }
                @if let Some(e) = error { input type="hidden" name="error" value=(e); }
                div class="actions" { button type="submit" { "Replay all matching" } }
            }
            p { a href={ "/console/dead-letters/drain" (query(&[("queue", queue_name)])) } { "Drain…" } }
        }
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" {
                a href={ "/console/dead-letters" (query(&[("queue", queue_name), ("error", error), ("after", Some(c))])) } { "Next page" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Dead letters – recur console", nav(&ctx, "/console/dead-letters"), main)
}

async fn dead_letter(State(app): State<App>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let ctx = match signed_in(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else { return not_found() };
    let d = match dlq::get(&app.queue, id).await {
        Ok(d) => d,
        Err(e) => return error_page(e),
    };
    let evs = async {
        let mut conn = app.pool.acquire().await?;
        crate::events::for_object(&mut conn, d.object_id, 100).await
    }
    .await;
    let evs = match evs {
        Ok(e) => e,
        Err(e) => return error_page(e),
    };
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
            (ctx.field())
            input type="hidden" name="what" value="selected";
            input type="hidden" name="id" value=(d.id);
            button type="submit" class="primary" { "Replay this job" }
        }
        h2 { "Payload" }
        pre { (payload) }
        h2 { "Events of the " (d.object_type) }
        @if evs.is_empty() { p { "No events." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Events of the billing object" {
                table {
                    thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Actor" } th scope="col" { "Data" } } }
                    tbody {
                        @for e in &evs {
                            tr { td { (when(e.created_at, now)) } td { (e.kind) } td { (signed_in::wire(&e.actor)) } td { code { (e.data.to_string()) } } }
                        }
                    }
                }
            }
        }
    };
    ctx.page(StatusCode::OK, "Dead letter – recur console", nav(&ctx, ""), main)
}

/// Replay one, the selected, or every match of a filter: `dlq::replay` for each
/// (attempts reset, an event by the operator per replay).
async fn replay(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (_ctx, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
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
    .await;
    let targets = match targets {
        Ok(t) => t,
        Err(e) => return error_page(e),
    };
    let now = match app.clock.now().await {
        Ok(n) => n,
        Err(e) => return error_page(e),
    };
    let (mut replayed, mut superseded) = (0, 0);
    for d in &targets {
        match dlq::replay(&app.pool, &app.queue, d, now, app.lease_secs).await {
            Ok(dlq::Replayed::Requeued) => replayed += 1,
            Ok(dlq::Replayed::Superseded) => superseded += 1,
            // Replayed meanwhile by someone else: nothing left to do for it.
            Err(Error::NotFound(_)) => {}
            Err(e) => return error_page(e),
        }
    }
    let text = format!("Replayed {replayed} dead letter(s); {superseded} superseded by a later attempt.");
    redirect(&format!("/console/dead-letters{}", query(&[("done", Some(&text))])))
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
async fn drain_preview(State(app): State<App>, headers: HeaderMap, Query(q): Query<DrainQuery>) -> Response {
    let ctx = match signed_in(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let now = Utc::now();
    let queue = q.queue.as_deref().filter(|s| !s.is_empty());
    let older = q.older_than_minutes.as_deref().filter(|s| !s.trim().is_empty());
    let f = match drain_filter(queue, older, now) {
        Ok(f) => f,
        Err(e) => return error_page(e),
    };
    let would = match dlq::drain(&app.pool, &app.queue, &f, true).await {
        Ok(w) => w,
        Err(e) => return error_page(e),
    };
    let main = html! {
        h1 { "Drain dead letters" }
        p { "Draining removes dead letters from Redis and keeps each one in the archive (Postgres). They are no longer replayed from here." }
        form method="get" action="/console/dead-letters/drain" class="filters" {
            div class="field" {
                label for="d-queue" { "Queue" }
                select id="d-queue" name="queue" {
                    option value="" { "Every queue" }
                    @for qq in Queue::ALL { option value=(qq.name()) selected[queue == Some(qq.name())] { (qq.name()) } }
                }
            }
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
                (ctx.field())
                @if let Some(qn) = queue { input type="hidden" name="queue" value=(qn); }
                @if let Some(o) = older { input type="hidden" name="older_than_minutes" value=(o); }
                // Only what the dry run saw: entries dead-lettered after it stay.
                input type="hidden" name="at" value=(now.to_rfc3339());
                input type="hidden" name="confirm" value="yes";
                button type="submit" class="danger primary" { "Drain these " (would.len()) " dead letter(s)" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Drain – recur console", nav(&ctx, ""), main)
}

async fn drain(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (_ctx, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    if form.get("confirm") != "yes" {
        return redirect("/console/dead-letters/drain");
    }
    let Ok(at) = DateTime::parse_from_rfc3339(form.get("at")).map(|t| t.to_utc()) else {
        return error_page(Error::validation("at", "run the dry run first"));
    };
    let f = match drain_filter(form.opt("queue"), form.opt("older_than_minutes"), at) {
        Ok(f) => f,
        Err(e) => return error_page(e),
    };
    match dlq::drain(&app.pool, &app.queue, &f, false).await {
        Ok(drained) => {
            let text = format!("Drained {} dead letter(s) into the archive.", drained.len());
            redirect(&format!("/console/archive{}", query(&[("done", Some(&text))])))
        }
        Err(e) => error_page(e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ArchiveQuery {
    queue: Option<String>,
    error: Option<String>,
    before: Option<String>,
    done: Option<String>,
}

async fn archive(State(app): State<App>, headers: HeaderMap, Query(q): Query<ArchiveQuery>) -> Response {
    let ctx = match signed_in(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let queue_name = q.queue.as_deref().filter(|s| !s.is_empty());
    let error = q.error.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let queue = match queue_param(queue_name) {
        Ok(q) => q,
        Err(e) => return error_page(e),
    };
    let before = match q.before.as_deref().filter(|s| !s.is_empty()).map(Uuid::parse_str) {
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => return error_page(Error::validation("before", "is not a cursor this page made")),
        None => None,
    };
    let f = Filter { queue, error_contains: error.map(str::to_owned), failed_before: None };
    let mut rows = match dlq::archive(&app.pool, &f, before, PAGE as i64 + 1).await {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let next = more.then(|| rows.last().map(|d| d.id.to_string())).flatten();
    let now = Utc::now();
    let main = html! {
        h1 { "Archive" }
        @if let Some(n) = &q.done { div class="notice" role="status" { p { (n) } } }
        p { "Dead letters drained from Redis, newest first. Draining never destroys a job's record." }
        (filter_form("/console/archive", queue_name, error))
        @if rows.is_empty() { p { "Nothing archived matches." } } @else {
            div class="table" tabindex="0" role="region" aria-label="Archived dead letters" {
                table id="archive" {
                    thead { tr {
                        th scope="col" { "Id" } th scope="col" { "Queue" } th scope="col" { "Attempts" }
                        th scope="col" { "Last error" } th scope="col" { "Failed" } th scope="col" { "Drained" } th scope="col" { "Object" }
                    } }
                    tbody {
                        @for d in &rows {
                            tr {
                                td { code { (d.id) } } td { (d.queue) } td class="num" { (d.attempts) }
                                td { (d.last_error) } td { (when(d.failed_at, now)) } td { (when(d.drained_at, now)) }
                                td { (d.object_type) " " code { (d.object_id) } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" {
                a href={ "/console/archive" (query(&[("queue", queue_name), ("error", error), ("before", Some(c))])) } { "Next page" }
            }
        }
    };
    ctx.page(StatusCode::OK, "Archive – recur console", nav(&ctx, "/console/archive"), main)
}

// ---- merchants --------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct MerchantQuery {
    after: Option<String>,
}

async fn merchants(State(app): State<App>, headers: HeaderMap, Query(q): Query<MerchantQuery>) -> Response {
    let ctx = match signed_in(&app, &headers).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    render_merchants(&app, &ctx, q.after.as_deref(), StatusCode::OK, None, None).await
}

async fn render_merchants(
    app: &App,
    ctx: &Ctx,
    after: Option<&str>,
    status: StatusCode,
    created: Option<&crate::merchants::Credentials>,
    problem: Option<String>,
) -> Response {
    let after = match after.filter(|s| !s.is_empty()).map(Uuid::parse_str) {
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => return error_page(Error::validation("after", "is not a cursor this page made")),
        None => None,
    };
    let mut rows = match crate::merchants::list(&app.pool, after, PAGE as i64 + 1).await {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let next = more.then(|| rows.last().map(|m| m.id.to_string())).flatten();
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
        @if let Some(p) = &problem { div class="alert" role="alert" { p { (p) } } }
        h2 { "New merchant" }
        form method="post" action="/console/merchants" {
            (ctx.field())
            div class="field" { label for="m-name" { "Name" } input type="text" id="m-name" name="name" required; }
            div class="field" {
                label for="m-sandbox" { input type="checkbox" id="m-sandbox" name="sandbox" value="1"; " Sandbox (test cards only)" }
            }
            button type="submit" class="primary" { "Create merchant" }
        }
        h2 { "All merchants" }
        div class="table" tabindex="0" role="region" aria-label="Merchants" {
            table id="merchants" {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Merchant key" } th scope="col" { "Sandbox" } th scope="col" { "Created" } } }
                tbody {
                    @for m in &rows {
                        tr { td { (m.name) } td { code { (m.merchant_key) } } td { @if m.sandbox { "yes" } @else { "no" } } td { (when(m.created_at, now)) } }
                    }
                }
            }
        }
        @if let Some(c) = &next {
            nav class="pager" aria-label="Pages" { a href={ "/console/merchants" (query(&[("after", Some(c))])) } { "Next page" } }
        }
    };
    ctx.page(status, "Merchants – recur console", nav(ctx, "/console/merchants"), main)
}

/// `merchants::create`, as `POST /admin/merchants`: the answer shows the secret once
/// (it is not a redirect, so no URL leads back to it).
async fn create_merchant(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let (ctx, form) = match posted(&app, &headers, &body).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match crate::merchants::create(&app.pool, form.get("name"), form.get("sandbox") == "1").await {
        Ok(c) => render_merchants(&app, &ctx, None, StatusCode::CREATED, Some(&c), None).await,
        Err(Error::Validation(errors)) => {
            let text = errors.iter().map(|e| format!("{}: {}.", e.field, e.message)).collect::<Vec<_>>().join(" ");
            render_merchants(&app, &ctx, None, StatusCode::UNPROCESSABLE_ENTITY, None, Some(text)).await
        }
        Err(e) => error_page(e),
    }
}
