//! `recur webhooks …`: endpoints, deliveries and replays for operators, over the
//! code the API uses. Operators also see the start of each receiver's last answer,
//! which the merchant API does not repeat.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use uuid::Uuid;

use crate::events::Actor;
use crate::runtime::Runtime;
use crate::webhooks::deliveries::{self, DeliveryFilter};
use crate::webhooks::{DeliveryStatus, endpoints};

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Every merchant's endpoints.
    Endpoints {
        #[arg(long)]
        json: bool,
    },
    /// An endpoint's deliveries, oldest first.
    Deliveries {
        endpoint: Uuid,
        /// pending, succeeded or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Send again every event of a window the endpoint subscribes to.
    Replay {
        endpoint: Uuid,
        /// RFC 3339 instant, or a duration back from now (e.g. 2h, 3d).
        #[arg(long)]
        since: String,
        /// RFC 3339 instant (default: now).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
    },
}

fn instant(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let back = humantime::parse_duration(text)
        .map_err(|_| anyhow::anyhow!("--since must be an RFC 3339 instant or a duration such as 2h"))?;
    Ok(Utc::now() - chrono::TimeDelta::from_std(back)?)
}

pub async fn run(rt: &Runtime, cmd: WebhooksCommand) -> anyhow::Result<()> {
    let mut conn = rt.pool.acquire().await?;
    match cmd {
        WebhooksCommand::Endpoints { json } => {
            let all = endpoints::list_all(&mut conn).await?;
            if json {
                let views: Vec<_> = all
                    .iter()
                    .map(|e| serde_json::json!({"merchantId": e.merchant_id, "endpoint": e.view()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<36}  {:<8}  {:<20}  {:<30}  URL",
                "ID", "MERCHANT", "STATUS", "FAILING SINCE", "TYPES"
            );
            for e in &all {
                let since = e.failing_since.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default();
                let status = serde_json::to_value(e.status)?.as_str().unwrap_or_default().to_owned();
                println!(
                    "{:<36}  {:<36}  {:<8}  {:<20}  {:<30}  {}",
                    e.id,
                    e.merchant_id,
                    status,
                    since,
                    e.event_types.join(","),
                    e.url
                );
            }
            if all.is_empty() {
                println!("(no webhook endpoints)");
            }
        }
        WebhooksCommand::Deliveries { endpoint, status, limit, json } => {
            let status = status
                .map(|s| serde_json::from_value::<DeliveryStatus>(serde_json::Value::String(s)))
                .transpose()
                .map_err(|_| anyhow::anyhow!("--status is pending, succeeded or failed"))?;
            let merchant = endpoints::merchant_of(&mut conn, endpoint).await?;
            let f = DeliveryFilter { status, kind: None, after: None, limit: limit.clamp(1, 10_000) };
            let rows = deliveries::list(&mut conn, merchant, endpoint, &f).await?;
            if json {
                let views: Vec<_> = rows
                    .iter()
                    .map(|d| serde_json::json!({"delivery": crate::webhooks::DeliveryView::from(d), "lastResponse": d.last_response}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
                return Ok(());
            }
            println!(
                "{:<36}  {:<28}  {:<9}  {:>8}  {:>6}  LAST ERROR / ANSWER",
                "ID", "TYPE", "STATUS", "ATTEMPTS", "CODE"
            );
            for d in &rows {
                let status = serde_json::to_value(d.status)?.as_str().unwrap_or_default().to_owned();
                let code = d.last_status_code.map(|c| c.to_string()).unwrap_or_default();
                let said: String =
                    d.last_error.clone().or(d.last_response.clone()).unwrap_or_default().chars().take(60).collect();
                println!(
                    "{:<36}  {:<28}  {:<9}  {:>8}  {:>6}  {}",
                    d.id,
                    d.kind,
                    status,
                    d.attempts,
                    code,
                    said.replace('\n', " ")
                );
            }
            if rows.is_empty() {
                println!("(no deliveries)");
            }
        }
        WebhooksCommand::Replay { endpoint, since, until } => {
            let since = instant(&since)?;
            let until = until.unwrap_or_else(Utc::now);
            anyhow::ensure!(since < until, "--since must be before --until");
            let merchant = endpoints::merchant_of(&mut conn, endpoint).await?;
            let mut tx = rt.pool.begin().await?;
            let n = deliveries::replay(&mut tx, merchant, endpoint, since, until, Actor::Operator).await?;
            tx.commit().await?;
            println!("{n} events queued to be sent again to {endpoint}");
        }
    }
    Ok(())
}
