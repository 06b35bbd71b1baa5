//! Injected faults (docs/gateway-protocol.md#faults): latency, 503s and held requests
//! that charge nothing, and lost responses, whose charge is committed and whose
//! connection is then cut before a byte of the answer is written.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::metrics::Counted;

/// The fault settings of a running simulator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    pub latency: Duration,
    pub jitter: Duration,
    pub error_rate: f64,
    pub timeout_rate: f64,
    pub lost_response_rate: f64,
    pub timeout_hold: Duration,
}

/// What happens to one charge request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// 503 without charging.
    Error,
    /// Held, then 504, without charging.
    Timeout,
    /// Charged, then the connection is cut.
    LostResponse,
}

impl Fault {
    pub fn kind(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Error => "error",
            Fault::Timeout => "timeout",
            Fault::LostResponse => "lost_response",
        }
    }

    pub const KINDS: [Fault; 3] = [Fault::Error, Fault::Timeout, Fault::LostResponse];
}

impl Faults {
    /// The delay before a charge is handled: the latency plus 0..=jitter.
    pub fn delay(&self) -> Duration {
        let jitter = self.jitter.as_millis() as u64;
        let extra = if jitter == 0 { 0 } else { rand::rng().random_range(0..=jitter) };
        self.latency + Duration::from_millis(extra)
    }

    /// One draw: each fault in turn with its probability.
    pub fn draw(&self) -> Fault {
        let mut rng = rand::rng();
        let mut hit = |rate: f64| rate > 0.0 && rng.random::<f64>() < rate;
        if hit(self.error_rate) {
            Fault::Error
        } else if hit(self.timeout_rate) {
            Fault::Timeout
        } else if hit(self.lost_response_rate) {
            Fault::LostResponse
        } else {
            Fault::None
        }
    }
}

/// A rate flag: a probability from 0 to 1.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{v} is not a probability from 0 to 1")) }
}

/// Cuts one connection: once pulled, its reads end and its writes fail, so hyper drops
/// the connection without writing what the handler returned.
#[derive(Debug, Clone, Default)]
pub struct Cutter(Arc<AtomicBool>);

impl Cutter {
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_cut(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A connection that can be cut from a handler (through [`Cutter`] as connect info).
pub struct CuttableStream {
    inner: TcpStream,
    cutter: Cutter,
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "connection cut by the lost-response fault")
}

impl AsyncRead for CuttableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cutter.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections can be cut.
pub struct CuttableListener(pub TcpListener);

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (inner, addr) = Listener::accept(&mut self.0).await;
        (CuttableStream { inner, cutter: Cutter::default() }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

// The simulator serves this listener with its connections counted.
impl Connected<IncomingStream<'_, Counted<CuttableListener>>> for Cutter {
    fn connect_info(stream: IncomingStream<'_, Counted<CuttableListener>>) -> Self {
        stream.io().cutter.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_probabilities() {
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert!(parse_rate("1.5").is_err() && parse_rate("-0.1").is_err() && parse_rate("x").is_err());
        assert!(parse_rate("NaN").is_err());
    }

    #[test]
    fn certain_faults_always_happen() {
        let none = Faults {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            error_rate: 0.0,
            timeout_rate: 0.0,
            lost_response_rate: 0.0,
            timeout_hold: Duration::ZERO,
        };
        assert_eq!(none.draw(), Fault::None);
        assert_eq!(Faults { lost_response_rate: 1.0, ..none }.draw(), Fault::LostResponse);
        assert_eq!(Faults { error_rate: 1.0, lost_response_rate: 1.0, ..none }.draw(), Fault::Error);
    }
}
