//! `/console`: the table of `recur queues` (`queue::stats::all`), the workers alive,
//! and two charts of the last 15 minutes drawn by the server from this process's own
//! samples: the jobs waiting or running and the dead letters, and each queue's
//! throughput (jobs completed a second).

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::Operator;
use crate::app::App;
use crate::pages::signed_in::{Answer, data_table, error_page, query, when};
use crate::queue::stats;

pub fn router() -> axum::Router<App> {
    axum::Router::new().route("/console", axum::routing::get(home))
}

/// Queue depths and completed jobs over the last 15 minutes, sampled by this process
/// (docs/dashboard.md#queues).
pub mod samples {
    use std::collections::VecDeque;
    use std::sync::{Mutex, OnceLock};
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use jobs::Queue;

    use crate::queue::Enqueuer;

    /// One sample: waiting (pending + scheduled + running) and dead over every queue,
    /// and for each queue (in `Queue::ALL` order) its jobs waiting and the jobs this
    /// process's workers have completed since it started (`completed`: a counter).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub at: DateTime<Utc>,
        pub waiting: u64,
        pub dead: u64,
        pub queues: Vec<QueueSample>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct QueueSample {
        pub waiting: u64,
        pub completed: u64,
    }

    pub const EVERY: Duration = Duration::from_secs(10);
    pub const KEEP: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

    static SAMPLES: Mutex<VecDeque<Sample>> = Mutex::new(VecDeque::new());
    static STARTED: OnceLock<()> = OnceLock::new();

    pub fn record(s: Sample) {
        let mut all = SAMPLES.lock().unwrap_or_else(|p| p.into_inner());
        let at = s.at;
        all.push_back(s);
        while all.front().is_some_and(|f| at - f.at > KEEP) {
            all.pop_front();
        }
    }

    pub fn recent() -> Vec<Sample> {
        SAMPLES.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
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

    /// The sample of these queue counts, with this process's completed jobs.
    pub fn of(all: &[crate::queue::stats::QueueStats], at: DateTime<Utc>) -> Sample {
        let completed = completed_jobs(&crate::telemetry::init_metrics().render());
        let waiting_of = |s: &crate::queue::stats::QueueStats| s.pending + s.scheduled + s.running;
        Sample {
            at,
            waiting: all.iter().map(waiting_of).sum(),
            dead: all.iter().map(|s| s.dead).sum(),
            queues: Queue::ALL
                .iter()
                .map(|q| QueueSample {
                    waiting: all.iter().find(|s| s.queue == q.name()).map(waiting_of).unwrap_or(0),
                    completed: completed.iter().find(|(n, _)| n == q.name()).map_or(0, |(_, c)| *c),
                })
                .collect(),
        }
    }

    /// The jobs completed (`recur_jobs_total{outcome="ok"}`) by queue, read from this
    /// process's own metrics (Prometheus text).
    pub fn completed_jobs(metrics: &str) -> Vec<(String, u64)> {
        let label = |labels: &str, name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            labels[start..].split('"').next().map(str::to_owned)
        };
        let mut out: Vec<(String, u64)> = Vec::new();
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("recur_jobs_total{") else { continue };
            let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
            if label(labels, "outcome").as_deref() != Some("ok") {
                continue;
            }
            let (Some(queue), Ok(n)) = (label(labels, "queue"), value.trim().parse::<f64>()) else { continue };
            match out.iter_mut().find(|(q, _)| *q == queue) {
                Some((_, c)) => *c += n as u64,
                None => out.push((queue, n as u64)),
            }
        }
        out
    }

    /// Jobs a second each queue completed between consecutive samples: for each
    /// queue, `(at, rate)` points at the later sample of each pair.
    pub fn throughput(points: &[Sample]) -> Vec<Vec<(DateTime<Utc>, f64)>> {
        (0..Queue::ALL.len())
            .map(|i| {
                points
                    .windows(2)
                    .filter_map(|w| {
                        let secs = (w[1].at - w[0].at).num_milliseconds() as f64 / 1000.0;
                        let (a, b) = (w[0].queues.get(i)?, w[1].queues.get(i)?);
                        // A counter only grows; a drop is a restart of the recorder.
                        (secs > 0.0).then(|| (w[1].at, b.completed.saturating_sub(a.completed) as f64 / secs))
                    })
                    .collect()
            })
            .collect()
    }

    /// Jobs each queue completed over the whole window (first to last sample).
    pub fn completed_in_window(points: &[Sample]) -> Vec<u64> {
        (0..Queue::ALL.len())
            .map(|i| match (points.first(), points.last()) {
                (Some(a), Some(b)) => {
                    let (a, b) =
                        (a.queues.get(i).map_or(0, |q| q.completed), b.queues.get(i).map_or(0, |q| q.completed));
                    b.saturating_sub(a)
                }
                _ => 0,
            })
            .collect()
    }
}

