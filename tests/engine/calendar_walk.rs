//! Property: for random plans and random walks of the test clock, the engine's cycle
//! due dates match an independent reference computation and sequences are gapless.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::support::{EngineOpts, eventually, spawn_app};

/// Reference: the n-th due date (0-based) by plain calendar arithmetic, clamping the
/// anchor's day to each target month's length.
fn reference(anchor: DateTime<Utc>, unit: &str, count: i64, n: i64) -> DateTime<Utc> {
    let months = |m: i64| {
        let idx = anchor.year() as i64 * 12 + anchor.month0() as i64 + m;
        let (y, mo) = (idx.div_euclid(12) as i32, idx.rem_euclid(12) as u32 + 1);
        let mut d = anchor.day();
        while NaiveDate::from_ymd_opt(y, mo, d).is_none() {
            d -= 1;
        }
        Utc.from_utc_datetime(&NaiveDate::from_ymd_opt(y, mo, d).unwrap().and_time(anchor.time()))
    };
    match unit {
        "day" => anchor + Duration::days(count * n),
        "week" => anchor + Duration::days(7 * count * n),
        "month" => months(count * n),
        _ => months(12 * count * n),
    }
}

#[derive(Debug, Clone)]
struct Case {
    plans: Vec<(String, i64, u32)>, // unit, count, day of month of the anchor
    steps: Vec<i64>,                // clock advances in hours
}

fn case() -> impl Strategy<Value = Case> {
    let plan = prop_oneof![
        (1i64..=20).prop_map(|c| ("day".to_owned(), c)),
        (1i64..=4).prop_map(|c| ("week".to_owned(), c)),
        (1i64..=3).prop_map(|c| ("month".to_owned(), c)),
        Just(("year".to_owned(), 1)),
    ];
    (prop::collection::vec((plan, 1u32..=31), 3..5), prop::collection::vec(1i64..=60 * 24, 3..7))
        .prop_map(|(p, steps)| Case { plans: p.into_iter().map(|((u, c), d)| (u, c, d)).collect(), steps })
}

#[test]
fn cycle_due_dates_follow_the_reference_under_random_clock_walks() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut runner = TestRunner::new(Config { cases: 4, failure_persistence: None, ..Config::default() });
    runner
        .run(&case(), |c| {
            rt.block_on(check(c));
            Ok(())
        })
        .unwrap();
}

async fn check(c: Case) {
    let app = spawn_app().await;
    app.set_clock("2027-12-01T00:00:00Z").await;
    let _engine = app.start_engine(EngineOpts::default());
    let mut subs = Vec::new();
    for (i, (unit, count, day)) in c.plans.iter().enumerate() {
        let d = (*day).min(if *unit == "year" { 28 } else { 31 });
        // Start in January 2028 (31 days) so every day of month exists.
        let start = Utc.with_ymd_and_hms(2028, 1, d, 6, 30, 0).unwrap();
        let s = app
            .subscription(
                json!({"customer": {"customerAccountId": format!("walk-{i}")}, "amount": "1.00", "currency": "EUR",
                "interval": {"unit": unit, "count": count}, "startAt": start, "paymentMethod": "pm_sandbox_ok"}),
            )
            .await;
        subs.push((s["id"].as_str().unwrap().to_owned(), start, unit.clone(), *count));
    }
    let mut now = app.clock_now().await;
    for h in &c.steps {
        now += Duration::hours(*h * 12);
        app.set_clock(&now.to_rfc3339()).await;
        // The engine catches up every cycle due by now (a jump runs each missed period).
        eventually("the engine to catch up", std::time::Duration::from_secs(60), async || {
            let behind = app
                .count(
                    "SELECT count(*) FROM subscriptions WHERE next_charge_at <= (SELECT now FROM clock)
                     OR EXISTS (SELECT 1 FROM billing_cycles WHERE status IN ('pending', 'retrying'))",
                )
                .await;
            if behind == 0 { Ok(()) } else { Err(format!("{behind} subscriptions behind")) }
        })
        .await;
    }
    for (id, start, unit, count) in &subs {
        let rows: Vec<CycleDates> = sqlx::query_as(
            "SELECT sequence, due_at, period_start, period_end FROM billing_cycles WHERE subscription_id = $1::uuid ORDER BY sequence",
        )
        .bind(id)
        .fetch_all(app.pool())
        .await
        .unwrap();
        let expected: Vec<DateTime<Utc>> =
            (0..).map(|n| reference(*start, unit, *count, n)).take_while(|d| *d <= now).collect();
        assert_eq!(rows.len(), expected.len(), "{unit}x{count} from {start}: cycle count");
        for (i, CycleDates { sequence: seq, due_at: due, period_start: ps, period_end: pe }) in rows.iter().enumerate()
        {
            assert_eq!(*seq, i as i32 + 1, "gapless sequences");
            assert_eq!(*due, expected[i], "{unit}x{count} from {start}: cycle {seq}");
            assert_eq!(*ps, expected[i]);
            assert_eq!(*pe, reference(*start, unit, *count, i as i64 + 1));
        }
    }
    app.assert_exactly_once().await;
}

#[derive(sqlx::FromRow)]
struct CycleDates {
    sequence: i32,
    due_at: DateTime<Utc>,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
}
