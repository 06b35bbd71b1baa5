//! The http gateway's fault run (docs/gateway-protocol.md#the-fault-run): charges
//! through a worker to `recur acquirer` run as a separate OS process, through a fault
//! proxy (tests/support/fault_proxy.rs), while the acquirer answers 503 to some
//! charges and cuts the connection after charging others, and the plan below adds
//! latency, resets, a black hole and a `kill -9` of the acquirer with a restart.
//! Reconciled from the acquirer's own ledger: 0 doubles, 0 lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use recur::gateway::http::HttpGateway;
use recur::webhooks::signing;
use serde_json::json;
use uuid::Uuid;

use crate::http_gateway::{opts, start_http_engine_with};
use crate::support::fault_proxy::{FaultProxy, Faults};
use crate::support::{
    Child, DatabaseGuard, EngineOpts, TestApp, eventually, free_port_below_ephemeral, pg_base, spawn_app, spawn_recur,
};

const FAULT_KINDS: [&str; 2] = ["error", "lost_response"];
const READER: &str = "recur-fault-run";

/// `recur acquirer` as a separate OS process over its own database, on a port below
/// the ephemeral range so that it can come back on the same one after a `kill -9`.
struct AcquirerProcess {
    child: Option<Child>,
    addr: SocketAddr,
    secret: String,
    env: Vec<(&'static str, String)>,
    flags: Vec<String>,
    pool: Option<sqlx::PgPool>,
    /// Faults counted by the incarnations killed so far (their metrics died with them).
    faults_before: HashMap<&'static str, u64>,
    _cleanup: DatabaseGuard,
}

impl AcquirerProcess {
    async fn start(flags: &[&str]) -> AcquirerProcess {
        let name = format!("recur_acquirer_test_{}", Uuid::now_v7().simple());
        let url = format!("{}/{name}", pg_base());
        let secret = signing::new_secret();
        let mut acq = AcquirerProcess {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], free_port_below_ephemeral())),
            env: vec![
                ("RECUR_ACQUIRER_DATABASE_URL", url.clone()),
                ("RECUR_ACQUIRER_SECRET", secret.clone()),
                ("RECUR_LOG", std::env::var("RECUR_LOG").unwrap_or_else(|_| "warn".into())),
            ],
            secret,
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            pool: None,
            faults_before: HashMap::new(),
            _cleanup: DatabaseGuard { name },
        };
        acq.spawn().await;
        // Named, to tell the test's own connections from the acquirer's.
        let reader = format!("{url}?application_name={READER}");
        acq.pool = Some(sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&reader).await.unwrap());
        acq
    }

    /// Start the process (it creates and migrates its database) and wait until it answers.
    async fn spawn(&mut self) {
        let listen = self.addr.to_string();
        let mut args = vec!["acquirer", "--listen", listen.as_str()];
        args.extend(self.flags.iter().map(String::as_str));
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut child = spawn_recur(&args, &env);
        let health = format!("http://{}/healthz", self.addr);
        eventually("recur acquirer to answer /healthz", Duration::from_secs(60), async || {
            if let Some(status) = child.0.try_wait().unwrap() {
                panic!("recur acquirer exited at start ({status}); TEST_LOG=1 shows why");
            }
            reqwest::get(&health).await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        self.child = Some(child);
    }

    fn pool(&self) -> &sqlx::PgPool {
        self.pool.as_ref().expect("started")
    }

    /// `acquirer_faults_total{kind}` of the running incarnation.
    async fn faults_now(&self, kind: &str) -> u64 {
        let metrics = reqwest::get(format!("http://{}/metrics", self.addr)).await.unwrap().text().await.unwrap();
        let line = format!("acquirer_faults_total{{kind=\"{kind}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or_else(|| panic!("no {line} in {metrics}"))
    }

    /// Faults of every incarnation: a lower bound, as those drawn between the last
    /// read of a killed incarnation and its kill are not seen.
    async fn faults(&self, kind: &'static str) -> u64 {
        self.faults_before.get(kind).copied().unwrap_or(0) + self.faults_now(kind).await
    }

    /// SIGKILL: no drain, no answer to the requests in flight (`Child::kill` is SIGKILL).
    async fn kill9(&mut self) {
        for kind in FAULT_KINDS {
            let now = self.faults_now(kind).await;
            *self.faults_before.entry(kind).or_default() += now;
        }
        let mut child = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || child.kill9()).await.unwrap();
    }

    async fn ledger_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM acquirer_charges").fetch_one(self.pool()).await.unwrap()
    }

    /// Once a killed acquirer's database sessions are gone: a COMMIT it sent just
    /// before it died may still land until then.
    async fn wait_for_its_sessions_to_end(&self) {
        eventually("the killed acquirer's sessions to end", Duration::from_secs(30), async || {
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND backend_type = 'client backend' AND application_name <> $1",
            )
            .bind(READER)
            .fetch_one(self.pool())
            .await
            .unwrap();
            if left == 0 { Ok(()) } else { Err(format!("{left} sessions")) }
        })
        .await;
    }

    async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart after a kill");
        self.spawn().await;
    }
}