use samples::Sample;

/// The charts' frame: width, height, padding; x is time over the last 15 minutes.
struct Frame {
    w: f64,
    h: f64,
    pad: f64,
    now: DateTime<Utc>,
    max: f64,
}

impl Frame {
    fn new(now: DateTime<Utc>, max: f64) -> Frame {
        Frame { w: 600.0, h: 160.0, pad: 24.0, now, max: if max > 0.0 { max } else { 1.0 } }
    }

    fn x(&self, t: DateTime<Utc>) -> f64 {
        let span = samples::KEEP.num_seconds() as f64;
        self.pad + (self.w - 2.0 * self.pad) * (1.0 - ((self.now - t).num_seconds() as f64 / span).clamp(0.0, 1.0))
    }

    fn y(&self, v: f64) -> f64 {
        self.h - self.pad - (self.h - 2.0 * self.pad) * (v / self.max)
    }

    fn line(&self, points: impl Iterator<Item = (DateTime<Utc>, f64)>) -> String {
        points.map(|(t, v)| format!("{:.1},{:.1}", self.x(t), self.y(v))).collect::<Vec<_>>().join(" ")
    }

    /// The axes and their labels (`top`: the largest value drawn), around `lines`.
    fn svg(&self, label: &str, top: &str, lines: Markup) -> Markup {
        let (w, h, pad) = (self.w, self.h, self.pad);
        html! {
            svg class="chart" viewBox={ "0 0 " (w) " " (h) } role="img" aria-label=(label) {
                line class="axis" x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) {}
                line class="axis" x1=(pad) y1=(pad) x2=(pad) y2=(h - pad) {}
                text x=(pad) y=(pad - 6.0) { (top) }
                text x=(pad) y=(h - 6.0) { "−15 min" }
                text x=(w - pad - 20.0) y=(h - 6.0) { "now" }
                (lines)
            }
        }
    }
}

/// An inline SVG line chart of the depths (no script, no outside asset).
fn depth_chart(points: &[Sample], now: DateTime<Utc>) -> Markup {
    let max = points.iter().map(|p| p.waiting.max(p.dead)).max().unwrap_or(0);
    let f = Frame::new(now, max as f64);
    let last = points.last();
    let summary = match last {
        Some(l) => format!(
            "Over the last 15 minutes ({} samples): now {} jobs waiting or running and {} dead; at most {}.",
            points.len(),
            l.waiting,
            l.dead,
            max
        ),
        None => "No sample yet: the first is taken now, then every 10 seconds.".to_owned(),
    };
    let lines = html! {
        polyline class="depth" points=(f.line(points.iter().map(|p| (p.at, p.waiting as f64)))) {}
        polyline class="done" points=(f.line(points.iter().map(|p| (p.at, p.dead as f64)))) {}
        @if let Some(l) = last { circle cx=(format!("{:.1}", f.x(l.at))) cy=(format!("{:.1}", f.y(l.waiting as f64))) r="3" {} }
    };
    html! {
        figure {
            (f.svg(&summary, &max.to_string(), lines))
            figcaption { (summary) " Solid: waiting or running; dashed: dead letters." }
        }
    }
}

/// A rate for people: "0.52/s", "3.0/s", "0/s".
fn rate(r: f64) -> String {
    match r {
        r if r <= 0.0 => "0/s".to_owned(),
        r if r < 10.0 => format!("{r:.2}/s"),
        r => format!("{r:.1}/s"),
    }
}

