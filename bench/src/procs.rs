//! Child `recur` processes of a benchmark run, with their resource use from /proc.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Proc {
    pub role: String,
    pub child: Child,
    /// Where its /metrics and its readiness path are served.
    pub metrics_port: u16,
    ready_path: &'static str,
}

/// The machine's CPU time so far (seconds, all cores): busy, idle. Differences of two
/// readings say where a run's time went, whichever process spent it (Postgres and Redis
/// included).
pub fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0.0) / 100.0;
    // user nice system idle iowait irq softirq steal
    (at(0) + at(1) + at(2) + at(5) + at(6) + at(7), at(3) + at(4))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(19464)
}

/// A worker or the scheduler, its metrics on a port of its own.
pub fn spawn(recur: &std::path::Path, role: &str, env: &[(String, String)]) -> anyhow::Result<Proc> {
    let port = free_port();
    let mut env = env.to_vec();
    env.push(("RECUR_METRICS_LISTEN".into(), format!("127.0.0.1:{port}")));
    env.push(("RECUR_NO_MIGRATE".into(), "true".into()));
    spawn_on(recur, role, &env, port, "/readyz")
}

/// A `recur` role serving /metrics and `ready_path` on `port` (its settings in `env`).
pub fn spawn_on(
    recur: &std::path::Path,
    role: &str,
    env: &[(String, String)],
    port: u16,
    ready_path: &'static str,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(recur);
    cmd.arg(role).envs(env.iter().cloned()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
    Ok(Proc { role: role.to_owned(), child: cmd.spawn()?, metrics_port: port, ready_path })
}

impl Proc {
    /// Wait until the process answers its readiness path with 200.
    pub async fn ready(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = s.write_all(format!("GET {} HTTP/1.0\r\n\r\n", self.ready_path).as_bytes()).await;
                let mut buf = vec![0u8; 64];
                if let Ok(n) = s.read(&mut buf).await
                    && String::from_utf8_lossy(&buf[..n]).contains(" 200 ")
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{} did not become ready", self.role)
    }

    /// Peak resident set (MB) and CPU seconds used so far.
    pub fn usage(&self) -> (f64, f64) {
        let pid = self.child.id();
        let hwm_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
            .unwrap_or(0.0);
        let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = s.rsplit_once(')').map(|(_, r)| r.to_owned())?;
                let f: Vec<&str> = after.split_whitespace().collect();
                Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
            })
            .unwrap_or(0.0);
        (hwm_kb / 1024.0, ticks / 100.0)
    }

    /// A sample of this process's /metrics text.
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).await else {
            return String::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
