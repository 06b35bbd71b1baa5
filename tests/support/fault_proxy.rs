//! A TCP proxy that does to connections what a bad network does, for the fault run
//! of the http gateway (docs/gateway-protocol.md#the-fault-run): it sits between recur
//! and the acquirer and, switchable while a run goes on, delays every chunk, resets
//! requests part way, or swallows them (a black hole: read, never answered, never
//! closed). An acquirer that is down is simply its process killed behind the proxy.
//! It counts what it did, so a test can assert that each fault happened.
//!
//! Faults are drawn per request, not per connection: recur keeps connections alive,
//! so a fault switched on mid-run must reach the connections already open. A request
//! starts with the first bytes from the client after the last answer bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does to the requests that pass; all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Every chunk, either way, waits this long before it is passed on.
    pub latency: Duration,
    /// Share of requests reset with RST: alternately after half of the request's
    /// first chunk went upstream (the acquirer never has it whole), and after the
    /// whole request went upstream, when its answer comes (the answer is lost).
    pub reset_rate: f64,
    /// Share of requests swallowed: not sent upstream, never answered, the client's
    /// connection held open until the client gives up (its timeout).
    pub black_hole_rate: f64,
}

/// What the proxy did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: u64,
    pub requests: u64,
    /// Connections accepted while the upstream refused (the acquirer down): reset.
    pub refused: u64,
    pub delayed_chunks: u64,
    pub resets_mid_request: u64,
    pub resets_mid_answer: u64,
    pub black_holed: u64,
}

impl Counts {
    pub fn resets(&self) -> u64 {
        self.resets_mid_request + self.resets_mid_answer
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    refused: AtomicU64,
    delayed_chunks: AtomicU64,
    resets_mid_request: AtomicU64,
    resets_mid_answer: AtomicU64,
    black_holed: AtomicU64,
    reset_draws: AtomicU64,
    black_hole_draws: AtomicU64,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    faults: Mutex<Faults>,
    counters: Counters,
}

/// A running proxy on 127.0.0.1; stops, and drops every connection, when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The connections live in the accept task's JoinSet: aborted with it.
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the proxy binds");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            faults: Mutex::new(Faults::default()),
            counters: Counters::default(),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        connections.spawn(serve(client, s.clone()));
                    }
                    // Reap finished connections so the set does not grow with the run.
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        FaultProxy { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// New connections go to `upstream` (open ones stay where they are).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *self.shared.upstream.lock().unwrap() = upstream;
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    pub fn faults(&self) -> Faults {
        *self.shared.faults.lock().unwrap()
    }

    pub fn counts(&self) -> Counts {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Counts {
            connections: get(&c.connections),
            requests: get(&c.requests),
            refused: get(&c.refused),
            delayed_chunks: get(&c.delayed_chunks),
            resets_mid_request: get(&c.resets_mid_request),
            resets_mid_answer: get(&c.resets_mid_answer),
            black_holed: get(&c.black_holed),
        }
    }
}

/// Draw number `seq` of a fault at `rate` hits when it takes the running count of hits
/// (floor of draws × rate) up by one: exactly the rate over any run of draws, a hit
/// at least every 1/rate draws, so a test that asserts the fault happened does not
/// depend on luck.
fn draw(seq: &AtomicU64, rate: f64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let n = seq.fetch_add(1, Ordering::SeqCst) as f64;
    ((n + 1.0) * rate).floor() > (n * rate).floor()
}

/// Close with RST rather than FIN: the peer's next read or write fails with a reset.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// What a request drew.
enum Fate {
    Pass,
    ResetMidRequest,
    ResetMidAnswer,
    BlackHole,
}

fn fate(shared: &Shared, faults: &Faults) -> Fate {
    let c = &shared.counters;
    if draw(&c.black_hole_draws, faults.black_hole_rate) {
        c.black_holed.fetch_add(1, Ordering::SeqCst);
        Fate::BlackHole
    } else if draw(&c.reset_draws, faults.reset_rate) {
        // Alternate the two kinds, so that both happen.
        if c.resets_mid_request.load(Ordering::SeqCst) <= c.resets_mid_answer.load(Ordering::SeqCst) {
            c.resets_mid_request.fetch_add(1, Ordering::SeqCst);
            Fate::ResetMidRequest
        } else {
            c.resets_mid_answer.fetch_add(1, Ordering::SeqCst);
            Fate::ResetMidAnswer
        }
    } else {
        Fate::Pass
    }
}

async fn delay(shared: &Shared) {
    let latency = shared.faults.lock().unwrap().latency;
    if !latency.is_zero() {
        shared.counters.delayed_chunks.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(latency).await;
    }
}

/// One client connection: relayed chunk by chunk (HTTP/1 takes turns, so one task and
/// one direction at a time suffice), with each request's fate drawn at its start.
async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    shared.counters.connections.fetch_add(1, Ordering::SeqCst);
    let upstream_addr = *shared.upstream.lock().unwrap();
    let mut upstream = match TcpStream::connect(upstream_addr).await {
        Ok(s) => s,
        Err(_) => {
            shared.counters.refused.fetch_add(1, Ordering::SeqCst);
            return reset(client);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let mut from_client = vec![0u8; 16 * 1024];
    let mut from_upstream = vec![0u8; 16 * 1024];
    let mut request_starts = true;
    let mut reset_on_answer = false;
    loop {
        let read = tokio::select! {
            r = client.read(&mut from_client) => Read::Client(r),
            r = upstream.read(&mut from_upstream) => Read::Upstream(r),
        };
        match read {
            Read::Client(Ok(0)) => return, // the client closed: FIN upstream
            Read::Client(Err(_)) => return reset(upstream),
            Read::Client(Ok(n)) => {
                if request_starts {
                    request_starts = false;
                    shared.counters.requests.fetch_add(1, Ordering::SeqCst);
                    let faults = *shared.faults.lock().unwrap();
                    match fate(&shared, &faults) {
                        Fate::Pass => {}
                        Fate::ResetMidRequest => {
                            let _ = upstream.write_all(&from_client[..n / 2]).await;
                            reset(upstream);
                            return reset(client);
                        }
                        Fate::ResetMidAnswer => reset_on_answer = true,
                        Fate::BlackHole => {
                            drop(upstream);
                            return hold(client).await;
                        }
                    }
                }
                delay(&shared).await;
                if upstream.write_all(&from_client[..n]).await.is_err() {
                    return reset(client);
                }
            }
            // The acquirer closed (or was killed): FIN to the client.
            Read::Upstream(Ok(0)) => return,
            Read::Upstream(Err(_)) => return reset(client),
            Read::Upstream(Ok(n)) => {
                if reset_on_answer {
                    reset(upstream);
                    return reset(client);
                }
                request_starts = true;
                delay(&shared).await;
                if client.write_all(&from_upstream[..n]).await.is_err() {
                    return reset(upstream);
                }
            }
        }
    }
}

enum Read {
    Client(std::io::Result<usize>),
    Upstream(std::io::Result<usize>),
}

/// The black hole: whatever the client sends is read and dropped, nothing is answered,
/// and the connection stays open until the client closes it.
async fn hold(mut client: TcpStream) {
    let mut sink = vec![0u8; 16 * 1024];
    while let Ok(n) = client.read(&mut sink).await {
        if n == 0 {
            return;
        }
    }
}
