//! Medians with min–max over runs, as a Markdown table plus JSON.

use std::collections::BTreeMap;

use serde_json::json;

use crate::BenchArgs;
use crate::scenario::{ScaleResult, SurgeResult};

pub struct Report {
    args: String,
    figures: BTreeMap<(String, String), Vec<f64>>,
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let median = if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    (median, s.first().copied().unwrap_or(0.0), s.last().copied().unwrap_or(0.0))
}

impl Report {
    pub fn new(args: &BenchArgs) -> Report {
        // The report is published: a password in --pg must not be in it.
        let mut shown = args.clone();
        if url::Url::parse(&args.pg).is_ok_and(|u| u.password().is_some()) {
            shown.pg = recur::db::redact(&args.pg);
        }
        Report { args: format!("{shown:?}"), figures: BTreeMap::new() }
    }

    pub fn add(&mut self, group: &str, name: &str, v: f64) {
        self.figures.entry((group.to_owned(), name.to_owned())).or_default().push(v);
    }

    fn median(&self, group: &str, name: &str) -> Option<f64> {
        self.figures.get(&(group.to_owned(), name.to_owned())).map(|v| stats(v).0)
    }

    pub fn surge(&mut self, w: usize, r: &SurgeResult) {
        let g = format!("surge_w{w}");
        self.add(&g, "charges_per_s", r.charges_per_s);
        self.add(&g, "elapsed_s", r.elapsed_s);
        self.add(&g, "due_lag_p50_s", r.lag_p50);
        self.add(&g, "due_lag_p95_s", r.lag_p95);
        self.add(&g, "due_lag_p99_s", r.lag_p99);
        self.procs(&g, r);
    }

    pub fn webhooks(&mut self, r: &SurgeResult) {
        let g = "webhooks_w1";
        self.add(g, "charges_per_s", r.charges_per_s);
        self.add(g, "elapsed_s", r.elapsed_s);
        if let Some(w) = &r.webhooks {
            self.add(g, "deliveries_per_s", w.per_s);
            self.add(g, "delivered", w.delivered as f64);
            self.add(g, "event_to_delivered_p50_s", w.lag_p50);
            self.add(g, "event_to_delivered_p99_s", w.lag_p99);
            self.add(g, "last_delivery_after_last_charge_s", w.behind_last_charge);
            self.add(g, "signatures_refused", w.refused as f64);
        }
        self.procs(g, r);
    }

    fn procs(&mut self, g: &str, r: &SurgeResult) {
        // Every process's share (Postgres, Redis and the bench's own included): what a
        // charge costs the machine, and how much of it sat idle.
        let (busy, idle) = r.machine;
        let charges = r.charges_per_s * r.elapsed_s;
        if charges > 0.0 && busy + idle > 0.0 {
            self.add(g, "machine_cpu_ms_per_charge", 1000.0 * busy / charges);
            self.add(g, "machine_idle_pct", 100.0 * idle / (busy + idle));
        }
        let mut worker_no = 0;
        for (role, rss, cpu) in &r.procs {
            let who = if role == "worker" {
                worker_no += 1;
                format!("worker{worker_no}")
            } else {
                role.clone()
            };
            self.add(g, &format!("{who}_peak_rss_mb"), *rss);
            self.add(g, &format!("{who}_cpu_pct"), 100.0 * cpu / r.elapsed_s.max(0.001));
        }
    }

    pub fn latency(&mut self, concurrency: usize, r: &SurgeResult) {
        let g = format!("latency_c{concurrency}");
        self.add(&g, "charges_per_s", r.charges_per_s);
        self.add(&g, "concurrency_bound_per_s", r.bound);
        self.add(&g, "share_of_bound_pct", 100.0 * r.charges_per_s / r.bound.max(1.0));
        self.procs(&g, r);
    }

    /// The surge over the http gateway; `n` charges.
    pub fn http_surge(&mut self, w: usize, n: i64, r: &SurgeResult) {
        let g = format!("http_surge_w{w}");
        self.add(&g, "charges_per_s", r.charges_per_s);
        self.add(&g, "elapsed_s", r.elapsed_s);
        self.add(&g, "due_lag_p99_s", r.lag_p99);
        self.http(&g, n, r);
        self.procs(&g, r);
    }

    /// The http gateway with acquirer latency: `n` charges, one worker.
    pub fn http_latency(&mut self, n: i64, r: &SurgeResult) {
        let g = "http_latency";
        self.add(g, "charges_per_s", r.charges_per_s);
        self.add(g, "in_flight_over_latency_per_s", r.bound);
        self.http(g, n, r);
        if let Some(h) = &r.http {
            // Little's law: the calls the acquirer held at once, on average.
            self.add(g, "mean_in_flight_at_acquirer", r.charges_per_s * h.answer_mean_s);
        }
        self.procs(g, r);
    }