/// Each queue's throughput over the last 15 minutes: a line a queue (its own colour
/// and dash), and the same numbers in a table for every reader.
fn throughput_chart(points: &[Sample], now: DateTime<Utc>) -> Markup {
    let series = samples::throughput(points);
    let done = samples::completed_in_window(points);
    let max = series.iter().flatten().map(|(_, r)| *r).fold(0.0_f64, f64::max);
    let f = Frame::new(now, max);
    let window_secs = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (b.at - a.at).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    let total: u64 = done.iter().sum();
    let summary = if points.len() < 2 {
        "Throughput needs two samples: the next is taken within 10 seconds.".to_owned()
    } else {
        format!(
            "Jobs completed by this process's workers over the last {} min: {total}; at most {} in one interval.",
            (window_secs / 60.0).ceil() as u64,
            rate(max)
        )
    };
    let columns =
        ["Queue", "Line", "Waiting now", "Completed (15 min)", "Per second (15 min)", "Per second (last interval)"];
    let lines = html! {
        @for (i, s) in series.iter().enumerate() {
            @if !s.is_empty() {
                polyline class={ "throughput q" (i) } points=(f.line(s.iter().copied())) {}
            }
        }
    };
    html! {
        figure {
            (f.svg(&summary, &rate(max), lines))
            figcaption {
                (summary)
                " Counted by the workers of this process (recur all); a recur api process runs none, and each worker's own throughput is on its /metrics and in Grafana."
            }
        }
        (data_table("Throughput by queue", Some("throughput"), &columns, html! {
            @for (i, q) in jobs::Queue::ALL.iter().enumerate() {
                tr {
                    th scope="row" { (q.name()) }
                    td { svg class="key" viewBox="0 0 30 8" width="30" height="8" aria-hidden="true" { line class={ "throughput q" (i) } x1="0" y1="4" x2="30" y2="4" {} } }
                    td class="num" { (points.last().and_then(|p| p.queues.get(i)).map_or(0, |s| s.waiting)) }
                    td class="num" { (done[i]) }
                    td class="num" { (rate(if window_secs > 0.0 { done[i] as f64 / window_secs } else { 0.0 })) }
                    td class="num" { (rate(series[i].last().map_or(0.0, |(_, r)| *r))) }
                }
            }
        }))
    }
}

async fn home(State(app): State<App>, op: Operator) -> Answer {
    samples::start(&app.queue);
    let all = stats::all(&app.queue).await.map_err(error_page)?;
    let now = Utc::now();
    let mut points = samples::recent();
    if points.last().is_none_or(|p| now - p.at > chrono::TimeDelta::seconds(1)) {
        let s = samples::of(&all, now);
        samples::record(s.clone());
        points.push(s);
    }
    let workers = all.iter().map(|s| s.workers).max().unwrap_or(0);
    let main = html! {
        h1 { "Queues" }
        p { a href="/console" { "Refresh" } " " span id="live-status" class="muted" role="status" {} }
        div id="live" {
            p { "Workers alive: " strong id="workers" { (workers) } " " span class="muted" { "(as of " (when(now, now)) ")" } }
            (data_table("Queues", Some("queues"), &["Queue", "Pending", "Scheduled", "Running", "Dead", "Workers"], html! {
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
            }))
            h2 { "Depth, the last 15 minutes" }
            (depth_chart(&points, now))
            h2 { "Throughput, the last 15 minutes" }
            (throughput_chart(&points, now))
        }
    };
    Ok(op.page_with(StatusCode::OK, "Queues", "/console", main, &["/assets/console.js"]))
}

#[cfg(test)]
mod tests {
    use super::samples::{QueueSample, Sample, completed_in_window, completed_jobs, throughput};
    use chrono::{TimeDelta, Utc};

    #[test]
    fn completed_jobs_are_read_from_the_metrics_text() {
        let text = "# TYPE recur_jobs_total counter\n\
            recur_jobs_total{queue=\"charge-transaction\",outcome=\"ok\"} 12\n\
            recur_jobs_total{outcome=\"ok\",queue=\"generate-cycle\"} 3\n\
            recur_jobs_total{queue=\"charge-transaction\",outcome=\"dead\"} 2\n\
            recur_jobs_total_other{queue=\"x\",outcome=\"ok\"} 9\n";
        assert_eq!(completed_jobs(text), [("charge-transaction".to_owned(), 12), ("generate-cycle".to_owned(), 3)]);
    }

    #[test]
    fn throughput_is_completed_jobs_a_second_between_samples() {
        let t0 = Utc::now();
        let sample = |secs: i64, done: u64| Sample {
            at: t0 + TimeDelta::seconds(secs),
            waiting: 0,
            dead: 0,
            queues: vec![QueueSample { waiting: 0, completed: done }; jobs::Queue::ALL.len()],
        };
        let points = [sample(0, 10), sample(10, 30), sample(20, 30)];
        let rates = throughput(&points);
        assert_eq!(rates[0].iter().map(|(_, r)| *r).collect::<Vec<_>>(), [2.0, 0.0]);
        assert_eq!(completed_in_window(&points)[0], 20);
    }
}
