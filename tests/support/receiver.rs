//! A webhook receiver for tests: a real HTTP server on loopback that logs every
//! request it gets (headers, body, when) and answers as the test tells it, call by
//! call. Signatures are checked with the `standardwebhooks` crate, not recur's code.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// How to answer call `n` (0-based).
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// A status with extra headers (e.g. `Retry-After`, `Location`).
    With(u16, Vec<(&'static str, String)>),
    /// Answer 200 only after this long (past recur's timeout: a hang).
    Hang(Duration),
}

pub type Behaviour = Arc<dyn Fn(usize) -> Answer + Send + Sync>;

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a webhook body is JSON")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Verified by the reference implementation under `secret`.
    pub fn verifies(&self, secret: &str) -> bool {
        standardwebhooks::Webhook::new(secret).unwrap().verify(&self.body, &self.headers).is_ok()
    }
}

#[derive(Clone)]
struct Shared {
    log: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

pub struct Receiver {
    pub url: String,
    pub port: u16,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Always 204.
    pub async fn ok() -> Receiver {
        Receiver::start(Arc::new(|_| Answer::Status(204))).await
    }

    pub async fn start(behaviour: Behaviour) -> Receiver {
        Receiver::on(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), behaviour)
    }

    /// Serve on a listener the test bound (e.g. a port reused after downtime).
    pub fn on(listener: tokio::net::TcpListener, behaviour: Behaviour) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let shared = Shared { log: Arc::default(), behaviour: Arc::new(Mutex::new(behaviour)) };
        let app = axum::Router::new().fallback(receive).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url: format!("http://127.0.0.1:{port}/hooks"), port, shared, task }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.shared.log.lock().unwrap().len()
    }

    /// Stop listening (connections are refused until a new receiver binds the port).
    pub fn stop(self) -> Vec<Received> {
        self.task.abort();
        self.received()
    }
}

async fn receive(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let n = {
        let mut log = s.log.lock().unwrap();
        log.push(Received { at: Instant::now(), headers, body });
        log.len() - 1
    };
    let answer = (s.behaviour.lock().unwrap())(n);
    match answer {
        Answer::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Answer::With(code, headers) => {
            let mut res = StatusCode::from_u16(code).unwrap().into_response();
            for (k, v) in headers {
                res.headers_mut().insert(k, v.parse().unwrap());
            }
            res
        }
        Answer::Hang(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK.into_response()
        }
    }
}
