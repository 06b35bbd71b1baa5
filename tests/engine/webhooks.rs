//! Webhooks end to end (docs/webhooks.md): real receivers on loopback, a real worker
//! and scheduler, signatures checked by the `standardwebhooks` crate, and assertions
//! on the deliveries rows and on what each receiver actually got.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::receiver::{Answer, Receiver};
use crate::support::{EngineOpts, TestApp, eventually, spawn_app};

/// A new endpoint of the test merchant; returns (id, secret).
pub async fn endpoint(app: &TestApp, url: &str, types: Value) -> (String, String) {
    let (s, b) = app.post("/v1/webhook-endpoints", json!({"url": url, "eventTypes": types})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (b["id"].as_str().unwrap().to_owned(), b["secret"].as_str().unwrap().to_owned())
}

/// The endpoint's delivery rows: (event id, status, attempts, last status code, last error).
async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<(String, String, i32, Option<i32>, Option<String>)> {
    sqlx::query_as(
        "SELECT event_id::text, status::text, attempts, last_status_code, last_error FROM webhook_deliveries
         WHERE endpoint_id = $1::uuid ORDER BY created_at",
    )
    .bind(endpoint)
    .fetch_all(app.pool())
    .await
    .unwrap()
}

async fn settled(app: &TestApp, endpoint: &str, want: usize) {
    eventually("every delivery to settle", Duration::from_secs(60), async || {
        let ds = deliveries(app, endpoint).await;
        let open = ds.iter().filter(|d| d.1 == "pending").count();
        if ds.len() >= want && open == 0 { Ok(ds) } else { Err(format!("{} deliveries, {open} pending", ds.len())) }
    })
    .await;
}

fn opts(schedule: &str) -> EngineOpts {
    EngineOpts { webhook_schedule: Some(schedule.into()), ..EngineOpts::default() }
}

async fn due_subscription(app: &TestApp, payment_method: &str) -> String {
    let now = app.clock_now().await;
    let s = app
        .subscription(
            json!({"customer": {"customerAccountId": format!("c-{}", uuid::Uuid::now_v7())}, "amount": "10.00",
            "currency": "EUR", "interval": {"unit": "month", "count": 1}, "startAt": now.to_rfc3339(),
            "paymentMethod": payment_method}),
        )
        .await;
    s["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_event_is_delivered_signed_with_its_object_and_sequence() {
    let app = spawn_app().await;
    let all = Receiver::ok().await;
    let some = Receiver::ok().await;
    let (all_id, all_secret) = endpoint(&app, &all.url, json!(["*"])).await;
    let (some_id, some_secret) = endpoint(&app, &some.url, json!(["billing_cycle.succeeded", "subscription.*"])).await;
    let engine = app.start_engine(EngineOpts::default());

    // A plan, a subscription charged at once, a declining one, then pause, resume, cancel.
    app.active_plan("5.00").await;
    let ok = due_subscription(&app, "pm_sandbox_ok").await;
    let bad = due_subscription(&app, "pm_sandbox_insufficient_funds").await;
    eventually("both first cycles to settle", Duration::from_secs(30), async || {
        let n = app.count("SELECT count(*) FROM billing_cycles WHERE status IN ('succeeded', 'retrying')").await;
        n == 2
    })
    .await;
    let (s, b) = app.post(&format!("/v1/subscriptions/{ok}/pause"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.post(&format!("/v1/subscriptions/{ok}/resume"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = app.post(&format!("/v1/subscriptions/{bad}/cancel"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let events: Vec<(String, String, String, i64, String)> =
        sqlx::query_as("SELECT id::text, object_type, object_id::text, seq, webhook_type FROM events ORDER BY seq")
            .fetch_all(app.pool())
            .await
            .unwrap();
    settled(&app, &all_id, events.len()).await;
    engine.stop().await;

    // Every committed event reached the `*` endpoint, each verified by the reference library.
    let got = all.received();
    let by_id: HashMap<String, Value> = got
        .iter()
        .map(|r| {
            assert!(r.verifies(&all_secret), "a message failed verification: {}", String::from_utf8_lossy(&r.body));
            (r.header("webhook-id").to_owned(), r.json())
        })
        .collect();
    for (id, _, _, seq, kind) in &events {
        let m = by_id.get(id).unwrap_or_else(|| panic!("event {id} ({kind}) was not delivered"));
        assert_eq!(m["type"], *kind);
        assert_eq!(m["sequence"], *seq);
        assert_eq!(m["id"], *id);
        assert!(recur::webhooks::types::ALL.contains(&kind.as_str()), "{kind} is not a documented type");
    }
    // Per object, sequences rise strictly in the order the events were committed.
    let mut per_object: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (_, _, object, seq, _) in &events {
        per_object.entry(object).or_default().push(*seq);
    }
    for seqs in per_object.values() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
    // The object is the one GET showed at the event.
    let kinds: HashSet<&str> = events.iter().map(|e| e.4.as_str()).collect();
    for want in [
        "plan.created",
        "subscription.created",
        "billing_cycle.created",
        "transaction.created",
        "transaction.succeeded",
        "transaction.declined",
        "billing_cycle.succeeded",
        "billing_cycle.retrying",
        "subscription.past_due",
        "subscription.paused",
        "subscription.active",
        "subscription.cancelled",
    ] {
        assert!(kinds.contains(want), "no {want} event in {:?}", events.iter().map(|e| &e.4).collect::<Vec<_>>());
    }
    for m in by_id.values() {
        let t = m["type"].as_str().unwrap();
        let object = &m["data"]["object"];
        // A customer is shown by its customerAccountId, as GET /v1/customers shows it.
        let key = if t.starts_with("customer.") { "customerAccountId" } else { "id" };
        assert!(object[key].is_string(), "{m}");
        match t {
            "billing_cycle.succeeded" => {
                assert_eq!(object["status"], "succeeded");
                assert_eq!(object["transactions"][0]["status"], "succeeded");
            }
            "billing_cycle.retrying" => assert_eq!(object["status"], "retrying"),
            "subscription.paused" => assert_eq!(object["status"], "paused"),
            "subscription.cancelled" => assert_eq!(object["status"], "cancelled"),
            "transaction.declined" => assert_eq!(object["status"], "declined"),
            _ => {}
        }
        assert!(serde_json::to_vec(m).unwrap().len() < 20 * 1024);
    }
    let (s, now) = app.get(&format!("/v1/subscriptions/{bad}")).await;
    assert_eq!(s, StatusCode::OK);
    let cancelled = by_id.values().find(|m| m["type"] == "subscription.cancelled").unwrap();
    assert_eq!(cancelled["data"]["object"], now, "the snapshot is what GET shows");

    // The second endpoint got exactly the types it subscribed to, and nothing else.
    let wanted: HashSet<String> = events
        .iter()
        .filter(|e| e.4 == "billing_cycle.succeeded" || e.4.starts_with("subscription."))
        .map(|e| e.0.clone())
        .collect();
    let got_some: HashSet<String> = some
        .received()
        .iter()
        .map(|r| {
            assert!(r.verifies(&some_secret));
            r.header("webhook-id").to_owned()
        })
        .collect();
    assert_eq!(got_some, wanted);
    settled(&app, &some_id, wanted.len()).await;
}

#[tokio::test]
async fn rotation_signs_with_both_secrets_until_the_old_one_expires() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    let (id, old) = endpoint(&app, &r.url, json!(["plan.*"])).await;
    let (s, b) =
        app.post(&format!("/v1/webhook-endpoints/{id}/rotate-secret"), json!({"expiresInSeconds": 3600})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let new = b["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let (_, shown) = app.get(&format!("/v1/webhook-endpoints/{id}")).await;
    assert!(shown.get("secret").is_none(), "a secret is shown only when made: {shown}");

    let engine = app.start_engine(EngineOpts::default());
    app.active_plan("1.00").await;
    eventually("the message", Duration::from_secs(20), async || r.count() >= 1).await;
    let m = r.received()[0].clone();
    assert!(m.verifies(&old) && m.verifies(&new), "both secrets verify during rotation");
    assert_eq!(m.header("webhook-signature").split(' ').count(), 2);

    // Tampering with the body or replaying an old timestamp fails verification.
    let mut tampered = m.clone();
    tampered.body = axum::body::Bytes::from(String::from_utf8_lossy(&m.body).replace("1.00", "0.01"));
    assert!(!tampered.verifies(&new));
    let mut stale = m.clone();
    let old_ts = (chrono::Utc::now().timestamp() - 400).to_string();
    stale.headers.insert("webhook-timestamp", old_ts.parse().unwrap());
    assert!(!stale.verifies(&new));

    // With no overlap the old secret stops at once.
    let (s, b) = app.post(&format!("/v1/webhook-endpoints/{id}/rotate-secret"), json!({"expiresInSeconds": 0})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let newest = b["secret"].as_str().unwrap().to_owned();
    app.active_plan("2.00").await;
    eventually("the second message", Duration::from_secs(20), async || r.count() >= 2).await;
    let m2 = r.received()[1].clone();
    assert!(m2.verifies(&newest) && !m2.verifies(&new) && !m2.verifies(&old));
    assert_eq!(m2.header("webhook-signature").split(' ').count(), 1);
    engine.stop().await;
}

/// One endpoint whose receiver answers `behaviour`, one event (a plan), run until the
/// delivery settles; returns the receiver and the delivery row.
async fn one_delivery(
    app: &TestApp,
    schedule: &str,
    behaviour: Arc<dyn Fn(usize) -> Answer + Send + Sync>,
) -> (Receiver, String, (String, String, i32, Option<i32>, Option<String>)) {
    let r = Receiver::start(behaviour).await;
    let (id, _) = endpoint(app, &r.url, json!(["plan.created"])).await;
    let engine = app.start_engine(opts(schedule));
    app.active_plan("1.00").await;
    settled(app, &id, 1).await;
    engine.stop().await;
    let d = deliveries(app, &id).await.remove(0);
    (r, id, d)
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_message_again_with_fresh_signatures() {
    let app = spawn_app().await;
    let (r, _, d) =
        one_delivery(&app, "0.2,0.2,0.2", Arc::new(|n| Answer::Status(if n < 2 { 500 } else { 204 }))).await;
    assert_eq!((d.1.as_str(), d.2, d.3), ("succeeded", 3, Some(204)), "{d:?}");
    let got = r.received();
    assert_eq!(got.len(), 3);
    let ids: HashSet<&str> = got.iter().map(|m| m.header("webhook-id")).collect();
    assert_eq!(ids.len(), 1, "one webhook-id across retries");
    assert!(got.iter().all(|m| m.body == got[0].body), "the same body every time");
}

#[tokio::test]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let app = spawn_app().await;
    let elsewhere = Receiver::ok().await;
    let to = elsewhere.url.clone();
    let (r, id, d) =
        one_delivery(&app, "0.2,0.2", Arc::new(move |_| Answer::With(301, vec![("location", to.clone())]))).await;
    assert_eq!((d.1.as_str(), d.2, d.3), ("failed", 3, Some(301)), "{d:?}");
    assert!(d.4.as_deref().unwrap_or("").contains("redirects are not followed"), "{d:?}");
    assert_eq!(r.count(), 3);
    assert_eq!(elsewhere.count(), 0, "the redirect was followed");
    // The spent delivery waits in the deliver-webhook DLQ.
    let out = app.run_cli(&["dlq", "list", "--queue", "deliver-webhook", "--json"]).await;
    let list = out.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let _ = id;
}

#[tokio::test]
async fn retry_after_on_429_sets_the_next_attempt() {
    let app = spawn_app().await;
    let (r, _, d) = one_delivery(
        &app,
        "0.1,0.1",
        Arc::new(|n| if n == 0 { Answer::With(429, vec![("retry-after", "2".into())]) } else { Answer::Status(200) }),
    )
    .await;
    assert_eq!((d.1.as_str(), d.2), ("succeeded", 2), "{d:?}");
    let got = r.received();
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "the second attempt came {gap:?} after the 429, not after Retry-After: 2"
    );
}

#[tokio::test]
async fn retry_after_does_not_extend_the_schedule() {
    let app = spawn_app().await;
    let (r, _, d) =
        one_delivery(&app, "0.1,0.1", Arc::new(|_| Answer::With(503, vec![("retry-after", "0".into())]))).await;
    assert_eq!((d.1.as_str(), d.2, d.3), ("failed", 3, Some(503)), "{d:?}");
    assert_eq!(r.count(), 3, "a receiver answering Retry-After forever still gets the schedule's attempts only");
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let app = spawn_app().await;
    let (r, id, d) = one_delivery(&app, "0.1,0.1,0.1", Arc::new(|_| Answer::Status(410))).await;
    assert_eq!((d.1.as_str(), d.2, d.3), ("failed", 1, Some(410)), "{d:?}");
    assert_eq!(r.count(), 1, "no retry after 410");
    let (_, e) = app.get(&format!("/v1/webhook-endpoints/{id}")).await;
    assert_eq!(e["status"], "disabled");
    assert_eq!(app.event_types(&id).await.last().map(String::as_str), Some("status_changed"));
    let n = app
        .count(&format!(
            "SELECT count(*) FROM events WHERE object_id = '{id}' AND webhook_type = 'webhook_endpoint.disabled'"
        ))
        .await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_hanging_receiver_times_out_after_15_seconds() {
    let app = spawn_app().await;
    let (r, _, d) = one_delivery(
        &app,
        "0.1",
        Arc::new(|n| if n == 0 { Answer::Hang(Duration::from_secs(17)) } else { Answer::Status(204) }),
    )
    .await;
    assert_eq!((d.1.as_str(), d.2, d.3), ("succeeded", 2, Some(204)), "{d:?}");
    let got = r.received();
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(15) && gap < Duration::from_secs(17), "second attempt {gap:?} after the hang");
}

#[tokio::test]
async fn five_days_without_success_disables_the_endpoint() {
    let app = spawn_app().await;
    let r = Receiver::start(Arc::new(|_| Answer::Status(500))).await;
    let (id, _) = endpoint(&app, &r.url, json!(["plan.created"])).await;
    sqlx::query("UPDATE webhook_endpoints SET failing_since = now() - interval '5 days 1 minute' WHERE id = $1::uuid")
        .bind(&id)
        .execute(app.pool())
        .await
        .unwrap();
    let engine = app.start_engine(opts("0.1,0.1"));
    app.active_plan("1.00").await;
    eventually("the endpoint to be disabled", Duration::from_secs(20), async || {
        let (_, e) = app.get(&format!("/v1/webhook-endpoints/{id}")).await;
        if e["status"] == "disabled" { Ok(e) } else { Err(e.to_string()) }
    })
    .await;
    engine.stop().await;
    let (_, e) = app.get(&format!("/v1/webhook-endpoints/{id}")).await;
    assert_eq!(e["disabledReason"], "no successful delivery for 5 days");
    assert_eq!(r.count(), 1);
}

#[tokio::test]
async fn private_addresses_are_refused_without_the_override() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    let (by_ip, _) = endpoint(&app, &r.url, json!(["plan.created"])).await;
    let (by_name, _) = endpoint(&app, &format!("http://localhost:{}/hooks", r.port), json!(["plan.created"])).await;
    // A worker that keeps the production default.
    let args = recur::cli::EngineArgs { webhook_allow_private: false, ..app.engine_args(&opts("0.1")) };
    let engine_core = app.rt.engine(&args).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let opts_w = recur::worker::WorkerOptions {
        queues: jobs::Queue::ALL.to_vec(),
        concurrency: None,
        drain_timeout: Duration::from_secs(5),
    };
    let worker = tokio::spawn(recur::worker::run(engine_core, opts_w, stopped.clone()));
    let sched = app.scheduler(&EngineOpts::default());
    let sched_task = tokio::spawn(async move { sched.run(stopped).await });
    app.active_plan("1.00").await;
    for id in [&by_ip, &by_name] {
        settled(&app, id, 1).await;
        let d = deliveries(&app, id).await.remove(0);
        assert_eq!(d.1, "failed", "{d:?}");
        assert!(d.4.as_deref().unwrap_or("").contains("private"), "{d:?}");
    }
    assert_eq!(r.count(), 0, "a private address was reached");
    let _ = stop.send(true);
    let _ = tokio::join!(worker, sched_task);
}

#[tokio::test]
async fn deliveries_are_listed_retried_and_replayed() {
    let app = spawn_app().await;
    // An event from before any endpoint existed: a replay sends it with its object.
    let plan = app.active_plan("3.00").await;
    let r = Receiver::ok().await;
    let (id, secret) = endpoint(&app, &r.url, json!(["plan.*"])).await;
    let engine = app.start_engine(EngineOpts::default());
    app.active_plan("4.00").await;
    settled(&app, &id, 1).await;

    let (s, list) = app.get(&format!("/v1/webhook-endpoints/{id}/deliveries?status=succeeded&type=plan.created")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let rows = list["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["attempts"], 1);
    assert!(rows[0].get("lastResponse").is_none());
    let delivery = rows[0]["id"].as_str().unwrap().to_owned();

    let (s, b) = app.post(&format!("/v1/webhook-deliveries/{delivery}/retry"), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    eventually("the retried message", Duration::from_secs(20), async || r.count() == 2).await;
    let got = r.received();
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    let (_, evs) = app.get(&format!("/v1/events?objectId={id}&type=delivery_retried")).await;
    assert_eq!(evs["data"][0]["data"]["deliveryId"], delivery.as_str(), "{evs}");
    assert_eq!(evs["data"][0]["actor"], "merchant");

    let since = (chrono::Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339();
    let (s, b) = app.post(&format!("/v1/webhook-endpoints/{id}/replay"), json!({"since": since})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["replayed"], 2, "one plan.created per plan: {b}");
    let about_plan = || -> Vec<Value> {
        r.received()
            .iter()
            .filter(|m| m.verifies(&secret))
            .map(|m| m.json())
            .filter(|m| m["data"]["object"]["id"] == plan.as_str())
            .collect()
    };
    eventually("the event from before the endpoint, replayed", Duration::from_secs(20), async || {
        !about_plan().is_empty()
    })
    .await;
    settled(&app, &id, 1).await;
    assert_eq!(about_plan()[0]["data"]["object"]["amount"], "3.00");
    let (_, evs) = app.get(&format!("/v1/events?objectId={id}&type=replayed")).await;
    assert_eq!(
        (evs["data"][0]["data"]["replayed"].as_i64(), evs["data"][0]["actor"].as_str()),
        (Some(2), Some("merchant"))
    );

    // Operators see the same through `recur webhooks`, with the receiver's answers.
    let out = app.run_cli(&["webhooks", "endpoints", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.json()[0]["endpoint"]["id"], id.as_str());
    assert!(out.json()[0]["endpoint"].get("secret").is_none(), "the CLI shows no secret");
    let out = app.run_cli(&["webhooks", "deliveries", &id, "--status", "succeeded", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.json().as_array().map(Vec::len), Some(2));
    let before = r.count();
    let out = app.run_cli(&["webhooks", "replay", &id, "--since", "1h"]).await;
    assert!(out.status.success() && out.stdout.starts_with("2 events queued"), "{out:?}");
    eventually("the operator's replay", Duration::from_secs(20), async || r.count() == before + 2).await;
    engine.stop().await;
    let (_, evs) = app.get(&format!("/v1/events?objectId={id}&type=replayed")).await;
    assert_eq!(evs["data"][1]["actor"], "operator", "{evs}");
}

#[tokio::test]
async fn a_redis_flush_delays_deliveries_but_loses_none() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    let (id, _) = endpoint(&app, &r.url, json!(["*"])).await;
    let engine = app.start_engine(EngineOpts { worker: false, ..EngineOpts::default() });
    for i in 0..20 {
        app.active_plan(&format!("{i}.50")).await;
    }
    // The scheduler enqueued them; Redis loses every key of the namespace.
    let n = app.count("SELECT count(*) FROM webhook_deliveries").await;
    assert!(n >= 20);
    eventually("deliveries to be enqueued", Duration::from_secs(10), async || {
        app.count("SELECT count(*) FROM webhook_deliveries WHERE enqueued_until IS NOT NULL").await == n
    })
    .await;
    let mut conn =
        redis::Client::open(app.settings.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    crate::support::delete_namespace(&mut conn, &app.settings.redis_namespace).await;
    engine.stop().await;
    let engine = app.start_engine(EngineOpts::default());
    settled(&app, &id, n as usize).await;
    engine.stop().await;
    let ids: HashSet<String> = r.received().iter().map(|m| m.header("webhook-id").to_owned()).collect();
    assert_eq!(ids.len() as i64, n);
    assert_eq!(app.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'succeeded'").await, n);
}

#[tokio::test]
async fn the_python_sample_of_the_docs_verifies_what_recur_signs() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    let (_, secret) = endpoint(&app, &r.url, json!(["plan.created"])).await;
    let engine = app.start_engine(EngineOpts::default());
    app.active_plan("7.00").await;
    eventually("the message", Duration::from_secs(20), async || r.count() >= 1).await;
    engine.stop().await;
    let m = r.received().remove(0);
    let run = |body: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/verify_webhook.py"))
            .arg(&secret)
            .env("WEBHOOK_ID", m.header("webhook-id"))
            .env("WEBHOOK_TIMESTAMP", m.header("webhook-timestamp"))
            .env("WEBHOOK_SIGNATURE", m.header("webhook-signature"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child.stdin.take().unwrap().write_all(body).unwrap();
        child.wait_with_output().unwrap().status.success()
    };
    assert!(run(&m.body), "the documented sample refuses a message recur signed");
    let tampered = String::from_utf8_lossy(&m.body).replace("7.00", "0.07");
    assert!(!run(tampered.as_bytes()), "the documented sample accepts a tampered body");
}

#[tokio::test]
async fn copies_of_one_delivery_job_record_one_attempt() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    let (endpoint_id, _) = endpoint(&app, &r.url, json!(["plan.created"])).await;
    app.active_plan("3.00").await;
    let delivery: uuid::Uuid = sqlx::query_scalar("SELECT id FROM webhook_deliveries WHERE endpoint_id = $1::uuid")
        .bind(&endpoint_id)
        .fetch_one(app.pool())
        .await
        .unwrap();
    let sender = recur::webhooks::Sender {
        client: recur::webhooks::client::Client::new(true).unwrap(),
        schedule: Default::default(),
    };
    let deliverer = recur::webhooks::Deliverer::spawn(app.pool().clone(), app.rt.queue.clone(), sender, 8);
    // Eight copies at once: they share load and record batches, and race each other.
    let copies: Vec<_> = (0..8)
        .map(|_| {
            let d = deliverer.clone();
            tokio::spawn(async move { d.deliver(delivery).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in copies {
        outcomes.push(c.await.unwrap());
    }
    let delivered = outcomes.iter().filter(|o| **o == recur::webhooks::Sent::Delivered).count();
    assert_eq!(delivered, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|o| matches!(o, recur::webhooks::Sent::Delivered | recur::webhooks::Sent::Skipped)));
    let d = deliveries(&app, &endpoint_id).await.remove(0);
    assert_eq!((d.1.as_str(), d.2), ("succeeded", 1), "one attempt counted: {d:?}");
    let got = r.received();
    assert!(!got.is_empty());
    assert!(got.iter().all(|m| m.header("webhook-id") == d.0), "every copy carries the event's id");
}

#[tokio::test]
async fn an_endpoint_deleted_while_an_event_is_recorded_does_not_fail_the_change() {
    let app = spawn_app().await;
    let (endpoint_id, _) = endpoint(&app, "http://127.0.0.1:9/hook", json!(["*"])).await;
    // The delete is in flight (not committed) when a billing transaction records an event.
    let mut delete = app.pool().begin().await.unwrap();
    sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1::uuid")
        .bind(&endpoint_id)
        .execute(&mut *delete)
        .await
        .unwrap();
    let pool = app.pool().clone();
    let merchant = app.merchant.id;
    let change = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let event = recur::events::NewEvent::new(
            merchant,
            "plan",
            uuid::Uuid::now_v7(),
            "created",
            json!({}),
            recur::events::Actor::Merchant,
        );
        recur::events::record(&mut tx, &[event]).await?;
        tx.commit().await.map_err(recur::Error::from)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!change.is_finished(), "the event's transaction waits for the delete to settle");
    delete.commit().await.unwrap();
    change.await.unwrap().expect("the change commits");
    assert_eq!(app.count("SELECT count(*) FROM events WHERE object_type = 'plan' AND type = 'created'").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM webhook_deliveries").await, 0, "no delivery to a deleted endpoint");
}

/// Deliveries a transaction wrote leased are sent at once by the process that wrote
/// them, up to its room; the rest go as jobs, and a failed first attempt is retried
/// through the queue like any other.
/// `n` updates of a new plan, committed the way a charge's record batch commits its
/// events (its deliveries handed back to be sent, leased for the minimum).
async fn plan_updates_committed(app: &TestApp, n: i32) -> Vec<recur::webhooks::send::Outgoing> {
    let plan_id: uuid::Uuid = app.active_plan("4.00").await.parse().unwrap();
    let events: Vec<_> = (0..n)
        .map(|i| {
            recur::events::NewEvent::new(
                app.merchant.id,
                "plan",
                plan_id,
                "updated",
                json!({ "n": i }),
                recur::events::Actor::Merchant,
            )
        })
        .collect();
    let mut tx = app.pool().begin().await.unwrap();
    let born = recur::events::record_leased(&mut tx, &events, Some(1)).await.unwrap();
    tx.commit().await.unwrap();
    born
}

#[tokio::test]
async fn born_deliveries_go_at_once_up_to_the_room_and_the_rest_through_the_queue() {
    let app = spawn_app().await;
    // The first two calls fail: whichever deliveries they were, they are retried.
    let r = Receiver::start(Arc::new(|n| Answer::Status(if n < 2 { 500 } else { 204 }))).await;
    let (endpoint_id, secret) = endpoint(&app, &r.url, json!(["plan.updated"])).await;
    let born = plan_updates_committed(&app, 6).await;
    assert_eq!(born.len(), 6);
    assert_eq!(app.count("SELECT count(*) FROM webhook_deliveries").await, 0, "rows come with the first attempts");
    let leased = app
        .count(
            "SELECT count(*) FROM webhook_births WHERE cardinality(delivery_ids) = 6
               AND lease_until > now() + interval '20 seconds'",
        )
        .await;
    assert_eq!(leased, 1, "one birth, leased for at least the webhook minimum, whatever the caller asked");

    let sender = recur::webhooks::Sender {
        client: recur::webhooks::client::Client::new(true).unwrap(),
        schedule: recur::webhooks::schedule::Schedule::parse("0.2,0.2").unwrap(),
    };
    // Room for two at once: four become deliver-webhook jobs.
    let deliverer = recur::webhooks::Deliverer::spawn(app.pool().clone(), app.rt.queue.clone(), sender, 2);
    deliverer.send_born(born).await;
    eventually("the two sent at once to be recorded", Duration::from_secs(10), async || {
        let n = app.count("SELECT count(*) FROM webhook_deliveries WHERE attempts = 1").await;
        if n == 2 { Ok(()) } else { Err(format!("{n} recorded")) }
    })
    .await;
    assert_eq!(r.count(), 2, "nothing else went out before a worker ran");
    let queued = app.count("SELECT count(*) FROM webhook_deliveries WHERE attempts = 0").await;
    assert_eq!(queued, 4);

    // A worker takes the four jobs; the scheduler retries the two that failed.
    let engine = app.start_engine(opts("0.2,0.2"));
    settled(&app, &endpoint_id, 6).await;
    engine.stop().await;
    let rows = deliveries(&app, &endpoint_id).await;
    assert!(rows.iter().all(|d| d.1 == "succeeded"), "{rows:?}");
    assert_eq!(rows.iter().map(|d| d.2).sum::<i32>(), 8, "six first attempts and two retries: {rows:?}");
    let got = r.received();
    assert_eq!(got.len(), 8);
    assert!(got.iter().all(|m| m.verifies(&secret)));
    let ids: HashSet<&str> = got.iter().map(|m| m.header("webhook-id")).collect();
    let events: HashSet<String> = rows.iter().map(|d| d.0.clone()).collect();
    assert_eq!(ids, events.iter().map(String::as_str).collect(), "every event's message, under its event id");
    assert_eq!(app.count("SELECT count(*) FROM webhook_births").await, 0, "the birth goes with its last row");
}

#[tokio::test]
async fn deliveries_whose_worker_died_before_writing_them_are_written_and_sent_by_the_scheduler() {
    let app = spawn_app().await;
    let r = Receiver::ok().await;
    let (endpoint_id, secret) = endpoint(&app, &r.url, json!(["plan.updated"])).await;
    let (other_id, _) = endpoint(&app, &r.url, json!(["plan.updated"])).await;
    // Committed, then the worker is gone: nothing sent, no row written, the birth left.
    let born = plan_updates_committed(&app, 5).await;
    assert_eq!(born.len(), 10);
    let born_ids: HashSet<String> = born.iter().map(|d| d.id().to_string()).collect();
    drop(born);
    // One endpoint is deleted meanwhile: its deliveries are not owed any more.
    let (s, b) = app.delete(&format!("/v1/webhook-endpoints/{other_id}")).await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Before the lease passes, the scheduler leaves the birth alone.
    let engine = app.start_engine(EngineOpts::default());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(app.count("SELECT count(*) FROM webhook_deliveries").await, 0);
    assert_eq!(r.count(), 0);
    sqlx::query("UPDATE webhook_births SET lease_until = now() - interval '1 second'")
        .execute(app.pool())
        .await
        .unwrap();
    settled(&app, &endpoint_id, 5).await;
    engine.stop().await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, status::text FROM webhook_deliveries WHERE endpoint_id = $1::uuid")
            .bind(&endpoint_id)
            .fetch_all(app.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter().all(|(id, st)| st == "succeeded" && born_ids.contains(id)),
        "the ids the birth named: {rows:?}"
    );
    assert_eq!(app.count("SELECT count(*) FROM webhook_deliveries").await, 5, "none for the deleted endpoint");
    assert_eq!(app.count("SELECT count(*) FROM webhook_births").await, 0);
    let got = r.received();
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|m| m.verifies(&secret)));
}
