//! The acquirer simulator (docs/gateway-protocol.md), started in-process on a random
//! port over a fresh database per test and called over loopback with signed requests.

use std::time::{Duration, Instant};

use recur::acquirer::{AcquirerArgs, Simulator};
use recur::webhooks::signing;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

mod schema;
#[path = "../support/mod.rs"]
mod support;

use support::{DatabaseGuard, pg_base};

/// One simulator over its own database, dropped with the harness.
struct Acquirer {
    sim: Option<Simulator>,
    args: AcquirerArgs,
    base: String,
    secret: String,
    client: reqwest::Client,
    pool: sqlx::PgPool,
    _cleanup: DatabaseGuard,
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    content_type: String,
    text: String,
    body: Value,
}

impl Reply {
    fn fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["field"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    }

    #[track_caller]
    fn assert_problem(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert!(self.content_type.starts_with("application/problem+json"), "{}", self.content_type);
        for member in ["type", "title", "detail"] {
            assert!(self.body[member].as_str().is_some_and(|s| !s.is_empty()), "no {member}: {}", self.text);
        }
        assert_eq!(self.body["status"], json!(status));
    }
}

async fn start() -> Acquirer {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut AcquirerArgs)) -> Acquirer {
    let name = format!("recur_acquirer_test_{}", Uuid::now_v7().simple());
    let url = format!("{}/{name}", pg_base());
    let cleanup = DatabaseGuard { name };
    let mut args = AcquirerArgs::new(&url);
    args.listen = "127.0.0.1:0".parse().unwrap();
    args.secret = Some(signing::new_secret());
    tweak(&mut args);
    let sim = Simulator::start(&args).await.expect("the simulator starts");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&url).await.unwrap();
    Acquirer {
        base: format!("http://{}", sim.addr),
        secret: sim.secret.clone(),
        sim: Some(sim),
        args,
        client: reqwest::Client::new(),
        pool,
        _cleanup: cleanup,
    }
}

fn charge_body(key: &str, pm: &str) -> Value {
    json!({
        "idempotencyKey": key,
        "amount": "10.00",
        "currency": "EUR",
        "paymentMethod": pm,
        "customerAccountId": "cust_1",
        "initiator": "merchant",
        "recurring": {"sequence": 1},
    })
}

fn key() -> String {
    format!("recur_txn_{}", Uuid::now_v7().simple())
}

impl Acquirer {
    /// Sign as recur does: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    fn signed(&self, rb: reqwest::RequestBuilder, id: &str, body: &[u8]) -> reqwest::RequestBuilder {
        self.signed_at(rb, id, body, chrono::Utc::now().timestamp(), &self.secret)
    }

    fn signed_at(
        &self,
        rb: reqwest::RequestBuilder,
        id: &str,
        body: &[u8],
        ts: i64,
        secret: &str,
    ) -> reqwest::RequestBuilder {
        rb.header("webhook-id", id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signing::sign(secret, id, ts, body).unwrap())
    }

    async fn post(&self, path: &str, id: &str, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).unwrap();
        let rb = self.client.post(format!("{}{path}", self.base)).header("content-type", "application/json");
        reply(self.signed(rb, id, &bytes).body(bytes).send().await.expect("an answer")).await
    }

    async fn charge(&self, body: &Value) -> Reply {
        self.post("/v1/charges", body["idempotencyKey"].as_str().unwrap_or("none"), body).await
    }

    async fn lookup(&self, key: &str) -> Reply {
        let rb = self.client.get(format!("{}/v1/charges/{key}", self.base));
        reply(self.signed(rb, key, b"").send().await.expect("an answer")).await
    }

    async fn tokenize(&self, body: &Value) -> Reply {
        self.post("/v1/payment-methods", &format!("pm_req_{}", Uuid::now_v7().simple()), body).await
    }

    async fn unsigned_get(&self, path: &str) -> Reply {
        reply(self.client.get(format!("{}{path}", self.base)).send().await.expect("an answer")).await
    }

    async fn rows(&self, key: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM acquirer_charges WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// `acquirer_connections_accepted_total`, scraped over the harness's pooled client.
    async fn connections_accepted(&self) -> u64 {
        let m = self.unsigned_get("/metrics").await;
        let line = m.text.lines().find(|l| l.starts_with("acquirer_connections_accepted_total "));
        line.and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("no counter in:\n{}", m.text))
    }

    async fn all_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM acquirer_charges").fetch_one(&self.pool).await.unwrap()
    }

    /// Stop the simulator and start a new one over the same database.
    async fn restart(&mut self) {
        self.sim.take().unwrap().stop().await.expect("a clean stop");
        let sim = Simulator::start(&self.args).await.expect("the simulator starts again");
        self.base = format!("http://{}", sim.addr);
        self.sim = Some(sim);
    }
}

