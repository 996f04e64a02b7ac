//! `millrace-api`: the self-service REST control plane over a Postgres catalog.
//!
//! [`app`] builds the whole HTTP surface from an [`AppState`] without a socket, so tests
//! drive it with `oneshot`; `main.rs` owns configuration and serving. Each feature module
//! (`tenants`, `api_keys`, `quotas`, `topics`, `audit`) exports `router()`, documented with
//! utoipa; [`openapi`] merges them. Cross-cutting conventions live in `http`, `error`,
//! `request_id` and `idempotency`; everything written to Kubernetes goes through
//! `kubernetes`.
//!
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod db;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod jobs;
pub mod kubernetes;
pub mod metrics;
pub mod quotas;
pub mod readiness;
pub mod request_id;
pub mod sql;
pub mod tenants;
pub mod topics;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use millrace_telemetry::{OpsState, ops_router};
use sqlx::PgPool;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

/// Everything a handler may use.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub kube: kube::Client,
    /// SHA-256 of the admin token; the token itself is not kept.
    pub admin_token_hash: Arc<[u8; 32]>,
    pub metrics: metrics::HttpMetrics,
    /// Base URL under which every job's checkpoints go (`<base>/<tenant>/<job>`); `None`
    /// leaves the choice to the operator's default storage.
    pub checkpoint_storage: Option<String>,
}

impl AppState {
    pub fn new(db: PgPool, kube: kube::Client, admin_token: &str, metrics: metrics::HttpMetrics) -> Self {
        Self {
            db,
            kube,
            admin_token_hash: Arc::new(auth::digest(admin_token)),
            metrics,
            checkpoint_storage: None,
        }
    }

    /// Puts every job's checkpoints under `base` (`s3://bucket/prefix`, `file:///path`).
    pub fn with_checkpoint_storage(mut self, base: Option<String>) -> Self {
        self.checkpoint_storage = base.filter(|b| !b.trim().is_empty());
        self
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Millrace control plane",
        description = "Tenants, API keys, quotas, Kafka topics, stream jobs and the audit log of a Millrace installation. \
                       Errors are RFC 9457 problems (application/problem+json).",
        version = env!("CARGO_PKG_VERSION"),
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants", description = "Admin only: tenants, their quotas and first API keys"),
        (name = "api-keys", description = "A tenant's own API keys"),
        (name = "topics", description = "Kafka topics, applied as KafkaTopic resources in the tenant's namespace"),
        (name = "jobs", description = "Stream jobs (SQL), applied as StreamJob resources in the tenant's namespace: versions, suspend, resume, rescale, savepoints"),
        (name = "quotas", description = "A tenant's limits and usage"),
        (name = "audit", description = "Who did what, when"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The `/v1` API with its OpenAPI document, before state is attached.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(tenants::router())
        .merge(api_keys::router())
        .merge(quotas::router())
        .merge(topics::router())
        .merge(jobs::router())
        .merge(sql::router())
        .merge(audit::router())
}

/// The OpenAPI document of the `/v1` API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The whole HTTP surface: `/v1`, `/openapi.json`, `/docs`, and the ops endpoints
/// (`/healthz`, `/readyz`, `/metrics`) from millrace-telemetry.
pub fn app(state: AppState, ops: OpsState) -> Router {
    let (api, doc) = api_router().split_for_parts();
    let api = api
        .layer(middleware::from_fn_with_state(state.clone(), idempotency::middleware))
        .layer(DefaultBodyLimit::max(http::BODY_LIMIT))
        .fallback(http::no_route)
        .method_not_allowed_fallback(http::method_not_allowed)
        .with_state(state.clone());
    Router::new()
        .merge(api)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .merge(ops_router(ops))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), metrics::middleware))
        .layer(middleware::from_fn(request_id::middleware))
}
