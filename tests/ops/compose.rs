//! The compose stack (docs/operations.md#compose): every service, wired to each other by service name,
//! with the ports Prometheus scrapes and the Dockerfile exposes.

use std::path::Path;

use serde_yaml::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    let mut v: Value = serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    // Resolve `<<: *anchor` merge keys (compose uses them for the shared environment).
    v.apply_merge().unwrap();
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| format!("{x:?}"))).collect())
        .unwrap_or_default()
}

/// A service's environment as (name, value) pairs, from a map or a `K=V` list.
fn env(service: &Value) -> std::collections::BTreeMap<String, String> {
    let e = &service["environment"];
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    };
    if let Some(m) = e.as_mapping() {
        m.iter().map(|(k, v)| (k.as_str().unwrap().to_owned(), scalar(v))).collect()
    } else {
        strings(e).iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
    }
}

fn volumes(service: &Value) -> Vec<String> {
    strings(&service["volumes"])
}

#[test]
fn compose_runs_the_whole_stack_wired_by_service_name() {
    let c = yaml("compose.yaml");
    let services = c["services"].as_mapping().expect("services");
    let svc =
        |name: &str| -> &Value { services.get(name).unwrap_or_else(|| panic!("compose.yaml has no service {name}")) };
    for name in ["postgres", "redis", "migrate", "api", "scheduler", "worker", "prometheus", "grafana"] {
        svc(name);
    }

    // Redis persists its queue with the append-only file.
    let redis_cmd = strings(&svc("redis")["command"]).join(" ");
    assert!(redis_cmd.contains("--appendonly yes"), "redis command: {redis_cmd}");

    assert_eq!(strings(&svc("migrate")["command"]), ["migrate"]);
    assert_eq!(strings(&svc("api")["command"]), ["api"]);
    assert_eq!(strings(&svc("scheduler")["command"]), ["scheduler"]);
    assert_eq!(strings(&svc("worker")["command"]), ["worker"]);

    // Every recur role reaches Postgres and Redis by service name.
    for name in ["migrate", "api", "scheduler", "worker"] {
        let s = svc(name);
        assert!(s.get("build").is_some() || s.get("image").is_some(), "{name}: no build or image");
        let e = env(s);
        let db = e.get("DATABASE_URL").unwrap_or_else(|| panic!("{name}: no DATABASE_URL"));
        let db = url::Url::parse(db).unwrap();
        assert_eq!((db.scheme(), db.host_str()), ("postgres", Some("postgres")), "{name}");
        let r = url::Url::parse(e.get("REDIS_URL").unwrap_or_else(|| panic!("{name}: no REDIS_URL"))).unwrap();
        assert_eq!((r.scheme(), r.host_str()), ("redis", Some("redis")), "{name}");
        assert!(r.port().is_none_or(|p| p == 6379), "{name}: {r}");
        assert!(db.port().is_none_or(|p| p == 5432), "{name}: {db}");
        if name != "migrate" {
            let deps = &s["depends_on"];
            let on_migrate =
                deps.get("migrate").map(|m| m["condition"].as_str() == Some("service_completed_successfully"));
            assert_eq!(on_migrate, Some(true), "{name} starts after migrations");
        }
    }

    // The acquirer simulator: its own database on the same Postgres, reached by name.
    let acquirer = svc("acquirer");
    assert_eq!(strings(&acquirer["command"]), ["acquirer", "--listen", "0.0.0.0:7070"]);
    let adb = url::Url::parse(&env(acquirer)["RECUR_ACQUIRER_DATABASE_URL"]).unwrap();
    assert_eq!((adb.host_str(), adb.path()), (Some("postgres"), "/recur_acquirer"), "its own database");
    assert!(env(acquirer)["RECUR_ACQUIRER_SECRET"].contains("whsec_"), "a signing secret of the webhook format");

    // The API listens on 8080 and publishes it.
    let api = svc("api");
    assert_eq!(env(api).get("RECUR_LISTEN").map(String::as_str), Some("0.0.0.0:8080"));
    let ports = strings(&api["ports"]);
    assert!(ports.iter().any(|p| p.ends_with(":8080") || p == "8080"), "api ports {ports:?}");

    // Workers: several replicas, metrics on 9464, a stop grace beyond the drain timeout.
    let worker = svc("worker");
    assert_eq!(worker["deploy"]["replicas"].as_u64(), Some(3));
    assert_eq!(env(worker).get("RECUR_METRICS_LISTEN").map(String::as_str), Some("0.0.0.0:9464"));
    assert_eq!(env(svc("scheduler")).get("RECUR_METRICS_LISTEN").map(String::as_str), Some("0.0.0.0:9464"));
    let drain =
        humantime::parse_duration(env(worker).get("RECUR_DRAIN_TIMEOUT").map(String::as_str).unwrap_or("30s")).unwrap();
    let grace = humantime::parse_duration(worker["stop_grace_period"].as_str().unwrap_or("10s")).unwrap();
    assert!(
        grace > drain,
        "stop_grace_period {grace:?} must exceed the drain timeout {drain:?}, or SIGKILL cuts the drain"
    );

    // Prometheus reads dashboards/prometheus; Grafana gets the provisioning and dashboards.
    let prom = volumes(svc("prometheus"));
    assert!(prom.iter().any(|v| v.starts_with("./dashboards/prometheus:")), "prometheus volumes {prom:?}");
    let grafana = volumes(svc("grafana"));
    assert!(grafana.iter().any(|v| v.starts_with("./dashboards/grafana/provisioning:")), "grafana volumes {grafana:?}");
    assert!(grafana.iter().any(|v| v.starts_with("./dashboards/grafana/dashboards:")), "grafana volumes {grafana:?}");
    // Provisioning points Grafana at the mounted dashboards and at the prometheus service.
    let mount = grafana
        .iter()
        .find(|v| v.starts_with("./dashboards/grafana/dashboards:"))
        .and_then(|v| v.split(':').nth(1))
        .unwrap()
        .to_owned();
    let provider = yaml("dashboards/grafana/provisioning/dashboards/recur.yaml");
    assert_eq!(provider["providers"][0]["options"]["path"].as_str(), Some(mount.as_str()));
    let ds = yaml("dashboards/grafana/provisioning/datasources/prometheus.yaml");
    assert_eq!(ds["datasources"][0]["type"].as_str(), Some("prometheus"));
    assert_eq!(ds["datasources"][0]["url"].as_str(), Some("http://prometheus:9090"));
    let prom_cmd = strings(&svc("prometheus")["command"]).join(" ");
    assert!(prom_cmd.contains("--config.file=/etc/prometheus/prometheus.yml"), "{prom_cmd}");
    assert!(prom.iter().any(|v| v.starts_with("./dashboards/prometheus:/etc/prometheus")), "{prom:?}");
}