async fn reply(res: reqwest::Response) -> Reply {
    let status = res.status();
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, content_type, text, body }
}

#[tokio::test]
async fn pm_ok_approves_and_records_one_row() {
    let a = start().await;
    let k = key();
    let r = a.charge(&charge_body(&k, "pm_ok")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "approved");
    assert!(r.body["reference"].as_str().is_some_and(|s| s.starts_with("ch_")));
    assert_eq!(r.body["declineCode"], Value::Null);
    assert_eq!(r.body["network"]["scheme"], "visa");
    assert_eq!(r.body["network"]["responseCode"], "00");
    let ntid = r.body["networkTransactionId"].as_str().unwrap();
    assert!(ntid.len() == 15 && ntid.bytes().all(|b| b.is_ascii_digit()), "{ntid}");
    assert_eq!(a.rows(&k).await, 1);
    let lookup = a.lookup(&k).await;
    assert_eq!((lookup.status, &lookup.body), (StatusCode::OK, &r.body));
}

#[tokio::test]
async fn a_repeated_key_returns_the_first_answer() {
    let a = start().await;
    let k = key();
    let first = a.charge(&charge_body(&k, "pm_visa_decline_05")).await;
    assert_eq!(first.body["status"], "declined", "{}", first.text);
    for _ in 0..3 {
        let again = a.charge(&charge_body(&k, "pm_visa_decline_05")).await;
        assert_eq!((again.status, &again.text), (StatusCode::OK, &first.text));
    }
    assert_eq!(a.rows(&k).await, 1);
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_make_one_row() {
    let a = start().await;
    for pm in ["pm_ok", "pm_recover_after_1"] {
        let k = key();
        let body = charge_body(&k, pm);
        let answers = futures::future::join_all((0..20).map(|_| a.charge(&body))).await;
        for r in &answers {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.body, answers[0].body, "every answer is the first one");
        }
        assert_eq!(a.rows(&k).await, 1);
    }
    // The recover_after attempts above count one key: the next key approves.
    let next = a.charge(&charge_body(&key(), "pm_recover_after_1")).await;
    assert_eq!(next.body["status"], "approved", "{}", next.text);
}

#[tokio::test]
async fn concurrent_charges_are_group_committed_one_row_per_key() {
    let a = start().await;
    // Enough at once to share batches: 100 calls with one key among 300 distinct keys.
    let same = charge_body(&key(), "pm_visa_decline_05");
    let distinct: Vec<Value> = (0..300).map(|i| charge_body(&key(), ["pm_ok", "pm_mc_ok"][i % 2])).collect();
    let bodies: Vec<&Value> = distinct.iter().chain(std::iter::repeat_n(&same, 100)).collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| a.charge(b))).await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    assert!(answers[..300].iter().all(|r| r.body["status"] == "approved"));
    for r in &answers[300..] {
        assert_eq!(r.body, answers[300].body, "every call with the key gets its first answer");
    }
    let k = same["idempotencyKey"].as_str().unwrap();
    assert_eq!(a.rows(k).await, 1);
    assert_eq!(a.all_rows().await, 301);
    let lookup = a.lookup(k).await;
    assert_eq!(lookup.body, answers[300].body);
}

