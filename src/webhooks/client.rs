//! The outbound HTTP client of webhooks (docs/webhooks.md#delivery): pooled
//! connections, 15 s per attempt, redirects not followed, `User-Agent: recur/<version>`,
//! and no request to a private address unless `RECUR_WEBHOOK_ALLOW_PRIVATE=1`
//! (`--webhook-allow-private`).
//!
//! The address check runs on what the name resolved to, in the resolver the
//! connection uses, so a name that resolves to a public address when the endpoint is
//! saved and to 127.0.0.1 or 169.254.169.254 at delivery time (DNS rebinding) is refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};

/// How long a receiver has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);
/// How much of a receiver's answer is kept.
pub const KEEP_BYTES: usize = 1024;

/// An address a webhook must not reach: loopback, private, link-local (cloud
/// metadata), carrier-grade NAT, unspecified, multicast and the like.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            let first = seg[0];
            // Addresses that carry an IPv4 address a gateway would reach: IPv4-compatible
            // (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002::/16). Judge the IPv4 one.
            let embedded = if seg[..6] == [0; 6] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                Some(std::net::Ipv4Addr::new((seg[6] >> 8) as u8, seg[6] as u8, (seg[7] >> 8) as u8, seg[7] as u8))
            } else if first == 0x2002 {
                Some(std::net::Ipv4Addr::new((seg[1] >> 8) as u8, seg[1] as u8, (seg[2] >> 8) as u8, seg[2] as u8))
            } else {
                None
            };
            if let Some(v4) = embedded {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The resolver's refusal, found again in the error chain to name the failure.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to private addresses")]
pub struct Refused(String);

struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = addrs.into_iter().filter(|a| allow_private || !is_private(a.ip())).collect();
            if usable.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(usable.into_iter()) as Addrs)
        })
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The receiver's status, when it answered.
    pub status: Option<u16>,
    /// Our description of a failure (never the receiver's words).
    pub error: Option<String>,
    pub retry_after: Option<Duration>,
    /// The start of the receiver's body (at most `KEEP_BYTES`), for operators.
    pub body: Option<String>,
    pub took: Duration,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    allow_private: bool,
}

impl Client {
    pub fn new(allow_private: bool) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("recur/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would dial the target itself, past the resolver check.
            .no_proxy()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            // Keep a connection for every delivery that may be in flight to one host
            // (first attempts sent inline plus the queue's jobs): with fewer, a surge
            // to one endpoint closes and reopens connections on every message.
            .pool_max_idle_per_host(2 * jobs::Queue::DeliverWebhook.policy().concurrency)
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .build()?;
        Ok(Client { http, allow_private })
    }

    /// POST one signed message.
    pub async fn post(&self, url: &str, headers: HeaderMap, body: Vec<u8>) -> Answer {
        let start = Instant::now();
        let failed = |error: String| Answer {
            status: None,
            error: Some(error),
            retry_after: None,
            body: None,
            took: start.elapsed(),
        };
        let Ok(parsed) = reqwest::Url::parse(url) else { return failed("the URL does not parse".into()) };
        // An IP literal never reaches the resolver: check it here.
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.allow_private && is_private(*ip)) {
            return failed(format!("{ip} is a private address"));
        }
        let sent = self
            .http
            .post(parsed)
            .headers(headers)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await;
        let mut res = match sent {
            Ok(res) => res,
            Err(e) => return failed(describe(&e)),
        };
        let status = res.status();
        let retry_after = res.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let mut kept = Vec::new();
        while kept.len() < KEEP_BYTES {
            match res.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk[..chunk.len().min(KEEP_BYTES - kept.len())]),
                _ => break,
            }
        }
        let error = (!status.is_success()).then(|| {
            let reason = status.canonical_reason().unwrap_or("");
            if status.is_redirection() {
                format!("HTTP {} {reason} (redirects are not followed)", status.as_u16())
            } else {
                format!("HTTP {} {reason}", status.as_u16()).trim_end().to_owned()
            }
        });
        Answer {
            status: Some(status.as_u16()),
            error,
            retry_after,
            body: (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned()),
            took: start.elapsed(),
        }
    }
}

/// Our words for a transport failure.
fn describe(e: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return r.to_string();
        }
        source = s.source();
    }
    if e.is_timeout() {
        format!("no answer within {} s", TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "the connection failed before an answer".into()
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().ok().or(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_refused_public_ones_are_not() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "64:ff9b::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "::1",
            "::",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in
            ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "172.32.0.1", "64:ff9b::808:808", "2002:808:808::1"]
        {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
