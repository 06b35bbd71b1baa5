//! Bad input at the edges of the HTTP server ((docs/guarantees.md#bad-input): never a 5xx, never a state
//! change): huge bodies, deeply nested JSON, invalid UTF-8 in bodies, headers and
//! paths, floods of headers, and a storm of concurrent requests sharing one
//! Idempotency-Key. Requests that a well-behaved client library refuses to build are
//! written as raw bytes on a TCP connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Reply, TestApp, assert_problem, spawn_app};

fn plan_body() -> Value {
    json!({"name": "Gold", "amount": "9.99", "currency": "EUR", "interval": {"unit": "month", "count": 1}})
}

/// A response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// As the harness's `Reply`, for `assert_problem`.
    fn reply(&self) -> Reply {
        let mut headers = reqwest::header::HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) =
                (reqwest::header::HeaderName::from_bytes(k.as_bytes()), reqwest::header::HeaderValue::from_str(v))
            {
                headers.append(k, v);
            }
        }
        Reply { status: StatusCode::from_u16(self.status).unwrap(), headers, body: self.json() }
    }
}

/// Send `head` then `body` on a new connection (the body from a task of its own, so
/// a server that answers before reading it all is still heard), read the response.
async fn raw(addr: SocketAddr, head: Vec<u8>, body: Vec<u8>) -> Raw {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        // The server may answer and close before taking the whole body: ignore errors.
        if wr.write_all(&head).await.is_ok() {
            for chunk in body.chunks(64 * 1024) {
                if wr.write_all(chunk).await.is_err() {
                    break;
                }
            }
        }
        let _ = wr.flush().await;
        // Keep the write half open until the response is read (the task is aborted then).
        std::future::pending::<()>().await;
    });
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if complete(&buf) {
                break;
            }
        }
    })
    .await;
    writer.abort();
    assert!(read.is_ok(), "no complete response within 30 s; got {:?}", String::from_utf8_lossy(&buf));
    parse(&buf).unwrap_or_else(|| panic!("not an HTTP response: {:?}", String::from_utf8_lossy(&buf)))
}

/// Is `buf` a whole response (head plus a Content-Length body)?
fn complete(buf: &[u8]) -> bool {
    let Some(end) = find(buf, b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    match head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok()) {
        Some(len) => buf.len() >= end + 4 + len,
        None => head.contains("transfer-encoding: chunked") && buf.ends_with(b"0\r\n\r\n"),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse(buf: &[u8]) -> Option<Raw> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))).collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked =
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(i) = find(rest, b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..i]).trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(i + 2..i + 2 + size)?);
            rest = rest.get(i + 4 + size..)?;
        }
        body = out;
    }
    Some(Raw { status, headers, body })
}

/// The request head of a merchant's call, with `extra` header lines (raw bytes).
fn head(app: &TestApp, method: &str, path: &[u8], extra: &[&[u8]]) -> Vec<u8> {
    let m = &app.merchant;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", m.key, m.secret));
    let mut h = Vec::new();
    h.extend_from_slice(method.as_bytes());
    h.push(b' ');
    h.extend_from_slice(path);
    h.extend_from_slice(b" HTTP/1.1\r\n");
    h.extend_from_slice(format!("Host: {}\r\nConnection: close\r\n", app.addr).as_bytes());
    h.extend_from_slice(format!("Authorization: Basic {basic}\r\nX-API-KEY: {}\r\n", m.key).as_bytes());
    for line in extra {
        h.extend_from_slice(line);
        h.extend_from_slice(b"\r\n");
    }
    h.extend_from_slice(b"\r\n");
    h
}

fn with_length(app: &TestApp, method: &str, path: &str, body: &[u8], extra: &[&[u8]]) -> Vec<u8> {
    let len = format!("Content-Length: {}", body.len());
    let mut lines: Vec<&[u8]> = vec![&b"Content-Type: application/json"[..], len.as_bytes()];
    lines.extend_from_slice(extra);
    head(app, method, path.as_bytes(), &lines)
}

/// The server still answers a normal request.
async fn assert_up(app: &TestApp, after: &str) {
    let (s, b) = app.get("/v1/plans").await;
    assert_eq!(s, StatusCode::OK, "the server stopped answering after {after}: {b}");
}

#[track_caller]
fn assert_raw_problem(r: &Raw, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {} {}", r.status, String::from_utf8_lossy(&r.body));
    assert_problem(&r.reply(), status);
}