#[tokio::test]
async fn the_same_key_with_another_amount_conflicts() {
    let a = start().await;
    let k = key();
    assert_eq!(a.charge(&charge_body(&k, "pm_ok")).await.status, StatusCode::OK);
    let mut other = charge_body(&k, "pm_ok");
    other["amount"] = json!("11.00");
    a.charge(&other).await.assert_problem(409);
    let mut other = charge_body(&k, "pm_mc_ok");
    a.charge(&other).await.assert_problem(409);
    other = charge_body(&k, "pm_ok");
    other["currency"] = json!("USD");
    a.charge(&other).await.assert_problem(409);
    // The same amount written differently is the same request.
    let mut same = charge_body(&k, "pm_ok");
    same["amount"] = json!("10.0");
    assert_eq!(a.charge(&same).await.status, StatusCode::OK);
    assert_eq!(a.rows(&k).await, 1);
}

#[tokio::test]
async fn visa_declines_carry_their_category() {
    let a = start().await;
    let categories: &[(u8, &[&str])] = &[
        (1, &["04", "07", "12", "14", "15", "41", "43", "46", "57", "R0", "R1", "R3"]),
        (2, &["03", "19", "51", "59", "61", "62", "65", "75", "78", "86", "91", "93", "96", "N3", "N4", "Z5"]),
        (3, &["54", "55", "6P", "82", "N7"]),
        (4, &["05", "01", "Q1", "XY"]),
    ];
    for (category, codes) in categories {
        for code in *codes {
            let r = a.charge(&charge_body(&key(), &format!("pm_visa_decline_{code}"))).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            assert_eq!(r.body["status"], "declined");
            assert_eq!(r.body["network"]["scheme"], "visa");
            assert_eq!(r.body["network"]["responseCode"], *code);
            assert_eq!(r.body["network"]["category"], json!(category), "code {code}");
            assert!(r.body["reference"].as_str().is_some());
        }
    }
    for (code, name) in [
        ("51", "insufficient_funds"),
        ("05", "do_not_honor"),
        ("43", "stolen_card"),
        ("54", "expired_card"),
        ("R1", "authorization_revoked"),
        ("96", "declined_96"),
    ] {
        let r = a.charge(&charge_body(&key(), &format!("pm_visa_decline_{code}"))).await;
        assert_eq!(r.body["declineCode"], name, "{code}");
    }
}

#[tokio::test]
async fn unknown_tokens_decline_as_invalid_accounts() {
    let a = start().await;
    for pm in ["pm_nope", "pm_visa_decline_00", "pm_recover_after_0", "pm_ok__notminted"] {
        let r = a.charge(&charge_body(&key(), pm)).await;
        assert_eq!(r.body["status"], "declined", "{pm}: {}", r.text);
        assert_eq!(r.body["network"]["responseCode"], "14", "{pm}");
        assert_eq!(r.body["network"]["category"], 1, "{pm}");
        assert_eq!(r.body["declineCode"], "invalid_account");
    }
    a.lookup("recur_txn_unknown").await.assert_problem(404);
}

#[tokio::test]
async fn mastercard_answers_carry_the_merchant_advice_code() {
    let a = start().await;
    let ok = a.charge(&charge_body(&key(), "pm_mc_ok")).await;
    assert_eq!(ok.body["status"], "approved", "{}", ok.text);
    assert_eq!(ok.body["network"]["scheme"], "mastercard");
    assert_eq!(ok.body["network"].get("category"), None);
    for (code, mac) in [("51", "24"), ("05", "03"), ("14", "01"), ("79", "21"), ("51", "99")] {
        let r = a.charge(&charge_body(&key(), &format!("pm_mc_decline_{code}_mac_{mac}"))).await;
        assert_eq!(r.body["status"], "declined", "{}", r.text);
        assert_eq!(r.body["network"]["scheme"], "mastercard");
        assert_eq!(r.body["network"]["responseCode"], code);
        assert_eq!(r.body["network"]["adviceCode"], mac);
        assert_eq!(r.body["network"].get("category"), None);
    }
}

