//! The dashboard's and the console's sessions as the server sees them
//! (docs/dashboard.md#sessions): what is stored, expiry, cross-site posts, the console
//! without an admin token, failed sign-ins throttled as the API's; and the console's
//! dead letters read a page at a time. Real browsers drive the pages in `tests/browser/`.

use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use recur::config::{RateLimitSettings, Settings};
use recur::ratelimit::Rate;

use crate::support::{self, TestApp, spawn_app, spawn_app_with};

/// The `name` cookie a response set, as `name=value`.
fn set_cookie(page: &support::pages::Page, name: &str) -> Option<String> {
    page.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap().to_owned())
}

/// Sign in to the dashboard as the app's merchant: (the session cookie, the CSRF cookie).
async fn sign_in(app: &TestApp) -> (String, String) {
    let form = app.page("/dashboard/sign-in", None).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.html);
    let csrf_cookie = form.cookie().expect("the sign-in page sets the CSRF cookie");
    let key = app.merchant.key.to_string();
    let done = app
        .submit(
            "/dashboard/sign-in",
            Some(&csrf_cookie),
            &[("csrf", &form.csrf()), ("merchant_key", &key), ("secret", &app.merchant.secret)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    let session = set_cookie(&done, "recur_dashboard").expect("a session cookie");
    let attrs = done.header("set-cookie");
    assert!(attrs.contains("HttpOnly") && attrs.contains("Secure") && attrs.contains("SameSite=Strict"), "{attrs}");
    (session, csrf_cookie)
}

#[tokio::test]
async fn only_the_tokens_hash_is_stored_and_an_expired_session_opens_nothing() {
    let app = spawn_app().await;
    let (session, csrf_cookie) = sign_in(&app).await;
    let both = format!("{session}; {csrf_cookie}");
    let open = app.page("/dashboard/subscriptions", Some(&both)).await;
    assert_eq!(open.status, StatusCode::OK, "{}", open.html);

    let raw = session.split_once('=').unwrap().1;
    let rows = app.table_snapshot("page_sessions").await;
    assert!(!rows.contains(raw), "the cookie's token is stored: {rows}");
    let hash: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM page_sessions").fetch_one(app.pool()).await.unwrap();
    assert_eq!(hash, Sha256::digest(raw.as_bytes()).to_vec());

    sqlx::query("UPDATE page_sessions SET expires_at = now() - interval '1 second'").execute(app.pool()).await.unwrap();
    let later = app.page("/dashboard/subscriptions", Some(&both)).await;
    assert_eq!(later.status, StatusCode::SEE_OTHER);
    assert_eq!(later.header("location"), "/dashboard/sign-in");
}

#[tokio::test]
async fn a_post_the_browser_marks_cross_site_is_refused_even_with_its_token() {
    let app = spawn_app().await;
    let (session, csrf_cookie) = sign_in(&app).await;
    let both = format!("{session}; {csrf_cookie}");
    let (_, plan) = app
        .post(
            "/v1/plans",
            serde_json::json!({"name": "Draft", "amount": "1.00", "currency": "EUR", "interval": {"unit": "month", "count": 1}}),
        )
        .await;
    let id = plan["id"].as_str().unwrap();
    let page = app.page("/dashboard/plans", Some(&both)).await;
    let csrf = page.csrf();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let path = format!("{}/dashboard/plans/{id}/activate", app.base);
    let res = client
        .post(&path)
        .header("cookie", &both)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.get(&format!("/v1/plans/{id}")).await.1["status"], "draft");
    // The same form from the page itself acts, once.
    let res = client.post(&path).header("cookie", &both).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(app.get(&format!("/v1/plans/{id}")).await.1["status"], "active");
    assert_eq!(app.event_types(id).await, ["created", "status_changed"]);
}

