//! The composition root: what every role starts from (Postgres migrated, Redis, the
//! clock, the gateway), the engine, scheduler and API app built from them, the
//! servers of each role and their shutdown. `cli` parses arguments and calls in here;
//! `demo` and `ops` use the `Runtime` this module starts.

mod args;
mod roles;
mod signals;

use std::sync::Arc;

pub use args::{AllArgs, ApiArgs, EngineArgs, MetricsArgs, SchedulerArgs, SchedulerCommandArgs, WorkerArgs};
pub use roles::{all, api, scheduler, serve_api, worker};
pub use signals::{Signal, Signals};

use crate::app::App;
use crate::clock::Clock;
use crate::config::{HttpGatewaySettings, Settings};
use crate::gateway::{Gateway, http::HttpGateway, registry::Gateways, sandbox::Sandbox};
use crate::queue::Enqueuer;
use crate::secrets::SecretKey;

/// What every role needs: Postgres (migrated), Redis, the clock and the gateways.
pub struct Runtime {
    pub settings: Settings,
    pub pool: sqlx::PgPool,
    pub clock: Clock,
    /// Each merchant's gateway, the process default for those that chose none.
    pub gateway: Arc<Gateways>,
    pub secret_key: Option<Arc<SecretKey>>,
    pub queue: Enqueuer,
    /// The API's rate limits, shared by every `App` of this runtime.
    pub limits: Arc<crate::api::limits::Limits>,
}

impl Runtime {
    pub async fn start(settings: &Settings) -> anyhow::Result<Runtime> {
        let pool = crate::db::connect(&settings.database_url, settings.db_pool).await?;
        if !settings.no_migrate {
            crate::db::migrate(&pool).await?;
        }
        let queue = Enqueuer::connect(&settings.redis_url, &settings.redis_namespace).await?;
        let clock = Clock::new(settings.clock, &pool).await?;
        crate::paylinks::set_public_url(&settings.public_url);
        let secret_key = match &settings.secret_key {
            Some(k) => Some(Arc::new(SecretKey::parse(k.expose())?)),
            None => None,
        };
        let sandbox: Arc<dyn Gateway> =
            Arc::new(Sandbox::new(pool.clone(), std::time::Duration::from_millis(settings.sandbox_latency_ms)));
        let default: Arc<dyn Gateway> = match settings.gateway.as_str() {
            "sandbox" => sandbox.clone(),
            "http" => Arc::new(http_gateway(&settings.http_gateway)?),
            other => anyhow::bail!("RECUR_GATEWAY={other:?} is not available: use sandbox or http"),
        };
        let http = settings.http_gateway.options();
        let gateway = Arc::new(Gateways::new(pool.clone(), default, sandbox, http, secret_key.clone()));
        let limits = Arc::new(crate::api::limits::Limits::new(
            &settings.rate_limits,
            &settings.redis_url,
            &settings.redis_namespace,
        )?);
        Ok(Runtime { settings: settings.clone(), pool, clock, gateway, secret_key, queue, limits })
    }

    pub fn engine(&self, args: &EngineArgs) -> anyhow::Result<Arc<crate::worker::Engine>> {
        Ok(crate::worker::Engine::new(
            self.pool.clone(),
            self.clock.clone(),
            self.gateway.clone(),
            self.queue.clone(),
            args.overrides(),
            self.settings.lease_seconds,
            args.webhooks()?,
        ))
    }

    pub fn scheduler(&self, args: &SchedulerArgs) -> crate::scheduler::Scheduler {
        crate::scheduler::Scheduler {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            queue: self.queue.clone(),
            opts: crate::scheduler::SchedulerOptions {
                tick: std::time::Duration::from_millis(args.tick_ms.max(10)),
                batch: args.batch.max(1),
                high_water: args.high_water.max(1),
                lease_secs: self.settings.lease_seconds,
            },
            cursor: Default::default(),
        }
    }

    pub fn app(&self) -> App {
        App {
            pool: self.pool.clone(),
            clock: self.clock.clone(),
            gateway: self.gateway.clone(),
            secret_key: self.secret_key.clone(),
            queue: self.queue.clone(),
            admin_token: self.settings.admin_token.as_deref().map(Arc::from),
            lease_secs: self.settings.lease_seconds,
            public_url: Arc::from(self.settings.public_url.trim_end_matches('/')),
            limits: self.limits.clone(),
        }
    }
}

/// The `http` gateway from its settings; errors name the setting, never its value.
fn http_gateway(s: &HttpGatewaySettings) -> anyhow::Result<HttpGateway> {
    use anyhow::Context;
    let url = s.gateway_url.as_deref().context("RECUR_GATEWAY=http needs RECUR_GATEWAY_URL")?;
    let secret = s.gateway_secret.as_ref().context("RECUR_GATEWAY=http needs RECUR_GATEWAY_SECRET")?;
    HttpGateway::new(url, secret.expose(), s.options()).context("RECUR_GATEWAY_URL or RECUR_GATEWAY_SECRET is invalid")
}

/// An application error as an operator sees it. The problem text of internal errors
/// hides their cause from API clients; a command's user gets the cause chain instead.
/// (Client errors keep their problem text, plus the fields at fault.)
pub fn operator_error(e: crate::Error) -> anyhow::Error {
    use crate::Error;
    match e {
        Error::Internal(e) => e,
        // Kept as an error value, so `{:#}` prints its cause chain.
        e @ (Error::Database(_) | Error::Redis(_) | Error::Queue(_)) => anyhow::Error::new(e),
        e => {
            let problem = e.problem();
            if problem.errors.is_empty() {
                anyhow::anyhow!("{}", problem.detail)
            } else {
                let fields: Vec<String> =
                    problem.errors.iter().map(|f| format!("{}: {}", f.field, f.message)).collect();
                anyhow::anyhow!("{} ({})", problem.detail, fields.join("; "))
            }
        }
    }
}
