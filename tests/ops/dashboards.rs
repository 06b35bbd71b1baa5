//! Dashboards and alerting (docs/operations.md#dashboards): promtool accepts the scrape config and the alert
//! rules and passes their unit tests; every Grafana panel queries only metrics the code
//! exports; and a real Prometheus scraping a running stack answers every panel query
//! with data and evaluates every alert rule without error.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::stack::{Stack, families};
use crate::support::{Child, eventually, free_port};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("promtool runs (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_alert_rules() {
    // rule_files are relative to the config file: promtool resolves them from there.
    let out = promtool(&["check", "config", "dashboards/prometheus/prometheus.yml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
    promtool(&["check", "rules", "dashboards/prometheus/alerts.yml"]);
    let out = promtool(&["test", "rules", "dashboards/prometheus/alerts_test.yml"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"), "{out:?}");
    // Every alert docs/operations.md#alerts asks for has a unit test.
    let tests = std::fs::read_to_string(repo().join("dashboards/prometheus/alerts_test.yml")).unwrap();
    for alert in [
        "RecurChargeFailureRatioHigh",
        "RecurDueLagHigh",
        "RecurDlqNotEmpty",
        "RecurNoWorkerAlive",
        "RecurWebhookFailureRatioHigh",
    ] {
        assert!(tests.contains(&format!("alertname: {alert}")), "no promtool test for {alert}");
    }
}

/// One panel query: dashboard file, panel title, expression.
#[derive(Debug, Clone)]
struct Query {
    dashboard: String,
    panel: String,
    expr: String,
}

fn panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for p in panels.as_array().into_iter().flatten() {
        out.push(p);
        panels_of(p, out);
    }
}

fn panels_of<'a>(p: &'a Value, out: &mut Vec<&'a Value>) {
    if let Some(inner) = p.get("panels") {
        panels(inner, out);
    }
}

/// Every dashboard parses and has panels with Prometheus targets; their queries.
fn dashboard_queries() -> Vec<Query> {
    let dir = repo().join("dashboards/grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in ["api.json", "charges.json", "queues.json"] {
        assert!(names.contains(&want.to_owned()), "dashboard {want} missing: {names:?}");
    }
    let mut out = Vec::new();
    let mut uids = BTreeSet::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".json"), "only dashboards in {}: {name}", dir.display());
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()), "{name}: no title");
        assert!(
            uids.insert(d["uid"].as_str().unwrap_or_else(|| panic!("{name}: no uid")).to_owned()),
            "{name}: uid reused"
        );
        let mut ps = Vec::new();
        panels(&d["panels"], &mut ps);
        let ps: Vec<&Value> = ps.into_iter().filter(|p| p["type"] != "row").collect();
        assert!(!ps.is_empty(), "{name} has no panels");
        for p in ps {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{name} / {title}: no targets"));
            assert!(!targets.is_empty(), "{name} / {title}: no targets");
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{name} / {title}: a target without expr"));
                assert!(!expr.trim().is_empty(), "{name} / {title}: empty expr");
                let ds = t.get("datasource").or_else(|| p.get("datasource"));
                if let Some(ds) = ds.filter(|d| d.is_object()) {
                    assert_eq!(ds["type"], "prometheus", "{name} / {title}: datasource {ds}");
                }
                out.push(Query { dashboard: name.clone(), panel: title.clone(), expr: expr.to_owned() });
            }
        }
    }
    out
}

/// `recur_*` metric names (and `up`) an expression reads, histogram suffixes kept.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            // A metric: recur_*, or `up` used as a selector (not a label or function).
            let next = expr[i..].trim_start().chars().next();
            if word.starts_with("recur_") || (word == "up" && next != Some('(') && next != Some('=')) {
                out.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn metric_names_are_found_in_expressions() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le) (rate(recur_due_lag_seconds_bucket[5m]))) / sum(up{job="recur-worker"})"#,
    );
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["recur_due_lag_seconds_bucket", "up"]);
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn prom_get(client: &reqwest::Client, base: &str, path: &str, query: &[(&str, &str)]) -> Value {
    let res = client.get(format!("{base}{path}")).query(query).send().await.expect("prometheus answers");
    res.json().await.expect("prometheus answers JSON")
}

