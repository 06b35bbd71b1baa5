//! `recur scheduler`: sweeps Postgres for due work and enqueues it.
//!
//! Postgres is the truth; Redis only carries work. Every claim is a lease
//! (`crate::lease`): rows taken with `FOR UPDATE SKIP LOCKED` and stamped, so several
//! schedulers never enqueue the same work twice within a lease, and work whose job
//! Redis lost (flush, crash) is found again once its lease has passed.
//! Enqueueing stops at a high-water mark so Redis never holds a large backlog.

mod lifecycle;
mod links;
mod sample;

use std::time::{Duration, Instant};

use jobs::{ChargeTransaction, DeliverWebhook, GenerateCycle, Job, Queue, Resume, RetryCharge, TrialEnd};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock::Clock;
use crate::lease;
use crate::queue::Enqueuer;

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub tick: Duration,
    /// Rows claimed per statement.
    pub batch: i64,
    /// No more work is enqueued while a queue holds this many waiting jobs.
    pub high_water: u64,
    pub lease_secs: i64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            tick: Duration::from_secs(1),
            batch: 1000,
            high_water: 4000,
            lease_secs: crate::lease::DEFAULT_SECONDS,
        }
    }
}

pub struct Scheduler {
    pub pool: PgPool,
    pub clock: Clock,
    pub queue: Enqueuer,
    pub opts: SchedulerOptions,
    /// Where the last due claim stopped (next_charge_at, id).
    pub cursor: std::sync::Mutex<Option<(chrono::DateTime<chrono::Utc>, Uuid)>>,
}

/// What one sweep enqueued or changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub generated: usize,
    pub trials: usize,
    pub resumes: usize,
    pub retries: usize,
    pub recovered: usize,
    /// Webhook deliveries due (first attempts, retries, and those Redis lost).
    pub webhooks: usize,
    pub cancelled: usize,
    pub completed: usize,
    /// A claim was cut short by the batch size or the high-water mark: sweep again now.
    pub more: bool,
}

