//! The long-running roles. Each one starts unless a signal comes first (then it exits
//! at once: nothing to drain), runs until SIGTERM or SIGINT, then flips its stop
//! channel and waits for the drain.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{AllArgs, ApiArgs, Runtime, SchedulerCommandArgs, Signals, WorkerArgs};
use crate::app::App;
use crate::config::Settings;

/// `recur api`: the HTTP API only.
pub async fn api(settings: &Settings, args: &ApiArgs, signals: &Signals) -> anyhow::Result<()> {
    crate::telemetry::init_metrics();
    let Some(rt) = start(settings, signals).await? else {
        return Ok(());
    };
    let stop = signals.clone();
    serve_api(rt.app(), args.listen, async move {
        stop_requested(&stop).await;
    })
    .await
}

/// `recur worker`: the queues' workers, and the metrics listener.
pub async fn worker(settings: &Settings, args: &WorkerArgs, signals: &Signals) -> anyhow::Result<()> {
    crate::telemetry::init_metrics();
    let Some(rt) = start(settings, signals).await? else {
        return Ok(());
    };
    let opts = crate::worker::WorkerOptions {
        queues: args.queues()?,
        concurrency: args.concurrency,
        drain_timeout: args.engine.drain_timeout,
    };
    let (stop, stopped) = watch::channel(false);
    let metrics = tokio::spawn(crate::telemetry::serve(
        args.metrics.metrics_listen,
        rt.pool.clone(),
        rt.queue.connection(),
        stopped.clone(),
    ));
    let worker = tokio::spawn(crate::worker::run(rt.engine(&args.engine)?, opts, stopped));
    stop_requested(signals).await;
    let _ = stop.send(true);
    worker.await??;
    metrics.abort();
    Ok(())
}

/// `recur scheduler`: the sweeps, and the metrics listener.
pub async fn scheduler(settings: &Settings, args: &SchedulerCommandArgs, signals: &Signals) -> anyhow::Result<()> {
    crate::telemetry::init_metrics();
    crate::telemetry::register_scheduler_metrics();
    let Some(rt) = start(settings, signals).await? else {
        return Ok(());
    };
    let (stop, stopped) = watch::channel(false);
    let scheduler = rt.scheduler(&args.scheduler);
    let metrics = tokio::spawn(crate::telemetry::serve(
        args.metrics.metrics_listen,
        rt.pool.clone(),
        rt.queue.connection(),
        stopped.clone(),
    ));
    let task = tokio::spawn(async move { scheduler.run(stopped).await });
    stop_requested(signals).await;
    let _ = stop.send(true);
    task.await?;
    metrics.abort();
    Ok(())
}

/// `recur all`: API, scheduler and worker in one process. `on_listening` runs once all
/// three are started (the CLI's `--demo` announces itself there).
pub async fn all(
    settings: &Settings,
    args: &AllArgs,
    signals: &Signals,
    on_listening: impl AsyncFnOnce(&Runtime, SocketAddr) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    crate::telemetry::init_metrics();
    crate::telemetry::register_scheduler_metrics();
    let Some(rt) = start(settings, signals).await? else {
        return Ok(());
    };
    let listener =
        TcpListener::bind(args.api.listen).await.with_context(|| format!("cannot listen on {}", args.api.listen))?;
    let (stop, stopped) = watch::channel(false);
    let opts = crate::worker::WorkerOptions {
        queues: jobs::Queue::ALL.to_vec(),
        concurrency: None,
        drain_timeout: args.engine.drain_timeout,
    };
    let worker = tokio::spawn(crate::worker::run(rt.engine(&args.engine)?, opts, stopped.clone()));
    let scheduler = rt.scheduler(&args.scheduler);
    let sched_stop = stopped.clone();
    let sched = tokio::spawn(async move { scheduler.run(sched_stop).await });
    // A signal during the hook skips the rest of it; the roles above still drain.
    if let Some(done) = signals.unless_signalled(on_listening(&rt, listener.local_addr()?)).await {
        done?;
    }
    let mut api_stop = stopped.clone();
    let api = crate::api::serve(listener, rt.app()).with_graceful_shutdown(async move {
        let _ = api_stop.wait_for(|s| *s).await;
    });
    let api = tokio::spawn(async move { api.await });
    stop_requested(signals).await;
    let _ = stop.send(true);
    let _ = tokio::join!(api, sched);
    worker.await??;
    Ok(())
}

/// The runtime, unless a signal comes first (`None`: exit at once, nothing to drain).
async fn start(settings: &Settings, signals: &Signals) -> anyhow::Result<Option<Runtime>> {
    let started = signals.unless_signalled(Runtime::start(settings)).await.transpose()?;
    if started.is_none() {
        tracing::info!("shutdown signal received while starting");
    }
    Ok(started)
}

async fn stop_requested(signals: &Signals) {
    signals.received().await;
    tracing::info!("shutdown signal received");
}

/// Serve the API on `listen` until `shutdown` resolves, then finish the requests in flight.
pub async fn serve_api(
    app: App,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(%listen, "api listening");
    crate::api::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