#[tokio::test]
async fn without_an_admin_token_there_is_no_console() {
    let app = spawn_app_with(Settings { admin_token: None, ..support::fresh_settings() }).await;
    for path in ["/console", "/console/sign-in", "/console/dead-letters"] {
        assert_eq!(app.page(path, None).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    let res = app.submit("/console/sign-in", None, &[("token", "")]).await;
    assert_eq!(res.status, StatusCode::NOT_FOUND);
}

/// The sign-in form of `path` ("/dashboard" or "/console"): (its CSRF cookie, its token).
async fn sign_in_form(app: &TestApp, path: &str) -> (String, String) {
    let form = app.page(&format!("{path}/sign-in"), None).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.html);
    (form.cookie().expect("the sign-in page sets the CSRF cookie"), form.csrf())
}

/// A 429 page as a refused sign-in is: HTML saying when to try again, `Retry-After`.
#[track_caller]
fn assert_too_many(page: &support::pages::Page) -> u64 {
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.html);
    assert!(page.header("content-type").starts_with("text/html"), "{}", page.header("content-type"));
    assert!(page.html.contains("Too many attempts"), "{}", page.html);
    let retry: u64 = page.header("retry-after").parse().expect("Retry-After");
    assert!(retry >= 1);
    retry
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_as_the_apis_and_the_right_secret_keeps_working() {
    let limits =
        RateLimitSettings { rate_limit_auth_failures: Rate::parse("3/m:3").unwrap(), ..support::roomy_rate_limits() };
    let app = spawn_app_with(Settings { rate_limits: limits, ..support::fresh_settings() }).await;
    // The merchant signed in once: this process has seen its secret succeed.
    sign_in(&app).await;
    let (cookie, csrf) = sign_in_form(&app, "/dashboard").await;
    let key = app.merchant.key.to_string();
    let attempt = |secret: &'static str| {
        let (app, cookie, csrf, key) = (&app, &cookie, &csrf, &key);
        async move {
            app.submit("/dashboard/sign-in", Some(cookie), &[("csrf", csrf), ("merchant_key", key), ("secret", secret)])
                .await
        }
    };
    let mut retries = vec![];
    for i in 0..8 {
        let page = attempt("sk_wrong").await;
        if i < 3 {
            assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.html);
        } else {
            retries.push(assert_too_many(&page));
        }
    }
    assert!(retries.last() > retries.first(), "the delay grows while the guessing goes on: {retries:?}");
    // The right secret, from the same address, in the middle of it (the API's rule: a
    // key and secret this process saw succeed is still checked).
    let secret: &'static str = Box::leak(app.merchant.secret.clone().into_boxed_str());
    let page = attempt(secret).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
    assert!(page.header("set-cookie").contains("recur_dashboard="), "a session");
    // Credentials this process never saw succeed are refused from the refused address
    // without asking Postgres, as the API refuses them.
    let other = app.new_merchant("other").await;
    let other_key = other.key.to_string();
    let page = app
        .submit(
            "/dashboard/sign-in",
            Some(&cookie),
            &[("csrf", &csrf), ("merchant_key", &other_key), ("secret", &other.secret)],
        )
        .await;
    assert_too_many(&page);
    // The API's own failures and the pages' are one count per address.
    let r = app.client.get(format!("{}/v1/plans", app.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn wrong_admin_tokens_on_the_console_are_throttled_and_the_right_one_still_signs_in() {
    let limits =
        RateLimitSettings { rate_limit_auth_failures: Rate::parse("2/m:2").unwrap(), ..support::roomy_rate_limits() };
    let app = spawn_app_with(Settings { rate_limits: limits, ..support::fresh_settings() }).await;
    let (cookie, csrf) = sign_in_form(&app, "/console").await;
    let mut statuses = vec![];
    for _ in 0..4 {
        let page = app.submit("/console/sign-in", Some(&cookie), &[("csrf", &csrf), ("token", "guess")]).await;
        if page.status == StatusCode::TOO_MANY_REQUESTS {
            assert_too_many(&page);
        }
        statuses.push(page.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 429, 429]);
    // As the admin API: the right token is never refused for the address's failures.
    let page = app.submit("/console/sign-in", Some(&cookie), &[("csrf", &csrf), ("token", support::ADMIN_TOKEN)]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
    assert!(page.header("set-cookie").contains("recur_console="), "a session");
}

/// Sign in to the console: the session and CSRF cookies, as one `Cookie` header.
async fn console_session(app: &TestApp) -> String {
    let (cookie, csrf) = sign_in_form(app, "/console").await;
    let done = app.submit("/console/sign-in", Some(&cookie), &[("csrf", &csrf), ("token", support::ADMIN_TOKEN)]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.html);
    format!("{}; {cookie}", set_cookie(&done, "recur_console").expect("a session cookie"))
}

#[tokio::test]
async fn dead_letters_are_found_a_page_at_a_time_as_before() {
    use recur::dlq::{self, DeadLetter, Filter};
    let app = spawn_app().await;
    let q = &app.rt.queue;
    // More dead letters than a chunk of the scan (200), over two queues; every 7th
    // with another error.
    let mut all = vec![];
    for i in 0..450 {
        let job = if i % 3 == 0 {
            jobs::Job::RetryCharge(jobs::RetryCharge {
                billing_cycle_id: uuid::Uuid::now_v7(),
                cycle_attempt: 2,
                attempt: 0,
            })
        } else {
            jobs::Job::ChargeTransaction(jobs::ChargeTransaction { transaction_id: uuid::Uuid::now_v7(), attempt: 0 })
        };
        let error = if i % 7 == 0 { "gateway unavailable: sandbox: simulated 503" } else { "gateway: gateway timeout" };
        let d = DeadLetter::new(job, 3, error);
        assert!(dlq::put(q, &d).await.unwrap());
        all.push(d);
    }
    all.sort_by_key(|d| d.id);
    let pages = async |f: &Filter| {
        let (mut seen, mut after) = (vec![], None);
        loop {
            let page = dlq::find_after(q, f, after, 25).await.unwrap();
            assert!(page.len() <= 25);
            after = page.last().map(|d| d.id);
            seen.extend(page.iter().map(|d| d.id));
            if page.len() < 25 {
                return seen;
            }
        }
    };
    let expect = |keep: &dyn Fn(&DeadLetter) -> bool| all.iter().filter(|d| keep(d)).map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(pages(&Filter::default()).await, expect(&|_| true));
    let f = Filter { error_contains: Some("SIMULATED 503".into()), ..Filter::default() };
    assert_eq!(pages(&f).await, expect(&|d| d.last_error.contains("503")));
    let f = Filter { queue: Some(jobs::Queue::RetryCharge), error_contains: Some("503".into()), ..Filter::default() };
    assert_eq!(pages(&f).await, expect(&|d| d.queue == "retry-charge" && d.last_error.contains("503")));
    // `find` is the first page of the same order, at any size.
    let first: Vec<_> = dlq::find(q, &Filter::default(), 7).await.unwrap().iter().map(|d| d.id).collect();
    assert_eq!(first, expect(&|_| true)[..7]);
    assert_eq!(dlq::find(q, &Filter::default(), usize::MAX).await.unwrap().len(), 450);
    let cut = all[100].failed_at;
    let f = Filter { failed_before: Some(cut), ..Filter::default() };
    assert_eq!(pages(&f).await, expect(&|d| d.failed_at < cut));

    // The console's list: 25 a page, "Next page" to the following ones.
    let cookies = console_session(&app).await;
    let mut path = "/console/dead-letters".to_owned();
    let mut rows = 0;
    for _ in 0..20 {
        let page = app.page(&path, Some(&cookies)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.html);
        let n = page.html.matches(r#"type="checkbox" name="id""#).count();
        assert!(n <= 25, "{n} rows");
        rows += n;
        let Some(at) = page.html.find(r#"<nav class="pager" aria-label="Pages"><a href=""#) else { break };
        let rest = &page.html[at + r#"<nav class="pager" aria-label="Pages"><a href=""#.len()..];
        path = rest[..rest.find('"').unwrap()].replace("&amp;", "&");
    }
    assert_eq!(rows, 450);
}
