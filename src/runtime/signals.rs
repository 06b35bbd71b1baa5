//! SIGTERM and SIGINT as stop requests. `main` installs them before anything else,
//! so a signal at any instant (connecting, migrating, starting, running) is a request
//! the roles answer with a clean exit, never a kill by the default disposition.

use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Interrupt,
}

impl Signal {
    /// The exit status of a process killed by this signal (128 + its number), for
    /// one-shot commands, which stop where they are as they did without a handler.
    pub fn exit_code(self) -> u8 {
        match self {
            Signal::Terminate => 128 + 15,
            Signal::Interrupt => 128 + 2,
        }
    }
}

/// The first SIGTERM or SIGINT the process received, if any.
#[derive(Clone)]
pub struct Signals {
    first: watch::Receiver<Option<Signal>>,
}

impl Signals {
    /// Replace the default dispositions (a kill) by handlers, at once: the handlers are
    /// registered when this returns, the waiting happens in a task. Needs a runtime.
    pub fn install() -> Signals {
        let (tx, first) = watch::channel(None);
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate());
            let int = signal(SignalKind::interrupt());
            tokio::spawn(async move {
                let recv = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                    match s {
                        Ok(mut s) => {
                            s.recv().await;
                        }
                        // No handler: that signal keeps its default disposition.
                        Err(_) => std::future::pending::<()>().await,
                    }
                };
                let got = tokio::select! {
                    _ = recv(term) => Signal::Terminate,
                    _ = recv(int) => Signal::Interrupt,
                };
                let _ = tx.send(Some(got));
            });
        }
        #[cfg(not(unix))]
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = tx.send(Some(Signal::Interrupt));
            }
        });
        Signals { first }
    }

    /// A signal received so far.
    pub fn pending(&self) -> Option<Signal> {
        *self.first.borrow()
    }

    /// Resolves once a signal has been received (at once if one was already).
    pub async fn received(&self) -> Signal {
        let mut first = self.first.clone();
        if let Ok(got) = first.wait_for(Option::is_some).await
            && let Some(signal) = *got
        {
            return signal;
        }
        // The watching task is gone: no signal will ever be reported.
        std::future::pending().await
    }

    /// Run `work` unless a signal comes first (then `None`, `work` dropped where it
    /// stands: nothing has started that needs draining).
    pub async fn unless_signalled<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.received() => None,
            done = work => Some(done),
        }
    }
}
