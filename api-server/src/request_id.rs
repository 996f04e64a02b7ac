//! Request ids: every request gets one (the client's `x-request-id` if it is sane, else a
//! fresh UUID), runs inside a tracing span carrying it, and every response carries it back.
//! Problem bodies and audit events read it through [`current`].

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled, if called inside one.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Middleware: assigns the id, opens the span, logs the outcome, sets the response header.
pub async fn middleware(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let is_probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics");
    let started = std::time::Instant::now();
    let mut response = CURRENT.scope(id.clone(), next.run(request)).instrument(span.clone()).await;
    span.in_scope(|| {
        let (status, elapsed_ms) = (response.status().as_u16(), started.elapsed().as_millis() as u64);
        // Probes and scrapes come every few seconds; keep them out of the info log.
        if is_probe {
            tracing::debug!(status, elapsed_ms, "handled");
        } else {
            tracing::info!(status, elapsed_ms, "handled");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}