#[tokio::test]
async fn recover_after_two_declines_twice_then_approves_in_each_cycle() {
    let a = start().await;
    let attempt = |sequence: i64| {
        let mut b = charge_body(&key(), "pm_recover_after_2");
        b["recurring"]["sequence"] = json!(sequence);
        b
    };
    for sequence in [1, 2] {
        let first = attempt(sequence);
        let r = a.charge(&first).await;
        assert_eq!(r.body["status"], "declined", "seq {sequence}: {}", r.text);
        assert_eq!(
            (r.body["network"]["responseCode"].as_str(), r.body["network"]["category"].as_i64()),
            (Some("51"), Some(2))
        );
        // Repeating a key is not a new attempt.
        assert_eq!(a.charge(&first).await.body, r.body);
        assert_eq!(a.charge(&attempt(sequence)).await.body["status"], "declined", "seq {sequence}");
        assert_eq!(a.charge(&attempt(sequence)).await.body["status"], "approved", "seq {sequence}");
        assert_eq!(a.charge(&attempt(sequence)).await.body["status"], "approved", "seq {sequence}");
    }
    // Another customer's cycle counts on its own.
    let mut other = attempt(1);
    other["customerAccountId"] = json!("cust_2");
    assert_eq!(a.charge(&other).await.body["status"], "declined");
}

#[tokio::test]
async fn concurrent_attempts_of_one_cycle_are_counted_exactly() {
    let a = start().await;
    let bodies: Vec<Value> = (0..12).map(|_| charge_body(&key(), "pm_recover_after_3")).collect();
    // Each key sent twice at once: duplicates must not count as attempts.
    let answers = futures::future::join_all(bodies.iter().chain(bodies.iter()).map(|b| a.charge(b))).await;
    let declined = answers[..12].iter().filter(|r| r.body["status"] == "declined").count();
    assert_eq!(declined, 3, "{:?}", answers.iter().map(|r| &r.text).collect::<Vec<_>>());
    for (first, again) in answers[..12].iter().zip(&answers[12..]) {
        assert_eq!(first.body, again.body);
    }
    assert_eq!(a.all_rows().await, 12);
}

#[tokio::test]
async fn a_restart_keeps_the_ledger() {
    let mut a = start().await;
    let k = key();
    let first = a.charge(&charge_body(&k, "pm_ok")).await;
    let mut recover = charge_body(&key(), "pm_recover_after_1");
    assert_eq!(a.charge(&recover).await.body["status"], "declined");
    a.restart().await;
    assert_eq!(a.lookup(&k).await.body, first.body);
    assert_eq!(a.charge(&charge_body(&k, "pm_ok")).await.body, first.body);
    assert_eq!(a.rows(&k).await, 1);
    // The cycle's attempts survived too.
    recover["idempotencyKey"] = json!(key());
    assert_eq!(a.charge(&recover).await.body["status"], "approved");
}

#[tokio::test]
async fn bad_missing_and_stale_signatures_are_refused() {
    let a = start().await;
    let k = key();
    let body = serde_json::to_vec(&charge_body(&k, "pm_ok")).unwrap();
    let url = format!("{}/v1/charges", a.base);
    let now = chrono::Utc::now().timestamp();
    let post = || a.client.post(&url).header("content-type", "application/json").body(body.clone());
    // Unsigned.
    reply(post().send().await.unwrap()).await.assert_problem(401);
    // Another secret.
    reply(a.signed_at(post(), &k, &body, now, &signing::new_secret()).send().await.unwrap()).await.assert_problem(401);
    // Another body than the one signed.
    let tampered = a.signed_at(post(), &k, b"{}", now, &a.secret);
    reply(tampered.send().await.unwrap()).await.assert_problem(401);
    // Too old, too far ahead.
    for ts in [now - 301, now + 301] {
        reply(a.signed_at(post(), &k, &body, ts, &a.secret).send().await.unwrap()).await.assert_problem(401);
    }
    // Garbage in the header.
    let garbage = post()
        .header("webhook-id", &k)
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", "v1,AAAA v2,BBBB");
    reply(garbage.send().await.unwrap()).await.assert_problem(401);
    // A rotation list with the right signature among others passes.
    let good = signing::header([signing::new_secret().as_str(), a.secret.as_str()], &k, now, &body);
    let rotated =
        post().header("webhook-id", &k).header("webhook-timestamp", now.to_string()).header("webhook-signature", good);
    assert_eq!(reply(rotated.send().await.unwrap()).await.status, StatusCode::OK);
    // Lookups are signed too.
    a.unsigned_get(&format!("/v1/charges/{k}")).await.assert_problem(401);
    assert_eq!(a.rows(&k).await, 1);
    assert_eq!(a.all_rows().await, 1);
}

