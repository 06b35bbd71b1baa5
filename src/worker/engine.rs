//! The engine a worker runs jobs with: dispatch per queue, the project's retry policy
//! (exponential backoff with full jitter, then dead-letter), and the group-commit
//! batchers shared by all jobs of the process.
//!
//! A job fails in one of two ways (`JobError`): transiently (a timeout, a gateway 5xx,
//! a lost connection), retried with backoff until its attempts are used up; or
//! permanently (it can never succeed as it is, e.g. a charge with no payment method),
//! dead-lettered at once with the reason, for an operator to fix and replay.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::FutureExt;
use jobs::{Job, PolicyOverrides, Queue};
use rand::Rng;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::batch::Batcher;
use crate::billing::card_history::CardHistory;
use crate::billing::charge::{self, ChargeContext, Recorded, Settlement};
use crate::billing::dunning::Settled;
use crate::billing::generate;
use crate::billing::{CycleStatus, TransactionKind, TransactionStatus, transaction_state};
use crate::clock::Clock;
use crate::dlq::{self, DeadLetter};
use crate::events::{self, Actor, NewEvent};
use crate::gateway::{ChargeOutcome, ChargeRequest, Gateway, GatewayError};
use crate::lease;
use crate::queue::Enqueuer;

pub struct Engine {
    pub pool: PgPool,
    pub clock: Clock,
    pub gateway: Arc<dyn Gateway>,
    pub queue: Enqueuer,
    pub overrides: PolicyOverrides,
    pub lease_secs: i64,
    pub webhooks: Arc<crate::webhooks::Deliverer>,
    generate: Batcher<(Uuid, i32), Option<Job>>,
    loader: Batcher<Uuid, Option<(ChargeContext, CardHistory)>>,
    recorder: Batcher<Settlement, Recorded>,
    pusher: Batcher<Job, ()>,
}

impl Engine {
    pub fn new(
        pool: PgPool,
        clock: Clock,
        gateway: Arc<dyn Gateway>,
        queue: Enqueuer,
        overrides: PolicyOverrides,
        lease_secs: i64,
        webhooks: crate::webhooks::Sender,
    ) -> Arc<Engine> {
        let (p, c) = (pool.clone(), clock.clone());
        let generate = Batcher::spawn("generate", 500, 2, move |items: Vec<(Uuid, i32)>| {
            let (p, c) = (p.clone(), c.clone());
            async move { generate::generate_batch(&p, &c, items, lease_secs).await }
        });
        let p = pool.clone();
        let loader = Batcher::spawn("load", 1000, 2, move |ids: Vec<Uuid>| {
            let p = p.clone();
            async move { charge::load_for_charge(&p, ids).await }
        });
        let inline = Queue::DeliverWebhook.policy().with(&overrides).concurrency;
        let webhooks = crate::webhooks::Deliverer::spawn(pool.clone(), queue.clone(), webhooks, inline);
        let (p, w) = (pool.clone(), webhooks.clone());
        let recorder = Batcher::spawn("record", 1000, 3, move |items: Vec<Settlement>| {
            let (p, w) = (p.clone(), w.clone());
            async move {
                let (recorded, born) = charge::record_batch(&p, items).await?;
                w.send_born(born).await;
                Ok(recorded)
            }
        });
        let q = queue.clone();
        let pusher = Batcher::spawn("push", 1000, 2, move |jobs: Vec<Job>| {
            let q = q.clone();
            async move {
                let n = jobs.len();
                q.push(&jobs).await.context("enqueue follow-up jobs")?;
                Ok(vec![(); n])
            }
        });
        Arc::new(Engine {
            pool,
            clock,
            gateway,
            queue,
            overrides,
            lease_secs,
            webhooks,
            generate,
            loader,
            recorder,
            pusher,
        })
    }

