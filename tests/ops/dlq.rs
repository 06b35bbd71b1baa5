//! Dead-letter operations (docs/operations.md#dead-letters) through `recur dlq …`, `recur queues` and the admin
//! API: charges whose card times out dead-letter after their attempts, and operators
//! list, show, replay and drain them. Asserts on Redis keys, Postgres rows, exit codes
//! and bodies.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{EngineOpts, TestApp, eventually, spawn_app};

const QUEUE: &str = "charge-transaction";

/// Two attempts, then the dead-letter queue.
fn engine() -> EngineOpts {
    EngineOpts { max_attempts: Some(2), ..EngineOpts::default() }
}

/// A monthly subscription whose card times out at the gateway every time.
async fn timeout_subscription(app: &TestApp, customer: &str) -> String {
    let s = app
        .subscription(json!({"customer": {"customerAccountId": customer}, "amount": "7.50", "currency": "EUR",
            "interval": {"unit": "month", "count": 1}, "paymentMethod": "pm_sandbox_timeout"}))
        .await;
    s["id"].as_str().unwrap().to_owned()
}

async fn cycles(app: &TestApp, sub: &str) -> Vec<Value> {
    let (s, b) = app.get(&format!("/v1/subscriptions/{sub}/billing-cycles")).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["data"].as_array().cloned().unwrap_or_default()
}

/// The first cycle of `sub` once it has `status`.
async fn wait_cycle(app: &TestApp, sub: &str, status: &str) -> Value {
    eventually(&format!("cycle 1 of {sub} to become {status}"), Duration::from_secs(30), async || {
        match cycles(app, sub).await.first() {
            Some(c) if c["status"] == status => Ok(c.clone()),
            Some(c) => Err(format!("{c:#}")),
            None => Err("no cycle".to_owned()),
        }
    })
    .await
}

/// The raw Redis hash of the charge queue's dead letters: id → JSON.
fn dlq_key(app: &TestApp) -> String {
    format!("{}:dlq:{QUEUE}", app.settings.redis_namespace)
}

async fn dlq_hash(app: &TestApp) -> std::collections::HashMap<String, String> {
    let mut conn = app.rt.queue.connection();
    redis::cmd("HGETALL").arg(dlq_key(app)).query_async(&mut conn).await.unwrap()
}

async fn wait_dead(app: &TestApp, n: usize) {
    eventually(&format!("{n} dead letters in {}", dlq_key(app)), Duration::from_secs(30), async || {
        let dead = dlq_hash(app).await.len();
        if dead == n { Ok(()) } else { Err(dead) }
    })
    .await;
}

async fn admin_dlq(app: &TestApp, query: &str) -> Vec<Value> {
    let (s, b) = app.admin_get(&format!("/admin/dlq{query}")).await;
    assert_eq!(s, StatusCode::OK, "GET /admin/dlq{query}: {b}");
    b["data"].as_array().cloned().expect("data array")
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
}

/// `n` timeout subscriptions, dead-lettered: their ids and (in the same order) their
/// first transactions' ids.
async fn dead_lettered(app: &TestApp, prefix: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let mut subs = Vec::new();
    for i in 0..n {
        subs.push(timeout_subscription(app, &format!("{prefix}-{i}")).await);
    }
    wait_dead(app, n).await;
    let mut txns = Vec::new();
    for s in &subs {
        let c = wait_cycle(app, s, "error").await;
        assert_eq!(c["transactions"].as_array().unwrap().len(), 1, "{c:#}");
        assert_eq!(c["transactions"][0]["status"], "error", "{c:#}");
        txns.push(c["transactions"][0]["id"].as_str().unwrap().to_owned());
    }
    (subs, txns)
}