    fn http(&mut self, g: &str, n: i64, r: &SurgeResult) {
        if let Some(h) = &r.http {
            self.add(g, "connections_opened", h.connections as f64);
            self.add(g, "connections_per_1000_charges", 1000.0 * h.connections as f64 / n.max(1) as f64);
            self.add(g, "acquirer_answer_mean_ms", 1000.0 * h.answer_mean_s);
        }
    }

    /// The well-behaved merchant alone and under the other's flood, and the flood's fate.
    pub fn rate_limits(&mut self, r: &crate::ratelimit::RateLimitResult) {
        let g = "rate_limits";
        for (phase, p) in [("alone", &r.calm_alone), ("flooded", &r.calm_flooded)] {
            self.add(g, &format!("calm_{phase}_p50_ms"), p.p50_ms);
            self.add(g, &format!("calm_{phase}_p99_ms"), p.p99_ms);
            self.add(g, &format!("calm_{phase}_max_ms"), p.max_ms);
            self.add(g, &format!("calm_{phase}_success_pct"), p.success_pct());
            self.add(g, &format!("calm_{phase}_requests"), p.sent as f64);
        }
        self.add(g, "calm_p99_flooded_over_alone", r.calm_flooded.p99_ms / r.calm_alone.p99_ms.max(1e-9));
        self.add(g, "flood_sent_per_s", r.flood_sent_per_s);
        self.add(g, "flood_served_per_s", r.flood_served_per_s);
        self.add(g, "flood_refused_per_s", r.flood_refused_per_s);
        self.add(g, "flood_other_answers", r.flood_other as f64);
    }

    pub fn scale(&mut self, r: &ScaleResult) {
        self.add("scale", "sweep_ms_per_tick_while_due", r.sweep_ms);
        self.add("scale", "sweep_ms_per_tick_idle", r.idle_sweep_ms);
        self.add("scale", "due_lag_p99_s", r.lag_p99);
        self.add("scale", "elapsed_s", r.elapsed_s);
    }

    pub fn render(&mut self) -> String {
        // Ratios against the same run's baselines.
        for w in [1usize, 2, 3, 4] {
            let g = format!("surge_w{w}");
            if let Some(recur) = self.median(&g, "charges_per_s") {
                if let Some(pg) = self.median("baseline", "pgbench_tpcb_tps") {
                    self.add(&g, "ratio_to_pgbench_tpcb", recur / pg);
                }
                if let Some(sql) = self.median("baseline", "sql_loop_charges_per_s") {
                    self.add(&g, "ratio_to_sql_loop", recur / sql);
                }
            }
        }
        for w in [1usize, 2, 3, 4] {
            let (http, sandbox) = (format!("http_surge_w{w}"), format!("surge_w{w}"));
            if let (Some(h), Some(s)) = (self.median(&http, "charges_per_s"), self.median(&sandbox, "charges_per_s")) {
                self.add(&http, "ratio_to_sandbox_surge", h / s);
            }
        }
        // The latency run's bound: in flight ÷ latency, unless the 0 ms http surge (one
        // worker, same run) is lower: latency cannot make charges faster than that.
        if let Some(by_latency) = self.median("http_latency", "in_flight_over_latency_per_s") {
            let ceiling = self.median("http_surge_w1", "charges_per_s").unwrap_or(f64::INFINITY);
            let bound = by_latency.min(ceiling);
            let rate = self.median("http_latency", "charges_per_s").unwrap_or(0.0);
            self.add("http_latency", "bound_per_s", bound);
            self.add("http_latency", "share_of_bound_pct", 100.0 * rate / bound.max(1.0));
        }
        if let (Some(with), Some(without)) =
            (self.median("webhooks_w1", "charges_per_s"), self.median("surge_w1", "charges_per_s"))
        {
            self.add("webhooks_w1", "ratio_to_surge_w1", with / without);
        }
        let mut out =
            String::from("| scenario | figure | median | min | max | runs |\n|---|---|---:|---:|---:|---:|\n");
        let mut json_rows = Vec::new();
        for ((g, n), v) in &self.figures {
            let (m, lo, hi) = stats(v);
            out.push_str(&format!("| {g} | {n} | {m:.2} | {lo:.2} | {hi:.2} | {} |\n", v.len()));
            json_rows.push(json!({"scenario": g, "figure": n, "median": m, "min": lo, "max": hi, "values": v}));
        }
        let machine = json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "memory_gib": mem_gib(),
            "date": chrono::Utc::now().to_rfc3339(),
        });
        out.push_str(&format!(
            "\n```json\n{}\n```\n",
            serde_json::to_string_pretty(&json!({"machine": machine, "args": self.args, "figures": json_rows}))
                .unwrap_or_default()
        ));
        out
    }
}

fn mem_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0)
}