    /// Run one delivery of a job under its queue's policy. Technical failures are
    /// handled here (retry or dead-letter), so apalis only ever sees success; an error
    /// is returned only when that handling itself failed, and apalis then redelivers.
    pub async fn execute(self: &Arc<Self>, job: Job) -> Result<(), apalis_core::error::BoxDynError> {
        let queue = job.queue();
        let policy = queue.policy().with(&self.overrides);
        let start = Instant::now();
        let run =
            tokio::time::timeout(policy.timeout, AssertUnwindSafe(self.dispatch(job.clone())).catch_unwind()).await;
        metrics::histogram!("recur_job_duration_seconds", "queue" => queue.name())
            .record(start.elapsed().as_secs_f64());
        let failure = match run {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(e))) => Some(e),
            Ok(Err(_)) => Some(JobError::Transient(anyhow::anyhow!("the job handler panicked"))),
            Err(_) => Some(JobError::Transient(anyhow::anyhow!("the job timed out after {:?}", policy.timeout))),
        };
        let Some(failure) = failure else {
            metrics::counter!("recur_jobs_total", "queue" => queue.name(), "outcome" => "ok").increment(1);
            return Ok(());
        };
        if let JobError::Deferred(wait) = failure {
            // Spread the wake-ups so a closing circuit is not met by every charge at once.
            let wait = wait + wait.mul_f64(rand::rng().random::<f64>());
            if let Job::ChargeTransaction(c) = &job {
                let hold = wait.as_secs_f64() + self.lease_secs as f64;
                lease::extend_charge(&self.pool, c.transaction_id, hold).await.map_err(anyhow::Error::from)?;
            }
            self.queue.push_after(&[job], wait).await.map_err(anyhow::Error::from)?;
            metrics::counter!("recur_jobs_total", "queue" => queue.name(), "outcome" => "deferred").increment(1);
            return Ok(());
        }
        let failures = job.attempt() + 1;
        let error = format!("{failure:#}");
        if failure.is_permanent() || policy.exhausted(failures) {
            tracing::warn!(%queue, attempts = failures, permanent = failure.is_permanent(), %error, "job dead-lettered");
            self.dead_letter(job, failures, &error).await?;
            metrics::counter!("recur_jobs_total", "queue" => queue.name(), "outcome" => "dead").increment(1);
        } else {
            let delay = policy.backoff.delay(failures, rand::rng().random::<f64>());
            tracing::debug!(%queue, attempt = failures, ?delay, %error, "job will be retried");
            if let Job::ChargeTransaction(c) = &job {
                let hold = delay.as_secs_f64() + self.lease_secs as f64;
                lease::extend_charge(&self.pool, c.transaction_id, hold).await.map_err(anyhow::Error::from)?;
            }
            self.queue.push_after(&[job.with_attempt(failures)], delay).await.map_err(anyhow::Error::from)?;
            metrics::counter!("recur_jobs_total", "queue" => queue.name(), "outcome" => "retry").increment(1);
        }
        Ok(())
    }

    async fn dispatch(&self, job: Job) -> Result<(), JobError> {
        let next: Vec<Job> = match job {
            Job::GenerateCycle(j) => self.generate.submit((j.subscription_id, j.sequence)).await?.into_iter().collect(),
            Job::ChargeTransaction(j) => {
                self.charge(j.transaction_id).await?;
                vec![]
            }
            Job::RetryCharge(j) => {
                generate::retry_charge(&self.pool, &self.clock, j.billing_cycle_id, j.cycle_attempt, self.lease_secs)
                    .await?
            }
            Job::TrialEnd(j) => {
                generate::trial_end(&self.pool, &self.clock, j.subscription_id, self.lease_secs).await?
            }
            Job::Resume(j) => generate::resume(&self.pool, &self.clock, j.subscription_id).await?,
            Job::DeliverWebhook(j) => {
                self.webhooks.settle(j.delivery_id, self.webhooks.deliver(j.delivery_id).await).await?;
                vec![]
            }
        };
        for j in next {
            self.pusher.submit(j).await?;
        }
        Ok(())
    }

    /// Billing time for a charge: its subscription's test clock, or the deployment's
    /// clock (read only when the charge needs it).
    async fn billing_now(&self, test_clock: Option<Uuid>) -> crate::Result<chrono::DateTime<chrono::Utc>> {
        match test_clock {
            Some(_) => crate::test_clocks::now_of(&mut *self.pool.acquire().await?, &self.clock, test_clock).await,
            None => self.clock.now().await,
        }
    }

    async fn charge(&self, transaction_id: Uuid) -> Result<(), JobError> {
        let Some((ctx, card)) = self.loader.submit(transaction_id).await? else { return Ok(()) };
        if ctx.status != TransactionStatus::Pending {
            return Ok(());
        }
        if matches!(ctx.cycle_status, Some(CycleStatus::Cancelled)) {
            return Ok(charge_abandoned(&self.pool, &ctx).await?);
        }
        let over_limit = ctx.authorized_limit.is_some_and(|limit| ctx.amount > limit);
        // The card networks' retry rules (docs/governor.md), checked only for a card with
        // network declines: the clock is read only then.
        let refusal = match card.last {
            Some(_) => card.check(ctx.kind, self.billing_now(ctx.test_clock_id).await?).err(),
            None => None,
        };
        let outcome = if over_limit {
            Settled::Declined { code: "over_authorized_limit".into(), soft: false, network: None }
        } else if let Some(refusal) = refusal {
            tracing::info!(transaction = %ctx.id, rule = refusal.rule(), "attempt refused by the retry governor");
            Settled::Refused { rule: refusal.rule() }
        } else {
            let Some(payment_method) = ctx.payment_method.clone() else {
                return Err(JobError::Permanent(format!("transaction {} has no payment method", ctx.id)));
            };
            let req = ChargeRequest {
                idempotency_key: ctx.idempotency_key.clone(),
                merchant_key: ctx.merchant_key,
                amount: ctx.amount,
                currency: ctx.currency.clone(),
                customer_account_id: ctx.customer_account_id.clone(),
                payment_method,
                scope: ctx.scope(),
                sequence: ctx.cycle_sequence,
            };
            let started = Instant::now();
            let result = self.gateway.charge(req).await;
            let outcome_label = match &result {
                Ok(ChargeOutcome::Approved { .. }) => "approved",
                Ok(ChargeOutcome::Declined { .. }) => "declined",
                Err(_) => "error",
            };
            metrics::histogram!("recur_gateway_duration_seconds", "outcome" => outcome_label)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(ChargeOutcome::Approved { reference }) => Settled::Approved { reference },
                Ok(ChargeOutcome::Declined { code, network }) => Settled::network_declined(code, network),
                Err(GatewayError::CircuitOpen(wait)) => return Err(JobError::Deferred(wait)),
                Err(e) => {
                    metrics::counter!("recur_gateway_errors_total", "kind" => ctx.kind.as_str()).increment(1);
                    return Err(JobError::Transient(anyhow::Error::new(e).context("gateway")));
                }
            }
        };
        // The subscription's billing time: retries are scheduled on its clock.
        let now = self.billing_now(ctx.test_clock_id).await?;
        let label = outcome.outcome_label();
        let decline_code = match &outcome {
            Settled::Declined { code, .. } => Some(code.clone()),
            Settled::Approved { .. } | Settled::Refused { .. } => None,
        };
        let blocked = match &outcome {
            Settled::Refused { rule } => Some(*rule),
            _ => None,
        };
        let recorded = self.recorder.submit(Settlement { ctx: ctx.clone(), outcome, at: now }).await?;
        if recorded {
            let currency = ctx.currency.clone();
            metrics::counter!("recur_charges_total", "outcome" => label, "kind" => ctx.kind.as_str(), "currency" => currency.clone())
                .increment(1);
            // A monotonically increasing gauge: metrics' counters are integers, money is not.
            let amount: f64 = ctx.amount.try_into().unwrap_or(0.0);
            metrics::gauge!("recur_charge_amount_total", "outcome" => label, "currency" => currency).increment(amount);
            if let Some(code) = decline_code {
                metrics::counter!("recur_declines_total", "code" => code).increment(1);
            }
            if let Some(rule) = blocked {
                metrics::counter!(crate::billing::governor::METRIC, "rule" => rule).increment(1);
            }
            if ctx.kind == TransactionKind::Scheduled
                && let Some(due) = ctx.due_at
            {
                let lag = (now - due).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!("recur_due_lag_seconds").record(lag);
            }
        }
        Ok(())
    }

    async fn dead_letter(&self, job: Job, attempts: u32, error: &str) -> anyhow::Result<()> {
        dlq::put(&self.queue, &DeadLetter::new(job.clone(), attempts, error)).await.context("put the dead letter")?;
        match &job {
            Job::ChargeTransaction(j) => charge::mark_error(&self.pool, j.transaction_id, error).await,
            Job::RetryCharge(j) => charge::mark_cycle_dead(&self.pool, j.billing_cycle_id, error).await,
            Job::DeliverWebhook(j) => Ok(crate::webhooks::send::mark_dead(&self.pool, j.delivery_id).await?),
            Job::GenerateCycle(_) | Job::TrialEnd(_) | Job::Resume(_) => {
                let (_, sub) = job.object();
                let mut tx = self.pool.begin().await?;
                if let Some(m) = lease::hold_subscription(&mut tx, sub).await? {
                    events::record_one(
                        &mut tx,
                        NewEvent::new(
                            m,
                            "subscription",
                            sub,
                            "dead_lettered",
                            json!({"queue": job.queue().name(), "error": error}),
                            Actor::System,
                        ),
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }
        }
    }

    pub fn queues(&self) -> &'static [Queue] {
        &Queue::ALL
    }
}