#[test]
fn prometheus_scrapes_the_compose_services() {
    let p = yaml("dashboards/prometheus/prometheus.yml");
    let jobs = p["scrape_configs"].as_sequence().expect("scrape_configs");
    // job → the host:port targets it scrapes (static, or DNS service discovery of every replica).
    let targets = |job: &str| -> Vec<String> {
        let j = jobs
            .iter()
            .find(|j| j["job_name"].as_str() == Some(job))
            .unwrap_or_else(|| panic!("prometheus.yml has no job {job}"));
        let mut out = Vec::new();
        for sc in j["static_configs"].as_sequence().into_iter().flatten() {
            out.extend(strings(&sc["targets"]));
        }
        for dns in j["dns_sd_configs"].as_sequence().into_iter().flatten() {
            let port = dns["port"].as_u64().expect("dns_sd_configs port");
            out.extend(strings(&dns["names"]).into_iter().map(|n| format!("{n}:{port}")));
        }
        out
    };
    assert_eq!(targets("recur-api"), ["api:8080"]);
    assert_eq!(targets("recur-scheduler"), ["scheduler:9464"]);
    assert_eq!(targets("recur-worker"), ["worker:9464"]);
    // Every replica of the worker service, not one of them: DNS discovery of the service.
    let worker = jobs.iter().find(|j| j["job_name"].as_str() == Some("recur-worker")).unwrap();
    assert!(worker.get("dns_sd_configs").is_some(), "worker replicas are discovered through DNS");
    assert_eq!(strings(&p["rule_files"]), ["alerts.yml"]);
}

#[test]
fn the_image_exposes_the_api_and_metrics_ports() {
    let dockerfile = read("Dockerfile");
    let exposed: Vec<&str> =
        dockerfile.lines().filter_map(|l| l.trim().strip_prefix("EXPOSE ")).flat_map(str::split_whitespace).collect();
    for port in ["8080", "9464"] {
        assert!(exposed.contains(&port), "EXPOSE lacks {port}: {exposed:?}");
    }
    assert!(dockerfile.lines().any(|l| l.trim() == "ENTRYPOINT [\"recur\"]"), "the image runs recur");
    assert!(dockerfile.lines().any(|l| l.trim().starts_with("USER ") && !l.contains("root")), "not as root");
}