impl Scheduler {
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut last_housekeeping = Instant::now();
        let mut last_sample: Option<Instant> = None;
        let mut last_transitions: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let start = Instant::now();
            let transitions = last_transitions.is_none_or(|t| t.elapsed() >= self.opts.tick);
            if transitions {
                last_transitions = Some(Instant::now());
            }
            let more = match self.sweep_with(transitions).await {
                Ok(s) => s.more,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "sweep failed; retrying next tick");
                    false
                }
            };
            metrics::histogram!("recur_scheduler_sweep_duration_seconds").record(start.elapsed().as_secs_f64());
            metrics::counter!("recur_scheduler_sweeps_total").increment(1);
            metrics::gauge!("recur_scheduler_last_sweep_timestamp_seconds").set(chrono::Utc::now().timestamp() as f64);
            if last_sample.is_none_or(|t| t.elapsed() >= sample::EVERY) {
                last_sample = Some(Instant::now());
                // Off the sweep loop: counting a large store must not delay due work.
                let (pool, queue) = (self.pool.clone(), self.queue.clone());
                tokio::spawn(async move {
                    if let Err(e) = sample::gauges(&pool, &queue).await {
                        tracing::debug!(error = format!("{e:#}"), "sampling gauges failed");
                    }
                    if let Err(e) = crate::dlq::restore_if_lost(&pool, &queue).await {
                        tracing::warn!(
                            error = crate::error::chain(&e),
                            "putting back lost dead letters failed; retrying next sample"
                        );
                    }
                });
            }
            if last_housekeeping.elapsed() > Duration::from_secs(60) {
                last_housekeeping = Instant::now();
                let _ = sqlx::query!("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
                    .execute(&self.pool)
                    .await;
            }
            // Back-to-back while there is more due work; a short pause while the
            // queues are full; otherwise one tick.
            let pause = if more { Duration::from_millis(20) } else { self.until_next_due().await };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// How long to sleep when idle: the tick, or less if a subscription falls due
    /// sooner (wall clock only; the manual clock moves when told, not with time).
    async fn until_next_due(&self) -> Duration {
        if self.clock.is_manual() {
            return self.opts.tick;
        }
        let next = sqlx::query_scalar!(
            r#"SELECT next_charge_at AS "next_charge_at!" FROM subscriptions
             WHERE status IN ('active', 'past_due') AND next_charge_at IS NOT NULL AND next_charge_at > now()
             ORDER BY next_charge_at, id LIMIT 1"#
        )
        .fetch_optional(&self.pool)
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(error = crate::error::chain(&e), "next due time unknown; sleeping a full tick");
            None
        });
        // A due time that passed while we looked means "now" (to_std fails on negatives).
        let until = match next {
            Some(t) => (t - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO),
            None => self.opts.tick,
        };
        until.clamp(Duration::from_millis(5), self.opts.tick)
    }

    /// One pass over every kind of due work.
    pub async fn sweep(&self) -> anyhow::Result<Sweep> {
        self.sweep_with(true).await
    }

    /// One pass; `transitions` also runs the time-driven lifecycle changes (cancel at
    /// period end, grace expiry, completion), which the fast passes of a surge skip.
    pub async fn sweep_with(&self, transitions: bool) -> anyhow::Result<Sweep> {
        let now = self.clock.now().await?;
        // The deployment's clock, then each test clock with running subscriptions at
        // its own time (crate::test_clocks): every kind of work in the same order.
        let clocks = crate::test_clocks::live(&mut *self.pool.acquire().await?).await?;
        let mut s = Sweep::default();
        if transitions {
            s.completed += lifecycle::complete_ended(&self.pool, now, self.opts.batch).await?;
            s.add(clock_transitions(&self.pool, &self.opts, None, now).await?);
            for (clock, at) in &clocks {
                s.add(clock_transitions(&self.pool, &self.opts, Some(*clock), *at).await?);
            }
        }

        let room = self.room(&[Queue::GenerateCycle, Queue::ChargeTransaction]).await?;
        let due = self.claim_due(now, room).await?;
        s.more |= room == 0 || due.len() as i64 == room;
        s.generated = due.len();
        self.push(
            due.into_iter()
                .map(|(id, seq)| Job::GenerateCycle(GenerateCycle { subscription_id: id, sequence: seq, attempt: 0 })),
        )
        .await?;
        for (clock, at) in &clocks {
            let room = self.room(&[Queue::GenerateCycle, Queue::ChargeTransaction]).await?;
            let due = due_on_clock(&self.pool, &self.queue, &self.opts, *clock, *at, room).await?;
            s.more |= room == 0 || due as i64 == room;
            s.generated += due;
        }

        s.add(clock_claims(&self.pool, &self.queue, &self.opts, None, now).await?);
        for (clock, at) in &clocks {
            s.add(clock_claims(&self.pool, &self.queue, &self.opts, Some(*clock), *at).await?);
        }

        // Charges whose job Redis lost: pending past their lease.
        let room = self.room(&[Queue::ChargeTransaction]).await?;
        let lost = match room {
            0 => vec![],
            n => lease::claim_lost_charges(&self.pool, n, self.opts.lease_secs).await?,
        };
        s.recovered = lost.len();
        if !lost.is_empty() {
            tracing::info!(count = lost.len(), "re-enqueued charges whose jobs were lost");
            metrics::counter!("recur_scheduler_recovered_total").increment(lost.len() as u64);
        }
        self.push(
            lost.into_iter().map(|id| Job::ChargeTransaction(ChargeTransaction { transaction_id: id, attempt: 0 })),
        )
        .await?;

        let unborn = lease::recover_webhook_births(&self.pool, 1000).await?;
        if unborn > 0 {
            tracing::info!(count = unborn, "wrote webhook deliveries whose first attempt was never recorded");
        }
        let room = self.room(&[Queue::DeliverWebhook]).await?;
        let deliveries = match room {
            0 => vec![],
            n => lease::claim_webhook_deliveries(&self.pool, n, self.opts.lease_secs).await?,
        };
        s.webhooks = deliveries.len();
        s.more |= room > 0 && deliveries.len() as i64 == room;
        self.push(deliveries.into_iter().map(|id| Job::DeliverWebhook(DeliverWebhook { delivery_id: id, attempt: 0 })))
            .await?;
        for (kind, n) in [
            ("generate", s.generated),
            ("trial_end", s.trials),
            ("resume", s.resumes),
            ("retry", s.retries),
            ("recovered", s.recovered),
            ("webhook", s.webhooks),
        ] {
            if n > 0 {
                metrics::counter!("recur_scheduler_enqueued_total", "kind" => kind).increment(n as u64);
            }
        }
        Ok(s)
    }

    /// Claim due subscriptions in (next_charge_at, id) order from where the last claim
    /// stopped, so rows claimed moments ago are not read again; a short claim means the
    /// end was reached, and the next one starts over (picking up expired leases).
    async fn claim_due(&self, now: chrono::DateTime<chrono::Utc>, limit: i64) -> anyhow::Result<Vec<(Uuid, i32)>> {
        if limit <= 0 {
            return Ok(vec![]);
        }
        let after = *self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        // The start of the walk: year 1, earlier than any due date and inside Postgres's range.
        let floor = chrono::DateTime::<chrono::Utc>::from_timestamp(-62_135_596_800, 0).unwrap_or_default();
        let (after_at, after_id) = after.unwrap_or((floor, Uuid::nil()));
        let rows =
            lease::claim_due_subscriptions(&self.pool, now, (after_at, after_id), limit, self.opts.lease_secs).await?;
        let last = rows.iter().filter_map(|r| r.next_charge_at.map(|at| (at, r.id))).max();
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = if (rows.len() as i64) < limit { None } else { last };
        Ok(rows.into_iter().map(|r| (r.id, r.next_sequence)).collect())
    }

    /// How many more jobs the given queues can take before the high-water mark.
    async fn room(&self, queues: &[Queue]) -> anyhow::Result<i64> {
        room_in(&self.queue, &self.opts, queues).await
    }

    async fn push(&self, jobs: impl Iterator<Item = Job>) -> anyhow::Result<()> {
        push_all(&self.queue, jobs).await
    }
}

