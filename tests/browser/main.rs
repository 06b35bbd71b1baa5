//! Browser tests (docs/pages.md): recur's pages driven in a real Chromium (Debian's
//! `chromium`) by Playwright (`playwright-core`, never downloading a browser of its
//! own), checked by axe-core. This harness starts recur — API, scheduler and worker
//! over a fresh database and Redis namespace — runs the Node script of each page, and
//! afterwards looks for the card numbers the browser typed in every table, every Redis
//! key of the namespace, the metrics and every log line: they must be nowhere.
//!
//! Needs `/usr/bin/chromium` (or `RECUR_CHROMIUM`) and Node.js; `scripts/test` installs
//! Chromium and Node.js when they are missing, and this harness installs the npm
//! packages under `target/browser-deps` (see `node_modules`). Screenshots go to
//! `target/browser/`.

#[path = "../support/mod.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::json;

use recur::config::Settings;
use support::{ADMIN_TOKEN, EngineOpts, STATE_TABLES, TestApp};

/// Every card number the scripts type (with and without the spaces the page adds).
const TYPED_CARDS: &[&str] = &[
    "4242424242424242",
    "4242 4242 4242 4242",
    "4242424242424241",
    "4000000000009995",
    "4000 0000 0000 9995",
    "4000000000000002",
    "4000 0000 0000 0002",
];

/// Log lines of this test process (the app runs in it), for the card-number scan.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines of every run of this process, captured once for all tests.
static LOGS: LazyLock<Logs> = LazyLock::new(|| {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("recur=debug,tower_http=debug,info"))
        .json()
        .with_writer(move || writer.clone())
        .init();
    logs
});

/// One script at a time: each drives its own Chromium, and the machine's cores are
/// better spent on one than shared by two racing their timeouts.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> String {
    let path = std::env::var("RECUR_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "no Chromium at {path}: run scripts/test (it installs Debian's chromium) or set RECUR_CHROMIUM"
    );
    path
}

/// The driver packages (playwright-core, axe-core) are installed under `target/`
/// (build output, not the source tree) by `npm ci` when they are missing or the lock
/// file changed, never with a browser (Debian's Chromium is the one used), and linked
/// as `tests/browser/node_modules` so that the scripts resolve them.
fn node_modules() {
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser-deps");
    let lock = std::fs::read(dir().join("package-lock.json")).expect("tests/browser/package-lock.json");
    let installed = std::fs::read(deps.join("package-lock.json")).is_ok_and(|l| l == lock)
        && deps.join("node_modules/playwright-core").exists()
        && deps.join("node_modules/axe-core").exists();
    if !installed {
        std::fs::create_dir_all(&deps).unwrap();
        std::fs::copy(dir().join("package.json"), deps.join("package.json")).unwrap();
        std::fs::write(deps.join("package-lock.json"), &lock).unwrap();
        let out = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&deps)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .output()
            .expect("npm runs (install Node.js)");
        assert!(out.status.success(), "npm ci failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let link = dir().join("node_modules");
    let target = deps.join("node_modules");
    if std::fs::read_link(&link).ok() != Some(target.clone()) {
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_dir_all(&link);
        std::os::unix::fs::symlink(&target, &link).expect("tests/browser/node_modules links to target/browser-deps");
    }
}

/// Every value stored under the app's Redis namespace, as text.
async fn redis_dump(app: &TestApp) -> String {
    let client = redis::Client::open(support::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = conn.keys(format!("{}*", app.settings.redis_namespace)).await.unwrap();
    let mut out = String::new();
    for k in keys {
        let kind: String = redis::cmd("TYPE").arg(&k).query_async(&mut conn).await.unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![conn.get(&k).await.unwrap()],
            "list" => conn.lrange(&k, 0, -1).await.unwrap(),
            "set" => conn.smembers(&k).await.unwrap(),
            "zset" => conn.zrange(&k, 0, -1).await.unwrap(),
            "hash" => conn.hgetall::<_, Vec<Vec<u8>>>(&k).await.unwrap(),
            _ => vec![],
        };
        out.push_str(&k);
        for v in values {
            out.push_str(&String::from_utf8_lossy(&v));
        }
    }
    out
}

/// Run one script against a fresh recur; `table` must hold rows afterwards (the scan
/// below looked at real data).
async fn run(script: &str, table: &str, page_path: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let logs = LOGS.clone();
    let chromium = chromium();
    node_modules();
    // Every sandbox call takes a moment, as a real gateway's would: the pages' states
    // while a charge is in flight are then really seen.
    let app = support::spawn_app_with(Settings { sandbox_latency_ms: 300, ..support::fresh_settings() }).await;
    let engine = app.start_engine(EngineOpts::default());
    let screenshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    let config = json!({
        "base": app.base,
        "key": app.merchant.key,
        "secret": app.merchant.secret,
        "adminToken": ADMIN_TOKEN,
        "chromium": chromium,
        "screenshots": screenshots,
    });
    let child = tokio::process::Command::new("node")
        .arg(dir().join(script))
        .current_dir(dir())
        .env("RECUR_BROWSER", config.to_string())
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .kill_on_drop(true)
        .output();
    // What recur logged last: the engine's side of a step that failed or timed out.
    let log_tail = || {
        let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
        let tail: Vec<&str> = logged.lines().rev().take(150).collect();
        eprintln!("the last {} log lines:\n{}", tail.len(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
    };
    let Ok(out) = tokio::time::timeout(Duration::from_secs(180), child).await else {
        log_tail();
        panic!("{script} ran for more than 3 minutes");
    };
    let out = out.expect("node runs (install Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        log_tail();
    }
    assert!(out.status.success(), "{script} failed:\n{stdout}");
    engine.stop().await;

    // The card numbers typed in the browser are nowhere recur writes.
    let mut places: Vec<(String, String)> = Vec::new();
    for t in STATE_TABLES {
        places.push((format!("table {t}"), app.table_snapshot(t).await));
    }
    places.push(("redis".into(), redis_dump(&app).await));
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    places.push(("metrics".into(), metrics));
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains(page_path), "the page requests were not logged, so the log scan would prove nothing");
    places.push(("logs".into(), logged));
    for (place, text) in &places {
        for card in TYPED_CARDS {
            assert!(!text.contains(card), "a card number typed in the browser is in the {place}");
        }
    }
    let rows = &places[STATE_TABLES.iter().position(|t| *t == table).unwrap()].1;
    assert!(rows.len() > 2, "{script} left no row in {table}");
}

#[tokio::test]
async fn checkout_in_chromium() {
    run("checkout.mjs", "checkout_sessions", "/checkout/").await;
}

#[tokio::test]
async fn portal_in_chromium() {
    run("portal.mjs", "customer_sessions", "/portal/").await;
}

#[tokio::test]
async fn dashboard_in_chromium() {
    run("dashboard.mjs", "page_sessions", "/dashboard/").await;
}

#[tokio::test]
async fn console_in_chromium() {
    run("console.mjs", "page_sessions", "/console/").await;
}

#[tokio::test]
async fn payment_link_in_chromium() {
    run("pay.mjs", "payment_links", "/pay/").await;
}