/// Where the run's plan of faults is. Each step starts once enough cycles succeeded
/// and ends once its fault was seen enough times, so that every fault the test asserts
/// did happen, at any N (a step does not end on progress alone: at a small N the
/// charges in flight alone could carry the run past it).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Clean,
    Latency,
    Resets,
    BlackHole { since: Instant, black_holed: u64 },
    Calm,
    Down { since: Instant, refused: u64 },
    Recovered,
}

/// A black hole long enough for the gateway's 1 s timeouts to open its circuit.
const BLACK_HOLE_FOR: Duration = Duration::from_secs(3);
/// An outage of several breaker cooldowns (500 ms).
const DOWN_FOR: Duration = Duration::from_millis(1_500);

struct FaultPlan {
    n: usize,
    /// Cycles created so far: n, and the top-ups that keep the run going until the
    /// plan's end.
    total: usize,
    phase: Phase,
    /// Cycles succeeded and pending at the kill, and the ledger's rows once the
    /// killed acquirer's sessions ended.
    at_kill: (usize, i64),
    ledger_after_kill: i64,
    /// The same when the acquirer came back.
    at_restart: (usize, i64),
    ledger_at_restart: i64,
    down_for: Duration,
}

impl FaultPlan {
    fn new(n: usize) -> FaultPlan {
        FaultPlan {
            n,
            total: n,
            phase: Phase::Clean,
            at_kill: (0, 0),
            ledger_after_kill: 0,
            at_restart: (0, 0),
            ledger_at_restart: 0,
            down_for: Duration::ZERO,
        }
    }

    async fn step(&mut self, done: usize, proxy: &FaultProxy, acq: &mut AcquirerProcess, app: &TestApp) {
        let at = |share: f64| done as f64 >= share * self.n as f64;
        let c = proxy.counts();
        self.phase = match self.phase {
            Phase::Clean if at(0.05) => {
                proxy.set_faults(Faults { latency: Duration::from_millis(40), ..Faults::default() });
                Phase::Latency
            }
            Phase::Latency if at(0.15) && c.delayed_chunks >= 20 => {
                proxy.set_faults(Faults { reset_rate: 0.1, black_hole_rate: 0.05, ..Faults::default() });
                Phase::Resets
            }
            Phase::Resets
                if at(0.30) && c.resets_mid_request >= 2 && c.resets_mid_answer >= 2 && c.black_holed >= 2 =>
            {
                proxy.set_faults(Faults { black_hole_rate: 1.0, ..Faults::default() });
                Phase::BlackHole { since: Instant::now(), black_holed: c.black_holed }
            }
            Phase::BlackHole { since, black_holed }
                if since.elapsed() >= BLACK_HOLE_FOR && c.black_holed >= black_holed + 5 =>
            {
                proxy.set_faults(Faults::default());
                Phase::Calm
            }
            Phase::Calm if at(0.55) => {
                acq.kill9().await;
                let since = Instant::now();
                self.at_kill = (done, pending(app).await);
                acq.wait_for_its_sessions_to_end().await;
                self.ledger_after_kill = acq.ledger_rows().await;
                Phase::Down { since, refused: c.refused }
            }
            // Down until the gateway has met the dead acquirer a few times (its circuit
            // opens; the charges wait, see the caller's check that none failed).
            Phase::Down { since, refused } if since.elapsed() >= DOWN_FOR && c.refused >= refused + 2 => {
                let succeeded = app.count("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'").await;
                self.at_restart = (succeeded as usize, pending(app).await);
                self.ledger_at_restart = acq.ledger_rows().await;
                self.down_for = since.elapsed();
                acq.restart().await;
                Phase::Recovered
            }
            unchanged => unchanged,
        };
        // With nothing left to charge, no fault would be met any more: a step that has
        // not yet seen its faults gets more charges, so the plan always reaches its end
        // (at a small N the charges can run out before a step's exact-rate faults come).
        if done == self.total && self.phase != Phase::Recovered {
            let more = (self.n / 10).max(8);
            top_up(app, self.total..self.total + more).await;
            self.total += more;
        }
    }
}

