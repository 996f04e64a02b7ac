//! The operational HTTP surface: liveness, readiness and metrics. It must stay cheap and
//! dependency-free so that probes keep answering while the binary is busy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Shared state behind the ops endpoints.
#[derive(Clone)]
pub struct OpsState {
    ready: Arc<AtomicBool>,
    registry: Arc<Registry>,
}

impl OpsState {
    pub fn new(registry: Registry) -> Self {
        Self { ready: Arc::new(AtomicBool::new(false)), registry: Arc::new(registry) }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

/// `/healthz`, `/readyz` and `/metrics`, to be merged into a binary's own router or served alone.
pub fn ops_router(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    if state.is_ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = String::new();
    match encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The address ops endpoints listen on by default: the Pod's own IP (`POD_IP`, set by the
/// Kubernetes downward API or the local pod runner) so that several Pods on one host never
/// collide, else loopback.
pub fn default_ops_addr(port: u16) -> SocketAddr {
    let ip = std::env::var("POD_IP").ok().and_then(|ip| ip.parse().ok()).unwrap_or([127, 0, 0, 1].into());
    SocketAddr::new(ip, port)
}

/// Serves `router` on `addr` until the process receives SIGTERM or Ctrl-C.
pub async fn serve_ops(addr: SocketAddr, router: Router) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|err| anyhow::anyhow!("binding {addr}: {err}"))?;
    tracing::info!(%addr, "serving /healthz, /readyz, /metrics");
    axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

/// Resolves when SIGTERM or SIGINT arrives; Kubernetes (and the pod runner) stop Pods with SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn status_of(router: Router, path: &str) -> StatusCode {
        let request = Request::builder().uri(path).body(Body::empty()).expect("valid request");
        router.oneshot(request).await.expect("router answers").status()
    }

    #[tokio::test]
    async fn readiness_follows_the_flag() {
        let state = OpsState::new(Registry::default());
        assert_eq!(status_of(ops_router(state.clone()), "/healthz").await, StatusCode::OK);
        assert_eq!(status_of(ops_router(state.clone()), "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        state.set_ready(true);
        assert_eq!(status_of(ops_router(state.clone()), "/readyz").await, StatusCode::OK);
        assert_eq!(status_of(ops_router(state), "/metrics").await, StatusCode::OK);
    }
}
