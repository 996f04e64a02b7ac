//! What a tenant does to a running job besides changing it: suspend (savepoint, then the
//! job's Pods go), resume (restore from that savepoint), rescale (a new job version at
//! another parallelism, through a savepoint), trigger a savepoint, and read its savepoints and
//! versions. Each action changes the StreamJob; the operator does the work and reports back,
//! and the catalog records the savepoints it reports (see `sync`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Json, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::spec::{DesiredState, JobSettings};
use super::{JobRow, apply, check_quota, find, job_columns, load_view, new_version, respond, version_of};
use crate::AppState;
use crate::audit::{self, Change};
use crate::auth::Tenant;
use crate::error::{ApiError, Problem};
use crate::http::{ApiJson, check_if_match};

/// A savepoint of a job, as the operator reported it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct SavepointView {
    /// Where it is in checkpoint storage; `initialSavepoint` of a new job may name it.
    pub location: String,
    /// manual, periodic, upgrade or suspend.
    pub trigger: String,
    /// The parallelism the job had when it was taken.
    pub parallelism: i32,
    pub completed_at: DateTime<Utc>,
}

/// One version of what a job runs.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobVersionView {
    pub job_version: i32,
    pub sql: String,
    pub settings: JobSettings,
    /// create, update or rescale.
    pub cause: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/jobs/{job}/rescale`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rescale {
    #[schema(minimum = 1)]
    pub parallelism: i32,
}

/// The newest recorded savepoint of a job (by tenant and name: it outlives the job).
pub async fn latest_savepoint(
    db: impl sqlx::PgExecutor<'_>,
    tenant_id: Uuid,
    job: &str,
) -> Result<Option<SavepointView>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT location, trigger, parallelism, completed_at FROM savepoints \
         WHERE tenant_id = $1 AND job_name = $2 ORDER BY completed_at DESC, id LIMIT 1",
    )
    .bind(tenant_id)
    .bind(job)
    .fetch_optional(db)
    .await?)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(suspend_job))
        .routes(routes!(resume_job))
        .routes(routes!(rescale_job))
        .routes(routes!(trigger_savepoint, list_savepoints))
        .routes(routes!(list_versions))
}

/// Sets the desired state (suspend/resume), quota-checked when resuming; audited.
async fn set_state(
    state: &AppState,
    tenant: &Tenant,
    name: &str,
    headers: &HeaderMap,
    to: DesiredState,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = find(&mut tx, tenant, name, true).await?;
    check_if_match(headers, row.version)?;
    if DesiredState::parse(&row.state) == to {
        tx.commit().await?;
        return Ok(respond(StatusCode::OK, load_view(state, row).await?));
    }
    if to == DesiredState::Running {
        check_quota(&mut tx, tenant.id, Some(row.id), row.parallelism, to).await?;
    }
    let sql = concat!(
        "UPDATE jobs SET state = $2, version = version + 1, updated_at = now() WHERE id = $1 RETURNING ",
        job_columns!()
    );
    let updated: JobRow = sqlx::query_as(sql).bind(row.id).bind(to.as_str()).fetch_one(&mut *tx).await?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &tenant.actor(),
        action: if to == DesiredState::Running { "job.resume" } else { "job.suspend" },
        resource_type: "job",
        resource_name: name,
        details: json!({ "state": to }),
    };
    audit::record(&mut *tx, change).await?;
    let current = version_of(&mut *tx, updated.id, updated.current_version).await?;
    apply(state, tenant, &updated, &current).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::OK, load_view(state, updated).await?))
}

/// Suspends a job: the operator takes a savepoint and removes its Pods. Its slots no longer
/// count against the quota.
#[utoipa::path(
    post, path = "/v1/jobs/{job}/suspend", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path, description = "Job name"), ("If-Match" = Option<String>, Header, description = "ETag of the job as last read")),
    responses(
        (status = 200, body = super::JobView),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn suspend_job(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    set_state(&state, &tenant, &name, &headers, DesiredState::Suspended).await
}

/// Resumes a suspended job from the savepoint it was suspended with (quota-checked).
#[utoipa::path(
    post, path = "/v1/jobs/{job}/resume", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path, description = "Job name"), ("If-Match" = Option<String>, Header, description = "ETag of the job as last read")),
    responses(
        (status = 200, body = super::JobView),
        (status = 403, body = Problem, description = "Quota exceeded", content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn resume_job(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    set_state(&state, &tenant, &name, &headers, DesiredState::Running).await
}

/// Rescales a job: a new job version at `parallelism` (quota-checked), which the operator
/// applies through a savepoint, keeping state (key groups are redistributed).
#[utoipa::path(
    post, path = "/v1/jobs/{job}/rescale", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path, description = "Job name"), ("If-Match" = Option<String>, Header, description = "ETag of the job as last read")),
    request_body = Rescale,
    responses(
        (status = 200, body = super::JobView),
        (status = 403, body = Problem, description = "Quota exceeded", content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 412, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn rescale_job(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<Rescale>,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = find(&mut tx, &tenant, &name, true).await?;
    check_if_match(&headers, row.version)?;
    let current = version_of(&mut *tx, row.id, row.current_version).await?;
    let mut settings = current.settings.0.clone();
    settings.initial_savepoint = None;
    settings.parallelism = request.parallelism;
    settings.validate(&tenant.name)?;
    if request.parallelism == row.parallelism {
        tx.commit().await?;
        return Ok(respond(StatusCode::OK, load_view(&state, row).await?));
    }
    let sql = current.sql.clone();
    let (row, next) = new_version(&mut tx, &tenant, row, &current, &sql, &settings, "rescale").await?;
    apply(&state, &tenant, &row, &next).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::OK, load_view(&state, row).await?))
}

/// Triggers a savepoint (the StreamJob's `savepointTriggerNonce`); when the operator reports
/// it, it appears in `GET /v1/jobs/{job}/savepoints` and as the job's `lastSavepoint`.
#[utoipa::path(
    post, path = "/v1/jobs/{job}/savepoints", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path, description = "Job name")),
    responses(
        (status = 202, body = super::JobView, description = "Requested"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, description = "The job is suspended", content_type = "application/problem+json"),
    )
)]
async fn trigger_savepoint(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = find(&mut tx, &tenant, &name, true).await?;
    if DesiredState::parse(&row.state) == DesiredState::Suspended {
        return Err(ApiError::Conflict {
            field: None,
            detail: "the job is suspended (its suspend savepoint is its latest); resume it first".into(),
        });
    }
    let sql = concat!(
        "UPDATE jobs SET savepoint_nonce = savepoint_nonce + 1, version = version + 1, updated_at = now() \
         WHERE id = $1 RETURNING ",
        job_columns!()
    );
    let updated: JobRow = sqlx::query_as(sql).bind(row.id).fetch_one(&mut *tx).await?;
    let change = Change {
        tenant_id: Some(tenant.id),
        actor: &tenant.actor(),
        action: "job.savepoint",
        resource_type: "job",
        resource_name: &name,
        details: json!({ "savepointTriggerNonce": updated.savepoint_nonce }),
    };
    audit::record(&mut *tx, change).await?;
    let current = version_of(&mut *tx, updated.id, updated.current_version).await?;
    apply(&state, &tenant, &updated, &current).await?;
    tx.commit().await?;
    Ok(respond(StatusCode::ACCEPTED, load_view(&state, updated).await?))
}

/// The job's savepoints, newest first, as recorded from the operator's reports (kept after
/// the job is deleted).
#[utoipa::path(
    get, path = "/v1/jobs/{job}/savepoints", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path, description = "Job name")),
    responses(
        (status = 200, body = Vec<SavepointView>),
        (status = 404, body = Problem, description = "No job and no savepoints under this name", content_type = "application/problem+json"),
    )
)]
async fn list_savepoints(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<Json<Vec<SavepointView>>, ApiError> {
    let rows: Vec<SavepointView> = sqlx::query_as(
        "SELECT location, trigger, parallelism, completed_at FROM savepoints \
         WHERE tenant_id = $1 AND job_name = $2 ORDER BY completed_at DESC, id LIMIT 1000",
    )
    .bind(tenant.id)
    .bind(&name)
    .fetch_all(&state.db)
    .await?;
    if rows.is_empty() {
        let mut conn = state.db.acquire().await?;
        find(&mut conn, &tenant, &name, false).await?;
    }
    Ok(Json(rows))
}

/// Every version of the job, newest first.
#[utoipa::path(
    get, path = "/v1/jobs/{job}/versions", tag = "jobs", security(("bearer" = [])),
    params(("job" = String, Path, description = "Job name")),
    responses(
        (status = 200, body = Vec<JobVersionView>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list_versions(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(name): Path<String>,
) -> Result<Json<Vec<JobVersionView>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let row = find(&mut conn, &tenant, &name, false).await?;
    let versions: Vec<super::VersionRow> = sqlx::query_as(
        "SELECT version, sql, settings, cause, created_by, created_at FROM job_versions \
         WHERE job_id = $1 ORDER BY version DESC",
    )
    .bind(row.id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(
        versions
            .into_iter()
            .map(|v| JobVersionView {
                job_version: v.version,
                sql: v.sql,
                settings: v.settings.0,
                cause: v.cause,
                created_by: v.created_by,
                created_at: v.created_at,
            })
            .collect(),
    ))
}