/// Subscriptions `ids`, charged at once: monthly, 7.50 EUR, with the acquirer's
/// `pm_ok` token.
async fn subscribe(app: &TestApp, ids: std::ops::Range<usize>, start_at: &str) {
    futures::stream::iter(ids)
        .for_each_concurrent(8, |i| {
            let body = json!({"customer": {"customerAccountId": format!("fault-{i}")}, "amount": "7.50",
                "currency": "EUR", "interval": {"unit": "month", "count": 1}, "startAt": start_at,
                "paymentMethod": "pm_sandbox_ok"});
            async move {
                app.subscription(body).await;
            }
        })
        .await;
    // Acquirer tokens, written before any worker can charge them (the API checks
    // payment methods against the sandbox, see `http_gateway::due_subscription`).
    sqlx::query("UPDATE subscriptions SET payment_method = 'pm_ok' WHERE payment_method <> 'pm_ok'")
        .execute(app.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE transactions SET payment_method = 'pm_ok' WHERE payment_method <> 'pm_ok'")
        .execute(app.pool())
        .await
        .unwrap();
}

/// More subscriptions while the engine runs: they start an hour ahead on the test
/// clock, so no worker sees them before their token is written, and the clock then
/// moves that hour (nothing else is due in it: the others are monthly).
async fn top_up(app: &TestApp, ids: std::ops::Range<usize>) {
    let start = app.clock_now().await + chrono::Duration::hours(1);
    subscribe(app, ids, &start.to_rfc3339()).await;
    app.advance(3_600).await;
}

async fn pending(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM billing_cycles WHERE status = 'pending'").await
}

/// A fault run, short by default: `RECUR_FAULT_CHARGES` cycles (300), the acquirer's
/// error and lost-response rates `RECUR_FAULT_ACQUIRER_RATE` (0.05: at 300 charges a
/// run without either fault has a chance below 1e-6; `scripts/acquirer-faults` runs
/// 20,000 at 0.02). Every cycle must succeed, no cycle may fail on the way (the outage
/// and the black hole leave charges pending), and the acquirer's approved charges must
/// be exactly the attempts recur recorded as succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_and_double_nothing_reconciled_from_the_acquirers_ledger() {
    let n: usize =
        std::env::var("RECUR_FAULT_CHARGES").map_or(300, |v| v.parse().expect("RECUR_FAULT_CHARGES is a number"));
    let rate = std::env::var("RECUR_FAULT_ACQUIRER_RATE").unwrap_or_else(|_| "0.05".into());
    let app = spawn_app().await;
    let mut acq = AcquirerProcess::start(&[
        "--error-rate",
        &rate,
        "--lost-response-rate",
        &rate,
        "--latency-ms",
        "2",
        "--jitter-ms",
        "5",
    ])
    .await;
    let proxy = FaultProxy::start(acq.addr).await;

    let now = app.clock_now().await.to_rfc3339();
    subscribe(&app, 0..n, &now).await;

    // 1 s timeouts, so black-holed calls give up quickly; 20 attempts, so that a charge
    // that meets faults on 8 calls in a row (the default policy) is not dead-lettered
    // (the DLQ and its replay are the chaos run's, README.md#proof-under-faults).
    let gateway = HttpGateway::new(&proxy.url(), &acq.secret, opts(1_000, 32, 5, 500)).expect("the gateway builds");
    let engine_opts = EngineOpts { max_attempts: Some(20), ..EngineOpts::default() };
    let started = Instant::now();
    let _engine = start_http_engine_with(&app, gateway, engine_opts);
    let mut plan = FaultPlan::new(n);
    eventually("every cycle to succeed through the faults", Duration::from_secs(180 + n as u64 / 10), async || {
        let done = app.count("SELECT count(*) FROM billing_cycles WHERE status = 'succeeded'").await as usize;
        let other = app.count("SELECT count(*) FROM billing_cycles WHERE status NOT IN ('succeeded', 'pending')").await;
        assert_eq!(other, 0, "cycles neither succeeded nor pending, at {:?}", plan.phase);
        plan.step(done, &proxy, &mut acq, &app).await;
        if done == plan.total && plan.phase == Phase::Recovered {
            Ok(())
        } else {
            Err(format!("{done} of {} succeeded, at {:?}", plan.total, plan.phase))
        }
    })
    .await;
    let took = started.elapsed();

    // Reconciled from the acquirer's ledger, not recur's.
    let recur_keys: Vec<String> = sqlx::query_scalar(
        "SELECT t.idempotency_key FROM transactions t JOIN billing_cycles c ON c.id = t.billing_cycle_id
         WHERE c.status = 'succeeded' AND t.status = 'succeeded' ORDER BY 1",
    )
    .fetch_all(app.pool())
    .await
    .unwrap();
    let approved: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_key FROM acquirer_charges WHERE status = 'approved' ORDER BY 1")
            .fetch_all(acq.pool())
            .await
            .unwrap();
    let ledger: std::collections::BTreeSet<&String> = approved.iter().collect();
    let recorded: std::collections::BTreeSet<&String> = recur_keys.iter().collect();
    let lost = recorded.difference(&ledger).count() + ledger.difference(&recorded).count();
    let doubles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT customer_account_id FROM acquirer_charges WHERE status = 'approved'
         GROUP BY 1 HAVING count(*) > 1) d",
    )
    .fetch_one(acq.pool())
    .await
    .unwrap();
    let c = proxy.counts();
    let (errors, lost_responses) = (acq.faults("error").await, acq.faults("lost_response").await);
    eprintln!(
        "fault run: {} cycles succeeded ({n} and top-ups) in {took:.1?} (acquirer rates {rate}); ledger {} approved, {doubles} customers \
         charged twice, {lost} keys in one ledger only; proxy {c:?}; acquirer faults (both incarnations) error \
         {errors}, lost_response {lost_responses}; kill -9 at {:?} cycles (succeeded, pending), ledger {} rows; \
         down {:.1?}; at the restart {:?} cycles (succeeded, pending), ledger {} rows",
        plan.total,
        approved.len(),
        plan.at_kill,
        plan.ledger_after_kill,
        plan.down_for,
        plan.at_restart,
        plan.ledger_at_restart,
    );
    assert_eq!(recur_keys.len(), plan.total, "one succeeded attempt per cycle");
    assert_eq!(approved, recur_keys, "the acquirer charged exactly the attempts recur recorded as succeeded");
    assert_eq!(doubles, 0, "no customer charged twice");

    // Every fault happened.
    assert!(c.delayed_chunks >= 20 && c.resets_mid_request >= 2 && c.resets_mid_answer >= 2, "{c:?}");
    assert!(c.black_holed >= 7 && c.refused >= 2, "{c:?}");
    assert!(errors > 0 && lost_responses > 0, "acquirer faults: error {errors}, lost_response {lost_responses}");
    assert_eq!(plan.ledger_at_restart, plan.ledger_after_kill, "the killed acquirer charged nothing more");
    assert!(plan.at_restart.1 > 0, "charges waited for the acquirer, pending, while it was down");
    assert!(plan.at_kill.0 < plan.total, "the kill came mid-run: cycles succeeded after the restart");
}