#[tokio::test]
async fn huge_bodies_are_413_problems() {
    let app = spawn_app().await;
    let plan = app.active_plan("9.99").await;
    let before = app.state_snapshot().await;
    // A valid plan whose description makes the body 1 MiB.
    let mut big = plan_body();
    big["description"] = json!("x".repeat(1024 * 1024));
    let big = serde_json::to_vec(&big).unwrap();
    let routes = [
        ("POST", "/v1/plans".to_owned()),
        ("PATCH", format!("/v1/plans/{plan}")),
        ("POST", format!("/v1/plans/{plan}/archive")),
        ("POST", "/v1/subscriptions".to_owned()),
        ("POST", "/v1/payment-series".to_owned()),
    ];
    for (method, path) in &routes {
        // With a Content-Length.
        let r = raw(app.addr, with_length(&app, method, path, &big, &[]), big.clone()).await;
        assert_raw_problem(&r, 413, &format!("{method} {path} 1 MiB"));
        // Chunked, no length announced: the limit still holds while reading.
        let mut chunked = Vec::new();
        for c in big.chunks(100_000) {
            chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            chunked.extend_from_slice(c);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let h = head(
            &app,
            method,
            path.as_bytes(),
            &[&b"Content-Type: application/json"[..], &b"Transfer-Encoding: chunked"[..]],
        );
        let r = raw(app.addr, h, chunked).await;
        assert_raw_problem(&r, 413, &format!("{method} {path} chunked 1 MiB"));
    }
    // A length far beyond the limit (the body never comes): refused, not awaited.
    let h = head(
        &app,
        "POST",
        b"/v1/plans",
        &[&b"Content-Type: application/json"[..], &b"Content-Length: 10000000000"[..]],
    );
    let r = raw(app.addr, h, vec![b'{'; 300 * 1024]).await;
    assert_raw_problem(&r, 413, "Content-Length 10 GB");
    // The admin API has the same limit.
    let admin = format!(
        "POST /admin/merchants HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        crate::support::ADMIN_TOKEN,
        big.len()
    );
    let r = raw(app.addr, admin.into_bytes(), big.clone()).await;
    assert_raw_problem(&r, 413, "admin 1 MiB");
    // Just under the limit is read and judged on its content (422: description too long).
    let mut under = plan_body();
    under["description"] = json!("x".repeat(200 * 1024));
    let r = app.send_full(app.request(Method::POST, "/v1/plans").json(&under)).await;
    assert_problem(&r, 422);
    app.assert_state_unchanged(&before, "huge bodies").await;
    assert_up(&app, "huge bodies").await;
}

#[tokio::test]
async fn deeply_nested_json_is_a_400_problem_without_a_stack_overflow() {
    let app = spawn_app().await;
    let before = app.state_snapshot().await;
    let depth = 100_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(30_000), "}".repeat(30_000));
    let unclosed = "[".repeat(200_000);
    let plan = plan_body().to_string();
    for (label, body) in [
        ("nested arrays as the body", arrays.clone()),
        ("nested objects as the body", objects.clone()),
        ("unclosed arrays", unclosed.clone()),
        ("nested arrays in metadata", plan.replacen('{', &format!("{{\"metadata\":{{\"k\":{arrays}}},"), 1)),
        ("nested objects in metadata", plan.replacen('{', &format!("{{\"metadata\":{objects},"), 1)),
        ("nested arrays as the name", plan.replacen("\"Gold\"", &arrays, 1)),
    ] {
        assert!(body.len() < 256 * 1024, "{label}: the body must stay under the size limit");
        for (method, path) in [("POST", "/v1/plans"), ("POST", "/v1/subscriptions"), ("POST", "/v1/payment-series")] {
            let r =
                raw(app.addr, with_length(&app, method, path, body.as_bytes(), &[]), body.clone().into_bytes()).await;
            assert_raw_problem(&r, 400, &format!("{label} on {method} {path}"));
        }
    }
    // And in the admin API's bodies.
    let admin = format!(
        "POST /admin/dlq/replay HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        crate::support::ADMIN_TOKEN,
        arrays.len()
    );
    let r = raw(app.addr, admin.into_bytes(), arrays.into_bytes()).await;
    assert_raw_problem(&r, 400, "nested arrays on /admin/dlq/replay");
    app.assert_state_unchanged(&before, "deeply nested JSON").await;
    assert_up(&app, "deeply nested JSON").await;
}

