//! `recur` as a separate OS process: the binary under test run against a test's
//! database and namespace, as a command to completion or as a long-running role.

use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;

use super::TestApp;
use super::wait::try_eventually;

impl TestApp {
    /// Environment for a `recur` child process sharing this test's database and namespace.
    pub fn child_env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.settings.database_url.clone()),
            ("REDIS_URL".into(), self.settings.redis_url.clone()),
            ("RECUR_REDIS_NAMESPACE".into(), self.settings.redis_namespace.clone()),
            ("RECUR_CLOCK".into(), "manual".into()),
            ("RECUR_LEASE_SECONDS".into(), self.settings.lease_seconds.to_string()),
            ("RECUR_JOB_BACKOFF_INITIAL_MS".into(), "50".into()),
            ("RECUR_JOB_BACKOFF_MAX_MS".into(), "200".into()),
            ("RECUR_SCHEDULER_TICK_MS".into(), "50".into()),
            ("RECUR_METRICS_LISTEN".into(), "127.0.0.1:0".into()),
            ("RECUR_LOG".into(), std::env::var("RECUR_LOG").unwrap_or_else(|_| "warn".into())),
        ]
    }

    /// Start `recur <args>` as a separate OS process (killed when the handle drops).
    pub fn spawn_process(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Child {
        let env: Vec<(String, String)> = self.child_env();
        let mut all: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.extend_from_slice(extra_env);
        spawn_recur(args, &all)
    }
}

/// Start `recur <args>` as a separate OS process with `env` added to the test's own
/// (killed when the handle drops); its output is shown only under `TEST_LOG`.
pub fn spawn_recur(args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_recur"));
    cmd.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    if std::env::var("TEST_LOG").is_err() {
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    }
    Child(cmd.spawn().expect("recur binary starts"))
}

/// What a `recur` command run to completion printed, and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The stdout parsed as JSON (for `--json`); panics with the output otherwise.
    #[track_caller]
    pub fn json(&self) -> Value {
        assert!(self.status.success(), "command failed: {self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

impl TestApp {
    /// Run `recur <args>` against this test's database and namespace to completion
    /// (without blocking the test's runtime, which serves the API and engine).
    pub async fn run_cli(&self, args: &[&str]) -> CliOutput {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(args)
            .envs(self.child_env())
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("recur binary runs");
        CliOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, then drop).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A free TCP port on 127.0.0.1 below the kernel's ephemeral range, for a server that
/// is killed and must come back on the same port: while it is down, outgoing
/// connections (to it, too) take ephemeral ports, and one could take its port (even
/// connect to itself through it), so that the restart could not bind.
pub fn free_port_below_ephemeral() -> u16 {
    use rand::Rng;
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(10_000..low.max(10_001));
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port from 10000 to {low}");
}

/// A `recur` process started by a test; killed (SIGKILL) when dropped.
pub struct Child(pub std::process::Child);

impl Child {
    pub fn kill9(&mut self) {
        let _ = self.0.kill(); // SIGKILL on unix
        let _ = self.0.wait();
    }

    pub fn sigterm(&mut self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
    }

    /// Its exit status once it has exited, or `None` if it still runs after `timeout`.
    pub async fn exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        try_eventually(timeout, async || self.0.try_wait().ok().flatten()).await.ok()
    }

    /// [`Child::exit_within`] for callers outside async code; it waits on a runtime of
    /// its own, so it also works (blocking) from a test's runtime thread.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                rt.block_on(self.exit_within(timeout))
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