#[tokio::test]
async fn charges_name_every_bad_field() {
    let a = start().await;
    let body = json!({"amount": "-1", "currency": "EURO", "initiator": "bank", "recurring": {"sequence": 0}});
    let r = a.post("/v1/charges", "any", &body).await;
    r.assert_problem(422);
    let fields = r.fields();
    for f in [
        "idempotencyKey",
        "amount",
        "currency",
        "paymentMethod",
        "customerAccountId",
        "initiator",
        "recurring.sequence",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} not named: {fields:?}");
    }
    a.post("/v1/charges", "any", &json!([1])).await.assert_problem(400);
    // webhook-id must be the idempotency key.
    let k = key();
    let r = a.post("/v1/charges", "another-id", &charge_body(&k, "pm_ok")).await;
    r.assert_problem(400);
    assert_eq!(r.fields(), ["webhook-id"]);
    assert_eq!(a.all_rows().await, 0);
}

#[tokio::test]
async fn cards_are_tokenized_without_keeping_their_number() {
    let a = start().await;
    let cases = [
        ("4242424242424242", "visa", "approved", None),
        ("4242 4242 4242 4242", "visa", "approved", None),
        ("5555555555554444", "mastercard", "approved", None),
        ("2223003122003222", "mastercard", "approved", None),
        ("4000000000009995", "visa", "declined", Some("51")),
        ("5100000000000511", "mastercard", "declined", Some("51")),
    ];
    for (number, scheme, status, code) in cases {
        let r = a
            .tokenize(&json!({"cardNumber": number, "expMonth": 12, "expYear": 2099, "cvc": "123", "customerAccountId": "cust_1"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(!r.text.contains(&number.replace(' ', "")), "{}", r.text);
        assert_eq!(r.body["scheme"], scheme);
        assert_eq!(r.body["last4"], &number[number.len() - 4..]);
        assert_eq!((r.body["expMonth"].as_i64(), r.body["expYear"].as_i64()), (Some(12), Some(2099)));
        let token = r.body["token"].as_str().unwrap();
        let charged = a.charge(&charge_body(&key(), token)).await;
        assert_eq!(charged.body["status"], status, "{number}: {}", charged.text);
        assert_eq!(charged.body["network"]["scheme"], scheme);
        if let Some(code) = code {
            assert_eq!(charged.body["network"]["responseCode"], code);
        }
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM acquirer_tokens t WHERE to_jsonb(t)::text LIKE '%4242424242%' OR to_jsonb(t)::text LIKE '%5555555555%'",
    )
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0, "a card number was stored");

    let bad = a.tokenize(&json!({"cardNumber": "4242424242424241", "expMonth": 1, "expYear": 2020, "cvc": "12"})).await;
    bad.assert_problem(422);
    assert_eq!(bad.fields(), ["cardNumber", "expYear", "cvc"]);
    assert!(!bad.text.contains("4242424242424241"), "{}", bad.text);
    let this_year = chrono::Utc::now().date_naive();
    use chrono::Datelike;
    if this_year.month() > 1 {
        let r = a
            .tokenize(
                &json!({"cardNumber": "4242424242424242", "expMonth": 1, "expYear": this_year.year(), "cvc": "123"}),
            )
            .await;
        r.assert_problem(422);
        assert_eq!(r.fields(), ["expMonth"]);
    }
    let r = a.tokenize(&json!({"cardNumber": "378282246310005", "expMonth": 13, "cvc": 123})).await;
    r.assert_problem(422);
    assert_eq!(r.fields(), ["cardNumber", "expMonth", "expYear", "cvc"]);
    assert!(!r.text.contains("378282246310005"));
    let r =
        a.tokenize(&json!({"cardNumber": 4242424242424242u64, "expMonth": 12, "expYear": 2099, "cvc": "123"})).await;
    r.assert_problem(422);
    assert!(!r.text.contains("4242424242424242"));
}

#[tokio::test]
async fn error_rate_one_answers_503_and_charges_nothing() {
    let a = start_with(|args| args.error_rate = 1.0).await;
    let k = key();
    for _ in 0..3 {
        a.charge(&charge_body(&k, "pm_ok")).await.assert_problem(503);
    }
    assert_eq!(a.rows(&k).await, 0);
    a.lookup(&k).await.assert_problem(404);
}

#[tokio::test]
async fn a_lost_response_is_charged_but_never_answered() {
    let a = start_with(|args| args.lost_response_rate = 1.0).await;
    let k = key();
    let body = serde_json::to_vec(&charge_body(&k, "pm_ok")).unwrap();
    let rb = a.client.post(format!("{}/v1/charges", a.base)).header("content-type", "application/json");
    let sent = a.signed(rb, &k, &body).body(body.clone()).timeout(Duration::from_secs(10)).send().await;
    let err = sent.expect_err("no answer reaches the client");
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    assert_eq!(a.rows(&k).await, 1);
    let found = a.lookup(&k).await;
    assert_eq!(found.status, StatusCode::OK, "{}", found.text);
    assert_eq!(found.body["status"], "approved");
}

#[tokio::test]
async fn a_timeout_holds_the_request_then_answers_504_without_charging() {
    let a = start_with(|args| {
        args.timeout_rate = 1.0;
        args.timeout_hold_ms = 300;
    })
    .await;
    let k = key();
    let started = Instant::now();
    a.charge(&charge_body(&k, "pm_ok")).await.assert_problem(504);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(a.rows(&k).await, 0);
}

#[tokio::test]
async fn a_stop_lets_held_requests_go() {
    let mut a = start_with(|args| {
        args.timeout_rate = 1.0;
        args.timeout_hold_ms = 60_000;
    })
    .await;
    let started = Instant::now();
    let k = key();
    let body = charge_body(&k, "pm_ok");
    let sim = a.sim.take().unwrap();
    let held = a.charge(&body);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sim.stop().await.expect("a clean stop");
    };
    let (r, ()) = tokio::join!(held, stop);
    r.assert_problem(504);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn latency_is_added_to_each_charge() {
    let a = start_with(|args| {
        args.latency_ms = 200;
        args.jitter_ms = 50;
    })
    .await;
    let started = Instant::now();
    assert_eq!(a.charge(&charge_body(&key(), "pm_ok")).await.status, StatusCode::OK);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

#[tokio::test]
async fn healthz_and_metrics() {
    let a = start().await;
    let h = a.unsigned_get("/healthz").await;
    assert_eq!((h.status, h.body.clone()), (StatusCode::OK, json!({"status": "ok"})));
    a.charge(&charge_body(&key(), "pm_ok")).await;
    a.charge(&charge_body(&key(), "pm_visa_decline_51")).await;
    a.unsigned_get("/v1/nothing").await.assert_problem(404);
    a.unsigned_get("/v1/payment-methods").await.assert_problem(405);
    let m = a.unsigned_get("/metrics").await;
    assert_eq!(m.status, StatusCode::OK);
    for line in [
        r#"acquirer_charges_total{outcome="approved"} 1"#,
        r#"acquirer_charges_total{outcome="declined"} 1"#,
        r#"acquirer_faults_total{kind="lost_response"} 0"#,
        r#"acquirer_request_duration_seconds_count{route="/v1/charges",status="200"} 2"#,
    ] {
        assert!(m.text.lines().any(|l| l == line), "{line} not in:\n{}", m.text);
    }
}

#[tokio::test]
async fn bad_fault_settings_are_refused() {
    let mut args = AcquirerArgs::new(&format!("{}/unused", pg_base()));
    args.error_rate = 1.5;
    assert!(Simulator::start(&args).await.is_err());
    let mut args = AcquirerArgs::new(&format!("{}/unused", pg_base()));
    args.secret = Some("not-a-secret".into());
    let e = Simulator::start(&args).await.err().expect("refused").to_string();
    assert!(!e.contains("not-a-secret"), "{e}");
    assert!(recur::acquirer::parse_rate("0.5").is_ok() && recur::acquirer::parse_rate("2").is_err());
}

#[tokio::test]
async fn accepted_connections_are_counted() {
    let a = start().await;
    // One pooling client: its sequential requests, scrapes included, share one connection.
    for _ in 0..5 {
        assert_eq!(a.charge(&charge_body(&key(), "pm_ok")).await.status, StatusCode::OK);
    }
    assert_eq!(a.connections_accepted().await, 1);
    // Three more clients: three more connections.
    for _ in 0..3 {
        let other = reqwest::Client::new();
        let r = other.get(format!("{}/healthz", a.base)).send().await.expect("an answer");
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(a.connections_accepted().await, 4);
}

/// The request schema `name` requires exactly what the parser refuses `{}` for.
async fn required_as_parsed(a: &Acquirer, doc: &Value, name: &str, path: &str) {
    let mut required: Vec<String> = doc["components"]["schemas"][name]["required"]
        .as_array()
        .unwrap_or_else(|| panic!("{name} has no required list"))
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let refused = a.post(path, &key(), &json!({})).await;
    refused.assert_problem(422);
    let mut fields = refused.fields();
    required.sort();
    fields.sort();
    assert_eq!(required, fields, "{name} vs what {path} requires");
}

#[tokio::test]
async fn the_openapi_document_describes_the_protocol_as_served() {
    let a = start().await;
    let r = a.unsigned_get("/openapi.json").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let doc = r.body;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let signed = [("/v1/charges", "post"), ("/v1/charges/{idempotencyKey}", "get"), ("/v1/payment-methods", "post")];
    for (path, method) in signed {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not described");
        let headers: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "header" && p["required"] == true)
            .filter_map(|p| p["name"].as_str())
            .collect();
        for h in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            assert!(headers.contains(&h), "{method} {path} lacks the {h} header: {headers:?}");
        }
    }
    for path in ["/healthz", "/metrics", "/openapi.json"] {
        assert!(doc["paths"][path]["get"].is_object(), "GET {path} is not described");
    }
    // Real answers against the documented ones.
    let answer = &doc["paths"]["/v1/charges"]["post"]["responses"]["200"]["content"]["application/json"]["schema"];
    let lookup = &doc["paths"]["/v1/charges/{idempotencyKey}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    for pm in ["pm_ok", "pm_visa_decline_51", "pm_mc_decline_51_mac_24", "pm_mc_ok"] {
        let k = key();
        let real = a.charge(&charge_body(&k, pm)).await;
        assert_eq!(real.status, StatusCode::OK, "{}", real.text);
        schema::check(&doc, answer, &real.body, pm).unwrap_or_else(|e| panic!("{e}\n{}", real.text));
        schema::check(&doc, lookup, &a.lookup(&k).await.body, pm).unwrap();
    }
    let decline = schema::resolve(&doc, answer);
    for field in ["status", "reference", "declineCode", "network", "networkTransactionId"] {
        assert!(decline["properties"][field].is_object(), "the answer's schema lacks {field}");
    }
    let network = schema::resolve(&doc, &decline["properties"]["network"]);
    for field in ["scheme", "responseCode", "category", "adviceCode"] {
        assert!(network["properties"][field].is_object(), "network's schema lacks {field}");
    }
    let minted =
        a.tokenize(&json!({"cardNumber": "4242424242424242", "expMonth": 12, "expYear": 2099, "cvc": "123"})).await;
    let created =
        &doc["paths"]["/v1/payment-methods"]["post"]["responses"]["201"]["content"]["application/json"]["schema"];
    schema::check(&doc, created, &minted.body, "minted").unwrap_or_else(|e| panic!("{e}\n{}", minted.text));
    let refused = a.unsigned_get("/v1/charges/any").await;
    let problem = &doc["paths"]["/v1/charges/{idempotencyKey}"]["get"]["responses"]["401"]["content"]["application/problem+json"]
        ["schema"];
    schema::check(&doc, problem, &refused.body, "problem").unwrap_or_else(|e| panic!("{e}\n{}", refused.text));
    // The documented request bodies require what the parsers require.
    required_as_parsed(&a, &doc, "ChargeRequest", "/v1/charges").await;
    required_as_parsed(&a, &doc, "CardRequest", "/v1/payment-methods").await;
}