#[tokio::test]
async fn invalid_utf8_in_bodies_headers_and_paths_is_a_4xx() {
    let app = spawn_app().await;
    let before = app.state_snapshot().await;
    // Bodies: invalid sequences inside a JSON string, and as bare bytes.
    let plan = plan_body().to_string();
    let mut bodies: Vec<(&str, Vec<u8>)> = Vec::new();
    for (label, bad) in [
        ("0xFF", &b"\xff"[..]),
        ("lone continuation byte", &b"\x80"[..]),
        ("truncated sequence", &b"\xe2\x82"[..]),
        ("overlong slash", &b"\xc0\xaf"[..]),
        ("UTF-8 encoded surrogate", &b"\xed\xa0\x80"[..]),
        ("beyond U+10FFFF", &b"\xf4\x90\x80\x80"[..]),
    ] {
        let mut body = Vec::new();
        let (a, b) = plan.split_once("Gold").unwrap();
        body.extend_from_slice(a.as_bytes());
        body.extend_from_slice(bad);
        body.extend_from_slice(b.as_bytes());
        bodies.push((label, body));
    }
    bodies.push(("bare invalid bytes", b"\xff\xfe\xfd".to_vec()));
    for (label, body) in &bodies {
        for path in ["/v1/plans", "/v1/subscriptions", "/v1/payment-series"] {
            let r = raw(app.addr, with_length(&app, "POST", path, body, &[]), body.clone()).await;
            assert_raw_problem(&r, 400, &format!("body with {label} on {path}"));
        }
    }

    // Headers: invalid UTF-8 in the Idempotency-Key is a 400 naming it; in the
    // credentials a 403; in a header nobody reads, nothing.
    let body = plan.as_bytes();
    let r = raw(
        app.addr,
        with_length(&app, "POST", "/v1/plans", body, &[&b"Idempotency-Key: k-\xff\xfe"[..]]),
        body.to_vec(),
    )
    .await;
    assert_raw_problem(&r, 400, "Idempotency-Key with 0xFF 0xFE");
    assert_eq!(r.json()["errors"][0]["field"], "Idempotency-Key", "{:?}", r.json());
    for (label, line) in
        [("X-API-KEY", &b"X-API-KEY: \xff\xfe"[..]), ("Authorization", &b"Authorization: Basic \xff\xfe"[..])]
    {
        // The other credential header is right; this one carries the bad bytes.
        let mut h = format!("POST /v1/plans HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", body.len()).into_bytes();
        if label == "X-API-KEY" {
            let m = &app.merchant;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", m.key, m.secret));
            h.extend_from_slice(format!("Authorization: Basic {basic}\r\n").as_bytes());
        } else {
            h.extend_from_slice(format!("X-API-KEY: {}\r\n", app.merchant.key).as_bytes());
        }
        h.extend_from_slice(line);
        h.extend_from_slice(b"\r\n\r\n");
        let r = raw(app.addr, h, body.to_vec()).await;
        assert_raw_problem(&r, 403, &format!("{label} with invalid UTF-8"));
    }
    let r = raw(app.addr, head(&app, "GET", b"/v1/plans", &[&b"X-Unused: \xff\xfe\xfd"[..]]), vec![]).await;
    assert_eq!(r.status, 200, "an unread header with invalid UTF-8: {}", String::from_utf8_lossy(&r.body));

    // Paths: percent-encoded invalid UTF-8 in every kind of path parameter, and in
    // query parameters.
    for path in [
        "/v1/customers/%FF%FE",
        "/v1/customers/ok%C0%AF",
        "/v1/plans/%FF",
        "/v1/subscriptions/%ED%A0%80",
        "/v1/subscriptions/%FF/billing-cycles",
        "/v1/billing-cycles/%FF",
        "/v1/transactions/%FF",
        "/v1/payment-series/%FF",
    ] {
        let r = raw(app.addr, head(&app, "GET", path.as_bytes(), &[]), vec![]).await;
        assert!((400..500).contains(&r.status), "{path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        assert_raw_problem(&r, r.status, path);
    }
    for path in ["/v1/plans?tag=%FF", "/v1/subscriptions?customerAccountId=%FF%FE", "/v1/events?objectType=%C0%AF"] {
        let r = raw(app.addr, head(&app, "GET", path.as_bytes(), &[]), vec![]).await;
        assert!(r.status < 500, "{path}: {} {}", r.status, String::from_utf8_lossy(&r.body));
        if r.status >= 400 {
            assert_raw_problem(&r, r.status, path);
        }
    }
    // Raw (not percent-encoded) bytes above 0x7F in the request line: refused by the
    // HTTP layer, never a 5xx.
    let r = raw(app.addr, head(&app, "GET", b"/v1/customers/\xff\xfe", &[]), vec![]).await;
    assert!((400..500).contains(&r.status), "raw 0xFF in the path: {}", r.status);
    app.assert_state_unchanged(&before, "invalid UTF-8").await;
    assert_up(&app, "invalid UTF-8").await;
}

#[tokio::test]
async fn floods_of_headers_are_refused_and_the_server_stays_up() {
    let app = spawn_app().await;
    let before = app.state_snapshot().await;
    let body = plan_body().to_string().into_bytes();
    // Many headers.
    for n in [150, 1_000, 10_000] {
        let lines: Vec<String> = (0..n).map(|i| format!("X-Flood-{i}: {i}")).collect();
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        let r = raw(app.addr, with_length(&app, "POST", "/v1/plans", &body, &lines), body.clone()).await;
        assert!(r.status == 431 || r.status == 400, "{n} headers: {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    // One huge header, and many large ones.
    let huge = format!("X-Huge: {}", "h".repeat(2 * 1024 * 1024));
    let r = raw(app.addr, with_length(&app, "POST", "/v1/plans", &body, &[huge.as_bytes()]), body.clone()).await;
    assert!(r.status == 431 || r.status == 400, "a 2 MiB header: {}", r.status);
    let large: Vec<String> = (0..80).map(|i| format!("X-Large-{i}: {}", "l".repeat(8 * 1024))).collect();
    let large: Vec<&[u8]> = large.iter().map(|l| l.as_bytes()).collect();
    let r = raw(app.addr, with_length(&app, "POST", "/v1/plans", &body, &large), body.clone()).await;
    assert!(r.status == 431 || r.status == 400, "80 headers of 8 KiB: {}", r.status);
    // Many copies of the headers the application reads.
    let keys: Vec<String> = (0..50).map(|i| format!("Idempotency-Key: k-{i}")).collect();
    let mut lines: Vec<&[u8]> = keys.iter().map(|l| l.as_bytes()).collect();
    let api = format!("X-API-KEY: {}", app.merchant.key);
    lines.extend(std::iter::repeat_n(api.as_bytes(), 20));
    let r = raw(app.addr, with_length(&app, "POST", "/v1/plans", &body, &lines), body.clone()).await;
    assert_raw_problem(&r, 400, "50 Idempotency-Keys");
    assert_eq!(r.json()["errors"][0]["field"], "Idempotency-Key", "{:?}", r.json());
    // Under the limits, a normal request with a fair number of headers works.
    let fair: Vec<String> = (0..50).map(|i| format!("X-Fair-{i}: {i}")).collect();
    let fair: Vec<&[u8]> = fair.iter().map(|l| l.as_bytes()).collect();
    let r = raw(app.addr, with_length(&app, "GET", "/v1/plans", b"", &fair), vec![]).await;
    assert_eq!(r.status, 200, "50 extra headers: {}", String::from_utf8_lossy(&r.body));
    // Many connections flooding at once do not take the server down.
    let flood: Vec<String> = (0..2_000).map(|i| format!("X-Flood-{i}: {i}")).collect();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let lines: Vec<Vec<u8>> = flood.iter().map(|l| l.clone().into_bytes()).collect();
            let h = {
                let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
                with_length(&app, "POST", "/v1/plans", &body, &refs)
            };
            let (addr, body) = (app.addr, body.clone());
            tokio::spawn(async move { raw(addr, h, body).await.status })
        })
        .collect();
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 431 || s == 400, "concurrent header flood: {s}");
    }
    app.assert_state_unchanged(&before, "header floods").await;
    assert_up(&app, "header floods").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_with_one_idempotency_key_create_one_object() {
    let app = Arc::new(spawn_app().await);
    const REQUESTS: usize = 10_000;
    const IN_FLIGHT: usize = 200;
    let body = plan_body();
    let replies: Vec<(StatusCode, Option<String>, Value)> = futures::stream::iter(0..REQUESTS)
        .map(|_| {
            let app = app.clone();
            let body = body.clone();
            async move {
                let r = app
                    .send_full(app.request(Method::POST, "/v1/plans").header("Idempotency-Key", "storm").json(&body))
                    .await;
                (r.status, r.header("idempotent-replayed").map(str::to_owned), r.body)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    assert_eq!(replies.len(), REQUESTS);
    let created: Vec<&(StatusCode, Option<String>, Value)> =
        replies.iter().filter(|(s, _, _)| *s == StatusCode::CREATED).collect();
    for (s, _, b) in &replies {
        // 201 (the work or its replay), or 409 while the first holder is mid-flight.
        assert!(*s == StatusCode::CREATED || *s == StatusCode::CONFLICT, "{s}: {b}");
        if *s == StatusCode::CONFLICT {
            assert!(b["detail"].as_str().is_some_and(|d| d.contains("in progress")), "{b}");
        }
    }
    assert!(!created.is_empty(), "no request got its plan");
    let ids: std::collections::HashSet<&str> = created.iter().map(|(_, _, b)| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "different plans answered: {ids:?}");
    let fresh = created.iter().filter(|(_, replayed, _)| replayed.is_none()).count();
    assert_eq!(fresh, 1, "exactly one request did the work, the others replayed it");
    eprintln!(
        "idempotency storm: {} created ({} replays), {} in progress",
        created.len(),
        created.len() - 1,
        REQUESTS - created.len()
    );
    // Exactly one row, one event, one key.
    assert_eq!(app.count("SELECT count(*) FROM plans").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM events WHERE object_type = 'plan'").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM idempotency_keys").await, 1);
    let (s, b) = app.get(&format!("/v1/plans/{}", ids.iter().next().unwrap())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}
