//! Request ids and the request span. Every request gets an id (the client's
//! `X-Request-Id` if it is sane, else a new UUID v7), every response echoes it in
//! `X-Request-Id` (problems, unknown routes, body-limit 413s and timeouts included),
//! and every log line of the request carries it through the `request` span, with the
//! method, the route template, the status and the latency.

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Response};
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{MakeSpan, OnResponse, TraceLayer};
use tracing::Span;
use tracing::field::Empty;

pub const HEADER: &str = "x-request-id";
/// Longest client id kept; a longer one is replaced.
pub const MAX_LEN: usize = 128;

/// Wrap every route (and the fallbacks) of `router`: layers added with `Router::layer`
/// run after routing, so the span knows the route template.
pub fn layer<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(RequestSpan)
                .on_request(())
                .on_response(Finished)
                .on_body_chunk(())
                .on_eos(())
                // 5xx are logged by `Finished` and, with their cause, by `Error`.
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(NewId))
        .layer(axum::middleware::map_request(drop_unsane_id))
}

/// The route template of a routed request (`unmatched` for the fallback): a bounded
/// label, never a raw id.
pub fn route<B>(req: &axum::http::Request<B>) -> &str {
    req.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("unmatched")
}

/// A client id fit for logs and headers: 1 to 128 printable ASCII characters.
pub fn is_sane(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_LEN && b.iter().all(|c| (b' '..=b'~').contains(c))
}

/// Remove a client id that is not sane (or sent more than once), so a new one is made.
async fn drop_unsane_id(mut req: Request) -> Request {
    let mut ids = req.headers().get_all(HEADER).iter();
    let keep = match (ids.next(), ids.next()) {
        (None, _) => true,
        (Some(id), None) => is_sane(id),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        req.headers_mut().remove(HEADER);
    }
    req
}

#[derive(Clone, Copy)]
struct NewId;

impl MakeRequestId for NewId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        // Time-ordered, so ids sort like the requests they name.
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()).ok().map(RequestId::new)
    }
}

#[derive(Clone, Copy)]
struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &axum::http::Request<B>) -> Span {
        let id = req.headers().get(HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
        tracing::info_span!(
            "request",
            request_id = id,
            method = req.method().as_str(),
            route = route(req),
            status = Empty,
            latency_ms = Empty,
        )
    }
}

#[derive(Clone, Copy)]
struct Finished;

impl<B> OnResponse<B> for Finished {
    fn on_response(self, res: &Response<B>, latency: Duration, span: &Span) {
        let status = res.status();
        span.record("status", status.as_u16());
        span.record("latency_ms", latency.as_secs_f64() * 1000.0);
        if status.is_server_error() {
            tracing::warn!("request finished");
        } else {
            tracing::debug!("request finished");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_short_printable_ascii() {
        assert!(is_sane(&HeaderValue::from_static("abc-123 ok")));
        assert!(is_sane(&HeaderValue::from_str(&"x".repeat(MAX_LEN)).unwrap()));
        assert!(!is_sane(&HeaderValue::from_str(&"x".repeat(MAX_LEN + 1)).unwrap()));
        assert!(!is_sane(&HeaderValue::from_static("")));
        assert!(!is_sane(&HeaderValue::from_str("tab\there").unwrap()));
        assert!(!is_sane(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()));
    }
}
