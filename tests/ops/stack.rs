//! A small production-shaped stack for the metrics and dashboard tests: the API in
//! this process, a `recur scheduler` and a `recur worker` as OS processes, each with its
//! own metrics port; a workload of charges (approved, declined, timing out) and API
//! calls (2xx and 4xx); and a parser for the Prometheus text they serve.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::support::receiver::Receiver;
use crate::support::{Child, TestApp, eventually, free_port, spawn_app};

pub struct Stack {
    pub app: TestApp,
    pub scheduler: Child,
    pub worker: Child,
    pub scheduler_port: u16,
    pub worker_port: u16,
    pub plan: String,
    /// The receiver of a webhook endpoint subscribed to billing cycles.
    pub receiver: Receiver,
}

impl Stack {
    /// Start the API (in process), a scheduler and a worker (processes) whose technical
    /// failures dead-letter after two attempts.
    pub async fn start() -> Stack {
        // `recur api` installs the recorder at start; the in-process API does it here.
        recur::telemetry::init_metrics();
        let app = spawn_app().await;
        let (scheduler_port, worker_port) = (free_port(), free_port());
        let scheduler =
            app.spawn_process(&["scheduler"], &[("RECUR_METRICS_LISTEN", &format!("127.0.0.1:{scheduler_port}"))]);
        let worker = app.spawn_process(
            &["worker"],
            &[
                ("RECUR_METRICS_LISTEN", &format!("127.0.0.1:{worker_port}")),
                ("RECUR_JOB_MAX_ATTEMPTS", "2"),
                ("RECUR_WEBHOOK_ALLOW_PRIVATE", "1"),
            ],
        );
        let plan = app.active_plan("9.99").await;
        let receiver = Receiver::ok().await;
        let (s, b) =
            app.post("/v1/webhook-endpoints", json!({"url": receiver.url, "eventTypes": ["billing_cycle.*"]})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let stack = Stack { app, scheduler, worker, scheduler_port, worker_port, plan, receiver };
        for port in [scheduler_port, worker_port] {
            let url = format!("http://127.0.0.1:{port}/healthz");
            let client = &stack.app.client;
            eventually(&format!("{url} to answer"), Duration::from_secs(30), async || {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await;
        }
        stack
    }

    /// Both processes still run (neither crashed nor exited).
    #[track_caller]
    pub fn assert_running(&mut self) {
        for (name, child) in [("scheduler", &mut self.scheduler), ("worker", &mut self.worker)] {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("the {name} process exited: {status}");
            }
        }
    }

    pub fn scheduler_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.scheduler_port)
    }

    pub fn worker_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.worker_port)
    }

    pub async fn scrape(&self, base: &str) -> Vec<Sample> {
        let res = self.app.client.get(format!("{base}/metrics")).send().await.expect("scrape");
        assert_eq!(res.status(), StatusCode::OK, "{base}/metrics");
        let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(ct.starts_with("text/plain"), "{base}/metrics content type {ct}");
        parse(&res.text().await.unwrap())
    }

    /// One step of the workload: an approved subscription, every fourth step a soft
    /// decline, on step 0 a card that times out; reads that answer 200, 404 and 400.
    pub async fn step(&self, i: usize) {
        let app = &self.app;
        let sub = |pm: &str, who: String| json!({"customer": {"customerAccountId": who}, "planId": self.plan, "paymentMethod": pm});
        let ok = app.subscription(sub("pm_sandbox_ok", format!("ok-{i}"))).await;
        if i.is_multiple_of(4) {
            app.subscription(sub("pm_sandbox_insufficient_funds", format!("nsf-{i}"))).await;
        }
        if i == 0 {
            app.subscription(sub("pm_sandbox_timeout", format!("timeout-{i}"))).await;
        }
        let id = ok["id"].as_str().unwrap();
        let (s, _) = app.get(&format!("/v1/subscriptions/{id}")).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = app.get(&format!("/v1/subscriptions/{id}/billing-cycles")).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = app.get(&format!("/v1/subscriptions/{}", Uuid::now_v7())).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = app.post("/v1/subscriptions", json!({"customer": {}, "amount": "-1"})).await;
        assert!(s.is_client_error(), "{s}");
        let (s, _) = app.get("/v1/subscriptions?limit=5").await;
        assert_eq!(s, StatusCode::OK);
    }

    /// Approved charges so far (the sandbox ledger).
    pub async fn ledger(&self) -> i64 {
        self.app.ledger_count().await
    }
}

/// One sample of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

/// Parse the Prometheus text exposition format (label values may hold `{`, `}` and
/// escaped quotes: route templates do).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("bad metrics line {line:?}"));
        let name = line[..name_end].to_owned();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            let chars: Vec<char> = rest.chars().collect();
            let mut i = 1;
            loop {
                while chars[i] == ',' || chars[i] == ' ' {
                    i += 1;
                }
                if chars[i] == '}' {
                    i += 1;
                    break;
                }
                let k_start = i;
                while chars[i] != '=' {
                    i += 1;
                }
                let key: String = chars[k_start..i].iter().collect();
                assert_eq!(chars[i + 1], '"', "bad label in {line:?}");
                i += 2;
                let mut value = String::new();
                while chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                        value.push(match chars[i] {
                            'n' => '\n',
                            c => c,
                        });
                    } else {
                        value.push(chars[i]);
                    }
                    i += 1;
                }
                i += 1;
                labels.insert(key, value);
            }
            let consumed: usize = chars[..i].iter().map(|c| c.len_utf8()).sum();
            rest = &rest[consumed..];
        }
        let value = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value in {line:?}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        out.push(Sample { name, labels, value });
    }
    out
}

/// Metric family names present (histogram and summary series folded into their family).
pub fn families(samples: &[Sample]) -> std::collections::BTreeSet<String> {
    samples
        .iter()
        .map(|s| {
            let n = s.name.as_str();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| n.strip_suffix(suffix))
                .filter(|base| {
                    samples.iter().any(|o| o.name == format!("{base}_bucket") || o.labels.contains_key("quantile"))
                })
                .unwrap_or(n)
                .to_owned()
        })
        .collect()
}

/// Sum of the samples of `name` whose labels include every `(key, value)` of `matching`.
pub fn sum(samples: &[Sample], name: &str, matching: &[(&str, &str)]) -> f64 {
    samples.iter().filter(|s| s.name == name && matching.iter().all(|(k, v)| s.label(k) == *v)).map(|s| s.value).sum()
}

pub fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.name == name)
}
