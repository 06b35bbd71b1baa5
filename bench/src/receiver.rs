//! The `webhooks` scenario's receiver: an HTTP server on loopback that checks every
//! message's signature (recomputed with the endpoint's secret) and counts them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

#[derive(Default)]
pub struct Counts {
    pub secret: OnceLock<String>,
    pub verified: AtomicU64,
    pub refused: AtomicU64,
}

pub struct Receiver {
    pub url: String,
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let app = axum::Router::new().fallback(receive).with_state(counts.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url, counts, task })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let ok = c.secret.get().is_some_and(|secret| {
        let ts: i64 = h("webhook-timestamp").parse().unwrap_or(0);
        let want = recur::webhooks::signing::sign(secret, h("webhook-id"), ts, &body);
        want.is_some_and(|w| h("webhook-signature").split(' ').any(|s| s == w))
    });
    let n = if ok { &c.verified } else { &c.refused };
    n.fetch_add(1, Ordering::Relaxed);
    if ok { StatusCode::NO_CONTENT } else { StatusCode::UNAUTHORIZED }
}