/// What a `recur api` process exports of its own (the in-process API's scrape keeps only these).
const API_METRICS: &str = "recur_http_.*|recur_rate_limit.*|recur_auth_failures_total";
const API_PREFIXES: [&str; 3] = ["recur_http_", "recur_rate_limit", "recur_auth_failures_total"];

#[tokio::test]
async fn a_real_prometheus_answers_every_panel_query() {
    let queries = dashboard_queries();
    let mut stack = Stack::start().await;
    let app = &stack.app;
    // Schedulers are safe to run several (docs/guarantees.md#several-schedulers), and each samples the same Redis and
    // Postgres: the panels must not count a queue once per scheduler.
    let sched2_port = free_port();
    let mut scheduler2 =
        app.spawn_process(&["scheduler"], &[("RECUR_METRICS_LISTEN", &format!("127.0.0.1:{sched2_port}"))]);

    // Prometheus scraping the four processes every second, with the alert rules loaded.
    // The in-process API shares this test binary's metrics recorder with other tests'
    // in-process engines: its job keeps what a `recur api` process exports.
    let dir = TempDir::new("recur-prometheus");
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n\
         \x20 - job_name: recur-api\n    static_configs: [{{targets: ['{api}']}}]\n\
         \x20   metric_relabel_configs: [{{source_labels: [__name__], regex: '{api_metrics}', action: keep}}]\n\
         \x20 - job_name: recur-scheduler\n    static_configs: [{{targets: ['127.0.0.1:{sched}', '127.0.0.1:{sched2_port}']}}]\n\
         \x20 - job_name: recur-worker\n    static_configs: [{{targets: ['127.0.0.1:{worker}']}}]\n",
        rules = repo().join("dashboards/prometheus/alerts.yml").display(),
        api = app.addr,
        sched = stack.scheduler_port,
        worker = stack.worker_port,
        api_metrics = API_METRICS,
    );
    let config_path = dir.0.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    promtool(&["check", "config", config_path.to_str().unwrap()]);
    let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
    let mut prometheus = Child(
        std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts (Debian package prometheus)"),
    );
    let prom = format!("http://127.0.0.1:{port}");
    let client = app.client.clone();
    let log_path = dir.0.join("prometheus.log");
    let prom_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut up = Value::Null;
    eventually("every target up", Duration::from_secs(30), async || {
        if let Ok(res) = client.get(format!("{prom}/api/v1/targets")).send().await
            && let Ok(v) = res.json::<Value>().await
        {
            up = v.clone();
            let active = v["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            if active.len() == 4 && active.iter().all(|t| t["health"] == "up") {
                return Ok(());
            }
        }
        if let Some(status) = prometheus.0.try_wait().unwrap() {
            panic!("prometheus exited with {status}:\n{}", prom_log());
        }
        Err(format!("{up:#}\n{}", prom_log()))
    })
    .await;

    // ~20 s of traffic: approved, declined and timing-out charges, 2xx and 4xx calls.
    // The pacing is the scenario: Prometheus scrapes every second, and the panels'
    // rates need samples spread over their windows, not one burst.
    let started = std::time::Instant::now();
    let mut steps = 0;
    while started.elapsed() < Duration::from_secs(20) {
        stack.step(steps).await;
        steps += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    eventually("the workload's approved charges", Duration::from_secs(30), async || {
        let ledger = stack.ledger().await;
        if ledger == steps as i64 { Ok(()) } else { Err(ledger) }
    })
    .await;

    // The billing-cycle webhooks went out (the Webhooks row reads their metrics).
    eventually("webhooks to reach the stack's receiver", Duration::from_secs(30), async || stack.receiver.count() > 0)
        .await;

    // Every metric a panel reads is exported by one of the processes.
    let mut exported = BTreeSet::from(["up".to_owned()]);
    for base in [app.base.clone(), stack.scheduler_url(), stack.worker_url()] {
        let samples = stack.scrape(&base).await;
        // From the in-process API only what a `recur api` process exports (see above).
        let mine = |n: &String| base != app.base || API_PREFIXES.iter().any(|p| n.starts_with(p));
        exported.extend(samples.iter().map(|s| s.name.clone()).filter(mine));
        exported.extend(families(&samples).into_iter().filter(mine));
    }
    for q in &queries {
        for name in metric_names(&q.expr) {
            assert!(
                exported.contains(&name),
                "{} / {}: {name} is not exported (expr {})",
                q.dashboard,
                q.panel,
                q.expr
            );
        }
    }

    // Every panel query, as written, returns data.
    let mut report = Vec::new();
    for q in &queries {
        let what = format!("{} / {}: data for {}", q.dashboard, q.panel, q.expr);
        let series = eventually(&what, Duration::from_secs(15), async || {
            let v = prom_get(&client, &prom, "/api/v1/query", &[("query", q.expr.as_str())]).await;
            assert_eq!(v["status"], "success", "{} / {}: {}\n{v:#}", q.dashboard, q.panel, q.expr);
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            let finite = result
                .iter()
                .any(|r| r["value"][1].as_str().is_some_and(|x| x.parse::<f64>().is_ok_and(f64::is_finite)));
            if !result.is_empty() && finite { Ok(result.len()) } else { Err(format!("{v:#}")) }
        })
        .await;
        report.push(format!("{} / {}: {series} series", q.dashboard, q.panel));
    }
    println!("{}", report.join("\n"));

    // The gauge panels show the system's state once, whatever the number of schedulers.
    let expr_of = |title: &str| -> String {
        queries.iter().find(|q| q.panel == title).unwrap_or_else(|| panic!("no panel {title:?}")).expr.clone()
    };
    let mut conn = app.rt.queue.connection();
    let dead: u64 = redis::cmd("HLEN")
        .arg(format!("{}:dlq:charge-transaction", app.settings.redis_namespace))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead, 1, "one dead letter: the timing-out card");
    let subscriptions = app.count("SELECT count(*) FROM subscriptions").await as f64;
    type Check = Box<dyn Fn(&[(Value, f64)]) -> bool>;
    let checks: Vec<(String, Check)> = vec![
        (
            expr_of("Dead-letter queue depth"),
            Box::new(|r| {
                r.len() == 6 && r.iter().all(|(m, v)| *v == if m["queue"] == "charge-transaction" { 1.0 } else { 0.0 })
            }),
        ),
        (
            expr_of("Queue depth by state"),
            Box::new(|r| {
                r.len() == 24
                    && r.iter().any(|(m, v)| m["queue"] == "charge-transaction" && m["state"] == "dead" && *v == 1.0)
                    && r.iter().filter(|(m, _)| m["state"] == "dead").map(|(_, v)| v).sum::<f64>() == 1.0
            }),
        ),
        (expr_of("Subscriptions by status"), Box::new(move |r| r.iter().map(|(_, v)| v).sum::<f64>() == subscriptions)),
        (
            "max by (queue) (recur_workers_alive)".to_owned(),
            Box::new(|r| r.len() == 6 && r.iter().all(|(_, v)| *v == 1.0)),
        ),
        ("sum(up{job=\"recur-worker\"})".to_owned(), Box::new(|r| r.len() == 1 && r[0].1 == 1.0)),
        (expr_of("Charge success rate"), Box::new(|r| r.len() == 1 && r[0].1 > 0.0 && r[0].1 < 1.0)),
    ];
    for (expr, ok) in &checks {
        eventually(&format!("{expr} to show the state"), Duration::from_secs(15), async || {
            let v = prom_get(&client, &prom, "/api/v1/query", &[("query", expr.as_str())]).await;
            let shown: Vec<(Value, f64)> = v["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|r| {
                    (r["metric"].clone(), r["value"][1].as_str().unwrap_or("NaN").parse::<f64>().unwrap_or(f64::NAN))
                })
                .collect();
            if ok(&shown) { Ok(()) } else { Err(format!("{shown:?}")) }
        })
        .await;
    }

    // The alert rules load and evaluate against the live series without error.
    let rules = prom_get(&client, &prom, "/api/v1/rules", &[]).await;
    let rules: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(rules.len(), 6, "{rules:#?}");
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r:#}");
    }
    // A dead letter is in the DLQ (the timing-out card): the rule sees it (pending,
    // since it must hold for 5 minutes before it fires).
    let dlq = rules.iter().find(|r| r["name"] == "RecurDlqNotEmpty").unwrap();
    assert_eq!(dlq["state"], "pending", "{dlq:#}");
    stack.assert_running();
    assert!(scheduler2.0.try_wait().unwrap().is_none(), "the second scheduler exited");
    prometheus.kill9();
}