impl Sweep {
    fn add(&mut self, o: Sweep) {
        self.generated += o.generated;
        self.trials += o.trials;
        self.resumes += o.resumes;
        self.retries += o.retries;
        self.cancelled += o.cancelled;
        self.completed += o.completed;
        self.more |= o.more;
    }
}

/// How many more jobs the given queues can take before the high-water mark.
async fn room_in(queue: &Enqueuer, opts: &SchedulerOptions, queues: &[Queue]) -> anyhow::Result<i64> {
    let mut waiting = 0;
    for q in queues {
        waiting += queue.waiting(*q).await?;
    }
    Ok((opts.high_water.saturating_sub(waiting) as i64).min(opts.batch))
}

async fn push_all(queue: &Enqueuer, jobs: impl Iterator<Item = Job>) -> anyhow::Result<()> {
    let jobs: Vec<Job> = jobs.collect();
    if jobs.is_empty() {
        return Ok(());
    }
    // If this fails the leases expire and the next sweeps enqueue the work again.
    Ok(queue.push(&jobs).await?)
}

/// Claim and enqueue the due cycles of test clock `clock`, at its time `now`.
pub async fn due_on_clock(
    pool: &PgPool,
    queue: &Enqueuer,
    opts: &SchedulerOptions,
    clock: Uuid,
    now: chrono::DateTime<chrono::Utc>,
    room: i64,
) -> anyhow::Result<usize> {
    if room <= 0 {
        return Ok(0);
    }
    let due = lease::claim_due_on_clock(pool, clock, now, room, opts.lease_secs).await?;
    let n = due.len();
    push_all(
        queue,
        due.into_iter().map(|d| {
            Job::GenerateCycle(GenerateCycle { subscription_id: d.id, sequence: d.next_sequence, attempt: 0 })
        }),
    )
    .await?;
    Ok(n)
}

/// The time-driven cancellations of one clock at its time `now`: the deployment's
/// (`clock` None) or a test clock's. Cancel at period end, cancel after a grace period.
async fn clock_transitions(
    pool: &PgPool,
    opts: &SchedulerOptions,
    clock: Option<Uuid>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Sweep> {
    let mut s = Sweep::default();
    s.cancelled += lifecycle::cancel_at_period_end(pool, clock, now, opts.batch).await?;
    s.cancelled += lifecycle::cancel_after_grace(pool, clock, now, opts.batch).await?;
    links::sweep(pool, clock, now, opts.batch).await?;
    Ok(s)
}

/// The claims of one clock at its time `now`, after its due cycles: ended trials,
/// resumes and due retries.
async fn clock_claims(
    pool: &PgPool,
    queue: &Enqueuer,
    opts: &SchedulerOptions,
    clock: Option<Uuid>,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Sweep> {
    let mut s = Sweep::default();
    let trials = lease::claim_trial_ends(pool, clock, now, opts.batch, opts.lease_secs).await?;
    s.trials = trials.len();
    push_all(queue, trials.into_iter().map(|id| Job::TrialEnd(TrialEnd { subscription_id: id, attempt: 0 }))).await?;

    let resumes = lease::claim_resumes(pool, clock, now, opts.batch, opts.lease_secs).await?;
    s.resumes = resumes.len();
    push_all(queue, resumes.into_iter().map(|id| Job::Resume(Resume { subscription_id: id, attempt: 0 }))).await?;

    let room = room_in(queue, opts, &[Queue::RetryCharge, Queue::ChargeTransaction]).await?;
    let retries = match room {
        0 => vec![],
        n => lease::claim_retries(pool, clock, now, n, opts.lease_secs).await?,
    };
    s.retries = retries.len();
    push_all(
        queue,
        retries
            .into_iter()
            .map(|r| Job::RetryCharge(RetryCharge { billing_cycle_id: r.id, cycle_attempt: r.attempt, attempt: 0 })),
    )
    .await?;
    Ok(s)
}

/// What an advance of test clock `clock` to `now` made due, enqueued before the
/// request answers (docs/api.md#test-clocks). Due cycles are claimed until none is
/// left (up to the high-water mark); catch-up cycles that opening these makes due
/// come from the scheduler's next sweeps.
pub async fn enqueue_clock(
    pool: &PgPool,
    queue: &Enqueuer,
    opts: &SchedulerOptions,
    clock: Uuid,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Sweep> {
    let mut s = clock_transitions(pool, opts, Some(clock), now).await?;
    loop {
        let room = room_in(queue, opts, &[Queue::GenerateCycle, Queue::ChargeTransaction]).await?;
        let n = due_on_clock(pool, queue, opts, clock, now, room).await?;
        s.generated += n;
        if n == 0 || (n as i64) < room {
            s.more = room == 0;
            break;
        }
    }
    s.add(clock_claims(pool, queue, opts, Some(clock), now).await?);
    Ok(s)
}