#[tokio::test]
async fn list_show_and_replay_one_after_the_card_is_fixed() {
    let app = spawn_app().await;
    let _engine = app.start_engine(engine());
    let (subs, txns) = dead_lettered(&app, "dlq-list", 3).await;

    // Admin API: every entry names its queue, attempts, error and object.
    let all = admin_dlq(&app, "").await;
    assert_eq!(all.len(), 3, "{all:#?}");
    let mut objects: Vec<String> = all.iter().map(|e| e["objectId"].as_str().unwrap().to_owned()).collect();
    objects.sort();
    let mut expected = txns.clone();
    expected.sort();
    assert_eq!(objects, expected, "one dead letter per timed-out transaction");
    for e in &all {
        assert_eq!(e["queue"], QUEUE, "{e}");
        assert_eq!(e["attempts"], 2, "{e}");
        assert_eq!(e["objectType"], "transaction", "{e}");
        assert!(e["lastError"].as_str().unwrap().contains("gateway timeout"), "{e}");
        assert_eq!(e["job"]["queue"], QUEUE, "{e}");
        assert_eq!(e["job"]["payload"]["transactionId"], e["objectId"], "{e}");
        assert!(e["failedAt"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{e}");
    }
    let all_ids = ids(&all);
    let mut sorted = all_ids.clone();
    sorted.sort();
    assert_eq!(all_ids, sorted, "oldest first");
    let raw = dlq_hash(&app).await;
    let mut raw_ids: Vec<String> = raw.keys().cloned().collect();
    raw_ids.sort();
    assert_eq!(raw_ids, sorted, "the admin API lists the Redis hash");

    // Filters.
    assert_eq!(ids(&admin_dlq(&app, &format!("?queue={QUEUE}")).await), all_ids);
    assert!(admin_dlq(&app, "?queue=generate-cycle").await.is_empty());
    assert_eq!(ids(&admin_dlq(&app, "?errorContains=GATEWAY%20TIMEOUT").await), all_ids, "case-insensitive");
    assert!(admin_dlq(&app, "?errorContains=insufficient").await.is_empty());
    assert_eq!(ids(&admin_dlq(&app, "?limit=2").await), all_ids[..2].to_vec());
    for bad in ["?queue=charges", "?limit=0", "?limit=101", "?colour=red"] {
        let (s, b) = app.admin_get(&format!("/admin/dlq{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
    }
    let (s, _) = TestApp::send(app.client.get(format!("{}/admin/dlq", app.base))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the admin API needs the token");

    // CLI table.
    let out = app.run_cli(&["dlq", "list"]).await;
    assert!(out.status.success(), "{out:?}");
    println!("$ recur dlq list\n{}", out.stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for h in ["ID", "QUEUE", "ATTEMPTS", "FAILED AT", "OBJECT", "LAST ERROR"] {
        assert!(lines[0].contains(h), "header lacks {h}: {}", lines[0]);
    }
    assert_eq!(lines.len(), 4, "header and three rows: {}", out.stdout);
    for (line, e) in lines[1..].iter().zip(&all) {
        let id = e["id"].as_str().unwrap();
        assert!(line.starts_with(id), "rows oldest first: {line}");
        assert!(line.contains(QUEUE), "{line}");
        assert!(line.split_whitespace().any(|w| w == "2"), "attempts: {line}");
        assert!(line.contains(&format!("transaction {}", e["objectId"].as_str().unwrap())), "{line}");
        assert!(line.contains("gateway timeout"), "{line}");
    }

    // CLI JSON: the same entries as the admin API.
    let json_list = app.run_cli(&["dlq", "list", "--json"]).await.json();
    assert_eq!(json_list, Value::Array(all.clone()));
    let limited = app.run_cli(&["dlq", "list", "--queue", QUEUE, "--limit", "1", "--json"]).await.json();
    assert_eq!(limited, json!([all[0]]));
    let none = app.run_cli(&["dlq", "list", "--error-contains", "stolen", "--json"]).await.json();
    assert_eq!(none, json!([]));
    let bad = app.run_cli(&["dlq", "list", "--queue", "charges"]).await;
    assert!(!bad.status.success(), "{bad:?}");
    assert!(bad.stderr.contains("unknown queue \"charges\""), "{bad:?}");
    let empty_q = app.run_cli(&["dlq", "list", "--queue", "resume"]).await;
    assert!(empty_q.status.success() && empty_q.stdout.contains("(no dead letters)"), "{empty_q:?}");

    // Show.
    let first = &all[0];
    let first_id = first["id"].as_str().unwrap();
    let show = app.run_cli(&["dlq", "show", first_id]).await;
    assert!(show.status.success(), "{show:?}");
    for want in [
        first_id.to_owned(),
        QUEUE.to_owned(),
        "attempts:   2".to_owned(),
        format!("transaction {}", first["objectId"].as_str().unwrap()),
        "gateway timeout".to_owned(),
        format!("\"transactionId\":\"{}\"", first["objectId"].as_str().unwrap()),
    ] {
        assert!(show.stdout.contains(&want), "show lacks {want:?}: {}", show.stdout);
    }
    assert_eq!(app.run_cli(&["dlq", "show", first_id, "--json"]).await.json(), *first);
    let unknown = Uuid::now_v7();
    let missing = app.run_cli(&["dlq", "show", &unknown.to_string()]).await;
    assert!(!missing.status.success(), "{missing:?}");
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(missing.stderr.contains(&format!("no dead letter with id {unknown}")), "{missing:?}");
    assert!(missing.stdout.is_empty(), "{missing:?}");

    // The merchant fixes the card; the operator replays that one dead letter.
    let sub = &subs[txns.iter().position(|t| t == first["objectId"].as_str().unwrap()).unwrap()];
    let txn = first["objectId"].as_str().unwrap();
    let (s, b) = app.patch(&format!("/v1/subscriptions/{sub}"), json!({"paymentMethod": "pm_sandbox_ok"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, before) = app.get(&format!("/v1/transactions/{txn}")).await;
    let key = before["idempotencyKey"].as_str().unwrap().to_owned();
    let replay = app.run_cli(&["dlq", "replay", first_id]).await;
    assert!(replay.status.success(), "{replay:?}");
    assert!(replay.stdout.contains("replayed 1 dead letter(s)") && replay.stdout.contains(txn), "{replay:?}");

    let c = wait_cycle(&app, sub, "succeeded").await;
    let t = &c["transactions"];
    assert_eq!(t.as_array().unwrap().len(), 1, "the same transaction continued, no new one: {c:#}");
    assert_eq!(t[0]["id"], txn);
    assert_eq!(t[0]["status"], "succeeded");
    assert_eq!(t[0]["idempotencyKey"], key.as_str(), "same idempotency key");
    assert_eq!(app.ledger_count().await, 1);
    let ledger_key: String =
        sqlx::query_scalar("SELECT idempotency_key FROM sandbox_charges").fetch_one(app.pool()).await.unwrap();
    assert_eq!(ledger_key, key);
    let types = app.event_types(txn).await;
    assert!(types.contains(&"replayed".to_owned()), "{types:?}");
    let replayed = app.events_of(txn).await.into_iter().find(|(t, _)| t == "replayed").unwrap().1;
    assert_eq!(replayed["deadLetterId"], first_id, "{replayed}");
    assert_eq!(replayed["paymentMethod"], "pm_sandbox_ok", "charged with the card as it is now: {replayed}");
    let pm: String =
        sqlx::query_scalar("SELECT payment_method FROM sandbox_charges").fetch_one(app.pool()).await.unwrap();
    assert_eq!(pm, "pm_sandbox_ok");
    let actor: String = sqlx::query_scalar("SELECT actor::text FROM events WHERE type = 'replayed' AND object_id = $1")
        .bind(Uuid::parse_str(txn).unwrap())
        .fetch_one(app.pool())
        .await
        .unwrap();
    assert_eq!(actor, "operator");
    assert_eq!(*types.last().unwrap(), "charge_succeeded", "{types:?}");

    // Gone from the DLQ; the other two stay, untouched.
    let raw = dlq_hash(&app).await;
    assert!(!raw.contains_key(first_id), "{raw:?}");
    assert_eq!(raw.len(), 2);
    assert_eq!(ids(&admin_dlq(&app, "").await), all_ids[1..].to_vec());
    for (s, t) in subs.iter().zip(&txns).filter(|(_, t)| *t != txn) {
        let c = cycles(&app, s).await;
        assert_eq!(c[0]["status"], "error", "{c:#?}");
        assert_eq!(c[0]["transactions"][0]["id"], t.as_str());
    }
    let again = app.run_cli(&["dlq", "replay", first_id]).await;
    assert!(!again.status.success() && again.stderr.contains("no dead letter with id"), "{again:?}");
    let neither = app.run_cli(&["dlq", "replay"]).await;
    assert!(!neither.status.success(), "{neither:?}");
    app.assert_exactly_once().await;
}

#[tokio::test]
async fn replay_all_dead_letters_again_when_the_card_still_times_out() {
    let app = spawn_app().await;
    let _engine = app.start_engine(engine());
    let (subs, txns) = dead_lettered(&app, "dlq-all", 3).await;
    let first_round: Vec<String> = dlq_hash(&app).await.into_keys().collect();

    // Nothing matches: nothing moves.
    let none = app.run_cli(&["dlq", "replay", "--all", "--error-contains", "stolen", "--json"]).await.json();
    assert_eq!(none, json!({"replayed": [], "superseded": []}));
    assert_eq!(dlq_hash(&app).await.len(), 3);

    // CLI: every charge dead letter back on its queue; the card still times out.
    let out = app.run_cli(&["dlq", "replay", "--all", "--queue", QUEUE, "--json"]).await.json();
    let mut replayed: Vec<String> =
        out["replayed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    replayed.sort();
    let mut expected = first_round.clone();
    expected.sort();
    assert_eq!(replayed, expected);
    let second_round = wait_new_round(&app, &first_round).await;
    for (s, t) in subs.iter().zip(&txns) {
        let c = wait_cycle(&app, s, "error").await;
        assert_eq!(c["transactions"].as_array().unwrap().len(), 1, "{c:#}");
        assert_eq!(c["transactions"][0]["id"], t.as_str(), "the same transaction was retried");
        let types = app.event_types(t).await;
        assert_eq!(types.iter().filter(|t| *t == "replayed").count(), 1, "{types:?}");
        assert_eq!(types.iter().filter(|t| *t == "dead_lettered").count(), 2, "{types:?}");
    }
    for e in admin_dlq(&app, "").await {
        assert_eq!(e["attempts"], 2, "attempts were reset by the replay: {e}");
    }
    assert_eq!(app.ledger_count().await, 0);

    // Admin API: the same, with validation on the way in.
    for (body, status) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"all": true, "ids": [second_round[0]]}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"all": true, "queue": "charges"}), StatusCode::BAD_REQUEST),
        (json!({"ids": [Uuid::now_v7()]}), StatusCode::NOT_FOUND),
        (json!({"all": true, "colour": "red"}), StatusCode::BAD_REQUEST),
    ] {
        let (s, b) = app.admin_post("/admin/dlq/replay", body.clone()).await;
        assert_eq!(s, status, "{body}: {b}");
    }
    assert_eq!(dlq_hash(&app).await.len(), 3, "a rejected replay moves nothing");
    let (s, b) = app.admin_post("/admin/dlq/replay", json!({"all": true})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["replayed"].as_array().unwrap().len(), 3, "{b}");
    let third_round = wait_new_round(&app, &second_round).await;
    assert!(third_round.iter().all(|id| !first_round.contains(id)));
    for (s, t) in subs.iter().zip(&txns) {
        let c = wait_cycle(&app, s, "error").await;
        assert_eq!(c["transactions"][0]["id"], t.as_str());
        let types = app.event_types(t).await;
        assert_eq!(types.iter().filter(|t| *t == "replayed").count(), 2, "{types:?}");
    }
    assert_eq!(app.ledger_count().await, 0);
    assert_eq!(app.count("SELECT count(*) FROM transactions").await, 3, "replays never open new attempts");
}

/// Wait until the DLQ holds as many entries as `previous`, all of them new; their ids.
async fn wait_new_round(app: &TestApp, previous: &[String]) -> Vec<String> {
    let n = previous.len();
    eventually("the replayed charges to dead-letter again", Duration::from_secs(30), async || {
        let h = dlq_hash(app).await;
        let ids: Vec<&String> = h.keys().collect();
        if h.len() == n && h.keys().all(|k| !previous.contains(k)) { Ok(()) } else { Err(format!("{ids:?}")) }
    })
    .await;
    let mut ids: Vec<String> = dlq_hash(app).await.into_keys().collect();
    ids.sort();
    ids
}

/// The six queues as `recur queues --json` reports them, by name.
async fn queue_stats(app: &TestApp) -> std::collections::BTreeMap<String, Value> {
    let v = app.run_cli(&["queues", "--json"]).await.json();
    v.as_array().unwrap().iter().map(|q| (q["queue"].as_str().unwrap().to_owned(), q.clone())).collect()
}

const QUEUES: [&str; 6] =
    ["generate-cycle", "charge-transaction", "retry-charge", "trial-end", "resume", "deliver-webhook"];

async fn assert_queues(app: &TestApp, dead: u64) {
    let cli = queue_stats(app).await;
    assert_eq!(cli.keys().cloned().collect::<Vec<_>>(), {
        let mut q: Vec<String> = QUEUES.iter().map(|s| s.to_string()).collect();
        q.sort();
        q
    });
    for (name, q) in &cli {
        for f in ["pending", "scheduled", "running", "dead", "workers"] {
            assert!(q[f].is_u64(), "{name}.{f}: {q}");
        }
        let want = if name == QUEUE { dead } else { 0 };
        assert_eq!(q["dead"], want, "{name}: {q}");
        assert!(q["workers"].as_u64().unwrap() >= 1, "the engine runs every queue: {q}");
    }
    let (s, b) = app.admin_get("/admin/queues").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let api: Vec<Value> = b["data"].as_array().unwrap().clone();
    assert_eq!(api.iter().map(|q| q["queue"].as_str().unwrap()).collect::<Vec<_>>(), QUEUES);
    for q in &api {
        assert_eq!(q["dead"], cli[q["queue"].as_str().unwrap()]["dead"], "{q}");
        assert!(q["workers"].as_u64().unwrap() >= 1, "{q}");
    }
    let table = app.run_cli(&["queues"]).await;
    assert!(table.status.success(), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    for h in ["QUEUE", "PENDING", "SCHEDULED", "RUNNING", "DEAD", "WORKERS"] {
        assert!(lines[0].contains(h), "{}", table.stdout);
    }
    assert_eq!(lines.len(), QUEUES.len() + 1, "{}", table.stdout);
    for (line, name) in lines[1..].iter().zip(QUEUES) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols.len(), 6, "{line}");
        assert_eq!(cols[0], name);
        assert_eq!(cols[4], if name == QUEUE { dead.to_string() } else { "0".into() }, "{line}");
    }
}

/// A row of dead_letter_archive, as JSON.
async fn archived(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar::<_, Value>(
        "SELECT jsonb_build_object('id', id, 'queue', queue, 'job', job, 'attempts', attempts, 'lastError', last_error,
            'failedAt', failed_at, 'objectType', object_type, 'objectId', object_id, 'drainedAt', drained_at)
         FROM dead_letter_archive ORDER BY id",
    )
    .fetch_all(app.pool())
    .await
    .unwrap()
}

async fn redis_exists(app: &TestApp) -> bool {
    let mut conn = app.rt.queue.connection();
    redis::cmd("EXISTS").arg(dlq_key(app)).query_async::<i64>(&mut conn).await.unwrap() == 1
}

#[tokio::test]
async fn drain_archives_in_postgres_and_queues_count_the_dead() {
    let app = spawn_app().await;
    let _engine = app.start_engine(engine());
    let (_, txns) = dead_lettered(&app, "dlq-drain", 3).await;
    assert_queues(&app, 3).await;
    let entries = admin_dlq(&app, "").await;
    let raw_before = dlq_hash(&app).await;

    // Dry run: reports, changes nothing.
    let dry = app.run_cli(&["dlq", "drain", "--dry-run"]).await;
    assert!(dry.status.success(), "{dry:?}");
    assert!(dry.stdout.starts_with("would drain 3 dead letter(s)"), "{dry:?}");
    for e in &entries {
        assert!(dry.stdout.contains(e["id"].as_str().unwrap()), "{dry:?}");
    }
    assert_eq!(dlq_hash(&app).await, raw_before);
    assert!(archived(&app).await.is_empty());

    // Nothing is a week old.
    let recent = app.run_cli(&["dlq", "drain", "--older-than", "7d", "--json"]).await.json();
    assert_eq!(recent, json!({"drained": [], "dryRun": false}));
    assert_eq!(dlq_hash(&app).await, raw_before);
    assert!(archived(&app).await.is_empty());
    let bad = app.run_cli(&["dlq", "drain", "--older-than", "soon"]).await;
    assert!(!bad.status.success(), "{bad:?}");

    // Drain: archived in Postgres first, then gone from Redis.
    let out = app.run_cli(&["dlq", "drain", "--queue", QUEUE]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with("drained (archived in dead_letter_archive) 3 dead letter(s)"), "{out:?}");
    assert!(!redis_exists(&app).await, "the Redis hash {} is empty", dlq_key(&app));
    assert!(admin_dlq(&app, "").await.is_empty());
    assert_archived(&archived(&app).await, &entries);
    assert_queues(&app, 0).await;
    // Draining never destroys a record: the transactions and cycles keep their error.
    for t in &txns {
        let (_, b) = app.get(&format!("/v1/transactions/{t}")).await;
        assert_eq!(b["status"], "error", "{b}");
    }
    assert_eq!(app.count("SELECT count(*) FROM billing_cycles WHERE status = 'error'").await, 3);
    let again = app.run_cli(&["dlq", "drain", "--json"]).await.json();
    assert_eq!(again, json!({"drained": [], "dryRun": false}));

    // The admin API.
    let _ = dead_lettered(&app, "dlq-drain-api", 2).await;
    let fresh = admin_dlq(&app, "").await;
    assert_eq!(fresh.len(), 2);
    let (s, b) = app.admin_post("/admin/dlq/drain", json!({"olderThanSeconds": 7 * 86_400})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"drained": [], "dryRun": false}));
    let (s, b) = app.admin_post("/admin/dlq/drain", json!({"dryRun": true})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["drained"], json!(ids(&fresh)));
    assert_eq!(b["dryRun"], true);
    assert_eq!(dlq_hash(&app).await.len(), 2);
    let (s, b) = app.admin_post("/admin/dlq/drain", json!({"queue": "charges"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = app.admin_post("/admin/dlq/drain", json!({"queue": "generate-cycle"})).await;
    assert_eq!((s, b["drained"].clone()), (StatusCode::OK, json!([])));
    let (s, b) = app.admin_post("/admin/dlq/drain", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["drained"], json!(ids(&fresh)));
    assert!(!redis_exists(&app).await);
    let all: Vec<Value> = entries.iter().chain(&fresh).cloned().collect();
    assert_archived(&archived(&app).await, &all);
    assert_queues(&app, 0).await;
    assert_eq!(app.ledger_count().await, 0);
}

/// The archive holds exactly `entries`, field for field.
fn assert_archived(rows: &[Value], entries: &[Value]) {
    assert_eq!(rows.len(), entries.len(), "{rows:#?}");
    let mut entries = entries.to_vec();
    entries.sort_by_key(|e| e["id"].as_str().unwrap().to_owned());
    for (row, e) in rows.iter().zip(&entries) {
        for f in ["id", "queue", "job", "attempts", "lastError", "objectType", "objectId"] {
            assert_eq!(row[f], e[f], "archived {f}: {row:#} vs {e:#}");
        }
        let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
        let skew = (at(&row["failedAt"]) - at(&e["failedAt"])).num_microseconds().unwrap().abs();
        assert!(skew <= 1, "failedAt kept (to the microsecond): {row:#} vs {e:#}");
        assert!(at(&row["drainedAt"]) >= at(&row["failedAt"]), "{row:#}");
    }
}

/// Found by the chaos run (`tests/chaos`, `RECUR_CHAOS_MAX_ATTEMPTS=1`): a charge that
/// dead-lettered before Redis lost its keys stayed `error` in Postgres with no dead
/// letter left, so `recur dlq replay --all` could not see it and it was never charged.
/// The scheduler now puts such dead letters back from Postgres.
#[tokio::test]
async fn dead_letters_lost_with_redis_come_back_from_postgres() {
    let app = spawn_app().await;
    let _engine = app.start_engine(engine());
    let (subs, txns) = dead_lettered(&app, "lost", 2).await;
    let mut conn =
        redis::Client::open(app.settings.redis_url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    crate::support::delete_namespace(&mut conn, &app.settings.redis_namespace).await;
    assert!(dlq_hash(&app).await.is_empty(), "the namespace was wiped");
    // Back within a sampling period of the scheduler (5 s), naming the same charges.
    wait_dead(&app, 2).await;
    let mut objects: Vec<String> =
        admin_dlq(&app, "").await.iter().map(|e| e["objectId"].as_str().unwrap().to_owned()).collect();
    objects.sort();
    let mut expected = txns.clone();
    expected.sort();
    assert_eq!(objects, expected);
    // And they replay to success once the card is fixed.
    for s in &subs {
        let (st, b) = app.patch(&format!("/v1/subscriptions/{s}"), json!({"paymentMethod": "pm_sandbox_ok"})).await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    let out = app.run_cli(&["dlq", "replay", "--all"]).await;
    assert!(out.status.success(), "{out:?}");
    for s in &subs {
        wait_cycle(&app, s, "succeeded").await;
    }
    // Every job delivered (a second charge would have been by then).
    app.wait_drained().await;
    assert_eq!(app.ledger_count().await, 2);
    app.assert_exactly_once().await;
}

/// A cycle whose charge dead-lettered, then whose manual retry dead-lettered too, had
/// two dead letters; `recur dlq replay --all` after the card was fixed reopened and
/// charged both attempts: two approved charges for one cycle. Only a cycle's latest
/// attempt is reopened by a replay now.
#[tokio::test]
async fn replaying_a_superseded_attempt_does_not_charge_the_cycle_twice() {
    let app = spawn_app().await;
    let _engine = app.start_engine(engine());
    let (subs, txns) = dead_lettered(&app, "superseded", 1).await;
    let cycle = wait_cycle(&app, &subs[0], "error").await;
    let (s, b) = app.post(&format!("/v1/billing-cycles/{}/retry", cycle["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    wait_dead(&app, 2).await;
    let cycle = wait_cycle(&app, &subs[0], "error").await;
    assert_eq!(cycle["transactions"].as_array().unwrap().len(), 2, "{cycle:#}");
    let (s, b) = app.patch(&format!("/v1/subscriptions/{}", subs[0]), json!({"paymentMethod": "pm_sandbox_ok"})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let out = app.run_cli(&["dlq", "replay", "--all", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["replayed"].as_array().unwrap().len(), 1, "the latest attempt is replayed: {v}");
    assert_eq!(v["superseded"].as_array().unwrap().len(), 1, "the first attempt is resolved as superseded: {v}");
    let cycle = wait_cycle(&app, &subs[0], "succeeded").await;
    // Every job delivered: a replay of the superseded attempt would have charged by then.
    app.wait_drained().await;
    assert!(dlq_hash(&app).await.is_empty(), "both dead letters are gone");
    let skipped = app
        .count(&format!("SELECT count(*) FROM events WHERE object_id = '{}' AND type = 'replay_superseded'", txns[0]))
        .await;
    assert_eq!(skipped, 1, "the superseded replay leaves an event");
    assert_eq!(app.ledger_count().await, 1, "one charge for one cycle: {cycle:#}");
    let first =
        app.count(&format!("SELECT count(*) FROM transactions WHERE id = '{}' AND status = 'error'", txns[0])).await;
    assert_eq!(first, 1, "the superseded attempt stays error");
    app.assert_exactly_once().await;
}
