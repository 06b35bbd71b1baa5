//! The dashboard's and the console's sessions as the server sees them
//! (docs/dashboard.md#sessions): what is stored, expiry, cross-site posts, the console
//! without an admin token. Real browsers drive the pages in `tests/browser/`.

use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use recur::config::Settings;

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
