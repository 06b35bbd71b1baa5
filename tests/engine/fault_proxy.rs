//! The fault proxy of the http gateway's fault run (tests/support/fault_proxy.rs)
//! against a line server on loopback: each fault does what it says, and is counted.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::eventually;
use crate::support::fault_proxy::{Counts, FaultProxy, Faults};

/// Answers `pong\n` to every line; keeps what each connection sent.
struct LineServer {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn line_server() -> LineServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = received.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let i = {
                    let mut all = r.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    r.lock().unwrap()[i].extend_from_slice(&buf[..n]);
                    for _ in buf[..n].iter().filter(|b| **b == b'\n') {
                        if conn.write_all(b"pong\n").await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    LineServer { addr, received, task }
}

impl LineServer {
    fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }
}

/// One `ping` on `conn`: the answer, or how reading it failed.
async fn ping(conn: &mut TcpStream) -> std::io::Result<String> {
    conn.write_all(b"ping\n").await?;
    let mut buf = [0u8; 16];
    let n = conn.read(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn without_faults_it_relays_and_latency_delays_every_chunk() {
    let server = line_server().await;
    let proxy = FaultProxy::start(server.addr).await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(ping(&mut conn).await.unwrap(), "pong\n");

    proxy.set_faults(Faults { latency: Duration::from_millis(100), ..Faults::default() });
    let started = Instant::now();
    // The connection opened before the fault was switched on is delayed too.
    assert_eq!(ping(&mut conn).await.unwrap(), "pong\n");
    assert!(started.elapsed() >= Duration::from_millis(200), "request and answer: {:?}", started.elapsed());
    assert_eq!(proxy.counts(), Counts { connections: 1, requests: 2, delayed_chunks: 2, ..Counts::default() });
    assert_eq!(server.received(), ["ping\nping\n"]);
}

#[tokio::test]
async fn resets_cut_a_request_part_way_then_an_answer() {
    let server = line_server().await;
    let proxy = FaultProxy::start(server.addr).await;
    proxy.set_faults(Faults { reset_rate: 1.0, ..Faults::default() });

    let mut first = TcpStream::connect(proxy.addr).await.unwrap();
    let e = ping(&mut first).await.expect_err("reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    let mut second = TcpStream::connect(proxy.addr).await.unwrap();
    let e = ping(&mut second).await.expect_err("reset");
    assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");

    let c = proxy.counts();
    assert_eq!((c.resets_mid_request, c.resets_mid_answer, c.requests), (1, 1, 2));
    // The first request reached the server in part, the second whole (and was answered).
    eventually("the server to have read both", Duration::from_secs(5), async || {
        let r = server.received();
        if r == ["pi", "ping\n"] { Ok(()) } else { Err(format!("{r:?}")) }
    })
    .await;
}

#[tokio::test]
async fn a_black_hole_reads_and_never_answers_nor_closes() {
    let server = line_server().await;
    let proxy = FaultProxy::start(server.addr).await;
    proxy.set_faults(Faults { black_hole_rate: 1.0, ..Faults::default() });
    let mut held = TcpStream::connect(proxy.addr).await.unwrap();
    held.write_all(b"ping\n").await.unwrap();
    let mut buf = [0u8; 16];
    let waited = tokio::time::timeout(Duration::from_millis(300), held.read(&mut buf)).await;
    assert!(waited.is_err(), "neither an answer nor a close: {waited:?}");
    assert_eq!(proxy.counts().black_holed, 1);

    proxy.set_faults(Faults::default());
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(ping(&mut conn).await.unwrap(), "pong\n");
    // The swallowed request never went upstream.
    assert_eq!(server.received().concat(), "ping\n");
    // Still held after the mode is off: only the client ends it.
    let waited = tokio::time::timeout(Duration::from_millis(100), held.read(&mut buf)).await;
    assert!(waited.is_err(), "{waited:?}");
}

#[tokio::test]
async fn a_rate_is_exact_over_a_run_of_requests() {
    let server = line_server().await;
    let proxy = FaultProxy::start(server.addr).await;
    proxy.set_faults(Faults { reset_rate: 0.25, ..Faults::default() });
    let mut answered = 0;
    for _ in 0..8 {
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        if ping(&mut conn).await.is_ok_and(|a| a == "pong\n") {
            answered += 1;
        }
    }
    assert_eq!((answered, proxy.counts().resets()), (6, 2));
}

#[tokio::test]
async fn a_dead_upstream_resets_and_the_upstream_can_change() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = FaultProxy::start(dead).await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    let e = ping(&mut conn).await.expect_err("nothing behind the proxy");
    assert!(matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe), "{e}");
    assert_eq!(proxy.counts().refused, 1);

    let server = line_server().await;
    proxy.set_upstream(server.addr);
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(ping(&mut conn).await.unwrap(), "pong\n");
}