/// A pending charge of a cycle that was cancelled first: never sent to the gateway.
async fn charge_abandoned(pool: &PgPool, ctx: &ChargeContext) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let mut evs = Vec::new();
    transaction_state::error(
        &mut tx,
        ctx.id,
        "the billing cycle was cancelled before the charge",
        "billing cycle cancelled before the charge",
        &mut evs,
    )
    .await?;
    events::record(&mut tx, &evs).await?;
    tx.commit().await?;
    Ok(())
}

/// Why a job did not finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// It can never succeed as it is: dead-lettered at once, with this reason.
    #[error("{0}")]
    Permanent(String),
    /// It may succeed later: retried with backoff, then dead-lettered.
    #[error(transparent)]
    Transient(#[from] anyhow::Error),
    /// Nothing was tried (the gateway's circuit is open): back in the queue after this
    /// long with the same attempt count, so a gateway outage never fails a charge.
    #[error("deferred for {0:?}: the gateway's circuit is open")]
    Deferred(Duration),
}

impl JobError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, JobError::Permanent(_))
    }
}

impl From<crate::Error> for JobError {
    fn from(e: crate::Error) -> JobError {
        JobError::Transient(e.into())
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> JobError {
        JobError::Transient(e.into())
    }
}

/// How often an idle worker asks Redis for work (apalis-redis otherwise waits for its
/// 30 s heartbeat); one cheap script call per queue per tick.
pub fn poll_interval() -> Duration {
    Duration::from_millis(50)
}
