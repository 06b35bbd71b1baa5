//! The http scenarios' far end: `recur acquirer` as a process of its own over loopback,
//! with a throwaway database (docs/gateway-protocol.md#the-simulator).

use sqlx::Connection;
use uuid::Uuid;

use crate::procs::{self, Proc};

pub struct Acquirer {
    pub proc: Proc,
    url: String,
    secret: String,
    pg: String,
    db: String,
}

impl Acquirer {
    /// Start one with `latency_ms` added to every charge; it creates its database.
    pub async fn start(recur: &std::path::Path, pg: &str, latency_ms: u64) -> anyhow::Result<Acquirer> {
        let db = format!("recur_bench_acquirer_{}", Uuid::now_v7().simple());
        let port = procs::free_port();
        let secret = recur::webhooks::signing::new_secret();
        // Settings by environment: the secret stays out of the process list.
        let env = [
            ("RECUR_ACQUIRER_LISTEN", format!("127.0.0.1:{port}")),
            ("RECUR_ACQUIRER_DATABASE_URL", format!("{pg}/{db}")),
            ("RECUR_ACQUIRER_SECRET", secret.clone()),
            ("RECUR_ACQUIRER_LATENCY_MS", latency_ms.to_string()),
            ("RECUR_LOG", std::env::var("RECUR_LOG").unwrap_or_else(|_| "warn".into())),
        ];
        let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let proc = procs::spawn_on(recur, "acquirer", &env, port, "/healthz")?;
        let acquirer = Acquirer { proc, url: format!("http://127.0.0.1:{port}"), secret, pg: pg.to_owned(), db };
        acquirer.proc.ready().await?;
        Ok(acquirer)
    }

    /// The settings of recur's processes for the `http` gateway against this acquirer,
    /// at most `in_flight` calls at once per process, over h2c if `h2c`.
    pub fn gateway_env(&self, in_flight: usize, h2c: bool) -> Vec<(String, String)> {
        [
            ("RECUR_GATEWAY", "http".to_owned()),
            ("RECUR_GATEWAY_URL", self.url.clone()),
            ("RECUR_GATEWAY_SECRET", self.secret.clone()),
            ("RECUR_GATEWAY_MAX_IN_FLIGHT", in_flight.to_string()),
            ("RECUR_GATEWAY_H2C", if h2c { "true" } else { "false" }.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A scrape of /metrics: TCP connections accepted so far (this scrape's own
    /// included) and the mean duration of answered charges (s).
    pub async fn scrape(&self) -> (u64, f64) {
        let text = self.proc.metrics().await;
        let value = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let connections = value("acquirer_connections_accepted_total ") as u64;
        let sum = value(r#"acquirer_request_duration_seconds_sum{route="/v1/charges",status="200"}"#);
        let count = value(r#"acquirer_request_duration_seconds_count{route="/v1/charges",status="200"}"#);
        (connections, if count > 0.0 { sum / count } else { 0.0 })
    }

    pub async fn stop(mut self) {
        self.proc.stop();
        if let Ok(mut c) = sqlx::PgConnection::connect(&format!("{}/postgres", self.pg)).await {
            let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db);
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut c).await;
        }
    }
}
