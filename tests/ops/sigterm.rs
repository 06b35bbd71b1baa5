//! SIGTERM at any instant of a worker's or a scheduler's life (creating its database,
//! migrating, connecting, starting, running) ends it with exit 0, never with a kill
//! by the signal (exit 143).
//!
//! The instants count from the moment the process catches SIGTERM (its handler shows
//! in /proc/PID/status), which `main` installs before anything else: before that the
//! process is still being loaded, and no program can answer a signal there.

use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::support::{Child, TestApp, free_port, pg_base, spawn_app};

const INSTANTS_MS: [u64; 6] = [0, 5, 20, 50, 100, 300];
const ROUNDS: usize = 3;

#[derive(Debug, Clone, Copy)]
enum When {
    /// This long after the process catches SIGTERM.
    After(u64),
    /// Once it answers /readyz.
    Ready,
}

#[tokio::test]
async fn sigterm_at_any_instant_of_a_worker_exits_0() {
    at_every_instant("worker").await;
}

#[tokio::test]
async fn sigterm_at_any_instant_of_a_scheduler_exits_0() {
    at_every_instant("scheduler").await;
}

async fn at_every_instant(role: &str) {
    let app = spawn_app().await;
    let migrations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(app.pool()).await.unwrap();
    let mut databases = Databases(Vec::new());
    let mut during_startup = 0;
    for round in 1..=ROUNDS {
        let instants = INSTANTS_MS.iter().map(|&ms| When::After(ms)).chain([When::Ready]);
        for when in instants {
            // A database of its own, so early signals land while it is created and migrated.
            let db = format!("recur_test_sigterm_{}", Uuid::now_v7().simple());
            databases.0.push(db.clone());
            let status = signalled(&app, role, &db, when).await;
            let applied = applied_migrations(&db).await;
            eprintln!(
                "{role} round {round}, SIGTERM {when:?}: {status}, {applied:?} of {migrations} migrations applied"
            );
            assert_eq!(status.code(), Some(0), "{role} signalled {when:?} (round {round}) must exit 0, got {status}");
            if applied.is_none_or(|n| n < migrations) {
                during_startup += 1;
            }
        }
    }
    // Handlers installed only once started would pass the above without a signal ever
    // landing in the start: some must have stopped the process before it had migrated.
    assert!(during_startup > 0, "no signal landed before the {role} had migrated its database");
}

/// Migrations applied to `db` (`None`: no database, or not even the migrations table).
async fn applied_migrations(db: &str) -> Option<i64> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&format!("{}/{db}", pg_base())).await.ok()?;
    sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success").fetch_one(&mut c).await.ok()
}

/// Start `recur <role>`, send SIGTERM at `when`, return how it exited.
async fn signalled(app: &TestApp, role: &str, db: &str, when: When) -> ExitStatus {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.arg(role)
        .envs(app.child_env())
        .env("DATABASE_URL", format!("{}/{db}", pg_base()))
        .env("RECUR_METRICS_LISTEN", format!("127.0.0.1:{port}"))
        .env("RECUR_DRAIN_TIMEOUT", "10s")
        .stdin(Stdio::null());
    if std::env::var("TEST_LOG").is_err() {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let mut child = Child(cmd.spawn().expect("recur binary starts"));
    let catching = catches_sigterm(&mut child);
    match when {
        When::After(ms) => tokio::time::sleep_until((catching + Duration::from_millis(ms)).into()).await,
        When::Ready => ready(&mut child, port).await,
    }
    assert!(child.0.try_wait().unwrap().is_none(), "{role} exited before the signal ({when:?})");
    child.sigterm();
    child.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("{role} did not exit within 20 s of SIGTERM"))
}

/// Wait (busily: the instants are milliseconds) until the process catches SIGTERM.
fn catches_sigterm(child: &mut Child) -> Instant {
    let status = format!("/proc/{}/status", child.0.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let caught = std::fs::read_to_string(&status).ok().and_then(|s| {
            let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        });
        // Bit n-1 stands for signal n; SIGTERM is 15.
        if caught.is_some_and(|mask| mask & (1 << 14) != 0) {
            return Instant::now();
        }
        assert!(child.0.try_wait().unwrap().is_none(), "the process exited before installing its handlers");
        assert!(Instant::now() < deadline, "the process never caught SIGTERM");
        std::thread::sleep(Duration::from_micros(100));
    }
}

async fn ready(child: &mut Child, port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "the process exited before it was ready");
        assert!(Instant::now() < deadline, "the process was not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The databases the processes created, dropped at the end (also when a test fails).
struct Databases(Vec<String>);

impl Drop for Databases {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        // Drop runs inside the test's runtime: clean up from a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base())).await {
                    for db in names {
                        let drop = format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut c).await;
                    }
                }
            });
        })
        .join();
    }
}
